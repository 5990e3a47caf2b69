"""Workers on the real thing: SQLite, local storage, the real Spleeter model, real processes.

Jobs are submitted straight into the queue (as the API does) and run by :class:`Worker` in a
thread of this process, or in a separate ``python -c`` process where the test kills the worker
itself. Leases and heartbeats are shortened (2 s / 0.3 s) so that every recovery path runs in
seconds. Inputs are the MUSDB18 excerpt that stempeg ships (real music), cut or tiled.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest
import soundfile as sf
from sqlalchemy import event, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from audiofiles import stempeg_example
from conftest import Backend
from demixer.audio import load
from demixer.errors import InvalidParams
from demixer.server.compose import build_services
from demixer.service.accounts.keys import create_key, new_id
from demixer.service.db import Database, utcnow
from demixer.service.jobs.contract import JobParams, UrlInput
from demixer.service.jobs.queue import FINAL, Queue
from demixer.service.schema import Delivery, Job, JobLog, QuotaHold, UsageRecord
from demixer.service.worker import Worker, runner
from demixer.service.worker.child import ChildJob, ChildOptions
from demixer.service.worker.registry import missing_steps
from demixer.settings import Settings
from demixer.storage import LocalStorage
from demixer.storage.s3 import S3Storage
from local_origin import local_origin
from worker_support import running, sql_sent, wait_until

# The whole module runs on SQLite + local storage and on PostgreSQL + S3 (conftest.py).
pytestmark = pytest.mark.usefixtures("backend")

MODEL = "spleeter-2stems"
# url_allowlist: audio_url tests fetch from a local server, which the SSRF guard refuses.
FAST = {
    "heartbeat_seconds": 0.3,
    "poll_seconds": 0.1,
    "lease_seconds": 2.0,
    "url_allowlist": "127.0.0.1",
}
NAMES = {"vocals": "vocals", "residual": "instrumental"}


# --- helpers ---------------------------------------------------------------------------------


class Env:
    """A data directory with its database, storage and one account."""

    def __init__(self, root: Path, db: Database | None = None, **settings: Any) -> None:
        self.settings = Settings(data_dir=root, **{**FAST, **settings})
        self.services = build_services(self.settings, db=db)
        self.services.db.create_all()
        self.account, _ = create_key(self.services.db)

    def store(self, path: Path) -> str:
        key = f"inputs/{new_id('file')}"
        with path.open("rb") as fh:
            self.services.storage.put(key, fh)
        return key

    def submit(
        self, path: Path | None = None, *, params: dict[str, Any] | None = None, **kw: Any
    ) -> str:
        if params is None:
            assert path is not None
            key = self.store(path)
            params = {
                "input": {"file_id": key.split("/")[1], "storage_key": key, "file_name": path.name},
                "stems": ["vocals"],
                "output_format": "wav",
                "bit_depth": "32f",
                "names": NAMES,
                "spans": None,
            }
        params.update(kw)
        engine_model = params.pop("engine_model", MODEL)
        max_attempts = params.pop("max_attempts", 3)
        try:
            contract = JobParams.from_row(params)
            broken = None
        except InvalidParams:  # a row no release writes: stored as is, under a valid one
            contract, broken = JobParams(input=UrlInput(audio_url="http://example.org/")), params
        job_id = new_id("job")
        with self.services.db.write() as s:
            self.services.queue.submit(
                s,
                job_id=job_id,
                account_id=self.account,
                queue_model="audio/stems",
                engine_model=engine_model,
                params=contract,
                max_attempts=max_attempts,
            )
            if broken is not None:
                s.execute(update(Job).where(Job.id == job_id).values(params=broken))
        return job_id

    def job(self, job_id: str) -> Job:
        with self.services.db.read() as s:
            job = s.get(Job, job_id)
            assert job is not None
            return job

    def logs(self, job_id: str) -> list[str]:
        with self.services.db.read() as s:
            rows = s.execute(
                select(JobLog.message).where(JobLog.job_id == job_id).order_by(JobLog.id)
            )
            return list(rows.scalars())

    # Deadlines are generous: these wait for a real condition, and on a loaded machine (the
    # suite runs modules side by side) a separation may take several times its usual time.
    def wait(self, job_id: str, until: Callable[[Job], bool], timeout: float = 120.0) -> Job:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if until(job):
                return job
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"job {job_id} still {job.status} ({job.error_code}) after {timeout} s; "
                    f"logs: {self.logs(job_id)}"
                )
            time.sleep(0.05)

    def wait_final(self, job_id: str, timeout: float = 120.0) -> Job:
        return self.wait(job_id, lambda j: j.status in FINAL, timeout)

    def read_output(self, job: Job, name: str) -> tuple[np.ndarray, int]:
        assert job.outputs is not None
        with self.services.storage.local_path(job.outputs[name]["key"]) as path:
            if path.suffix == ".mp3":
                audio, rate = load(path)
                return audio, rate
            data, rate = sf.read(str(path), dtype="float32", always_2d=True)
            return data.T, rate

    def blobs(self, prefix: str) -> list[str]:
        """The keys under ``prefix/``, relative to it (the Storage interface has no listing)."""
        storage = self.services.storage
        if isinstance(storage, S3Storage):
            base = storage._key(prefix) + "/"
            pages = storage._client.get_paginator("list_objects_v2").paginate(
                Bucket=storage.bucket, Prefix=base
            )
            names = [str(o["Key"]) for page in pages for o in page.get("Contents", ())]
            return sorted(name.removeprefix(base) for name in names)
        assert isinstance(storage, LocalStorage)
        root = storage.root / prefix
        if not root.exists():
            return []
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def children_of(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def parent_of(pid: int) -> int:
    """The parent process of ``pid`` (Linux /proc)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def separation_child(worker_pid: int) -> int:
    """A worker process's one separation child: forked by the worker's fork server, so a
    grandchild of the worker (its other child, the resource tracker, has none)."""
    found = [pid for server in children_of(worker_pid) for pid in children_of(server)]
    assert len(found) == 1, found
    return found[0]


def gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


WORKER_SCRIPT = (
    "from demixer.server.compose import build_services\n"
    "from demixer.service.worker import Worker\n"
    "from demixer.settings import Settings\n"
    "Worker(build_services(Settings())).run()\n"
)


def worker_process(env: Env, *, own_group: bool = False) -> subprocess.Popen[bytes]:
    """A worker process on ``env``; ``own_group``: in a process group of its own (with its
    children), which a signal can reach as a whole."""
    variables = {
        "DEMIXER_DATA_DIR": str(env.settings.data_dir),
        **{f"DEMIXER_{k.upper()}": str(v) for k, v in FAST.items()},
    }
    return subprocess.Popen(
        [sys.executable, "-c", WORKER_SCRIPT],
        env={**os.environ, **variables},
        start_new_session=own_group,
    )


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def music(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 4 s of the MUSDB18 excerpt's mix, as 16-bit WAV."""
    audio, rate = load(stempeg_example())
    path = tmp_path_factory.mktemp("inputs") / "falcon.wav"
    sf.write(str(path), audio[:, : 4 * rate].T, rate, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def long_music(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The excerpt tiled to 90 s: a job that runs long enough to be interrupted."""
    audio, rate = load(stempeg_example())
    path = tmp_path_factory.mktemp("inputs") / "long.wav"
    sf.write(str(path), np.tile(audio, 15).T, rate, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def shared(
    tmp_path_factory: pytest.TempPathFactory, backend: Backend
) -> Iterator[tuple[Env, Worker]]:
    """One environment and one running one-slot worker for the tests that need nothing else.

    ``backend``: one per backend, made in its environment (its database and bucket)."""
    env = Env(tmp_path_factory.mktemp("shared"))
    with running(Worker(env.services)) as worker:
        yield env, worker


# --- a job's happy path ----------------------------------------------------------------------


def test_a_job_completes_with_outputs_that_add_up_to_the_input(
    shared: tuple[Env, Worker], music: Path
) -> None:
    env, worker = shared
    job = env.wait_final(env.submit(music))
    assert job.status == "COMPLETED", (job.error_code, job.error_message)
    assert job.outputs is not None and set(job.outputs) == {"vocals", "instrumental"}
    for name, out in job.outputs.items():
        assert out["key"] == f"outputs/{job.id}/attempt-1/{name}.wav"
        assert out["file_name"] == f"falcon_{name}.wav"
        assert out["content_type"] == "audio/wav"
        assert out["size"] == env.services.storage.size(out["key"])
        assert (out["sample_rate"], out["channels"]) == (44100, 2)
        assert out["duration"] == pytest.approx(4.0)
    assert (job.duration, job.sample_rate, job.progress) == (pytest.approx(4.0), 44100, 1.0)
    mix, _ = load(music)
    vocals, _ = env.read_output(job, "vocals")
    rest, _ = env.read_output(job, "instrumental")
    assert vocals.shape == rest.shape == mix.shape
    assert np.abs(vocals).max() > 0.01  # real separation, not silence
    np.testing.assert_allclose(vocals + rest, mix, atol=1e-5)
    assert env.logs(job.id)[-1] == "completed: vocals, instrumental"

    # The child keeps the model loaded: the next job runs in the same process.
    pid = worker.child_pids()[0]
    second = env.wait_final(env.submit(music, output_format="flac", bit_depth="24"))
    assert second.status == "COMPLETED" and worker.child_pids()[0] == pid
    assert second.outputs is not None
    assert second.outputs["vocals"]["content_type"] == "audio/flac"
    with env.services.storage.local_path(second.outputs["vocals"]["key"]) as path:
        assert sf.info(str(path)).subtype == "PCM_24"

    # The quality level in the params reaches the child: the first job has none (as jobs from
    # before levels existed) and ran at `fast`; at `balanced` the stems differ.
    balanced = env.wait_final(env.submit(music, quality="balanced"))
    assert balanced.status == "COMPLETED"
    other, _ = env.read_output(balanced, "vocals")
    assert np.abs(other - vocals).max() > 1e-3
    np.testing.assert_allclose(other + env.read_output(balanced, "instrumental")[0], mix, atol=1e-5)


def test_a_cancel_accepted_while_the_outputs_are_stored_leaves_nothing(
    shared: tuple[Env, Worker], music: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancel request landing while the worker stores the stems (answered 202): the job
    ends CANCELLED, and the stems it stored are deleted, not left unreferenced."""
    env, _ = shared
    queue = env.services.queue
    complete = queue.complete

    def cancelled_meanwhile(job_id: str, *args: Any, **kwargs: Any) -> str:
        assert queue.cancel(job_id) == "IN_PROGRESS"  # the API's cancel: a request, 202
        return complete(job_id, *args, **kwargs)

    monkeypatch.setattr(queue, "complete", cancelled_meanwhile)
    job = env.wait_final(env.submit(music))
    assert job.status == "CANCELLED" and job.outputs is None
    assert env.logs(job.id)[-1] == (
        "cancelled: the attempt finished after the cancel request; outputs unused"
    )
    # The worker deletes them once the database has said CANCELLED: just after it.
    wait_until(lambda: env.blobs(f"outputs/{job.id}") == [], what="the stored stems deleted")


def test_a_long_upload_of_the_stems_keeps_the_lease(
    shared: tuple[Env, Worker], music: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Storing a long song's stems (or fetching its input) is one call that may outlast the
    lease (2 s here; a GB over a slow link at the default 30 s): the lease is renewed while it
    runs, so no other worker takes the job and runs it again, its attempt thrown away."""
    env, _ = shared
    storage, queue = env.services.storage, env.services.queue
    put_file, heartbeat = storage.put_file, queue.heartbeat
    thief: list[object] = []
    # What happened when, should the lease ever lapse (seen once under a heavy load, and not
    # explained): each heartbeat's start, end and outcome, and the thief's claim.
    events: list[tuple[float, str]] = []

    def slow(key: str, path: Path) -> int:
        if not thief:
            events.append((time.monotonic(), "upload starts"))
            time.sleep(1.5 * env.settings.lease_seconds)
            thief.append(queue.claim("thief"))  # another worker looking for work meanwhile
            events.append((time.monotonic(), f"thief claimed {thief[0]!r}"))
        return put_file(key, path)

    def beat(*args: Any, **kwargs: Any) -> bool:
        start = time.monotonic()
        try:
            cancel = heartbeat(*args, **kwargs)
        except Exception as exc:
            events.append(
                (start, f"heartbeat failed after {time.monotonic() - start:.3f} s: {exc!r}")
            )
            raise
        events.append((start, f"heartbeat took {time.monotonic() - start:.3f} s"))
        return cancel

    monkeypatch.setattr(storage, "put_file", slow)
    monkeypatch.setattr(queue, "heartbeat", beat)
    job = env.wait_final(env.submit(music))
    events.sort()
    timeline = "\n".join(f"{t - events[0][0]:8.3f} s  {what}" for t, what in events)
    assert thief == [None], timeline
    assert (job.status, job.attempts) == ("COMPLETED", 1), f"{env.logs(job.id)}\n{timeline}"


def test_a_storage_failure_tells_the_owner_its_kind_and_the_operator_its_path(
    shared: tuple[Env, Worker],
    music: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Stems that cannot be stored (a storage folder the server may not write): the job's
    error named the server's own path in its data directory to the client, and the operator's
    log said nothing. The path goes to the log now; the owner reads the kind of failure."""
    env, _ = shared
    where = "/srv/demixer/storage/outputs/req_x/attempt-1/.vocals.wav.part"

    def refused(*args: Any, **kwargs: Any) -> int:
        raise PermissionError(13, "Permission denied", where)

    monkeypatch.setattr(env.services.storage, "put_file", refused)
    with caplog.at_level("ERROR", logger="demixer.worker"):
        job = env.wait_final(env.submit(music, max_attempts=1))
    assert (job.status, job.error_code) == ("FAILED", "STORAGE_FAILED")
    assert job.error_message == (
        "storing the outputs failed (PermissionError); the server's log has details"
    )
    assert where in caplog.text


def test_an_end_the_full_database_cannot_take_is_one_warning_not_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An attempt's end that the database refused for a whole lease of retries (its disk
    full) was an ERROR with a traceback of 80 lines, after the retries had said it already."""
    env = Env(tmp_path / "data")
    job_id = env.submit(params={"input": "not an input"}, max_attempts=1)  # fails at once
    claim = env.services.queue.claim("w1")
    assert claim is not None and claim.id == job_id
    options = ChildOptions(model_dir=None, device="cpu", threads=1, parent_pid=os.getpid())
    slot = runner.Runner(env.services, "w1", options)

    def disk_full(_session: Session) -> None:
        raise OperationalError("COMMIT", {}, sqlite3.OperationalError("database or disk is full"))

    event.listen(Session, "before_commit", disk_full)
    try:
        with caplog.at_level("INFO", logger="demixer"):
            slot.run_job(claim, threading.Event())
    finally:
        event.remove(Session, "before_commit", disk_full)
    assert [r for r in caplog.records if r.exc_info] == []
    assert caplog.records[-1].levelname == "WARNING"
    assert caplog.messages[-1] == (
        f"w1: job {job_id}: its end could not be recorded, the database is unavailable "
        "(database or disk is full); it is settled when its lease runs out"
    )


def test_a_worker_failure_tells_the_owner_its_kind_and_not_the_servers_path(
    tmp_path: Path, music: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker that cannot make a job's scratch folder (a file in the way of `work`): the
    job's error gave the client the data directory's path, which is the operator's to read in
    the log (it is there, with the traceback)."""
    env = Env(tmp_path / "data")
    (tmp_path / "data" / "work").write_text("in the way")
    with caplog.at_level("ERROR", logger="demixer.worker"), running(Worker(env.services)):
        job = env.wait_final(env.submit(music, max_attempts=1))
    assert (job.status, job.error_code) == ("FAILED", "WORKER_ERROR")
    assert job.error_message == (
        "the worker failed (FileExistsError); the server's log has details"
    )
    assert f"File exists: '{tmp_path / 'data' / 'work'}'" in caplog.text


def test_worker_ids_name_host_process_slot_and_a_random_part(shared: tuple[Env, Worker]) -> None:
    _, worker = shared
    host, pid, slot, tail = worker.worker_ids[0].rsplit(":", 3)
    assert host and pid == str(os.getpid()) and slot == "0" and len(tail) == 8


def test_spans_keep_the_target_only_where_asked(shared: tuple[Env, Worker], music: Path) -> None:
    env, _ = shared
    job_id = env.submit(
        music,
        names={"vocals": "target", "residual": "residual"},
        spans=[
            {"start": 1.0, "end": 3.0, "include": True},
            {"start": 2.0, "end": 2.5, "include": False},
        ],
    )
    job = env.wait_final(job_id)
    assert job.status == "COMPLETED", (job.error_code, job.error_message)
    target, rate = env.read_output(job, "target")
    residual, _ = env.read_output(job, "residual")
    mix, _ = load(music)
    np.testing.assert_allclose(target + residual, mix, atol=1e-5)
    fade = round(0.010 * rate)
    assert not target[:, : rate - fade].any() and not target[:, 3 * rate + fade + 1 :].any()
    assert not target[:, 2 * rate : round(2.5 * rate) + 1].any()
    assert np.abs(target[:, rate : 2 * rate]).max() > 0.01


def test_mp3_output_with_spans_goes_through_float_files(
    shared: tuple[Env, Worker], music: Path
) -> None:
    env, _ = shared
    job = env.wait_final(
        env.submit(
            music,
            output_format="mp3",
            bit_depth=None,
            names={"vocals": "target", "residual": "residual"},
            spans=[{"start": 0.0, "end": 2.0, "include": False}],
        )
    )
    assert job.status == "COMPLETED", (job.error_code, job.error_message)
    assert job.outputs is not None and job.outputs["target"]["content_type"] == "audio/mpeg"
    target, rate = env.read_output(job, "target")
    assert rate == 44100
    silenced = np.abs(target[:, : int(1.9 * rate)]).max()
    kept = np.abs(target[:, int(2.1 * rate) :]).max()
    assert silenced < 1e-3 and kept > 20 * silenced  # codec noise only, then the vocals


def test_audio_url_inputs_are_fetched_by_the_worker(
    shared: tuple[Env, Worker], music: Path
) -> None:
    body = music.read_bytes()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            found = self.path == "/songs/falcon.wav"
            self.send_response(200 if found else 404)
            self.send_header("Content-Length", str(len(body) if found else 0))
            self.end_headers()
            if found:
                self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    env, _ = shared
    try:
        common = {"stems": ["vocals"], "output_format": "wav", "bit_depth": "16", "names": NAMES}
        ok = env.submit(params={"input": {"audio_url": f"{base}/songs/falcon.wav"}, **common})
        missing = env.submit(params={"input": {"audio_url": f"{base}/nothing.wav"}, **common})
        job = env.wait_final(ok)
        assert job.status == "COMPLETED", (job.error_code, job.error_message)
        assert job.outputs is not None
        assert job.outputs["vocals"]["file_name"] == "falcon_vocals.wav"
        failed = env.wait_final(missing)
        assert (failed.status, failed.error_code, failed.attempts) == (
            "FAILED",
            "INVALID_AUDIO_URL",
            1,
        )
        assert "HTTP 404" in (failed.error_message or "")
    finally:
        server.shutdown()
        server.server_close()


def test_an_audio_url_origin_sending_too_slowly_fails_the_job_at_once(tmp_path: Path) -> None:
    """An origin sending 10 bytes every 0.1 s, each read inside the fetch's read timeout, held
    the worker's slot until the job's own time limit (an hour by default). Past
    ``url_fetch_timeout_seconds`` a body averaging under 1 KiB/s fails the job, once."""

    class Trickle(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            for _ in range(80):  # 8 s at most
                self.wfile.write(b"x" * 10)
                self.wfile.flush()
                time.sleep(0.1)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # The read timeout is this too: at 0.5 s, a busy machine's pause of as long between two
    # pieces timed the read out (retried, attempts 2) before the rate was judged.
    env = Env(tmp_path, url_fetch_timeout_seconds=2.0)
    url = f"http://127.0.0.1:{server.server_address[1]}/song.wav"
    try:
        with running(Worker(env.services)):
            job = env.wait_final(env.submit(params={"input": {"audio_url": url}}))
    finally:
        server.shutdown()
        server.server_close()
    assert (job.status, job.error_code, job.attempts) == ("FAILED", "INVALID_AUDIO_URL", 1)
    assert "sent too slowly" in (job.error_message or "")


def test_an_audio_url_longer_than_its_accounts_allowance_has_left_fails_quota_exceeded(
    shared: tuple[Env, Worker], music: Path
) -> None:
    """An ``audio_url``'s duration is unknown at submit: the worker measures the fetched file
    and fails the job with the code a submit of that upload gets, before any model runs; one
    that fits holds its seconds until it ends."""
    env, _ = shared
    db = env.services.db
    with local_origin() as origin:
        origin.files["falcon.wav"] = (music.read_bytes(), "audio/wav")  # 4 s
        jobs = {}
        for used in (58.0, 50.0):  # 2 s left: refused; 10 s left: separated
            account, _ = create_key(db, monthly_minutes=1)
            with db.write() as s:
                s.add(UsageRecord(account_id=account, job_id=f"req_{used}", model=MODEL,
                                  quantity=used, recorded_at=db.clock()))  # fmt: skip
                jobs[used] = new_id("job")
                env.services.queue.submit(
                    s,
                    job_id=jobs[used],
                    account_id=account,
                    queue_model="audio/stems",
                    engine_model=MODEL,
                    params=JobParams(
                        input=UrlInput(audio_url=origin.url("/falcon.wav")), stems=["vocals"]
                    ),
                )
        refused = env.wait_final(jobs[58.0])
        assert (refused.status, refused.error_code, refused.attempts) == (
            "FAILED",
            "QUOTA_EXCEEDED",
            1,
        )
        assert "0.03 minutes left" in (refused.error_message or "")
        assert "this input is 0.07 minutes" in (refused.error_message or "")
        fitted = env.wait_final(jobs[50.0])
        assert fitted.status == "COMPLETED", (fitted.error_code, fitted.error_message)
        with db.read() as s:
            assert s.get(QuotaHold, fitted.id).seconds == pytest.approx(4.0)  # type: ignore[union-attr]


def test_an_audio_url_s_password_and_signature_stay_out_of_its_error_log_and_webhook(
    shared: tuple[Env, Worker],
) -> None:
    """An ``audio_url`` with a user and password, or a presigned query, that failed to fetch:
    the job's error message, its log and its failure webhook showed the password and the
    signature to whoever reads those (a log shipper, the webhook's receiver, a support
    ticket). They show the URL with both masked."""

    class Missing(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Missing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    env, _ = shared
    url = f"http://alice:s3cret@127.0.0.1:{port}/a.wav?X-Amz-Signature=SIGVALUE&token=TOKVALUE"
    hook = {"url": "http://example.org/hook", "secret": "whsec_" + "a" * 32}
    try:
        job_id = env.submit(
            params={"input": {"audio_url": url}, "stems": ["vocals"], "webhook": hook}
        )
        failed = env.wait_final(job_id)
    finally:
        server.shutdown()
        server.server_close()
    assert (failed.status, failed.error_message) == (
        "FAILED",
        f"fetching audio_url 'http://***@127.0.0.1:{port}/a.wav?X-Amz-Signature=…&token=…' "
        "answered HTTP 404 Not Found",
    )
    with env.services.db.read() as s:
        sent = s.execute(select(Delivery.payload).where(Delivery.job_id == job_id)).scalars()
        webhooks = [json.dumps(payload) for payload in sent]
    assert len(webhooks) == 1
    shown = [failed.error_message, *env.logs(job_id), *webhooks]
    assert [t for t in shown if re.search("s3cret|SIGVALUE|TOKVALUE", t)] == []


def test_an_audio_url_named_in_over_255_bytes_of_utf8_is_separated(
    shared: tuple[Env, Worker], music: Path
) -> None:
    """The worker saves a URL's audio under the name the URL gives: 90 米 are 270 bytes, more
    than a file name takes, and the job failed WORKER_ERROR "the worker failed (OSError)"."""
    name = "米" * 90 + ".wav"
    env, _ = shared
    with local_origin() as origin:
        origin.files[quote(name)] = (music.read_bytes(), "audio/wav")
        common = {"stems": ["vocals"], "output_format": "wav", "bit_depth": "16", "names": NAMES}
        job_id = env.submit(params={"input": {"audio_url": origin.url(quote(name))}, **common})
        job = env.wait_final(job_id)
    assert job.status == "COMPLETED", (job.error_code, job.error_message)
    assert job.outputs is not None
    # The name's last 120 characters, in at most 255 bytes, then the stem: at most 255 too.
    assert job.outputs["vocals"]["file_name"] == "米" * 81 + "_vocals.wav"


# --- failures the user caused: final at once -------------------------------------------------


def test_user_errors_fail_at_once_and_keep_the_child(
    shared: tuple[Env, Worker], tmp_path: Path, music: Path
) -> None:
    env, worker = shared
    junk = tmp_path / "notes.mp3"
    junk.write_bytes(b"this is not audio at all\n" * 100)
    bad_audio = env.submit(junk)
    bad_stem = env.submit(music, stems=["kazoo"])
    bad_format = env.submit(music, output_format="ogg")
    bad_params = env.submit(params={"input": {}, "stems": None})
    bad_quality = env.submit(music, quality="ultra")
    never_stored = {"file_id": "file_gone", "storage_key": "inputs/file_gone", "file_name": "a.wav"}
    gone_input = env.submit(
        params={"input": never_stored, "stems": ["vocals"], "output_format": "wav", "names": NAMES}
    )
    expected = {
        bad_audio: "INVALID_AUDIO",
        bad_stem: "UNKNOWN_STEM",
        bad_format: "INVALID_PARAMS",  # the job contract refuses it (the API never sends it)
        bad_params: "INVALID_PARAMS",
        bad_quality: "INVALID_PARAMS",
        gone_input: "FILE_EXPIRED",  # deleted or swept before it ran
    }
    for job_id, code in expected.items():
        job = env.wait_final(job_id)
        assert (job.status, job.error_code, job.attempts) == ("FAILED", code, 1), job.error_message
        assert job.outputs is None and env.blobs(f"outputs/{job_id}") == []
    assert "notes.mp3" in (env.job(bad_audio).error_message or "")
    assert "kazoo" in (env.job(bad_stem).error_message or "")
    # Said of the user's file, not of a storage key.
    assert env.job(gone_input).error_message == (
        "the input file file_gone was deleted or expired before this request ran"
    )
    assert "quality: Input should be 'fast', 'balanced' or 'best'" in (
        env.job(bad_quality).error_message or ""
    )
    pid = worker.child_pids()[0]
    assert pid is not None and not gone(pid)


# --- stopping a running job ------------------------------------------------------------------


def test_cancel_kills_the_child_mid_separation_and_the_next_job_gets_a_new_one(
    shared: tuple[Env, Worker], music: Path, long_music: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env, worker = shared
    caplog.set_level("INFO", logger="demixer.worker")
    job_id = env.submit(long_music)
    # The job row says what the attempt does, and progress arrives from inside the first
    # window (47 s of this 90 s song), not only once it is done.
    first_window = 47.0 / 90.0
    busy = env.wait(
        job_id, lambda j: j.stage == "separating" and 0 < j.progress < first_window, timeout=60
    )
    assert busy.status == "IN_PROGRESS"
    pid = worker.child_pids()[0]
    assert pid is not None
    server = parent_of(pid)  # the fork server, not this process
    assert server != os.getpid()
    assert env.services.queue.cancel(job_id) == "IN_PROGRESS"
    job = env.wait_final(job_id, timeout=60)
    # Stopped inside the separation (the row keeps the attempt's last stage and progress),
    # however long the cancel took under load: the song was never separated to its end.
    assert (job.status, job.stage) == ("CANCELLED", "separating") and job.progress < 1
    assert job.outputs is None and env.blobs(f"outputs/{job_id}") == []
    wait_until(lambda: gone(pid), 15, "the cancelled child to die")
    # The worker's line ends with how the attempt ended, no stray space after it.
    ended = [m for m in caplog.messages if f"job {job_id} attempt 1 ended" in m]
    assert [m.split(": ", 1)[1] for m in ended] == [f"job {job_id} attempt 1 ended: cancelled"]
    after = env.wait_final(env.submit(music))
    assert after.status == "COMPLETED"
    restarted = worker.child_pids()[0]
    assert restarted not in (None, pid)
    # Forked by the same server: the new child did not import torch again.
    assert parent_of(restarted) == server


def test_a_child_killed_mid_job_is_restarted_and_the_job_retried(
    shared: tuple[Env, Worker], long_music: Path
) -> None:
    env, worker = shared
    job_id = env.submit(long_music)
    # Killed while it separates: a child found dead before it is given the job (the slot's
    # child is started before any job) is only started again, the attempt not used up.
    env.wait(job_id, lambda j: j.stage == "separating" and j.progress < 0.5, timeout=60)
    pid = worker.child_pids()[0]
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    job = env.wait_final(job_id)
    assert (job.status, job.attempts) == ("COMPLETED", 2)
    logs = env.logs(job_id)
    assert any(m.startswith("attempt 2 started on ") for m in logs)
    assert any("MODEL_FAILED: the separation process died (exit code -9" in m for m in logs)
    assert job.outputs is not None
    assert all("/attempt-2/" in out["key"] for out in job.outputs.values())
    assert worker.child_pids()[0] not in (None, pid)


def test_a_slot_starts_its_child_before_any_job(tmp_path: Path) -> None:
    # The child was started by the first job, which waited for it (the fork server imports
    # torch: 5 s on a busy machine) on top of its own work.
    env = Env(tmp_path)
    with running(Worker(env.services)) as worker:
        pid = wait_until(lambda: worker.child_pids()[0], 60, "the separation child")
        os.kill(pid, 0)  # a live process (raises when there is none)


@pytest.fixture()
def paced_model(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[int], None]], str]:
    """A fake 2-stem model (``fake_models``) whose windows (0.1 s of audio each: 45 for the
    4-s ``music``) each call ``pace(n)`` first, n counting from 1: a model as slow, or as stuck,
    as a test needs. Returns its id. Its children are forked from this process, which holds
    the fake's registration (a fork server's children would not know the model), and do not
    ask to die with their parent: Linux ties that to the thread that forked them, here the
    short-lived one that starts a child (a fork server, their parent otherwise, has one)."""
    import multiprocessing

    import fake_models
    from demixer.models import registry

    rate = 44100
    spec = fake_models.fake_spec("fake-paced", "vocals", window=rate // 10, overlap=rate // 100)
    monkeypatch.setitem(registry._BY_ID, spec.id, spec)
    monkeypatch.setattr(registry, "_SPECS", (*registry._SPECS, spec))  # installed: no weights
    monkeypatch.setattr(
        "demixer.service.worker.child.child_context", lambda: multiprocessing.get_context("fork")
    )
    monkeypatch.setattr("demixer.service.worker.child._die_with_parent", lambda _pid: None)
    fake_models.CALLS.clear()  # each child counts its windows from here (a fork's own copy)
    separate = fake_models.FakeBackend.separate

    def use(pace: Callable[[int], None]) -> str:
        def paced(self: Any, mix: np.ndarray) -> dict[str, np.ndarray]:
            pace(fake_models.CALLS[self.id] + 1)
            return separate(self, mix)

        monkeypatch.setattr(fake_models.FakeBackend, "separate", paced)
        return spec.id

    return use


def test_a_job_past_its_time_limit_fails_and_its_separation_is_killed(
    tmp_path: Path, music: Path, paced_model: Callable[[Callable[[int], None]], str]
) -> None:
    """A separation still running at the job's time limit ends the job JOB_TIMEOUT, not
    retried, and its process is killed (not left running on the slot's cores); the slot
    starts a child again only for its next job. The model here hangs in its first window,
    the limit well past the time a loaded machine takes to fetch a 4-s input and start the
    separation's child (CI once took more than the whole 1-s limit there, before the
    separation began; a fresh clone's suite, 2 cores running 3 test processes, once more than
    8 s)."""
    started = tmp_path / "separating"

    def hang(n: int) -> None:
        if n == 1:
            started.write_text(str(os.getpid()))
        time.sleep(60)

    model = paced_model(hang)
    env = Env(tmp_path, job_timeout_seconds=15.0, job_stall_seconds=60.0)
    with running(Worker(env.services, models=[model])) as worker:
        job = env.wait_final(env.submit(music, engine_model=model, max_attempts=2), 40)
        assert (job.status, job.error_code, job.attempts) == ("FAILED", "JOB_TIMEOUT", 1)
        assert job.error_message == "the job ran longer than its limit of 15 s"
        separating = int(started.read_text())
        with pytest.raises(ProcessLookupError):
            os.kill(separating, 0)  # killed and reaped
        assert worker.child_pids() == [None]


def test_a_job_whose_pace_will_take_it_past_its_limit_ends_early_and_is_not_retried(
    tmp_path: Path, music: Path, paced_model: Callable[[Callable[[int], None]], str]
) -> None:
    """A job making steady progress that would take longer than the limit (a 60-minute mix on
    a slow model) was killed only once the whole limit had passed (an hour of a slot, for
    nothing). Once a tenth of its separation is measured, its pace projects it past the limit,
    and it ends then; not retried, as another attempt at the same input would run as long."""
    # 45 windows: about 13.5 s, past 8 s x 1.25; a tenth is measured after about 1.4 s, which
    # leaves a loaded machine 6 s of the limit for the child's start and the first windows.
    model = paced_model(lambda _: time.sleep(0.3))
    env = Env(tmp_path, job_timeout_seconds=8.0)
    with running(Worker(env.services, models=[model])):
        job = env.wait_final(env.submit(music, engine_model=model, max_attempts=2), 30)
    assert (job.status, job.error_code, job.attempts) == ("FAILED", "JOB_TIMEOUT", 1)
    assert re.fullmatch(
        r"the job would run about \d+ s, past its limit of 8 s \(\d+% separated after \d+ s\)",
        job.error_message or "",
    ), job.error_message


def test_a_job_whose_model_stops_making_progress_ends_at_the_stall_limit_and_is_retried(
    tmp_path: Path, music: Path, paced_model: Callable[[Callable[[int], None]], str]
) -> None:
    """A hung model (stuck at its third window) held its slot for the job's whole time limit
    (an hour by default) before the job failed. A separation that reports nothing for the
    stall limit is ended then, and retried in a new child (a hang may not come again)."""
    model = paced_model(lambda n: time.sleep(60 if n == 3 else 0))
    env = Env(tmp_path, job_timeout_seconds=30.0, job_stall_seconds=1.0)
    with running(Worker(env.services, models=[model])):
        job = env.wait_final(env.submit(music, engine_model=model, max_attempts=2), 20)
    assert (job.status, job.error_code, job.attempts) == ("FAILED", "JOB_TIMEOUT", 2)
    assert job.error_message == "the separation made no progress for 1 s"
    assert "attempt 1 failed (JOB_TIMEOUT: the separation made no progress for 1 s); retrying" in (
        env.logs(job.id)
    )


def test_a_worker_whose_disk_is_full_leaves_its_jobs_to_a_worker_with_room(
    tmp_path: Path, music: Path
) -> None:
    """A worker whose disk was full claimed each job again at once after failing it, and so
    failed every queued job STORAGE_FULL within seconds, all its attempts in turn, while a
    worker with room stood idle (measured with real processes: 4 jobs, 12 attempts, 4.5 s).
    It now claims nothing for a lease after a full disk: the job it gave back runs elsewhere."""
    env = Env(tmp_path / "room")
    disk = tmp_path / "full"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,nr_inodes=64", "tmpfs", str(disk)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert mounted.returncode == 0, f"mounting a tmpfs needs root: {mounted.stderr}"
    try:
        # The same database and storage, its scratch on the small disk. A long lease (its
        # pause): the worker with room starts only once the first attempt failed, and must
        # find the job given back still unclaimed.
        settings = Settings(
            data_dir=disk, storage_url=env.settings.storage, **{**FAST, "lease_seconds": 10.0}
        )
        full = build_services(settings, db=env.services.db)
        # Full to the last inode (and byte): the attempt's scratch folder cannot be made, so
        # it fails before any separation starts.
        with contextlib.suppress(OSError):
            for n in range(1000):
                (disk / f"filler-{n}").write_bytes(b"\0" * (64 << 10))
        with contextlib.suppress(OSError):
            for n in range(1000):
                (disk / f"inode-{n}").touch()
        job_id = env.submit(music, max_attempts=2)
        with running(Worker(full)):
            env.wait(job_id, lambda j: j.attempts >= 1 and j.status != "IN_PROGRESS")
            with running(Worker(env.services)):
                job = env.wait_final(job_id)
        assert (job.status, job.error_code, job.attempts) == ("COMPLETED", None, 2), env.logs(
            job_id
        )
        assert "attempt 1 failed (STORAGE_FULL" in env.logs(job_id)[2]
        assert not (disk / "work").exists() or not list((disk / "work").iterdir())
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


# --- which worker runs what ------------------------------------------------------------------


def test_a_worker_leaves_jobs_for_models_it_does_not_run(tmp_path: Path, music: Path) -> None:
    env = Env(tmp_path)
    job_id = env.submit(music)
    with running(Worker(env.services, models=["cascade-4stems"])):
        time.sleep(1.0)
        job = env.job(job_id)
        assert (job.status, job.attempts) == ("IN_QUEUE", 0)


def test_a_worker_without_a_clean_up_model_leaves_the_jobs_that_need_one(
    tmp_path: Path, music: Path
) -> None:
    """A job asking for a model clean-up step (MusicGPT's `Deecho`: the API accepts it when
    any worker advertises such a model) was claimed by a worker without one, whose child
    failed it at once, MODEL_UNAVAILABLE for good, though another worker could run it."""
    env = Env(tmp_path)
    assert "deecho" in missing_steps(env.settings)  # no de-echo model here
    needs = env.submit(music, preprocess=["deecho"])
    plain = env.submit(music)  # queued after it: claimed only once it was passed over
    with running(Worker(env.services)):
        assert env.wait_final(plain).status == "COMPLETED"
    job = env.job(needs)
    assert (job.status, job.attempts) == ("IN_QUEUE", 0)
    # It waits for a worker that has the model.
    claim = env.services.queue.claim("has-a-de-echo-model")
    assert claim is not None and claim.id == needs


def test_two_slots_run_two_jobs_at_once(tmp_path: Path, music: Path) -> None:
    env = Env(tmp_path)
    jobs = [env.submit(music), env.submit(music)]
    with running(Worker(env.services, slots=2)) as worker:
        owners: set[str] = set()

        def both_running() -> bool:
            # A claimed job is IN_PROGRESS a moment before its slot's child exists: wait for
            # both children too (the real condition), not only for the rows.
            rows = [env.job(j) for j in jobs]
            if all(r.status == "IN_PROGRESS" for r in rows) and None not in worker.child_pids():
                owners.update(r.lease_owner or "" for r in rows)
                return True
            return False

        wait_until(both_running, 60, "both jobs to run at once, each in its slot's child")
        assert owners == set(worker.worker_ids)
        pids = worker.child_pids()
        assert None not in pids and len(set(pids)) == 2
        for job_id in jobs:
            assert env.wait_final(job_id).status == "COMPLETED"


# --- workers that die or lose their lease -----------------------------------------------------


def test_a_stopped_worker_process_requeues_its_job_at_once(
    tmp_path: Path, long_music: Path
) -> None:
    env = Env(tmp_path)
    job_id = env.submit(long_music)
    proc = worker_process(env)
    try:
        env.wait(job_id, lambda j: j.status == "IN_PROGRESS" and j.stage is not None)
        child = separation_child(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        proc.kill()
    job = env.job(job_id)
    # A stop is the operator's (a deploy, a scale-down): the attempt does not count, so three
    # restarts during a long job never fail it.
    assert (job.status, job.attempts, job.lease_owner) == ("IN_QUEUE", 0, None)
    assert env.logs(job_id)[-1] == (
        "attempt given back (the worker stopped during the attempt); it does not count"
    )
    wait_until(lambda: gone(child), 5, "the child to exit with its worker")


def test_a_stop_sent_to_the_whole_process_group_gives_the_job_back_too(
    tmp_path: Path, long_music: Path
) -> None:
    """systemd stops a service with SIGTERM to every process of it (KillMode=control-group):
    the separation child and its fork server died of it as the worker was told to stop, and
    the attempt counted as a crash ("MODEL_FAILED: the separation process died (exit code
    255)"): three restarts during a long job failed it."""
    env = Env(tmp_path)
    job_id = env.submit(long_music)
    proc = worker_process(env, own_group=True)
    try:
        env.wait(job_id, lambda j: j.status == "IN_PROGRESS" and j.stage is not None)
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    job = env.job(job_id)
    assert (job.status, job.attempts, job.lease_owner) == ("IN_QUEUE", 0, None)
    assert env.logs(job_id)[-1] == (
        "attempt given back (the worker stopped during the attempt); it does not count"
    )


def test_an_idle_workers_poll_is_one_read_and_a_lapsed_lease_is_still_taken_back(
    tmp_path: Path, music: Path
) -> None:
    """Each worker slot polls every ``poll_seconds``. A poll with nothing to do opened the
    claim's write transaction (on SQLite the write lock the API waits for) and ran four
    queries: one SELECT now. A job whose worker stopped renewing its lease is still found,
    queued again and claimed by the next poll."""
    env = Env(tmp_path)
    queue = env.services.queue
    with sql_sent() as sent:
        idle = [queue.claim("idle-slot") for _ in range(3)]
    assert (idle, sent) == ([None] * 3, ["SELECT"] * 3)
    job_id = env.submit(music)
    first = queue.claim("dead-slot")
    assert first is not None and (first.id, first.attempt) == (job_id, 1)
    lapsed = env.services.db.clock() - 3 * timedelta(seconds=env.settings.lease_seconds)
    with env.services.db.write() as s:  # its worker died: the lease ran out a while ago
        s.execute(update(Job).where(Job.id == job_id).values(lease_expires_at=lapsed))
    again = queue.claim("next-slot")
    assert again is not None and (again.id, again.attempt) == (job_id, 2)


def test_a_killed_worker_process_is_recovered_after_its_lease(tmp_path: Path, music: Path) -> None:
    env = Env(tmp_path)
    job_id = env.submit(music)
    proc = worker_process(env)
    try:
        # The child is at work on the job (a stage came from it), so it has asked to die with
        # its parent: the real condition, where a fixed pause only made it likely.
        env.wait(job_id, lambda j: j.status == "IN_PROGRESS" and j.stage is not None)
        child = separation_child(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
    finally:
        proc.kill()
    # The child must not outlive its worker (it would keep the CPU or GPU busy).
    wait_until(lambda: gone(child), 5, "the orphaned child to die")
    assert env.job(job_id).status == "IN_PROGRESS"  # until the lease expires
    with running(Worker(env.services)):
        job = env.wait_final(job_id)
    assert (job.status, job.attempts) == ("COMPLETED", 2)
    logs = env.logs(job_id)
    # The job's log says what became of attempt 1 before attempt 2 starts.
    lost = next(i for i, m in enumerate(logs) if m.startswith("attempt 1 lost: "))
    assert re.fullmatch(
        r"attempt 1 lost: \S+ stopped renewing its lease \(killed, crashed or cut off\)",
        logs[lost],
    )
    assert logs[lost + 1].startswith("attempt 2 started on ")
    assert job.outputs is not None
    assert env.blobs(f"outputs/{job_id}") == sorted(
        f"attempt-2/{name}.wav" for name in ("vocals", "instrumental")
    )


class MovableClock:
    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> Any:
        return utcnow() + self.offset


def test_a_worker_whose_lease_moved_on_writes_nothing(
    tmp_path: Path, music: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # No heartbeat during the job: the loss is found by complete(), after the upload.
    clock = MovableClock()
    db = Database(Settings(data_dir=tmp_path).database, clock=clock)
    env = Env(tmp_path, db=db, heartbeat_seconds=600, lease_seconds=60)
    caplog.set_level("INFO", logger="demixer.worker")
    job_id = env.submit(music)
    with running(Worker(env.services)):
        env.wait(job_id, lambda j: j.status == "IN_PROGRESS")
        clock.offset = timedelta(seconds=120)  # the lease has expired: another worker takes it
        thief = env.services.queue.claim("thief")
        assert thief is not None and thief.attempt == 2
        wait_until(lambda: "lease_lost" in caplog.text, 120, "the first worker to give up")
    job = env.job(job_id)
    assert (job.status, job.lease_owner, job.outputs) == ("IN_PROGRESS", "thief", None)
    assert env.blobs(f"outputs/{job_id}") == []  # the uploaded attempt-1 files were deleted


def test_a_lost_lease_found_by_the_heartbeat_kills_the_child(
    tmp_path: Path, long_music: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env = Env(tmp_path)
    # The thief's clock runs a minute ahead: the worker's lease has run out by it, however
    # often the worker's heartbeats renew it by their own clock.
    ahead = MovableClock()
    ahead.offset = timedelta(seconds=60)
    thief = Queue(Database(Settings(data_dir=tmp_path).database, clock=ahead))
    caplog.set_level("INFO", logger="demixer.worker")
    job_id = env.submit(long_music)
    with running(Worker(env.services)) as worker:
        # Separating: a loss found while the input is fetched leaves the idle child alone.
        env.wait(job_id, lambda j: j.stage == "separating", timeout=60)
        pid = worker.child_pids()[0]
        assert pid is not None
        # (A claim skips a row a heartbeat holds locked at that instant: asked again then.)
        wait_until(lambda: thief.claim("thief"), 30, "the thief's claim")
        wait_until(lambda: "lease_lost" in caplog.text, 30, "the worker to find the loss")
        assert gone(pid)
    job = env.job(job_id)
    assert (job.status, job.lease_owner, job.attempts) == ("IN_PROGRESS", "thief", 2)
    assert env.blobs(f"outputs/{job_id}") == []


@pytest.mark.backends("sqlite")  # the children's threads: the same on either backend
def test_slots_share_the_cores_and_threads_overrides(tmp_path: Path) -> None:
    """Each slot's separation gets cores ÷ slots threads (N children on every core only wait
    on each other); DEMIXER_THREADS sets it, e.g. for several worker processes on a machine."""
    cpus = os.cpu_count() or 1
    two = Worker(Env(tmp_path / "a").services, slots=2)
    assert [s.runner.options.threads for s in two.slots] == [max(1, cpus // 2)] * 2
    assert Worker(Env(tmp_path / "b").services).slots[0].runner.options.threads is None
    pinned = Worker(Env(tmp_path / "c", threads=1).services)
    assert pinned.slots[0].runner.options.threads == 1


def test_an_unexpected_error_in_the_child_tells_the_owner_its_kind_and_the_operator_its_trace(
    shared: tuple[Env, Worker],
    music: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An error the separation child did not expect (a bug; here a limit of the wrong type):
    the job's error gave its owner the exception's text, which may name the server's files,
    and no log had the traceback. The owner reads the kind of failure now, and the worker's
    log has the traceback."""
    env, worker = shared
    real = runner.ChildJob

    def wrong_limit(**fields: Any) -> ChildJob:
        return real(**{**fields, "max_seconds": "/srv/demixer/limit"})

    monkeypatch.setattr(runner, "ChildJob", wrong_limit)
    with caplog.at_level("ERROR", logger="demixer.worker"):
        job = env.wait_final(env.submit(music, max_attempts=1))
    assert (job.status, job.error_code) == ("FAILED", "MODEL_FAILED")
    assert job.error_message == ("the separation failed (TypeError); the server's log has details")
    (line,) = [r for r in caplog.records if "the separation failed" in r.getMessage()]
    assert line.getMessage() == f"{worker.worker_ids[0]}: job {job.id}: the separation failed"
    trace = line.trace  # type: ignore[attr-defined]  # written after the line (access_log.py)
    assert "Traceback (most recent call last)" in trace
    assert "in check_input" in trace
    assert "TypeError: '>' not supported" in trace


def test_an_audio_url_queued_before_url_inputs_were_turned_off_is_not_fetched(
    tmp_path: Path,
) -> None:
    """DEMIXER_AUDIO_URLS=false refuses new URL inputs at submit; a request queued before the
    switch was still fetched, from outside a network the operator had closed."""
    env = Env(tmp_path / "data", audio_urls=False)
    with local_origin() as origin:
        url = origin.url("/a.wav")
        job_id = env.submit(
            params={"input": {"audio_url": url}, "stems": ["vocals"]}, max_attempts=1
        )
        claim = env.services.queue.claim("w1")
        assert claim is not None and claim.id == job_id
        options = ChildOptions(model_dir=None, device="cpu", threads=1, parent_pid=os.getpid())
        runner.Runner(env.services, "w1", options).run_job(claim, threading.Event())
    job = env.wait_final(job_id)
    assert (job.status, job.error_code, job.attempts) == ("FAILED", "TURNED_OFF", 1)
    assert job.error_message == (
        "this server fetches no audio from URLs (its operator turned DEMIXER_AUDIO_URLS off): "
        "upload the file itself"
    )
