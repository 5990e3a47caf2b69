"""pydantic's and FastAPI's validation errors as one :class:`~demixer.errors.InvalidRequest`.

Free of the web framework, so the planning code a worker also imports (``api/submit.py``) can
use it; ``api/errors.py`` answers FastAPI's validation errors with it, and the vendor routers
describe their own bodies' errors the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from demixer.errors import InvalidRequest

__all__ = ["invalid_request"]


def _param(loc: Sequence[Any]) -> str | None:
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:]
    return ".".join(str(p) for p in parts) or None


def invalid_request(errors: Sequence[Mapping[str, Any]]) -> InvalidRequest:
    """pydantic's (or FastAPI's) validation ``errors`` as one :class:`InvalidRequest`: the first
    five as ``where: what``, ``param`` the first one's path; a body that is not JSON says so
    (with the parser's reason, and no ``param``)."""
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        reason = str((first.get("ctx") or {}).get("error") or "it cannot be parsed")
        if reason.startswith("the request body"):  # text.body_refusal, via bodies.JsonRequest
            return InvalidRequest(reason)
        return InvalidRequest(f"the request body is not valid JSON: {reason}")
    parts = []
    for error in errors[:5]:
        where = _param(error.get("loc", ()))
        msg = str(error.get("msg", "invalid value"))
        parts.append(f"{where}: {msg}" if where else msg)
    if len(errors) > 5:
        parts.append(f"and {len(errors) - 5} more")
    message = "; ".join(parts) or "invalid request"
    return InvalidRequest(message, param=_param(first.get("loc", ())))
