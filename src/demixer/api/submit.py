"""Queue submissions: validate a request completely, then queue it.

Everything a request can get wrong is checked here before a row is queued, so a worker only
ever sees jobs that can run. A plan is a complete, validated
:class:`~demixer.service.jobs.contract.JobParams` (the contract with the worker); a vendor
router passes what its protocol adds (:class:`PlanOptions`) into the plan instead of editing
the result, so every option goes through the same checks before the row is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import ValidationError

from demixer.api.jobs import urls
from demixer.api.schemas import (
    QueueBody,
    QueuedResponse,
    QueueInput,
    SeparateRequest,
    StemsRequest,
    WebhookInfo,
)
from demixer.api.uploads import owned_file, settle_pending
from demixer.api.validation import invalid_request
from demixer.audio import OutputFormat, duration_refusal, track_refusal
from demixer.engine.spans import Span, check_reach
from demixer.engine.stems import RESIDUAL, choose_model, plan_stems
from demixer.errors import (
    DemixerError,
    DurationLimit,
    FileNotReady,
    FileTooLarge,
    InvalidAudio,
    InvalidAudioUrl,
    InvalidRequest,
    ModelUnavailable,
    NoStemsRequested,
    TurnedOff,
    UnknownModel,
    UnknownStem,
)
from demixer.models.loading import is_installed
from demixer.models.planner import CLEANUP_STEMS, cleanup_model
from demixer.models.quality import parse_quality
from demixer.models.registry import ModelSpec, get_spec, list_specs
from demixer.models.spec import MODEL_ID_LENGTH
from demixer.models.user_models import weights_identity
from demixer.naming import shown_url
from demixer.service.accounts.keys import new_id
from demixer.service.accounts.limits import check_concurrency
from demixer.service.accounts.quota import check_quota, hold
from demixer.service.accounts.storage import check_request_room
from demixer.service.context import Services
from demixer.service.files.states import FileState
from demixer.service.jobs import cache
from demixer.service.jobs.contract import (
    NATIVE_STYLE,
    JobParams,
    UploadInput,
    UrlInput,
    VendorFields,
    Webhook,
)
from demixer.service.jobs.prompts import map_prompt
from demixer.service.urlguard import (
    AUDIO_URLS_OFF,
    WEBHOOKS_OFF,
    UnresolvableHost,
    UrlRefused,
    check_url,
    parse_allowlist,
)
from demixer.service.worker.registry import advertised_models
from demixer.storage import BlobNotFound
from demixer.webhooks import new_secret, secret_key

__all__ = [
    "QUEUE_MODELS",
    "SEPARATE",
    "STEMS",
    "PlanOptions",
    "Submission",
    "installed_models",
    "plan_separate",
    "plan_stems_request",
    "submit",
    "with_query_webhook",
]

SEPARATE = "audio/separate"
STEMS = "audio/stems"
QUEUE_MODELS = (SEPARATE, STEMS)


@dataclass(frozen=True)
class Submission:
    """A validated request, ready to queue."""

    queue_model: str
    engine_model: str
    params: JobParams
    priority: int
    note: str | None = None  # one extra log line (e.g. how the prompt was read)
    # Its model clean-up steps -> the model that runs each (:func:`_cleanup_models`).
    cleanup_models: Mapping[str, str] = field(default_factory=dict)
    fal_paths: bool = False  # its answer's URLs are fal's paths (a body in fal's shape)


@dataclass(frozen=True)
class PlanOptions:
    """What a protocol adds to a native ``audio/stems`` plan.

    Attributes:
        residual: ``auto`` (the native rule: only when the stems leave part of the model out
            and it is audible), ``always`` (an "everything else" output in every case) or
            ``never`` (the stems only).
        output_names: engine output name -> the protocol's output name.
        extra_formats: formats every output is written in too.
        preprocess: steps applied to the input first (``PREPROCESS_STEPS``).
        webhook_style: whose event body the webhook sends.
        vendor: the protocol's own fields, stored with the job for its views.
        note: one extra log line.
    """

    residual: Literal["auto", "always", "never"] = "auto"
    output_names: Mapping[str, str] = field(default_factory=dict)
    extra_formats: tuple[str, ...] = ()
    preprocess: tuple[str, ...] = ()
    webhook_style: str = NATIVE_STYLE
    vendor: VendorFields | None = None
    note: str | None = None


def installed_models(services: Services) -> list[ModelSpec]:
    """The models this server can run, in registry order: weights present here, or advertised
    by a worker seen lately (an API process on a machine without weights accepts jobs for the
    models its workers have; they wait for such a worker while none is live)."""
    model_dir = services.settings.model_dir
    with services.db.read() as s:
        advertised = advertised_models(s, services.db.clock())
    specs = list_specs(model_dir)
    return [spec for spec in specs if spec.id in advertised or is_installed(spec, model_dir)]


def _reject_param(error: DemixerError, param: str) -> DemixerError:
    if error.param is None:
        error.param = param
    return error


def _http_url(url: str, param: str, error: type[InvalidRequest]) -> str:
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
    except ValueError as exc:  # "Invalid IPv6 URL": an unclosed or bad [address]
        raise error(f"{shown_url(url)!r} is not a valid URL: {exc}", param=param) from None
    if parts.scheme not in ("http", "https") or not host:
        raise error(f"{shown_url(url)!r} is not an http(s) URL", param=param)
    return url.strip()


def _input(services: Services, account_id: str, inp: QueueInput) -> UploadInput | UrlInput:
    """The input of a request: a checked uploaded file, or an http(s) URL."""
    if inp.audio_url is not None:
        if not services.settings.audio_urls:  # before any look-up of its host
            raise TurnedOff(AUDIO_URLS_OFF, param="input.audio_url")
        url = _http_url(inp.audio_url, "input.audio_url", InvalidAudioUrl)
        try:  # refused now for a quick answer; the worker checks again when it connects
            check_url(url, parse_allowlist(services.settings.url_allowlist))
        except UnresolvableHost:
            pass  # maybe a DNS hiccup: the worker's fetch fails (and retries) if it lasts
        except UrlRefused as exc:  # the guard's refusal, in the code this protocol documents
            raise InvalidAudioUrl(exc.message, param="input.audio_url") from None
        return UrlInput(audio_url=url)
    assert inp.file_id is not None
    param = "input.file_id"
    settings = services.settings
    with services.db.read() as s:
        row = owned_file(services, s, account_id, inp.file_id, param)
    row = settle_pending(services, row)  # bytes PUT straight to object storage
    # The id the request named, and the name the user knows the file by.
    named = f"file {row.id!r} ({row.file_name})" if row.file_name else f"file {row.id!r}"
    if row.status == FileState.FAILED:
        raise InvalidAudio(
            f"{named} is not usable audio: {row.error_message or row.error_code}",
            param=param,
        )
    if row.status != FileState.UPLOADED:
        raise FileNotReady(
            f"{named} is {row.status}: PUT its bytes to the upload_url first "
            "(and POST /v1/files/{file_id}/complete)",
            param=param,
        )
    size = row.bytes_stored or row.file_size or 0
    if size > settings.max_upload_bytes:
        raise FileTooLarge.over(settings.max_upload_bytes, named, size, param=param)
    refusal = duration_refusal(named, row.duration, settings.max_duration_seconds)
    if refusal is not None:
        raise DurationLimit(refusal.message, param=param)
    track = inp.audio_track
    if track is not None and row.audio_tracks is not None:
        missing = track_refusal(named, row.audio_tracks, track)
        if missing is not None:
            raise InvalidAudio(missing.message, param="input.audio_track")
    # The channels known are those of the track players play; another track's are checked
    # when the job reads it.
    if track is None and (row.channels or 0) > 2 and not inp.downmix:
        raise InvalidAudio(
            f"{named} has {row.channels} channels; demixer separates mono or stereo: "
            "set input.downmix to true to fold it to stereo first",
            param="input.downmix",
        )
    return UploadInput(
        file_id=row.id,
        storage_key=row.storage_key,
        file_name=row.file_name,
        duration=row.duration,  # for listings; the worker reads the file itself
    )


def _common(
    services: Services, account_id: str, req: QueueBody, inp: QueueInput, style: str
) -> dict[str, Any]:
    """Params every queue model shares: input, format, quality, webhook, downmix, rescale."""
    ceiling = services.settings.max_priority
    if req.priority > ceiling:  # the queue's order is the whole server's: the operator's call
        raise InvalidRequest(
            f"priority {req.priority} is above this server's limit of {ceiling} "
            "(DEMIXER_MAX_PRIORITY)",
            param="priority",
        )
    try:  # before the input: a bad option needs no look at the file
        quality = parse_quality(inp.quality or services.settings.quality)
    except DemixerError as exc:
        raise _reject_param(exc, "input.quality") from None
    source = _input(services, account_id, inp)
    depth = None if inp.bit_depth is None else str(inp.bit_depth)
    try:
        fmt = OutputFormat.parse(inp.output_format, depth)
    except DemixerError as exc:
        raise _reject_param(exc, "input.output_format") from None
    webhook = None
    url = req.webhook.url if req.webhook is not None else req.webhook_url
    if url is not None:
        if not services.settings.webhooks:
            raise TurnedOff(WEBHOOKS_OFF, param="webhook.url")
        secret = (req.webhook.secret if req.webhook is not None else None) or req.webhook_secret
        webhook = Webhook(
            # URL_REFUSED, the guard's code, for a URL it would refuse (a scheme, no host) too.
            url=_http_url(url, "webhook.url", UrlRefused),
            secret=secret or new_secret(),
            style=style,
        )
        try:  # the dispatcher checks again before each send (and its transport on connect)
            check_url(webhook.url, parse_allowlist(services.settings.url_allowlist))
        except UnresolvableHost:
            pass  # maybe a DNS hiccup: sends are retried
        except UrlRefused as exc:  # URL_REFUSED: the guard's own code
            raise _reject_param(exc, "webhook.url") from None
        try:
            secret_key(webhook.secret)
        except ValueError as exc:
            raise InvalidRequest(str(exc), param="webhook.secret") from None
    return {
        "input": source,
        "output_format": fmt.format,
        "bit_depth": fmt.bit_depth,
        "quality": quality,
        "webhook": webhook,
        "downmix": inp.downmix,
        "audio_track": inp.audio_track,
        "rescale": inp.rescale,
    }


Body = TypeVar("Body", bound=QueueBody)


def with_query_webhook(req: Body, url: str | None) -> Body:
    """``req`` with the webhook URL fal's clients send in the submit's query
    (``?fal_webhook=URL``): read as the body's ``webhookUrl``, so it is checked as that one is
    (:func:`_common`). The body naming another URL is a 400: which one was meant is not
    guessed. A blank one is none."""
    if url is None or not url.strip():
        return req
    given = req.webhook.url if req.webhook is not None else req.webhook_url
    if given is None:
        return req.model_copy(update={"webhook_url": url.strip()})
    if given.strip() != url.strip():
        raise InvalidRequest(
            f"fal_webhook {shown_url(url)!r} and the body's webhook {shown_url(given)!r} are "
            "different URLs; give one of them",
            param="fal_webhook",
        )
    return req


def plan_separate(services: Services, account_id: str, req: SeparateRequest) -> Submission:
    """``audio/separate``: the prompt's stem -> ``target``, everything else -> ``residual``."""
    common = _common(services, account_id, req, req.input, NATIVE_STYLE)
    spans = [Span(s.start, s.end, s.include) for s in req.input.spans or ()]
    source = common["input"]
    if spans and isinstance(source, UploadInput) and source.duration:  # measured at upload
        try:
            check_reach(spans, source.duration)
        except DemixerError as exc:
            raise _reject_param(exc, "input.spans") from None
    match = map_prompt(req.input.prompt, installed_models(services))
    spec = get_spec(match.model, services.settings.model_dir)
    plan = plan_stems(spec.id, spec.stems, [match.stem, RESIDUAL])
    stem = plan.targets[0]  # the model's own name for the prompt's stem
    if match.invert:
        names = {stem: "residual", RESIDUAL: "target"}
    else:
        names = {stem: "target", RESIDUAL: "residual"}
    # Download names say what a file holds (song_vocals.wav, song_without-vocals.wav), not
    # which side of the prompt it was.
    labels = {names[stem]: match.stem, names[RESIDUAL]: f"without-{match.stem}"}
    how = "everything but " if match.invert else ""
    return Submission(
        queue_model=SEPARATE,
        engine_model=spec.id,
        params=_contract(
            **common,
            stems=plan.outputs,
            names=names,
            spans=spans or None,
            prompt=req.input.prompt[:200],  # for listings (the log says how it was read)
            labels=labels,
        ),
        priority=req.priority,
        note=f"prompt {req.input.prompt[:200]!r} -> target = {how}{match.stem} ({spec.id})",
    )


def plan_stems_request(
    services: Services, account_id: str, req: StemsRequest, options: PlanOptions | None = None
) -> Submission:
    """``audio/stems``: one output per requested stem, plus the residual: everything the stems
    leave out, when they do not cover the model and it is audible (see
    :mod:`demixer.engine.stems`). ``options``: what a vendor protocol adds (:class:`PlanOptions`:
    e.g. an "everything else" output in every case, its own output names).
    """
    options = options or PlanOptions()
    if req.input.stems is not None and not any(s.strip() for s in req.input.stems):
        raise NoStemsRequested(
            '`stems` names no stem; name at least one (e.g. ["vocals"]), or leave it out '
            "for every stem of the model",
            param="input.stems",
        )
    common = _common(services, account_id, req, req.input, options.webhook_style)
    installed = installed_models(services)
    requested = [s.strip().lower() for s in req.input.stems or () if s.strip()]
    if req.input.model is not None:
        try:
            spec = get_spec(req.input.model, services.settings.model_dir)
        except DemixerError as exc:
            raise _reject_param(exc, "input.model") from None
        if len(spec.id) > MODEL_ID_LENGTH:
            # An ensemble's id as demixer spells it (an alias as the id it names, `@.5` as
            # `@0.5`) can outgrow the one asked for: the job's column takes 200 characters, and
            # PostgreSQL refused the row with a 500.
            raise InvalidRequest(
                f"the ensemble {spec.id!r} is {len(spec.id)} characters with its models' ids "
                f"and weights spelled out, more than {MODEL_ID_LENGTH}: name fewer models",
                param="input.model",
            )
    else:
        spec = _default_model(services, installed, requested)
    wanted = requested or list(spec.stems)
    always = options.residual == "always"
    try:
        plan = plan_stems(
            spec.id, spec.stems, [*wanted, RESIDUAL] if always else wanted, partial=spec.partial
        )
    except UnknownStem as exc:
        raise _reject_param(exc, "input.stems") from None
    # The worker plans again from these names: an added residual stays an added one.
    stems = [*plan.targets]
    if plan.residual_name is not None and not plan.residual_optional:
        stems.append(plan.residual_name)
    outputs = list(plan.outputs)
    if options.residual == "never":  # every stem, nothing left to a residual
        stems = [s for s in stems if s != RESIDUAL]
        outputs = [s for s in outputs if s != RESIDUAL]
    ids = {m.id for m in installed}
    if spec not in installed and not (spec.requires and set(spec.requires) <= ids):
        raise ModelUnavailable(
            f"model {spec.id!r} is not installed on this server nor on any of its workers; "
            f"its operator installs it there: {install_command(spec, services.settings.model_dir)}"
            + (f" ({', '.join(spec.requires)})" if spec.requires else ""),
            param="input.model",
        )
    return Submission(
        queue_model=STEMS,
        engine_model=spec.id,
        params=_contract(
            **common,
            stems=stems,
            names={n: options.output_names.get(n, n) for n in outputs},
            extra_formats=options.extra_formats,
            preprocess=options.preprocess,
            vendor=options.vendor,
        ),
        priority=req.priority,
        note=options.note,
        cleanup_models=_cleanup_models(services, options.preprocess, installed),
    )


def _contract(**fields: Any) -> JobParams:
    """The job contract of a plan; a field the contract refuses is a 400 naming it (the checks
    above catch what users can get wrong with their own words, this the rest)."""
    try:
        return JobParams(**fields)
    except ValidationError as exc:
        raise invalid_request(exc.errors()[:1]) from None


def install_command(spec: ModelSpec, model_dir: Path | None) -> str:
    """``demixer models pull ID`` when that downloads everything the model needs (a recipe:
    the models it chains), else the model's hint."""
    if (spec.weights or spec.requires) and _pullable(spec, model_dir):
        return f"demixer models pull {spec.id}"
    return spec.install_hint


def _pullable(spec: ModelSpec, model_dir: Path | None) -> bool:
    """Whether every weights file of ``spec`` and of the models it requires has a URL."""
    try:
        required = [get_spec(dependency, model_dir) for dependency in spec.requires]
    except UnknownModel:
        return False
    return all(w.url for w in spec.weights) and all(_pullable(r, model_dir) for r in required)


def _default_model(
    services: Services, installed: list[ModelSpec], requested: list[str]
) -> ModelSpec:
    """The best installed model producing every requested stem (else the default model)."""
    try:  # residual names ("instrumental", …) say nothing about which model: skipped
        chosen = choose_model(requested, installed)
    except UnknownStem as exc:
        raise _reject_param(exc, "input.stems") from None
    return chosen or get_spec(services.settings.default_model, services.settings.model_dir)


def _cleanup_models(
    services: Services, steps: tuple[str, ...], installed: list[ModelSpec]
) -> dict[str, str]:
    """Clean-up step -> the model of ``installed`` that runs it, with its weights identity
    when it is a user model (:func:`~demixer.models.planner.cleanup_model`, as the worker
    picks it): which model cleaned the input is part of what the outputs are."""
    chosen = {}
    for step in steps:
        found = cleanup_model(step, installed) if step in CLEANUP_STEMS else None
        if found is not None:
            model = found[0].id
            weights = weights_identity(model, services.settings.model_dir)
            chosen[step] = f"{model} {weights}" if weights else model
    return chosen


def submit(
    services: Services, account_id: str, sub: Submission, *, key_id: str | None = None
) -> QueuedResponse:
    """Queue ``sub``; the row is committed before the answer says it exists.

    A request identical to a completed one of the same account (``service/jobs/cache.py``) is
    answered COMPLETED at once with copies of its outputs. Any request is refused while the
    account's files and results hold its whole storage cap (``service/accounts/storage.py``):
    the copies count as its own stems. Only requests that will really run count against the
    key's concurrent-jobs limit and the account's monthly allowance
    (``service/accounts/quota.py``: an upload's seconds are held from here; an ``audio_url``'s
    are checked by the worker once fetched, and refused here only when none are left).
    """
    job_id = new_id("req")
    weights = weights_identity(sub.engine_model, services.settings.model_dir)
    try:
        with services.db.write() as s:
            content = cache.input_sha256(s, sub.params)
            fp = cache.fingerprint(
                content, sub.engine_model, sub.params, weights, sub.cleanup_models
            )
            now = services.db.clock()
            # Before the cache's copies too: they are stems this request holds as its own.
            cap = services.settings.max_account_storage_bytes
            check_request_room(s, account_id, cap, now)
            source = cache.find_reusable(s, services.storage, account_id, fp, now) if fp else None
            outputs: dict[str, Any] = {}
            if source is not None:
                try:
                    outputs = cache.copy_outputs(services.storage, source, job_id, sub.params)
                except BlobNotFound:  # deleted since it was found (a DELETE, the sweeper)
                    source = None  # the cache is a shortcut: the request runs instead
            seconds = None
            if source is None:
                check_concurrency(s, key_id, services.settings.max_concurrent_jobs)
                source_input = sub.params.input
                seconds = source_input.duration if isinstance(source_input, UploadInput) else None
                check_quota(s, account_id, seconds, now)
            job = services.queue.submit(
                s,
                job_id=job_id,
                account_id=account_id,
                queue_model=sub.queue_model,
                engine_model=sub.engine_model,
                params=sub.params,
                priority=sub.priority,
                max_attempts=services.settings.max_attempts,
                key_id=key_id,
                fingerprint=fp,
            )
            if seconds is not None:
                hold(s, job_id, account_id, seconds)
            if sub.note:
                services.queue.log(s, job_id, sub.note)
            if source is not None:
                services.queue.complete_from_cache(s, job_id, source, outputs)
            position = services.queue.position(s, job) if source is None else 0
            created = job.created_at
    except BaseException:
        services.storage.delete_prefix(f"outputs/{job_id}/")  # copies of a rolled-back reuse
        raise
    links = urls(services, job_id, sub.queue_model if sub.fal_paths else None)
    webhook = sub.params.webhook
    return QueuedResponse(
        request_id=job_id,
        status="COMPLETED" if source is not None else "IN_QUEUE",
        model=sub.queue_model,
        engine_model=sub.engine_model,
        created_at=created,
        queue_position=position,
        status_url=links["status"],
        stream_url=links["stream"],
        result_url=links["result"],
        response_url=links["result"],
        cancel_url=links["cancel"],
        webhook=WebhookInfo(url=webhook.url, signing_secret=webhook.secret) if webhook else None,
    )
