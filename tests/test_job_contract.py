"""The job contract: one typed, versioned shape, and rows of the previous release still read.

``tests/data/jobs_v1.json`` holds the ``params`` each protocol's submit path wrote in release
0.1.0 (alembic revision 0004), captured by running that code, with the result-cache fingerprint
it computed. Here they are put into a database migrated to revision 0004, then read by today's
code: the contract, the API and each vendor's views, the result cache, and a real worker that
runs two of them to completion.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from api_support import Api, api, make_api
from demixer.errors import InvalidParams, InvalidRequest
from demixer.service.db import Database
from demixer.service.jobs import cache
from demixer.service.jobs.contract import (
    GaudioFields,
    JobParams,
    MusicGptFields,
    SunoapiFields,
    UploadInput,
    UrlInput,
)
from demixer.service.jobs.queue import COMPLETED
from demixer.service.migrate import migrate
from demixer.service.schema import Job
from demixer.service.worker import Worker
from worker_support import running, wait_until

__all__ = ["api", "make_api"]  # fixtures

V1 = json.loads((Path(__file__).parent / "data" / "jobs_v1.json").read_text())
ROWS: dict[str, dict[str, Any]] = V1["rows"]
OLD_FILE = ROWS["native_separate"]["params"]["input"]["file_id"]


def test_every_v1_row_reads_as_the_typed_contract() -> None:
    separate = JobParams.from_row(ROWS["native_separate"]["params"])
    assert isinstance(separate.input, UploadInput) and separate.input.file_name == "stereo.wav"
    assert (separate.output_format, separate.bit_depth) == ("flac", "24")
    assert [(s.start, s.end, s.include) for s in separate.spans or ()] == [(0.5, 1.5, True)]
    assert separate.engine_name("target") == "vocals" and separate.prompt == "the vocals"
    assert separate.webhook is not None and separate.webhook.style == "native"
    assert separate.vendor is None

    url = JobParams.from_row(ROWS["native_stems_url"]["params"])
    assert url.input == UrlInput(audio_url="https://media.example.com/song.mp3?sig=1")
    assert url.input_name == "song.mp3" and url.format.extension == "mp3"

    gaudio = JobParams.from_row(ROWS["gaudio"]["params"])  # "vendor": "gaudio"
    assert gaudio.vendor == GaudioFields()
    assert gaudio.extra_formats == ("mp3",) and gaudio.names == {
        "vocals": "vocal",
        "residual": "others",
    }

    musicgpt = JobParams.from_row(ROWS["musicgpt"]["params"])  # a top-level "musicgpt"
    assert musicgpt.vendor == MusicGptFields(
        stems={"vocals": "vocals", "instrumental": "instrumental"},
        preprocessing_options=("Denoise",),
    )
    assert musicgpt.preprocess == ("denoise",)
    assert musicgpt.webhook is not None and musicgpt.webhook.style == "musicgpt"

    suno = JobParams.from_row(ROWS["sunoapi"]["params"])  # "vendor": {name, type, callBackUrl}
    assert suno.vendor == SunoapiFields(
        type="separate_vocal", callBackUrl="https://hooks.example.com/s"
    )
    # Before quality levels every job ran Deezer's pipeline, which is `fast`.
    assert {JobParams.from_row(row["params"]).quality for row in ROWS.values()} == {"fast"}


def test_the_row_written_today_reads_back_equal() -> None:
    for row in ROWS.values():
        params = JobParams.from_row(row["params"])
        assert params.to_row()["version"] == 2
        assert JobParams.from_row(params.to_row()) == params


# The fields of the contract's release before ``rescale`` (commit 01ed6ac): its workers and API
# processes refuse a row holding any other (``extra="forbid"``).
_PREVIOUS_FIELDS = {
    "version", "input", "stems", "output_format", "bit_depth", "names", "labels", "spans",
    "extra_formats", "preprocess", "downmix", "quality", "webhook", "prompt", "vendor",
}  # fmt: skip


def test_a_row_asking_nothing_new_is_read_by_the_previous_release() -> None:
    """In a rolling upgrade an older worker claims the jobs a newer API queued: every one of
    them failed INVALID_PARAMS there ("rescale: Extra inputs are not permitted"), as the row
    held every field at its default. A job that asks for rescaling still says so."""
    params = JobParams.from_row(ROWS["native_separate"]["params"]).model_copy(
        update={"quality": "balanced"}
    )
    row = params.to_row()
    assert set(row) <= _PREVIOUS_FIELDS and row["version"] == 2
    assert JobParams.from_row(row) == params
    rescaled = params.model_copy(update={"rescale": True}).to_row()
    assert rescaled["rescale"] is True


def test_old_fingerprints_still_find_their_results() -> None:
    """The result cache's key of an old row, computed today, is the one the old code stored
    (the expected values were computed by release 0.1.0, not by this code)."""
    for name in ("native_separate", "gaudio"):
        row = ROWS[name]
        params = JobParams.from_row(row["params"])
        found = cache.fingerprint(V1["input_sha256"], row["engine_model"], params)
        assert found == row["fingerprint"], name
        # A request today at `fast` is the same request (and reuses it); any other level is not.
        for level, same in (("fast", True), ("balanced", False), ("best", False)):
            today = params.model_copy(update={"quality": level})
            again = cache.fingerprint(V1["input_sha256"], row["engine_model"], today)
            assert (again == row["fingerprint"]) is same, (name, level)


def test_an_ensembles_results_from_before_its_computation_changed_are_not_reused() -> None:
    """An ensemble of RoFormers ran each member inside every window (other numbers than each
    over the whole song, as UVR does); the same request found those old results in the cache
    and got them. The expected keys were computed by the code before (8c0d41e)."""
    params = JobParams.from_row(ROWS["native_separate"]["params"])
    pair = "bs-roformer-vocals-1297+mel-roformer-vocals-kim"
    before = {
        pair: "16d68df7b7e474d696fbf13cd3b1bea0c4d33d640969b8d13f2b2b44a492c856",
        f"max:{pair}": "38b6258633b0a955d3c865eca367575d53295ec195ca4be652083458b136ffe1",
    }
    # Then an ensemble with a member that takes windows ran its other members per window too
    # (computed by the code before, 9dd762d).
    mixed = "spleeter-2stems+mel-roformer-vocals-kim"
    before[mixed] = "117c010a1f30f8d5477aadfe5d6c226d7ebf048ab14089e9513adea80da0c7b2"
    for model, old in before.items():
        now = cache.fingerprint(V1["input_sha256"], model, params)
        assert now is not None and now != old, model
    assert cache.fingerprint(V1["input_sha256"], pair, params) != cache.fingerprint(
        V1["input_sha256"], f"max:{pair}", params
    )


def test_a_best_result_from_before_best_changed_is_not_reused() -> None:
    """`best` ran the MSST, MDX-Net and Demucs models as `balanced` does, then got their own
    test-time augmentation, denoise pass and shifts: a `best` result of theirs from before (the
    `balanced` stems) would have answered a `best` request made after. The expected keys were
    computed by the code before (53e22f7)."""
    params = JobParams.from_row(ROWS["native_separate"]["params"])
    best = params.model_copy(update={"quality": "best"})
    before = {
        "mel-roformer-vocals-kim": "d16769fd9371d1f046ff0873b048f383"
        "3634a9b8dd2476ca3d776d18b8fea5ab",
        "mdx-net-vocals-kim-2": "2315321599ba8a5e0be9118112125e80f272c6d94c220406459f633eaeb15360",
        "htdemucs": "2e6a9209016e7f048ca4d453297afb0390f1a5ff07cca1eb31abb78b90c22db8",
    }
    for model, old in before.items():
        now = cache.fingerprint(V1["input_sha256"], model, best)
        assert now is not None and now != old, model


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": 3}, "version 3: this release reads up to 2"),
        ({"preprocess": ["timestretch"]}, "preprocess.0"),
        ({"names": {"vocals": "../x"}}, "plain names"),
        ({"names": {"vocals": "a", "residual": "a"}}, "same name"),
        ({"spans": [{"start": 2, "end": 1, "include": True}]}, "0 <= start < end"),
        ({"output_format": "mp3", "bit_depth": "24"}, "mp3"),
        ({"extra_formats": ["ogg"]}, "extra_formats.0"),
        ({"quality": "ultra"}, "quality"),
        ({"input": {"audio_url": "file:///etc/passwd"}}, "not an http(s) URL"),
        ({"vendor": {"name": "acme"}}, "vendor"),
        ({"surprise": 1}, "asks for 'surprise', which this release does not know"),
        (
            {"input": {"file_id": "f", "storage_key": "k", "file_name": "a", "x": 1}},
            "input.upload.x",
        ),
    ],
)
def test_a_row_that_breaks_the_contract_is_invalid_params(
    change: dict[str, Any], message: str
) -> None:
    row = {**ROWS["native_separate"]["params"], **change}
    with pytest.raises(InvalidParams, match="job params") as info:
        JobParams.from_row(row)
    assert info.value.code == "INVALID_PARAMS"
    assert message in info.value.message


def test_of_job_reads_a_job_s_row_once_per_process() -> None:
    """A job's params never change after it is queued: :meth:`JobParams.of_job` validates the
    row the first time and answers the same object after, and a row that breaks the contract
    is refused every time (never remembered)."""
    row = ROWS["gaudio"]["params"]
    first = JobParams.of_job("job_of_job_test", row)
    assert first == JobParams.from_row(row)
    assert JobParams.of_job("job_of_job_test", ROWS["sunoapi"]["params"]) is first
    bad = {**row, "version": 3}
    for _ in range(2):
        with pytest.raises(InvalidParams, match="version 3"):
            JobParams.of_job("job_of_job_bad", bad)


# --- a database of the previous release, read by today's API and worker ----------------------


def _old_database(data_dir: Path) -> None:
    """The previous release's schema: migrated to its last revision, 0004."""
    data_dir.mkdir(parents=True)
    db = Database(f"sqlite:///{data_dir / 'demixer.db'}")
    migrate(db, "0004")
    with db.read() as s:
        assert s.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == "0004"
    db.dispose()


def _insert_v1_jobs(api: Api, file_id: str) -> dict[str, str]:
    """The fixture's rows, as the old code inserted them, for ``api``'s account."""
    ids = {}
    now = api.services.db.clock()
    with api.services.db.write() as s:
        for name, row in ROWS.items():
            raw = json.dumps(row["params"]).replace(OLD_FILE, file_id)
            job_id = f"req_v1{name.replace('_', '')}"
            s.execute(
                text(
                    "INSERT INTO jobs (id, account_id, queue_model, engine_model, params, status,"
                    " priority, attempts, max_attempts, progress, cancel_requested, created_at,"
                    " updated_at, fingerprint, expired) VALUES (:id, :account, :queue, :engine,"
                    " :params, 'IN_QUEUE', 0, 0, 3, 0.0, 0, :now, :now, :fp, 0)"
                ),
                {
                    "id": job_id,
                    "account": api.account,
                    "queue": row["queue_model"],
                    "engine": row["engine_model"],
                    "params": raw,
                    "now": now.replace(tzinfo=None),
                    "fp": row["fingerprint"],
                },
            )
            ids[name] = job_id
    return ids


def test_a_previous_release_database_is_read_and_its_jobs_run(
    make_api: Callable[..., Api], tmp_path: Path
) -> None:
    data_dir = tmp_path / "old"
    _old_database(data_dir)
    # This release starts on it as serve and worker do: its migrations upgrade the schema
    # first (the test API's create_all adds missing tables, not a later release's columns).
    db = Database(f"sqlite:///{data_dir / 'demixer.db'}")
    assert migrate(db)[0] == "0004"
    db.dispose()
    api = make_api(data_dir=data_dir)
    file_id = api.upload()
    ids = _insert_v1_jobs(api, file_id)

    status = api.get(f"/v1/queue/requests/{ids['native_separate']}/status")
    assert status.status_code == 200, status.text
    body = status.json()
    assert (body["file_name"], body["prompt"]) == ("stereo.wav", "the vocals")
    assert body["webhook"]["url"] == "https://hooks.example.com/h"
    listed = api.get("/v1/queue/requests?limit=10")
    assert listed.status_code == 200 and len(listed.json()["data"]) == 5
    url_job = api.get(f"/v1/queue/requests/{ids['native_stems_url']}/status").json()
    assert (url_job["file_name"], url_job["stems"]) == ("song.mp3", ["vocals"])

    r = api.client.get(
        "/api/public/v1/byId",
        params={"task_id": ids["musicgpt"]},
        headers={"Authorization": api.key},
    )
    assert r.status_code == 200, r.text
    conversion = r.json()["conversion"]
    assert conversion["preprocessing_options"] == ["Denoise"]
    assert conversion["stems"] == ["vocals", "instrumental"]
    r = api.get(f"/api/v1/vocal-removal/record-info?taskId={ids['sunoapi']}")
    assert r.json()["code"] == 200, r.text
    assert r.json()["data"]["callbackUrl"] == "https://hooks.example.com/s"
    r = api.client.get(
        f"/developers/api/v1/gsep_music_hq_v1/jobs/{ids['gaudio']}",
        headers={"x-ga-apikey": api.key},
    )
    assert r.json()["resultData"]["status"] == "waiting", r.text

    # A worker of today runs the old uploaded-file jobs (the URL ones have no server here).
    with api.services.db.write() as s:
        for name in ("native_stems_url", "musicgpt", "sunoapi"):
            s.execute(
                text("UPDATE jobs SET status = 'CANCELLED' WHERE id = :id"), {"id": ids[name]}
            )
    with running(Worker(api.services, models=["spleeter-2stems"])):
        for name in ("native_separate", "gaudio"):
            wait_until(lambda n=name: _final(api, ids[n]), 120, f"{name} to finish")
    with api.services.db.read() as s:
        separate = s.get(Job, ids["native_separate"])
        gaudio = s.get(Job, ids["gaudio"])
    assert separate is not None and gaudio is not None
    assert (separate.status, gaudio.status) == (COMPLETED, COMPLETED), (
        separate.error_message,
        gaudio.error_message,
    )
    assert sorted(separate.outputs or {}) == ["residual", "target"]
    assert separate.outputs["target"]["file_name"] == "stereo_vocals.flac"
    assert sorted(gaudio.outputs or {}) == ["others", "others.mp3", "vocal", "vocal.mp3"]


def _final(api: Api, job_id: str) -> bool:
    with api.services.db.read() as s:
        job = s.get(Job, job_id)
    return job is not None and job.status in ("COMPLETED", "FAILED", "CANCELLED")


def test_a_vendor_plan_is_validated_before_the_row_is_written(api: Api) -> None:
    """Everything a vendor adds goes through the plan, so the contract checks it before any
    row exists: a step the contract does not know is refused, and nothing is queued."""
    from demixer.api import submit
    from demixer.api.schemas import StemsRequest

    file_id = api.upload()
    req = StemsRequest.model_validate({"input": {"file_id": file_id, "stems": ["vocals"]}})
    how = submit.PlanOptions(preprocess=("timestretch",))
    with pytest.raises(InvalidRequest, match="preprocess"):
        submit.plan_stems_request(api.services, api.account, req, how)
    assert api.get("/v1/queue/requests").json()["data"] == []


def test_a_job_a_later_release_queued_is_shown_and_only_its_worker_refuses_it(api: Api) -> None:
    """Mid rolling upgrade, a newer API queues a job with an option this release does not know
    (a field it adds). This release's API answered it, and the account's whole listing, 400
    INVALID_PARAMS; it shows what it knows of it. Its worker must not run it without the
    option: it still refuses it."""
    from demixer.service.jobs import contract

    r = api.post("/v1/queue/audio/stems", json={"input": {"file_id": api.upload()}})
    assert r.status_code == 202, r.text
    job_id = r.json()["request_id"]
    with api.services.db.write() as s:
        job = s.get(Job, job_id)
        assert job is not None
        job.params = row = {**job.params, "declick": True}  # as the later release writes it
    contract._READ.clear()  # as a process that has not read this job yet

    status = api.get(f"/v1/queue/requests/{job_id}/status")
    assert status.status_code == 200, status.text
    assert status.json()["file_name"] == "stereo.wav"
    assert api.get("/v1/queue/requests").status_code == 200
    with pytest.raises(InvalidParams, match="asks for 'declick'"):
        JobParams.from_row(row)
