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
"""

from __future__ import annotations

import logging
import threading
import time

import psycopg
from sqlalchemy.engine import make_url

from demixer.service.jobs.queue import NOTIFY_CHANNEL, Queue

__all__ = ["APP_NAME", "JobListener", "libpq_conninfo"]

log = logging.getLogger("demixer.wakeup")

#: The listening sessions' ``application_name`` (they show so in ``pg_stat_activity``).
APP_NAME = "demixer-listen"


def libpq_conninfo(url: str) -> str:
    """The libpq URI for a SQLAlchemy PostgreSQL URL (``postgresql+psycopg://…``)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class JobListener:
    """Listens on :data:`~demixer.service.jobs.queue.NOTIFY_CHANNEL` and wakes ``queue``'s slots.

    Args:
        queue: the queue whose idle slots to wake (its database must be PostgreSQL).
        check_seconds: how often the idle connection is checked (a query), so a silently dead
            one is noticed; also the longest :meth:`stop` waits for the thread.
        max_backoff: the longest wait between reconnection attempts, in seconds.

    Attributes:
        connects: successful (re)connections so far (tests watch it).
        notifications: notifications received so far.
    """

    def __init__(
        self, queue: Queue, *, check_seconds: float = 10.0, max_backoff: float = 10.0
    ) -> None:
        self.queue = queue
        self.conninfo = libpq_conninfo(queue.db.url)
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
        self._thread = threading.Thread(target=self._run, name="demixer-listen", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (returns within about a second)."""
        self._stop.set()
        if self._thread is not None:
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
                    self.conninfo, autocommit=True, connect_timeout=5, application_name=APP_NAME
                ) as conn:
                    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self._conn = conn
                    self.connects += 1
                    self.listening.set()
                    if self.connects > 1:
                        log.info("listening for queued jobs again")
                    backoff = 0.5
                    self.queue.wake()  # jobs queued while nobody listened
                    self._listen(conn)
            except psycopg.Error as exc:
                if self._stop.is_set():
                    break
                log.warning(
                    "job notifications lost (%s); reconnecting in %.1f s (polling meanwhile)",
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
            for _notify in conn.notifies(timeout=1.0):
                self.notifications += 1
                self.queue.wake()
                if self._stop.is_set():
                    return
            if time.monotonic() - checked >= self.check_seconds:
                conn.execute("SELECT 1")  # raises on a dead connection
                checked = time.monotonic()
