"""Gaudio's envelope ``{resultCode, resultData, resultMessage}`` and the one error table.

Business errors answer HTTP 200 with a ``resultCode`` other than 1000; only key and rate-limit
problems (400, 401, 403, 429), a request body over its limit (413), an object storage outage
(503, with ``Retry-After``) and a full disk (507, with ``Retry-After``) are HTTP errors.
:class:`GaudioRoute` turns every :class:`~demixer.errors.DemixerError` raised by a route (or
its dependencies) into that shape.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy.exc import DBAPIError

from demixer.api.errors import as_demixer_error
from demixer.api.validation import invalid_request
from demixer.errors import (
    Conflict,
    DemixerError,
    DurationLimit,
    FileExpired,
    FileNotReady,
    FileTooLarge,
    Forbidden,
    InvalidAudio,
    InvalidRequest,
    NotFound,
    QuotaExceeded,
    RateLimited,
    RequestTimeout,
    RequestTooLarge,
    ResultExpired,
    ServiceUnavailable,
    StorageFull,
    UnsupportedMediaType,
    UrlExpired,
)
from demixer.service.accounts.keys import Unauthorized

__all__ = [
    "CODES",
    "SUCCESS",
    "BadFileName",
    "GaudioRoute",
    "JobNotFound",
    "KeyMissing",
    "NoSuchUpload",
    "TypeMissing",
    "UnsupportedChannels",
    "UnsupportedRate",
    "UploadNotFound",
    "ZeroLength",
    "error_response",
    "ok",
]

log = logging.getLogger("demixer.vendors.gaudio")

SUCCESS = 1000


class KeyMissing(Unauthorized):
    """No ``x-ga-apikey`` header (Gaudio answers 400, not 401)."""


class JobNotFound(NotFound):
    """No such job for this key (1104)."""


class UploadNotFound(NotFound):
    """No such upload id for this key (1105)."""


class NoSuchUpload(NotFound):
    """A part PUT for an upload deleted or expired: HTTP 404, as a bucket answers a part of an
    upload aborted or gone (the part URL stands in for a presigned one)."""


class BadFileName(InvalidRequest):
    """``fileName`` missing, without an extension, or with a path in it (1113)."""


class TypeMissing(InvalidRequest):
    """``type`` missing or empty on job creation (1122)."""


class ZeroLength(InvalidAudio):
    """The upload holds no audio samples (1108)."""


class UnsupportedRate(InvalidAudio):
    """A sample rate outside 16–192 kHz (1014)."""


class UnsupportedChannels(InvalidAudio):
    """More than two channels (1015)."""


# The one table. Values under 1000 are HTTP statuses (key and rate problems); the others are
# resultCodes answered with HTTP 200. The most specific class in an error's MRO wins.
CODES: dict[type[DemixerError], int] = {
    KeyMissing: 400,
    Unauthorized: 401,
    Forbidden: 403,  # a key without the scope; a tampered signed part URL
    NoSuchUpload: 404,
    RateLimited: 429,
    RequestTooLarge: 413,  # a JSON body over its limit (read no further)
    RequestTimeout: 408,  # a body that stopped arriving (dropped)
    ServiceUnavailable: 503,  # database or object storage unreachable: retry (Retry-After)
    StorageFull: 507,  # the disk is full: nothing was stored, retry (Retry-After)
    UnsupportedRate: 1014,
    UnsupportedChannels: 1015,
    QuotaExceeded: 1102,  # insufficient credits: the account's monthly audio minutes
    JobNotFound: 1104,
    ResultExpired: 1104,  # the job's outputs are deleted: as good as gone
    UploadNotFound: 1105,
    NotFound: 1105,
    FileNotReady: 1105,  # an upload never completed
    FileExpired: 1106,
    UrlExpired: 1106,
    InvalidAudio: 1107,
    UnsupportedMediaType: 1107,
    ZeroLength: 1108,
    DurationLimit: 1109,
    FileTooLarge: 1110,
    BadFileName: 1113,
    TypeMissing: 1122,
    InvalidRequest: 1100,
    Conflict: 1100,
    DemixerError: 1100,  # unknown stems, unavailable models, anything else
}

_HTTP_NAMES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    408: "request_timeout",
    413: "request_entity_too_large",
    429: "too_many_requests",
    503: "service_unavailable",
    507: "insufficient_storage",
}


def code_for(error: DemixerError) -> int:
    """Gaudio's HTTP status (< 1000) or resultCode for ``error``."""
    for cls in type(error).__mro__:
        if cls in CODES:
            return CODES[cls]
    return 1100


def ok(data: Any) -> JSONResponse:
    """A success envelope around ``data``."""
    return JSONResponse({"resultCode": SUCCESS, "resultData": data})


def error_response(error: DemixerError) -> JSONResponse:
    """``error`` as Gaudio answers it."""
    code = code_for(error)
    if code < 1000:
        headers = None
        if isinstance(error, RateLimited | ServiceUnavailable):
            headers = {"Retry-After": str(error.retry_after)}
        body = {"error": _HTTP_NAMES.get(code, "error"), "message": error.message}
        return JSONResponse(body, status_code=code, headers=headers)
    if code == 1100 and not isinstance(error, (InvalidRequest, Conflict)):
        log.warning("gaudio request failed: %s: %s", error.code, error.message)
    return JSONResponse({"resultCode": code, "resultData": None, "resultMessage": error.message})


class GaudioRoute(APIRoute):
    """A route answering demixer's errors (and FastAPI's validation errors) as envelopes."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except (DemixerError, DBAPIError) as exc:
                return error_response(as_demixer_error(exc))
            except RequestValidationError as exc:
                return error_response(invalid_request(list(exc.errors())))

        return route
