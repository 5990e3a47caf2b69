"""Monthly audio-minute allowances per account, set by the operator (``demixer keys quota``).

An account without an allowance (no ``quotas`` row, the default) is unlimited: a submit reads
that one missing row and locks nothing. With one, a request that will really run (not a
result-cache hit) is refused with :class:`~demixer.errors.QuotaExceeded` when its input's
seconds do not fit in what is left of the calendar month (UTC):

    left = allowance - usage recorded this month - seconds held by queued or running jobs

Usage is :mod:`demixer.service.accounts.usage`'s (a job counts its whole input when it
completes; failed and cancelled ones count 0). A queued or running job holds its
``quota_holds`` row's seconds (the upload's probed duration) until it ends, so ten parallel
submits cannot all fit under the same remainder: :func:`check_quota` runs inside the write
transaction that queues the job, with the account's ``quotas`` row locked on PostgreSQL
(SQLite's write transaction holds the whole database). An ``audio_url``'s duration is unknown
at submit: the worker checks it with :func:`check_quota` once it has fetched and probed the
file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from demixer.errors import InvalidRequest, QuotaExceeded
from demixer.service.accounts.keys import KeyNotFound, check_minutes
from demixer.service.db import Database
from demixer.service.jobs.queue import IN_PROGRESS, IN_QUEUE
from demixer.service.schema import Account, Job, Quota, QuotaHold, StorageCap, UsageRecord

__all__ = [
    "QuotaState",
    "account_quotas",
    "account_storage_caps",
    "check_quota",
    "held",
    "hold",
    "month_bounds",
    "quota_state",
    "set_quota",
    "set_storage_cap",
]


@dataclass(frozen=True)
class QuotaState:
    """Where an account stands this month.

    Attributes:
        minutes: the allowance, audio minutes per calendar month (UTC).
        used_seconds: audio seconds of the jobs completed this month.
        held_seconds: audio seconds of its queued and running jobs.
        resets_at: the start of next month (UTC), when ``used_seconds`` starts again at 0.
    """

    minutes: int
    used_seconds: float
    held_seconds: float
    resets_at: datetime

    @property
    def left_seconds(self) -> float:
        """Audio seconds a new request may still use this month (never below 0)."""
        return max(0.0, self.minutes * 60.0 - self.used_seconds - self.held_seconds)

    @property
    def left_shown(self) -> float:
        """:attr:`left_seconds` as the API shows it: rounded down to the millisecond, never
        promising one that a submit would refuse."""
        return math.floor(self.left_seconds * 1000 + 1e-6) / 1000


def month_bounds(now: datetime) -> tuple[datetime, datetime]:
    """The calendar month (UTC) holding ``now``: ``(its first instant, next month's first)``."""
    now = now.astimezone(UTC)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if start.month == 12:
        return start, start.replace(year=start.year + 1, month=1)
    return start, start.replace(month=start.month + 1)


def set_quota(db: Database, account_id: str, minutes: int | None) -> None:
    """Give ``account_id`` an allowance of ``minutes`` audio minutes a month (None: unlimited).

    Raises:
        KeyNotFound: no such account.
        InvalidRequest: ``minutes`` below 0 or over
            :data:`~demixer.service.accounts.keys.MAX_MINUTES`.
    """
    check_minutes(minutes)
    _set_own(db, account_id, Quota, "monthly_minutes", minutes)


def set_storage_cap(db: Database, account_id: str, max_bytes: int | None) -> None:
    """Give ``account_id`` a cap of its own on the bytes its files hold at once (0: no cap),
    in place of ``DEMIXER_MAX_ACCOUNT_STORAGE_BYTES``; None: the setting's again. In force at
    once; files it holds already are kept (only new uploads are refused past it).

    Raises:
        KeyNotFound: no such account.
        InvalidRequest: ``max_bytes`` below 0, or past what a 64-bit size holds.
    """
    if max_bytes is not None and not 0 <= max_bytes < 1 << 63:
        raise InvalidRequest(
            f"a storage cap is 0 (none) to {(1 << 63) - 1} bytes (got {max_bytes})"
        )
    _set_own(db, account_id, StorageCap, "max_bytes", max_bytes)


def _set_own(
    db: Database,
    account_id: str,
    table: type[Quota] | type[StorageCap],
    field: str,
    value: int | None,
) -> None:
    """``account_id``'s own row of ``table`` (an allowance or a cap) with ``field`` = ``value``;
    None removes the row, so the account has the setting's again.

    Raises:
        KeyNotFound: no such account.
    """
    with db.write() as s:
        if s.get(Account, account_id) is None:
            raise KeyNotFound(f"no account {account_id}")
        row = s.get(table, account_id)
        if value is None:
            if row is not None:
                s.delete(row)
        elif row is None:
            s.add(table(account_id=account_id, **{field: value}))
        else:
            setattr(row, field, value)


def quota_state(
    session: Session, account_id: str, now: datetime, *, lock: bool = False
) -> QuotaState | None:
    """Where ``account_id`` stands in the month holding ``now`` (None: no allowance).

    ``lock``: lock the account's allowance until the transaction ends (PostgreSQL), so that
    two transactions checking the same account take turns.
    """
    query = select(Quota.monthly_minutes).where(Quota.account_id == account_id)
    minutes = session.execute(query.with_for_update() if lock else query).scalar_one_or_none()
    if minutes is None:
        return None
    start, end = month_bounds(now)
    used = session.execute(
        select(func.coalesce(func.sum(UsageRecord.quantity), 0.0)).where(
            UsageRecord.account_id == account_id,
            UsageRecord.recorded_at >= start,
            UsageRecord.recorded_at < end,
        )
    ).scalar_one()
    held = session.execute(
        select(func.coalesce(func.sum(QuotaHold.seconds), 0.0))
        .join(Job, Job.id == QuotaHold.job_id)
        .where(QuotaHold.account_id == account_id, Job.status.in_((IN_QUEUE, IN_PROGRESS)))
    ).scalar_one()
    return QuotaState(int(minutes), float(used), float(held or 0.0), end)


def account_quotas(db: Database) -> dict[str, QuotaState]:
    """Where each account with an allowance stands this month (``keys list``)."""
    now = db.clock()
    with db.read() as s:
        ids = s.execute(select(Quota.account_id)).scalars().all()
        states = {account: quota_state(s, account, now) for account in ids}
    return {account: state for account, state in states.items() if state is not None}


def account_storage_caps(db: Database) -> dict[str, int]:
    """The accounts with a storage cap of their own: account id -> bytes (0: no cap)."""
    with db.read() as s:
        rows = s.execute(select(StorageCap.account_id, StorageCap.max_bytes)).all()
    return {account: int(max_bytes) for account, max_bytes in rows}


def check_quota(session: Session, account_id: str, seconds: float | None, now: datetime) -> None:
    """Refuse ``seconds`` more audio for ``account_id`` when they do not fit this month.

    Call it inside the write transaction that makes the job hold them (queues it, or records
    an ``audio_url``'s measured duration), and :func:`hold` them in it; a job whose seconds
    are checked must not hold them yet.

    Args:
        seconds: the input's duration; None when it is not known yet (an ``audio_url`` at
            submit): refused only when nothing at all is left.

    Raises:
        QuotaExceeded: less than ``seconds`` (or nothing) is left of the allowance.
    """
    state = quota_state(session, account_id, now, lock=True)
    if state is None:
        return  # unlimited
    left = state.left_seconds
    if left <= 0 or (seconds is not None and seconds > left):
        reset = state.resets_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        asked = "" if seconds is None else f", and this input is {_minutes(seconds, up=True)}"
        raise QuotaExceeded(
            f"this account's allowance of {state.minutes} audio minutes a month has "
            f"{_minutes(left)} minutes left ({_minutes(state.held_seconds, up=True)} held by "
            f"its queued and running requests){asked} minutes; the allowance resets at {reset}"
        )


def hold(session: Session, job_id: str, account_id: str, seconds: float) -> None:
    """Make ``job_id`` hold ``seconds`` of its account's allowance while it is queued or
    running (whether or not the account has one now: one set meanwhile counts it too)."""
    session.add(QuotaHold(job_id=job_id, account_id=account_id, seconds=seconds))


def held(session: Session, job_id: str) -> bool:
    """Whether ``job_id`` holds its seconds already (measured by an earlier attempt)."""
    return session.get(QuotaHold, job_id) is not None


def _minutes(seconds: float, *, up: bool = False) -> str:
    """Seconds as minutes with 2 decimals: what is left rounded down, what is asked or held
    rounded up (never promising more than there is)."""
    hundredths = seconds * 100 / 60
    whole = math.ceil(hundredths - 1e-9) if up else math.floor(hundredths + 1e-9)
    return f"{whole / 100:.2f}"
