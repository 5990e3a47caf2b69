"""Errors as HTTP: the one table from demixer's error tree to statuses, and the handlers.

Every error answers ``{"error": {"code", "message", "param", "request_id"}}`` and every
response carries ``x-request-id``. Domain code raises :class:`~demixer.errors.DemixerError`
subclasses and never an ``HTTPException``; this module alone decides the status. FastAPI's own
validation errors become 400 ``INVALID_REQUEST`` with ``param`` = the field's path. Anything
else is a 500 ``INTERNAL`` whose traceback goes to the log, never into the body.

The vendor routers answer in their own envelopes; the errors raised outside their handlers
(a crash, a body over its limit) reach this module's middlewares, which render them with the
vendor's :data:`Envelope` for its path prefix (``envelopes`` given to the app), else natively.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DBAPIError
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from demixer.api.access_log import ANSWERING
from demixer.api.head import serves
from demixer.api.scope import body_refused
from demixer.api.text import NUL, refuse_nul_in_url
from demixer.api.validation import invalid_request
from demixer.errors import (
    Conflict,
    DatabaseReadOnly,
    DatabaseUnavailable,
    DemixerError,
    FileTooLarge,
    Forbidden,
    Gone,
    InvalidAudio,
    InvalidOutput,
    InvalidRequest,
    JobFailed,
    ModelUnavailable,
    NotFound,
    QuotaExceeded,
    RangeNotSatisfiable,
    RateLimited,
    RequestTimeout,
    ServiceUnavailable,
    StorageFull,
    StorageUnavailable,
    UnknownModel,
    UnknownQuality,
    UnknownStem,
    UnsupportedMediaType,
)
from demixer.service.accounts.keys import Unauthorized, new_id
from demixer.service.db import is_disk_full, is_nul_text, is_read_only, is_unavailable
from demixer.service.jobs.queue import JobConflict
from demixer.storage import BlobNotFound

__all__ = [
    "STATUS",
    "Envelope",
    "RequestIdMiddleware",
    "as_demixer_error",
    "error_body",
    "error_response",
    "install_error_handlers",
    "render_error",
    "request_id",
    "status_for",
]

Envelope = Callable[[DemixerError], Response]
"""A protocol's rendering of an error (a vendor router's envelope)."""

log = logging.getLogger("demixer.api")

# The one table. The most specific class in an error's MRO wins.
STATUS: dict[type[DemixerError], int] = {
    InvalidRequest: 400,  # SIZE_MISMATCH, INVALID_AUDIO_URL, URL_REFUSED, INVALID_REQUEST
    InvalidOutput: 400,  # output format / bit depth
    Unauthorized: 401,  # UNAUTHENTICATED
    QuotaExceeded: 402,  # QUOTA_EXCEEDED: the account's audio minutes this month are used up
    Forbidden: 403,  # PERMISSION_DENIED (scope), INVALID_SIGNATURE
    NotFound: 404,
    BlobNotFound: 404,
    UnknownModel: 404,  # UNKNOWN_MODEL (queue path or `input.model`)
    Conflict: 409,  # NOT_READY, FILE_NOT_READY, FILE_ALREADY_UPLOADED
    JobConflict: 409,  # JOB_CONFLICT
    RequestTimeout: 408,  # REQUEST_TIMEOUT: a body that stopped arriving
    Gone: 410,  # URL_EXPIRED, FILE_EXPIRED
    FileTooLarge: 413,
    UnsupportedMediaType: 415,  # UNSUPPORTED_MEDIA_TYPE, CONTENT_TYPE_MISMATCH, ..._ENCODING
    RangeNotSatisfiable: 416,  # a download's Range past the end
    InvalidAudio: 422,  # INVALID_AUDIO, DURATION_LIMIT
    UnknownStem: 422,  # UNKNOWN_STEM, UNSUPPORTED_PROMPT
    UnknownQuality: 422,  # UNKNOWN_QUALITY (`input.quality`)
    ModelUnavailable: 422,  # MODEL_UNAVAILABLE (and its checksum/download variants)
    JobFailed: 422,  # the failed job's own code
    RateLimited: 429,
    StorageUnavailable: 503,  # STORAGE_UNAVAILABLE: object storage unreachable, retry
    StorageFull: 507,  # STORAGE_FULL: the disk is full, nothing was stored; retry later
    DatabaseUnavailable: 503,  # DATABASE_UNAVAILABLE: PostgreSQL down or restarting, retry
    # (DATABASE_READ_ONLY, its subclass: a standby, a read-only file, no write rights)
    DemixerError: 500,  # MODEL_FAILED and anything not listed above
}

# Starlette's own HTTP errors (no route, wrong method, unparsable multipart) in the same shape.
_HTTP_CODES = {
    400: "INVALID_REQUEST",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "FILE_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
}


def status_for(error: DemixerError) -> int:
    """The HTTP status for ``error``."""
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def request_id(scope_or_request: Scope | Request) -> str | None:
    """The id :class:`RequestIdMiddleware` gave this request."""
    scope = scope_or_request.scope if isinstance(scope_or_request, Request) else scope_or_request
    state = scope.get("state") or {}
    value = state.get("request_id")
    return str(value) if value is not None else None


def error_body(
    code: str, message: str, param: str | None = None, rid: str | None = None
) -> dict[str, Any]:
    """The JSON body of an error response."""
    return {"error": {"code": code, "message": message, "param": param, "request_id": rid}}


def error_response(exc: DemixerError, rid: str | None) -> JSONResponse:
    """``exc`` in the native shape, with its status (and ``Retry-After`` where waiting helps:
    RATE_LIMITED, TOO_MANY_CONCURRENT_JOBS, STORAGE_UNAVAILABLE, DATABASE_UNAVAILABLE,
    DATABASE_READ_ONLY, STORAGE_FULL; ``WWW-Authenticate`` on UNAUTHENTICATED;
    ``Content-Range`` with the size on RANGE_NOT_SATISFIABLE)."""
    headers = None
    if isinstance(exc, RateLimited | ServiceUnavailable):
        headers = {"Retry-After": str(exc.retry_after)}
    elif isinstance(exc, Unauthorized):  # RFC 9110: a 401 names the scheme it wants
        headers = {"WWW-Authenticate": "Bearer"}
    elif isinstance(exc, RangeNotSatisfiable):
        headers = {"Content-Range": f"bytes */{exc.size}"}
    return JSONResponse(
        error_body(exc.code, exc.message, exc.param, rid),
        status_code=status_for(exc),
        headers=headers,
    )


def render_error(envelopes: Mapping[str, Envelope], scope: Scope, error: DemixerError) -> Response:
    """``error`` as the protocol serving ``scope``'s path answers it: the vendor envelope of
    the longest matching prefix in ``envelopes``, else the native shape."""
    path = str(scope.get("path", ""))
    matches = [p for p in envelopes if path == p or path.startswith(p.rstrip("/") + "/")]
    if matches:
        return envelopes[max(matches, key=len)](error)
    return error_response(error, request_id(scope))


async def _demixer_error(request: Request, exc: Exception) -> JSONResponse:
    return error_response(as_demixer_error(exc), request_id(request))


def as_demixer_error(exc: Exception) -> DemixerError:
    """``exc`` as the error its caller is answered (the native shape, or a vendor's
    envelope): demixer's own errors as they are, a full disk
    (the database's, or an ``OSError`` on the way) as :class:`StorageFull`, a database that
    takes no writes as :class:`DatabaseReadOnly`, an unreachable one as
    :class:`DatabaseUnavailable`, a NUL PostgreSQL cannot store (from where no
    check of ``api/text.py`` looks: a header) as :class:`InvalidRequest`; anything else is
    raised again (a bug: a 500). One the server is at fault for (5xx) is logged here, with
    the request id its caller was answered (theirs to quote), whichever protocol answers."""
    error = _translated(exc)
    answering = ANSWERING.get()
    if status_for(error) >= 500 and answering is not None:
        method, path, rid = answering
        disk = _which_disk(error, exc)
        line = "%s %s failed: %s: %s (request %s)%s"
        log.error(line, method, path, error.code, error.message, rid, disk)
    return error


def _which_disk(error: DemixerError, exc: Exception) -> str:
    """For the operator's log line of a full disk: which one, the data directory's and the
    database's being apart at times (the client's message names no server path)."""
    if not isinstance(error, StorageFull):
        return ""
    if error.where is not None:
        return f"; the disk under {error.where} is full"
    if is_disk_full(exc):
        return "; the database's disk is full"
    return ""


def _translated(exc: Exception) -> DemixerError:
    if isinstance(exc, DemixerError):
        return exc
    if is_disk_full(exc) or StorageFull.caused(exc):
        return StorageFull()
    if is_read_only(exc):  # a standby after a failover: not "retry shortly", nor a bug
        return DatabaseReadOnly()
    if is_unavailable(exc):
        return DatabaseUnavailable()
    if is_nul_text(exc):
        return InvalidRequest(f"the request holds {NUL}")
    raise exc


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    """SQLAlchemy's errors, translated at this boundary: an unreachable database is a 503
    ``DATABASE_UNAVAILABLE`` (the pool reconnects once it is back); anything else is a bug."""
    return await _demixer_error(request, exc)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    whole = bool(errors) and tuple(errors[0].get("loc", ())) == ("body",)
    refusal = body_refused(request.scope) if whole else None
    return error_response(refusal or invalid_request(errors), request_id(request))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "INTERNAL" if exc.status_code >= 500 else "ERROR")
    message = str(exc.detail) if exc.detail else code.replace("_", " ").lower()
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route {request.method} {request.url.path}"
        # Said, not redirected to (create_app): a redirect named the Host header's address.
        bare = request.url.path.rstrip("/")
        routes = request.app.router.routes
        if (
            bare
            and bare != request.url.path
            and serves(routes, {**request.scope, "path": bare}, request.method)
        ):
            message += f"; {bare}, without the trailing slash, is one"
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(_allowed(request))
        message = f"{request.url.path} takes {headers['Allow']}, not {request.method}"
    return JSONResponse(
        error_body(code, message, None, request_id(request)),
        status_code=exc.status_code,
        headers=headers or None,
    )


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed(request: Request) -> list[str]:
    """Every method some route answers at this request's path (Starlette's 405 names only the
    first such route's), HEAD wherever GET is (``api/head.py``)."""
    routes = request.app.router.routes
    allowed = [method for method in _METHODS if serves(routes, request.scope, method)]
    if "GET" in allowed and "HEAD" not in allowed:
        allowed.insert(1, "HEAD")
    return allowed


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that answer every error in the one shape."""
    app.add_exception_handler(DemixerError, _demixer_error)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)


class RequestIdMiddleware:
    """Gives each request an id (``x-request-id``), refuses a NUL in its URL (400
    ``INVALID_REQUEST``), and turns unexpected exceptions into 500s (a client that left while
    its body was arriving is one line at INFO, not a crash).

    It sits outside FastAPI's exception handlers, so even a crash answers the error shape with
    the header (the vendor's own envelope under a vendor prefix, see :func:`render_error`); the
    traceback is logged with the request id, never sent.
    """

    def __init__(self, app: ASGIApp, envelopes: Mapping[str, Envelope] | None = None) -> None:
        self.app = app
        self.envelopes = dict(envelopes or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = new_id("rid")
        scope.setdefault("state", {})["request_id"] = rid
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                MutableHeaders(scope=message).append("x-request-id", rid)
            await send(message)

        answering = ANSWERING.set((str(scope.get("method")), str(scope["path"]), rid))
        try:
            refuse_nul_in_url(scope)  # a %00 would reach a database lookup: api/text.py
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:
            # The client closed its connection before its body had arrived (an upload
            # cancelled, a phone off its network): no one is left to answer and nothing failed
            # here. Logged as a crash, each one wrote a traceback of 60 to 100 lines.
            log.info(
                "the client left during %s %s (request %s)", scope.get("method"), scope["path"], rid
            )
        except Exception as exc:
            try:
                error = as_demixer_error(exc)  # a full disk or a database outage
            except Exception:
                log.exception(
                    "unhandled error in %s %s (request %s)", scope.get("method"), scope["path"], rid
                )
                error = DemixerError("internal server error; the log has details")
            if started:  # mid-body: nothing to do but drop the connection
                raise
            await render_error(self.envelopes, scope, error)(scope, receive, send_with_id)
        finally:
            ANSWERING.reset(answering)
