"""The query parameters of a paged listing (``GET /v1/queue/requests``, ``GET /v1/files``),
declared once so that every listing takes the same (:mod:`demixer.api.paging` pages them)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

__all__ = ["PageCursor", "PageLimit"]

#: ``limit``: items per page, 1-100 (each route gives its default, 20).
PageLimit = Annotated[int, Query(ge=1, le=100)]
#: ``cursor``: a page's ``next_cursor``; none for the first page.
PageCursor = Annotated[str | None, Query(max_length=500)]
