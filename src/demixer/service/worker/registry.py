"""Which worker processes are alive and what they can run: the one owner of ``workers``.

Each worker process registers one row (its id ``hostname:pid:random``, device, the engine models
it claims jobs for, slots, version) when it starts, refreshes ``last_seen_at`` from one thread
(:class:`Presence`) every :func:`beat_interval` seconds, and marks the row stopped on a clean
stop. A worker is *live* while it is not stopped and was seen within :func:`stale_after`; rows
not seen for :data:`FORGET_AFTER` are deleted.

The API reads the table twice: a model advertised by a worker seen within ``FORGET_AFTER`` is
accepted even where this process has no weights (:func:`advertised_models`), and a queued job
whose model no live worker runs says so in its status (:func:`waiting_reason`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Connection, bindparam, delete, select, update
from sqlalchemy.orm import Session

from demixer import __version__
from demixer.engine.device import resolve_device
from demixer.errors import DemixerError, ModelUnavailable
from demixer.models.catalogue.ensembles import ensemble_members
from demixer.models.loading import installed_specs
from demixer.models.planner import CLEANUP_STEMS, cleanup_model
from demixer.models.registry import get_spec
from demixer.service.db import Database, is_unavailable, rows_changed
from demixer.service.schema import WorkerRecord
from demixer.settings import Settings

__all__ = [
    "FORGET_AFTER",
    "Presence",
    "WorkerInfo",
    "advertised_models",
    "beat_interval",
    "list_workers",
    "live_models",
    "missing_steps",
    "resolve_device",
    "runnable_models",
    "runs",
    "slot_id",
    "slot_of",
    "stale_after",
    "waiting_reason",
]

log = logging.getLogger("demixer.worker")

#: A worker not seen for this long is forgotten: its row is deleted, its models no longer count.
FORGET_AFTER = timedelta(days=1)


def beat_interval(settings: Settings) -> float:
    """Seconds between two refreshes of a worker's row (the job heartbeat, at least 1 s)."""
    return max(settings.heartbeat_seconds, 1.0)


def stale_after(settings: Settings) -> timedelta:
    """How long after its last refresh a worker still counts as live (three missed beats)."""
    return timedelta(seconds=max(3 * beat_interval(settings), 15.0))


# --- what a worker runs, and on what ------------------------------------------------------


def runnable_models(
    settings: Settings, requested: Collection[str] | None = None, *, warn: bool = True
) -> list[str]:
    """The engine models a worker on this machine claims jobs for, in registry order.

    Args:
        settings: ``model_dir`` is where the weights are looked for.
        requested: the ``--models`` a worker was started with (None: every installed model);
            requested models whose weights are missing here are left out with a warning.

    Raises :class:`~demixer.errors.UnknownModel` for an unregistered id, and
    :class:`~demixer.errors.ModelUnavailable` when no model is left: such a worker could never
    claim a job.
    """
    installed = [spec.id for spec in installed_specs(settings.model_dir)]
    if requested is None:
        chosen = installed
    else:
        wanted = {
            get_spec(model.strip(), settings.model_dir).id for model in requested if model.strip()
        }
        chosen = [model for model in installed if model in wanted]
        missing = sorted(wanted - set(installed))
        if missing and chosen and warn:
            log.warning("models not installed here, so not run: %s", ", ".join(missing))
    if not chosen:
        asked = f"; asked for: {', '.join(sorted(requested))}" if requested is not None else ""
        raise ModelUnavailable(
            f"this worker can run no model: installed here: {', '.join(installed) or 'none'}"
            f"{asked} (weights in {settings.model_dir or 'the default model directory'}); "
            "fetch weights with `demixer models pull <id>` or start with other --models"
        )
    return chosen


def missing_steps(settings: Settings) -> frozenset[str]:
    """The model clean-up steps (``dereverb``, ``deecho``) no model installed here can run.

    A worker leaves the jobs that ask for one to a worker that has such a model: its child
    picks the clean-up model among the models installed on its machine, and fails the job
    ``MODEL_UNAVAILABLE`` when there is none, though another worker could have run it.
    """
    installed = installed_specs(settings.model_dir)
    return frozenset(step for step in CLEANUP_STEMS if cleanup_model(step, installed) is None)


# --- the registry -------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerInfo:
    """A registered worker process, as ``demixer workers`` shows it.

    Attributes:
        state: ``live``; ``stopped`` (stopped cleanly); ``lost`` (not seen for
            :func:`stale_after`: killed, or cut off from the database).
    """

    id: str
    hostname: str
    pid: int
    device: str
    models: tuple[str, ...]
    slots: int
    version: str
    started_at: datetime
    last_seen_at: datetime
    stopped_at: datetime | None
    state: str


def list_workers(db: Database, settings: Settings) -> list[WorkerInfo]:
    """Every worker seen within :data:`FORGET_AFTER`, live ones first, then newest first."""
    now = db.clock()
    cutoff = now - stale_after(settings)
    with db.read() as s:
        rows = s.execute(
            select(WorkerRecord)
            .where(WorkerRecord.last_seen_at >= now - FORGET_AFTER)
            .order_by(WorkerRecord.last_seen_at.desc(), WorkerRecord.id)
        ).scalars()
        found = [
            WorkerInfo(
                id=r.id,
                hostname=r.hostname,
                pid=r.pid,
                device=r.device,
                models=tuple(r.models),
                slots=r.slots,
                version=r.version,
                started_at=r.started_at,
                last_seen_at=r.last_seen_at,
                stopped_at=r.stopped_at,
                state="stopped"
                if r.stopped_at is not None
                else ("live" if r.last_seen_at >= cutoff else "lost"),
            )
            for r in rows
        ]
    return sorted(found, key=lambda w: w.state != "live")  # stable: newest first within each


def live_models(session: Session, settings: Settings, now: datetime) -> list[list[str]]:
    """The model lists of the live workers, one per worker (one query on an indexed column)."""
    rows = session.execute(
        select(WorkerRecord.models).where(
            WorkerRecord.last_seen_at >= now - stale_after(settings),
            WorkerRecord.stopped_at.is_(None),
        )
    ).scalars()
    return [list(models) for models in rows]


def slot_id(process_id: str, slot: int) -> str:
    """The worker id (lease owner) of a process's slot: the slot number before the process
    id's last part (``host:pid:1:tail`` for ``host:pid:tail``)."""
    base, _, tail = process_id.rpartition(":")
    return f"{base}:{slot}:{tail}"


def slot_of(process_id: str, owner: str) -> int | None:
    """Which of ``process_id``'s slots lease owner ``owner`` is, or None: another process's."""
    base, _, tail = process_id.rpartition(":")
    slot = owner.removeprefix(f"{base}:").removesuffix(f":{tail}")
    return int(slot) if slot != owner and slot.isdigit() else None


def runs(model: str, models: Collection[str]) -> bool:
    """Whether a worker that runs ``models`` runs ``model``: one of them, or an ensemble of
    them (``a+b``, ``max:a+b``: ids made up per request, so never in a worker's list)."""
    if model in models:
        return True
    members = ensemble_members(model)
    return members is not None and all(member in models for member in members)


def waiting_reason(
    model: str,
    live: Sequence[Sequence[str]],
    steps: Sequence[str] = (),
    model_dir: Path | None = None,
) -> str | None:
    """Why a queued job for ``model`` is not picked up, or None when a live worker runs it.

    Args:
        model: the job's engine model.
        live: :func:`live_models`.
        steps: the job's model clean-up steps (``dereverb``, ``deecho``): a worker leaves the
            job unless it has a model for each (:func:`missing_steps`). Read from what the
            workers advertise: a worker started with ``--models`` may have one installed
            without listing it, and then takes the job all the same.
        model_dir: where the specs of the advertised models are read (a user's models).
    """
    if not live:
        return f"no worker is running; the request waits for one that runs model {model!r}"
    able = [models for models in live if runs(model, models)]
    if not able:
        running = sorted({m for models in live for m in models})
        return (
            f"no running worker has model {model!r} installed; live workers run: "
            f"{', '.join(running) or 'none'}. The request waits for a worker that has it"
        )
    if not steps or any(_cleans(models, steps, model_dir) for models in able):
        return None
    return (
        f"no running worker that runs model {model!r} has a model for the "
        f"{' and '.join(steps)} step; the request waits for one that has"
    )


def _cleans(models: Sequence[str], steps: Sequence[str], model_dir: Path | None) -> bool:
    """Whether ``models`` hold a model for each clean-up step of ``steps``."""
    specs = []
    for model in models:
        try:
            specs.append(get_spec(model, model_dir))
        except DemixerError:  # advertised by a worker, unknown here (another's user model)
            continue
    return all(cleanup_model(step, specs) is not None for step in steps)


# Built once: GET /v1/models reads it on every call.
_ADVERTISED = select(WorkerRecord.models).where(
    WorkerRecord.last_seen_at >= bindparam("seen_since", type_=WorkerRecord.last_seen_at.type)
)


def advertised_models(session: Session | Connection, now: datetime) -> set[str]:
    """Models some worker seen within :data:`FORGET_AFTER` runs (stopped or not): the API
    accepts jobs for them even without weights of its own, and they wait for that worker."""
    rows = session.execute(_ADVERTISED, {"seen_since": now - FORGET_AFTER}).scalars()
    return {model for models in rows for model in models}


class Presence:
    """One worker process's row: registered, refreshed from one thread, marked stopped.

    Args:
        db: the database.
        settings: the refresh interval comes from ``heartbeat_seconds``.
        worker_id: the worker's id (``hostname:pid:random``).
        device: what the worker runs on, as advertised (``cpu``, ``cuda:0 (…)``).
        models: the engine models it claims jobs for.
        slots: jobs it runs at once.
    """

    def __init__(
        self,
        db: Database,
        settings: Settings,
        *,
        worker_id: str,
        device: str,
        models: Sequence[str],
        slots: int,
    ) -> None:
        self.db = db
        self.interval = beat_interval(settings)
        self.worker_id = worker_id
        self.device = device
        self.models = list(models)
        self.slots = slots
        self.started_at = db.clock()
        self._registered = False
        self._announced = False  # the "registered" line is logged once per process

    def advertise(self, models: Sequence[str]) -> None:
        """Advertise ``models`` from the next beat on (the worker's models changed)."""
        self.models = list(models)
        self._registered = False  # the next beat writes the whole row

    def beat(self) -> None:
        """Refresh ``last_seen_at``; (re-)register when the row is missing (first beat, or
        pruned while this process was paused)."""
        now = self.db.clock()
        with self.db.write() as s:
            if self._registered:
                refreshed = s.execute(
                    update(WorkerRecord)
                    .where(WorkerRecord.id == self.worker_id)
                    .values(last_seen_at=now, stopped_at=None)
                )
                if rows_changed(refreshed) == 1:
                    return
            s.execute(delete(WorkerRecord).where(WorkerRecord.last_seen_at < now - FORGET_AFTER))
            s.merge(
                WorkerRecord(
                    id=self.worker_id,
                    hostname=socket.gethostname()[:255],
                    pid=os.getpid(),
                    device=self.device[:200],
                    models=self.models,
                    slots=self.slots,
                    version=__version__,
                    started_at=self.started_at,
                    last_seen_at=now,
                    stopped_at=None,
                )
            )
        if not self._announced:
            log.info(
                "worker %s registered: %s, models %s, %d slot(s)",
                self.worker_id,
                self.device,
                ", ".join(self.models),
                self.slots,
            )
        elif not self._registered:
            log.info(
                "worker %s now runs models %s", self.worker_id, ", ".join(self.models) or "none"
            )
        self._registered = self._announced = True

    def mark_stopped(self) -> None:
        """Mark the row stopped: the worker leaves the live list at once."""
        now = self.db.clock()
        with self.db.write() as s:
            s.execute(
                update(WorkerRecord)
                .where(WorkerRecord.id == self.worker_id)
                .values(last_seen_at=now, stopped_at=now)
            )

    def run(self, stop: threading.Event) -> None:
        """Beat until ``stop`` is set, then mark the row stopped.

        Database errors are logged and retried at the next beat: they never stop the worker
        (its jobs have their own leases; a worker missing from the list only misreports).
        """
        failing = False
        while not stop.is_set():
            try:
                self.beat()
                if failing:
                    log.info("worker %s: its registry row is refreshed again", self.worker_id)
                failing = False
            except Exception as exc:
                if not failing:  # an outage is expected now and then: no traceback for it
                    log.warning(
                        "worker %s: refreshing its registry row failed",
                        self.worker_id,
                        exc_info=not is_unavailable(exc),
                    )
                failing = True
            stop.wait(self.interval)
        if self._registered:
            try:
                self.mark_stopped()
            except Exception:
                log.exception("worker %s: marking its registry row stopped failed", self.worker_id)
