"""The one tree of errors demixer raises, and their mapping to CLI exit codes.

Every error a user can cause is a :class:`DemixerError` with a stable machine-readable ``code``
and a message that says what is wrong and, where it can, what to do. Third-party exceptions
(PyAV, soundfile, torch, urllib) are translated into this tree at the boundary that calls them,
so nothing above the engine ever sees a foreign traceback.
"""

from __future__ import annotations

import difflib
import errno
import os
from collections.abc import Iterable, Mapping

__all__ = [
    "AlreadyUploaded",
    "Cancelled",
    "CheckpointMismatch",
    "ChunkTooLarge",
    "Conflict",
    "ContentTypeMismatch",
    "DatabaseReadOnly",
    "DatabaseUnavailable",
    "DemixerError",
    "DeviceUnavailable",
    "DownloadFailed",
    "DurationLimit",
    "FileExpired",
    "FileNotReady",
    "FileTooLarge",
    "Forbidden",
    "Gone",
    "IdempotencyInProgress",
    "IdempotencyKeyReused",
    "InputNotFound",
    "InvalidAudio",
    "InvalidAudioUrl",
    "InvalidDataDir",
    "InvalidDatabaseUrl",
    "InvalidModelConfig",
    "InvalidModelDir",
    "InvalidOutput",
    "InvalidParams",
    "InvalidRequest",
    "InvalidSignature",
    "JobFailed",
    "ModelFailed",
    "ModelUnavailable",
    "NoStemsRequested",
    "NotFound",
    "NotReady",
    "OriginNotAllowed",
    "QuotaExceeded",
    "RangeNotSatisfiable",
    "RateLimited",
    "RequestTooLarge",
    "ResultExpired",
    "ServiceUnavailable",
    "SizeMismatch",
    "StorageFull",
    "StorageQuotaExceeded",
    "StorageRefused",
    "StorageUnavailable",
    "TooManyConcurrentJobs",
    "TurnedOff",
    "UnknownArchitecture",
    "UnknownModel",
    "UnknownQuality",
    "UnknownStem",
    "UnsupportedEncoding",
    "UnsupportedMediaType",
    "UnsupportedPrompt",
    "UnsupportedSampleRate",
    "UrlExpired",
    "WeightsChecksumMismatch",
    "bytes_text",
    "did_you_mean",
    "exit_code_for",
    "unknown_model",
]

_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_FULL_BELOW_BYTES = 1 << 20  # a filesystem with less than this free counts as full


class DemixerError(Exception):
    """Base of every error demixer raises on purpose."""

    code = "INTERNAL"
    #: the request field the error is about (``"input.stems"``), when there is one.
    param: str | None = None

    def __init__(self, message: str, *, param: str | None = None) -> None:
        message = _utf8(message)
        super().__init__(message)
        self.message = message
        if param is not None:
            self.param = _utf8(param)


def bytes_text(count: float) -> str:
    """``count`` bytes in binary units, for a message: ``'7.3 TiB'``, ``'23.5 GiB'``."""
    units = ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    unit = 0
    while count >= 1024 and unit < len(units) - 1:
        count /= 1024
        unit += 1
    return f"{count:.1f} {units[unit]}" if unit else f"{count:.0f} bytes"


def _utf8(text: str) -> str:
    """``text`` as UTF-8 can carry it: a lone surrogate (a JSON ``\\ud800`` escape quoted back
    in a message) written as that escape, so that the error can always be sent and logged."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class InvalidAudio(DemixerError):
    """The input cannot be used as audio: empty, corrupt, no audio stream, bad channel count…"""

    code = "INVALID_AUDIO"


class InvalidModelDir(DemixerError):
    """The model directory (``$DEMIXER_MODEL_DIR``) cannot be created or written."""

    code = "INVALID_MODEL_DIR"


class UnsupportedSampleRate(InvalidAudio):
    """The audio's sample rate is outside the range demixer separates.

    Attributes:
        sample_rate: the rate the file declares, in Hz (kept with a refused upload, so a
            protocol with its own code for a bad rate, Gaudio's 1014, can answer it).
    """

    def __init__(self, message: str, *, sample_rate: int, param: str | None = None) -> None:
        super().__init__(message, param=param)
        self.sample_rate = sample_rate


class InputNotFound(InvalidAudio):
    """The input file does not exist (a typo in a path, a file moved away)."""

    code = "FILE_NOT_FOUND"


class InvalidOutput(DemixerError):
    """The requested output cannot be written (format, bit depth, name template)."""

    code = "INVALID_OUTPUT"


class UnknownModel(DemixerError):
    """No model with that id is registered."""

    code = "UNKNOWN_MODEL"


class UnknownArchitecture(UnknownModel):
    """A network family (``--arch``, an MSST ``model_type``) demixer has no implementation of."""

    code = "UNKNOWN_ARCHITECTURE"


class UnknownStem(DemixerError):
    """A requested stem is not one the model produces."""

    code = "UNKNOWN_STEM"


class UnknownQuality(DemixerError):
    """A quality level that is not one of ``fast``, ``balanced``, ``best``."""

    code = "UNKNOWN_QUALITY"


class NoStemsRequested(UnknownStem):
    """A request that names no stem at all: there is nothing to separate."""

    code = "NO_STEMS_REQUESTED"


class ModelUnavailable(DemixerError):
    """The model is registered but its weights are missing or cannot be loaded."""

    code = "MODEL_UNAVAILABLE"


class WeightsChecksumMismatch(ModelUnavailable):
    """A weights file's SHA-256 is not the pinned one: it is never loaded."""

    code = "WEIGHTS_CHECKSUM_MISMATCH"


class DownloadFailed(ModelUnavailable):
    """Fetching weights failed (network, HTTP status, size or checksum)."""

    code = "DOWNLOAD_FAILED"


class InvalidModelConfig(ModelUnavailable):
    """A model's config file cannot be used: not YAML, unsafe YAML, or a missing, ill-typed or
    unknown option."""

    code = "INVALID_MODEL_CONFIG"


class ChunkTooLarge(InvalidModelConfig):
    """A model config whose chunks cannot fit in this machine's memory (a chunk_size of 10**12
    samples): refused where the model is loaded, not when a job runs out of memory."""

    code = "CHUNK_TOO_LARGE"


class CheckpointMismatch(ModelUnavailable):
    """A checkpoint that does not fit the network its config describes (keys or shapes)."""

    code = "CHECKPOINT_MISMATCH"


class InvalidSetting(DemixerError):
    """A ``DEMIXER_*`` setting has a value demixer does not know (e.g. ``DEMIXER_PRECISION``)."""

    code = "INVALID_SETTING"


class InvalidDataDir(DemixerError):
    """The data directory cannot be used as it is (a file in it is damaged)."""

    code = "INVALID_DATA_DIR"


class InvalidDatabaseUrl(DemixerError):
    """``DEMIXER_DATABASE_URL`` names a database demixer cannot use (another application's)."""

    code = "INVALID_DATABASE_URL"


class DeviceUnavailable(DemixerError):
    """The torch device asked for is not there (``cuda`` with a CPU-only torch, a GPU index
    past the last one)."""

    code = "DEVICE_UNAVAILABLE"


class ModelFailed(DemixerError):
    """The model raised while separating: not the user's fault."""

    code = "MODEL_FAILED"


class Cancelled(DemixerError):
    """``should_cancel`` returned true: the separation stopped and wrote nothing more."""

    code = "CANCELLED"


# --- Errors of the service (upload, queue, download); HTTP statuses in demixer.api.errors ----


class InvalidRequest(DemixerError):
    """The request itself is malformed: a missing, contradictory or out-of-range field."""

    code = "INVALID_REQUEST"


class InvalidParams(InvalidRequest):
    """A queued job's parameters break the job contract (a row no release would write)."""

    code = "INVALID_PARAMS"


class SizeMismatch(InvalidRequest):
    """The uploaded bytes are not as many as the file's declared ``file_size``."""

    code = "SIZE_MISMATCH"


class InvalidAudioUrl(InvalidRequest):
    """An ``audio_url`` demixer will not fetch (not http(s), or a forbidden address)."""

    code = "INVALID_AUDIO_URL"


class TurnedOff(InvalidRequest):
    """The request asks for what this server's operator turned off: an ``audio_url`` where
    ``DEMIXER_AUDIO_URLS`` is off, a webhook where ``DEMIXER_WEBHOOKS`` is (a team whose
    audio, and what is known of it, must not leave its network)."""

    code = "TURNED_OFF"


class Forbidden(DemixerError):
    """The caller is known but may not do this (the key lacks the scope).

    ``PERMISSION_DENIED``: the code AudioLasso's authentication page gives a valid key without
    the required scope (its 403), which clients of the native API branch on.
    """

    code = "PERMISSION_DENIED"


class OriginNotAllowed(Forbidden):
    """A browser's CORS preflight from an origin (or with a method or header) that
    ``DEMIXER_CORS_ORIGINS`` does not allow."""

    code = "ORIGIN_NOT_ALLOWED"


class InvalidSignature(Forbidden):
    """A signed URL whose signature does not match: tampered, or made for another method."""

    code = "INVALID_SIGNATURE"


class NotFound(DemixerError):
    """No such object for this caller (other accounts' ids answer this too)."""

    code = "NOT_FOUND"


class Conflict(DemixerError):
    """The object exists but is not in a state that allows the operation."""

    code = "CONFLICT"


class NotReady(Conflict):
    """A request's result was asked for before the request completed."""

    code = "NOT_READY"


class FileNotReady(Conflict):
    """A file was used before its bytes were uploaded."""

    code = "FILE_NOT_READY"


class AlreadyUploaded(Conflict):
    """Bytes were sent for a file that already has them."""

    code = "FILE_ALREADY_UPLOADED"


class Gone(DemixerError):
    """The object existed but has expired."""

    code = "GONE"


class UrlExpired(Gone):
    """A signed URL past its ``expires`` time."""

    code = "URL_EXPIRED"


class RangeNotSatisfiable(DemixerError):
    """A download's ``Range`` starts past the blob's end (answered with its size)."""

    code = "RANGE_NOT_SATISFIABLE"

    def __init__(self, size: int) -> None:
        super().__init__(f"the requested range lies outside this {size}-byte file", param="Range")
        self.size = size


class FileExpired(Gone):
    """An uploaded file past its retention time."""

    code = "FILE_EXPIRED"


class ResultExpired(Gone):
    """A completed request's outputs past their retention time (deleted, or about to be)."""

    code = "RESULT_EXPIRED"


class FileTooLarge(DemixerError):
    """An upload over the size limit (declared or actual)."""

    code = "FILE_TOO_LARGE"

    @classmethod
    def over(
        cls, limit: int, what: str = "the upload", size: int | None = None, **kw: str | None
    ) -> FileTooLarge:
        """The refusal of ``what`` (``size`` bytes, where known) over ``limit`` bytes, in
        units a person reads. A file this big is most often a video, of which only the sound
        is separated, a small part of its bytes (an hour of AAC is about 60 MB): the message
        says how to send the sound alone. ``kw``: ``param``."""
        sized = "" if size is None else f" ({bytes_text(size)})"
        return cls(
            f"{what}{sized} is over this server's limit of {bytes_text(limit)} ({limit} bytes); "
            "for a video, send its sound alone, a small part of its size (e.g. "
            "`ffmpeg -i video.mp4 -vn -c:a copy sound.m4a`): the sound is all that is separated",
            **kw,
        )


class StorageQuotaExceeded(FileTooLarge):
    """The account's uploads (pending ones at their announced size) and stems would pass its
    cap on stored bytes with this upload, or hold all of it for a new request: nothing was
    stored or queued. Deleting files or results, or their expiry, makes room at once. A 413
    like :class:`FileTooLarge` (too large for the room the account has left), never a 5xx:
    the server is well, this caller is at its limit."""

    code = "STORAGE_QUOTA_EXCEEDED"


class RequestTooLarge(FileTooLarge):
    """A request body (JSON, a form's fields) over its size limit: it was not read further."""

    code = "REQUEST_TOO_LARGE"


class RequestTimeout(InvalidRequest):
    """A request body that stopped arriving (nothing for ``body_timeout_seconds``): what came
    was dropped, the connection is closed."""

    code = "REQUEST_TIMEOUT"


class UnsupportedMediaType(DemixerError):
    """A content type demixer does not take as audio input."""

    code = "UNSUPPORTED_MEDIA_TYPE"


class UnsupportedEncoding(UnsupportedMediaType):
    """A request body sent compressed (``Content-Encoding: gzip``) or in a transfer coding
    other than chunked (``Transfer-Encoding: gzip, chunked``): the server reads bodies as they
    are sent, and would have stored the compressed bytes as the file, or parsed them as the
    JSON. Refused before a byte of the body is read."""

    code = "UNSUPPORTED_ENCODING"


class ContentTypeMismatch(UnsupportedMediaType):
    """An upload sent with another Content-Type than the one declared for the file."""

    code = "CONTENT_TYPE_MISMATCH"


class DurationLimit(InvalidAudio):
    """The audio is longer than the server's limit."""

    code = "DURATION_LIMIT"


class UnsupportedPrompt(UnknownStem):
    """A text prompt that maps onto no stem the installed models can produce."""

    code = "UNSUPPORTED_PROMPT"


class JobFailed(DemixerError):
    """The result of a request that failed; ``code`` is the failure's own code."""

    code = "JOB_FAILED"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code:
            self.code = code


class RateLimited(DemixerError):
    """Too many requests from one caller; ``retry_after``: seconds until trying again helps."""

    code = "RATE_LIMITED"

    def __init__(self, message: str, *, retry_after: int = 1, param: str | None = None) -> None:
        super().__init__(message, param=param)
        self.retry_after = max(1, retry_after)


class TooManyConcurrentJobs(RateLimited):
    """The key already has as many queued and running requests as it may."""

    code = "TOO_MANY_CONCURRENT_JOBS"


class QuotaExceeded(DemixerError):
    """The account's audio minutes for this month are used up (or too few are left for the
    input): waiting helps only when the month ends, so it is no :class:`RateLimited`."""

    code = "QUOTA_EXCEEDED"


class IdempotencyKeyReused(Conflict):
    """An ``Idempotency-Key`` sent again with another request (method, path or body)."""

    code = "IDEMPOTENCY_KEY_REUSED"


class IdempotencyInProgress(Conflict):
    """An ``Idempotency-Key`` whose first request is still being answered."""

    code = "IDEMPOTENCY_IN_PROGRESS"


class ServiceUnavailable(DemixerError):
    """A part the server depends on is briefly unreachable (answered 503 with ``Retry-After``):
    nothing was done, the same request may be sent again.

    ``retry_after``: seconds after which trying again may help.
    """

    code = "SERVICE_UNAVAILABLE"
    retry_after = 5
    default_message = "the service is briefly unavailable; retry shortly"

    def __init__(self, message: str | None = None, *, param: str | None = None) -> None:
        super().__init__(message or self.default_message, param=param)


class StorageUnavailable(ServiceUnavailable):
    """Object storage cannot be reached (connection refused, timeout, a 5xx)."""

    code = "STORAGE_UNAVAILABLE"
    default_message = "object storage is unavailable; retry shortly"


class StorageRefused(StorageUnavailable):
    """Object storage answers but refuses this server: its bucket does not exist, or its
    credentials are wrong or lack access. The operator's to fix; to a client it is the same
    503 as an outage (nothing it sent is wrong), and a worker holds its job as in one."""

    default_message = "object storage refused this server's requests; its operator must fix it"


class StorageFull(ServiceUnavailable):
    """The disk (or volume) under the data directory or the job database is full: nothing was
    stored, and the same request may be sent again once space is freed (HTTP 507)."""

    code = "STORAGE_FULL"
    retry_after = 60
    default_message = "the server's storage is full; nothing was stored, retry once space is freed"

    def __init__(
        self, message: str | None = None, *, where: str | os.PathLike[str] | None = None
    ) -> None:
        super().__init__(message)
        #: the folder whose disk is full, for the operator's log (never sent to a client: it
        #: names the server's own paths); None where it is not known.
        self.where = None if where is None else os.fspath(where)

    @staticmethod
    def caused(error: BaseException, where: str | os.PathLike[str] | None = None) -> bool:
        """Whether ``error`` means the disk is full: an ``OSError`` with ``ENOSPC`` / ``EDQUOT``
        anywhere in its chain, or (for libraries that lose the errno, such as libsndfile's
        "System error") any failure while the filesystem holding ``where`` has no room left."""
        seen: BaseException | None = error
        while seen is not None:
            if isinstance(seen, OSError) and seen.errno in _FULL_ERRNOS:
                return True
            seen = seen.__cause__ or seen.__context__
        return where is not None and StorageFull.at(where)

    @staticmethod
    def at(where: str | os.PathLike[str]) -> bool:
        """Whether the filesystem holding ``where`` counts as full (under 1 MiB free)."""
        try:
            stat = os.statvfs(where)
        except OSError:
            return False
        return stat.f_bavail * stat.f_frsize < _FULL_BELOW_BYTES


class DatabaseUnavailable(ServiceUnavailable):
    """The job database cannot be reached (PostgreSQL down or restarting)."""

    code = "DATABASE_UNAVAILABLE"
    default_message = "the database is unavailable; retry shortly"


class DatabaseReadOnly(DatabaseUnavailable):
    """The job database answers but takes no writes: a standby after a failover, a database
    or file turned read-only, a user without write rights. Nothing was stored."""

    code = "DATABASE_READ_ONLY"
    retry_after = 30
    default_message = (
        "the database is read-only now (a standby, a read-only file, or no write rights); "
        "nothing was stored, retry later"
    )


# CLI exit codes: 0 ok, 2 usage, 3 bad input, 4 model unavailable, 1 anything else.
_EXIT_CODES: dict[type[DemixerError], int] = {
    UnknownStem: 2,
    UnknownModel: 2,
    UnknownQuality: 2,
    InvalidOutput: 2,
    InvalidModelDir: 2,
    DeviceUnavailable: 2,
    InvalidSetting: 2,
    InvalidDataDir: 2,
    InvalidDatabaseUrl: 2,
    InvalidAudio: 3,
    # A server's refusal of one input (over its upload limit), as DURATION_LIMIT (an
    # InvalidAudio) is: `remote separate` goes on with the other inputs.
    FileTooLarge: 3,
    ModelUnavailable: 4,
    Cancelled: 130,
}


def exit_code_for(error: DemixerError) -> int:
    """The CLI exit code for ``error`` (the most specific registered class wins)."""
    for cls in type(error).__mro__:
        if cls in _EXIT_CODES:
            return _EXIT_CODES[cls]
    return 1


def did_you_mean(word: str, known: Iterable[str] | Mapping[str, str]) -> str:
    """`` (did you mean 'a' or 'b'?)`` naming the ones of ``known`` closest to ``word`` (a
    typed id or stem: ``htdemucs_fts``), case aside; ``""`` when none is close. For the
    message of an error about ``word``, right after it. ``known`` as a mapping: each name ->
    what it stands for (an alias -> its model's id), and one name is given for each."""
    stands_for = dict(known) if isinstance(known, Mapping) else {name: name for name in known}
    by_lower: dict[str, str] = {}
    for name in stands_for:
        by_lower.setdefault(name.lower(), name)
    close = difflib.get_close_matches(word.lower(), by_lower, n=6, cutoff=0.6)
    shown: dict[str, str] = {}  # what is named -> its closest name
    for lowered in close:
        shown.setdefault(stands_for[by_lower[lowered]], by_lower[lowered])
    names = list(shown.values())[:3]
    if not names:
        return ""
    return f" (did you mean {' or '.join(repr(name) for name in names)}?)"


def unknown_model(model_id: str, ids: Iterable[str], aliases: Mapping[str, str]) -> UnknownModel:
    """The error for ``model_id``, which is none of ``ids`` (every model, recipe and user
    model, in the order listed) and none of ``aliases`` (a file name -> the id it names): the
    nearest to a typo, then every id. The server's words, and the client's before an upload."""
    ids = list(ids)
    near = did_you_mean(model_id, {**aliases, **{i: i for i in ids}})
    return UnknownModel(f"unknown model {model_id!r}{near}; known models: {', '.join(ids)}")
