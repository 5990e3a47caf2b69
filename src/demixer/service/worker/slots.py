"""Workers: claim jobs from the queue and run each in a slot's separation child process.

A :class:`Worker` runs ``slots`` threads. Each slot has its own worker id (its fencing token in
the queue) and a :class:`~demixer.service.worker.runner.Runner` that owns one long-lived child
process (:mod:`demixer.service.worker.child`) that keeps the models it loaded. A slot's thread
claims a job, has its runner run the attempt to its end (input, separation, heartbeats,
outputs; see :mod:`demixer.service.worker.runner`) and claims the next, until the worker is
stopped.

Every status change goes through :class:`~demixer.service.jobs.queue.Queue`. A long model call runs
in another process, so it can never starve the heartbeat, and killing it gives its memory back.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Collection
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

from sqlalchemy import select

from demixer.errors import DemixerError, StorageFull
from demixer.models.loading import verified_weights
from demixer.models.model_dir import default_model_dir
from demixer.models.registry import get_spec
from demixer.service.context import Services
from demixer.service.db import OutageNotice, is_unavailable
from demixer.service.jobs.queue import IN_PROGRESS
from demixer.service.jobs.wakeup import JobListener
from demixer.service.schema import Job
from demixer.service.worker.protocol import ChildOptions
from demixer.service.worker.registry import (
    Presence,
    missing_steps,
    resolve_device,
    runnable_models,
    runs,
    slot_id,
)
from demixer.service.worker.runner import Runner, scratch_attempt

__all__ = ["Worker"]

log = logging.getLogger("demixer.worker")

MODELS_RESCAN_SECONDS = 5.0  # how soon a model pulled or added while the worker runs is used


def _files_of(model_dir: Path | None, model: str) -> tuple[tuple[str, int, int], ...]:
    """What a model's folder holds (each file's name, size and modification time): a copy
    that could not be loaded stays set aside until this changes (pulled or added again)."""
    folder = (model_dir or default_model_dir()) / model
    try:
        return tuple(
            sorted(
                (str(path.relative_to(folder)), stat.st_size, stat.st_mtime_ns)
                for path in folder.rglob("*")
                if path.is_file()
                for stat in (path.stat(),)
            )
        )
    except OSError:
        return ()


def _built_on(model: str, model_dir: Path | None) -> list[str]:
    """``model`` and every model it is built on (an ensemble's members, a recipe's models, and
    theirs), each once; a model not known here is only itself."""
    found = [model]
    for name in found:  # grows as it goes: the models of the models found
        try:
            requires = get_spec(name, model_dir).requires
        except DemixerError:
            continue
        found.extend(m for m in requires if m not in found)
    return found


class _DiskFull:
    """Until when a worker's slots claim nothing because its disk was found full.

    The slots share the disk (the scratch directory, the local copies of inputs): a slot that
    claimed again at once would fail every queued job within seconds, each of its attempts in
    turn, while workers with room waited. Paused for a lease, doubled while the disk stays full
    (up to 16 leases), it leaves the jobs it gave back to them; with no such worker it claims
    again after the pause, so a job still ends (``STORAGE_FULL`` once its attempts are spent)
    rather than waiting for good.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._lock = threading.Lock()
        self._until = 0.0
        self._streak = 0  # attempts failed for want of room since one that did not

    def found(self) -> float:
        """The disk was just found full: no claims for a while from now; returns how long."""
        with self._lock:
            pause: float = self.seconds * 2 ** min(self._streak, 4)
            self._streak += 1
            self._until = time.monotonic() + pause
            return pause

    def cleared(self) -> None:
        """An attempt ended otherwise: the next full disk pauses for a lease again."""
        with self._lock:
            self._streak = 0

    def wait(self, stop: threading.Event) -> None:
        """Return once the pause is over (at once when there is none), or ``stop`` is set."""
        with self._lock:
            left = self._until - time.monotonic()
        if left > 0:
            stop.wait(left)


class _Slot:
    """One worker slot: a thread's claim loop, its worker id and its runner (and child)."""

    def __init__(
        self,
        services: Services,
        worker_id: str,
        models: list[str],
        threads: int | None,
        device: str,
        disk_full: _DiskFull,
        model_unavailable: Callable[[str], list[str]],
        refused_steps: frozenset[str] = frozenset(),
        log_setup: Callable[[], None] | None = None,
    ):
        self.services = services
        self.worker_id = worker_id
        self.disk_full = disk_full
        self.use(models, refused_steps)
        settings = services.settings
        options = ChildOptions(
            model_dir=str(settings.model_dir) if settings.model_dir else None,
            device=device,
            threads=threads,
            parent_pid=os.getpid(),
            log_setup=log_setup,
        )
        self.runner = Runner(services, worker_id, options, unloadable=model_unavailable)

    def use(self, models: list[str], refused_steps: frozenset[str]) -> None:
        """Claim jobs for ``models`` (and ensembles of them), but none that asks for one of
        ``refused_steps`` (:func:`~demixer.service.worker.registry.missing_steps`), from the
        next claim on."""
        self.models = models
        self.refused_steps = refused_steps
        self._runs = partial(runs, models=frozenset(models))

    @property
    def child_pid(self) -> int | None:
        """The separation child's pid (None while the slot has none)."""
        child = self.runner.child
        return child.pid if child is not None else None

    def loop(self, stop: threading.Event) -> None:
        """Claim and run jobs until ``stop`` is set."""
        poll = self.services.settings.poll_seconds
        try:
            # The child starts now, not with the first job: the fork server's import of torch
            # (seconds; 5 s on a busy 2-core machine) was the first job's to wait for. Its
            # model is loaded by that job: a worker that never runs one holds no weights.
            self.runner.start_child()
            queue = self.services.queue
            outage = OutageNotice(log, self.worker_id)
            while not stop.is_set():
                self.disk_full.wait(stop)
                if stop.is_set():
                    break
                generation = queue.work_generation()
                try:
                    claim = queue.claim(self.worker_id, self.models, self._runs, self.refused_steps)
                    outage.answered()
                except Exception as exc:
                    if is_unavailable(exc):  # an outage (PostgreSQL restarting): not a bug
                        outage.failed(exc)
                    else:
                        log.exception("%s: claiming a job failed", self.worker_id)
                    stop.wait(min(max(poll, 1.0), 5.0))  # back soon after an outage ends
                    continue
                if claim is None:
                    queue.wait_for_work(generation, poll)
                    continue
                ended = self.runner.run_job(claim, stop)
                if ended == StorageFull.code:
                    log.warning(
                        "%s: %s is full: this worker claims no job for %g s, "
                        "leaving them to workers with room",
                        self.worker_id,
                        self.runner.full,
                        self.disk_full.found(),
                    )
                    continue
                self.disk_full.cleared()
        finally:
            self.runner.close()


def _default_base_id() -> str:
    return f"{socket.gethostname()[:60]}:{os.getpid()}"


class Worker:
    """Runs jobs from the queue in ``slots`` parallel slots until stopped.

    Args:
        services: the shared service parts (settings, database, queue, storage).
        slots: jobs run at once; each slot has its own child process and loaded model.
        worker_id: base of the ids (default ``{hostname}:{pid}``): the worker's own id (its row
            in ``workers``) is ``{base}:{random}``, each slot's ``{base}:{slot}:{random}``.
        models: engine model ids this worker may run (None: all); it claims only jobs for
            those whose weights are installed here, and refuses to start with none
            (:class:`~demixer.errors.ModelUnavailable`). Other jobs stay queued for workers
            that can run them, as do jobs asking for a model clean-up step (``dereverb``,
            ``deecho``) that no model installed here runs. Models installed or removed while
            it runs (``models pull``, ``models add``) are picked up within
            :data:`MODELS_RESCAN_SECONDS`.
        log_setup: sets each separation child's logging up as this process's was (see
            :class:`~demixer.service.worker.protocol.ChildOptions`); None leaves Python's default.

    The device comes from ``settings.device`` (``auto``: a CUDA GPU when torch sees one).
    While it runs, the worker advertises its device and models in the ``workers`` table
    (:mod:`demixer.service.worker.registry`).

    Children are forked by multiprocessing's fork server on Linux (spawned elsewhere; see
    :meth:`~demixer.service.worker.child.Child.start`); either way each child imports the
    parent's ``__main__`` module again: a script that runs a Worker must do so under
    ``if __name__ == "__main__":`` (``demixer worker``, ``python -m …`` and ``python -c …``
    need nothing).
    """

    def __init__(
        self,
        services: Services,
        *,
        slots: int = 1,
        worker_id: str | None = None,
        models: Collection[str] | None = None,
        log_setup: Callable[[], None] | None = None,
    ) -> None:
        if slots < 1:
            raise ValueError("a worker needs at least one slot")
        self.services = services
        base = worker_id or _default_base_id()
        settings = services.settings
        self._requested = models
        # Models whose copy here could not be loaded, with what their folder held then.
        self._broken: dict[str, tuple[tuple[str, int, int], ...]] = {}
        # Rescans come from the main thread, and from a slot after a model failed to load.
        self._models_lock = threading.RLock()
        self.models = runnable_models(settings, models)
        self.refused_steps = missing_steps(settings)
        device, self.device = resolve_device(settings.device)
        # Slots share the cores: N children each on every core would only wait on each other
        # (measured: benchmarks/RESULTS.md, "Scale-out"). DEMIXER_THREADS overrides.
        cpus = os.cpu_count() or 1
        threads = settings.threads or (max(1, cpus // slots) if slots > 1 else None)
        self.id = f"{base}:{uuid.uuid4().hex[:8]}"
        # A lease: time enough for a worker with room, woken by the job given back, to claim it.
        disk_full = _DiskFull(settings.lease_seconds)
        self.slots = [
            _Slot(
                services,
                slot_id(self.id, i),
                self.models,
                threads,
                device,
                disk_full,
                self.model_unavailable,
                self.refused_steps,
                log_setup,
            )
            for i in range(slots)
        ]
        self.presence = Presence(
            services.db,
            settings,
            worker_id=self.id,
            device=self.device,
            models=self.models,
            slots=slots,
        )
        self._stop = threading.Event()

    def rescan_models(self) -> None:
        """Pick up models installed or removed since the start: the slots claim, and the
        worker advertises, what is installed now (nothing, while none of its models is), less
        the models set aside by :meth:`model_unavailable` whose files have not changed."""
        with self._models_lock:
            self._rescan_models()

    def model_unavailable(self, model: str) -> list[str]:
        """An attempt at ``model`` failed here for want of its files (missing, damaged, not
        known here). Each model whose own weights fail their check, ``model`` itself or one it
        is built on (an ensemble's members, a recipe's models), is set aside: the worker
        neither claims nor advertises it, nor anything built on it, until its folder changes,
        leaving those jobs to workers whose copy loads. A damaged copy failed every job for
        the model that this worker claimed, for good, though another worker had a sound one
        (measured: 2 jobs of 3); a damaged member of an ensemble failed each of its job's
        attempts on this same worker.

        Returns the models set aside (none: the files are sound, or could not be checked).
        A slot's runner calls this before the attempt's end is recorded: the job put back in
        the queue was claimed at once by this worker's other slots, and failed there too."""
        model_dir = self.services.settings.model_dir
        damaged = []
        for name in _built_on(model, model_dir):
            try:
                verified_weights(get_spec(name, model_dir), model_dir)
            except DemixerError:
                damaged.append(name)  # missing, damaged, or no longer known here
            except Exception:  # a check that cannot run must never stop the slot
                log.exception("worker %s: checking the files of model %s failed", self.id, name)
                return []
        if not damaged:
            return []  # sound: what failed was another model (a clean-up step's)
        log.warning(
            "worker %s: model %s cannot be loaded here (the log above says why); it claims no "
            "job for it, nor for any model built on it, until its files change",
            self.id,
            ", ".join(damaged),
        )
        with self._models_lock:
            for name in damaged:
                self._broken[name] = _files_of(model_dir, name)
            self._rescan_models()
        return damaged

    def _rescan_models(self) -> None:
        try:
            models = runnable_models(self.services.settings, self._requested, warn=False)
            refused = missing_steps(self.services.settings)
        except DemixerError:
            # None of its models is installed any more (removed, its folder gone). Kept, they
            # were claimed here and failed at once (UNKNOWN_MODEL, MODEL_UNAVAILABLE) though
            # another worker had them; now their jobs wait for one that has them, their status
            # saying so, and this worker claims again once one is installed.
            if self.models:
                log.warning(
                    "worker %s: none of its models (%s) is installed any more; it claims no job "
                    "until one is",
                    self.id,
                    ", ".join(self.models),
                )
            models, refused = [], self.refused_steps
        except Exception:  # a rescan must never stop the worker: it keeps what it had
            log.exception("worker %s: rescanning the installed models failed", self.id)
            return
        model_dir = self.services.settings.model_dir
        for model, files in list(self._broken.items()):
            if _files_of(model_dir, model) != files:  # pulled or added again: tried afresh
                del self._broken[model]
        if self._broken:
            models = [
                model
                for model in models
                if not self._broken.keys() & set(_built_on(model, model_dir))
            ]
        if (models, refused) == (self.models, self.refused_steps):
            return
        for slot in self.slots:
            slot.use(models, refused)
        self.refused_steps = refused
        if models != self.models:
            log.info("worker %s: models now %s", self.id, ", ".join(models) or "none")
            self.models = models
            self.presence.advertise(models)

    @property
    def worker_ids(self) -> list[str]:
        """The slots' worker ids (their lease owner names)."""
        return [slot.worker_id for slot in self.slots]

    def child_pids(self) -> list[int | None]:
        """Each slot's separation child's pid (None while it has none)."""
        return [slot.child_pid for slot in self.slots]

    def stop(self) -> None:
        """Ask :meth:`run` to return: running attempts are abandoned and requeued at once."""
        self._stop.set()

    def run(self, stop: threading.Event | None = None) -> None:
        """Work until ``stop`` is set (or :meth:`stop` is called).

        Called without ``stop`` in the main thread, SIGTERM and SIGINT stop it too. A running
        attempt is then abandoned, not awaited: its child is killed and the job goes back to
        the queue at once (``queue.give_back``: the attempt does not count towards
        ``max_attempts``), also when the signal reached the child too (sent to the process
        group).
        """
        own_signals = stop is None and threading.current_thread() is threading.main_thread()
        if stop is not None:
            self._stop = stop
        stop = self._stop
        self.sweep_work_dir()
        previous: dict[int, Any] = {}
        if own_signals:  # a caller that passes ``stop`` handles signals itself

            def on_signal(signum: int, _frame: FrameType | None) -> None:
                log.info("signal %d: stopping the worker", signum)
                stop.set()

            for signum in (signal.SIGTERM, signal.SIGINT):
                previous[signum] = signal.signal(signum, on_signal)
        threads = [
            threading.Thread(target=slot.loop, args=(stop,), name=f"demixer-slot-{i}", daemon=True)
            for i, slot in enumerate(self.slots)
        ]
        presence = threading.Thread(
            target=self.presence.run, args=(stop,), name="demixer-presence", daemon=True
        )
        presence.start()
        # PostgreSQL: jobs queued by other processes wake the idle slots at once (NOTIFY).
        listener = (
            JobListener(self.services.queue) if self.services.db.dialect == "postgresql" else None
        )
        if listener is not None:
            listener.start()
        for thread in threads:
            thread.start()
        sweep_every = max(1.0, self.services.settings.lease_seconds)
        next_sweep = time.monotonic() + sweep_every
        next_rescan = time.monotonic() + MODELS_RESCAN_SECONDS
        try:
            while any(t.is_alive() for t in threads):
                if stop.is_set():  # idle slots wait on the queue's wakeups, not on ``stop``
                    self.services.queue.wake()
                for thread in threads:
                    thread.join(0.5)  # short joins: the main thread must run signal handlers
                if time.monotonic() >= next_sweep and not stop.is_set():
                    next_sweep = time.monotonic() + sweep_every
                    self.sweep_work_dir()
                if time.monotonic() >= next_rescan and not stop.is_set():
                    next_rescan = time.monotonic() + MODELS_RESCAN_SECONDS
                    self.rescan_models()
        finally:
            stop.set()
            for thread in threads:
                thread.join()
            presence.join(10)  # marks the row stopped; a hung database must not hold the exit
            if listener is not None:
                listener.stop()
            for number, handler in previous.items():
                signal.signal(number, handler)

    def sweep_work_dir(self) -> int:
        """Remove the scratch directories of attempts that are over: those of a killed worker
        (``.part`` stems, a fetched input) whose job completed, failed or moved on to another
        attempt elsewhere. Runs when the worker starts and every lease while it works; returns
        how many it removed. An attempt still running (here, or in another worker sharing the
        data directory) keeps its directory: its job is IN_PROGRESS at that attempt."""
        settings = self.services.settings
        work = settings.data_dir / "work"
        if not work.is_dir():
            return 0
        found: dict[str, list[tuple[int, Path]]] = {}
        legacy_cutoff = time.time() - settings.job_timeout_seconds - 2 * settings.lease_seconds
        removed = 0
        for entry in work.iterdir():
            named = scratch_attempt(entry.name)
            if named is None:  # not named by attempt: remove once older than any job
                try:
                    if entry.is_dir() and entry.stat().st_mtime < legacy_cutoff:
                        shutil.rmtree(entry, ignore_errors=True)
                        removed += 1
                except OSError:
                    continue
                continue
            found.setdefault(named[0], []).append((named[1], entry))
        if not found:
            return removed
        try:
            with self.services.db.read() as s:
                rows = s.execute(
                    select(Job.id, Job.status, Job.attempts).where(Job.id.in_(list(found)))
                ).all()
        except Exception as exc:  # an outage: sweep next time
            log.warning("sweeping %s failed: %s", work, type(exc).__name__)
            return removed
        live = {(r.id, r.attempts) for r in rows if r.status == IN_PROGRESS}
        for job_id, entries in found.items():
            for attempt, entry in entries:
                if (job_id, attempt) in live:
                    continue
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
        if removed:
            log.info("removed %d scratch directories of finished attempts", removed)
        return removed
