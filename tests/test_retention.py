"""Retention: uploads expire after 72 h, results 48 h after they finish; the sweeper deletes.

The database clock is moved by hand (``Database(url, clock=...)``); everything else is real:
SQLite, local storage, real audio, the API through Starlette's TestClient. Signed URLs keep
the wall clock (their own short expiry is tested elsewhere).
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import func, select, update

from api_support import TESTSERVER, Api, close_app
from audiofiles import AudioFiles
from demixer.errors import NotFound, StorageUnavailable
from demixer.server.app import create_app
from demixer.server.compose import build_services
from demixer.service.accounts.keys import ALL_SCOPES, create_key
from demixer.service.db import Database
from demixer.service.retention.orphans import (
    DEFAULT_AGE,
    MIN_AGE,
    Orphans,
    delete_orphans,
    find_orphans,
)
from demixer.service.retention.purge import Purged, purge
from demixer.service.retention.sweeper import SweepCounts, Sweeper
from demixer.service.schema import Delivery, File, Job, JobLog
from demixer.settings import Settings
from demixer.storage.s3 import S3Storage

# The whole module runs on SQLite + local storage and on PostgreSQL + S3 (conftest.py).
pytestmark = pytest.mark.usefixtures("backend")

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

START = datetime(2031, 3, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
SECOND = timedelta(seconds=1)


class Clocked(Api):
    """An :class:`Api` whose database clock the test moves."""

    now: list[datetime]

    def at(self, when: datetime) -> None:
        self.now[0] = when

    def sweep(self) -> SweepCounts:
        return Sweeper(self.services).sweep_once()


@pytest.fixture
def clocked(tmp_path: Path) -> Iterator[Clocked]:
    now = [START]
    settings = Settings(
        data_dir=tmp_path / "data",
        model_dir=tmp_path / "models",
        public_url=TESTSERVER,
    )
    db = Database(settings.database, clock=lambda: now[0])
    services = build_services(settings, db=db)
    db.create_all()
    account, key = create_key(db, scopes=ALL_SCOPES)
    _, other = create_key(db)
    (tmp_path / "audio").mkdir()
    client = TestClient(create_app(services), raise_server_exceptions=False)
    api = Clocked(client, services, account, key, other, AudioFiles(tmp_path / "audio"), tmp_path)
    api.now = now
    try:
        yield api
    finally:
        close_app(client)


def _error(r: Any, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code, r.text


def _file(api: Api, file_id: str) -> File:
    with api.services.db.read() as s:
        row = s.get(File, file_id)
        assert row is not None
        return row


def _job(api: Api, job_id: str) -> Job:
    with api.services.db.read() as s:
        job = s.get(Job, job_id)
        assert job is not None
        return job


def test_an_upload_expires_after_72_hours_and_the_sweeper_deletes_it(clocked: Clocked) -> None:
    api = clocked
    file_id = api.upload()
    pending = api.announce()["file_id"]  # never uploaded: expires all the same
    key = _file(api, file_id).storage_key
    r = api.get(f"/v1/files/{file_id}")
    assert r.status_code == 200
    assert datetime.fromisoformat(r.json()["expires_at"]) == START + 72 * HOUR

    api.at(START + 72 * HOUR - SECOND)  # just before: everything still works
    assert api.get(f"/v1/files/{file_id}").status_code == 200
    queued = api.queue_separate(file_id)
    assert queued.status_code == 202
    assert api.sweep() == SweepCounts()
    assert api.services.storage.exists(key)

    api.at(START + 72 * HOUR + SECOND)  # past: 410 at once, before any sweep
    gone = api.get(f"/v1/files/{file_id}")
    _error(gone, 410, "FILE_EXPIRED")
    when = (START + 72 * HOUR).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # as every time demixer sends
    assert gone.json()["error"]["message"] == f"file {file_id!r} expired at {when}"
    _error(api.queue_separate(file_id), 410, "FILE_EXPIRED")
    assert api.services.storage.exists(key)  # the bytes wait for the sweeper

    # The job queued just before still reads the file: the sweeper keeps its bytes until the
    # job ends (it deleted them, and the job failed with a storage key for a message).
    counts = api.sweep()
    assert (counts.files, counts.results, counts.blobs) == (1, 0, 0)  # the pending one only
    assert api.services.storage.exists(key)
    api.worker_done(queued.json()["request_id"])
    counts = api.sweep()
    assert (counts.files, counts.results, counts.blobs) == (1, 0, 1)
    assert not api.services.storage.exists(key)
    assert _file(api, file_id).status == "expired" and _file(api, pending).status == "expired"
    _error(api.get(f"/v1/files/{file_id}"), 410, "FILE_EXPIRED")
    _error(api.queue_separate(file_id), 410, "FILE_EXPIRED")
    _error(api.delete(f"/v1/files/{file_id}"), 410, "FILE_EXPIRED")
    assert api.sweep() == SweepCounts()  # nothing twice


def test_a_result_expires_48_hours_after_it_finished(clocked: Clocked) -> None:
    api = clocked
    file_id = api.upload()
    job_id = api.queue_separate(file_id).json()["request_id"]
    finished = START + 2 * HOUR
    api.at(finished)
    api.worker_done(job_id)
    assert _job(api, job_id).expires_at == finished + 48 * HOUR  # set by the final hook

    api.at(finished + 48 * HOUR - 60 * SECOND)  # just before: result and downloads work
    r = api.get(f"/v1/queue/requests/{job_id}/result")
    assert r.status_code == 200, r.text
    body = r.json()
    assert datetime.fromisoformat(body["retention"]["delete_after"]) == finished + 48 * HOUR
    target = body["data"]["target"]["url"]
    if api.direct:  # a presigned URL is valid no longer than the result is kept
        assert 0 < int(parse_qs(urlsplit(target).query)["X-Amz-Expires"][0]) <= 60
    assert api.fetch(target).status_code == 200
    assert api.sweep() == SweepCounts()

    api.at(finished + 48 * HOUR + SECOND)  # past: 410, before the sweeper has run
    _error(api.get(f"/v1/queue/requests/{job_id}/result"), 410, "RESULT_EXPIRED")
    if not api.direct:  # a presigned S3 URL is the bucket's: it lives out its own (real) TTL
        _error(api.fetch(target), 410, "RESULT_EXPIRED")
    outputs = [o["key"] for o in (_job(api, job_id).outputs or {}).values()]
    assert all(api.services.storage.exists(k) for k in outputs)

    counts = api.sweep()
    assert (counts.files, counts.results, counts.blobs) == (0, 1, 2)  # the input lives 72 h
    assert not any(api.services.storage.exists(k) for k in outputs)
    assert _job(api, job_id).expired is True
    _error(api.get(f"/v1/queue/requests/{job_id}/result"), 410, "RESULT_EXPIRED")
    if api.direct:  # the bucket no longer has the blob
        assert api.fetch(target).status_code == 404
    else:
        _error(api.fetch(target), 410, "RESULT_EXPIRED")  # never a 500
    status = api.get(f"/v1/queue/requests/{job_id}/status")
    assert status.status_code == 200 and status.json()["status"] == "COMPLETED"
    assert api.sweep() == SweepCounts()


def test_a_result_completed_before_expiry_times_were_stored_is_swept_too(
    clocked: Clocked,
) -> None:
    """A job completed on a database of schema 0001 has no ``expires_at`` once upgraded
    (migration 0002 added the column empty). The API answered 410 "expired ... and were
    deleted" 48 h after it finished, but the sweeper looked at ``expires_at`` alone: its stems
    stayed on disk for good, and its record with them."""
    api = clocked
    job_id = api.queue_separate(api.upload()).json()["request_id"]
    finished = START + 2 * HOUR
    api.at(finished)
    api.worker_done(job_id)
    with api.services.db.write() as s:  # as the upgrade leaves a row of schema 0001
        s.execute(update(Job).where(Job.id == job_id).values(expires_at=None))
    outputs = [o["key"] for o in (_job(api, job_id).outputs or {}).values()]

    api.at(finished + 48 * HOUR - SECOND)
    assert api.get(f"/v1/queue/requests/{job_id}/result").status_code == 200
    assert api.sweep() == SweepCounts()

    api.at(finished + 48 * HOUR + SECOND)
    _error(api.get(f"/v1/queue/requests/{job_id}/result"), 410, "RESULT_EXPIRED")
    counts = api.sweep()
    assert (counts.results, counts.blobs) == (1, 2)
    assert not any(api.services.storage.exists(k) for k in outputs)


def test_each_vendor_says_an_expired_result_is_gone_in_its_own_envelope(clocked: Clocked) -> None:
    """Never a success with links to deleted files (or none at all): Gaudio's 1104, sunoapi's
    code 404, MusicGPT's HTTP 404, as the native API's 410, with when and what to do."""
    api = clocked
    gaudio_key = {"x-ga-apikey": api.key}
    body = {"audioUploadId": api.upload("stereo.wav"), "type": "vocal"}
    made = api.client.post(
        "/developers/api/v1/gsep_music_hq_v1/jobs", headers=gaudio_key, json=body
    )
    gaudio = made.json()["resultData"]["jobId"]
    api.worker_done(gaudio, names=("vocals", "residual"))
    made = api.post("/api/v1/vocal-removal/generate", json={"fileId": api.upload("stereo.flac")})
    suno = made.json()["data"]["taskId"]
    api.worker_done(suno, names=("vocals", "residual"))
    song = api.files.get("long.wav").path
    files = {"audio_file": ("long.wav", song.read_bytes(), "audio/wav")}
    made = api.post("/api/public/v1/Extraction", data={"stems": '["vocals"]'}, files=files)
    musicgpt = made.json()["task_id"]
    api.worker_done(musicgpt, names=("vocals", "residual"))
    expires = START + 48 * HOUR  # all three finished at START

    def read() -> tuple[dict[str, Any], dict[str, Any], Any]:
        url = f"/developers/api/v1/gsep_music_hq_v1/jobs/{gaudio}"
        return (
            api.client.get(url, headers=gaudio_key).json(),
            api.get(f"/api/v1/vocal-removal/record-info?taskId={suno}").json(),
            api.get(f"/api/public/v1/byId?conversionType=EXTRACTION&task_id={musicgpt}"),
        )

    api.at(expires - SECOND)
    kept = read()
    assert kept[0]["resultData"]["status"] == "success", kept[0]
    assert kept[1]["data"]["successFlag"] == "SUCCESS", kept[1]
    assert kept[1]["data"]["response"]["vocalUrl"] is not None
    assert kept[2].json()["conversion"]["status"] == "COMPLETED", kept[2].text
    # Each protocol reads its own jobs only.
    other = api.get(f"/api/v1/vocal-removal/record-info?taskId={gaudio}").json()
    assert (other["code"], other["msg"]) == (404, f"no task {gaudio!r}")

    def said(job: str) -> str:
        when = expires.strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # as every time demixer sends
        return f"request {job}'s outputs expired at {when} and were deleted; submit it again"

    api.at(expires + SECOND)  # past: before the sweeper has run, and after
    for sweep in (False, True):
        if sweep:
            api.sweep()
        gone = read()

        assert gone[0] == {"resultCode": 1104, "resultData": None, "resultMessage": said(gaudio)}
        assert gone[1] == {"code": 404, "msg": said(suno), "data": None}
        assert gone[2].status_code == 404
        assert gone[2].json() == {
            "success": False,
            "error": "RESULT_EXPIRED",
            "message": said(musicgpt),
        }


def test_what_a_failed_requests_cut_off_attempt_stored_is_swept_when_a_result_would_be(
    clocked: Clocked,
) -> None:
    """An attempt whose lease was lost while it stored its stems (a long outage) leaves them;
    when the request then fails, nothing swept them ever: the sweeper took completed ones only."""
    api = clocked
    job_id = api.queue_separate(api.upload()).json()["request_id"]
    claim = api.services.queue.claim("cut-off-worker")
    assert claim is not None and claim.id == job_id
    stray = f"outputs/{job_id}/attempt-1/target.wav"
    api.services.storage.put_file(stray, api.files.get("mono.wav").path)
    ended = START + HOUR
    api.at(ended)
    status = api.services.queue.fail(
        job_id, "cut-off-worker", code="MODEL_FAILED", message="boom", retryable=False
    )
    assert status == "FAILED"

    api.at(ended + 48 * HOUR - SECOND)
    assert api.sweep() == SweepCounts()
    assert api.services.storage.exists(stray)
    api.at(ended + 48 * HOUR + SECOND)
    counts = api.sweep()
    assert (counts.results, counts.blobs) == (1, 1)
    assert not api.services.storage.exists(stray)
    # The request still says why it failed (not that a result expired).
    _error(api.get(f"/v1/queue/requests/{job_id}/result"), 422, "MODEL_FAILED")
    assert api.sweep() == SweepCounts()


def test_a_deleted_blob_answers_404_not_500(clocked: Clocked) -> None:
    api = clocked
    job_id = api.queue_separate(api.upload()).json()["request_id"]
    api.worker_done(job_id)
    target = api.get(f"/v1/queue/requests/{job_id}/result").json()["data"]["target"]["url"]
    api.services.storage.delete_prefix(f"outputs/{job_id}/")  # lost behind the API's back
    if api.direct:  # the bucket answers for a presigned URL
        assert api.fetch(target).status_code == 404
    else:
        _error(api.fetch(target), 404, "NOT_FOUND")


def test_delete_endpoints_delete_at_once(clocked: Clocked) -> None:
    api = clocked
    file_id = api.upload()
    key = _file(api, file_id).storage_key
    job_id = api.queue_separate(file_id).json()["request_id"]
    api.worker_done(job_id)
    outputs = [o["key"] for o in (_job(api, job_id).outputs or {}).values()]
    assert api.services.storage.exists(key) and all(map(api.services.storage.exists, outputs))

    assert api.delete(f"/v1/queue/requests/{job_id}").status_code == 204
    assert not any(api.services.storage.exists(k) for k in outputs)
    assert api.delete(f"/v1/files/{file_id}").status_code == 204
    assert not api.services.storage.exists(key)
    _error(api.get(f"/v1/files/{file_id}"), 404, "NOT_FOUND")
    assert api.sweep() == SweepCounts()


def test_deleting_a_musicgpt_extraction_deletes_the_audio_file_sent_with_it(
    clocked: Clocked,
) -> None:
    # MusicGPT's audio_file is stored as an upload whose id no answer names: its owner has
    # nothing but the task to delete it by.
    api = clocked
    with api.files.get("stereo.wav").path.open("rb") as song:
        r = api.client.post(
            "/api/public/v1/Extraction",
            headers={"Authorization": api.key},
            data={"stems": '["vocals"]'},
            files={"audio_file": ("song.wav", song, "audio/wav")},
        )
    assert r.status_code == 200, r.text
    task = r.json()["task_id"]
    params = _job(api, task).params
    file_id, key = params["input"]["file_id"], params["input"]["storage_key"]
    assert api.services.storage.exists(key)

    assert api.delete(f"/v1/queue/requests/{task}").status_code == 204
    assert not api.services.storage.exists(key)
    assert _file(api, file_id).status == "deleted"
    assert api.sweep() == SweepCounts()


def test_a_delete_the_store_refuses_keeps_the_request_to_delete_again(
    clocked: Clocked, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Object storage down during a DELETE: 503, and the request is still there to delete once
    it is back. The row went first, so the outputs stayed stored with nothing pointing at them
    (no sweep ever found them) while a second DELETE answered 404."""
    api = clocked
    job_id = api.queue_separate(api.upload()).json()["request_id"]
    api.worker_done(job_id)
    outputs = [o["key"] for o in (_job(api, job_id).outputs or {}).values()]
    storage = api.services.storage

    def unreachable(prefix: str) -> int:
        raise StorageUnavailable("object storage is unavailable; retry shortly")

    with monkeypatch.context() as m:
        m.setattr(storage, "delete_prefix", unreachable)
        _error(api.delete(f"/v1/queue/requests/{job_id}"), 503, "STORAGE_UNAVAILABLE")
    assert api.get(f"/v1/queue/requests/{job_id}/status").status_code == 200
    assert all(map(storage.exists, outputs))
    assert api.delete(f"/v1/queue/requests/{job_id}").status_code == 204
    assert not any(map(storage.exists, outputs))
    _error(api.get(f"/v1/queue/requests/{job_id}/status"), 404, "NOT_FOUND")


def test_a_running_request_the_store_refuses_to_delete_is_kept_to_delete_again(
    clocked: Clocked, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Object storage down during the DELETE of a running request: the row was cancelled and
    deleted first, then the 503, so what its worker had stored stayed with nothing pointing
    at it, and a second DELETE answered 404. Now nothing changes: 503, and it is still there."""
    api = clocked
    job_id = api.queue_separate(api.upload()).json()["request_id"]
    claim = api.services.queue.claim("test-worker")
    assert claim is not None and claim.id == job_id
    storage = api.services.storage
    stored = f"outputs/{job_id}/attempt-{claim.attempt}/target.wav"  # storing, not completed
    storage.put_file(stored, api.files.get("mono.wav").path)

    def unreachable(prefix: str) -> int:
        raise StorageUnavailable("object storage is unavailable; retry shortly")

    with monkeypatch.context() as m:
        m.setattr(storage, "delete_prefix", unreachable)
        _error(api.delete(f"/v1/queue/requests/{job_id}"), 503, "STORAGE_UNAVAILABLE")
    status = api.get(f"/v1/queue/requests/{job_id}/status")
    assert status.status_code == 200 and status.json()["status"] == "IN_PROGRESS"
    assert storage.exists(stored)
    assert api.delete(f"/v1/queue/requests/{job_id}").status_code == 204
    assert not storage.exists(stored)


def _kept_by_the_bucket(params: dict[str, Any], **_: Any) -> tuple[Any, dict[str, Any]]:
    """A DeleteObjects answered as S3 answers one it carried out for none of its keys: 200,
    each key listed in ``Errors`` (a botocore ``before-call`` hook: the request is not sent,
    so the objects stay; rclone's S3 server never fails part of a batch)."""
    keys = re.findall(rb"<Key>(.*?)</Key>", params["body"])
    errors = [{"Key": k.decode(), "Code": "InternalError", "Message": "try again"} for k in keys]
    answer = SimpleNamespace(status_code=200, headers={}, raw=None, content=b"")
    return answer, {"Errors": errors, "ResponseMetadata": {"HTTPStatusCode": 200}}


@pytest.mark.backends("pg-s3")
def test_outputs_the_bucket_did_not_delete_are_swept_again_not_forgotten(clocked: Clocked) -> None:
    """The sweeper read a DeleteObjects whose keys S3 listed as not deleted as a success: the
    result was marked expired, its record deleted later, and the stems stayed in the bucket
    for good with nothing pointing at them."""
    api = clocked
    job_id = api.queue_separate(api.upload()).json()["request_id"]
    api.worker_done(job_id)
    outputs = [o["key"] for o in (_job(api, job_id).outputs or {}).values()]
    api.at(START + 49 * HOUR)
    events = api.services.storage._client.meta.events  # type: ignore[attr-defined]
    events.register("before-call.s3.DeleteObjects", _kept_by_the_bucket)
    try:
        assert api.sweep().results == 0
    finally:
        events.unregister("before-call.s3.DeleteObjects", _kept_by_the_bucket)
    assert _job(api, job_id).expired is False
    assert all(map(api.services.storage.exists, outputs))
    assert api.sweep().results == 1  # the next sweep deletes them
    assert not any(map(api.services.storage.exists, outputs))


@pytest.mark.backends("pg-s3")
def test_a_delete_whose_objects_the_bucket_kept_answers_503_not_204(clocked: Clocked) -> None:
    """DELETE of a request answered 204 while S3 had listed its stems as not deleted: the
    user was told their song was gone, and it stayed in the bucket."""
    api = clocked
    job_id = api.queue_separate(api.upload()).json()["request_id"]
    api.worker_done(job_id)
    events = api.services.storage._client.meta.events  # type: ignore[attr-defined]
    events.register("before-call.s3.DeleteObjects", _kept_by_the_bucket)
    try:
        _error(api.delete(f"/v1/queue/requests/{job_id}"), 503, "STORAGE_UNAVAILABLE")
    finally:
        events.unregister("before-call.s3.DeleteObjects", _kept_by_the_bucket)
    assert api.get(f"/v1/queue/requests/{job_id}/status").status_code == 200
    assert api.delete(f"/v1/queue/requests/{job_id}").status_code == 204


def _done_request(api: Clocked, name: str = "stereo.wav") -> str:
    job_id = str(api.queue_separate(api.upload(name)).json()["request_id"])
    api.worker_done(job_id)
    return job_id


def test_purge_expires_old_uploads_and_results_now_and_deletes_their_bytes(
    clocked: Clocked,
) -> None:
    """``demixer purge``: an operator whose disk fills before the 72 h and 48 h are up frees it
    now; what it expires answers 410 as if its retention had ended, and counts no more."""
    api = clocked
    old_file = api.upload()
    old_job = api.queue_separate(old_file).json()["request_id"]
    api.worker_done(old_job)
    size = _file(api, old_file).bytes_stored or 0
    outputs = [o["key"] for o in (_job(api, old_job).outputs or {}).values()]
    stems = sum(o["size"] for o in (_job(api, old_job).outputs or {}).values())
    api.at(START + 2 * HOUR)
    young = api.upload()
    api.at(START + 3 * HOUR)
    older = timedelta(minutes=90)
    would = purge(api.services, older, None, dry_run=True)
    assert would == Purged(files=1, file_bytes=size, results=1, result_bytes=stems)
    assert api.get(f"/v1/queue/requests/{old_job}/result").status_code == 200  # a dry run
    someone, _ = create_key(api.services.db)  # another account: nothing of its own to expire
    theirs = purge(api.services, older, someone, dry_run=False)
    assert (theirs.files, theirs.results) == (0, 0)
    with pytest.raises(NotFound):
        purge(api.services, older, "acct_none", dry_run=True)

    done = purge(api.services, older, api.account, dry_run=False)
    assert (done.files, done.file_bytes, done.results, done.result_bytes) == (1, size, 1, stems)
    assert done.swept is not None and (done.swept.files, done.swept.results) == (1, 1)
    _error(api.get(f"/v1/queue/requests/{old_job}/result"), 410, "RESULT_EXPIRED")
    _error(api.get(f"/v1/files/{old_file}"), 410, "FILE_EXPIRED")
    assert not any(api.services.storage.exists(key) for key in outputs)
    assert not api.services.storage.exists(_file(api, old_file).storage_key)
    assert api.get(f"/v1/files/{young}").json()["status"] == "uploaded"
    storage = api.get("/v1/usage").json()["storage"]
    assert (storage["files_bytes"], storage["results_bytes"]) == (size, 0)  # the young one
    assert purge(api.services, older, None, dry_run=True) == Purged(0, 0, 0, 0)


def test_purge_orphans_deletes_the_bytes_no_record_names_once_they_are_a_day_old(
    clocked: Clocked,
) -> None:
    """``demixer purge --orphans``: bytes stored behind the database's back (a restored older
    backup, a crash between storing and recording them) were never deleted: the sweeper
    deletes only what the database lists. Bytes written within the day stay (a record may be
    on its way), and keys outside demixer's folders are never touched."""
    api = clocked
    now = datetime.now(UTC)  # the stores date their blobs by the wall clock
    api.at(now)
    storage = api.services.storage
    kept_file = api.upload()
    kept_job = api.queue_separate(kept_file).json()["request_id"]
    api.worker_done(kept_job)
    gone = api.upload()
    assert api.delete(f"/v1/files/{gone}").status_code == 204
    lost = {
        f"inputs/{gone}": 300,  # a store restored from before the file was deleted
        "outputs/req_lost/attempt-1/vocals.wav": 1000,  # a database restored from before
        "uploads/file_lost/part-1": 200,
        "staging/.file_torn.4242.ab12c.part": 50,  # an API killed as it received a PUT
    }
    for key, size in lost.items():
        storage.put(key, io.BytesIO(b"x" * size))
    storage.put("notes/not-demixers.txt", io.BytesIO(b"kept"))
    assert find_orphans(api.services, DEFAULT_AGE) == Orphans(found=(), newer=len(lost))

    api.at(now + DEFAULT_AGE + HOUR)
    found = find_orphans(api.services, DEFAULT_AGE)
    assert {b.key: b.size for b in found.blobs} == lost
    assert found.size == sum(lost.values())
    assert delete_orphans(storage, found) == len(lost)
    assert [key for key in lost if storage.exists(key)] == []
    assert storage.exists("notes/not-demixers.txt")
    assert storage.exists(_file(api, kept_file).storage_key)
    assert api.get(f"/v1/queue/requests/{kept_job}/result").status_code == 200
    assert all(storage.exists(o["key"]) for o in (_job(api, kept_job).outputs or {}).values())
    assert find_orphans(api.services, DEFAULT_AGE) == Orphans(found=(), newer=0)
    with pytest.raises(ValueError, match="orphans must be older than"):
        find_orphans(api.services, MIN_AGE - SECOND)


@contextmanager
def _undeletable(folder: Path) -> Iterator[None]:
    """Files in ``folder`` this process cannot delete, as when they belong to another user (a
    worker once started with sudo on the same data directory): read-only for a user, marked
    immutable for root (whom no mode stops)."""
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
            pytest.skip("chattr cannot mark files immutable here")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
    else:
        folder.chmod(0o500)
        try:
            yield
        finally:
            folder.chmod(0o700)


@pytest.mark.backends("sqlite")
def test_outputs_the_server_cannot_delete_are_kept_to_sweep_again_and_the_rest_go(
    clocked: Clocked,
) -> None:
    """Stems on the local disk that the server could not delete were counted as deleted: the
    result was marked expired (its record deleted 30 days on) and the files stayed for good,
    with no line in the log. Now that request waits for a later sweep, and the others go."""
    api = clocked
    stuck, other = _done_request(api), _done_request(api, "stereo.flac")  # not one cached
    outputs = [o["key"] for o in (_job(api, stuck).outputs or {}).values()]
    folder = api.services.storage.root / outputs[0].rsplit("/", 1)[0]
    api.at(START + 49 * HOUR)
    with _undeletable(folder):
        assert api.sweep().results == 1
        assert (_job(api, stuck).expired, _job(api, other).expired) == (False, True)
        assert all(map(api.services.storage.exists, outputs))
    assert api.sweep().results == 1
    assert not any(map(api.services.storage.exists, outputs))


@pytest.mark.backends("sqlite")  # the back-off is the sweeper's own, not the database's
def test_outputs_the_server_cannot_delete_are_tried_less_often_and_deleted_once_it_can(
    clocked: Clocked, caplog: pytest.LogCaptureFixture
) -> None:
    """A request whose stems the store would not delete was tried, and a warning written, at
    every sweep (every 5 minutes, for good). Now the waits double (5, 10, 20, 40 min ..., up
    to a day), one line each, and the stems still go at the first try the store allows."""
    api = clocked
    stuck = _done_request(api)
    outputs = [o["key"] for o in (_job(api, stuck).outputs or {}).values()]
    folder = api.services.storage.root / outputs[0].rsplit("/", 1)[0]
    sweeper = Sweeper(api.services)  # one, as `serve` and `worker` run one
    every = timedelta(seconds=api.services.settings.sweep_interval_seconds)
    due = START + 49 * HOUR
    with _undeletable(folder), caplog.at_level("WARNING", logger="demixer.sweeper"):
        for n in range(13):  # an hour of sweeps
            api.at(due + n * every)
            assert sweeper.sweep_once().results == 0
    kept = [r.getMessage() for r in caplog.records if "kept the bytes" in r.getMessage()]
    assert [line.rsplit("; ", 1)[1] for line in kept] == [
        "trying again in 5 min",
        "trying again in 10 min",
        "trying again in 20 min",
        "trying again in 40 min",
    ]
    api.at(due + 14 * every)  # allowed now, but its next try is at 15
    assert sweeper.sweep_once().results == 0
    api.at(due + 15 * every)
    assert sweeper.sweep_once().results == 1
    assert _job(api, stuck).expired is True
    assert not any(map(api.services.storage.exists, outputs))


@pytest.mark.backends("sqlite")
def test_a_full_batch_of_outputs_the_server_cannot_delete_does_not_hide_the_rest(
    clocked: Clocked,
) -> None:
    """A sweep reads expired results a batch (200) at a time: with a batch of them that the
    store kept (a day of results written by a worker started with sudo), every query read
    that same batch again, and no result behind it was ever deleted (the disk filled)."""
    api = clocked
    jobs = [_done_request(api), _done_request(api, "stereo.flac")]  # read in this order
    stuck = [o["key"] for o in (_job(api, jobs[0]).outputs or {}).values()]
    api.at(START + 49 * HOUR)
    with _undeletable(api.services.storage.root / stuck[0].rsplit("/", 1)[0]):
        assert Sweeper(api.services, batch=1).sweep_once().results == 1
    assert (_job(api, jobs[0]).expired, _job(api, jobs[1]).expired) == (False, True)


@pytest.mark.backends("sqlite")
def test_a_delete_whose_files_stay_on_disk_answers_503_not_204(clocked: Clocked) -> None:
    api = clocked
    job_id = _done_request(api)
    key = next(iter((_job(api, job_id).outputs or {}).values()))["key"]
    with _undeletable(api.services.storage.root / key.rsplit("/", 1)[0]):
        _error(api.delete(f"/v1/queue/requests/{job_id}"), 503, "STORAGE_UNAVAILABLE")
    assert api.delete(f"/v1/queue/requests/{job_id}").status_code == 204
    assert not api.services.storage.exists(key)


@pytest.mark.backends("sqlite")
def test_a_sweep_in_a_storage_outage_stops_at_the_first_delete_and_marks_nothing(
    clocked: Clocked, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Going on past a request whose bytes were kept must not mean trying every expired one
    in turn while the store is down: the sweep stops (the next one tries again)."""
    api = clocked
    jobs = [_done_request(api), _done_request(api, "stereo.flac")]
    storage = api.services.storage
    tried = []

    def down(*args: object) -> int:
        tried.append(args)
        raise StorageUnavailable()

    monkeypatch.setattr(storage, "delete_prefix", down)
    monkeypatch.setattr(storage, "ping", down)
    api.at(START + 49 * HOUR)
    with pytest.raises(StorageUnavailable):
        api.sweep()
    assert len(tried) == 2  # one delete, then the ping that said the store is down
    assert [_job(api, j).expired for j in jobs] == [False, False]
    monkeypatch.undo()
    assert api.sweep().results == 2


def test_the_sweeper_runs_on_its_interval(tmp_path: Path) -> None:
    now = [START]
    settings = Settings(data_dir=tmp_path, sweep_interval_seconds=0.05)
    db = Database(settings.database, clock=lambda: now[0])
    services = build_services(settings, db=db)
    db.create_all()
    account, _ = create_key(db)
    with db.write() as s:
        s.add(
            File(
                id="file_old",
                account_id=account,
                file_name="a.wav",
                content_type="audio/wav",
                status="uploaded",
                storage_key="inputs/file_old",
                created_at=START,
                expires_at=START + HOUR,
            )
        )
    (tmp_path / "a.wav").write_bytes(b"RIFF")
    services.storage.put_file("inputs/file_old", tmp_path / "a.wav")
    stop = threading.Event()
    thread = threading.Thread(target=Sweeper(services).run, kwargs={"stop": stop}, daemon=True)
    thread.start()
    try:
        time.sleep(0.2)
        assert services.storage.exists("inputs/file_old")
        now[0] = START + 2 * HOUR
        deadline = time.monotonic() + 10
        while services.storage.exists("inputs/file_old") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not services.storage.exists("inputs/file_old")
    finally:
        stop.set()
        thread.join(timeout=5)
    assert not thread.is_alive()


DAY = 24 * HOUR


def _rows(api: Api, table: Any, job_id: str) -> int:
    with api.services.db.read() as s:
        return int(s.scalar(select(func.count()).select_from(table).where(table.job_id == job_id)))


def test_a_requests_record_goes_30_days_after_it_finished_its_usage_stays(
    clocked: Clocked,
) -> None:
    """Rows were kept for good: every request listed forever, each webhook delivery's secret
    and payload kept, ~5 kB a request."""
    api = clocked
    file_id = api.upload()
    job_id = api.queue_separate(file_id).json()["request_id"]
    api.worker_done(job_id)  # finished at START
    with api.services.db.write() as s:  # a delivered webhook, as the dispatcher leaves one
        s.add(Delivery(id="whk_1", job_id=job_id, url="https://hooks.example.org/x",
                       secret="whsec_c2VjcmV0", event_type="audio.separate.completed",
                       payload={"request_id": job_id}, status="delivered", attempts=1,
                       next_attempt_at=START, delivered_at=START, created_at=START,
                       updated_at=START))  # fmt: skip
    assert _rows(api, JobLog, job_id) > 0

    api.at(START + 3 * DAY + HOUR)  # the result (48 h) and the upload (72 h) are swept first
    counts = api.sweep()
    assert (counts.files, counts.results, counts.records) == (1, 1, 0)
    api.at(START + 30 * DAY - SECOND)  # the record stays until 30 days after it finished
    assert api.sweep().records == 0
    assert api.get(f"/v1/queue/requests/{job_id}/status").json()["status"] == "COMPLETED"
    _error(api.get(f"/v1/files/{file_id}"), 410, "FILE_EXPIRED")

    api.services.settings.record_retention_seconds = 0  # 0: kept for good
    api.at(START + 60 * DAY)
    assert api.sweep().records == 0
    api.services.settings.record_retention_seconds = 30 * 24 * 3600
    assert api.sweep().records == 2  # the request (its log and delivery with it), the upload
    _error(api.get(f"/v1/queue/requests/{job_id}/status"), 404, "NOT_FOUND")
    _error(api.get(f"/v1/files/{file_id}"), 404, "NOT_FOUND")
    assert api.get("/v1/queue/requests").json()["data"] == []
    assert (_rows(api, JobLog, job_id), _rows(api, Delivery, job_id)) == (0, 0)
    # What was used stays counted.
    usage = api.get(
        "/v1/usage", params={"from": START.isoformat(), "to": (START + DAY).isoformat()}
    )
    assert usage.json()["data"][0]["jobs"] == 1
    assert api.sweep() == SweepCounts()


def test_bytes_put_for_a_deleted_file_while_its_url_lasts_are_swept(clocked: Clocked) -> None:
    # S3 takes a PUT to the file's presigned URL for as long as the URL lasts, after the file
    # was deleted too; nothing ever deleted those bytes. The API itself refuses such a PUT.
    api = clocked
    up = api.announce()
    assert api.delete(f"/v1/files/{up['file_id']}").status_code == 204
    put = api.put_bytes(up)
    staging = f"staging/{up['file_id']}"
    if not api.direct:
        _error(put, 404, "NOT_FOUND")
        assert not api.services.storage.exists(staging)
        return
    assert put.status_code == 200 and api.services.storage.exists(staging)
    assert api.sweep() == SweepCounts(blobs=1)
    assert not api.services.storage.exists(staging)


def _staging_kept_by_the_bucket(params: dict[str, Any], **_: Any) -> Any:
    """Only the deletes of staged bytes are answered as kept (:func:`_kept_by_the_bucket`)."""
    return _kept_by_the_bucket(params) if b"staging/" in params["body"] else None


@pytest.mark.backends("pg-s3")
def test_late_bytes_the_bucket_keeps_do_not_stop_the_results_sweep(clocked: Clocked) -> None:
    """A staging key the bucket would not delete (listed in DeleteObjects' ``Errors``) must
    not stop the sweep before the expired results behind it."""
    api = clocked
    job_id = _done_request(api)
    api.at(START + 49 * HOUR)  # its result expired; a file deleted now, its URL still valid
    up = api.announce()
    assert api.delete(f"/v1/files/{up['file_id']}").status_code == 204
    assert api.put_bytes(up).status_code == 200
    events = api.services.storage._client.meta.events  # type: ignore[attr-defined]
    events.register("before-call.s3.DeleteObjects", _staging_kept_by_the_bucket)
    try:
        assert api.sweep() == SweepCounts(results=1, blobs=2)
    finally:
        events.unregister("before-call.s3.DeleteObjects", _staging_kept_by_the_bucket)
    assert _job(api, job_id).expired is True
    assert api.sweep() == SweepCounts(blobs=1)  # the staged bytes, the next time


# Local storage: on S3 a part goes to the bucket's multipart upload, which the delete aborts.
@pytest.mark.backends("sqlite")
def test_a_gaudio_part_arriving_as_its_upload_is_deleted_is_answered_as_a_deleted_upload(
    clocked: Clocked,
) -> None:
    api = clocked
    created = api.client.post(
        "/developers/api/v1/files/upload-multipart/create",
        json={"fileName": "gone.wav", "fileSize": 1000},
        headers={"x-ga-apikey": api.key},
    ).json()["resultData"]
    [url] = created["preSignedUrl"]

    def part() -> Iterator[bytes]:
        yield b"x" * 500
        assert api.delete(f"/v1/files/{created['uploadId']}").status_code == 204
        yield b"x" * 500

    # It was answered "internal server error" (1100): its folder was deleted as it was written.
    during = api.send("PUT", url, content=part())
    after = api.send("PUT", url, content=b"x" * 1000)
    assert during.status_code == after.status_code == 404, during.text
    assert during.json() == after.json()
    assert not api.services.storage.exists(f"uploads/{created['uploadId']}/part-1")


def test_a_gaudio_upload_never_completed_is_closed_when_it_expires(clocked: Clocked) -> None:
    # On S3 a Gaudio upload's parts go to the bucket's own multipart upload, which keeps (and
    # bills) them out of any listing until it is completed or aborted. The sweeper deleted the
    # upload's blobs and left that open for good, its part URLs (24 hours) still taking parts.
    api = clocked
    created = api.client.post(
        "/developers/api/v1/files/upload-multipart/create",
        json={"fileName": "never.wav", "fileSize": 1000},
        headers={"x-ga-apikey": api.key},
    ).json()["resultData"]
    [url] = created["preSignedUrl"]
    assert api.send("PUT", url, content=b"x" * 1000).status_code == 200
    assert api.sweep().files == 0
    api.at(START + 72 * HOUR + SECOND)
    assert api.sweep().files == 1
    again = api.send("PUT", url, content=b"x" * 1000)
    assert again.status_code == 404
    storage = api.services.storage
    kept = [f"uploads/{created['uploadId']}/{name}" for name in ("part-1", "upload-id")]
    assert [key for key in kept if storage.exists(key)] == []
    if isinstance(storage, S3Storage):
        assert storage._client.list_multipart_uploads(Bucket=storage.bucket).get("Uploads") is None
