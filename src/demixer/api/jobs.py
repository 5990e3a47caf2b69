"""Queued requests read back: status, result, list; cancel and delete.

Reads are short: a status is one SELECT of the job's row outside any transaction
(:func:`read_job`, :func:`fetch_job`), plus a read transaction only for what the row does not
say (a queued job's position, a webhook's deliveries, the log: :func:`extras`). The SSE streams'
shared reader (:mod:`demixer.api.statuswatch`) reads the same for many jobs at once and builds
each status with :func:`build_status`. Status changes go through ``services.queue`` only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import ARRAY, String, any_, bindparam, delete, select
from sqlalchemy.orm import Session

from demixer.api.paging import keyset_page
from demixer.api.schemas import (
    JobError,
    JobStatus,
    LogLine,
    OutputFile,
    RequestList,
    RequestStatus,
    ResultResponse,
    Retention,
    Usage,
    WebhookStatus,
    wire_time,
)
from demixer.errors import (
    InvalidParams,
    JobFailed,
    NotFound,
    NotReady,
    ResultExpired,
    UnknownModel,
)
from demixer.models import planner
from demixer.models.registry import get_spec
from demixer.naming import residual_maker, url_file_name
from demixer.service.accounts.usage import usage_quantity
from demixer.service.batchread import keyed_reads
from demixer.service.context import Services
from demixer.service.delivery.outbox import DeliveryState, latest_delivery
from demixer.service.files.lifecycle import FileConflict, mark_deleted
from demixer.service.jobs.contract import JobParams, MusicGptFields, UploadInput
from demixer.service.jobs.queue import (
    CANCELLED,
    COMPLETED,
    FAILED,
    IN_PROGRESS,
    IN_QUEUE,
    JobConflict,
)
from demixer.service.prepared import prepared
from demixer.service.retention.expiry import result_expired, result_expires_at
from demixer.service.schema import Delivery, Job, JobLog
from demixer.service.worker.child import STAGES
from demixer.service.worker.registry import live_models, waiting_reason
from demixer.storage import delete_file_blobs

__all__ = [
    "Extras",
    "build_status",
    "check_not_expired",
    "delete_job",
    "extras",
    "fetch_job",
    "job_result",
    "job_status",
    "list_jobs",
    "more_reads",
    "own_input",
    "owned_job",
    "read_job",
    "result_response",
    "status_of",
    "urls",
]


def urls(services: Services, job_id: str, model: str | None = None) -> dict[str, str]:
    """The absolute URLs of a request (from ``settings.base_url``); with ``model``, fal's
    paths under the request's queue model (``/v1/queue/{model}/requests/{id}``, its result
    at that path itself), which fal's clients poll."""
    root = f"{services.settings.base_url}/v1/queue"
    base = f"{root}/{model}/requests/{job_id}" if model else f"{root}/requests/{job_id}"
    return {
        "status": f"{base}/status",
        "stream": f"{base}/status/stream",
        "result": base if model else f"{base}/result",
        "cancel": f"{base}/cancel",
    }


def owned_job(session: Session, account_id: str, job_id: str, model: str | None = None) -> Job:
    """The caller's job; another account's or an unknown id is NOT_FOUND. ``model``: the queue
    model the URL names (fal's form, ``/v1/queue/{model}/requests/{id}``); another model's
    request is NOT_FOUND too, the same answer as an unknown id."""
    return _owned(session.get(Job, job_id), account_id, job_id, model)


@dataclass
class Extras:
    """What a status shows beyond its job's row, read beforehand (for one job, or in bulk for
    many: see :mod:`demixer.api.statuswatch`).

    Attributes:
        position: queued jobs ahead (while queued).
        live: :func:`~demixer.service.worker.registry.live_models` (while queued).
        delivery: the latest delivery of the job's webhook, if it has one and one exists.
        lines: the job's log, when asked for.
    """

    position: int | None = None
    live: Sequence[Sequence[str]] | None = None
    delivery: Delivery | None = None
    lines: Sequence[JobLog] | None = None


def extras(
    services: Services,
    s: Session,
    job: Job,
    logs: bool,
    live: Sequence[Sequence[str]] | None = None,
) -> Extras:
    """The :class:`Extras` of one job, read in ``s`` (only what its status shows: see
    :func:`more_reads`). ``live``: when the caller has it."""
    found = Extras()
    if logs:
        found.lines = list(
            s.execute(select(JobLog).where(JobLog.job_id == job.id).order_by(JobLog.id)).scalars()
        )
    if job.status == IN_QUEUE:  # small indexed queries, only while queued
        if live is None:
            live = live_models(s, services.settings, services.db.clock())
        found.live = live
        found.position = services.queue.position(s, job)
    if (job.params or {}).get("webhook"):
        found.delivery = latest_delivery(s, job.id)
    return found


def _webhook_status(job: Job, row: Delivery | None) -> WebhookStatus | None:
    """The job's webhook and its latest delivery (``none`` before the job's final state)."""
    hook = JobParams.of_job(job.id, job.params).webhook
    if hook is None:
        return None
    if row is None:
        return WebhookStatus(
            url=hook.url,
            delivery_status="none",
            attempts=0,
            delivered_at=None,
            last_error=None,
            next_attempt_at=None,
        )
    return WebhookStatus(
        url=row.url,
        delivery_status=cast(Any, row.status),
        attempts=row.attempts,
        delivered_at=row.delivered_at,
        last_error=row.last_error,
        next_attempt_at=row.next_attempt_at if row.status == DeliveryState.PENDING else None,
    )


def build_status(services: Services, job: Job, logs: bool, found: Extras) -> RequestStatus:
    """The status of ``job`` (a row) with its :class:`Extras` (no I/O)."""
    links = urls(services, job.id)
    lines = None
    if logs:
        lines = [LogLine(timestamp=r.timestamp, message=r.message) for r in found.lines or ()]
    error = None
    if job.status == FAILED:
        error = JobError(code=job.error_code or "FAILED", message=job.error_message or "")
    progress = job.progress if job.status in (IN_PROGRESS, COMPLETED) else None
    stage = job.stage if job.status == IN_PROGRESS and job.stage in STAGES else None
    waiting = position = None
    if job.status == IN_QUEUE:
        steps = [
            s for s in JobParams.of_job(job.id, job.params).preprocess if s in planner.CLEANUP_STEMS
        ]
        model_dir = services.settings.model_dir
        waiting = waiting_reason(job.engine_model, found.live or [], steps, model_dir)
        position = found.position
    return RequestStatus(
        request_id=job.id,
        model=job.queue_model,
        engine_model=job.engine_model,
        quality=JobParams.of_job(job.id, job.params).quality,
        status=cast(JobStatus, job.status),
        created_at=job.created_at,
        updated_at=job.updated_at,
        queue_position=position,
        waiting_reason=waiting,
        progress=progress,
        stage=cast(Any, stage),
        **_described(job),
        cancel_requested=job.cancel_requested,
        status_url=links["status"],
        result_url=links["result"],
        response_url=links["result"],
        error=error,
        logs=lines,
        webhook=_webhook_status(job, found.delivery),
    )


def _described(job: Job) -> dict[str, Any]:
    """What a person recognises a request by: the song, its length, the stems or prompt; and
    the upload it was made from (a client deleting the song deletes that too)."""
    params = JobParams.of_job(job.id, job.params)
    source = params.input
    file_id = None
    if isinstance(source, UploadInput):
        name, duration = source.file_name, job.duration or source.duration
        # A MusicGPT extraction's own upload is never named: it goes with the request.
        file_id = None if _owns_input(params) else source.file_id
    else:
        name, duration = url_file_name(source.audio_url), job.duration
    stems = params.stems if job.queue_model != "audio/separate" else None
    return {
        "file_id": file_id,
        "file_name": name.rsplit("/", 1)[-1] or None,
        "duration": float(duration) if duration else None,
        "stems": [params.api_name(s) for s in stems] if stems is not None else None,
        "prompt": params.prompt,
    }


# A job's row by its id: one prebuilt Core SELECT, no ORM object (a status poll, the API's most
# frequent request, is this one read).
_JOB = Job.__table__
_JOB_ROW = select(_JOB).where(_JOB.c.id == bindparam("job_id"))
# The same for many ids at once, on PostgreSQL (service/batchread.py).
_JOB_ROWS = select(_JOB).where(_JOB.c.id == any_(bindparam("keys", type_=ARRAY(String))))


def _owned(row: Any, account_id: str, job_id: str, model: str | None = None) -> Job:
    other_model = model is not None and row is not None and row.queue_model != model
    if row is None or row.account_id != account_id or other_model:
        raise NotFound(f"no request {job_id!r}")
    return cast(Job, row)


def read_job(services: Services, account_id: str, job_id: str, model: str | None = None) -> Job:
    """The caller's job as a read-only row: one SELECT outside any transaction, on a pooled
    driver connection (:mod:`demixer.service.prepared`).

    The row has every column of :class:`Job` as an attribute and is typed as one for its
    readers, but it is not attached to a session: read it, never change it. Another account's
    or an unknown id is NOT_FOUND, as :func:`owned_job` answers (``model`` too).
    """
    row = prepared(services.db, _JOB_ROW).one_or_none(job_id=job_id)
    return _owned(row, account_id, job_id, model)


async def fetch_job(
    services: Services, account_id: str, job_id: str, model: str | None = None
) -> Job:
    """:func:`read_job` for the event loop: on SQLite read right there (a local file, tens of
    microseconds), elsewhere together with the reads other requests ask for meanwhile (one
    round trip for all of them, in a worker thread: :mod:`demixer.service.batchread`)."""
    db = services.db
    if db.dialect == "sqlite":
        return read_job(services, account_id, job_id, model)
    return _owned(await keyed_reads(db, _JOB_ROWS, "id").get(job_id), account_id, job_id, model)


def more_reads(job: Job, logs: bool) -> bool:
    """Whether :func:`status_of` reads the database (else it only formats the row): while the
    job is queued (its position), when it has a webhook, or for ``logs``."""
    return logs or job.status == IN_QUEUE or bool((job.params or {}).get("webhook"))


def status_of(services: Services, job: Job, logs: bool) -> RequestStatus:
    """The status of ``job`` (a row read by :func:`read_job` or :func:`fetch_job`), with a read
    transaction more only when :func:`more_reads` says so."""
    if not more_reads(job, logs):
        return build_status(services, job, logs, Extras())
    with services.db.read() as s:
        return build_status(services, job, logs, extras(services, s, job, logs))


def job_status(services: Services, account_id: str, job_id: str, logs: bool) -> RequestStatus:
    """A request's status (blocking): :func:`read_job`, then :func:`status_of`."""
    return status_of(services, read_job(services, account_id, job_id), logs)


def job_result(
    services: Services, account_id: str, job_id: str, model: str | None = None
) -> ResultResponse:
    """A completed request's outputs with fresh signed URLs; errors until then (``model``: as
    :func:`owned_job` takes it)."""
    with services.db.read() as s:
        job = owned_job(s, account_id, job_id, model)
    if job.status == FAILED:
        raise JobFailed(
            f"request {job_id} failed: {job.error_message or job.error_code}",
            code=job.error_code,
        )
    if job.status == CANCELLED:
        raise JobConflict(f"request {job_id} was cancelled; it has no result")
    if job.status != COMPLETED:
        raise NotReady(f"request {job_id} is {job.status}; the result is ready once COMPLETED")
    check_not_expired(services, job)
    return result_response(services, job)


def check_not_expired(services: Services, job: Job) -> None:
    """Raise :class:`ResultExpired` when the completed ``job``'s outputs are past their
    retention time (also before the sweeper has deleted them): every protocol's reading of a
    result asks this before it signs URLs to files that are gone."""
    keep = services.settings.result_retention_seconds
    if result_expired(job, keep, services.db.clock()):
        raise ResultExpired(
            f"request {job.id}'s outputs expired at {_iso(result_expires_at(job, keep))} "
            "and were deleted; submit it again"
        )


def _iso(when: datetime | None) -> str:
    return wire_time(when) if when is not None else "an unknown time"


def _made_by(job: Job) -> dict[str, str]:
    """Each output of a COMPLETED job (its API name) -> the model, recipe chain or ensemble
    that made it; an output no stem of the model is (the residual): the input minus the rest."""
    try:
        makers = planner.makers(get_spec(job.engine_model))
    except UnknownModel:  # a model this server no longer knows: its id is all there is
        makers = {}
    engine_names = {
        api: engine for engine, api in JobParams.of_job(job.id, job.params).names.items()
    }
    outputs = list(job.outputs or {})
    out = {}
    for name in outputs:
        engine = engine_names.get(name, name)
        made = makers.get(engine)
        if made is None and not makers:
            made = job.engine_model
        out[name] = made or residual_maker(o for o in outputs if makers.get(engine_names.get(o, o)))
    return out


def result_response(services: Services, job: Job) -> ResultResponse:
    """A COMPLETED job's result with freshly signed URLs (no request needed: the webhook
    dispatcher builds its ``audio.separate.completed`` event's ``data`` with this too)."""
    ttl = services.settings.download_url_ttl_seconds
    data: dict[str, OutputFile | int | float] = {}
    for name, out in (job.outputs or {}).items():
        data[name] = OutputFile(
            url=services.links.download_url(
                out["key"],
                ttl,
                content_type=out.get("content_type", "application/octet-stream"),
                file_name=out.get("file_name", out["key"].rsplit("/", 1)[-1]),
                until=job.expires_at,
            ),
            content_type=out.get("content_type", "application/octet-stream"),
            file_name=out.get("file_name", out["key"].rsplit("/", 1)[-1]),
            duration=out.get("duration"),
            sample_rate=out.get("sample_rate"),
            channels=out.get("channels"),
            size=out.get("size"),
            gain=out.get("gain", 1.0),
            clipped=out.get("clipped", 0),
        )
    data["duration"] = job.duration or 0.0
    data["sample_rate"] = job.sample_rate or 0
    finished = job.finished_at or job.updated_at
    return ResultResponse(
        request_id=job.id,
        model=job.queue_model,
        quality=JobParams.of_job(job.id, job.params).quality,
        data=data,
        made_by=_made_by(job),
        usage=Usage(quantity=usage_quantity(job)),
        retention=Retention(
            delete_after=result_expires_at(job, services.settings.result_retention_seconds)
            or finished + timedelta(seconds=ttl)
        ),
    )


def list_jobs(services: Services, account_id: str, limit: int, cursor: str | None) -> RequestList:
    """The caller's requests, newest first, ``limit`` per page (:mod:`demixer.api.paging`)."""
    query = select(Job).where(Job.account_id == account_id)
    with services.db.read() as s:
        jobs, next_cursor = keyset_page(s, query, Job.created_at, Job.id, limit, cursor)
        queued = any(job.status == IN_QUEUE for job in jobs)
        live = live_models(s, services.settings, services.db.clock()) if queued else None
        page = [
            build_status(services, job, False, extras(services, s, job, False, live))
            for job in jobs
        ]
    return RequestList(data=page, next_cursor=next_cursor)


def _owns_input(params: JobParams) -> bool:
    """Whether the request's upload came with it and belongs to it alone (:func:`own_input`)."""
    return isinstance(params.vendor, MusicGptFields) and isinstance(params.input, UploadInput)


def own_input(job: Job) -> UploadInput | None:
    """The upload that came with the request itself and belongs to it alone: a MusicGPT
    ``audio_file``, stored by the extraction, whose file id no answer ever names (so no
    other request can read it and its owner cannot delete it on its own; :func:`_described`
    leaves it out of the status, and sunoapi's ``taskId`` does not reuse it)."""
    try:
        params = JobParams.of_job(job.id, job.params)
    except InvalidParams:  # unreadable (its worker fails it): the request still goes
        return None
    if _owns_input(params):
        return cast(UploadInput, params.input)
    return None


def delete_job(services: Services, account_id: str, job_id: str) -> None:
    """Delete a request, its log and its outputs (a running one is cancelled first), and the
    upload that came with it (:func:`own_input`)."""
    with services.db.read() as s:
        own = own_input(owned_job(s, account_id, job_id))
    # The outputs go first, a running request's too (what its worker stored so far): should
    # the store be unreachable (503), the row stays, still running, and the DELETE can be
    # sent again. Deleted after the row, they were left for good, with nothing left to say
    # they exist.
    services.storage.delete_prefix(f"outputs/{job_id}/")
    if own is not None:
        # The song itself, first for the same reason; it was kept for 72 h after the request
        # was deleted, and its owner had no id to delete it with.
        delete_file_blobs(services.storage, own.file_id, own.storage_key)
    # One transaction: a status stream reads the job as it was, or sees it gone (never
    # CANCELLED on its way out); the cancel's webhook delivery goes with the row.
    with services.db.write() as s:
        job = owned_job(s, account_id, job_id)
        if job.status in (IN_QUEUE, IN_PROGRESS):
            with contextlib.suppress(JobConflict):  # it finished meanwhile: nothing to stop
                services.queue.cancel_in(s, job_id)
        s.execute(delete(JobLog).where(JobLog.job_id == job_id))
        s.execute(delete(Job).where(Job.id == job_id, Job.account_id == account_id))
        if own is not None:
            with contextlib.suppress(FileConflict):  # expired (swept) or deleted already
                mark_deleted(s, own.file_id)
    # After the row: a worker still finishing this job fails its fenced write (the row is
    # gone) and must delete what it stored; whatever it stored before is removed here.
    services.storage.delete_prefix(f"outputs/{job_id}/")
