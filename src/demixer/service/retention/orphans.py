"""Stored bytes that no record names (``demixer purge --orphans``), found and deleted.

The sweeper deletes what the database lists; bytes it does not list stay for good: after a
database backup older than the store was restored, when a process died between storing bytes
and recording them, or in a bucket (prefix) an older deployment used. Every key demixer writes
names its owner in its second part: ``inputs/{file_id}``, ``staging/{file_id}`` (and a PUT's
landing key ``staging/.{file_id}.{pid}.{random}.part``), ``uploads/{file_id}/...`` (a Gaudio
upload's parts), ``outputs/{request_id}/...``. An owner is *known* while its record says its
bytes are kept: a file neither deleted nor expired, a request whose outputs were not swept.
The bytes of any other owner are orphans; keys outside those four folders are never touched
(a bucket may hold other things).

Every record is committed before its bytes are stored (a file's row before its upload, a
request's row before its worker's stems), with one exception: a result reused from the cache
is copied in the transaction that queues the request (seconds). So an owner whose newest blob
was written within :data:`MIN_AGE` is kept, whatever the database says: that margin also
covers the store's clock against the database's, and S3 dating an object assembled from
parts at the start of its upload. The operator's default, :data:`DEFAULT_AGE`, is a day.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from sqlalchemy import select

from demixer.service.context import Services
from demixer.service.files.lifecycle import input_key
from demixer.service.files.states import GONE
from demixer.service.schema import File, Job
from demixer.storage import (
    Storage,
    StoredBlob,
    delete_file_blobs,
    file_prefixes,
    outputs_prefix,
)

__all__ = ["DEFAULT_AGE", "MIN_AGE", "Orphan", "Orphans", "delete_orphans", "find_orphans"]

#: The youngest an orphan may be: bytes written more recently may be a record's, not yet
#: committed (see the module's docs).
MIN_AGE = timedelta(hours=1)
#: What ``demixer purge --orphans`` leaves alone without ``--older-than``.
DEFAULT_AGE = timedelta(hours=24)

_BATCH = 500  # ids looked up per query


class Owner(StrEnum):
    """What a stored key's second part names."""

    FILE = "file"
    REQUEST = "request"


#: The store's folders demixer writes, and the owner each key in them names.
FOLDERS = {
    "inputs": Owner.FILE,
    "staging": Owner.FILE,
    "uploads": Owner.FILE,
    "outputs": Owner.REQUEST,
}


@dataclass(frozen=True)
class Orphan:
    """The stored blobs of one file or request that no record names."""

    kind: Owner
    owner: str  # the file's or request's id, as its keys name it
    blobs: tuple[StoredBlob, ...]

    @property
    def size(self) -> int:
        """Bytes its blobs hold."""
        return sum(b.size for b in self.blobs)


@dataclass(frozen=True)
class Orphans:
    """What a search found: the orphans older than the age asked for, and how many blobs no
    record names either but were written more recently (kept)."""

    found: tuple[Orphan, ...]
    newer: int

    @property
    def blobs(self) -> list[StoredBlob]:
        """Every blob of :attr:`found`, in key order."""
        return sorted((b for o in self.found for b in o.blobs), key=lambda b: b.key)

    @property
    def size(self) -> int:
        """Bytes :attr:`found` holds."""
        return sum(o.size for o in self.found)


def _owner(key: str) -> tuple[Owner, str] | None:
    """Whose ``key`` is (a key under one of :data:`FOLDERS`); None: a blob named as the
    folder itself, none of demixer's."""
    folder, _, rest = key.partition("/")
    name = rest.split("/", 1)[0]
    if not name:
        return None
    if name.startswith("."):  # a write's temporary: .{name}.{pid}.{random}.part (or .link)
        name = name[1:].split(".", 1)[0]
    return FOLDERS[folder], name


def find_orphans(services: Services, older_than: timedelta) -> Orphans:
    """The stored bytes no record names whose owner's newest blob was written more than
    ``older_than`` ago (the database clock's now; at least :data:`MIN_AGE`).

    The store is listed before the database is read: a record committed meanwhile is seen.

    Raises:
        ValueError: ``older_than`` is under :data:`MIN_AGE`.
    """
    if older_than < MIN_AGE:
        raise ValueError(f"orphans must be older than {MIN_AGE} (asked: {older_than})")
    listed: dict[tuple[Owner, str], list[StoredBlob]] = {}
    for folder in FOLDERS:
        for blob in services.storage.blobs(folder):
            whose = _owner(blob.key)
            if whose is not None:
                listed.setdefault(whose, []).append(blob)
    known = _known(services, listed)
    cutoff = services.db.clock() - older_than
    found, newer = [], 0
    for (kind, owner), blobs in sorted(listed.items()):
        if (kind, owner) in known:
            continue
        if max(b.modified for b in blobs) >= cutoff:
            newer += len(blobs)
            continue
        found.append(Orphan(kind, owner, tuple(sorted(blobs, key=lambda b: b.key))))
    return Orphans(tuple(found), newer)


def _known(services: Services, owners: Iterable[tuple[Owner, str]]) -> set[tuple[Owner, str]]:
    """Which of ``owners`` a record names as keeping its bytes: a file neither deleted nor
    expired, a request whose outputs were not swept."""
    ids: dict[Owner, list[str]] = {Owner.FILE: [], Owner.REQUEST: []}
    for kind, owner in owners:
        ids[kind].append(owner)
    known: set[tuple[Owner, str]] = set()
    with services.db.read() as s:
        for start in range(0, len(ids[Owner.FILE]), _BATCH):
            batch = ids[Owner.FILE][start : start + _BATCH]
            rows = s.scalars(select(File.id).where(File.id.in_(batch), File.status.not_in(GONE)))
            known.update((Owner.FILE, i) for i in rows)
        for start in range(0, len(ids[Owner.REQUEST]), _BATCH):
            batch = ids[Owner.REQUEST][start : start + _BATCH]
            rows = s.scalars(select(Job.id).where(Job.id.in_(batch), Job.expired.is_(False)))
            known.update((Owner.REQUEST, i) for i in rows)
    return known


def delete_orphans(storage: Storage, orphans: Orphans) -> int:
    """Delete what :func:`find_orphans` found, as the sweeper deletes a file's or request's
    bytes (an open multipart upload of a file aborted); returns how many blobs."""
    deleted = 0
    for orphan in orphans.found:
        if orphan.kind is Owner.REQUEST:
            deleted += storage.delete_prefix(outputs_prefix(orphan.owner))
            continue
        key = input_key(orphan.owner)
        deleted += delete_file_blobs(storage, orphan.owner, key)
        named = file_prefixes(orphan.owner, key)
        for blob in orphan.blobs:  # the temporaries named after it
            if not blob.key.startswith(named):
                deleted += storage.delete_prefix(blob.key)
    return deleted
