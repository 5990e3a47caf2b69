"""The one place that makes blob URLs: presigned by the store when it can, else signed by us.

A store that clients reach directly (S3) presigns its own URLs, so upload and download bytes
never pass through the API; the local store has none, and the API's HMAC-signed ``/v1/blobs``
URLs (:class:`~demixer.storage.UrlSigner`) stand in.
"""

from __future__ import annotations

import mimetypes
from datetime import datetime

from demixer.service.db import Database
from demixer.service.schema import File
from demixer.storage import Storage, UrlSigner

__all__ = ["BlobLinks"]


class BlobLinks:
    """Signed, expiring download and upload URLs for blobs.

    Args:
        db: the database (an input's row names its type, file name and expiry).
        storage: the blob store (presigns when it can).
        signer: the API's own URL signer (used when the store cannot presign).
    """

    def __init__(self, db: Database, storage: Storage, signer: UrlSigner) -> None:
        self.db = db
        self.storage = storage
        self.signer = signer

    def download_url(
        self,
        key: str,
        ttl_seconds: int,
        *,
        content_type: str | None = None,
        file_name: str | None = None,
        until: datetime | None = None,
    ) -> str:
        """A URL that GETs blob ``key`` for ``ttl_seconds`` without an API key.

        ``content_type`` and ``file_name`` are what the download answers (``Content-Type``,
        ``Content-Disposition``); left out, they come from the input file's row (``inputs/...``)
        or the key, as ``/v1/blobs`` answers them. A presigned URL cannot ask the API whether
        its blob has expired, so it never outlives ``until`` (a result's ``expires_at``; an
        input file's own expiry is looked up).
        """
        known_type, known_name, expires = self._describe(key)
        content_type = content_type or known_type
        file_name = file_name or known_name
        ends = [t for t in (until, expires) if t is not None]
        if ends:
            left = (min(ends) - self.db.clock()).total_seconds()
            ttl_seconds = max(1, min(ttl_seconds, int(left)))
        url = self.storage.presign_get(
            key, ttl_seconds, content_type=content_type, file_name=file_name
        )
        return url if url is not None else self.signer.url("GET", key, ttl_seconds)

    def upload_url(
        self,
        key: str,
        ttl_seconds: int,
        *,
        content_type: str,
        content_length: int | None = None,
        now: float | None = None,
    ) -> str:
        """A URL that PUTs blob ``key`` (with ``Content-Type: content_type`` and, when given,
        exactly ``content_length`` bytes) for ``ttl_seconds``: presigned by the storage when it
        can, else ``/v1/blobs`` (which checks the length itself)."""
        url = self.storage.presign_put(
            key, ttl_seconds, content_type=content_type, content_length=content_length
        )
        if url is not None:
            return url
        return self.signer.url("PUT", key, ttl_seconds, now=now)

    def _describe(self, key: str) -> tuple[str, str, datetime | None]:
        name = key.rsplit("/", 1)[-1]
        if key.startswith("inputs/"):
            with self.db.read() as s:
                row = s.get(File, name)
            if row is not None:
                return row.content_type, row.file_name, row.expires_at
        return mimetypes.guess_type(name)[0] or "application/octet-stream", name, None
