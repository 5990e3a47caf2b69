"""The API in-process for tests: a real database, real storage, real audio, one fixture.

``make_api(**settings)`` builds ``Services`` on a temporary data directory, creates the tables
and a key, and wraps the app in Starlette's ``TestClient`` (no server, no sockets). The
database and storage are SQLite and a local directory, or PostgreSQL and S3 when the
environment names them (the ``backend`` fixture in conftest.py). A second account (``other``)
is there for the "someone else's id answers 404" checks. ``worker_done`` plays the worker's
part through the real queue (claim, store a real output blob, complete).

Blob URLs point at the API itself (``http://testserver/v1/blobs/...``, served by the
``TestClient``) on local storage, at the bucket on S3: :meth:`Api.send` and :meth:`Api.fetch`
reach either; :meth:`Api.upload` finishes an S3 upload with ``POST /v1/files/{id}/complete``.
"""

from __future__ import annotations

import functools
import re
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from unittest.mock import patch
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import botocore.auth
import httpx
import pytest
import uvicorn
from starlette.types import ASGIApp

from audiofiles import AudioFiles
from demixer.server.app import create_app
from demixer.server.compose import build_services
from demixer.service.accounts.keys import ALL_SCOPES, create_key
from demixer.service.context import Services
from demixer.service.db import Database
from demixer.settings import Settings
from service_harness import free_port
from worker_support import wait_until

with warnings.catch_warnings():
    # Starlette suggests another client package; the httpx-based TestClient works as is.
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

__all__ = [
    "TESTSERVER",
    "Api",
    "TestClient",
    "api",
    "bucket_refusal",
    "close_app",
    "make_api",
    "on_uvicorn",
    "signed_an_hour_ago",
]

#: the base URL of the app behind the TestClient (the settings' ``public_url``)
TESTSERVER = "http://testserver"


@dataclass
class Api:
    """An app under test, its services, and keys."""

    client: TestClient
    services: Services
    account: str
    key: str
    other_key: str
    files: AudioFiles
    tmp: Path

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}

    def _h(self, key: str | None, kw: dict[str, Any]) -> dict[str, str]:
        return {**self.headers(key), **kw.pop("headers", {})}

    def get(self, url: str, key: str | None = None, **kw: Any) -> Any:
        return self.client.get(url, headers=self._h(key, kw), **kw)

    def post(self, url: str, key: str | None = None, **kw: Any) -> Any:
        return self.client.post(url, headers=self._h(key, kw), **kw)

    def put(self, url: str, key: str | None = None, **kw: Any) -> Any:
        return self.client.put(url, headers=self._h(key, kw), **kw)

    def delete(self, url: str, key: str | None = None, **kw: Any) -> Any:
        return self.client.delete(url, headers=self._h(key, kw), **kw)

    def key_with(self, *scopes: str) -> str:
        """Another key of the same account with only ``scopes``."""
        return create_key(self.services.db, account_id=self.account, scopes=scopes)[1]

    def announce(
        self, name: str = "stereo.wav", content_type: str = "audio/wav", *, as_name: str = ""
    ) -> dict[str, Any]:
        """``POST /v1/files`` (JSON) for test file ``name`` (called ``as_name`` if given);
        returns the answer + ``data``."""
        data = self.files.get(name).path.read_bytes()
        r = self.post(
            "/v1/files",
            json={
                "file_name": as_name or name,
                "content_type": content_type,
                "file_size": len(data),
            },
        )
        assert r.status_code == 201, r.text
        return {**r.json(), "data": data}

    @property
    def direct(self) -> bool:
        """Whether blob URLs point straight at the store (S3), not at the API."""
        return (
            self.services.storage.presign_put("inputs/x", 60, content_type="audio/wav") is not None
        )

    def send(self, method: str, url: str, **kw: Any) -> httpx.Response:
        """``method`` on a blob URL without an API key: through the TestClient when it is
        the API's own (``/v1/blobs``), else over the network (a presigned S3 URL)."""
        if url.startswith(TESTSERVER + "/"):
            return self.client.request(method, url, **kw)  # type: ignore[no-any-return]
        return httpx.request(method, url, timeout=60, **kw)

    def fetch(self, url: str, **kw: Any) -> httpx.Response:
        """GET a blob URL (see :meth:`send`)."""
        return self.send("GET", url, **kw)

    def tampered(self, url: str) -> str:
        """``url`` with one character of its signature changed (``sig`` on ``/v1/blobs``,
        ``X-Amz-Signature`` on S3)."""
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        name = "sig" if "sig" in query else "X-Amz-Signature"
        sig = query[name][0]
        query[name] = [("A" if sig[0] != "A" else "B") + sig[1:]]
        return urlunsplit(parts._replace(query=urlencode(query, doseq=True)))

    def put_bytes(self, up: dict[str, Any], content: Any = None, **kw: Any) -> httpx.Response:
        """PUT ``content`` (default: the announced file's bytes) to an announced upload URL
        (or ``url=``) with its headers; on S3 the bucket answers (an empty 200), not the API."""
        headers = httpx.Headers(up["headers"])  # a header given here replaces its own,
        headers.update(kw.pop("headers", {}))  # whatever the case of either name
        data = up["data"] if content is None else content
        url = kw.pop("url", up["upload_url"])
        return self.send("PUT", url, content=data, headers=headers, **kw)

    def finish(self, up: dict[str, Any], content: Any = None, **kw: Any) -> httpx.Response:
        """Send an announced file's bytes as a client does: PUT them, then (on S3, where the
        API is not told) ``POST /v1/files/{id}/complete``. Returns the API's answer: the PUT's
        through ``/v1/blobs``, the completion's on S3 (the PUT's when the bucket refused it)."""
        put = self.put_bytes(up, content, **kw)
        if not self.direct or put.status_code != 200:
            return put
        return self.post(f"/v1/files/{up['file_id']}/complete")  # type: ignore[no-any-return]

    def upload(
        self, name: str = "stereo.wav", content_type: str = "audio/wav", *, as_name: str = ""
    ) -> str:
        """Announce and upload a real audio file (called ``as_name`` if given); returns its
        file id (status uploaded)."""
        up = self.announce(name, content_type, as_name=as_name)
        r = self.finish(up)
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "uploaded"
        return str(up["file_id"])

    def queue_separate(self, file_id: str, prompt: str = "vocals", **extra: Any) -> Any:
        body = {"input": {"file_id": file_id, "prompt": prompt, **extra.pop("input", {})}}
        return self.post("/v1/queue/audio/separate", json={**body, **extra})

    def extract(self, audio: bytes) -> httpx.Response:
        """MusicGPT's ``POST /v1/Extraction`` of ``audio`` (a WAV) as its ``audio_file``."""
        return self.client.post(
            "/api/public/v1/Extraction",
            data={"stems": '["vocals"]'},
            files={"audio_file": ("song.wav", audio, "audio/wav")},
            headers={"Authorization": self.key},
        )

    def worker_done(
        self, job_id: str, names: tuple[str, ...] = ("target", "residual"), track: str = "song"
    ) -> None:
        """Play the worker: claim ``job_id``, store a real WAV per output (named
        ``{track}_{name}.wav``, as the worker names them after the input), complete it."""
        queue, storage = self.services.queue, self.services.storage
        claim = queue.claim("test-worker")
        assert claim is not None and claim.id == job_id
        wav = self.files.get("mono.wav")
        outputs = {}
        for name in names:
            key = f"outputs/{job_id}/attempt-{claim.attempt}/{name}.wav"
            size = storage.put_file(key, wav.path)
            outputs[name] = {
                "key": key,
                "content_type": "audio/wav",
                "file_name": f"{track}_{name}.wav",
                "size": size,
                "duration": wav.seconds,
                "sample_rate": wav.rate,
                "channels": 1,
            }
        queue.complete(
            job_id, "test-worker", outputs=outputs, duration=wav.seconds, sample_rate=wav.rate
        )


@contextmanager
def signed_an_hour_ago() -> Iterator[None]:
    """Presigned S3 URLs made inside are signed by a clock an hour behind (botocore's clock, an
    edge demixer does not own), so one valid for a few seconds has expired when it is used:
    no test waits for a URL to expire."""
    real = botocore.auth.get_current_datetime

    def behind(*args: Any, **kwargs: Any) -> Any:
        return real(*args, **kwargs) - timedelta(hours=1)

    with patch.object(botocore.auth, "get_current_datetime", behind):
        yield


def bucket_refusal(r: httpx.Response) -> str:
    """The S3 error code of a request the bucket refused as unauthorized; fails otherwise.

    AWS answers 403 to a bad or expired signature; ``rclone serve s3`` (the server the tests
    run) answers a signature mismatch 403 and an expired or unsigned request 400, each with its
    own code: the status is checked exactly for the code the bucket gave.
    """
    match = re.search(r"<Code>([^<]+)</Code>", r.text)
    assert match is not None, r.text
    code = match.group(1)
    assert r.status_code == _BUCKET_STATUS[code], (code, r.status_code, r.text)
    return code


#: rclone serve s3's status for each refusal code it gives a presigned request.
_BUCKET_STATUS = {"SignatureDoesNotMatch": 403, "AccessDenied": 400, "UnsupportedAlgorithm": 400}


@contextmanager
def on_uvicorn(app: ASGIApp, **config: Any) -> Iterator[str]:
    """``app`` on a real uvicorn server in a thread (one event loop, as in service), for what
    the ``TestClient`` cannot show: many clients at once, each on its own connection. Yields
    its base URL. ``config``: more of ``uvicorn.Config``'s arguments (``serve``'s protocol)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning", **config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 30, "the server")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def close_app(client: TestClient) -> None:
    """Close a ``TestClient`` that was never entered, and what its app's lifespan would have
    closed: the rate-count flusher, which otherwise goes on reading a database the backend
    drops after the test, for the rest of the run, and the status watcher's listener (on
    PostgreSQL), which would go on reconnecting to it."""
    client.close()
    client.app.state.callers.close()  # type: ignore[attr-defined]
    client.app.state.status_watcher.close()  # type: ignore[attr-defined]


@functools.cache
def _new_sqlite_database() -> bytes:
    """A new SQLite database file holding demixer's tables (``create_all``) and nothing else,
    made once per test process and copied for each SQLite API: making the tables took some
    0.1 s of CPU for each of the suite's API tests. (PostgreSQL's are copied from a template
    database: ``Servers.create_database``.)"""
    with tempfile.TemporaryDirectory() as folder:
        db = Database(f"sqlite:///{folder}/demixer.db")
        db.create_all()
        db.dispose()
        return (Path(folder) / "demixer.db").read_bytes()


@pytest.fixture
def make_api(tmp_path: Path) -> Iterator[Callable[..., Api]]:
    """Build an :class:`Api`; keyword arguments override settings."""
    made: list[TestClient] = []

    def make(**settings: Any) -> Api:
        data_dir = settings.pop("data_dir", tmp_path / f"data{len(made)}")
        settings.setdefault("public_url", TESTSERVER)
        cfg = Settings(
            data_dir=data_dir,
            model_dir=tmp_path / "models",  # no Demucs weights: only the packaged Spleeter
            **settings,
        )
        database = Path(data_dir) / "demixer.db"
        if cfg.database_url is None and not database.exists():
            database.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # as Database does
            database.write_bytes(_new_sqlite_database())
        services = build_services(cfg)
        services.db.create_all()
        account, key = create_key(services.db, scopes=ALL_SCOPES)
        _, other_key = create_key(services.db)
        client = TestClient(create_app(services), raise_server_exceptions=False)
        made.append(client)
        files_dir = tmp_path / "audio"
        files_dir.mkdir(exist_ok=True)
        return Api(client, services, account, key, other_key, AudioFiles(files_dir), tmp_path)

    yield make
    for client in made:
        close_app(client)


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    """An :class:`Api` with default settings."""
    return make_api()
