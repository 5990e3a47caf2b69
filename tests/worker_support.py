"""In-process workers for tests: run one in a thread for a block, wait for a condition, and
see the SQL a worker's poll sends."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

from demixer.service.worker import Worker

__all__ = ["running", "sql_sent", "wait_until"]


@contextmanager
def running(worker: Worker) -> Iterator[Worker]:
    """Run ``worker`` in a thread for the block; it must stop within 30 s afterwards."""
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        stop.set()
        thread.join(30)
        assert not thread.is_alive(), "the worker did not stop"


def wait_until(condition: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
    """Poll ``condition`` until it returns something true (returned), or fail after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.05)
    return value


@contextmanager
def sql_sent() -> Iterator[list[str]]:
    """The verb (``SELECT``, ``BEGIN``, ``UPDATE``...) of each statement this thread sends
    inside the block, in order, on any engine. Another thread's are not counted: a worker a
    module's earlier tests left polling in the background sent its own idle poll's SELECT
    into the count now and then (a fourth SELECT where the test expected three)."""
    sent: list[str] = []
    mine = threading.get_ident()

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if threading.get_ident() == mine:
            sent.append(statement.split(None, 1)[0].upper())

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(Engine, "before_cursor_execute", record)
