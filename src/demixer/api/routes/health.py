"""``GET /healthz`` (the process answers) and ``GET /readyz`` (it can serve: database, storage
and at least one live worker), for container health checks and load balancers. No key.

``/healthz`` touches nothing but the process: a database outage must not make an orchestrator
restart every API process. It is answered in the event loop, not in a worker thread: while
every thread waits (on a storage that stopped answering, say) the process is still up.
``/readyz`` checks each part once, in order, and names each in its answer; 503 when any is not
ready. Its details say what failed, never where (no host names, paths or bucket names on an
unauthenticated endpoint); the server log has the rest. One check runs at a time per process
(:class:`ReadinessProbe`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Literal

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from demixer import __version__
from demixer.api.schemas import Answer
from demixer.errors import DemixerError
from demixer.service.context import Services
from demixer.service.db import is_unavailable
from demixer.service.worker.registry import live_models

__all__ = ["Check", "Health", "Readiness", "ReadinessProbe", "readiness", "router"]

log = logging.getLogger("demixer.api")

router = APIRouter(tags=["health"])


class Health(Answer):
    """The process is up."""

    status: Literal["ok"] = "ok"
    version: str = Field(description="demixer's version.")


class Check(BaseModel):
    """One part the server needs."""

    ok: bool
    detail: str = Field(description="What was found, e.g. `2 live workers` or `unreachable`.")


class Readiness(BaseModel):
    """Whether this server can take requests and have them run: each check by name."""

    status: Literal["ready", "not_ready"]
    checks: dict[str, Check] = Field(
        description="`database`, `storage` and `workers` (at least one live worker process)."
    )


def _database_failure(exc: Exception) -> str:
    if isinstance(exc, DBAPIError) and is_unavailable(exc):  # an outage: no traceback per probe
        log.warning("readiness: the database is unreachable (%s)", " ".join(str(exc.orig).split()))
        return "unreachable"
    log.warning("readiness: the database check failed", exc_info=exc)
    return f"error ({type(exc).__name__})"


def readiness(services: Services) -> Readiness:
    """Check the database (a query), storage (:meth:`Storage.ping`) and the worker registry
    (:func:`~demixer.service.worker.registry.live_models`); never raises."""
    checks: dict[str, Check] = {}
    live: int | None = None
    try:
        with services.db.read() as session:
            session.execute(text("SELECT 1"))
            checks["database"] = Check(ok=True, detail="ok")
            live = len(live_models(session, services.settings, services.db.clock()))
    except Exception as exc:  # a probe answers, whatever the failure
        checks["database"] = Check(ok=False, detail=_database_failure(exc))
    try:
        services.storage.ping()
        checks["storage"] = Check(ok=True, detail="ok")
    except Exception as exc:
        log.warning("readiness: the storage check failed", exc_info=exc)
        reason = exc.message if isinstance(exc, DemixerError) else type(exc).__name__
        checks["storage"] = Check(ok=False, detail=reason)
    if live is None:
        checks["workers"] = Check(ok=False, detail="unknown: the database is not ready")
    elif live == 0:
        checks["workers"] = Check(ok=False, detail="no live worker")
    else:
        checks["workers"] = Check(ok=True, detail=f"{live} live worker{'s' * (live != 1)}")
    ready = all(check.ok for check in checks.values())
    return Readiness(status="ready" if ready else "not_ready", checks=checks)


class ReadinessProbe:
    """The readiness check of one API process, run once at a time: probes that arrive while it
    runs wait for its answer instead of starting checks of their own.

    A check can take minutes (a storage that takes connections but never answers: two tries of
    a 60 s read timeout), while load balancers and orchestrators keep probing, each giving up on
    its probe after a second or two, which does not stop the check. Each probe ran its own
    check in one of AnyIO's 40 worker threads: 45 probes held them all, and every request that
    needs one (a listing, a submit, an upload, a key not yet cached) got no answer.

    Args:
        services: the process's services (database, storage, settings).
    """

    def __init__(self, services: Services) -> None:
        self.services = services
        self._running: asyncio.Future[Readiness] | None = None

    async def check(self) -> Readiness:
        """The answer of the check running now, or of a new one."""
        running = self._running
        if running is None or running.get_loop() is not asyncio.get_running_loop():
            running = asyncio.ensure_future(anyio.to_thread.run_sync(readiness, self.services))
            running.add_done_callback(self._finished)
            self._running = running
        # Shielded: a probe whose client gave up leaves the check to the probes still waiting.
        return await asyncio.shield(running)

    def _finished(self, done: asyncio.Future[Readiness]) -> None:
        if self._running is done:
            self._running = None


@router.get("/healthz")
async def healthz() -> Health:
    """The process is up and answering (checks nothing else: see `/readyz`). No key."""
    return Health(version=__version__)


_READYZ: dict[int | str, dict[str, Any]] = {
    503: {"model": Readiness, "description": "Some part is not ready (named)."}
}


@router.get("/readyz", response_model=Readiness, responses=_READYZ)
async def readyz(request: Request) -> JSONResponse:
    """200 when the database and storage answer and at least one worker is live; else 503.
    Each check is named in `checks`. No key."""
    probe: ReadinessProbe = request.app.state.readiness
    result = await probe.check()
    return JSONResponse(result.model_dump(), status_code=200 if result.status == "ready" else 503)


# Load balancers' probes often send HEAD: the same answers, without a body.
# The same functions: each HEAD is named apart (api/openapi.py names an operation by its function).
router.add_api_route("/healthz", healthz, methods=["HEAD"], operation_id="healthz_head")
router.add_api_route(
    "/readyz",
    readyz,
    methods=["HEAD"],
    response_model=Readiness,
    responses=_READYZ,
    operation_id="readyz_head",
)
