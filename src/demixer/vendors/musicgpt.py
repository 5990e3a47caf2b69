"""musicgpt compatibility router (see ../shared/docs/vendor-apis.md)."""

from __future__ import annotations

from fastapi import APIRouter

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
