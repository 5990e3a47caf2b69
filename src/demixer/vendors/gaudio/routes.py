"""Gaudio's endpoints, translated onto the native path (uploads, ``api.submit``, the queue).

Jobs are ordinary ``audio/stems`` jobs planned by :func:`demixer.api.submit.plan_stems_request`
(so model choice, limits, cache and usage all apply) with Gaudio's output names and
``extra_formats=("mp3",)`` (:class:`~demixer.api.submit.PlanOptions`): every stem is stored as
WAV (at the input's rate) and MP3 (320 kbps), see :mod:`demixer.service.worker.outputs`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import partial
from typing import Annotated, Any, BinaryIO, cast

import anyio.to_thread
from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DBAPIError

from demixer.api import submit, uploads
from demixer.api.auth import ServicesDep, identify
from demixer.api.bodies import parse_json
from demixer.api.errors import as_demixer_error
from demixer.api.jobs import check_not_expired, fetch_job
from demixer.api.lanes import Lane
from demixer.api.schemas import StemsRequest, wire_time
from demixer.engine.stems import RESIDUAL
from demixer.errors import (
    DemixerError,
    DurationLimit,
    FileExpired,
    FileNotReady,
    FileTooLarge,
    Forbidden,
    InvalidAudio,
    InvalidRequest,
    NotFound,
    UnknownStem,
)
from demixer.models.planner import produces
from demixer.service.accounts.keys import Identity, describe_key
from demixer.service.accounts.quota import quota_state
from demixer.service.context import Services
from demixer.service.files.states import FileState
from demixer.service.jobs.contract import GaudioFields, JobParams
from demixer.service.jobs.queue import CANCELLED, COMPLETED, FAILED, IN_PROGRESS
from demixer.service.retention.expiry import result_expires_at
from demixer.service.schema import File, Job
from demixer.vendors import EVERY_METHOD
from demixer.vendors.gaudio import multipart
from demixer.vendors.gaudio.envelope import (
    GaudioRoute,
    JobNotFound,
    KeyMissing,
    NoSuchUpload,
    TypeMissing,
    UnsupportedChannels,
    UnsupportedRate,
    UploadNotFound,
    ZeroLength,
    error_response,
    ok,
)

__all__ = ["LANES", "PREFIX", "STEM_TYPES", "router"]

PREFIX = "/developers/api"
router = APIRouter(prefix=PREFIX, include_in_schema=False, route_class=GaudioRoute)

# Gaudio's `type` vocabulary -> engine stems; the residual is Gaudio's `others`.
STEM_TYPES = {
    "vocal": "vocals",
    "drum": "drums",
    "bass": "bass",
    "electric_guitar": "guitar",
    "acoustic_piano": "piano",
}
_OUTPUT_NAMES = {**{v: k for k, v in STEM_TYPES.items()}, RESIDUAL: "others"}
# Gaudio's music stem models and the types each separates, as its documents name them:
# gsep_music_hq_v1 any of the five (its job page and quick start), gsep_music_shq_v1 `vocal`
# alone, vocal and accompaniment (Gaudio Lab's MCP server's model list: typeOptions
# ["vocal"]). Every other name is another product, or none: a 403.
_MODEL_TYPES: dict[str, tuple[str, ...]] = {
    "gsep_music_hq_v1": tuple(STEM_TYPES),
    "gsep_music_shq_v1": ("vocal",),
}
_PART_PATH = "/v1/files/upload-multipart/part"
_MIN_RATE, _MAX_RATE = 16_000, 192_000
_STATUS: dict[str, str] = {
    IN_PROGRESS: "running",
    COMPLETED: "success",
    FAILED: "failed",
    CANCELLED: "failed",
}


async def _identity(
    request: Request, x_ga_apikey: Annotated[str | None, Header()] = None
) -> Identity:
    if not x_ga_apikey:
        raise KeyMissing("missing API key: send it in the `x-ga-apikey` header")
    return await identify(request, x_ga_apikey)  # 429 when over the key's rate


Caller = Annotated[Identity, Depends(_identity)]


def _need(identity: Identity, scope: str) -> None:
    if scope not in identity.scopes:
        raise Forbidden(f"this API key lacks the scope {scope!r}")


async def _body(request: Request) -> dict[str, Any]:
    # At most max_json_body_bytes arrive (api/bodies.py); never a crash on what they hold.
    body = parse_json(await request.body() or b"{}")
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    return body


@router.post("/v1/files/upload-multipart/create")
async def create_upload(request: Request, services: ServicesDep, caller: Caller) -> JSONResponse:
    """``{fileName, fileSize}`` -> ``{uploadId, chunkSize, preSignedUrl: [...]}``."""
    _need(caller, "files:write")
    body = await _body(request)
    create = partial(
        multipart.create,
        services,
        caller.account_id,
        body.get("fileName"),
        body.get("fileSize"),
        PREFIX + _PART_PATH,
    )
    upload = await anyio.to_thread.run_sync(create)
    return ok(
        {
            "uploadId": upload.upload_id,
            "chunkSize": upload.chunk_size,
            "preSignedUrl": upload.part_urls,
        }
    )


@router.put(_PART_PATH + "/{upload_id}/{number}")
async def put_part(
    upload_id: str, number: int, request: Request, services: ServicesDep
) -> JSONResponse:
    """One chunk's bytes through its signed URL (no key); answers the ``ETag`` header."""
    multipart.check_part_signature(services, upload_id, number, str(request.url.query))
    reader = uploads.AsyncBodyReader(request.stream())
    receive = partial(multipart.receive_part, services, upload_id, number, cast(BinaryIO, reader))
    try:
        md5 = await uploads.run_upload(receive)
    except (UploadNotFound, FileExpired) as exc:  # deleted or expired: as S3 once it is aborted
        raise NoSuchUpload(exc.message) from None
    response = ok(None)
    response.headers["ETag"] = f'"{md5}"'
    return response


def _parts(raw: object) -> list[multipart.Part]:
    if not isinstance(raw, list):
        raise InvalidRequest("parts must be a list of {awsETag, partNumber}")
    parts = []
    for item in raw:
        if not isinstance(item, dict):
            raise InvalidRequest("each part is an object {awsETag, partNumber}")
        number, etag = item.get("partNumber"), item.get("awsETag")
        if isinstance(number, bool) or not isinstance(number, int) or not isinstance(etag, str):
            raise InvalidRequest("each part needs an integer partNumber and a string awsETag")
        parts.append(multipart.Part(number, etag))
    return parts


@router.post("/v1/files/upload-multipart/complete")
async def complete_upload(request: Request, services: ServicesDep, caller: Caller) -> JSONResponse:
    """``{uploadId, parts: [{awsETag, partNumber}]}``: assemble and probe the file."""
    _need(caller, "files:write")
    body = await _body(request)
    upload_id = body.get("uploadId")
    if not isinstance(upload_id, str) or not upload_id:
        raise UploadNotFound("uploadId is required")
    parts = _parts(body.get("parts"))
    done = partial(multipart.complete, services, caller.account_id, upload_id, parts)
    # It copies the parts into the file and probes it (long for a big one): a thread of its
    # own, not one of the shared ones every other request needs.
    await uploads.run_upload(done)
    return ok(None)


def _usable(services: Services, account_id: str, upload_id: object) -> File:
    """The upload as a file a job can use; Gaudio's codes for the ones it cannot."""
    if not isinstance(upload_id, str) or not upload_id:
        raise UploadNotFound("audioUploadId is required")
    try:
        with services.db.read() as s:
            row = uploads.owned_file(services, s, account_id, upload_id, "audioUploadId")
    except NotFound:
        raise UploadNotFound(f"no upload {upload_id!r}") from None
    message = row.error_message or row.error_code or "not usable audio"
    # A rate is known for a file refused for its rate, too (Gaudio has a code for it).
    if row.sample_rate is not None and not _MIN_RATE <= row.sample_rate <= _MAX_RATE:
        raise UnsupportedRate(f"{row.sample_rate} Hz is outside 16–192 kHz")
    if row.status == FileState.FAILED:
        if row.error_code == FileTooLarge.code:
            raise FileTooLarge(message)
        if row.error_code == DurationLimit.code:
            raise DurationLimit(message)
        if not row.bytes_stored or "zero length" in message or "no audio" in message:
            raise ZeroLength(message)
        raise InvalidAudio(f"unsupported format: {message}")
    if row.status != FileState.UPLOADED:
        raise FileNotReady(f"upload {upload_id!r} is not complete: call upload-multipart/complete")
    if row.channels is not None and row.channels > 2:
        raise UnsupportedChannels(f"{row.channels} channels; send mono or stereo")
    if not row.duration:
        raise ZeroLength(f"{row.file_name!r} holds no audio")
    return row


def _stems(model: str, raw: object) -> list[str]:
    """``type``'s stems: comma-separated (``"vocal,drum"``), or a list of those words, each
    one ``model`` separates."""
    types = _MODEL_TYPES[model]
    if isinstance(raw, list) and all(isinstance(w, str) for w in raw):
        raw = ",".join(raw)
    if not isinstance(raw, str) or not raw.strip():
        raise TypeMissing(f"type is required: comma-separated, any of {', '.join(types)}")
    stems: list[str] = []
    for word in (w.strip().lower() for w in raw.split(",")):
        if not word:
            continue
        if word not in types:
            raise InvalidRequest(
                f"unknown type {word!r} for {model}; use any of {', '.join(types)}"
            )
        if STEM_TYPES[word] not in stems:
            stems.append(STEM_TYPES[word])
    if not stems:
        raise TypeMissing(f"type is required: comma-separated, any of {', '.join(types)}")
    return stems


def _producible(services: Services) -> set[str]:
    """The stems the models this server can run produce."""
    return {s for spec in submit.installed_models(services) for s in produces(spec)}


def _unproducible(services: Services, stems: list[str]) -> UnknownStem:
    made = _producible(services)
    types = {stem: word for word, stem in STEM_TYPES.items()}
    missing = [types[s] for s in stems if s not in made]
    what = ", ".join(missing) if missing else f"{', '.join(types[s] for s in stems)} together"
    can = ", ".join(w for w, stem in STEM_TYPES.items() if stem in made) or "none"
    return UnknownStem(f"no installed model produces type {what}; this server can produce: {can}")


def _create_job(services: Services, caller: Identity, model: str, body: dict[str, Any]) -> str:
    # Gaudio's 403: the model is not permitted. Its speech and DME (dialogue / music /
    # effects) models separate other things than music stems, which is all demixer does; a
    # name Gaudio has no model for (`gsep_music_foo`) was taken as a music model.
    if model not in _MODEL_TYPES:
        raise Forbidden(
            f"model {model[:100]!r} is not permitted; use a GSEP music model, e.g. gsep_music_hq_v1"
        )
    stems = _stems(model, body.get("type"))
    row = _usable(services, caller.account_id, body.get("audioUploadId"))
    request = StemsRequest.model_validate(
        {"input": {"file_id": row.id, "stems": stems, "output_format": "wav"}}
    )
    how = submit.PlanOptions(
        residual="always",  # Gaudio's `others`
        output_names=_OUTPUT_NAMES,
        extra_formats=("mp3",),
        vendor=GaudioFields(),
        note=f"gaudio {model}: type {body.get('type')!r}",
    )
    try:  # the best installed model or recipe with every stem
        sub = submit.plan_stems_request(services, caller.account_id, request, how)
    except UnknownStem:  # said again in Gaudio's words: the types this server can produce
        raise _unproducible(services, stems) from None
    queued = submit.submit(services, caller.account_id, sub, key_id=caller.key_id)
    return queued.request_id


@router.post("/v1/{model}/jobs")
async def create_job(
    model: str, request: Request, services: ServicesDep, caller: Caller
) -> JSONResponse:
    """``{audioUploadId, type: "vocal, drum"}`` -> ``{jobId}``."""
    _need(caller, "audio:separate")
    body = await _body(request)
    job_id = await anyio.to_thread.run_sync(partial(_create_job, services, caller, model, body))
    return ok({"jobId": job_id})


def _download_urls(
    services: Services, job: Job, until: datetime
) -> tuple[dict[str, dict[str, str]], datetime]:
    """``downloadUrl``, and when the first of its URLs expires (``until`` at the latest)."""
    ttl = services.settings.download_url_ttl_seconds
    urls: dict[str, dict[str, str]] = {}
    for name, out in (job.outputs or {}).items():
        key = str(out["key"])
        stem = name.rsplit(".", 1)[0] if "." in name else name
        ext = key.rsplit(".", 1)[-1]
        link = services.links.download_link(
            key,
            ttl,
            content_type=out.get("content_type", "application/octet-stream"),
            file_name=out.get("file_name", key.rsplit("/", 1)[-1]),
            until=job.expires_at,
        )
        urls.setdefault(stem, {})[ext] = link.url
        until = min(until, link.expires_at)
    return urls, until


async def _job_view(services: Services, account_id: str, job_id: str) -> dict[str, Any]:
    """The answer for the job: one read of its row, then no I/O (the URLs are signed here)."""
    try:
        job = await fetch_job(services, account_id, job_id)  # one SELECT, no ORM object
    except NotFound:
        raise JobNotFound(f"no job {job_id!r}") from None
    if not isinstance(JobParams.of_job(job.id, job.params).vendor, GaudioFields):
        raise JobNotFound(f"no job {job_id!r}")
    keep = services.settings.result_retention_seconds
    now = services.db.clock()
    data: dict[str, Any] = {
        "jobId": job.id,
        "status": _STATUS.get(job.status, "waiting"),
        "expireAt": None,
        "downloadUrl": None,
    }
    if job.status == COMPLETED:
        check_not_expired(services, job)
        expires = result_expires_at(job, keep)
        urls_until = now + timedelta(seconds=services.settings.download_url_ttl_seconds)
        until = min(expires, urls_until) if expires is not None else urls_until
        # expireAt is when the first URL expires, as its signer counts (to the second, by
        # this machine's clock): a client fetching just before it must not be refused.
        data["downloadUrl"], until = _download_urls(services, job, until)
        data["expireAt"] = wire_time(until)
    elif job.status in (FAILED, CANCELLED):
        reason = "cancelled" if job.status == CANCELLED else job.error_code or "failed"
        data["errorMessage"] = job.error_message or reason
    return data


@router.get("/v1/{model}/jobs/{job_id}")
async def get_job(model: str, job_id: str, services: ServicesDep, caller: Caller) -> JSONResponse:
    """``{jobId, status, expireAt, downloadUrl: {<stem>: {mp3, wav}}}`` (+ errorMessage)."""
    return await _job_answer(services, caller, job_id)


async def _job_answer(services: Services, caller: Identity, job_id: str) -> JSONResponse:
    _need(caller, "files:read")
    return ok(await _job_view(services, caller.account_id, job_id))


async def _job_lane(request: Request) -> Response:
    """``GET …/jobs/{job_id}`` without a query: the route above without FastAPI's routing and
    dependency injection (see :mod:`demixer.api.lanes`), answering in the envelope as
    :class:`GaudioRoute` does."""
    try:
        caller = await _identity(request, request.headers.get("x-ga-apikey"))
        services: Services = request.app.state.services
        return await _job_answer(services, caller, request.path_params["job_id"])
    except (DemixerError, DBAPIError) as exc:
        return error_response(as_demixer_error(exc))


LANES = (Lane("GET", PREFIX + "/v1/{model}/jobs/{job_id}", _job_lane),)
"""This module's fast lanes (``create_app`` puts them first)."""


def _key_info(services: Services, caller: Identity) -> dict[str, Any]:
    key, project = describe_key(services.db, caller.key_id)
    made = _producible(services)
    with services.db.read() as s:
        allowance = quota_state(s, caller.account_id, services.db.clock())
    return {
        "description": key.name,
        "createdAt": wire_time(datetime.fromisoformat(key.created_at)),
        "status": "active",  # a revoked key is refused before it gets here
        "projectName": project,
        # The music models whose types this server can separate now (any one of them).
        "permittedModels": [
            model
            for model, types in _MODEL_TYPES.items()
            if any(STEM_TYPES[t] in made for t in types)
        ],
        # Gaudio counts credits; demixer counts seconds of audio against the account's
        # monthly allowance (null: no allowance, nothing refused for usage).
        "remainingSeconds": None if allowance is None else allowance.left_shown,
        "resetsAt": None if allowance is None else wire_time(allowance.resets_at),
    }


@router.get("/v1/key/info")
async def key_info(services: ServicesDep, caller: Caller) -> JSONResponse:
    """The calling key: its name, when it was made, its account, the GSEP models this server
    runs and the account's audio seconds left this month (Gaudio Lab's MCP server's
    ``gaudio_get_key_info``)."""
    return ok(await anyio.to_thread.run_sync(partial(_key_info, services, caller)))


@router.api_route("/{path:path}", methods=EVERY_METHOD)
async def unknown_path(path: str) -> JSONResponse:
    """Any other path under the prefix: a 404 in the shape of Gaudio's HTTP errors."""
    body = {"error": "not_found", "message": f"no such endpoint: {path[:200]!r}"}
    return JSONResponse(body, status_code=404)
