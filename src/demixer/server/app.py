"""The FastAPI application, built from the services by :func:`create_app` (nothing global).

The one place that puts the protocols together: the native API's routers (:mod:`demixer.api`),
each vendor's router with its error envelope (:mod:`demixer.vendors`), and the middlewares that
answer in the envelope of the path's protocol. Nothing registers itself at import time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

from fastapi import APIRouter, FastAPI
from fastapi.responses import Response

from demixer import __version__
from demixer.api.bodies import BodyLimitMiddleware
from demixer.api.caching import NoStoreJson
from demixer.api.callers import Callers
from demixer.api.compression import Compress
from demixer.api.cors import CorsMiddleware
from demixer.api.errors import RequestIdMiddleware, install_error_handlers
from demixer.api.head import HeadAsGet
from demixer.api.lanes import Lane
from demixer.api.limits import RateLimitHeadersMiddleware
from demixer.api.metrics import HttpFigures, HttpMetrics
from demixer.api.openapi import document, operation_id
from demixer.api.routes import blobs, docs, files, health, metrics, models, queue, usage, web
from demixer.api.schemas import FileCreate
from demixer.api.statuswatch import StatusWatcher
from demixer.errors import DemixerError
from demixer.service.context import Services
from demixer.vendors.gaudio import envelope as gaudio_envelope
from demixer.vendors.gaudio import routes as gaudio
from demixer.vendors.musicgpt import routes as musicgpt
from demixer.vendors.sunoapi import routes as sunoapi

__all__ = ["create_app", "vendor_envelopes", "vendor_lanes", "vendor_routers"]

_DESCRIPTION = """\
Self-hostable music source separation. Upload a file (`POST /v1/files`), queue a request
(`POST /v1/queue/audio/separate` with a text prompt, or `/v1/queue/audio/stems` with stem
names), follow it (`…/status`, or server-sent events on `…/status/stream`) and fetch the
stems (`…/result`: signed, expiring download URLs).

Authenticate with `Authorization: Bearer <key>` (or `Key <key>`, as fal's clients send it).
Every error is `{"error": {"code", "message", "param", "request_id"}}`; every response carries
`x-request-id`. `GET /healthz` (the process is up) and `GET /readyz` (database, storage and
a live worker) take no key. Every GET also answers HEAD: the same status and headers, no body.
Text answers of 1 KiB or more are gzip-compressed for a client that sends
`Accept-Encoding: gzip`; audio and event streams never are.
"""


def vendor_routers() -> tuple[APIRouter, ...]:
    """Every vendor router, each mounted at its vendor's own path prefix."""
    return (gaudio.router, musicgpt.router, sunoapi.router, sunoapi.credit_router)


def vendor_lanes() -> tuple[Lane, ...]:
    """Every vendor's fast lanes (its status read), put ahead of the routers' routes."""
    return (*gaudio.LANES, *musicgpt.LANES, *sunoapi.LANES)


def vendor_envelopes() -> dict[str, Callable[[DemixerError], Response]]:
    """Each vendor's path prefix -> how it answers an error, for the errors raised outside its
    handlers (a crash, a request body over its limit: see ``demixer.api.errors``)."""
    return {
        gaudio.PREFIX: gaudio_envelope.error_response,
        musicgpt.PREFIX: musicgpt.error_response,
        sunoapi.PREFIX: sunoapi.error_response,
        sunoapi.CREDIT_PATH: sunoapi.error_response,
    }


@asynccontextmanager
async def _lifespan(callers: Callers, app: FastAPI) -> AsyncIterator[None]:
    """The application's lifespan: at its end, the rate counts are flushed (``callers``) and
    the status streams' listener lets its database connection go."""
    async with callers.lifespan(app):
        try:
            yield
        finally:
            app.state.status_watcher.stop_listening()


def create_app(services: Services) -> FastAPI:
    """The API application serving ``services`` (database, queue, storage, signer)."""
    callers = Callers(services)  # keys seen and requests counted by this process
    app = FastAPI(
        title="demixer",
        version=__version__,
        description=_DESCRIPTION,
        license_info={"name": "MIT", "identifier": "MIT"},  # pyproject.toml's
        openapi_url="/v1/openapi.json",
        docs_url=None,  # routes/docs.py serves it with local assets (no CDN)
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
        # A path with a slash too many is a 404, not a redirect: Starlette's redirect named
        # the request's Host header (and its scheme), never DEMIXER_PUBLIC_URL, so behind a
        # proxy it sent a client to the proxy's upstream address or to http://, its key along.
        redirect_slashes=False,
        generate_unique_id_function=operation_id,
        lifespan=partial(_lifespan, callers),
    )
    app.state.services = services
    app.state.callers = callers
    install_error_handlers(app)
    for module in (models, files, queue, blobs, usage, web, health, metrics, docs):
        app.include_router(module.router)
    for router in vendor_routers():
        app.include_router(router)
    # The plain form of the hottest requests, ahead of FastAPI's routing (api/lanes.py).
    app.router.routes[:0] = [*queue.LANES, *models.LANES, *vendor_lanes()]
    app.state.model_lists = models.ModelLists(services)
    app.state.status_watcher = StatusWatcher(services)  # one reader for every SSE stream
    app.state.readiness = health.ReadinessProbe(services)  # one check at a time for every probe
    app.state.cluster_reader = metrics.ClusterReader(services)  # GET /metrics' database figures
    envelopes = vendor_envelopes()
    settings = services.settings
    # Innermost, inside HeadAsGet: a HEAD gets the headers of its GET, compressed or not.
    app.add_middleware(Compress)
    app.add_middleware(HeadAsGet, router=app.router)  # it asks the routes
    app.add_middleware(
        BodyLimitMiddleware,
        json_limit=settings.max_json_body_bytes,
        upload_limit=settings.max_upload_bytes,
        envelopes=envelopes,
        idle_timeout=settings.body_timeout_seconds,
    )
    app.add_middleware(RequestIdMiddleware, envelopes=envelopes)
    app.add_middleware(NoStoreJson)  # outside the request id's: its 500s are JSON answers too
    app.add_middleware(RateLimitHeadersMiddleware)  # even a 500 has them
    # Outermost: every answer, a 500 included, is readable by the browser apps it allows.
    app.add_middleware(CorsMiddleware, origins=settings.cors_origin_list)
    # Outside even that: it counts and times every answer the application gives, where
    # metrics are on (DEMIXER_METRICS_TOKEN); off, as by default, nobody could read the counts.
    app.state.http_metrics = HttpFigures()
    if settings.metrics_token is not None:
        app.add_middleware(HttpMetrics, routes=app.router.routes, figures=app.state.http_metrics)
    app.openapi = partial(  # type: ignore[method-assign]
        document, app, (FileCreate,), base_path=settings.base_path
    )
    return app
