"""Per-key limits: requests per minute and concurrent (queued or running) requests.

Requests are counted in fixed one-minute windows, one ``rate_counters`` row per key and window,
so every API process sharing the database shares the count. The counter is bumped with an
atomic upsert (``INSERT … ON CONFLICT DO UPDATE SET count = count + 1``): two processes never
lose an increment, and no process keeps state of its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from demixer.errors import RateLimited, TooManyConcurrentJobs
from demixer.service.db import Database
from demixer.service.jobs.queue import IN_PROGRESS, IN_QUEUE
from demixer.service.schema import Job, RateCounter

__all__ = [
    "CONCURRENCY_RETRY_SECONDS",
    "WINDOW",
    "RateLimitExceeded",
    "RateState",
    "check_concurrency",
    "check_rate",
    "window_start",
]

WINDOW = timedelta(minutes=1)
# A queued request takes seconds to minutes; a client told to wait retries after this.
CONCURRENCY_RETRY_SECONDS = 5


@dataclass(frozen=True)
class RateState:
    """Where a key stands in the current window (the ``RateLimit-*`` headers).

    Attributes:
        limit: requests allowed per window.
        remaining: requests left in this window (0 when over).
        reset_seconds: whole seconds until the window ends (at least 1).
    """

    limit: int
    remaining: int
    reset_seconds: int

    def headers(self) -> dict[str, str]:
        """``RateLimit-Limit``, ``RateLimit-Remaining``, ``RateLimit-Reset``."""
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_seconds),
        }


def window_start(now: datetime) -> datetime:
    """The start of the one-minute window holding ``now`` (UTC, whole minute)."""
    return now.replace(second=0, microsecond=0)


def _upsert(db: Database, key_id: str, start: datetime) -> object:
    insert = postgresql.insert if db.dialect == "postgresql" else sqlite.insert
    stmt = insert(RateCounter).values(key_id=key_id, window_start=start, count=1)
    return stmt.on_conflict_do_update(
        index_elements=[RateCounter.key_id, RateCounter.window_start],
        set_={"count": RateCounter.count + 1},
    )


def check_rate(db: Database, key_id: str, limit: int) -> RateState:
    """Count one request of ``key_id`` and say where it stands.

    Args:
        db: the shared database (its clock decides the window).
        key_id: the API key's id.
        limit: requests per minute; 0 or less means unlimited (nothing is counted).

    Raises:
        RateLimited: over ``limit`` in this window; ``retry_after`` is the window's rest.
    """
    if limit <= 0:
        return RateState(limit=0, remaining=0, reset_seconds=0)
    now = db.clock()
    start = window_start(now)
    with db.write() as s:
        s.execute(_upsert(db, key_id, start))  # type: ignore[call-overload]
        count = s.execute(
            select(RateCounter.count).where(
                RateCounter.key_id == key_id, RateCounter.window_start == start
            )
        ).scalar_one()
        # Old windows are never read again: the key's own request clears them.
        s.execute(
            delete(RateCounter).where(
                RateCounter.key_id == key_id, RateCounter.window_start < start
            )
        )
    reset = max(1, math.ceil((start + WINDOW - now).total_seconds()))
    state = RateState(limit=limit, remaining=max(0, limit - count), reset_seconds=reset)
    if count > limit:
        raise RateLimitExceeded(state)
    return state


class RateLimitExceeded(RateLimited):
    """:class:`RateLimited` carrying the window's state, so the 429 has the headers too."""

    def __init__(self, state: RateState) -> None:
        super().__init__(
            f"over this key's limit of {state.limit} requests per minute; "
            f"retry in {state.reset_seconds} s",
            retry_after=state.reset_seconds,
        )
        self.state = state


def check_concurrency(session: Session, key_id: str | None, limit: int) -> None:
    """Refuse a new request while ``key_id`` has ``limit`` queued or running ones (0: no limit).

    Call it inside the write transaction that queues the request (on SQLite that transaction
    holds the write lock, so two submits cannot both see room for one).
    """
    if limit <= 0 or key_id is None:
        return
    active = session.execute(
        select(func.count())
        .select_from(Job)
        .where(Job.key_id == key_id, Job.status.in_((IN_QUEUE, IN_PROGRESS)))
    ).scalar_one()
    if active >= limit:
        raise TooManyConcurrentJobs(
            f"this key has {active} requests queued or running, its limit; retry once one finishes",
            retry_after=CONCURRENCY_RETRY_SECONDS,
        )
