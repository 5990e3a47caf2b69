"""The composition root of the service: every entry point builds its services here.

:func:`build_services` takes the shared parts (:class:`~demixer.service.context.Services`) and
attaches what a job's final transition writes in its own transaction (``Queue.final_hooks``):
the result's expiry, the webhook delivery (the outbox, handed each protocol's event builder
from here) and the usage record. The API process (``serve``) and the worker processes
(``worker``) both call it; nothing here imports a web framework, so a worker on a GPU machine
never loads FastAPI.
"""

from __future__ import annotations

from collections.abc import Mapping

from demixer.api.events import native_event
from demixer.service.accounts.usage import record_usage
from demixer.service.context import Services
from demixer.service.db import Database
from demixer.service.delivery.outbox import EventBuilder, Outbox
from demixer.service.jobs.contract import NATIVE_STYLE
from demixer.service.retention.expiry import set_result_expiry
from demixer.settings import Settings
from demixer.vendors.musicgpt import wire as musicgpt
from demixer.vendors.sunoapi import wire as sunoapi

__all__ = ["build_services", "event_builders"]


def event_builders() -> Mapping[str, EventBuilder]:
    """Webhook style (``params.webhook.style``) -> the protocol's event builder."""
    return {
        NATIVE_STYLE: native_event,
        musicgpt.STYLE: musicgpt.musicgpt_event,
        sunoapi.STYLE: sunoapi.sunoapi_event,
    }


def build_services(settings: Settings, *, db: Database | None = None) -> Services:
    """The services for ``settings`` with their final-transition hooks attached.

    ``db`` may be given (e.g. a database with a test clock).
    """
    services = Services.from_settings(settings, db=db)
    hooks = services.queue.final_hooks
    # First, so that the hooks after it (the webhook's signed URLs) see the result's expiry.
    hooks.append(set_result_expiry(settings.result_retention_seconds))
    hooks.append(Outbox(services, event_builders()))  # the webhook delivery (an outbox)
    hooks.append(record_usage)
    return services
