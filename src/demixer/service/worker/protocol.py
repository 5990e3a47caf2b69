"""What crosses between a worker slot and its separation child: the child's start options, one
job, its result, and the messages the child sends while it works.

Messages, child -> parent:

* ``("progress", fraction)``: at most every :data:`PROGRESS_INTERVAL` seconds;
* ``("stage", name)``: one of :data:`STAGES`, as each begins;
* ``("done", ChildResult)``;
* ``("error", code, message, retryable, trace)``: ``trace`` is the traceback of an error
  demixer did not expect (None for its own errors), for the worker's log.

The parent sends a :class:`ChildJob`, or None to ask an idle child to exit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from demixer.engine.separator import STAGES as SEPARATOR_STAGES
from demixer.service.jobs.contract import JobParams

__all__ = [
    "PROGRESS_INTERVAL",
    "STAGES",
    "ChildJob",
    "ChildOptions",
    "ChildOutput",
    "ChildResult",
]

PROGRESS_INTERVAL = 0.5  # seconds between progress messages
# What an attempt does, in order: the child loads the model (when it is not loaded yet), the
# engine's stages (separator.STAGES), then the parent stores the outputs.
STAGES = ("loading_model", *SEPARATOR_STAGES, "storing")


@dataclass(frozen=True)
class ChildOptions:
    """How a child loads models.

    Attributes:
        model_dir: weights cache directory (None: ``$DEMIXER_MODEL_DIR`` or the default).
        device: torch device (``cpu``, ``cuda``…).
        threads: CPU threads for the model (None: the library default), so that several
            slots on one machine share its cores instead of oversubscribing them.
        parent_pid: the worker's pid; the child exits when that process is gone.
        environ: the parent's environment when it started the child (set by
            :meth:`Child.start`): a forked child takes it on, as a spawned one inherits it.
        log_setup: sets the child's logging up as the parent's was (``serve`` and ``worker``:
            ``configure_logging`` at their level); it must pickle (a module's function, or a
            ``partial`` of one). None leaves Python's default.
    """

    model_dir: str | None
    device: str
    threads: int | None
    parent_pid: int
    environ: Mapping[str, str] | None = None
    log_setup: Callable[[], None] | None = None


@dataclass(frozen=True)
class ChildJob:
    """One separation, as the parent sends it.

    Attributes:
        job_id: the job (for logs).
        attempt: the attempt number (for logs).
        engine_model: registered model id.
        input_path: local file to separate.
        out_dir: empty directory to write the outputs into.
        params: the job contract (stems, formats, names, spans, preprocessing, downmix,
            quality level).
        max_seconds: the most audio decoded (the server's duration limit, held on the samples
            themselves: ``DURATION_LIMIT`` past it whatever the file declares).
    """

    job_id: str
    attempt: int
    engine_model: str
    input_path: str
    out_dir: str
    params: JobParams
    max_seconds: float | None = None


@dataclass(frozen=True)
class ChildOutput:
    """One file the child wrote: its path, rate (Hz) and channel count."""

    path: str
    sample_rate: int
    channels: int


@dataclass(frozen=True)
class ChildResult:
    """What a finished separation produced.

    Attributes:
        outputs: engine output name -> the file written.
        duration: seconds of input audio.
        sample_rate: Hz of the input.
        channels: channels of the outputs (1 for mono input, else 2).
        clipped: engine output name -> samples clipped at ±1 (0 for float WAV and rescaled
            outputs).
        gain: the one gain every output was scaled by (below 1 only when rescaled).
        seconds: wall-clock seconds spent in the child.
        extras: engine output name -> extension -> the same output in an extra format.
        track_note: which of the input's several audio tracks was separated, for the job's
            log (None: it has one).
    """

    outputs: dict[str, ChildOutput]
    duration: float
    sample_rate: int
    channels: int
    clipped: dict[str, int] = field(default_factory=dict)
    gain: float = 1.0
    seconds: float = 0.0
    extras: dict[str, dict[str, ChildOutput]] = field(default_factory=dict)
    track_note: str | None = None
