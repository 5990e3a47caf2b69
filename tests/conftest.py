"""Shared fixtures for every test module.

``one_torch_thread``: one intra-op thread, for the modules of tiny networks that ask for it.

``no_dns`` (autouse): the URL guard (``demixer.service.urlguard``) resolves host names with a
fake resolver, so no test ever sends a DNS query. Literal addresses resolve to themselves (as
they do without DNS), ``localhost`` to loopback, names registered in ``FAKE_DNS`` to their
addresses, and every other name fails to resolve (``UnresolvableHost``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from demixer.service import urlguard
from demixer.service.db import Database
from demixer.service.migrate import alembic_config
from servers import Servers
from servers import start as start_servers

#: name -> addresses the fake resolver answers (tests may add entries with monkeypatch).
FAKE_DNS: dict[str, list[str]] = {}


def fake_getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
    """``socket.getaddrinfo`` without DNS: literals, localhost and ``FAKE_DNS`` only."""
    name = str(host).lower().rstrip(".")
    if name in FAKE_DNS:
        answers = FAKE_DNS[name]
    elif name == "localhost":
        answers = ["127.0.0.1"]
    else:
        try:  # a numeric host (127.1, 2130706433, ::1): parsed locally, never sent to DNS
            return socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST
            )
        except socket.gaierror:
            raise socket.gaierror(
                socket.EAI_NONAME, f"{name}: not in the tests' fake DNS"
            ) from None
    out = []
    for address in answers:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sockaddr = (address, int(port or 0), 0, 0) if ":" in address else (address, int(port or 0))
        out.append((family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr))
    return out


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread, for modules of tiny networks (``pytestmark``): their work is
    microseconds per operation, and on a small shared machine a second thread only spins
    against the first (the tiny Demucs model ran 25x slower with 2)."""
    import torch  # here: most modules need no torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def no_dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, list[str]]]:
    """Route the URL guard's lookups to :func:`fake_getaddrinfo`; yields ``FAKE_DNS``."""
    monkeypatch.setattr(urlguard, "getaddrinfo", fake_getaddrinfo)
    saved = dict(FAKE_DNS)
    yield FAKE_DNS
    FAKE_DNS.clear()
    FAKE_DNS.update(saved)


def interrupt_after(
    monkeypatch: pytest.MonkeyPatch, name: str, inside: Path, nth: int
) -> list[str]:
    """``os.<name>`` does its work, then raises KeyboardInterrupt on its ``nth`` call under
    ``inside``: as a signal handler's exception can land right after any system call."""
    real, calls = getattr(os, name), []

    def wrapper(path: str | Path, *args: Any, **kwargs: Any) -> Any:
        result = real(path, *args, **kwargs)
        if str(path).startswith(str(inside)):
            calls.append(str(path))
            if len(calls) == nth:
                raise KeyboardInterrupt
        return result

    monkeypatch.setattr(os, name, wrapper)
    return calls


# --- the storage/database backends --------------------------------------------------------
#
# A test module that declares ``pytestmark = pytest.mark.usefixtures("backend")`` runs twice:
# on the embedded default (SQLite + a local storage directory) and on the scale-out stack
# (PostgreSQL + S3, real servers started once per session by tests/servers.py). On the latter,
# DEMIXER_DATABASE_URL / DEMIXER_STORAGE_URL (and the AWS credentials) are set in the
# environment, which both in-process ``Settings`` and spawned ``demixer`` processes read: a
# database and bucket for the module (its module-scoped fixtures, e.g. a shared server), and a
# fresh pair for each test. DEMIXER_TEST_BACKENDS=sqlite (or pg-s3) limits a run to one.

BACKENDS = ("sqlite", "pg-s3")


def pytest_configure(config: pytest.Config) -> None:
    """A suite started in the background by a script or a shell without job control
    (`make unit &`) starts with SIGINT ignored, and so does every command it starts: a
    `demixer serve` then ignores Ctrl-C, as it should (demixer.cli_signals), and the Ctrl-C
    test failed in such runs only (exit 0, before serve kept it ignored). The tests send
    Ctrl-C as a terminal does, to commands started with it not ignored."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    _share_httpx_default_tls_context()


def _share_httpx_default_tls_context() -> None:
    """httpx builds a TLS context for each client it makes, reading certifi's CA bundle: 40 ms
    of CPU each. The servers' readiness polls (every 0.2 s while one starts) and the tests'
    one-off ``httpx.get`` calls made thousands of them, for plain-http URLs on loopback: some
    3 % of the suite's CPU in a sampled run. In the test processes one default context, made
    by httpx's own function with the same arguments, serves every client that asks for the
    default one; any other ``verify`` or ``cert`` is made as before."""
    import httpx._transports.default as transport

    make = transport.create_ssl_context
    made: dict[bool, ssl.SSLContext] = {}

    def shared(
        verify: ssl.SSLContext | str | bool = True,
        cert: Any = None,
        trust_env: bool = True,
    ) -> ssl.SSLContext:
        if verify is not True or cert is not None:
            return make(verify=verify, cert=cert, trust_env=trust_env)
        if trust_env not in made:
            made[trust_env] = make(verify=True, cert=None, trust_env=trust_env)
        return made[trust_env]

    transport.create_ssl_context = shared  # type: ignore[assignment]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marks = metafunc.definition.iter_markers("usefixtures")
    if any("backend" in mark.args for mark in marks):
        wanted = os.environ.get("DEMIXER_TEST_BACKENDS", ",".join(BACKENDS)).split(",")
        only = metafunc.definition.get_closest_marker("backends")  # a test of one backend
        chosen = [b for b in BACKENDS if b in wanted and (only is None or b in only.args)]
        metafunc.parametrize("backend", chosen, indirect=True, scope="module")


#: The slowest modules, slowest first (seconds in a 4-process run on 2 AVX2 cores, 2026-12-06:
#: 495, 394, 296, 286, 279, 220, 177, 154, 145, 134, 122, 121, 95, 78, 64, 55). `make unit` hands
#: whole modules to its pytest-xdist processes in collection order (--no-loadscope-reorder), so
#: these start first and the many small ones fill the gaps after: longest-first scheduling. By
#: xdist's default order (most tests first) the 7-test, 332-second scale-out module started
#: late and ran on alone for minutes. A stale list costs only time, never a result.
SLOWEST_MODULES = (
    "test_cli.py", "test_worker.py", "test_web.py", "test_scale_out.py", "test_webhooks.py",
    "test_abuse.py", "test_client.py", "test_service_e2e.py", "test_vendor_musicgpt.py",
    "test_msst_models.py", "test_vr.py", "test_api_queue.py", "test_postgres.py",
    "test_vendor_sunoapi.py", "test_msst_exact.py", "test_workers_registry.py", "test_engine.py",
)  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slowest modules first, each module's tests in their own order (a stable sort)."""
    rank = {name: i for i, name in enumerate(SLOWEST_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


#: A state file of servers started once for the whole run (``make unit`` starts them with
#: ``tests/servers.py start`` and shares them between its pytest-xdist processes); unset, each
#: session starts its own.
SHARED_SERVERS = os.environ.get("DEMIXER_TEST_SERVERS")


@contextmanager
def _own_servers() -> Iterator[Servers]:
    """PostgreSQL + `rclone serve s3` on loopback, started here and stopped at the end."""
    parent = Path(tempfile.mkdtemp(prefix="dx-servers-"))
    parent.chmod(0o755)  # PostgreSQL runs as the postgres user, who must reach its directory
    try:
        servers = start_servers(parent / "run")
    except BaseException:
        shutil.rmtree(parent, ignore_errors=True)
        raise
    try:
        yield servers
    finally:
        servers.stop()
        shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture(scope="session")
def _session_servers() -> Iterator[Servers]:
    if SHARED_SERVERS:  # started by the Makefile, shared with the other test processes
        yield Servers(**json.loads(Path(SHARED_SERVERS).read_text()))
        return
    with _own_servers() as servers:
        yield servers


@pytest.fixture(scope="session")
def scale_servers(_session_servers: Servers) -> Servers:
    """PostgreSQL + `rclone serve s3` on loopback, for the whole session (or the whole run)."""
    return _session_servers


@pytest.fixture(scope="module")
def own_scale_servers(request: pytest.FixtureRequest) -> Iterator[Servers]:
    """Servers a module may stop and restart (outage tests): its own while other test
    processes share the run's servers, else the session's. A module overrides
    ``scale_servers`` with it."""
    if not SHARED_SERVERS:
        yield request.getfixturevalue("_session_servers")
        return
    with _own_servers() as servers:
        yield servers


@dataclass
class Backend:
    """The backend a module runs on; ``servers`` is None on the embedded default."""

    name: str
    servers: Servers | None

    @property
    def scaled(self) -> bool:
        return self.servers is not None

    def point_env(self, mp: pytest.MonkeyPatch) -> str | None:
        """Set the environment to a new database and bucket; returns the database URL."""
        if self.servers is None:
            mp.delenv("DEMIXER_DATABASE_URL", raising=False)
            mp.delenv("DEMIXER_STORAGE_URL", raising=False)
            return None
        url = self.servers.create_database(migrated=True)
        mp.setenv("DEMIXER_DATABASE_URL", url)
        mp.setenv("DEMIXER_STORAGE_URL", self.servers.create_bucket())
        for var, value in self.servers.s3_env().items():
            mp.setenv(var, value)
        return url


@pytest.fixture(scope="module")
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """The module's backend (see above), its environment set for the module's fixtures."""
    name = getattr(request, "param", "sqlite")
    servers = request.getfixturevalue("scale_servers") if name == "pg-s3" else None
    chosen = Backend(name, servers)
    with pytest.MonkeyPatch.context() as mp:
        url = chosen.point_env(mp)
        try:
            yield chosen
        finally:
            if servers is not None and url is not None:
                servers.drop_database(url)


@pytest.fixture(autouse=True)
def _fresh_backend(request: pytest.FixtureRequest) -> Iterator[None]:
    """On a scaled backend, each test gets its own database and bucket."""
    if "backend" not in request.fixturenames:
        yield
        return
    chosen = request.getfixturevalue("backend")
    if not isinstance(chosen, Backend):  # a module's own fixture of that name
        yield
        return
    with pytest.MonkeyPatch.context() as mp:
        url = chosen.point_env(mp)
        try:
            yield
        finally:
            if chosen.servers is not None and url is not None:
                chosen.servers.drop_database(url)


def downgrade(db: Database, revision: str) -> None:
    """Downgrade ``db``'s schema to ``revision`` with the shipped migrations (no
    ``demixer`` command does: the migration tests check each revision's way back)."""
    from alembic import command

    config = alembic_config()
    with db.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)
