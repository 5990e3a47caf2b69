"""One reader of job statuses for every server-sent-event stream of a process.

Each ``GET …/status/stream`` used to read its job every ``interval`` seconds: a thousand open
streams, a thousand reads per interval. :class:`StatusWatcher` reads every watched job at once,
in a fixed number of queries whatever the number of streams or jobs (the rows; while some are
queued, their positions and the live workers; their webhooks' latest deliveries; the logs
asked for), on SQLite and on PostgreSQL alike, and hands each stream its job's status. It reads
twice per shortest interval of the open streams (every 0.5 s for ``interval=1``, the shortest;
every 1 s for the default 2 s; at most every 5 s). A stream still answers a frame every
``interval`` (with a status read since its last frame) and at once whenever the job's state
changes: no stream misses a state the watcher saw, whatever its interval.

A watched job that starts, goes back to the queue or ends in this process (``serve``'s
embedded workers: the queue's ``status_listeners``) is read at once, not at the next round: its
COMPLETED frame went out up to half a second after the job ended, a tenth of a 3-minute song's
whole warm job (measured: benchmarks/RESULTS.md, "Service overhead"). On PostgreSQL so is a job
that another process changes (a separate ``demixer worker`` claims or ends it): the queue sends
``NOTIFY`` on :data:`~demixer.service.jobs.queue.STATUS_CHANNEL` with the change (one per
attempt's start and end, none per heartbeat), and the watcher's listener
(:class:`~demixer.service.jobs.wakeup.Listener`, one connection per API process, opened with
the first stream) wakes the reads. A notification is a hint: the rounds go on, and while the
listener is reconnecting those jobs are seen at the next round, as on SQLite, whose workers
outside this process are only polled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import weakref
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

import anyio
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from demixer.api import jobs, lanes
from demixer.api.schemas import RequestStatus
from demixer.service.context import Services
from demixer.service.db import is_unavailable
from demixer.service.delivery.outbox import latest_deliveries
from demixer.service.jobs.queue import IN_QUEUE, STATUS_CHANNEL
from demixer.service.schema import Job, JobLog
from demixer.service.worker.registry import live_models

if TYPE_CHECKING:
    from demixer.service.jobs.wakeup import Listener

__all__ = [
    "FAILED",
    "GONE",
    "LISTEN_APP_NAME",
    "MAX_POLL_SECONDS",
    "POLL_SECONDS",
    "STOPPING",
    "UNAVAILABLE",
    "StatusWatcher",
    "Watch",
]

log = logging.getLogger("demixer.api")

#: The listening session's ``application_name`` (``pg_stat_activity``).
LISTEN_APP_NAME = "demixer-listen-status"
#: Seconds between two reads of the watched jobs at the least (half the shortest interval),
#: and at the most.
POLL_SECONDS, MAX_POLL_SECONDS = 0.5, 5.0
GONE = "gone"
"""What a watch hands over when its job was deleted."""
UNAVAILABLE = "unavailable"
"""What a watch hands over when the database could not be read (the next read may work)."""
FAILED = "failed"
"""What a watch hands over when the read failed otherwise (a bug: the log has it)."""
STOPPING = "stopping"
"""What a watch hands over when the server is stopping (:meth:`StatusWatcher.close`)."""

Update = RequestStatus | str


@dataclass(eq=False)
class Watch:
    """One stream's view of its job: every state change, and the latest status read."""

    job_id: str
    logs: bool
    interval: float  # seconds between the stream's periodic frames
    latest: Update
    read_at: float = -math.inf  # when the read of ``latest`` began (the event loop's clock)
    changes: asyncio.Queue[Update] = field(default_factory=asyncio.Queue)
    pushed: asyncio.Event = field(default_factory=asyncio.Event)

    def push(self, update: Update, read_at: float) -> None:
        """The watcher's read of the job begun at ``read_at`` (a status, :data:`GONE` or
        :data:`UNAVAILABLE`)."""
        before, self.latest, self.read_at = self.latest, update, read_at
        state = update.status if isinstance(update, RequestStatus) else update
        if state != (before.status if isinstance(before, RequestStatus) else before):
            self.changes.put_nowait(update)
        self.pushed.set()

    async def next(self) -> Update:
        """The next change of state, at once; else, once ``interval`` seconds have passed, the
        status read next (begun after that: as fresh as a read made then)."""
        due = anyio.current_time() + self.interval
        with anyio.move_on_after(self.interval):
            return await self.changes.get()
        while self.read_at < due and self.changes.empty():
            self.pushed.clear()
            await self.pushed.wait()
        return self.changes.get_nowait() if not self.changes.empty() else self.latest


@dataclass(eq=False)
class _Loop:
    watches: set[Watch] = field(default_factory=set)
    task: asyncio.Task[None] | None = None
    # A watched job's status changed (it started, went back to the queue or ended): read now.
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class StatusWatcher:
    """Reads every watched job's status twice per shortest interval, at least every
    ``poll_seconds`` apart (module docstring).

    Args:
        services: the process's services.
        poll_seconds: the shortest time between two reads (:data:`POLL_SECONDS`).
        max_poll_seconds: the longest (:data:`MAX_POLL_SECONDS`).

    Attributes:
        reads: rounds of reads so far (each a fixed number of queries).
    """

    def __init__(
        self,
        services: Services,
        *,
        poll_seconds: float = POLL_SECONDS,
        max_poll_seconds: float = MAX_POLL_SECONDS,
    ) -> None:
        self.services = services
        self.poll_seconds = poll_seconds
        self.max_poll_seconds = max_poll_seconds
        self.reads = 0
        self.closing = False
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Loop] = (
            weakref.WeakKeyDictionary()
        )
        # Jobs that other processes start or end, on PostgreSQL (module docstring): started with the
        # first stream, so an API process nobody streams from holds no connection for it.
        self.listener: Listener | None = None

    @asynccontextmanager
    async def watch(
        self, first: RequestStatus, logs: bool, interval: float
    ) -> AsyncIterator[Watch]:
        """Watch the job whose status (just read) is ``first`` for a stream with frames every
        ``interval`` seconds, while the context lasts."""
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            state = self._loops[loop] = _Loop()
        watch = Watch(first.request_id, logs, interval, first)
        if self.closing:
            watch.push(STOPPING, anyio.current_time())
        elif self.listener is None and self.services.db.dialect == "postgresql":
            # Here, not at the top: psycopg is imported only by processes that use it.
            from demixer.service.jobs.wakeup import Listener

            self.listener = Listener(
                self.services.db.url,
                STATUS_CHANNEL,
                self._changed_elsewhere,
                what="job status changes",
                app_name=LISTEN_APP_NAME,
            )
            self.listener.start()
        state.watches.add(watch)
        if state.task is None:
            state.task = loop.create_task(self._run(state))
        try:
            yield watch
        finally:
            state.watches.discard(watch)

    def close(self) -> None:
        """The server is stopping: every stream ends now, and any opened later at once (an
        open stream lasts until its job ends, and the server waits for its connections to
        close: it did not stop while a page watched a queued job). Safe to call from a signal
        handler, or any thread."""
        self.closing = True
        self.stop_listening()
        for loop, state in list(self._loops.items()):
            # A loop that has closed (a test client's, one per request) watches nothing, and
            # raised here: the close stopped before telling the loops after it.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._stop_watches, loop, state)

    def stop_listening(self) -> None:
        """Close the listener's connection (the application's lifespan has ended); the next
        stream opens another."""
        listener, self.listener = self.listener, None
        if listener is not None:
            listener.stop(wait=False)  # its thread ends within a second

    def _changed_elsewhere(self, job_id: str | None) -> None:
        """In the listener's thread: ``job_id``'s status changed (maybe in another process);
        None: the listener has just (re)connected, and jobs may have changed unheard
        meanwhile."""
        for loop, state in list(self._loops.items()):
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody watches
                if job_id is None:
                    loop.call_soon_threadsafe(state.changed.set)
                else:
                    loop.call_soon_threadsafe(self._job_changed, state, job_id)

    @staticmethod
    def _stop_watches(loop: asyncio.AbstractEventLoop, state: _Loop) -> None:
        for watch in list(state.watches):
            watch.push(STOPPING, loop.time())

    @staticmethod
    def _job_changed(state: _Loop, job_id: str) -> None:
        """In the loop's thread: ``job_id``'s status changed; read now if it is watched."""
        if any(watch.job_id == job_id for watch in state.watches):
            state.changed.set()

    async def _run(self, state: _Loop) -> None:
        loop = asyncio.get_running_loop()

        def changed(job_id: str) -> None:  # in the thread that changed the job
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody watches
                loop.call_soon_threadsafe(self._job_changed, state, job_id)

        listeners = self.services.queue.status_listeners
        listeners.append(changed)
        try:
            while state.watches:
                shortest = min((w.interval for w in state.watches), default=0.0)
                with anyio.move_on_after(
                    min(max(shortest / 2, self.poll_seconds), self.max_poll_seconds)
                ):
                    await state.changed.wait()
                state.changed.clear()
                watches = list(state.watches)
                if not watches:
                    break
                read_at = anyio.current_time()
                wanted = {(w.job_id, w.logs) for w in watches}
                try:
                    self.reads += 1
                    found = await lanes.read(self.services, partial(self.read, wanted))
                except DBAPIError as exc:
                    if is_unavailable(exc):  # each stream says so, and the next round reads
                        for watch in watches:
                            watch.push(UNAVAILABLE, read_at)
                        continue
                    log.exception("reading the watched jobs failed")
                    for watch in watches:  # a bug: the streams end (as a failed read ended one)
                        watch.push(FAILED, read_at)
                    continue
                except Exception:
                    log.exception("reading the watched jobs failed")
                    for watch in watches:
                        watch.push(FAILED, read_at)
                    continue
                for watch in watches:
                    watch.push(found.get((watch.job_id, watch.logs), GONE), read_at)
        finally:
            listeners.remove(changed)
            state.task = None

    def read(self, wanted: Collection[tuple[str, bool]]) -> dict[tuple[str, bool], RequestStatus]:
        """The statuses of ``wanted`` (job id, with logs), in one read transaction of at most
        five queries (blocking); deleted jobs are left out."""
        services = self.services
        ids = sorted({job_id for job_id, _ in wanted})
        with services.db.read() as s:
            rows: dict[str, Job] = {}
            for i in range(0, len(ids), _CHUNK):
                chunk = ids[i : i + _CHUNK]
                for row in s.execute(select(Job.__table__).where(Job.id.in_(chunk))):
                    rows[row.id] = row  # type: ignore[assignment]  # a read-only row
            queued = [j for j in rows.values() if j.status == IN_QUEUE]
            positions = services.queue.positions(s, [j.id for j in queued])
            live = live_models(s, services.settings, services.db.clock()) if queued else None
            hooked = [j.id for j in rows.values() if (j.params or {}).get("webhook")]
            deliveries = latest_deliveries(s, hooked, chunk=_CHUNK)
            logged = sorted({job_id for job_id, logs in wanted if logs and job_id in rows})
            lines: dict[str, list[JobLog]] = {job_id: [] for job_id in logged}
            if logged:
                query = select(JobLog).where(JobLog.job_id.in_(logged)).order_by(JobLog.id)
                for line in s.execute(query).scalars():
                    lines[line.job_id].append(line)
        out: dict[tuple[str, bool], RequestStatus] = {}
        for job_id, logs in wanted:
            job = rows.get(job_id)
            if job is None:
                continue
            found = jobs.Extras(
                position=positions.get(job_id),
                live=live,
                delivery=deliveries.get(job_id),
                lines=lines.get(job_id) if logs else None,
            )
            out[(job_id, logs)] = jobs.build_status(services, job, logs, found)
        return out


_CHUNK = 500  # ids per statement (SQLite caps the bound parameters of one statement)
