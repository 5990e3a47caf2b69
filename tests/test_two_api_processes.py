"""Two API processes on one PostgreSQL database (the scale-out deployment, where several run
behind a load balancer) share each key's request count and see a revocation within the stated
bounds (docs/deploy.md). The counting and the key cache themselves are tested on both backends
in test_hot_path.py; this runs the processes for real, once, on PostgreSQL + S3."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from api_support import TestClient, close_app
from conftest import Backend
from demixer.server.app import create_app
from demixer.server.compose import build_services
from demixer.service.accounts.keys import list_keys
from demixer.settings import Settings
from servers import Servers
from service_harness import DEMIXER, fast_env, running_server
from worker_support import wait_until


@pytest.fixture
def scaled(scale_servers: Servers) -> Iterator[None]:
    """A fresh PostgreSQL database and bucket named in the environment, for this test."""
    with pytest.MonkeyPatch.context() as mp:
        url = Backend("pg-s3", scale_servers).point_env(mp)
        try:
            yield
        finally:
            if url is not None:
                scale_servers.drop_database(url)


@pytest.mark.usefixtures("scaled")
def test_two_api_processes_share_counts_and_a_revocation(tmp_path: Path) -> None:
    """A `demixer serve --workers 0` and this test's own app on one database are two API
    processes: requests answered by one are counted by the other (within the flush bound:
    polled for, never slept on), and a key revoked by `demixer keys revoke` is refused by both
    within the key cache's time."""
    data = tmp_path / "data"
    env = fast_env(DEMIXER_RATE_LIMIT_PER_MINUTE="1000")
    with running_server(data, workers=0, env=env) as server:  # it migrates and makes a key
        services = build_services(Settings(data_dir=data, rate_limit_per_minute=1000))
        here = TestClient(create_app(services), raise_server_exceptions=False)
        headers = {"Authorization": f"Bearer {server.key}"}
        there = server.client()
        assert [there.get("/v1/models").status_code for _ in range(30)] == [200] * 30

        def seen_here() -> bool:
            r = here.get("/v1/models", headers=headers)
            return r.status_code == 200 and int(r.headers["RateLimit-Remaining"]) <= 1000 - 31

        wait_until(seen_here, 20, "this process counting the other's requests")
        key_id = next(k.id for k in list_keys(services.db) if server.key.startswith(k.prefix))
        subprocess.run(  # as an operator does, from a third process
            [DEMIXER, "keys", "revoke", key_id, "--data-dir", str(data)],
            capture_output=True, check=True, env=env,
        )  # fmt: skip
        wait_until(lambda: there.get("/v1/models").status_code == 401, 20, "a 401 there")
        wait_until(lambda: here.get("/v1/models", headers=headers).status_code == 401, 20, "here")
        close_app(here)
        services.db.dispose()
