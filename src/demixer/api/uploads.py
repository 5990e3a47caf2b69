"""Input files: announce, receive the bytes (signed PUT or multipart), probe, read, delete.

A file row goes ``pending`` -> ``uploaded`` (its bytes probed as audio) or ``failed`` (not
audio; a new PUT may replace them), and ``deleted`` at the end; every transition is made by
the files' state owner, :mod:`demixer.service.files.lifecycle`. Bytes are streamed into storage
in chunks and never held whole in memory; the size is capped while they arrive.

With local storage the signed PUT goes to the API (``/v1/blobs``), which probes the bytes at
once. Each PUT writes to a key of its own (``landing_key``), and only the one that records the
file moves its bytes to the file's key, in the same transaction: a PUT racing another, or a
DELETE, never replaces or removes the bytes the file holds, and leaves none behind.

With S3 the PUT URL is presigned for the bucket: the API is not told when the bytes arrive,
so ``POST /v1/files/{id}/complete`` (:func:`complete_file`) checks and probes them; reading
the file or using it in a job does the same for a pending file whose bytes are there
(:func:`settle_pending`).
"""

from __future__ import annotations

import contextlib
import mimetypes
import re
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO, TypeVar, cast

import anyio
import anyio.from_thread
import anyio.to_thread
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from demixer.api.schemas import (
    FileCreate,
    FileError,
    FileObject,
    FileStatus,
    FileUpload,
    Retention,
    wire_time,
)
from demixer.api.scope import media_type
from demixer.audio import duration_refusal, probe
from demixer.errors import (
    AlreadyUploaded,
    ContentTypeMismatch,
    DemixerError,
    DurationLimit,
    FileExpired,
    FileNotReady,
    FileTooLarge,
    InvalidAudio,
    NotFound,
    SizeMismatch,
    UnsupportedMediaType,
    UnsupportedSampleRate,
)
from demixer.models.loading import file_sha256
from demixer.service.accounts.storage import StorageUse, storage_use
from demixer.service.context import Services
from demixer.service.db import is_disk_full
from demixer.service.files.lifecycle import (
    PURPOSE,
    FileConflict,
    mark_deleted,
    mark_failed,
    mark_uploaded,
    new_file,
)
from demixer.service.files.states import FileState
from demixer.service.schema import File
from demixer.storage import BlobNotFound, delete_file_blobs, landing_key, staging_key

__all__ = [
    "INPUT_FORMATS",
    "MEDIA_TYPES",
    "AsyncBodyReader",
    "complete_file",
    "create_file",
    "delete_file",
    "file_object",
    "owned_file",
    "receive_put",
    "record_upload",
    "run_upload",
    "settle_pending",
    "storage_room",
    "store_direct",
    "type_from_name",
]

# What demixer's decoder (PyAV/FFmpeg) takes; video containers give their audio track.
INPUT_FORMATS = ["wav", "flac", "mp3", "m4a", "aac", "ogg", "opus", "mp4", "mov", "mkv", "webm"]
# The media types an upload is taken in (415 otherwise), as the OpenAPI document names them;
# application/octet-stream first: client generators type a body of that one as bytes.
MEDIA_TYPES = (
    "application/octet-stream",
    "audio/*",
    "video/*",
    "application/ogg",
    "application/mp4",
)
_OTHER_TYPES = frozenset(t for t in MEDIA_TYPES if not t.endswith("/*"))


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")  # RFC 9110 token (lowercased)


def type_from_name(file_name: str) -> str:
    """The media type ``file_name``'s extension says, where it is audio or video; else
    ``application/octet-stream`` (the bytes are probed either way). The system's table maps
    some video extensions to other things: ``.ts`` (an MPEG-TS recording) to Qt's translation
    files, ``.mts`` (a camcorder's AVCHD video) to a 3D model format."""
    guessed = mimetypes.guess_type(file_name)[0] or ""
    return guessed if guessed.startswith(("audio/", "video/")) else "application/octet-stream"


def _accepted(content_type: str, param: str) -> str:
    mt = media_type(content_type)
    kind, _, subtype = mt.partition("/")
    # A real media type: its subtype one HTTP token, nothing a header could not carry.
    audio = kind in ("audio", "video") and _TOKEN.fullmatch(subtype) is not None
    if len(mt) <= 100 and (audio or mt in _OTHER_TYPES):
        return mt
    raise UnsupportedMediaType(
        f"content type {content_type!r} is not audio or video; send audio/*, video/* or "
        f"application/octet-stream ({', '.join(INPUT_FORMATS)} files)",
        param=param,
    )


def _retention(services: Services) -> timedelta:
    # How long an uploaded input is kept (settings: 72 h, like Gaudio); the sweeper deletes after.
    return timedelta(seconds=services.settings.upload_retention_seconds)


def _ts(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def file_object(row: File) -> FileObject:
    """The wire form of a file row."""
    error = None
    if row.status == FileState.FAILED and row.error_code:
        error = FileError(code=row.error_code, message=row.error_message or "")
    return FileObject(
        file_id=row.id,
        file_name=row.file_name,
        content_type=row.content_type,
        file_size=row.bytes_stored if row.bytes_stored is not None else row.file_size,
        purpose=row.purpose,
        status=cast(FileStatus, row.status),
        created_at=row.created_at,
        uploaded_at=row.uploaded_at,
        expires_at=row.expires_at,
        duration=row.duration,
        sample_rate=row.sample_rate,
        channels=row.channels,
        audio_start=row.audio_start,
        audio_tracks=row.audio_tracks,
        error=error,
    )


def owned_file(
    services: Services, session: Session, account_id: str, file_id: str, param: str | None = None
) -> File:
    """The caller's live file; another account's, a deleted or unknown id is NOT_FOUND."""
    row = session.get(File, file_id)
    if row is None or row.account_id != account_id or row.status == FileState.DELETED:
        raise NotFound(f"no file {file_id!r}", param=param)
    if row.expires_at is not None and services.db.clock() > row.expires_at:
        raise FileExpired(f"file {file_id!r} expired at {wire_time(row.expires_at)}", param=param)
    return row


def create_file(services: Services, account_id: str, req: FileCreate) -> FileUpload:
    """Record an announced file and hand out a signed PUT URL for its bytes."""
    limit = services.settings.max_upload_bytes
    if req.file_size > limit:
        raise FileTooLarge.over(
            limit, f"file_size {req.file_size}", req.file_size, param="file_size"
        )
    content_type = _accepted(req.content_type, "content_type")
    now = services.db.clock()
    with services.db.write() as s:
        row = new_file(
            s,
            account_id=account_id,
            file_name=req.file_name,
            content_type=content_type,
            file_size=req.file_size,
            now=now,
            retention=_retention(services),
            storage_cap=services.settings.max_account_storage_bytes,
        )
    file_id = row.id
    ttl = services.settings.upload_url_ttl_seconds
    signed_at = time.time()
    return FileUpload(
        file_id=file_id,
        upload_url=services.links.upload_url(
            _landing(services, row),
            ttl,
            content_type=content_type,
            content_length=req.file_size,
            now=signed_at,
        ),
        # Lower case, as AudioLasso's upload page and API reference show it: a client that
        # reads upload.headers["content-type"] (a dict, jq) finds it.
        headers={"content-type": content_type},
        expires_at=_ts(services.signer.expiry(ttl, now=signed_at)),
        retention=Retention(delete_after=now + _retention(services)),
    )


def _landing(services: Services, row: File) -> str:
    """Where the PUT of ``row``'s bytes lands: its own key when the API receives them, a
    staging key when they go straight into the store (see ``staging_key``)."""
    return staging_key(row.id) if services.storage.direct else row.storage_key


def _probe_and_record(
    services: Services, row: File, size: int, sha256: str | None, landed: str | None = None
) -> File:
    """Probe the stored bytes as audio and record the outcome on the row (pending/failed).

    ``sha256`` None: the bytes went straight to the store; it is computed from the local copy.
    ``landed``: the bytes are there, not at the file's key (one PUT's own key): they are moved
    to it in the transaction that records the file, and only then; the caller removes
    ``landed``. Raises FileConflict when the file was uploaded or deleted meanwhile.
    """
    key = row.storage_key
    now = services.db.clock()
    try:
        with services.storage.local_path(landed or key) as path:
            shown = {str(path): row.file_name, f"'{path.name}'": f"'{row.file_name}'"}
            if sha256 is None:
                sha256 = file_sha256(path)
            # Packets counted up to the duration limit: a hidden length shows here, as in
            # the job (see audio.decode.probe).
            limit = services.settings.max_duration_seconds
            info = probe(path, max_seconds=limit)
            # Over the limit it can never be separated here: refused now, not kept 72 h.
            refusal = duration_refusal(f"'{path.name}'", info.duration, limit)
            if refusal is not None:
                raise refusal
    except InvalidAudio as exc:
        message = exc.message
        for old, new in shown.items():
            message = message.replace(old, new)
        if landed is None:
            services.storage.delete_prefix(key)
        with services.db.write() as s:
            mark_failed(
                s,
                row.id,
                code=exc.code,
                message=message,
                size=size,
                sha256=sha256,
                sample_rate=exc.sample_rate if isinstance(exc, UnsupportedSampleRate) else None,
            )
        refused = DurationLimit if isinstance(exc, DurationLimit) else InvalidAudio
        raise refused(message, param="file") from None
    moved = False
    try:
        with services.db.write() as s:  # FileConflict: deleted (or uploaded by a racing PUT)
            done = mark_uploaded(s, row.id, size=size, sha256=sha256, info=info, now=now)
            if landed is not None:  # a failed move rolls the record back
                services.storage.copy(landed, key)
                moved = True
            return done
    except DBAPIError as exc:
        # Nor does a record that never committed leave the bytes moved: on a full disk the
        # PUT answered 507 "nothing was stored" while the file's key held them, and the next
        # read of the file recorded it uploaded, so that the PUT retried as told was 409
        # FILE_ALREADY_UPLOADED. Only where the commit surely failed: a connection cut at
        # COMMIT may have committed, and the bytes must then stay.
        if moved and is_disk_full(exc):
            services.storage.delete_prefix(key)
        raise


def record_upload(services: Services, row: File, size: int, sha256: str | None) -> File:
    """Probe bytes already assembled at ``row.storage_key`` (e.g. from a vendor's multipart
    parts) and record the outcome, exactly as a PUT does (raises InvalidAudio when failed)."""
    return _probe_and_record(services, row, size, sha256)


def receive_put(
    services: Services,
    key: str,
    source: BinaryIO,
    *,
    content_type: str | None,
    content_length: int | None,
) -> File:
    """Take the bytes of a signed PUT (signature already checked) for the file at ``key``."""
    with services.db.read() as s:
        row = s.execute(select(File).where(File.storage_key == key)).scalar_one_or_none()
    if row is None or row.status == FileState.DELETED:
        raise NotFound(f"no file is waiting for bytes at {key!r}")
    if row.expires_at is not None and services.db.clock() > row.expires_at:
        raise FileExpired(f"file {row.id!r} expired at {wire_time(row.expires_at)}")
    if row.status == FileState.UPLOADED:
        raise AlreadyUploaded(f"file {row.id!r} is already uploaded; create a new file")
    if media_type(content_type) != row.content_type:
        raise ContentTypeMismatch(
            f"send the Content-Type declared for this file, {row.content_type!r} "
            f"(got {content_type!r})",
            param="Content-Type",
        )
    declared = row.file_size or 0
    limit = services.settings.max_upload_bytes
    if declared > limit or (content_length is not None and content_length > limit):
        raise FileTooLarge.over(limit)
    if content_length is not None and content_length != declared:
        raise SizeMismatch(
            f"Content-Length {content_length} differs from the declared file_size {declared}",
            param="file_size",
        )
    landed = landing_key(row.id)
    try:
        try:
            size, sha256 = services.storage.put(landed, source, max_bytes=declared)
        except ValueError:
            raise SizeMismatch(
                f"more bytes arrived than the declared file_size {declared}", param="file_size"
            ) from None
        if size != declared:
            raise SizeMismatch(
                f"{size} bytes arrived but file_size declared {declared}", param="file_size"
            )
        return _probe_and_record(services, row, size, sha256, landed)
    except FileConflict:
        with services.db.read() as s:
            current = s.get(File, row.id)
        if current is None or current.status == FileState.DELETED:
            raise NotFound(f"file {row.id!r} was deleted while its bytes arrived") from None
        raise AlreadyUploaded(
            f"file {row.id!r} was uploaded by another request while these bytes arrived; "
            "create a new file"
        ) from None
    finally:
        services.storage.delete_prefix(landed)


def complete_file(services: Services, account_id: str, file_id: str) -> File:
    """Finish a file whose bytes were PUT straight to the store: check their size against the
    announced ``file_size`` and probe them, as a PUT through the API does.

    Idempotent: an uploaded file answers itself (so does one that failed with no new bytes),
    also to a complete racing the one that records it.
    Raises FileNotReady when no bytes are there yet, SizeMismatch (the bytes are dropped) when
    they are not ``file_size`` many, InvalidAudio (the file ends ``failed``) when not audio.
    """
    with services.db.read() as s:
        row = owned_file(services, s, account_id, file_id)
    if row.status == FileState.UPLOADED:
        return row
    landed = _landing(services, row)
    not_ready = FileNotReady(
        f"no bytes uploaded yet for file {file_id!r}: PUT them to its upload_url, then complete it"
    )
    try:
        size = services.storage.size(landed)
    except BlobNotFound:
        if row.status == FileState.FAILED:
            return row
        if landed == row.storage_key or not services.storage.exists(row.storage_key):
            raise not_ready from None
        # A concurrent complete moved the bytes out of staging and is probing them (or was
        # killed doing so): probe them here too; the first to record the file wins.
        landed = row.storage_key
        size = services.storage.size(landed)
    declared = row.file_size or 0
    if size != declared:
        services.storage.delete_prefix(landed)
        raise SizeMismatch(
            f"{size} bytes arrived but file_size declared {declared}; PUT the file again",
            param="file_size",
        )
    if landed != row.storage_key:
        # Out of reach of the PUT URL (valid for a while yet): what is probed is what jobs read.
        try:
            services.storage.copy(landed, row.storage_key)
        except BlobNotFound:  # a concurrent complete moved it first (or dropped it)
            if not services.storage.exists(row.storage_key):
                return _completed_elsewhere(services, account_id, file_id, not_ready)
        else:
            services.storage.delete_prefix(landed)
    try:
        return _probe_and_record(services, row, size, None)
    except AlreadyUploaded as exc:  # a concurrent complete (or a read) finished it first
        return _completed_elsewhere(services, account_id, file_id, exc)


def _completed_elsewhere(
    services: Services, account_id: str, file_id: str, otherwise: DemixerError
) -> File:
    """The file as a concurrent completion left it; ``otherwise`` when that did not finish."""
    with services.db.read() as s:
        done = owned_file(services, s, account_id, file_id)
    if done.status != FileState.UPLOADED:
        raise otherwise
    return done


def settle_pending(services: Services, row: File) -> File:
    """``row``, finished first (:func:`complete_file`) if it is pending and its bytes have
    arrived in the store; a size or audio problem is recorded or left for the caller's own
    status check, never raised.

    The bytes may also be at the file's own key already: a completion running meanwhile has
    moved them out of staging and is probing them (or was killed doing so). A job submitted
    then was refused 409 FILE_NOT_READY ("PUT its bytes first"); ``complete_file`` probes them
    too, and the first to record the file wins."""
    if row.status != FileState.PENDING:
        return row
    if not any(services.storage.exists(key) for key in {_landing(services, row), row.storage_key}):
        return row
    try:
        return complete_file(services, row.account_id, row.id)
    except (SizeMismatch, InvalidAudio, AlreadyUploaded, FileNotReady):
        with services.db.read() as s:
            return owned_file(services, s, row.account_id, row.id)


def storage_room(services: Services, account_id: str) -> StorageUse:
    """What ``account_id``'s files and results hold now, against its cap: read before a form
    upload's body, so that its file is spooled no further than the room left
    (:func:`~demixer.api.forms.read_form`). :func:`store_direct` checks again, with the
    account's row locked, before the bytes are stored."""
    with services.db.read() as s:
        cap = services.settings.max_account_storage_bytes
        return storage_use(s, account_id, cap, services.db.clock())


def store_direct(
    services: Services,
    account_id: str,
    spooled: Path,
    *,
    file_name: str,
    content_type: str | None,
    sha256: str | None = None,
    purpose: str = PURPOSE,
) -> File:
    """A multipart upload, spooled at ``spooled`` (counted against the limit while it arrived,
    see :mod:`demixer.api.forms`): record the file (refused with
    :class:`~demixer.errors.StorageQuotaExceeded`, nothing stored, when the account has no room
    for it), store it, probe it. The caller removes the
    spool file. ``sha256``: the spool's, when it was hashed as it was written (else it is read
    again here). ``purpose``: :data:`~demixer.service.files.lifecycle.REQUEST_INPUT` for an
    upload that belongs to one request alone (never listed)."""
    mt = media_type(content_type)
    if mt in ("", "application/octet-stream"):
        mt = type_from_name(file_name)
    mt = _accepted(mt, "file")
    limit = services.settings.max_upload_bytes
    if spooled.stat().st_size > limit:
        raise FileTooLarge.over(limit)
    if sha256 is None:
        sha256 = file_sha256(spooled)
    size = spooled.stat().st_size
    # The row first, in the transaction that checks the account's room for it: a file that
    # does not fit is refused before any of its bytes reach the store.
    with services.db.write() as s:
        row = new_file(
            s,
            account_id=account_id,
            file_name=file_name[:300],
            content_type=mt,
            file_size=size,
            now=services.db.clock(),
            retention=_retention(services),
            storage_cap=services.settings.max_account_storage_bytes,
            cap_param="file",
            purpose=purpose,
        )
    try:
        # Local storage links the spool into place (same disk): the bytes are written once.
        size = services.storage.put_file(row.storage_key, spooled)
    except BaseException:
        # Not stored: the row goes, or it would count against the account's room (and show
        # as pending) until it expired. The store's or the database's own error is what the
        # caller is answered, not one from this cleanup (the store or disk may be down or full
        # still): a row left behind is swept when it expires.
        with contextlib.suppress(Exception):
            services.storage.delete_prefix(row.storage_key)
        with contextlib.suppress(Exception), services.db.write() as s:
            mark_deleted(s, row.id)
        raise
    return _probe_and_record(services, row, size, sha256)


def delete_file(services: Services, account_id: str, file_id: str) -> None:
    """Delete the bytes and mark the row deleted (it then answers 404)."""
    with services.db.read() as s:
        row = owned_file(services, s, account_id, file_id)
    delete_file_blobs(services.storage, file_id, row.storage_key)
    try:
        with services.db.write() as s:
            mark_deleted(s, file_id)
    except FileConflict:  # a concurrent delete was first: answer as a later one does
        raise NotFound(f"no file {file_id!r}") from None


class AsyncBodyReader:
    """A blocking ``read()`` over an async byte stream, for code running in a worker thread.

    ``storage.put`` reads a file object in chunks; a request body is an async iterator. This
    bridges the two without buffering the body: each ``read`` fetches the next chunk from the
    event loop (``anyio.from_thread``), so it must be used from :func:`run_upload`.
    """

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""
        self._done = False

    async def _next(self) -> bytes | None:
        try:
            return await self._chunks.__anext__()
        except StopAsyncIteration:
            return None

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (all that is left when negative); ``b""`` only at the end."""
        while not self._done and (not self._buffer or size < 0):
            chunk = anyio.from_thread.run(self._next)
            if chunk is None:
                self._done = True
            else:
                self._buffer += chunk
        if size < 0:
            size = len(self._buffer)
        out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out


T = TypeVar("T")


async def run_upload(call: Callable[[], T]) -> T:
    """``call()``, a step of an upload that may hold its thread for long, in a worker thread
    that is not one of AnyIO's default 40: reading a request body (through an
    :class:`AsyncBodyReader`), waiting for a form's file to be written to its spool
    (``api/forms.py``), storing a spooled file (:func:`store_direct`), probing a file read
    back from the store (:func:`complete_file`) or put together from a vendor's parts.

    Such a call holds its thread for as long as the client takes to send the body (minutes
    for a big file, hours for a slow client that keeps above the body timeout's floor), or
    the disk or the object store takes to take the file (as long as the store's timeouts
    and retries while it hangs). On the default limiter, 40 uploads at once held every
    token, and every other request that needs a thread (a key not yet cached, a listing, a
    submit) waited until an upload ended. Each call here has its own one-token limiter; the
    number of uploads is bounded by the connections the server accepts and the body
    timeout, not by this pool.
    """
    return await anyio.to_thread.run_sync(call, limiter=anyio.CapacityLimiter(1))
