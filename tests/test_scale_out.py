"""Scaled out on real servers: PostgreSQL and S3 (`rclone serve s3`) on loopback, an API-only
`demixer serve --workers 0` and separate `demixer worker` processes, each with its own scratch
directory as if on its own machine, configured by environment only. Then their faults: a worker
SIGKILLed mid-job, PostgreSQL stopped and started under load, S3 gone for a while, the API
killed during an upload.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf
from sqlalchemy import create_engine, func, select

from audiofiles import stempeg_example
from demixer.audio import load
from demixer.service.schema import Job, JobLog, UsageRecord
from servers import Servers
from service_harness import (
    Server,
    WorkerProcess,
    create_key,
    fast_env,
    run_demixer,
    start_server,
    start_worker,
    wait_status,
)
from worker_support import wait_until

FINAL = {"COMPLETED", "FAILED", "CANCELLED"}


@dataclass
class Stack:
    """One scaled-out deployment on the session's PostgreSQL and S3 servers."""

    servers: Servers
    root: Path
    env: dict[str, str]
    database_url: str
    api: Server
    workers: list[WorkerProcess] = field(default_factory=list)

    def add_worker(self, slots: int = 1) -> WorkerProcess:
        n = len(self.workers)
        worker = start_worker(self.root / f"machine-{n}", env=self.env, slots=slots, name="w")
        self.workers.append(worker)
        return worker

    def restart_api(self) -> None:
        port = int(self.api.base_url.rsplit(":", 1)[1])
        self.api.kill()
        key = self.api.key
        self.api = start_server(self.root / "api", workers=0, env=self.env, port=port)
        self.api.key = key

    def client(self) -> httpx.Client:
        return self.api.client()

    def jobs(self) -> dict[str, Job]:
        engine = create_engine(self.database_url)
        try:
            with engine.connect() as conn:
                return {j.id: j for j in conn.execute(select(Job)).all()}  # type: ignore[misc]
        finally:
            engine.dispose()

    def count(self, query: Any) -> Any:
        engine = create_engine(self.database_url)
        try:
            with engine.connect() as conn:
                return conn.execute(query).all()
        finally:
            engine.dispose()


@pytest.fixture(scope="module")
def scale_servers(own_scale_servers: Servers) -> Servers:
    """This module stops and restarts its servers: never the ones other test processes use."""
    return own_scale_servers


@pytest.fixture
def stack(scale_servers: Servers, tmp_path: Path) -> Iterator[Stack]:
    database_url = scale_servers.create_database(migrated=True)
    env = fast_env(
        DEMIXER_DATABASE_URL=database_url,
        DEMIXER_STORAGE_URL=scale_servers.create_bucket(),
        DEMIXER_RATE_LIMIT_PER_MINUTE="100000",
        DEMIXER_MAX_CONCURRENT_JOBS="0",
        **scale_servers.s3_env(),
    )
    api = start_server(tmp_path / "api", workers=0, env=env)
    st = Stack(scale_servers, tmp_path, env, database_url, api)
    try:
        yield st
    finally:
        for worker in st.workers:
            worker.kill()
        st.api.kill()
        for c in st.api.clients:
            c.close()
        scale_servers.drop_database(database_url)


@pytest.fixture(scope="module")
def excerpt() -> tuple[np.ndarray, int]:
    audio, rate = load(stempeg_example())
    return audio, rate


def unique_song(tmp: Path, excerpt: tuple[np.ndarray, int], n: int, seconds: float) -> Path:
    """The excerpt's mix tiled to ``seconds``, made unique by ``n`` (so the result cache of the
    server never answers one job with another's outputs)."""
    audio, rate = excerpt
    count = int(seconds * rate)
    tiled = np.tile(audio, (1, -(-count // audio.shape[1])))[:, :count].copy()
    tiled[:, 0] = (n % 1000) / 100000.0
    path = tmp / f"song-{n}.wav"
    sf.write(str(path), tiled.T, rate, subtype="PCM_16")
    return path


def upload(client: httpx.Client, path: Path) -> str:
    with path.open("rb") as fh:
        r = client.post("/v1/files", files={"file": (path.name, fh, "audio/wav")})
    assert r.status_code == 201, r.text
    return str(r.json()["file_id"])


def submit(client: httpx.Client, file_id: str) -> str:
    r = client.post(
        "/v1/queue/audio/stems",
        json={"input": {"file_id": file_id, "model": "spleeter-2stems", "stems": ["vocals"]}},
    )
    assert r.status_code == 202, r.text
    return str(r.json()["request_id"])


def wait_ready_workers(client: httpx.Client, count: int) -> None:
    """Until GET /readyz counts ``count`` live workers."""
    detail = f"{count} live worker{'s' if count != 1 else ''}"
    wait_until(
        lambda: client.get("/readyz").json()["checks"]["workers"]["detail"] == detail,
        timeout=60,
        what=detail,
    )


def wait_all(client: httpx.Client, ids: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    done: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline and len(done) < len(ids):
        for request_id in ids:
            if request_id in done:
                continue
            r = client.get(f"/v1/queue/requests/{request_id}/status")
            if r.status_code == 200 and r.json()["status"] in FINAL:
                done[request_id] = r.json()
        time.sleep(0.3)
    missing = [i for i in ids if i not in done]
    assert not missing, f"{len(missing)} jobs never finished: {missing[:5]}"
    return done


def starts(stack: Stack, job_id: str) -> list[str]:
    rows = stack.count(
        select(JobLog.message).where(
            JobLog.job_id == job_id, JobLog.message.like("attempt % started on %")
        )
    )
    return [r[0] for r in rows]


def test_three_workers_run_thirty_jobs_each_exactly_once(
    stack: Stack, excerpt: tuple[np.ndarray, int], tmp_path: Path
) -> None:
    for _ in range(3):
        stack.add_worker()
    client = stack.client()
    ids = [
        submit(client, upload(client, unique_song(tmp_path, excerpt, n, 2.0))) for n in range(30)
    ]
    done = wait_all(client, ids, timeout=300)
    assert {d["status"] for d in done.values()} == {"COMPLETED"}

    jobs = stack.jobs()
    # Exactly once: one attempt each, one usage record each, one set of outputs in storage.
    assert {jobs[i].attempts for i in ids} == {1}
    usage = dict(stack.count(select(UsageRecord.job_id, func.count()).group_by(UsageRecord.job_id)))
    assert usage == dict.fromkeys(ids, 1)
    owners = set()
    for request_id in ids:
        lines = starts(stack, request_id)
        assert len(lines) == 1, lines
        owners.add(lines[0].rsplit(" on ", 1)[1].rsplit(":", 2)[0])  # host:pid of the worker
        outputs = jobs[request_id].outputs
        assert set(outputs) == {"vocals", "residual"}
        assert all(
            o["key"].startswith(f"outputs/{request_id}/attempt-1/") for o in outputs.values()
        )
    # Every worker took part (30 jobs, 3 idle workers woken together).
    assert len(owners) == 3, owners
    # The stems are real audio in the bucket, fetched with the URLs the result gives.
    result = client.get(f"/v1/queue/requests/{ids[-1]}/result").json()
    url = result["data"]["vocals"]["url"]
    assert url.startswith(stack.servers.s3_endpoint), url  # straight from the bucket
    stem = httpx.get(url, timeout=30)
    assert stem.status_code == 200 and stem.content[:4] == b"RIFF"


def test_a_worker_killed_mid_job_leaves_it_to_another(
    stack: Stack, excerpt: tuple[np.ndarray, int], tmp_path: Path
) -> None:
    first = stack.add_worker()
    client = stack.client()
    request_id = submit(client, upload(client, unique_song(tmp_path, excerpt, 1, 240.0)))
    wait_status(client, request_id, {"IN_PROGRESS"}, timeout=120)
    second = stack.add_worker()
    wait_ready_workers(client, 2)  # the second one polls the queue, finding nothing to claim
    assert client.get(f"/v1/queue/requests/{request_id}/status").json()["status"] == "IN_PROGRESS"
    first.kill()
    done = wait_status(client, request_id, FINAL, timeout=180)
    assert done["status"] == "COMPLETED", done
    lines = starts(stack, request_id)
    assert len(lines) == 2
    assert lines[0].rsplit(":", 2)[0] != lines[1].rsplit(":", 2)[0]  # another process
    job = stack.jobs()[request_id]
    assert job.attempts == 2
    assert all("/attempt-2/" in o["key"] for o in job.outputs.values())
    assert second.process.poll() is None


def test_postgres_restarting_under_load_loses_no_job(
    stack: Stack, excerpt: tuple[np.ndarray, int], tmp_path: Path
) -> None:
    for _ in range(2):
        stack.add_worker()
    client = stack.client()
    ids = [
        submit(client, upload(client, unique_song(tmp_path, excerpt, n, 45.0))) for n in range(8)
    ]
    wait_status(client, ids[0], {"IN_PROGRESS", "COMPLETED"}, timeout=120)
    # A client watching the last job's event stream across the outage.
    watched: list[str] = []

    def watch() -> None:
        url = f"/v1/queue/requests/{ids[-1]}/status/stream"
        with stack.client().stream("GET", url, params={"interval": 1}, timeout=300) as r:
            for line in r.iter_lines():
                watched.append(line)

    watcher = threading.Thread(target=watch)
    watcher.start()
    wait_until(lambda: watched, timeout=60, what="the event stream's first line")
    stack.servers.stop_postgres()
    try:
        down = client.get(f"/v1/queue/requests/{ids[0]}/status")
        assert down.status_code == 503, down.text
        assert down.json()["error"]["code"] == "DATABASE_UNAVAILABLE"
        assert "retry-after" in down.headers
        # The vendor protocols answer in their own envelopes.
        vendor = httpx.get(
            f"{stack.api.base_url}/api/public/v1/byId",
            params={"task_id": ids[0]},
            headers={"Authorization": stack.api.key},
        )
        assert vendor.status_code == 503, vendor.text
        assert vendor.json() == {
            "success": False,
            "error": "DATABASE_UNAVAILABLE",
            "message": "the database is unavailable; retry shortly",
        }
        time.sleep(5)
    finally:
        stack.servers.start_postgres()
    # Nobody was restarted: the same API and worker processes carry on.
    done = wait_all(client, ids, timeout=240)
    assert {d["status"] for d in done.values()} == {"COMPLETED"}
    usage = dict(stack.count(select(UsageRecord.job_id, func.count()).group_by(UsageRecord.job_id)))
    assert usage == dict.fromkeys(ids, 1)
    assert all(w.process.poll() is None for w in stack.workers)
    assert stack.api.process.poll() is None
    # The stream stayed open through the outage (saying so) and ended with the final status.
    watcher.join(60)
    assert ": the database is unavailable; retrying" in watched
    frames = [json.loads(line[5:]) for line in watched if line.startswith("data:")]
    assert frames[-1]["status"] == "COMPLETED", watched[-5:]


def test_s3_gone_for_a_while_uploads_answer_503_and_jobs_still_complete(
    stack: Stack, excerpt: tuple[np.ndarray, int], tmp_path: Path
) -> None:
    client = stack.client()
    ids = [
        submit(client, upload(client, unique_song(tmp_path, excerpt, n, 10.0))) for n in range(3)
    ]
    stack.servers.stop_s3()
    try:
        stack.add_worker()  # it claims the jobs while their inputs cannot be fetched
        late = unique_song(tmp_path, excerpt, 99, 2.0)
        with late.open("rb") as fh:
            r = client.post("/v1/files", files={"file": (late.name, fh, "audio/wav")})
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "STORAGE_UNAVAILABLE"
        assert "retry-after" in r.headers
        announced = client.post(
            "/v1/files",
            json={"file_name": "x.wav", "content_type": "audio/wav", "file_size": 1000},
        )
        # Announcing moves no bytes (the PUT URL is presigned without asking the store).
        assert announced.status_code == 201, announced.text
        wait_status(client, ids[0], {"IN_PROGRESS"}, timeout=120)
        time.sleep(4)
    finally:
        stack.servers.start_s3()
    done = wait_all(client, ids, timeout=240)
    assert {d["status"] for d in done.values()} == {"COMPLETED"}, done
    # The worker kept its job through the outage (retrying the fetch): no attempt was spent.
    assert {stack.jobs()[i].attempts for i in ids} == {1}
    assert "object storage is unavailable" in stack.workers[0].logs()
    # and uploads work again
    assert submit(client, upload(client, unique_song(tmp_path, excerpt, 100, 2.0)))


def upload_through_a_restart(base_url: str, key: str, path: Path, restart: Any) -> str:
    """Upload ``path`` with the Python client while ``restart`` kills and restarts the API (it
    starts once the first MiB is on its way); returns the uploaded file's id."""
    from demixer.client import Client

    stamps: dict[str, float] = {}

    def timed_restart() -> None:
        stamps["restart"] = time.monotonic()
        restart()

    restarter = threading.Thread(target=timed_restart)

    def on_bytes(_n: int) -> None:
        if not restarter.is_alive() and restarter.ident is None:
            restarter.start()
        time.sleep(0.2)  # a slow uplink: the restart lands in the middle of the upload

    with Client(base_url, api_key=key) as demixer:
        try:
            file = demixer.upload(path, on_bytes=on_bytes)
            stamps["uploaded"] = time.monotonic()
        finally:
            restarter.join()
    # The API went down before the client was done (and came back only later).
    assert stamps["restart"] < stamps["uploaded"]
    assert file.status == "uploaded", file
    assert file.duration is not None and abs(file.duration - 30.0) < 0.01
    return file.file_id


def test_the_api_killed_during_an_upload_the_client_retries_and_completes(
    stack: Stack, excerpt: tuple[np.ndarray, int], tmp_path: Path
) -> None:
    """On S3 the bytes go to the bucket, not through the API: the upload goes on while the API
    restarts, and the client's completion call is retried until the new process answers."""
    stack.add_worker()
    path = unique_song(tmp_path, excerpt, 7, 30.0)
    file_id = upload_through_a_restart(stack.api.base_url, stack.api.key, path, stack.restart_api)
    client = stack.client()
    done = wait_status(client, submit(client, file_id), FINAL, timeout=120)
    assert done["status"] == "COMPLETED", done


def test_the_api_killed_during_an_upload_to_local_storage_the_client_sends_it_again(
    excerpt: tuple[np.ndarray, int], tmp_path: Path
) -> None:
    """Embedded (SQLite + local storage): the PUT goes to the API itself and breaks when it
    dies; the client sends it again to the restarted API, which keeps no partial file."""
    env = fast_env()
    server = start_server(tmp_path / "data", workers=1, env=env)
    port = int(server.base_url.rsplit(":", 1)[1])
    servers = [server]

    def restart() -> None:
        servers[-1].kill()
        servers.append(start_server(tmp_path / "data", workers=1, env=env, port=port))

    try:
        path = unique_song(tmp_path, excerpt, 8, 30.0)
        file_id = upload_through_a_restart(server.base_url, server.key, path, restart)
        client = servers[-1].client(server.key)
        done = wait_status(client, submit(client, file_id), FINAL, timeout=120)
        assert done["status"] == "COMPLETED", done
        leftovers = [p.name for p in (tmp_path / "data" / "storage" / "inputs").iterdir()]
        assert leftovers == [file_id]  # the broken PUT's temporary file is gone
    finally:
        for s in servers:
            s.kill()


def test_keys_created_on_one_api_work_on_another(stack: Stack) -> None:
    """Stateless API processes: a second one on the same database knows every key."""
    second = start_server(stack.root / "api-2", workers=0, env=stack.env)
    try:
        key = create_key(stack.root / "elsewhere", env=stack.env)
        r = httpx.get(
            f"{second.base_url}/v1/queue/requests", headers={"Authorization": f"Bearer {key}"}
        )
        assert r.status_code == 200, r.text
    finally:
        second.kill()


def test_a_worker_on_the_wrong_storage_says_so_and_never_starts(
    stack: Stack, excerpt: tuple[np.ndarray, int]
) -> None:
    """A worker whose storage is not the API's would fail each job it claims ("the input file
    is gone", or a raw SignatureDoesNotMatch, three attempts in under a second). It stops at
    start instead, with one line naming what is wrong; a right one then runs the job."""
    client = stack.client()
    file_id = upload(client, unique_song(stack.root, excerpt, 0, 2.0))
    bucket = stack.env["DEMIXER_STORAGE_URL"]
    wrong = {
        "credentials": (
            {**stack.env, "AWS_SECRET_ACCESS_KEY": "not-the-secret"},
            1,
            f"error [STORAGE_UNAVAILABLE] the storage {bucket} refused this process: the bucket "
            "refused access (403): check the credentials and their rights on it",
        ),
        "bucket": (
            {**stack.env, "DEMIXER_STORAGE_URL": bucket.replace("s3://", "s3://no-such-", 1)},
            1,
            f"error [STORAGE_UNAVAILABLE] the storage {bucket.replace('s3://', 's3://no-such-', 1)}"
            " refused this process: the bucket does not exist",
        ),
    }
    for case, (env, code, line) in wrong.items():
        done = run_demixer("worker", "--data-dir", str(stack.root / f"bad-{case}"), env=env)
        assert (done.returncode, done.stderr.strip()) == (code, line), case
    # No storage setting at all: the default local folder holds none of the API's inputs.
    local = {k: v for k, v in stack.env.items() if k != "DEMIXER_STORAGE_URL"}
    data_dir = stack.root / "bad-local"
    done = run_demixer("worker", "--data-dir", str(data_dir), env=local)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"error [INVALID_STORAGE_URL] the storage file://{data_dir / 'storage'} holds none of "
        f"the newest and oldest inputs the database lists (inputs/{file_id}): it is not the "
        "storage the API uses; give this worker the API's DEMIXER_STORAGE_URL"
    )
    request_id = submit(client, file_id)
    stack.add_worker()
    done_status = wait_status(client, request_id, FINAL, timeout=180)
    assert done_status["status"] == "COMPLETED", done_status
