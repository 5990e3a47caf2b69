"""Wire-compatible routers for the hosted APIs demixer replaces.

Each vendor is one thin router translating its protocol onto the native job path
(``demixer.api.submit`` / ``demixer.api.jobs`` / ``demixer.service.queue``): no job logic of its
own. The native API already is the AudioLasso shape.
"""

from __future__ import annotations

from fastapi import APIRouter

from demixer.vendors import gaudio, musicgpt, sunoapi

__all__ = ["routers"]


def routers() -> tuple[APIRouter, ...]:
    """Every vendor router, each mounted at its vendor's own path prefix."""
    return (gaudio.router, musicgpt.router, sunoapi.router)
