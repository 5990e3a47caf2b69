"""Per-key request counts kept in memory by one API process, added to the shared table twice a
second, so that a request far from its key's limit costs no database write.

:func:`~demixer.service.accounts.limits.check_rate` writes the shared ``rate_counters`` row on every
request: exact across processes, but one write transaction per request. :class:`RateCache`
counts each key's requests of the current one-minute window here and adds them to that row every
``flush_seconds`` (one transaction for all keys), reading back the row's count, i.e. what every
process has added. A request is decided on ``shared + pending``: the row's count as last read
plus this process's requests not yet added.

- **Far from the limit** (``shared + pending + 1 <= limit - slack``): counted in memory.
- **Within** ``slack`` **of the limit**: counted in the table at once, with this process's
  pending ones (:func:`~demixer.service.accounts.limits.check_rate`), and decided on the row's
  count: as exact as before this cache existed.
- **At or over the limit** as this process knows it: refused from memory (the window's count
  only grows, so the refusal is never wrong), and still counted.

The bounds, as ``docs/deploy.md`` states them: another process sees this one's requests within
``2 × flush_seconds`` (1 s): added to the row within ``flush_seconds``, read back by the others
within ``flush_seconds``. One API process counts exactly. With N processes a key's count may
pass its limit by at most the requests the other processes answered for that key in the last
``2 × flush_seconds`` beyond ``slack``, and by at most those of the last ``flush_seconds``
once the key is in its slack: with each process answering r requests/s of one key, at most
(N - 1) · r · 1 s.
"""

from __future__ import annotations

import logging
import threading
import weakref
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import DBAPIError

from demixer.service.accounts.limits import (
    RateLimitExceeded,
    RateState,
    add_requests,
    check_rate,
    rate_state,
    window_start,
)
from demixer.service.db import Database

__all__ = ["FLUSH_SECONDS", "RateCache", "default_slack"]

log = logging.getLogger("demixer.limits")

#: Seconds between two additions of the in-memory counts to the shared table.
FLUSH_SECONDS = 0.5


def default_slack(limit: int) -> int:
    """Requests below the limit from which a key is counted in the table on every request:
    a tenth of the limit, at least 10 (so a limit of 10 or less is always counted there)."""
    return max(10, limit // 10)


@dataclass
class _Count:
    window: datetime  # the window these counts belong to
    shared: int = 0  # the table's count as last read
    pending: int = 0  # requests counted here and not yet added to the table
    adding: int = 0  # requests being added to the table now (still counted here meanwhile)

    def seen(self) -> int:
        return self.shared + self.adding + self.pending


class RateCache:
    """One process's view of every key's requests in the current window (module docstring).

    Args:
        db: the shared database (its clock decides the window).
        limit: requests per key per minute (0 or less: unlimited, nothing is counted).
        flush_seconds: how often the pending counts are added to the table.
        slack: see :func:`default_slack` (the default).
    """

    def __init__(
        self,
        db: Database,
        limit: int,
        *,
        flush_seconds: float = FLUSH_SECONDS,
        slack: int | None = None,
    ) -> None:
        self.db = db
        self.limit = limit
        self.flush_seconds = flush_seconds
        self.slack = default_slack(limit) if slack is None else slack
        self._counts: dict[str, _Count] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False  # the last flush failed

    def count(self, key_id: str) -> RateState | None:
        """Count one request of ``key_id`` in memory, when that is allowed (no I/O).

        Returns:
            where the key stands; None when the key is within ``slack`` of its limit: then
            call :meth:`count_shared` (it does the counting, with I/O).

        Raises:
            RateLimitExceeded: the key is over its limit.
        """
        if self.limit <= 0:
            return RateState(limit=0, remaining=0, reset_seconds=0)
        now = self.db.clock()
        start = window_start(now)
        with self._lock:
            entry = self._counts.get(key_id)
            if entry is None or entry.window != start:  # a new window starts from nothing
                entry = self._counts[key_id] = _Count(start)
            seen = entry.seen()
            if seen < self.limit and seen + 1 > self.limit - self.slack:
                return None
            entry.pending += 1
        self._ensure_flusher()
        return rate_state(self.limit, seen + 1, now)  # raises when over

    def count_shared(self, key_id: str) -> RateState:
        """Count one request of ``key_id`` in the shared table, with the ones counted here and
        not yet added, and decide on the table's count (blocking I/O).

        Raises:
            RateLimitExceeded: the key is over its limit.
        """
        start = window_start(self.db.clock())
        earlier = self._take(key_id, start)
        try:
            state = check_rate(self.db, key_id, self.limit, earlier=earlier)
        except RateLimitExceeded as exc:
            self._added(key_id, start, earlier, self.limit + 1)
            raise exc from None
        except BaseException:
            self._added(key_id, start, earlier, None)
            raise
        self._added(key_id, start, earlier, self.limit - state.remaining)
        return state

    def flush(self) -> None:
        """Add every key's pending requests to the table and read back what all processes
        have counted (blocking I/O). On a database error the counts stay pending."""
        start = window_start(self.db.clock())
        with self._lock:
            # Keys idle for a whole window are forgotten.
            for key_id in [k for k, e in self._counts.items() if e.window != start]:
                del self._counts[key_id]
            keys = [k for k, e in self._counts.items() if e.pending > 0]
        taken = {k: n for k in keys if (n := self._take(k, start)) > 0}
        if not taken:
            return
        try:
            totals = add_requests(self.db, start, taken)
        except DBAPIError as exc:
            # Once per outage, not twice a second: the counts wait for the next flush.
            (log.debug if self._failing else log.warning)(
                "adding request counts to the shared table failed (%s); kept", exc.orig
            )
            self._failing = True
            for key_id, n in taken.items():
                self._added(key_id, start, n, None)
            return
        self._failing = False
        for key_id, n in taken.items():
            self._added(key_id, start, n, totals.get(key_id))

    def close(self) -> None:
        """Stop the flusher thread and add what is pending."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=self.flush_seconds + 30)
        self.flush()

    # --- internals -----------------------------------------------------------------------------

    def _take(self, key_id: str, start: datetime) -> int:
        """Move ``key_id``'s pending requests of the window ``start`` to ``adding``."""
        with self._lock:
            entry = self._counts.get(key_id)
            if entry is None or entry.window != start:
                return 0
            n, entry.pending = entry.pending, 0
            entry.adding += n
            return n

    def _added(self, key_id: str, start: datetime, n: int, total: int | None) -> None:
        """``n`` requests taken by :meth:`_take` were added (the row now holds ``total``), or
        were not (``total`` None: they are pending again)."""
        with self._lock:
            entry = self._counts.get(key_id)
            if entry is None or entry.window != start:
                if total is None:
                    return
                entry = self._counts[key_id] = _Count(start)
            entry.adding = max(0, entry.adding - n)
            if total is None:
                entry.pending += n
            else:
                entry.shared = max(entry.shared, total)

    def _ensure_flusher(self) -> None:
        if self._thread is not None or self._stop.is_set():
            return
        with self._lock:
            if self._thread is not None:
                return
            # The thread holds the cache weakly: a cache nobody uses any more (an app that was
            # dropped without a shutdown) ends its thread.
            self._thread = threading.Thread(
                target=_flush_loop,
                args=(weakref.ref(self), self._stop, self.flush_seconds),
                name="demixer-rate-flush",
                daemon=True,
            )
            self._thread.start()


def _flush_loop(
    ref: weakref.ReferenceType[RateCache], stop: threading.Event, seconds: float
) -> None:
    while not stop.wait(seconds):
        cache = ref()
        if cache is None:
            return
        try:
            cache.flush()
        except Exception:  # never let the thread die: the next round tries again
            log.exception("flushing request counts failed")
        del cache
