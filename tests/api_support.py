"""The API in-process for tests: real SQLite, real local storage, real audio, one fixture.

``make_api(**settings)`` builds ``Services`` on a temporary data directory, creates the tables
and a key, and wraps the app in Starlette's ``TestClient`` (no server, no sockets). A second
account (``other``) is there for the "someone else's id answers 404" checks. ``worker_done``
plays the worker's part through the real queue (claim, store a real output blob, complete).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from audiofiles import AudioFiles
from demixer.api import create_app
from demixer.service.context import Services
from demixer.service.keys import ALL_SCOPES, create_key
from demixer.settings import Settings

with warnings.catch_warnings():
    # Starlette suggests another client package; the httpx-based TestClient works as is.
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

__all__ = ["Api", "api", "make_api"]


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

    def announce(self, name: str = "stereo.wav", content_type: str = "audio/wav") -> dict[str, Any]:
        """``POST /v1/files`` (JSON) for test file ``name``; returns the answer + ``data``."""
        data = self.files.get(name).path.read_bytes()
        r = self.post(
            "/v1/files",
            json={"file_name": name, "content_type": content_type, "file_size": len(data)},
        )
        assert r.status_code == 201, r.text
        return {**r.json(), "data": data}

    def upload(self, name: str = "stereo.wav", content_type: str = "audio/wav") -> str:
        """Announce and PUT a real audio file; returns its file id (status uploaded)."""
        up = self.announce(name, content_type)
        r = self.client.put(up["upload_url"], content=up["data"], headers=up["headers"])
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "uploaded"
        return str(up["file_id"])

    def queue_separate(self, file_id: str, prompt: str = "vocals", **extra: Any) -> Any:
        body = {"input": {"file_id": file_id, "prompt": prompt, **extra.pop("input", {})}}
        return self.post("/v1/queue/audio/separate", json={**body, **extra})

    def worker_done(self, job_id: str, names: tuple[str, ...] = ("target", "residual")) -> None:
        """Play the worker: claim ``job_id``, store a real WAV per output, complete it."""
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
                "file_name": f"song_{name}.wav",
                "size": size,
                "duration": wav.seconds,
                "sample_rate": wav.rate,
                "channels": 1,
            }
        queue.complete(
            job_id, "test-worker", outputs=outputs, duration=wav.seconds, sample_rate=wav.rate
        )


@pytest.fixture
def make_api(tmp_path: Path) -> Iterator[Callable[..., Api]]:
    """Build an :class:`Api`; keyword arguments override settings."""
    made: list[TestClient] = []

    def make(**settings: Any) -> Api:
        data_dir = tmp_path / f"data{len(made)}"
        cfg = Settings(
            data_dir=data_dir,
            model_dir=tmp_path / "models",  # no Demucs weights: only the packaged Spleeter
            public_url="http://testserver",
            **settings,
        )
        services = Services.from_settings(cfg)
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
        client.close()


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    """An :class:`Api` with default settings."""
    return make_api()
