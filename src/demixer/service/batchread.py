"""Rows read by key for many concurrent requests at once: one ``SELECT … WHERE key = ANY(…)``
round trip for all the keys asked for meanwhile.

On a database server each read is a round trip, and a worker thread to wait for it without
holding up the event loop; under load both cost more than the read. :class:`KeyedReads` lets
each request ask for its row (``await reads.get(key)``) and runs one read at a time per event
loop, in a worker thread: the keys asked for while it runs wait for it to end and are read
together by the next one. A lone request waits for one read, as before; under load each read
serves several requests. Every key is read by a query that starts after it was asked for, so no
answer is older than the request.
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import anyio.to_thread
from sqlalchemy import Select

from demixer.service.db import Database
from demixer.service.prepared import PreparedRead, prepared

__all__ = ["MAX_KEYS", "KeyedReads", "keyed_reads"]

#: Keys read by one query at most (the rest wait for the next).
MAX_KEYS = 256


@dataclass
class _Loop:
    waiting: dict[Any, list[asyncio.Future[Any]]] = field(default_factory=dict)
    reading: asyncio.Task[None] | None = None  # the task running the reads, while one does


class KeyedReads:
    """Reads of ``read`` (a SELECT of rows whose ``key`` attribute is in the list bound to its
    ``keys`` parameter) for concurrent callers, combined (module docstring).

    Args:
        read: the prepared statement, with one list parameter named ``keys``.
        key: the attribute of a row holding its key.
    """

    def __init__(self, read: PreparedRead, key: str) -> None:
        self.read = read
        self.key = key
        self.queries = 0  # queries run so far (benchmarks report keys per query)
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Loop] = (
            weakref.WeakKeyDictionary()
        )

    async def get(self, key: Any) -> Any:
        """The row with ``key``, or None (raises what the read raised)."""
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
                    rows = await anyio.to_thread.run_sync(partial(self.read.all, keys=keys))
                except BaseException as exc:
                    for futures in batch.values():
                        for future in futures:
                            if not future.done():
                                future.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                found = {getattr(row, self.key): row for row in rows}
                for key, futures in batch.items():
                    for future in futures:
                        if not future.done():
                            future.set_result(found.get(key))
        finally:
            state.reading = None


def keyed_reads(db: Database, stmt: Select[Any], key: str) -> KeyedReads:
    """:class:`KeyedReads` of ``stmt`` on ``db``, made once per database (kept in
    ``db.prepared_reads``)."""
    tag = ("keyed", stmt)
    found = db.prepared_reads.get(tag)
    if found is None:
        found = db.prepared_reads[tag] = KeyedReads(prepared(db, stmt), key)
    assert isinstance(found, KeyedReads)
    return found
