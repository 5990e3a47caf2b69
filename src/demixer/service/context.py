"""The service's shared parts, built once from the settings at an entry point."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from demixer.service.db import Database
from demixer.service.delivery import enqueue_webhook
from demixer.service.queue import Queue
from demixer.service.retention import set_result_expiry
from demixer.service.usage import record_usage
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
            storage=open_storage(settings.storage),
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
