"""Rate limits as HTTP: count each authenticated request, and put ``RateLimit-*`` on the answer.

The auth dependency (:mod:`demixer.api.auth`) calls :func:`count_request` once it knows the key;
the window's state goes into the request scope, and :class:`RateLimitHeadersMiddleware` writes
it on whatever response leaves, errors included (a 429 also gets ``Retry-After`` from the error
handler, see :mod:`demixer.api.errors`).
"""

from __future__ import annotations

from fastapi import Request
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from demixer.service.accounts.keys import Identity
from demixer.service.accounts.limits import RateLimitExceeded, RateState, check_rate
from demixer.service.context import Services

__all__ = ["RateLimitHeadersMiddleware", "count_request"]

_STATE = "rate_limit"


def count_request(request: Request, services: Services, identity: Identity) -> None:
    """Count this request against its key (raises ``RateLimited`` when over)."""
    limit = services.settings.rate_limit_per_minute
    if limit <= 0 or getattr(request.state, _STATE, None) is not None:
        return  # unlimited, or already counted by another auth dependency of this route
    try:
        state = check_rate(services.db, identity.key_id, limit)
    except RateLimitExceeded as exc:
        request.state.rate_limit = exc.state
        raise
    request.state.rate_limit = state


class RateLimitHeadersMiddleware:
    """Adds ``RateLimit-Limit``, ``RateLimit-Remaining`` and ``RateLimit-Reset`` to responses
    of requests that were counted (keyless requests, e.g. signed blob URLs, have none)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_limits(message: Message) -> None:
            if message["type"] == "http.response.start":
                state = (scope.get("state") or {}).get(_STATE)
                if isinstance(state, RateState):
                    headers = MutableHeaders(scope=message)
                    for name, value in state.headers().items():
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_limits)
