"""One attempt at a job, run in the worker (parent) process by a slot's :class:`Runner`.

Each worker slot (see :mod:`demixer.service.worker`) has one :class:`Runner`, which owns the
slot's long-lived separation child (:mod:`demixer.service.worker.child`). For each claimed job it:

1. makes the input local: a stored upload (``storage.local_path``) or an ``audio_url`` it
   downloads itself (:mod:`demixer.service.worker.inputs`);
2. sends the job to the child and, while the child works, heartbeats the lease every
   ``heartbeat_seconds`` with the child's progress (:mod:`demixer.service.worker.lease`);
3. kills the child (SIGKILL) when a cancel is requested, the lease is lost, the job's time
   limit passes (or its pace says it will, or the child reports nothing for the stall limit:
   see :class:`~demixer.service.worker.lease.Lease`) or the worker is stopped; notices when
   the child dies by itself (OOM killer, segfault) through its pipe closing; a killed or dead
   child is restarted for the next job;
4. stores the files the child wrote and completes the job
   (:mod:`demixer.service.worker.outputs`);
5. records how an attempt that ended otherwise ended, through
   :class:`~demixer.service.jobs.queue.Queue`.

The job's parameters are read with :meth:`~demixer.service.jobs.contract.JobParams.from_row`
(the job contract; a row that breaks it fails the job ``INVALID_PARAMS``).
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

from sqlalchemy.exc import DBAPIError

from demixer.errors import InvalidParams, ModelUnavailable, StorageFull, UnknownModel
from demixer.service.context import Services
from demixer.service.db import is_unavailable, retry_unavailable
from demixer.service.jobs.contract import JobParams
from demixer.service.jobs.queue import Claim, LeaseLost
from demixer.service.worker.child import Child, ChildDied
from demixer.service.worker.inputs import hold_quota, local_input
from demixer.service.worker.lease import Abort, Lease, stopped
from demixer.service.worker.outputs import samples_note, store_outputs
from demixer.service.worker.protocol import ChildJob, ChildOptions, ChildResult
from demixer.service.worker.unloadable import unloadable_message

__all__ = ["Runner", "scratch_attempt", "scratch_prefix", "unloadable_message"]

log = logging.getLogger("demixer.worker")

# Seconds a slot whose child died waits for the stop flag before it counts the death as a crash:
# a stop signal sent to the whole process group kills the child as it reaches the worker.
_STOP_GRACE = 1.0


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
        lease = Lease(self, claim, stop)
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
                    raise Abort("failed", exc.code, exc.message) from None
                with local_input(
                    self.services, self.worker_id, params, Path(tmp), lease
                ) as input_path:
                    hold_quota(self.services, claim, params, input_path)
                    result = self._separate(claim, params, input_path, Path(tmp) / "out", lease)
                    note = samples_note(params, result)
                    store_outputs(self.services, self.worker_id, claim, params, result, note, lease)
            log.info(
                "%s: job %s completed (%.1f s of audio in %.1f s%s)",
                self.worker_id,
                claim.id,
                result.duration,
                result.seconds,
                note,
            )
        except Abort as abort:
            self._end(claim, abort)
            if abort.code == StorageFull.code:
                self.full = self._what_is_full(abort)
            return abort.code if abort.kind == "failed" else None
        except Exception as exc:  # a bug in this process, or a full disk: give the attempt back
            self._kill_child()
            if StorageFull.caused(exc):
                self.full = self._what_is_full(exc)
                log.warning("%s: job %s: the disk is full", self.worker_id, claim.id)
                full = Abort("failed", StorageFull.code, StorageFull.default_message, True)
                self._end(claim, full)
                return full.code
            log.exception("%s: job %s failed in the worker", self.worker_id, claim.id)
            # Its text (an OSError's path in the data directory) is the operator's, as above.
            message = f"the worker failed ({type(exc).__name__}); the server's log has details"
            failed = Abort("failed", "WORKER_ERROR", message, retryable=True)
            self._end(claim, failed)
            return failed.code
        return None

    def _separate(
        self, claim: Claim, params: JobParams, input_path: Path, out_dir: Path, lease: Lease
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
                            raise Abort("failed", code, text, retryable=True)
                        # The child may be in a bad state (e.g. after an OOM); a full disk
                        # leaves it sound, with its models loaded for the next job.
                        if retryable and code != StorageFull.code:
                            self._kill_child()
                        raise Abort("failed", code, text, retryable)
                lease.tick()
        except ChildDied as died:
            self.child = None
            # A SIGTERM to the whole process group (systemd's default KillMode, `kill -TERM
            # -PGID`) kills the child and its fork server as it tells this process to stop: an
            # operator's stop, whose attempt is given back, not a crash that uses one up.
            if lease.stop.wait(_STOP_GRACE):
                raise stopped() from None
            raise Abort("crashed", "MODEL_FAILED", str(died), retryable=True) from None
        except Abort as abort:
            if abort.kind != "failed":
                self._kill_child()
            raise
        finally:
            lease.watch(False)  # storing the outputs is the parent's work: no child to hear

    def _set_aside(self, model: str, lease: Lease) -> Sequence[str]:
        """Have the worker stop claiming ``model`` (or the models it is built on that failed
        their check) before the attempt is put back in the queue; returns those models. The
        check hashes every weights file: the lease is renewed meanwhile."""
        unloadable = self.unloadable
        if unloadable is None:
            return ()
        return lease.beating(lambda: unloadable(model))

    def _end(self, claim: Claim, abort: Abort) -> None:
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
