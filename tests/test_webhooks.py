"""Webhooks: Standard Webhooks signatures, and deliveries sent to a real local HTTP receiver.

Jobs are submitted through the API (the secret comes from the submit answer) and finished
through the real queue (claim + complete / fail), whose final transition writes the delivery
row. :class:`Dispatcher` threads then send it to a ``ThreadingHTTPServer`` on 127.0.0.1
(allowlisted), whose answers each test scripts. Backoff steps are shortened to tenths of a
second so every path runs in a few seconds. The send timeout stays at 5 s: on a loaded CI
machine a half-second one expired on a healthy loopback send, and that retry (a true extra
attempt) broke the tests that count attempts exactly. The one test of a timeout sets its own.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import json
import random
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf
import standardwebhooks
from sqlalchemy import select, update

from api_support import Api, make_api
from audiofiles import decode_stream, stempeg_example
from conftest import Backend
from demixer.server.compose import build_services
from demixer.service.context import Services
from demixer.service.db import Database, DatabaseClock
from demixer.service.delivery.dispatcher import DeliveryClaim, Dispatcher, backoff
from demixer.service.schema import Delivery, Job
from demixer.webhooks import WebhookVerificationError, new_secret, sign, verify
from service_harness import free_port, server_database_url
from worker_support import sql_sent

# The whole module runs on SQLite + local storage and on PostgreSQL + S3 (conftest.py).
pytestmark = pytest.mark.usefixtures("backend")

__all__ = ["make_api"]  # fixtures

# How often tests poll a real `demixer serve`: well under its default 600 requests a minute
# per key (a tighter loop is answered 429 once a delivery takes more than a few seconds).
SERVER_POLL = 0.25

FAST = {
    "url_allowlist": "127.0.0.1",
    "webhook_timeout_seconds": 5.0,
    "webhook_backoff_seconds": 0.1,
    "poll_seconds": 0.05,
}


# --- signatures ------------------------------------------------------------------------------


def test_sign_and_verify_round_trip() -> None:
    secret = new_secret()
    body = json.dumps({"type": "audio.separate.completed", "request_id": "req_1"}).encode()
    now = int(time.time())
    headers = {
        "Webhook-Id": "msg_1",
        "WEBHOOK-TIMESTAMP": str(now),
        "webhook-signature": sign(secret, "msg_1", now, body),
    }
    assert headers["webhook-signature"].startswith("v1,")
    assert verify(headers, body, secret) == {
        "type": "audio.separate.completed",
        "request_id": "req_1",
    }
    assert verify(headers, body.decode(), secret)["request_id"] == "req_1"  # str bodies too
    # Key rotation: several signatures, one of them right.
    rotated = {**headers, "webhook-signature": f"v1,AAAA v2,xyz {headers['webhook-signature']}"}
    assert verify(rotated, body, secret)["request_id"] == "req_1"


def test_a_secret_without_its_prefix_signs_as_the_standardwebhooks_package_reads_it() -> None:
    """A base64 secret sent without ``whsec_`` keyed the HMAC with what it encodes (as the
    ``standardwebhooks`` package reads it); accepting plain secrets too must not change that,
    or a receiver set up with such a secret stops verifying."""
    bare = base64.b64encode(bytes(range(24))).decode()
    body, now = b'{"request_id":"req_1"}', int(time.time())
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(now),
        "webhook-signature": sign(bare, "msg_1", now, body),
    }
    assert standardwebhooks.Webhook(bare).verify(body, headers) == {"request_id": "req_1"}


@pytest.mark.parametrize(
    "change",
    ["body", "id", "timestamp", "secret", "old", "future", "missing", "garbage"],
)
def test_verify_refuses_tampering_and_replays(change: str) -> None:
    secret, now = new_secret(), 1_700_000_000
    body = b'{"request_id":"req_1"}'
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(now),
        "webhook-signature": sign(secret, "msg_1", now, body),
    }
    at = float(now)
    if change == "body":
        body = b'{"request_id":"req_2"}'
    elif change == "id":
        headers["webhook-id"] = "msg_2"
    elif change == "timestamp":
        headers["webhook-timestamp"] = str(now + 1)
    elif change == "secret":
        secret = new_secret()
    elif change == "old":
        at = now + 301.0
    elif change == "future":
        at = now - 301.0
    elif change == "missing":
        del headers["webhook-signature"]
    elif change == "garbage":
        headers["webhook-timestamp"] = "yesterday"
    with pytest.raises(WebhookVerificationError):
        verify(headers, body, secret, now=at)
    if change in ("old", "future"):  # inside the tolerance it passes
        assert verify(headers, body, secret, now=at, tolerance=302)


def test_interoperates_with_the_standardwebhooks_package() -> None:
    sw = standardwebhooks
    from datetime import UTC, datetime

    secret, now = new_secret(), int(time.time())
    body = b'{"request_id":"req_1","status":"COMPLETED"}'
    ours = {
        "webhook-id": "msg_x",
        "webhook-timestamp": str(now),
        "webhook-signature": sign(secret, "msg_x", now, body),
    }
    assert sw.Webhook(secret).verify(body, ours) == {"request_id": "req_1", "status": "COMPLETED"}
    theirs = {
        **ours,
        "webhook-signature": sw.Webhook(secret).sign(
            "msg_x", datetime.fromtimestamp(now, UTC), body.decode()
        ),
    }
    assert theirs["webhook-signature"] == ours["webhook-signature"]
    assert verify(theirs, body, secret)["status"] == "COMPLETED"


def test_backoff_spans_about_a_day() -> None:
    # The documented schedule at a 60 s base: steps of 1 m, 4 m, 16 m, 64 m, 4 h 16 m, then
    # 12 h (the cap); each wait is drawn from the upper half of its step.
    steps = [60, 240, 960, 3840, 15360, 43200, 43200]
    for seed in range(20):
        rng = random.Random(seed)
        waits = [backoff(k + 1, 60.0, rng) for k in range(7)]  # the waits between 8 attempts
        for wait, step in zip(waits, steps, strict=True):
            assert step / 2 <= wait <= step
        assert 14 * 3600 < sum(waits) < 31 * 3600  # about a day
    assert backoff(30, 60.0) <= 12 * 3600


# --- a real receiver -------------------------------------------------------------------------


@dataclass
class Call:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1; ``plans[path]`` lists the statuses to answer, in order
    (the last one repeats); ``delays[path]`` makes it wait before answering."""

    port: int = 0
    calls: list[Call] = field(default_factory=list)
    plans: dict[str, list[int]] = field(default_factory=dict)
    delays: dict[str, float] = field(default_factory=dict)
    hooks: dict[str, Callable[[], object]] = field(default_factory=dict)
    headers: dict[str, dict[str, str]] = field(default_factory=dict)  # path -> sent with answers
    per_id: bool = False  # plans index by the number of calls for this webhook-id, not path
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def answer(self, call: Call) -> int:
        with self.lock:
            self.calls.append(call)
            key = call.headers["webhook-id"] if self.per_id else call.path
            seen = sum(
                1 for c in self.calls if (c.headers["webhook-id"] if self.per_id else c.path) == key
            )
        plan = self.plans.get(call.path, [200])
        return plan[min(seen, len(plan)) - 1]

    def to(self, path: str) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if c.path == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            call = Call(
                self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic()
            )
            status = rec.answer(call)
            if hook := rec.hooks.get(self.path):
                hook()
            time.sleep(rec.delays.get(self.path, 0.0))
            try:
                self.send_response(status)
                self.send_header("content-length", "2")
                for name, value in rec.headers.get(self.path, {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(b"no" if status >= 300 else b"ok")
            except OSError:
                pass  # the sender gave up (timeout)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    rec.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield rec
    server.shutdown()
    server.server_close()


@contextmanager
def dispatching(services: Services, **kw: Any) -> Iterator[Dispatcher]:
    dispatcher = Dispatcher(services, **kw)
    stop = threading.Event()
    thread = threading.Thread(target=dispatcher.run, kwargs={"stop": stop}, daemon=True)
    thread.start()
    try:
        yield dispatcher
    finally:
        stop.set()
        thread.join(timeout=10)
        assert not thread.is_alive()


def wait_for(check: Callable[[], Any], timeout: float = 10.0, every: float = 0.02) -> Any:
    """Call ``check`` every ``every`` seconds until it answers something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {check}")
        time.sleep(every)


def submit(api: Api, file_id: str, url: str, **extra: Any) -> tuple[str, str]:
    """Queue a request with a webhook; returns (request id, signing secret from the answer)."""
    r = api.queue_separate(file_id, webhook={"url": url, **extra})
    assert r.status_code == 202, r.text
    return r.json()["request_id"], r.json()["webhook"]["signing_secret"]


def finish(api: Api, job_id: str) -> None:
    """Complete ``job_id`` as a worker would, unless the result cache already did."""
    with api.services.db.read() as s:
        job = s.get(Job, job_id)
        assert job is not None
        if job.status == "COMPLETED":
            return
    api.worker_done(job_id)


def fail_job(api: Api, job_id: str) -> None:
    claim = api.services.queue.claim("test-worker")
    assert claim is not None and claim.id == job_id
    api.services.queue.fail(
        job_id, "test-worker", code="MODEL_FAILED", message="the model broke", retryable=False
    )


def hook_status(api: Api, job_id: str) -> dict[str, Any]:
    r = api.get(f"/v1/queue/requests/{job_id}/status")
    assert r.status_code == 200, r.text
    return dict(r.json()["webhook"])


# --- deliveries ------------------------------------------------------------------------------


def bare_receiver(answer: Callable[[socket.socket], None]) -> tuple[socket.socket, DeliveryClaim]:
    """A receiver of one send on a bare socket, for answers no HTTP server gives (trickled,
    late, compressed): it reads the request's head, then ``answer(conn)`` writes the rest.
    Returns its listening socket (the caller closes it) and a claim that sends to it."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(65536)
            answer(conn)

    threading.Thread(target=serve, daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
    payload = {"status": "COMPLETED"}
    claim = DeliveryClaim("msg_1", "req_1", url, new_secret(), payload, 1, 8, datetime.now(UTC))
    return listener, claim


@pytest.mark.backends("sqlite")  # a receiver's answers: handled alike on either backend
def test_flaky_receiver_gets_a_signed_completed_event_on_the_third_attempt(
    make_api: Callable[..., Api], receiver: Receiver
) -> None:
    api = make_api(**FAST)
    receiver.plans["/hook"] = [500, 500, 204]
    job_id, secret = submit(api, api.upload(), receiver.url("/hook"))
    assert hook_status(api, job_id)["delivery_status"] == "none"  # not finished yet
    api.worker_done(job_id)
    with dispatching(api.services):
        status = wait_for(
            lambda: (s := hook_status(api, job_id))["delivery_status"] == "delivered" and s
        )
    assert status["attempts"] == 3 and status["delivered_at"] and status["last_error"] is None
    calls = receiver.to("/hook")
    assert len(calls) == 3
    assert len({c.headers["webhook-id"] for c in calls}) == 1  # one message, three attempts
    for call in calls:
        event = verify(call.headers, call.body, secret)
    assert event["type"] == "audio.separate.completed"
    assert event["request_id"] == job_id and event["status"] == "COMPLETED"
    assert event["model"] == "audio/separate" and event["timestamp"]
    assert set(event["data"]) >= {"target", "residual", "duration", "sample_rate"}
    download = api.fetch(event["data"]["target"]["url"])  # the signed URL works
    assert download.status_code == 200 and download.content[:4] == b"RIFF"
    # Backoff: each retry waited at least half its step (0.1 s, then 0.4 s).
    assert calls[1].at - calls[0].at >= 0.05 and calls[2].at - calls[1].at >= 0.2


def test_failed_job_sends_a_failed_event_with_the_callers_secret(
    make_api: Callable[..., Api], receiver: Receiver
) -> None:
    api = make_api(**FAST)
    mine = new_secret()
    job_id, secret = submit(api, api.upload(), receiver.url("/f"), secret=mine)
    assert secret == mine
    fail_job(api, job_id)
    with dispatching(api.services):
        wait_for(lambda: hook_status(api, job_id)["delivery_status"] == "delivered")
    (call,) = receiver.to("/f")
    event = verify(call.headers, call.body, mine)
    assert event["type"] == "audio.separate.failed" and event["status"] == "FAILED"
    assert event["error"] == {"code": "MODEL_FAILED", "message": "the model broke"}
    assert "data" not in event
    # Its time in the form of the API's answers ("...T09:00:00.250000Z"): it ended in
    # "+00:00", which Java's Instant.parse refuses before Java 12.
    assert event["timestamp"].endswith("Z"), event


@pytest.mark.backends("sqlite")  # the signature: the same on either backend
def test_the_audiolasso_pages_plain_hmac_secret_is_accepted_and_signs(
    make_api: Callable[..., Api], receiver: Receiver
) -> None:
    """AudioLasso's webhook page submits ``"webhookSecret": "replace-with-your-hmac-secret"``:
    it was a 400 (not ``whsec_`` + base64); it is the secret, whose UTF-8 bytes key the HMAC."""
    api = make_api(**FAST)
    mine = "replace-with-your-hmac-secret"
    flat = {"webhookUrl": receiver.url("/plain"), "webhookSecret": mine}
    r = api.queue_separate(api.upload(), "isolate the lead vocal", **flat)
    assert r.status_code == 202, r.text
    assert r.json()["webhook"]["signing_secret"] == mine
    job_id = r.json()["request_id"]
    fail_job(api, job_id)
    with dispatching(api.services):
        wait_for(lambda: hook_status(api, job_id)["delivery_status"] == "delivered")
    (call,) = receiver.to("/plain")
    signed = f"{call.headers['webhook-id']}.{call.headers['webhook-timestamp']}.".encode()
    digest = hmac.new(mine.encode(), signed + call.body, hashlib.sha256).digest()
    assert f"v1,{base64.b64encode(digest).decode()}" in call.headers["webhook-signature"].split()
    assert verify(call.headers, call.body, mine)["request_id"] == job_id


@pytest.mark.backends("pg-s3")  # on SQLite the database's clock is this machine's
def test_a_machine_clock_ten_minutes_fast_still_sends_a_timestamp_receivers_accept(
    make_api: Callable[..., Api], receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`webhook-timestamp` was this machine's clock while the rest (leases, the event's
    `timestamp`) follows the database's: a dispatcher on a machine 10 minutes fast sent
    deliveries every Standard Webhooks receiver refuses (it allows 5 minutes)."""
    api = make_api(**FAST)
    right, fast = time.time, timedelta(minutes=10)
    api.services.db.clock = DatabaseClock(
        api.services.db.engine, local=lambda: datetime.now(UTC) + fast
    )
    monkeypatch.setattr(time, "time", lambda: right() + fast.total_seconds())
    job_id, secret = submit(api, api.upload(), receiver.url("/fast"))
    api.worker_done(job_id)
    with dispatching(api.services):
        wait_for(lambda: hook_status(api, job_id)["delivery_status"] == "delivered")
    (call,) = receiver.to("/fast")
    event = verify(call.headers, call.body, secret, now=right())  # the receiver's clock
    assert event["request_id"] == job_id


@pytest.mark.backends("sqlite")  # a receiver's answers: handled alike on either backend
def test_410_stops_retries_after_one_attempt(
    make_api: Callable[..., Api], receiver: Receiver
) -> None:
    api = make_api(**FAST)
    receiver.plans["/gone"] = [410]
    job_id, _ = submit(api, api.upload(), receiver.url("/gone"))
    api.worker_done(job_id)
    with dispatching(api.services):
        status = wait_for(
            lambda: (s := hook_status(api, job_id))["delivery_status"] == "failed" and s
        )
        time.sleep(0.5)  # more than the first backoff steps: nothing else is sent
    assert status["attempts"] == 1 and "410" in status["last_error"]
    assert len(receiver.to("/gone")) == 1


def test_an_idle_poll_is_one_read_and_a_due_delivery_is_still_claimed(
    make_api: Callable[..., Api], receiver: Receiver
) -> None:
    """The dispatcher polls every ``poll_seconds`` in every API process. A poll that finds
    nothing due opened the claim's write transaction (an UPDATE and a three-table SELECT; on
    SQLite the write lock the API's requests wait for): it is one indexed SELECT now."""
    api = make_api(**FAST)
    dispatcher = Dispatcher(api.services)
    with sql_sent() as sent:
        idle = [dispatcher.claim() for _ in range(3)]
    assert (idle, sent) == ([None] * 3, ["SELECT"] * 3)
    job_id, _ = submit(api, api.upload(), receiver.url("/hook"))
    api.worker_done(job_id)
    claim = dispatcher.claim()
    assert claim is not None and claim.job_id == job_id


def test_gives_up_after_max_attempts(make_api: Callable[..., Api], receiver: Receiver) -> None:
    api = make_api(**{**FAST, "webhook_max_attempts": 3, "webhook_backoff_seconds": 0.02})
    receiver.plans["/down"] = [503]
    job_id, _ = submit(api, api.upload(), receiver.url("/down"))
    api.worker_done(job_id)
    with dispatching(api.services):
        status = wait_for(
            lambda: (s := hook_status(api, job_id))["delivery_status"] == "failed" and s
        )
    assert status["attempts"] == 3 and status["last_error"].startswith("HTTP 503")
    assert len(receiver.to("/down")) == 3


@pytest.mark.backends("sqlite")  # a receiver's answers: handled alike on either backend
@pytest.mark.parametrize(
    ("status", "asked", "waits"),
    [
        (503, "120", 120.0),
        (429, "in 300 s", 300.0),  # as an HTTP date
        (503, "999999999", None),  # capped: the schedule's horizon after the event
        (500, "120", 1.0),  # only a 429's or a 503's is read: the backoff (at most 1 s)
    ],
)
def test_a_receivers_retry_after_sets_the_next_attempt_within_the_schedule(
    make_api: Callable[..., Api], receiver: Receiver, status: int, asked: str, waits: float | None
) -> None:
    """A receiver answering 429 or 503 with `Retry-After` was retried on the backoff schedule
    regardless, within a second here; it is retried no sooner than it asks, but no later than
    the schedule's horizon after the event (a huge value parked the delivery for good)."""
    api = make_api(**{**FAST, "webhook_backoff_seconds": 1.0})
    db = api.services.db
    job_id, _ = submit(api, api.upload(), receiver.url("/busy"))
    api.worker_done(job_id)
    if asked.startswith("in "):  # the date's whole seconds, and the send, take up to 3 s off
        when = db.clock() + timedelta(seconds=float(asked.split()[1]))
        asked = format_datetime(when.replace(microsecond=0), usegmt=True)
    receiver.plans["/busy"] = [status]
    receiver.headers["/busy"] = {"retry-after": asked}
    dispatcher = Dispatcher(api.services)
    claim = dispatcher.claim()
    assert claim is not None
    with dispatcher.client() as client:
        assert dispatcher.deliver(client, claim) == "pending"
    with db.read() as s:
        row = s.execute(select(Delivery)).scalar_one()
    if waits is None:  # every step whole: 1 + 4 + 16 + 64 + 256 + 720 + 720 s at a 1 s base
        assert row.next_attempt_at == row.created_at + timedelta(seconds=1781)
    else:
        wait = (row.next_attempt_at - row.updated_at).total_seconds()
        assert waits - 3 <= wait <= waits, wait


def test_slow_receiver_times_out_without_delaying_another(
    make_api: Callable[..., Api], receiver: Receiver
) -> None:
    # The slow receiver never answers; its send times out after 3 s. A dispatcher that sent one
    # delivery at a time would record that timeout before it sent the fast one; this one sends
    # the fast one while the slow send is still in flight. What the fast receiver sees is read
    # from the database at the moment it is called, so no clock decides the result.
    api = make_api(**{**FAST, "webhook_timeout_seconds": 3.0, "webhook_backoff_seconds": 60.0})
    hang = threading.Event()
    receiver.hooks["/slow"] = lambda: hang.wait(30)
    file_id = api.upload()
    slow_id, _ = submit(api, file_id, receiver.url("/slow"))
    api.worker_done(slow_id)
    fast_id, _ = submit(api, file_id, receiver.url("/fast"))
    finish(api, fast_id)
    slow_when_fast_came: list[tuple[int, bool, str | None]] = []

    def look_at_the_slow_one() -> None:
        with api.services.db.read() as s:
            row = s.execute(select(Delivery).where(Delivery.job_id == slow_id)).scalar_one()
            slow_when_fast_came.append((row.attempts, row.lease_owner is not None, row.last_error))

    receiver.hooks["/fast"] = look_at_the_slow_one
    try:
        with dispatching(api.services, concurrency=4):
            wait_for(lambda: hook_status(api, fast_id)["delivery_status"] == "delivered")
            slow = wait_for(lambda: (s := hook_status(api, slow_id))["last_error"] and s)
    finally:
        hang.set()
    # The slow one was claimed (its attempt counted, its lease held) and was still being sent,
    # with no error yet, when the fast one came. Which of the two concurrent requests reaches
    # the receiver first is the threads' scheduling (1 ms either way), so it is not asserted.
    assert len(receiver.to("/slow")) == 1
    assert slow_when_fast_came == [(1, True, None)]
    assert slow["delivery_status"] == "pending" and slow["attempts"] == 1
    assert slow["last_error"].startswith("timeout")


def test_one_accounts_hanging_receiver_leaves_slots_to_other_accounts(
    make_api: Callable[..., Api], receiver: Receiver
) -> None:
    """One account's requests (repeats answered from the result cache: no worker, no
    concurrent-job limit) point at a receiver that never answers. Every send slot was its,
    each for the whole timeout: another account's event waited behind all of them (at the
    default 15 s timeout and 600 requests a minute, for hours). Once an account holds half
    the slots, other accounts' events go first; what the other account's receiver sees is
    read when it is called, so no clock decides the result."""
    # No hanging send times out before the test ends (hang.set() ends them): the receiver's
    # count of calls to /hang is then the count of sends holding slots, not of sends made (a
    # loaded machine let the first sends time out at FAST's 5 s and counted their successors).
    api = make_api(**{**FAST, "webhook_backoff_seconds": 60.0, "webhook_timeout_seconds": 60.0})
    hang = threading.Event()
    receiver.hooks["/hang"] = lambda: hang.wait(60)
    file_id = api.upload()
    for _ in range(6):
        job_id, _ = submit(api, file_id, receiver.url("/hang"))
        finish(api, job_id)
    r = api.post(
        "/v1/queue/audio/separate",
        key=api.other_key,
        json={
            "input": {"audio_url": receiver.url("/song.wav"), "prompt": "vocals"},
            "webhook": {"url": receiver.url("/other")},
        },
    )
    assert r.status_code == 202, r.text
    other = r.json()["request_id"]
    api.worker_done(other)
    hanging_when_other_came: list[int] = []
    receiver.hooks["/other"] = lambda: hanging_when_other_came.append(len(receiver.to("/hang")))

    def other_delivered() -> bool:
        r = api.get(f"/v1/queue/requests/{other}/status", key=api.other_key)
        return bool(r.json()["webhook"]["delivery_status"] == "delivered")

    with dispatching(api.services, concurrency=4):
        try:
            wait_for(other_delivered)
        finally:
            hang.set()  # before the dispatcher stops: it waits for the sends in flight
    # Two of the four slots at most were the hanging account's when the other's event went.
    (hanging,) = hanging_when_other_came
    assert hanging <= 2, hanging


@pytest.mark.backends("sqlite")  # the send alone: no database work
@pytest.mark.parametrize("trickled", ["headers", "body"])
def test_a_receiver_trickling_its_answer_is_cut_at_the_timeout(
    make_api: Callable[..., Api], trickled: str
) -> None:
    """A receiver that answers a byte every 0.2 s never trips a timeout on each read: the
    whole send is bounded by the webhook timeout (else one slot, and the delivery's lease,
    was held for hours, and the expired lease let the same event go out again alongside)."""
    api = make_api(**{**FAST, "webhook_timeout_seconds": 1.0})
    stop = threading.Event()

    def trickle(conn: socket.socket) -> None:
        start = b"HTTP/1.1 200 OK\r\n"
        if trickled == "body":  # whole headers, then a body that never ends
            start += b"Content-Length: 100000\r\n\r\n"
        conn.sendall(start)
        while not stop.wait(0.2):
            try:
                conn.sendall(b"x" if trickled == "body" else b"X")
            except OSError:
                return  # the sender gave up

    listener, claim = bare_receiver(trickle)
    dispatcher = Dispatcher(api.services)
    outcomes: list[Any] = []
    try:
        with dispatcher.client() as client:
            sender = threading.Thread(
                target=lambda: outcomes.append(dispatcher.send(client, claim))
            )
            sender.start()
            sender.join(60)  # only a send that never ends reaches this
    finally:
        stop.set()
        listener.close()
    assert not sender.is_alive(), "the send never ended"
    (outcome,) = outcomes
    if trickled == "body":  # the status came whole: the answer is read no further
        assert (outcome.status_code, outcome.error) == (200, None)
    else:
        assert outcome.status_code is None
        assert outcome.error.startswith("timeout after 1 s"), outcome.error


@pytest.mark.backends("sqlite")  # the send alone: no database work
def test_a_receivers_compressed_answer_is_not_decompressed(make_api: Callable[..., Api]) -> None:
    """A receiver answers 500 with 218 bytes gzipped twice (32 MiB of zeros): the dispatcher
    keeps its first raw piece only (decompressed, a few KiB of it were gigabytes in the
    server's memory, on every retry)."""
    api = make_api(**FAST)
    bomb = gzip.compress(gzip.compress(bytes(32 << 20)))

    def answer(conn: socket.socket) -> None:
        head = f"HTTP/1.1 500 Oops\r\nContent-Encoding: gzip, gzip\r\nContent-Length: {len(bomb)}"
        conn.sendall(head.encode() + b"\r\n\r\n" + bomb)

    listener, claim = bare_receiver(answer)
    dispatcher = Dispatcher(api.services)
    tracemalloc.start()
    try:
        with dispatcher.client() as client:
            outcome = dispatcher.send(client, claim)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        listener.close()
    assert peak < 4 << 20
    assert (outcome.status_code, outcome.error) == (500, "HTTP 500")


@pytest.mark.backends("sqlite")  # the send alone: no database work
def test_a_200_whose_body_is_late_is_delivered(make_api: Callable[..., Api]) -> None:
    """The receiver answers "200 OK" at once and its 2-byte body only after 3 s, past the
    1 s timeout: the event was acknowledged (a timeout sent it again, and again)."""
    api = make_api(**{**FAST, "webhook_timeout_seconds": 1.0})
    done = threading.Event()

    def answer(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n")
        if not done.wait(3):
            conn.sendall(b"ok")

    listener, claim = bare_receiver(answer)
    dispatcher = Dispatcher(api.services)
    try:
        with dispatcher.client() as client:
            outcome = dispatcher.send(client, claim)
    finally:
        done.set()
        listener.close()
    assert (outcome.status_code, outcome.error) == (200, None)


def test_a_receivers_binary_error_answer_is_recorded_as_text(make_api: Callable[..., Api]) -> None:
    """A receiver answers 500 with a UTF-16 page (every other byte NUL). PostgreSQL refuses
    NUL in text: the attempt's outcome could not be written, so the status said `pending`
    with no error and no attempt counted, nothing was logged, and the lease held the delivery
    until it expired (90 s at the default timeout). Control characters are left out."""
    api = make_api(**FAST)
    page = "Fehler\r\n\x1b[0m".encode("utf-16-le")

    def answer(conn: socket.socket) -> None:
        head = f"HTTP/1.1 500 Oops\r\nContent-Length: {len(page)}\r\n\r\n".encode()
        conn.sendall(head + page)

    listener, bare = bare_receiver(answer)
    try:
        job_id, _ = submit(api, api.upload(), bare.url)
        api.worker_done(job_id)
        dispatcher = Dispatcher(api.services)
        claim = dispatcher.claim()
        assert claim is not None
        with dispatcher.client() as client:
            assert dispatcher.deliver(client, claim) == "pending"
    finally:
        listener.close()
    status = hook_status(api, job_id)
    assert (status["attempts"], status["last_error"]) == (1, "HTTP 500: Fehler [0m")


@pytest.mark.backends("sqlite")  # the log line alone: the database's refusal is a stand-in
def test_an_outcome_the_database_refuses_is_logged(
    make_api: Callable[..., Api], receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """The dispatcher sends on a thread pool, whose futures keep an exception to themselves:
    an attempt whose outcome could not be written (the NUL above, on PostgreSQL) left no
    line in the log, only a delivery stuck `pending` until its lease expired."""
    api = make_api(**FAST)
    job_id, _ = submit(api, api.upload(), receiver.url("/refused"))
    api.worker_done(job_id)
    dispatcher = Dispatcher(api.services)

    def refused(*_args: Any) -> str:
        raise ValueError("the database refused it")

    dispatcher.record = refused  # type: ignore[method-assign]
    claim = dispatcher.claim()
    assert claim is not None
    with caplog.at_level("ERROR", logger="demixer.webhooks"), dispatcher.client() as client:
        assert dispatcher.deliver(client, claim) == "pending"
    (line,) = [r for r in caplog.records if r.name == "demixer.webhooks"]
    assert line.getMessage() == (
        f"{dispatcher.id}: recording attempt 1 of delivery {claim.id} (200) failed; it is "
        "sent again when its lease expires"
    )
    assert line.exc_info is not None and "the database refused it" in str(line.exc_info[1])


@pytest.mark.backends("sqlite")  # a log line: the dispatcher's, not the database's
def test_a_delivery_given_up_on_is_a_warning_naming_its_job(
    make_api: Callable[..., Api], receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """The last attempt's failure was an INFO line naming only the delivery (msg_...): a
    receiver down for every job went unnoticed at WARNING, and an account's complaint,
    which quotes its request id, matched no line."""
    api = make_api(**{**FAST, "webhook_max_attempts": 1})
    receiver.plans["/down"] = [500]
    job_id, _ = submit(api, api.upload(), receiver.url("/down"))
    api.worker_done(job_id)
    dispatcher = Dispatcher(api.services)
    claim = dispatcher.claim()
    assert claim is not None
    with caplog.at_level("WARNING", logger="demixer.webhooks"), dispatcher.client() as client:
        assert dispatcher.deliver(client, claim) == "failed"
    (line,) = [r for r in caplog.records if r.name == "demixer.webhooks"]
    assert (line.levelname, line.getMessage()) == (
        "WARNING",
        f"webhook {claim.id} of job {job_id} attempt 1 -> failed (HTTP 500: no)",
    )


def test_delivery_survives_a_dispatcher_restart(
    make_api: Callable[..., Api], receiver: Receiver
) -> None:
    api = make_api(**{**FAST, "webhook_backoff_seconds": 1.0})
    receiver.plans["/r"] = [500, 200]
    job_id, secret = submit(api, api.upload(), receiver.url("/r"))
    api.worker_done(job_id)
    with dispatching(api.services):
        wait_for(lambda: hook_status(api, job_id)["attempts"] == 1)
    # A new process: new services (engine, pool) on the same database and data directory.
    restarted = build_services(api.services.settings)
    assert hook_status(api, job_id)["delivery_status"] == "pending"
    with dispatching(restarted):
        status = wait_for(
            lambda: (s := hook_status(api, job_id))["delivery_status"] == "delivered" and s
        )
    first, second = receiver.to("/r")
    assert status["attempts"] == 2
    assert second.at - first.at >= 0.5  # it waited for the retry to fall due
    assert verify(second.headers, second.body, secret)["request_id"] == job_id
    restarted.db.dispose()


def test_a_last_attempt_cut_off_by_a_dead_dispatcher_is_sent_once_more(
    make_api: Callable[..., Api], receiver: Receiver
) -> None:
    """A dispatcher that stopped during the last attempt left its lease to expire; the next
    claim marked the delivery `failed` without sending it, though the event may never have
    left. It is sent once more; a second cut-off last attempt ends it (no crash loop)."""
    api = make_api(**{**FAST, "webhook_max_attempts": 1})
    job_id, _ = submit(api, api.upload(), receiver.url("/cut"))
    api.worker_done(job_id)
    db = api.services.db

    def dies_holding_it() -> None:
        dead = Dispatcher(api.services)
        assert dead.claim() is not None  # ... and it never sends or records
        with db.write() as s:
            s.execute(update(Delivery).values(lease_expires_at=db.clock() - timedelta(seconds=1)))

    dies_holding_it()
    dispatcher = Dispatcher(api.services)
    claim = dispatcher.claim()
    assert claim is not None
    with dispatcher.client() as client:
        assert dispatcher.deliver(client, claim) == "delivered"
    assert len(receiver.to("/cut")) == 1
    # Back to where the first dispatcher died; this time the re-send is cut off too.
    with db.write() as s:
        s.execute(update(Delivery).values(status="pending", attempts=1, delivered_at=None))
    dies_holding_it()
    assert Dispatcher(api.services).claim() is None
    status = hook_status(api, job_id)
    assert status["delivery_status"] == "failed"
    assert status["last_error"] == "the dispatcher sending the last attempt stopped responding"


def test_two_dispatchers_never_send_one_attempt_twice(
    make_api: Callable[..., Api], receiver: Receiver
) -> None:
    api = make_api(**{**FAST, "webhook_backoff_seconds": 0.05})
    receiver.plans["/many"] = [500, 200]  # per webhook-id: fail once, then take it
    receiver.per_id = True
    receiver.delays["/many"] = 0.05
    file_id = api.upload()
    jobs = []
    for _ in range(8):
        job_id, _secret = submit(api, file_id, receiver.url("/many"))
        finish(api, job_id)
        jobs.append(job_id)
    other = build_services(api.services.settings)  # a second process's engine
    with dispatching(api.services, concurrency=3), dispatching(other, concurrency=3):
        for job_id in jobs:
            wait_for(lambda j=job_id: hook_status(api, j)["delivery_status"] == "delivered")
    counts: dict[str, int] = {}
    for call in receiver.to("/many"):
        counts[call.headers["webhook-id"]] = counts.get(call.headers["webhook-id"], 0) + 1
    assert len(counts) == 8 and set(counts.values()) == {2}, counts
    with api.services.db.read() as s:
        assert {d.attempts for d in s.execute(select(Delivery)).scalars()} == {2}
    other.db.dispose()


def test_status_without_a_webhook_and_after_cancel(
    make_api: Callable[..., Api], receiver: Receiver
) -> None:
    api = make_api(**FAST)
    file_id = api.upload()
    plain = api.queue_separate(file_id).json()["request_id"]
    assert api.get(f"/v1/queue/requests/{plain}/status").json()["webhook"] is None
    job_id, _ = submit(api, file_id, receiver.url("/c"))
    cancelled = api.client.put(f"/v1/queue/requests/{job_id}/cancel", headers=api.headers())
    assert cancelled.status_code == 200  # queued: CANCELLED at once
    with dispatching(api.services):
        time.sleep(0.3)
    status = hook_status(api, job_id)
    assert status == {
        "url": receiver.url("/c"),
        "delivery_status": "none",
        "attempts": 0,
        "delivered_at": None,
        "last_error": None,
        "next_attempt_at": None,
    }
    assert receiver.calls == []


def test_private_webhook_urls_are_refused(make_api: Callable[..., Api]) -> None:
    api = make_api()  # no allowlist
    file_id = api.upload()
    # The guard's code for every URL it will not call: a scheme other than http(s), or no
    # host, was answered INVALID_REQUEST (a client handling URL_REFUSED missed those).
    for url in (
        "http://127.0.0.1:9/hook",
        "http://10.1.2.3/hook",
        "http://[::1]/hook",
        "http://2130706433/hook",
        "file:///etc/passwd",
        "gopher://example.com/",
        "http:///hook",
    ):
        r = api.queue_separate(file_id, webhook={"url": url})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "URL_REFUSED", r.text
        assert r.json()["error"]["param"] == "webhook.url"


def test_the_guard_runs_again_before_each_send(
    make_api: Callable[..., Api], receiver: Receiver
) -> None:
    api = make_api(**{**FAST, "webhook_backoff_seconds": 60.0})
    job_id, _ = submit(api, api.upload(), receiver.url("/g"))
    api.worker_done(job_id)
    # The operator has since removed 127.0.0.1 from the allowlist.
    settings = api.services.settings.model_copy(update={"url_allowlist": ""})
    strict = build_services(settings, db=api.services.db)
    with dispatching(strict):
        status = wait_for(lambda: (s := hook_status(api, job_id))["last_error"] and s)
    assert status["last_error"].startswith("refused") and status["delivery_status"] == "pending"
    assert receiver.calls == []


def test_a_request_answered_from_the_result_cache_sends_its_event(
    make_api: Callable[..., Api], receiver: Receiver
) -> None:
    api = make_api(**FAST)
    file_id = api.upload()
    first, _ = submit(api, file_id, receiver.url("/first"))
    api.worker_done(first)
    again = api.queue_separate(file_id, webhook={"url": receiver.url("/again")})
    assert again.json()["status"] == "COMPLETED", again.text  # reused, no worker
    job_id, secret = again.json()["request_id"], again.json()["webhook"]["signing_secret"]
    with dispatching(api.services):
        wait_for(lambda: hook_status(api, job_id)["delivery_status"] == "delivered")
    (call,) = receiver.to("/again")
    event = verify(call.headers, call.body, secret)
    assert event["request_id"] == job_id and event["type"] == "audio.separate.completed"
    assert f"/{job_id}/" in event["data"]["target"]["url"]  # its own copies, freshly signed


def test_demixer_serve_delivers_a_real_jobs_event(
    tmp_path: Path, receiver: Receiver, backend: Backend
) -> None:
    """The real thing: `demixer serve` (worker + dispatcher threads), the real model, HTTP."""
    from service_harness import fast_env, running_server

    receiver.plans["/serve"] = [500, 200]
    mix = decode_stream(stempeg_example(), 0)[:, : 2 * 44100]  # 2 s of real music
    song = tmp_path / "song.wav"
    sf.write(song, mix.T, 44100, subtype="FLOAT")
    env = fast_env(DEMIXER_URL_ALLOWLIST="127.0.0.1", DEMIXER_WEBHOOK_BACKOFF_SECONDS="0.2")
    with running_server(tmp_path / "serve", env=env) as server:
        client = server.client()
        files = {"file": ("song.wav", song.read_bytes(), "audio/wav")}
        up = client.post("/v1/files", files=files)
        assert up.status_code == 201, up.text
        r = client.post(
            "/v1/queue/audio/separate",
            json={
                "input": {"file_id": up.json()["file_id"], "prompt": "vocals"},
                "webhookUrl": receiver.url("/serve"),
            },
        )
        assert r.status_code == 202, r.text
        job_id, secret = r.json()["request_id"], r.json()["webhook"]["signing_secret"]

        def delivered() -> dict[str, Any] | None:
            r = client.get(f"/v1/queue/requests/{job_id}/status")
            assert r.status_code == 200, r.text
            hook = r.json()["webhook"]
            return hook if hook["delivery_status"] == "delivered" else None

        status = wait_for(delivered, timeout=60, every=SERVER_POLL)
    assert status["attempts"] == 2
    event = verify(receiver.to("/serve")[-1].headers, receiver.to("/serve")[-1].body, secret)
    assert event["type"] == "audio.separate.completed" and event["request_id"] == job_id
    # A signed blob URL: the API's own, or the bucket's on S3.
    blobs = backend.servers.s3_endpoint if backend.servers is not None else server.base_url
    assert event["data"]["target"]["url"].startswith(blobs + "/")


def test_a_delivery_lands_after_the_server_is_killed_between_retries(
    tmp_path: Path, receiver: Receiver
) -> None:
    """The receiver fails twice; `demixer serve` is SIGKILLed after the first failure and
    started again on the same data directory; the third attempt still lands, signed."""
    from service_harness import fast_env, running_server, start_server

    receiver.plans["/restart"] = [500, 500, 204]
    mix = decode_stream(stempeg_example(), 0)[:, : 2 * 44100]
    song = tmp_path / "song.wav"
    sf.write(song, mix.T, 44100, subtype="FLOAT")
    env = fast_env(DEMIXER_URL_ALLOWLIST="127.0.0.1", DEMIXER_WEBHOOK_BACKOFF_SECONDS="2")
    data_dir = tmp_path / "serve"
    first = start_server(data_dir, env=env)
    try:
        client = first.client()
        up = client.post("/v1/files", files={"file": ("song.wav", song.read_bytes(), "audio/wav")})
        r = client.post(
            "/v1/queue/audio/stems",
            json={
                "input": {"file_id": up.json()["file_id"], "model": "spleeter-2stems"},
                "webhook": {"url": receiver.url("/restart")},
            },
        )
        assert r.status_code == 202, r.text
        job_id, secret = r.json()["request_id"], r.json()["webhook"]["signing_secret"]
        client.close()
        # Killed "between retries": once the first attempt's failure is written down (its
        # lease given back), before the second is claimed (1-2 s later at this backoff). Read
        # in the database, at once: the status API reads 1 attempt from the first claim on,
        # and a poll of it on a loaded machine could be late by more than the backoff (the
        # killed server then held the second attempt's lease, for a minute).
        db = Database(server_database_url(data_dir))
        attempt = select(Delivery.attempts, Delivery.lease_owner, Delivery.last_status_code)

        def failed_once() -> bool:
            with db.read() as s:
                row = s.execute(attempt.where(Delivery.job_id == job_id)).one_or_none()
            return row is not None and tuple(row) == (1, None, 500)

        try:
            wait_for(failed_once, timeout=60, every=0.05)
        finally:
            db.dispose()
    finally:
        first.kill()  # SIGKILL: the dispatcher dies with its retry pending
    assert len(receiver.to("/restart")) == 1
    with running_server(data_dir, env=env) as second:
        client = second.client(first.key)

        def delivered() -> dict[str, Any] | None:
            r = client.get(f"/v1/queue/requests/{job_id}/status")
            assert r.status_code == 200, r.text
            hook = r.json()["webhook"]
            return hook if hook["delivery_status"] == "delivered" else None

        status = wait_for(delivered, timeout=90, every=SERVER_POLL)
    assert status["attempts"] == 3
    calls = receiver.to("/restart")
    assert len(calls) == 3
    assert len({c.headers["webhook-id"] for c in calls}) == 1  # one event, retried
    event = verify(calls[-1].headers, calls[-1].body, secret)
    assert event["type"] == "audio.separate.completed" and event["request_id"] == job_id


def test_a_database_outage_is_logged_once_as_it_begins_and_once_as_it_ends(
    make_api: Callable[..., Api], caplog: pytest.LogCaptureFixture
) -> None:
    """The dispatcher polls every tenth of a second here (half a second by default): an
    outage once logged a line per poll (157 in 75 s). It says when it begins and when it
    ends."""
    api = make_api(**FAST)
    real = api.services.db
    down = Database(f"postgresql+psycopg://demixer@127.0.0.1:{free_port()}/demixer")
    polls = 0
    with dispatching(api.services) as dispatcher:
        claim = dispatcher.claim

        def counted() -> Any:
            nonlocal polls
            polls += 1
            return claim()

        dispatcher.claim = counted  # type: ignore[method-assign]
        with caplog.at_level("WARNING", logger="demixer.webhooks"):
            api.services.db = down
            start = polls
            wait_for(lambda: polls >= start + 10)
            api.services.db = real
            start = polls
            wait_for(lambda: polls >= start + 3)
    down.dispose()
    lines = [r.getMessage() for r in caplog.records if r.name == "demixer.webhooks"]
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"{dispatcher.id}: the database is unavailable (")
    assert lines[0].endswith("); retrying until it is back")
    assert lines[1] == f"{dispatcher.id}: the database is back"


def test_an_event_queued_before_webhooks_were_turned_off_is_never_sent(
    make_api: Callable[..., Api], receiver: Receiver
) -> None:
    """DEMIXER_WEBHOOKS=false refuses new webhooks at submit; an event of a request queued
    before the switch was still sent, to a network the operator had closed."""
    api = make_api(**FAST)
    job_id, _ = submit(api, api.upload(), receiver.url("/hook"))
    api.worker_done(job_id)
    settings = api.services.settings.model_copy(update={"webhooks": False})
    dispatcher = Dispatcher(replace(api.services, settings=settings))
    claim = dispatcher.claim()
    assert claim is not None
    with dispatcher.client() as client:
        assert dispatcher.deliver(client, claim) == "failed"
    assert receiver.to("/hook") == []
    status = hook_status(api, job_id)
    assert (status["delivery_status"], status["attempts"]) == ("failed", 1)
    assert status["last_error"] == (
        "this server sends no webhooks or callbacks (its operator turned DEMIXER_WEBHOOKS off): "
        "leave the callback URL out and ask for the request's status instead"
    )
