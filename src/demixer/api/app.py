"""The FastAPI application, built from the services by :func:`create_app` (nothing global)."""

from __future__ import annotations

from functools import partial

from fastapi import FastAPI

from demixer import __version__
from demixer.api.errors import RequestIdMiddleware, install_error_handlers
from demixer.api.limits import RateLimitHeadersMiddleware
from demixer.api.openapi import document
from demixer.api.routes import blobs, docs, files, health, models, queue, usage, web
from demixer.api.schemas import FileCreate
from demixer.service.context import Services
from demixer.vendors import routers as vendor_routers

__all__ = ["create_app"]

_DESCRIPTION = """\
Self-hostable music source separation. Upload a file (`POST /v1/files`), queue a request
(`POST /v1/queue/audio/separate` with a text prompt, or `/v1/queue/audio/stems` with stem
names), follow it (`…/status`, or server-sent events on `…/status/stream`) and fetch the
stems (`…/result`: signed, expiring download URLs).

Authenticate with `Authorization: Bearer <key>`. Every error is
`{"error": {"code", "message", "param", "request_id"}}`; every response carries
`x-request-id`. `GET /healthz` (the process is up) and `GET /readyz` (database, storage and
a live worker) take no key.
"""


def create_app(services: Services) -> FastAPI:
    """The API application serving ``services`` (database, queue, storage, signer)."""
    app = FastAPI(
        title="demixer",
        version=__version__,
        description=_DESCRIPTION,
        openapi_url="/v1/openapi.json",
        docs_url=None,  # routes/docs.py serves it with local assets (no CDN)
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    app.state.services = services
    install_error_handlers(app)
    for module in (models, files, queue, blobs, usage, web, health, docs):
        app.include_router(module.router)
    for router in vendor_routers():
        app.include_router(router)
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(RateLimitHeadersMiddleware)  # outermost: even a 500 has them
    app.openapi = partial(document, app, (FileCreate,))  # type: ignore[method-assign]
    return app
