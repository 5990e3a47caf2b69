"""Rate limits as HTTP: count each authenticated request, and put ``RateLimit-*`` on the answer.

The auth dependency (:mod:`demixer.api.auth`) calls :func:`count_request` once it knows the key;
the window's state goes into the request scope, and :class:`RateLimitHeadersMiddleware` writes
it on whatever response leaves, errors included (a 429 also gets ``Retry-After`` from the error
handler, see :mod:`demixer.api.errors`).
"""

from __future__ import annotations

from fastapi import Request
from starlette.datastructures import MutableHeaders
from starlette.types import Scope

from demixer.api.answer_headers import AnswerHeaders
from demixer.api.callers import callers
from demixer.service.accounts.keys import Identity
from demixer.service.accounts.limits import RateLimitExceeded, RateState

__all__ = ["RateLimitHeadersMiddleware", "count_request"]

_STATE = "rate_limit"


async def count_request(request: Request, identity: Identity) -> None:
    """Count this request against its key (raises ``RateLimited`` when over).

    Counted by this process's :class:`~demixer.api.callers.Callers` (in memory while the key is
    far from its limit, in the shared table near it; see :mod:`demixer.service.accounts.ratecache`).
    """
    if getattr(request.state, _STATE, None) is not None:
        return  # already counted by another auth dependency of this route
    try:
        state = await callers(request).count(identity)
    except RateLimitExceeded as exc:
        request.state.rate_limit = exc.state
        raise
    if state.limit > 0:  # unlimited: no headers
        request.state.rate_limit = state


class RateLimitHeadersMiddleware(AnswerHeaders):
    """Adds ``RateLimit-Limit``, ``RateLimit-Remaining`` and ``RateLimit-Reset`` to responses
    of requests that were counted (keyless requests, e.g. signed blob URLs, have none)."""

    def add(self, scope: Scope, headers: MutableHeaders) -> None:
        state = (scope.get("state") or {}).get(_STATE)
        if isinstance(state, RateState):
            for name, value in state.headers().items():
                headers[name] = value
