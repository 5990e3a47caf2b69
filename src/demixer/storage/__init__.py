"""Blob storage behind one small interface, and signed, expiring URLs.

``base`` holds the interface (:class:`Storage`, :class:`MultipartStorage`), ``local`` the
directory implementation (the embedded default), ``s3`` the S3-compatible one, ``signer`` the
API's own URL signer. :func:`open_storage` picks the store from ``DEMIXER_STORAGE_URL``
(``file:///abs/dir`` or ``s3://BUCKET[/PREFIX]?endpoint=...``).

A store that clients can reach directly (S3) presigns its own URLs (``presign_get``,
``presign_put``), so upload and download bytes never pass through the API; the local one
answers ``None`` and the API's HMAC-signed ``/v1/blobs`` URLs (:class:`UrlSigner`) stand in.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from demixer.storage.base import (
    BlobNotFound,
    InvalidStorageUrl,
    MultipartStorage,
    Storage,
    StoredBlob,
    content_disposition,
    delete_file_blobs,
    file_prefixes,
    landing_key,
    multipart_id,
    multipart_id_key,
    outputs_prefix,
    parts_prefix,
    staging_key,
)
from demixer.storage.local import LocalStorage
from demixer.storage.signer import UrlSigner

__all__ = [
    "BlobNotFound",
    "InvalidStorageUrl",
    "LocalStorage",
    "MultipartStorage",
    "Storage",
    "StoredBlob",
    "UrlSigner",
    "content_disposition",
    "delete_file_blobs",
    "file_prefixes",
    "landing_key",
    "multipart_id",
    "multipart_id_key",
    "open_storage",
    "outputs_prefix",
    "parts_prefix",
    "staging_key",
]


def open_storage(url: str, *, scratch: Path | None = None) -> Storage:
    """The storage for ``url``: ``file:///abs/dir`` or ``s3://BUCKET[/PREFIX]?endpoint=...``
    (see :class:`demixer.storage.s3.S3Storage`). ``scratch``: where a remote store's
    ``local_path`` copies go (the data directory's scratch space; default ``$TMPDIR``)."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return LocalStorage(Path(unquote(parsed.path)))
    if parsed.scheme == "s3":
        from demixer.storage.s3 import S3Storage  # boto3 loads only when S3 is used

        return S3Storage.from_url(url, scratch=scratch)
    raise InvalidStorageUrl(f"unsupported storage URL {url!r} (supported: file://, s3://)")
