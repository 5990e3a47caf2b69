"""What the service needs from a blob store: the interface, its one error, and key helpers.

Keys look like ``inputs/{file_id}`` and ``outputs/{job_id}/attempt-{n}/{stem}.{ext}``. The
implementations are the local directory (:mod:`demixer.storage.local`, the embedded default)
and S3-compatible stores (:mod:`demixer.storage.s3`), chosen by ``DEMIXER_STORAGE_URL``
(:func:`demixer.storage.open_storage`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable
from urllib.parse import quote

from demixer.errors import DemixerError

__all__ = [
    "BlobNotFound",
    "MultipartStorage",
    "Storage",
    "StoredBlob",
    "content_disposition",
    "delete_file_blobs",
    "file_prefixes",
    "landing_key",
    "multipart_id",
    "multipart_id_key",
    "outputs_prefix",
    "parts_prefix",
    "safe_key",
    "staging_key",
]


class InvalidStorageUrl(ValueError):
    """``DEMIXER_STORAGE_URL`` names no store demixer has (a configuration error)."""


class BlobNotFound(DemixerError):
    """No blob under that key (deleted, expired or never written)."""

    code = "NOT_FOUND"


def staging_key(file_id: str) -> str:
    """Where a file's bytes land when a client PUTs them straight into the store (S3); they are
    moved to the file's own key when it is completed, out of reach of the still-valid PUT URL,
    so the bytes that were checked and probed are the bytes every job reads."""
    return f"staging/{file_id}"


def landing_key(file_id: str) -> str:
    """Where one PUT through the API puts a file's bytes until they are probed and recorded:
    its own key, so a PUT racing another (or a DELETE) never touches the bytes the file holds.
    Named as a store's temporaries are (``.{name}.{pid}.{random}.part``): those of a process
    killed before it finished are removed at the next start (``sweep_partials``)."""
    return f"staging/.{file_id}.{os.getpid()}.{secrets.token_hex(5)}.part"


def parts_prefix(upload_id: str) -> str:
    """Where the parts of a multipart upload (Gaudio's chunks) are kept until it completes."""
    return f"uploads/{upload_id}/"


def multipart_id_key(upload_id: str) -> str:
    """Where the id of the store's own multipart upload for an upload is kept (S3: the parts
    go straight to the bucket, which knows them by that id)."""
    return f"{parts_prefix(upload_id)}upload-id"


def outputs_prefix(job_id: str) -> str:
    """Where a request's stems are stored: ``attempt-{n}/`` of each attempt, ``cached/`` of
    a result copied from an earlier one."""
    return f"outputs/{job_id}/"


def file_prefixes(file_id: str, storage_key: str) -> tuple[str, ...]:
    """Every place a file's bytes can be: its own key, the staging key of a PUT straight to
    the store, and the parts of a multipart upload not completed."""
    return (storage_key, staging_key(file_id), parts_prefix(file_id))


@dataclass(frozen=True)
class StoredBlob:
    """One blob as a store lists it: its key, its size in bytes, and when it was last
    written (UTC; a store's own clock: S3 dates an object assembled from parts at the start
    of its upload)."""

    key: str
    size: int
    modified: datetime


class Storage(Protocol):
    """What the service needs from a blob store.

    ``direct``: clients reach the store themselves (``presign_get``/``presign_put`` give URLs),
    at ``public_origin`` (``scheme://host[:port]``; None when not direct).
    """

    direct: bool
    public_origin: str | None

    def put(self, key: str, source: BinaryIO, *, max_bytes: int | None = None) -> tuple[int, str]:
        """Stream ``source`` into ``key``; returns (bytes, sha256 hex). Atomic: all or nothing.

        Raises ``ValueError`` when more than ``max_bytes`` arrive (nothing is stored).
        """
        ...

    def put_file(self, key: str, path: Path) -> int:
        """Store a local file under ``key``; returns its size."""
        ...

    def open(self, key: str, start: int = 0) -> BinaryIO:
        """Read a blob from byte ``start`` on (raises BlobNotFound)."""
        ...

    def size(self, key: str) -> int:
        """Size in bytes (raises BlobNotFound)."""
        ...

    def exists(self, key: str) -> bool:
        """Whether ``key`` holds a blob."""
        ...

    def delete_prefix(self, prefix: str) -> int:
        """Delete every blob whose key starts with ``prefix``; returns how many."""
        ...

    def blobs(self, prefix: str) -> Iterator[StoredBlob]:
        """Every blob ``delete_prefix(prefix)`` would delete: the one named ``prefix`` and
        those "inside" it (``prefix/...``), a store's temporaries of writes under way too."""
        ...

    def sweep_partials(self) -> int:
        """Delete what writes left behind when their process was killed midway (a process
        starting on the store calls it); returns how many."""
        ...

    def ping(self) -> None:
        """Check that the store can be used now (a readiness probe: cheap, no blob written).

        Raises :class:`~demixer.errors.StorageUnavailable` saying what is wrong, without
        naming paths or buckets (the message is shown to unauthenticated callers).
        """
        ...

    def local_path(self, key: str) -> contextlib.AbstractContextManager[Path]:
        """A local file with the blob's bytes for the duration of the context."""
        ...

    def copy(self, src_key: str, dst_key: str) -> int:
        """Copy a blob to another key (raises BlobNotFound); returns its size."""
        ...

    def presign_get(
        self, key: str, ttl_seconds: int, *, content_type: str, file_name: str
    ) -> str | None:
        """A URL that GETs the blob straight from the store for ``ttl_seconds``, answering
        ``content_type`` and an attachment named ``file_name``; None: the store has none."""
        ...

    def presign_put(
        self, key: str, ttl_seconds: int, *, content_type: str, content_length: int | None = None
    ) -> str | None:
        """A URL that PUTs a blob (sent with ``Content-Type: content_type`` and, when given,
        exactly ``content_length`` bytes: the store refuses any other size) straight into the
        store for ``ttl_seconds``; None: the store has none (the API receives the bytes)."""
        ...


@runtime_checkable
class MultipartStorage(Protocol):
    """A store that assembles a blob from parts the clients PUT to it directly (S3)."""

    #: the smallest part but the last one, in bytes
    min_part_bytes: int

    def create_multipart(self, key: str, content_type: str) -> str:
        """Begin a multipart upload to ``key``; returns its upload id."""
        ...

    def presign_part(
        self, key: str, upload_id: str, number: int, ttl_seconds: int, content_length: int
    ) -> str:
        """A URL to PUT part ``number`` (from 1) of exactly ``content_length`` bytes (another
        size is refused); the store answers the part's ``ETag``."""
        ...

    def complete_multipart(self, key: str, upload_id: str, parts: list[tuple[int, str]]) -> int:
        """Assemble ``(number, etag)`` parts (in number order) into ``key``; returns its size.

        Raises ``ValueError`` when an ETag does not match its part or a part is missing or too
        small, BlobNotFound when no such upload is open.
        """
        ...

    def abort_multipart(self, key: str, upload_id: str) -> None:
        """Drop an unfinished multipart upload and its parts."""
        ...


def multipart_id(storage: Storage, upload_id: str) -> str | None:
    """The id of the store's own multipart upload kept for ``upload_id``
    (:func:`multipart_id_key`); None when none is open (completed, never opened, or not a
    multipart upload)."""
    try:
        with storage.open(multipart_id_key(upload_id)) as fh:
            return fh.read().decode()
    except BlobNotFound:
        return None


def delete_file_blobs(storage: Storage, file_id: str, storage_key: str) -> int:
    """Delete every blob a file has (:func:`file_prefixes`); returns how many.

    A multipart upload still open in the store (a Gaudio upload never completed) is aborted
    first: the bucket keeps, and bills, the parts of an open upload out of sight of any listing
    until it is completed or aborted, and a part URL still valid would keep adding to it.
    """
    if isinstance(storage, MultipartStorage):
        upload_id = multipart_id(storage, file_id)
        if upload_id is not None:
            storage.abort_multipart(storage_key, upload_id)
    return sum(storage.delete_prefix(prefix) for prefix in file_prefixes(file_id, storage_key))


def content_disposition(file_name: str) -> str:
    """``attachment`` with ``file_name`` (an ASCII fallback and the RFC 5987 UTF-8 form).

    The fallback is what ``curl -OJ`` saves (it reads no ``filename*``): a letter's accents
    are left out (``Beyoncé`` as ``Beyonce``, not ``Beyonc_``), what has no ASCII letter in
    it is ``_``."""
    fallback = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\' else "_"
        for c in _without_accents(file_name)
    )
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(file_name, safe='')}"


def _without_accents(text: str) -> str:
    """``text`` with the accents of its Latin letters left out (``é`` is ``e`` and U+0301
    decomposed, as macOS sends it): ``Déjà`` as ``Deja``. Any other character stays as it
    is."""
    out = []
    for c in text:
        if unicodedata.combining(c):
            continue
        base = unicodedata.normalize("NFKD", c)
        letters = "".join(b for b in base if not unicodedata.combining(b))
        out.append(letters if letters.isascii() and letters else c)
    return "".join(out)


def safe_key(key: str) -> str:
    """``key`` when it is a relative path without empty, ``.`` or ``..`` parts; a store
    refuses any other (``ValueError``)."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"bad storage key {key!r}")
    return key
