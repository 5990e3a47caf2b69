"""The dispatcher: sends the outbox's webhook deliveries after their job's transaction, retried.

The rows are written by :mod:`demixer.service.delivery.outbox` with the job's final transition.
A :class:`Dispatcher` (its own thread, never a worker) claims due rows the way workers claim
jobs (a conditional UPDATE under a lease; ``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so a
delivery is never sent by two dispatchers at once, and a row claimed by a dispatcher that died
is claimed again when its lease expires. Sends run on a small thread pool: a receiver that
takes the whole timeout delays nothing else, and once one account's sends hold half of a
dispatcher's slots (counted over all dispatchers), other accounts' due events go first, so
one account's receiver, however slow, never holds up everyone else's events. Outcomes:

- any 2xx: ``delivered``;
- 410 Gone: ``failed`` at once (the receiver says it wants no more);
- anything else (other statuses, redirects, which are never followed, timeouts, refused or
  unreachable addresses): retried after :func:`backoff`, ``failed`` after ``max_attempts``.
  A 429 or 503 with ``Retry-After`` is retried no sooner than it asks, but no later than the
  schedule's :func:`horizon` after the event was written.

An attempt is counted when it is claimed. A last attempt whose dispatcher stopped before
recording it is sent once more when its lease expires (at least once), and only once.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import and_, bindparam, case, func, or_, select, update
from sqlalchemy.orm import aliased

from demixer.retry_after import retry_after
from demixer.service.context import Services
from demixer.service.db import OutageNotice, is_unavailable, retry_unavailable, rows_changed
from demixer.service.delivery.outbox import DeliveryState
from demixer.service.schema import Delivery, Job
from demixer.service.urlguard import (
    WEBHOOKS_OFF,
    GuardedTransport,
    UrlRefused,
    check_url,
    parse_allowlist,
    time_limit,
)
from demixer.webhooks import sign

__all__ = ["CAP_STEPS", "FACTOR", "DeliveryClaim", "Dispatcher", "backoff", "horizon"]

log = logging.getLogger("demixer.webhooks")

#: Whether any delivery is due at ``now`` (leased ones too: the claim then finds it taken).
_ANY_DUE = (
    select(Delivery.id)
    .where(Delivery.status == DeliveryState.PENDING, Delivery.next_attempt_at <= bindparam("now"))
    .limit(1)
)

#: Retry schedule: the wait after attempt k (1-based) is drawn uniformly from the upper half of
#: ``min(base * FACTOR**(k-1), base * CAP_STEPS)`` ("equal jitter"). With the default base of
#: 60 s the steps are 1 m, 4 m, 16 m, 64 m, 4 h 16 m, 12 h, 12 h: the 8 attempts span 15 to
#: 30 h, about a day. Full jitter (uniform from 0) could collapse the whole schedule into a
#: few minutes of one outage; the upper half still spreads a herd of retries apart.
FACTOR = 4.0
CAP_STEPS = 720.0  # the longest wait, in units of base: 12 h at base 60 s


def _step(attempt: int, base: float) -> float:
    """The longest wait, in seconds, after failed attempt ``attempt`` (1-based)."""
    return min(base * FACTOR ** max(0, attempt - 1), base * CAP_STEPS)


def backoff(attempt: int, base: float, rng: random.Random | None = None) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based) before the next one."""
    step = _step(attempt, base)
    return step / 2 + (rng or random).uniform(0.0, step / 2)


def horizon(max_attempts: int, base: float) -> float:
    """Seconds from an event's first attempt to its last at the latest by the schedule (every
    wait its whole step): about 30 h for 8 attempts at a 60 s base. A receiver's Retry-After
    moves no attempt past it."""
    return sum(_step(k, base) for k in range(1, max_attempts))


def _readable(raw: bytes) -> str:
    """A receiver's answer as one line of text for ``last_error``: control characters left
    out, line breaks and tabs made spaces. PostgreSQL refuses a NUL in text, and an error page
    in UTF-16 (or any binary answer) is full of them: its attempt could not be recorded."""
    text = raw.decode("utf-8", "replace")
    kept = "".join(c if c.isprintable() else " " if c.isspace() else "" for c in text)
    return " ".join(kept.split())


# --- the dispatcher -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryClaim:
    """A delivery a dispatcher now holds. ``attempt`` is 1 for the first send; ``created_at``:
    when the event was written (the schedule's horizon counts from it)."""

    id: str
    job_id: str
    url: str
    secret: str
    payload: dict[str, Any]
    attempt: int
    max_attempts: int
    created_at: datetime


@dataclass(frozen=True)
class _Outcome:
    status_code: int | None
    error: str | None
    retry_after: float | None = None  # seconds a 429 or 503 asked to wait
    final: bool = False  # no attempt is to follow (its sending was turned off)

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class Dispatcher:
    """Sends due webhook deliveries until stopped; many may share one database.

    Args:
        services: the shared services (database, settings).
        concurrency: sends in flight at once (threads).
        backoff_base: seconds of the first retry step (default ``webhook_backoff_seconds``).
        poll_seconds: how long to sleep when nothing is due.
        dispatcher_id: the lease owner's name (default: unique per instance).
        transport: an httpx transport (default: :class:`~demixer.service.urlguard.
            GuardedTransport`, which connects only to addresses that pass the URL guard).
    """

    def __init__(
        self,
        services: Services,
        *,
        concurrency: int = 8,
        backoff_base: float | None = None,
        poll_seconds: float | None = None,
        dispatcher_id: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        settings = services.settings
        self.services = services
        self.concurrency = max(1, concurrency)
        # Sends one account may have in flight (over every dispatcher: the leases count them)
        # before other accounts' due events go first: half a dispatcher's slots.
        self.per_account = max(1, self.concurrency // 2)
        self.timeout = settings.webhook_timeout_seconds
        self.backoff_base = (
            settings.webhook_backoff_seconds if backoff_base is None else backoff_base
        )
        self.poll = settings.poll_seconds if poll_seconds is None else poll_seconds
        self.id = dispatcher_id or f"dispatch-{uuid.uuid4().hex[:12]}"
        # Longer than any one send can take (the whole send is bounded by the timeout), so a
        # live dispatcher never loses a lease to another mid-send.
        self.lease = timedelta(seconds=4 * self.timeout + 30)
        self.allowlist = parse_allowlist(settings.url_allowlist)
        self._transport = transport

    # --- claim and record (each one short write transaction) -------------------------------

    def claim(self) -> DeliveryClaim | None:
        """Take the next due delivery (its attempt counted now), or None."""
        db = self.services.db
        now = db.clock()
        # Most polls find nothing due: one indexed read answers them, outside any transaction.
        # Opening the claim's write transaction for each (a write lock on SQLite, where the
        # API's requests wait for it) and building its queries cost an idle server most of
        # its CPU at each poll.
        with db.snapshot() as conn:
            if conn.execute(_ANY_DUE, {"now": now}).first() is None:
                return None
        free = or_(Delivery.lease_owner.is_(None), Delivery.lease_expires_at < now)
        due = and_(Delivery.status == DeliveryState.PENDING, Delivery.next_attempt_at <= now, free)
        with db.write() as s:
            # A dispatcher died during a last attempt, which may never have left: it is sent
            # once more (attempts is then max_attempts + 1). Only a re-send cut off as well
            # ends the delivery, so an event that stops every dispatcher is not retried forever.
            s.execute(
                update(Delivery)
                .where(due, Delivery.attempts > Delivery.max_attempts)
                .values(
                    status=DeliveryState.FAILED,
                    lease_owner=None,
                    last_error="the dispatcher sending the last attempt stopped responding",
                    updated_at=now,
                )
            )
            # Accounts whose sends already hold their share of the slots go after the others:
            # one account's events to a receiver that never answers held every slot for the
            # whole timeout, and every other account's events waited behind them. Alone, an
            # account still has every slot.
            sent, owner = aliased(Delivery), aliased(Job)  # not the outer query's rows
            busy = (
                select(owner.account_id)
                .join(sent, sent.job_id == owner.id)
                .where(
                    sent.status == DeliveryState.PENDING,
                    sent.lease_owner.is_not(None),
                    sent.lease_expires_at >= now,
                )
                .group_by(owner.account_id)
                .having(func.count() >= self.per_account)
            )
            query = (
                select(Delivery.id)
                .join(Job, Job.id == Delivery.job_id)
                .where(due)
                .order_by(
                    case((Job.account_id.in_(busy), 1), else_=0),
                    Delivery.next_attempt_at,
                    Delivery.id,
                )
                .limit(1)
            )
            if db.dialect == "postgresql":
                query = query.with_for_update(skip_locked=True, of=Delivery)
            delivery_id = s.execute(query).scalar_one_or_none()
            if delivery_id is None:
                return None
            taken = s.execute(
                update(Delivery)
                .where(Delivery.id == delivery_id, due)
                .values(
                    lease_owner=self.id,
                    lease_expires_at=now + self.lease,
                    attempts=Delivery.attempts + 1,
                    updated_at=now,
                )
            )
            if rows_changed(taken) != 1:
                return None
            row = s.execute(select(Delivery).where(Delivery.id == delivery_id)).scalar_one()
            return DeliveryClaim(
                row.id,
                row.job_id,
                row.url,
                row.secret,
                dict(row.payload),
                row.attempts,
                row.max_attempts,
                row.created_at,
            )

    def record(self, claim: DeliveryClaim, outcome: _Outcome) -> str:
        """Write an attempt's outcome (fenced on the lease); returns the delivery's status."""
        db = self.services.db
        now = db.clock()
        values: dict[str, Any] = {
            "lease_owner": None,
            "lease_expires_at": None,
            "last_status_code": outcome.status_code,
            "last_error": outcome.error,
            "updated_at": now,
        }
        if outcome.ok:
            values.update(status=DeliveryState.DELIVERED, delivered_at=now)
        elif outcome.final:
            values.update(status=DeliveryState.FAILED)
        elif outcome.status_code == 410:  # the receiver asks for no more
            values.update(
                status=DeliveryState.FAILED, last_error=f"{outcome.error} (no more retries)"
            )
        elif claim.attempt >= claim.max_attempts:
            values.update(status=DeliveryState.FAILED)
        else:
            wait = backoff(claim.attempt, self.backoff_base)
            if outcome.retry_after is not None:
                # The receiver's own time to come back, if later; never past the schedule's
                # horizon: "Retry-After: 999999999" (or a date years ahead) would park the
                # delivery, pending, for good.
                span = horizon(claim.max_attempts, self.backoff_base)
                latest = (claim.created_at + timedelta(seconds=span) - now).total_seconds()
                wait = max(wait, min(outcome.retry_after, latest))
            values.update(next_attempt_at=now + timedelta(seconds=wait))
        with db.write() as s:
            done = s.execute(
                update(Delivery)
                .where(
                    Delivery.id == claim.id,
                    Delivery.lease_owner == self.id,
                    Delivery.status == DeliveryState.PENDING,
                )
                .values(**values)
            )
        if rows_changed(done) != 1:
            log.warning("%s: lost the lease on delivery %s; outcome dropped", self.id, claim.id)
        return str(values.get("status", DeliveryState.PENDING))

    # --- the send ---------------------------------------------------------------------------

    def send(self, client: httpx.Client, claim: DeliveryClaim) -> _Outcome:
        """POST one signed attempt; every failure becomes an outcome, never an exception."""
        if not self.services.settings.webhooks:  # queued before the operator turned them off
            return _Outcome(None, WEBHOOKS_OFF, final=True)
        try:
            check_url(claim.url, self.allowlist)  # again: the name may resolve elsewhere now
        except UrlRefused as exc:
            return _Outcome(None, f"refused: {exc}")
        body = json.dumps(claim.payload, separators=(",", ":"), ensure_ascii=False).encode()
        # The database's clock, as for everything else the service times (the event's own
        # `timestamp`, leases): receivers refuse a stamp more than 5 minutes off theirs, so a
        # dispatcher on a machine whose clock is minutes off had every delivery refused.
        stamp = int(self.services.db.clock().timestamp())
        headers = {
            "content-type": "application/json",
            "user-agent": "demixer-webhooks",
            "webhook-id": claim.id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": sign(claim.secret, claim.id, stamp, body),
            "accept-encoding": "identity",  # the answer's text is only shown in last_error
        }
        try:
            # The whole send within the timeout (not each read alone: a receiver trickling its
            # answer a byte at a time would hold a slot, and outlast the lease, for hours).
            with (
                time_limit(self.timeout),
                client.stream("POST", claim.url, content=body, headers=headers) as response,
            ):
                head = b""
                # A 2xx status is the whole answer (its body may come late, or never: waiting
                # for it turned an acknowledged event into a timeout, and sent it again).
                # An error's first piece is kept for last_error, as it arrives, and raw:
                # decompressing a "Content-Encoding: gzip, gzip" answer could take gigabytes.
                if not response.is_success:
                    for chunk in response.iter_raw():
                        head = chunk[:300]
                        break
        except UrlRefused as exc:  # the connection's own check (DNS may have changed)
            return _Outcome(None, f"refused: {exc}")
        except httpx.TimeoutException as exc:
            return _Outcome(None, f"timeout after {self.timeout:g} s ({type(exc).__name__})")
        except httpx.HTTPError as exc:
            return _Outcome(None, f"{type(exc).__name__}: {exc}"[:500])
        code = response.status_code
        if 200 <= code < 300:
            return _Outcome(code, None)
        text = _readable(head)
        if response.headers.get("content-encoding", "identity").lower() != "identity":
            text = ""  # compressed bytes say nothing readable
        if response.is_redirect:
            text = "redirects are not followed"
        asked = None
        if code in (429, 503) and "retry-after" in response.headers:
            # Read by the database's clock, as the next attempt's time is (an HTTP date).
            asked = retry_after(response.headers["retry-after"], 0.0, now=self.services.db.clock())
        return _Outcome(code, f"HTTP {code}" + (f": {text}" if text else ""), asked)

    def deliver(self, client: httpx.Client, claim: DeliveryClaim) -> str:
        """Send ``claim`` and record the outcome; returns the delivery's new status."""
        try:
            outcome = self.send(client, claim)
        except Exception as exc:  # a bug must not keep the lease until it expires
            log.exception("%s: sending delivery %s failed", self.id, claim.id)
            outcome = _Outcome(None, f"internal error: {type(exc).__name__}")
        # Through a database outage: the receiver has it; sending it again would be a duplicate.
        try:
            status = retry_unavailable(
                lambda: self.record(claim, outcome),
                within=self.lease.total_seconds() / 2,
                what=f"{self.id}: recording delivery {claim.id}",
                read_only=True,
            )
        except Exception:
            # Said here: run() hands this call to a thread pool, whose futures keep an
            # exception to themselves, so an outcome the database refused went unlogged.
            log.exception(
                "%s: recording attempt %d of delivery %s (%s) failed; it is sent again when "
                "its lease expires",
                self.id,
                claim.attempt,
                claim.id,
                outcome.error or outcome.status_code,
            )
            return DeliveryState.PENDING
        # Given up on is the operator's to hear of (the receiver may be down for every job);
        # with the job's id, which the account's complaint quotes.
        log.log(
            logging.WARNING if status == DeliveryState.FAILED else logging.INFO,
            "webhook %s of job %s attempt %d -> %s (%s)",
            claim.id,
            claim.job_id,
            claim.attempt,
            status,
            outcome.error or outcome.status_code,
        )
        return status

    def client(self) -> httpx.Client:
        """The HTTP client sends use: guarded connections, no redirects, the webhook timeout."""
        return httpx.Client(
            timeout=self.timeout,
            follow_redirects=False,
            trust_env=False,  # a proxy would connect to addresses the guard never saw
            transport=self._transport or GuardedTransport(self.allowlist),
        )

    def run(self, stop: threading.Event) -> None:
        """Claim and send due deliveries until ``stop`` is set; waits for sends in flight."""
        slots = threading.BoundedSemaphore(self.concurrency)
        outage = OutageNotice(log, self.id)
        with (
            self.client() as client,
            ThreadPoolExecutor(self.concurrency, thread_name_prefix="demixer-webhook") as pool,
        ):
            while not stop.is_set():
                if not slots.acquire(timeout=self.poll):
                    continue  # every slot is sending: look again soon
                try:
                    claim = self.claim()
                    outage.answered()
                except Exception as exc:
                    if is_unavailable(exc):  # an outage: try again at the next poll
                        outage.failed(exc)
                    else:
                        log.exception("%s: claiming a delivery failed", self.id)
                    claim = None
                if claim is None:
                    slots.release()
                    stop.wait(self.poll)
                    continue
                future = pool.submit(self.deliver, client, claim)
                future.add_done_callback(lambda _f: slots.release())
