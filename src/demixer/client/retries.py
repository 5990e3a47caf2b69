"""When the clients send a call again, and how long ``wait`` rides out a server that does
not answer: the retry and outage policy that :class:`~demixer.client.Client` and
:class:`~demixer.client.AsyncClient` share.

No I/O happens here: the clients ask these functions, after each answer or broken
connection, whether to send again and after how long (seconds), and sleep themselves.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from demixer.client.errors import ApiError, ClientError, ConnectionFailed, WaitTimeout
from demixer.retry_after import retry_after

__all__ = [
    "GATEWAY_ERRORS",
    "MAX_OUTAGE_PAUSE",
    "MAX_RETRY_WAIT",
    "OUTAGE_PATIENCE",
    "Call",
    "Deadline",
    "Outage",
    "closed_when_sent",
    "first_send_running",
    "may_have_landed",
    "naming_the_job",
    "pause_within",
    "repeated_answer",
    "retry_delay",
    "transport_retry_delay",
]

MAX_RETRY_WAIT = 60.0  # seconds: a 429 asking for longer is raised, not slept through
OUTAGE_PATIENCE = 300.0  # seconds ``wait`` without a timeout rides out an unanswering server
MAX_OUTAGE_PAUSE = 10.0  # seconds between status reads while the server does not answer
# A reverse proxy's or load balancer's answers when the server behind it does not answer (it
# is restarting, or too slow): Bad Gateway and Gateway Timeout.
GATEWAY_ERRORS = (502, 504)


@dataclass(frozen=True)
class Call:
    """One HTTP request, before any I/O. ``signed`` URLs carry their own authorisation and
    are sent without the API key (they may point at object storage, not at demixer)."""

    method: str
    url: str
    params: Mapping[str, str] | None = None
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    signed: bool = False
    repeatable: bool = False
    # wait() has another way when this call is refused (the event stream: it polls instead).
    fallback: bool = False

    @property
    def gateway_retried(self) -> bool:
        """Whether a proxy's 502/504 is waited out and the call sent again: when it is safe to
        repeat, unless ``fallback`` (a proxy that refuses event streams answers 502 to every
        try: polling at once beats 15 s of retries)."""
        return self.safe_to_repeat and not self.fallback

    @property
    def safe_to_repeat(self) -> bool:
        """Whether sending it twice does what sending it once does: GET, PUT and DELETE, a
        POST with an ``Idempotency-Key`` (the server answers a repeat with the first
        answer), and POSTs idempotent by design (``repeatable``, e.g. completing an upload)."""
        if self.method in ("GET", "HEAD", "PUT", "DELETE") or self.repeatable:
            return True
        return any(k.lower() == "idempotency-key" for k in self.headers)


def retry_delay(
    response: httpx.Response, attempt: int, tries: int, *, retry_gateway: bool = False
) -> float | None:
    """Seconds to wait before sending again, or None to answer with ``response``.

    429 (rate limited) and 503 (the server's database or object storage is briefly
    unavailable) are retried: the server did not act on the request, so even a POST may be
    sent again. So is a 409 ``IDEMPOTENCY_IN_PROGRESS`` (:func:`first_send_running`). A
    proxy's 502 or 504 (:data:`GATEWAY_ERRORS`: the server behind it restarting,
    or slow) is retried only with ``retry_gateway`` (:attr:`Call.gateway_retried`): the server
    may have acted on the request. ``Retry-After`` (seconds or an HTTP date) is honoured up
    to :data:`MAX_RETRY_WAIT`; without one the wait doubles from 1 s. ``attempt`` counts from
    1 up to ``tries``.
    """
    status = response.status_code
    retried = (
        status in (429, 503)
        or (retry_gateway and status in GATEWAY_ERRORS)
        or first_send_running(response)
    )
    if not retried or attempt >= tries:
        return None
    delay = retry_after(response.headers.get("retry-after"), 2.0 ** (attempt - 1))
    return delay if delay <= MAX_RETRY_WAIT else None


def first_send_running(response: httpx.Response) -> bool:
    """Whether ``response`` is a 409 ``IDEMPOTENCY_IN_PROGRESS``: the call was sent again
    with its ``Idempotency-Key`` (its first send's answer was lost with a cut connection, and
    a repeat goes out at once) while the server was still acting on that first send. Nothing
    was done twice, and sent again shortly it gets the first send's answer: the job or file
    it made. Raised, it told the user to retry, and left them no id for what was made."""
    if response.status_code != 409:
        return False
    try:
        body = response.json()
    except (httpx.ResponseNotRead, ValueError, UnicodeDecodeError):
        return False  # a streamed answer (GETs), or not demixer's JSON
    error = body.get("error") if isinstance(body, dict) else None
    return isinstance(error, dict) and error.get("code") == "IDEMPOTENCY_IN_PROGRESS"


def transport_retry_delay(call: Call, exc: httpx.HTTPError, attempt: int, tries: int) -> float:
    """Seconds to wait before sending ``call`` again after a broken connection, or raise.

    A call that is safe to repeat (:attr:`Call.safe_to_repeat`) is sent again when the
    connection failed or broke (the server restarted, a load balancer moved it); any call is
    sent again when it never reached the server (connection refused). Waits 1, 2, 4, 8 s.
    """
    transport = isinstance(exc, httpx.TransportError)
    never_sent = isinstance(exc, httpx.ConnectError)
    if attempt >= tries or not transport or not (call.safe_to_repeat or never_sent):
        raise exc
    return float(2 ** (attempt - 1))


def closed_when_sent(call: Call, exc: httpx.HTTPError, resent: bool) -> bool:
    """Whether to send ``call`` again at once, on a new connection, outside ``max_tries``:
    the connection closed before any answer came (httpx: "Server disconnected without
    sending a response", or a reset), and ``call`` is safe to repeat, and was not resent so
    already.

    That is how a server ends a keep-alive connection whose idle time ran out just as the
    client's pool sent the next request on it (uvicorn: ``DEMIXER_KEEP_ALIVE_SECONDS``; a
    load balancer likewise): nothing is wrong with the server, so neither a pause nor one of
    the caller's tries is spent on it. A server that is really gone fails the resend too.
    """
    closed = isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError)
    return closed and call.safe_to_repeat and not resent


def may_have_landed(exc_or_response: httpx.HTTPError | httpx.Response) -> bool:
    """Whether a send that is about to be repeated may have been acted on by the server: its
    connection broke after it was sent (not refused), or a proxy answered 502/504 (it passed
    the request on, and gave up waiting or lost the answer)."""
    if isinstance(exc_or_response, httpx.Response):
        return exc_or_response.status_code in GATEWAY_ERRORS
    return not isinstance(exc_or_response, httpx.ConnectError)


def repeated_answer(call: Call, response: httpx.Response, landed: bool) -> httpx.Response:
    """``response``, or 204 No Content in place of a 404 to a DELETE sent again after an
    earlier send that ``landed`` (:func:`may_have_landed`): that send deleted what was
    asked, and only its answer was lost. A DELETE of something already gone is a 404 still."""
    if landed and call.method == "DELETE" and response.status_code == 404:
        response.close()
        return httpx.Response(204, request=response.request)
    return response


class Deadline:
    """An overall time limit for ``wait``; ``None`` seconds means none."""

    def __init__(self, seconds: float | None, request_id: str) -> None:
        self.request_id = request_id
        self.seconds = seconds
        self.at = None if seconds is None else time.monotonic() + seconds

    def check(self) -> None:
        if self.at is not None and time.monotonic() >= self.at:
            raise WaitTimeout(
                f"request {self.request_id} did not finish in {self.seconds:g} s",
                request_id=self.request_id,
            )

    def nap(self, interval: float) -> float:
        """``interval``, shortened so a sleep does not overshoot the deadline."""
        if self.at is None:
            return interval
        return max(0.0, min(interval, self.at - time.monotonic()))


class Outage:
    """``wait``'s patience with a server that does not answer (unreachable, restarting, or
    answering 429/503, or a proxy in front of it answering 502/504): it asks again, 1 s then
    doubling up to :data:`MAX_OUTAGE_PAUSE`, until the wait's deadline (then
    :class:`WaitTimeout`), or for :data:`OUTAGE_PATIENCE` seconds without one (then
    :class:`ConnectionFailed` naming the job, which goes on on the server).
    """

    def __init__(self, deadline: Deadline) -> None:
        self.deadline = deadline
        self._since: float | None = None
        self._pause = 1.0

    def failed(self, exc: ClientError) -> float:
        """Seconds to pause before asking again, or raise: ``exc`` itself when it is not an
        outage (e.g. 404: the request is gone), or as above."""
        outage = isinstance(exc, ConnectionFailed) or (
            isinstance(exc, ApiError) and exc.status in (429, 503, *GATEWAY_ERRORS)
        )
        if not outage:
            raise exc
        now = time.monotonic()
        if self._since is None:
            self._since = now
        if self.deadline.at is None and now - self._since >= OUTAGE_PATIENCE:
            rid = self.deadline.request_id
            raise ConnectionFailed(
                f"{exc}; no answer for {OUTAGE_PATIENCE:g} s: request {rid} goes on on the "
                "server, wait for it again later",
                request_id=rid,
            ) from exc
        pause = pause_within(self.deadline, self._pause)
        self._pause = min(2 * self._pause, MAX_OUTAGE_PAUSE)
        return pause

    def answered(self) -> None:
        self._since, self._pause = None, 1.0


def pause_within(deadline: Deadline | None, seconds: float) -> float:
    """``seconds`` to pause before sending again, shortened to a ``deadline`` (WaitTimeout
    once it has passed)."""
    if deadline is None:
        return seconds
    deadline.check()
    return deadline.nap(seconds)


@contextmanager
def naming_the_job(request_id: str, *, finished: bool = False) -> Iterator[None]:
    """A connection failure past the submit names the job: one it leaves running on the
    server, or, once the job has ``finished`` (fetching its result and outputs), one whose
    outputs wait there. A download cut there said the job "goes on", as if it still ran."""
    try:
        yield
    except ConnectionFailed as exc:
        if exc.request_id is None:
            exc.request_id = request_id
            where = "finished on the server; its outputs are kept there until they expire"
            if not finished:
                where = "goes on on the server"
            exc.message = f"{exc.message} (request {request_id} {where})"
            exc.args = (exc.message,)
        raise
