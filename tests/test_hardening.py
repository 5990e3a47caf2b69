"""Hostile requests answered with a specific 4xx in each protocol's own envelope, never a 500,
and limits held on the bytes themselves (issue 12).

In process (Starlette's TestClient on the real app, database and storage), on SQLite + local
storage and on PostgreSQL + S3. The live-server catalogue, the schema fuzzing and the full
disk are in tests/test_abuse.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from api_support import Api, make_api
from crafted import concat_script, hls_playlist, lying_xing_mp3, wav_promising
from demixer.api.uploads import MEDIA_TYPES
from demixer.server.app import create_app
from demixer.server.compose import build_services
from demixer.service.accounts.keys import create_key, list_keys, revoke_key
from demixer.service.schema import File
from demixer.service.scratch import scratch_file, sweep_scratch
from demixer.service.worker import Worker
from demixer.service.worker.runner import scratch_prefix
from demixer.settings import Settings
from demixer.vendors.gaudio import routes as gaudio_routes
from demixer.vendors.musicgpt import routes as musicgpt
from demixer.vendors.sunoapi import routes as sunoapi

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # Starlette suggests another client package
    from fastapi.testclient import TestClient

pytestmark = pytest.mark.usefixtures("backend")

__all__ = ["make_api"]

GAUDIO = "/developers/api"
MUSICGPT = "/api/public/v1"
SUNO = "/api/v1/vocal-removal"
DEEP = "[" * 30_000 + "]" * 30_000  # nesting past the JSON parser's recursion limit


def native(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()["error"]
    assert body["code"] == code, body
    assert body["request_id"] == r.headers["x-request-id"]
    return dict(body)


def musicgpt_error(r: Any, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.json() == {"success": False, "error": code, "message": r.json()["message"]}


def suno_error(r: Any, code: int) -> str:
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["code"] == code and body["data"] is None, body
    return str(body["msg"])


def gaudio_result(r: Any, code: int) -> str:
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["resultCode"] == code and body["resultData"] is None, body
    return str(body["resultMessage"])


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    # Small limits, so the cases over them stay small and quick.
    return make_api(max_upload_bytes=600_000, max_duration_seconds=10, rate_limit_per_minute=0)


def chunked(data: bytes, size: int = 16_384) -> Iterator[bytes]:
    """A body sent without Content-Length (chunked transfer encoding)."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


def spool_files(api: Api) -> list[Path]:
    root = api.services.settings.data_dir / "tmp"
    return [p for p in root.rglob("*") if p.is_file()] if root.is_dir() else []


# --- each 500 of the issue, fixed at its root -----------------------------------------------


def test_a_non_ascii_signature_is_an_invalid_signature(api: Api) -> None:
    key = "outputs/req_x/attempt-1/target.wav"
    native(api.client.get(f"/v1/blobs/{key}?expires=9999999999&sig=%C3%A9"), 403,
           "INVALID_SIGNATURE")  # fmt: skip
    r = api.client.put("/v1/blobs/inputs/file_x?expires=9999999999&sig=%C3%A9", content=b"x")
    native(r, 403, "INVALID_SIGNATURE")
    # Gaudio's part URL: its own 403 shape.
    r = api.client.put(f"{GAUDIO}/v1/files/upload-multipart/part/file_x/1?expires=1&sig=%C3%A9")
    assert r.status_code == 403 and r.json()["error"] == "forbidden", r.text


def test_gaudio_file_size_past_64_bits_is_its_size_error(api: Api) -> None:
    headers = {"x-ga-apikey": api.key}
    for size in (1 << 64, 10**30):
        body = {"fileName": "song.mp3", "fileSize": size}
        r = api.client.post(f"{GAUDIO}/v1/files/upload-multipart/create", json=body,
                            headers=headers)  # fmt: skip
        assert "limit" in gaudio_result(r, 1110)
    # An ordinary oversized file still "uploads fine" and is refused at job creation.
    body = {"fileName": "song.mp3", "fileSize": 400_000}
    r = api.client.post(f"{GAUDIO}/v1/files/upload-multipart/create", json=body, headers=headers)
    assert r.json()["resultCode"] == 1000, r.text


def test_deeply_nested_json_is_a_bad_request_in_each_envelope(api: Api) -> None:
    form = {"stems": DEEP, "audio_url": "http://example.com/a.mp3"}
    r = api.client.post(f"{MUSICGPT}/Extraction", data=form, headers={"Authorization": api.key})
    musicgpt_error(r, 400, "INVALID_REQUEST")
    form = {"preprocessing_options": DEEP, "stems": '["vocals"]', "audio_url": "http://x.io/a"}
    r = api.client.post(f"{MUSICGPT}/Extraction", data=form, headers={"Authorization": api.key})
    musicgpt_error(r, 400, "INVALID_REQUEST")
    r = api.post(f"{SUNO}/generate", content=DEEP, headers={"Content-Type": "application/json"})
    assert "not valid JSON" in suno_error(r, 400)
    r = api.client.post(f"{GAUDIO}/v1/files/upload-multipart/create", content=DEEP,
                        headers={"x-ga-apikey": api.key})  # fmt: skip
    assert "not valid JSON" in gaudio_result(r, 1100)
    # The native idempotent submit hashes the body: a deep one is a plain 400.
    r = api.post("/v1/queue/audio/stems", content=DEEP,
                 headers={"Content-Type": "application/json", "Idempotency-Key": "k1"})  # fmt: skip
    native(r, 400, "INVALID_REQUEST")


def test_nul_and_lone_surrogates_are_bad_requests_in_each_envelope(api: Api) -> None:
    # Text no field takes. A NUL ("\u0000" in JSON, %00 in a URL): PostgreSQL cannot hold it,
    # so a write or even a lookup with one was a 500 there (SQLite stored it). A lone UTF-16
    # surrogate ("\ud800" in JSON): no UTF-8 can carry it, so the database write (Gaudio: 1100
    # "internal server error") and the error quoting it (native stems: 500) failed.
    json_type = {"Content-Type": "application/json"}
    gaudio = {"x-ga-apikey": api.key, **json_type}
    url = "https://example.com/a.mp3"
    for bad, what in (("a\x00b", "a NUL character"), ("\ud800", "a lone UTF-16 surrogate")):
        holds = f"the request body holds {what}"
        for path, body in (
            ("/v1/files/upload-multipart/create", {"fileName": f"{bad}.mp3", "fileSize": 1000}),
            ("/v1/files/upload-multipart/complete", {"uploadId": bad, "parts": []}),
            ("/v1/gsep_music_hq_v1/jobs", {"audioUploadId": bad, "type": "vocal"}),
        ):
            r = api.client.post(f"{GAUDIO}{path}", content=json.dumps(body), headers=gaudio)
            assert gaudio_result(r, 1100).startswith(holds)
        for body in ({"audioUrl": f"{url}?{bad}"}, {"taskId": bad, "audioId": bad}):
            r = api.post(f"{SUNO}/generate", content=json.dumps(body), headers=json_type)
            assert suno_error(r, 400).startswith(f"bad parameters: {holds}")
        for route, field in (("stems", {"stems": [bad]}), ("separate", {"prompt": bad})):
            body = {"input": {"audio_url": url, **field}}
            r = api.post(f"/v1/queue/audio/{route}", content=json.dumps(body), headers=json_type)
            error = native(r, 400, "INVALID_REQUEST")
            assert error["message"].startswith(holds) and error["param"] is None
        form = {"stems": json.dumps([bad]), "audio_url": url}
        r = api.client.post(f"{MUSICGPT}/Extraction", data=form, headers={"Authorization": api.key})
        musicgpt_error(r, 400, "INVALID_REQUEST")
    body = {"file_name": "a\x00b.wav", "content_type": "audio/wav", "file_size": 100,
            "purpose": "audio.separate.input"}  # fmt: skip
    r = api.post("/v1/files", content=json.dumps(body), headers=json_type)
    assert native(r, 400, "INVALID_REQUEST")["message"].startswith("the request body holds a NUL")
    # The same in a form: a file's name (it was stored, NUL and all, on SQLite) or a field.
    wav = api.files.get("mono.wav").path.read_bytes()
    form = (  # by hand: httpx would send the NUL as %00
        b'--b0\r\nContent-Disposition: form-data; name="file"; filename="a\x00b.wav"\r\n'
        b"Content-Type: audio/wav\r\n\r\n" + wav + b"\r\n--b0--\r\n"
    )
    r = api.post(
        "/v1/files", content=form, headers={"Content-Type": "multipart/form-data; boundary=b0"}
    )
    assert native(r, 400, "INVALID_REQUEST")["message"] == (
        "the form holds a NUL character (\\u0000), which no field takes"
    )
    form = (
        f'--b0\r\nContent-Disposition: form-data; name="audio_url"\r\n\r\n{url}\x00\r\n--b0--\r\n'
    )
    r = api.client.post(
        f"{MUSICGPT}/Extraction",
        content=form.encode(),
        headers={"Authorization": api.key, "Content-Type": "multipart/form-data; boundary=b0"},
    )
    musicgpt_error(r, 400, "INVALID_REQUEST")
    assert r.json()["message"] == "the form holds a NUL character (\\u0000), which no field takes"
    body = {"input": {"audio_url": url, "prompt": "vocals"}}
    r = api.post("/v1/queue/audio/separate", json=body, headers={"Idempotency-Key": "k\x00"})
    assert native(r, 400, "INVALID_REQUEST")["param"] == "Idempotency-Key"
    # A NUL in the URL, before any lookup.
    in_url = "the URL holds a NUL character"
    for path in ("/v1/queue/requests/a%00b/status", "/v1/files/a%00b", "/v1/usage?from=%00"):
        assert native(api.get(path), 400, "INVALID_REQUEST")["message"].startswith(in_url)
    r = api.get(f"{MUSICGPT}/byId?conversionType=EXTRACTION&task_id=a%00b",
                headers={"Authorization": api.key})  # fmt: skip
    musicgpt_error(r, 400, "INVALID_REQUEST")
    assert suno_error(api.get(f"{SUNO}/record-info?taskId=a%00b"), 400).startswith(in_url)
    r = api.client.get(f"{GAUDIO}/v1/gsep_music_hq_v1/jobs/a%00b", headers=gaudio)
    assert gaudio_result(r, 1100).startswith(in_url)
    # Nothing was queued, and a whole pair (an emoji) is a character like any other.
    assert api.get("/v1/queue/requests").json()["data"] == []
    body = {"input": {"audio_url": url, "stems": ["\U0001f3b8"]}}
    r = api.post("/v1/queue/audio/stems", content=json.dumps(body), headers=json_type)
    assert "makes \U0001f3b8;" in native(r, 422, "UNKNOWN_STEM")["message"]


def test_vendor_crashes_answer_in_the_vendor_envelope(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*_: Any, **__: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(musicgpt, "_lookup", boom)
    r = api.client.get(f"{MUSICGPT}/byId", params={"task_id": "req_x"},
                       headers={"Authorization": api.key})  # fmt: skip
    musicgpt_error(r, 500, "INTERNAL")
    monkeypatch.setattr(sunoapi, "_record_info", boom)
    assert "internal" in suno_error(api.get(f"{SUNO}/record-info?taskId=req_x"), 500)
    monkeypatch.setattr(gaudio_routes, "_job_view", boom)
    r = api.client.get(f"{GAUDIO}/v1/gsep_music_hq_v1/jobs/req_x",
                       headers={"x-ga-apikey": api.key})  # fmt: skip
    assert "internal" in gaudio_result(r, 1100)
    assert "a bug" not in r.text  # the traceback goes to the log only


# --- request bodies: a limit on every route, in each envelope --------------------------------


def test_json_bodies_over_the_limit_are_413_before_they_are_parsed(api: Api) -> None:
    limit = api.services.settings.max_json_body_bytes
    big = json.dumps({"input": {"audio_url": "http://example.com/a.mp3", "stems": ["vocals"]},
                      "junk": "x" * (3 * limit)}).encode()  # fmt: skip
    h = {"Content-Type": "application/json"}
    # Announced by Content-Length, and sent chunked (counted while it arrives).
    native(api.post("/v1/queue/audio/stems", content=big, headers=h), 413, "REQUEST_TOO_LARGE")
    r = api.post("/v1/queue/audio/stems", content=chunked(big), headers=h)
    native(r, 413, "REQUEST_TOO_LARGE")
    native(api.post("/v1/files", content=chunked(big), headers=h), 413, "REQUEST_TOO_LARGE")
    r = api.client.post(f"{GAUDIO}/v1/files/upload-multipart/create", content=chunked(big),
                        headers={"x-ga-apikey": api.key, **h})  # fmt: skip
    assert r.status_code == 413 and r.json()["error"] == "request_entity_too_large", r.text
    assert suno_error(api.post(f"{SUNO}/generate", content=chunked(big), headers=h), 413)
    r = api.client.post(f"{MUSICGPT}/Extraction", data={"stems": "x" * (100 * 1024)},
                        headers={"Authorization": api.key})  # fmt: skip
    musicgpt_error(r, 413, "REQUEST_TOO_LARGE")
    # Nothing was queued by any of them.
    listed = api.get("/v1/queue/requests").json()["data"]
    assert listed == []


def _over_limit(api: Api) -> bytes:
    return b"RIFF" + os.urandom(api.services.settings.max_upload_bytes + 200_000)


def test_a_chunked_upload_over_the_limit_is_refused_and_leaves_nothing(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (tests/test_abuse.py watches the spool of a live server while such an upload arrives.)
    limit = api.services.settings.max_upload_bytes
    data = _over_limit(api)
    boundary = b"--b0undary"
    body = (
        boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="a.wav"'
        b"\r\nContent-Type: audio/wav\r\n\r\n" + data + b"\r\n" + boundary + b"--\r\n"
    )
    headers = {"Content-Type": "multipart/form-data; boundary=b0undary"}
    r = api.post("/v1/files", content=chunked(body), headers=headers)
    refusal = (
        f"the upload is over this server's limit of 585.9 KiB ({limit} bytes); for a video, "
        "send its sound alone, a small part of its size (e.g. `ffmpeg -i video.mp4 -vn -c:a "
        "copy sound.m4a`): the sound is all that is separated"
    )
    assert native(r, 413, "FILE_TOO_LARGE")["message"] == refusal
    assert spool_files(api) == []  # removed on failure
    # Announced past the limit and a form's overhead: refused before a byte is read, naming
    # the server's file limit (not the limit plus that overhead).
    huge = body + os.urandom(2 << 20)
    r = api.post("/v1/files", content=huge, headers=headers)
    assert native(r, 413, "FILE_TOO_LARGE")["message"] == refusal
    # MusicGPT's audio_file: the same, in its envelope.
    files = {"audio_file": ("a.wav", data, "audio/wav")}
    r = api.client.post(f"{MUSICGPT}/Extraction", files=files, data={"stems": '["vocals"]'},
                        headers={"Authorization": api.key})  # fmt: skip
    musicgpt_error(r, 413, "FILE_TOO_LARGE")
    assert spool_files(api) == []


# --- what the upload probe and the job agree on ---------------------------------------------


def _multipart(api: Api, path: Path, content_type: str = "audio/wav") -> Any:
    files = {"file": (path.name, path.read_bytes(), content_type)}
    return api.post("/v1/files", files=files)


def test_a_header_promising_hours_is_refused_at_upload_as_the_job_would(
    api: Api, tmp_path: Path
) -> None:
    r = _multipart(api, wav_promising(tmp_path / "promises.wav"))
    error = native(r, 422, "INVALID_AUDIO")
    assert "truncated" in error["message"] and "promises.wav" in error["message"]


def test_a_hidden_length_is_found_at_upload(api: Api, tmp_path: Path) -> None:
    # It declares 0.95 s; its packets hold 20 s, over this server's 10: refused at upload
    # (it was stored, and kept 72 h, though no request could use it).
    r = _multipart(api, lying_xing_mp3(tmp_path / "lying.mp3", seconds=20), "audio/mpeg")
    error = native(r, 422, "DURATION_LIMIT")
    assert error["param"] == "file"
    assert error["message"] == (  # counted just past the limit: no figure that reads as within it
        "'lying.mp3' is longer than this server's limit of 10 s; send a shorter file"
    )
    with api.services.db.read() as s:
        refused = s.scalars(select(File)).one()
    assert (refused.status, refused.error_code) == ("failed", "DURATION_LIMIT")
    assert not api.services.storage.exists(refused.storage_key)  # the bytes went at once


def test_more_than_two_channels_need_an_explicit_downmix(api: Api) -> None:
    file_id = api.upload("surround.flac")
    r = api.post("/v1/queue/audio/stems", json={"input": {"file_id": file_id}})
    error = native(r, 422, "INVALID_AUDIO")
    assert error["param"] == "input.downmix"
    assert error["message"] == (  # the file as the user knows it, beside the id they sent
        f"file {file_id!r} (surround.flac) has 6 channels; demixer separates mono or stereo: "
        "set input.downmix to true to fold it to stereo first"
    )
    body = {"input": {"file_id": file_id, "downmix": True}}
    r = api.post("/v1/queue/audio/stems", json=body)
    assert r.status_code == 202, r.text
    claim = api.services.queue.claim("test-worker")
    assert claim is not None and claim.params["downmix"] is True


@pytest.mark.parametrize("maker", [concat_script, hls_playlist])
def test_playlists_and_concat_scripts_never_open_other_files(
    api: Api, tmp_path: Path, maker: Callable[[Path, Path], Path]
) -> None:
    target = api.files.get("long.wav").path  # a real audio file on the server's disk
    crafted = maker(tmp_path / "crafted.mp3", target)
    r = _multipart(api, crafted, "audio/mpeg")
    assert "cannot be read" in native(r, 422, "INVALID_AUDIO")["message"]


# --- the OpenAPI document --------------------------------------------------------------------


def test_openapi_says_what_the_server_enforces(api: Api) -> None:
    spec = api.client.get("/v1/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for name in ("SeparateInput", "StemsInput"):
        schema = schemas[name]
        assert schema["oneOf"] == [{"required": ["file_id"]}, {"required": ["audio_url"]}]
        for field in ("file_id", "audio_url"):
            assert schema["properties"][field]["type"] == "string"
            assert "anyOf" not in schema["properties"][field]
    stream = spec["paths"]["/v1/queue/requests/{request_id}/status/stream"]["get"]
    assert list(stream["responses"]["200"]["content"]) == ["text/event-stream"]
    # A result past its retention is 410 RESULT_EXPIRED; submits take an Idempotency-Key.
    result = spec["paths"]["/v1/queue/requests/{request_id}/result"]["get"]
    assert "RESULT_EXPIRED" in result["responses"]["410"]["description"]
    for path in ("/v1/queue/audio/stems", "/v1/queue/audio/separate", "/v1/files"):
        parameters = {(p["name"], p["in"]) for p in spec["paths"][path]["post"]["parameters"]}
        # A submit takes its webhook in the query too, as fal's clients send it.
        fal = {("fal_webhook", "query")} if path.startswith("/v1/queue/") else set()
        assert parameters == {("Idempotency-Key", "header")} | fal, path
        assert "409" in spec["paths"][path]["post"]["responses"]  # IDEMPOTENCY_KEY_REUSED
    # A blob is served as its own type (audio/wav...), not as the octet-stream it said; a
    # HEAD's answer has no body.
    blob = spec["paths"]["/v1/blobs/{key}"]
    for status in ("200", "206"):
        assert tuple(blob["get"]["responses"][status]["content"]) == MEDIA_TYPES
    assert "content" not in blob["head"]["responses"]["200"]
    for path in ("/v1/queue/audio/stems", "/v1/queue/audio/separate"):  # text/plain: 415
        assert "415" in spec["paths"][path]["post"]["responses"]
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            documented = set(operation["responses"])
            # The health checks touch neither database nor storage for a caller, and metrics
            # show an outage as a figure: no outage or full-disk status (test_health and
            # test_metrics check exactly what they document).
            if not {"health", "monitoring"} & set(operation.get("tags", ())):
                assert {"503", "507"} <= documented, (method, path)
            if "requestBody" in operation:
                assert {"400", "413"} <= documented, (method, path)
            if any("_KeyBearer" in need for need in operation["security"]):  # an API key's
                assert {"401", "403", "429"} <= documented, (method, path)


# --- nothing left behind -------------------------------------------------------------------


def test_a_killed_attempts_scratch_goes_as_soon_as_the_attempt_is_over(api: Api) -> None:
    file_id = api.upload()
    done = api.queue_separate(file_id).json()["request_id"]
    api.worker_done(done)  # completed elsewhere
    running = api.queue_separate(file_id, prompt="drums").json()["request_id"]
    claim = api.services.queue.claim("another-worker")
    assert claim is not None and claim.id == running
    work = api.services.settings.data_dir / "work"
    made = {
        "completed": work / f"{scratch_prefix(done, 1)}abc",
        "live": work / f"{scratch_prefix(running, claim.attempt)}def",
        "earlier attempt": work / f"{scratch_prefix(running, claim.attempt + 1)}ghi",
        "unknown job": work / f"{scratch_prefix('req_gone', 1)}jkl",
        "not ours": work / "someone-elses",
    }
    for path in made.values():
        (path / "out").mkdir(parents=True)
        (path / "out" / "vocals.wav.part").write_bytes(b"x" * 1000)
    removed = Worker(api.services).sweep_work_dir()  # what a (re)starting worker does first
    left = {name for name, path in made.items() if path.exists()}
    assert left == {"live", "not ours"} and removed == 3


def test_spools_of_killed_processes_are_swept(api: Api) -> None:
    data_dir = api.services.settings.data_dir
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    stale = data_dir / "tmp" / f"upload-{dead.stdout.strip()}-abc"
    stale.write_bytes(b"x" * 1000)
    fd, ours = scratch_file(data_dir, "upload")
    os.close(fd)
    assert sweep_scratch(data_dir) == 1
    assert not stale.exists() and ours.exists()


def test_inputs_fetched_from_the_store_stay_in_the_data_directory(api: Api) -> None:
    file_id = api.upload()
    key = f"inputs/{file_id}"
    scratch = api.services.settings.data_dir / "tmp"
    with api.services.storage.local_path(key) as path:
        assert path.read_bytes() == api.files.get("stereo.wav").path.read_bytes()
        if api.direct:  # S3: a local copy, in the data directory (never $TMPDIR)
            assert path.is_relative_to(scratch)
    assert spool_files(api) == []


def test_the_local_session_is_an_explicit_opt_in(tmp_path: Path) -> None:
    answers = {}
    for opt_in in (False, True):
        settings = Settings(data_dir=tmp_path / f"d{opt_in}", local_session=opt_in)
        services = build_services(settings)
        services.db.create_all()
        # What a same-host reverse proxy presents: a loopback client with a loopback Host.
        with TestClient(create_app(services), base_url="http://127.0.0.1:8000",
                        client=("127.0.0.1", 40000)) as client:  # fmt: skip
            answers[opt_in] = client.get("/v1/session")
    native(answers[False], 403, "PERMISSION_DENIED")
    assert "--local-session" in answers[False].json()["error"]["message"]
    assert answers[True].status_code == 200 and answers[True].json()["api_key"]


@pytest.mark.backends("sqlite")  # a data directory each: its own database
def test_the_local_session_never_takes_another_accounts_place(tmp_path: Path) -> None:
    # The page's session took the account of the oldest key still valid: a tenant's whenever
    # keys were made before `serve` first ran (it then made none), or once the key `serve`
    # printed was revoked; the page then read and deleted that tenant's files, keyless.
    def session_account(data_dir: Path, names: list[str], revoke_first: bool) -> str:
        services = build_services(Settings(data_dir=data_dir, local_session=True))
        services.db.create_all()
        for name in names:
            create_key(services.db, name=name)
        if revoke_first:
            revoke_key(services.db, list_keys(services.db)[0].id)
        with TestClient(create_app(services), base_url="http://127.0.0.1:8000",
                        client=("127.0.0.1", 40000)) as client:  # fmt: skip
            got = client.get("/v1/session")
        assert got.status_code == 200, got.text
        return str(got.json()["account_id"])

    def accounts(data_dir: Path) -> dict[str, str]:
        keys = list_keys(build_services(Settings(data_dir=data_dir)).db)
        return {k.name: k.account_id for k in keys}

    # A tenant's key made before `serve` first ran: the page gets an account of its own.
    account = session_account(tmp_path / "before", ["tenant a"], revoke_first=False)
    assert account != accounts(tmp_path / "before")["tenant a"]
    # The key `serve` printed (its name is `serve`'s), revoked: still its account.
    account = session_account(tmp_path / "revoked", ["created by serve", "tenant a"], True)
    made = accounts(tmp_path / "revoked")
    assert account == made["created by serve"] != made["tenant a"]
