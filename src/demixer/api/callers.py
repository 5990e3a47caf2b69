"""Who is calling and how often, as one API process remembers it between requests.

One :class:`Callers` per application (``create_app`` makes it; ``app.state.callers``): the keys
seen lately (:class:`~demixer.service.accounts.keycache.KeyCache`) and the requests counted per
key (:class:`~demixer.service.accounts.ratecache.RateCache`). A request whose key is known and
whose count is far from its limit is admitted without any I/O; the rest is looked up or counted
in AnyIO's worker threads, never on the event loop. The bounds this allows (how long a revoked
key still works elsewhere, how far a key's count may pass its limit with several processes) are
stated in those modules and in ``docs/deploy.md``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from starlette.requests import HTTPConnection

from demixer.service.accounts.keycache import KeyCache
from demixer.service.accounts.keys import Identity
from demixer.service.accounts.limits import RateState
from demixer.service.accounts.ratecache import RateCache
from demixer.service.context import Services

__all__ = ["Callers", "callers"]


class Callers:
    """The key cache and the request counts of one API process.

    Args:
        services: the process's services (database, settings).
    """

    def __init__(self, services: Services) -> None:
        settings = services.settings
        self.keys = KeyCache(services.db, ttl=settings.key_cache_seconds)
        self.rates = RateCache(
            services.db,
            settings.rate_limit_per_minute,
            flush_seconds=settings.rate_flush_seconds,
        )

    async def identify(self, secret: str | None) -> Identity:
        """The identity behind ``secret`` (raises ``Unauthorized``)."""
        if secret:
            hit = self.keys.cached(secret)
            if hit is not None:
                return hit
        return await anyio.to_thread.run_sync(self.keys.authenticate, secret)

    async def count(self, identity: Identity) -> RateState:
        """Count one request of ``identity``'s key (raises ``RateLimitExceeded`` when over)."""
        state = self.rates.count(identity.key_id)
        if state is None:  # near the limit: counted in the shared table
            state = await anyio.to_thread.run_sync(self.rates.count_shared, identity.key_id)
        return state

    def close(self) -> None:
        """Add the pending counts to the table and stop (the process is shutting down)."""
        self.rates.close()
        self.keys.close()

    @asynccontextmanager
    async def lifespan(self, _app: Any) -> AsyncIterator[None]:
        """The application's lifespan: :meth:`close` at shutdown."""
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(self.close)


def callers(conn: HTTPConnection) -> Callers:
    """The :class:`Callers` of the application serving ``conn``."""
    found: Callers = conn.app.state.callers
    return found
