"""Request bodies: a size limit on every route, counted while the bytes arrive, and JSON parsing
that never crashes.

:class:`BodyLimitMiddleware` counts each request's body as it is received. The upload routes
(:data:`UPLOAD_ROUTES`: signed PUTs, multipart forms) may send ``max_upload_bytes`` plus a
form's overhead, and count the file itself exactly where they store it; every other route may
send ``max_json_body_bytes`` (a JSON request is a few hundred bytes). A body over its limit is
refused at once when its ``Content-Length`` says so, else as soon as the counted bytes pass the
limit: the request is answered 413 in its protocol's envelope (``REQUEST_TOO_LARGE``, or
``FILE_TOO_LARGE`` on upload routes) and nothing more is read or parsed. A body that stops
arriving (no bytes for ``idle_timeout`` seconds: a slow or stalled client holding a connection),
or that past that time averages under :data:`MIN_BODY_RATE`, is answered 408
``REQUEST_TIMEOUT`` the same way.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from demixer.api.errors import Envelope, render_error
from demixer.api.scope import body_encoding, content_length, content_type, may_have_body
from demixer.api.text import body_refusal
from demixer.errors import (
    DemixerError,
    FileTooLarge,
    InvalidRequest,
    RequestTimeout,
    RequestTooLarge,
    UnsupportedEncoding,
)
from demixer.settings import MIN_BODY_RATE

__all__ = [
    "FORM_OVERHEAD",
    "MIN_BODY_RATE",
    "UPLOAD_ROUTES",
    "BodyLimitMiddleware",
    "JsonRoute",
    "UploadRoute",
    "parse_json",
]

FORM_OVERHEAD = 1 << 20  # bytes of multipart headers, boundaries and small fields beside a file


@dataclass(frozen=True)
class UploadRoute:
    """A route whose body is an upload: ``method`` on a path matching ``path`` (a regular
    expression), with a body of ``content_type`` (None: any)."""

    method: str
    path: str
    content_type: str | None = None

    def matches(self, scope: Scope) -> bool:
        if scope.get("method") != self.method or not re.fullmatch(self.path, scope["path"]):
            return False
        if self.content_type is None:
            return True
        return content_type(scope) == self.content_type


UPLOAD_ROUTES = (
    UploadRoute("PUT", r"/v1/blobs/.+"),
    UploadRoute("POST", r"/v1/files/?", "multipart/form-data"),
    UploadRoute("PUT", r"/developers/api/v1/files/upload-multipart/part/.+"),
    UploadRoute("POST", r"/api/public/v1/Extraction/?", "multipart/form-data"),
)


_NOT_JSON = "the request body is not valid JSON (or is nested too deeply)"


def parse_json(raw: bytes) -> Any:
    """``raw`` parsed as JSON; anything that is not (bad syntax, bad UTF-8, nesting too deep
    for the parser, a string holding text no field takes: see ``demixer.api.text``) is an
    ``InvalidRequest``, never a crash."""
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        raise InvalidRequest(_NOT_JSON) from None
    refusal = body_refusal(raw)
    if refusal:
        raise InvalidRequest(refusal)
    return value


class JsonRequest(Request):
    """A request whose JSON body, as FastAPI reads it for a body model, refuses what
    :func:`parse_json` refuses (as a JSON decode error, which answers 400 ``INVALID_REQUEST``)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            raw = await self.body()
            try:
                value = json.loads(raw)
            except (UnicodeDecodeError, RecursionError):  # FastAPI: "error parsing the body"
                raise json.JSONDecodeError(_NOT_JSON, "", 0) from None
            refusal = body_refusal(raw)
            if refusal:
                raise json.JSONDecodeError(refusal, raw.decode("utf-8", "replace"), 0)
            self._json = value
        return self._json


class JsonRoute(APIRoute):
    """A route that reads its JSON body as :class:`JsonRequest` (FastAPI's documented way to
    change how a route reads its request)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            return await handler(JsonRequest(request.scope, request.receive))

        return route


class BodyLimitMiddleware:
    """Refuses request bodies over their route's limit (see the module docstring).

    Args:
        app: the application.
        json_limit: bytes any non-upload route may receive.
        upload_limit: bytes an upload's file may hold (its route may receive
            :data:`FORM_OVERHEAD` more: a form's headers and fields).
        envelopes: vendor path prefix -> its error envelope (the 413 is answered in it).
        uploads: the upload routes.
        idle_timeout: seconds a body may pause between two pieces (None: no limit).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        json_limit: int,
        upload_limit: int,
        envelopes: Mapping[str, Envelope] | None = None,
        uploads: tuple[UploadRoute, ...] = UPLOAD_ROUTES,
        idle_timeout: float | None = None,
    ) -> None:
        self.app = app
        self.idle_timeout = idle_timeout
        self.json_limit = json_limit
        self.upload_limit = upload_limit
        self.envelopes = dict(envelopes or {})
        self.uploads = uploads

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not may_have_body(scope):
            await self.app(scope, receive, send)  # nothing to count (a GET, most often)
            return
        coding = body_encoding(scope)
        if coding is not None:
            refused = UnsupportedEncoding(
                f"the request body is sent with {coding[:80]}: send it as it is, not "
                "compressed (chunked or with a Content-Length)"
            )
            await render_error(self.envelopes, scope, refused)(scope, receive, send)
            return
        if any(route.matches(scope) for route in self.uploads):
            limit = self.upload_limit + FORM_OVERHEAD  # a form's headers and fields beside it
            error: FileTooLarge = FileTooLarge.over(self.upload_limit)
        else:
            limit = self.json_limit
            error = RequestTooLarge(f"a request body here is at most {limit} bytes")
        length = content_length(scope)
        if length is not None and length > limit:
            await render_error(self.envelopes, scope, error)(scope, receive, send)
            return
        received = 0
        exceeded = started = False
        refusal: DemixerError = error
        done = False  # the whole body came: later receives wait for a disconnect, unbounded

        began = time.monotonic()

        async def counted() -> Message:
            nonlocal received, exceeded, refusal, done
            if done:
                return await receive()
            try:
                with anyio.fail_after(self.idle_timeout):
                    message = await receive()
            except TimeoutError:
                exceeded = True  # refused as a body over its limit is
                refusal = RequestTimeout(
                    f"the request body stopped arriving: nothing for {self.idle_timeout:g} s "
                    f"after {received} bytes"
                )
                raise refusal from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                done = not message.get("more_body", False)
                if received > limit:
                    exceeded = True
                    raise error
                took = time.monotonic() - began
                slow = self.idle_timeout is not None and took > self.idle_timeout
                if slow and not done and received < MIN_BODY_RATE * took:
                    exceeded = True
                    refusal = RequestTimeout(
                        f"the request body arrives too slowly: {received} bytes in {took:.0f} s "
                        f"(at least {MIN_BODY_RATE} bytes a second)"
                    )
                    raise refusal
            return message

        async def unless_exceeded(message: Message) -> None:
            nonlocal started
            if exceeded and not started:
                return  # the app's answer to the cut body: the 413 below replaces it
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, unless_exceeded)
        except Exception:
            if not exceeded or started:
                raise
        if exceeded and not started:
            await render_error(self.envelopes, scope, refusal)(scope, receive, send)
