"""``/v1/usage``: audio seconds processed per key and model over a period, where the
account stands against its monthly allowance, and the bytes its uploads hold."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta

from fastapi import APIRouter, Query
from pydantic.config import JsonDict

from demixer.api.auth import QueueRead, ServicesDep
from demixer.api.openapi import error_responses
from demixer.api.schemas import Allowance, StorageUse, UsageLine, UsageList
from demixer.errors import InvalidRequest
from demixer.service.accounts.quota import QuotaState, quota_state
from demixer.service.accounts.storage import storage_use
from demixer.service.accounts.usage import summarise

__all__ = ["DEFAULT_PERIOD", "router"]

router = APIRouter(prefix="/v1", tags=["usage"])

DEFAULT_PERIOD = timedelta(days=30)
_EARLIEST = datetime.min.replace(tzinfo=UTC)
# For the OpenAPI document: an ISO 8601 date or time starts with its year (`_when` reads the
# rest, and answers 400 for what it cannot).
_ISO: JsonDict = {"pattern": r"^\s*[0-9]{4}"}
# A time, a space, then what can only be a UTC offset: the offset's "+" written unescaped in
# the URL (curl "...?from=2030-03-01T10:00+05:30"), which a query string reads as a space.
_SPACED_OFFSET = re.compile(r"([T ]\d{2}(?::?\d{2}){0,2}(?:[.,]\d+)?) (\d{2}(?::?\d{2})?)$")


def _when(value: str | None, param: str) -> datetime | None:
    if value is None:
        return None
    # upper(): RFC 3339 lets the "T" and the "Z" be written in lower case.
    written = _SPACED_OFFSET.sub(r"\1+\2", value.strip().upper())
    try:
        when = datetime.fromisoformat(written)
    except ValueError:
        raise InvalidRequest(
            f"{param}={value[:100]!r} is not an ISO 8601 date or time", param=param
        ) from None
    try:
        day = date.fromisoformat(written)
    except ValueError:
        pass
    else:
        # A date alone is that whole day (UTC): `to` is inclusive, so `to=2030-03-01` holds
        # March 1st's usage, and `from=2030-03-01&to=2030-03-01` is that day's.
        if param == "to":
            when = datetime.combine(day, time.max)
    try:
        return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+14:00 is in the year 0 in UTC
        raise InvalidRequest(
            f"{param}={value[:100]!r} is outside the years 1 to 9999 in UTC", param=param
        ) from None


@router.get("/usage", responses=error_responses(400, 401, 403, 429))
def get_usage(
    services: ServicesDep,
    identity: QueueRead,
    start: str | None = Query(
        None,
        alias="from",
        description="ISO 8601, UTC unless it names an offset; inclusive (default: `to` minus "
        "30 days); a date alone is its start.",
        json_schema_extra=_ISO,
    ),
    end: str | None = Query(
        None,
        alias="to",
        description="ISO 8601, UTC unless it names an offset; inclusive (default: now); a "
        "date alone is its whole day.",
        json_schema_extra=_ISO,
    ),
) -> UsageList:
    """The caller's account's usage, per key and engine model, of the jobs completed in
    `[from, to]`; and its monthly allowance now (`allowance`, null when it has none): how
    many seconds of audio a request may still use before it is refused 402
    `QUOTA_EXCEEDED`; and the bytes its uploads and its requests' stems hold against its cap
    (`storage`): an upload that does not fit, or any new request once they hold the whole cap,
    is refused 413 `STORAGE_QUOTA_EXCEEDED`."""
    now = services.db.clock()
    to = _when(end, "to") or now
    since = _when(start, "from") or max(to, _EARLIEST + DEFAULT_PERIOD) - DEFAULT_PERIOD
    if since > to:
        raise InvalidRequest("`from` is after `to`", param="from")
    with services.db.read() as s:
        lines = summarise(s, identity.account_id, since, to)
        state = quota_state(s, identity.account_id, now)
        stored = storage_use(
            s, identity.account_id, services.settings.max_account_storage_bytes, now
        )
    data = [
        UsageLine(key_id=line.key_id, model=line.model, quantity=line.quantity, jobs=line.jobs)
        for line in lines
    ]
    total = round(sum(line.quantity for line in lines), 3)
    return UsageList.model_validate(
        {
            "data": data,
            "from": since,
            "to": to,
            "total": total,
            "allowance": _allowance(state),
            "storage": StorageUse(
                used_bytes=stored.used_bytes,
                files_bytes=stored.files_bytes,
                results_bytes=stored.results_bytes,
                cap_bytes=stored.cap_bytes,
            ),
        }
    )


def _allowance(state: QuotaState | None) -> Allowance | None:
    if state is None:
        return None  # unlimited
    return Allowance(
        monthly_minutes=state.minutes,
        used_seconds=round(state.used_seconds, 3),
        held_seconds=round(state.held_seconds, 3),
        left_seconds=state.left_shown,
        resets_at=state.resets_at,
    )
