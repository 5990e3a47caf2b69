"""Wire-compatible routers for the hosted APIs demixer replaces.

Each vendor is one thin router translating its protocol onto the native job path
(``demixer.api.submit`` / ``demixer.api.jobs`` / ``demixer.service.jobs.queue``): no job logic
of its own. The native API already is the AudioLasso shape.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter
from fastapi.responses import Response

from demixer.errors import DemixerError
from demixer.vendors import gaudio
from demixer.vendors.gaudio import envelope as gaudio_envelope
from demixer.vendors.gaudio import routes as gaudio_routes
from demixer.vendors.musicgpt import routes as musicgpt
from demixer.vendors.sunoapi import routes as sunoapi

__all__ = ["envelopes", "routers"]


def routers() -> tuple[APIRouter, ...]:
    """Every vendor router, each mounted at its vendor's own path prefix."""
    return (gaudio.router, musicgpt.router, sunoapi.router)


def envelopes() -> dict[str, Callable[[DemixerError], Response]]:
    """Each vendor's path prefix -> how it answers an error, for the errors raised outside its
    handlers (a crash, a request body over its limit: see ``demixer.api.errors``)."""
    return {
        gaudio_routes.PREFIX: gaudio_envelope.error_response,
        musicgpt.PREFIX: musicgpt.error_response,
        sunoapi.PREFIX: sunoapi.error_response,
    }
