"""MusicGPT's vocabulary and payloads, free of any web framework: stem names, preprocessing
options, the ``conversion`` object of ``GET /v1/byId`` and the completion webhook's body.

:func:`musicgpt_event` is handed to the outbox by the composition root (a worker process builds
it without importing the routes). The routes and the wire decisions are in
:mod:`demixer.vendors.musicgpt.routes`.
"""

from __future__ import annotations

from typing import Any

from demixer.api import submit
from demixer.api.jobs import result_response
from demixer.api.schemas import wire_time
from demixer.engine.stems import RESIDUAL
from demixer.errors import InvalidRequest, UnknownStem
from demixer.models.planner import CLEANUP_STEMS, cleanup_model, produces
from demixer.models.registry import list_specs
from demixer.service.accounts.usage import usage_quantity
from demixer.service.context import Services
from demixer.service.jobs.contract import JobParams, MusicGptFields, UploadInput
from demixer.service.jobs.queue import CANCELLED, COMPLETED, FAILED, IN_PROGRESS, IN_QUEUE
from demixer.service.retention.expiry import result_expired
from demixer.service.schema import Job

__all__ = [
    "DEFAULT_STEMS",
    "INSTRUMENTAL",
    "STEM_VOCABULARY",
    "STYLE",
    "MissingInput",
    "UnsupportedOption",
    "conversion",
    "credits",
    "musicgpt_event",
    "plan_stems",
    "preprocess_steps",
]


STYLE = "musicgpt"  # the webhook style of its jobs
INSTRUMENTAL = "instrumental"

#: MusicGPT stem name -> the engine stem that is exactly it (None: none is).
STEM_VOCABULARY: dict[str, str | None] = {
    "vocals": "vocals",
    "male_vocal": "male_vocals",
    "female_vocal": "female_vocals",
    "lead_vocal": "lead_vocals",
    "back_vocal": "backing_vocals",
    "guitar": "guitar",
    "acoustic_guitar": None,  # a guitar stem holds every guitar: not a substitute for one
    "electric_guitar": None,
    "rhythm_guitar": None,
    "solo_guitar": None,
    "drums": "drums",
    "kick_drum": "kick",
    "snare_drum": "snare",
    "toms": "toms",
    "hi_hat": "hi_hat",
    "ride": "ride",
    "crash": "crash",
    "piano": "piano",
    "keys": None,  # organs and synths too: a piano stem is not it
    "strings": None,
    "winds": None,
    "bass": "bass",
    INSTRUMENTAL: None,  # the residual of vocals, handled apart
}
DEFAULT_STEMS = ("drums", "bass", "piano", "guitar")
#: A MusicGPT name no engine stem is exactly -> the broader MusicGPT stem that holds it (named
#: in the refusal, never given in its place).
_WITHIN = {
    **dict.fromkeys(("male_vocal", "female_vocal"), "vocals"),
    **dict.fromkeys(
        ("acoustic_guitar", "electric_guitar", "rhythm_guitar", "solo_guitar"), "guitar"
    ),
    **dict.fromkeys(("kick_drum", "snare_drum", "toms", "hi_hat", "ride", "crash"), "drums"),
    "keys": "piano",
}
# MusicGPT's request and byId say `vocals`, its webhook `vocal`: a client written against one
# reads the other's too, so both carry both spellings.
_ALSO_NAMED = {"vocals": "vocal"}
_PREPROCESSING = {"Denoise": "denoise", "Dereverb": "dereverb", "Deecho": "deecho"}


class UnsupportedOption(InvalidRequest):
    """A MusicGPT option demixer does not implement (yet): answered 422."""

    code = "UNSUPPORTED_OPTION"


class MissingInput(InvalidRequest):
    """Neither ``audio_file`` nor ``audio_url``: answered 422, as MusicGPT documents."""

    code = "MISSING_INPUT"


def producible(services: Services) -> tuple[set[str], list[str]]:
    """Engine stems the installed models produce, and the MusicGPT names that map onto them."""
    engine = {s for spec in submit.installed_models(services) for s in produces(spec)}
    names = [n for n, stem in STEM_VOCABULARY.items() if stem is not None and stem in engine]
    if "vocals" in engine:
        names.append(INSTRUMENTAL)
    return engine, names


def plan_stems(services: Services, requested: list[str]) -> tuple[list[str], dict[str, str]]:
    """MusicGPT stems -> (engine request for ``audio/stems``, MusicGPT name -> output name).

    A request for ``vocals`` alone gets ``instrumental`` too (the residual, which every
    extraction produces: ``PlanOptions(residual="always")``), as MusicGPT's documented webhook
    shows both; other residuals have no MusicGPT name.
    """
    wanted = [s.lower() for s in requested] or list(DEFAULT_STEMS)
    engine, names = producible(services)
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
            defaulted = (
                ""
                if requested
                else f" (no stems were given, so MusicGPT's default: {', '.join(DEFAULT_STEMS)})"
            )
            broader = _WITHIN.get(name)
            within = (
                f" (the {broader!r} stem has it, mixed with the rest of that stem)"
                if broader in names
                else ""
            )
            raise UnknownStem(
                f"no installed model produces {name!r}{defaulted}; this server can produce: "
                f"{can}{within}",
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
    elif targets == ["vocals"]:  # MusicGPT's webhook example carries both: the rest is it
        fields[INSTRUMENTAL] = RESIDUAL
    return targets, fields


def preprocess_steps(services: Services, options: list[str]) -> list[str]:
    """MusicGPT ``preprocessing_options`` -> the job's ``preprocess`` steps (422 for others).

    ``Dereverb`` and ``Deecho`` run the best installed de-reverb / de-echo model
    (:func:`demixer.models.planner.cleanup_model`); without one they are a 422 naming the
    model to pull.
    """
    steps = []
    for option in options:
        if option not in _PREPROCESSING:
            raise UnsupportedOption(
                f"unknown preprocessing option {option!r}; MusicGPT's are Denoise, Deecho, "
                f"Dereverb, and this server implements: {', '.join(_PREPROCESSING)}",
                param="preprocessing_options",
            )
        step = _PREPROCESSING[option]
        if step in CLEANUP_STEMS and cleanup_model(step, submit.installed_models(services)) is None:
            known = cleanup_model(step, list_specs())
            how = (
                f"`demixer models pull {known[0].id}` on the server"
                if known
                else "demixer's catalogue has none yet; add your own with `demixer models add` "
                f"on the server, its config naming a {CLEANUP_STEMS[step]} instrument"
            )
            raise UnsupportedOption(
                f"preprocessing option {option!r} needs a model that is not installed on this "
                f"server ({how})",
                param="preprocessing_options",
            )
        steps.append(step)
    return list(dict.fromkeys(steps))


def credits(seconds: float) -> float:
    """MusicGPT's cost unit for ``seconds`` of audio: minutes, to 2 decimals."""
    return round(seconds / 60.0, 2)


def fields_of(params: JobParams) -> MusicGptFields:
    """The MusicGPT fields of a job (none for another protocol's: no MusicGPT stems)."""
    vendor = params.vendor
    return vendor if isinstance(vendor, MusicGptFields) else MusicGptFields(stems={})


def conversion_status(job: Job) -> tuple[str, str]:
    """``(status, status_msg)`` as MusicGPT words them (CANCELLED reads FAILED)."""
    if job.status == CANCELLED:
        return FAILED, "cancelled"
    if job.status == FAILED:
        return FAILED, f"{job.error_code or 'FAILED'}: {job.error_message or ''}".strip()
    if job.status == IN_PROGRESS:
        return IN_PROGRESS, f"separating ({round(100 * (job.progress or 0.0))}%)"
    if job.status == COMPLETED:
        return COMPLETED, "completed"
    return IN_QUEUE, "in queue"


def job_urls(
    services: Services, job: Job
) -> tuple[str | None, dict[str, str | None], dict[str, str | None]]:
    """The original's URL, MusicGPT stem name -> its MP3's URL, and stem name -> its WAV's URL
    (None until COMPLETED, and again once the outputs are past their retention: ``byUser``
    lists such a conversion, with no links to files that are gone). A job finished before
    its stems were written as MP3 too has only WAVs: those are in both."""
    params = JobParams.of_job(job.id, job.params)
    source = params.input
    ttl = services.settings.download_url_ttl_seconds
    if isinstance(source, UploadInput):
        original = services.links.download_url(source.storage_key, ttl)
    else:
        original = source.audio_url
    fields = fields_of(params).stems
    stems: dict[str, str | None] = dict.fromkeys(fields)
    wavs: dict[str, str | None] = dict.fromkeys(fields)
    keep = services.settings.result_retention_seconds
    if job.status == COMPLETED and not result_expired(job, keep, services.db.clock()):
        data = result_response(services, job).data
        for name, output in fields.items():
            wav = getattr(data.get(output), "url", None)
            wavs[name] = wav
            stems[name] = getattr(data.get(f"{output}.mp3"), "url", None) or wav
    return original, stems, wavs


def _stem_fields(
    stems: dict[str, str | None], wavs: dict[str, str | None]
) -> dict[str, str | None]:
    """The URL fields of ``stems`` (MP3) and their ``{field}_wav`` (WAV), each under every
    spelling MusicGPT uses for it."""
    fields = {**stems, **{f"{n}_wav": url for n, url in wavs.items()}}
    for name, also in _ALSO_NAMED.items():
        if name in stems:
            fields[also], fields[f"{also}_wav"] = stems[name], wavs[name]
    return fields


def conversion(services: Services, job: Job) -> dict[str, Any]:
    """The ``conversion`` object of ``GET /v1/byId`` (and each of ``GET /v1/byUser``'s)."""
    status, message = conversion_status(job)
    original, stems, wavs = job_urls(services, job)
    sent = fields_of(JobParams.of_job(job.id, job.params)).preprocessing_options
    seconds = float(job.duration or 0.0)
    return {
        "task_id": job.id,
        "conversion_id": job.id,
        "conversionType": "EXTRACTION",
        "status": status,
        "status_msg": message,
        "audio_url": original,
        **_stem_fields(stems, wavs),
        "stems": list(stems),
        "preprocessing_options": list(sent),
        "conversion_duration": seconds if job.status == COMPLETED else None,
        # What /v1/usage counts for it: 0 for a result-cache hit, whose audio is still its length.
        "conversion_cost": credits(usage_quantity(job)) if job.status == COMPLETED else None,
        "createdAt": wire_time(job.created_at),
        "updatedAt": wire_time(job.updated_at),
    }


def musicgpt_event(services: Services, job: Job) -> tuple[str, dict[str, Any]] | None:
    """The completion webhook's body, for jobs whose webhook style is :data:`STYLE`: sent on
    success and on failure, a cancelled job included (``byId`` reads it FAILED, and the
    protocol has no cancel of its own: whoever cancelled it, its client waits for this)."""
    if job.status not in (COMPLETED, FAILED, CANCELLED):
        return None
    original, stems, wavs = job_urls(services, job)
    status, message = conversion_status(job)
    body: dict[str, Any] = {
        "success": job.status == COMPLETED,
        "task_id": job.id,
        "conversion_id": job.id,
        "conversion_type": "EXTRACTION",
        "status": status,  # as MusicGPT's sample payload, and byId's
        "status_msg": message,
        "audio_path": original,
        # MusicGPT's webhook page shows `audio_url`; byId names the original so too.
        "audio_url": original,
        "createdAt": wire_time(job.created_at),
        "updatedAt": wire_time(job.updated_at),
    }
    if job.status == COMPLETED:
        body.update(_stem_fields(stems, wavs))
        body["conversion_cost"] = credits(usage_quantity(job))  # as byId's
        body["conversion_duration"] = float(job.duration or 0.0)
        return "musicgpt.extraction.completed", body
    if job.status == CANCELLED:
        body["error"], body["message"] = "CANCELLED", "the conversion was cancelled"
    else:
        body["error"] = job.error_code or "FAILED"
        body["message"] = job.error_message or ""
    return "musicgpt.extraction.failed", body
