"""A database that stops taking writes while the server runs (a PostgreSQL failover leaving the
server on a standby, a SQLite file opened read-only): every protocol's submit answers 503-class
``DATABASE_READ_ONLY`` in its own envelope with ``Retry-After``, reads go on, nothing stored is
lost, and once the database takes writes again the same server recovers by itself.

Read-only is made the way a client meets it: PostgreSQL's ``default_transaction_read_only``
on the database, seen by new connections; on SQLite, ``PRAGMA query_only`` on each new
connection (the same ``SQLITE_READONLY`` as a file opened read-only; the tests run as root,
whom a file mode does not stop).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from sqlalchemy import event

from api_support import Api, make_api
from demixer.service.db import Database
from demixer.service.schema import Job
from demixer.service.worker import Worker
from worker_support import running, wait_until

__all__ = ["make_api"]

pytestmark = pytest.mark.usefixtures("backend")

MESSAGE = (
    "the database is read-only now (a standby, a read-only file, or no write rights); "
    "nothing was stored, retry later"
)
SONG = "https://example.org/song.mp3"


@contextmanager
def read_only(db: Database) -> Iterator[None]:
    """``db`` takes no writes inside the block; its pool is emptied at the start only (as a
    failover cuts connections), never at the end: the server must notice by itself."""
    if db.dialect == "sqlite":

        def query_only(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.execute("PRAGMA query_only = 1")

        event.listen(db.engine, "connect", query_only)
        db.engine.dispose()
        try:
            yield
        finally:
            event.remove(db.engine, "connect", query_only)
        return
    base, name = db.url.rsplit("/", 1)
    admin = base.replace("postgresql+psycopg", "postgresql") + "/postgres"

    def setting(on: str) -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = {on}')

    setting("on")
    db.engine.dispose()
    try:
        yield
    finally:
        setting("off")


def _submits(api: Api) -> dict[str, Callable[[], Any]]:
    """One job submit per protocol (the native one is also fal's queue)."""
    return {
        "native": lambda: api.post("/v1/queue/audio/stems", json={"input": {"audio_url": SONG}}),
        "gaudio": lambda: api.client.post(
            "/developers/api/v1/files/upload-multipart/create",
            json={"fileName": "a.wav", "fileSize": 1000},
            headers={"x-ga-apikey": api.key},
        ),
        "musicgpt": lambda: api.client.post(
            "/api/public/v1/Extraction",
            data={"audio_url": SONG, "stems": '["vocals"]'},
            headers={"Authorization": api.key},
        ),
        "sunoapi": lambda: api.post(
            "/api/v1/vocal-removal/generate",
            json={"audioUrl": SONG, "type": "separate_vocal", "callBackUrl": SONG},
        ),
    }


def test_a_database_turned_read_only_answers_503_and_recovers_by_itself(
    make_api: Callable[..., Api], caplog: pytest.LogCaptureFixture
) -> None:
    api = make_api(rate_limit_per_minute=0)
    submits = _submits(api)
    before = submits["native"]()
    assert before.status_code == 202, before.text
    job_id = before.json()["request_id"]
    with read_only(api.services.db), caplog.at_level(logging.INFO):
        answers = {name: submit() for name, submit in submits.items()}
        # Reads go on (on connections that must not outlive the outage: the writes below
        # would meet a read-only session on them).
        status = api.get(f"/v1/queue/requests/{job_id}/status")
    got = {
        name: (r.status_code, r.json(), r.headers.get("retry-after")) for name, r in answers.items()
    }
    rid = got["native"][1]["error"]["request_id"]
    native = {"code": "DATABASE_READ_ONLY", "message": MESSAGE, "param": None, "request_id": rid}
    assert got == {
        "native": (503, {"error": native}, "30"),
        "gaudio": (503, {"error": "service_unavailable", "message": MESSAGE}, "30"),
        "musicgpt": (
            503,
            {"success": False, "error": "DATABASE_READ_ONLY", "message": MESSAGE},
            "30",
        ),
        "sunoapi": (200, {"code": 500, "msg": MESSAGE, "data": None}, "30"),
    }
    assert status.status_code == 200, status.text  # reads go on
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []  # no traceback
    # Writable again: the same server (no restart, no pool emptied) takes every submit.
    again = {name: submit() for name, submit in submits.items()}
    assert {name: r.status_code for name, r in again.items()} == {
        "native": 202,
        "gaudio": 200,
        "musicgpt": 200,
        "sunoapi": 200,
    }, {name: r.text for name, r in again.items()}
    assert again["gaudio"].json()["resultCode"] == 1000
    assert again["sunoapi"].json()["code"] == 200
    assert api.get(f"/v1/queue/requests/{job_id}/status").json()["status"] == "IN_QUEUE"


@pytest.mark.backends("pg-s3")  # a failover; the first test covers SQLite's read-only file
def test_a_job_finished_while_the_database_is_read_only_completes_in_its_first_attempt(
    make_api: Callable[..., Api], caplog: pytest.LogCaptureFixture
) -> None:
    """A worker that finished its job while the database took no writes gave up recording it
    at once (a traceback), and the job waited out its lease to run again: the separation
    thrown away, an attempt spent. It now waits for the database, for about a lease, as
    through an outage."""
    api = make_api(rate_limit_per_minute=0, lease_seconds=30, poll_seconds=0.1)
    made = api.post("/v1/queue/audio/stems", json={"input": {"file_id": api.upload()}})
    job_id = made.json()["request_id"]

    def status() -> str:
        return str(api.get(f"/v1/queue/requests/{job_id}/status").json()["status"])

    with caplog.at_level(logging.INFO), running(Worker(api.services)):
        # Its child process starts (seconds: PyTorch's import) after the job is claimed.
        wait_until(lambda: status() == "IN_PROGRESS", 60, "the job's claim")
        with read_only(api.services.db):
            wait_until(
                lambda: any(f"job {job_id}" in r.getMessage() for r in caplog.records
                            if r.levelno >= logging.WARNING or "ended" in r.getMessage()),
                60,
                "the worker's try to record the job",
            )  # fmt: skip
        wait_until(lambda: status() in ("COMPLETED", "FAILED"), 60, "the job's end")
    with api.services.db.read() as s:
        job = s.get(Job, job_id)
        assert job is not None
        assert (job.status, job.attempts) == ("COMPLETED", 1), (job.error_code, job.error_message)
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []
