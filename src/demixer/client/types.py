"""The API's answers as typed, frozen dataclasses (parsed from the JSON in one place).

Each keeps the whole JSON object in ``raw`` so fields added by a newer server are not lost.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeVar, cast

from demixer.client.errors import BadResponse

__all__ = [
    "FINAL_STATUSES",
    "Allowance",
    "EngineModel",
    "ErrorInfo",
    "FileInfo",
    "FilePage",
    "Job",
    "JobStatus",
    "LogLine",
    "Models",
    "OutputFile",
    "RequestPage",
    "Result",
    "Status",
    "StorageUse",
    "Usage",
    "UsageLine",
    "WebhookInfo",
]

JobStatus = Literal["IN_QUEUE", "IN_PROGRESS", "COMPLETED", "FAILED", "CANCELLED"]
FINAL_STATUSES: frozenset[str] = frozenset({"COMPLETED", "FAILED", "CANCELLED"})

T = TypeVar("T")


def _get(d: Mapping[str, Any], key: str, kind: type[T], optional: bool = False) -> T:
    value = d.get(key)
    if value is None and optional:
        return cast(T, None)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind):
        raise BadResponse(f"the server's answer has no valid {key!r}: {str(d)[:300]}")
    return value


def _time(d: Mapping[str, Any], key: str) -> datetime | None:
    value = _get(d, key, str, optional=True)
    try:
        return datetime.fromisoformat(value) if value else None
    except ValueError:
        raise BadResponse(f"{key!r} is not an ISO 8601 time: {value!r}") from None


def _strings(d: Mapping[str, Any], key: str) -> tuple[str, ...] | None:
    value = _get(d, key, list, optional=True)
    if value is None:
        return None
    if not all(isinstance(item, str) for item in value):
        raise BadResponse(f"the server's answer has no valid {key!r}: {str(d)[:300]}")
    return tuple(value)


def _objects(d: Mapping[str, Any], key: str, optional: bool = False) -> list[Mapping[str, Any]]:
    """The list of JSON objects under ``key`` (a listing's ``data``)."""
    value = _get(d, key, list, optional=optional) or []
    if not all(isinstance(item, Mapping) for item in value):
        raise BadResponse(f"the server's answer has no valid {key!r}: {str(d)[:300]}")
    return value


def _error(d: Mapping[str, Any]) -> ErrorInfo | None:
    error = d.get("error")
    if not isinstance(error, Mapping):
        return None
    return ErrorInfo(code=_get(error, "code", str), message=_get(error, "message", str))


@dataclass(frozen=True)
class ErrorInfo:
    """Why a file or a job failed: a stable code and a message."""

    code: str
    message: str


@dataclass(frozen=True)
class FileInfo:
    """An uploaded input file (``GET /v1/files/{id}``).

    ``duration`` runs from the file's start to its sound's end (the stems' length);
    ``audio_start`` says how far into it the sound starts (a video whose picture comes
    first: the stems are silent until then, in step with the picture; 0.0 for most files),
    ``audio_tracks`` how many audio tracks it has (of several, the one flagged default, else
    the first, is separated). Both are None before the file is probed, and from a server
    older than this client, which does not send them.
    """

    file_id: str
    file_name: str
    content_type: str
    file_size: int | None  # bytes
    status: str  # pending | uploaded | failed
    duration: float | None  # seconds
    sample_rate: int | None  # Hz
    channels: int | None
    expires_at: datetime | None
    error: ErrorInfo | None
    raw: Mapping[str, Any] = field(repr=False, compare=False)
    # Last and defaulted: code that built a FileInfo before they came builds it still.
    audio_start: float | None = None  # seconds
    audio_tracks: int | None = None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> FileInfo:
        return cls(
            file_id=_get(d, "file_id", str),
            file_name=_get(d, "file_name", str),
            content_type=_get(d, "content_type", str),
            file_size=_get(d, "file_size", int, optional=True),
            status=_get(d, "status", str),
            duration=_get(d, "duration", float, optional=True),
            sample_rate=_get(d, "sample_rate", int, optional=True),
            channels=_get(d, "channels", int, optional=True),
            expires_at=_time(d, "expires_at"),
            error=_error(d),
            raw=d,
            audio_start=_get(d, "audio_start", float, optional=True),
            audio_tracks=_get(d, "audio_tracks", int, optional=True),
        )


@dataclass(frozen=True)
class FilePage:
    """One page of ``GET /v1/files``: the caller's uploads, newest first."""

    files: list[FileInfo]
    next_cursor: str | None  # pass as ``cursor`` for the next, older page; None: the last
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def items(self) -> list[FileInfo]:
        """The page's uploads (what a walk through the pages yields)."""
        return self.files

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> FilePage:
        return cls(
            files=[FileInfo.from_json(item) for item in _objects(d, "data")],
            next_cursor=_get(d, "next_cursor", str, optional=True),
            raw=d,
        )


@dataclass(frozen=True)
class LogLine:
    """One line of a request's log (``status(..., logs=True)``)."""

    timestamp: datetime | None
    message: str

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> LogLine:
        return cls(timestamp=_time(d, "timestamp"), message=_get(d, "message", str))


@dataclass(frozen=True)
class WebhookInfo:
    """A request's webhook and how its latest event's delivery stands."""

    url: str
    delivery_status: str  # pending | delivered | failed | none (no event yet)
    attempts: int
    delivered_at: datetime | None
    last_error: str | None
    next_attempt_at: datetime | None  # while pending

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> WebhookInfo:
        return cls(
            url=_get(d, "url", str),
            delivery_status=_get(d, "delivery_status", str),
            attempts=_get(d, "attempts", int),
            delivered_at=_time(d, "delivered_at"),
            last_error=_get(d, "last_error", str, optional=True),
            next_attempt_at=_time(d, "next_attempt_at"),
        )


@dataclass(frozen=True)
class Job:
    """A queued request, as ``POST /v1/queue/...`` answers it."""

    request_id: str
    status: str
    model: str  # queue model: audio/stems or audio/separate
    engine_model: str  # the separation model that runs it
    queue_position: int | None
    status_url: str
    stream_url: str
    result_url: str
    cancel_url: str
    webhook_secret: str | None  # `whsec_...` to verify its webhook with, when one was given
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Job:
        webhook = d.get("webhook")
        secret = _get(webhook, "signing_secret", str) if isinstance(webhook, Mapping) else None
        return cls(
            request_id=_get(d, "request_id", str),
            status=_get(d, "status", str),
            model=_get(d, "model", str),
            engine_model=_get(d, "engine_model", str),
            queue_position=_get(d, "queue_position", int, optional=True),
            status_url=_get(d, "status_url", str),
            stream_url=_get(d, "stream_url", str),
            result_url=_get(d, "result_url", str),
            cancel_url=_get(d, "cancel_url", str),
            webhook_secret=secret,
            raw=d,
        )


@dataclass(frozen=True)
class Status:
    """Where a request stands (``GET .../status``, one SSE frame, or one item of a listing)."""

    request_id: str
    status: str  # one of JobStatus
    model: str
    engine_model: str
    queue_position: int | None  # jobs ahead, while IN_QUEUE
    progress: float | None  # 0-1, while IN_PROGRESS (1 once COMPLETED)
    cancel_requested: bool
    error: ErrorInfo | None  # when FAILED
    raw: Mapping[str, Any] = field(repr=False, compare=False)
    # While IN_PROGRESS: loading_model, decoding, separating, encoding or storing (servers
    # that do not say: None).
    stage: str | None = None
    quality: str | None = None  # the level it runs at: fast, balanced or best
    # While IN_QUEUE: why no running worker picks it up (None: it only waits for its turn).
    waiting_reason: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    file_name: str | None = None  # the input's name (the song)
    # The upload it was made from (None for an audio_url input, or a server that does not
    # say): delete it with ``delete_file`` once no other request needs it.
    file_id: str | None = None
    duration: float | None = None  # seconds of input audio, once known
    stems: tuple[str, ...] | None = None  # audio/stems: the stems asked for
    prompt: str | None = None  # audio/separate: the prompt
    # The request's log, oldest first, when read with ``status(..., logs=True)`` (else None).
    logs: tuple[LogLine, ...] | None = None
    webhook: WebhookInfo | None = None  # when the request has a webhook

    @property
    def done(self) -> bool:
        """COMPLETED, FAILED or CANCELLED: it will not change again."""
        return self.status in FINAL_STATUSES

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Status:
        logs = None  # not asked for (``null``)
        if d.get("logs") is not None:
            logs = tuple(LogLine.from_json(line) for line in _objects(d, "logs"))
        webhook = d.get("webhook")
        return cls(
            request_id=_get(d, "request_id", str),
            status=_get(d, "status", str),
            model=_get(d, "model", str),
            engine_model=_get(d, "engine_model", str),
            queue_position=_get(d, "queue_position", int, optional=True),
            progress=_get(d, "progress", float, optional=True),
            cancel_requested=bool(d.get("cancel_requested")),
            error=_error(d),
            quality=_get(d, "quality", str, optional=True),
            raw=d,
            stage=_get(d, "stage", str, optional=True),
            waiting_reason=_get(d, "waiting_reason", str, optional=True),
            created_at=_time(d, "created_at"),
            updated_at=_time(d, "updated_at"),
            file_name=_get(d, "file_name", str, optional=True),
            file_id=_get(d, "file_id", str, optional=True),
            duration=_get(d, "duration", float, optional=True),
            stems=_strings(d, "stems"),
            prompt=_get(d, "prompt", str, optional=True),
            logs=logs,
            webhook=WebhookInfo.from_json(webhook) if isinstance(webhook, Mapping) else None,
        )


@dataclass(frozen=True)
class RequestPage:
    """One page of ``GET /v1/queue/requests``: the caller's requests, newest first."""

    requests: list[Status]
    next_cursor: str | None  # pass as ``cursor`` for the next, older page; None: the last
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def items(self) -> list[Status]:
        """The page's requests (what a walk through the pages yields)."""
        return self.requests

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RequestPage:
        return cls(
            requests=[Status.from_json(item) for item in _objects(d, "data")],
            next_cursor=_get(d, "next_cursor", str, optional=True),
            raw=d,
        )


@dataclass(frozen=True)
class OutputFile:
    """One output of a completed request, behind a signed, expiring URL."""

    name: str  # the stem, `target` or `residual`
    url: str
    file_name: str
    content_type: str
    size: int | None  # bytes
    duration: float | None  # seconds
    sample_rate: int | None  # Hz
    channels: int | None
    gain: float = 1.0  # below 1 when `rescale` turned every output down so that none clips
    clipped: int = 0  # samples (each channel counted) clipped at full scale in integer formats

    @classmethod
    def from_json(cls, name: str, d: Mapping[str, Any]) -> OutputFile:
        return cls(
            name=name,
            url=_get(d, "url", str),
            file_name=_get(d, "file_name", str),
            content_type=_get(d, "content_type", str),
            size=_get(d, "size", int, optional=True),
            duration=_get(d, "duration", float, optional=True),
            sample_rate=_get(d, "sample_rate", int, optional=True),
            channels=_get(d, "channels", int, optional=True),
            gain=_get(d, "gain", float, optional=True) or 1.0,
            clipped=_get(d, "clipped", int, optional=True) or 0,
        )


@dataclass(frozen=True)
class Result:
    """A completed request's outputs (``GET .../result``)."""

    request_id: str
    model: str
    outputs: Mapping[str, OutputFile]  # name -> file; stems (or `target`) and `residual`
    duration: float  # seconds of input
    sample_rate: int  # Hz of the input
    usage_seconds: float  # audio seconds used
    raw: Mapping[str, Any] = field(repr=False, compare=False)
    # output name -> the model, recipe chain or ensemble that made it (empty from older servers)
    made_by: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Result:
        data = _get(d, "data", dict)
        usage = d.get("usage")
        outputs = {
            name: OutputFile.from_json(name, value)
            for name, value in data.items()
            if isinstance(value, Mapping)
        }
        return cls(
            request_id=_get(d, "request_id", str),
            model=_get(d, "model", str),
            outputs=outputs,
            duration=_get(data, "duration", float, optional=True) or 0.0,
            sample_rate=_get(data, "sample_rate", int, optional=True) or 0,
            usage_seconds=_get(usage, "quantity", float) if isinstance(usage, Mapping) else 0.0,
            raw=d,
            made_by={str(k): v for k, v in made.items() if isinstance(v, str)}
            if isinstance(made := d.get("made_by"), Mapping)
            else {},
        )


@dataclass(frozen=True)
class EngineModel:
    """A separation model (the ``model`` of ``submit``), as ``GET /v1/models`` lists it."""

    id: str
    description: str
    stems: tuple[str, ...]
    sample_rate: int  # Hz the model runs at (outputs keep the input's rate)
    license: str
    license_class: str  # permissive, copyleft, non-commercial, research only, not stated
    arch: str
    quality: str
    aliases: tuple[str, ...]  # other names it answers to as ``model``
    installed: bool  # its weights are on the server or a worker: it can run
    install: str | None  # when not installed: the command that fetches it, run on the server
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> EngineModel:
        return cls(
            id=_get(d, "id", str),
            description=_get(d, "description", str, optional=True) or "",
            stems=_strings(d, "stems") or (),
            sample_rate=_get(d, "sample_rate", int, optional=True) or 0,
            license=_get(d, "license", str, optional=True) or "",
            license_class=_get(d, "license_class", str, optional=True) or "",
            arch=_get(d, "arch", str, optional=True) or "",
            quality=_get(d, "quality", str, optional=True) or "",
            aliases=_strings(d, "aliases") or (),
            installed=bool(d.get("installed", True)),
            install=_get(d, "install", str, optional=True),
            raw=d,
        )


@dataclass(frozen=True)
class Models:
    """``GET /v1/models``: what the server can run."""

    installed: list[EngineModel]  # engine models that can run on this server now
    catalogue: list[EngineModel]  # every model the server knows, installed or not
    separable: tuple[str, ...]  # what a prompt can ask for with what is installed
    raw: Mapping[str, Any] = field(repr=False, compare=False)
    # What a request naming no model and no stem runs (None: an older server does not say).
    default_model: str | None = None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Models:
        separable: tuple[str, ...] = ()
        for entry in _objects(d, "data"):
            if entry.get("id") == "audio/separate":
                separable = _strings(entry, "separable") or ()
        return cls(
            installed=[EngineModel.from_json(e) for e in _objects(d, "engine_models")],
            catalogue=[EngineModel.from_json(e) for e in _objects(d, "catalogue", True)],
            separable=separable,
            raw=d,
            default_model=_get(d, "default_model", str, optional=True),
        )


@dataclass(frozen=True)
class UsageLine:
    """One API key's use of one engine model over the period."""

    key_id: str | None  # None: the web page's or a deleted key's use
    model: str  # the engine model
    seconds: float  # seconds of input audio processed
    jobs: int  # completed requests (result-cache hits count, with 0 s)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> UsageLine:
        return cls(
            key_id=_get(d, "key_id", str, optional=True),
            model=_get(d, "model", str),
            seconds=_get(d, "quantity", float),
            jobs=_get(d, "jobs", int),
        )


@dataclass(frozen=True)
class Allowance:
    """The account's monthly allowance of audio and where it stands this calendar month (UTC).

    A request whose input lasts more than ``left_seconds`` is refused: ApiError 402
    ``QUOTA_EXCEEDED``, until ``resets_at``.
    """

    monthly_minutes: int  # audio minutes per calendar month (UTC)
    used_seconds: float  # seconds of the requests completed this month
    held_seconds: float  # seconds held by queued and running requests until they end
    left_seconds: float  # what a new request's input may still last (never below 0)
    resets_at: datetime  # the first of next month, 00:00 UTC

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Allowance:
        resets_at = _time(d, "resets_at")
        if resets_at is None:
            raise BadResponse(f"the server's answer has no valid 'resets_at': {str(d)[:300]}")
        return cls(
            monthly_minutes=_get(d, "monthly_minutes", int),
            used_seconds=_get(d, "used_seconds", float),
            held_seconds=_get(d, "held_seconds", float),
            left_seconds=_get(d, "left_seconds", float),
            resets_at=resets_at,
        )


@dataclass(frozen=True)
class StorageUse:
    """The bytes the account holds in storage now (uploads and stems), and its cap on them.

    An upload that does not fit under ``cap_bytes`` is refused, and so is every new request
    once they hold all of it: ApiError 413 ``STORAGE_QUOTA_EXCEEDED``, until files or results
    (their requests) are deleted or expire.
    """

    used_bytes: int  # files_bytes + results_bytes
    cap_bytes: int | None  # the most they may hold at once; None: no cap
    files_bytes: int = 0  # uploaded files' bytes, pending ones' announced size
    results_bytes: int = 0  # completed requests' stems (0 from a server before they counted)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> StorageUse:
        used = _get(d, "used_bytes", int)
        files = _get(d, "files_bytes", int, optional=True)  # None: a server before results
        return cls(
            used_bytes=used,
            cap_bytes=_get(d, "cap_bytes", int, optional=True),
            files_bytes=used if files is None else files,
            results_bytes=_get(d, "results_bytes", int, optional=True) or 0,
        )


@dataclass(frozen=True)
class Usage:
    """``GET /v1/usage``: the account's usage recorded from ``start`` to ``end`` (inclusive),
    and its monthly allowance now (``allowance``: None for an account without one, which is
    unlimited, or from a server older than allowances), and the bytes its uploads and stems hold
    (``storage``: None from a server older than the cap on them)."""

    lines: list[UsageLine]
    start: datetime
    end: datetime
    total_seconds: float  # seconds of audio processed in all of ``lines``
    raw: Mapping[str, Any] = field(repr=False, compare=False)
    allowance: Allowance | None = None
    storage: StorageUse | None = None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Usage:
        start, end = _time(d, "from"), _time(d, "to")
        if start is None or end is None:
            raise BadResponse(f"the server's answer has no valid period: {str(d)[:300]}")
        allowance = _get(d, "allowance", dict, optional=True)
        storage = _get(d, "storage", dict, optional=True)
        return cls(
            lines=[UsageLine.from_json(line) for line in _objects(d, "data")],
            start=start,
            end=end,
            total_seconds=_get(d, "total", float),
            raw=d,
            allowance=Allowance.from_json(allowance) if allowance is not None else None,
            storage=StorageUse.from_json(storage) if storage is not None else None,
        )
