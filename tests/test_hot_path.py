"""The API's hot path: fast lanes answer exactly as the routes they shortcut, keys and request
counts kept in each process within their stated bounds, and the prepared read of a job row
equals the ORM's. (Two real API processes sharing a count and a revocation:
test_two_api_processes.py.)"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import pytest

from api_support import Api, api, make_api
from demixer.api.jobs import read_job
from demixer.errors import RateLimited
from demixer.service.accounts.keycache import KeyCache
from demixer.service.accounts.keys import Unauthorized, create_key, list_keys, revoke_key
from demixer.service.accounts.ratecache import RateCache
from demixer.service.db import Database
from demixer.service.schema import Job

# The whole module runs on SQLite + local storage and on PostgreSQL + S3 (conftest.py).
pytestmark = pytest.mark.usefixtures("backend")

__all__ = ["api", "make_api"]  # fixtures

T0 = datetime(2030, 1, 2, 12, 0, 10, tzinfo=UTC)


def _same(lane: httpx.Response, route: httpx.Response) -> None:
    """Two answers a client cannot tell apart (the request id, and the signature and expiry of
    signed URLs, which change with the second they are made in, aside)."""

    def body(r: httpx.Response) -> bytes:
        text = re.sub(rb'"request_id":"rid_[^"]+"', b'"request_id":"rid"', r.content)
        return re.sub(rb'(https?://[^"?]+)\?[^"]*', rb"\1?signed", text)

    assert (lane.status_code, body(lane)) == (route.status_code, body(route))
    skip = {"x-request-id", "content-length", "ratelimit-remaining"}
    assert {k: v for k, v in lane.headers.items() if k not in skip} == {
        k: v for k, v in route.headers.items() if k not in skip
    }


def test_fast_lanes_answer_as_the_routes_do(api: Api) -> None:
    """A query parameter the lane does not take sends the same request through FastAPI's
    route: both answers must be the same bytes, errors included."""
    done = api.queue_separate(api.upload()).json()["request_id"]
    api.worker_done(done)
    queued = api.queue_separate(api.upload()).json()["request_id"]
    assert api.get(f"/v1/queue/requests/{done}/status").json()["status"] == "COMPLETED"
    now = api.services.db.clock()  # held: RateLimit-Reset must not tick between the two answers
    api.services.db.clock = lambda: now
    for job_id in (queued, done, "req_nope"):
        base = f"/v1/queue/requests/{job_id}/status"
        _same(api.get(base), api.get(base + "?logs=false"))
        _same(api.get(base, key=api.other_key), api.get(base + "?logs=false", key=api.other_key))
        suno = f"/api/v1/vocal-removal/record-info?taskId={job_id}"
        _same(api.get(suno), api.get(suno + "&x=1"))
        gaudio = f"/developers/api/v1/gsep_music_hq_v1/jobs/{job_id}"
        h = {"x-ga-apikey": api.key}
        _same(api.client.get(gaudio, headers=h), api.client.get(gaudio + "?x=1", headers=h))
    _same(api.get("/v1/models"), api.get("/v1/models?x=1"))
    models_only = api.key_with("models:read")
    for key in ("dmx_nope", models_only):
        status = f"/v1/queue/requests/{queued}/status"
        _same(api.get(status, key=key), api.get(status + "?logs=false", key=key))
    no_models = api.key_with("files:read")
    _same(api.get("/v1/models", key=no_models), api.get("/v1/models?x=1", key=no_models))
    h = {"x-ga-apikey": "dmx_nope"}
    gaudio = f"/developers/api/v1/gsep_music_hq_v1/jobs/{queued}"
    _same(api.client.get(gaudio, headers=h), api.client.get(gaudio + "?x=1", headers=h))
    _same(api.client.get(gaudio), api.client.get(gaudio + "?x=1"))  # no key: Gaudio's 400


def test_over_the_limit_is_the_same_429_through_lane_and_route(
    make_api: Callable[..., Api],
) -> None:
    api = make_api(rate_limit_per_minute=2)
    api.services.db.clock = lambda: T0
    base = "/v1/models"
    assert [api.get(base).status_code for _ in range(2)] == [200, 200]
    lane, route = api.get(base), api.get(base + "?x=1")
    assert lane.status_code == 429 and lane.json()["error"]["code"] == "RATE_LIMITED"
    _same(lane, route)
    assert lane.headers["Retry-After"] == "50"


def test_the_prepared_read_of_a_job_row_equals_the_orm(api: Api) -> None:
    job_id = api.queue_separate(api.upload(), webhookUrl="https://example.com/hook").json()[
        "request_id"
    ]
    api.worker_done(job_id)
    row = read_job(api.services, api.account, job_id)
    with api.services.db.read() as s:
        orm = s.get(Job, job_id)
        assert orm is not None
        for column in Job.__table__.columns:
            assert getattr(row, column.key) == getattr(orm, column.key), column.key
    assert row.created_at.tzinfo is not None and isinstance(row.params, dict)


# --- keys and request counts: per process, within the stated bounds --------------------------


class Ticks:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_key_revoked_elsewhere_is_refused_once_its_time_is_up(api: Api) -> None:
    ticks = Ticks()
    cache = KeyCache(api.services.db, ttl=2.0, clock=ticks)
    key = api.key_with("models:read")
    identity = cache.authenticate(key)
    # Another process revokes it (its own engine: this cache is not told).
    other = Database(api.services.db.url)
    newest = max(list_keys(other), key=lambda k: k.created_at)
    assert newest.id == identity.key_id
    revoke_key(other, newest.id)
    other.dispose()
    ticks.now = 1.9
    assert cache.authenticate(key) == identity  # trusted within the stated time
    ticks.now = 2.0
    with pytest.raises(Unauthorized):
        cache.authenticate(key)
    with pytest.raises(Unauthorized):  # an unknown key is never remembered
        cache.authenticate("dmx_nope")
    # Revoked through this process's own engine: at once.
    _, fresh = create_key(api.services.db, account_id=api.account)
    cache.authenticate(fresh)
    revoke_key(api.services.db, max(list_keys(api.services.db), key=lambda k: k.created_at).id)
    with pytest.raises(Unauthorized):
        cache.authenticate(fresh)
    cache.close()


def test_counts_reach_other_processes_at_the_flush_and_stay_within_the_bound(api: Api) -> None:
    """Two caches are two API processes: each counts in memory, adds its count to the shared
    table at its flush and reads everyone's back; near the limit every request is counted in
    the table; a key passes its limit by at most what the other process had not yet added."""
    db = api.services.db
    db.clock = lambda: T0
    key_id = max(list_keys(db), key=lambda k: k.created_at).id
    limit = 40  # slack 10: counted in memory while a count stays at or under 30
    # Flushes happen where the test calls flush(): the background flusher (every 0.5 s by
    # default) would add B's pending request on its own on a slow machine.
    a, b = (RateCache(db, limit, flush_seconds=3600) for _ in range(2))
    for n in range(1, 21):
        state = a.count(key_id)
        assert state is not None and state.remaining == limit - n
    state = b.count(key_id)
    assert state is not None and state.remaining == limit - 1  # A's are not seen yet
    a.flush()
    b.flush()  # adds its 1 and reads back 21
    state = b.count(key_id)
    assert state is not None and state.remaining == limit - 22  # now pending in B
    admitted = 20 + 2
    while a.count(key_id) is not None:  # A still believes 20: in memory up to 30
        admitted += 1
    assert admitted == 22 + 10
    # In the slack every request is counted in the table, with A's pending ones.
    while True:
        try:
            a.count_shared(key_id)
        except RateLimited:
            break
        admitted += 1
    # B's last request was not in the table yet: the one excess the bound allows.
    assert admitted == limit + 1
    b.flush()
    with pytest.raises(RateLimited):  # B knows too, and refuses from memory
        b.count(key_id)
    a.close()
    b.close()
