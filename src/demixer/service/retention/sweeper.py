"""The sweeper: deletes the bytes of expired uploads and of expired results (and whatever a
failed or cancelled request's cut-off attempts left stored, when its result would expire),
and, ``record_retention_seconds`` (30 days) after, the rows that described them: a finished
request with its log and webhook deliveries (whose secret and payload would be kept for good
otherwise), a gone upload's row, expired idempotency keys. Usage records stay (billing).

Expiry itself is decided by the clock (the API answers 410 from ``expires_at`` alone, see
:mod:`demixer.service.retention.expiry`); the sweeper only frees the storage afterwards. It deletes
the blobs first and marks the row after, with a conditional UPDATE: a sweep that dies halfway
leaves the row unmarked and the next sweep deletes again (deleting is idempotent), and two
sweepers (``serve`` and ``worker`` processes on one database) never count a row twice. A
row whose bytes the store kept (some not deleted) stays unmarked, and the sweep goes on with
the others unless the store is down; that item is tried again after a sweep interval, then
after twice as long each time the store still keeps it (up to :data:`MAX_RETRY_WAIT`), one
warning each time: a file the server may not delete was tried, and logged, at every sweep for
good. An expired upload that a queued or running job still reads is kept until that job ends.

Each sweep also settles the jobs whose worker died
(:meth:`~demixer.service.jobs.queue.Queue.settle_expired`): a worker's claim does it too, but
with no worker left to claim, they would read IN_PROGRESS for good.

A store that clients PUT to directly (S3) takes the bytes of a file's upload URL for as long
as the URL lasts, even after the file was deleted or expired: the sweeper deletes those too,
on each sweep until the URL has expired.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, delete, or_, select, update

from demixer.errors import InvalidParams, StorageUnavailable
from demixer.service.context import Services
from demixer.service.db import is_unavailable, rows_changed
from demixer.service.files.lifecycle import mark_expired
from demixer.service.files.states import GONE
from demixer.service.jobs.contract import JobParams, UploadInput
from demixer.service.jobs.queue import CANCELLED, COMPLETED, FAILED, IN_PROGRESS, IN_QUEUE
from demixer.service.retention.expiry import result_due
from demixer.service.schema import Delivery, File, IdempotencyRecord, Job, JobLog
from demixer.storage import Storage, delete_file_blobs, outputs_prefix, staging_key

__all__ = ["MAX_RETRY_WAIT", "SweepCounts", "Sweeper"]

log = logging.getLogger("demixer.sweeper")

MAX_RETRY_WAIT = timedelta(days=1)  # the longest an item the store kept waits for its next try


def _outputs(storage: Storage, job_id: str) -> int:
    """Delete a request's outputs (its attempts' too); returns how many blobs."""
    return storage.delete_prefix(outputs_prefix(job_id))


def _staged(storage: Storage, file_id: str) -> int:
    """Delete what was PUT to a file's staging key; returns how many blobs."""
    return storage.delete_prefix(staging_key(file_id))


@dataclass(frozen=True)
class _Kept:
    """An item whose bytes the store kept: when it is tried next, and how long it waited."""

    retry_at: datetime
    waited: timedelta


def _wait_text(wait: timedelta) -> str:
    """``wait`` for a log line: ``40 s``, ``20 min``, ``6.4 h``."""
    seconds = wait.total_seconds()
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.3g} h"


@dataclass(frozen=True)
class SweepCounts:
    """What one sweep did: files and results expired, blobs deleted for them, and the records
    of long-finished requests and long-gone uploads deleted."""

    files: int = 0
    results: int = 0
    blobs: int = 0
    records: int = 0


class Sweeper:
    """Deletes expired inputs (file status -> ``expired``) and outputs (``jobs.expired``).

    Args:
        services: the shared services (``db.clock`` is "now").
        batch: rows read per query (a backlog is worked through in several).
    """

    def __init__(self, services: Services, *, batch: int = 200) -> None:
        self.services = services
        self.batch = batch
        # Items ("file f", "request r") the store kept the bytes of, until it deletes them;
        # and the items this sweep came to, so that one no sweep comes to any more (marked
        # by another process's sweeper, its row gone) is forgotten.
        self._kept: dict[str, _Kept] = {}
        self._met: set[str] = set()

    def sweep_once(self) -> SweepCounts:
        """One pass over everything expired now; returns what it did."""
        # First: a job whose worker died reads IN_PROGRESS until a claim settles it, and with
        # no worker left none comes (its input is kept meanwhile, as in use).
        self.services.queue.settle_expired()
        now = self.services.db.clock()
        self._met = set()
        files, file_blobs = self._files(now)
        late = self._late_uploads(now)
        results, result_blobs = self._results(now)
        self._kept = {what: kept for what, kept in self._kept.items() if what in self._met}
        records = self._records(now)
        blobs = file_blobs + late + result_blobs
        counts = SweepCounts(files=files, results=results, blobs=blobs, records=records)
        if files or results:
            log.info("swept %d expired files and %d expired results", files, results)
        if records:
            log.info("deleted %d records of long-finished requests and gone uploads", records)
        return counts

    def _records(self, now: datetime) -> int:
        """Delete the rows of requests that finished, and of uploads created, more than the
        record retention ago (never before their outputs or bytes were swept)."""
        settings = self.services.settings
        if not settings.record_retention_seconds:
            return 0
        keep = timedelta(seconds=settings.record_retention_seconds)
        done = 0
        while True:
            with self.services.db.write() as s:
                ids = list(
                    s.scalars(
                        select(Job.id)
                        .where(
                            Job.status.in_((COMPLETED, FAILED, CANCELLED)),
                            Job.expired.is_(True),  # its outputs are gone
                            Job.finished_at < now - keep,
                        )
                        .limit(self.batch)
                    )
                )
                if not ids:
                    break
                s.execute(delete(JobLog).where(JobLog.job_id.in_(ids)))
                s.execute(delete(Delivery).where(Delivery.job_id.in_(ids)))
                s.execute(delete(Job).where(Job.id.in_(ids)))
            done += len(ids)
        with self.services.db.write() as s:
            # No bytes left (a failed upload past its expiry is marked expired first).
            files = s.execute(
                delete(File).where(File.status.in_(GONE), File.created_at < now - keep)
            )
            s.execute(delete(IdempotencyRecord).where(IdempotencyRecord.expires_at <= now))
        return done + rows_changed(files)

    def _late_uploads(self, now: datetime) -> int:
        """Delete what was PUT straight to the store for files already gone while their
        upload URL still took bytes (created within its lifetime, and two sweeps more)."""
        settings = self.services.settings
        if not self.services.storage.direct:  # the API refuses a PUT for a gone file
            return 0
        lasts = timedelta(
            seconds=settings.upload_url_ttl_seconds + 2 * settings.sweep_interval_seconds
        )
        with self.services.db.read() as s:
            gone = s.scalars(
                select(File.id).where(File.status.in_(GONE), File.created_at > now - lasts)
            ).all()
        return sum(self._deleted(now, f"file {file_id}", _staged, file_id) or 0 for file_id in gone)

    def _files(self, now: datetime) -> tuple[int, int]:
        db = self.services.db
        due: tuple[ColumnElement[bool], ...] = (
            File.expires_at.is_not(None),
            File.expires_at < now,
            File.status.not_in(GONE),
        )
        in_use = self._inputs_in_use()  # kept until their jobs end: a later sweep takes them
        if in_use:
            due = (*due, File.id.not_in(sorted(in_use)))
        done = blobs = 0
        after = ""  # read in the order of their ids, each once: see _results
        while True:
            with db.read() as s:
                rows = s.execute(
                    select(File.id, File.storage_key)
                    .where(*due, File.id > after)
                    .order_by(File.id)
                    .limit(self.batch)
                ).all()
            if not rows:
                return done, blobs
            after = rows[-1].id
            for file_id, key in rows:
                # Its key; bytes PUT to the store, or parts uploaded, but never completed.
                deleted = self._deleted(now, f"file {file_id}", delete_file_blobs, file_id, key)
                if deleted is None:
                    continue
                with db.write() as s:
                    marked = mark_expired(s, file_id, now)
                if marked:
                    done += 1
                    blobs += deleted

    def _inputs_in_use(self) -> set[str]:
        """The uploads that queued or running jobs still read. A job is only queued for an
        unexpired file, so once an upload is due no new job can take it: these are all."""
        with self.services.db.read() as s:
            rows = s.execute(
                select(Job.id, Job.params).where(Job.status.in_((IN_QUEUE, IN_PROGRESS)))
            ).all()
        in_use = set()
        for job_id, params in rows:
            try:
                source = JobParams.of_job(job_id, params).input
            except InvalidParams:  # its worker fails it; it reads no file meanwhile
                continue
            if isinstance(source, UploadInput):
                in_use.add(source.file_id)
        return in_use

    def _results(self, now: datetime) -> tuple[int, int]:
        db = self.services.db
        kept = timedelta(seconds=self.services.settings.result_retention_seconds)
        due = (
            or_(
                result_due(now, self.services.settings.result_retention_seconds),
                # A failed or cancelled request has no result, but an attempt cut off while
                # storing (its lease lost in an outage) can leave outputs: they go when a
                # result would.
                and_(Job.status.in_((FAILED, CANCELLED)), Job.finished_at < now - kept),
            ),
            Job.expired.is_(False),
        )
        done = blobs = 0
        # In the order of their ids, from past the last one read: the items the store kept
        # stay due, and a batch of them read again and again (they came first) hid every
        # result behind them for good.
        after = ""
        while True:
            with db.read() as s:
                ids = list(
                    s.scalars(
                        select(Job.id)
                        .where(*due, Job.id > after)
                        .order_by(Job.id)
                        .limit(self.batch)
                    )
                )
            if not ids:
                return done, blobs
            after = ids[-1]
            for job_id in ids:
                deleted = self._deleted(now, f"request {job_id}", _outputs, job_id)
                if deleted is None:
                    continue
                with db.write() as s:
                    marked = s.execute(
                        update(Job).where(Job.id == job_id, *due).values(expired=True)
                    )
                if rows_changed(marked) == 1:
                    done += 1
                    blobs += deleted

    def _deleted(
        self, now: datetime, what: str, delete: Callable[..., int], *args: str
    ) -> int | None:
        """``delete(storage, *args)``: how many blobs it deleted, or None when the store kept
        some, or kept them last time and ``what``'s next try is not due (the row stays
        unmarked, for a later sweep). One item the store will not delete (files of another
        user, an object under a legal hold) must not stop the sweep of all the others behind
        it; an outage does (the store's ping raises)."""
        self._met.add(what)
        kept = self._kept.get(what)
        if kept is not None and now < kept.retry_at:
            return None
        storage = self.services.storage
        try:
            deleted = delete(storage, *args)
        except StorageUnavailable as exc:
            storage.ping()
            every = timedelta(seconds=self.services.settings.sweep_interval_seconds)
            wait = min(kept.waited * 2, MAX_RETRY_WAIT) if kept is not None else every
            self._kept[what] = _Kept(now + wait, wait)
            log.warning(
                "sweep: the store kept the bytes of %s (%s); trying again in %s",
                what,
                exc,
                _wait_text(wait),
            )
            return None
        self._kept.pop(what, None)
        return deleted

    def run(self, stop: threading.Event) -> None:
        """Sweep every ``settings.sweep_interval_seconds`` until ``stop`` is set."""
        interval = max(0.01, self.services.settings.sweep_interval_seconds)
        while not stop.is_set():
            try:
                self.sweep_once()
            except Exception as exc:  # a storage or database hiccup: log it and try next time
                if is_unavailable(exc):  # an outage (PostgreSQL restarting): no traceback
                    log.warning("sweep failed: the database is unavailable; retrying")
                else:
                    log.exception("sweep failed; trying again in %.0f s", interval)
            stop.wait(interval)
