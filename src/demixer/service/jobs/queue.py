"""The one owner of a job's status: every transition is a conditional UPDATE checked here.

The ``jobs`` table is the queue. A worker claims the best queued row (priority, then FIFO) or a
running row whose lease expired (its worker died), atomically: ``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, the database write lock (``BEGIN IMMEDIATE``) on SQLite. While it works it renews
its lease; every write it makes is fenced with ``WHERE lease_owner = me``, so a worker that lost
its lease (paused, partitioned, presumed dead) can never overwrite the attempt that replaced it.
A transition that matches no row raises instead of passing silently.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    bindparam,
    event,
    exists,
    false,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from demixer.errors import DemixerError, NotFound
from demixer.service.db import Database, rows_changed
from demixer.service.jobs.contract import JobParams
from demixer.service.schema import Job, JobLog

__all__ = [
    "CANCELLED",
    "COMPLETED",
    "FAILED",
    "FINAL",
    "IN_PROGRESS",
    "IN_QUEUE",
    "NOTIFY_CHANNEL",
    "STATUS_CHANNEL",
    "Claim",
    "JobConflict",
    "JobState",
    "LeaseLost",
    "Queue",
    "stored_bytes",
]

log = logging.getLogger("demixer.queue")


class JobState(StrEnum):
    """Where a job stands (the ``jobs.status`` column), as the API shows it.

    IN_QUEUE -> IN_PROGRESS -> COMPLETED | FAILED | CANCELLED, and IN_PROGRESS -> IN_QUEUE
    again when an attempt fails retryably or its lease expires; IN_QUEUE -> COMPLETED for a
    request answered from the result cache, IN_QUEUE -> CANCELLED for a cancel while queued.
    """

    IN_QUEUE = "IN_QUEUE"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


IN_QUEUE = JobState.IN_QUEUE
IN_PROGRESS = JobState.IN_PROGRESS
COMPLETED = JobState.COMPLETED
FAILED = JobState.FAILED
CANCELLED = JobState.CANCELLED
FINAL = (COMPLETED, FAILED, CANCELLED)
#: PostgreSQL ``NOTIFY`` channel for "a job was queued" (payload: its engine model); worker
#: processes listen on it (``service/jobs/wakeup.py``).
NOTIFY_CHANNEL = "demixer_jobs"
#: PostgreSQL ``NOTIFY`` channel for "a job's status changed" (payload: its id): it started,
#: went back to the queue or ended. API processes listen on it, so their status streams read
#: the job at once (``api/statuswatch.py``). Once per attempt's start and end, never per
#: heartbeat.
STATUS_CHANNEL = "demixer_status"
#: Whether a claim could find anything at ``now``: a queued job, or a running one whose lease
#: ran out (the claim settles those). Two indexed lookups, outside any transaction.
_ANY_WORK = select(
    or_(
        exists().where(Job.status == IN_QUEUE),
        exists().where(Job.status == IN_PROGRESS, Job.lease_expires_at < bindparam("now")),
    )
)


class LeaseLost(Exception):
    """The worker no longer holds the job's lease: it must stop and write nothing more."""


class JobConflict(DemixerError):
    """The job is not in a state that allows the operation (e.g. cancelling a finished job)."""

    code = "JOB_CONFLICT"


@dataclass(frozen=True)
class Claim:
    """A job a worker now holds.

    Attributes:
        id: the job id.
        attempt: 1 for the first attempt, 2 after one retry or lost lease, ...
        engine_model: the registered model to run.
        params: the job's ``params`` row, as stored: read it with
            :meth:`~demixer.service.jobs.contract.JobParams.from_row` (a row that breaks the
            contract must fail the attempt, not the claim).
        account_id: the owner (for output keys and usage).
    """

    id: str
    attempt: int
    engine_model: str
    params: dict[str, Any]
    account_id: str


FinalHook = Callable[[Session, Job], None]


def stored_bytes(outputs: dict[str, Any]) -> int:
    """What a job's ``outputs`` hold in storage: each output's ``size`` in bytes, summed.
    Written to ``jobs.output_bytes`` by the UPDATE that completes the job, so the storage cap
    sums one column instead of every result's JSON (migration 0011 filled in the jobs that
    completed before, with the same rule: an entry without a ``size`` holds nothing)."""
    return sum(
        int(out["size"])
        for out in outputs.values()
        if isinstance(out, dict) and out.get("size") is not None
    )


class Queue:
    """Job transitions on one database.

    Args:
        db: the database.
        lease_seconds: how long a claim or heartbeat holds a job.

    Attributes:
        final_hooks: called as ``hook(session, job)`` inside the transaction that moves a job to
            COMPLETED, FAILED or CANCELLED, so what they write (usage, webhook deliveries)
            commits or rolls back with the transition itself: a transactional outbox.
        status_listeners: called as ``listener(job_id)`` once a transaction that changed the
            job's status (it started, went back to the queue or ended) has committed, in the
            thread that committed it (this process's workers: the embedded ``serve``'s), so
            this process's status streams show the change at once instead of at their next
            read (:class:`~demixer.api.statuswatch.StatusWatcher`). A listener must return
            quickly and not raise. On PostgreSQL the same transaction sends ``NOTIFY`` on
            :data:`STATUS_CHANNEL`, for the other processes' streams.
    """

    def __init__(self, db: Database, *, lease_seconds: float = 30.0) -> None:
        self.db = db
        self.lease = timedelta(seconds=lease_seconds)
        self.final_hooks: list[FinalHook] = []
        self.status_listeners: list[Callable[[str], None]] = []
        # Wakes idle worker slots in this process when a job is queued here (the embedded
        # `serve`), instead of leaving it until their next poll; other processes still poll.
        self._work = threading.Condition()
        self._generation = 0

    def work_generation(self) -> int:
        """A token to take BEFORE a claim that found nothing; see :meth:`wait_for_work`."""
        with self._work:
            return self._generation

    def wait_for_work(self, generation: int, timeout: float) -> None:
        """Sleep up to ``timeout`` s, or until a job is queued after ``generation`` was taken."""
        with self._work:
            self._work.wait_for(lambda: self._generation != generation, timeout)

    def wake(self) -> None:
        """Wake this process's idle worker slots now (a job was queued, maybe elsewhere)."""
        with self._work:
            self._generation += 1
            self._work.notify_all()

    def _wake_after_commit(self, session: Session, engine_model: str) -> None:
        """Tell idle workers about a queued job once ``session`` commits: this process's
        slots directly; on PostgreSQL every worker process too, through ``NOTIFY`` (which
        PostgreSQL itself delivers at commit, and drops on rollback)."""
        event.listen(session, "after_commit", lambda _s: self.wake(), once=True)
        if self.db.dialect == "postgresql":
            session.execute(select(func.pg_notify(NOTIFY_CHANNEL, engine_model)))

    def _status_changed(self, s: Session, job_id: str) -> None:
        """Tell the status streams that ``job_id`` started, went back to the queue or ended,
        once ``s`` commits: this process's through :attr:`status_listeners`; on PostgreSQL
        the other processes' too, through ``NOTIFY`` (a worker process changed it: the API's
        streams read it at their next round otherwise), delivered at commit and dropped on
        rollback, as the listeners are told."""
        if self.db.dialect == "postgresql":
            s.execute(select(func.pg_notify(STATUS_CHANNEL, job_id)))
        if self.status_listeners:
            listeners = list(self.status_listeners)
            event.listen(s, "after_commit", lambda _s: _tell(listeners, job_id), once=True)

    def _finalised(self, s: Session, job_id: str) -> None:
        self._status_changed(s, job_id)
        if not self.final_hooks:
            return
        # populate_existing: the session may hold this Job from before the UPDATE (submit's
        # result-cache path does); hooks must see the final status and outputs.
        job = s.execute(
            select(Job).where(Job.id == job_id).execution_options(populate_existing=True)
        ).scalar_one()
        for hook in self.final_hooks:
            hook(s, job)

    def _lapsed(self, now: datetime, by: timedelta = timedelta(0)) -> ColumnElement[bool]:
        """Running jobs whose lease ran out more than ``by`` before ``now``: their worker
        stopped renewing it.

        None for a lease (plus ``by``) after the database came back from an outage: the
        leases that ran out while it was down (a PostgreSQL restart longer than a lease) say
        nothing of their workers, which kept retrying their heartbeats and renew them once it
        is back. Judged at once, the first claim after such a restart took each running job
        from its live worker (its work thrown away, an attempt spent), and failed
        ``WORKER_LOST`` one on its last attempt. A worker that died meanwhile loses its job a
        lease later.
        """
        lapsed = and_(Job.status == IN_PROGRESS, Job.lease_expires_at < now - by)
        back = self.db.seconds_since_outage()
        if back is not None and back < (by + self.lease).total_seconds():
            return and_(lapsed, false())
        return lapsed

    # --- the API side ---------------------------------------------------------------------

    def submit(
        self,
        session: Session,
        *,
        job_id: str,
        account_id: str,
        queue_model: str,
        engine_model: str,
        params: JobParams,
        priority: int = 0,
        max_attempts: int = 3,
        key_id: str | None = None,
        fingerprint: str | None = None,
    ) -> Job:
        """Add a queued job inside the caller's write transaction.

        ``key_id`` is the submitting API key (usage and limits are per key); ``fingerprint``
        the result-cache key (``service/jobs/cache.py``), None when the request is not cacheable.
        """
        now = self.db.clock()
        job = Job(
            id=job_id,
            account_id=account_id,
            queue_model=queue_model,
            engine_model=engine_model,
            params=params.to_row(),
            status=IN_QUEUE,
            priority=priority,
            max_attempts=max_attempts,
            progress=0.0,
            attempts=0,
            cancel_requested=False,
            created_at=now,
            updated_at=now,
            key_id=key_id,
            fingerprint=fingerprint,
        )
        session.add(job)
        session.flush()
        self._wake_after_commit(session, engine_model)
        self.log(session, job_id, f"queued for {engine_model}")
        return job

    def complete_from_cache(
        self, session: Session, job_id: str, source: Job, outputs: dict[str, Any]
    ) -> None:
        """Complete a just-queued job with the outputs of ``source``, an identical completed
        job (the result cache), inside the caller's transaction: no worker ever runs it.

        Args:
            session: the write transaction that queued ``job_id``.
            job_id: the new job (IN_QUEUE).
            source: the completed job whose outputs are reused.
            outputs: ``source.outputs`` with the keys of the new job's own copies.
        """
        now = self.db.clock()
        done = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == IN_QUEUE)
            .values(
                status=COMPLETED,
                outputs=outputs,
                output_bytes=stored_bytes(outputs),
                duration=source.duration,
                sample_rate=source.sample_rate,
                reused_from=source.id,
                progress=1.0,
                started_at=now,
                finished_at=now,
                updated_at=now,
            )
        )
        if rows_changed(done) != 1:
            raise JobConflict(f"job {job_id} is no longer queued; it cannot reuse {source.id}")
        self.log(
            session,
            job_id,
            f"reused the outputs of {source.id} (same input content, model, stems and "
            "options): no recomputation",
        )
        self._finalised(session, job_id)

    def position(self, session: Session, job: Job) -> int:
        """How many queued jobs run before ``job`` (0: next)."""
        ahead = select(func.count()).where(
            Job.status == IN_QUEUE,
            Job.id != job.id,
            or_(
                Job.priority > job.priority,
                and_(Job.priority == job.priority, Job.created_at < job.created_at),
                and_(
                    Job.priority == job.priority,
                    Job.created_at == job.created_at,
                    Job.id < job.id,
                ),
            ),
        )
        return int(session.execute(ahead).scalar_one())

    def positions(self, session: Session, job_ids: Collection[str]) -> dict[str, int]:
        """:meth:`position` of each queued job in ``job_ids``, in one query (the queue ranked
        in the order :meth:`position` counts: priority, then age, then id)."""
        if not job_ids:
            return {}
        rank = func.row_number().over(order_by=(Job.priority.desc(), Job.created_at, Job.id)) - 1
        ranked = select(Job.id, rank.label("ahead")).where(Job.status == IN_QUEUE).subquery()
        rows = session.execute(
            select(ranked.c.id, ranked.c.ahead).where(ranked.c.id.in_(list(job_ids)))
        )
        return {job_id: int(ahead) for job_id, ahead in rows}

    def cancel(self, job_id: str) -> str:
        """Cancel: a queued job at once, and a running one whose worker stopped renewing its
        lease; any other running one is flagged and its worker stops it.

        Returns the status after the call (``CANCELLED`` or ``IN_PROGRESS``); raises
        :class:`JobConflict` for a job already finished, :class:`NotFound` for one deleted
        meanwhile.
        """
        with self.db.write() as s:
            return self.cancel_in(s, job_id)

    def cancel_in(self, s: Session, job_id: str) -> str:
        """:meth:`cancel` inside the caller's write transaction (a delete cancels and removes
        the row in one, so no reader sees the job CANCELLED on its way out)."""
        now = self.db.clock()
        done = s.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == IN_QUEUE)
            .values(status=CANCELLED, finished_at=now, updated_at=now)
        )
        if rows_changed(done) == 1:
            self.log(s, job_id, "cancelled while queued")
            self._finalised(s, job_id)
            return CANCELLED
        # Its worker stopped renewing the lease (killed, cut off): nobody would stop it but the
        # next claim, and with no worker left running that never comes. A worker that wakes up
        # later finds the lease gone and writes nothing.
        dead = s.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == IN_PROGRESS, Job.lease_expires_at < now)
            .values(
                status=CANCELLED,
                cancel_requested=True,
                lease_owner=None,
                finished_at=now,
                updated_at=now,
            )
        )
        if rows_changed(dead) == 1:
            self.log(s, job_id, "cancelled (its worker stopped responding)")
            self._finalised(s, job_id)
            return CANCELLED
        flagged = s.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == IN_PROGRESS)
            .values(cancel_requested=True, updated_at=now)
        )
        if rows_changed(flagged) == 1:
            self.log(s, job_id, "cancel requested; stopping the running attempt")
            return IN_PROGRESS
        status = s.execute(select(Job.status).where(Job.id == job_id)).scalar_one_or_none()
        if status is None:  # deleted by a request racing this one
            raise NotFound(f"no request {job_id!r}")
        raise JobConflict(f"job {job_id} is already {status}; only queued or running jobs cancel")

    # --- the worker side ------------------------------------------------------------------

    def claim(
        self,
        worker_id: str,
        models: Collection[str] | None = None,
        runs: Callable[[str], bool] | None = None,
        refused_steps: Collection[str] = (),
    ) -> Claim | None:
        """Take the next job this worker can run, or None.

        Args:
            worker_id: unique per worker slot (the fencing token).
            models: engine model ids this worker can run (None: any).
            runs: whether it also runs an id outside ``models`` (an ensemble of them: its id
                is made up per request), asked of the ids queued now that hold a ``+``.
            refused_steps: preprocessing steps (``params.preprocess``) this worker cannot
                run: a job that asks for one is left to another worker.
        """
        now = self.db.clock()
        # Most polls of an idle worker find nothing: one read answers them. The claim's write
        # transaction (on SQLite the write lock, which the API's requests then wait for) and
        # its four queries were each idle slot's cost at every poll.
        with self.db.snapshot() as conn:
            if not conn.execute(_ANY_WORK, {"now": now}).scalar():
                return None
        with self.db.write() as s:
            self._settle_expired(s, now)
            expired = self._lapsed(now)
            runnable = or_(Job.status == IN_QUEUE, expired)
            query = select(Job.id, Job.status, Job.lease_owner).where(runnable)
            if models is not None:
                names = set(models)
                if runs is not None:
                    queued = select(Job.engine_model).where(
                        runnable, Job.engine_model.contains("+"), Job.engine_model.not_in(names)
                    )
                    names.update(m for m in s.execute(queued.distinct()).scalars() if runs(m))
                query = query.where(Job.engine_model.in_(sorted(names)))
            if refused_steps:
                # The steps as the row's JSON text holds them (``["denoise", "deecho"]``): a
                # step name is never part of another's.
                steps = func.coalesce(Job.params["preprocess"].as_string(), "")
                for step in sorted(refused_steps):
                    query = query.where(~steps.contains(f'"{step}"'))
            query = query.order_by(Job.priority.desc(), Job.created_at, Job.id).limit(1)
            if self.db.dialect == "postgresql":
                query = query.with_for_update(skip_locked=True)
            row = s.execute(query).one_or_none()
            if row is None:
                return None
            job_id, was, lost_owner = row
            taken = s.execute(
                update(Job)
                .where(Job.id == job_id, runnable)
                .values(
                    status=IN_PROGRESS,
                    lease_owner=worker_id,
                    lease_expires_at=now + self.lease,
                    attempts=Job.attempts + 1,
                    progress=0.0,
                    stage=None,
                    started_at=func.coalesce(Job.started_at, now),
                    updated_at=now,
                )
            )
            if rows_changed(taken) != 1:
                return None
            job = s.execute(select(Job).where(Job.id == job_id)).scalar_one()
            if was == IN_PROGRESS:  # its worker died or was cut off: say so before the retry
                self._attempt_lost(s, job_id, job.attempts - 1, lost_owner)
            self.log(s, job_id, f"attempt {job.attempts} started on {worker_id}")
            self._status_changed(s, job_id)  # its page says "running" now, not at a next read
            return Claim(job.id, job.attempts, job.engine_model, dict(job.params), job.account_id)

    def _settle_expired(self, s: Session, now: Any) -> None:
        """Expired leases with a cancel pending, or no attempts left, end here; those expired
        for a lease more go back to the queue (see :meth:`settle_expired`)."""
        # Connected first: a connection the database's restart cut is found (and replaced)
        # here, and the leases are then judged knowing of that outage.
        s.connection()
        expired = self._lapsed(now)
        cancelled = (
            s.execute(
                select(Job.id).where(expired, Job.cancel_requested.is_(True)).order_by(Job.id)
            )
            .scalars()
            .all()
        )
        # Each UPDATE is checked: on PostgreSQL another claimer may have settled the row since
        # the SELECT (SQLite's write lock rules that out); only the one that changed it logs
        # and runs the final hooks (a webhook, once). Rows go in id order: no lock cycles.
        for job_id in cancelled:
            settled = s.execute(
                update(Job)
                .where(Job.id == job_id, expired)
                .values(status=CANCELLED, lease_owner=None, finished_at=now, updated_at=now)
            )
            if rows_changed(settled) != 1:
                continue
            self.log(s, job_id, "cancelled (its worker stopped responding)")
            self._finalised(s, job_id)
        exhausted = (
            s.execute(
                select(Job.id).where(expired, Job.attempts >= Job.max_attempts).order_by(Job.id)
            )
            .scalars()
            .all()
        )
        for job_id in exhausted:
            settled = s.execute(
                update(Job)
                .where(Job.id == job_id, expired)
                .values(
                    status=FAILED,
                    lease_owner=None,
                    error_code="WORKER_LOST",
                    error_message=(
                        "the worker running this job stopped responding on every attempt"
                    ),
                    finished_at=now,
                    updated_at=now,
                )
            )
            if rows_changed(settled) != 1:
                continue
            self.log(s, job_id, "failed: WORKER_LOST")
            _warn_after_commit(
                s, "job %s failed: WORKER_LOST (its worker stopped on every attempt)", job_id
            )
            self._finalised(s, job_id)
        # Expired for a whole lease more, attempts left: back in the queue, where its status
        # says what it waits for, when no worker that runs its model is left to claim it (it
        # read IN_PROGRESS for good). A worker that was only late, behind a stalled database,
        # had that extra lease to renew it.
        gone = self._lapsed(now, by=self.lease)
        lost = s.execute(
            select(Job.id, Job.attempts, Job.lease_owner, Job.engine_model)
            .where(gone)
            .order_by(Job.id)
        ).all()
        for job_id, attempts, owner, engine_model in lost:
            requeued = s.execute(
                update(Job)
                .where(Job.id == job_id, gone)
                .values(status=IN_QUEUE, lease_owner=None, progress=0.0, stage=None, updated_at=now)
            )
            if rows_changed(requeued) != 1:
                continue
            self._attempt_lost(s, job_id, attempts, owner)
            self._wake_after_commit(s, engine_model)
            self._status_changed(s, job_id)

    def settle_expired(self) -> None:
        """Settle the jobs whose worker stopped renewing its lease: cancelled when a cancel is
        pending, failed ``WORKER_LOST`` with no attempts left, else queued again once expired
        for a lease more. Every claim does it; the API's sweeper too, for when no worker is
        left to claim (the jobs of a fleet scaled to zero, or of a model no worker runs now).
        """
        with self.db.write() as s:
            self._settle_expired(s, self.db.clock())

    def _fenced(
        self, s: Session, job_id: str, worker_id: str, *also: ColumnElement[bool], **values: Any
    ) -> None:
        result = s.execute(
            update(Job)
            .where(Job.id == job_id, Job.lease_owner == worker_id, Job.status == IN_PROGRESS, *also)
            .values(updated_at=self.db.clock(), **values)
        )
        if rows_changed(result) != 1:
            raise LeaseLost(f"worker {worker_id} no longer holds job {job_id}")

    def heartbeat(
        self,
        job_id: str,
        worker_id: str,
        progress: float | None = None,
        stage: str | None = None,
    ) -> bool:
        """Renew the lease (and record progress and the attempt's stage); returns True when a
        cancel was requested."""
        values: dict[str, Any] = {"lease_expires_at": self.db.clock() + self.lease}
        if progress is not None:
            values["progress"] = max(0.0, min(1.0, progress))
        if stage is not None:
            values["stage"] = stage[:20]
        with self.db.write() as s:
            self._fenced(s, job_id, worker_id, **values)
            return bool(
                s.execute(select(Job.cancel_requested).where(Job.id == job_id)).scalar_one()
            )

    def complete(
        self,
        job_id: str,
        worker_id: str,
        *,
        outputs: dict[str, Any],
        duration: float,
        sample_rate: int,
        note: str = "",
    ) -> str:
        """Mark the job done with its outputs, in one transaction (fenced); ``note`` ends its
        log line (what happened to the samples: clipped, or rescaled).

        A job whose cancel was requested while the attempt finished ends CANCELLED instead
        (the request was answered CANCELLATION_REQUESTED: it is neither delivered nor billed)
        and its outputs go unused: the caller deletes them. Returns the status it ended in.

        Safe to call again after a failure: when an earlier call did commit (the connection
        was cut before its answer came back), the job is already COMPLETED with these same
        outputs and this returns instead of raising :class:`LeaseLost`.
        """
        now = self.db.clock()
        try:
            return self._complete(job_id, worker_id, now, outputs, duration, sample_rate, note)
        except LeaseLost:
            # A retry after a connection cut at COMMIT: the first try may have committed.
            with self.db.read() as s:
                done = s.execute(select(Job.status, Job.outputs).where(Job.id == job_id)).first()
            if done is None or tuple(done) != (COMPLETED, outputs):
                raise
            return COMPLETED

    def _complete(
        self,
        job_id: str,
        worker_id: str,
        now: datetime,
        outputs: dict[str, Any],
        duration: float,
        sample_rate: int,
        note: str,
    ) -> str:
        with self.db.write() as s:
            try:  # one UPDATE decides against a cancel racing it (the row is locked)
                self._fenced(
                    s,
                    job_id,
                    worker_id,
                    Job.cancel_requested.is_(False),
                    status=COMPLETED,
                    outputs=outputs,
                    output_bytes=stored_bytes(outputs),
                    duration=duration,
                    sample_rate=sample_rate,
                    progress=1.0,
                    lease_owner=None,
                    finished_at=now,
                )
            except LeaseLost:  # lost, or its cancel was requested: LeaseLost again if lost
                why = "cancelled: the attempt finished after the cancel request; outputs unused"
                self._cancel_running(s, job_id, worker_id, why)
                return CANCELLED
            self.log(s, job_id, f"completed: {', '.join(outputs)}{note}")
            self._finalised(s, job_id)
            return COMPLETED

    def fail(self, job_id: str, worker_id: str, *, code: str, message: str, retryable: bool) -> str:
        """End an attempt that failed; retryable failures requeue while attempts remain. A job
        whose cancel was requested meanwhile is cancelled instead, whatever the failure.

        Returns the job's new status (``IN_QUEUE``, ``FAILED`` or ``CANCELLED``).
        """
        now = self.db.clock()
        with self.db.write() as s:
            attempts, max_attempts, cancel = s.execute(
                select(Job.attempts, Job.max_attempts, Job.cancel_requested).where(Job.id == job_id)
            ).one()
            if cancel:  # never queued (nor run) again once its cancel was asked for
                ended = f"the running attempt failed ({code}: {message}) after the cancel request"
                self._cancel_running(s, job_id, worker_id, f"cancelled: {ended}")
                return CANCELLED
            if retryable and attempts < max_attempts:
                why = f"attempt {attempts} failed ({code}: {message}); retrying"
                self._requeue(s, job_id, worker_id, why)
                return IN_QUEUE
            self._fenced(
                s,
                job_id,
                worker_id,
                status=FAILED,
                error_code=code,
                error_message=message,
                lease_owner=None,
                finished_at=now,
            )
            self.log(s, job_id, f"failed: {code}: {message}")
            self._finalised(s, job_id)
            return FAILED

    def give_back(self, job_id: str, worker_id: str, reason: str) -> None:
        """Requeue a running job whose worker is stopping (a deploy, a scale-down), without
        counting the attempt: an operator's restarts must not use up a job's attempts (one
        whose cancel was requested meanwhile is cancelled instead)."""
        with self.db.write() as s:
            cancel = s.execute(select(Job.cancel_requested).where(Job.id == job_id)).scalar_one()
            if cancel:
                ended = f"the running attempt was given back ({reason}) after the cancel request"
                self._cancel_running(s, job_id, worker_id, f"cancelled: {ended}")
                return
            why = f"attempt given back ({reason}); it does not count"
            self._requeue(s, job_id, worker_id, why, attempts=Job.attempts - 1)

    def _requeue(self, s: Session, job_id: str, worker_id: str, why: str, **values: Any) -> None:
        """Back in the queue (fenced on the lease), logged as ``why``; idle workers woken."""
        self._fenced(
            s,
            job_id,
            worker_id,
            status=IN_QUEUE,
            lease_owner=None,
            progress=0.0,
            stage=None,
            **values,
        )
        self.log(s, job_id, why)
        engine_model = s.execute(select(Job.engine_model).where(Job.id == job_id))
        self._wake_after_commit(s, engine_model.scalar_one())
        self._status_changed(s, job_id)

    def mark_cancelled(self, job_id: str, worker_id: str) -> None:
        """The worker stopped a running job whose cancel was requested."""
        with self.db.write() as s:
            self._cancel_running(s, job_id, worker_id, "cancelled while running")

    def _cancel_running(self, s: Session, job_id: str, worker_id: str, why: str) -> None:
        """End a running job CANCELLED (fenced on the lease), logged as ``why``."""
        now = self.db.clock()
        self._fenced(s, job_id, worker_id, status=CANCELLED, lease_owner=None, finished_at=now)
        self.log(s, job_id, why)
        self._finalised(s, job_id)

    def _attempt_lost(self, s: Session, job_id: str, attempt: int, owner: str | None) -> None:
        """Say in the job's log, and the operator's, that ``owner`` stopped renewing the lease
        of ``attempt``: a worker killed, crashed or out of memory says nothing itself."""
        lost = f"attempt {attempt} lost: {owner} stopped renewing its lease"
        self.log(s, job_id, f"{lost} (killed, crashed or cut off)")
        _warn_after_commit(s, "job %s: %s (killed, crashed or cut off)", job_id, lost)

    def log(self, session: Session, job_id: str, message: str) -> None:
        """Append a log line to a job (inside the caller's transaction)."""
        session.add(JobLog(job_id=job_id, timestamp=self.db.clock(), message=message))


def _warn_after_commit(session: Session, message: str, *args: object) -> None:
    """Log a warning about what ``session`` changes once it commits. Logged before, a write
    the database refused (its disk full, an outage) was logged all the same, and again at
    every sweep that tried it: one line a second for as long as the disk stayed full."""
    event.listen(session, "after_commit", lambda _s: log.warning(message, *args), once=True)


def _tell(listeners: list[Callable[[str], None]], job_id: str) -> None:
    """Each of ``listeners`` that ``job_id``'s status changed; one that fails is logged, never
    raised: the change has committed, whatever a listener does."""
    for listener in listeners:
        try:
            listener(job_id)
        except Exception:
            log.exception("telling a listener that job %s changed failed", job_id)
