"""The one place that makes blob URLs: presigned by the store when it can, else signed by us.

A store that clients reach directly (S3) presigns its own URLs, so upload and download bytes
never pass through the API; the local store has none, and the API's HMAC-signed ``/v1/blobs``
URLs (:class:`~demixer.storage.UrlSigner`) stand in.
"""

from __future__ import annotations

import mimetypes
import time
from datetime import UTC, datetime
from typing import NamedTuple

from demixer.service.db import Database
from demixer.service.schema import File
from demixer.storage import Storage, UrlSigner

__all__ = ["BlobLinks", "Link"]

_MAX_DESCRIBED = 10_000  # inputs remembered by _describe at most


class Link(NamedTuple):
    """A signed download URL and when it stops working: never later than the store (or
    ``/v1/blobs``) refuses it, by the clock that signed it (this machine's, to the second)."""

    url: str
    expires_at: datetime


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
        # An input's (content type, file name, expiry), by key: fixed when the file is
        # announced, so a status read that signs its URL reads the row once per process.
        self._inputs: dict[str, tuple[str, str, datetime | None]] = {}

    def download_url(
        self,
        key: str,
        ttl_seconds: int,
        *,
        content_type: str | None = None,
        file_name: str | None = None,
        until: datetime | None = None,
    ) -> str:
        """A URL that GETs blob ``key`` for ``ttl_seconds`` without an API key: the URL of
        :meth:`download_link`."""
        return self.download_link(
            key, ttl_seconds, content_type=content_type, file_name=file_name, until=until
        ).url

    def download_link(
        self,
        key: str,
        ttl_seconds: int,
        *,
        content_type: str | None = None,
        file_name: str | None = None,
        until: datetime | None = None,
    ) -> Link:
        """A URL that GETs blob ``key`` for ``ttl_seconds`` without an API key, and when it
        expires.

        ``content_type`` and ``file_name`` are what the download answers (``Content-Type``,
        ``Content-Disposition``); left out, they come from the input file's row (``inputs/...``)
        or the key, as ``/v1/blobs`` answers them. A presigned URL cannot ask the API whether
        its blob has expired, so it never outlives ``until`` (a result's ``expires_at``; an
        input file's own expiry is looked up).
        """
        if content_type and file_name and not key.startswith("inputs/"):
            expires = None  # nothing to look up: only an input's row has an expiry of its own
        else:
            known_type, known_name, expires = self._describe(key)
            content_type = content_type or known_type
            file_name = file_name or known_name
        ends = [t for t in (until, expires) if t is not None]
        if ends:
            left = (min(ends) - self.db.clock()).total_seconds()
            ttl_seconds = max(1, min(ttl_seconds, int(left)))
        # Both signers count the lifetime from this second or a later one: /v1/blobs' from
        # ``now`` itself, a presigned URL's from its X-Amz-Date, the second it is signed in.
        now = int(time.time())
        url = self.storage.presign_get(
            key, ttl_seconds, content_type=content_type, file_name=file_name
        )
        if url is None:
            url = self.signer.url("GET", key, ttl_seconds, now=now)
        return Link(url, datetime.fromtimestamp(now + ttl_seconds, UTC))

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
            known = self._inputs.get(key)
            if known is not None:
                return known
            with self.db.read() as s:
                row = s.get(File, name)
            if row is not None:
                if len(self._inputs) >= _MAX_DESCRIBED:
                    self._inputs.clear()
                known = self._inputs[key] = (row.content_type, row.file_name, row.expires_at)
                return known
        return mimetypes.guess_type(name)[0] or "application/octet-stream", name, None
