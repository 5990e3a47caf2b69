"""Keys and scopes, the one error shape, request ids, the OpenAPI document, GET /v1/models."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from api_support import Api, api, make_api
from demixer.api.errors import STATUS, status_for
from demixer.errors import (
    DatabaseUnavailable,
    DemixerError,
    DurationLimit,
    FileExpired,
    InvalidSignature,
    JobFailed,
    SizeMismatch,
    StorageFull,
    StorageUnavailable,
    UnsupportedPrompt,
)
from demixer.models.registry import get_spec, list_specs
from demixer.service.accounts.keys import create_key, list_keys, revoke_key
from demixer.service.jobs.queue import JobConflict

# The whole module runs on SQLite + local storage and on PostgreSQL + S3 (conftest.py).
pytestmark = pytest.mark.usefixtures("backend")

__all__ = ["api", "make_api"]  # fixtures


def _code(r: object) -> tuple[int, str]:
    return r.status_code, r.json()["error"]["code"]  # type: ignore[attr-defined]


def test_missing_bad_and_revoked_keys_are_401(api: Api) -> None:
    r = api.client.get("/v1/models")
    assert _code(r) == (401, "UNAUTHENTICATED")
    assert r.headers["x-request-id"] == r.json()["error"]["request_id"]
    assert _code(api.client.get("/v1/models", headers={"Authorization": "Bearer dmx_nope"})) == (
        401,
        "UNAUTHENTICATED",
    )
    assert r.json()["error"]["message"] == "missing API key: send `Authorization: Bearer <key>`"
    # A key sent bare (as MusicGPT takes it) or under another scheme: the message says so.
    for header in (api.key, f"Token {api.key}", "Basic dXNlcjpwdw==", "Bearer"):
        bare = api.client.get("/v1/models", headers={"Authorization": header})
        assert _code(bare) == (401, "UNAUTHENTICATED"), header
        assert bare.json()["error"]["message"] == (
            "the Authorization header must read `Bearer <key>`; it holds no Bearer key"
        ), header
    key = api.key_with("models:read")
    assert api.get("/v1/models", key=key).status_code == 200
    newest = max(list_keys(api.services.db), key=lambda k: k.created_at)
    revoke_key(api.services.db, newest.id)
    assert _code(api.get("/v1/models", key=key)) == (401, "UNAUTHENTICATED")


def test_the_key_scheme_fals_clients_send_is_read_as_bearer(api: Api) -> None:
    """fal's clients (``fal_client``, ``@fal-ai/client``) send ``Authorization: Key <key>``;
    it was a 401 on every call. Submit, the status (its fast lane too) and the result read it."""
    fal = {"Authorization": f"Key {api.key}"}
    r = api.client.post(
        "/v1/queue/audio/separate",
        headers=fal,
        json={"input": {"file_id": api.upload(), "prompt": "vocals"}},
    )
    assert r.status_code == 202, r.text
    job_id = r.json()["request_id"]
    assert api.client.get(r.json()["status_url"], headers=fal).status_code == 200
    logs = api.client.get(f"/v1/queue/requests/{job_id}/status?logs=true", headers=fal)
    assert logs.status_code == 200
    assert _code(api.client.get(r.json()["response_url"], headers=fal)) == (409, "NOT_READY")
    assert _code(api.client.get("/v1/models", headers={"Authorization": "Key dmx_nope"})) == (
        401,
        "UNAUTHENTICATED",
    )


@pytest.mark.parametrize(
    ("method", "path", "scope", "past"),
    [
        ("GET", "/v1/models", "models:read", 200),
        ("POST", "/v1/files", "files:write", 400),  # an empty announcement
        ("GET", "/v1/files", "files:read", 200),
        ("GET", "/v1/files/file_x", "files:read", 404),
        ("DELETE", "/v1/files/file_x", "files:write", 404),
        ("POST", "/v1/queue/audio/separate", "audio:separate", 400),  # no input
        ("PUT", "/v1/queue/requests/req_x/cancel", "audio:separate", 404),
        ("DELETE", "/v1/queue/requests/req_x", "audio:separate", 404),
        ("GET", "/v1/queue/requests/req_x/result", "files:read", 404),
        ("GET", "/v1/queue/requests/req_x", "files:read", 404),  # fal's path to the result
        ("GET", "/v1/queue/requests/req_x/status", "audio:separate", 404),
    ],
)
def test_missing_scope_is_403(api: Api, method: str, path: str, scope: str, past: int) -> None:
    others = [
        s for s in ("audio:separate", "files:write", "files:read", "models:read") if s != scope
    ]
    if path.endswith("/status"):
        others.remove("files:read")  # status is readable with either scope
    r = api.client.request(method, path, headers=api.headers(api.key_with(*others)))
    # AudioLasso's authentication page: a valid key without the scope is 403 PERMISSION_DENIED.
    assert _code(r) == (403, "PERMISSION_DENIED")
    assert scope in r.json()["error"]["message"]
    # With the scope the request gets past auth (to what it gets about itself).
    r = api.client.request(method, path, headers=api.headers(api.key_with(scope)), json={})
    assert r.status_code == past, r.text


def test_validation_errors_have_the_shape(api: Api) -> None:
    r = api.post("/v1/queue/audio/separate", json={"input": {"file_id": "f", "prompt": 5}})
    assert _code(r) == (400, "INVALID_REQUEST")
    assert r.json()["error"]["param"] == "input.prompt"
    r = api.get("/v1/queue/requests?limit=0")
    assert _code(r) == (400, "INVALID_REQUEST") and r.json()["error"]["param"] == "limit"
    r = api.post("/v1/queue/audio/stems", json={"input": {"file_id": "f", "stem": ["x"]}})
    assert _code(r) == (400, "INVALID_REQUEST") and r.json()["error"]["param"] == "input.stem"
    # A body that is not JSON, or none, is said as such (not FastAPI's "Field required").
    stems = "/v1/queue/audio/stems"
    for content, message in [
        (
            b'{"input": {"file_id": "\xff"}}',
            "the request body is not valid JSON (or is nested too deeply)",
        ),
        (b"[" * 3000 + b"]" * 3000, "the request body is not valid JSON (or is nested too deeply)"),
        (b"", f"POST {stems} takes a JSON object; the request has no body"),
    ]:
        headers = {**api.headers(), "Content-Type": "application/json"}
        r = api.client.post(stems, content=content, headers=headers)
        assert _code(r) == (400, "INVALID_REQUEST")
        assert r.json()["error"]["message"] == message
    headers = {**api.headers(), "Content-Type": "text/plain"}
    r = api.client.post(stems, content=b'{"input": {"file_id": "f"}}', headers=headers)
    assert _code(r) == (415, "UNSUPPORTED_MEDIA_TYPE")
    assert r.json()["error"]["message"] == f"POST {stems} takes application/json, not 'text/plain'"


def test_unknown_route_and_method(api: Api) -> None:
    r = api.get("/v1/nothing-here")
    assert _code(r) == (404, "NOT_FOUND") and "x-request-id" in r.headers
    r = api.client.patch("/v1/models", headers=api.headers())
    assert _code(r) == (405, "METHOD_NOT_ALLOWED")
    # Allow names every method the path takes (Starlette's named one route's), HEAD with GET.
    for method, path, allowed in [
        ("PATCH", "/v1/models", "GET, HEAD"),
        ("PATCH", "/v1/files/file_x", "GET, HEAD, DELETE"),
        ("POST", "/v1/blobs/outputs/x", "GET, HEAD, PUT"),
        ("PATCH", "/v1/queue/requests/req_x/cancel", "PUT"),
        ("POST", "/v1/queue/requests", "GET, HEAD"),  # not a queue model named "requests"
        ("POST", "/v1/queue/requests/req_x/status", "GET, HEAD"),
    ]:
        r = api.client.request(method, path, headers=api.headers())
        assert _code(r) == (405, "METHOD_NOT_ALLOWED"), path
        assert r.headers["allow"] == allowed, path
        assert r.json()["error"]["message"] == f"{path} takes {allowed}, not {method}"
    # Under a vendor's prefix any method meets the vendor's own 404, not the native envelope.
    r = api.client.options("/api/public/v1/byId", headers={"Authorization": api.key})
    assert r.status_code == 404
    assert r.json() == {
        "success": False,
        "error": "NOT_FOUND",
        "message": "no such endpoint: 'v1/byId'",
    }


@pytest.mark.backends("sqlite")  # the HTTP layer: the same on every backend
def test_api_answers_say_no_cache_may_keep_them(api: Api) -> None:
    """API answers had no Cache-Control: a shared cache may keep a 200 (RFC 9111 heuristic
    freshness) unless the request carried an Authorization header, and Gaudio's clients send
    theirs in x-ga-apikey: one caller's job status, served again to the next asker."""
    gaudio = "/developers/api/v1/gsep_music_hq_v1/jobs/req_nope"
    for r in (
        api.client.get(gaudio, headers={"x-ga-apikey": api.key}),  # Gaudio's own 200
        api.get("/v1/models"),
        api.get(f"/v1/files/{api.upload()}"),
        api.client.head("/v1/models", headers=api.headers()),
        api.client.get("/v1/models"),  # a 401
    ):
        assert r.headers["cache-control"] == "no-store", r.request.url
    assert "cache-control" not in api.client.get("/v1/docs").headers  # a page, not JSON


@pytest.mark.backends("sqlite")  # the HTTP layer: the same on every backend
def test_the_docs_page_may_not_be_framed_and_runs_only_its_own_scripts(api: Api) -> None:
    """/v1/docs had no Content-Security-Policy: any site could frame it (its Authorize and
    "Try it out" under a decoy), where the web page says ``frame-ancestors 'none'``.
    test_web.py's test_docs_render_offline shows Swagger UI still works under the policy."""
    r = api.client.get("/v1/docs")
    assert r.status_code == 200
    policy = r.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy
    assert "script-src 'self' 'sha256-" in policy and "unsafe" not in policy
    assert r.headers["x-content-type-options"] == "nosniff"


@pytest.mark.backends("sqlite")  # the HTTP layer: the same on every backend
def test_a_trailing_slash_is_no_redirect_to_the_callers_host(api: Api) -> None:
    """`GET /v1/models/` answered 307 to `http://{the Host header}/v1/models`: a URL the
    API handed out that was not DEMIXER_PUBLIC_URL's (behind a proxy, its upstream address)."""
    r = api.get("/v1/models/", headers={"Host": "evil.example"}, follow_redirects=False)
    assert _code(r) == (404, "NOT_FOUND")
    assert "location" not in r.headers
    assert r.json()["error"]["message"] == (
        "no route GET /v1/models/; /v1/models, without the trailing slash, is one"
    )


def test_internal_errors_hide_the_traceback(
    api: Api, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*_args: object) -> None:
        raise RuntimeError("secret internals /etc/passwd")

    monkeypatch.setattr("demixer.api.routes.models.model_list", boom)
    with caplog.at_level(logging.ERROR, logger="demixer.api"):
        r = api.get("/v1/models")
    assert _code(r) == (500, "INTERNAL")
    assert "secret" not in r.text and "Traceback" not in r.text
    rid = r.headers["x-request-id"]
    assert r.json()["error"]["request_id"] == rid
    assert any(rid in rec.getMessage() and rec.exc_info for rec in caplog.records)


def test_request_ids_are_unique(api: Api) -> None:
    ids = {api.get("/v1/models").headers["x-request-id"] for _ in range(3)}
    assert len(ids) == 3


def test_status_table() -> None:
    assert status_for(SizeMismatch("x")) == 400
    assert status_for(InvalidSignature("x")) == 403
    assert status_for(JobConflict("x")) == 409
    assert status_for(FileExpired("x")) == 410
    assert status_for(DurationLimit("x")) == 422
    assert status_for(UnsupportedPrompt("x")) == 422
    assert status_for(JobFailed("x", code="MODEL_FAILED")) == 422
    assert JobFailed("x", code="MODEL_FAILED").code == "MODEL_FAILED"
    assert status_for(DemixerError("x")) == 500
    assert status_for(DatabaseUnavailable()) == 503
    assert status_for(StorageUnavailable()) == 503
    # The client's mistakes are 4xx; only a bug (500) and a backend the client may retry on
    # shortly (503, with Retry-After) are the server's.
    server_side = {cls: s for cls, s in STATUS.items() if s >= 500}
    assert server_side == {
        DemixerError: 500,
        StorageUnavailable: 503,
        DatabaseUnavailable: 503,
        StorageFull: 507,
    }
    assert all(400 <= s < 500 for cls, s in STATUS.items() if cls not in server_side)
    assert DemixerError("x", param="input.stems").param == "input.stems"


def test_openapi_is_3_1_without_auth(api: Api, tmp_path: Path) -> None:
    r = api.client.get("/v1/openapi.json")
    assert r.status_code == 200
    spec = json.loads(r.text)
    assert spec["openapi"].startswith("3.1.")
    paths = spec["paths"]
    for path in (
        "/v1/queue/audio/separate",
        "/v1/queue/audio/stems",
        "/v1/queue/requests/{request_id}/status",
        "/v1/queue/requests/{request_id}/status/stream",
        "/v1/queue/requests/{request_id}/result",
        "/v1/queue/requests/{request_id}/cancel",
        "/v1/files",
        "/v1/files/{file_id}",
        "/v1/models",
        "/v1/blobs/{key}",
    ):
        assert path in paths, path
    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ErrorResponse" in schemas
    assert "FileCreate" in schemas
    body = paths["/v1/files"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(body)
    separate = paths["/v1/queue/audio/separate"]["post"]["responses"]
    assert {"202", "400", "401", "404", "422"} <= set(separate)
    assert "bearer" in json.dumps(spec["components"]["securitySchemes"]).lower()
    assert api.client.get("/v1/docs").status_code == 200


def test_models_lists_queue_and_installed_engine_models(make_api: Callable[..., Api]) -> None:
    api = make_api(max_upload_bytes=123_456, max_duration_seconds=90)
    r = api.get("/v1/models")
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "list"
    ids = [m["id"] for m in body["data"]]
    assert ids == ["audio/separate", "audio/stems"]
    separate, stems = body["data"]
    assert separate["object"] == "model"
    assert "prompt" in json.dumps(separate["input"])
    assert {"target", "residual"} <= set(separate["output"]["properties"])
    assert "stems" in json.dumps(stems["input"]) and "additionalProperties" in stems["output"]
    assert "accompaniment (everything but the vocals)" in separate["separable"]
    # Only what is installed here: the packaged Spleeter and the cascade built on it.
    engines = {m["id"]: m for m in body["engine_models"]}
    assert set(engines) == {"spleeter-2stems", "cascade-4stems"}
    spleeter = engines["spleeter-2stems"]
    assert spleeter["stems"] == list(get_spec("spleeter-2stems").stems)
    assert spleeter["sample_rate"] == 44100
    assert spleeter["limits"]["max_file_size"] == 123_456
    assert spleeter["limits"]["max_duration"] == 90
    assert "mp3" in spleeter["limits"]["input_formats"]
    assert spleeter["limits"]["output_formats"] == ["wav", "flac", "mp3"]
    assert separate["engine_models"] == ["spleeter-2stems", "cascade-4stems"]
    assert spleeter["installed"] is True and spleeter["license_class"] == "permissive"
    # The whole catalogue, installed or not, with what a user needs to choose a model.
    catalogue = {m["id"]: m for m in body["catalogue"]}
    assert list(catalogue) == [spec.id for spec in list_specs()]
    assert {i for i, m in catalogue.items() if m["installed"]} == set(engines)
    kim, demucs = catalogue["mel-roformer-vocals-kim"], catalogue["htdemucs"]
    assert (kim["arch"], kim["license_class"], kim["installed"]) == (
        "mel_band_roformer",
        "permissive",
        False,
    )
    assert kim["scores"][0]["value"] == 10.98 and kim["scores"][0]["metric"] == "Multisong SDR"
    assert kim["source_url"] == "https://huggingface.co/KimberleyJSN/melbandroformer"
    assert demucs["license_class"] == "research only"
    assert catalogue["scnet-xl-ihf"]["stems"] == ["drums", "bass", "other", "vocals"]
    assert catalogue["mdx-net-vocals-kim-2"]["aliases"] == ["Kim_Vocal_2.onnx"]
    assert catalogue["spleeter-2stems"]["aliases"] == []
    # The OpenAPI document describes exactly these fields.
    schemas = api.client.get("/v1/openapi.json").json()["components"]["schemas"]
    assert set(schemas["ModelList"]["properties"]) == set(body)
    assert set(schemas["EngineModel"]["properties"]) == set(kim)
    assert set(schemas["PublishedScore"]["properties"]) == set(kim["scores"][0])
    assert schemas["EngineModel"]["properties"]["license_class"]["enum"] == [
        "permissive",
        "copyleft",
        "non-commercial",
        "research only",
        "not stated",
    ]


def test_installed_demucs_weights_are_listed(make_api: Callable[..., Api], tmp_path: Path) -> None:
    spec = get_spec("htdemucs_6s")
    for weight in spec.weights:  # present at its pinned size: "installed" for listing
        path = tmp_path / "models" / spec.id / weight.name
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:
            f.truncate(weight.size)  # sparse: no disk written
    api = make_api()
    body = api.get("/v1/models").json()
    assert "htdemucs_6s" in {m["id"] for m in body["engine_models"]}
    assert "guitar" in body["data"][0]["separable"]


def test_keys_refuse_what_the_database_cannot_hold(api: Api) -> None:
    """A name longer than its column is refused up front (SQLite would keep it, PostgreSQL
    would fail the transaction); nothing is created."""
    before = len(list_keys(api.services.db))
    with pytest.raises(DemixerError, match="at most 200 characters"):
        create_key(api.services.db, name="k" * 201)
    with pytest.raises(DemixerError, match="unknown scope"):
        create_key(api.services.db, scopes=("everything",))
    assert len(list_keys(api.services.db)) == before
    assert create_key(api.services.db, name="k" * 200)[1].startswith("dmx_")
