"""The sunoapi-style vocal-removal API, used as its own clients use it, against a real server.

``SunoClient`` is written from the vendor's documentation only (plain httpx, no demixer
imports): ``POST /generate`` → poll ``GET /record-info`` → download the URLs, with a callback
received on a local HTTP host that also serves the input audio.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
import soundfile as sf

from api_support import Api, make_api
from audiofiles import decode_stream, stempeg_example
from conftest import Backend
from demixer.errors import (
    CheckpointMismatch,
    ChunkTooLarge,
    InvalidModelConfig,
    ModelUnavailable,
    WeightsChecksumMismatch,
)
from demixer.service.schema import Job
from local_origin import Origin, local_origin
from service_harness import Server, create_key, fast_env, free_port, running_server

# The whole module runs on SQLite + local storage and on PostgreSQL + S3 (conftest.py).
pytestmark = pytest.mark.usefixtures("backend")

__all__ = ["make_api"]  # the in-process fixture, for the null type check

RATE = 44100
SECONDS = 3.0
BASE = "/api/v1/vocal-removal"
STEM_FIELDS = (
    "vocalUrl",
    "backingVocalsUrl",
    "drumsUrl",
    "bassUrl",
    "guitarUrl",
    "keyboardUrl",
    "percussionUrl",
    "stringsUrl",
    "synthUrl",
    "fxUrl",
    "brassUrl",
    "woodwindsUrl",
)
NEVER = ("backingVocalsUrl", "percussionUrl", "stringsUrl", "synthUrl", "fxUrl", "brassUrl")
# The fields of the vendor's record-info example (its `response`) and of its callback examples
# (docs.sunoapi.org/suno-api/get-vocal-separation-details and .../separate-vocals-from-music-
# callbacks; `piano_url` is in the callback example of the separation page).
RECORD_FIELDS = {"id", "originUrl", "originData", "instrumentalUrl", "pianoUrl", *STEM_FIELDS}
CALLBACK_FIELDS = {
    "origin_url",
    "instrumental_url",
    "vocal_url",
    "backing_vocals_url",
    "drums_url",
    "bass_url",
    "guitar_url",
    "keyboard_url",
    "piano_url",
    "percussion_url",
    "strings_url",
    "synth_url",
    "fx_url",
    "brass_url",
    "woodwinds_url",
}


# --- the client: vendor documentation only ---------------------------------------------------


class SunoClient:
    def __init__(self, base_url: str, key: str | None) -> None:
        headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
        self.http = httpx.Client(base_url=base_url + BASE, headers=headers, timeout=60)

    def call(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        r = self.http.request(method, path, **kw)
        assert r.status_code == 200, r.text  # the envelope carries the outcome
        body: dict[str, Any] = r.json()
        assert set(body) == {"code", "msg", "data"}, body
        return body

    def generate(self, **body: Any) -> dict[str, Any]:
        return self.call("POST", "/generate", json=body)

    def record(self, task_id: str) -> dict[str, Any]:
        return self.call("GET", "/record-info", params={"taskId": task_id})

    def wait(self, task_id: str, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            body = self.record(task_id)
            assert body["code"] == 200, body
            if body["data"]["successFlag"] != "PENDING":
                return dict(body["data"])
            time.sleep(0.3)
        raise AssertionError(f"task {task_id} still PENDING after {timeout} s")

    def close(self) -> None:
        self.http.close()


def seconds_of(url: str) -> float:
    r = httpx.get(url, timeout=60)
    assert r.status_code == 200, r.text
    data, rate = sf.read(io.BytesIO(r.content))
    return float(len(data) / rate)


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def origin(backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Origin]:
    # One per backend: the callbacks it records are each backend's own.
    mix = decode_stream(stempeg_example(), 0)[:, : int(SECONDS * RATE)]
    buf = io.BytesIO()
    sf.write(buf, np.ascontiguousarray(mix.T), RATE, format="WAV", subtype="PCM_16")
    with local_origin() as host:
        host.files["song.wav"] = (buf.getvalue(), "audio/wav")
        host.files["notes.wav"] = (b"these are not audio samples" * 40, "audio/wav")
        yield host


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, backend: Backend, origin: Origin
) -> Iterator[Server]:
    # ``backend``: one per backend, started in its environment (its database and bucket).
    # One delivery attempt: a callback that cannot be delivered fails at once.
    env = fast_env(DEMIXER_URL_ALLOWLIST="127.0.0.1", DEMIXER_WEBHOOK_MAX_ATTEMPTS="1")
    with running_server(tmp_path_factory.mktemp("suno"), env=env) as s:
        yield s


@pytest.fixture
def suno(server: Server) -> Iterator[SunoClient]:
    client = SunoClient(server.base_url, server.key)
    yield client
    client.close()


# --- the flows --------------------------------------------------------------------------------


def test_separate_vocal_polls_to_success_and_calls_back(suno: SunoClient, origin: Origin) -> None:
    song = origin.url("song.wav")
    made = suno.generate(audioUrl=song, callBackUrl=origin.url("/cb/vocal"))
    assert made["code"] == 200, made
    task_id = made["data"]["taskId"]

    data = suno.wait(task_id)
    assert data["successFlag"] == "SUCCESS", data
    assert data["taskId"] == task_id
    # The record example's track fields: an audioUrl is no track demixer has an id for.
    assert (data["musicId"], data["audioId"], data["musicIndex"]) == (None, None, 0)
    assert data["callbackUrl"] == origin.url("/cb/vocal")
    assert data["errorCode"] is None and data["errorMessage"] is None
    assert isinstance(data["createTime"], int) and data["completeTime"] >= data["createTime"]
    response = data["response"]
    assert response["originUrl"] == song
    assert seconds_of(response["vocalUrl"]) == pytest.approx(SECONDS, abs=0.05)
    assert seconds_of(response["instrumentalUrl"]) == pytest.approx(SECONDS, abs=0.05)
    for name in STEM_FIELDS[1:]:
        assert response[name] is None, name

    callback = origin.posted("/cb/vocal").json()
    assert (callback["code"], callback["msg"]) == (200, "vocal Removal generated successfully.")
    assert callback["data"]["task_id"] == task_id
    info = callback["data"]["vocal_removal_info"]
    assert info["origin_url"] == song
    assert seconds_of(info["vocal_url"]) == pytest.approx(SECONDS, abs=0.05)
    assert info["instrumental_url"] and info["drums_url"] is None

    # A task of ours as input again: split_stem_advanced on the same audio.
    again = suno.generate(type="split_stem_advanced", stemName="vocal", taskId=task_id)
    assert again["code"] == 200, again
    redo = suno.wait(again["data"]["taskId"])
    assert redo["successFlag"] == "SUCCESS"
    assert redo["response"]["vocalUrl"] and redo["response"]["instrumentalUrl"]

    # A callback nobody receives: SUCCESS becomes CALLBACK_EXCEPTION once delivery gave up.
    dead = f"http://127.0.0.1:{free_port()}/cb"
    lost = suno.generate(audioUrl=song, callBackUrl=dead)["data"]["taskId"]
    deadline = time.monotonic() + 30
    while (flag := suno.wait(lost)["successFlag"]) == "SUCCESS":
        assert time.monotonic() < deadline, "the callback never failed"
        time.sleep(0.2)
    assert flag == "CALLBACK_EXCEPTION"


def test_split_stem_from_an_uploaded_file(suno: SunoClient, server: Server, origin: Origin) -> None:
    # The file comes from demixer's own upload API (``POST /v1/files`` + signed PUT).
    audio = origin.files["song.wav"][0]
    native = server.client()
    up = native.post(
        "/v1/files",
        json={"file_name": "song.wav", "content_type": "audio/wav", "file_size": len(audio)},
    ).json()
    assert httpx.put(up["upload_url"], content=audio, headers=up["headers"]).status_code == 200

    made = suno.generate(type="split_stem", fileId=up["file_id"])
    assert made["code"] == 200, made
    data = suno.wait(made["data"]["taskId"])
    assert data["successFlag"] == "SUCCESS", data
    response = data["response"]
    assert response["instrumentalUrl"] is None
    assert response["originUrl"].startswith("http")
    filled = [name for name in STEM_FIELDS if response[name]]
    assert "vocalUrl" in filled and len(filled) >= 1
    for name in filled:
        assert seconds_of(response[name]) == pytest.approx(SECONDS, abs=0.05), name
    for name in NEVER:
        assert response[name] is None, name
    # The record example's name for the keyboard stem, beside the field list's.
    assert response["pianoUrl"] == response["keyboardUrl"]


def test_stems_are_mp3_as_the_vendors_examples_show(suno: SunoClient, origin: Origin) -> None:
    """Every stem URL of the vendor's record and callback examples is an MP3
    (``..._Vocals.mp3``, ``..._Instrumental.mp3``), and it has no field for another format:
    demixer's were WAVs. Each URL's file name, Content-Type and bytes are MP3 now."""
    made = suno.generate(audioUrl=origin.url("song.wav"), callBackUrl=origin.url("/cb/mp3"))
    assert made["code"] == 200, made
    response = suno.wait(made["data"]["taskId"])["response"]
    info = origin.posted("/cb/mp3").json()["data"]["vocal_removal_info"]
    for url in (response["vocalUrl"], response["instrumentalUrl"], info["vocal_url"]):
        assert urlsplit(url).path.endswith(".mp3"), url
        got = httpx.get(url, timeout=60)
        assert got.status_code == 200, got.text
        assert got.headers["content-type"] == "audio/mpeg"
        assert sf.info(io.BytesIO(got.content)).format == "MP3"


def test_split_stem_sends_the_vendors_fields_only_and_the_track_id(
    suno: SunoClient, server: Server, origin: Origin
) -> None:
    """A 4-stem model's ``other`` came back as ``other_url`` / ``otherUrl``, fields the
    vendor's callback and record do not have; and ``musicId``, the separated track's id in the
    vendor's record example, was null for an uploaded file demixer knows by its id."""
    audio = origin.files["song.wav"][0]
    up = (
        server.client()
        .post(
            "/v1/files",
            json={"file_name": "song.wav", "content_type": "audio/wav", "file_size": len(audio)},
        )
        .json()
    )
    assert httpx.put(up["upload_url"], content=audio, headers=up["headers"]).status_code == 200
    hook = origin.url("/cb/split")
    made = suno.generate(type="split_stem", fileId=up["file_id"], callBackUrl=hook)
    assert made["code"] == 200, made
    data = suno.wait(made["data"]["taskId"])
    assert data["successFlag"] == "SUCCESS", data
    assert data["musicId"] == data["audioId"] == up["file_id"]
    assert set(data["response"]) <= RECORD_FIELDS, set(data["response"]) - RECORD_FIELDS
    info = origin.posted("/cb/split").json()["data"]["vocal_removal_info"]
    assert set(info) <= CALLBACK_FIELDS, set(info) - CALLBACK_FIELDS
    assert info["vocal_url"] and info["drums_url"] and info["bass_url"]


def test_bad_audio_fails_and_calls_back(suno: SunoClient, origin: Origin) -> None:
    made = suno.generate(audioUrl=origin.url("notes.wav"), callBackUrl=origin.url("/cb/bad"))
    assert made["code"] == 200, made
    data = suno.wait(made["data"]["taskId"])
    assert data["successFlag"] == "GENERATE_AUDIO_FAILED", data
    assert data["errorCode"] == 400 and data["errorMessage"]
    assert all(data["response"][name] is None for name in STEM_FIELDS)

    callback = origin.posted("/cb/bad").json()
    assert callback["code"] != 200 and callback["msg"]
    assert callback["data"]["task_id"] == made["data"]["taskId"]


def test_an_audio_url_that_cannot_be_downloaded_is_451(suno: SunoClient, origin: Origin) -> None:
    """The vendor's callback code for "Download Failed - Unable to download source audio
    file", in record-info's errorCode too."""
    hook = origin.url("/cb/gone")
    made = suno.generate(audioUrl=origin.url("no-such-song.wav"), callBackUrl=hook)
    assert made["code"] == 200, made
    data = suno.wait(made["data"]["taskId"])
    assert data["successFlag"] == "GENERATE_AUDIO_FAILED", data
    assert data["errorCode"] == 451
    assert data["errorMessage"].startswith("INVALID_AUDIO_URL: fetching audio_url "), data
    callback = origin.posted("/cb/gone").json()
    assert (callback["code"], callback["msg"]) == (451, data["errorMessage"])
    assert callback["data"] == {"task_id": made["data"]["taskId"], "vocal_removal_info": None}


def test_a_cancelled_task_is_failed_with_its_complete_time_and_calls_back(
    origin: Origin, tmp_path: Path
) -> None:
    """An API with no worker: the task stays queued until the native cancel ends it. The
    protocol has no cancel of its own, so its client learns it from the failure callback."""
    env = fast_env(DEMIXER_URL_ALLOWLIST="127.0.0.1")
    hook = origin.url("/cb/cancelled")
    with running_server(tmp_path / "api-only", workers=0, env=env) as api:
        suno = SunoClient(api.base_url, api.key)
        # callbackUrl: record-info's spelling of the request's callBackUrl, read too
        task = suno.generate(audioUrl=origin.url("song.wav"), callbackUrl=hook)["data"]["taskId"]
        queued = suno.record(task)["data"]
        assert (queued["successFlag"], queued["completeTime"]) == ("PENDING", None)
        assert queued["callbackUrl"] == hook
        cancel = api.client().put(f"/v1/queue/requests/{task}/cancel")
        assert cancel.json()["status"] == "CANCELLED", cancel.text
        data = suno.record(task)["data"]
        callback = origin.posted("/cb/cancelled").json()
        # A blank callBackUrl is no callback (as an absent one), not a bad URL.
        blank = suno.generate(audioUrl=origin.url("song.wav"), callBackUrl=" ")
        assert blank["code"] == 200, blank
        assert suno.record(blank["data"]["taskId"])["data"]["callbackUrl"] is None
        suno.close()
    assert data["successFlag"] == "GENERATE_AUDIO_FAILED"
    assert data["errorMessage"] == "CANCELLED: the task was cancelled"
    assert isinstance(data["completeTime"], int) and data["completeTime"] >= data["createTime"]
    assert callback == {
        "code": 400,
        "msg": "CANCELLED: the task was cancelled",
        "data": {"task_id": task, "vocal_removal_info": None},
    }


def test_a_null_type_is_the_default_separate_vocal(make_api: Any) -> None:
    """sunoapi documents ``type`` as defaulting to ``separate_vocal``
    (https://docs.sunoapi.org/suno-api/separate-vocals-from-music); a client writing its unset
    optional fields as JSON null got code 400 instead of the default."""
    api: Api = make_api()
    body = {"fileId": api.upload(), "type": None, "callBackUrl": None}
    made = api.post(f"{BASE}/generate", json=body).json()
    assert made["code"] == 200, made
    with api.services.db.read() as s:
        job = s.get(Job, made["data"]["taskId"])
    assert job is not None and job.params["vendor"]["type"] == "separate_vocal"


def test_the_credit_balance_clients_check_their_key_with(make_api: Any) -> None:
    """sunoapi clients call ``GET /api/v1/generate/credit`` ("Get Remaining Credits",
    https://docs.sunoapi.org/suno-api/get-remaining-credits) to check a key before anything
    else, and as a budget guard before a task; it was demixer's native HTTP 404, so such a
    client took the key for a bad one. demixer bills no credits: any working key has the
    largest balance an integer holds."""
    api: Api = make_api()
    r = api.get("/api/v1/generate/credit")
    assert (r.status_code, r.json()) == (200, {"code": 200, "msg": "success", "data": 2**31 - 1})
    refused = api.get("/api/v1/generate/credit", key="dmx_not_a_key")
    assert (refused.status_code, refused.json()["code"]) == (200, 401)
    posted = api.post("/api/v1/generate/credit")  # the vendor's "invalid request method"
    assert (posted.status_code, posted.json()["code"]) == (200, 404)


def test_an_upload_named_as_the_tracks_audio_id_is_separated(make_api: Any) -> None:
    """sunoapi's SDKs send only ``taskId`` + ``audioId`` (suno-easy 0.2.0's
    ``audio.separate_vocals(task_id, audio_id)``, below as it sent it): naming a demixer
    upload there was code 400 "does not know the track", so such a client could separate
    nothing but an earlier task's audio. The upload's id is its track's ``audioId``, as
    record-info names it; another account's upload stays a 400."""
    api: Api = make_api()
    file_id = api.upload()
    body = {"taskId": "unused", "audioId": file_id, "type": "separate_vocal"}
    body["callBackUrl"] = "https://example.com/suno-callback"  # suno-easy's placeholder
    made = api.post(f"{BASE}/generate", json=body).json()
    assert made["code"] == 200, made
    record = api.get(f"{BASE}/record-info", params={"taskId": made["data"]["taskId"]}).json()
    assert record["data"]["audioId"] == file_id
    theirs = api.post(f"{BASE}/generate", json=body, key=api.other_key).json()
    assert theirs["code"] == 400, theirs


def test_stem_name_is_read_as_sunoapi_clients_send_it(make_api: Any) -> None:
    """``split_stem_advanced`` clients offer Suno's own stem names and send them as they are
    (``"Drum Kit"``, ``"Vocals"``, ``"Backing Vocals"``, ``"Lead Vocal"``); only the stem
    fields' snake_case names were read, so a stem this server makes was code 400 "unknown
    stemName"."""
    api: Api = make_api()
    file_id = api.upload()
    for name, stem in (("Drum Kit", "drums"), ("Vocals", "vocals"), ("DRUMS", "drums")):
        body = {"fileId": file_id, "type": "split_stem_advanced", "stemName": name}
        made = api.post(f"{BASE}/generate", json=body).json()
        assert made["code"] == 200, made
        with api.services.db.read() as s:
            job = s.get(Job, made["data"]["taskId"])
        assert job is not None and job.params["stems"] == [stem, "residual"]
    # A Suno name for a stem no installed model makes is that refusal, not "unknown".
    body = {"fileId": file_id, "type": "split_stem_advanced", "stemName": "Backing Vocals"}
    assert api.post(f"{BASE}/generate", json=body).json()["msg"] == (
        "no installed model produces 'Backing Vocals'; this server can produce: vocal, drums, bass"
    )


@pytest.mark.parametrize(
    "error",
    [
        ChunkTooLarge("mine/config.yaml: too big"),
        InvalidModelConfig("mine/config.yaml: model.depth must be an integer >= 1, not 'one'"),
        CheckpointMismatch("mine/model.ckpt does not fit the network mine/config.yaml describes"),
        WeightsChecksumMismatch("mine/model.ckpt is damaged"),
        ModelUnavailable("no model for the separate step is installed on this worker"),
    ],
    ids=lambda e: e.code,
)
def test_a_model_that_cannot_run_on_the_worker_is_a_server_error(
    make_api: Any, error: ModelUnavailable
) -> None:
    """The worker failed the task because of the server's model: its chunks need more memory
    than the worker has, its config or checkpoint cannot be used, its weights are damaged or
    missing. errorCode was 400, "bad parameters", which sends the caller to mend a request
    that was fine; it is the vendor's 500, and errorMessage names demixer's code."""
    from demixer.service.worker.child import classify_error

    api: Api = make_api()
    made = api.post(f"{BASE}/generate", json={"fileId": api.upload()}).json()
    task_id = made["data"]["taskId"]
    claim = api.services.queue.claim("test-worker")
    assert claim is not None and claim.id == task_id
    code, message, retryable = classify_error(error)
    api.services.queue.fail(task_id, "test-worker", code=code, message=message, retryable=retryable)
    data = api.get(f"{BASE}/record-info", params={"taskId": task_id}).json()["data"]
    assert (data["successFlag"], data["errorCode"]) == ("GENERATE_AUDIO_FAILED", 500)
    assert data["errorMessage"] == f"{code}: {error.message}"


@pytest.mark.parametrize("code", ["WORKER_LOST", "WORKER_ERROR", "JOB_TIMEOUT", "STORAGE_FULL"])
def test_a_task_the_server_could_not_finish_is_a_server_error(make_api: Any, code: str) -> None:
    """Its worker stopped (WORKER_LOST) or failed itself (WORKER_ERROR), it ran past the
    server's job timeout, or the server's disk was full: errorCode was 400, "bad parameters",
    for a request that was fine."""
    api: Api = make_api()
    task_id = api.post(f"{BASE}/generate", json={"fileId": api.upload()}).json()["data"]["taskId"]
    claim = api.services.queue.claim("test-worker")
    assert claim is not None and claim.id == task_id
    api.services.queue.fail(task_id, "test-worker", code=code, message="m", retryable=False)
    data = api.get(f"{BASE}/record-info", params={"taskId": task_id}).json()["data"]
    assert (data["errorCode"], data["errorMessage"]) == (500, f"{code}: m")


# --- errors -----------------------------------------------------------------------------------


def test_keys(server: Server) -> None:
    for key in (None, "dmx_not_a_key"):
        client = SunoClient(server.base_url, key)
        try:
            assert client.generate(audioUrl="http://127.0.0.1/x.wav")["code"] == 401
            assert client.record("req_x")["code"] == 401
        finally:
            client.close()
    # A task's record holds download URLs: read as a result is, with files:read (the vendor
    # has no 403: a key lacking the scope is its 401).
    client = SunoClient(server.base_url, create_key(server.data_dir, scopes="audio:separate"))
    try:
        answer = client.record("req_x")
    finally:
        client.close()
    assert (answer["code"], answer["msg"]) == (
        401,
        "this API key lacks the scope 'files:read'; it has: audio:separate",
    )


def test_bad_requests(suno: SunoClient, origin: Origin) -> None:
    song = origin.url("song.wav")
    assert suno.record("req_unknown")["code"] == 404
    assert suno.call("GET", "/record-info")["code"] == 400
    assert suno.call("GET", "/no-such-endpoint")["code"] == 404

    missing = suno.generate(type="separate_vocal")
    assert missing["code"] == 400 and "audioUrl" in missing["msg"]
    for field in ("taskId", "audioId"):
        unknown = suno.generate(**{field: "5c79aab2-unknown"})
        assert unknown["code"] == 400, unknown
        assert "audioUrl" in unknown["msg"] and "fileId" in unknown["msg"]
    assert suno.generate(fileId="file_unknown")["code"] == 400
    assert suno.generate(type="remix", audioUrl=song)["code"] == 400

    for stem in ("brass", "kazoo"):
        refused = suno.generate(type="split_stem_advanced", stemName=stem, audioUrl=song)
        assert refused["code"] == 400, refused
        assert "vocal" in refused["msg"]  # names what can be produced
    assert suno.generate(type="split_stem_advanced", audioUrl=song)["code"] == 400
    # Backing vocals need the karaoke recipe's models, not installed here: named, not faked.
    refused = suno.generate(type="split_stem_advanced", stemName="backing_vocals", audioUrl=song)
    assert refused["code"] == 400 and refused["msg"] == (
        "no installed model produces 'backing_vocals'; this server can produce: vocal, drums, bass"
    )

    refused_url = suno.generate(audioUrl="file:///etc/passwd")
    assert refused_url["code"] == 400


def test_a_musicgpt_extractions_own_audio_is_not_taken_by_task_id(
    suno: SunoClient, server: Server, origin: Origin
) -> None:
    """A MusicGPT extraction's task id as taskId: the new task took the extraction's own
    audio_file, which goes when the extraction is deleted (the task then failed) and whose id
    no answer names (the task's native status named it)."""
    song = origin.files["song.wav"][0]
    made = httpx.post(
        f"{server.base_url}/api/public/v1/Extraction",
        headers={"Authorization": server.key},
        data={"stems": '["vocals"]'},
        files={"audio_file": ("song.wav", song, "audio/wav")},
        timeout=60,
    )
    assert made.status_code == 200, made.text
    task = made.json()["task_id"]
    refused = suno.generate(type="separate_vocal", taskId=task)
    assert (refused["code"], refused["msg"]) == (
        400,
        f"task {task!r}'s audio is a MusicGPT extraction's own audio_file; give an audioUrl, "
        "or a fileId from POST /v1/files",
    )
    assert server.client().delete(f"/v1/queue/requests/{task}").status_code == 204
