"""The service's shared parts, built once from the settings at an entry point."""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from demixer.service.accounts.usage import record_usage
from demixer.service.db import Database
from demixer.service.delivery import enqueue_webhook
from demixer.service.jobs.queue import Queue
from demixer.service.retention.expiry import set_result_expiry
from demixer.service.schema import File
from demixer.service.scratch import scratch_dir
from demixer.settings import Settings
from demixer.storage import Storage, UrlSigner, open_storage

__all__ = ["Services"]


@dataclass
class Services:
    """Settings, database, queue, storage and URL signer, shared by the API and the workers."""

    settings: Settings
    db: Database
    queue: Queue
    storage: Storage
    signer: UrlSigner

    @classmethod
    def from_settings(cls, settings: Settings, db: Database | None = None) -> Services:
        """Build everything from ``settings`` (``db`` may be given, e.g. with a test clock)."""
        db = db or Database(settings.database)
        services = cls(
            settings=settings,
            db=db,
            queue=Queue(db, lease_seconds=settings.lease_seconds),
            storage=open_storage(settings.storage, scratch=scratch_dir(settings.data_dir)),
            signer=UrlSigner(settings.signing_key(), settings.base_url),
        )
        # A completed job's outputs expire result_retention_seconds after it finished (first,
        # so hooks after it see expires_at).
        services.queue.final_hooks.append(set_result_expiry(settings.result_retention_seconds))
        # Webhook deliveries are written in the job's final transaction (an outbox).
        services.queue.final_hooks.append(partial(enqueue_webhook, services))
        # Usage is recorded in the transaction that completes the job.
        services.queue.final_hooks.append(record_usage)
        return services

    # --- the one place that makes blob URLs ---------------------------------------------------

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

        Presigned by the storage when it can (S3: the bytes never pass through the API), else
        an HMAC-signed ``/v1/blobs`` URL. ``content_type`` and ``file_name`` are what the
        download answers (``Content-Type``, ``Content-Disposition``); left out, they come from
        the input file's row (``inputs/...``) or the key, as ``/v1/blobs`` answers them.
        A presigned URL cannot ask the API whether its blob has expired, so it never outlives
        ``until`` (a result's ``expires_at``; an input file's own expiry is looked up).
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
