"""Per-key limits: requests per minute (429 with ``Retry-After`` and ``RateLimit-*`` headers,
shared through the database, a new window resets) and concurrent queued or running requests."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from api_support import Api, api, close_app, make_api
from demixer.server.app import create_app
from demixer.service.schema import Job, RateCounter

# The whole module runs on SQLite + local storage and on PostgreSQL + S3 (conftest.py).
pytestmark = pytest.mark.usefixtures("backend")

__all__ = ["api", "make_api"]  # fixtures

T0 = datetime(2030, 1, 2, 12, 0, 10, tzinfo=UTC)


class Clock:
    """A clock the test moves."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _limits(r: Any) -> tuple[str, str, str]:
    h = r.headers
    return h["RateLimit-Limit"], h["RateLimit-Remaining"], h["RateLimit-Reset"]


def test_requests_per_minute(make_api: Callable[..., Api]) -> None:
    api = make_api(rate_limit_per_minute=3)
    clock = Clock(T0)
    api.services.db.clock = clock
    for remaining in ("2", "1", "0"):
        r = api.get("/v1/models")
        assert r.status_code == 200, r.text
        assert _limits(r) == ("3", remaining, "50")
    r = api.get("/v1/models")
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "RATE_LIMITED"
    assert r.headers["Retry-After"] == "50"
    assert _limits(r) == ("3", "0", "50")
    assert r.headers["x-request-id"]
    # Errors other than 429 carry the headers too; another key has its own count.
    r = api.get("/v1/queue/requests/req_nope/status", key=api.other_key)
    assert r.status_code == 404
    assert _limits(r) == ("3", "2", "50")
    clock.now = T0 + timedelta(seconds=45)
    assert api.get("/v1/models").status_code == 429
    assert api.get("/v1/models").headers["Retry-After"] == "5"
    # The next minute is a new window.
    clock.now = T0 + timedelta(seconds=50)
    r = api.get("/v1/models")
    assert r.status_code == 200
    assert _limits(r) == ("3", "2", "60")
    with api.services.db.read() as s:  # old windows are cleared, one row per key remains
        assert s.query(RateCounter).count() == 2


def test_count_is_shared_through_the_database(make_api: Callable[..., Api]) -> None:
    """Two API processes on one database share each key's count."""
    from fastapi.testclient import TestClient

    api = make_api(rate_limit_per_minute=2)
    api.services.db.clock = Clock(T0)
    second = TestClient(create_app(api.services), raise_server_exceptions=False)
    assert api.get("/v1/models").status_code == 200
    assert second.get("/v1/models", headers=api.headers()).status_code == 200
    assert api.get("/v1/models").status_code == 429
    assert second.get("/v1/models", headers=api.headers()).status_code == 429
    close_app(second)


def test_unauthenticated_and_unlimited_have_no_headers(make_api: Callable[..., Api]) -> None:
    api = make_api(rate_limit_per_minute=0)
    r = api.get("/v1/models")
    assert r.status_code == 200
    assert "RateLimit-Limit" not in r.headers
    r = api.client.get("/v1/models")
    assert r.status_code == 401
    assert "RateLimit-Limit" not in r.headers


def test_concurrent_jobs(make_api: Callable[..., Api]) -> None:
    api = make_api(max_concurrent_jobs=2)
    file_id = api.upload()
    first = api.queue_separate(file_id, input={"output_format": "wav"})
    second = api.queue_separate(file_id, input={"output_format": "flac"})
    assert first.status_code == second.status_code == 202
    r = api.queue_separate(file_id, input={"output_format": "mp3"})
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "TOO_MANY_CONCURRENT_JOBS"
    assert int(r.headers["Retry-After"]) >= 1
    assert "RateLimit-Limit" in r.headers
    # The limit is per key: another key of the same account still has room.
    other = api.key_with("audio:separate", "files:read")
    r = api.post(
        "/v1/queue/audio/separate",
        key=other,
        json={"input": {"file_id": file_id, "prompt": "vocals", "output_format": "mp3"}},
    )
    assert r.status_code == 202, r.text
    # A finished request frees its slot.
    api.worker_done(first.json()["request_id"])
    r = api.queue_separate(file_id, input={"output_format": "wav", "bit_depth": 24})
    assert r.status_code == 202, r.text
    with api.services.db.read() as s:
        keys = {job.key_id for job in s.query(Job)}
    assert len(keys) == 2 and None not in keys


def test_concurrency_zero_is_unlimited(make_api: Callable[..., Api]) -> None:
    api = make_api(max_concurrent_jobs=0)
    file_id = api.upload()
    for fmt in ("wav", "flac", "mp3"):
        assert api.queue_separate(file_id, input={"output_format": fmt}).status_code == 202
