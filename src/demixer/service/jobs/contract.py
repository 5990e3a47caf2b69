"""The job contract: what a queued job asks for, in one typed, versioned shape.

:class:`JobParams` is built and validated completely by the API (``demixer.api.submit``, with
each vendor's options passed in, never edited after), written to ``jobs.params`` with
:meth:`JobParams.to_row`, and read back with :meth:`JobParams.from_row` by everyone else: the
worker's runner, its separation child (which receives it whole), the result cache, the status
and listing endpoints, the outbox and the vendor views. Nothing else reads the JSON column.

Versions (``version`` in the row):

* **1**, rows written before the contract existed (no ``version`` key): Gaudio's jobs carried
  ``"vendor": "gaudio"``, MusicGPT's a top-level ``"musicgpt": {stems,
  preprocessing_options}``, sunoapi's ``"vendor": {name, type, callBackUrl}``. The reader
  upgrades them on the fly (:func:`upgrade`); nothing is rewritten in the database.
* **2** (:data:`CONTRACT_VERSION`): every vendor's fields under one typed ``vendor``
  sub-object, discriminated by its ``name``.

A row of a later version than this code knows is refused (``INVALID_PARAMS``) rather than
half-read: a worker older than the API that queued the job must not guess. So is a field a
later release added, by the worker (:meth:`JobParams.from_row`); readers that only show a job
or act on what they know of it (:meth:`JobParams.of_job`) leave it out.

A row holds only the fields not at their default (:meth:`JobParams.to_row`), so a field's
default is part of the contract: changing one needs a new version, whose :func:`upgrade`
writes the old default into older rows.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from demixer.audio import OutputFormat
from demixer.engine.spans import Span
from demixer.errors import DemixerError, InvalidParams
from demixer.models.quality import Quality
from demixer.naming import input_name, url_file_name

__all__ = [
    "CONTRACT_VERSION",
    "NATIVE_STYLE",
    "PREPROCESS_STEPS",
    "GaudioFields",
    "JobParams",
    "MusicGptFields",
    "SunoapiFields",
    "UploadInput",
    "UrlInput",
    "VendorFields",
    "Webhook",
    "upgrade",
]

CONTRACT_VERSION: Literal[2] = 2
#: Steps applied to the input before separation (see :mod:`demixer.audio.denoise`).
#: ``denoise`` is DSP (:mod:`demixer.audio.denoise`); ``dereverb`` and ``deecho`` run the best
#: installed model making :data:`demixer.models.planner.CLEANUP_STEMS`'s stem.
PREPROCESS_STEPS = ("denoise", "dereverb", "deecho")
NATIVE_STYLE = "native"  # the webhook style of the native API's jobs

# An output's API name and download label: a plain file-name part.
_SIMPLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_FORMAT = Literal["wav", "flac", "mp3"]


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class UploadInput(_Part):
    """An uploaded, probed file: its row, its blob, its name and length (for listings)."""

    file_id: str
    storage_key: str
    file_name: str
    duration: float | None = None  # seconds, as probed at upload


class UrlInput(_Part):
    """An http(s) URL the worker fetches itself (through the URL guard)."""

    audio_url: str

    @field_validator("audio_url")
    @classmethod
    def _http(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url[:200]!r} is not an http(s) URL")
        return url


class Webhook(_Part):
    """Where the job's final event goes, its signing secret, and whose body it has."""

    url: str
    secret: str
    style: str = NATIVE_STYLE  # the protocol whose event builder makes the body


class GaudioFields(_Part):
    """A Gaudio (GSEP) job: its views find it by this mark."""

    name: Literal["gaudio"] = "gaudio"


class MusicGptFields(_Part):
    """A MusicGPT extraction: its stem names -> output names, and the options it was sent."""

    name: Literal["musicgpt"] = "musicgpt"
    stems: dict[str, str]
    preprocessing_options: tuple[str, ...] = ()


class SunoapiFields(_Part):
    """A sunoapi vocal removal: the task type and the callback URL it was sent."""

    name: Literal["sunoapi"] = "sunoapi"
    type: Literal["separate_vocal", "split_stem", "split_stem_advanced"]
    callBackUrl: str | None = None  # the vendor's own field name


def _source_kind(value: Any) -> str:
    if isinstance(value, UrlInput) or (isinstance(value, dict) and "audio_url" in value):
        return "url"
    return "upload"


Source = Annotated[
    Annotated[UploadInput, Tag("upload")] | Annotated[UrlInput, Tag("url")],
    Discriminator(_source_kind),
]
"""The audio: an uploaded file, or a URL (told apart by its ``audio_url``)."""

VendorFields = Annotated[GaudioFields | MusicGptFields | SunoapiFields, Field(discriminator="name")]


class JobParams(_Part):
    """Everything a job asks for.

    Attributes:
        input: the audio: an uploaded file or a URL the worker fetches.
        stems: engine output names to produce, a named residual included (None: every stem
            of the model); passed to :meth:`demixer.engine.Separator.separate_file`, which adds
            an unnamed residual when they leave part of the model out and drops it if silent.
        output_format, bit_depth: the primary format of every output (see
            :class:`~demixer.audio.OutputFormat`).
        names: engine output name -> API output name (``target``/``residual`` for
            ``audio/separate``; unnamed outputs keep their own name).
        labels: API output name -> download label (``song_{label}.{ext}``; default the name).
        spans: seconds of the input where the target is kept (``audio/separate`` only).
        extra_formats: more formats every output is written in too (Gaudio: ``mp3``).
        preprocess: steps applied to the input before separation (:data:`PREPROCESS_STEPS`);
            stems + residual then add up to the processed input.
        downmix: fold an input with more than two channels to stereo (else refused).
        audio_track: the input's audio track to separate, from 1 (None: the one players play).
        rescale: scale all outputs by one gain instead of clipping integer and mp3 samples.
        quality: the level the model runs at (:mod:`demixer.models.quality`): the request's,
            else the server's ``DEMIXER_QUALITY``. Rows written before levels existed lack it
            and ran Deezer's pipeline, which is ``fast``: they read as ``fast``.
        webhook: where the final event goes (None: no webhook).
        prompt: ``audio/separate``'s prompt (for listings).
        vendor: the protocol-specific fields of a vendor router's job (None: native).
    """

    version: Literal[2] = CONTRACT_VERSION
    input: Source
    stems: tuple[str, ...] | None = None
    output_format: _FORMAT = "wav"
    bit_depth: Literal["16", "24", "32f"] | None = None
    names: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    spans: tuple[Span, ...] | None = None
    extra_formats: tuple[_FORMAT, ...] = ()
    preprocess: tuple[Literal["denoise", "dereverb", "deecho"], ...] = ()
    downmix: bool = False
    audio_track: int | None = Field(default=None, ge=1)
    rescale: bool = False
    quality: Quality = "fast"
    webhook: Webhook | None = None
    prompt: str | None = None
    vendor: VendorFields | None = None

    @model_validator(mode="after")
    def _consistent(self) -> JobParams:
        OutputFormat.parse(self.output_format, self.bit_depth)  # InvalidOutput when not
        for field, mapping in (("names", self.names), ("labels", self.labels)):
            bad = [v for v in mapping.values() if not _SIMPLE_NAME.match(v)]
            if bad:
                raise ValueError(f"{field} must map to plain names ([A-Za-z0-9_.-]): {bad[0]!r}")
        if len(set(self.names.values())) != len(self.names):
            raise ValueError("names gives two outputs the same name")
        return self

    @property
    def format(self) -> OutputFormat:
        """The primary output format."""
        return OutputFormat.parse(self.output_format, self.bit_depth)

    @property
    def input_name(self) -> str:
        """The input's file name as the user knows it (for messages and download names):
        :func:`demixer.naming.input_name`."""
        source = self.input
        raw = (
            source.file_name if isinstance(source, UploadInput) else url_file_name(source.audio_url)
        )
        return input_name(raw)

    def api_name(self, engine_name: str) -> str:
        """The API name of engine output ``engine_name``."""
        return self.names.get(engine_name, engine_name)

    def engine_name(self, api_name: str) -> str | None:
        """The engine output called ``api_name`` (None: no output is)."""
        return next((e for e, a in self.names.items() if a == api_name), None)

    def to_row(self) -> dict[str, Any]:
        """The JSON stored in ``jobs.params``: ``version`` and the fields not at their default.

        During a rolling upgrade a worker (or API process) of the previous release reads the
        rows this one writes, and its contract refuses a field it does not know: with every
        field written, each job queued by a newer API (``"rescale": false`` included) failed
        ``INVALID_PARAMS`` on every older worker. A job that asks for nothing new now reads
        there as it did; one that does (``rescale``) is still refused, not run without it.
        """
        row = self.model_dump(mode="json")
        for name, field in type(self).model_fields.items():
            # Only top-level fields: a vendor's ``name`` is its default and must stay.
            if name == "version" or field.is_required():
                continue
            if getattr(self, name) == field.get_default(call_default_factory=True):
                del row[name]
        return row

    @classmethod
    def of_job(cls, job_id: str, row: Mapping[str, Any] | None) -> JobParams:
        """:meth:`from_row` of job ``job_id``'s ``jobs.params``, remembered by this process.

        A job's params are written once, when it is queued, and never change, so a reader that
        comes back to the same jobs again and again (a status poll, on every request) validates
        each job's row once. ``row`` must be that job's; raises as :meth:`from_row` does, except
        that fields a later release added are left out (``later_fields="ignore"``): this is for
        showing a job and acting on what this release knows of it (status, listings, vendor
        views, the sweeper, the outbox), never for running it.
        """
        return _of_job(job_id, row)

    @classmethod
    def from_row(
        cls, row: Mapping[str, Any] | None, *, later_fields: Literal["refuse", "ignore"] = "refuse"
    ) -> JobParams:
        """Read ``jobs.params`` of any known version.

        ``later_fields``: what to do with a top-level field this release does not know (a later
        release's API queued the job, mid rolling upgrade): ``refuse`` it, as a worker must (it
        cannot run the option), or ``ignore`` it, to show the job: an older API process
        answered such a job, and its account's whole listing, 400 until it was replaced.

        Raises:
            InvalidParams: the row breaks the contract, or comes from a later version.
        """
        try:
            upgraded = upgrade(dict(row or {}))
            if later_fields == "ignore":
                upgraded = {k: v for k, v in upgraded.items() if k in cls.model_fields}
            return cls.model_validate(upgraded)
        except ValidationError as exc:
            first = exc.errors()[0]
            if first["type"] == "extra_forbidden" and len(first["loc"]) == 1:
                # An option a later release added, queued by its API while this release's
                # workers still run (a rolling upgrade): said so, not "Extra inputs are not
                # permitted", which read as a bug in the request.
                raise InvalidParams(
                    f"job params: the job asks for {first['loc'][0]!r}, which this release "
                    "does not know (a later release's API queued it): submit it again once "
                    "every worker runs that release"
                ) from None
            where = ".".join(str(p) for p in first["loc"]) or "params"
            raise InvalidParams(f"job params: {where}: {first['msg']}") from None
        except DemixerError as exc:
            raise InvalidParams(f"job params: {exc.message}") from None


# Jobs' params read by :meth:`JobParams.of_job`, by job id (at most _MAX_READ of them).
_READ: dict[str, JobParams] = {}
_MAX_READ = 10_000


def _of_job(job_id: str, row: Mapping[str, Any] | None) -> JobParams:
    known = _READ.get(job_id)
    if known is None:
        known = JobParams.from_row(row, later_fields="ignore")
        if len(_READ) >= _MAX_READ:
            _READ.clear()
        _READ[job_id] = known
    return known


def upgrade(row: dict[str, Any]) -> dict[str, Any]:
    """A ``jobs.params`` row of any known version, in the current version's shape."""
    version = row.get("version", 1)
    if not isinstance(version, int) or version > CONTRACT_VERSION or version < 1:
        raise InvalidParams(
            f"job params of version {version!r}: this release reads up to {CONTRACT_VERSION}"
        )
    if version == 1:
        row = dict(row)
        vendor = row.get("vendor")
        if vendor == "gaudio":
            row["vendor"] = {"name": "gaudio"}
        musicgpt = row.pop("musicgpt", None)
        if musicgpt is not None:
            row["vendor"] = {"name": "musicgpt", **musicgpt}
        row["version"] = CONTRACT_VERSION
    return row
