"""Text no request field takes: the NUL character and lone UTF-16 surrogates.

Neither is ever part of a name, a URL, a prompt or an id, and each breaks something further on:
PostgreSQL's text cannot hold a NUL (the write or even a lookup fails, while SQLite stores it),
and a lone surrogate (a JSON ``\\ud800`` escape without its pair) is a Python string no UTF-8
can carry, so it fails in the database or in the answer quoting it. Both are refused where the
request is read, with the same 400 on every backend: in the URL (a ``%00`` in the path or the
query) by :func:`refuse_nul_in_url`, in a JSON body by :func:`body_refusal`, which every
JSON body reader applies (:mod:`demixer.api.bodies`, ``POST /v1/files``).
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.types import Scope

from demixer.errors import InvalidRequest

__all__ = ["body_refusal", "refuse_nul_in_url"]

NUL = "a NUL character (\\u0000), which no field takes"
LONE_SURROGATE = (
    "a lone UTF-16 surrogate escape (\\ud800-\\udfff without its pair), which stands for no "
    "character"
)
# Only these JSON escapes make either (UTF-8 bytes cannot, and JSON refuses a raw NUL).
_ESCAPE = re.compile(rb"\\u(?:[dD][89a-fA-F]|0000)")
_QUERY_NUL = re.compile(rb"%00|\x00")


def refuse_nul_in_url(scope: Scope) -> None:
    """Refuse a request whose path or query holds a NUL (``%00``).

    Raises:
        InvalidRequest: it does.
    """
    if "\x00" in scope.get("path", "") or _QUERY_NUL.search(scope.get("query_string", b"")):
        raise InvalidRequest(f"the URL holds {NUL}")


def body_refusal(raw: bytes) -> str | None:
    """Why the JSON body ``raw`` is refused for holding text no field takes (the message, "the
    request body holds …"), or None (also when it is not JSON: its parser says so)."""
    if not _ESCAPE.search(raw):
        return None  # the common case, found without parsing
    try:
        todo: list[Any] = [json.loads(raw)]
    except (ValueError, RecursionError):
        return None
    while todo:
        item = todo.pop()
        if isinstance(item, dict):
            todo += item.keys()
            todo += item.values()
        elif isinstance(item, list):
            todo += item
        elif isinstance(item, str):
            if "\x00" in item:
                return f"the request body holds {NUL}"
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return f"the request body holds {LONE_SURROGATE}"
    return None
