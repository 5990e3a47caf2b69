"""The service's shared parts, built once from the settings at an entry point.

:class:`Services` only holds them. What a job's final transition also writes (its result's
expiry, its usage, its webhook delivery) is attached by the composition root,
:func:`demixer.server.compose.build_services`, which every entry point uses.
"""

from __future__ import annotations

from dataclasses import dataclass

from demixer.service.db import Database
from demixer.service.jobs.queue import Queue
from demixer.service.links import BlobLinks
from demixer.service.scratch import scratch_dir
from demixer.settings import Settings
from demixer.storage import Storage, UrlSigner, open_storage

__all__ = ["Services"]


@dataclass
class Services:
    """Settings, database, queue, storage, URL signer and blob links, shared by the API and
    the workers."""

    settings: Settings
    db: Database
    queue: Queue
    storage: Storage
    signer: UrlSigner
    links: BlobLinks

    @classmethod
    def from_settings(cls, settings: Settings, db: Database | None = None) -> Services:
        """Build the parts from ``settings`` (``db`` may be given, e.g. with a test clock)."""
        db = db or Database(settings.database)
        storage = open_storage(settings.storage, scratch=scratch_dir(settings.data_dir))
        signer = UrlSigner(settings.signing_key(), settings.base_url)
        return cls(
            settings=settings,
            db=db,
            queue=Queue(db, lease_seconds=settings.lease_seconds),
            storage=storage,
            signer=signer,
            links=BlobLinks(db, storage, signer),
        )
