"""This API process's HTTP figures for ``GET /metrics``, and the Prometheus text format.

:class:`HttpMetrics` is the outermost middleware, installed where metrics are on (off, nobody
could read what it counts): it counts every answer (a 413 from the body limit, a CORS
preflight and a 500 included) by route *template* (``/v1/queue/requests/{request_id}/status``,
never the path asked: no request id, file id or blob key becomes a label), method and status
class (``2xx`` …), and times it from the request's arrival to its last byte. Paths that match
no route share one label, ``unmatched``: a scanner asking for a million paths adds no series.
The figures are this process's alone, since it started.

:func:`exposition` writes metric families in the Prometheus text exposition format, version
0.0.4 (``text/plain; version=0.0.4``).
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "CONTENT_TYPE",
    "DURATION_BUCKETS",
    "UNMATCHED",
    "Family",
    "HttpFigures",
    "HttpMetrics",
    "HttpRecord",
    "exposition",
    "route_template",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Upper bounds (seconds) of the request duration histogram's buckets: a status read takes
#: about a millisecond, an upload or a result listing up to seconds, a status stream minutes.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: The route label of a request no route matches.
UNMATCHED = "unmatched"
# Methods outside these share one label, so a client sending made-up methods adds no series.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@dataclass
class Family:
    """One metric family: its name, type (``counter``, ``gauge``, ``histogram``), help, and
    samples ``(suffix, labels, value)`` (``suffix``: ``_bucket``, ``_sum``… or empty)."""

    name: str
    kind: str
    help: str
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)

    def add(self, value: float, suffix: str = "", **labels: str) -> None:
        self.samples.append((suffix, labels, value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def exposition(families: Iterable[Family]) -> str:
    """``families`` in the text exposition format 0.0.4 (each with ``# HELP`` and ``# TYPE``
    lines, then its samples), ending with a newline."""
    lines: list[str] = []
    for family in families:
        help_text = family.help.replace("\\", "\\\\").replace("\n", "\\n")
        lines.append(f"# HELP {family.name} {help_text}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        for suffix, labels, value in family.samples:
            shown = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            name = family.name + suffix
            lines.append(
                f"{name}{{{shown}}} {_number(value)}" if shown else f"{name} {_number(value)}"
            )
    return "\n".join(lines) + "\n"


@dataclass
class HttpRecord:
    """The answers of one ``(route, method)``: counts by status class, and the durations."""

    statuses: dict[str, int] = field(default_factory=dict)
    buckets: list[int] = field(default_factory=lambda: [0] * len(DURATION_BUCKETS))
    count: int = 0
    total_seconds: float = 0.0

    def observe(self, status_class: str, seconds: float) -> None:
        self.statuses[status_class] = self.statuses.get(status_class, 0) + 1
        index = bisect.bisect_left(DURATION_BUCKETS, seconds)
        if index < len(self.buckets):
            self.buckets[index] += 1  # made cumulative when shown
        self.count += 1
        self.total_seconds += seconds


def route_template(scope: Scope, routes: Sequence[BaseRoute]) -> str:
    """The template of the route that answered ``scope`` (as routing left it), or of the
    route that would: a HEAD served by the GET route (``api/head.py``) is routed on a copy of
    the scope, and a request refused before routing (413, 400) was never routed."""
    route = scope.get("route")
    if route is None:
        method = scope.get("method", "GET")
        asked = {**scope, "method": "GET"} if method == "HEAD" else scope
        partial = None
        for candidate in routes:
            match, _ = candidate.matches(asked)
            if match is Match.FULL:
                route = candidate
                break
            if match is Match.PARTIAL and partial is None:
                partial = candidate
        route = route or partial
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else UNMATCHED


class HttpFigures:
    """The counts and durations of this process's HTTP answers, by ``(route, method)``.

    Changed by :class:`HttpMetrics` and read by ``GET /metrics``, both in the event loop (one
    thread): plain dictionaries need no lock.
    """

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], HttpRecord] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method if method in _METHODS else "other")
        record = self.records.get(key)
        if record is None:
            record = self.records[key] = HttpRecord()
        record.observe(f"{status // 100}xx", seconds)

    def families(self) -> list[Family]:
        """The request counter and the duration histogram."""
        requests = Family(
            "demixer_http_requests_total",
            "counter",
            "HTTP answers of this process by route template, method and status class.",
        )
        durations = Family(
            "demixer_http_request_duration_seconds",
            "histogram",
            "Seconds from a request's arrival to its answer's last byte, by route template "
            "and method (this process).",
        )
        for (route, method), record in sorted(self.records.items()):
            for status_class, count in sorted(record.statuses.items()):
                requests.add(count, route=route, method=method, status=status_class)
            cumulative = 0
            for bound, count in zip(DURATION_BUCKETS, record.buckets, strict=True):
                cumulative += count
                durations.add(cumulative, "_bucket", route=route, method=method, le=f"{bound:g}")
            durations.add(record.count, "_bucket", route=route, method=method, le="+Inf")
            durations.add(record.total_seconds, "_sum", route=route, method=method)
            durations.add(record.count, "_count", route=route, method=method)
        return [requests, durations]


class HttpMetrics:
    """ASGI middleware counting and timing every HTTP answer of this process (see above).

    Args:
        app: the application inside.
        routes: the application's routes, to name a request that routing did not label.
        figures: where the answers are counted.
    """

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute], figures: HttpFigures) -> None:
        self.app = app
        self.routes = routes
        self.figures = figures

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status: int | None = None

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception:
            # The server answers 500 (unless an answer had started: then its status stands).
            # A request cancelled because its client left (CancelledError, not an Exception)
            # got no answer: it is counted only if one had started.
            status = status or 500
            raise
        finally:
            if status is not None:
                route = route_template(scope, self.routes)
                method = scope.get("method", "")
                self.figures.observe(route, method, status, time.perf_counter() - started)
