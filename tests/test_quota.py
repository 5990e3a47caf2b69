"""Monthly audio-minute allowances per account (``service/accounts/quota.py``): refused at
submit in each protocol's own words once the month's minutes (used + held by queued and
running requests) cannot take the input, parallel submits included; a new month starts again;
sunoapi's credit balance says what is left; the schema's migration on both backends."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from api_support import Api, make_api
from conftest import Backend, downgrade
from demixer.client import Usage
from demixer.service.accounts.keys import create_key
from demixer.service.accounts.quota import quota_state, set_quota
from demixer.service.db import Database
from demixer.service.migrate import migrate
from demixer.service.schema import QuotaHold, UsageRecord

# The whole module runs on SQLite + local storage and on PostgreSQL + S3 (conftest.py).
pytestmark = pytest.mark.usefixtures("backend")

__all__ = ["make_api"]  # fixtures

T0 = datetime(2030, 1, 31, 23, 30, tzinfo=UTC)  # half an hour before February
UPLOAD_SECONDS = 1.5  # stereo.wav (audiofiles.py)
# No request-rate or concurrency limit in the way of what is measured here.
UNLIMITED = {"rate_limit_per_minute": 0, "max_concurrent_jobs": 0}


def _quota_api(make_api: Callable[..., Api], minutes: int, used: float, when: datetime = T0) -> Api:
    """An app whose main account may use ``minutes`` a month and has used ``used`` seconds
    (recorded at ``when``); its clock stands at T0."""
    api = make_api(**UNLIMITED)
    api.services.db.clock = lambda: T0
    set_quota(api.services.db, api.account, minutes)
    with api.services.db.write() as s:
        s.add(
            UsageRecord(
                account_id=api.account,
                job_id="req_earlier",
                model="spleeter-2stems",
                quantity=used,
                recorded_at=when,
            )
        )
    return api


def test_a_request_past_the_allowance_is_402_saying_what_is_left_and_when_it_resets(
    make_api: Callable[..., Api],
) -> None:
    api = _quota_api(make_api, minutes=1, used=60 - 2.0)  # 2 s left: one upload fits
    file_id = api.upload()
    assert api.queue_separate(file_id).status_code == 202
    r = api.queue_separate(file_id, input={"output_format": "flac"})
    assert r.status_code == 402, r.text
    error = r.json()["error"]
    assert error["code"] == "QUOTA_EXCEEDED"
    assert "allowance of 1 audio minutes a month has 0.00 minutes left" in error["message"]
    assert "0.03 held by its queued and running requests" in error["message"]
    assert "this input is 0.03 minutes" in error["message"]
    assert "resets at 2030-02-01T00:00:00Z" in error["message"]
    # The next month starts from nothing used (the queued request still holds its seconds).
    api.services.db.clock = lambda: datetime(2030, 2, 1, tzinfo=UTC)
    assert api.queue_separate(file_id, input={"output_format": "flac"}).status_code == 202


def test_earlier_months_and_requests_that_end_unfinished_use_none_of_it(
    make_api: Callable[..., Api],
) -> None:
    api = _quota_api(make_api, minutes=1, used=60.0, when=datetime(2029, 12, 31, 23, tzinfo=UTC))
    file_id = api.upload()
    first = api.queue_separate(file_id)
    assert first.status_code == 202, first.text  # December's minute is not January's
    with api.services.db.write() as s:  # 56 s of January used: 4 s left, 1.5 held
        s.add(UsageRecord(account_id=api.account, job_id="req_jan", model="m", quantity=56.0,
                          recorded_at=T0))  # fmt: skip
    api.services.db.clock = lambda: T0 + timedelta(seconds=1)  # queued after the first
    second = api.queue_separate(file_id, input={"output_format": "flac"})
    assert second.status_code == 202
    assert api.queue_separate(file_id, input={"output_format": "mp3"}).status_code == 402
    # A completed request counts what it measured (1.5 s) as usage instead of holding it.
    api.worker_done(first.json()["request_id"])
    assert api.queue_separate(file_id, input={"output_format": "mp3"}).status_code == 402
    # A cancelled one counts nothing: its 1.5 s are free again.
    assert api.put(second.json()["cancel_url"]).status_code == 200
    assert api.queue_separate(file_id, input={"output_format": "mp3"}).status_code == 202


def test_requests_queued_before_the_allowance_was_set_count_against_it(
    make_api: Callable[..., Api],
) -> None:
    api = make_api(**UNLIMITED)
    api.services.db.clock = lambda: T0
    file_id = api.upload()
    assert api.queue_separate(file_id).status_code == 202  # unlimited: 1.5 s queued
    set_quota(api.services.db, api.account, 1)
    with api.services.db.write() as s:  # 57.5 s used: 2.5 s left, but 1.5 s are queued
        s.add(UsageRecord(account_id=api.account, job_id="req_jan", model="m", quantity=57.5,
                          recorded_at=T0))  # fmt: skip
    r = api.queue_separate(file_id, input={"output_format": "flac"})
    assert (r.status_code, r.json()["error"]["code"]) == (402, "QUOTA_EXCEEDED")


def test_a_deleted_request_takes_what_it_held_with_it(make_api: Callable[..., Api]) -> None:
    api = _quota_api(make_api, minutes=1, used=58.0)  # 2 s left: one upload fits
    file_id = api.upload()
    queued = api.queue_separate(file_id)
    assert api.queue_separate(file_id, input={"output_format": "flac"}).status_code == 402
    deleted = api.delete(f"/v1/queue/requests/{queued.json()['request_id']}")
    assert deleted.status_code in (200, 204), deleted.text
    assert api.queue_separate(file_id, input={"output_format": "flac"}).status_code == 202
    with api.services.db.read() as s:
        assert len(s.execute(select(QuotaHold.job_id)).all()) == 1


def test_parallel_submits_take_exactly_the_seconds_left(make_api: Callable[..., Api]) -> None:
    """Ten submits at once against 5 s left: exactly the three that fit are queued, not every
    one that read the remainder before another queued."""
    api = _quota_api(make_api, minutes=1, used=55.0)
    file_id = api.upload()
    with ThreadPoolExecutor(10) as pool:
        statuses = sorted(pool.map(lambda _: api.queue_separate(file_id).status_code, range(10)))
    assert statuses == [202] * 3 + [402] * 7
    with api.services.db.read() as s:
        held = s.execute(select(QuotaHold.seconds)).scalars().all()
    assert held == [UPLOAD_SECONDS] * 3


def test_each_vendor_protocol_refuses_in_its_own_code(make_api: Callable[..., Api]) -> None:
    api = _quota_api(make_api, minutes=1, used=60.0)
    file_id = api.upload()
    gaudio = api.client.post(
        "/developers/api/v1/gsep_music_hq_v1/jobs",
        json={"audioUploadId": file_id, "type": "vocal"},
        headers={"x-ga-apikey": api.key},
    )
    assert gaudio.status_code == 200 and gaudio.json()["resultCode"] == 1102, gaudio.text
    assert "resets at 2030-02-01T00:00:00Z" in gaudio.json()["resultMessage"]
    audio = api.files.get("stereo.wav").path.read_bytes()
    musicgpt = api.extract(audio)
    assert musicgpt.status_code == 402, musicgpt.text
    assert musicgpt.json()["success"] is False and musicgpt.json()["error"] == "QUOTA_EXCEEDED"
    suno = api.post("/api/v1/vocal-removal/generate", json={"fileId": file_id})
    assert suno.status_code == 200 and suno.json()["code"] == 429, suno.text
    assert "0.00 minutes left" in suno.json()["msg"]


def test_sunoapi_credits_are_the_whole_minutes_left(make_api: Callable[..., Api]) -> None:
    api = _quota_api(make_api, minutes=5, used=90.0)  # 3.5 minutes left
    api.queue_separate(api.upload())  # holds 1.5 s: 3.475 minutes left
    r = api.get("/api/v1/generate/credit")
    assert r.json() == {"code": 200, "msg": "success", "data": 3}
    unlimited = api.get("/api/v1/generate/credit", key=api.other_key)
    assert unlimited.json()["data"] == 2**31 - 1


def test_the_native_api_says_what_is_left_of_the_allowance(make_api: Callable[..., Api]) -> None:
    """A native client saw its allowance only as a 402: GET /v1/usage now says where the
    account stands this month (the client reads it too), null for an unlimited one."""
    api = _quota_api(make_api, minutes=5, used=90.0)  # 210 s left
    api.queue_separate(api.upload())  # holds 1.5 s
    body = api.get("/v1/usage").json()
    assert body["allowance"] == {
        "monthly_minutes": 5,
        "used_seconds": 90.0,
        "held_seconds": UPLOAD_SECONDS,
        "left_seconds": 208.5,
        "resets_at": "2030-02-01T00:00:00.000000Z",
    }
    # The month now, whatever period is listed.
    assert api.get("/v1/usage?to=2029-01-01").json()["allowance"]["left_seconds"] == 208.5
    allowance = Usage.from_json(body).allowance
    assert allowance is not None and allowance.left_seconds == 208.5
    assert allowance.resets_at == datetime(2030, 2, 1, tzinfo=UTC)
    unlimited = api.get("/v1/usage", key=api.other_key).json()
    assert unlimited["allowance"] is None and Usage.from_json(unlimited).allowance is None


def test_an_audio_url_is_refused_at_submit_only_when_nothing_is_left(
    make_api: Callable[..., Api],
) -> None:
    """Its duration is known once the worker has fetched it (test_worker.py checks it then)."""
    api = _quota_api(make_api, minutes=1, used=59.0)
    body = {"input": {"audio_url": "https://example.org/song.wav", "prompt": "vocals"}}
    assert api.post("/v1/queue/audio/separate", json=body).status_code == 202
    with api.services.db.write() as s:
        s.add(UsageRecord(account_id=api.account, job_id="req_more", model="m", quantity=1.0,
                          recorded_at=T0))  # fmt: skip
    r = api.post("/v1/queue/audio/separate", json=body)
    assert (r.status_code, r.json()["error"]["code"]) == (402, "QUOTA_EXCEEDED")


def test_a_sunoapi_audio_url_too_long_for_the_allowance_reads_error_code_429(
    make_api: Callable[..., Api],
) -> None:
    """The worker fails such a task QUOTA_EXCEEDED (test_worker.py); the record says it in
    the vendor's "insufficient credits" code."""
    api = _quota_api(make_api, minutes=1, used=0.0)
    made = api.post(
        "/api/v1/vocal-removal/generate", json={"audioUrl": "https://example.org/long.mp3"}
    ).json()
    assert made["code"] == 200, made
    task = made["data"]["taskId"]
    queue = api.services.queue
    claim = queue.claim("test-worker")
    assert claim is not None and claim.id == task
    message = "this account's allowance of 1 audio minutes a month has 1.00 minutes left"
    queue.fail(task, "test-worker", code="QUOTA_EXCEEDED", message=message, retryable=False)
    record = api.get(f"/api/v1/vocal-removal/record-info?taskId={task}").json()["data"]
    assert record["errorCode"] == 429
    assert record["errorMessage"].startswith("QUOTA_EXCEEDED: this account's allowance")


def test_the_migration_leaves_every_account_unlimited_and_downgrades(
    backend: Backend, tmp_path: Path
) -> None:
    url = backend.servers.create_database() if backend.servers else f"sqlite:///{tmp_path}/q.db"
    db = Database(url)
    try:
        migrate(db, "0007")  # the release before allowances
        account, _ = create_key(db)
        migrate(db)
        with db.read() as s:
            assert quota_state(s, account, T0) is None
        set_quota(db, account, 10)
        with db.read() as s:
            state = quota_state(s, account, T0)
        assert state is not None and (state.minutes, state.left_seconds) == (10, 600.0)
        downgrade(db, "0007")
        with db.read() as s:
            assert s.execute(text("SELECT count(*) FROM accounts")).scalar_one() == 1
    finally:
        db.dispose()
        if backend.servers:
            backend.servers.drop_database(url)


def test_an_allowance_out_of_range_or_given_with_an_existing_account_is_refused(
    make_api: Callable[..., Any],
) -> None:
    api = make_api()
    with pytest.raises(Exception, match="0 to 2147483647 minutes"):
        set_quota(api.services.db, api.account, -1)
    with pytest.raises(Exception, match="no account acct_nope"):
        set_quota(api.services.db, "acct_nope", 5)
    with pytest.raises(Exception, match="keys quota ACCOUNT"):
        create_key(api.services.db, account_id=api.account, monthly_minutes=5)
