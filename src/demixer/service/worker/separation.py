"""One job's separation, inside the separation child: the input checked, the model loaded (a
few kept loaded between jobs), the preprocessing, and one streaming pass of the engine that
writes every output; and what an error on the way means for the job (:func:`classify_error`).

It never touches the database or storage: the parent makes the input local and stores the
files written here (:mod:`demixer.service.worker.runner`).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from demixer.audio import AudioInfo, OutputFormat, duration_refusal, probe
from demixer.audio.denoise import denoise_blocks
from demixer.audio.encode import mp3_rate
from demixer.engine import Separator
from demixer.engine.cleanup import keep_stem
from demixer.engine.separator import PreprocessFn
from demixer.errors import (
    DemixerError,
    DownloadFailed,
    InvalidAudio,
    ModelFailed,
    ModelUnavailable,
    StorageFull,
    WeightsChecksumMismatch,
)
from demixer.models import planner
from demixer.models.loading import installed_specs
from demixer.models.user_models import weights_identity
from demixer.service.worker.protocol import ChildJob, ChildOptions, ChildOutput, ChildResult

__all__ = ["check_input", "classify_error", "run_job"]

CACHED_MODELS = 2  # separators kept loaded per child (least recently used dropped first)
# The job contract's preprocessing steps (service/jobs/contract.PREPROCESS_STEPS), as block
# stream transforms.
_PREPROCESSORS: dict[str, PreprocessFn] = {"denoise": denoise_blocks}


def _preprocessor(
    steps: tuple[str, ...], load: Callable[[str], Separator], model_dir: Path | None
) -> PreprocessFn | None:
    """The block-stream transform for a job's ``preprocess`` steps (None: none); a model's
    clean-up (``dereverb``, ``deecho``) loads that model with ``load``."""
    if not steps:
        return None
    chosen = []
    for step in steps:
        if step in _PREPROCESSORS:
            chosen.append(_PREPROCESSORS[step])
            continue
        found = planner.cleanup_model(step, installed_specs(model_dir))
        if found is None:  # the API checked; this worker lacks the model
            raise ModelUnavailable(f"no model for the {step} step is installed on this worker")
        spec, stem = found
        chosen.append(keep_stem(load(spec.id), stem))

    def run(blocks: Iterable[np.ndarray], rate: int) -> Iterable[np.ndarray]:
        for step in chosen:
            blocks = step(blocks, rate)
        return blocks

    return run


def classify_error(exc: BaseException) -> tuple[str, str, bool]:
    """``(code, message, retryable)`` for an error raised while running a job.

    The user's faults (bad audio, unknown stem, bad output options) and a model that cannot
    be loaded are final; a model that crashed, or any unexpected error, may pass on another
    attempt (a transient out-of-memory, a GPU hiccup). An unexpected error's text (a path on
    the server, a library's internals) is the operator's: the message names only its kind,
    and :func:`~demixer.service.worker.child.child_main` sends its traceback to the worker's log.
    """
    if isinstance(exc, WeightsChecksumMismatch | DownloadFailed):
        # Damaged or missing weights: "model unavailable", as README says, which pulling (or
        # adding) the model's files again mends. A model whose files are there but whose
        # config or checkpoint cannot be used (INVALID_MODEL_CONFIG, CHUNK_TOO_LARGE,
        # CHECKPOINT_MISMATCH) keeps its own code below: "unavailable" sent the operator to
        # reinstall a model that is installed, and the page said it was not.
        return ModelUnavailable.code, exc.message, False
    if isinstance(exc, ModelFailed | StorageFull):  # StorageFull: retried once there is room
        return exc.code, exc.message, True
    if isinstance(exc, DemixerError):
        return exc.code, exc.message, False
    if isinstance(exc, MemoryError):
        return ModelFailed.code, "the separation ran out of memory", True
    if StorageFull.caused(exc):
        return StorageFull.code, StorageFull.default_message, True
    message = f"the separation failed ({type(exc).__name__}); the server's log has details"
    return ModelFailed.code, message, True


def check_input(job: ChildJob) -> AudioInfo:
    """The checks an upload gets (:func:`demixer.audio.probe`: headers, truncation, packets
    counted up to the limit), made before a model is loaded: an ``audio_url`` input gets the
    answer the same file gets at upload, and a refused one costs no model load. Decoding
    still stops at ``job.max_seconds`` whatever the packets said."""
    info = probe(job.input_path, max_seconds=job.max_seconds, track=job.params.audio_track)
    name = f"'{Path(job.input_path).name}'"
    refusal = duration_refusal(name, info.duration, job.max_seconds)
    if refusal is not None:
        raise refusal
    if info.channels > 2 and not job.params.downmix:
        raise InvalidAudio(
            f"{name} has {info.channels} channels; demixer separates mono or stereo: set "
            "input.downmix to true to fold it to stereo first"
        )
    return info


def _separator(
    model: str,
    options: ChildOptions,
    separators: OrderedDict[str, Separator],
    stage: Callable[[str], None],
) -> Separator:
    """``model`` loaded, from the few kept loaded (by name and, for a user model, its weights:
    one added again under its name with other files is loaded again)."""
    model_dir = Path(options.model_dir) if options.model_dir else None
    key = f"{model} {weights_identity(model, model_dir) or ''}"
    if key in separators:
        separators.move_to_end(key)
        return separators[key]
    while len(separators) >= CACHED_MODELS:
        separators.popitem(last=False)
    stage("loading_model")
    separator = Separator(model, model_dir=model_dir, device=options.device)
    separators[key] = separator
    return separator


def run_job(
    job: ChildJob,
    options: ChildOptions,
    separators: OrderedDict[str, Separator],
    progress: Callable[[float], None],
    stage: Callable[[str], None] | None = None,
) -> ChildResult:
    """Separate ``job.input_path`` into ``job.out_dir`` (one ``{engine name}.{ext}`` each).

    One streaming pass of the engine: decode, preprocess, separate, apply the spans, and write
    the primary format and every extra format at once (memory bounded whatever the input's
    length; no intermediate files). Multichannel input is downmixed to stereo only when the
    request asked for it (``params.downmix``), as the CLI does with ``--downmix``. At most
    ``job.max_seconds`` of audio is decoded.
    """
    started = time.perf_counter()
    params = job.params
    stage = stage or (lambda _: None)
    info = check_input(job)
    model_dir = Path(options.model_dir) if options.model_dir else None
    preprocess = _preprocessor(
        params.preprocess, lambda m: _separator(m, options, separators, stage), model_dir
    )
    separator = _separator(job.engine_model, options, separators, stage)
    result = separator.separate_file(
        job.input_path,
        Path(job.out_dir),
        params.stems,
        fmt=params.format,
        template="{stem}.{ext}",
        downmix=params.downmix,
        track=params.audio_track,
        rescale=params.rescale,
        quality=params.quality,
        on_progress=progress,
        on_stage=stage,
        preprocess=preprocess,
        max_seconds=job.max_seconds,
        spans=params.spans or (),
        span_output=params.engine_name("target") if params.spans else None,
        extra_formats=[OutputFormat.parse(f, None) for f in params.extra_formats],
    )

    def output(path: Path) -> ChildOutput:
        rate = mp3_rate(result.sample_rate) if path.suffix == ".mp3" else result.sample_rate
        return ChildOutput(str(path), rate, result.channels)

    return ChildResult(
        outputs={name: output(p) for name, p in result.paths.items()},
        duration=result.duration,
        sample_rate=result.sample_rate,
        channels=result.channels,
        clipped=dict(result.report.clipped),
        gain=result.report.gain,
        seconds=time.perf_counter() - started,
        extras={
            name: {ext: output(p) for ext, p in by_ext.items()}
            for name, by_ext in result.extras.items()
        },
        track_note=info.track_note(f"'{Path(job.input_path).name}'"),
    )
