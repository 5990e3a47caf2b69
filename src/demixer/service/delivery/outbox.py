"""The webhook outbox: a job's event is written in the transaction of its final transition.

:class:`Outbox` is a ``Queue.final_hooks`` hook, so the ``deliveries`` row is written in the
very transaction that moves the job to COMPLETED or FAILED: no event for a transition that
rolled back, and no transition without its event. The event's body is built then (with freshly
signed download URLs) and stored in the row; ``webhook-id`` is the row's id. The dispatcher
(:mod:`demixer.service.delivery.dispatcher`) sends it afterwards.

The outbox knows no protocol: the composition root (:mod:`demixer.server.compose`) hands it one
:data:`EventBuilder` per webhook style (``params.webhook.style``: the native one and each
vendor's), so nothing here imports the API or a vendor, and a worker process never imports a
web framework. A builder returns ``(event_type, body)``, or None for no event (the native
style's for a CANCELLED job: whoever cancelled it has the answer; the vendors' protocols have
no cancel, so theirs report it as a failure).

This module also owns the deliveries' states (:class:`DeliveryState`) and the one query for a
job's latest delivery (:func:`latest_delivery`), which the status endpoints read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from demixer.errors import InvalidParams
from demixer.service.accounts.keys import new_id
from demixer.service.context import Services
from demixer.service.jobs.contract import NATIVE_STYLE, JobParams
from demixer.service.schema import Delivery, Job

__all__ = ["DeliveryState", "EventBuilder", "Outbox", "latest_deliveries", "latest_delivery"]

log = logging.getLogger("demixer.webhooks")

EventBuilder = Callable[[Services, Job], "tuple[str, dict[str, Any]] | None"]
"""``(services, finished job) -> (event_type, body)``, or None: no event for this job."""


class DeliveryState(StrEnum):
    """A delivery's state: ``pending`` -> ``delivered`` | ``failed`` (gave up, or 410)."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


_NEWEST_FIRST = (Delivery.created_at.desc(), Delivery.id.desc())


def latest_delivery(session: Session, job_id: str) -> Delivery | None:
    """The job's most recent delivery row (None before its final transition)."""
    return session.execute(
        select(Delivery).where(Delivery.job_id == job_id).order_by(*_NEWEST_FIRST).limit(1)
    ).scalar_one_or_none()


def latest_deliveries(
    session: Session, job_ids: Sequence[str], *, chunk: int = 500
) -> dict[str, Delivery]:
    """:func:`latest_delivery` of many jobs (those with none left out), in one query per
    ``chunk`` ids (SQLite caps the bound parameters of one statement)."""
    latest: dict[str, Delivery] = {}
    for i in range(0, len(job_ids), chunk):
        query = (
            select(Delivery)
            .where(Delivery.job_id.in_(job_ids[i : i + chunk]))
            .order_by(Delivery.job_id, *_NEWEST_FIRST)
        )
        for row in session.execute(query).scalars():
            latest.setdefault(row.job_id, row)
    return latest


class Outbox:
    """Writes the webhook delivery of a finished job (a ``Queue.final_hooks`` hook).

    Args:
        services: the shared services (the builders sign download URLs with them).
        builders: webhook style -> its event builder; must include the native one
            (:data:`~demixer.service.jobs.contract.NATIVE_STYLE`).
    """

    def __init__(self, services: Services, builders: Mapping[str, EventBuilder]) -> None:
        if NATIVE_STYLE not in builders:
            raise ValueError("the outbox needs the native event builder")
        self.services = services
        self.builders = dict(builders)

    def __call__(self, session: Session, job: Job) -> None:
        """Add the job's delivery row inside its final transaction (none without a webhook)."""
        try:
            hook = JobParams.of_job(job.id, job.params).webhook
        except InvalidParams:  # a row no release writes: it ends FAILED, nobody to tell
            log.warning("job %s: its params break the job contract; no webhook", job.id)
            return
        if hook is None:
            return
        builder = self.builders.get(hook.style)
        if builder is None:  # a row from another release: its event in the native shape
            log.warning("job %s: no event builder for webhook style %r", job.id, hook.style)
            builder = self.builders[NATIVE_STYLE]
        event = builder(self.services, job)
        if event is None:
            return
        event_type, body = event
        now = self.services.db.clock()
        session.add(
            Delivery(
                id=new_id("msg"),
                job_id=job.id,
                url=hook.url,
                secret=hook.secret,
                event_type=event_type,
                payload=body,
                status=DeliveryState.PENDING,
                attempts=0,
                max_attempts=self.services.settings.webhook_max_attempts,
                next_attempt_at=now,
                created_at=now,
                updated_at=now,
            )
        )
