"""Gaudio's chunked upload (S3-style multipart) on demixer's storage and file rows.

``create`` records an ordinary ``files`` row (``pending``; its id is the ``uploadId``) and hands
out one signed part URL per chunk. Each part PUT is stored as its own blob
``uploads/{uploadId}/part-{n}`` and answered with an ``ETag`` (the part's MD5, quoted, as S3
does). ``complete`` checks the listed parts against what was stored, concatenates them in part
order, streaming, into ``inputs/{file_id}`` and probes the result exactly as a native upload
(:func:`demixer.api.uploads.record_upload`), so the file is reusable by any later job.

On a store that takes multipart uploads itself (S3, :class:`~demixer.storage.MultipartStorage`)
the parts never pass through the API: ``create`` opens the store's own multipart upload (its
id is kept in the small blob ``uploads/{uploadId}/upload-id``) and hands out presigned
``upload_part`` URLs, whose ETags the store gives; ``complete`` has the store assemble the
listed parts (it checks the ETags) and probes the result the same way. Parts but the last must
then be at least the store's minimum (5 MiB): the chunk size never goes below it.

Like Gaudio, oversized or non-audio files "upload fine" and are refused at job creation: an
oversized announcement becomes a ``failed`` row at once (its parts are read and dropped), a
file that does not probe as audio is ``failed`` after ``complete``.
"""

from __future__ import annotations

import hashlib
import io
import math
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import BinaryIO, cast
from urllib.parse import parse_qs, urlsplit

from demixer.api import uploads
from demixer.api.schemas import wire_time
from demixer.errors import (
    AlreadyUploaded,
    FileExpired,
    FileTooLarge,
    InvalidAudio,
    InvalidRequest,
    InvalidSignature,
    NotFound,
    SizeMismatch,
)
from demixer.service.context import Services
from demixer.service.files.lifecycle import FileConflict, new_file
from demixer.service.files.states import FileState
from demixer.service.schema import File
from demixer.storage import (
    BlobNotFound,
    MultipartStorage,
    multipart_id,
    multipart_id_key,
    parts_prefix,
)
from demixer.vendors.gaudio.envelope import BadFileName, UploadNotFound, ZeroLength

__all__ = ["MAX_PARTS", "Part", "Upload", "chunk_size", "complete", "create", "receive_part"]

MAX_PARTS = 10_000  # as S3: past this many chunks, the chunks grow instead
_LARGEST_SIZE = (1 << 63) - 1  # a signed 64-bit size column's largest value
_READ = 1 << 20
_BAD_NAME_CHARS = frozenset("/\\\0")


@dataclass(frozen=True)
class Upload:
    """``create``'s answer: the upload id, the chunk size (bytes) and the part URLs in order."""

    upload_id: str
    chunk_size: int
    part_urls: list[str]


@dataclass(frozen=True)
class Part:
    """One entry of ``complete``'s ``parts``: its number (from 1) and the ETag it was given."""

    number: int
    etag: str


def chunk_size(services: Services, file_size: int) -> int:
    """Bytes per part for a file of ``file_size`` bytes: the setting, raised to the store's
    smallest part (S3: 5 MiB) and grown past MAX_PARTS."""
    smallest = 1
    if isinstance(services.storage, MultipartStorage):
        smallest = services.storage.min_part_bytes
    return max(services.settings.gaudio_chunk_bytes, smallest, math.ceil(file_size / MAX_PARTS))


def _multipart_store(services: Services) -> MultipartStorage | None:
    storage = services.storage
    return storage if isinstance(storage, MultipartStorage) else None


def part_key(upload_id: str, number: int) -> str:
    """The storage key of part ``number`` of an upload."""
    return f"{parts_prefix(upload_id)}part-{number}"


def _part_size(chunk: int, file_size: int, number: int) -> int:
    """The bytes of part ``number`` of a ``file_size`` file cut in ``chunk``-byte parts."""
    return min(chunk, file_size - chunk * (number - 1))


def _part_count(services: Services, file_size: int) -> int:
    return math.ceil(file_size / chunk_size(services, file_size))


def _check_name(file_name: object) -> str:
    if not isinstance(file_name, str) or not file_name.strip():
        raise BadFileName("fileName is required, e.g. 'song.mp3'")
    name = file_name.strip()
    stem, dot, ext = name.rpartition(".")
    if len(name) > 300 or not dot or not stem or not ext or set(name) & _BAD_NAME_CHARS:
        raise BadFileName(
            f"fileName {name[:100]!r} must be a plain file name with an extension, e.g. 'song.mp3'"
        )
    return name


def create(
    services: Services, account_id: str, file_name: object, file_size: object, base_path: str
) -> Upload:
    """Record the announced file and sign one part URL per chunk (under ``base_path``)."""
    name = _check_name(file_name)
    # Gaudio types fileSize as a JSON Number: 1000000.0 is the same size as 1000000.
    if isinstance(file_size, float) and file_size.is_integer():
        file_size = int(file_size)
    if isinstance(file_size, bool) or not isinstance(file_size, int) or file_size < 0:
        raise InvalidRequest("fileSize must be the file's size in bytes (an integer)")
    if file_size == 0:
        raise ZeroLength(f"{name!r} is empty (fileSize 0)")
    settings = services.settings
    if file_size > _LARGEST_SIZE:  # past what a size column (or any disk) holds: 1110 now
        raise FileTooLarge.over(settings.max_upload_bytes, repr(name), file_size)
    too_big = file_size > settings.max_upload_bytes
    refused = (
        (
            FileTooLarge.code,
            FileTooLarge.over(settings.max_upload_bytes, repr(name), file_size).message,
        )
        if too_big
        else None
    )
    with services.db.write() as s:
        row = new_file(
            s,
            account_id=account_id,
            file_name=name,
            content_type=uploads.type_from_name(name),
            file_size=file_size,
            now=services.db.clock(),
            retention=timedelta(seconds=settings.upload_retention_seconds),
            refused=refused,  # answered at job creation, as Gaudio does
            storage_cap=settings.max_account_storage_bytes,
            cap_param="fileSize",
        )
    file_id = row.id
    chunk = chunk_size(services, file_size)
    count = _part_count(services, file_size)
    store = _multipart_store(services)
    if store is not None and not too_big:
        # The parts go straight to the store; its upload id is kept beside them.
        store_id = store.create_multipart(row.storage_key, row.content_type)
        services.storage.put(multipart_id_key(file_id), io.BytesIO(store_id.encode()))
        ttl = settings.gaudio_part_url_ttl_seconds
        part_urls = [
            store.presign_part(row.storage_key, store_id, n, ttl, _part_size(chunk, file_size, n))
            for n in range(1, count + 1)
        ]
        return Upload(file_id, chunk, part_urls)
    signed_at = time.time()
    urls = []
    for number in range(1, count + 1):
        blob_url = services.signer.url(
            "PUT", part_key(file_id, number), settings.gaudio_part_url_ttl_seconds, now=signed_at
        )
        query = urlsplit(blob_url).query
        urls.append(f"{settings.base_url}{base_path}/{file_id}/{number}?{query}")
    return Upload(file_id, chunk, urls)


def check_part_signature(
    services: Services, upload_id: str, number: int, query: dict[str, list[str]] | str
) -> None:
    """Raise unless ``query`` (``expires``, ``sig``) signs a PUT of this part."""
    values = parse_qs(query) if isinstance(query, str) else query
    try:
        expires = int(values["expires"][0])
        sig = values["sig"][0]
    except (KeyError, IndexError, ValueError):
        raise InvalidSignature("this part URL is not signed; ask for a new upload") from None
    verdict = services.signer.check("PUT", part_key(upload_id, number), expires, sig)
    if verdict == "invalid":
        raise InvalidSignature("the signature does not match this part URL")
    if verdict == "expired":  # refused as a bucket refuses an expired presigned URL: 403
        raise InvalidSignature("this part URL has expired; create the upload again")


class _Md5Reader:
    """A file object passing ``source`` through while hashing it (MD5, for the ETag)."""

    def __init__(self, source: BinaryIO) -> None:
        self.source = source
        self.md5 = hashlib.md5(usedforsecurity=False)

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size)
        self.md5.update(data)
        return data


def _live_row(services: Services, upload_id: str, account_id: str | None = None) -> File:
    with services.db.read() as s:
        row = s.get(File, upload_id)
    if (
        row is None
        or row.status == FileState.DELETED
        or (account_id is not None and row.account_id != account_id)
    ):
        raise UploadNotFound(f"no upload {upload_id!r}")
    if row.expires_at is not None and services.db.clock() > row.expires_at:
        raise FileExpired(f"upload {upload_id!r} expired at {wire_time(row.expires_at)}")
    return row


def receive_part(services: Services, upload_id: str, number: int, source: BinaryIO) -> str:
    """Store one part (signature already checked); returns its MD5 hex (the ETag)."""
    row = _live_row(services, upload_id)
    if row.status == FileState.UPLOADED:
        raise AlreadyUploaded(f"upload {upload_id!r} is already complete")
    size = row.file_size or 0
    if not 1 <= number <= _part_count(services, size):
        raise InvalidRequest(f"upload {upload_id!r} has no part {number}")
    reader = _Md5Reader(source)
    if row.error_code == FileTooLarge.code:  # refused at job creation: keep nothing
        while reader.read(_READ):
            pass
        return reader.md5.hexdigest()
    # Part `number` holds what the declared fileSize leaves for it (the last part is shorter),
    # so the stored parts never hold more than fileSize, itself within the upload limit (a
    # larger one is refused above, keeping nothing). On S3 the signed URL says it.
    chunk = chunk_size(services, size)
    limit = _part_size(chunk, size, number)
    try:
        services.storage.put(part_key(upload_id, number), cast(BinaryIO, reader), max_bytes=limit)
    except BlobNotFound:  # the upload was deleted (its parts' folder with it) as this arrived
        _live_row(services, upload_id)  # answered as a part for a deleted upload is
        raise
    except ValueError:
        raise SizeMismatch(
            f"part {number} is over its {limit} bytes (fileSize {size} in parts of {chunk})"
        ) from None
    return reader.md5.hexdigest()


class _PartsReader:
    """The stored parts, in order, as one file object, checked while they are read: a part
    whose MD5 is not its ETag, or a total that is not ``size``, raises before the last read
    returns, so ``Storage.put`` (all or nothing) stores nothing at the file's key."""

    def __init__(
        self, services: Services, upload_id: str, etags: dict[int, str], size: int
    ) -> None:
        self.services, self.upload_id = services, upload_id
        self.etags, self.size = etags, size
        self.pending = sorted(etags)
        self.current: BinaryIO | None = None
        self.number = 0
        self.total = 0
        self._md5 = hashlib.md5(usedforsecurity=False)

    def _next_part(self) -> bool:
        if self.current is not None:
            self.current.close()
            self.current = None
            if self._md5.hexdigest() != self.etags[self.number]:
                raise InvalidRequest(
                    f"the awsETag of part {self.number} does not match the bytes sent"
                )
        if not self.pending:
            if self.total != self.size:
                raise SizeMismatch(
                    f"the parts hold {self.total} bytes but fileSize declared {self.size}"
                )
            return False
        self.number = self.pending.pop(0)
        try:
            self.current = self.services.storage.open(part_key(self.upload_id, self.number))
        except BlobNotFound:
            raise InvalidRequest(f"part {self.number} was never uploaded") from None
        self._md5 = hashlib.md5(usedforsecurity=False)
        return True

    def read(self, size: int = -1) -> bytes:
        while True:
            if self.current is None and not self._next_part():
                return b""
            assert self.current is not None
            data = self.current.read(size if size > 0 else _READ)
            if data:
                self._md5.update(data)
                self.total += len(data)
                return data
            self._next_part()
            if self.current is None:
                return b""

    def close(self) -> None:
        if self.current is not None:
            self.current.close()


def complete(services: Services, account_id: str, upload_id: str, parts: list[Part]) -> None:
    """Assemble the parts into the file and probe it (a non-audio file ends ``failed``).

    Idempotent, also when calls race (a client retrying a slow completion): a call that finds
    the parts gone, or the file recorded, because another call completed it meanwhile answers
    as if it had done so itself.
    """
    row = _live_row(services, upload_id, account_id)
    if row.status == FileState.UPLOADED or row.error_code == FileTooLarge.code:
        return  # completed already, or refused at job creation
    size = row.file_size or 0
    expected = list(range(1, _part_count(services, size) + 1))
    numbers = sorted(p.number for p in parts)
    if numbers != expected:
        raise InvalidRequest(
            f"list every part exactly once: partNumber 1 to {len(expected)} (got {numbers})"
        )
    etags = {p.number: p.etag.strip().strip('"').lower() for p in parts}
    try:
        _assemble(services, row, etags)
    except (InvalidRequest, FileConflict):
        if _live_row(services, upload_id, account_id).status == row.status:
            raise
        # Another call recorded the file (and then removed the parts) while this one ran.


def _assemble(services: Services, row: File, etags: dict[int, str]) -> None:
    """Put the parts together at the file's key and record it."""
    size = row.file_size or 0
    store = _multipart_store(services)
    if store is not None:
        _complete_in_store(services, store, row, etags)
        return
    # Checked while read (_PartsReader): nothing reaches the file's key unless every part is
    # right, so a wrong completion racing a right one never removes what that one stored.
    reader = _PartsReader(services, row.id, etags, size)
    try:
        stored, sha256 = services.storage.put(
            row.storage_key, cast(BinaryIO, reader), max_bytes=size
        )
    except ValueError:
        raise SizeMismatch(f"the parts hold more than fileSize {size} bytes") from None
    finally:
        reader.close()
    _record(services, row, stored, sha256)


def _complete_in_store(
    services: Services, store: MultipartStorage, row: File, etags: dict[int, str]
) -> None:
    """Have the store assemble the parts clients PUT to it, then probe the file."""
    size = row.file_size or 0
    store_id = multipart_id(services.storage, row.id)
    if store_id is None:
        raise InvalidRequest(f"upload {row.id!r} has no open multipart upload")
    try:
        stored = store.complete_multipart(row.storage_key, store_id, sorted(etags.items()))
    except BlobNotFound:  # completed by a racing call, or dropped by the store
        if not services.storage.exists(row.storage_key):
            raise InvalidRequest(
                f"upload {row.id!r} is no longer open in storage; create the upload again"
            ) from None
        stored = services.storage.size(row.storage_key)
    except ValueError as exc:  # a wrong ETag, a missing or too small part: may be retried
        raise InvalidRequest(
            f"the parts do not match what was uploaded (check each awsETag and that every "
            f"part but the last has the full chunk size): {exc}"
        ) from None
    if stored != size:
        services.storage.delete_prefix(row.storage_key)
        services.storage.delete_prefix(parts_prefix(row.id))
        raise SizeMismatch(f"the parts hold {stored} bytes but fileSize declared {size}")
    _record(services, row, stored, None)


def _record(services: Services, row: File, stored: int, sha256: str | None) -> None:
    """The assembled file's bytes are in place: probe it (a file that is not audio is recorded
    as failed: job creation answers 1107/1108), then drop the upload's own blobs. In that
    order, a racing completion that finds the parts gone finds the file recorded too."""
    try:
        uploads.record_upload(services, row, stored, sha256)
    except InvalidAudio:
        pass
    except NotFound:
        services.storage.delete_prefix(parts_prefix(row.id))
        raise UploadNotFound(f"upload {row.id!r} was deleted meanwhile") from None
    services.storage.delete_prefix(parts_prefix(row.id))
