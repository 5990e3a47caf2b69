"""``GET /healthz`` and ``GET /readyz``: no key, the real app (``TestClient``) on SQLite + local
storage and on PostgreSQL + S3 (conftest.py; the OpenAPI document on SQLite only). A worker is
a real registry row (:class:`Presence`, as a worker process writes it); an unreachable database
or store is a real one: a port nothing listens on, a storage directory removed, a bucket that
does not exist.
"""

from __future__ import annotations

import shutil
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from api_support import Api, make_api
from demixer import __version__
from demixer.service.db import Database
from demixer.service.worker.registry import Presence
from demixer.storage import LocalStorage, open_storage
from servers import free_port

__all__ = ["make_api"]

#: each test that reads the database or storage runs on both backends (conftest.py)
on_both = pytest.mark.usefixtures("backend")


def live_worker(api: Api, worker_id: str = "box:1:0000abcd") -> Presence:
    presence = Presence(
        api.services.db,
        api.services.settings,
        worker_id=worker_id,
        device="cpu",
        models=["spleeter-2stems"],
        slots=1,
    )
    presence.beat()
    return presence


def refusing_database() -> Database:
    """A PostgreSQL URL on a loopback port nothing listens on (connection refused at once)."""
    return Database(f"postgresql+psycopg://demixer@127.0.0.1:{free_port()}/demixer")


@on_both
def test_healthz_answers_without_a_key_even_when_the_database_is_down(
    make_api: Callable[..., Api],
) -> None:
    api = make_api()
    r = api.client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "version": __version__}
    api.services.db = refusing_database()  # healthz never asks it
    assert api.client.get("/healthz").json() == {"status": "ok", "version": __version__}
    # Load balancers' probes often send HEAD: the same status, no body.
    head = api.client.head("/healthz")
    assert (head.status_code, head.content) == (200, b"")
    assert api.client.head("/readyz").status_code == 503  # the database refuses


@on_both
def test_readyz_needs_a_live_worker(make_api: Callable[..., Api]) -> None:
    api = make_api()
    r = api.client.get("/readyz")
    assert r.status_code == 503
    assert r.json() == {
        "status": "not_ready",
        "checks": {
            "database": {"ok": True, "detail": "ok"},
            "storage": {"ok": True, "detail": "ok"},
            "workers": {"ok": False, "detail": "no live worker"},
        },
    }
    presence = live_worker(api)
    live_worker(api, "box:2:0000beef")
    r = api.client.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {
        "status": "ready",
        "checks": {
            "database": {"ok": True, "detail": "ok"},
            "storage": {"ok": True, "detail": "ok"},
            "workers": {"ok": True, "detail": "2 live workers"},
        },
    }
    presence.mark_stopped()  # a clean stop leaves the live list at once
    assert api.client.get("/readyz").json()["checks"]["workers"] == {
        "ok": True,
        "detail": "1 live worker",
    }


@on_both
def test_readyz_names_an_unreachable_database(make_api: Callable[..., Api]) -> None:
    api = make_api()
    live_worker(api)
    api.services.db = refusing_database()
    r = api.client.get("/readyz")
    assert r.status_code == 503
    assert r.json()["checks"] == {
        "database": {"ok": False, "detail": "unreachable"},
        "storage": {"ok": True, "detail": "ok"},
        "workers": {"ok": False, "detail": "unknown: the database is not ready"},
    }


@on_both
def test_readyz_names_unusable_storage(make_api: Callable[..., Api]) -> None:
    api = make_api()
    live_worker(api)
    storage = api.services.storage
    if isinstance(storage, LocalStorage):
        shutil.rmtree(storage.root)  # e.g. a volume that is no longer mounted
        cases = [(storage, "the storage directory is missing")]
    else:
        endpoint = storage._client.meta.endpoint_url  # type: ignore[attr-defined]
        cases = [
            # A store that refuses connections (boto3's retries end within a second or two).
            (
                open_storage(f"s3://bucket?endpoint=http://127.0.0.1:{free_port()}"),
                "object storage is unavailable; retry shortly",
            ),
            # The real server, a bucket that does not exist.
            (
                open_storage(f"s3://no-such-bucket-here?endpoint={endpoint}"),
                "the bucket does not exist",
            ),
        ]
    for unusable, detail in cases:
        api.services.storage = unusable
        r = api.client.get("/readyz")
        assert r.status_code == 503
        assert r.json()["checks"] == {
            "database": {"ok": True, "detail": "ok"},
            "storage": {"ok": False, "detail": detail},
            "workers": {"ok": True, "detail": "1 live worker"},
        }


def test_both_are_in_the_openapi_document(make_api: Callable[..., Api]) -> None:
    # The document does not depend on the backend: SQLite only.
    paths = make_api().client.get("/v1/openapi.json").json()["paths"]
    # 400/408/413/414/431: a request URL, head or body refused before routing (any path).
    refused = {"400", "408", "413", "414", "431"}
    assert set(paths["/healthz"]["get"]["responses"]) == {"200", "500"} | refused
    readyz = paths["/readyz"]["get"]["responses"]
    assert set(readyz) == {"200", "500", "503"} | refused
    ref = "#/components/schemas/Readiness"
    assert readyz["503"]["content"]["application/json"]["schema"] == {"$ref": ref}
    assert paths["/readyz"]["get"]["security"] == []  # no key
    # Both answer HEAD (README says so), documented with the same answers as GET.
    for path in ("/healthz", "/readyz"):
        assert set(paths[path]["head"]["responses"]) == set(paths[path]["get"]["responses"])
    # Every operation keeps its own id (HEAD, added for probes, once gave two of each).
    ids = [
        op["operationId"] for item in paths.values() for op in item.values() if "operationId" in op
    ]
    assert len(ids) == len(set(ids))


def test_the_version_healthz_says_is_the_packages() -> None:
    """The first release was 0.1.0 (docs/deploy.md's upgrade notes name it); this code said
    0.1.0 too, so neither an operator (`demixer workers`, /healthz) nor the Python client
    (which reads prompts itself only for a server of its own version) could tell them apart.
    One version, in pyproject.toml and the package, past the first release's."""
    declared = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert declared["project"]["version"] == __version__
    assert __version__ != "0.1.0"
