"""MusicGPT-style stem extraction at ``/api/public`` (see shared/docs/vendor-apis.md §2).

A thin translation onto the native path: ``POST /v1/Extraction`` stores an uploaded
``audio_file`` with :func:`demixer.api.uploads.store_direct` (streamed, probed), plans an
``audio/stems`` request with :func:`demixer.api.submit.plan_stems_request` and queues it with
:func:`demixer.api.submit.submit` (limits, URL guard, result cache and usage all apply);
``GET /v1/byId`` reads the job back; the completion webhook is a delivery of the native outbox
whose body :func:`musicgpt_event` builds (``params["webhook"]["style"] == "musicgpt"``).

Wire decisions:

- Key: ``Authorization: <key>`` (raw, as MusicGPT documents); ``Bearer <key>`` works too.
- Errors: the HTTP status says what happened, the body is always
  ``{"success": false, "error": CODE, "message": text}`` (``CODE`` is demixer's error code).
  Statuses: bad parameters, unsupported media type, too large 400; missing/unknown key 401;
  key without the scope 403; unknown task (or another account's) 404; conflicts 409; request
  rate or concurrent-jobs limit 429 (with ``Retry-After``); missing input, unusable audio,
  stems no installed model produces, unavailable preprocessing 422; object storage
  unavailable 503 (with ``Retry-After``); anything else 500.
  402 (credits) is never sent: demixer has none.
- Stems: MusicGPT names map onto engine stems (``guitar``/``electric_guitar``/
  ``acoustic_guitar`` -> ``guitar``, ``piano``/``keys`` -> ``piano``); ``instrumental`` is the
  residual of ``vocals`` (input minus vocals) and can only be combined with ``vocals``. A name
  no installed model produces (``kick_drum``, ``male_vocal``…) is a 422 listing what can be
  produced, never a substitute.
- ``preprocessing_options``: ``Denoise`` runs :mod:`demixer.audio.denoise` on the input before
  separation (job param ``preprocess: ["denoise"]``); stems + residual then add up to the
  *denoised* input. ``Deecho`` and ``Dereverb`` are 422 (not available yet).
- ``task_id`` and ``conversion_id`` are both the demixer request id. ``eta`` is seconds:
  audio duration x measured seconds-per-audio-second of this server's recent jobs (x the
  queue ahead). ``credit_estimate`` / ``conversion_cost``: minutes of audio (2 decimals), the
  unit demixer's usage counts in seconds. ``conversion_duration``: seconds of audio.
- Statuses: IN_QUEUE, IN_PROGRESS, COMPLETED, FAILED (CANCELLED reads FAILED, with a
  ``status_msg`` saying so).
"""

from __future__ import annotations

import dataclasses
import json
import math
from functools import partial
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from demixer.api import submit, uploads
from demixer.api.errors import as_demixer_error
from demixer.api.jobs import owned_job, result_response
from demixer.api.limits import count_request
from demixer.api.schemas import StemsRequest
from demixer.errors import (
    Conflict,
    DemixerError,
    FileTooLarge,
    Forbidden,
    Gone,
    InvalidAudio,
    InvalidRequest,
    ModelUnavailable,
    NotFound,
    RateLimited,
    ServiceUnavailable,
    UnknownStem,
    UnsupportedMediaType,
)
from demixer.service.context import Services
from demixer.service.delivery import register_event_builder
from demixer.service.keys import Identity, Unauthorized, authenticate
from demixer.service.queue import CANCELLED, COMPLETED, FAILED, IN_PROGRESS, IN_QUEUE, JobConflict
from demixer.service.schema import Job

__all__ = ["DEFAULT_STEMS", "STEM_VOCABULARY", "STYLE", "musicgpt_event", "router"]

router = APIRouter(prefix="/api/public", include_in_schema=False)

STYLE = "musicgpt"
INSTRUMENTAL = "instrumental"

#: MusicGPT stem name -> the engine stem that is exactly it (None: none is).
STEM_VOCABULARY: dict[str, str | None] = {
    "vocals": "vocals",
    "male_vocal": None,
    "female_vocal": None,
    "lead_vocal": None,
    "back_vocal": None,
    "guitar": "guitar",
    "acoustic_guitar": "guitar",
    "electric_guitar": "guitar",
    "rhythm_guitar": None,
    "solo_guitar": None,
    "drums": "drums",
    "kick_drum": None,
    "snare_drum": None,
    "toms": None,
    "hi_hat": None,
    "ride": None,
    "crash": None,
    "piano": "piano",
    "keys": "piano",
    "strings": None,
    "winds": None,
    "bass": "bass",
    INSTRUMENTAL: None,  # the residual of vocals, handled apart
}
DEFAULT_STEMS = ("drums", "bass", "piano", "guitar")
_WEBHOOK_NAMES = {"vocals": "vocal"}  # the webhook's field names differ for these
_PREPROCESSING = {"Denoise": "denoise"}
_NOT_YET = ("Deecho", "Dereverb")
_DEFAULT_SPEED = 0.5  # seconds per audio second, before this server has measured any job
_UNKNOWN_DURATION = 180.0  # seconds assumed for an audio_url not yet fetched


class UnsupportedOption(InvalidRequest):
    """A MusicGPT option demixer does not implement (yet): answered 422."""

    code = "UNSUPPORTED_OPTION"


class MissingInput(InvalidRequest):
    """Neither ``audio_file`` nor ``audio_url``: answered 422, as MusicGPT documents."""

    code = "MISSING_INPUT"


# --- errors ------------------------------------------------------------------------------------


def vendor_status(error: DemixerError) -> int:
    """The HTTP status for ``error`` (see the module docstring)."""
    table: tuple[tuple[type[DemixerError], int], ...] = (
        (Unauthorized, 401),
        (Forbidden, 403),
        (RateLimited, 429),
        (ServiceUnavailable, 503),
        (NotFound, 404),
        (Gone, 404),
        (Conflict, 409),
        (JobConflict, 409),
        (UnsupportedOption, 422),
        (MissingInput, 422),
        (InvalidAudio, 422),
        (UnknownStem, 422),
        (ModelUnavailable, 422),
        (FileTooLarge, 400),
        (UnsupportedMediaType, 400),
        (InvalidRequest, 400),
    )
    for cls, status in table:
        if isinstance(error, cls):
            return status
    return 500


def _error(error: DemixerError) -> JSONResponse:
    headers = None
    if isinstance(error, RateLimited | ServiceUnavailable):
        headers = {"Retry-After": str(error.retry_after)}
    return JSONResponse(
        {"success": False, "error": error.code, "message": error.message},
        status_code=vendor_status(error),
        headers=headers,
    )


def _identity(request: Request, services: Services, *scopes: str) -> Identity:
    """The caller, from ``Authorization: <key>`` or ``Authorization: Bearer <key>``."""
    raw = request.headers.get("authorization", "").strip()
    if raw[:7].lower() == "bearer ":
        raw = raw[7:].strip()
    if not raw:
        raise Unauthorized("missing API key: send `Authorization: <key>`")
    identity = authenticate(services.db, raw)
    count_request(request, services, identity)
    if not identity.scopes.intersection(scopes):
        raise Forbidden(f"this API key lacks the scope {' or '.join(map(repr, scopes))}")
    return identity


# --- planning ----------------------------------------------------------------------------------


def _json_list(value: Any, field: str) -> list[str]:
    if value is None or value == "":
        return []
    if not isinstance(value, str):
        raise InvalidRequest(f"{field} must be a JSON-encoded list of strings", param=field)
    try:
        items = json.loads(value)
    except ValueError:
        items = None
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise InvalidRequest(
            f'{field} must be a JSON-encoded list of strings, e.g. ["vocals"]', param=field
        )
    return list(dict.fromkeys(i.strip() for i in items if i.strip()))


def _producible(services: Services) -> tuple[set[str], list[str]]:
    """Engine stems the installed models produce, and the MusicGPT names that map onto them."""
    engine = {s for spec in submit.installed_models(services) for s in spec.stems}
    names = [n for n, stem in STEM_VOCABULARY.items() if stem is not None and stem in engine]
    if "vocals" in engine:
        names.append(INSTRUMENTAL)
    return engine, names


def plan_stems(services: Services, requested: list[str]) -> tuple[list[str], dict[str, str]]:
    """MusicGPT stems -> (engine request for ``audio/stems``, MusicGPT name -> output name)."""
    wanted = [s.lower() for s in requested] or list(DEFAULT_STEMS)
    engine, names = _producible(services)
    can = ", ".join(names) or "nothing"
    for name in wanted:
        if name not in STEM_VOCABULARY:
            raise UnknownStem(
                f"{name!r} is not a MusicGPT stem; this server can produce: {can}", param="stems"
            )
        stem = STEM_VOCABULARY[name]
        if name == INSTRUMENTAL:
            stem = "vocals"
        if stem is None or stem not in engine:
            raise UnknownStem(
                f"no installed model produces {name!r}; this server can produce: {can}",
                param="stems",
            )
    targets = list(dict.fromkeys(STEM_VOCABULARY[n] or "" for n in wanted if n != INSTRUMENTAL))
    fields = {n: STEM_VOCABULARY[n] or "" for n in wanted if n != INSTRUMENTAL}
    if INSTRUMENTAL in wanted:
        if any(t != "vocals" for t in targets):
            raise UnknownStem(
                "'instrumental' is everything but the vocals: request it alone or with "
                "'vocals' only, or request the instruments by name",
                param="stems",
            )
        targets = ["vocals", INSTRUMENTAL]
        fields[INSTRUMENTAL] = INSTRUMENTAL
    return targets, fields


def _preprocess(options: list[str]) -> list[str]:
    steps = []
    for option in options:
        if option in _PREPROCESSING:
            steps.append(_PREPROCESSING[option])
        elif option in _NOT_YET:
            raise UnsupportedOption(
                f"preprocessing option {option!r} is not available yet on this server; "
                f"available: {', '.join(_PREPROCESSING)}",
                param="preprocessing_options",
            )
        else:
            raise UnsupportedOption(
                f"unknown preprocessing option {option!r}; MusicGPT's are Denoise, Deecho, "
                f"Dereverb, and this server implements: {', '.join(_PREPROCESSING)}",
                param="preprocessing_options",
            )
    return list(dict.fromkeys(steps))


def _speed(services: Services) -> float:
    """Measured seconds of work per second of audio over this server's recent jobs."""
    with services.db.read() as s:
        rows = s.execute(
            select(Job.started_at, Job.finished_at, Job.duration)
            .where(Job.status == COMPLETED, Job.reused_from.is_(None), Job.duration > 0)
            .order_by(Job.finished_at.desc())
            .limit(20)
        ).all()
    work = audio = 0.0
    for started, finished, seconds in rows:
        if started is not None and finished is not None and seconds:
            work += (finished - started).total_seconds()
            audio += float(seconds)
    return work / audio if audio > 0 else _DEFAULT_SPEED


def _credits(seconds: float) -> float:
    return round(seconds / 60.0, 2)


def _extract(
    services: Services,
    identity: Identity,
    form: dict[str, Any],
) -> dict[str, Any]:
    """The whole of ``POST /v1/Extraction`` after the form is parsed (runs in a thread)."""
    targets, fields = plan_stems(services, _json_list(form.get("stems"), "stems"))
    steps = _preprocess(_json_list(form.get("preprocessing_options"), "preprocessing_options"))
    upload, url = form.get("audio_file"), form.get("audio_url")
    url = url.strip() if isinstance(url, str) and url.strip() else None
    if not isinstance(upload, UploadFile):
        upload = None
    if upload is None and url is None:
        raise MissingInput("send the audio as `audio_file` (a file) or `audio_url`")
    if upload is not None and url is not None:
        raise InvalidRequest("send one of `audio_file` and `audio_url`, not both")
    webhook = form.get("webhook_url")
    webhook = webhook.strip() if isinstance(webhook, str) and webhook.strip() else None
    duration: float | None = None
    if upload is not None:
        row = uploads.store_direct(
            services,
            identity.account_id,
            upload.file,
            file_name=upload.filename or "audio",
            content_type=upload.content_type,
        )
        duration = row.duration
        source: dict[str, Any] = {"file_id": row.id}
    else:
        source = {"audio_url": url}
    try:
        req = StemsRequest.model_validate(
            {"input": {**source, "stems": targets}, "webhookUrl": webhook}
        )
    except ValidationError as exc:  # e.g. an over-long URL
        raise InvalidRequest(f"invalid request: {exc.errors()[0]['msg']}") from None
    sub = submit.plan_stems_request(services, identity.account_id, req, always_residual=True)
    params = dict(sub.params)
    if params.get("webhook"):
        params["webhook"] = {**params["webhook"], "style": STYLE}
    if steps:
        params["preprocess"] = steps
    params["musicgpt"] = {
        "stems": fields,
        "preprocessing_options": _json_list(form.get("preprocessing_options"), "x"),
    }
    sub = dataclasses.replace(sub, params=params)
    queued = submit.submit(services, identity.account_id, sub, key_id=identity.key_id)
    seconds = duration or _UNKNOWN_DURATION
    eta = (
        0
        if queued.status == COMPLETED
        else seconds * _speed(services) * (1 + queued.queue_position)
    )
    return {
        "success": True,
        "task_id": queued.request_id,
        "conversion_id": queued.request_id,
        "eta": max(0, math.ceil(eta)),
        "credit_estimate": _credits(seconds),
    }


# --- reading a job back ------------------------------------------------------------------------


def _status(job: Job) -> tuple[str, str]:
    if job.status == CANCELLED:
        return FAILED, "cancelled"
    if job.status == FAILED:
        return FAILED, f"{job.error_code or 'FAILED'}: {job.error_message or ''}".strip()
    if job.status == IN_PROGRESS:
        return IN_PROGRESS, f"separating ({round(100 * (job.progress or 0.0))}%)"
    if job.status == COMPLETED:
        return COMPLETED, "completed"
    return IN_QUEUE, "in queue"


def _urls(services: Services, job: Job) -> tuple[str | None, dict[str, str | None]]:
    """The original's URL and MusicGPT stem name -> URL (None until COMPLETED)."""
    params = job.params or {}
    source = params.get("input") or {}
    original = source.get("audio_url")
    ttl = services.settings.download_url_ttl_seconds
    if source.get("storage_key"):
        original = services.download_url(source["storage_key"], ttl)
    fields: dict[str, str] = (params.get("musicgpt") or {}).get("stems") or {}
    stems: dict[str, str | None] = dict.fromkeys(fields)
    if job.status == COMPLETED:
        data = result_response(services, job).data
        for name, output in fields.items():
            out = data.get(output)
            stems[name] = getattr(out, "url", None)
    return original, stems


def conversion(services: Services, job: Job) -> dict[str, Any]:
    """The ``conversion`` object of ``GET /v1/byId``."""
    status, message = _status(job)
    original, stems = _urls(services, job)
    extra = (job.params or {}).get("musicgpt") or {}
    seconds = float(job.duration or 0.0)
    return {
        "task_id": job.id,
        "conversion_id": job.id,
        "conversionType": "EXTRACTION",
        "status": status,
        "status_msg": message,
        "audio_url": original,
        **stems,
        "stems": list(stems),
        "preprocessing_options": extra.get("preprocessing_options", []),
        "conversion_duration": seconds if job.status == COMPLETED else None,
        "conversion_cost": _credits(seconds) if job.status == COMPLETED else None,
        "createdAt": job.created_at.isoformat(),
        "updatedAt": job.updated_at.isoformat(),
    }


def _lookup(services: Services, account_id: str, task_id: str) -> dict[str, Any]:
    with services.db.read() as s:
        job = owned_job(s, account_id, task_id)
        if "musicgpt" not in (job.params or {}):
            raise NotFound(f"no EXTRACTION conversion {task_id!r}")
    return {"success": True, "conversion": conversion(services, job)}


def musicgpt_event(services: Services, job: Job) -> tuple[str, dict[str, Any]] | None:
    """The completion webhook's body (registered for ``style == "musicgpt"``)."""
    if job.status not in (COMPLETED, FAILED):
        return None
    original, stems = _urls(services, job)
    body: dict[str, Any] = {
        "success": job.status == COMPLETED,
        "task_id": job.id,
        "conversion_id": job.id,
        "conversion_type": "EXTRACTION",
        "audio_path": original,
    }
    if job.status == COMPLETED:
        body.update({_WEBHOOK_NAMES.get(n, n): url for n, url in stems.items()})
        body["conversion_cost"] = _credits(float(job.duration or 0.0))
        body["conversion_duration"] = float(job.duration or 0.0)
        return "musicgpt.extraction.completed", body
    body["error"] = job.error_code or "FAILED"
    body["message"] = job.error_message or ""
    return "musicgpt.extraction.failed", body


register_event_builder(STYLE, musicgpt_event)


# --- routes ------------------------------------------------------------------------------------


@router.post("/v1/Extraction")
async def extraction(request: Request) -> JSONResponse:
    """Queue a stem extraction (multipart form; see the module docstring)."""
    services: Services = request.app.state.services
    try:
        identity = _identity(request, services, "audio:separate")
        try:
            async with request.form(max_files=1, max_fields=20) as form:
                fields = {k: form.get(k) for k in form}
                run = partial(_extract, services, identity, fields)
                body = await anyio.to_thread.run_sync(run)
        except StarletteHTTPException as exc:  # not a multipart form, or a broken one
            raise InvalidRequest(f"send a multipart form: {exc.detail}") from None
    except (DemixerError, DBAPIError) as exc:
        return _error(as_demixer_error(exc))
    return JSONResponse(body)


@router.get("/v1/byId")
async def by_id(request: Request) -> JSONResponse:
    """A conversion by ``task_id`` or ``conversion_id`` (``conversionType=EXTRACTION``)."""
    services: Services = request.app.state.services
    query = request.query_params
    try:
        identity = _identity(request, services, "audio:separate", "files:read")
        kind = query.get("conversionType", "EXTRACTION")
        if kind.upper() != "EXTRACTION":
            raise InvalidRequest(
                f"conversionType {kind!r} is not served here; only EXTRACTION",
                param="conversionType",
            )
        task_id = query.get("task_id") or query.get("conversion_id")
        if not task_id:
            raise InvalidRequest("give task_id or conversion_id", param="task_id")
        run = partial(_lookup, services, identity.account_id, task_id)
        body = await anyio.to_thread.run_sync(run)
    except (DemixerError, DBAPIError) as exc:
        return _error(as_demixer_error(exc))
    return JSONResponse(body)
