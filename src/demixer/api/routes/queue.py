"""``/v1/queue``: submit separation requests, follow them (poll or SSE), fetch results, cancel.

Status values: ``IN_QUEUE``, ``IN_PROGRESS``, ``COMPLETED``, ``FAILED``, ``CANCELLED``.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from functools import partial
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.convertors import PathConvertor, register_url_convertor

from demixer.api import jobs, lanes, submit
from demixer.api.auth import (
    QUEUE_READ,
    FilesRead,
    QueueRead,
    QueueWrite,
    ServicesDep,
    authorize,
    bearer_secret,
)
from demixer.api.bodies import JsonRoute
from demixer.api.callers import callers
from demixer.api.errors import error_body
from demixer.api.idempotency import Idempotency, IdempotencyDep
from demixer.api.lanes import Lane
from demixer.api.openapi import error_responses
from demixer.api.routes.listing import PageCursor, PageLimit
from demixer.api.schemas import (
    CancelResponse,
    QueuedResponse,
    RequestList,
    RequestStatus,
    ResultResponse,
    SeparateRequest,
    StemsRequest,
)
from demixer.api.statuswatch import FAILED, GONE, STOPPING, StatusWatcher
from demixer.api.submit import Body, Submission
from demixer.errors import NotFound, ServiceUnavailable, UnknownModel
from demixer.service.accounts.keys import Identity, Unauthorized
from demixer.service.context import Services
from demixer.service.db import is_unavailable
from demixer.service.jobs.queue import CANCELLED, FINAL

__all__ = ["LANES", "router"]

router = APIRouter(prefix="/v1/queue", tags=["queue"], route_class=JsonRoute)


class _QueueModelPath(PathConvertor):
    """A queue model id for the catch-all below: any path but the requests' own (a POST to
    ``/v1/queue/requests/...`` is a wrong method there, 405, not an unknown model)."""

    regex = r"(?!requests(?:/|$)).+"


register_url_convertor("queue_model", _QueueModelPath())

_SUBMIT_ERRORS = error_responses(400, 401, 402, 403, 404, 409, 410, 413, 415, 422, 429)
# One server-sent event, as OpenAPI 3.1 readers (schemathesis, client generators) take the
# `schema` of `text/event-stream`: each event's fields, not the stream as one string. The
# `data` line is JSON: a RequestStatus (`event: status`) or an ErrorResponse (`event: error`).
_STATUS_EVENT = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "enum": ["status", "error"]},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {
                "oneOf": [
                    {"$ref": "#/components/schemas/RequestStatus"},
                    {"$ref": "#/components/schemas/ErrorResponse"},
                ]
            },
        },
    },
    "required": ["event", "data"],
}
_READ_ERRORS = error_responses(401, 403, 404)
# fal's clients read the request's id from this header of its response (the JavaScript
# client's `result.requestId`), not from the body.
FAL_REQUEST_ID = "x-fal-request-id"
MIN_INTERVAL, MAX_INTERVAL = 1.0, 10.0  # seconds between SSE frames
# Both status streams (the request's own path and fal's) take the same interval.
StreamInterval = Annotated[float, Query(description="Seconds between frames, clamped to 1–10.")]
# The model in fal's form of a request's URLs (its `/` kept: `audio/separate`).
FalModel = Annotated[
    str,
    Path(description="The model the request was submitted to: `audio/separate` or `audio/stems`."),
]
# fal's clients send a submit's webhook in the query, not the body (fal's webhooks page).
FalWebhook = Annotated[
    str | None,
    Query(
        max_length=4096,
        description="The webhook URL as fal's clients send it: the same as the body's "
        "`webhookUrl` (checked as it is, signed with a new secret unless the body gives "
        "`webhookSecret`); both given and different is a 400.",
    ),
]


@router.post("/audio/separate", status_code=202, responses=_SUBMIT_ERRORS)
def queue_separate(
    body: SeparateRequest,
    services: ServicesDep,
    identity: QueueWrite,
    idempotency: IdempotencyDep,
    response: Response,
    fal_webhook: FalWebhook = None,
) -> QueuedResponse:
    """Separate the sound `input.prompt` names: the result has `target` and `residual`.
    A body without `input` is the input, as fal's clients send it; its answer's URLs are then
    fal's paths under the model."""
    return _queued(
        submit.plan_separate, body, fal_webhook, services, identity, idempotency, response
    )


@router.post("/audio/stems", status_code=202, responses=_SUBMIT_ERRORS)
def queue_stems(
    body: StemsRequest,
    services: ServicesDep,
    identity: QueueWrite,
    idempotency: IdempotencyDep,
    response: Response,
    fal_webhook: FalWebhook = None,
) -> QueuedResponse:
    """Separate `input.stems` with `input.model`: one file per stem plus `residual`.
    A body without `input` is the input, as fal's clients send it; its answer's URLs are then
    fal's paths under the model."""
    return _queued(
        submit.plan_stems_request, body, fal_webhook, services, identity, idempotency, response
    )


def _queued(
    plan: Callable[[Services, str, Body], Submission],
    body: Body,
    fal_webhook: str | None,
    services: Services,
    identity: Identity,
    idempotency: Idempotency,
    response: Response,
) -> QueuedResponse:
    """A queue submit: ``body`` (with fal's query webhook) planned by ``plan``, queued once
    per ``Idempotency-Key``; fal-shaped bodies get fal's paths in the answer."""

    def action() -> QueuedResponse:
        req = submit.with_query_webhook(body, fal_webhook)
        submission = replace(plan(services, identity.account_id, req), fal_paths=req.fal_shaped)
        return submit.submit(services, identity.account_id, submission, key_id=identity.key_id)

    return idempotency.run(services, identity.account_id, response, QueuedResponse, 202, action)


@router.get("/requests", responses=_READ_ERRORS)
def list_requests(
    services: ServicesDep,
    identity: QueueRead,
    limit: PageLimit = 20,
    cursor: PageCursor = None,
) -> RequestList:
    """The caller's requests, newest first; follow `next_cursor` for older ones."""
    return jobs.list_jobs(services, identity.account_id, limit, cursor)


@router.get("/requests/{request_id}/status", response_model=RequestStatus, responses=_READ_ERRORS)
async def request_status(
    request_id: str, services: ServicesDep, identity: QueueRead, logs: bool = False
) -> Response:
    """Where a request stands (`queue_position` while queued, `progress` while running)."""
    return await _status_response(services, identity, request_id, logs)


async def _status_response(
    services: Services, identity: Identity, request_id: str, logs: bool, model: str | None = None
) -> Response:
    job = await jobs.fetch_job(services, identity.account_id, request_id, model)
    read = partial(jobs.status_of, services, job, logs)
    status = await lanes.read(services, read) if jobs.more_reads(job, logs) else read()
    if model is not None and status.status in ("FAILED", "CANCELLED"):
        return JSONResponse(_as_fal_ended(status))
    # Built and checked by its model already: answered as its JSON, not validated again.
    return Response(status.model_dump_json(), media_type="application/json")


def _as_fal_ended(status: RequestStatus) -> dict[str, object]:
    """A failed or cancelled request as fal's queue says one at its path: `COMPLETED`, with
    `error_type` (the error's code). fal's clients stop polling at `COMPLETED` alone (the
    JavaScript client polled a FAILED one until its timeout) and then read the result, which
    answers the error."""
    body = status.model_dump(mode="json")
    error_type = status.error.code if status.error is not None else "CANCELLED"
    return body | {"status": "COMPLETED", "error_type": error_type}


async def _status_lane(request: Request) -> Response:
    """``GET …/status`` without a query: the route above, without FastAPI's routing and
    dependency injection (see :mod:`demixer.api.lanes`)."""
    identity = await authorize(request, await bearer_secret(request), QUEUE_READ)
    services: Services = request.app.state.services
    return await _status_response(services, identity, request.path_params["request_id"], False)


LANES = (Lane("GET", router.prefix + "/requests/{request_id}/status", _status_lane),)
"""This module's fast lanes (``create_app`` puts them first)."""


def _frame(event: str, data: str) -> str:
    return f"event: {event}\ndata: {data}\n\n"


_STREAM_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {
        "description": "Server-sent events: `event: status` frames whose `data:` line is "
        "the RequestStatus JSON (an `event: error` frame if the request is deleted meanwhile)",
        "content": {"text/event-stream": {"schema": _STATUS_EVENT}},
    },
    **_READ_ERRORS,
}


@router.get(
    "/requests/{request_id}/status/stream",
    response_class=StreamingResponse,
    responses=_STREAM_RESPONSES,
)
async def request_status_stream(
    request: Request,
    request_id: str,
    services: ServicesDep,
    identity: QueueRead,
    interval: StreamInterval = 2.0,
    logs: bool = False,
) -> StreamingResponse:
    """Server-sent events: `event: status` frames (the status JSON) every `interval` seconds,
    closed after COMPLETED, FAILED or CANCELLED, or when the server stops (after a
    `: the server is stopping; reconnect` comment: read again, from another server or later)."""
    return await _status_stream(request, services, identity, request_id, interval, logs)


async def _status_stream(
    request: Request,
    services: Services,
    identity: Identity,
    request_id: str,
    interval: float,
    logs: bool,
    model: str | None = None,
) -> StreamingResponse:
    # The first read is the stream's own (an unknown id is a plain 404, not a stream); then the
    # process's one watcher reads every streamed job at once (api/statuswatch.py), and a change
    # of state is sent at once, between the periodic frames.
    job = await jobs.fetch_job(services, identity.account_id, request_id, model)
    read = partial(jobs.status_of, services, job, logs)
    first = await lanes.read(services, read) if jobs.more_reads(job, logs) else read()
    delay = min(max(interval, MIN_INTERVAL), MAX_INTERVAL) if math.isfinite(interval) else 2.0
    watcher: StatusWatcher = request.app.state.status_watcher
    secret = await bearer_secret(request)

    async def frames() -> AsyncIterator[str]:
        async with watcher.watch(first, logs, delay) as watch:
            status: RequestStatus = first
            yield _frame("status", status.model_dump_json())
            while status.status not in FINAL:
                update = await watch.next()
                if update == GONE:  # deleted meanwhile
                    gone = NotFound(f"no request {request_id!r}")
                    yield _frame("error", json.dumps(error_body(gone.code, gone.message)))
                    return
                if update == STOPPING:  # the server is stopping: read again elsewhere, or later
                    yield ": the server is stopping; reconnect\n\n"
                    return
                if update == FAILED:  # a bug (logged): the stream ends, as a failed read ended it
                    raise RuntimeError(f"reading request {request_id}'s status failed")
                if isinstance(update, str):  # UNAVAILABLE: the stream outlives a restart
                    yield ": the database is unavailable; retrying\n\n"
                    continue
                try:  # a key revoked meanwhile reads no more (a cached key costs no I/O)
                    await callers(request).identify(secret)
                except Unauthorized as revoked:
                    yield _frame("error", json.dumps(error_body(revoked.code, revoked.message)))
                    return
                except Exception as exc:  # the keys unreadable (an outage): checked next time
                    if not (is_unavailable(exc) or isinstance(exc, ServiceUnavailable)):
                        raise
                status = update
                yield _frame("status", status.model_dump_json())

    return StreamingResponse(
        frames(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get(
    "/requests/{request_id}/result", responses=error_responses(401, 403, 404, 409, 410, 422)
)
def request_result(
    request_id: str, response: Response, services: ServicesDep, identity: FilesRead
) -> ResultResponse:
    """The outputs with signed download URLs; 409 `NOT_READY` until COMPLETED, the failure's
    code (422) when FAILED. fal's `response_url`: with fal's `x-fal-request-id`."""
    return _result(services, identity, request_id, response)


def _result(
    services: Services,
    identity: Identity,
    request_id: str,
    response: Response,
    model: str | None = None,
) -> ResultResponse:
    result = jobs.job_result(services, identity.account_id, request_id, model)
    response.headers[FAL_REQUEST_ID] = request_id
    return result


@router.get("/requests/{request_id}", responses=error_responses(401, 403, 404, 409, 410, 422))
def request_response(
    request_id: str, response: Response, services: ServicesDep, identity: FilesRead
) -> ResultResponse:
    """The same as `GET …/result`, at the path fal's queue gets a request's response from
    (a client written for fal builds this URL itself), with fal's `x-fal-request-id`."""
    return _result(services, identity, request_id, response)


@router.put(
    "/requests/{request_id}/cancel",
    responses={202: {"model": CancelResponse}, **error_responses(401, 403, 404, 409)},
)
def cancel_request(
    request_id: str, response: Response, services: ServicesDep, identity: QueueWrite
) -> CancelResponse:
    """Cancel: a queued request at once (200 `CANCELLED`), as is a running one whose worker
    stopped responding; a running one when its worker stops it (202
    `CANCELLATION_REQUESTED`: it ends `CANCELLED`, even when it finishes meanwhile); a
    finished one is a 409 `JOB_CONFLICT`."""
    return _cancel(services, identity, request_id, response)


def _cancel(
    services: Services,
    identity: Identity,
    request_id: str,
    response: Response,
    model: str | None = None,
) -> CancelResponse:
    with services.db.read() as s:
        jobs.owned_job(s, identity.account_id, request_id, model)
    if services.queue.cancel(request_id) == CANCELLED:
        return CancelResponse(request_id=request_id, status="CANCELLED")
    response.status_code = 202
    return CancelResponse(request_id=request_id, status="CANCELLATION_REQUESTED")


@router.delete(
    "/requests/{request_id}",
    status_code=204,
    response_class=Response,
    responses=error_responses(401, 403, 404),
)
def delete_request(request_id: str, services: ServicesDep, identity: QueueWrite) -> Response:
    """Delete a request and its outputs (a running one is cancelled first), and a MusicGPT
    extraction's `audio_file` with it; then 404. The upload named by its `file_id` stays (other
    requests may share it): `DELETE /v1/files/{file_id}` deletes it. Object storage
    unreachable: 503, and the request stays, to be deleted again."""
    jobs.delete_job(services, identity.account_id, request_id)
    return Response(status_code=204)


# fal's form of a request's URLs: under the model it was submitted to
# (`/v1/queue/audio/separate/requests/{id}/status`), as fal's clients build them from the
# model id and the request id. Each answers as the route it stands for; a request of another
# model is a 404, the same as an unknown id.


@router.get(
    "/{model_id:queue_model}/requests/{request_id}/status",
    response_model=RequestStatus,
    responses=_READ_ERRORS,
)
async def model_request_status(
    model_id: FalModel,
    request_id: str,
    services: ServicesDep,
    identity: QueueRead,
    logs: bool = False,
) -> Response:
    """`GET /v1/queue/requests/{request_id}/status` at fal's path: under the request's model
    (`audio/separate` or `audio/stems`); another model's request is a 404. A failed or
    cancelled request is fal's `COMPLETED` here, with `error_type` (its error's code)."""
    return await _status_response(services, identity, request_id, logs, model_id)


@router.get(
    "/{model_id:queue_model}/requests/{request_id}/status/stream",
    response_class=StreamingResponse,
    responses=_STREAM_RESPONSES,
)
async def model_request_status_stream(
    request: Request,
    model_id: FalModel,
    request_id: str,
    services: ServicesDep,
    identity: QueueRead,
    interval: StreamInterval = 2.0,
    logs: bool = False,
) -> StreamingResponse:
    """`GET /v1/queue/requests/{request_id}/status/stream` at fal's path: under the request's
    model; another model's request is a 404."""
    return await _status_stream(request, services, identity, request_id, interval, logs, model_id)


@router.get(
    "/{model_id:queue_model}/requests/{request_id}",
    responses=error_responses(401, 403, 404, 409, 410, 422),
)
def model_request_response(
    model_id: FalModel,
    request_id: str,
    response: Response,
    services: ServicesDep,
    identity: FilesRead,
) -> ResultResponse:
    """`GET /v1/queue/requests/{request_id}/result` at fal's path for a request's response:
    under the request's model, with fal's `x-fal-request-id`; another model's request is a
    404."""
    return _result(services, identity, request_id, response, model_id)


@router.put(
    "/{model_id:queue_model}/requests/{request_id}/cancel",
    responses={202: {"model": CancelResponse}, **error_responses(401, 403, 404, 409)},
)
def model_cancel_request(
    model_id: FalModel,
    request_id: str,
    response: Response,
    services: ServicesDep,
    identity: QueueWrite,
) -> CancelResponse:
    """`PUT /v1/queue/requests/{request_id}/cancel` at fal's path: under the request's model;
    another model's request is a 404."""
    return _cancel(services, identity, request_id, response, model_id)


@router.post("/{model_id:queue_model}", include_in_schema=False)
def queue_unknown(model_id: str, identity: QueueWrite) -> None:
    """Any other queue model id."""
    raise UnknownModel(
        f"no queue model {model_id!r}; available: {', '.join(submit.QUEUE_MODELS)}",
        param="model",
    )
