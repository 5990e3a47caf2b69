"""The native webhook events (AudioLasso-shaped), built with the job's final transition.

Event types and bodies::

    audio.separate.completed  {type, timestamp, request_id, model, status: "COMPLETED",
                               data: <the result endpoint's data: signed URLs, duration, rate>}
    audio.separate.failed     {type, timestamp, request_id, model, status: "FAILED",
                               error: {code, message}}

A CANCELLED job sends nothing: whoever cancelled it made the call and has the answer, and the
documented event types are the two above (its status shows ``delivery_status: "none"``).
:func:`native_event` is handed to the outbox (:mod:`demixer.service.delivery.outbox`) by the
composition root; it imports no web framework, so a worker process can build it.
"""

from __future__ import annotations

from typing import Any

from demixer.api.jobs import result_response
from demixer.api.schemas import wire_time
from demixer.service.context import Services
from demixer.service.jobs.queue import COMPLETED, FAILED
from demixer.service.schema import Job

__all__ = ["COMPLETED_EVENT", "FAILED_EVENT", "native_event"]

COMPLETED_EVENT = "audio.separate.completed"
FAILED_EVENT = "audio.separate.failed"


def native_event(services: Services, job: Job) -> tuple[str, dict[str, Any]] | None:
    """The native event for a finished job: ``(type, body)``, or None (CANCELLED)."""
    finished = wire_time(job.finished_at or job.updated_at or services.db.clock())
    head = {"timestamp": finished, "request_id": job.id, "model": job.queue_model}
    if job.status == COMPLETED:
        result = result_response(services, job).model_dump(mode="json")
        body = {"type": COMPLETED_EVENT, **head, "status": COMPLETED, "data": result["data"]}
        return COMPLETED_EVENT, body
    if job.status == FAILED:
        error = {"code": job.error_code or "FAILED", "message": job.error_message or ""}
        return FAILED_EVENT, {"type": FAILED_EVENT, **head, "status": FAILED, "error": error}
    return None
