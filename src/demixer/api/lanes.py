"""Fast lanes: the plain form of the requests clients repeat thousands of times a second (a
status poll, the model list), answered ahead of FastAPI's routing and dependency injection.

FastAPI spends more time finding a route and solving its dependencies than a status read takes
(``benchmarks/api_speed.py`` measures both). A :class:`Lane` is a Starlette route placed first in
the application's routes. It matches one endpoint's method and path, and only a query string it
accepts (by default none); its handler is an async function of the request, written beside the
FastAPI route it shortcuts and calling the same functions (the route's dependencies called
directly, the same read, the same rendering). Every other request (another query parameter, a
``HEAD``…) does not match the lane and reaches the FastAPI route as before: that route stays the
reference, and the OpenAPI schema's source. Errors raised in a lane's handler reach the same
exception handlers as the route's (vendor lanes answer in their envelope themselves, as their
routes do).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, compile_path
from starlette.types import Receive, Scope, Send

from demixer.service.context import Services

__all__ = ["Lane", "only_query", "read"]

T = TypeVar("T")

Handler = Callable[[Request], Awaitable[Response]]


def only_query(*names: str) -> Callable[[bytes], bool]:
    """A query test for :class:`Lane`: nothing but (at most one of each of) ``names``."""
    allowed = frozenset(names)

    def accepts(query: bytes) -> bool:
        if not query:
            return True
        try:
            keys = [k for k, _ in parse_qsl(query.decode("latin-1"), keep_blank_values=True)]
        except ValueError:
            return False
        return len(keys) == len(set(keys)) and allowed.issuperset(keys)

    return accepts


def _no_query(query: bytes) -> bool:
    return not query


def _route_path(scope: Scope) -> str:
    """The path below the application's root path (as Starlette's routes match it)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root) :]
    return path


class Lane(BaseRoute):
    """``method`` on ``path`` (a Starlette path template, e.g. ``/v1/x/{id}``), answered by
    ``handler`` when ``query`` accepts the raw query string (default: only an empty one)."""

    def __init__(
        self,
        method: str,
        path: str,
        handler: Handler,
        *,
        query: Callable[[bytes], bool] = _no_query,
    ) -> None:
        self.method = method
        self.path = path
        self.handler = handler
        self.query = query
        self.regex, _, self.convertors = compile_path(path)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http" or scope["method"] != self.method:
            return Match.NONE, {}
        found = self.regex.match(_route_path(scope))
        if found is None or not self.query(scope.get("query_string", b"")):
            return Match.NONE, {}
        params = {k: self.convertors[k].convert(v) for k, v in found.groupdict().items()}
        return Match.FULL, {"path_params": {**scope.get("path_params", {}), **params}}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.handler(Request(scope, receive, send))
        await response(scope, receive, send)

    def url_path_for(self, name: str, /, **path_params: Any) -> Any:
        raise NotImplementedError("lanes are not named routes")


async def read(services: Services, call: Callable[[], T]) -> T:
    """``call()``, a short database read, run where it costs least: on SQLite in the event
    loop itself (an indexed read of a local file, tens of microseconds; WAL readers never wait
    for the writer), elsewhere in a worker thread (a round trip to the database server must
    not hold up the loop)."""
    if services.db.dialect == "sqlite":
        return call()
    return await anyio.to_thread.run_sync(call)
