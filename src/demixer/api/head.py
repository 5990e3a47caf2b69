"""HEAD answers what GET would, without the body (RFC 9110, section 9.3.2), on every path.

FastAPI's routes serve only the methods they name, so a HEAD of ``/v1/models`` or of a vendor's
status URL found no route and answered 405, though every general-purpose server must support
HEAD. Naming HEAD on each route would give it a second OpenAPI operation with the same id;
instead this middleware, right in front of the router, hands a HEAD that no route serves to the
GET route of the same path and sends that answer's status and headers (its ``Content-Length``
included) with no body. A route that names HEAD itself (``/healthz``, signed downloads) keeps it.
Once the answer is complete the server's ``receive`` reports a disconnect, which ends a streamed
answer (server-sent events) at once.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.routing import BaseRoute, Match, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["HeadAsGet", "serves"]


def serves(routes: Sequence[BaseRoute], scope: Scope, method: str) -> bool:
    """Whether one of ``routes`` answers ``method`` at ``scope``'s path."""
    asked = {**scope, "method": method}
    return any(route.matches(asked)[0] is Match.FULL for route in routes)


class HeadAsGet:
    """ASGI middleware serving HEAD from the GET route where no route serves HEAD."""

    def __init__(self, app: ASGIApp, router: Router) -> None:
        self.app = app
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD" or not self._served_by_get(scope):
            await self.app(scope, receive, send)
            return
        sent_body = False

        async def headers_only(message: Message) -> None:
            nonlocal sent_body
            if message["type"] == "http.response.body":
                if sent_body:
                    return  # the rest of a streamed body: not sent
                sent_body = True
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)

    def _served_by_get(self, scope: Scope) -> bool:
        """No route serves this HEAD, and one serves a GET of the same path."""
        routes = self.router.routes
        return not serves(routes, scope, "HEAD") and serves(routes, scope, "GET")
