"""The worker registry: workers advertise their device and models, claim only what they can
run, and a job for a model no live worker runs waits and says so.

Real workers (threads of this process, with their real separation children) on the real API
(``TestClient``), on SQLite + local storage and on PostgreSQL + S3 (conftest.py). The packaged
``spleeter-2stems`` and the DSP ``cascade-4stems`` built on it are the models installed here; a
worker restricted with ``models=[...]`` stands in for another machine. A :class:`Presence`
alone (a row, no slots) stands in for a worker that advertises a model this machine lacks.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select, text
from typer.testing import CliRunner

from api_support import Api, make_api
from demixer import __version__
from demixer.cli import app
from demixer.errors import DeviceUnavailable, ModelUnavailable, UnknownModel
from demixer.models.msst.user import add
from demixer.models.user_models import remove_user_model
from demixer.server.compose import build_services
from demixer.service.accounts.keys import create_key
from demixer.service.db import Database, utcnow
from demixer.service.jobs.contract import JobParams, UrlInput
from demixer.service.jobs.queue import Queue
from demixer.service.migrate import migrate
from demixer.service.schema import Base, Job, JobLog, WorkerRecord
from demixer.service.worker import Worker
from demixer.service.worker.registry import (
    FORGET_AFTER,
    Presence,
    list_workers,
    live_models,
    resolve_device,
    runs,
    stale_after,
)
from demixer.service.worker.runner import unloadable_message
from demixer.settings import Settings
from msst_support import model_files
from worker_support import running, wait_until

# The module runs on SQLite and on PostgreSQL, with local storage on both (what is tested here is
# the database; the S3 paths are tested elsewhere). DEMIXER_TEST_BACKENDS limits it as for
# ``backend`` (``pg-s3`` selects PostgreSQL).
pytestmark = pytest.mark.usefixtures("database")


_WANTED = os.environ.get("DEMIXER_TEST_BACKENDS", "sqlite,pg-s3").split(",")


@pytest.fixture(params=[b for b in ("sqlite", "pg-s3") if b in _WANTED])
def database(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str | None]:
    """Point DEMIXER_DATABASE_URL at a fresh PostgreSQL database, or at nothing (SQLite)."""
    monkeypatch.delenv("DEMIXER_STORAGE_URL", raising=False)
    if request.param == "sqlite":
        monkeypatch.delenv("DEMIXER_DATABASE_URL", raising=False)
        yield None
        return
    servers = request.getfixturevalue("scale_servers")
    url = servers.create_database(migrated=True)
    monkeypatch.setenv("DEMIXER_DATABASE_URL", url)
    try:
        yield url
    finally:
        servers.drop_database(url)


__all__ = ["make_api"]  # fixtures

FAST = {"heartbeat_seconds": 0.3, "poll_seconds": 0.1, "lease_seconds": 2.0}
INSTALLED = ["spleeter-2stems", "cascade-4stems"]  # registry order


def states(api: Api) -> dict[str, str]:
    return {w.id: w.state for w in list_workers(api.services.db, api.services.settings)}


def advertise(api: Api, models: list[str], worker_id: str = "gpu-box:1:abcdef12") -> Presence:
    """Register a worker row for ``models`` (another machine's worker, without its slots)."""
    presence = Presence(
        api.services.db,
        api.services.settings,
        worker_id=worker_id,
        device="cuda:0 (NVIDIA H100 80GB HBM3)",
        models=models,
        slots=1,
    )
    presence.beat()
    return presence


def queue_stems(api: Api, model: str | None = None) -> Any:
    inp: dict[str, Any] = {"file_id": api.upload(), "stems": ["vocals"]}
    if model is not None:
        inp["model"] = model
    return api.post("/v1/queue/audio/stems", json={"input": inp})


def status(api: Api, job_id: str) -> dict[str, Any]:
    r = api.get(f"/v1/queue/requests/{job_id}/status")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


# --- registration ----------------------------------------------------------------------------


def test_a_worker_advertises_its_device_and_models_and_leaves_the_live_list_when_stopped(
    make_api: Callable[..., Api],
) -> None:
    api = make_api(**FAST)
    worker = Worker(api.services, slots=2)
    assert worker.models == INSTALLED and worker.device == "cpu"
    host, pid, tail = worker.id.rsplit(":", 2)
    assert host == socket.gethostname()[:60] and pid == str(os.getpid()) and len(tail) == 8
    # A job's lease owner names its worker: the slot ids share the worker's random part.
    assert worker.worker_ids == [f"{host}:{pid}:{i}:{tail}" for i in range(2)]
    with running(worker):
        wait_until(lambda: states(api).get(worker.id) == "live", 10, "the worker's row")
        (info,) = list_workers(api.services.db, api.services.settings)
        assert (info.hostname, info.pid, info.device) == (socket.gethostname(), os.getpid(), "cpu")
        assert (info.models, info.slots, info.version) == (tuple(INSTALLED), 2, __version__)
        assert info.stopped_at is None
        first_seen = info.last_seen_at
        wait_until(
            lambda: (
                list_workers(api.services.db, api.services.settings)[0].last_seen_at > first_seen
            ),
            5,
            "a heartbeat",
        )
    assert states(api) == {worker.id: "stopped"}
    with api.services.db.read() as s:
        assert live_models(s, api.services.settings, api.services.db.clock()) == []


def test_a_worker_that_stops_beating_is_lost_then_forgotten(tmp_path: Path) -> None:
    offset = [timedelta()]
    db = Database(Settings(data_dir=tmp_path).database, clock=lambda: utcnow() + offset[0])
    db.create_all()
    settings = Settings(data_dir=tmp_path, **FAST)
    assert stale_after(settings) == timedelta(seconds=15)  # at least 15 s, whatever the beat
    Presence(db, settings, worker_id="a:1:00000001", device="cpu", models=["x"], slots=1).beat()
    assert [w.state for w in list_workers(db, settings)] == ["live"]
    offset[0] = stale_after(settings) + timedelta(seconds=1)  # killed: no beat, no stop
    assert [w.state for w in list_workers(db, settings)] == ["lost"]
    with db.read() as s:
        assert live_models(s, settings, db.clock()) == []
    offset[0] = FORGET_AFTER + timedelta(minutes=1)
    assert list_workers(db, settings) == []
    # The next worker to register deletes long-dead rows.
    Presence(db, settings, worker_id="b:2:00000002", device="cpu", models=["x"], slots=1).beat()
    with db.read() as s:
        assert list(s.execute(select(WorkerRecord.id)).scalars()) == ["b:2:00000002"]


def test_the_heartbeat_survives_database_errors_and_registers_again(
    make_api: Callable[..., Api], caplog: pytest.LogCaptureFixture
) -> None:
    api = make_api(**FAST)
    caplog.set_level(logging.INFO, logger="demixer.worker")
    db = api.services.db
    Base.metadata.tables["workers"].drop(db.engine)
    presence = Presence(
        db, api.services.settings, worker_id="w:1:0000abcd", device="cpu", models=["m"], slots=1
    )
    stop = threading.Event()
    thread = threading.Thread(target=presence.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_until(lambda: "refreshing its registry row failed" in caplog.text, 10, "the error")
        assert thread.is_alive()
        Base.metadata.tables["workers"].create(db.engine)
        wait_until(lambda: states(api) == {"w:1:0000abcd": "live"}, 10, "the row, again")
        with db.write() as s:  # pruned or lost meanwhile: the next beat registers it again
            s.execute(text("DELETE FROM workers"))
        wait_until(lambda: states(api) == {"w:1:0000abcd": "live"}, 10, "the re-registration")
    finally:
        stop.set()
        thread.join(10)
    assert states(api) == {"w:1:0000abcd": "stopped"}


def test_new_models_are_logged_as_such_not_as_a_second_registration(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="demixer.worker")
    db = Database(Settings(data_dir=tmp_path).database)
    db.create_all()
    settings = Settings(data_dir=tmp_path, **FAST)
    presence = Presence(db, settings, worker_id="a:1:00000001", device="cpu", models=["x"], slots=1)
    presence.beat()
    presence.advertise(["x", "mine"])  # `models add` while it runs
    presence.beat()
    presence.beat()
    assert [r.getMessage() for r in caplog.records] == [
        "worker a:1:00000001 registered: cpu, models x, 1 slot(s)",
        "worker a:1:00000001 now runs models x, mine",
    ]
    assert [w.models for w in list_workers(db, settings)] == [("x", "mine")]


# --- what a worker runs ----------------------------------------------------------------------


def test_a_worker_runs_the_installed_models_it_was_given_and_refuses_to_run_none(
    make_api: Callable[..., Api],
) -> None:
    api = make_api(**FAST)
    assert Worker(api.services, models=["htdemucs", "cascade-4stems"]).models == ["cascade-4stems"]
    with pytest.raises(ModelUnavailable, match=r"can run no model.*htdemucs"):
        Worker(api.services, models=["htdemucs"])
    with pytest.raises(UnknownModel):
        Worker(api.services, models=["no-such-model"])


def test_a_model_directory_that_cannot_be_read_never_stops_a_worker(
    make_api: Callable[..., Api], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker rescans its models every few seconds from its main loop: a model directory
    it cannot read then (a disk gone, permissions changed) keeps the models it had."""
    api = make_api(**FAST)
    worker = Worker(api.services)
    before = list(worker.models)

    def unreadable(*_args: object, **_kwargs: object) -> list[str]:
        raise PermissionError(13, "Permission denied", str(api.services.settings.model_dir))

    monkeypatch.setattr("demixer.service.worker.slots.runnable_models", unreadable)
    worker.rescan_models()
    assert worker.models == before and all(slot.models == before for slot in worker.slots)


def three_machines(api: Api, tmp_path: Path) -> dict[str, Any]:
    """The services of three machines sharing ``api``'s database, each with its own model
    directory holding the user model ``mine``: the API's, ``box`` and ``other``."""
    config, checkpoint = model_files(tmp_path)
    machines = {}
    for name in ("api", "box", "other"):
        folder = api.services.settings.model_dir if name == "api" else tmp_path / f"models-{name}"
        assert folder is not None
        add("mine", arch="mel_band_roformer", config=config, checkpoint=checkpoint,
            model_dir=folder)  # fmt: skip
        settings = api.services.settings.model_copy(update={"model_dir": folder})
        machines[name] = build_services(settings, db=api.services.db)
    return machines


def advertised_models(api: Api, worker: Worker) -> tuple[str, ...] | None:
    """The models ``worker`` advertises (`demixer workers`), None while it is not live."""
    found = [w.models for w in list_workers(api.services.db, api.services.settings)
             if w.id == worker.id and w.state == "live"]  # fmt: skip
    return found[0] if found else None


def started_on(api: Api, job_id: str, attempt: int) -> str:
    """The worker (slot id) that the job's log says ran attempt ``attempt``."""
    with api.services.db.read() as s:
        line = s.execute(
            select(JobLog.message).where(
                JobLog.job_id == job_id, JobLog.message.like(f"attempt {attempt} started on %")
            )
        ).scalar_one()
    return str(line).removeprefix(f"attempt {attempt} started on ")


def test_a_worker_whose_models_were_removed_leaves_their_jobs_to_a_worker_that_has_them(
    make_api: Callable[..., Api], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker started for one model (``--models mine``, a GPU box) kept advertising and
    claiming it once its files were removed from its machine: each job for it it claimed failed
    at once, UNKNOWN_MODEL, though another worker had the model (measured: 2 jobs of 3). It now
    claims nothing until one of its models is back, and the jobs run on a worker that has it."""
    monkeypatch.setattr("demixer.service.worker.slots.MODELS_RESCAN_SECONDS", 0.2)
    api = make_api(**FAST)
    machines = three_machines(api, tmp_path)

    advertised = partial(advertised_models, api)

    with running(Worker(machines["box"], models=["mine"])) as box:
        wait_until(lambda: advertised(box) == ("mine",), 10, "the worker's first beat")
        remove_user_model("mine", tmp_path / "models-box")
        # `demixer workers` shows it running no model.
        wait_until(lambda: advertised(box) == (), 10, "the worker to advertise no model")
        with running(Worker(machines["other"], models=["mine"])) as other:
            wait_until(lambda: advertised(other) == ("mine",), 10, "the other worker")
            r = queue_stems(api, "mine")
            assert r.status_code == 202, r.text
            job_id = r.json()["request_id"]
            claimed = wait_until(
                lambda: (b := status(api, job_id))["status"] != "IN_QUEUE" and b,
                60,
                "the job to be claimed",
            )
            assert (claimed["status"], claimed["error"]) in {
                ("IN_PROGRESS", None),
                ("COMPLETED", None),
            }, claimed
            assert started_on(api, job_id, 1) == other.worker_ids[0]


def test_a_worker_whose_copy_of_a_model_is_damaged_leaves_its_jobs_to_one_whose_copy_loads(
    make_api: Callable[..., Api], tmp_path: Path
) -> None:
    """A worker whose copy of a model failed its checksum (a damaged disk, a copy cut short)
    failed each job for it that it claimed, MODEL_UNAVAILABLE for good, naming the server's
    files and their hashes to the job's owner, though another worker's copy was sound
    (measured: 2 jobs of 3). The attempt is now retried, the worker sets the model aside until
    its files change, and the job runs on the other worker. The model is set aside before the
    job goes back to the queue: the other slot of a two-slot worker claimed it at once, and
    failed it too (measured: 3 runs of 3)."""
    api = make_api(**FAST)
    machines = three_machines(api, tmp_path)
    damaged = tmp_path / "models-box" / "mine" / "model.ckpt"
    data = bytearray(damaged.read_bytes())
    data[-1] ^= 1
    damaged.write_bytes(bytes(data))

    advertised = partial(advertised_models, api)

    def job() -> Any:
        with api.services.db.read() as s:
            return s.execute(select(Job.status, Job.attempts).where(Job.id == job_id)).one()

    r = queue_stems(api, "mine")
    assert r.status_code == 202, r.text
    job_id = r.json()["request_id"]
    with running(Worker(machines["box"], models=["mine"], slots=2)) as box:
        ended = wait_until(lambda: (j := job()).attempts and j.status != "IN_PROGRESS" and j, 60)
        assert tuple(ended) == ("IN_QUEUE", 1)  # and no attempt on this worker since
        body = api.get(f"/v1/queue/requests/{job_id}/status?logs=true").json()
        assert (body["status"], body["error"]) == ("IN_QUEUE", None), body
        assert all(str(tmp_path) not in line["message"] for line in body["logs"]), body["logs"]
        # What puts it right, run on that machine (a single-machine user is its operator).
        assert body["logs"][-1]["message"] == (
            "attempt 1 failed (MODEL_UNAVAILABLE: model 'mine' could not be loaded on the "
            "worker that ran this attempt (the server's log has details): on that machine, "
            "`demixer models remove mine`, then `demixer models add mine` with its files, adds "
            "it again); retrying"
        )
        wait_until(lambda: advertised(box) == (), 10, "the worker to set the model aside")
        with running(Worker(machines["other"], models=["mine"])) as other:
            wait_until(lambda: job().attempts == 2, 60, "the other worker's attempt")
            assert started_on(api, job_id, 2) == other.worker_ids[0]


def test_a_worker_whose_copy_of_an_ensembles_member_is_damaged_leaves_its_jobs_to_another(
    make_api: Callable[..., Api], tmp_path: Path
) -> None:
    """A damaged member of an ensemble failed its job's attempt, and the worker went on
    claiming the ensemble (and the member): every attempt ran on it and failed the same way
    (measured: 3 of 3, MODEL_UNAVAILABLE), its message naming only the ensemble. The member
    is now set aside as a damaged model is, the message names it, and the job's next attempt
    runs on a worker whose copy loads."""
    api = make_api(**FAST)
    machines = three_machines(api, tmp_path)
    damaged = tmp_path / "models-box" / "mine" / "model.ckpt"
    data = bytearray(damaged.read_bytes())
    data[-1] ^= 1
    damaged.write_bytes(bytes(data))
    both = ["mine", "spleeter-2stems"]
    advertised = partial(advertised_models, api)

    def job() -> Any:
        with api.services.db.read() as s:
            return s.execute(select(Job.status, Job.attempts).where(Job.id == job_id)).one()

    r = queue_stems(api, "mine+spleeter-2stems")
    assert r.status_code == 202, r.text
    job_id = r.json()["request_id"]
    with running(Worker(machines["box"], models=both)) as box:
        ended = wait_until(lambda: (j := job()).attempts and j.status != "IN_PROGRESS" and j, 60)
        assert tuple(ended) == ("IN_QUEUE", 1)  # and no attempt on this worker since
        assert api.get(f"/v1/queue/requests/{job_id}/status?logs=true").json()["logs"][-1][
            "message"
        ] == (
            "attempt 1 failed (MODEL_UNAVAILABLE: model 'mine+spleeter-2stems' could not be "
            "loaded on the worker that ran this attempt: its model 'mine' could not (the "
            "server's log has details): on that machine, `demixer models remove mine`, then "
            "`demixer models add mine` with its files, adds it again); retrying"
        )
        wait_until(
            lambda: advertised(box) == ("spleeter-2stems",), 10, "the member to be set aside"
        )
        with running(Worker(machines["other"], models=both)) as other:
            wait_until(lambda: job().attempts == 2, 60, "the other worker's attempt")
            assert started_on(api, job_id, 2) == other.worker_ids[0]


def test_a_catalogue_model_that_cannot_be_loaded_says_to_pull_it_again(tmp_path: Path) -> None:
    """A catalogue model's damaged or missing copy is fetched again by `models pull`; an
    ensemble's or a recipe's message names no command (the log says which model failed)."""
    assert unloadable_message("htdemucs", tmp_path) == (
        "model 'htdemucs' could not be loaded on the worker that ran this attempt (the "
        "server's log has details): `demixer models pull htdemucs` on that machine fetches "
        "it again"
    )
    assert unloadable_message("htdemucs+mine", tmp_path) == (
        "model 'htdemucs+mine' could not be loaded on the worker that ran this attempt; the "
        "server's log has details"
    )


def test_the_device_comes_from_the_setting_and_what_torch_sees() -> None:
    import torch

    assert resolve_device("cpu") == ("cpu", "cpu")
    if torch.cuda.is_available():
        device, described = resolve_device("auto")
        assert device == "cuda:0" and described.startswith("cuda:0 (")
    else:
        assert resolve_device("auto") == ("cpu", "cpu")
        with pytest.raises(DeviceUnavailable, match="no CUDA GPU"):
            resolve_device("cuda")


# --- queued jobs wait for a worker that runs their model ----------------------------------------


def test_a_job_for_a_model_no_worker_runs_waits_says_so_and_runs_once_one_starts(
    make_api: Callable[..., Api],
) -> None:
    api = make_api(**FAST)
    r = queue_stems(api, "spleeter-2stems")
    assert r.status_code == 202, r.text
    job_id = r.json()["request_id"]
    body = status(api, job_id)
    assert body["status"] == "IN_QUEUE"
    assert body["waiting_reason"].startswith("no worker is running")
    assert "'spleeter-2stems'" in body["waiting_reason"]

    # "Another machine": a worker that runs only the cascade leaves the job alone.
    with running(Worker(api.services, models=["cascade-4stems"])) as other:
        wait_until(lambda: states(api).get(other.id) == "live", 10, "the cascade worker")
        time.sleep(1.0)  # ten polls
        body = status(api, job_id)
        assert body["status"] == "IN_QUEUE" and body["queue_position"] == 0
        assert body["waiting_reason"] == (
            "no running worker has model 'spleeter-2stems' installed; live workers run: "
            "cascade-4stems. The request waits for a worker that has it"
        )

        with running(Worker(api.services, models=["spleeter-2stems"])):
            done = wait_until(
                lambda: (b := status(api, job_id))["status"] in ("COMPLETED", "FAILED") and b,
                60,
                "the job to run",
            )
    assert done["status"] == "COMPLETED", done
    assert done["waiting_reason"] is None


def test_an_ensemble_runs_on_a_worker_that_runs_each_of_its_models(
    make_api: Callable[..., Api],
) -> None:
    """An ensemble's id is made up per request (``max:a+b``), so no worker lists it: a worker
    that runs every model it names claims it, and one that lacks a model leaves it."""
    api = make_api(**FAST)
    model = "max:spleeter-2stems+cascade-4stems"
    presence = advertise(api, ["spleeter-2stems"])  # one of the two
    r = queue_stems(api, model)
    assert r.status_code == 202, r.text
    job_id = r.json()["request_id"]
    assert status(api, job_id)["waiting_reason"] == (
        f"no running worker has model {model!r} installed; live workers run: "
        "spleeter-2stems. "
        "The request waits for a worker that has it"
    )
    only = ["spleeter-2stems"]
    assert api.services.queue.claim("w:1", only, partial(runs, models=only)) is None
    presence.mark_stopped()
    presence = advertise(api, ["cascade-4stems", "spleeter-2stems"])
    assert status(api, job_id)["waiting_reason"] is None
    presence.mark_stopped()

    with running(Worker(api.services, models=["spleeter-2stems", "cascade-4stems"])):
        done = wait_until(
            lambda: (b := status(api, job_id))["status"] in ("COMPLETED", "FAILED") and b,
            120,
            "the ensemble to run",
        )
    assert done["status"] == "COMPLETED", done
    result = api.get(f"/v1/queue/requests/{job_id}/result").json()
    assert result["model"] == "audio/stems" and set(result["data"]) >= {"vocals", "residual"}


def test_waiting_reason_is_null_while_a_live_worker_runs_the_model(
    make_api: Callable[..., Api],
) -> None:
    api = make_api(**FAST)
    presence = advertise(api, ["spleeter-2stems"])
    job_id = queue_stems(api).json()["request_id"]
    body = status(api, job_id)
    assert (body["status"], body["waiting_reason"]) == ("IN_QUEUE", None)
    listed = api.get("/v1/queue/requests").json()["data"]
    assert [(j["request_id"], j["waiting_reason"]) for j in listed] == [(job_id, None)]
    presence.mark_stopped()
    assert status(api, job_id)["waiting_reason"].startswith("no worker is running")


def test_a_job_whose_clean_up_model_no_worker_of_its_model_has_says_so(
    make_api: Callable[..., Api],
) -> None:
    """A MusicGPT `Deecho` request is accepted when some worker advertises a de-echo model;
    the workers that run its engine model leave it unless they have one too, and its status
    said nothing (null: "only waiting for its turn")."""
    api = make_api(**FAST)
    runs_it = advertise(api, ["spleeter-2stems"])
    advertise(api, ["mel-roformer-deecho-sucial"], worker_id="echo-box:2:abcdef13")
    song = api.files.get("stereo.wav").path
    r = api.client.post(
        "/api/public/v1/Extraction",
        headers={"Authorization": api.key},
        data={"stems": '["vocals"]', "preprocessing_options": '["Deecho"]'},
        files={"audio_file": (song.name, song.read_bytes(), "audio/wav")},
    )
    assert r.status_code == 200, r.text
    body = status(api, r.json()["task_id"])
    assert (body["status"], body["engine_model"]) == ("IN_QUEUE", "spleeter-2stems")
    assert body["waiting_reason"] == (
        "no running worker that runs model 'spleeter-2stems' has a model for the deecho "
        "step; the request waits for one that has"
    )
    runs_it.mark_stopped()
    advertise(api, ["spleeter-2stems", "mel-roformer-deecho-sucial"], worker_id="b:3:abcdef14")
    assert status(api, body["request_id"])["waiting_reason"] is None


def test_the_api_accepts_a_model_only_a_worker_has(make_api: Callable[..., Api]) -> None:
    api = make_api(**FAST)
    r = queue_stems(api, "htdemucs")
    assert r.status_code == 422 and r.json()["error"]["code"] == "MODEL_UNAVAILABLE", r.text
    assert "htdemucs" not in api.get("/v1/models").json()["data"][1]["engine_models"]

    presence = advertise(api, ["htdemucs"])
    models = api.get("/v1/models").json()
    assert "htdemucs" in models["data"][1]["engine_models"]
    assert "htdemucs" in [m["id"] for m in models["engine_models"]]
    r = queue_stems(api, "htdemucs")
    assert r.status_code == 202, r.text
    job_id = r.json()["request_id"]
    assert status(api, job_id)["waiting_reason"] is None
    # A local worker never takes it: htdemucs is not installed here.
    with running(Worker(api.services)) as local:
        wait_until(lambda: states(api).get(local.id) == "live", 10, "the local worker")
        time.sleep(1.0)
        assert status(api, job_id)["status"] == "IN_QUEUE"
    # Stopped for a while (not forgotten): still accepted, and the status says why it waits.
    presence.mark_stopped()
    assert queue_stems(api, "htdemucs").status_code == 202
    reason = status(api, job_id)["waiting_reason"]
    assert reason.startswith("no worker is running") and "'htdemucs'" in reason


def test_the_status_field_is_in_the_openapi_schema(make_api: Callable[..., Api]) -> None:
    schema = make_api().client.get("/v1/openapi.json").json()
    prop = schema["components"]["schemas"]["RequestStatus"]["properties"]["waiting_reason"]
    assert "no running worker has model" in prop["description"]


# --- the command and the migration -----------------------------------------------------------


def test_the_workers_command_lists_live_and_stopped_workers(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    db = Database(settings.database)
    migrate(db)
    runner = CliRunner()
    result = runner.invoke(app, ["workers", "--data-dir", str(settings.data_dir)])
    assert result.exit_code == 0, result.output
    assert "no worker has registered" in result.output
    gpu = Presence(
        db,
        settings,
        worker_id="gpu:7:0000beef",
        device="cuda:0 (H100)",
        models=["htdemucs"],
        slots=2,
    )
    gpu.beat()
    cpu = Presence(
        db, settings, worker_id="cpu:8:0000cafe", device="cpu", models=INSTALLED, slots=1
    )
    cpu.beat()
    cpu.mark_stopped()
    result = runner.invoke(app, ["workers", "--data-dir", str(settings.data_dir)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert all(len(line) <= 80 for line in lines), result.output  # fits the terminal
    gpu_line = next(line for line in lines if "gpu:7:0000beef" in line)  # ids never wrap
    assert "live" in gpu_line and "cuda:0" in gpu_line and "htdemucs" in gpu_line
    cpu_line = next(line for line in lines if "cpu:8:0000cafe" in line)
    assert "stopped" in cpu_line
    # Long cells wrap within their column, between words.
    assert "(H100)" in result.output
    assert "spleeter-2stems," in result.output and "cascade-4stems" in result.output
    assert "1 live worker(s) run: htdemucs" in result.output
    assert "running now:" not in result.output
    # Who is running what: a job the GPU worker's second slot holds.
    account, _ = create_key(db)
    queue = Queue(db)
    with db.write() as s:
        queue.submit(
            s,
            job_id="req_running1",
            account_id=account,
            queue_model="audio/stems",
            engine_model="htdemucs",
            params=JobParams(input=UrlInput(audio_url="https://example.org/a.wav")),
        )
    assert queue.claim("gpu:7:1:0000beef", ["htdemucs"]) is not None
    queue.heartbeat("req_running1", "gpu:7:1:0000beef", progress=0.42)
    result = runner.invoke(app, ["workers", "--data-dir", str(settings.data_dir)])
    lines = result.output.splitlines()
    assert all(len(line) <= 80 for line in lines), result.output
    at = lines.index("running now:")
    assert lines[at + 1].split() == ["job", "model", "done", "worker", "slot"]
    assert lines[at + 3].split() == ["req_running1", "htdemucs", "42%", "gpu:7:0000beef", "1"]
    assert "workers" in runner.invoke(app, ["--help"]).output


def test_the_migration_creates_the_table_the_models_describe(tmp_path: Path) -> None:
    db = Database(Settings(data_dir=tmp_path).database)  # the backend's database
    migrate(db)
    with db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
    migrate(db)  # idempotent
    when: datetime = db.clock()
    with db.write() as s:
        s.add(
            WorkerRecord(
                id="x:1:1",
                hostname="x",
                pid=1,
                device="cpu",
                models=["a", "b"],
                slots=1,
                version="0",
                started_at=when,
                last_seen_at=when,
            )
        )
    with db.read() as s:
        row = s.get(WorkerRecord, "x:1:1")
        assert row is not None and row.models == ["a", "b"] and row.last_seen_at == when
