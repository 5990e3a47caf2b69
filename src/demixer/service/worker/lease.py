"""One attempt's lease, and how an attempt ends.

A :class:`Lease` heartbeats the job's lease while a slot's
:class:`~demixer.service.worker.runner.Runner` works on it, and watches the attempt's limits
(its time limit, the pace its separation projects, the separation's silence), its cancel flag
and the worker's stop flag. Whatever ends an attempt early (here, or in the runner, its input
or its outputs) raises an :class:`Abort` that says how; the runner records it through the
queue.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from demixer.errors import StorageUnavailable
from demixer.service.db import is_unavailable
from demixer.service.jobs.queue import Claim, LeaseLost

if TYPE_CHECKING:
    from demixer.service.worker.runner import Runner

__all__ = ["Abort", "Lease", "stopped"]

log = logging.getLogger("demixer.worker")

T = TypeVar("T")
_WAIT_SLICE = 0.25  # seconds: the longest a slot waits before looking at the stop flag again
# A separation's pace is trusted once this share of it was measured (the engine reports each
# window, at a steady pace)...
_PACE_FROM = 0.1
# ...and its attempt ended early only when the pace projects it past its limit by this factor:
# one projected just past the limit may still make it, and runs until the limit.
_MARGIN = 1.25


class Abort(Exception):
    """Ends an attempt. ``kind``: cancelled, timeout, lease_lost, stopped, crashed, failed, or
    recorded (its end is in the database already: nothing more to write)."""

    def __init__(self, kind: str, code: str = "", message: str = "", retryable: bool = False):
        super().__init__(kind, code, message)
        self.kind = kind
        self.code = code
        self.message = message
        self.retryable = retryable


def stopped() -> Abort:
    """The end of an attempt whose worker is stopping: given back, not counted."""
    return Abort("stopped", "WORKER_STOPPED", "the worker stopped during the attempt", True)


class Lease:
    """Heartbeats one job's lease and watches its limits, cancel flag and the stop flag.

    An attempt is ended ``JOB_TIMEOUT`` in one of three ways (see README, "Workers"):

    * it has run ``job_timeout_seconds`` (the fixed limit on one attempt, from its claim to its
      stored outputs): not retried;
    * its separation is going to pass that limit by a clear margin: once the child has reported
      :data:`_PACE_FROM` of the separation done, the pace measured since its first report
      projects the attempt's whole time; past :data:`_MARGIN` times the limit it is ended at
      once, not retried (another attempt at the same input runs as long), instead of running
      for the whole limit first;
    * its separation has reported nothing (no progress, no new stage) for
      ``job_stall_seconds``: a hung model. Retried, in a new child, while attempts remain.
    """

    def __init__(self, runner: Runner, claim: Claim, stop: threading.Event) -> None:
        settings = runner.services.settings
        self.runner, self.claim, self.stop = runner, claim, stop
        self.interval = settings.heartbeat_seconds
        self.limit = settings.job_timeout_seconds
        self.stall = settings.job_stall_seconds
        self.started = time.monotonic()
        self.deadline = self.started + self.limit
        self.next_beat = self.started + self.interval
        self.progress = 0.0
        self.stage: str | None = None  # written with the next heartbeat
        self.failing = False  # the last heartbeat failed: its outage is logged already
        self.watching = False  # the child has the job: its silence counts against the stall
        self.moved = self.started  # when the child last showed that it works
        self.paced: tuple[float, float] | None = None  # (when, fraction) of its first report

    def watch(self, on: bool) -> None:
        """Start (or stop) watching the child's silence: from now it must report within the
        stall limit."""
        self.watching = on
        self.moved = time.monotonic()

    def staged(self, stage: str) -> None:
        """The child began ``stage`` (one of the child's STAGES)."""
        self.stage = stage
        self.moved = time.monotonic()

    def advanced(self, fraction: float) -> None:
        """The child reported ``fraction`` of the separation done; raises :class:`Abort`
        when its pace says the attempt will run well past its limit."""
        now = time.monotonic()
        if fraction > self.progress:
            self.moved = now
        self.progress = fraction
        if self.paced is None:  # the pace is measured from the first report on
            self.paced = (now, fraction)
            return
        since, first = self.paced
        measured = fraction - first
        if measured < _PACE_FROM or fraction >= 1.0:
            return
        total = (now - self.started) + (now - since) * (1.0 - fraction) / measured
        if total > self.limit * _MARGIN:
            message = (
                f"the job would run about {total:.0f} s, past its limit of {self.limit:g} s "
                f"({fraction:.0%} separated after {now - self.started:.0f} s)"
            )
            raise Abort("timeout", "JOB_TIMEOUT", message)

    def wait_time(self) -> float:
        """Seconds until something is due (at most :data:`_WAIT_SLICE`)."""
        due = min(self.next_beat, self.deadline)
        if self.watching:
            due = min(due, self.moved + self.stall)
        return max(0.0, min(due - time.monotonic(), _WAIT_SLICE))

    def tick(self, *, stoppable: bool = True) -> None:
        """Heartbeat when due; raise :class:`Abort` when the attempt must end."""
        if stoppable and self.stop.is_set():
            raise stopped()
        now = time.monotonic()
        if now >= self.deadline:
            message = f"the job ran longer than its limit of {self.limit:g} s"
            raise Abort("timeout", "JOB_TIMEOUT", message)
        if self.watching and now >= self.moved + self.stall:
            message = f"the separation made no progress for {self.stall:g} s"
            raise Abort("timeout", "JOB_TIMEOUT", message, retryable=True)
        if now < self.next_beat:
            return
        self.next_beat = now + self.interval
        queue = self.runner.services.queue
        try:
            cancel = queue.heartbeat(
                self.claim.id, self.runner.worker_id, self.progress, self.stage
            )
        except LeaseLost:
            raise Abort("lease_lost") from None
        except Exception as exc:  # a database hiccup or outage: keep working, beat again later
            # Once per outage, as the registry's beat: at every beat (2 s) a long outage wrote
            # a warning a job every 2 s. An outage is expected now and then: no traceback.
            (log.debug if self.failing else log.warning)(
                "heartbeat for %s failed; retrying", self.claim.id, exc_info=not is_unavailable(exc)
            )
            self.failing = True
            return
        if self.failing:
            log.info("heartbeat for %s works again", self.claim.id)
            self.failing = False
        if cancel:
            raise Abort("cancelled")

    def beating(self, call: Callable[[], T]) -> T:
        """``call()``, heartbeating from a helper thread while it runs: one transfer (a long
        song's input fetched, a stem of a GB stored) may outlast the lease, and a lease let
        lapse is another worker's to take, the attempt's work then thrown away. A cancel, the
        job's time limit or a lost lease that the heartbeats find is raised once the call
        returns (a transfer stops at its end, not midway)."""
        done = threading.Event()
        found: list[Abort] = []

        def beat() -> None:
            while not done.wait(min(self.interval, _WAIT_SLICE)):
                try:
                    self.tick(stoppable=False)
                except Abort as abort:
                    found.append(abort)
                    return

        beater = threading.Thread(target=beat, name="demixer-lease", daemon=True)
        beater.start()
        try:
            result = call()
        finally:
            done.set()
            beater.join()
        if found:
            raise found[0]
        return result

    def through_outage(self, call: Callable[[], T], what: str) -> T:
        """``call()``, tried again while object storage is unavailable, for up to
        ``storage_outage_seconds``: the attempt keeps its lease (heartbeats go on; a cancel,
        stop or the job's time limit still end it) instead of spending one of its attempts on
        an outage."""
        settings = self.runner.services.settings
        deadline = time.monotonic() + settings.storage_outage_seconds
        wait = 0.5
        while True:
            try:
                return self.beating(call)
            except StorageUnavailable as exc:
                if time.monotonic() >= deadline:
                    raise
                log.warning("%s: %s; retrying in %.1f s", what, exc.message, wait)
                until = time.monotonic() + wait
                while time.monotonic() < until:
                    self.tick(stoppable=True)
                    time.sleep(min(_WAIT_SLICE, max(0.0, until - time.monotonic())))
                wait = min(wait * 2, 5.0)
