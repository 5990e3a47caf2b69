"""sunoapi's vocabulary and payloads, free of any web framework: stem fields, the record's
URL fields and error codes, and the callback's body.

:func:`sunoapi_event` is handed to the outbox by the composition root (a worker process builds
it without importing the routes). The routes and the wire decisions are in
:mod:`demixer.vendors.sunoapi.routes`.
"""

from __future__ import annotations

import functools
from typing import Any

from demixer.api.jobs import result_response
from demixer.engine.stems import RESIDUAL
from demixer.errors import (
    CheckpointMismatch,
    ChunkTooLarge,
    DatabaseReadOnly,
    DatabaseUnavailable,
    InvalidAudioUrl,
    InvalidModelConfig,
    ModelFailed,
    ModelUnavailable,
    QuotaExceeded,
    ServiceUnavailable,
    StorageFull,
    StorageUnavailable,
)
from demixer.service.context import Services
from demixer.service.delivery.outbox import DeliveryState, latest_delivery
from demixer.service.jobs.contract import JobParams, SunoapiFields, UploadInput
from demixer.service.jobs.queue import CANCELLED, COMPLETED, FAILED
from demixer.service.retention.expiry import result_expired
from demixer.service.schema import Job

__all__ = [
    "STEM_FIELDS",
    "STEM_NAMES",
    "STYLE",
    "callback_failed",
    "error_code",
    "error_message",
    "stem_name_key",
    "success_flag",
    "sunoapi_event",
    "url_fields",
    "vendor_urls",
]


STYLE = "sunoapi"  # the webhook style of its jobs

#: vendor stem name -> demixer engine stem (None: no demixer model produces it).
STEM_FIELDS: dict[str, str | None] = {
    "vocal": "vocals",
    "backing_vocals": "backing_vocals",
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
#: ``stemName`` (``split_stem_advanced``) -> demixer engine stem (None: no demixer model makes
#: it), keyed as :func:`stem_name_key` reads a name. The stem fields' own names, and the names
#: Suno gives its stems, which sunoapi clients offer their users and send as they are
#: (``"Lead Vocal"``, ``"Backing Vocals"``, ``"Drum Kit"``, ``"Piano"``). A narrower name
#: (``"Electric Guitar"``, ``"Synth Bass"``) is not here: the broader stem that holds it is not it.
STEM_NAMES: dict[str, str | None] = {
    **STEM_FIELDS,
    "vocals": "vocals",
    "lead_vocal": "lead_vocals",
    "backing_vocal": "backing_vocals",
    "drum_kit": "drums",
    "piano": "piano",
    "keyboards": "piano",
    "kick": "kick",
    "snare": "snare",
    "hi_hat": "hi_hat",
    "sound_effects": None,
}
_VENDOR_NAME = {stem: name for name, stem in STEM_FIELDS.items() if stem is not None}
# Every field of the response, in the vendor's order (camelCase = name + "Url").
_FIELDS = ("origin", "instrumental", *STEM_FIELDS)
_INSTRUMENTAL = "instrumental"


def stem_name_key(name: str) -> str:
    """``stemName`` as :data:`STEM_NAMES` is keyed: case, spaces and hyphens do not matter
    (``"Backing Vocals"`` and ``"Hi-Hat"`` are ``backing_vocals`` and ``hi_hat``)."""
    return "_".join(name.strip().lower().replace("-", " ").split())


@functools.cache
def _field(name: str, snake: bool) -> str:
    """The field of stem ``name``: ``vocal_url`` (callback, ``snake``) or ``vocalUrl``."""
    if snake:
        return f"{name}_url"
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest) + "Url"


def url_fields(urls: dict[str, str | None], snake: bool) -> dict[str, str | None]:
    """Stem name -> URL as the vendor's fields: ``vocalUrl`` (record) or ``vocal_url``
    (callback, ``snake``), every field present (null when absent)."""
    out = {_field(name, snake): urls.get(name) for name in _FIELDS}
    # split_stem_advanced's named stem without a field of the vendor's (`lead_vocals`)
    out.update({_field(n, snake): u for n, u in urls.items() if n not in _FIELDS})
    # The vendor's record example names the keyboard stem `pianoUrl`, its field list
    # `keyboardUrl`: both are sent.
    out[_field("piano", snake)] = urls.get("keyboard")
    return out


def vendor_urls(services: Services, job: Job) -> dict[str, str | None]:
    """Vendor stem name -> signed URL of a finished job (``origin`` included)."""
    urls: dict[str, str | None] = {}
    params = JobParams.of_job(job.id, job.params)
    ttl = services.settings.download_url_ttl_seconds
    if isinstance(params.input, UploadInput):
        urls["origin"] = services.links.download_url(params.input.storage_key, ttl)
    else:
        urls["origin"] = params.input.audio_url
    if job.status != COMPLETED or result_expired(
        job, services.settings.result_retention_seconds, services.db.clock()
    ):
        return urls
    vendor_type = params.vendor.type if isinstance(params.vendor, SunoapiFields) else None
    for name, out in result_response(services, job).data.items():
        if isinstance(out, int | float):
            continue
        if name == RESIDUAL:
            if vendor_type != "split_stem":
                urls[_INSTRUMENTAL] = out.url
        elif name in _VENDOR_NAME:
            urls[_VENDOR_NAME[name]] = out.url
        elif vendor_type == "split_stem_advanced":
            # The stem the caller named (``stemName: "Lead Vocal"``) with no field of the
            # vendor's: its own field (``leadVocalsUrl``), or the request gave nothing back.
            urls[name] = out.url
        # Otherwise a stem of split_stem's model that no vendor field is (a 4-stem model's
        # `other`): the vendor's record and callback have no field for it, so none is made up.
    return urls


# A job's failures that are the server's, not the request's (the caller's 400 "bad
# parameters" would send it to mend a request that was fine): the model the server chose
# cannot run on the worker (its chunks need more memory than the worker has, its config or
# checkpoint cannot be used, its weights are damaged or missing) or crashed; the worker
# stopped (the queue's WORKER_LOST), failed itself (the runner's WORKER_ERROR) or ran past
# the job timeout (the runner's JOB_TIMEOUT); storage or the database failed on the last
# attempt.
_SERVER_SIDE = frozenset(
    {
        "",
        "INTERNAL",
        ModelFailed.code,
        ModelUnavailable.code,
        InvalidModelConfig.code,
        ChunkTooLarge.code,
        CheckpointMismatch.code,
        "WORKER_LOST",
        "WORKER_ERROR",
        "JOB_TIMEOUT",
        ServiceUnavailable.code,
        StorageUnavailable.code,
        StorageFull.code,
        DatabaseUnavailable.code,
        DatabaseReadOnly.code,
    }
)


def error_code(job: Job) -> int | None:
    """The record's ``errorCode``: 451 where the ``audioUrl`` could not be downloaded (the
    vendor's "Download Failed"), 429 where it was longer than the account's monthly allowance
    had left ("insufficient credits"), 500 for the server's failures (:data:`_SERVER_SIDE`),
    400 for the input's (None: none)."""
    if job.status == CANCELLED:
        return 400
    if job.status != FAILED:
        return None
    if job.error_code == InvalidAudioUrl.code:  # the worker's fetch failed (fetch.py)
        return 451
    if job.error_code == QuotaExceeded.code:
        return 429
    return 500 if (job.error_code or "") in _SERVER_SIDE else 400


def error_message(job: Job) -> str | None:
    """The record's ``errorMessage``, starting with demixer's own error code."""
    if job.status == CANCELLED:
        return "CANCELLED: the task was cancelled"
    if job.status != FAILED:
        return None
    return f"{job.error_code or 'FAILED'}: {job.error_message or ''}".strip()


def callback_failed(services: Services, job: Job) -> bool:
    """Whether the job's callback finally failed (blocking: a read of its latest delivery,
    made only when the job has a callback: without one there are no deliveries)."""
    if JobParams.of_job(job.id, job.params).webhook is None:
        return False
    with services.db.read() as s:
        latest = latest_delivery(s, job.id)
    return latest is not None and latest.status == DeliveryState.FAILED


def success_flag(job: Job, *, callback_gave_up: bool) -> str:
    """The record's ``successFlag`` (CALLBACK_EXCEPTION once the callback finally failed:
    ``callback_gave_up``, see :func:`callback_failed`)."""
    if job.status == COMPLETED:
        return "CALLBACK_EXCEPTION" if callback_gave_up else "SUCCESS"
    if job.status in (FAILED, CANCELLED):
        return "GENERATE_AUDIO_FAILED"
    return "PENDING"


def sunoapi_event(services: Services, job: Job) -> tuple[str, dict[str, Any]] | None:
    """The vendor's callback body for a finished job, sent on success and on failure (a
    cancelled task included: the protocol has no cancel, so its client waits for this)."""
    if job.status == COMPLETED:
        info = url_fields(vendor_urls(services, job), snake=True)
        body = {
            "code": 200,
            "msg": "vocal Removal generated successfully.",  # the vendor's words
            "data": {"task_id": job.id, "vocal_removal_info": info},
        }
        return "vocal_removal.completed", body
    if job.status in (FAILED, CANCELLED):  # record-info reads both GENERATE_AUDIO_FAILED
        body = {
            "code": error_code(job) or 500,
            "msg": error_message(job) or "failed",
            "data": {"task_id": job.id, "vocal_removal_info": None},
        }
        return "vocal_removal.failed", body
    return None
