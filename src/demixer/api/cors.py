"""CORS: browser apps on the origins ``DEMIXER_CORS_ORIGINS`` lists may call every API surface.

Off unless the operator lists origins (the bundled web page is same-origin and needs none):
off, answers are left as they are and a preflight is refused saying so. On, it covers every
path: the native API, the vendor protocols (their key headers included), signed blob URLs (a
browser's ``PUT`` upload with its ``Content-Type``) and the SSE stream.

- A preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) is answered
  here, before any route: 204 with the methods and headers the protocols use when the origin,
  the method and every requested header are allowed; else 403 ``ORIGIN_NOT_ALLOWED`` naming
  what was refused, with no CORS headers (the browser refuses the request; the message is for
  whoever reads the network panel or runs curl). A preflight asking to reach a private network
  (``Access-Control-Request-Private-Network: true``: Chrome's Private Network Access, sent when
  a page on a public site calls a server on the user's LAN or loopback, which is where this
  server usually runs) is allowed with ``Access-Control-Allow-Private-Network: true``: the
  operator listing the origin is the consent Chrome asks for.
- Any other answer to a listed origin (with ``*``: every answer) carries
  ``Access-Control-Allow-Origin`` and ``Access-Control-Expose-Headers`` (what clients read:
  rate limits, ``Retry-After``, the request id, ...). This middleware is the outermost, so
  errors carry them too (401, 413, 429, a crash's 500): a browser app can read why it was
  refused. On, every answer says ``Vary: Origin``, as it depends on the ``Origin`` sent.

No answer allows credentials (cookies): every protocol sends its key in a header the app sets
itself, so ``*`` is safe to give and no origin is ever let in to act with a visitor's cookies.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Receive, Scope, Send

from demixer.api.answer_headers import AnswerHeaders
from demixer.api.errors import error_body
from demixer.errors import OriginNotAllowed
from demixer.service.accounts.keys import new_id

__all__ = [
    "ALLOW_HEADERS",
    "ALLOW_METHODS",
    "EXPOSE_HEADERS",
    "MAX_AGE_SECONDS",
    "CorsMiddleware",
    "answer_headers",
]

ALLOW_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
#: The request headers the protocols read; and the safelisted ones (Accept, ...), which a
#: browser still names in a preflight when their value is unusual, and Cache-Control, which
#: EventSource polyfills send.
ALLOW_HEADERS = (
    "Accept",
    "Accept-Language",
    "Content-Language",
    "Cache-Control",
    "Authorization",
    "Content-Type",
    "x-ga-apikey",
    "Idempotency-Key",
    "Range",
    "If-Range",
    "If-None-Match",
    "Last-Event-ID",
    "x-request-id",
)
#: The response headers a client reads besides the safelisted ones (Content-Type, ...).
EXPOSE_HEADERS = (
    "x-request-id",
    "Retry-After",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "Idempotent-Replayed",
    "ETag",
    "Accept-Ranges",
    "Content-Range",
    "Content-Disposition",
    "Location",
    "WWW-Authenticate",
)
#: How long a browser may reuse a preflight's answer (Chrome caps it at 2 h).
MAX_AGE_SECONDS = 7200

_PREFLIGHT_VARY = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"


def answer_headers(origins: Collection[str], origin: str | None) -> dict[str, str]:
    """The CORS headers of an answer (not a preflight's) to a request from ``origin`` (None:
    no ``Origin`` header, or not read yet), with ``origins`` allowed (``("*",)``: any; empty:
    CORS is off, no headers). ``*`` is given on every answer, ``Origin`` or not: it is the same
    for every caller, and so an answer cut before its ``Origin`` came (a 414) has it too."""
    if not origins:
        return {}
    # A cache keeping an answer must keep one per Origin: an answer without the headers,
    # served to an app, would be refused by its browser.
    headers = {"Vary": "Origin"}
    if "*" in origins:
        allowed: str | None = "*"
    else:
        allowed = origin if origin is not None and origin in origins else None
    if allowed is not None:
        headers["Access-Control-Allow-Origin"] = allowed
        headers["Access-Control-Expose-Headers"] = ", ".join(EXPOSE_HEADERS)
    return headers


class CorsMiddleware(AnswerHeaders):
    """ASGI middleware answering preflights and marking answers to ``origins`` (``("*",)``:
    any origin), as the module docstring says."""

    def __init__(self, app: ASGIApp, origins: Sequence[str]) -> None:
        super().__init__(app)
        self.origins = frozenset(origins)
        self._allowed_headers = {name.lower() for name in ALLOW_HEADERS}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "OPTIONS":
            headers = Headers(scope=scope)
            origin = headers.get("origin")
            if origin and "access-control-request-method" in headers:
                await self._preflight(headers, origin, send)
                return
        if not self.origins:  # off: nothing to add
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    def add(self, scope: Scope, headers: MutableHeaders) -> None:
        origin = Headers(scope=scope).get("origin")
        for name, value in answer_headers(self.origins, origin).items():
            if name == "Vary":
                headers.append(name, value)  # beside the route's own, if any
            else:
                headers[name] = value

    async def _preflight(self, headers: Headers, origin: str, send: Send) -> None:
        allowed = answer_headers(self.origins, origin).get("Access-Control-Allow-Origin")
        method = headers["access-control-request-method"]
        asked = [h.strip() for h in headers.get("access-control-request-headers", "").split(",")]
        unknown = [h for h in asked if h and h.lower() not in self._allowed_headers]
        rid = new_id("rid")
        if not self.origins:
            refusal = "no other origin may call this API (DEMIXER_CORS_ORIGINS lists none)"
        elif allowed is None:
            refusal = f"the origin {origin} is not one DEMIXER_CORS_ORIGINS allows"
        elif method not in ALLOW_METHODS:
            refusal = f"the method {method} is not one this API answers"
        elif unknown:
            refusal = f"the header {unknown[0]} is not one this API reads"
        else:
            allow = {
                "access-control-allow-origin": allowed,
                "access-control-allow-methods": ", ".join(ALLOW_METHODS),
                "access-control-allow-headers": ", ".join(ALLOW_HEADERS),
                "access-control-max-age": str(MAX_AGE_SECONDS),
                "vary": _PREFLIGHT_VARY,
                "x-request-id": rid,
            }
            # Without this answer Chrome refuses a public page's call to a LAN server.
            if headers.get("access-control-request-private-network", "").lower() == "true":
                allow["access-control-allow-private-network"] = "true"
            await send({"type": "http.response.start", "status": 204, "headers": _encode(allow)})
            await send({"type": "http.response.body", "body": b""})
            return
        error = OriginNotAllowed(refusal)
        body = json.dumps(error_body(error.code, error.message, rid=rid)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 403,
                "headers": _encode(
                    {
                        "content-type": "application/json",
                        "content-length": str(len(body)),
                        "cache-control": "no-store",
                        "vary": _PREFLIGHT_VARY,
                        "x-request-id": rid,
                    }
                ),
            }
        )
        await send({"type": "http.response.body", "body": body})


def _encode(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.encode(), value.encode("latin-1")) for name, value in headers.items()]
