"""The native (AudioLasso-shaped) API, used as a client written from its documentation would,
against a real server: every field of shared/docs/vendor-apis.md §4 is checked.

``LassoClient`` uses plain httpx and the standard library only (no demixer imports); it checks
the Standard Webhooks signature by hand, as the doc describes it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf

from audiofiles import decode_stream, stempeg_example
from conftest import Backend
from local_origin import Origin, Posted, local_origin
from service_harness import Server, fast_env, running_server

# The whole module runs on SQLite + local storage and on PostgreSQL + S3 (conftest.py).
pytestmark = pytest.mark.usefixtures("backend")

RATE = 44100
SECONDS = 2.0
STATUSES = {"IN_QUEUE", "IN_PROGRESS", "COMPLETED", "FAILED", "CANCELLED"}


# --- the client: the documentation only -------------------------------------------------------


class LassoClient:
    def __init__(self, base_url: str, key: str) -> None:
        self.http = httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60
        )

    def upload(self, name: str, data: bytes, content_type: str) -> dict[str, Any]:
        r = self.http.post(
            "/v1/files",
            json={
                "file_name": name,
                "content_type": content_type,
                "file_size": len(data),
                "purpose": "audio.separate.input",
            },
        )
        assert r.status_code == 201, r.text
        up: dict[str, Any] = r.json()
        assert up["upload_method"] == "PUT"
        put = httpx.put(up["upload_url"], content=data, headers=up["headers"], timeout=60)
        assert put.status_code == 200, put.text
        return up

    def wait(self, request_id: str, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = self.http.get(f"/v1/queue/requests/{request_id}/status", params={"logs": "true"})
            assert r.status_code == 200, r.text
            body: dict[str, Any] = r.json()
            assert body["status"] in STATUSES
            if body["status"] in ("COMPLETED", "FAILED"):
                return body
            time.sleep(0.3)
        raise AssertionError(f"{request_id} did not finish in {timeout} s")

    def close(self) -> None:
        self.http.close()


def verify_webhook(call: Posted, secret: str) -> dict[str, Any]:
    """Standard Webhooks v1, as the doc states it."""
    msg_id, stamp = call.headers["webhook-id"], call.headers["webhook-timestamp"]
    assert abs(time.time() - int(stamp)) < 300
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{stamp}.".encode() + call.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    given = [s.split(",", 1)[1] for s in call.headers["webhook-signature"].split() if "," in s]
    assert expected in given, "bad webhook signature"
    result: dict[str, Any] = json.loads(call.body)
    return result


def assert_error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    error: dict[str, Any] = r.json()["error"]
    assert set(error) == {"code", "message", "param", "request_id"}
    assert error["code"] and error["message"]
    return error


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def origin(backend: Backend) -> Iterator[Origin]:
    # One per backend: the callbacks it records are each backend's own.
    mix = decode_stream(stempeg_example(), 0)[:, : int(SECONDS * RATE)]
    buf = io.BytesIO()
    sf.write(buf, np.ascontiguousarray(mix.T), RATE, format="WAV", subtype="PCM_16")
    with local_origin() as host:
        host.files["song.wav"] = (buf.getvalue(), "audio/wav")
        yield host


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, backend: Backend, origin: Origin
) -> Iterator[Server]:
    # ``backend``: one per backend, started in its environment (its database and bucket).
    env = fast_env(DEMIXER_URL_ALLOWLIST="127.0.0.1")
    with running_server(tmp_path_factory.mktemp("lasso"), env=env) as s:
        yield s


@pytest.fixture
def lasso(server: Server) -> Iterator[LassoClient]:
    client = LassoClient(server.base_url, server.key)
    yield client
    client.close()


# --- the flow ---------------------------------------------------------------------------------


def test_discovery(server: Server, lasso: LassoClient) -> None:
    spec = httpx.get(f"{server.base_url}/v1/openapi.json", timeout=30)  # no key
    assert spec.status_code == 200 and spec.json()["openapi"].startswith("3.1")
    models = lasso.http.get("/v1/models").json()
    assert models["object"] == "list"
    ids = {m["id"] for m in models["data"]}
    assert "audio/separate" in ids
    for m in models["data"]:
        assert m["object"] == "model" and m["description"]
        assert isinstance(m["input"], dict) and isinstance(m["output"], dict)


def test_upload_separate_webhook_result(lasso: LassoClient, origin: Origin) -> None:
    audio = origin.files["song.wav"][0]
    up = lasso.upload("song.wav", audio, "audio/wav")
    assert up["file_id"] and up["expires_at"] and up["retention"]["delete_after"]
    info = lasso.http.get(f"/v1/files/{up['file_id']}").json()
    for name in ("file_name", "content_type", "file_size", "purpose", "created_at", "expires_at"):
        assert info[name] is not None, name
    assert info["file_id"] == up["file_id"] and info["status"] == "uploaded"
    assert info["uploaded_at"] and info["purpose"] == "audio.separate.input"

    r = lasso.http.post(
        "/v1/queue/audio/separate",
        json={
            "input": {"file_id": up["file_id"], "prompt": "separate the vocals from the music"},
            "webhook": {"url": origin.url("/hook/nested")},
        },
    )
    assert r.status_code == 202, r.text
    queued = r.json()
    assert queued["status"] == "IN_QUEUE" and queued["model"] == "audio/separate"
    for name in ("request_id", "created_at", "status_url", "stream_url", "result_url"):
        assert queued[name], name
    secret = queued["webhook"]["signing_secret"]
    assert queued["webhook"]["url"] == origin.url("/hook/nested") and secret.startswith("whsec_")
    request_id = queued["request_id"]

    # SSE: status frames until COMPLETED, then the stream closes.
    frames = []
    with lasso.http.stream("GET", queued["stream_url"], params={"interval": 1}) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                assert kind == "status"
                frames.append(json.loads(line[6:]))
    assert frames[-1]["status"] == "COMPLETED"

    status = lasso.wait(request_id)
    for name in ("request_id", "model", "created_at", "updated_at", "result_url"):
        assert status[name], name
    assert status["logs"] and all(line["timestamp"] and line["message"] for line in status["logs"])

    event = verify_webhook(origin.posted("/hook/nested"), secret)
    assert event["type"] == "audio.separate.completed"
    assert event["request_id"] == request_id and event["status"] == "COMPLETED"
    assert event["model"] == "audio/separate" and event["data"]["target"]["url"]
    deadline = time.monotonic() + 20
    while (hook := lasso.wait(request_id)["webhook"])["delivery_status"] != "delivered":
        assert time.monotonic() < deadline, hook
        time.sleep(0.2)
    assert hook["attempts"] >= 1 and hook["delivered_at"] and hook["last_error"] is None

    result = lasso.http.get(queued["result_url"]).json()
    assert result["request_id"] == request_id and result["status"] == "COMPLETED"
    data = result["data"]
    assert data["duration"] == pytest.approx(SECONDS, abs=0.05) and data["sample_rate"] == RATE
    for part in ("target", "residual"):
        assert data[part]["content_type"] and data[part]["file_name"]
        got = httpx.get(data[part]["url"], timeout=60)
        samples, rate = sf.read(io.BytesIO(got.content))
        assert len(samples) / rate == pytest.approx(SECONDS, abs=0.05)
    assert result["usage"]["feature"] == "audio_seconds"
    assert result["usage"]["quantity"] == pytest.approx(SECONDS, abs=0.05)
    assert result["usage"]["billing_status"]
    assert result["retention"]["delete_after"]


def test_top_level_webhook_spelling_and_audio_url(lasso: LassoClient, origin: Origin) -> None:
    secret = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
    r = lasso.http.post(
        "/v1/queue/audio/separate",
        json={
            "input": {"audio_url": origin.url("song.wav"), "prompt": "everything but the vocals"},
            "webhookUrl": origin.url("/hook/flat"),
            "webhookSecret": secret,
        },
    )
    assert r.status_code == 202, r.text
    queued = r.json()
    assert queued["webhook"] == {"url": origin.url("/hook/flat"), "signing_secret": secret}
    assert lasso.wait(queued["request_id"])["status"] == "COMPLETED"
    event = verify_webhook(origin.posted("/hook/flat"), secret)
    assert event["request_id"] == queued["request_id"]


def test_errors(server: Server, lasso: LassoClient) -> None:
    assert_error(httpx.get(f"{server.base_url}/v1/models", timeout=30), 401)
    error = assert_error(lasso.http.get("/v1/queue/requests/req_nope/status"), 404)
    assert error["request_id"]
    assert_error(lasso.http.post("/v1/queue/audio/separate", json={"input": {}}), 400)
    refused = lasso.http.post(
        "/v1/queue/audio/separate",
        json={"input": {"audio_url": "http://10.0.0.1/song.wav", "prompt": "vocals"}},
    )
    assert assert_error(refused, 400)["code"] == "INVALID_AUDIO_URL"
    unmappable = lasso.http.post(
        "/v1/queue/audio/separate",
        json={"input": {"audio_url": "https://example.com/a.wav", "prompt": "the kazoo"}},
    )
    assert "vocals" in assert_error(unmappable, 422)["message"]
