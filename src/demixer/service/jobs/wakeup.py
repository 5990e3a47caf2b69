"""Cross-process wakeups on PostgreSQL: ``LISTEN`` for queued jobs, wake the idle slots.

:meth:`~demixer.service.jobs.queue.Queue.submit` (and a retry's requeue) sends ``NOTIFY
demixer_jobs`` in the transaction that queues the job; PostgreSQL delivers it at commit, to
every listening session. Each worker process runs one :class:`JobListener`: a daemon thread
with its own autocommit connection (outside the pool: it is held open and idle for hours) that
listens and bumps the queue's wakeup generation (:meth:`~demixer.service.jobs.queue.Queue.wake`), so
an idle slot claims a job within milliseconds instead of at its next poll.

Polling every ``poll_seconds`` stays: a notification is a hint, never the only way a job is
found (a listener that is reconnecting misses what is sent meanwhile). When the connection
drops (server restart, ``pg_terminate_backend``, a dead network), the listener reconnects with
backoff and wakes the slots once it is back, for the jobs queued while it was away. SQLite
needs none of this: its workers share the API's process (``serve``) or poll.

:class:`Listener` is the part that does not depend on what a notification means: the API
processes' status streams use it too, on :data:`~demixer.service.jobs.queue.STATUS_CHANNEL`
(:mod:`demixer.api.statuswatch`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import psycopg
from sqlalchemy.engine import make_url

from demixer.service.jobs.queue import NOTIFY_CHANNEL, Queue

__all__ = ["APP_NAME", "JobListener", "Listener", "libpq_conninfo"]

log = logging.getLogger("demixer.wakeup")

#: The listening sessions' ``application_name`` (they show so in ``pg_stat_activity``).
APP_NAME = "demixer-listen"


def libpq_conninfo(url: str) -> str:
    """The libpq URI for a SQLAlchemy PostgreSQL URL (``postgresql+psycopg://…``)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class Listener:
    """Listens on a PostgreSQL ``NOTIFY`` channel and hands each notification's payload to
    ``on_notify``, in its own thread; a hint only: whoever it wakes also polls.

    Args:
        url: the database's SQLAlchemy URL (PostgreSQL).
        channel: the channel to ``LISTEN`` on.
        on_notify: called with each payload; also with None after each (re)connection, for
            what was sent while nobody listened. It must return quickly and not raise.
        what: what the notifications are about, for the log ("queued jobs").
        app_name: the session's ``application_name`` (``pg_stat_activity`` shows it).
        check_seconds: how often the idle connection is checked (a query), so a silently dead
            one is noticed; also the longest :meth:`stop` waits for the thread.
        max_backoff: the longest wait between reconnection attempts, in seconds.

    Attributes:
        connects: successful (re)connections so far (tests watch it).
        notifications: notifications received so far.
    """

    def __init__(
        self,
        url: str,
        channel: str,
        on_notify: Callable[[str | None], None],
        *,
        what: str,
        app_name: str = APP_NAME,
        check_seconds: float = 10.0,
        max_backoff: float = 10.0,
    ) -> None:
        self.conninfo = libpq_conninfo(url)
        self.channel = channel
        self.on_notify = on_notify
        self.what = what
        self.app_name = app_name
        self.check_seconds = check_seconds
        self.max_backoff = max_backoff
        self.connects = 0
        self.notifications = 0
        self.listening = threading.Event()  # set while a LISTEN connection is up
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None

    def start(self) -> None:
        """Start the listening thread."""
        self._thread = threading.Thread(target=self._run, name=self.app_name, daemon=True)
        self._thread.start()

    def stop(self, *, wait: bool = True) -> None:
        """Stop the thread; with ``wait``, return once it has (within about a second)."""
        self._stop.set()
        if wait and self._thread is not None:
            self._thread.join(timeout=self.check_seconds + 5)
            self._thread = None

    def backend_pid(self) -> int | None:
        """The listening session's server process id (None while disconnected)."""
        conn = self._conn
        return conn.info.backend_pid if conn is not None and not conn.closed else None

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                with psycopg.connect(
                    self.conninfo,
                    autocommit=True,
                    connect_timeout=5,
                    application_name=self.app_name,
                ) as conn:
                    conn.execute(f"LISTEN {self.channel}")
                    self._conn = conn
                    self.connects += 1
                    self.listening.set()
                    if self.connects > 1:
                        log.info("listening for %s again", self.what)
                    backoff = 0.5
                    self.on_notify(None)  # what was sent while nobody listened
                    self._listen(conn)
            except psycopg.Error as exc:
                if self._stop.is_set():
                    break
                log.warning(
                    "notifications of %s lost (%s); reconnecting in %.1f s (polling meanwhile)",
                    self.what,
                    str(exc).strip() or type(exc).__name__,
                    backoff,
                )
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff)
            finally:
                self._conn = None
                self.listening.clear()

    def _listen(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        checked = time.monotonic()
        while not self._stop.is_set():
            # Slices of a second, so that stop() is quick.
            for notify in conn.notifies(timeout=1.0):
                self.notifications += 1
                self.on_notify(notify.payload)
                if self._stop.is_set():
                    return
            if time.monotonic() - checked >= self.check_seconds:
                conn.execute("SELECT 1")  # raises on a dead connection
                checked = time.monotonic()


class JobListener(Listener):
    """Listens on :data:`~demixer.service.jobs.queue.NOTIFY_CHANNEL` and wakes ``queue``'s slots.

    Args:
        queue: the queue whose idle slots to wake (its database must be PostgreSQL).
        check_seconds, max_backoff: as :class:`Listener`'s.
    """

    def __init__(
        self, queue: Queue, *, check_seconds: float = 10.0, max_backoff: float = 10.0
    ) -> None:
        super().__init__(
            queue.db.url,
            NOTIFY_CHANNEL,
            lambda _payload: queue.wake(),
            what="queued jobs",
            check_seconds=check_seconds,
            max_backoff=max_backoff,
        )
        self.queue = queue
