"""Blob storage behind one small interface, and signed, expiring URLs.

Keys look like ``inputs/{file_id}`` and ``outputs/{job_id}/attempt-{n}/{stem}.{ext}``. The local
directory implementation is the embedded default; an S3-compatible one
(:mod:`demixer.storage.s3`) slots in behind the same interface, chosen by
``DEMIXER_STORAGE_URL`` (``file:///abs/dir`` or ``s3://BUCKET[/PREFIX]?endpoint=...``).

A storage that clients can reach directly (S3) presigns its own URLs (``presign_get``,
``presign_put``), so upload and download bytes never pass through the API; the local one
answers ``None`` and the API's HMAC-signed ``/v1/blobs`` URLs (:class:`UrlSigner`) stand in.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable
from urllib.parse import quote, urlparse

from demixer.errors import DemixerError, StorageUnavailable

__all__ = [
    "BlobNotFound",
    "LocalStorage",
    "MultipartStorage",
    "Storage",
    "UrlSigner",
    "content_disposition",
    "open_storage",
    "staging_key",
]

_CHUNK = 1 << 20


class BlobNotFound(DemixerError):
    """No blob under that key (deleted, expired or never written)."""

    code = "NOT_FOUND"


def staging_key(file_id: str) -> str:
    """Where a file's bytes land when a client PUTs them straight into the store (S3); they are
    moved to the file's own key when it is completed, out of reach of the still-valid PUT URL,
    so the bytes that were checked and probed are the bytes every job reads."""
    return f"staging/{file_id}"


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

    def open(self, key: str) -> BinaryIO:
        """Read a blob (raises BlobNotFound)."""
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

    def presign_part(self, key: str, upload_id: str, number: int, ttl_seconds: int) -> str:
        """A URL to PUT part ``number`` (from 1); the store answers the part's ``ETag``."""
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


def content_disposition(file_name: str) -> str:
    """``attachment`` with ``file_name`` (an ASCII fallback and the RFC 5987 UTF-8 form)."""
    fallback = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in file_name
    )
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(file_name, safe='')}"


def _safe_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"bad storage key {key!r}")
    return key


class LocalStorage:
    """Blobs as files under one directory; writes go to a temp file renamed into place."""

    direct = False  # the API receives and serves the bytes (/v1/blobs)
    public_origin: str | None = None

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / _safe_key(key)

    def put(self, key: str, source: BinaryIO, *, max_bytes: int | None = None) -> tuple[int, str]:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        total = 0
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := source.read(_CHUNK):
                    total += len(chunk)
                    if max_bytes is not None and total > max_bytes:
                        raise ValueError(f"more than {max_bytes} bytes")
                    digest.update(chunk)
                    out.write(chunk)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return total, digest.hexdigest()

    def put_file(self, key: str, path: Path) -> int:
        # The workers' outputs sit on the same filesystem: a hard link stores them at once.
        # The caller never changes the file afterwards (it only deletes it).
        if not path.is_file():
            raise BlobNotFound(f"no file {path}")
        return self._link_or_copy(path, self._path(key))

    @staticmethod
    def _link_or_copy(src: Path, dst: Path) -> int:
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.{threading.get_ident()}.link")
        try:
            try:
                os.link(src, tmp)
            except OSError:
                shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return dst.stat().st_size

    def open(self, key: str) -> BinaryIO:
        try:
            return self._path(key).open("rb")
        except FileNotFoundError:
            raise BlobNotFound(f"no blob {key}") from None

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            raise BlobNotFound(f"no blob {key}") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def ping(self) -> None:
        # The directory is made at start; a volume unmounted or removed since shows here.
        if not self.root.is_dir():
            raise StorageUnavailable("the storage directory is missing")
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageUnavailable("the storage directory is not writable")

    def delete_prefix(self, prefix: str) -> int:
        target = self.root / prefix.rstrip("/")
        if target.is_file():
            target.unlink(missing_ok=True)
            return 1
        if target.is_dir():
            count = sum(1 for p in target.rglob("*") if p.is_file())
            shutil.rmtree(target, ignore_errors=True)
            return count
        return 0

    def copy(self, src_key: str, dst_key: str) -> int:
        # A hard link costs nothing and is safe: blobs are only ever replaced by rename and
        # removed by unlink, never changed in place. Other filesystems get a real copy.
        src = self._path(src_key)
        if not src.is_file():
            raise BlobNotFound(f"no blob {src_key}")
        return self._link_or_copy(src, self._path(dst_key))

    @contextlib.contextmanager
    def local_path(self, key: str) -> Iterator[Path]:
        path = self._path(key)
        if not path.is_file():
            raise BlobNotFound(f"no blob {key}")
        yield path

    def presign_get(
        self, key: str, ttl_seconds: int, *, content_type: str, file_name: str
    ) -> str | None:
        return None  # the API serves local blobs itself (/v1/blobs)

    def presign_put(
        self, key: str, ttl_seconds: int, *, content_type: str, content_length: int | None = None
    ) -> str | None:
        return None


def open_storage(url: str) -> Storage:
    """The storage for ``url``: ``file:///abs/dir`` or ``s3://BUCKET[/PREFIX]?endpoint=...``
    (see :class:`demixer.storage.s3.S3Storage`)."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return LocalStorage(Path(parsed.path))
    if parsed.scheme == "s3":
        from demixer.storage.s3 import S3Storage  # boto3 loads only when S3 is used

        return S3Storage.from_url(url)
    raise ValueError(f"unsupported storage URL {url!r} (supported: file://, s3://)")


class UrlSigner:
    """HMAC-SHA256 signatures over (method, key, expiry) for download and upload URLs.

    A URL is ``{base}/v1/blobs/{key}?expires={unix}&sig={b64url}``; the API checks the
    signature (403 when wrong) and the expiry (410 when past).
    """

    def __init__(self, secret: bytes, base_url: str) -> None:
        self.secret = secret
        self.base_url = base_url.rstrip("/")

    def _sig(self, method: str, key: str, expires: int) -> str:
        msg = f"{method}\n{key}\n{expires}".encode()
        mac = hmac.new(self.secret, msg, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def url(self, method: str, key: str, ttl_seconds: int, now: float | None = None) -> str:
        """A signed URL for ``method`` (GET or PUT) on ``key``, valid ``ttl_seconds``."""
        expires = int((now if now is not None else time.time()) + ttl_seconds)
        sig = self._sig(method, key, expires)
        return f"{self.base_url}/v1/blobs/{quote(key)}?expires={expires}&sig={sig}"

    def expiry(self, ttl_seconds: int, now: float | None = None) -> int:
        """The ``expires`` value a URL made now would carry."""
        return int((now if now is not None else time.time()) + ttl_seconds)

    def check(self, method: str, key: str, expires: int, sig: str, now: float | None = None) -> str:
        """``"ok"``, ``"invalid"`` (tampered: 403) or ``"expired"`` (410)."""
        if not hmac.compare_digest(self._sig(method, key, expires), sig):
            return "invalid"
        if (now if now is not None else time.time()) > expires:
            return "expired"
        return "ok"
