"""Usage: audio seconds per key and model, recorded as each job completes, shown in results
and listed by ``GET /v1/usage?from=&to=``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from api_support import Api, api, make_api
from demixer.service.schema import Job, UsageRecord
from demixer.vendors.musicgpt.wire import musicgpt_event

# The whole module runs on SQLite + local storage and on PostgreSQL + S3 (conftest.py).
pytestmark = pytest.mark.usefixtures("backend")

__all__ = ["api", "make_api"]  # fixtures

T0 = datetime(2030, 3, 1, 9, 0, tzinfo=UTC)


def _run(api: Api, file_id: str, key: str | None = None, fmt: str = "wav") -> str:
    r = api.post(
        "/v1/queue/audio/separate",
        key=key,
        json={"input": {"file_id": file_id, "prompt": "vocals", "output_format": fmt}},
    )
    assert r.status_code == 202, r.text
    job_id = str(r.json()["request_id"])
    api.worker_done(job_id)
    return job_id


def test_usage_recorded_and_in_the_result(api: Api) -> None:
    seconds = api.files.get("mono.wav").seconds  # what the stand-in worker reports
    job_id = _run(api, api.upload())
    with api.services.db.read() as s:
        record = s.query(UsageRecord).filter_by(job_id=job_id).one()
        job = s.get(Job, job_id)
        assert job is not None
    assert (record.account_id, record.key_id, record.model) == (
        api.account,
        job.key_id,
        job.engine_model,
    )
    assert record.feature == "audio_seconds" and record.quantity == seconds
    usage = api.get(f"/v1/queue/requests/{job_id}/result").json()["usage"]
    assert usage == {
        "feature": "audio_seconds",
        "quantity": seconds,
        "billing_status": "not_billed",
    }


def test_failed_and_cancelled_jobs_record_nothing(api: Api) -> None:
    file_id = api.upload()
    job_id = api.queue_separate(file_id).json()["request_id"]
    api.put(f"/v1/queue/requests/{job_id}/cancel")
    with api.services.db.read() as s:
        assert s.query(UsageRecord).count() == 0


def test_usage_listed_per_key_and_model_by_date(api: Api) -> None:
    db = api.services.db
    seconds = api.files.get("mono.wav").seconds
    second_key = api.key_with("audio:separate", "files:read", "files:write")
    db.clock = lambda: T0
    first = _run(api, api.upload())
    db.clock = lambda: T0 + timedelta(days=10)
    file_id = api.upload()
    _run(api, file_id, fmt="flac")
    second = _run(api, file_id, key=second_key, fmt="mp3")
    with db.read() as s:
        job_1, job_2 = s.get(Job, first), s.get(Job, second)
        assert job_1 is not None and job_2 is not None
        key_1, key_2, model = job_1.key_id, job_2.key_id, job_1.engine_model
    # Default period: the last 30 days up to now.
    body = api.get("/v1/usage").json()
    assert body["object"] == "list"
    got = {
        (line["key_id"], line["model"]): (line["jobs"], line["quantity"]) for line in body["data"]
    }
    assert got == {
        (key_1, model): (2, round(2 * seconds, 3)),
        (key_2, model): (1, round(seconds, 3)),
    }
    assert all(line["feature"] == "audio_seconds" for line in body["data"])
    assert body["total"] == round(3 * seconds, 3)
    assert datetime.fromisoformat(body["to"]) == T0 + timedelta(days=10)
    assert datetime.fromisoformat(body["from"]) == T0 - timedelta(days=20)
    # A range holding only the first job.
    r = api.get("/v1/usage", params={"from": "2030-03-01T00:00:00Z", "to": "2030-03-02"})
    assert r.status_code == 200, r.text
    only = r.json()["data"]
    assert [(line["key_id"], line["jobs"], line["quantity"]) for line in only] == [
        (key_1, 1, round(seconds, 3))
    ]
    # Another account sees none of it; a bad date is a 400; models:read alone is a 403.
    assert api.get("/v1/usage", key=api.other_key).json()["data"] == []
    r = api.get("/v1/usage", params={"from": "yesterday"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "from"
    # Dates whose UTC time is outside the years 1-9999 were a 500.
    for param, value in (("from", "0001-01-01T00:00:00+14:00"), ("to", "9999-12-31T23:59-14:00")):
        r = api.get("/v1/usage", params={param: value})
        assert r.status_code == 400 and r.json()["error"] == {
            "code": "INVALID_REQUEST",
            "message": f"{param}={value!r} is outside the years 1 to 9999 in UTC",
            "param": param,
            "request_id": r.headers["x-request-id"],
        }
    r = api.get("/v1/usage", params={"to": "0001-01-01"})  # its 30 days before: from year 1
    assert r.status_code == 200 and r.json()["from"] == "0001-01-01T00:00:00.000000Z"
    assert api.get("/v1/usage", key=api.key_with("models:read")).status_code == 403


def test_a_date_alone_as_to_is_that_whole_day(api: Api) -> None:
    """`to` is inclusive: ``from=2030-03-01&to=2030-03-01`` asked for March 1st's usage and
    got none (a date alone read as its midnight, before the day's work)."""
    api.services.db.clock = lambda: T0
    _run(api, api.upload())
    r = api.get("/v1/usage", params={"from": "2030-03-01", "to": "2030-03-01"})
    assert r.status_code == 200, r.text
    assert [line["jobs"] for line in r.json()["data"]] == [1]
    assert (r.json()["from"], r.json()["to"]) == (
        "2030-03-01T00:00:00.000000Z",
        "2030-03-01T23:59:59.999999Z",
    )


def test_an_unescaped_offset_plus_and_a_lower_case_t_and_z_are_read(api: Api) -> None:
    """``curl '...?from=2030-03-01T10:00+05:30'`` sends the "+" as is, which a query string
    reads as a space: it was a 400 "not an ISO 8601 date or time"."""
    r = api.get("/v1/usage?from=2030-03-01T10:00+05:30&to=2030-03-01T14:30:00.5+05:30")
    assert r.status_code == 200, r.text
    assert (r.json()["from"], r.json()["to"]) == (
        "2030-03-01T04:30:00.000000Z",
        "2030-03-01T09:00:00.500000Z",
    )
    # RFC 3339's lower-case "t" and "z" (also a 400).
    r = api.get("/v1/usage", params={"from": "2030-03-01t10:00:00z", "to": "2030-03-02"})
    assert r.status_code == 200 and r.json()["from"] == "2030-03-01T10:00:00.000000Z", r.text


def test_musicgpt_cost_of_a_result_cache_hit_is_its_usage(api: Api) -> None:
    """A MusicGPT extraction the result cache answered records 0 s in ``/v1/usage``, but its
    ``credit_estimate``, byId ``conversion_cost`` and webhook said the song's minutes: a
    client adding up ``conversion_cost`` billed 0.03 min more than demixer counted."""
    wav = api.files.get("stereo.wav")  # 1.5 s: 0.03 min

    def extract() -> dict[str, object]:
        with wav.path.open("rb") as fh:
            r = api.post(
                "/api/public/v1/Extraction",
                headers={"Authorization": api.key},  # MusicGPT's: the bare key
                files={"audio_file": ("song.wav", fh, "audio/wav")},
                data={"stems": '["vocals"]'},
            )
        assert r.status_code == 200, r.text
        return dict(r.json())

    first = extract()
    assert first["credit_estimate"] == 0.03
    api.worker_done(str(first["task_id"]), names=("vocals", "residual"))
    again = extract()
    assert again["eta"] == 0 and again["credit_estimate"] == 0.0
    byid = api.get(
        "/api/public/v1/byId",
        headers={"Authorization": api.key},
        params={"conversionType": "EXTRACTION", "task_id": again["task_id"]},
    ).json()["conversion"]
    assert (byid["status"], byid["conversion_cost"]) == ("COMPLETED", 0.0)
    assert byid["conversion_duration"] == api.files.get("mono.wav").seconds  # the stand-in's
    with api.services.db.read() as s:
        job = s.get(Job, again["task_id"])
        assert job is not None
        hook = musicgpt_event(api.services, job)
    assert hook is not None and hook[1]["conversion_cost"] == 0.0
    assert [line["quantity"] for line in api.get("/v1/usage").json()["data"]] == [
        api.files.get("mono.wav").seconds
    ]
