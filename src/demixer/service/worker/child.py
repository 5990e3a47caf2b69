"""The separation child process: what runs on the far side of a worker slot's pipe.

Each worker slot (see :mod:`demixer.service.worker`) owns one long-lived child, forked by
multiprocessing's fork server on Linux (``spawn`` elsewhere; see :meth:`Child.start`). The child
keeps loaded :class:`~demixer.engine.Separator` objects between
jobs, so a model is loaded once, not per job. It never touches the database or storage: the
parent (:mod:`demixer.service.worker.runner`) downloads the input, sends a :class:`ChildJob` through
its :class:`Child` handle, and stores the files the child wrote.

Messages, child -> parent:

* ``("progress", fraction)``: at most every :data:`PROGRESS_INTERVAL` seconds;
* ``("stage", name)``: one of :data:`STAGES`, as each begins;
* ``("done", ChildResult)``;
* ``("error", code, message, retryable, trace)``: ``trace`` is the traceback of an error
  demixer did not expect (None for its own errors), for the worker's log.

The child's own log records (a decoder's "samples were NaN") and Python warnings go to the
stderr it shares with the worker, in the worker's format when the worker hands it its set-up
(:attr:`ChildOptions.log_setup`).

The slot starts its child as it starts; it kills the child (SIGKILL) on cancel, timeout or lost
lease, and starts another for its next job;
an OOM kill or a crash shows up as the pipe closing. This module imports only the engine and
audio layers (torch is imported by the fork server, or by the model loader under ``spawn``).
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import select
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import numpy as np

from demixer.audio import OutputFormat, duration_refusal, probe
from demixer.audio.denoise import denoise_blocks
from demixer.audio.encode import mp3_rate
from demixer.engine import Separator
from demixer.engine.cleanup import keep_stem
from demixer.engine.separator import STAGES as SEPARATOR_STAGES
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
from demixer.service.jobs.contract import JobParams

__all__ = [
    "PROGRESS_INTERVAL",
    "STAGES",
    "Child",
    "ChildDied",
    "ChildJob",
    "ChildOptions",
    "ChildOutput",
    "ChildResult",
    "check_input",
    "child_context",
    "child_main",
    "classify_error",
    "run_job",
]

PROGRESS_INTERVAL = 0.5  # seconds between progress messages
# What an attempt does, in order: the child loads the model (when it is not loaded yet), the
# engine's stages (separator.STAGES), then the parent stores the outputs.
STAGES = ("loading_model", *SEPARATOR_STAGES, "storing")
CACHED_MODELS = 2  # separators kept loaded per child (least recently used dropped first)
_PR_SET_PDEATHSIG = 1
_START_WAIT = 60.0  # seconds a kill waits for a child being started (the fork server's imports)
# The job contract's preprocessing steps (service/jobs/contract.PREPROCESS_STEPS), as block
# stream transforms.
_PREPROCESSORS: dict[str, PreprocessFn] = {"denoise": denoise_blocks}


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
    """

    outputs: dict[str, ChildOutput]
    duration: float
    sample_rate: int
    channels: int
    clipped: dict[str, int] = field(default_factory=dict)
    gain: float = 1.0
    seconds: float = 0.0
    extras: dict[str, dict[str, ChildOutput]] = field(default_factory=dict)


def classify_error(exc: BaseException) -> tuple[str, str, bool]:
    """``(code, message, retryable)`` for an error raised while running a job.

    The user's faults (bad audio, unknown stem, bad output options) and a model that cannot
    be loaded are final; a model that crashed, or any unexpected error, may pass on another
    attempt (a transient out-of-memory, a GPU hiccup). An unexpected error's text (a path on
    the server, a library's internals) is the operator's: the message names only its kind,
    and :func:`child_main` sends its traceback to the worker's log.
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


class _ParentGone(BaseException):
    """The pipe to the parent broke: stop at once (BaseException, so nothing swallows it)."""


def _die_with_parent(parent_pid: int) -> None:
    """SIGKILL this process as soon as the worker is gone (a SIGKILLed worker's child must
    not keep the CPU or GPU busy); elsewhere than Linux the closed pipe ends the child.

    A thread waits on a pidfd of the worker, which becomes readable when it exits. Linux also
    SIGKILLs this process when its parent dies (``PR_SET_PDEATHSIG``): the worker under
    ``spawn``, or the fork server, which exits once the worker is gone (see
    :func:`_leave_fork_server`) but only after a second or more of interpreter shutdown.
    """
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    try:
        watched = os.pidfd_open(parent_pid)
    except ProcessLookupError:  # the worker died before this child could watch it
        os._exit(0)
    except OSError:  # a kernel without pidfds (before 5.3): the parent-death signal only
        return

    def watch() -> None:
        select.select([watched], [], [])
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="demixer-watch-worker", daemon=True).start()


def _leave_fork_server() -> None:
    """Close this child's copy of the fork server's "alive" pipe.

    multiprocessing hands every forked child the write end of the pipe the server watches, so
    the server runs while any child does; this child's own death is tied to the server's
    (``PR_SET_PDEATHSIG``), so holding it would keep both alive after a worker is SIGKILLed.
    Without it the server exits when the worker does, and this child with it.
    """
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    fd = getattr(server, "_forkserver_alive_fd", None)
    if isinstance(fd, int):
        with contextlib.suppress(OSError):
            os.close(fd)
        server._forkserver_alive_fd = None  # type: ignore[union-attr]


def _take_environment(options: ChildOptions) -> None:
    """The parent's environment, and the thread count, as a spawned child would have had them.

    A forked child starts with the fork server's environment, and with torch already imported
    (it read ``OMP_NUM_THREADS`` then): the count is set by call as well.
    """
    if options.environ is not None:
        os.environ.clear()
        os.environ.update(options.environ)
    if options.threads is not None:
        # Read by torch and BLAS when they are first imported (under spawn, on the first job).
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ.setdefault(var, str(options.threads))
    torch = sys.modules.get("torch")
    wanted = os.environ.get("OMP_NUM_THREADS", "")
    if torch is not None and wanted.isdigit() and int(wanted) > 0:
        torch.set_num_threads(int(wanted))


def child_main(conn: Connection, options: ChildOptions) -> None:
    """The child's loop: receive a job, separate, answer; exit on ``None`` or a closed pipe."""
    _leave_fork_server()  # a spawned child holds none
    _die_with_parent(options.parent_pid)
    # Ctrl-C in a terminal reaches the whole process group: the parent decides what to do.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _take_environment(options)
    if options.log_setup is not None:
        # The fork server's interpreter (or a spawned one) starts with Python's default
        # logging: a record printed as its bare message and a warning as bare
        # "file:line: UserWarning" lines, amid the worker's lines with their time and level.
        options.log_setup()
    separators: OrderedDict[str, Separator] = OrderedDict()
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        try:
            result = run_job(job, options, separators, _progress_sender(conn), _stage_sender(conn))
            conn.send(("done", result))
        except _ParentGone:
            return
        except BaseException as exc:
            code, message, retryable = classify_error(exc)
            # demixer's own errors say all there is to say; any other is a bug or the
            # machine's, and its traceback is what the operator needs to find out which.
            trace = (
                None if isinstance(exc, DemixerError) else "".join(traceback.format_exception(exc))
            )
            try:
                conn.send(("error", code, message, retryable, trace))
            except (OSError, EOFError):
                return


def _progress_sender(conn: Connection) -> Callable[[float], None]:
    last = [0.0]

    def send(fraction: float) -> None:
        now = time.monotonic()
        if now - last[0] < PROGRESS_INTERVAL and fraction < 1.0:
            return
        last[0] = now
        try:
            conn.send(("progress", float(fraction)))
        except (OSError, EOFError):
            raise _ParentGone() from None

    return send


def _stage_sender(conn: Connection) -> Callable[[str], None]:
    def send(stage: str) -> None:
        try:
            conn.send(("stage", stage))
        except (OSError, EOFError):
            raise _ParentGone() from None

    return send


def check_input(job: ChildJob) -> None:
    """The checks an upload gets (:func:`demixer.audio.probe`: headers, truncation, packets
    counted up to the limit), made before a model is loaded: an ``audio_url`` input gets the
    answer the same file gets at upload, and a refused one costs no model load. Decoding
    still stops at ``job.max_seconds`` whatever the packets said."""
    info = probe(job.input_path, max_seconds=job.max_seconds)
    name = f"'{Path(job.input_path).name}'"
    refusal = duration_refusal(name, info.duration, job.max_seconds)
    if refusal is not None:
        raise refusal
    if info.channels > 2 and not job.params.downmix:
        raise InvalidAudio(
            f"{name} has {info.channels} channels; demixer separates mono or stereo: set "
            "input.downmix to true to fold it to stereo first"
        )


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
    check_input(job)
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
    )


# --- the parent's end ------------------------------------------------------------------------


class ChildDied(Exception):
    """The child process exited or its pipe broke while it had a job (OOM killer, segfault)."""


#: The longest path of a Unix socket (``sun_path``, less its NUL), and what multiprocessing adds
#: to the temporary directory for the fork server's (``/pymp-XXXXXXXX/listener-XXXXXXXX``).
_SOCKET_PATH_MAX = 107
_FORK_SERVER_SOCKET = len("/pymp-12345678/listener-12345678")


def child_context() -> (
    multiprocessing.context.ForkServerContext | multiprocessing.context.SpawnContext
):
    """How children start: forked from multiprocessing's fork server on Linux (see
    :meth:`Child.start`), spawned elsewhere, and where the fork server's socket would not fit
    a Unix socket's path in the temporary directory (a ``$TMPDIR`` of over 75 bytes made every
    child fail at once, "AF_UNIX path too long", and every job with it)."""
    fits = len(os.fsencode(tempfile.gettempdir())) + _FORK_SERVER_SOCKET <= _SOCKET_PATH_MAX
    if sys.platform.startswith("linux") and fits:
        return multiprocessing.get_context("forkserver")
    return multiprocessing.get_context("spawn")


class Child:
    """The parent's handle on one separation child (a daemon process; see :meth:`start`)."""

    def __init__(self, process: multiprocessing.process.BaseProcess, conn: Connection) -> None:
        self.process = process
        self.conn = conn
        self._launch: threading.Thread | None = None
        self._launch_error: BaseException | None = None

    @classmethod
    def start(cls, options: ChildOptions, *, name: str = "demixer-child") -> Child:
        """Start a child; it loads nothing until its first job (each worker slot starts its
        child as the slot starts).

        On Linux the child is a fork of multiprocessing's fork server, which imports torch and
        this module once per worker process: a child restarted after a cancel, a timeout or a
        crash, and each further slot, is ready in milliseconds instead of the seconds that
        importing torch takes (about 3 s of CPU). The server itself never loads a model
        or touches CUDA. Elsewhere (and with a long ``$TMPDIR``: :func:`child_context`) children
        are spawned. Either way the child
        re-imports the parent's ``__main__`` module (see :class:`Worker`).

        The first start waits for the server's imports, so the process is started on a thread:
        the caller goes on (heartbeats, cancels) meanwhile, a job sent before the process
        exists waits in the pipe, and :meth:`receive` waits for the start within its timeout.
        """
        context = child_context()
        if isinstance(context, multiprocessing.context.ForkServerContext):
            context.set_forkserver_preload([__name__, "torch"])
        parent_end, child_end = context.Pipe()
        options = replace(options, environ=dict(os.environ))
        process = context.Process(
            target=child_main, args=(child_end, options), name=name, daemon=True
        )
        child = cls(process, parent_end)

        def launch() -> None:
            try:
                process.start()
            except BaseException as exc:  # reported by receive() as the child's death
                child._launch_error = exc
            finally:
                # Only the child may hold its end: when the child dies, the parent's end
                # reads EOF.
                child_end.close()

        child._launch = threading.Thread(target=launch, name=f"{name}-start", daemon=True)
        child._launch.start()
        return child

    def _started(self, timeout: float | None) -> bool:
        """Whether the process has been started, waiting up to ``timeout`` seconds for it.

        Raises:
            ChildDied: the process could not be started.
        """
        launch = self._launch
        if launch is not None:
            launch.join(timeout)
            if launch.is_alive():
                return False
            self._launch = None
        if self._launch_error is not None:
            error = self._launch_error
            raise ChildDied(f"the separation process could not start: {error}")
        return True

    def _join_launch(self) -> None:
        """Wait for a start under way (up to :data:`_START_WAIT`), whatever its outcome."""
        launch = self._launch
        if launch is not None:
            launch.join(_START_WAIT)

    @property
    def pid(self) -> int | None:
        """The child's process id (None while it is being started)."""
        return self.process.pid

    def alive(self) -> bool:
        """Whether the process is running, or being started."""
        launch = self._launch
        if launch is not None and launch.is_alive():
            return True
        return self._launch_error is None and self.process.is_alive()

    def send(self, job: ChildJob) -> None:
        """Hand the child a job; raises :class:`ChildDied` when it is gone."""
        try:
            self.conn.send(job)
        except (OSError, EOFError):
            raise ChildDied(self._obituary()) from None

    def receive(self, timeout: float) -> tuple[Any, ...] | None:
        """The child's next message, or None when none came within ``timeout`` seconds.

        Raises:
            ChildDied: the process ended or its pipe closed before it answered.
        """
        deadline = time.monotonic() + timeout
        if not self._started(timeout):
            return None
        ready = wait([self.conn, self.process.sentinel], max(0.0, deadline - time.monotonic()))
        if not ready:
            return None
        if self.conn in ready or self.conn.poll():
            try:
                message: tuple[Any, ...] = self.conn.recv()
            except (EOFError, OSError):
                raise ChildDied(self._obituary()) from None
            return message
        raise ChildDied(self._obituary())

    def _obituary(self) -> str:
        if not self._started(_START_WAIT):
            self.kill()
            return "the separation process did not start"
        self.process.join(2.0)
        code = self.process.exitcode
        if code is None:  # the pipe broke but the process lingers: make sure it is gone
            self.kill()
            return "the separation process stopped answering"
        self.conn.close()
        if code < 0:
            try:
                how = f"killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"killed by signal {-code}"
            return f"the separation process died (exit code {code}: {how})"
        return f"the separation process died (exit code {code})"

    def kill(self) -> None:
        """SIGKILL the child and wait for it; its memory (and GPU memory) is freed.

        A child still being started is waited for first (up to a minute); one that starts
        later still finds its pipe closed, and exits.
        """
        self._join_launch()
        if self.process.pid is not None and self.process.is_alive():
            self.process.kill()
            self.process.join(5.0)
        self.conn.close()

    def close(self) -> None:
        """Ask an idle child to exit; kill it if it does not within two seconds.

        A child still being started is not waited for (a slot starts its child as it starts,
        and a stop just after would wait for the fork server's imports): it reads the request
        to exit first thing, or finds its pipe closed, and exits.
        """
        with contextlib.suppress(OSError, EOFError):
            self.conn.send(None)
        launch = self._launch
        if launch is not None and launch.is_alive():
            self.conn.close()
            return
        self._join_launch()
        if self.process.pid is not None:
            self.process.join(2.0)
        self.kill()
