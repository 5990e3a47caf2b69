"""Usage: the audio seconds each key processed with each model, recorded as jobs complete.

:func:`record_usage` is a queue final hook: it writes the record in the very transaction that
completes the job, so a job is never COMPLETED without its usage (nor counted twice:
``usage_records.job_id`` is unique). A request answered from the result cache
(``Job.reused_from``) processed nothing: it is recorded with quantity 0, so it still shows in
the request counts but adds no audio seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from demixer.service.jobs.queue import COMPLETED
from demixer.service.schema import Job, UsageRecord

__all__ = [
    "AUDIO_SECONDS",
    "UsageLine",
    "record_usage",
    "summarise",
    "usage_of",
    "usage_quantity",
]

AUDIO_SECONDS = "audio_seconds"


def usage_quantity(job: Job) -> float:
    """Audio seconds a completed job processed: its duration, or 0 for a result-cache hit.

    The recorded usage and the result's ``usage`` both come from here, so they always agree
    (the result is built without a session, e.g. for a webhook inside the final transaction).
    """
    return 0.0 if job.reused_from else float(job.duration or 0.0)


def record_usage(session: Session, job: Job) -> None:
    """Final hook: record a completed job's audio seconds (0 for a result-cache hit)."""
    if job.status != COMPLETED:
        return
    quantity = usage_quantity(job)
    session.add(
        UsageRecord(
            account_id=job.account_id,
            key_id=job.key_id,
            job_id=job.id,
            model=job.engine_model,
            feature=AUDIO_SECONDS,
            quantity=quantity,
            recorded_at=job.finished_at or job.updated_at,
        )
    )


def usage_of(session: Session, job_id: str) -> UsageRecord | None:
    """The usage recorded for one job (None for jobs completed before usage was recorded)."""
    return session.execute(
        select(UsageRecord).where(UsageRecord.job_id == job_id)
    ).scalar_one_or_none()


@dataclass(frozen=True)
class UsageLine:
    """One key's use of one model over a period.

    Attributes:
        key_id: the API key (None for jobs submitted without one).
        model: the engine model id.
        feature: what is counted (``audio_seconds``).
        quantity: the total, in seconds of input audio.
        jobs: how many completed requests (cache hits included).
    """

    key_id: str | None
    model: str
    feature: str
    quantity: float
    jobs: int


def summarise(session: Session, account_id: str, start: datetime, end: datetime) -> list[UsageLine]:
    """An account's usage recorded in ``[start, end]``, per key, model and feature."""
    rows = session.execute(
        select(
            UsageRecord.key_id,
            UsageRecord.model,
            UsageRecord.feature,
            func.sum(UsageRecord.quantity),
            func.count(),
        )
        .where(
            UsageRecord.account_id == account_id,
            UsageRecord.recorded_at >= start,
            UsageRecord.recorded_at <= end,
        )
        .group_by(UsageRecord.key_id, UsageRecord.model, UsageRecord.feature)
        .order_by(UsageRecord.key_id, UsageRecord.model, UsageRecord.feature)
    ).all()
    return [
        UsageLine(key, model, feature, round(float(total or 0.0), 3), int(jobs))
        for key, model, feature, total, jobs in rows
    ]
