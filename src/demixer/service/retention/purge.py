"""Freeing disk before the retentions end (``demixer purge``): an operator's early expiry.

Uploads are kept 72 h and results 48 h whatever the disk holds; when it fills sooner, the
operator expires the uploads and results older than an age (one account's, or everyone's) at
once, instead of deleting blobs by hand behind the database's back. Each one's expiry is
brought forward to now (:func:`~demixer.service.files.lifecycle.expire_files`,
:func:`~demixer.service.retention.expiry.expire_results`), so the API answers them as it
answers any expired file or result (410 ``FILE_EXPIRED``, ``RESULT_EXPIRED``), and one sweep
(:class:`~demixer.service.retention.sweeper.Sweeper`) deletes their bytes with everything
else due: an upload that a queued or running request still reads is deleted when it ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import ColumnElement

from demixer.errors import NotFound
from demixer.service.accounts.storage import files_bytes, result_bytes
from demixer.service.context import Services
from demixer.service.files.lifecycle import expire_files
from demixer.service.retention.expiry import expire_results
from demixer.service.retention.sweeper import SweepCounts, Sweeper
from demixer.service.schema import Account, File, Job

__all__ = ["Purged", "purge"]


@dataclass(frozen=True)
class Purged:
    """What a purge expired (or, in a dry run, would): files and results, and the bytes
    each held; ``swept``: what the sweep that followed deleted (None in a dry run)."""

    files: int
    file_bytes: int
    results: int
    result_bytes: int
    swept: SweepCounts | None = None


def purge(
    services: Services, older_than: timedelta, account_id: str | None, *, dry_run: bool
) -> Purged:
    """Expire now the uploads announced, and the results completed, more than ``older_than``
    ago, of ``account_id`` (None: every account's), then sweep; ``dry_run``: only say what
    that would free.

    Raises:
        NotFound: no account ``account_id``.
    """
    db = services.db
    now = db.clock()
    cutoff = now - older_than
    files: list[ColumnElement[bool]] = [File.created_at < cutoff]
    results: list[ColumnElement[bool]] = [Job.finished_at < cutoff]
    if account_id is not None:
        files.append(File.account_id == account_id)
        results.append(Job.account_id == account_id)
    with db.read() if dry_run else db.write() as s:
        if account_id is not None and s.get(Account, account_id) is None:
            raise NotFound(f"no account {account_id!r}")
        counted = (*files_bytes(s, now, *files), *result_bytes(s, now, *results))
        if not dry_run:
            expire_files(s, now, *files)
            expire_results(s, now, *results)
    if dry_run:
        return Purged(*counted)
    return Purged(*counted, swept=Sweeper(services).sweep_once())
