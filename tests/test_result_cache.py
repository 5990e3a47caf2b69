"""The result cache: an identical request (same input bytes, model, stems, options, account)
completes at once with copies of a completed request's outputs; no worker runs it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import update

from api_support import Api, api, make_api
from demixer.service.jobs import cache
from demixer.service.jobs.cache import fingerprint
from demixer.service.jobs.contract import JobParams, UrlInput
from demixer.service.schema import Job, UsageRecord

# The whole module runs on SQLite + local storage and on PostgreSQL + S3 (conftest.py).
pytestmark = pytest.mark.usefixtures("backend")

__all__ = ["api", "make_api"]  # fixtures


def _completed(api: Api, file_id: str, **extra: Any) -> str:
    r = api.queue_separate(file_id, **extra)
    assert r.status_code == 202, r.text
    job_id = str(r.json()["request_id"])
    api.worker_done(job_id)
    return job_id


def _downloads(api: Api, job_id: str) -> dict[str, bytes]:
    r = api.get(f"/v1/queue/requests/{job_id}/result")
    assert r.status_code == 200, r.text
    out = {}
    for name in ("target", "residual"):
        dl = api.fetch(r.json()["data"][name]["url"])
        assert dl.status_code == 200, dl.text
        out[name] = dl.content
    return out


def test_identical_request_reuses_outputs(api: Api) -> None:
    file_id = api.upload()
    first = _completed(api, file_id)
    r = api.queue_separate(file_id)
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "COMPLETED"
    second = r.json()["request_id"]
    # Done at once: nothing is queued for a worker.
    assert api.services.queue.claim("nobody") is None
    status = api.get(f"/v1/queue/requests/{second}/status?logs=true").json()
    assert status["status"] == "COMPLETED"
    logs = " | ".join(line["message"] for line in status["logs"])
    assert f"reused the outputs of {first}" in logs and "no recomputation" in logs
    assert _downloads(api, second) == _downloads(api, first)
    with api.services.db.read() as s:
        job = s.get(Job, second)
        assert job is not None and job.reused_from == first
        assert all(
            o["key"].startswith(f"outputs/{second}/cached/") for o in (job.outputs or {}).values()
        )
        usage = s.query(UsageRecord).filter_by(job_id=second).one()
        assert usage.quantity == 0.0  # nothing was processed
    result = api.get(f"/v1/queue/requests/{second}/result").json()
    assert result["usage"]["quantity"] == 0.0
    assert result["data"]["duration"] > 0


def test_a_reused_result_counts_its_own_copies_against_the_storage_cap(api: Api) -> None:
    """Each request owns its copies (deleting one never touches the other), so an answer
    from the cache holds as many stems' bytes as the result it copied."""
    file_id = api.upload()
    first = _completed(api, file_id)
    assert api.queue_separate(file_id).json()["status"] == "COMPLETED"
    with api.services.db.read() as s:
        job = s.get(Job, first)
        assert job is not None
        stems = sum(out["size"] for out in (job.outputs or {}).values())
    assert api.get("/v1/usage").json()["storage"]["results_bytes"] == 2 * stems


def test_same_bytes_in_another_upload_hit(api: Api) -> None:
    r = api.queue_separate(api.upload(as_name="alpha.wav"))
    first = r.json()["request_id"]
    api.worker_done(first, track="alpha")
    # The same file's bytes, uploaded again under another name.
    r = api.queue_separate(api.upload(as_name="beta.wav"))
    assert r.json()["status"] == "COMPLETED"
    with api.services.db.read() as s:
        job = s.get(Job, r.json()["request_id"])
        assert job is not None and job.reused_from == first
    # Its downloads are named after it, not after the upload whose outputs it reuses.
    data = api.get(f"/v1/queue/requests/{r.json()['request_id']}/result").json()["data"]
    assert (data["target"]["file_name"], data["residual"]["file_name"]) == (
        "beta_target.wav",
        "beta_residual.wav",
    )


def test_other_options_stems_and_accounts_miss(api: Api) -> None:
    file_id = api.upload()
    _completed(api, file_id)
    assert api.queue_separate(file_id, input={"output_format": "flac"}).json()["status"] == (
        "IN_QUEUE"
    )
    assert api.queue_separate(file_id, "drums").json()["status"] == "IN_QUEUE"
    assert api.queue_separate(file_id, input={"quality": "best"}).json()["status"] == "IN_QUEUE"
    assert api.queue_separate(api.upload("mono.wav")).json()["status"] == "IN_QUEUE"
    theirs = api.post(
        "/v1/files",
        key=api.other_key,
        files={"file": ("stereo.wav", api.files.get("stereo.wav").path.read_bytes())},
    ).json()["file_id"]
    r = api.post(
        "/v1/queue/audio/separate",
        key=api.other_key,
        json={"input": {"file_id": theirs, "prompt": "vocals"}},
    )
    assert r.status_code == 202 and r.json()["status"] == "IN_QUEUE"


def test_the_same_spans_in_another_order_are_the_same_result(api: Api) -> None:
    # Each span's gain is a maximum over all of them: their order changes no sample, and the
    # same spans listed in another order ran the whole separation again.
    file_id = api.upload()
    early = {"start": 0.0, "end": 0.5, "include": True}
    late = {"start": 1.0, "end": 1.5, "include": True}
    first = _completed(api, file_id, input={"spans": [late, early]})
    r = api.queue_separate(file_id, input={"spans": [early, late]})
    assert (r.status_code, r.json()["status"]) == (202, "COMPLETED"), r.text
    with api.services.db.read() as s:
        job = s.get(Job, r.json()["request_id"])
        assert job is not None and job.reused_from == first
    # Other spans are another result.
    other = api.queue_separate(file_id, input={"spans": [early]})
    assert (other.status_code, other.json()["status"]) == (202, "IN_QUEUE"), other.text


def test_deleting_either_job_keeps_the_other(api: Api) -> None:
    file_id = api.upload()
    first = _completed(api, file_id)
    second = api.queue_separate(file_id).json()["request_id"]
    expected = _downloads(api, first)
    assert api.delete(f"/v1/queue/requests/{first}").status_code == 204
    assert _downloads(api, second) == expected
    third = api.queue_separate(file_id).json()  # reuses the second now
    assert third["status"] == "COMPLETED"
    assert api.delete(f"/v1/queue/requests/{third['request_id']}").status_code == 204
    assert _downloads(api, second) == expected


def test_a_source_deleted_while_it_is_reused_leaves_the_request_to_run(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The source's outputs vanish between being found and being copied (its DELETE, or the
    sweeper, on another process): the request answered 404 naming the other request's blob."""
    file_id = api.upload()
    first = _completed(api, file_id)
    found = cache.find_reusable

    def then_deleted(*args: Any) -> Any:
        source = found(*args)
        api.services.storage.delete_prefix(f"outputs/{first}/")  # the race, made certain
        return source

    monkeypatch.setattr(cache, "find_reusable", then_deleted)
    r = api.queue_separate(file_id)
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "IN_QUEUE"  # the cache is a shortcut: it runs instead
    second = r.json()["request_id"]
    assert api.services.storage.delete_prefix(f"outputs/{second}/") == 0  # no copy left
    claim = api.services.queue.claim("a-worker")
    assert claim is not None and claim.id == second


def test_expired_or_unfinished_jobs_are_not_reused(api: Api) -> None:
    file_id = api.upload()
    first = _completed(api, file_id)
    with api.services.db.write() as s:
        s.execute(update(Job).where(Job.id == first).values(expired=True))
    queued = api.queue_separate(file_id).json()
    assert queued["status"] == "IN_QUEUE"  # and the queued one is no source either:
    assert api.queue_separate(file_id).json()["status"] == "IN_QUEUE"


def test_cache_hits_ignore_the_concurrency_limit(make_api: Callable[..., Api]) -> None:
    api = make_api(max_concurrent_jobs=1)
    file_id = api.upload()
    _completed(api, file_id)
    assert api.queue_separate(file_id, input={"output_format": "flac"}).status_code == 202
    r = api.queue_separate(file_id)  # the limit is reached, but nothing will run
    assert r.status_code == 202 and r.json()["status"] == "COMPLETED"


def test_url_inputs_are_never_cached() -> None:
    params = JobParams(
        input=UrlInput(audio_url="https://example.org/a.wav"), stems=("vocals", "residual")
    )
    assert fingerprint(None, "spleeter-2stems", params) is None
    a = fingerprint("ab" * 32, "spleeter-2stems", params)
    assert a is not None and a != fingerprint("ab" * 32, "spleeter-4stems", params)
