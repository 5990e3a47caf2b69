"""PostgreSQL as the shared job database: migrations, the shared clock, wakeups, outages.

Everything runs on a real PostgreSQL server (``scale_servers``, a fresh database per test) with
local storage, real :class:`Worker` threads and the real Spleeter model. Processes are played
by separate :class:`Database`/:class:`Services` instances: each has its own connection pool,
clock and wakeup state, exactly what a process on another machine would have.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import soundfile as sf
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import func, insert, inspect, select, text
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError

from api_support import TestClient, close_app
from audiofiles import stempeg_example
from conftest import downgrade
from demixer.audio import load
from demixer.errors import TooManyConcurrentJobs
from demixer.server.app import create_app
from demixer.service import migrate as migrate_module
from demixer.service.accounts.keys import ALL_SCOPES, create_key
from demixer.service.accounts.limits import check_concurrency
from demixer.service.accounts.storage import storage_use
from demixer.service.db import Database, retry_unavailable
from demixer.service.files.lifecycle import PURPOSE, REQUEST_INPUT, listed
from demixer.service.jobs.contract import JobParams, MusicGptFields, UploadInput, UrlInput
from demixer.service.jobs.queue import COMPLETED, IN_PROGRESS, LeaseLost, Queue
from demixer.service.jobs.wakeup import APP_NAME, JobListener, libpq_conninfo
from demixer.service.migrate import alembic_config, migrate
from demixer.service.schema import ApiKey, Base, Delivery, File, Job, JobLog, UsageRecord
from demixer.service.worker import Worker
from servers import Servers
from service_harness import run_demixer
from test_worker import Env
from worker_support import running, wait_until

SKEW = timedelta(minutes=10)

# A job the queue tests move around (its contents are never run).
PARAMS = JobParams(input=UrlInput(audio_url="https://example.org/a.wav"))


@pytest.fixture(scope="module")
def scale_servers(own_scale_servers: Servers) -> Servers:
    """This module stops and restarts its servers: never the ones other test processes use."""
    return own_scale_servers


@pytest.fixture
def pg_url(scale_servers: Servers) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test."""
    url = scale_servers.create_database()
    try:
        yield url
    finally:
        scale_servers.drop_database(url)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Real music (the MUSDB18 excerpt), cut to 1, 2 and 3 s."""
    audio, rate = load(stempeg_example())
    root = tmp_path_factory.mktemp("clips")
    paths = []
    for seconds in (1, 2, 3):
        path = root / f"clip{seconds}.wav"
        sf.write(str(path), audio[:, : seconds * rate].T, rate, subtype="PCM_16")
        paths.append(path)
    return paths


def _listeners(url: str) -> list[int]:
    """Server pids of the sessions listening for jobs."""
    with psycopg.connect(libpq_conninfo(url), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (APP_NAME,)
        ).fetchall()
    return [int(r[0]) for r in rows]


def test_two_submits_cannot_both_take_a_keys_last_place(pg_url: str) -> None:
    """A key's concurrency limit is counted inside the submit's transaction. SQLite's write lock
    serialises those; on PostgreSQL nothing did (with two API processes, 9 to 11 of 20
    concurrent submits got in under a limit of 8). The key's row is locked now: a second
    submit waits for the first to commit, then counts its request."""
    db = Database(pg_url)
    db.create_all()
    account, _ = create_key(db)
    with db.read() as s:
        key_id = s.execute(select(ApiKey.id).where(ApiKey.account_id == account)).scalar_one()
    queue = Queue(db)
    second: list[BaseException | None] = []

    def submit_second() -> None:
        try:
            with db.write() as s:
                check_concurrency(s, key_id, 1)
            second.append(None)
        except TooManyConcurrentJobs as exc:
            second.append(exc)

    with db.write() as s:
        check_concurrency(s, key_id, 1)  # room for one: this request takes it
        queue.submit(s, job_id="job_first", account_id=account, queue_model="q",
                     engine_model="m", params=PARAMS, key_id=key_id)  # fmt: skip
        thread = threading.Thread(target=submit_second)
        thread.start()
        # Until the second has counted (the old code) or waits on a lock (the fix).
        wait_until(lambda: second or _lock_waiters(pg_url) > 0, timeout=30)
    thread.join(30)
    assert len(second) == 1 and isinstance(second[0], TooManyConcurrentJobs)
    db.dispose()


def _lock_waiters(url: str) -> int:
    """Sessions of this database waiting for a lock."""
    with psycopg.connect(libpq_conninfo(url), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND datname = current_database()"
        ).fetchone()
    return int(row[0]) if row else 0


# --- migrations -------------------------------------------------------------------------------


def _database_url(dialect: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A new, empty database of ``dialect``: a SQLite file, or this test's PostgreSQL one."""
    if dialect == "sqlite":
        return f"sqlite:///{tmp_path / 'demixer.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_migrations_build_the_models_schema_and_are_idempotent(
    dialect: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = _database_url(dialect, tmp_path, request)
    db = Database(url)
    migrate(db)
    migrate(db)  # a second run (every `serve`/`worker` start) changes nothing
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
        version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
    assert version == ScriptDirectory.from_config(alembic_config()).get_current_head()
    db.dispose()


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_a_failed_statements_error_never_holds_the_values_bound_to_it(
    dialect: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The error of a failed statement is logged whole, traceback and all: it held the values
    bound to the statement (a webhook's whsec_ secret, a signed URL), and logs are shipped
    where secrets must not go."""
    url = _database_url(dialect, tmp_path, request)
    db = Database(url)
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    with pytest.raises(DBAPIError) as failed, db.engine.connect() as conn:
        conn.execute(text("SELECT no_such_column WHERE 1 = :s"), {"s": secret})
    assert "no_such_column" in str(failed.value)  # the SQL is still said
    assert secret not in str(failed.value)
    db.dispose()


def _submit(queue: Queue, db: Database, account: str, job_id: str, engine_model: str) -> None:
    with db.write() as s:
        queue.submit(
            s, job_id=job_id, account_id=account, queue_model="q", engine_model=engine_model,
            params=PARAMS,
        )  # fmt: skip


def _old_row(db: Database, table: type[Job] | type[File], **values: Any) -> None:
    """A row as an earlier release wrote it, on its schema: the columns given (and their
    defaults) only. Today's ORM would name every column it knows, a later revision's too."""
    with db.write() as s:
        s.execute(insert(table).values(**values))


def _old_job(db: Database, account: str, job_id: str, engine_model: str, **values: Any) -> None:
    """A queued job as an earlier release wrote it (:func:`_old_row`)."""
    now = db.clock()
    values = {"params": PARAMS.to_row(), "created_at": now, "updated_at": now, **values}
    _old_row(db, Job, id=job_id, account_id=account, queue_model="q", engine_model=engine_model,
             **values)  # fmt: skip


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_an_upgrade_keeps_every_jobs_log_and_webhook_deliveries(
    dialect: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """On SQLite, 0005 changes a column of ``jobs`` by copying the table and dropping the old
    one; with foreign keys on, the drop deleted every row that references a job ON DELETE
    CASCADE: the upgrade from the previous release (0004) emptied every job's log and its
    webhook deliveries, those still to be sent too."""
    url = _database_url(dialect, tmp_path, request)
    db = Database(url)
    migrate(db, "0004")
    account, _ = create_key(db)
    _old_job(db, account, "job_old", "m")
    now = db.clock()
    with db.write() as s:
        s.add(JobLog(job_id="job_old", timestamp=now, message="attempt 1 on worker w"))
        s.add(Delivery(id="whk_1", job_id="job_old", url="https://example.org/hook",
                       secret="whsec_x", event_type="audio.separate.completed", payload={},
                       next_attempt_at=now, created_at=now, updated_at=now))  # fmt: skip
    migrate(db)
    with db.read() as s:
        logs = s.scalars(select(JobLog.message).where(JobLog.job_id == "job_old")).all()
        pending = s.scalars(select(Delivery.id).where(Delivery.status == "pending")).all()
    assert "attempt 1 on worker w" in logs and pending == ["whk_1"]
    # Foreign keys hold again after the upgrade.
    with db.engine.connect() as conn, pytest.raises(IntegrityError):
        conn.execute(text("INSERT INTO job_logs (job_id, timestamp, message) "
                          "VALUES ('job_none', :now, 'x')"), {"now": now})  # fmt: skip
    db.dispose()


def test_model_ids_widen_to_200_characters_keeping_every_job(pg_url: str) -> None:
    """0005: an ensemble's id (every model it names) fits in a job and its usage record, on a
    database of the previous release whose jobs survive the upgrade; going back refuses to cut
    an id longer than the old 50 characters."""
    db = Database(pg_url)
    migrate(db, "0004")
    account, _ = create_key(db)
    _old_job(db, account, "job_old", "m")
    long = "max:" + "+".join(f"model-number-{i:02d}" for i in range(12))  # 195 characters
    with pytest.raises(DataError, match="value too long for type character varying\\(50\\)"):
        _old_job(db, account, "job_long", long)
    migrate(db)
    _submit(Queue(db), db, account, "job_long", long)
    with db.write() as s:
        s.add(UsageRecord(account_id=account, job_id="job_long", model=long, quantity=1.0,
                          recorded_at=db.clock()))  # fmt: skip
    with db.read() as s:
        rows = dict(s.execute(select(Job.id, Job.engine_model)).all())
        usage = s.execute(select(UsageRecord.model)).scalar_one()
    assert rows == {"job_old": "m", "job_long": long} and usage == long
    with pytest.raises(RuntimeError, match="holds a 195-character model id"):
        downgrade(db, "0004")
    with db.read() as s:
        assert s.execute(select(Job.engine_model).where(Job.id == "job_long")).scalar_one() == long
    db.dispose()


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_musicgpt_extraction_uploads_stored_before_their_purpose_are_no_longer_listed(
    dialect: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """0006: a MusicGPT extraction's `audio_file` stored before it had its own purpose (an
    old row, of either job contract version) was listed by GET /v1/files until it expired,
    under an id no answer names; an upload its owner was given the id of is listed still."""
    db = Database(_database_url(dialect, tmp_path, request))
    migrate(db, "0005")
    account, _ = create_key(db)
    now = db.clock()

    def upload(file_id: str) -> dict[str, str]:
        # As the code of 0005 stored every upload.
        _old_row(db, File, id=file_id, account_id=account, file_name="song.wav",
                 content_type="audio/wav", purpose=PURPOSE, status="uploaded",
                 storage_key=f"inputs/{file_id}", created_at=now,
                 expires_at=now + timedelta(hours=72))  # fmt: skip
        return {"file_id": file_id, "storage_key": f"inputs/{file_id}", "file_name": "song.wav"}

    extraction = JobParams(
        input=UploadInput(**upload("file_extraction")),
        vendor=MusicGptFields(stems={"vocals": "vocals"}),
    ).to_row()
    old_extraction = {  # version 1, before the job contract
        "input": upload("file_old_extraction"),
        "stems": ["vocals"],
        "musicgpt": {"stems": {"vocals": "vocals"}, "preprocessing_options": []},
    }
    native = JobParams(input=UploadInput(**upload("file_native"))).to_row()
    for job_id, params in (("j1", extraction), ("j2", old_extraction), ("j3", native)):
        _old_job(db, account, job_id, "spleeter-2stems", params=params)

    def listed_ids() -> list[str]:
        with db.read() as s:
            query = select(File.id).where(File.account_id == account, listed(db.clock()))
            return sorted(s.scalars(query).all())

    assert listed_ids() == ["file_extraction", "file_native", "file_old_extraction"]
    migrate(db)
    assert listed_ids() == ["file_native"]
    with db.read() as s:
        purposes = dict(s.execute(select(File.id, File.purpose)).all())
    assert purposes["file_extraction"] == purposes["file_old_extraction"] == REQUEST_INPUT
    db.dispose()


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_results_completed_before_0011_hold_the_same_bytes_against_the_cap(
    dialect: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """0011: the storage cap sums ``jobs.output_bytes``, which a job writes as it completes.
    The results completed before it (every one still kept, 48 h) are filled in from their
    outputs, by the rule the sum read their JSON with: each output's size (a stem may pass
    2 GiB), none for one without a size; GET /v1/usage and the 413s count what they did."""
    db = Database(_database_url(dialect, tmp_path, request))
    migrate(db, "0010")
    account, _ = create_key(db)
    now = db.clock()
    stems = {
        "vocals": {"key": "outputs/j/attempt-1/vocals.wav", "size": 3_000_000_000},
        "drums": {"key": "outputs/j/attempt-1/drums.wav", "size": 1234},
        "drums.mp3": {"key": "outputs/j/attempt-1/drums.mp3"},
    }
    rows = {
        "j_stems": (COMPLETED, stems),
        "j_none": (COMPLETED, {}),
        "j_null": (COMPLETED, None),
        "j_failed": ("FAILED", None),
    }
    for job_id, (status, outputs) in rows.items():
        _old_job(db, account, job_id, "m", status=status, outputs=outputs, finished_at=now,
                 expires_at=now + timedelta(hours=48))  # fmt: skip
    migrate(db)
    with db.read() as s:
        held = dict(s.execute(select(Job.id, Job.output_bytes)).all())
        use = storage_use(s, account, 0, db.clock())
    assert (use.results_bytes, use.used_bytes) == (3_000_001_234, 3_000_001_234)
    assert held == {"j_stems": 3_000_001_234, "j_none": 0, "j_null": 0, "j_failed": None}
    db.dispose()


# --- one clock for every machine ----------------------------------------------------------------


def test_leases_follow_the_database_clock_not_a_skewed_local_one(pg_url: str) -> None:
    """A worker whose machine clock is 10 minutes behind still writes leases by the server's
    clock, so another worker (clock 10 minutes ahead) neither steals its live lease nor waits
    10 minutes for an expired one."""
    behind = Database(pg_url, local_time=lambda: datetime.now(UTC) - SKEW)
    ahead = Database(pg_url, local_time=lambda: datetime.now(UTC) + SKEW)
    behind.create_all()
    with behind.engine.connect() as conn:
        server_now = conn.execute(text("SELECT clock_timestamp()")).scalar_one()
    for db in (behind, ahead):
        assert abs(db.clock() - server_now) < timedelta(seconds=2)
    slow, fast = Queue(behind, lease_seconds=4.0), Queue(ahead, lease_seconds=4.0)
    account, _ = create_key(behind)
    with behind.write() as s:
        slow.submit(
            s,
            job_id="job_clock",
            account_id=account,
            queue_model="q",
            engine_model="m",
            params=PARAMS,
        )
    with behind.read() as s:
        before = s.execute(select(func.clock_timestamp())).scalar_one()
    claim = slow.claim("worker-behind")
    assert claim is not None
    with behind.read() as s:
        lease = s.execute(select(Job.lease_expires_at).where(Job.id == "job_clock")).scalar_one()
        after = s.execute(select(func.clock_timestamp())).scalar_one()
    assert lease is not None
    # The lease ends 4 s after the claim by the server's clock (a local clock is 10 min off):
    # between the server's times read just before and just after it, on a machine of any speed,
    # give or take the error of the worker's estimate of that clock (an offset measured over a
    # round trip: 1 ms off in one run here; 1 s allows for round trips of up to 2 s).
    estimate = timedelta(seconds=1)
    assert (
        before + timedelta(seconds=4) - estimate <= lease <= after + timedelta(seconds=4) + estimate
    )
    assert fast.claim("worker-ahead") is None  # the lease is live by the shared clock
    stolen = wait_until(lambda: fast.claim("worker-ahead"), timeout=10, what="the lease to end")
    with behind.read() as s:
        stolen_at = s.execute(select(func.clock_timestamp())).scalar_one()
    # Taken once the lease had run out by the server's clock, not 20 minutes later.
    assert lease <= stolen_at < lease + timedelta(seconds=5)
    assert stolen.attempt == 2
    behind.dispose()
    ahead.dispose()


def test_an_injected_clock_still_wins(pg_url: str) -> None:
    fixed = datetime(2030, 1, 1, tzinfo=UTC)
    db = Database(pg_url, clock=lambda: fixed)
    assert db.clock() == fixed
    db.dispose()


# --- LISTEN/NOTIFY wakeups ----------------------------------------------------------------------


def test_a_job_queued_by_another_process_wakes_an_idle_worker_at_once(
    pg_url: str, tmp_path: Path, clips: list[Path]
) -> None:
    """poll_seconds=30: without NOTIFY a job would wait up to 30 s; it is claimed at once (well
    under a second on a quiet machine), also after the listener's connection was killed (it
    reconnects)."""
    worker_env = Env(tmp_path / "worker", database_url=pg_url, poll_seconds=30.0)
    # The API process: its own pool, clock and wakeup state; same database and storage.
    api_env = Env(tmp_path / "worker", database_url=pg_url, poll_seconds=30.0)
    api_env.account = worker_env.account
    latencies = []
    with running(Worker(worker_env.services)):
        wait_until(lambda: len(_listeners(pg_url)) == 1, 10, "the listener")
        time.sleep(0.5)  # the slot has polled once and is idle for 30 s
        for round_ in range(2):
            job_id = api_env.submit(clips[0])
            started = worker_env.wait(job_id, lambda j: j.started_at is not None, 10)
            assert started.started_at is not None
            latencies.append((started.started_at - started.created_at).total_seconds())
            assert worker_env.wait_final(job_id, 60).status == COMPLETED
            if round_ == 0:
                (pid,) = _listeners(pg_url)
                with psycopg.connect(libpq_conninfo(pg_url), autocommit=True) as conn:
                    conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
                wait_until(lambda p=pid: _listeners(pg_url) not in ([], [p]), 15, "a reconnect")
                time.sleep(0.5)
    print(f"claim latency after submit: {[f'{x * 1000:.0f} ms' for x in latencies]}")
    # Woken, not polled: far inside the 30 s poll (a third of it, so a loaded machine that
    # delays the claim by seconds cannot pass for one that waits for the poll).
    assert all(latency < 10.0 for latency in latencies), latencies


def test_notifications_are_sent_at_commit_only(pg_url: str) -> None:
    db = Database(pg_url)
    db.create_all()
    account, _ = create_key(db)
    queue = Queue(db)
    listener = JobListener(queue, check_seconds=1.0)
    listener.start()
    try:
        assert listener.listening.wait(10)
        with pytest.raises(RuntimeError), db.write() as s:
            queue.submit(
                s,
                job_id="job_rb",
                account_id=account,
                queue_model="q",
                engine_model="m",
                params=PARAMS,
            )
            raise RuntimeError("rolled back")
        time.sleep(0.5)
        assert listener.notifications == 0
        with db.write() as s:
            queue.submit(
                s,
                job_id="job_ok",
                account_id=account,
                queue_model="q",
                engine_model="m",
                params=PARAMS,
            )
        wait_until(lambda: listener.notifications == 1, 5, "the notification")
    finally:
        listener.stop()
        db.dispose()


# --- a PostgreSQL restart -----------------------------------------------------------------------


def test_workers_and_the_api_ride_out_a_postgres_restart(
    scale_servers: Servers, pg_url: str, tmp_path: Path, clips: list[Path]
) -> None:
    """PostgreSQL stops for ~5 s while jobs run: the API answers 503 DATABASE_UNAVAILABLE
    meanwhile and 200 after; the worker (same process objects throughout) completes every
    job exactly once."""
    env = Env(tmp_path / "data", database_url=pg_url, public_url="http://testserver")
    _, key = create_key(env.services.db, account_id=env.account, scopes=ALL_SCOPES)
    headers = {"Authorization": f"Bearer {key}"}
    client = TestClient(create_app(env.services), raise_server_exceptions=False)
    jobs = [env.submit(path) for path in (*clips, *clips)]
    outage: list[int] = []
    with running(Worker(env.services, slots=2)):
        env.wait(jobs[0], lambda j: j.status == IN_PROGRESS, 60)
        scale_servers.stop_postgres()
        try:
            down = client.get(f"/v1/queue/requests/{jobs[0]}/status", headers=headers)
            assert down.status_code == 503, down.text
            assert down.json()["error"]["code"] == "DATABASE_UNAVAILABLE"
            assert int(down.headers["Retry-After"]) > 0
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                r = client.get(f"/v1/queue/requests/{jobs[0]}/status", headers=headers)
                outage.append(r.status_code)
                time.sleep(0.5)
        finally:
            scale_servers.start_postgres()
        up = client.get(f"/v1/queue/requests/{jobs[0]}/status", headers=headers)
        assert up.status_code == 200, up.text
        for job_id in jobs:
            assert env.wait_final(job_id, 120).status == COMPLETED, env.logs(job_id)
    assert set(outage) == {503}
    with env.services.db.read() as s:
        for job_id in jobs:
            logs = s.execute(select(JobLog.message).where(JobLog.job_id == job_id)).scalars()
            assert sum(m.startswith("completed") for m in logs) == 1, env.logs(job_id)
            usage = s.execute(select(func.count()).where(UsageRecord.job_id == job_id))
            assert usage.scalar_one() == 1
    close_app(client)


# A helper thread must not outlive its test.
def test_the_listener_stops_without_waiting_for_its_connection_check(pg_url: str) -> None:
    # With a check due only every 10 minutes, stop() (which waits up to that long) returns with
    # the thread gone only if the thread wakes for the stop itself: no clock decides it, and a
    # thread that slept until its check would run into the test's timeout.
    listener = JobListener(Queue(Database(pg_url)), check_seconds=600)
    listener.start()
    assert listener.listening.wait(10)
    listener.stop()
    assert not any(t.name == "demixer-listen" and t.is_alive() for t in threading.enumerate())


def test_complete_is_retried_through_an_outage_and_is_idempotent(
    scale_servers: Servers, pg_url: str
) -> None:
    """A complete() that meets a stopped server succeeds once it is back (retry_unavailable);
    a repeat of a complete that did commit is harmless; another attempt's is LeaseLost."""
    db = Database(pg_url)
    db.create_all()
    account, _ = create_key(db)
    queue = Queue(db, lease_seconds=60)
    with db.write() as s:
        queue.submit(
            s,
            job_id="job_c",
            account_id=account,
            queue_model="q",
            engine_model="m",
            params=PARAMS,
        )
    assert queue.claim("w1") is not None
    outputs = {"vocals": {"key": "outputs/job_c/attempt-1/vocals.wav"}}
    done = threading.Event()

    tries: list[float] = []

    def one_try() -> None:
        tries.append(time.monotonic())
        queue.complete("job_c", "w1", outputs=outputs, duration=1.0, sample_rate=44100)

    def complete() -> None:
        retry_unavailable(one_try, within=60, what="test")
        done.set()

    scale_servers.stop_postgres()
    try:
        thread = threading.Thread(target=complete, daemon=True)
        thread.start()
        wait_until(lambda: len(tries) >= 3, timeout=30, what="two retries")
        assert not done.is_set()  # every try so far met the stopped server
    finally:
        scale_servers.start_postgres()
    thread.join(30)
    assert done.is_set()
    with db.read() as s:
        assert s.execute(select(Job.status).where(Job.id == "job_c")).scalar_one() == COMPLETED
    queue.complete("job_c", "w1", outputs=outputs, duration=1.0, sample_rate=44100)  # a repeat
    with pytest.raises(LeaseLost):
        queue.complete("job_c", "w1", outputs={}, duration=1.0, sample_rate=44100)
    db.dispose()


def test_a_postgres_restart_longer_than_a_lease_leaves_running_jobs_to_their_workers(
    scale_servers: Servers, pg_url: str
) -> None:
    """PostgreSQL down for longer than a lease: every running job's lease ran out meanwhile,
    and the first claim after the restart took each from its live worker (measured with real
    processes, a 10 s restart and 6 s leases: the job restarted on another worker, its
    separation so far thrown away), or failed it WORKER_LOST on its last attempt. Now the
    workers have a lease after the restart to renew; a worker that died meanwhile still has
    its job taken over, a lease later."""
    db = Database(pg_url)
    db.create_all()
    account, _ = create_key(db)
    queue = Queue(db, lease_seconds=2.0)
    with db.write() as s:
        for job_id, attempts in (("job_live", 1), ("job_dead", 2)):
            queue.submit(s, job_id=job_id, account_id=account, queue_model="q",
                         engine_model="m", params=PARAMS, max_attempts=attempts)  # fmt: skip
    assert queue.claim("live-worker") is not None  # job_live (its only attempt)
    assert queue.claim("dead-worker") is not None  # job_dead: this worker dies in the outage
    scale_servers.stop_postgres()
    try:
        time.sleep(2.5)  # the outage outlasts the leases
    finally:
        scale_servers.start_postgres()
    other = queue.claim("other-worker")  # an idle worker's first claim after the restart
    with contextlib.suppress(LeaseLost):  # the live worker's heartbeat, then its result
        queue.heartbeat("job_live", "live-worker")
        queue.complete("job_live", "live-worker", outputs={}, duration=1.0, sample_rate=44100)
    with db.read() as s:
        live = s.execute(select(Job.status, Job.error_code).where(Job.id == "job_live")).one()
    assert tuple(live) == (COMPLETED, None)
    assert other is None  # nothing was taken from anyone
    # The dead worker's job is taken over a lease after the restart.
    taken = wait_until(lambda: queue.claim("other-worker"), timeout=30, what="the takeover")
    assert (taken.id, taken.attempt) == ("job_dead", 2)
    db.dispose()


def test_concurrent_claimers_settle_a_dead_workers_job_once(pg_url: str) -> None:
    """Expired jobs with no attempts left are failed by whichever claimer gets there first;
    on PostgreSQL (no database-wide write lock) the others must not log or finalise again."""
    db = Database(pg_url)
    db.create_all()
    account, _ = create_key(db)
    queue = Queue(db, lease_seconds=0.05)
    ids = [f"job_dead{i:03d}" for i in range(100)]
    with db.write() as s:
        for job_id in ids:
            queue.submit(
                s,
                job_id=job_id,
                account_id=account,
                queue_model="q",
                engine_model="m",
                params=PARAMS,
                max_attempts=1,
            )
    while queue.claim("dead-worker") is not None:
        pass
    time.sleep(0.2)
    claimers = [Queue(Database(pg_url)) for _ in range(8)]
    for q in claimers:  # connected and clock measured: they start together
        with q.db.read() as s:
            s.execute(select(func.count()).select_from(Job)).scalar_one()
        q.db.clock()
    gate = threading.Barrier(len(claimers))

    def claim(q: Queue) -> None:
        gate.wait()
        q.claim("live-worker")

    threads = [threading.Thread(target=claim, args=(q,)) for q in claimers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    with db.read() as s:
        lines = s.execute(select(JobLog.message).where(JobLog.message == "failed: WORKER_LOST"))
        assert len(lines.scalars().all()) == len(ids)
    for q in claimers:
        q.db.dispose()
    db.dispose()


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_processes_starting_together_migrate_once(
    dialect: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Every serve/worker process migrates at start: six at once on a new database all
    succeed (they take turns) and leave one schema."""
    url = _database_url(dialect, tmp_path, request)
    databases = [Database(url) for _ in range(6)]
    gate = threading.Barrier(len(databases))
    errors: list[BaseException] = []

    def start(db: Database) -> None:
        gate.wait()
        try:
            migrate(db)
        except BaseException as exc:  # reported below, with the others
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(db,)) for db in databases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    with databases[0].engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
    for db in databases:
        db.dispose()


def test_migrate_reads_dot_env_warns_of_a_mistyped_setting_and_hides_the_password(
    pg_url: str, tmp_path: Path
) -> None:
    """As the deployment guide says, `.env` in the directory a command starts in holds the
    settings (the environment wins over it); a DEMIXER_ name no part of demixer reads is
    named, with the setting it most likely meant; the password is never printed."""
    with_password = pg_url.replace("postgres@", "postgres:s3cret-pw@")  # trust auth: accepted
    (tmp_path / ".env").write_text(f"DEMIXER_DATABASE_URL={with_password}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEMIXER_")}
    env["DEMIXER_STORAGE_ULR"] = "s3://typo"
    done = run_demixer("migrate", "--data-dir", "data", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    masked = pg_url.replace("postgres@", "postgres:***@")
    assert done.stdout == f"database at {masked} is up to date\n"
    assert done.stderr == (
        "warning: DEMIXER_STORAGE_ULR is not a demixer setting and is ignored; did you mean "
        "DEMIXER_STORAGE_URL?\n"
    )
    assert "s3cret-pw" not in done.stdout + done.stderr
    assert not (tmp_path / "data" / "demixer.db").exists()  # not SQLite: the .env's database
    with psycopg.connect(pg_url.replace("postgresql+psycopg", "postgresql")) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone() is not None


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_a_schema_of_a_later_release_stops_the_command_and_is_left_alone(
    dialect: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The software rolled back over a database a later release upgraded: Alembic knows no way
    back from its revision. It was a traceback ("Can't locate revision"); it is one line naming
    the revision, exit 1, and the schema is left as it was."""
    url = _database_url(dialect, tmp_path, request)
    db = Database(url)
    migrate(db)
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEMIXER_")}
    env["DEMIXER_DATABASE_URL"] = url
    done = run_demixer("migrate", "--data-dir", str(tmp_path / "data"), env=env)
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert (done.returncode, done.stdout) == (1, ""), done.stderr
    assert done.stderr.strip() == (
        "error [SCHEMA_TOO_NEW] the database's schema is at revision 0099, made by a later "
        f"demixer release; this release knows revisions up to {head}: run the later release, "
        "or restore the backup taken before it upgraded the database"
    )
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0099"
    db.dispose()


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_another_applications_database_stops_the_command_and_is_left_alone(
    dialect: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A URL pointing at another application's database, which has an ``accounts`` table of
    its own: creating demixer's failed deep inside Alembic (PostgreSQL: a traceback; SQLite:
    waited for as an outage, then "did not answer"). One line, exit 2, nothing added."""
    url = _database_url(dialect, tmp_path, request)
    db = Database(url)
    with db.engine.begin() as conn:
        conn.execute(text("CREATE TABLE accounts (id INTEGER PRIMARY KEY, email TEXT)"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEMIXER_")}
    env |= {"DEMIXER_DATABASE_URL": url, "DEMIXER_DATABASE_WAIT_SECONDS": "30"}
    done = run_demixer("migrate", "--data-dir", str(tmp_path / "data"), env=env)
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    assert done.stderr.strip() == (
        f"error [INVALID_DATABASE_URL] the database {url!r} holds tables named as demixer's "
        "(accounts) but no demixer schema: it is another application's; give demixer a "
        "database of its own (DEMIXER_DATABASE_URL)"
    )
    with db.engine.connect() as conn:
        tables = sorted(inspect(conn).get_table_names())
    assert tables == ["accounts"]
    db.dispose()


def test_a_database_that_refuses_the_settings_stops_the_command_at_once(pg_url: str) -> None:
    """A database that is not there, or a user it does not know, is a wrong setting: waiting
    DEMIXER_DATABASE_WAIT_SECONDS for it (here 600 s: past the run's timeout) helps nobody,
    and "did not answer" would be untrue (it answered)."""
    base, name = pg_url.rsplit("/", 1)
    wrong = {
        f"{base}/{name}-missing": f'database "{name}-missing" does not exist',
        pg_url.replace("postgres@", "nobody@"): 'role "nobody" does not exist',
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEMIXER_")}
    for url, reason in wrong.items():
        wait = {"DEMIXER_DATABASE_URL": url, "DEMIXER_DATABASE_WAIT_SECONDS": "600"}
        done = run_demixer("migrate", env={**env, **wait})
        assert done.returncode == 2, done.stderr
        address, port = base.split("@", 1)[1].split(":")
        assert done.stderr.strip() == (
            f"error [INVALID_DATABASE_URL] the database {url!r} refused this process "
            f'(DEMIXER_DATABASE_URL): connection failed: connection to server at "{address}", '
            f"port {port} failed: FATAL: {reason}"
        )


def test_a_database_that_takes_no_writes_stops_the_command_at_once(pg_url: str) -> None:
    """A URL left on a standby after a failover (here: a database set read-only): `migrate`
    said "up to date" and `serve` started, then answered every submit 500 while its worker
    logged a traceback a second. Every service command now stops at start, saying why."""
    db = Database(pg_url)
    migrate(db)
    db.dispose()
    name = pg_url.rsplit("/", 1)[1]
    admin = pg_url.rsplit("/", 1)[0].replace("postgresql+psycopg", "postgresql") + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEMIXER_")}
    done = run_demixer("migrate", env={**env, "DEMIXER_DATABASE_URL": pg_url})
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    assert done.stderr.strip() == (
        f"error [INVALID_DATABASE_URL] the database {pg_url!r} refused this process "
        "(DEMIXER_DATABASE_URL): cannot execute UPDATE in a read-only transaction"
    )


def test_migrate_waits_out_a_locked_or_unreachable_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new SQLite file being switched to WAL by another process answers "database is locked"
    (seen once in CI with six processes starting together); PostgreSQL may not be up yet. The
    migration is one transaction: it is tried again, not given up."""
    db = Database(f"sqlite:///{tmp_path / 'demixer.db'}")
    real, calls = migrate_module._upgrade, []

    def flaky(database: Database, revision: str) -> None:
        calls.append(revision)
        if len(calls) < 3:
            raise OperationalError("PRAGMA journal_mode=WAL", {}, Exception("database is locked"))
        real(database, revision)

    monkeypatch.setattr(migrate_module, "_upgrade", flaky)
    migrate(db)
    assert len(calls) == 3
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
    db.dispose()
