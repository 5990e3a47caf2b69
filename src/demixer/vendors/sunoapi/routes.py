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
  ``taskId`` on ``record-info`` (or one of another protocol's jobs) 404, and a task whose
  outputs expired and were deleted too (``RESULT_EXPIRED``: no SUCCESS without links); bad
  parameters, unusable input, unknown stems 400; too large (a file, or a request body over its
  limit) 413; ``RATE_LIMITED`` (requests per window) 430 "call frequency too high";
  ``TOO_MANY_CONCURRENT_JOBS`` 405 "rate limit"; ``STORAGE_UNAVAILABLE``,
  ``DATABASE_UNAVAILABLE``, ``DATABASE_READ_ONLY``, ``STORAGE_FULL`` (retry: the answer has
  ``Retry-After``) and anything else 500; ``QUOTA_EXCEEDED`` 429 "insufficient credits". 455
  (maintenance) is never sent.
- Input: ``audioUrl`` or ``fileId`` (from ``POST /v1/files``), or that ``fileId`` as the
  ``audioId`` (whatever the ``taskId``: how the vendor's SDKs, which send only those two, name
  an upload). A ``taskId`` of one of the caller's demixer tasks reuses that task's input; any
  other ``taskId``/``audioId`` is 400.
- ``separate_vocal``: vocals + the residual as ``instrumentalUrl``. ``split_stem``: every stem of
  the installed model with the most stems, ``instrumentalUrl`` null. ``split_stem_advanced``:
  ``stemName``'s stem + the residual (everything else) as ``instrumentalUrl``; ``stemName`` is
  a stem field's name or the name Suno gives the stem (``"Backing Vocals"``, ``"Drum Kit"``,
  ``"Lead Vocal"``: :data:`~demixer.vendors.sunoapi.wire.STEM_NAMES`), case, spaces and hyphens
  aside; a named stem with no vendor field (``lead_vocals``) comes back as its own field,
  ``leadVocalsUrl`` / ``lead_vocals_url``. A stem of ``split_stem``'s model that no vendor
  field is (a 4-stem model's ``other``) is not sent: the vendor's record and callback have no
  field for it (the native result of the same request id lists it).
- Stems are MP3, as every URL in the vendor's record and callback examples is.
- ``musicId`` (and ``audioId``, the vendor's Chinese record example's name for it): the id of
  the uploaded file that was separated (null for an ``audioUrl``).
- ``successFlag``: queued/running PENDING; COMPLETED SUCCESS, or CALLBACK_EXCEPTION once the
  callback's delivery finally failed; FAILED and CANCELLED GENERATE_AUDIO_FAILED (a task that
  cannot be created is refused by ``/generate`` itself, so CREATE_TASK_FAILED is not used).
  ``errorCode`` (and the failure callback's ``code``) is 451 where the ``audioUrl`` could not
  be downloaded (the vendor's "Download Failed"), 500 where the server failed (its model
  could not run on the worker, the worker was lost or timed out, storage failed), and 400 for
  the input's own errors; ``errorMessage`` starts with demixer's own error code. Times are Unix
  milliseconds.
- The callback goes out on success and on failure, a cancelled task's included. Its URL is read
  as ``callBackUrl`` or ``callbackUrl``; a blank one is none.
- Surround input (more than 2 channels) is folded to stereo first (``input.downmix``): the
  protocol has no field to ask for it.
- ``GET /api/v1/generate/credit`` (the vendor's "Get Remaining Credits", which its clients call
  to check a key and as a budget guard before a task) answers the whole audio minutes left of
  the account's monthly allowance (one credit = one minute of input audio, rounded down;
  README "Quotas"), or :data:`UNMETERED_CREDITS` for an account without one (401 for an
  unknown key, as elsewhere). A request the allowance cannot take is the envelope's 429
  ("insufficient credits", ``QUOTA_EXCEEDED``); an ``audioUrl`` found too long once fetched
  fails its task with ``errorCode`` 429.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Annotated, Any, Literal

import anyio.to_thread
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy.exc import DBAPIError

from demixer.api import lanes, submit
from demixer.api.auth import ServicesDep, require
from demixer.api.bodies import parse_json
from demixer.api.errors import as_demixer_error
from demixer.api.jobs import check_not_expired, fetch_job, own_input
from demixer.api.lanes import Lane, only_query
from demixer.api.schemas import StemsRequest
from demixer.api.validation import invalid_request
from demixer.errors import (
    DemixerError,
    FileTooLarge,
    Forbidden,
    InvalidRequest,
    ModelUnavailable,
    NotFound,
    QuotaExceeded,
    RateLimited,
    ResultExpired,
    ServiceUnavailable,
    TooManyConcurrentJobs,
    UnknownStem,
)
from demixer.models.planner import produces
from demixer.models.registry import ModelSpec
from demixer.service.accounts.keys import ALL_SCOPES, Identity, Unauthorized
from demixer.service.accounts.quota import QuotaState, quota_state
from demixer.service.context import Services
from demixer.service.jobs.contract import JobParams, SunoapiFields, UploadInput
from demixer.service.jobs.prompts import MODEL_PREFERENCE, best_model
from demixer.service.jobs.queue import COMPLETED, FINAL
from demixer.service.schema import Job
from demixer.vendors import EVERY_METHOD
from demixer.vendors.sunoapi.wire import (
    STEM_FIELDS,
    STEM_NAMES,
    STYLE,
    callback_failed,
    error_code,
    error_message,
    stem_name_key,
    success_flag,
    url_fields,
    vendor_urls,
)

__all__ = [
    "CREDIT_PATH",
    "LANES",
    "PREFIX",
    "UNMETERED_CREDITS",
    "credit_router",
    "error_response",
    "router",
    "vendor_code",
]

PREFIX = "/api/v1/vocal-removal"
router = APIRouter(prefix=PREFIX, include_in_schema=False)
#: The vendor's credit balance, outside the vocal-removal prefix as the vendor has it.
CREDIT_PATH = "/api/v1/generate/credit"
credit_router = APIRouter(include_in_schema=False)
#: The balance of an account without a monthly allowance: the largest 32-bit integer (the
#: vendor types it as an integer), as "unlimited".
UNMETERED_CREDITS = 2**31 - 1


TaskType = Literal["separate_vocal", "split_stem", "split_stem_advanced"]

_bearer = HTTPBearer(auto_error=False)
_Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
_WRITE = require("audio:separate")
_READ = require("files:read")  # the download URLs: read as a result is
_ANY_KEY = require(*ALL_SCOPES)  # the balance says nothing but that the key works


class GenerateBody(BaseModel):
    """``POST /generate``; unknown fields are ignored, as the vendor's are optional extras.

    The callback URL is read as ``callBackUrl`` (the request's spelling) or ``callbackUrl``
    (``record-info``'s); a blank one is no callback, as an absent one is. A null ``type`` is
    the default ``separate_vocal``, as an absent one is.
    """

    model_config = ConfigDict(extra="ignore")

    type: TaskType = "separate_vocal"
    callBackUrl: str | None = Field(
        None, max_length=4096, validation_alias=AliasChoices("callBackUrl", "callbackUrl")
    )
    audioUrl: str | None = Field(None, max_length=4096)
    fileId: str | None = Field(None, max_length=100)
    taskId: str | None = Field(None, max_length=100)
    audioId: str | None = Field(None, max_length=100)
    stemName: str | None = Field(None, max_length=50)

    @field_validator("callBackUrl")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @field_validator("type", mode="before")
    @classmethod
    def _null_is_default(cls, value: object) -> object:
        # The vendor documents a default: a client writing its unset fields as null means it.
        return "separate_vocal" if value is None else value


# --- the envelope and the error table ---------------------------------------------------------


def _envelope(
    code: int, msg: str, data: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"code": code, "msg": msg, "data": data}, headers=headers)


def vendor_code(error: DemixerError) -> int:
    """The sunoapi ``code`` for ``error`` (see the module docstring)."""
    if isinstance(error, Unauthorized | Forbidden):
        return 401
    if isinstance(error, TooManyConcurrentJobs):
        return 405
    if isinstance(error, QuotaExceeded):  # "insufficient credits"
        return 429
    if isinstance(error, RateLimited):
        return 430
    if isinstance(error, NotFound | ResultExpired):  # a task, or its deleted outputs
        return 404
    if isinstance(error, FileTooLarge):
        return 413
    if type(error) is DemixerError or error.code in ("INTERNAL", "MODEL_FAILED"):
        return 500
    if isinstance(error, ServiceUnavailable):  # a server-side outage, not the caller's input
        return 500
    return 400


def error_response(error: DemixerError) -> JSONResponse:
    """``error`` in the envelope (HTTP 200), with ``Retry-After`` where waiting helps."""
    headers = None
    if isinstance(error, RateLimited | ServiceUnavailable):
        headers = {"Retry-After": str(error.retry_after)}
    return _envelope(vendor_code(error), error.message, headers=headers)


def _answer(run: Callable[[], JSONResponse]) -> JSONResponse:
    """``run()``, with demixer's errors answered in the envelope (HTTP 200)."""
    try:
        return run()
    except (DemixerError, DBAPIError) as exc:
        return error_response(as_demixer_error(exc))


# --- POST /generate ---------------------------------------------------------------------------


def _source(services: Services, account_id: str, body: GenerateBody) -> dict[str, str]:
    """The ``input`` source fields: the URL or file id, or those of a known task."""
    if body.audioUrl and body.fileId:
        raise InvalidRequest("give one of audioUrl and fileId, not both")
    if body.audioUrl:
        return {"audio_url": body.audioUrl}
    if body.fileId:
        return {"file_id": body.fileId}
    if body.audioId and body.audioId.startswith("file_"):
        # An upload's id is its track's audioId in this server's records (record-info's
        # audioId/musicId): sunoapi's SDKs send only taskId + audioId, so this is how they
        # separate the caller's own upload. Another account's or an unknown one is a 400.
        return {"file_id": body.audioId}
    if body.taskId:
        with services.db.read() as s:
            job = s.get(Job, body.taskId)
        if job is not None and job.account_id == account_id:
            if own_input(job) is not None:
                # That upload goes when the extraction is deleted, and no answer names its id:
                # a task made from it lost its audio then, and named the id in its status.
                raise InvalidRequest(
                    f"task {body.taskId!r}'s audio is a MusicGPT extraction's own audio_file; "
                    "give an audioUrl, or a fileId from POST /v1/files"
                )
            source = JobParams.of_job(job.id, job.params).input
            if isinstance(source, UploadInput):
                return {"file_id": source.file_id}
            return {"audio_url": source.audio_url}
    if body.taskId or body.audioId:
        given = body.taskId or body.audioId
        raise InvalidRequest(
            f"demixer does not know the track {given!r} (taskId/audioId name tracks the hosted "
            "service generated); give an audioUrl, or a fileId from POST /v1/files (as the "
            "fileId or the audioId)"
        )
    raise InvalidRequest("no audio: give an audioUrl, or a fileId from POST /v1/files")


def _producible(installed: list[ModelSpec]) -> list[str]:
    return [n for n, stem in STEM_FIELDS.items() if stem and best_model(stem, installed)]


def _widest(installed: list[ModelSpec]) -> ModelSpec:
    """The installed model or recipe filling the most of sunoapi's stem fields (the preferred
    one on a tie)."""
    if not installed:
        raise ModelUnavailable("no separation model is installed on this server")
    fields = {stem for stem in STEM_FIELDS.values() if stem}

    def rank(spec: ModelSpec) -> tuple[int, int, int]:
        pref = MODEL_PREFERENCE.index(spec.id) if spec.id in MODEL_PREFERENCE else 99
        return (-len(fields & set(produces(spec))), pref, -len(spec.stems))

    return min(installed, key=rank)


def _plan(body: GenerateBody, installed: list[ModelSpec]) -> tuple[list[str], str | None]:
    """Engine stems to request and the model (None: the native default choice)."""
    if body.type == "separate_vocal":
        return ["vocals"], None
    if body.type == "split_stem":
        spec = _widest(installed)
        return list(spec.stems), spec.id
    name = (body.stemName or "").strip()
    can = ", ".join(_producible(installed)) or "none (no model is installed)"
    if not name:
        raise InvalidRequest(
            f"split_stem_advanced needs a stemName; this server can produce: {can}"
        )
    key = stem_name_key(name)
    if key not in STEM_NAMES:
        raise UnknownStem(f"unknown stemName {name!r}; this server can produce: {can}")
    stem = STEM_NAMES[key]
    best = best_model(stem, installed) if stem else None
    if stem is None or best is None:
        raise UnknownStem(f"no installed model produces {name!r}; this server can produce: {can}")
    return [stem], best.id


def _generate(services: Services, identity: Identity, raw: bytes) -> JSONResponse:
    try:
        body = GenerateBody.model_validate(parse_json(raw or b"{}"))
    except InvalidRequest as exc:
        return _envelope(400, f"bad parameters: {exc.message}")
    except ValidationError as exc:
        return _envelope(400, f"bad parameters: {invalid_request(exc.errors()).message}")
    source = _source(services, identity.account_id, body)
    installed = submit.installed_models(services)
    stems, model = _plan(body, installed)
    try:
        req = StemsRequest.model_validate(
            {
                # downmix: the protocol cannot ask for it, so surround is folded to stereo
                # MP3, as every URL of the vendor's record and callback examples is
                # (`..._Vocals.mp3`); it has no field for another format.
                "input": {
                    **source,
                    "stems": stems,
                    "model": model,
                    "downmix": True,
                    "output_format": "mp3",
                },
                "webhookUrl": body.callBackUrl,
            }
        )
    except ValidationError as exc:  # e.g. an over-long URL: the reason, not our field names
        return _envelope(400, f"bad parameters: {exc.errors()[0]['msg']}")
    how = submit.PlanOptions(
        # split_stem: every stem, no instrumental (nothing is left to a residual).
        residual="never" if body.type == "split_stem" else "always",
        webhook_style=STYLE,
        vendor=SunoapiFields(type=body.type, callBackUrl=body.callBackUrl),
    )
    try:
        sub = submit.plan_stems_request(services, identity.account_id, req, how)
    except NotFound as exc:  # an unknown fileId is a bad parameter here, not a bad path
        raise InvalidRequest(exc.message) from None
    queued = submit.submit(services, identity.account_id, sub, key_id=identity.key_id)
    return _envelope(200, "success", {"taskId": queued.request_id})


@router.post("/generate")
async def generate(request: Request, services: ServicesDep, creds: _Credentials) -> JSONResponse:
    """Queue a vocal removal / stem split; ``data: {taskId}``."""
    raw = await request.body()
    try:
        identity = await _WRITE(request, creds)
    except (DemixerError, DBAPIError) as exc:
        return error_response(as_demixer_error(exc))
    return await anyio.to_thread.run_sync(
        partial(_answer, partial(_generate, services, identity, raw))
    )


# --- GET /record-info -------------------------------------------------------------------------


def _millis(job_time: Any) -> int | None:
    return int(job_time.timestamp() * 1000) if job_time is not None else None


async def _record_info(services: Services, identity: Identity, task_id: str | None) -> JSONResponse:
    """One read of the task's row, then no I/O but its callback's latest delivery when it has a
    callback (in a worker thread off SQLite), and the input's description once per process
    (:class:`~demixer.service.links.BlobLinks`)."""
    if not task_id:
        return _envelope(400, "bad parameters: taskId is required")
    job = await fetch_job(services, identity.account_id, task_id)  # one SELECT, no ORM object
    params = JobParams.of_job(job.id, job.params)
    if not isinstance(params.vendor, SunoapiFields):  # a job of another protocol
        raise NotFound(f"no task {task_id!r}")
    if job.status == COMPLETED:
        check_not_expired(services, job)  # 404, not a SUCCESS without links
    hook = params.webhook
    failed = False
    if job.status == COMPLETED and hook is not None:
        failed = await lanes.read(services, partial(callback_failed, services, job))
    flag = success_flag(job, callback_gave_up=failed)
    urls = vendor_urls(services, job)
    source = params.input
    data = {
        "taskId": job.id,
        # The track that was separated: the vendor's record example gives the id of its own
        # track (the request's audioId); here the uploaded file's id (`fileId`, or the task's
        # whose `taskId` was given), none for an `audioUrl`. Its index in its task: one track.
        "musicId": source.file_id if isinstance(source, UploadInput) else None,
        "musicIndex": 0,
        # The same track under the request's name for it, as the vendor's Chinese record
        # example (docs.sunoapi.org/cn/suno-api/get-vocal-separation-details) gives it.
        "audioId": source.file_id if isinstance(source, UploadInput) else None,
        "callbackUrl": hook.url if hook is not None else None,
        "createTime": _millis(job.created_at),
        "completeTime": _millis(job.finished_at) if job.status in FINAL else None,
        "successFlag": flag,
        "errorCode": error_code(job),
        "errorMessage": error_message(job),
        "response": url_fields(urls, snake=False),
    }
    return _envelope(200, "success", data)


@router.get("/record-info")
async def record_info(
    request: Request, services: ServicesDep, creds: _Credentials, taskId: str | None = None
) -> JSONResponse:
    """A task's state and, once SUCCESS, its signed download URLs."""
    try:
        identity = await _READ(request, creds)
        return await _record_info(services, identity, taskId)
    except (DemixerError, DBAPIError) as exc:
        return error_response(as_demixer_error(exc))


async def _record_info_lane(request: Request) -> JSONResponse:
    """``GET /record-info`` with at most ``taskId`` in its query: the route above without
    FastAPI's routing and dependency injection (see :mod:`demixer.api.lanes`)."""
    services: Services = request.app.state.services
    creds = await _bearer(request)
    return await record_info(request, services, creds, request.query_params.get("taskId"))


LANES = (Lane("GET", PREFIX + "/record-info", _record_info_lane, query=only_query("taskId")),)
"""This module's fast lanes (``create_app`` puts them first)."""


# --- GET /api/v1/generate/credit ---------------------------------------------------------------


@credit_router.get(CREDIT_PATH)
async def credit(request: Request, creds: _Credentials) -> JSONResponse:
    """The key's remaining credits: whole audio minutes left of its account's monthly
    allowance, :data:`UNMETERED_CREDITS` for an account without one."""
    services: Services = request.app.state.services
    try:
        identity = await _ANY_KEY(request, creds)
        state = await lanes.read(services, partial(_quota, services, identity.account_id))
    except (DemixerError, DBAPIError) as exc:
        return error_response(as_demixer_error(exc))
    if state is None:
        return _envelope(200, "success", UNMETERED_CREDITS)
    return _envelope(200, "success", int(state.left_seconds // 60))


def _quota(services: Services, account_id: str) -> QuotaState | None:
    with services.db.read() as s:
        return quota_state(s, account_id, services.db.clock())


@credit_router.api_route(CREDIT_PATH, methods=[m for m in EVERY_METHOD if m != "GET"])
async def credit_other_method(request: Request) -> JSONResponse:
    """Another method on the balance: the vendor's 404 ("invalid request method or path"), as
    under its prefix, not the native 405."""
    return _envelope(404, f"{request.method} is not a method of {CREDIT_PATH}; use GET")


@router.api_route("/{path:path}", methods=EVERY_METHOD)
async def unknown_path(path: str) -> JSONResponse:
    """Any other path under the prefix: the vendor's 404."""
    return _envelope(404, f"no such endpoint: {path[:200]!r}")


# --- the callback -----------------------------------------------------------------------------
