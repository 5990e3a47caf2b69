"""`demixer copy-to`: a deployment on SQLite + a local folder carried to PostgreSQL + S3, the
way docs/deploy.md ("From one machine to several") tells an operator to grow.

Real servers: the session's PostgreSQL and `rclone serve s3` (tests/servers.py).
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from demixer.cli import app
from demixer.errors import InvalidRequest
from demixer.server.compose import build_services
from demixer.service.accounts.keys import authenticate, create_key
from demixer.service.db import Database
from demixer.service.jobs.contract import JobParams, UrlInput
from demixer.service.migrate import migrate
from demixer.service.schema import Account, ApiKey, Job, JobLog, Quota, WorkerRecord
from demixer.service.transfer import copy_records
from demixer.settings import Settings
from demixer.storage import open_storage
from servers import Servers

PARAMS = JobParams(input=UrlInput(audio_url="https://example.org/a.wav"))


@pytest.fixture
def one_box(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The embedded default: SQLite and stored files in a data directory."""
    for var in ("DEMIXER_DATABASE_URL", "DEMIXER_STORAGE_URL"):
        monkeypatch.delenv(var, raising=False)
    return Settings(data_dir=tmp_path / "data")


def test_keys_jobs_and_files_work_after_the_copy(
    one_box: Settings, scale_servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = build_services(one_box)
    migrate(services.db)
    account, secret = create_key(services.db, monthly_minutes=30)
    with services.db.write() as s:
        key_id = s.scalars(select(ApiKey.id)).one()
        services.queue.submit(s, job_id="req_old", account_id=account, queue_model="q",
                              engine_model="m", params=PARAMS, key_id=key_id)  # fmt: skip
        services.queue.log(s, "req_old", "queued on the one box")
        now = services.db.clock()
        worker = WorkerRecord(id="box:1:a", hostname="box", pid=1, device="cpu", models=["m"],
                              slots=1, version="0", started_at=now, last_seen_at=now)  # fmt: skip
        s.add(worker)
    services.storage.put("outputs/req_old/attempt-1/vocals.wav", io.BytesIO(b"stem"))
    database = scale_servers.create_database()
    bucket = scale_servers.create_bucket()
    for var, value in scale_servers.s3_env().items():
        monkeypatch.setenv(var, value)
    here = ["--data-dir", str(one_box.data_dir), "--database-url", database]
    try:
        # A serve or worker still running would write rows the copy never sees.
        refused = CliRunner().invoke(app, ["copy-to", *here, "--storage-url", bucket])
        assert refused.exit_code == 1
        assert "[CONFLICT] stop serve and every worker first; live: box:1:a" in refused.output
        with services.db.write() as s:
            s.execute(update(WorkerRecord).values(stopped_at=services.db.clock()))
        result = CliRunner().invoke(app, ["copy-to", *here, "--storage-url", bucket])
        assert result.exit_code == 0, result.output
        moved = Database(database)
        assert authenticate(moved, secret).account_id == account  # the key users hold
        with moved.write() as s:
            assert s.get(Job, "req_old") is not None
            # The copied log rows' ids are taken: the next line gets a new one.
            services.queue.log(s, "req_old", "claimed on the scale-out")
        with moved.read() as s:
            logged = s.scalars(select(JobLog.message).order_by(JobLog.id)).all()
            assert logged[-2:] == ["queued on the one box", "claimed on the scale-out"]
            assert s.scalars(select(WorkerRecord.id)).all() == []
            assert s.get(Quota, account).monthly_minutes == 30  # type: ignore[union-attr]
        moved.dispose()
        services.db.dispose()
        stored = open_storage(bucket).open("outputs/req_old/attempt-1/vocals.wav").read()
        assert stored == b"stem"
        again = CliRunner().invoke(app, ["copy-to", *here])
        assert again.exit_code == 2
        assert "[INVALID_DATABASE_URL] the target database already holds accounts" in again.output
    finally:
        scale_servers.drop_database(database)


def test_a_row_the_new_database_refuses_is_named_and_nothing_is_copied(
    one_box: Settings, scale_servers: Servers
) -> None:
    """SQLite keeps a string longer than its column; PostgreSQL refuses it. The copy said so
    in a traceback; it names the table, and leaves the new database empty to run again."""
    services = build_services(one_box)
    migrate(services.db)
    create_key(services.db)
    with services.db.write() as s:
        s.execute(update(ApiKey).values(name="k" * 250))  # written by hand, or long ago
    database = scale_servers.create_database()
    moved = Database(database)
    try:
        migrate(moved)
        with pytest.raises(InvalidRequest) as refused:
            copy_records(services.db, moved)
        assert refused.value.message == (
            "the target database refused a row of api_keys (value too long for type character "
            "varying(200)); nothing was copied"
        )
        with moved.read() as s:
            assert s.scalars(select(Account.id)).all() == []
    finally:
        moved.dispose()
        services.db.dispose()
        scale_servers.drop_database(database)
