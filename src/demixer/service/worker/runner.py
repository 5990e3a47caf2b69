"""One attempt at a job, run in the worker (parent) process by a slot's :class:`Runner`.

Each worker slot (see :mod:`demixer.service.worker`) has one :class:`Runner`, which owns the
slot's long-lived separation child (:mod:`demixer.service.worker.child`). For each claimed job it:

1. resolves the input: a stored upload (``storage.local_path``) or an ``audio_url`` it
   downloads itself (:mod:`demixer.service.worker.fetch`);
2. sends the job to the child and, while the child works, heartbeats the lease every
   ``heartbeat_seconds`` with the child's progress;
3. kills the child (SIGKILL) when a cancel is requested, the lease is lost, the job's time
   limit passes (or its pace says it will, or the child reports nothing for the stall limit:
   see :class:`_Lease`) or the worker is stopped; notices when the child dies by itself (OOM
   killer, segfault) through its pipe closing; a killed or dead child is restarted for the
   next job;
4. stores the files the child wrote under ``outputs/{job_id}/attempt-{n}/`` and completes the
   job with their keys in one fenced transaction; if that finds the lease lost, the attempt's
   blobs are deleted again.

The job's parameters are read with :meth:`~demixer.service.jobs.contract.JobParams.from_row`
(the job contract; a row that breaks it fails the job ``INVALID_PARAMS``). Output files are
stored as ``outputs/{job_id}/attempt-{n}/{api name}.{ext}`` and downloaded as
``{input file stem}_{label}.{ext}`` (:mod:`demixer.naming`, as the CLI writes them). Each extra
format's copy (``extra_formats``, e.g. Gaudio's ``mp3``) is its own flat entry of the job's
``outputs`` under the key ``"{api name}.{ext}"`` (same fields as the primary entry), so
``/result`` lists it like any output and signed blob URLs resolve it.

Every status change goes through :class:`~demixer.service.jobs.queue.Queue`. A long model call runs
in another process, so it can never starve the heartbeat, and killing it gives its memory back.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError

from demixer.audio import OutputFormat, probe
from demixer.errors import (
    DemixerError,
    FileExpired,
    InvalidParams,
    ModelUnavailable,
    QuotaExceeded,
    StorageFull,
    StorageUnavailable,
    UnknownModel,
)
from demixer.models.catalogue.ensembles import ensemble_members
from demixer.models.catalogue.recipes import recipe_file
from demixer.models.model_dir import RECIPES, default_model_dir
from demixer.models.registry import catalogue_ids
from demixer.naming import output_name
from demixer.service.accounts.quota import check_quota, held, hold, quota_state
from demixer.service.context import Services
from demixer.service.db import is_unavailable, retry_unavailable
from demixer.service.jobs.contract import JobParams, UploadInput
from demixer.service.jobs.queue import CANCELLED, Claim, LeaseLost
from demixer.service.urlguard import parse_allowlist
from demixer.service.worker.child import (
    Child,
    ChildDied,
    ChildJob,
    ChildOptions,
    ChildOutput,
    ChildResult,
)
from demixer.service.worker.fetch import AudioUrlFailed, fetch_audio_url
from demixer.storage import BlobNotFound, Storage

__all__ = ["Runner", "scratch_attempt", "scratch_prefix", "unloadable_message"]

log = logging.getLogger("demixer.worker")

T = TypeVar("T")
_WAIT_SLICE = 0.25  # seconds: the longest a slot waits before looking at the stop flag again
# Seconds a slot whose child died waits for the stop flag before it counts the death as a crash:
# a stop signal sent to the whole process group kills the child as it reaches the worker.
_STOP_GRACE = 1.0
# A separation's pace is trusted once this share of it was measured (the engine reports each
# window, at a steady pace)...
_PACE_FROM = 0.1
# ...and its attempt ended early only when the pace projects it past its limit by this factor:
# one projected just past the limit may still make it, and runs until the limit.
_MARGIN = 1.25


class _Abort(Exception):
    """Ends an attempt. ``kind``: cancelled, timeout, lease_lost, stopped, crashed, failed, or
    recorded (its end is in the database already: nothing more to write)."""

    def __init__(self, kind: str, code: str = "", message: str = "", retryable: bool = False):
        super().__init__(kind, code, message)
        self.kind = kind
        self.code = code
        self.message = message
        self.retryable = retryable


def _stopped() -> _Abort:
    """The end of an attempt whose worker is stopping: given back, not counted."""
    return _Abort("stopped", "WORKER_STOPPED", "the worker stopped during the attempt", True)


def scratch_prefix(job_id: str, attempt: int) -> str:
    """The name prefix of an attempt's scratch directory under ``{data_dir}/work``."""
    return f"{job_id}.{attempt}-"


def scratch_attempt(name: str) -> tuple[str, int] | None:
    """``(job id, attempt)`` of a scratch directory's name (None: not one of ours)."""
    head = name.split("-", 1)[0]
    job_id, dot, attempt = head.rpartition(".")
    if not dot or not job_id or not attempt.isdigit():
        return None
    return job_id, int(attempt)


class _Lease:
    """Heartbeats one job's lease and watches its limits, cancel flag and the stop flag.

    An attempt is ended ``JOB_TIMEOUT`` in one of three ways (see README, "Workers"):

    * it has run ``job_timeout_seconds`` (the fixed limit on one attempt, from its claim to its
      stored outputs): not retried;
    * its separation is going to pass that limit by a clear margin: once the child has reported
      :data:`_PACE_FROM` of the separation done, the pace measured since its first report
      projects the attempt's whole time; past :data:`_MARGIN` times the limit it is ended at
      once, not retried (another attempt at the same input runs as long), instead of running
      for the whole limit first;
    * its separation has reported nothing (no progress, no new stage) for
      ``job_stall_seconds``: a hung model. Retried, in a new child, while attempts remain.
    """

    def __init__(self, runner: Runner, claim: Claim, stop: threading.Event) -> None:
        settings = runner.services.settings
        self.runner, self.claim, self.stop = runner, claim, stop
        self.interval = settings.heartbeat_seconds
        self.limit = settings.job_timeout_seconds
        self.stall = settings.job_stall_seconds
        self.started = time.monotonic()
        self.deadline = self.started + self.limit
        self.next_beat = self.started + self.interval
        self.progress = 0.0
        self.stage: str | None = None  # written with the next heartbeat
        self.failing = False  # the last heartbeat failed: its outage is logged already
        self.watching = False  # the child has the job: its silence counts against the stall
        self.moved = self.started  # when the child last showed that it works
        self.paced: tuple[float, float] | None = None  # (when, fraction) of its first report

    def watch(self, on: bool) -> None:
        """Start (or stop) watching the child's silence: from now it must report within the
        stall limit."""
        self.watching = on
        self.moved = time.monotonic()

    def staged(self, stage: str) -> None:
        """The child began ``stage`` (one of the child's STAGES)."""
        self.stage = stage
        self.moved = time.monotonic()

    def advanced(self, fraction: float) -> None:
        """The child reported ``fraction`` of the separation done; raises :class:`_Abort`
        when its pace says the attempt will run well past its limit."""
        now = time.monotonic()
        if fraction > self.progress:
            self.moved = now
        self.progress = fraction
        if self.paced is None:  # the pace is measured from the first report on
            self.paced = (now, fraction)
            return
        since, first = self.paced
        measured = fraction - first
        if measured < _PACE_FROM or fraction >= 1.0:
            return
        total = (now - self.started) + (now - since) * (1.0 - fraction) / measured
        if total > self.limit * _MARGIN:
            message = (
                f"the job would run about {total:.0f} s, past its limit of {self.limit:g} s "
                f"({fraction:.0%} separated after {now - self.started:.0f} s)"
            )
            raise _Abort("timeout", "JOB_TIMEOUT", message)

    def wait_time(self) -> float:
        """Seconds until something is due (at most :data:`_WAIT_SLICE`)."""
        due = min(self.next_beat, self.deadline)
        if self.watching:
            due = min(due, self.moved + self.stall)
        return max(0.0, min(due - time.monotonic(), _WAIT_SLICE))

    def tick(self, *, stoppable: bool = True) -> None:
        """Heartbeat when due; raise :class:`_Abort` when the attempt must end."""
        if stoppable and self.stop.is_set():
            raise _stopped()
        now = time.monotonic()
        if now >= self.deadline:
            message = f"the job ran longer than its limit of {self.limit:g} s"
            raise _Abort("timeout", "JOB_TIMEOUT", message)
        if self.watching and now >= self.moved + self.stall:
            message = f"the separation made no progress for {self.stall:g} s"
            raise _Abort("timeout", "JOB_TIMEOUT", message, retryable=True)
        if now < self.next_beat:
            return
        self.next_beat = now + self.interval
        queue = self.runner.services.queue
        try:
            cancel = queue.heartbeat(
                self.claim.id, self.runner.worker_id, self.progress, self.stage
            )
        except LeaseLost:
            raise _Abort("lease_lost") from None
        except Exception as exc:  # a database hiccup or outage: keep working, beat again later
            # Once per outage, as the registry's beat: at every beat (2 s) a long outage wrote
            # a warning a job every 2 s. An outage is expected now and then: no traceback.
            (log.debug if self.failing else log.warning)(
                "heartbeat for %s failed; retrying", self.claim.id, exc_info=not is_unavailable(exc)
            )
            self.failing = True
            return
        if self.failing:
            log.info("heartbeat for %s works again", self.claim.id)
            self.failing = False
        if cancel:
            raise _Abort("cancelled")

    def _beating(self, call: Callable[[], T]) -> T:
        """``call()``, heartbeating from a helper thread while it runs: one transfer (a long
        song's input fetched, a stem of a GB stored) may outlast the lease, and a lease let
        lapse is another worker's to take, the attempt's work then thrown away. A cancel, the
        job's time limit or a lost lease that the heartbeats find is raised once the call
        returns (a transfer stops at its end, not midway)."""
        done = threading.Event()
        found: list[_Abort] = []

        def beat() -> None:
            while not done.wait(min(self.interval, _WAIT_SLICE)):
                try:
                    self.tick(stoppable=False)
                except _Abort as abort:
                    found.append(abort)
                    return

        beater = threading.Thread(target=beat, name="demixer-lease", daemon=True)
        beater.start()
        try:
            result = call()
        finally:
            done.set()
            beater.join()
        if found:
            raise found[0]
        return result

    def through_outage(self, call: Callable[[], T], what: str) -> T:
        """``call()``, tried again while object storage is unavailable, for up to
        ``storage_outage_seconds``: the attempt keeps its lease (heartbeats go on; a cancel,
        stop or the job's time limit still end it) instead of spending one of its attempts on
        an outage."""
        settings = self.runner.services.settings
        deadline = time.monotonic() + settings.storage_outage_seconds
        wait = 0.5
        while True:
            try:
                return self._beating(call)
            except StorageUnavailable as exc:
                if time.monotonic() >= deadline:
                    raise
                log.warning("%s: %s; retrying in %.1f s", what, exc.message, wait)
                until = time.monotonic() + wait
                while time.monotonic() < until:
                    self.tick(stoppable=True)
                    time.sleep(min(_WAIT_SLICE, max(0.0, until - time.monotonic())))
                wait = min(wait * 2, 5.0)


def _samples_note(params: JobParams, result: ChildResult) -> str:
    """What happened to the loud samples, for the job's log line: how many each output had
    clipped at full scale, or the one gain ``input.rescale`` scaled every output by."""
    if result.gain != 1.0:
        return f"; every output scaled by {result.gain:.3f} so that none clips (input.rescale)"
    clipped = [f"{params.api_name(name)} {n}" for name, n in result.clipped.items() if n]
    if not clipped:
        return ""
    hint = " (input.rescale scales every output by one gain instead)"
    # A vendor's protocol has no such field: its users are not pointed at one.
    return f"; samples clipped at full scale: {', '.join(clipped)}" + (
        "" if params.vendor else hint
    )


def _drop(storage: Storage, prefix: str) -> None:
    """Delete an attempt's partial outputs; while the store is down, the sweeper does it later
    (a retried attempt writes under its own prefix)."""
    try:
        storage.delete_prefix(prefix)
    except StorageUnavailable:
        log.warning("could not delete %s: object storage is unavailable", prefix)


class Runner:
    """Runs one worker slot's attempts, one at a time, in its separation child.

    Args:
        services: the shared service parts (settings, database, queue, storage).
        worker_id: the slot's worker id (its fencing token in the queue).
        options: how the slot's child loads models.
        unloadable: called with the job's model when the child could not load it (missing,
            damaged, unknown here), before the attempt's end is recorded; returns the models
            (it, or those it is built on) found unusable and set aside
            (:meth:`~demixer.service.worker.slots.Worker.model_unavailable`).
    """

    def __init__(
        self,
        services: Services,
        worker_id: str,
        options: ChildOptions,
        unloadable: Callable[[str], Sequence[str]] | None = None,
    ) -> None:
        self.services = services
        self.worker_id = worker_id
        self.options = options
        self.unloadable = unloadable
        self.child: Child | None = None
        #: what was full when the last attempt ended STORAGE_FULL, for the slot's log line.
        self.full = f"the disk under {services.settings.data_dir}"

    def close(self) -> None:
        """Stop the child (an idle one exits, a busy one is killed)."""
        if self.child is not None:
            self.child.close()
            self.child = None

    def start_child(self) -> Child:
        """The slot's child, started now when it has none (or it died): in the background, so
        this returns at once (see :meth:`Child.start`)."""
        if self.child is None or not self.child.alive():
            if self.child is not None:
                self.child.close()
            self.child = Child.start(self.options, name=f"demixer-child-{self.worker_id}")
        return self.child

    def run_job(self, claim: Claim, stop: threading.Event) -> str | None:
        """Run one attempt to its end; never raises. Returns the error code the attempt
        failed with (None when it completed, or ended otherwise): the slot waits a while
        after ``STORAGE_FULL``."""
        log.info("%s: job %s attempt %d started", self.worker_id, claim.id, claim.attempt)
        lease = _Lease(self, claim, stop)
        work = self.services.settings.data_dir / "work"
        try:
            work.mkdir(parents=True, exist_ok=True)
            # Named for the attempt: a killed worker's is swept once the attempt is over
            # (see Worker.sweep_work_dir).
            prefix = scratch_prefix(claim.id, claim.attempt)
            with tempfile.TemporaryDirectory(dir=work, prefix=prefix) as tmp:
                try:
                    params = JobParams.from_row(claim.params)
                except InvalidParams as exc:
                    raise _Abort("failed", exc.code, exc.message) from None
                with self._input(params, Path(tmp), lease) as input_path:
                    self._hold_quota(claim, params, input_path)
                    result = self._separate(claim, params, input_path, Path(tmp) / "out", lease)
                    note = _samples_note(params, result)
                    self._store(claim, params, result, note, lease)
            log.info(
                "%s: job %s completed (%.1f s of audio in %.1f s%s)",
                self.worker_id,
                claim.id,
                result.duration,
                result.seconds,
                note,
            )
        except _Abort as abort:
            self._end(claim, abort)
            if abort.code == StorageFull.code:
                self.full = self._what_is_full(abort)
            return abort.code if abort.kind == "failed" else None
        except Exception as exc:  # a bug in this process, or a full disk: give the attempt back
            self._kill_child()
            if StorageFull.caused(exc):
                self.full = self._what_is_full(exc)
                log.warning("%s: job %s: the disk is full", self.worker_id, claim.id)
                full = _Abort("failed", StorageFull.code, StorageFull.default_message, True)
                self._end(claim, full)
                return full.code
            log.exception("%s: job %s failed in the worker", self.worker_id, claim.id)
            # Its text (an OSError's path in the data directory) is the operator's, as above.
            message = f"the worker failed ({type(exc).__name__}); the server's log has details"
            failed = _Abort("failed", "WORKER_ERROR", message, retryable=True)
            self._end(claim, failed)
            return failed.code
        return None

    @contextmanager
    def _input(self, params: JobParams, tmp: Path, lease: _Lease) -> Iterator[Path]:
        settings = self.services.settings
        source = params.input
        if isinstance(source, UploadInput):
            key = source.storage_key
            with ExitStack() as stack:
                try:
                    path = lease.through_outage(
                        lambda: stack.enter_context(self.services.storage.local_path(key)),
                        f"{self.worker_id}: fetching the input of {key}",
                    )
                except StorageUnavailable as exc:  # an outage: the job waits for the store
                    message = f"fetching the input failed: {exc.message}"
                    raise _Abort("failed", exc.code, message, retryable=True) from exc
                except StorageFull as exc:  # no room for the input's local copy: retried
                    message = f"fetching the input failed: {exc.message}"
                    raise _Abort("failed", exc.code, message, retryable=True) from exc
                except BlobNotFound as exc:  # the input was deleted or swept meanwhile
                    raise _input_gone(source) from exc
                except DemixerError as exc:  # anything else the store says: not retried
                    message = f"fetching the input failed: {exc.message}"
                    raise _Abort("failed", exc.code, message) from exc
                # Under the user's own file name, so that error messages speak of it. A hard
                # link: the job's own name for the bytes, so that the upload deleted while the
                # job runs (its name in the store unlinked) leaves the job its input, as object
                # storage's downloaded copy does. A symbolic link was left dangling, and the
                # job failed FILE_NOT_FOUND with this path in its message.
                named = tmp / "input" / params.input_name
                named.parent.mkdir()
                try:
                    os.link(path, named)
                except FileNotFoundError as exc:  # deleted since the store found it
                    raise _input_gone(source) from exc
                except OSError:  # the store on another file system: a symbolic link
                    try:
                        named.symlink_to(path)
                    except OSError:
                        named = path
                yield named
            return
        dest = tmp / "input" / params.input_name
        dest.parent.mkdir()
        try:
            fetch_audio_url(
                source.audio_url,
                dest,
                settings.max_upload_bytes,
                # Reads never outlast a lease.
                min(settings.url_fetch_timeout_seconds, max(1.0, settings.lease_seconds / 2)),
                allowlist=parse_allowlist(settings.url_allowlist),
                on_chunk=lambda _: lease.tick(),
                # Past this, a body averaging under 1 KiB/s is given up on (settings.MIN_BODY_RATE).
                slow_after=settings.url_fetch_timeout_seconds,
            )
        except AudioUrlFailed as exc:
            raise _Abort("failed", exc.code, exc.message, exc.retryable) from exc
        yield dest

    def _hold_quota(self, claim: Claim, params: JobParams, path: Path) -> None:
        """Hold an ``audio_url``'s seconds against its account's monthly allowance, now that
        the file is here to measure (an upload's are held since its submit); a file longer
        than the allowance has left fails the job ``QUOTA_EXCEEDED``, as the submit of an
        upload that long is refused (``service/accounts/quota.py``)."""
        if isinstance(params.input, UploadInput) and params.input.duration is not None:
            return
        db = self.services.db
        with db.read() as s:
            if held(s, claim.id) or quota_state(s, claim.account_id, db.clock()) is None:
                return  # measured by an earlier attempt, or unlimited: nothing to measure
        try:
            info = probe(path, max_seconds=self.services.settings.max_duration_seconds)
        except DemixerError:
            return  # unusable: the child's check of the input fails it with the upload's answer
        if info.duration is None:
            return  # no length to hold: the child's check says what is wrong with it
        try:
            with db.write() as s:
                check_quota(s, claim.account_id, info.duration, db.clock())
                hold(s, claim.id, claim.account_id, info.duration)
        except QuotaExceeded as exc:
            raise _Abort("failed", exc.code, exc.message) from None

    def _separate(
        self, claim: Claim, params: JobParams, input_path: Path, out_dir: Path, lease: _Lease
    ) -> ChildResult:
        out_dir.mkdir()
        job = ChildJob(
            job_id=claim.id,
            attempt=claim.attempt,
            engine_model=claim.engine_model,
            input_path=str(input_path),
            out_dir=str(out_dir),
            params=params,
            max_seconds=self.services.settings.max_duration_seconds,
        )
        child = self.start_child()
        try:
            child.send(job)
            lease.watch(True)
            while True:
                message = child.receive(lease.wait_time())
                if message is not None:
                    if message[0] == "progress":
                        lease.advanced(float(message[1]))
                    elif message[0] == "stage":
                        lease.staged(str(message[1]))
                    elif message[0] == "done":
                        result: ChildResult = message[1]
                        return result
                    else:
                        _, code, text, retryable, trace = message
                        if trace is not None:  # the owner reads only its kind (classify_error)
                            # After the line, as a traceback of this process's is (a message
                            # is written on one line: api/access_log.py).
                            log.error(
                                "%s: job %s: the separation failed",
                                self.worker_id,
                                claim.id,
                                extra={"trace": trace.rstrip()},
                            )
                        if code in (ModelUnavailable.code, UnknownModel.code):
                            # This machine's copy of the model (missing, damaged): another
                            # worker's may load. Its text names files on this server: for the
                            # operator's log, not the job's owner.
                            log.warning("%s: job %s: %s", self.worker_id, claim.id, text)
                            damaged = self._set_aside(claim.engine_model, lease)
                            model_dir = self.services.settings.model_dir
                            text = unloadable_message(claim.engine_model, model_dir, damaged)
                            raise _Abort("failed", code, text, retryable=True)
                        # The child may be in a bad state (e.g. after an OOM); a full disk
                        # leaves it sound, with its models loaded for the next job.
                        if retryable and code != StorageFull.code:
                            self._kill_child()
                        raise _Abort("failed", code, text, retryable)
                lease.tick()
        except ChildDied as died:
            self.child = None
            # A SIGTERM to the whole process group (systemd's default KillMode, `kill -TERM
            # -PGID`) kills the child and its fork server as it tells this process to stop: an
            # operator's stop, whose attempt is given back, not a crash that uses one up.
            if lease.stop.wait(_STOP_GRACE):
                raise _stopped() from None
            raise _Abort("crashed", "MODEL_FAILED", str(died), retryable=True) from None
        except _Abort as abort:
            if abort.kind != "failed":
                self._kill_child()
            raise
        finally:
            lease.watch(False)  # storing the outputs is the parent's work: no child to hear

    def _set_aside(self, model: str, lease: _Lease) -> Sequence[str]:
        """Have the worker stop claiming ``model`` (or the models it is built on that failed
        their check) before the attempt is put back in the queue; returns those models. The
        check hashes every weights file: the lease is renewed meanwhile."""
        unloadable = self.unloadable
        if unloadable is None:
            return ()
        return lease._beating(lambda: unloadable(model))

    def _store(
        self, claim: Claim, params: JobParams, result: ChildResult, note: str, lease: _Lease
    ) -> None:
        """Store ``result``'s outputs and complete the job (``note`` ends its log line)."""
        storage, queue = self.services.storage, self.services.queue
        lease.stage = "storing"
        prefix = f"outputs/{claim.id}/attempt-{claim.attempt}/"
        outputs: dict[str, Any] = {}
        track = Path(params.input_name).stem

        def store(entry: str, api_name: str, out: ChildOutput, clipped: int) -> None:
            """Store a file the child wrote, as the job's output record ``entry``."""
            fmt = OutputFormat.parse(Path(out.path).suffix[1:], None)
            label = params.labels.get(api_name, api_name)  # what the file is called
            key = f"{prefix}{api_name}.{fmt.extension}"
            size = lease.through_outage(
                partial(storage.put_file, key, Path(out.path)), f"{claim.id}: storing {key}"
            )
            outputs[entry] = {
                "key": key,
                "content_type": fmt.content_type,
                "file_name": output_name(track, label, fmt.extension),
                "size": size,
                "duration": result.duration,
                "sample_rate": out.sample_rate,
                "channels": out.channels,
                "gain": result.gain,
                "clipped": clipped,
            }
            lease.tick(stoppable=False)  # a stop lets the upload finish: it is quick

        try:
            for engine_name, out in result.outputs.items():
                api_name = params.api_name(engine_name)
                clipped = result.clipped.get(engine_name, 0)  # its extras hold the same samples
                store(api_name, api_name, out, clipped)
                for ext, extra in result.extras.get(engine_name, {}).items():
                    store(f"{api_name}.{ext}", api_name, extra, clipped)
            # The database may be restarting: try for about a lease (later another worker may
            # hold the job; the fenced write then raises LeaseLost). complete() may run twice.
            ended = retry_unavailable(
                lambda: queue.complete(
                    claim.id,
                    self.worker_id,
                    outputs=outputs,
                    duration=result.duration,
                    sample_rate=result.sample_rate,
                    note=note,
                ),
                within=self.services.settings.lease_seconds,
                what=f"{self.worker_id}: completing job {claim.id}",
                read_only=True,
            )
            if ended == CANCELLED:  # its cancel came while it finished: the outputs go unused
                raise _Abort("recorded", message="cancelled as it finished")
        except LeaseLost:
            _drop(storage, prefix)
            raise _Abort("lease_lost") from None
        except _Abort:
            _drop(storage, prefix)
            raise
        except (StorageUnavailable, StorageFull) as exc:  # retried once the store is back
            _drop(storage, prefix)
            message = f"storing the outputs failed: {exc.message}"
            raise _Abort("failed", exc.code, message, retryable=True) from exc
        except DBAPIError as exc:
            # The files stay: the last try's COMMIT may have landed before the connection went
            # (the job is then COMPLETED with them); at worst an abandoned attempt's files stay.
            message = f"recording the outputs failed: the database is unavailable ({exc.orig})"
            raise _Abort("failed", "DATABASE_UNAVAILABLE", message, retryable=True) from exc
        except Exception as exc:
            _drop(storage, prefix)
            # The exception's text names the server's own files (an OSError's path in the data
            # directory): it is for the operator's log, never for the job's owner, who learns
            # only the kind of failure (as a crash in the API answers).
            log.exception("%s: job %s: storing the outputs failed", self.worker_id, claim.id)
            message = (
                f"storing the outputs failed ({type(exc).__name__}); the server's log has details"
            )
            raise _Abort("failed", "STORAGE_FAILED", message, retryable=True) from exc

    def _end(self, claim: Claim, abort: _Abort) -> None:
        """Record how the attempt ended (nothing when the lease is no longer ours)."""
        queue = self.services.queue
        # A cancel has no message: its line ends with the kind, not a stray space.
        ending = f"{abort.kind} {abort.message}" if abort.message else abort.kind
        log.info("%s: job %s attempt %d ended: %s", self.worker_id, claim.id, claim.attempt, ending)
        record: Callable[[], object] | None = None
        if abort.kind == "cancelled":
            record = partial(queue.mark_cancelled, claim.id, self.worker_id)
        elif abort.kind == "stopped":
            record = partial(queue.give_back, claim.id, self.worker_id, abort.message)
        elif abort.kind not in ("lease_lost", "recorded"):
            record = partial(
                queue.fail,
                claim.id,
                self.worker_id,
                code=abort.code,
                message=abort.message,
                retryable=abort.retryable,
            )
        try:
            if record is not None:  # through an outage, for about a lease (as complete)
                retry_unavailable(
                    record,
                    within=self.services.settings.lease_seconds,
                    what=f"{self.worker_id}: recording the end of job {claim.id}",
                    read_only=True,
                )
        except LeaseLost:
            log.info("%s: job %s: lease lost; the attempt is dropped", self.worker_id, claim.id)
        except DBAPIError as exc:
            if not is_unavailable(exc):
                log.exception("%s: recording the end of job %s failed", self.worker_id, claim.id)
                return
            # The database's disk full, or an outage, past a lease of retries: each was said
            # above, and this was a traceback of 80 lines. Its lease runs out and the queue
            # settles the attempt as a lost one (queued again, or WORKER_LOST on the last).
            reason = " ".join(str(exc.orig).split())
            log.warning(
                "%s: job %s: its end could not be recorded, the database is unavailable (%s); "
                "it is settled when its lease runs out",
                self.worker_id,
                claim.id,
                reason,
            )
        except Exception:
            log.exception("%s: recording the end of job %s failed", self.worker_id, claim.id)

    def _what_is_full(self, error: BaseException) -> str:
        """What a STORAGE_FULL attempt found full: the folder a :class:`StorageFull` on the
        way names (the stored files', when they are on a disk of their own), object storage
        when one says so without a folder (a full MinIO), else this worker's data directory
        (the child's stems, written there, cross over as an error code alone)."""
        seen: BaseException | None = error
        while seen is not None:
            if isinstance(seen, StorageFull):
                return "object storage" if seen.where is None else f"the disk under {seen.where}"
            seen = seen.__cause__ or seen.__context__
        return f"the disk under {self.services.settings.data_dir}"

    def _kill_child(self) -> None:
        if self.child is not None:
            self.child.kill()
            self.child = None


def unloadable_message(model: str, model_dir: Path | None, damaged: Sequence[str] = ()) -> str:
    """The job's message when a worker's copy of ``model`` could not be loaded (missing,
    damaged, removed): what puts it right, run on that machine (with `demixer serve` the job's
    owner is its operator), naming none of its paths or hashes (those are in the log).

    ``model_dir``: the worker's (None: the default), where a user's recipes are declared.
    ``damaged``: the models that worker found unusable (``Runner.unloadable``); one that
    an ensemble or a recipe is built on is named, with what puts it right.
    """
    said = f"model {model!r} could not be loaded on the worker that ran this attempt"
    parts = [name for name in damaged if name != model]
    if len(parts) > 1:
        named = ", ".join(repr(name) for name in parts)
        return f"{said}: its models {named} could not; the server's log has details"
    if parts:
        said += f": its model {parts[0]!r} could not"
    remedy = _remedy(parts[0] if parts else model, model_dir)
    if remedy is None:  # an ensemble or a recipe of your own: the log says which model failed
        return f"{said}; the server's log has details"
    return f"{said} (the server's log has details): {remedy}"


def _remedy(model: str, model_dir: Path | None) -> str | None:
    """What puts a worker's unusable copy of ``model`` right (None: none that one command
    names, for an ensemble or a recipe of the user's own)."""
    if model in catalogue_ids():
        return f"`demixer models pull {model}` on that machine fetches it again"
    if ensemble_members(model) is None and not _user_recipe(model, model_dir):
        # A model added with `demixer models add`: only its owner has its files, and a name
        # still taken by a damaged copy must be removed before it is added again.
        return (
            f"on that machine, `demixer models remove {model}`, then `demixer models add "
            f"{model}` with its files, adds it again"
        )
    return None


def _user_recipe(model: str, model_dir: Path | None) -> bool:
    return recipe_file((model_dir or default_model_dir()) / RECIPES, model) is not None


def _input_gone(source: UploadInput) -> _Abort:
    """The job's end when its uploaded input was deleted (or swept) before it was read."""
    message = f"the input file {source.file_id} was deleted or expired before this request ran"
    return _Abort("failed", FileExpired.code, message)
