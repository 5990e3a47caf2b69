"""Webhook deliveries: the outbox written with a job's final transition, and its dispatcher."""

from demixer.service.delivery.dispatcher import (
    CAP_STEPS,
    COMPLETED_EVENT,
    DELIVERED,
    FACTOR,
    FAILED_EVENT,
    GAVE_UP,
    PENDING,
    DeliveryClaim,
    Dispatcher,
    backoff,
    enqueue_webhook,
    native_event,
    register_event_builder,
)

__all__ = [
    "CAP_STEPS",
    "COMPLETED_EVENT",
    "DELIVERED",
    "FACTOR",
    "FAILED_EVENT",
    "GAVE_UP",
    "PENDING",
    "DeliveryClaim",
    "Dispatcher",
    "backoff",
    "enqueue_webhook",
    "native_event",
    "register_event_builder",
]
