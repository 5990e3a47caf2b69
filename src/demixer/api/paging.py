"""Keyset pagination of the caller's listings (``GET /v1/queue/requests``, ``GET /v1/files``,
MusicGPT's ``GET /v1/byUser``): newest first (or oldest first), by creation time then id, each
page ending with an opaque ``next_cursor``.

A cursor is the last item's ``[created_at, id]`` as URL-safe base64 JSON (no padding). It is
not signed: a made-up one only moves where the caller's own listing starts, and is refused
(400 ``INVALID_REQUEST``, param ``cursor``) when it cannot be read. The routes take ``limit``
and ``cursor`` as :mod:`demixer.api.routes.listing` declares them. Free of the web framework:
a worker imports the request listing's module (``api/jobs.py``).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import InstrumentedAttribute, Session

from demixer.errors import InvalidRequest

__all__ = ["keyset_page"]

T = TypeVar("T")


def _cursor(created: datetime, item_id: str) -> str:
    raw = json.dumps([created.isoformat(), item_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _uncursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, item_id = json.loads(raw)
        when = datetime.fromisoformat(created)
        if when.tzinfo is None:  # made up: a cursor this API hands out carries its offset
            raise ValueError("no UTC offset")
        return when.astimezone(UTC), str(item_id)  # here: year 0 or 10000 in UTC raises
    except (binascii.Error, ValueError, TypeError, OverflowError) as exc:
        raise InvalidRequest(f"bad cursor {cursor[:100]!r}", param="cursor") from exc


def keyset_page(
    session: Session,
    query: Select[T],
    created: InstrumentedAttribute[datetime],
    item_id: InstrumentedAttribute[str],
    limit: int,
    cursor: str | None,
    *,
    oldest_first: bool = False,
    keep: Callable[[T], bool] | None = None,
) -> tuple[list[T], str | None]:
    """One page of ``query`` (the caller's own rows, already filtered), newest ``created``
    first (``oldest_first``: oldest first), ties by ``item_id``: at most ``limit`` rows after
    ``cursor``, and the cursor of the next page (None on the last one).

    ``keep``: a test the rows must pass besides the query (one SQL cannot ask, e.g. a field of
    a JSON column only its contract module reads); rows are then read in batches until the
    page is full, so a page holds ``limit`` kept rows whatever lies between them.
    """
    if cursor:
        when, last = _uncursor(cursor)
        if oldest_first:
            query = query.where(or_(created > when, and_(created == when, item_id > last)))
        else:
            query = query.where(or_(created < when, and_(created == when, item_id < last)))
    if oldest_first:
        query = query.order_by(created.asc(), item_id.asc())
    else:
        query = query.order_by(created.desc(), item_id.desc())
    if keep is None:
        rows = list(session.execute(query.limit(limit + 1)).scalars())
    else:
        found = session.execute(query.execution_options(yield_per=max(limit + 1, 100)))
        rows = []
        for row in found.scalars():
            if keep(row):
                rows.append(row)
                if len(rows) > limit:
                    break
        found.close()
    page = rows[:limit]
    if len(rows) <= limit:
        return page, None
    end: Any = page[-1]
    return page, _cursor(getattr(end, created.key), getattr(end, item_id.key))
