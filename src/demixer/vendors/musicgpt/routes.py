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
  Statuses: bad parameters, unsupported media type 400; a missing or unknown key, or a key
  without the scope, 403 (MusicGPT's error table has no 401: its 403 covers "authentication
  issues"); unknown task (or another account's) 404; conflicts 409; an
  ``audio_file`` over the upload limit or a form over its size 413 (counted while it arrives:
  nothing past the limit is stored); a body that stops arriving 408; request rate or
  concurrent-jobs limit 429 (with ``Retry-After``); missing input (a file in a field other
  than ``audio_file`` too), unusable audio, stems no
  installed model produces, unavailable preprocessing 422; object storage or the database
  unavailable 503, a full disk 507 (both with ``Retry-After``); anything else 500.
  the account's monthly audio minutes used up (``QUOTA_EXCEEDED``, see README's "Quotas") 402.
- Stems: MusicGPT names map onto the engine stems that are exactly them (``guitar`` ->
  ``guitar``, ``lead_vocal`` -> ``lead_vocals``, ``kick_drum`` -> ``kick`` of the
  ``drum-kit`` recipe, ``male_vocal`` -> ``male_vocals`` of ``male-female``…);
  ``instrumental`` is the residual of ``vocals`` (input minus vocals) and can only be combined
  with ``vocals``. A name no installed model produces is a 422 listing what can be produced,
  never a substitute: a narrower name (``electric_guitar``, ``keys``, ``kick_drum`` without
  ``drum-kit``…) is not given the broader stem that holds it (the message names that one).
- ``preprocessing_options``: ``Denoise`` runs :mod:`demixer.audio.denoise` on the input before
  separation (job param ``preprocess: ["denoise"]``); stems + residual then add up to the
  *denoised* input. ``Dereverb`` and ``Deecho`` run a de-reverb / de-echo
  model first when one is installed (else 422 naming it).
- ``task_id`` and ``conversion_id`` are both the demixer request id. ``eta`` is seconds:
  audio duration x measured seconds-per-audio-second of this server's recent jobs (x the
  queue ahead); -1 (MusicGPT's "unknown") for an ``audio_url`` not fetched yet.
  ``credit_estimate`` / ``conversion_cost``: minutes of audio (2 decimals), the unit
  demixer's usage counts in seconds (an ``audio_url``'s estimate assumes 3 minutes); 0 for a
  request the result cache answers, as its usage is.
  ``conversion_duration``: seconds of audio.
- Stem files: each stem's field (``vocals``, ``instrumental``...) is its MP3, as every
  audio URL MusicGPT's examples show is (``audiofile.mp3``), and ``{field}_wav``
  (``vocals_wav``) its WAV at the input's rate, as MusicGPT's other conversions give
  ``conversion_path`` (MP3) beside ``conversion_path_wav``. A conversion finished before
  MP3 was made has its WAV in both.
- Statuses: IN_QUEUE, IN_PROGRESS, COMPLETED, FAILED (CANCELLED reads FAILED, with a
  ``status_msg`` saying so, and its webhook is a failure's).
- Body: a multipart form as MusicGPT documents it; a URL-encoded form, a JSON object of the
  same fields or no body at all are read as forms too (``api/forms.py``), so a request without
  ``audio_file`` and ``audio_url`` is always the 422 ``MISSING_INPUT``.
- Surround input (more than 2 channels) is folded to stereo first (``input.downmix``): the
  protocol has no field to ask for it.
- ``GET /v1/byUser``: the caller's extractions, a page at a time, as MusicGPT's own n8n
  node asks for them (its public docs do not list the endpoint): ``conversionType``
  (EXTRACTION, or none for every type; any other type has none here), ``startDate`` /
  ``endDate`` (ISO 8601, a time without an offset is UTC), ``sortOrder`` (DESC, newest first,
  or ASC), ``limit`` (1-100, 20 by default; more is read as 100) and ``LastEvaluatedKey`` (the
  previous page's). The answer ``{success, conversions, LastEvaluatedKey}`` is the node's;
  the shape of one conversion is not public, so each is ``byId``'s ``conversion``.
  ``LastEvaluatedKey`` is null on the last page.
- ``GET /v1/`` answers 200 ``{success: true}`` to a valid key (MusicGPT's n8n node checks its
  credential with it), 403 to any other.
- Any other path under the prefix answers MusicGPT's 404.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import partial
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from demixer.api import submit, uploads
from demixer.api.auth import identify
from demixer.api.bodies import parse_json
from demixer.api.errors import as_demixer_error
from demixer.api.forms import Form, read_form
from demixer.api.jobs import check_not_expired, fetch_job
from demixer.api.lanes import Lane
from demixer.api.paging import keyset_page
from demixer.api.schemas import QueuedResponse, StemsRequest
from demixer.errors import (
    Conflict,
    DemixerError,
    FileTooLarge,
    Forbidden,
    Gone,
    InvalidAudio,
    InvalidParams,
    InvalidRequest,
    ModelUnavailable,
    NotFound,
    QuotaExceeded,
    RateLimited,
    RequestTimeout,
    ServiceUnavailable,
    StorageFull,
    UnknownStem,
    UnsupportedMediaType,
)
from demixer.service.accounts.keys import Identity, Unauthorized
from demixer.service.context import Services
from demixer.service.files.lifecycle import REQUEST_INPUT
from demixer.service.jobs.contract import JobParams, MusicGptFields
from demixer.service.jobs.queue import COMPLETED, JobConflict
from demixer.service.schema import Job
from demixer.vendors import EVERY_METHOD
from demixer.vendors.musicgpt.wire import (
    STYLE,
    MissingInput,
    UnsupportedOption,
    conversion,
    credits,
    plan_stems,
    preprocess_steps,
)

__all__ = ["LANES", "PREFIX", "error_response", "router", "vendor_status"]

PREFIX = "/api/public"
router = APIRouter(prefix=PREFIX, include_in_schema=False)

_DEFAULT_SPEED = 0.5  # seconds per audio second, before this server has measured any job
_UNKNOWN_DURATION = 180.0  # seconds assumed for an audio_url not yet fetched


# --- errors ------------------------------------------------------------------------------------


def vendor_status(error: DemixerError) -> int:
    """The HTTP status for ``error`` (see the module docstring)."""
    table: tuple[tuple[type[DemixerError], int], ...] = (
        (Unauthorized, 403),
        (Forbidden, 403),
        (RateLimited, 429),
        (QuotaExceeded, 402),
        (StorageFull, 507),
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
        (FileTooLarge, 413),
        (RequestTimeout, 408),
        (UnsupportedMediaType, 400),
        (InvalidRequest, 400),
    )
    for cls, status in table:
        if isinstance(error, cls):
            return status
    return 500


def error_response(error: DemixerError) -> JSONResponse:
    """``error`` as MusicGPT answers it (``Retry-After`` where waiting helps)."""
    headers = None
    if isinstance(error, RateLimited | ServiceUnavailable):
        headers = {"Retry-After": str(error.retry_after)}
    return JSONResponse(
        {"success": False, "error": error.code, "message": error.message},
        status_code=vendor_status(error),
        headers=headers,
    )


async def _identity(request: Request, *scopes: str) -> Identity:
    """The caller, from ``Authorization: <key>`` or ``Authorization: Bearer <key>``, holding
    one of ``scopes`` (none given: any valid key)."""
    raw = request.headers.get("authorization", "").strip()
    if raw[:7].lower() == "bearer ":
        raw = raw[7:].strip()
    if not raw:
        raise Unauthorized("missing API key: send `Authorization: <key>`")
    identity = await identify(request, raw)
    if scopes and not identity.scopes.intersection(scopes):
        raise Forbidden(f"this API key lacks the scope {' or '.join(map(repr, scopes))}")
    return identity


def _json_list(value: Any, field: str) -> list[str]:
    """A form field holding a JSON-encoded list of strings (``'["vocals"]'``), deduplicated."""
    if value is None or value == "":
        return []
    if not isinstance(value, str):
        raise InvalidRequest(f"{field} must be a JSON-encoded list of strings", param=field)
    try:
        items = parse_json(value.encode())
    except InvalidRequest:  # not JSON, or nested too deeply to parse
        items = None
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        example = '["Denoise"]' if field == "preprocessing_options" else '["vocals"]'
        raise InvalidRequest(
            f"{field} must be a JSON-encoded list of strings, e.g. {example}", param=field
        )
    return list(dict.fromkeys(i.strip() for i in items if i.strip()))


# --- planning ----------------------------------------------------------------------------------


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


def _queue(
    services: Services,
    identity: Identity,
    source: dict[str, Any],
    targets: list[str],
    webhook: str | None,
    steps: list[str],
    fields: dict[str, str],
    options: list[str],
) -> QueuedResponse:
    """Plan and queue the ``audio/stems`` job of an extraction."""
    try:
        req = StemsRequest.model_validate(
            # downmix: the protocol cannot ask for it, so surround is folded to stereo
            {"input": {**source, "stems": targets, "downmix": True}, "webhookUrl": webhook}
        )
    except ValidationError as exc:  # e.g. an over-long URL
        raise InvalidRequest(f"invalid request: {exc.errors()[0]['msg']}") from None
    how = submit.PlanOptions(
        residual="always",
        extra_formats=("mp3",),  # each stem's MP3 beside its WAV (wire.job_urls)
        preprocess=tuple(steps),
        webhook_style=STYLE,
        vendor=MusicGptFields(stems=fields, preprocessing_options=tuple(options)),
    )
    sub = submit.plan_stems_request(services, identity.account_id, req, how)
    return submit.submit(services, identity.account_id, sub, key_id=identity.key_id)


def _extract(services: Services, identity: Identity, form: Form) -> dict[str, Any]:
    """The whole of ``POST /v1/Extraction`` after the form is parsed (runs in a thread)."""
    fields_in = form.fields
    upload, url = form.file, fields_in.get("audio_url")
    url = url.strip() if isinstance(url, str) and url.strip() else None
    if upload is not None and upload.field != "audio_file":
        # No `audio_file` then: the 422 MusicGPT documents for a missing input (its form
        # parser passes over a file part of another name), saying where the file went.
        raise MissingInput(
            f"the file goes in the field `audio_file`, not {upload.field!r}", param="audio_file"
        )
    if upload is None and url is None:  # first: 422 whatever else the form lacks
        raise MissingInput("send the audio as `audio_file` (a file) or `audio_url`")
    if upload is not None and url is not None:
        raise InvalidRequest("send one of `audio_file` and `audio_url`, not both")
    if upload is not None and "files:write" not in identity.scopes:  # as any upload
        raise Forbidden("this API key lacks the scope 'files:write' (an audio_file is stored)")
    targets, fields = plan_stems(services, _json_list(fields_in.get("stems"), "stems"))
    options = _json_list(fields_in.get("preprocessing_options"), "preprocessing_options")
    steps = preprocess_steps(services, options)
    webhook = fields_in.get("webhook_url")
    webhook = webhook.strip() if isinstance(webhook, str) and webhook.strip() else None
    duration: float | None = None
    if upload is not None:
        row = uploads.store_direct(
            services,
            identity.account_id,
            upload.path,
            file_name=upload.filename or "audio",
            content_type=upload.content_type,
            sha256=upload.sha256,
            purpose=REQUEST_INPUT,  # the extraction's alone: never listed (GET /v1/files)
        )
        duration = row.duration
        source: dict[str, Any] = {"file_id": row.id}
    else:
        source = {"audio_url": url}
    try:
        queued = _queue(services, identity, source, targets, webhook, steps, fields, options)
    except BaseException:
        if upload is not None:  # refused: the client has no id to reuse or delete it with
            uploads.delete_file(services, identity.account_id, source["file_id"])
        raise
    seconds = duration or _UNKNOWN_DURATION
    if queued.status == COMPLETED:  # the result cache answered: it costs nothing (usage 0)
        seconds = 0.0
        eta = 0
    elif duration is None:  # an audio_url not fetched yet: MusicGPT's "-1 if unknown"
        eta = -1
    else:
        eta = max(0, math.ceil(duration * _speed(services) * (1 + queued.queue_position)))
    return {
        "success": True,
        "task_id": queued.request_id,
        "conversion_id": queued.request_id,
        "eta": eta,
        "credit_estimate": credits(seconds),
    }


# --- reading a job back ------------------------------------------------------------------------


async def _lookup(services: Services, account_id: str, task_id: str) -> dict[str, Any]:
    job = await fetch_job(services, account_id, task_id)  # one SELECT, no ORM object
    if not isinstance(JobParams.of_job(job.id, job.params).vendor, MusicGptFields):
        raise NotFound(f"no EXTRACTION conversion {task_id!r}")
    if job.status == COMPLETED:
        check_not_expired(services, job)  # 404, not links to deleted files
    # No I/O but the input's description, read once per process (BlobLinks.download_url).
    return {"success": True, "conversion": conversion(services, job)}


# --- routes ------------------------------------------------------------------------------------


@router.post("/v1/Extraction")
async def extraction(request: Request) -> JSONResponse:
    """Queue a stem extraction (multipart form; see the module docstring)."""
    services: Services = request.app.state.services
    settings = services.settings
    try:
        identity = await _identity(request, "audio:separate")
        # audio_file is counted while it arrives and spooled in the data directory (413 past
        # the upload limit, or the room left in the account's storage, nothing past it
        # written: api/forms.py).
        room = await anyio.to_thread.run_sync(uploads.storage_room, services, identity.account_id)
        limit = settings.max_upload_bytes
        async with read_form(request, settings.data_dir, limit, storage=room) as form:
            # It stores the file, which may take long: not on a shared thread.
            body = await uploads.run_upload(partial(_extract, services, identity, form))
    except (DemixerError, DBAPIError) as exc:
        return error_response(as_demixer_error(exc))
    return JSONResponse(body)


@router.get("/v1/byId")
async def by_id(request: Request) -> JSONResponse:
    """A conversion by ``task_id`` or ``conversion_id`` (``conversionType=EXTRACTION``)."""
    services: Services = request.app.state.services
    query = request.query_params
    try:
        # The stems' and the input's download URLs: read as a result is (Gaudio's job too).
        identity = await _identity(request, "files:read")
        kind = query.get("conversionType", "EXTRACTION")
        if kind.upper() != "EXTRACTION":
            raise InvalidRequest(
                f"conversionType {kind!r} is not served here; only EXTRACTION",
                param="conversionType",
            )
        task_id = query.get("task_id") or query.get("conversion_id")
        if not task_id:
            raise InvalidRequest("give task_id or conversion_id", param="task_id")
        other = query.get("conversion_id")
        if other and other != task_id:  # both are the request id here: two requests named
            raise InvalidRequest(
                f"task_id {task_id!r} and conversion_id {other!r} name different "
                "conversions; give one of them",
                param="conversion_id",
            )
        body = await _lookup(services, identity.account_id, task_id)
    except (DemixerError, DBAPIError) as exc:
        return error_response(as_demixer_error(exc))
    return JSONResponse(body)


_PAGE, _MAX_PAGE = 20, 100  # byUser's default and largest `limit`


def _is_extraction(job: Job) -> bool:
    """Whether ``job`` is a MusicGPT extraction (what byUser lists; byId finds no other)."""
    try:
        return isinstance(JobParams.of_job(job.id, job.params).vendor, MusicGptFields)
    except InvalidParams:  # a row this release cannot read: not shown as anything
        return False


def _when(raw: str | None, param: str) -> datetime | None:
    """``startDate`` / ``endDate``: ISO 8601, a date or a time; without an offset, UTC."""
    if raw is None or not raw.strip():
        return None
    try:
        when = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise InvalidRequest(
            f"{param} {raw[:100]!r} is not an ISO 8601 date or time, e.g. 2025-01-01T00:00:00Z",
            param=param,
        ) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _limit(raw: str | None) -> int:
    if raw is None or not raw.strip():
        return _PAGE
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if limit < 1:
        raise InvalidRequest(f"limit {raw[:100]!r} is not a whole number from 1", param="limit")
    return min(limit, _MAX_PAGE)


def _conversions(services: Services, account_id: str, query: Mapping[str, str]) -> dict[str, Any]:
    """The whole of ``GET /v1/byUser`` after the key is checked (runs in a thread)."""
    kind = query.get("conversionType") or ""
    start = _when(query.get("startDate"), "startDate")
    end = _when(query.get("endDate"), "endDate")
    order = (query.get("sortOrder") or "DESC").upper()
    if order not in ("ASC", "DESC"):
        raise InvalidRequest(f"sortOrder {order[:100]!r} is not ASC or DESC", param="sortOrder")
    limit = _limit(query.get("limit"))
    cursor = query.get("LastEvaluatedKey") or query.get("lastEvaluatedKey") or None
    if kind and kind.upper() != "EXTRACTION":  # the only conversions made here
        return {"success": True, "conversions": [], "LastEvaluatedKey": None}
    rows = select(Job).where(Job.account_id == account_id)
    if start is not None:
        rows = rows.where(Job.created_at >= start)
    if end is not None:
        rows = rows.where(Job.created_at <= end)
    with services.db.read() as s:
        try:
            jobs, next_key = keyset_page(
                s,
                rows,
                Job.created_at,
                Job.id,
                limit,
                cursor,
                oldest_first=order == "ASC",
                keep=_is_extraction,
            )
        except InvalidRequest:  # a key this server did not hand out
            raise InvalidRequest(
                f"bad LastEvaluatedKey {str(cursor)[:100]!r}", param="LastEvaluatedKey"
            ) from None
        found = [conversion(services, job) for job in jobs]
    return {"success": True, "conversions": found, "LastEvaluatedKey": next_key}


@router.get("/v1/byUser")
async def by_user(request: Request) -> JSONResponse:
    """The caller's extractions, a page at a time (see the module docstring)."""
    services: Services = request.app.state.services
    try:
        identity = await _identity(request, "files:read")
        read = partial(_conversions, services, identity.account_id, request.query_params)
        body = await anyio.to_thread.run_sync(read)
    except (DemixerError, DBAPIError) as exc:
        return error_response(as_demixer_error(exc))
    return JSONResponse(body)


@router.get("/v1/")
@router.get("/v1")
async def key_check(request: Request) -> JSONResponse:
    """200 for a valid key: MusicGPT's n8n node tests its credential with this request."""
    try:
        await _identity(request)
    except (DemixerError, DBAPIError) as exc:
        return error_response(as_demixer_error(exc))
    return JSONResponse({"success": True, "message": "the API key is valid"})


# The route takes nothing but the request: its lane is the route's own function, without
# FastAPI's routing (see demixer.api.lanes), whatever the query.
LANES = (Lane("GET", PREFIX + "/v1/byId", by_id, query=lambda _query: True),)
"""This module's fast lanes (``create_app`` puts them first)."""


@router.api_route("/{path:path}", methods=EVERY_METHOD)
async def unknown_path(path: str) -> JSONResponse:
    """Any other path under the prefix: MusicGPT's 404."""
    return error_response(NotFound(f"no such endpoint: {path[:200]!r}"))
