"""The Gaudio Developers (GSEP) router against a real `demixer serve`.

The client below follows Gaudio's quick-start flow with plain httpx (no demixer imports): create
a multipart upload, PUT each chunk to its presigned URL (keeping the ETag without its quotes),
complete, create a job, poll until ``success``, download. Only the base URL and key differ.
"""

from __future__ import annotations

import io
import math
import re
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import numpy as np
import pytest
import soundfile as sf

from api_support import Api, bucket_refusal, make_api
from audiofiles import encode
from conftest import Backend
from demixer.storage.s3 import S3Storage
from demixer.vendors.gaudio import multipart
from service_harness import Server, create_key, fast_env, running_server

# The whole module runs on SQLite + local storage and on PostgreSQL + S3 (conftest.py).
pytestmark = pytest.mark.usefixtures("backend")

__all__ = ["make_api"]  # the in-process fixture, for the rate-limit check

BASE = "/developers/api"
MODEL = "gsep_music_hq_v1"
CHUNK = 64 * 1024
RATE = 44100
SECONDS = 3.0


# --- a quick-start style client: plain httpx ---------------------------------------------------


class Gaudio:
    def __init__(self, base_url: str, key: str | None) -> None:
        headers = {"x-ga-apikey": key} if key is not None else {}
        self.http = httpx.Client(base_url=base_url + BASE, headers=headers, timeout=60)

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        r = self.http.post(path, json=body)
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        return out

    def upload(self, name: str, data: bytes, order: list[int] | None = None) -> str:
        created = self.post(
            "/v1/files/upload-multipart/create", {"fileName": name, "fileSize": len(data)}
        )
        assert created["resultCode"] == 1000, created
        info = created["resultData"]
        chunk, urls = info["chunkSize"], info["preSignedUrl"]
        assert len(urls) == math.ceil(len(data) / chunk)
        parts = []
        for i in order or range(len(urls)):
            put = httpx.put(urls[i], content=data[i * chunk : (i + 1) * chunk], timeout=60)
            assert put.status_code == 200, put.text
            parts.append({"awsETag": put.headers["ETag"].strip('"'), "partNumber": i + 1})
        done = self.post(
            "/v1/files/upload-multipart/complete",
            {"uploadId": info["uploadId"], "parts": parts},
        )
        assert done["resultCode"] == 1000, done
        return str(info["uploadId"])

    def create_job(self, upload_id: str, stems: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"audioUploadId": upload_id}
        if stems is not None:
            body["type"] = stems
        return self.post(f"/v1/{MODEL}/jobs", body)

    def job(self, job_id: str) -> dict[str, Any]:
        r = self.http.get(f"/v1/{MODEL}/jobs/{job_id}")
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        return out

    def wait(self, job_id: str, timeout: float = 180) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            body = self.job(job_id)
            assert body["resultCode"] == 1000, body
            if body["resultData"]["status"] in ("success", "failed"):
                return dict(body["resultData"])
            time.sleep(0.5)
        raise AssertionError(f"job {job_id} did not finish")


# --- fixtures ------------------------------------------------------------------------------------


def wav_bytes(seconds: float, channels: int = 2, rate: int = RATE) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.random.default_rng(0).standard_normal(
        len(t)
    )
    data = np.stack([tone] * channels, axis=1).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, data, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, backend: Backend) -> Iterator[Server]:
    # ``backend``: one per backend, started in its environment (its database and bucket).
    env = fast_env(DEMIXER_GAUDIO_CHUNK_BYTES=str(CHUNK))
    with running_server(tmp_path_factory.mktemp("gaudio"), env=env) as s:
        yield s


@pytest.fixture(scope="module")
def gaudio(server: Server) -> Gaudio:
    return Gaudio(server.base_url, server.key)


@pytest.fixture(scope="module")
def uploaded(gaudio: Gaudio) -> str:
    return gaudio.upload("song.wav", wav_bytes(SECONDS))


def fetch_audio(url: str) -> tuple[np.ndarray, int]:
    r = httpx.get(url, timeout=60)
    assert r.status_code == 200, r.text
    data, rate = sf.read(io.BytesIO(r.content), dtype="float32", always_2d=True)
    return data, rate


# --- tests -----------------------------------------------------------------------------------


def test_quick_start_flow_gives_mp3_and_wav_per_stem(gaudio: Gaudio, uploaded: str) -> None:
    created = gaudio.create_job(uploaded, "vocal")
    assert created["resultCode"] == 1000, created
    job = gaudio.wait(created["resultData"]["jobId"])
    assert job["status"] == "success", job
    # ISO 8601 in UTC ending in "Z", as every other time demixer sends (it was "+00:00").
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", job["expireAt"]), job
    urls = job["downloadUrl"]
    assert set(urls) == {"vocal", "others"}
    for stem in ("vocal", "others"):
        assert set(urls[stem]) == {"mp3", "wav"}
        wav, wav_rate = fetch_audio(urls[stem]["wav"])
        assert wav_rate == RATE and wav.shape[1] == 2
        assert wav.shape[0] / wav_rate == pytest.approx(SECONDS, abs=0.01)
        mp3, mp3_rate = fetch_audio(urls[stem]["mp3"])
        assert mp3.shape[1] == 2
        assert mp3.shape[0] / mp3_rate == pytest.approx(SECONDS, abs=0.1)


def test_an_upload_is_reused_by_a_second_job(gaudio: Gaudio, uploaded: str) -> None:
    created = gaudio.create_job(uploaded, "vocal")
    assert created["resultCode"] == 1000, created
    job = gaudio.wait(created["resultData"]["jobId"])
    assert job["status"] == "success"
    assert set(job["downloadUrl"]) == {"vocal", "others"}


def test_parts_put_and_listed_out_of_order_assemble_byte_identical(
    server: Server, gaudio: Gaudio, backend: Backend
) -> None:
    # On S3 the parts are a real multipart upload: every part but the last is 5 MiB at least.
    chunk = S3Storage.min_part_bytes if backend.scaled else CHUNK
    data = wav_bytes(2.5 * chunk / (2 * RATE), channels=1)  # 16-bit mono: 2 bytes a frame
    assert 2 * chunk < len(data) <= 3 * chunk
    created = gaudio.post(
        "/v1/files/upload-multipart/create", {"fileName": "three.wav", "fileSize": len(data)}
    )["resultData"]
    assert created["chunkSize"] == chunk
    urls = created["preSignedUrl"]
    assert len(urls) == 3
    parts = []
    for i in (2, 0, 1):
        put = httpx.put(urls[i], content=data[i * chunk : (i + 1) * chunk])
        assert put.status_code == 200, put.text
        parts.append({"awsETag": put.headers["ETag"].strip('"'), "partNumber": i + 1})
    parts.reverse()  # listed out of order too: 2, 1, 3
    done = gaudio.post(
        "/v1/files/upload-multipart/complete", {"uploadId": created["uploadId"], "parts": parts}
    )
    assert done["resultCode"] == 1000, done
    # The assembled file is an ordinary demixer file: read it back through the native API.
    info = server.client().get(f"/v1/files/{created['uploadId']}").json()
    assert info["status"] == "uploaded" and info["file_size"] == len(data)
    with server.storage().open(f"inputs/{created['uploadId']}") as stored:
        assert stored.read() == data


def test_a_wrong_etag_fails_completion(gaudio: Gaudio) -> None:
    data = wav_bytes(0.5)
    created = gaudio.post(
        "/v1/files/upload-multipart/create", {"fileName": "a.wav", "fileSize": len(data)}
    )["resultData"]
    parts = []
    chunk = created["chunkSize"]
    for i, url in enumerate(created["preSignedUrl"]):
        assert httpx.put(url, content=data[i * chunk : (i + 1) * chunk]).status_code == 200
        parts.append({"awsETag": "0" * 32, "partNumber": i + 1})
    done = gaudio.post(
        "/v1/files/upload-multipart/complete", {"uploadId": created["uploadId"], "parts": parts}
    )
    assert done["resultCode"] == 1100 and "awsETag" in done["resultMessage"]


def test_a_part_larger_than_the_declared_size_leaves_is_refused_and_not_stored(
    server: Server, gaudio: Gaudio, backend: Backend
) -> None:
    """A part holds at most what fileSize leaves for it, not a whole chunk: an upload declared
    at 100 bytes cannot store megabytes (past the server's upload limit) under its id. On S3
    the part URL is signed for its size, and the bucket refuses another."""
    created = gaudio.post(
        "/v1/files/upload-multipart/create", {"fileName": "tiny.wav", "fileSize": 100}
    )["resultData"]
    (url,) = created["preSignedUrl"]
    put = httpx.put(url, content=b"\x01" * 5000)
    if backend.scaled:
        assert bucket_refusal(put) == "SignatureDoesNotMatch"
    else:
        assert put.json() == {
            "resultCode": 1100,
            "resultData": None,
            "resultMessage": f"part 1 is over its 100 bytes (fileSize 100 in parts of "
            f"{created['chunkSize']})",
        }
        assert not server.storage().exists(f"uploads/{created['uploadId']}/part-1")
    exact = httpx.put(url, content=b"\x01" * 100)  # the declared size is taken
    assert exact.status_code == 200 and exact.headers["ETag"], exact.text


def test_key_missing_is_400_and_bad_key_401(server: Server) -> None:
    body = {"fileName": "a.wav", "fileSize": 10}
    r = Gaudio(server.base_url, None).http.post("/v1/files/upload-multipart/create", json=body)
    assert r.status_code == 400
    r = Gaudio(server.base_url, "dmx_nope").http.post(
        "/v1/files/upload-multipart/create", json=body
    )
    assert r.status_code == 401


def test_unknown_job_and_other_accounts_job_are_1104(server: Server, gaudio: Gaudio) -> None:
    assert gaudio.job("req_nope")["resultCode"] == 1104
    other = Gaudio(server.base_url, create_key(server.data_dir))
    upload = other.upload("o.wav", wav_bytes(0.5))
    job_id = other.create_job(upload, "vocal")["resultData"]["jobId"]
    assert gaudio.job(job_id)["resultCode"] == 1104
    assert other.job(job_id)["resultCode"] == 1000


def test_unknown_upload_id_is_1105(gaudio: Gaudio) -> None:
    assert gaudio.create_job("file_nope", "vocal")["resultCode"] == 1105


def test_type_missing_is_1122(gaudio: Gaudio, uploaded: str) -> None:
    assert gaudio.create_job(uploaded, None)["resultCode"] == 1122
    assert gaudio.create_job(uploaded, " , ")["resultCode"] == 1122
    assert gaudio.post(f"/v1/{MODEL}/jobs", {"audioUploadId": uploaded, "type": []}) == {
        "resultCode": 1122,
        "resultData": None,
        "resultMessage": "type is required: comma-separated, any of vocal, drum, bass, "
        "electric_guitar, acoustic_piano",
    }
    # The types as a JSON list of the same words are read too.
    listed = gaudio.post(f"/v1/{MODEL}/jobs", {"audioUploadId": uploaded, "type": ["vocal"]})
    assert listed["resultCode"] == 1000 and listed["resultData"]["jobId"], listed


def test_a_model_not_permitted_is_403_and_an_unknown_path_404(
    gaudio: Gaudio, uploaded: str
) -> None:
    r = gaudio.http.post("/v1/spleeter/jobs", json={"audioUploadId": uploaded, "type": "vocal"})
    assert r.status_code == 403 and r.json() == {
        "error": "forbidden",
        "message": "model 'spleeter' is not permitted; use a GSEP music model, e.g. "
        "gsep_music_hq_v1",
    }
    # Gaudio's dialogue/music/effects and speech models: other products, not music stems;
    # and a music model Gaudio does not have (any `gsep_music_*` name was taken).
    for model, body in (
        ("gsep_dme_mtrack_v1", {"audioUploadId": uploaded}),
        ("gsep_speech_hq_v1", {"audioUploadId": uploaded, "type": "vocal"}),
        ("gsep_music_foo", {"audioUploadId": uploaded, "type": "vocal"}),
        ("gsep_music_", {"audioUploadId": uploaded, "type": "vocal"}),
    ):
        r = gaudio.http.post(f"/v1/{model}/jobs", json=body)
        assert r.status_code == 403, r.text
        assert r.json()["message"].startswith(f"model {model!r} is not permitted; ")
    shq = gaudio.post("/v1/gsep_music_shq_v1/jobs", {"audioUploadId": uploaded, "type": "vocal"})
    assert shq["resultCode"] == 1000, shq
    r = gaudio.http.get("/v1/nothing")
    assert r.status_code == 404 and r.json() == {
        "error": "not_found",
        "message": "no such endpoint: 'v1/nothing'",
    }


def test_the_super_hq_model_takes_type_vocal_alone(gaudio: Gaudio, uploaded: str) -> None:
    """gsep_music_shq_v1 separates vocal and accompaniment (Gaudio Lab's model list: its type
    options are `vocal`): a drum or bass asked of it was queued as if it were the HQ model."""
    for stems in ("drum", "vocal,bass"):
        answer = gaudio.post(
            "/v1/gsep_music_shq_v1/jobs", {"audioUploadId": uploaded, "type": stems}
        )
        word = stems.rsplit(",", 1)[-1]
        assert answer == {
            "resultCode": 1100,
            "resultData": None,
            "resultMessage": f"unknown type {word!r} for gsep_music_shq_v1; use any of vocal",
        }


def test_a_stem_no_installed_model_produces_is_refused_by_name(
    gaudio: Gaudio, uploaded: str
) -> None:
    answer = gaudio.create_job(uploaded, "vocal, electric_guitar")
    assert answer["resultCode"] == 1100
    assert answer["resultMessage"] == (  # in Gaudio's words: its types, not demixer's stems
        "no installed model produces type electric_guitar; this server can produce: vocal, "
        "drum, bass"
    )
    unknown = gaudio.create_job(uploaded, "kazoo")
    assert unknown["resultCode"] == 1100 and "vocal" in unknown["resultMessage"]


def _header_only_wav() -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.zeros((0, 2), np.float32), RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _cut_rf64() -> bytes:
    """The first half of an RF64 (WAV with 64-bit sizes) of 1 s: a broken download."""
    buf = io.BytesIO()
    sf.write(buf, np.zeros((RATE, 2), np.float32), RATE, format="RF64", subtype="PCM_16")
    return buf.getvalue()[: len(buf.getvalue()) // 2]


def _screen_recording_without_sound() -> bytes:
    """A second of MPEG-4 video and no audio track: a screen recording made without sound."""
    with tempfile.TemporaryDirectory() as tmp:
        return encode(Path(tmp) / "screen.mp4", None, RATE, None, video="mpeg4").read_bytes()


@pytest.mark.parametrize(
    ("name", "make", "code", "message"),
    [
        (
            "screen.mp4",  # no sound: Gaudio's "zero-length audio", saying why
            _screen_recording_without_sound,
            1108,
            "'screen.mp4' has a video stream but no audio stream",
        ),
        (
            "notes.mp3",
            lambda: b"this is not audio at all " * 100,
            1107,
            "unsupported format: 'notes.mp3' cannot be read: it is not an audio or video file",
        ),
        (  # refused when probed at upload (it was a job that failed)
            "cut.wav",
            _cut_rf64,
            1107,
            "unsupported format: 'cut.wav' is truncated or damaged: only 0.50 s of audio is "
            "present but the file declares 1.00 s",
        ),
        (
            "empty.wav",
            _header_only_wav,
            1108,
            "'empty.wav' contains no audio samples (zero length)",
        ),
        # Gaudio takes 16-192 kHz. 8 kHz is audio demixer can read, 4 and 384 kHz are refused
        # when probed; all three are Gaudio's "unsupported sample rate", not a bad format.
        ("low.wav", lambda: wav_bytes(0.5, rate=8000), 1014, "8000 Hz is outside 16–192 kHz"),
        ("lower.wav", lambda: wav_bytes(0.5, rate=4000), 1014, "4000 Hz is outside 16–192 kHz"),
        (
            "high.wav",
            lambda: wav_bytes(0.05, rate=384000),
            1014,
            "384000 Hz is outside 16–192 kHz",
        ),
        (
            "surround.wav",
            lambda: wav_bytes(0.5, channels=6),
            1015,
            "6 channels; send mono or stereo",
        ),
    ],
)
def test_unusable_audio_uploads_fine_and_is_refused_at_job_creation_with_its_code(
    gaudio: Gaudio, name: str, make: Any, code: int, message: str
) -> None:
    upload = gaudio.upload(name, make())
    answer = gaudio.create_job(upload, "vocal")
    assert answer["resultCode"] == code, answer
    assert answer["resultMessage"].startswith(message), answer


def test_a_file_over_20_minutes_uploads_fine_and_is_1109_at_job_creation(gaudio: Gaudio) -> None:
    buf = io.BytesIO()  # 21 minutes of silence: 170 kB of FLAC
    sf.write(buf, np.zeros((RATE * 60 * 21, 1), np.float32), RATE, format="FLAC")
    upload = gaudio.upload("long.flac", buf.getvalue())
    answer = gaudio.create_job(upload, "vocal")
    assert answer["resultCode"] == 1109, answer
    assert answer["resultMessage"] == (  # found at upload, answered where Gaudio answers it
        "'long.flac' is longer than this server's limit of 1200 s (1260.0 s or more); "
        "send a shorter file"
    )


def test_bad_file_name_is_1113(gaudio: Gaudio) -> None:
    answer = gaudio.post("/v1/files/upload-multipart/create", {"fileName": "noext", "fileSize": 9})
    assert answer["resultCode"] == 1113


def test_rate_limited_is_429_with_gaudio_body(make_api: Any) -> None:
    api: Api = make_api(rate_limit_per_minute=1)
    url = f"{BASE}/v1/{MODEL}/jobs/req_nope"
    assert api.client.get(url, headers={"x-ga-apikey": api.key}).json()["resultCode"] == 1104
    r = api.client.get(url, headers={"x-ga-apikey": api.key})
    assert r.status_code == 429
    assert r.json()["error"] == "too_many_requests" and r.json()["message"]
    assert "Retry-After" in r.headers


def test_key_info_names_the_key_its_project_its_models_and_the_seconds_left(
    make_api: Any,
) -> None:
    """``GET /v1/key/info``, which Gaudio Lab's own MCP server calls for its
    ``gaudio_get_key_info`` tool (any answer but ``resultCode`` 1000 is an error to it): it
    was a 404."""
    from demixer.service.accounts.keys import create_key as make_key

    api: Api = make_api()
    db = api.services.db
    before = db.clock()
    _, secret = make_key(db, name="mixing desk", monthly_minutes=2)
    after = db.clock()
    r = api.client.get(f"{BASE}/v1/key/info", headers={"x-ga-apikey": secret})
    assert r.status_code == 200, r.text
    body = r.json()
    created = body["resultData"].pop("createdAt")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", created), created
    assert before <= datetime.fromisoformat(created) <= after
    month = after.astimezone(UTC)
    next_month = datetime(month.year + month.month // 12, month.month % 12 + 1, 1, tzinfo=UTC)
    assert body == {
        "resultCode": 1000,
        "resultData": {
            "description": "mixing desk",
            "status": "active",
            "projectName": "mixing desk",
            "permittedModels": ["gsep_music_hq_v1", "gsep_music_shq_v1"],
            "remainingSeconds": 120.0,
            "resetsAt": next_month.strftime("%Y-%m-%dT%H:%M:%S.000000Z"),
        },
    }
    # A key without a name, on an account without an allowance: its account's id, no limit.
    plain = api.client.get(f"{BASE}/v1/key/info", headers={"x-ga-apikey": api.key}).json()
    assert plain["resultData"]["description"] == ""
    assert plain["resultData"]["projectName"] == api.account
    assert (plain["resultData"]["remainingSeconds"], plain["resultData"]["resetsAt"]) == (
        None,
        None,
    )
    # As every Gaudio endpoint: no key 400, a wrong one 401.
    assert api.client.get(f"{BASE}/v1/key/info").status_code == 400
    wrong = api.client.get(f"{BASE}/v1/key/info", headers={"x-ga-apikey": "dmx_nope"})
    assert wrong.status_code == 401


def test_by_default_a_file_is_one_part_whose_url_works_for_24_hours(make_api: Any) -> None:
    """Gaudio documents a server-set chunk size of 1 GiB by default (a file under its 1 GB limit
    is one part) and part URLs valid for 24 hours. demixer gave 5 MiB parts and 1-hour URLs,
    so a client PUTting a whole 6 MiB file to its one URL, or uploading the next morning,
    failed."""
    api: Api = make_api()
    data = wav_bytes(36.0)  # 6.3 MB of 16-bit stereo: two parts at 5 MiB
    created = _create(api, "whole.wav", len(data))
    assert created["chunkSize"] == 1 << 30
    [url] = created["preSignedUrl"]
    query = parse_qs(urlsplit(url).query)
    if "X-Amz-Expires" in query:  # a presigned S3 part URL
        assert query["X-Amz-Expires"] == ["86400"]
    else:
        assert int(query["expires"][0]) - time.time() == pytest.approx(86400, abs=60)
    put = api.send("PUT", url, content=data)
    assert put.status_code == 200, put.text
    etag = put.headers["ETag"].strip('"')
    assert _complete(api, created["uploadId"], [{"awsETag": etag, "partNumber": 1}]) == {
        "resultCode": 1000,
        "resultData": None,
    }
    assert api.get(f"/v1/files/{created['uploadId']}").json()["file_size"] == len(data)


def test_a_file_size_sent_as_a_json_number_with_a_fraction_of_zero_is_taken(make_api: Any) -> None:
    """Gaudio types ``fileSize`` as a Number
    (https://www.gaudiolab.com/docs/developers/guide/api_references/file-upload); a client
    whose JSON writes 1000.0 for 1000 bytes was refused with 1100."""
    api: Api = make_api()
    data = wav_bytes(0.5)
    created = _create(api, "song.wav", float(len(data)))
    put = api.send("PUT", created["preSignedUrl"][0], content=data)
    assert put.status_code == 200, put.text
    part = {"awsETag": put.headers["ETag"].strip('"'), "partNumber": 1}
    assert _complete(api, created["uploadId"], [part])["resultCode"] == 1000
    half = api.client.post(
        f"{BASE}/v1/files/upload-multipart/create",
        json={"fileName": "song.wav", "fileSize": 1000.5},
        headers={"x-ga-apikey": api.key},
    )
    assert half.json()["resultCode"] == 1100  # no such size in bytes


@pytest.mark.backends("sqlite")  # on S3 the bucket refuses it (test_s3_storage.py)
def test_an_expired_part_url_is_refused_403_as_a_bucket_refuses_one(make_api: Any) -> None:
    """A part PUT answers like the presigned URL a client expects: an expired one is HTTP 403,
    not an HTTP 200 envelope without the ETag the client reads next."""
    api: Api = make_api()
    created = _create(api, "late.wav", 1000)
    upload_id, [url] = created["uploadId"], created["preSignedUrl"]
    signed_yesterday = api.services.signer.url(
        "PUT", multipart.part_key(upload_id, 1), 86400, now=time.time() - 86460
    )
    late = urlsplit(url)._replace(query=urlsplit(signed_yesterday).query).geturl()
    r = api.send("PUT", late, content=b"x" * 1000)
    assert r.status_code == 403
    assert r.json() == {
        "error": "forbidden",
        "message": "this part URL has expired; create the upload again",
    }
    assert not api.services.storage.exists(multipart.part_key(upload_id, 1))


def _url_expiry(url: str) -> float:
    """When a download URL stops working (seconds since the epoch): ``/v1/blobs``' ``expires``,
    or a presigned S3 URL's ``X-Amz-Date`` plus ``X-Amz-Expires``."""
    query = parse_qs(urlsplit(url).query)
    if "expires" in query:
        return int(query["expires"][0])
    signed = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return signed.timestamp() + int(query["X-Amz-Expires"][0])


def test_expire_at_is_never_later_than_the_download_urls_expire(make_api: Any) -> None:
    """``expireAt`` was the database's "now" plus the URLs' lifetime, to the microsecond, while
    the URLs are signed by this machine's clock to the second: a client that fetched its
    stems just before ``expireAt`` got a 403 or 410 from URLs that had expired up to a second
    (plus the clocks' difference) before."""
    api: Api = make_api()
    upload_id, parts = _upload_parts(api, wav_bytes(0.5))
    assert _complete(api, upload_id, parts)["resultCode"] == 1000
    headers = {"x-ga-apikey": api.key}
    created = api.client.post(
        f"{BASE}/v1/{MODEL}/jobs",
        json={"audioUploadId": upload_id, "type": "vocal"},
        headers=headers,
    )
    job_id = created.json()["resultData"]["jobId"]
    api.worker_done(job_id, names=("vocal", "others"))
    job = api.client.get(f"{BASE}/v1/{MODEL}/jobs/{job_id}", headers=headers).json()
    answer = job["resultData"]
    expire_at = datetime.fromisoformat(answer["expireAt"].replace("Z", "+00:00"))
    urls = [url for formats in answer["downloadUrl"].values() for url in formats.values()]
    assert len(urls) == 2
    assert expire_at.timestamp() <= min(_url_expiry(url) for url in urls), answer


# --- completions that race (in process, so the race can be set up exactly) -----------------


def _upload_parts(api: Api, data: bytes) -> tuple[str, list[dict[str, Any]]]:
    created = _create(api, "race.wav", len(data))
    chunk, parts = created["chunkSize"], []
    for i, url in enumerate(created["preSignedUrl"]):
        put = api.send("PUT", url, content=data[i * chunk : (i + 1) * chunk])
        assert put.status_code == 200, put.text
        parts.append({"awsETag": put.headers["ETag"].strip('"'), "partNumber": i + 1})
    return created["uploadId"], parts


def test_a_deleted_upload_leaves_none_of_its_parts(make_api: Any) -> None:
    # DELETE removed the file's key only: its parts (and the store's upload id) stayed for
    # good, as did those of an upload never completed that expired.
    api: Api = make_api()
    data = wav_bytes(0.5)
    created = _create(api, "left.wav", len(data))
    upload_id = created["uploadId"]
    assert api.send("PUT", created["preSignedUrl"][0], content=data).status_code == 200
    storage = api.services.storage
    kept = [multipart.part_key(upload_id, 1), f"uploads/{upload_id}/upload-id"]
    assert any(storage.exists(key) for key in kept)  # the part here, the upload id on S3
    assert api.delete(f"/v1/files/{upload_id}").status_code == 204
    assert [key for key in kept if storage.exists(key)] == []
    # On S3 the part went to the bucket's own multipart upload, which keeps (and bills) its
    # parts out of any listing until it is aborted; it was left open, and the part URL, valid
    # for 24 hours, went on taking parts. Now it is aborted: the URL is refused.
    again = api.send("PUT", created["preSignedUrl"][0], content=data)
    assert again.status_code == 404
    if isinstance(storage, S3Storage):
        assert storage._client.list_multipart_uploads(Bucket=storage.bucket).get("Uploads") is None


def _create(api: Api, file_name: str, size: float) -> dict[str, Any]:
    """``upload-multipart/create`` in process: its ``resultData``."""
    r = api.client.post(
        f"{BASE}/v1/files/upload-multipart/create",
        json={"fileName": file_name, "fileSize": size},
        headers={"x-ga-apikey": api.key},
    )
    assert r.status_code == 200 and r.json()["resultCode"] == 1000, r.text
    return dict(r.json()["resultData"])


def _complete(api: Api, upload_id: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
    r = api.client.post(
        f"{BASE}/v1/files/upload-multipart/complete",
        json={"uploadId": upload_id, "parts": parts},
        headers={"x-ga-apikey": api.key},
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


def _completed_while_another_read_it(
    api: Api, monkeypatch: pytest.MonkeyPatch, data: bytes
) -> tuple[str, list[dict[str, Any]]]:
    """Upload ``data`` and complete it; the next completion then reads the upload as it was
    before (pending): it started while the first one was still running."""
    upload_id, parts = _upload_parts(api, data)
    stale = multipart._live_row(api.services, upload_id)
    assert _complete(api, upload_id, parts)["resultCode"] == 1000
    real, calls = multipart._live_row, []

    def live_row(services: Any, upload_id: str, account_id: str | None = None) -> Any:
        calls.append(upload_id)
        return stale if len(calls) == 1 else real(services, upload_id, account_id)

    monkeypatch.setattr(multipart, "_live_row", live_row)
    return upload_id, parts


def test_a_completion_racing_another_answers_as_that_one_does(
    make_api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A client retrying a slow completion: the retry read the upload while it was pending and
    # finds its parts gone (the first call recorded the file, then removed them). It answered
    # 1100 "part 1 was never uploaded" (on S3: "no open multipart upload").
    api: Api = make_api()
    data = wav_bytes(0.5)
    upload_id, parts = _completed_while_another_read_it(api, monkeypatch, data)
    assert _complete(api, upload_id, parts) == {"resultCode": 1000, "resultData": None}
    info = api.get(f"/v1/files/{upload_id}").json()
    assert info["status"] == "uploaded" and info["file_size"] == len(data)
    with api.services.storage.open(f"inputs/{upload_id}") as stored:
        assert stored.read() == data


@pytest.mark.backends("sqlite")  # the API assembles the parts itself only on local storage
def test_a_wrong_completion_racing_a_right_one_leaves_its_file(
    make_api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The wrong one (bad ETags) read the upload pending and still finds the parts: it wrote
    # them over the file the right one had stored, found the ETags wrong and deleted the file.
    api: Api = make_api()
    data = wav_bytes(0.5)
    upload_id, parts = _completed_while_another_read_it(api, monkeypatch, data)
    assert len(parts) == 1  # the part still there, as while the right one ran:
    api.services.storage.put(multipart.part_key(upload_id, 1), io.BytesIO(data))
    wrong = [{**p, "awsETag": "0" * 32} for p in parts]
    assert _complete(api, upload_id, wrong)["resultCode"] == 1000  # the file is complete
    with api.services.storage.open(f"inputs/{upload_id}") as stored:
        assert stored.read() == data
    assert api.get(f"/v1/files/{upload_id}").json()["status"] == "uploaded"
