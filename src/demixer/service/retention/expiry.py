"""How long inputs and results are kept: the expiry times, and the hook that sets a result's.

Uploads expire ``upload_retention_seconds`` after they are announced; a completed request's
outputs ``result_retention_seconds`` after it finished. Expired objects answer 410 at once
(compared with the database clock), whether or not the sweeper
(:mod:`demixer.service.retention.sweeper`) has deleted their bytes yet.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, or_, update
from sqlalchemy.orm import Session

from demixer.service.db import rows_changed
from demixer.service.jobs.queue import COMPLETED, FinalHook
from demixer.service.schema import Job

__all__ = [
    "expire_results",
    "live_result",
    "result_due",
    "result_expired",
    "result_expires_at",
    "set_result_expiry",
]


def result_expires_at(job: Job, retention_seconds: float) -> datetime | None:
    """When ``job``'s outputs expire: its ``expires_at``, else finished + retention."""
    if job.expires_at is not None:
        return job.expires_at
    finished = job.finished_at
    if job.status != COMPLETED or finished is None:
        return None
    return finished + timedelta(seconds=retention_seconds)


def result_due(now: datetime, retention_seconds: float) -> ColumnElement[bool]:
    """The SQL twin of :func:`result_expires_at`: a COMPLETED job whose outputs expired before
    ``now``. A job completed before ``jobs.expires_at`` existed (schema 0001; migration 0002
    added the column empty) expires ``retention_seconds`` after it finished, as the API says;
    the sweeper looked at ``expires_at`` alone and kept its stems on disk for good."""
    kept = timedelta(seconds=retention_seconds)
    return and_(
        Job.status == COMPLETED,
        or_(
            Job.expires_at < now,
            and_(Job.expires_at.is_(None), Job.finished_at < now - kept),
        ),
    )


def result_expired(job: Job, retention_seconds: float, now: datetime) -> bool:
    """Whether ``job``'s outputs are gone or past their retention at ``now``."""
    if job.expired:
        return True
    expires = result_expires_at(job, retention_seconds)
    return expires is not None and now >= expires


def live_result(now: datetime) -> ColumnElement[bool]:
    """A COMPLETED request whose outputs are still kept at ``now``: not swept, not past its
    ``expires_at`` (one completed before that column existed counts until swept)."""
    return and_(
        Job.status == COMPLETED,
        Job.expired.is_(False),
        or_(Job.expires_at.is_(None), Job.expires_at >= now),
    )


def expire_results(session: Session, now: datetime, *where: ColumnElement[bool]) -> int:
    """Bring the expiry of the live results matching ``where`` forward to ``now`` (an operator
    frees their disk early: ``demixer purge``); the sweeper deletes their stems, and the API
    answers them as expired from now on. Returns how many."""
    # A microsecond before ``now``: expired for every reader, and due for a sweep, at ``now``.
    gone = now - timedelta(microseconds=1)
    done = session.execute(
        update(Job).where(live_result(now), *where).values(expires_at=gone, updated_at=now)
    )
    return rows_changed(done)


def set_result_expiry(retention_seconds: float) -> FinalHook:
    """A ``Queue.final_hooks`` hook: a job that COMPLETED gets ``expires_at``.

    It runs inside the transaction that completes the job, so the expiry commits with it.
    """
    keep = timedelta(seconds=retention_seconds)

    def hook(session: Session, job: Job) -> None:
        if job.status == COMPLETED and job.expires_at is None:
            job.expires_at = (job.finished_at or job.updated_at) + keep

    return hook
