"""Real `demixer serve` / `demixer worker` processes for end-to-end tests.

Each server runs as its own process tree (uvicorn + embedded worker slots + their separation
children) on a free loopback port and a temporary data directory, exactly as `make run` does.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from demixer.storage import Storage, open_storage

DEMIXER = str(Path(sys.executable).parent / "demixer")
# The environment each data directory's server was started with (its database and storage URLs
# on a scaled backend), so later commands on that data directory reach the same database.
_ENVS: dict[Path, dict[str, str]] = {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fast_env(**extra: str) -> dict[str, str]:
    """Environment for service processes: short leases and heartbeats so tests run quickly.
    The poll is the default's (0.5 s): queued jobs wake idle slots at once (in the process,
    and through NOTIFY on PostgreSQL), and at 0.2 s the idle servers' polls cost the suite
    more CPU than the waits they saved."""
    env = dict(os.environ)
    env.update(
        {
            "DEMIXER_HEARTBEAT_SECONDS": "0.5",
            "DEMIXER_POLL_SECONDS": "0.5",
            "DEMIXER_LEASE_SECONDS": "3",
        }
    )
    env.update(extra)
    return env


class _ProcessTree:
    """A `demixer` command started in its own process group (it and its worker children)."""

    process: subprocess.Popen[str]
    log: Path

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process tree and wait for the command to exit."""
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            return
        self.process.wait(timeout=30)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class Server(_ProcessTree):
    """A running `demixer serve`."""

    process: subprocess.Popen[str]
    base_url: str
    data_dir: Path
    key: str
    log: Path
    clients: list[httpx.Client] = field(default_factory=list)

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key or self.key}"}
        c = httpx.Client(base_url=self.base_url, headers=headers, timeout=60)
        self.clients.append(c)
        return c

    def env(self) -> dict[str, str]:
        """The environment the server was started with."""
        return _ENVS.get(self.data_dir, {})

    def storage(self) -> Storage:
        """The server's blob storage (its local directory, or the bucket its env names)."""
        env = self.env()
        return open_storage(
            env.get("DEMIXER_STORAGE_URL") or f"file://{self.data_dir.resolve() / 'storage'}"
        )


@contextmanager
def inherited_blocked(*signals: int) -> Iterator[None]:
    """``signals`` blocked in this thread meanwhile: a process started inside starts with them
    blocked, as one started by a thread that multiprocessing's resource tracker blocked them
    in (for as long as it starts its process) would."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def exit_status(process: subprocess.Popen[str], pidfd: int, timeout: float) -> int:
    """``process``'s exit status (a signal's as its negative number, as Popen gives it), read
    through ``pidfd`` (``os.pidfd_open(process.pid)``, opened while it ran).

    ``Popen.wait()`` answers 0 when another waiter in this test process took the status first
    (a stale ``Popen`` polling its own pid after the kernel gave that pid to this process): a
    rare exit "0" after Ctrl-C under a loaded whole-suite run. This says so instead."""
    try:
        ready, _, _ = select.select([pidfd], [], [], timeout)
        if not ready:
            raise subprocess.TimeoutExpired(process.args, timeout)
        try:
            info = os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
        except ChildProcessError:
            raise AssertionError(
                f"pid {process.pid} exited, but another waiter in this process took its status"
            ) from None
    finally:
        os.close(pidfd)
    assert info is not None
    code = info.si_status if info.si_code == os.CLD_EXITED else -info.si_status
    process.returncode = code
    return code


def start_server(
    data_dir: Path,
    *,
    workers: int = 1,
    env: dict[str, str] | None = None,
    port: int | None = None,
) -> Server:
    """Start `demixer serve` and wait until it answers; returns it with its first key.

    ``port`` reuses a port (a restarted API at the same address); a free one by default."""
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    env = env or fast_env()
    _ENVS[data_dir] = env
    log = data_dir / f"serve-{port}.log"
    fh = log.open("w")
    process = subprocess.Popen(
        [
            DEMIXER,
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--workers",
            str(workers),
        ],
        stdout=fh,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        start_new_session=True,  # its own process group: kill() reaches the whole tree
    )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"demixer serve exited {process.returncode}:\n{log.read_text()}")
        if answers(base_url):
            break
        time.sleep(0.2)
    else:
        process.kill()
        raise RuntimeError(f"demixer serve did not start:\n{log.read_text()}")
    key = ""
    for line in log.read_text().splitlines():
        if line.startswith("dmx_"):
            key = line.strip()
    if not key:  # a restart on an existing data dir prints no key: make one
        key = create_key(data_dir, env=env)
    return Server(process, base_url, data_dir, key, log)


def answers(base_url: str) -> bool:
    """Whether a server answers HTTP at ``base_url`` (serve binds its port before it starts:
    a bound port alone says nothing). /healthz: the OpenAPI document, asked before, cost each
    start half a second of CPU to build, and timed out at 1 s on a loaded machine."""
    try:
        return httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def run_demixer(
    *args: str, env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``demixer ARGS`` run to its end (at most 2 min) in exactly ``env``; output captured."""
    return subprocess.run(
        [DEMIXER, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def create_key(
    data_dir: Path,
    account: str | None = None,
    env: dict[str, str] | None = None,
    scopes: str | None = None,
) -> str:
    """A key as `demixer keys create` makes one (optionally on an existing account, or with
    only ``scopes``, comma-separated), on the database ``serve`` at ``data_dir`` uses: the
    command's own service call, made in this process (a process of its own cost some 1.5 s of
    CPU, for each of the suite's hundred-odd servers). The command is test_cli's to test."""
    from demixer.service.accounts.keys import ALL_SCOPES
    from demixer.service.accounts.keys import create_key as make_key
    from demixer.service.db import Database
    from demixer.service.migrate import migrate

    chosen = tuple(s.strip() for s in scopes.split(",")) if scopes else ALL_SCOPES
    db = Database(server_database_url(data_dir, env))
    try:
        migrate(db)
        return make_key(db, account_id=account, scopes=chosen)[1]
    finally:
        db.dispose()


def server_database_url(data_dir: Path, env: dict[str, str] | None = None) -> str:
    """The database URL of the ``serve`` at ``data_dir``: as it reads its settings, from
    ``env`` (by default the environment it was started with)."""
    from unittest.mock import patch

    from demixer.settings import Settings

    with patch.dict(os.environ, dict(env or _ENVS.get(data_dir) or os.environ), clear=True):
        return Settings(data_dir=data_dir).database


@dataclass
class WorkerProcess(_ProcessTree):
    """A running `demixer worker` (its own process group: it and its separation children)."""

    process: subprocess.Popen[str]
    log: Path


def start_worker(
    data_dir: Path, *, env: dict[str, str], slots: int = 1, name: str = "worker"
) -> WorkerProcess:
    """Start `demixer worker` on ``data_dir`` (its scratch space; the database and storage come
    from ``env``); returns at once (it claims jobs when it is ready)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / f"{name}.log"
    process = subprocess.Popen(
        [DEMIXER, "worker", "--data-dir", str(data_dir), "--slots", str(slots)],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        start_new_session=True,
    )
    return WorkerProcess(process, log)


@contextmanager
def running_server(data_dir: Path, **kwargs: object) -> Iterator[Server]:
    server = start_server(data_dir, **kwargs)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        for c in server.clients:
            c.close()
        server.kill(signal.SIGTERM)


def wait_status(
    client: httpx.Client,
    request_id: str,
    statuses: set[str],
    timeout: float,
    seen: list[dict] | None = None,  # type: ignore[type-arg]
) -> dict:  # type: ignore[type-arg]
    """Poll a job's status until it is one of ``statuses`` (each body polled before that is
    appended to ``seen``)."""
    deadline = time.monotonic() + timeout
    body: dict = {}  # type: ignore[type-arg]
    while time.monotonic() < deadline:
        body = client.get(f"/v1/queue/requests/{request_id}/status", params={"logs": "true"}).json()
        if body.get("status") in statuses:
            return body
        if seen is not None:
            seen.append(body)
        time.sleep(0.2)
    raise AssertionError(f"job {request_id} never reached {statuses}: {body}")
