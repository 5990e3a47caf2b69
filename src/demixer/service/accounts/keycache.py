"""API keys remembered by one process for a few seconds, so that a poll costs no key lookup.

:func:`~demixer.service.accounts.keys.authenticate` reads the key's row on every call. An API
process answering thousands of status polls a second asks about the same few keys over and over,
so :class:`KeyCache` keeps each key that authenticated (by the SHA-256 of its secret, never the
secret) with its identity for ``ttl`` seconds.

What that costs, stated as the bound ``docs/deploy.md`` gives:

- **Revocation** (``demixer keys revoke``, another process) is refused by this process at most
  ``ttl`` seconds later (:data:`REVOCATION_SECONDS` by default). A revocation written through this
  process's own database engine (an ``UPDATE`` or ``DELETE`` of ``api_keys``) empties the cache
  at once.
- **New keys** work at once: an unknown secret is never remembered, so it is looked up each time
  (as before), and a flood of wrong keys cannot fill memory.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import event

from demixer.service.accounts.keys import Identity, authenticate
from demixer.service.db import Database

__all__ = ["MAX_KEYS", "REVOCATION_SECONDS", "KeyCache"]

#: How long a key is trusted without a look at its row: the longest a revocation made by
#: another process takes to reach this one.
REVOCATION_SECONDS = 2.0
#: Keys remembered at most (the oldest is forgotten first).
MAX_KEYS = 10_000


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class KeyCache:
    """Identities of recently seen keys, each trusted for ``ttl`` seconds.

    Args:
        db: the database holding the keys.
        ttl: seconds a key is trusted after its row was read (0: every call reads it).
        clock: monotonic seconds (tests pass one they move).
        max_keys: entries kept at most.
    """

    def __init__(
        self,
        db: Database,
        ttl: float = REVOCATION_SECONDS,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = MAX_KEYS,
    ) -> None:
        self.db = db
        self.ttl = ttl
        self.clock = clock
        self.max_keys = max_keys
        self._entries: dict[bytes, tuple[Identity, float]] = {}
        self._lock = threading.Lock()
        self._listening = False
        if ttl > 0:
            event.listen(db.engine, "after_cursor_execute", self._after_execute)
            self._listening = True

    def cached(self, secret: str) -> Identity | None:
        """The identity behind ``secret`` when it is known and fresh, else None (no I/O: the
        caller then calls :meth:`authenticate`, e.g. in a worker thread)."""
        hit = self._entries.get(_digest(secret))
        if hit is None or self.clock() >= hit[1]:
            return None
        return hit[0]

    def authenticate(self, secret: str | None) -> Identity:
        """The identity behind ``secret``: remembered, else read (and remembered).

        Raises:
            Unauthorized: no key, or an unknown or revoked one (never remembered).
        """
        if secret:
            hit = self.cached(secret)
            if hit is not None:
                return hit
        identity = authenticate(self.db, secret)  # raises for a missing, unknown or revoked key
        if self.ttl > 0 and secret:
            with self._lock:
                if len(self._entries) >= self.max_keys:
                    self._entries.pop(next(iter(self._entries)))
                self._entries[_digest(secret)] = (identity, self.clock() + self.ttl)
        return identity

    def clear(self) -> None:
        """Forget every key (each is read again on its next use)."""
        with self._lock:
            self._entries.clear()

    def close(self) -> None:
        """Stop watching this process's writes (the cache is no longer used)."""
        if self._listening:
            event.remove(self.db.engine, "after_cursor_execute", self._after_execute)
            self._listening = False

    def _after_execute(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        # A key revoked (or deleted) through this engine counts at once, not after the TTL.
        if "api_keys" in statement and statement.lstrip()[:6].upper() in ("UPDATE", "DELETE"):
            self.clear()
