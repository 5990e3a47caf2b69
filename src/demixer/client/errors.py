"""What the client raises: a branch of demixer's one error tree (:mod:`demixer.errors`).

httpx's exceptions are translated here, at the client's one boundary, into
:class:`ConnectionFailed`; an error answer from the API becomes :class:`ApiError` with the
server's own ``code``; a job that ends badly becomes :class:`JobFailed` or :class:`JobCancelled`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

import httpx

from demixer import errors

__all__ = [
    "ApiError",
    "BadResponse",
    "ClientError",
    "ConnectionFailed",
    "JobCancelled",
    "JobFailed",
    "WaitTimeout",
    "local_class",
    "shown_url",
    "translate_transport_errors",
]


class ClientError(errors.DemixerError):
    """Base of what :class:`~demixer.client.Client` raises on purpose."""

    code = "CLIENT_ERROR"


class ConnectionFailed(ClientError):
    """The server could not be reached, or the connection broke (httpx transport error).

    Attributes:
        request_id: the job's id when one was queued before the connection failed (it goes on
            on the server: wait for it again, or fetch its result, later); else None.
    """

    code = "CONNECTION_FAILED"

    def __init__(self, message: str, *, request_id: str | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


class BadResponse(ClientError):
    """The server answered something that is not the API's documented shape."""

    code = "BAD_RESPONSE"


class WaitTimeout(ClientError, TimeoutError):
    """``wait(timeout=...)`` ran out before the job finished; the job goes on.

    Attributes:
        request_id: the job's id, to wait for it again or fetch its result later.
    """

    code = "WAIT_TIMEOUT"

    def __init__(self, message: str, *, request_id: str) -> None:
        super().__init__(message)
        self.request_id = request_id


class ApiError(ClientError):
    """An error answer: ``{"error": {"code", "message", "param", "request_id"}}``.

    Attributes:
        status: the HTTP status (e.g. 422).
        code: the server's stable code, e.g. ``INVALID_AUDIO`` or ``RATE_LIMITED``.
        message: what is wrong, in words.
        param: the request field at fault (``input.stems``), when there is one.
        request_id: the server's id for this HTTP request (its ``x-request-id``), for its log.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        param: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message, param=param)
        self.status = status
        self.code = code
        self.request_id = request_id

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"


class JobFailed(ClientError, errors.JobFailed):
    """A job ended FAILED; ``code`` and ``message`` are the failure's (e.g. ``INVALID_AUDIO``)."""

    def __init__(self, request_id: str, code: str, message: str) -> None:
        errors.JobFailed.__init__(self, message, code=code)
        self.request_id = request_id

    def __str__(self) -> str:
        return f"request {self.request_id} failed: {self.code}: {self.message}"


class JobCancelled(ClientError, errors.Cancelled):
    """A job ended CANCELLED (by ``cancel()`` or by anyone else with the key)."""

    code = "CANCELLED"

    def __init__(self, request_id: str) -> None:
        super().__init__(f"request {request_id} was cancelled")
        self.request_id = request_id


@cache
def _by_code() -> dict[str, type[errors.DemixerError]]:
    found: dict[str, type[errors.DemixerError]] = {}
    pending: list[type[errors.DemixerError]] = [errors.DemixerError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.__module__ == errors.__name__:
            found.setdefault(cls.code, cls)
    return found


def local_class(code: str) -> type[errors.DemixerError]:
    """The :mod:`demixer.errors` class the server raised for ``code`` (``DemixerError`` if
    none), so a remote error maps to the same CLI exit code as a local one."""
    return _by_code().get(code, errors.DemixerError)


def shown_url(url: str | httpx.URL) -> str:
    """``url`` as an error message names it: without its query, since a signed URL's query is
    the key to its file (anyone who reads the log line could fetch the stems)."""
    return str(url).split("?", 1)[0]


@contextmanager
def translate_transport_errors(url: str) -> Iterator[None]:
    """Turn httpx's transport and stream errors into :class:`ConnectionFailed`."""
    shown = shown_url(url)
    try:
        yield
    except httpx.TimeoutException as exc:
        raise ConnectionFailed(f"{shown}: timed out ({type(exc).__name__})") from exc
    except httpx.HTTPError as exc:
        raise ConnectionFailed(f"{shown}: {str(exc) or type(exc).__name__}") from exc
