"""How long an HTTP server asks its client to wait before asking again (``Retry-After``).

One reading for every client in demixer: the Python client's calls to a demixer server,
``demixer models pull``'s downloads of model weights, and the webhook dispatcher's sends.
"""

from __future__ import annotations

import math
from contextlib import suppress
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

__all__ = ["retry_after"]


def retry_after(value: str | None, fallback: float, *, now: datetime | None = None) -> float:
    """Seconds asked for by a ``Retry-After`` header's ``value``: delta-seconds or an HTTP
    date, counted from ``now`` (default: this machine's clock); ``fallback`` when there is
    none or it cannot be read. Never negative (a date in the past means now)."""
    value = (value or "").strip()
    delay = fallback
    if value:
        try:
            delay = float(value)
        except ValueError:
            with suppress(TypeError, ValueError):
                when = parsedate_to_datetime(value)
                # An HTTP date is always in GMT; the asctime form (RFC 9110's third, which
                # every recipient must read) names no zone, and came back without one.
                if when.tzinfo is None:
                    when = when.replace(tzinfo=UTC)
                delay = (when - (now or datetime.now(UTC))).total_seconds()
    # "nan" and "inf" read as floats: sleeping on them raised, or never ended.
    if not math.isfinite(delay):
        delay = fallback
    return max(delay, 0.0)
