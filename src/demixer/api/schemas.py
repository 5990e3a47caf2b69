"""The API's wire schemas (pydantic). They are not the database tables (``service/schema.py``).

Request models forbid unknown fields inside ``input`` so a typo ("stem" for "stems") is a 400
instead of a silently ignored option; top-level unknown fields are ignored (vendor clients add
their own). Numbers and booleans are ``strict``: ``"downmix": "yes"`` or ``"priority": "5"`` is
a 400 naming the field, not a guess (an integer is still taken where a number is asked).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PlainSerializer,
    PrivateAttr,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.config import JsonDict
from typing_extensions import TypeAliasType

from demixer.engine.spans import MAX_SPANS
from demixer.models.quality import QUALITIES
from demixer.models.spec import MODEL_ID_LENGTH, LicenseClass

__all__ = [
    "Allowance",
    "Answer",
    "CancelResponse",
    "EngineModel",
    "ErrorBody",
    "ErrorResponse",
    "FileCreate",
    "FileError",
    "FileList",
    "FileObject",
    "FileStatus",
    "FileUpload",
    "JobError",
    "JobStatus",
    "Limits",
    "LogLine",
    "ModelList",
    "OutputFile",
    "QueueBody",
    "QueueInput",
    "QueueModel",
    "QueuedResponse",
    "RequestList",
    "RequestStatus",
    "ResultResponse",
    "Retention",
    "SeparateInput",
    "SeparateOutput",
    "SeparateRequest",
    "Span",
    "StemsInput",
    "StemsRequest",
    "StorageUse",
    "Usage",
    "UsageLine",
    "UsageList",
    "WebhookIn",
    "WebhookInfo",
    "WebhookStatus",
    "WireTime",
    "wire_time",
]


def wire_time(when: datetime) -> str:
    """``when`` as every time demixer sends is written: ISO 8601 in UTC to the microsecond,
    ending in ``Z`` (``2030-03-01T09:00:00.000000Z``). One form for all: pydantic's own left
    the fraction out of a time on the second (every upload URL's ``expires_at``), which
    parsers of one fixed form (Swift's ``ISO8601DateFormatter``, ``strptime``) then refuse;
    ``isoformat()`` ends in ``+00:00``, which Java's ``Instant.parse`` refuses before Java 12
    (MusicGPT's own payloads end in ``Z``)."""
    return when.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


#: A time in an answer, sent as :func:`wire_time` writes it.
WireTime = Annotated[
    datetime,
    PlainSerializer(wire_time, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


# Named types (`TypeAliasType`): the document gives each one component, which a generated
# client reads as one enum (`JobStatus`) where an inline list made one per field and
# parameter (`RequestStatusStatus`, `FileObjectStatus`, `ListFilesStatusType0`, ...).
JobStatus = TypeAliasType(
    "JobStatus", Literal["IN_QUEUE", "IN_PROGRESS", "COMPLETED", "FAILED", "CANCELLED"]
)
FileStatus = TypeAliasType("FileStatus", Literal["pending", "uploaded", "failed"])


class Answer(BaseModel):
    """A response body: every field is sent, a defaulted one too (as its default), so the
    OpenAPI document lists every field as required (nullable where it may be null) and a
    client generated from it need not treat any as possibly missing."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)


# --- errors -----------------------------------------------------------------------------------


class ErrorBody(Answer):
    """What went wrong, in words and as a stable code."""

    code: str = Field(description="Stable machine-readable code, e.g. `UNKNOWN_STEM`.")
    message: str = Field(description="What is wrong and, where possible, what to do.")
    param: str | None = Field(None, description="The request field at fault, e.g. `input.stems`.")
    request_id: str | None = Field(None, description="Also in the `x-request-id` header.")


class ErrorResponse(Answer):
    """Every error response has this shape."""

    error: ErrorBody


# --- files ------------------------------------------------------------------------------------


class Retention(Answer):
    """When demixer deletes the object."""

    delete_after: WireTime


class FileCreate(BaseModel):
    """Announce an upload; the bytes follow with a PUT to the returned ``upload_url``."""

    model_config = ConfigDict(extra="forbid")

    file_name: str = Field(min_length=1, max_length=300, examples=["song.mp3"])
    content_type: str = Field(min_length=1, max_length=100, examples=["audio/mpeg"])
    file_size: int = Field(
        gt=0, strict=True, description="Exact size in bytes of the upload to come."
    )
    purpose: Literal["audio.separate.input"] = "audio.separate.input"


class FileUpload(Answer):
    """Where and how to PUT the bytes."""

    file_id: str
    upload_url: str = Field(
        description="Signed URL; no API key needed. It may point at object storage (S3), "
        "which answers the PUT with no body: then `POST /v1/files/{file_id}/complete`."
    )
    upload_method: Literal["PUT"] = "PUT"
    headers: dict[str, str] = Field(description="Send exactly these headers with the PUT.")
    expires_at: WireTime = Field(description="When `upload_url` stops working.")
    retention: Retention


class FileError(Answer):
    """Why an upload was not accepted as audio."""

    code: str
    message: str


class FileObject(Answer):
    """An uploaded (or announced) input file."""

    file_id: str
    file_name: str
    content_type: str
    file_size: int | None = Field(description="Bytes: declared, then as stored.")
    purpose: str
    status: FileStatus = Field(
        description="`pending` (no bytes yet), `uploaded` (probed as audio) or `failed`."
    )
    created_at: WireTime
    uploaded_at: WireTime | None
    expires_at: WireTime | None = Field(description="When the file is deleted.")
    duration: float | None = Field(
        description="Seconds, as the file declares: from its start to the sound's end (the "
        "stems' length)."
    )
    sample_rate: int | None = Field(description="Hz (also kept for a file refused for its rate).")
    channels: int | None
    audio_start: float | None = Field(
        None,
        description="Seconds into the file (a video's picture) where its sound starts; the "
        "stems start at the file's start, silent until then, so that they line up with the "
        "video. 0 for most files.",
    )
    audio_tracks: int | None = Field(
        None,
        description="Audio tracks in the file; of several, the one flagged default (else the "
        "first) is separated, as players play it.",
    )
    error: FileError | None = None


class FileList(Answer):
    """The caller's uploads, newest first."""

    object: Literal["list"] = "list"
    data: list[FileObject]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


# --- queue requests ---------------------------------------------------------------------------


class Span(BaseModel):
    """A time range of the input, in seconds; ``include: false`` leaves it out."""

    model_config = ConfigDict(extra="forbid")

    start: float = Field(ge=0, allow_inf_nan=False, strict=True)
    end: float = Field(gt=0, allow_inf_nan=False, strict=True)
    include: bool = Field(True, strict=True)

    @model_validator(mode="after")
    def _ordered(self) -> Span:
        if self.end <= self.start:
            raise ValueError("a span's end must be after its start")
        return self


# What the submit code takes as a URL (`api/submit.py`: http or https, with a host), for the
# JSON Schema: a client generator or fuzzer reads it; the check itself stays there, with its code.
_HTTP_URL: JsonDict = {"pattern": r"^\s*[Hh][Tt][Tt][Pp][Ss]?://[^/?#\s]"}


def _one_source_schema(schema: dict[str, Any]) -> None:
    """The JSON Schema says what the validator enforces: exactly one of ``file_id`` and
    ``audio_url``, each a string when given (client generators and fuzzers read it)."""
    properties = schema.get("properties", {})
    for name in ("file_id", "audio_url"):
        prop = properties.get(name)
        if prop is None or "anyOf" not in prop:
            continue
        strings = [p for p in prop.pop("anyOf") if p.get("type") != "null"]
        prop.update(strings[0] if strings else {"type": "string"})
        prop.pop("default", None)
    schema["oneOf"] = [{"required": ["file_id"]}, {"required": ["audio_url"]}]


class QueueInput(BaseModel):
    """What every queue model's ``input`` has: the audio, the output format, spans."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_one_source_schema)

    file_id: str | None = Field(None, max_length=100, description="From `POST /v1/files`.")
    audio_url: str | None = Field(
        None,
        max_length=4096,
        description="An http(s) URL; refused `TURNED_OFF` where the server's operator turned "
        "URL inputs off (`DEMIXER_AUDIO_URLS=false`).",
        json_schema_extra=_HTTP_URL,
    )
    output_format: str = Field("wav", max_length=10, description="`wav`, `flac` or `mp3`.")
    bit_depth: str | int | None = Field(
        None,
        description="wav: `16`, `24`, `32f`; flac: `16`, `24`; none for mp3. Default `16`, "
        "whatever the input's depth: ask for `24` or `32f` to keep a 24-bit or float master's.",
    )
    # Checked by the submit code, not here, so an unknown level is a 422 UNKNOWN_QUALITY (like
    # an unknown stem) rather than a 400 for a malformed body; the schema still lists the levels.
    quality: str | None = Field(
        None,
        max_length=20,
        description="`fast`, `balanced` or `best`: how much work the model spends for better "
        "stems (default: the server's `DEMIXER_QUALITY`). For `spleeter-2stems` and "
        "`cascade-4stems`, `fast` is Deezer's own pipeline, `balanced` combines the two U-Nets' "
        "masks better at the same speed, `best` adds test-time augmentation (about 4x the "
        "time). For the RoFormer, SCNet and MDX23C models `fast` runs at most two overlapping "
        "chunks (`inference.num_overlap: 2`: up to 4x less work where the config sets 4 or 8) "
        "and `best` is MSST's test-time "
        "augmentation (`--use_tta`, 3x the time), for the MDX-Net models it adds UVR's "
        "denoise pass (2x), for the Demucs models it is their shift trick (`--shifts 4`, at "
        "fixed delays: 4x).",
        json_schema_extra={"enum": [*QUALITIES, None]},
        examples=["balanced"],
    )
    downmix: bool = Field(
        False,
        strict=True,
        description="Fold an input with more than 2 channels (5.1, 7.1) to stereo first "
        "(FFmpeg's default matrix: centre and surrounds at -3 dB into their side, LFE "
        "dropped). Without it such an input is refused (422 `INVALID_AUDIO`), as the CLI "
        "refuses it without `--downmix`.",
    )
    audio_track: int | None = Field(
        None,
        strict=True,
        ge=1,
        description="Which audio track of a file with several to separate (a film's other "
        "language, its commentary), counted from 1; left out: the one players play (the "
        "first flagged default, else the first; `GET /v1/files/{file_id}` says how many the "
        "upload has). One the file does not have is 422 `INVALID_AUDIO`, as the CLI's "
        "`--audio-track`.",
        examples=[2],
    )
    rescale: bool = Field(
        False,
        strict=True,
        description="Scale every output by one common gain so that none peaks above full "
        "scale, where one would, instead of clipping its samples in 16/24-bit WAV, FLAC and "
        "mp3 (a loud master, or an mp3 decoded above 0 dBFS, can take a stem or the residual "
        "past it). The outputs keep their balance and still add up to the input times that "
        "gain; 32-bit float WAV, which never clips, is scaled the same way. As the CLI's "
        "`--rescale`.",
    )

    @field_validator("bit_depth", mode="before")
    @classmethod
    def _depth_as_written(cls, depth: object) -> object:
        # Checked here rather than with strict types on the union: pydantic reads a JSON true
        # as the integer 1 and reports a union's errors under each member ("bit_depth.str"),
        # a field the client never sent. A bool is an int to Python, hence the explicit test.
        if depth is None or isinstance(depth, str):
            return depth
        if isinstance(depth, int) and not isinstance(depth, bool):
            return depth
        raise ValueError('bit_depth is a string or an integer, e.g. "24" or 24')

    @model_validator(mode="after")
    def _one_source(self) -> QueueInput:
        if (self.file_id is None) == (self.audio_url is None):
            raise ValueError("give exactly one of file_id and audio_url")
        return self


class SeparateInput(QueueInput):
    """Input of ``audio/separate``: one sound, named in words."""

    prompt: str = Field(
        min_length=1,
        max_length=1000,
        examples=["vocals", "everything but the vocals", "the drums"],
        description="The sound to separate; see `GET /v1/models` for what can be separated.",
    )
    spans: list[Span] | None = Field(
        None,
        max_length=MAX_SPANS,
        description="Keep the target only inside `include` spans / outside `include: false` "
        "ones (seconds); what is taken out goes to the residual, so the two still add up to "
        "the input. Applied to the outputs, not as hints to the model: exclusion wins where "
        "spans overlap, each edge fades over 10 ms outside its span (a span's own samples "
        "are kept or taken out whole), and time past the input's end is ignored. Included "
        "spans that all start at or after the end would keep nothing: 400 `INVALID_OUTPUT` "
        "for an upload, the job fails with it for an `audio_url`. Usage counts the whole "
        "input.",
    )

    @field_validator("prompt")
    @classmethod
    def _says_something(cls, prompt: str) -> str:
        # Spaces alone are as empty as "" (INVALID_REQUEST), not a sound no model makes.
        if not prompt.strip():
            raise ValueError("the prompt is blank: name the sound to separate, e.g. 'vocals'")
        return prompt


class StemsInput(QueueInput):
    """Input of ``audio/stems``: stems by name from one engine model."""

    stems: list[str] | None = Field(
        None,
        max_length=20,
        # Documented, not enforced here: the submit code answers `[]` with its own 422.
        json_schema_extra={"minItems": 1},
        description="Model stems (left out or `null`: all of the model's; `[]` is refused with "
        "`NO_STEMS_REQUESTED`). `residual`, everything the stems leave out, is added when they "
        "do not cover the model and it is audible (above -60 dB of the input's energy); name "
        "it to always get it.",
    )
    model: str | None = Field(
        None,
        max_length=MODEL_ID_LENGTH,
        description="Engine model id or one of its `aliases` (e.g. `Kim_Vocal_2.onnx`), a "
        "recipe id (e.g. `karaoke`) or an ensemble: `a+b` (average; `a@2+b` weighs `a` "
        "twice), or `MODE:a+b` with `MODE` one of `max`, `min` (UVR's max/min spec), "
        "`median_wave`, `max_wave`, `min_wave`, `median_fft` (audio-separator's algorithms "
        "of those names; its `avg_fft`, `max_fft`, `uvr_max_spec`... are read as demixer's "
        "modes); default: the best installed model or recipe making every stem, by published "
        "figures.",
    )


class WebhookIn(BaseModel):
    """Where to POST when the request finishes (Standard Webhooks signed)."""

    url: str = Field(
        max_length=4096,
        description="Refused `TURNED_OFF` where the server's operator turned webhooks off "
        "(`DEMIXER_WEBHOOKS=false`).",
        json_schema_extra=_HTTP_URL,
    )
    secret: str | None = Field(
        None,
        max_length=200,
        description="`whsec_<base64>` (Standard Webhooks; without the prefix, base64 is decoded "
        "as the `standardwebhooks` package does), or any other string, whose UTF-8 bytes are "
        "then the HMAC key; default: a new `whsec_` secret.",
    )


class QueueBody(BaseModel):
    """What every queue request has besides ``input``: webhook and priority.

    A body without ``input`` is read as fal's clients write it (fal's queue takes the model's
    input as the whole body): its fields other than these are the ``input``."""

    model_config = ConfigDict(populate_by_name=True)

    # Whether the body came as fal's clients write it: its answer's URLs are then fal's paths.
    _fal_shaped: bool = PrivateAttr(default=False)

    @model_validator(mode="wrap")
    @classmethod
    def _input_at_top_level(cls, data: Any, handler: ModelWrapValidatorHandler[Any]) -> Any:
        if not isinstance(data, dict) or "input" in data:
            return handler(data)
        # The request's own fields (and their aliases); fal's clients send the rest, the
        # input, at the top level.
        own = {n for name, f in QueueBody.model_fields.items() for n in (name, f.alias) if n}
        inp = {k: v for k, v in data.items() if k not in own}
        body = handler({k: v for k, v in data.items() if k in own} | {"input": inp})
        body._fal_shaped = True
        return body

    @property
    def fal_shaped(self) -> bool:
        """Whether the body was fal's shape (the input as the whole body)."""
        return self._fal_shaped

    webhook: WebhookIn | None = None
    priority: int = Field(
        0,
        ge=-100,
        le=100,
        strict=True,
        description="Higher runs first, over every account on the server; at most the "
        "server's `DEMIXER_MAX_PRIORITY` (100 unless its operator lowered it).",
    )
    webhook_url: str | None = Field(
        None,
        alias="webhookUrl",
        max_length=4096,
        description="`webhook.url`, given at the top level; refused `TURNED_OFF` where the "
        "server's operator turned webhooks off (`DEMIXER_WEBHOOKS=false`).",
        json_schema_extra=_HTTP_URL,
    )
    webhook_secret: str | None = Field(None, alias="webhookSecret", max_length=200)


class SeparateRequest(QueueBody):
    """``POST /v1/queue/audio/separate``."""

    input: SeparateInput


class StemsRequest(QueueBody):
    """``POST /v1/queue/audio/stems``."""

    input: StemsInput


class WebhookInfo(Answer):
    """The webhook this request will call, and the secret its signatures use."""

    url: str
    signing_secret: str


class QueuedResponse(Answer):
    """A request was queued."""

    request_id: str
    status: Literal["IN_QUEUE", "COMPLETED"] = Field(
        "IN_QUEUE", description="`COMPLETED` at once when the result cache answered it."
    )
    model: str
    engine_model: str
    created_at: WireTime
    queue_position: int
    status_url: str
    stream_url: str
    result_url: str
    response_url: str = Field(
        description="The same URL as `result_url`, under the name fal's queue gives it (a "
        "client written for fal reads this one)."
    )
    cancel_url: str
    webhook: WebhookInfo | None = None


class LogLine(Answer):
    """One line of a request's log."""

    timestamp: WireTime
    message: str


class JobError(Answer):
    """Why a request failed."""

    code: str
    message: str


class WebhookStatus(Answer):
    """The request's webhook event and how its delivery stands (the latest event)."""

    url: str
    delivery_status: Literal["pending", "delivered", "failed", "none"] = Field(
        description="`none`: no event yet (the request has not finished, or was cancelled)."
    )
    attempts: int
    delivered_at: WireTime | None
    last_error: str | None
    next_attempt_at: WireTime | None = Field(None, description="While `pending`.")


class RequestStatus(Answer):
    """Where a request stands."""

    request_id: str
    model: str
    engine_model: str
    quality: str | None = Field(
        None,
        description="The quality level it runs at (`fast` for a request submitted before levels "
        "existed: it runs Deezer's pipeline, which `fast` is).",
    )
    status: JobStatus
    created_at: WireTime
    updated_at: WireTime
    queue_position: int | None = Field(
        description="Queued jobs that run before this one (0: next), of every account on the "
        "server (their number only); only while IN_QUEUE."
    )
    waiting_reason: str | None = Field(
        None,
        description="While IN_QUEUE: why no worker picks the request up, e.g. `no running "
        "worker has model 'htdemucs' installed; live workers run: spleeter-2stems` (also for "
        "your own model, removed with `demixer models remove` while the request waited), `no "
        "worker is running`, or that none of the workers running its model has the model of a "
        "clean-up step it asks for (`deecho`, `dereverb`). The request still waits (it is not "
        "failed) until such a worker starts, or until it is cancelled. `null` when a live "
        "worker runs it (it is only waiting for its turn).",
        examples=[
            None,
            "no running worker has model 'htdemucs' installed; live workers run: "
            "spleeter-2stems. The request waits for a worker that has it",
        ],
    )
    progress: float | None = Field(description="0–1, while IN_PROGRESS (1 once COMPLETED).")
    stage: Literal["loading_model", "decoding", "separating", "encoding", "storing"] | None = Field(
        None,
        description="While IN_PROGRESS: what the attempt is doing now (`null` until the "
        "worker says; `progress` counts the `separating` stage).",
    )
    file_id: str | None = Field(
        None,
        description="The upload (`POST /v1/files`) it was made from, which deleting the request "
        "leaves until its retention or its own `DELETE /v1/files/{file_id}` (several requests may "
        "share it); `null` for an `audio_url` input and for a MusicGPT extraction's "
        "`audio_file`, which goes with the request.",
    )
    file_name: str | None = Field(None, description="The input's file name (the song).")
    duration: float | None = Field(None, description="Seconds of input audio, when known.")
    stems: list[str] | None = Field(
        None, description="`audio/stems`: the stems asked for, by output name."
    )
    prompt: str | None = Field(None, description="`audio/separate`: the prompt.")
    cancel_requested: bool
    status_url: str
    result_url: str
    response_url: str = Field(description="The same URL as `result_url` (fal's name for it).")
    error: JobError | None = Field(description="When FAILED.")
    logs: list[LogLine] | None = Field(description="With `?logs=true`.")
    webhook: WebhookStatus | None = Field(None, description="When the request has a webhook.")


class RequestList(Answer):
    """The caller's requests, newest first."""

    object: Literal["list"] = "list"
    data: list[RequestStatus]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class CancelResponse(Answer):
    """What a cancel did: at once (queued) or requested (running)."""

    request_id: str
    status: Literal["CANCELLED", "CANCELLATION_REQUESTED"]


class OutputFile(Answer):
    """One output audio file."""

    url: str = Field(description="Signed, expiring GET URL; no API key needed.")
    content_type: str
    file_name: str
    duration: float | None = Field(description="Seconds.")
    sample_rate: int | None = Field(description="Hz.")
    channels: int | None
    size: int | None = Field(description="Bytes.")
    gain: float = Field(
        1.0,
        description="The one gain every output of the request was scaled by: below 1 only with "
        "`input.rescale`, where an output would have peaked above full scale (an MP3: once "
        "decoded; compare with the input at this gain); else 1.",
    )
    clipped: int = Field(
        0,
        description="Samples (counting each channel) that peaked above full scale and were "
        "clipped: 16/24-bit WAV, FLAC and MP3 clip there (an MP3's count is what a player "
        "clips decoding it, when more: the encoder overshoots peaks); 32-bit float WAV and "
        "`input.rescale` never do (0).",
    )


class SeparateOutput(Answer):
    """``data`` of an ``audio/separate`` result."""

    target: OutputFile = Field(description="The sound the prompt named.")
    residual: OutputFile = Field(description="Everything else: target + residual = input.")
    duration: float
    sample_rate: int


class Usage(Answer):
    """What the request used (demixer does not bill)."""

    feature: Literal["audio_seconds"] = "audio_seconds"
    quantity: float = Field(
        description="Seconds of input audio processed: the whole input, whatever `spans` keep; "
        "0 when the result cache answered the request."
    )
    billing_status: Literal["not_billed"] = "not_billed"


class ResultResponse(Answer):
    """A completed request's outputs."""

    request_id: str
    model: str
    quality: str | None = Field(None, description="The quality level it ran at.")
    status: Literal["COMPLETED"] = "COMPLETED"
    data: dict[str, OutputFile | int | float] = Field(
        description="Output name -> file (`target`/`residual`, or one per stem, + `residual` "
        "when the stems leave something audible out), "
        "plus `duration` (seconds) and `sample_rate` (Hz) of the input."
    )
    made_by: dict[str, str] = Field(
        default_factory=dict,
        description="Output name -> what made it: the model id; for a recipe `id (a -> b)`, "
        "the chain of models; for an ensemble `id (avg of a, b)`, and for its `instrumental` "
        "(or else `other`) `id (the input minus its vocals)`; for the residual, the input "
        "minus the other outputs.",
    )
    usage: Usage
    retention: Retention


# --- models -----------------------------------------------------------------------------------


class Limits(Answer):
    """What the server accepts (the same for every model)."""

    max_file_size: int = Field(description="Bytes.")
    max_duration: float = Field(description="Seconds.")
    input_formats: list[str]
    output_formats: list[str]
    bit_depths: dict[str, list[str]]


class PublishedScore(Answer):
    """One quality figure, as its publisher gives it (not measured by this server)."""

    stem: str = Field(description="The stem it is for, or `mean` over the model's stems.")
    value: float = Field(description="dB.")
    metric: str = Field(description="`cSDR`, `SDR`, `Multisong SDR`, `median SDR`, ...")
    test_set: str
    source: str = Field(description="Who published it (a URL).")


class EngineModel(Answer):
    """A separation model (the ``model`` of ``audio/stems``). In ``engine_models`` its weights
    are installed here or on a registered worker; ``catalogue`` lists every registered one."""

    id: str
    object: Literal["engine_model"] = "engine_model"
    description: str
    stems: list[str]
    sample_rate: int = Field(description="Hz the model runs at (outputs keep the input's rate).")
    license: str = Field(description="The weights' licence, as their authors state it.")
    license_class: LicenseClass = Field(
        description="How the weights may be used, as far as their authors say: `permissive` "
        "(any use, with credit), `copyleft` (any use, commercial too; weights passed on, or "
        "a model made from them, must keep the licence: GPL-3.0, CC BY-SA 4.0), "
        "`non-commercial`, `research only`, `not stated` (no licence given: commercial use is "
        "at your own risk)."
    )
    arch: str = Field(
        description="Network family: `bs_roformer`, `mel_band_roformer`, `bs_conformer`, "
        "`mel_band_conformer`, `mdx23c`, `scnet`, `scnet_masked`, `scnet_tran`, "
        "`bandit` (BandIt), `bandit_v2`, `htdemucs` (HTDemucs trained with MSST), `apollo` (audio "
        "restoration), `mdx_net`, "
        "`vr`, `demucs`, `spleeter`, `cascade`."
    )
    source_url: str = Field(description="The page the weights are published on.")
    aliases: list[str] = Field(
        default_factory=list,
        description="Other names it answers to as `model` (each also without its extension): "
        "the file names python-audio-separator, UVR and MSST know it by.",
        examples=[["Kim_Vocal_2.onnx"]],
    )
    quality: str
    scores: list[PublishedScore] = Field(
        description="Published quality figures, headline first (not measured by this server)."
    )
    installed: bool = Field(
        description="Whether its weights are here or on a registered worker (so it can run)."
    )
    install: str | None = Field(
        default=None,
        description="When not installed: how to get it, run where the server or its workers "
        "run (e.g. `demixer models pull htdemucs`).",
        examples=["demixer models pull htdemucs"],
    )
    limits: Limits


class QueueModel(Answer):
    """A model id for ``POST /v1/queue/{id}``."""

    id: str
    object: Literal["model"] = "model"
    description: str
    input: dict[str, Any] = Field(description="JSON Schema of the request body.")
    output: dict[str, Any] = Field(description="JSON Schema of the result's `data`.")
    engine_models: list[str] = Field(
        description="Engine models it can run on (installed here or on a registered worker)."
    )
    separable: list[str] = Field(description="What can be asked for with what is installed.")


class ModelList(Answer):
    """Queue models in ``data``; installed engine models in ``engine_models``; every registered
    engine model, installed or not, in ``catalogue``."""

    object: Literal["list"] = "list"
    data: list[QueueModel]
    engine_models: list[EngineModel]
    catalogue: list[EngineModel] = Field(
        description="Every model this demixer knows; `installed` says which can run here "
        "(`demixer models pull ID` fetches the others' weights)."
    )
    default_model: str = Field(
        description="The engine model a request runs when it names no `model` and no stem "
        "(`DEMIXER_DEFAULT_MODEL`): a client can tell the files it will get before it uploads."
    )


class UsageLine(Answer):
    """One key's use of one engine model over the period."""

    key_id: str | None
    model: str = Field(description="The engine model.")
    feature: Literal["audio_seconds"] = "audio_seconds"
    quantity: float = Field(description="Seconds of input audio processed.")
    jobs: int = Field(description="Completed requests (result-cache hits count, with 0 s).")


class Allowance(Answer):
    """The account's monthly allowance and where it stands in the current calendar month
    (UTC), whatever the listed period: what a request is checked against (402
    `QUOTA_EXCEEDED` when its input's seconds do not fit in `left_seconds`)."""

    monthly_minutes: int = Field(description="Audio minutes per calendar month (UTC).")
    used_seconds: float = Field(description="Seconds of the requests completed this month.")
    held_seconds: float = Field(
        description="Seconds held by the account's queued and running requests (their "
        "inputs' durations) until they end."
    )
    left_seconds: float = Field(
        description="What a new request's input may still last this month, rounded down to "
        "the millisecond: the allowance less used and held, never below 0."
    )
    resets_at: WireTime = Field(
        description="When the month ends and `used_seconds` starts again at 0 (the first of "
        "next month, 00:00 UTC)."
    )


class StorageUse(Answer):
    """The bytes the account holds in storage now (its uploads, and its requests' stems), and
    its cap on them (`DEMIXER_MAX_ACCOUNT_STORAGE_BYTES`): an upload that does not fit is
    refused 413 `STORAGE_QUOTA_EXCEEDED` before any of its bytes are stored, and so is every
    new request once they hold the whole cap (a request queued or running still completes,
    its stems stored)."""

    used_bytes: int = Field(description="`files_bytes` and `results_bytes` together.")
    files_bytes: int = Field(
        description="What the account's live files hold: uploaded ones their bytes, pending "
        "ones (and ones whose bytes were refused, which a new PUT may fill) their announced "
        "`file_size`. A file deleted or past its `expires_at` counts no more."
    )
    results_bytes: int = Field(
        description="What the stems of its completed requests hold, until the request is "
        "deleted or its result expires; one answered from the result cache holds copies of "
        "its own."
    )
    cap_bytes: int | None = Field(
        description="The most they may hold at once; null: no cap on this server."
    )


class UsageList(Answer):
    """``GET /v1/usage``: the account's usage in ``[from, to]``, and its monthly allowance."""

    model_config = ConfigDict(
        populate_by_name=True, json_schema_serialization_defaults_required=True
    )

    object: Literal["list"] = "list"
    data: list[UsageLine]
    from_: WireTime = Field(alias="from")
    to: WireTime
    total: float = Field(description="Seconds of audio processed in all of `data`.")
    allowance: Allowance | None = Field(
        description="The account's monthly allowance now (`demixer keys quota`); null for an "
        "account without one: unlimited."
    )
    storage: StorageUse = Field(
        description="The bytes the account's uploads and results hold, and its cap."
    )
