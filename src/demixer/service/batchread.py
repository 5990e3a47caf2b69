"""Rows read by key for many concurrent requests at once: one ``SELECT … WHERE key = ANY(…)``
round trip for all the keys asked for meanwhile.

On a database server each read is a round trip, and a worker thread to wait for it without
holding up the event loop; under load both cost more than the read. :class:`Batched` lets each
request ask for its row (``await reads.get(key)``) and runs one read at a time per event loop,
in a worker thread: the keys asked for while it runs wait for it to end and are read together
by the next one. A lone request waits for one read, as before; under load each read
serves several requests. Every key is read by a query that starts after it was asked for, so no
answer is older than the request.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import anyio.to_thread
from sqlalchemy import Select

from demixer.service.db import Database
from demixer.service.prepared import PreparedRead, prepared

__all__ = ["MAX_KEYS", "Batched", "keyed_reads"]

#: Keys read by one query at most (the rest wait for the next).
MAX_KEYS = 256


@dataclass
class _Loop:
    waiting: dict[Any, list[asyncio.Future[Any]]] = field(default_factory=dict)
    reading: asyncio.Task[None] | None = None  # the task running the reads, while one does


class Batched:
    """A blocking read of many keys at once, ``read(keys) -> {key: value}``, shared by
    concurrent callers (module docstring): ``await batched.get(key)``.

    Args:
        read: the read (run in a worker thread); keys it leaves out answer None.
    """

    def __init__(self, read: Callable[[list[Any]], dict[Any, Any]]) -> None:
        self.read = read
        self.queries = 0  # reads run so far (benchmarks report keys per read)
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Loop] = (
            weakref.WeakKeyDictionary()
        )

    async def get(self, key: Any) -> Any:
        """The value for ``key``, or None (raises what the read raised)."""
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            state = self._loops[loop] = _Loop()
        future: asyncio.Future[Any] = loop.create_future()
        state.waiting.setdefault(key, []).append(future)
        if state.reading is None:
            state.reading = loop.create_task(self._drain(state))
        return await future

    async def _drain(self, state: _Loop) -> None:
        try:
            while state.waiting:
                keys = list(state.waiting)[:MAX_KEYS]
                batch = {k: state.waiting.pop(k) for k in keys}
                try:
                    self.queries += 1
                    found = await anyio.to_thread.run_sync(partial(self.read, keys))
                except BaseException as exc:
                    for futures in batch.values():
                        for future in futures:
                            if not future.done():
                                future.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for key, futures in batch.items():
                    for future in futures:
                        if not future.done():
                            future.set_result(found.get(key))
        finally:
            state.reading = None


def _rows_by(read: PreparedRead, key: str, keys: list[Any]) -> dict[Any, Any]:
    return {getattr(row, key): row for row in read.all(keys=keys)}


def keyed_reads(db: Database, stmt: Select[Any], key: str) -> Batched:
    """Rows of ``stmt`` (a SELECT whose ``keys`` parameter is a list of their ``key``
    attribute) by key, batched (:class:`Batched`), made once per database (kept in
    ``db.prepared_reads``)."""
    tag = ("keyed", stmt)
    found = db.prepared_reads.get(tag)
    if found is None:
        found = db.prepared_reads[tag] = Batched(partial(_rows_by, prepared(db, stmt), key))
    assert isinstance(found, Batched)
    return found
