"""An attempt's outputs stored and its job completed, in the worker (parent) process.

The files the separation child wrote are stored as ``outputs/{job_id}/attempt-{n}/{api
name}.{ext}`` and downloaded as ``{input file stem}_{label}.{ext}`` (:mod:`demixer.naming`, as
the CLI writes them). Each extra format's copy (``extra_formats``, e.g. Gaudio's ``mp3``) is its
own flat entry of the job's ``outputs`` under the key ``"{api name}.{ext}"`` (same fields as the
primary entry), so ``/result`` lists it like any output and signed blob URLs resolve it. The
job is completed with their keys in one fenced transaction; if that finds the lease lost, the
attempt's blobs are deleted again.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy.exc import DBAPIError

from demixer.audio import OutputFormat
from demixer.errors import StorageFull, StorageUnavailable
from demixer.naming import output_name
from demixer.service.context import Services
from demixer.service.db import retry_unavailable
from demixer.service.jobs.contract import JobParams
from demixer.service.jobs.queue import CANCELLED, Claim, LeaseLost
from demixer.service.worker.lease import Abort, Lease
from demixer.service.worker.protocol import ChildOutput, ChildResult
from demixer.storage import Storage

__all__ = ["samples_note", "store_outputs"]

log = logging.getLogger("demixer.worker")


def samples_note(params: JobParams, result: ChildResult) -> str:
    """What the job's log line adds after its outputs: which audio track of several was
    separated, and what happened to the loud samples (how many each output had clipped at
    full scale, or the one gain ``input.rescale`` scaled every output by)."""
    track = f"; {result.track_note}" if result.track_note else ""
    return track + _loud_note(params, result)


def _loud_note(params: JobParams, result: ChildResult) -> str:
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


def store_outputs(
    services: Services,
    worker_id: str,
    claim: Claim,
    params: JobParams,
    result: ChildResult,
    note: str,
    lease: Lease,
) -> None:
    """Store ``result``'s outputs and complete the job (``note`` ends its log line)."""
    storage, queue = services.storage, services.queue
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
                worker_id,
                outputs=outputs,
                duration=result.duration,
                sample_rate=result.sample_rate,
                note=note,
            ),
            within=services.settings.lease_seconds,
            what=f"{worker_id}: completing job {claim.id}",
            read_only=True,
        )
        if ended == CANCELLED:  # its cancel came while it finished: the outputs go unused
            raise Abort("recorded", message="cancelled as it finished")
    except LeaseLost:
        _drop(storage, prefix)
        raise Abort("lease_lost") from None
    except Abort:
        _drop(storage, prefix)
        raise
    except (StorageUnavailable, StorageFull) as exc:  # retried once the store is back
        _drop(storage, prefix)
        message = f"storing the outputs failed: {exc.message}"
        raise Abort("failed", exc.code, message, retryable=True) from exc
    except DBAPIError as exc:
        # The files stay: the last try's COMMIT may have landed before the connection went
        # (the job is then COMPLETED with them); at worst an abandoned attempt's files stay.
        message = f"recording the outputs failed: the database is unavailable ({exc.orig})"
        raise Abort("failed", "DATABASE_UNAVAILABLE", message, retryable=True) from exc
    except Exception as exc:
        _drop(storage, prefix)
        # The exception's text names the server's own files (an OSError's path in the data
        # directory): it is for the operator's log, never for the job's owner, who learns
        # only the kind of failure (as a crash in the API answers).
        log.exception("%s: job %s: storing the outputs failed", worker_id, claim.id)
        message = f"storing the outputs failed ({type(exc).__name__}); the server's log has details"
        raise Abort("failed", "STORAGE_FAILED", message, retryable=True) from exc
