"""Server-sent status streams share one reader: 200 open streams over 20 jobs cost the database
the same queries per read as one stream, and every stream sees every state change."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import groupby
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from api_support import Api, make_api, on_uvicorn
from demixer.api.statuswatch import StatusWatcher
from demixer.server.app import create_app
from demixer.service.db import Database
from demixer.service.jobs.queue import Queue
from worker_support import wait_until

# The whole module runs on SQLite + local storage and on PostgreSQL + S3 (conftest.py).
pytestmark = pytest.mark.usefixtures("backend")

__all__ = ["make_api"]  # fixtures

STREAMS, JOBS = 200, 20
POLL = 0.1  # the watcher's period here (a test need not wait as long as a service reads)
#: how soon a frame "at once" must come with the watcher reading every 30 s: half that, so a
#: frame by then came from a notice that the job changed, not from a read (5 s was outlasted on
#: a busy 2-core machine)
AT_ONCE = 15.0


@contextmanager
def serving(api: Api, poll: float = POLL) -> Iterator[tuple[str, StatusWatcher]]:
    """The app on a real uvicorn server in a thread (one event loop, as in service), with a
    watcher reading every ``poll`` seconds (in service: half the shortest stream interval;
    30 s: a frame that comes sooner came from a notice that the job changed, not a read)."""
    app = create_app(api.services)
    watcher = StatusWatcher(api.services, poll_seconds=poll, max_poll_seconds=poll)
    app.state.status_watcher = watcher
    with on_uvicorn(app) as base:
        yield base, watcher


class Streams:
    """``n`` open status streams, each recording the states of its frames (in a thread with
    its own event loop, so the test drives the jobs meanwhile)."""

    def __init__(self, base: str, key: str, job_ids: list[str]) -> None:
        self.base, self.key, self.job_ids = base, key, job_ids
        self.states: list[list[str]] = [[] for _ in job_ids]
        self.events: list[list[str]] = [[] for _ in job_ids]
        self.closed = [False] * len(job_ids)
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=lambda: asyncio.run(self._all()), daemon=True)
        self.thread.start()

    async def _all(self) -> None:
        limits = httpx.Limits(max_connections=len(self.job_ids) + 10)
        headers = {"Authorization": f"Bearer {self.key}"}
        async with httpx.AsyncClient(headers=headers, limits=limits, timeout=60) as client:
            await asyncio.gather(*(self._one(client, i) for i in range(len(self.job_ids))))

    async def _one(self, client: httpx.AsyncClient, i: int) -> None:
        url = f"{self.base}/v1/queue/requests/{self.job_ids[i]}/status/stream?interval=10"
        try:
            async with client.stream("GET", url) as response:
                assert response.status_code == 200
                async for line in response.aiter_lines():
                    if line.startswith("event: "):
                        self.events[i].append(line[7:])
                    elif line.startswith("data: ") and self.events[i][-1] == "status":
                        self.states[i].append(json.loads(line[6:])["status"])
            self.closed[i] = True
        except BaseException as exc:
            self.errors.append(exc)

    def all_saw(self, state: str) -> bool:
        assert not self.errors, self.errors
        return all(s and s[-1] == state for s in self.states)


@contextmanager
def counting(api: Api, watcher: StatusWatcher) -> Iterator[Counter[int]]:
    """Statements run on the database, by the watcher's round (its reads counter) at the time."""
    per_round: Counter[int] = Counter()

    def count(*_: Any) -> None:
        per_round[watcher.reads] += 1

    event.listen(api.services.db.engine, "before_cursor_execute", count)
    try:
        yield per_round
    finally:
        event.remove(api.services.db.engine, "before_cursor_execute", count)


def _steady(per_round: Counter[int], watcher: StatusWatcher, rounds: int = 3) -> set[int]:
    """The statements of each of the next ``rounds`` complete rounds."""
    start = watcher.reads + 1
    wait_until(lambda: watcher.reads >= start + rounds, 30, "watcher rounds")
    return {per_round[r] for r in range(start, start + rounds)}


def test_many_streams_cost_what_one_costs_and_each_sees_every_state(
    make_api: Callable[..., Api],
) -> None:
    api = make_api(rate_limit_per_minute=0, max_concurrent_jobs=0)  # no other writes meanwhile
    file_id = api.upload()
    job_ids = [api.queue_separate(file_id).json()["request_id"] for _ in range(JOBS)]
    deleted = api.queue_separate(file_id).json()["request_id"]
    with serving(api) as (base, watcher), counting(api, watcher) as per_round:
        one = Streams(base, api.key, job_ids[:1])
        wait_until(lambda: one.all_saw("IN_QUEUE"), 30, "the first stream")
        alone = _steady(per_round, watcher)
        # 200 streams over 20 jobs (10 each), the first one still open.
        many = Streams(base, api.key, [job_ids[i % JOBS] for i in range(STREAMS)])
        wait_until(lambda: many.all_saw("IN_QUEUE"), 60, "200 streams")
        together = _steady(per_round, watcher)
        # A round reads the rows, the queued ones' positions and the live workers (and on
        # SQLite sends its own BEGIN): the same 3 statements for one stream as for 200.
        assert alone == {3 + (api.services.db.dialect == "sqlite")}
        assert together == alone
        # A request deleted while it is streamed: an error frame ends its stream.
        gone = Streams(base, api.key, [deleted])
        wait_until(lambda: gone.all_saw("IN_QUEUE"), 30, "its first frame")
        assert api.delete(f"/v1/queue/requests/{deleted}").status_code == 204
        wait_until(lambda: gone.closed[0], 30, "its end")
        assert gone.events == [["status", "error"]]
        for _ in job_ids:  # every job starts...
            claim = api.services.queue.claim("test-worker")
            assert claim is not None
        wait_until(lambda: many.all_saw("IN_PROGRESS"), 30, "IN_PROGRESS everywhere")
        for job_id in job_ids:  # ...and completes
            api.services.queue.complete(
                job_id, "test-worker", outputs={}, duration=1.5, sample_rate=44100
            )
        wait_until(lambda: all(many.closed) and all(one.closed), 30, "every stream closed")
    # Every state, in order. A periodic frame (every 10 s, the longest interval) repeats the
    # state it is in; on a slow machine the steps above can outlast one, so repeats are merged.
    changes = [[state for state, _ in groupby(states)] for states in one.states + many.states]
    assert changes == [["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]] * (1 + STREAMS), changes


def test_a_job_that_ends_in_this_process_is_streamed_at_once(
    make_api: Callable[..., Api],
) -> None:
    """A job that this process's worker ends (``serve``'s embedded one) reaches its streams
    at once, not at the watcher's next read: with reads 30 s apart, its COMPLETED frame still
    comes within seconds."""
    api = make_api(rate_limit_per_minute=0, max_concurrent_jobs=0)
    job_id = api.queue_separate(api.upload()).json()["request_id"]
    with serving(api, poll=30) as (base, _watcher):
        assert api.services.queue.claim("test-worker") is not None
        stream = Streams(base, api.key, [job_id])
        wait_until(lambda: stream.all_saw("IN_PROGRESS"), 30, "the first frame")
        api.services.queue.complete(
            job_id, "test-worker", outputs={}, duration=1.5, sample_rate=44100
        )
        wait_until(lambda: stream.closed[0], AT_ONCE, "the COMPLETED frame")
    assert stream.states == [["IN_PROGRESS", "COMPLETED"]]


@pytest.mark.backends("pg-s3")
def test_a_job_another_process_ends_is_streamed_at_once_on_postgresql(
    make_api: Callable[..., Api],
) -> None:
    """A job that another process ends (a separate `demixer worker`) reaches this process's
    streams at once on PostgreSQL (``NOTIFY``), not at the watcher's next read: with reads
    30 s apart, its COMPLETED frame still comes within seconds. (SQLite has no notifications:
    its other processes' jobs are read at the next round.)"""
    api = make_api(rate_limit_per_minute=0, max_concurrent_jobs=0)
    job_id = api.queue_separate(api.upload()).json()["request_id"]
    # The worker's process: its own connections, and none of this process's listeners.
    elsewhere = Queue(Database(api.services.db.url))
    try:
        with serving(api, poll=30) as (base, watcher):
            assert elsewhere.claim("worker-elsewhere") is not None
            stream = Streams(base, api.key, [job_id])
            wait_until(lambda: stream.all_saw("IN_PROGRESS"), 30, "the first frame")
            listener = watcher.listener
            assert listener is not None
            assert listener.listening.wait(10)
            elsewhere.complete(
                job_id, "worker-elsewhere", outputs={}, duration=1.5, sample_rate=44100
            )
            wait_until(lambda: stream.closed[0], AT_ONCE, "the COMPLETED frame")
    finally:
        elsewhere.db.dispose()
    assert stream.states == [["IN_PROGRESS", "COMPLETED"]]


def test_a_job_that_starts_in_this_process_is_streamed_at_once(
    make_api: Callable[..., Api],
) -> None:
    """A job that this process's worker claims shows "running" on its page at once, not at
    the watcher's next read (half a second in service; 30 s here)."""
    api = make_api(rate_limit_per_minute=0, max_concurrent_jobs=0)
    job_id = api.queue_separate(api.upload()).json()["request_id"]
    with serving(api, poll=30) as (base, _watcher):
        stream = Streams(base, api.key, [job_id])
        wait_until(lambda: stream.all_saw("IN_QUEUE"), 30, "the first frame")
        assert api.services.queue.claim("test-worker") is not None
        wait_until(lambda: stream.all_saw("IN_PROGRESS"), AT_ONCE, "the IN_PROGRESS frame")
        api.services.queue.cancel(job_id)  # flagged: it ends at the worker's next heartbeat
        api.services.queue.mark_cancelled(job_id, "test-worker")
        wait_until(lambda: stream.closed[0], AT_ONCE, "the CANCELLED frame")
    assert stream.states == [["IN_QUEUE", "IN_PROGRESS", "CANCELLED"]]


@pytest.mark.backends("pg-s3")
def test_a_job_another_process_starts_or_gives_back_is_streamed_at_once_on_postgresql(
    make_api: Callable[..., Api],
) -> None:
    """A job that a separate `demixer worker` claims, or hands back to the queue, reaches this
    process's streams at once (``NOTIFY``), as its end does: with reads 30 s apart, its page
    says "running" within seconds of the claim, and "queued" again within seconds of that."""
    api = make_api(rate_limit_per_minute=0, max_concurrent_jobs=0)
    job_id = api.queue_separate(api.upload()).json()["request_id"]
    elsewhere = Queue(Database(api.services.db.url))  # its own connections and listeners
    try:
        with serving(api, poll=30) as (base, watcher):
            stream = Streams(base, api.key, [job_id])
            wait_until(lambda: stream.all_saw("IN_QUEUE"), 30, "the first frame")
            listener = watcher.listener
            assert listener is not None
            assert listener.listening.wait(10)
            assert elsewhere.claim("worker-elsewhere") is not None
            wait_until(lambda: stream.all_saw("IN_PROGRESS"), AT_ONCE, "the IN_PROGRESS frame")
            elsewhere.give_back(job_id, "worker-elsewhere", "a deploy")
            wait_until(lambda: stream.all_saw("IN_QUEUE"), AT_ONCE, "the IN_QUEUE frame")
            elsewhere.cancel(job_id)
            wait_until(lambda: stream.closed[0], AT_ONCE, "the CANCELLED frame")
    finally:
        elsewhere.db.dispose()
    assert stream.states == [["IN_QUEUE", "IN_PROGRESS", "IN_QUEUE", "CANCELLED"]]
