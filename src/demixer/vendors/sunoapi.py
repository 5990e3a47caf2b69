"""sunoapi-style vocal removal at ``/api/v1/vocal-removal`` (see shared/docs/vendor-apis.md §3).

A thin translation onto the native path: ``POST /generate`` plans an ``audio/stems`` request
with :func:`demixer.api.submit.plan_stems_request` and queues it with
:func:`demixer.api.submit.submit` (limits, URL guard, result cache and usage all apply);
``GET /record-info`` reads the job back; the callback is a delivery of the native outbox whose
body :func:`sunoapi_event` builds (``params["webhook"]["style"] == "sunoapi"``).

Wire decisions:

- Every answer is HTTP 200 with the envelope ``{code, msg, data}``, errors included (as the
  hosted service does); only the envelope's ``code`` says what happened.
- Error codes: unknown key 401 (a key lacking the scope too: the vendor has no 403); unknown
  ``taskId`` on ``record-info`` 404; bad parameters, unusable input, unknown stems 400; too
  large 413; ``RATE_LIMITED`` (requests per window) 430 "call frequency too high";
  ``TOO_MANY_CONCURRENT_JOBS`` 405 "rate limit"; ``STORAGE_UNAVAILABLE`` (object storage
  down: retry) and anything else 500. 429 (credits) and 455 (maintenance) are never sent:
  demixer has neither.
- Input: ``audioUrl`` or ``fileId`` (from ``POST /v1/files``). A ``taskId`` of one of the
  caller's demixer tasks reuses that task's input; any other ``taskId``/``audioId`` is 400.
- ``separate_vocal``: vocals + the residual as ``instrumentalUrl``. ``split_stem``: every stem of
  the installed model with the most stems, ``instrumentalUrl`` null. ``split_stem_advanced``:
  ``stemName``'s stem + the residual (everything else) as ``instrumentalUrl``. A model stem
  with no vendor field (``other``) is added as ``otherUrl`` / ``other_url``.
- ``successFlag``: queued/running PENDING; COMPLETED SUCCESS, or CALLBACK_EXCEPTION once the
  callback's delivery finally failed; FAILED and CANCELLED GENERATE_AUDIO_FAILED (a task that
  cannot be created is refused by ``/generate`` itself, so CREATE_TASK_FAILED is not used).
  ``errorCode`` is 400 for input errors and 500 otherwise; ``errorMessage`` starts with
  demixer's own error code. Times are Unix milliseconds.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from typing import Annotated, Any, Literal

import anyio.to_thread
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from demixer.api import submit
from demixer.api.auth import ServicesDep, require
from demixer.api.errors import as_demixer_error
from demixer.api.jobs import owned_job, result_response
from demixer.api.schemas import StemsRequest
from demixer.engine.stems import RESIDUAL
from demixer.errors import (
    DemixerError,
    FileTooLarge,
    Forbidden,
    InvalidRequest,
    ModelUnavailable,
    NotFound,
    RateLimited,
    ServiceUnavailable,
    TooManyConcurrentJobs,
    UnknownStem,
)
from demixer.models.registry import ModelSpec
from demixer.service.context import Services
from demixer.service.delivery import GAVE_UP, register_event_builder
from demixer.service.keys import Unauthorized
from demixer.service.prompts import MODEL_PREFERENCE, best_model
from demixer.service.queue import CANCELLED, COMPLETED, FAILED
from demixer.service.retention import result_expired
from demixer.service.schema import Delivery, Job

__all__ = ["STEM_FIELDS", "STYLE", "router", "sunoapi_event", "vendor_code"]

router = APIRouter(prefix="/api/v1/vocal-removal", include_in_schema=False)

STYLE = "sunoapi"

#: vendor stem name -> demixer engine stem (None: no demixer model produces it).
STEM_FIELDS: dict[str, str | None] = {
    "vocal": "vocals",
    "backing_vocals": None,
    "drums": "drums",
    "bass": "bass",
    "guitar": "guitar",
    "keyboard": "piano",
    "percussion": None,
    "strings": None,
    "synth": None,
    "fx": None,
    "brass": None,
    "woodwinds": None,
}
_VENDOR_NAME = {stem: name for name, stem in STEM_FIELDS.items() if stem is not None}
# Every field of the response, in the vendor's order (camelCase = name + "Url").
_FIELDS = ("origin", "instrumental", *STEM_FIELDS)
_INSTRUMENTAL = "instrumental"

TaskType = Literal["separate_vocal", "split_stem", "split_stem_advanced"]

_bearer = HTTPBearer(auto_error=False)
_Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
_WRITE = require("audio:separate")
_READ = require("audio:separate", "files:read")


class GenerateBody(BaseModel):
    """``POST /generate``; unknown fields are ignored, as the vendor's are optional extras."""

    model_config = ConfigDict(extra="ignore")

    type: TaskType = "separate_vocal"
    callBackUrl: str | None = Field(None, max_length=4096)
    audioUrl: str | None = Field(None, max_length=4096)
    fileId: str | None = Field(None, max_length=100)
    taskId: str | None = Field(None, max_length=100)
    audioId: str | None = Field(None, max_length=100)
    stemName: str | None = Field(None, max_length=50)


# --- the envelope and the error table ---------------------------------------------------------


def _envelope(code: int, msg: str, data: Any = None) -> JSONResponse:
    return JSONResponse({"code": code, "msg": msg, "data": data})


def vendor_code(error: DemixerError) -> int:
    """The sunoapi ``code`` for ``error`` (see the module docstring)."""
    if isinstance(error, Unauthorized | Forbidden):
        return 401
    if isinstance(error, TooManyConcurrentJobs):
        return 405
    if isinstance(error, RateLimited):
        return 430
    if isinstance(error, NotFound):
        return 404
    if isinstance(error, FileTooLarge):
        return 413
    if type(error) is DemixerError or error.code in ("INTERNAL", "MODEL_FAILED"):
        return 500
    if isinstance(error, ServiceUnavailable):  # a server-side outage, not the caller's input
        return 500
    return 400


def _answer(run: Callable[[], JSONResponse]) -> JSONResponse:
    """``run()``, with demixer's errors answered in the envelope (HTTP 200)."""
    try:
        return run()
    except (DemixerError, DBAPIError) as exc:
        error = as_demixer_error(exc)
        return _envelope(vendor_code(error), error.message)


def _url_fields(urls: dict[str, str | None], snake: bool) -> dict[str, str | None]:
    def key(name: str) -> str:
        if snake:
            return f"{name}_url"
        head, *rest = name.split("_")
        return head + "".join(p.title() for p in rest) + "Url"

    out = {key(name): urls.get(name) for name in _FIELDS}
    out.update({key(n): u for n, u in urls.items() if n not in _FIELDS})  # e.g. "other"
    return out


# --- POST /generate ---------------------------------------------------------------------------


def _source(services: Services, account_id: str, body: GenerateBody) -> dict[str, str]:
    """The ``input`` source fields: the URL or file id, or those of a known task."""
    if body.audioUrl and body.fileId:
        raise InvalidRequest("give one of audioUrl and fileId, not both")
    if body.audioUrl:
        return {"audio_url": body.audioUrl}
    if body.fileId:
        return {"file_id": body.fileId}
    if body.taskId:
        with services.db.read() as s:
            job = s.get(Job, body.taskId)
            source = (job.params or {}).get("input") if job is not None else None
        if job is not None and job.account_id == account_id and source:
            if source.get("audio_url"):
                return {"audio_url": str(source["audio_url"])}
            if source.get("file_id"):
                return {"file_id": str(source["file_id"])}
    if body.taskId or body.audioId:
        given = body.taskId or body.audioId
        raise InvalidRequest(
            f"demixer does not know the track {given!r} (taskId/audioId name tracks the hosted "
            "service generated); give an audioUrl, or a fileId from POST /v1/files"
        )
    raise InvalidRequest("no audio: give an audioUrl, or a fileId from POST /v1/files")


def _producible(installed: list[ModelSpec]) -> list[str]:
    return [n for n, stem in STEM_FIELDS.items() if stem and best_model(stem, installed)]


def _widest(installed: list[ModelSpec]) -> ModelSpec:
    """The installed model with the most stems (the preferred one on a tie)."""
    if not installed:
        raise ModelUnavailable("no separation model is installed on this server")

    def rank(spec: ModelSpec) -> tuple[int, int]:
        pref = MODEL_PREFERENCE.index(spec.id) if spec.id in MODEL_PREFERENCE else 99
        return (-len(spec.stems), pref)

    return min(installed, key=rank)


def _plan(body: GenerateBody, installed: list[ModelSpec]) -> tuple[list[str], str | None]:
    """Engine stems to request and the model (None: the native default choice)."""
    if body.type == "separate_vocal":
        return ["vocals"], None
    if body.type == "split_stem":
        spec = _widest(installed)
        return list(spec.stems), spec.id
    name = (body.stemName or "").strip().lower()
    can = ", ".join(_producible(installed)) or "none (no model is installed)"
    if not name:
        raise InvalidRequest(
            f"split_stem_advanced needs a stemName; this server can produce: {can}"
        )
    if name not in STEM_FIELDS:
        raise UnknownStem(f"unknown stemName {name!r}; this server can produce: {can}")
    stem = STEM_FIELDS[name]
    best = best_model(stem, installed) if stem else None
    if stem is None or best is None:
        raise UnknownStem(f"no installed model produces {name!r}; this server can produce: {can}")
    return [stem], best.id


def _generate(request: Request, services: Services, creds: Any, raw: bytes) -> JSONResponse:
    identity = _WRITE(request, services, creds)
    try:
        body = GenerateBody.model_validate(json.loads(raw or b"{}"))
    except (ValueError, ValidationError) as exc:
        return _envelope(400, f"bad parameters: {str(exc)[:500]}")
    source = _source(services, identity.account_id, body)
    installed = submit.installed_models(services)
    stems, model = _plan(body, installed)
    try:
        req = StemsRequest.model_validate(
            {"input": {**source, "stems": stems, "model": model}, "webhookUrl": body.callBackUrl}
        )
    except ValidationError as exc:
        return _envelope(400, f"bad parameters: {str(exc)[:500]}")
    try:
        sub = submit.plan_stems_request(services, identity.account_id, req, always_residual=True)
    except NotFound as exc:  # an unknown fileId is a bad parameter here, not a bad path
        raise InvalidRequest(exc.message) from None
    params = dict(sub.params)
    if params.get("webhook"):
        params["webhook"] = {**params["webhook"], "style": STYLE}
    params["vendor"] = {"name": STYLE, "type": body.type, "callBackUrl": body.callBackUrl}
    if body.type == "split_stem":  # every stem, no instrumental: nothing is left to residual
        params["stems"] = [s for s in params["stems"] if s != RESIDUAL]
        params["names"] = {k: v for k, v in params["names"].items() if k != RESIDUAL}
    sub = submit.Submission(sub.queue_model, sub.engine_model, params, sub.priority, sub.note)
    queued = submit.submit(services, identity.account_id, sub, key_id=identity.key_id)
    return _envelope(200, "success", {"taskId": queued.request_id})


@router.post("/generate")
async def generate(request: Request, services: ServicesDep, creds: _Credentials) -> JSONResponse:
    """Queue a vocal removal / stem split; ``data: {taskId}``."""
    raw = await request.body()
    return await anyio.to_thread.run_sync(
        partial(_answer, partial(_generate, request, services, creds, raw))
    )


# --- GET /record-info -------------------------------------------------------------------------


def _millis(job_time: Any) -> int | None:
    return int(job_time.timestamp() * 1000) if job_time is not None else None


def _urls(services: Services, job: Job) -> dict[str, str | None]:
    """Vendor stem name -> signed URL of a finished job (``origin`` included)."""
    urls: dict[str, str | None] = {}
    source = (job.params or {}).get("input") or {}
    ttl = services.settings.download_url_ttl_seconds
    if source.get("audio_url"):
        urls["origin"] = str(source["audio_url"])
    elif source.get("storage_key"):
        urls["origin"] = services.download_url(source["storage_key"], ttl)
    if job.status != COMPLETED or result_expired(
        job, services.settings.result_retention_seconds, services.db.clock()
    ):
        return urls
    vendor_type = ((job.params or {}).get("vendor") or {}).get("type")
    for name, out in result_response(services, job).data.items():
        if isinstance(out, int | float):
            continue
        if name == RESIDUAL:
            if vendor_type != "split_stem":
                urls[_INSTRUMENTAL] = out.url
        else:
            urls[_VENDOR_NAME.get(name, name)] = out.url
    return urls


def _error_code(job: Job) -> int | None:
    if job.status == CANCELLED:
        return 400
    if job.status != FAILED:
        return None
    return 500 if (job.error_code or "") in ("", "INTERNAL", "MODEL_FAILED") else 400


def _error_message(job: Job) -> str | None:
    if job.status == CANCELLED:
        return "CANCELLED: the task was cancelled"
    if job.status != FAILED:
        return None
    return f"{job.error_code or 'FAILED'}: {job.error_message or ''}".strip()


def _callback_failed(s: Session, job: Job) -> bool:
    row = s.execute(
        select(Delivery.status)
        .where(Delivery.job_id == job.id)
        .order_by(Delivery.created_at.desc(), Delivery.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    return row == GAVE_UP


def _flag(s: Session, job: Job) -> str:
    if job.status == COMPLETED:
        return "CALLBACK_EXCEPTION" if _callback_failed(s, job) else "SUCCESS"
    if job.status in (FAILED, CANCELLED):
        return "GENERATE_AUDIO_FAILED"
    return "PENDING"


def _record_info(
    request: Request, services: Services, creds: Any, task_id: str | None
) -> JSONResponse:
    identity = _READ(request, services, creds)
    if not task_id:
        return _envelope(400, "bad parameters: taskId is required")
    with services.db.read() as s:
        job = owned_job(s, identity.account_id, task_id)
        flag = _flag(s, job)
    urls = _urls(services, job)
    hook = (job.params or {}).get("webhook") or {}
    data = {
        "taskId": job.id,
        "callbackUrl": hook.get("url"),
        "createTime": _millis(job.created_at),
        "completeTime": _millis(job.finished_at) if job.status in (COMPLETED, FAILED) else None,
        "successFlag": flag,
        "errorCode": _error_code(job),
        "errorMessage": _error_message(job),
        "response": _url_fields(urls, snake=False),
    }
    return _envelope(200, "success", data)


@router.get("/record-info")
async def record_info(
    request: Request, services: ServicesDep, creds: _Credentials, taskId: str | None = None
) -> JSONResponse:
    """A task's state and, once SUCCESS, its signed download URLs."""
    run = partial(_record_info, request, services, creds, taskId)
    return await anyio.to_thread.run_sync(partial(_answer, run))


@router.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
async def unknown_path(path: str) -> JSONResponse:
    """Any other path under the prefix: the vendor's 404."""
    return _envelope(404, f"no such endpoint: {path[:200]!r}")


# --- the callback -----------------------------------------------------------------------------


def sunoapi_event(services: Services, job: Job) -> tuple[str, dict[str, Any]] | None:
    """The vendor's callback body for a finished job, sent on success and on failure."""
    if job.status == COMPLETED:
        info = _url_fields(_urls(services, job), snake=True)
        body = {
            "code": 200,
            "msg": "vocal removal completed",
            "data": {"task_id": job.id, "vocal_removal_info": info},
        }
        return "vocal_removal.completed", body
    if job.status == FAILED:
        body = {
            "code": _error_code(job) or 500,
            "msg": _error_message(job) or "failed",
            "data": {"task_id": job.id, "vocal_removal_info": None},
        }
        return "vocal_removal.failed", body
    return None  # CANCELLED: no callback, as for native webhooks


register_event_builder(STYLE, sunoapi_event)
