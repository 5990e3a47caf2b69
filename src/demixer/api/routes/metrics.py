"""``GET /metrics``: Prometheus metrics for the operator, off unless
``DEMIXER_METRICS_TOKEN`` is set, and then only for ``Authorization: Bearer <that token>``.

Two kinds of figures (docs/deploy.md lists them): the deployment's, read from the database
(:mod:`demixer.service.metrics`) and so the same from every API process, and this process's
own HTTP answers (:mod:`demixer.api.metrics`). The database is read at most once per
:data:`CACHE_SECONDS` per process, by one read at a time (scrapes that arrive while it runs
share it), so scrapers in any number cost the database nothing more. A database that does not
answer is no scrape failure: ``demixer_database_up`` is 0 and the process's own figures are
still there.

The token is the operator's, not an API key: no account's key opens this route, and the
answer names no account, key, request or file (labels are model ids, error codes, states and
route templates).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import Response

from demixer import __version__
from demixer.api.metrics import CONTENT_TYPE, Family, HttpFigures, exposition
from demixer.api.schemas import ErrorResponse
from demixer.errors import NotFound
from demixer.service.accounts.keys import Unauthorized
from demixer.service.context import Services
from demixer.service.metrics import FAILED_WINDOW, ClusterState, read_cluster

__all__ = ["CACHE_SECONDS", "ClusterReader", "router"]

log = logging.getLogger("demixer.api")

#: How long one read of the database serves this process's scrapes.
CACHE_SECONDS = 5.0

router = APIRouter(tags=["monitoring"])


class ClusterReader:
    """The database's figures for one API process: read at most once per
    :data:`CACHE_SECONDS`, one read at a time (as :class:`~demixer.api.routes.health.
    ReadinessProbe` runs its checks). A failed read is kept as long as a good one (None), so
    a database that is down is not asked again by every scrape.

    Args:
        services: the process's services (database, settings).
        monotonic: the clock of the cache (tests pass one they move).
    """

    def __init__(self, services: Services, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.services = services
        self._monotonic = monotonic
        self._read_at: float | None = None
        self._state: ClusterState | None = None
        self._running: asyncio.Future[ClusterState | None] | None = None

    def _read(self) -> ClusterState | None:
        db = self.services.db
        try:
            with db.read() as session:
                return read_cluster(session, self.services.settings, db.clock())
        except Exception as exc:  # a scrape answers, whatever the failure
            log.warning("metrics: the database could not be read (%s)", type(exc).__name__)
            return None

    def now(self, state: ClusterState) -> datetime:
        """The database's clock now, as counted from ``state``'s read (no round trip)."""
        if self._read_at is None:
            return state.read_at
        elapsed = self._monotonic() - self._read_at
        return state.read_at + timedelta(seconds=max(elapsed, 0.0))

    async def state(self) -> ClusterState | None:
        """The latest figures (None: the database could not be read)."""
        now = self._monotonic()
        if self._read_at is not None and now - self._read_at < CACHE_SECONDS:
            return self._state
        running = self._running
        if running is None or running.get_loop() is not asyncio.get_running_loop():
            running = asyncio.ensure_future(anyio.to_thread.run_sync(self._read))
            running.add_done_callback(self._finished)
            self._running = running
        return await asyncio.shield(running)

    def _finished(self, done: asyncio.Future[ClusterState | None]) -> None:
        if self._running is done:
            self._running = None
        if not done.cancelled() and done.exception() is None:
            self._state = done.result()
            self._read_at = self._monotonic()


def _seconds_since(then: datetime | None, now: datetime) -> float:
    return max((now - then).total_seconds(), 0.0) if then is not None else 0.0


def cluster_families(state: ClusterState | None, now: datetime | None) -> list[Family]:
    """The database's figures as metric families; ages are taken at ``now`` (database clock)."""
    up = Family(
        "demixer_database_up",
        "gauge",
        "1 when this process read the figures below from the database, 0 when it could not.",
    )
    up.add(0 if state is None else 1)
    if state is None or now is None:
        return [up]
    jobs = Family(
        "demixer_jobs",
        "gauge",
        "Requests queued (IN_QUEUE) or running (IN_PROGRESS), by model (the whole deployment).",
    )
    for (status, model), count in sorted(state.jobs.items()):
        jobs.add(count, status=status, model=model)
    oldest = Family(
        "demixer_queue_oldest_age_seconds",
        "gauge",
        "Seconds since the oldest queued request was submitted, by model (no series: none queued).",
    )
    for model, created in sorted(state.oldest_queued.items()):
        oldest.add(round(_seconds_since(created, now), 3), model=model)
    window = int(FAILED_WINDOW.total_seconds())
    finished = Family(
        "demixer_jobs_finished_recent",
        "gauge",
        f"Requests that finished in the last {window} seconds, by final status (COMPLETED, "
        "FAILED, CANCELLED) and model.",
    )
    for (status, model), count in sorted(state.finished.items()):
        finished.add(count, status=status, model=model)
    failed = Family(
        "demixer_jobs_failed_recent",
        "gauge",
        f"Requests that failed in the last {window} seconds, by model and error code.",
    )
    for (model, code), count in sorted(state.failed.items()):
        failed.add(count, model=model, code=code)
    workers = Family(
        "demixer_workers_live",
        "gauge",
        "Worker processes whose heartbeat is recent (embedded `serve --workers` ones too).",
    )
    workers.add(state.workers)
    slots = Family("demixer_worker_slots_live", "gauge", "Job slots of the live worker processes.")
    slots.add(state.worker_slots)
    deliveries = Family(
        "demixer_webhook_deliveries",
        "gauge",
        "Webhook deliveries still to send (pending) or given up (failed, until record "
        "retention deletes them).",
    )
    for status in ("pending", "failed"):
        deliveries.add(state.deliveries.get(status, 0), status=status)
    delivery_age = Family(
        "demixer_webhook_oldest_pending_age_seconds",
        "gauge",
        "Seconds since the oldest webhook delivery still to send was made (0: none).",
    )
    delivery_age.add(round(_seconds_since(state.oldest_pending_delivery, now), 3))
    uploads = Family(
        "demixer_uploads_pending",
        "gauge",
        "Uploads announced whose bytes have not arrived yet.",
    )
    uploads.add(state.uploads_pending)
    upload_age = Family(
        "demixer_uploads_oldest_pending_age_seconds",
        "gauge",
        "Seconds since the oldest upload still waiting for its bytes was announced (0: none).",
    )
    upload_age.add(round(_seconds_since(state.oldest_pending_upload, now), 3))
    return [
        up,
        jobs,
        oldest,
        finished,
        failed,
        workers,
        slots,
        deliveries,
        delivery_age,
        uploads,
        upload_age,
    ]


def _check_token(request: Request, token: str) -> None:
    scheme, _, sent = request.headers.get("authorization", "").strip().partition(" ")
    # Compared in constant time: the token must not be found a character at a time.
    if scheme.lower() != "bearer" or not hmac.compare_digest(sent.strip().encode(), token.encode()):
        raise Unauthorized("GET /metrics takes `Authorization: Bearer <DEMIXER_METRICS_TOKEN>`")


_TEXT = {"text/plain": {"schema": {"type": "string"}}}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The metrics, in Prometheus' text format 0.0.4.", "content": _TEXT},
    401: {
        "description": "No `Authorization: Bearer <DEMIXER_METRICS_TOKEN>`, or another token "
        "(`UNAUTHENTICATED`)",
        "model": ErrorResponse,
    },
    404: {
        "description": "Metrics are off: `DEMIXER_METRICS_TOKEN` is not set (`NOT_FOUND`)",
        "model": ErrorResponse,
    },
}


@router.get("/metrics", response_class=Response, responses=_RESPONSES)
async def metrics(request: Request) -> Response:
    """Prometheus metrics (text format 0.0.4): the queue, failures, workers, webhook
    deliveries and uploads of the whole deployment (from the database), and this process's
    HTTP answers. Off (404) unless `DEMIXER_METRICS_TOKEN` is set; then it takes that token
    as `Authorization: Bearer <token>` (401 otherwise), never an API key."""
    services: Services = request.app.state.services
    token = services.settings.metrics_token
    if token is None:
        raise NotFound("metrics are off: set DEMIXER_METRICS_TOKEN to turn them on")
    _check_token(request, token.get_secret_value())
    reader: ClusterReader = request.app.state.cluster_reader
    http: HttpFigures = request.app.state.http_metrics
    state = await reader.state()
    info = Family("demixer_build_info", "gauge", "demixer's version (this process).")
    info.add(1, version=__version__)
    now = reader.now(state) if state is not None else None
    families = [info, *cluster_families(state, now), *http.families()]
    return Response(
        exposition(families), media_type=CONTENT_TYPE, headers={"Cache-Control": "no-store"}
    )
