"""Per-key limits: requests per minute and concurrent (queued or running) requests.

Requests are counted in fixed one-minute windows, one ``rate_counters`` row per key and window,
so every API process sharing the database shares the count. The counter is bumped with an
atomic upsert (``INSERT … ON CONFLICT DO UPDATE SET count = count + n``): two processes never
lose an increment. :func:`check_rate` counts one request in the table; an API process counts
most requests in memory first and adds them here at most a second later
(:mod:`demixer.service.accounts.ratecache`, which states the error that allows).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from demixer.errors import RateLimited, TooManyConcurrentJobs
from demixer.service.db import Database
from demixer.service.jobs.queue import IN_PROGRESS, IN_QUEUE
from demixer.service.schema import ApiKey, Job, RateCounter

__all__ = [
    "CONCURRENCY_RETRY_SECONDS",
    "WINDOW",
    "RateLimitExceeded",
    "RateState",
    "add_requests",
    "check_concurrency",
    "check_rate",
    "rate_state",
    "window_start",
]

WINDOW = timedelta(minutes=1)
# A queued request takes seconds to minutes; a client told to wait retries after this.
CONCURRENCY_RETRY_SECONDS = 5
_CHUNK = 500  # keys per statement (SQLite caps the bound parameters of one statement)


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


def _upsert(db: Database) -> Any:
    insert = postgresql.insert if db.dialect == "postgresql" else sqlite.insert
    stmt = insert(RateCounter)
    return stmt.on_conflict_do_update(
        index_elements=[RateCounter.key_id, RateCounter.window_start],
        set_={"count": RateCounter.count + stmt.excluded.count},
    )


def add_requests(db: Database, start: datetime, counts: Mapping[str, int]) -> dict[str, int]:
    """Add ``counts[key_id]`` requests of each key to the window beginning at ``start`` (one
    write transaction for all of them) and return each key's count in that window, everyone's
    requests included."""
    if not counts:
        return {}
    keys = list(counts)
    totals: dict[str, int] = {}
    with db.write() as s:
        rows = [{"key_id": k, "window_start": start, "count": n} for k, n in counts.items()]
        s.execute(_upsert(db), rows)
        for i in range(0, len(keys), _CHUNK):
            chunk = keys[i : i + _CHUNK]
            found = s.execute(
                select(RateCounter.key_id, RateCounter.count).where(
                    RateCounter.key_id.in_(chunk), RateCounter.window_start == start
                )
            )
            totals.update({key_id: int(count) for key_id, count in found})
            # Old windows are never read again: the key's own requests clear them.
            s.execute(
                delete(RateCounter).where(
                    RateCounter.key_id.in_(chunk), RateCounter.window_start < start
                )
            )
    return totals


def rate_state(limit: int, count: int, now: datetime) -> RateState:
    """Where a key stands with ``count`` requests in the window holding ``now``.

    Raises:
        RateLimitExceeded: ``count`` is over ``limit``; ``retry_after`` is the window's rest.
    """
    reset = max(1, math.ceil((window_start(now) + WINDOW - now).total_seconds()))
    state = RateState(limit=limit, remaining=max(0, limit - count), reset_seconds=reset)
    if count > limit:
        raise RateLimitExceeded(state)
    return state


def check_rate(db: Database, key_id: str, limit: int, *, earlier: int = 0) -> RateState:
    """Count one request of ``key_id`` in the shared table and say where it stands.

    Args:
        db: the shared database (its clock decides the window).
        key_id: the API key's id.
        limit: requests per minute; 0 or less means unlimited (nothing is counted).
        earlier: requests of this window counted elsewhere and not yet in the table (an API
            process's in-memory count), added with this one.

    Raises:
        RateLimited: over ``limit`` in this window; ``retry_after`` is the window's rest.
    """
    if limit <= 0:
        return RateState(limit=0, remaining=0, reset_seconds=0)
    now = db.clock()
    start = window_start(now)
    return rate_state(limit, add_requests(db, start, {key_id: earlier + 1})[key_id], now)


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

    Call it inside the write transaction that queues the request: two submits must not both
    see room for one. On SQLite that transaction holds the database's write lock; on
    PostgreSQL the key's row is locked here, until the transaction ends (with API processes
    side by side, 9 to 11 of 20 concurrent submits got in under a limit of 8 without it).
    """
    if limit <= 0 or key_id is None:
        return
    session.execute(select(ApiKey.id).where(ApiKey.id == key_id).with_for_update())
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
