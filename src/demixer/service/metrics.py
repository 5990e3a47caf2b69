"""What the whole deployment is doing, read from the database for ``GET /metrics``.

Every API process reads the same rows, so each reports the same cluster-wide figures: the
queue (by state and model, and how long its oldest request has waited), requests that finished
lately (by final state and model) and those that failed (by model and error code), the live
workers and their slots, webhook deliveries still to send or given up, and uploads announced
but not yet received. Worker processes serve no HTTP: these figures are how an operator
watches them.

One statement per read (a ``UNION ALL`` of small aggregates), each part on an indexed column
or a small table: ``jobs`` by ``ix_jobs_queue`` (the active states) and ``ix_jobs_finished``
(the last hour's finished rows: never the table's history, which is most of it),
``deliveries`` by ``ix_deliveries_due``, ``workers`` (one row per worker process). Uploads
have no index on their state: counting them reads the ``files`` table (rows of a few hundred
bytes, kept ``DEMIXER_RECORD_RETENTION_SECONDS``), the costliest part.

Labels hold only what the operator chose (model ids, error codes, states), never an
account's, a key's or a request's id, nor a file's name: an ensemble (an id made up per
request, e.g. ``max:a+b``) is counted as the model ``ensemble``, so no request can add a
series.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    CompoundSelect,
    Integer,
    String,
    and_,
    cast,
    func,
    literal,
    null,
    select,
    union_all,
)
from sqlalchemy.orm import Session

from demixer.models.catalogue.ensembles import ensemble_members
from demixer.service.delivery.outbox import DeliveryState
from demixer.service.files.states import FileState
from demixer.service.jobs.queue import FAILED, FINAL, IN_PROGRESS, IN_QUEUE
from demixer.service.schema import Delivery, File, Job, WorkerRecord
from demixer.service.worker.registry import stale_after
from demixer.settings import Settings

__all__ = ["ACTIVE", "ENSEMBLE", "FAILED_WINDOW", "ClusterState", "model_label", "read_cluster"]

#: The job states counted (the finished ones are history: see :data:`FAILED_WINDOW`).
ACTIVE = (IN_QUEUE, IN_PROGRESS)
#: Finished (and failed) requests are counted over this window before the read: a count of
#: every finished row would read the table's whole history, and would fall as record
#: retention deletes rows, which Prometheus takes for a counter reset.
FAILED_WINDOW = timedelta(hours=1)
#: The model label of every ensemble.
ENSEMBLE = "ensemble"


def model_label(engine_model: str) -> str:
    """A job's model as a label: its id, or :data:`ENSEMBLE` for any ensemble."""
    return ENSEMBLE if ensemble_members(engine_model) is not None else engine_model


@dataclass
class ClusterState:
    """The database's figures at ``read_at`` (the database's clock).

    ``jobs`` and ``oldest_queued`` are keyed by ``(state, model label)`` and model label;
    ``finished`` by ``(final state, model label)``; ``failed`` by ``(model label, error
    code)``; ``deliveries`` by delivery state (``pending``, ``failed``). Times are the oldest
    row's ``created_at``; ages are taken when they are shown, so a cached read still shows a
    growing age.
    """

    read_at: datetime
    jobs: dict[tuple[str, str], int] = field(default_factory=dict)
    oldest_queued: dict[str, datetime] = field(default_factory=dict)
    finished: dict[tuple[str, str], int] = field(default_factory=dict)
    failed: dict[tuple[str, str], int] = field(default_factory=dict)
    workers: int = 0
    worker_slots: int = 0
    deliveries: dict[str, int] = field(default_factory=dict)
    oldest_pending_delivery: datetime | None = None
    uploads_pending: int = 0
    oldest_pending_upload: datetime | None = None


# One row per figure: (part, label a, label b, count, oldest created_at).
_PART, _A, _B, _COUNT, _OLDEST = range(5)


def read_cluster(session: Session, settings: Settings, now: datetime) -> ClusterState:
    """The figures, in one statement; ``now`` is the database's clock (``db.clock()``)."""
    none = cast(null(), String)
    jobs = (
        select(
            literal("jobs"),
            Job.status,
            Job.engine_model,
            func.count(),
            func.min(Job.created_at),
        )
        .where(Job.status.in_(ACTIVE))
        .group_by(Job.status, Job.engine_model)
    )
    recent = Job.finished_at >= now - FAILED_WINDOW  # ix_jobs_finished: the last hour alone
    finished = (
        select(
            literal("finished"),
            Job.status,
            Job.engine_model,
            func.count(),
            null(),
        )
        .where(Job.status.in_(FINAL), recent)
        .group_by(Job.status, Job.engine_model)
    )
    failed = (
        select(
            literal("failed"),
            Job.engine_model,
            func.coalesce(Job.error_code, ""),
            func.count(),
            null(),
        )
        .where(Job.status == FAILED, recent)
        .group_by(Job.engine_model, Job.error_code)
    )
    live = and_(
        WorkerRecord.stopped_at.is_(None), WorkerRecord.last_seen_at >= now - stale_after(settings)
    )
    workers = select(
        literal("workers"),
        none,
        none,
        func.count(),
        null(),
    ).where(live)
    slots = select(
        literal("slots"),
        none,
        none,
        cast(func.coalesce(func.sum(WorkerRecord.slots), 0), Integer),
        null(),
    ).where(live)
    deliveries = (
        select(
            literal("deliveries"),
            Delivery.status,
            none,
            func.count(),
            func.min(Delivery.created_at),
        )
        .where(Delivery.status.in_((DeliveryState.PENDING, DeliveryState.FAILED)))
        .group_by(Delivery.status)
    )
    uploads = select(
        literal("uploads"),
        none,
        none,
        func.count(),
        func.min(File.created_at),
    ).where(File.status == FileState.PENDING)
    statement: CompoundSelect[Any] = union_all(
        jobs, finished, failed, workers, slots, deliveries, uploads
    )
    return _gathered(list(session.execute(statement)), now)


def _gathered(rows: Sequence[Sequence[Any]], now: datetime) -> ClusterState:
    state = ClusterState(read_at=now)
    for row in rows:
        part, a, b = row[_PART], str(row[_A] or ""), str(row[_B] or "")
        count = int(row[_COUNT] or 0)
        oldest = row[_OLDEST] if isinstance(row[_OLDEST], datetime) else None
        if part == "jobs":
            key = (a, model_label(b))
            state.jobs[key] = state.jobs.get(key, 0) + count
            if a == IN_QUEUE and oldest is not None:
                label = key[1]
                state.oldest_queued[label] = min(oldest, state.oldest_queued.get(label, oldest))
        elif part == "finished":
            done_key = (a, model_label(b))
            state.finished[done_key] = state.finished.get(done_key, 0) + count
        elif part == "failed":
            fail_key = (model_label(a), b)
            state.failed[fail_key] = state.failed.get(fail_key, 0) + count
        elif part == "workers":
            state.workers = count
        elif part == "slots":
            state.worker_slots = count
        elif part == "deliveries":
            state.deliveries[a] = count
            if a == DeliveryState.PENDING:
                state.oldest_pending_delivery = oldest
        elif part == "uploads":
            state.uploads_pending = count
            state.oldest_pending_upload = oldest
    return state
