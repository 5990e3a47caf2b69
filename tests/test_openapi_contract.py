"""The served OpenAPI document against what the server answers: real answers (and real
requests) checked with the document's own schemas, as a client generator or a fuzzer reads
them. In process, on SQLite + local storage: the document is the same on every backend."""

from __future__ import annotations

import json
import threading
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs  # schemathesis's validator (a pinned test dependency)
import uvicorn

from api_support import Api, api, make_api
from demixer.server.protocol import head_timeout_protocol
from service_harness import free_port
from worker_support import wait_until

__all__ = ["api", "make_api"]  # fixtures


def _validator(spec: dict[str, Any], schema: dict[str, Any]) -> Any:
    """A validator for ``schema``, a part of ``spec`` (its ``$ref``s resolved in ``spec``)."""
    return jsonschema_rs.validator_for({**schema, "components": spec["components"]})


def _errors(spec: dict[str, Any], schema: dict[str, Any], value: Any) -> list[str]:
    return [e.message for e in _validator(spec, schema).iter_errors(value)]


def _events(text: str) -> list[dict[str, str]]:
    """A server-sent event stream's events, each as its fields (comments left out)."""
    events = []
    for block in text.strip().split("\n\n"):
        fields = [line.split(": ", 1) for line in block.splitlines() if not line.startswith(":")]
        if fields:
            events.append(dict(fields))
    return events


def test_each_status_stream_event_is_what_the_document_says(api: Api) -> None:
    spec = api.client.get("/v1/openapi.json").json()
    path = spec["paths"]["/v1/queue/requests/{request_id}/status/stream"]["get"]
    event_schema = path["responses"]["200"]["content"]["text/event-stream"]["schema"]
    job_id = api.queue_separate(api.upload()).json()["request_id"]
    api.worker_done(job_id)

    r = api.get(f"/v1/queue/requests/{job_id}/status/stream")

    assert r.status_code == 200
    events = _events(r.text)
    assert [e["event"] for e in events] == ["status"]
    for event in events:  # the document described the stream as one string
        assert _errors(spec, event_schema, event) == []
        status = {"$ref": "#/components/schemas/RequestStatus"}
        assert _errors(spec, status, json.loads(event["data"])) == []


def _operation(spec: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    return dict(spec["paths"][path][method])


def test_the_document_refuses_what_the_server_refuses(api: Api) -> None:
    """A request the document calls valid is not refused for its form (schemathesis's
    "schema-valid request rejected"): the keys, URLs and upload types the server refuses."""
    spec = api.client.get("/v1/openapi.json").json()
    separate = _operation(spec, "post", "/v1/queue/audio/separate")
    key_schema = next(p for p in separate["parameters"] if p["name"] == "Idempotency-Key")
    body_schema = separate["requestBody"]["content"]["application/json"]["schema"]
    file_id = api.upload()

    for key in ("", "k" * 256, "a\x7fb"):
        r = api.post(
            "/v1/queue/audio/separate",
            json={"input": {"file_id": file_id, "prompt": "vocals"}},
            headers={"Idempotency-Key": key},
        )
        assert r.status_code == 400 and r.json()["error"]["param"] == "Idempotency-Key"
        assert _errors(spec, key_schema["schema"], key) != [], repr(key)
    assert _errors(spec, key_schema["schema"], "order-42 é") == []

    for url in ("", "ftp://host/a.wav", "song.wav", "http://"):
        body = {"input": {"audio_url": url, "prompt": "vocals"}}
        r = api.post("/v1/queue/audio/separate", json=body)
        assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_AUDIO_URL", url
        assert _errors(spec, body_schema, body) != [], url
        hooked = {"input": {"file_id": file_id, "prompt": "vocals"}, "webhook": {"url": url}}
        assert api.post("/v1/queue/audio/separate", json=hooked).status_code == 400
        assert _errors(spec, body_schema, hooked) != [], url
    good = {"input": {"audio_url": " HTTPS://example.com/a.wav", "prompt": "vocals"}}
    assert _errors(spec, body_schema, good) == []

    stems = _operation(spec, "post", "/v1/queue/audio/stems")
    stems_body = {"input": {"file_id": file_id, "stems": []}}
    r = api.post("/v1/queue/audio/stems", json=stems_body)
    assert r.status_code == 422 and r.json()["error"]["code"] == "NO_STEMS_REQUESTED"
    assert _errors(spec, stems["requestBody"]["content"]["application/json"]["schema"], stems_body)

    since = next(
        p for p in _operation(spec, "get", "/v1/usage")["parameters"] if p["in"] == "query"
    )
    for value in ("", "yesterday"):
        assert api.get("/v1/usage", params={since["name"]: value}).status_code == 400
        assert _errors(spec, since["schema"], value) != [], value
    assert _errors(spec, since["schema"], "2026-12-01") == []

    upload = _operation(spec, "post", "/v1/files")["requestBody"]["content"]
    types = upload["multipart/form-data"]["encoding"]["file"]["contentType"]
    assert "image/png" not in types and "audio/*" in types
    png = {"file": ("cover.png", b"\x89PNG\r\n\x1a\n", "image/png")}
    assert api.post("/v1/files", files=png).status_code == 415


def test_every_field_of_an_answer_is_required_and_sent(api: Api) -> None:
    """The server sends every field of its answers (null where it has no value): the document
    lists each as required, so a generated client need not treat `gain` or an error's
    `request_id` as possibly missing."""
    spec = api.client.get("/v1/openapi.json").json()
    schemas = spec["components"]["schemas"]
    upload = api.post(
        "/v1/files", files={"file": ("song.wav", api.files.get("mono.wav").path.read_bytes())}
    )
    queued = api.queue_separate(upload.json()["file_id"])
    job_id = queued.json()["request_id"]
    api.worker_done(job_id)
    answers = {
        "FileObject": upload,
        "QueuedResponse": queued,
        "RequestStatus": api.get(f"/v1/queue/requests/{job_id}/status"),
        "ResultResponse": api.get(f"/v1/queue/requests/{job_id}/result"),
        "RequestList": api.get("/v1/queue/requests"),
        "ModelList": api.get("/v1/models"),
        "UsageList": api.get("/v1/usage"),
        "Health": api.get("/healthz"),
        "ErrorResponse": api.get("/v1/queue/requests/req_nope/status"),
    }
    for name, r in answers.items():
        assert _errors(spec, {"$ref": f"#/components/schemas/{name}"}, r.json()) == [], name
    for name in ("ErrorBody", "OutputFile", "RequestStatus", "QueuedResponse", "EngineModel"):
        assert set(schemas[name]["required"]) == set(schemas[name]["properties"]), name


def test_a_request_refused_before_routing_is_documented_on_every_operation(api: Api) -> None:
    """The HTTP layer answers a URL over 8 KiB (414) or a head over 64 KiB (431), the
    request-id middleware a URL holding a NUL (400), the body limit a body over 256 KiB
    (413), whatever the path: on the health checks and on operations without a body or
    parameters too."""
    spec = api.client.get("/v1/openapi.json").json()
    port = free_port()
    config = uvicorn.Config(
        api.client.app, port=port, log_level="warning", http=head_timeout_protocol(60)
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, 30, "the server")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            for path in ("/healthz", "/readyz", "/v1/models", "/v1/session"):
                documented = spec["paths"][path]["get"]["responses"]
                long_url = client.get(path, params={"x": "a" * 9000})
                assert long_url.status_code == 414 and "414" in documented, path
                big_head = client.get(path, headers={"X-Big": "a" * 70_000})
                assert big_head.status_code == 431 and "431" in documented, path
                # Written by the protocol, not the app: no-store all the same, as documented.
                assert long_url.headers["cache-control"] == "no-store", path
                assert big_head.headers["cache-control"] == "no-store", path
                assert "408" in documented, path  # a head that stalls: the same layer
                nul = client.get(f"{path}?x=%00")  # the request-id middleware's refusal
                assert nul.status_code == 400 and "400" in documented, path
                body = client.request("GET", path, content=b"x" * 300_000)  # the body limit
                assert body.status_code == 413 and "413" in documented, path
    finally:
        server.should_exit = True
        thread.join(30)


def _header_errors(spec: dict[str, Any], response: dict[str, Any], r: httpx.Response) -> list[str]:
    """What in ``r``'s headers is off the document's ``response``: a required one missing, or
    one whose value does not fit its schema."""
    errors = []
    for name, declared in response.get("headers", {}).items():
        if "$ref" in declared:
            declared = spec["components"]["headers"][declared["$ref"].rsplit("/", 1)[-1]]
        value = r.headers.get(name)
        if value is None:
            errors += [f"{name} missing"] if declared.get("required") else []
            continue
        schema = declared["schema"]
        typed = int(value) if schema["type"] == "integer" and value.isdigit() else value
        errors += [f"{name}: {e}" for e in _errors(spec, schema, typed)]
    return errors


def test_the_headers_the_document_names_are_sent(make_api: Callable[..., Api]) -> None:
    api = make_api(rate_limit_per_minute=2)
    spec = api.client.get("/v1/openapi.json").json()
    models = spec["paths"]["/v1/models"]["get"]["responses"]
    assert {"Retry-After", "RateLimit-Limit", "x-request-id"} <= set(models["429"]["headers"])
    answers = [api.get("/v1/models") for _ in range(3)]

    assert [r.status_code for r in answers] == [200, 200, 429]
    for r in answers:  # the document did not name any header
        assert _header_errors(spec, models[str(r.status_code)], r) == []
    assert "Retry-After" in models["429"]["headers"] and "RateLimit-Limit" in answers[0].headers


def test_a_replayed_answer_says_so_as_the_document_declares(api: Api) -> None:
    spec = api.client.get("/v1/openapi.json").json()
    created = spec["paths"]["/v1/files"]["post"]["responses"]["201"]
    body = {"file_name": "song.wav", "file_size": 10, "content_type": "audio/wav"}
    first, again = (
        api.post("/v1/files", json=body, headers={"Idempotency-Key": "k"}) for _ in "12"
    )

    assert (first.status_code, again.status_code) == (201, 201)
    assert "Idempotent-Replayed" in created["headers"]  # sent, but not declared
    assert again.headers["Idempotent-Replayed"] == "true"
    assert _header_errors(spec, created, again) == []


def test_a_401_names_the_bearer_scheme(api: Api) -> None:
    """RFC 9110: a 401 carries WWW-Authenticate (it had none), as the document declares."""
    spec = api.client.get("/v1/openapi.json").json()
    for path in ("/v1/models", "/v1/queue/requests/req_nope/status"):  # a route, a fast lane
        r = api.client.get(path)
        assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer", path
        unauthorized = spec["paths"][path.replace("req_nope", "{request_id}")]["get"]["responses"]
        assert _header_errors(spec, unauthorized["401"], r) == []


def test_a_blob_answer_carries_the_headers_the_document_names(api: Api) -> None:
    spec = api.client.get("/v1/openapi.json").json()
    blob = spec["paths"]["/v1/blobs/{key}"]
    job_id = api.queue_separate(api.upload()).json()["request_id"]
    api.worker_done(job_id)
    url = api.get(f"/v1/queue/requests/{job_id}/result").json()["data"]["target"]["url"]

    answers = [
        ("get", api.fetch(url)),
        ("get", api.fetch(url, headers={"Range": "bytes=0-9"})),
        ("get", api.fetch(url, headers={"Range": "bytes=999999999-"})),
        ("head", api.send("HEAD", url)),
    ]

    assert [r.status_code for _, r in answers] == [200, 206, 416, 200]
    for method, r in answers:
        response = blob[method]["responses"][str(r.status_code)]
        assert _header_errors(spec, response, r) == [], (method, r.status_code)
    # They were not declared: Content-Range on 206 and 416, the others on 200 and 206.
    assert "Content-Range" in blob["get"]["responses"]["416"]["headers"]
    for method, status in (("get", "200"), ("get", "206"), ("head", "200")):
        declared = blob[method]["responses"][status]["headers"]
        assert {"Content-Length", "Accept-Ranges", "Content-Disposition"} <= set(declared)


def test_every_get_is_documented_with_its_head(api: Api) -> None:
    """The server answers HEAD wherever it answers GET (README), but the document listed HEAD
    only for blobs and the health checks: a client generated from it had no HEAD to send."""
    spec = api.client.get("/v1/openapi.json").json()
    gets = [path for path, item in spec["paths"].items() if "get" in item]
    assert [path for path in gets if "head" not in spec["paths"][path]] == []
    ids = [op["operationId"] for item in spec["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))
    head = spec["paths"]["/v1/models"]["head"]
    r = api.client.head("/v1/models", headers=api.headers())
    assert (r.status_code, r.content) == (200, b"")
    assert _header_errors(spec, head["responses"]["200"], r) == []


def test_behind_a_proxy_under_a_path_the_document_names_it_as_its_server(
    make_api: Callable[..., Api],
) -> None:
    """Served at https://example.com/demixer/ (DEMIXER_PUBLIC_URL), the document named no
    server: the docs page's "Try it out" sent its requests to the site's root, where no demixer
    answers. Served at a host's root, it still names none (the document's own address)."""
    proxied = make_api(public_url="https://example.com/demixer/")
    assert proxied.client.get("/v1/openapi.json").json()["servers"] == [{"url": "/demixer"}]
    at_root = make_api(public_url="https://stems.example.com")
    assert "servers" not in at_root.client.get("/v1/openapi.json").json()


def test_each_operation_is_named_by_what_it_does(api: Api) -> None:
    """A client generator names its methods after the operation ids: FastAPI's own joined the
    route's name, path and method, so a generated client had `queueSeparateV1QueueAudioSeparate
    Post` where `queueSeparate` says it all."""
    spec = api.client.get("/v1/openapi.json").json()
    ids = {
        (method, path): op["operationId"]
        for path, item in spec["paths"].items()
        for method, op in item.items()
    }

    assert ids[("post", "/v1/queue/audio/separate")] == "queue_separate"
    assert ids[("get", "/v1/models")] == "get_models"
    assert ids[("head", "/v1/models")] == "get_models_head"
    assert ids[("put", "/v1/blobs/{key}")] == "upload"
    assert [name for name in ids.values() if "_v1_" in name or "healthz_healthz" in name] == []


def test_a_head_answer_is_documented_without_a_body(api: Api) -> None:
    """A HEAD's answer has the GET's headers and no body: the document gave HEAD the GET's
    JSON body, so a generated client parsed the empty answer as JSON and threw."""
    spec = api.client.get("/v1/openapi.json").json()
    bodies = [
        (path, status)
        for path, item in spec["paths"].items()
        for status, response in item.get("head", {}).get("responses", {}).items()
        if "content" in response
    ]
    r = api.client.head("/v1/models", headers=api.headers())

    assert (r.status_code, r.content) == (200, b"")
    assert bodies == []
    head = spec["paths"]["/v1/models"]["head"]["responses"]["200"]
    assert _header_errors(spec, head, r) == [] and "Cache-Control" in head["headers"]


def _covers(declared: dict[str, Any], content_type: str) -> bool:
    """Whether a media type (parameters dropped) is one of ``declared``'s, ranges included."""
    kind = content_type.split(";")[0].strip().split("/")[0]
    return content_type.split(";")[0].strip() in declared or f"{kind}/*" in declared


def test_a_blob_is_documented_with_the_types_it_is_sent_and_answered_in(api: Api) -> None:
    """The blob's PUT body and GET answer were `*/*`: openapi-python-client left the PUT out
    of its client and gave the GET no body. They name the types an upload is taken in."""
    spec = api.client.get("/v1/openapi.json").json()
    blob = spec["paths"]["/v1/blobs/{key}"]
    sent = blob["put"]["requestBody"]["content"]
    answered = blob["get"]["responses"]["200"]["content"]
    up = api.announce(content_type="application/octet-stream")
    put = api.finish(up, headers={"Content-Type": "application/octet-stream"})
    job_id = api.queue_separate(up["file_id"]).json()["request_id"]
    api.worker_done(job_id)
    stem = api.get(f"/v1/queue/requests/{job_id}/result").json()["data"]["target"]["url"]
    got = api.fetch(stem)

    assert (put.status_code, got.status_code) == (200, 200)
    assert "*/*" not in sent and "*/*" not in answered
    assert _covers(sent, "application/octet-stream") and _covers(sent, "audio/wav")
    assert _covers(answered, got.headers["content-type"])
    assert "image/png" not in sent and not _covers(sent, "text/plain")


def test_a_status_is_one_named_enum_wherever_it_appears(api: Api) -> None:
    """A job's and a file's status were inline lists: generated clients made an enum per
    field and parameter (openapi-python-client: `RequestStatusStatus`, `FileObjectStatus`,
    `ListFilesStatusType0`; datamodel-code-generator: `Status1`...`Status4`)."""
    spec = api.client.get("/v1/openapi.json").json()
    schemas = spec["components"]["schemas"]
    listing = {p["name"]: p for p in _operation(spec, "get", "/v1/files")["parameters"]}
    files = api.get("/v1/files", params={"status": "uploaded"})

    assert files.status_code == 200
    assert schemas["JobStatus"]["enum"] == [
        "IN_QUEUE",
        "IN_PROGRESS",
        "COMPLETED",
        "FAILED",
        "CANCELLED",
    ]
    assert schemas["FileStatus"]["enum"] == ["pending", "uploaded", "failed"]
    job_status = {"$ref": "#/components/schemas/JobStatus"}
    file_status = {"$ref": "#/components/schemas/FileStatus"}
    assert schemas["RequestStatus"]["properties"]["status"] == job_status
    assert schemas["FileObject"]["properties"]["status"]["$ref"] == file_status["$ref"]
    assert file_status in listing["status"]["schema"]["anyOf"]


def test_each_operation_says_what_credential_it_takes(make_api: Callable[..., Api]) -> None:
    """Operations without a key (signed blob URLs, the probes) named no security at all:
    redocly's recommended lint failed the document on each (`security-defined`), and /metrics
    did not say it takes a token of its own."""
    api = make_api(metrics_token="m" * 32)
    spec = api.client.get("/v1/openapi.json").json()
    ops = {(m, p): op for p, item in spec["paths"].items() for m, op in item.items()}
    metrics = api.client.get("/metrics", headers={"Authorization": "Bearer " + "m" * 32})
    blob_put = api.client.put("/v1/blobs/inputs/x?expires=1&sig=x", content=b"")

    assert (metrics.status_code, blob_put.status_code) == (200, 403)
    assert [key for key, op in ops.items() if "security" not in op] == []
    assert ops[("put", "/v1/blobs/{key}")]["security"] == []
    assert ops[("get", "/healthz")]["security"] == []
    assert ops[("get", "/metrics")]["security"] == [{"MetricsToken": []}]
    assert spec["components"]["securitySchemes"]["MetricsToken"]["scheme"] == "bearer"
    assert ops[("get", "/v1/models")]["security"] != []


def test_the_document_names_the_projects_licence(api: Api) -> None:
    """redocly's recommended lint warned that the document named no licence (`info-license`);
    it is pyproject.toml's."""
    declared = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    spec = api.client.get("/v1/openapi.json").json()

    assert spec["info"]["license"]["identifier"] == declared["project"]["license"]["text"]
