"""S3 storage against a real S3-compatible server (`rclone serve s3`), no mocks.

The Storage contract on S3, presigned downloads and uploads that never pass through the API,
``POST /v1/files/{id}/complete``, Gaudio's chunked upload as a real S3 multipart upload, and an
outage answered 503 ``STORAGE_UNAVAILABLE``.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from unittest.mock import patch
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import numpy as np
import pytest
import soundfile as sf

from api_support import Api, bucket_refusal, make_api, signed_an_hour_ago
from demixer import Client
from demixer.client import Result
from demixer.server.compose import build_services
from demixer.service.accounts.keys import create_key, new_id
from demixer.service.jobs.contract import JobParams
from demixer.service.schema import Job
from demixer.service.worker import Worker
from demixer.settings import Settings
from demixer.storage import BlobNotFound, s3
from demixer.storage.s3 import S3Storage
from servers import Servers
from worker_support import running, wait_until

__all__ = ["make_api"]

MiB = 1 << 20


@pytest.fixture(scope="module")
def scale_servers(own_scale_servers: Servers) -> Servers:
    """This module stops and restarts its servers: never the ones other test processes use."""
    return own_scale_servers


@pytest.fixture
def bucket(scale_servers: Servers, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket's storage URL, with the server's credentials in the environment."""
    for name, value in scale_servers.s3_env().items():
        monkeypatch.setenv(name, value)
    return scale_servers.create_bucket()


@pytest.fixture
def store(bucket: str) -> S3Storage:
    return S3Storage.from_url(bucket)


@pytest.fixture
def s3_api(make_api: Callable[..., Api], bucket: str) -> Api:
    # A chunk setting under S3's 5 MiB minimum part: the Gaudio router must raise it.
    return make_api(storage_url=bucket, gaudio_chunk_bytes=64 * 1024)


def _noise_wav(mib: float) -> bytes:
    """A 16-bit stereo 44.1 kHz WAV of noise and a 440 Hz tone, about ``mib`` MiB."""
    rate = 44100
    frames = int(mib * MiB / 4)
    t = np.arange(frames) / rate
    rng = np.random.default_rng(7)
    tone = 0.3 * np.sin(2 * np.pi * 440 * t)
    audio = np.stack([tone, tone], axis=1) + 0.05 * rng.standard_normal((frames, 2))
    out = io.BytesIO()
    sf.write(out, audio.astype(np.float32), rate, subtype="PCM_16", format="WAV")
    return out.getvalue()


# --- the Storage contract -------------------------------------------------------------------


@pytest.mark.parametrize("size", [1000, 9 * MiB + 123])  # one PUT, and a multipart upload
def test_put_stores_bytes_with_their_sha256(store: S3Storage, size: int) -> None:
    data = os.urandom(size)
    stored, sha = store.put("inputs/a", io.BytesIO(data))
    assert (stored, sha) == (size, hashlib.sha256(data).hexdigest())
    assert store.exists("inputs/a") and store.size("inputs/a") == size
    with store.open("inputs/a") as fh:
        assert fh.read() == data


@pytest.mark.parametrize("size", [1000, 9 * MiB])
def test_put_over_the_cap_stores_nothing(store: S3Storage, size: int) -> None:
    with pytest.raises(ValueError):
        store.put("inputs/big", io.BytesIO(os.urandom(size)), max_bytes=size - 1)
    assert not store.exists("inputs/big")


def test_a_failing_source_leaves_nothing(store: S3Storage) -> None:
    class Broken(io.RawIOBase):
        sent = 0

        def read(self, size: int = -1) -> bytes:
            self.sent += 1
            if self.sent > 3:
                raise OSError("client went away")
            return os.urandom(4 * MiB)

    with pytest.raises(OSError):
        store.put("inputs/broken", Broken())  # type: ignore[arg-type]
    assert not store.exists("inputs/broken")


def test_missing_blobs_are_blob_not_found(store: S3Storage) -> None:
    assert not store.exists("inputs/none")
    with pytest.raises(BlobNotFound):
        store.size("inputs/none")
    with pytest.raises(BlobNotFound):
        store.open("inputs/none")
    with pytest.raises(BlobNotFound), store.local_path("inputs/none"):
        pass
    with pytest.raises(BlobNotFound):
        store.copy("inputs/none", "inputs/other")


def test_delete_prefix_copy_and_local_path(store: S3Storage, tmp_path: Any) -> None:
    for key in ("inputs/file_1", "inputs/file_10", "outputs/j/a/x.wav", "outputs/j/b/y.wav"):
        store.put(key, io.BytesIO(key.encode()))
    assert store.delete_prefix("inputs/file_1") == 1  # not its sibling file_10
    assert store.exists("inputs/file_10")
    assert store.copy("inputs/file_10", "outputs/k/copy") == len(b"inputs/file_10")
    assert store.delete_prefix("outputs/j/") == 2
    assert not store.exists("outputs/j/a/x.wav") and store.exists("outputs/k/copy")
    with store.local_path("outputs/k/copy") as path:
        assert path.read_bytes() == b"inputs/file_10"
        kept = path
    assert not kept.exists()  # the temporary copy is gone
    src = tmp_path / "f.bin"
    src.write_bytes(b"x" * 12345)
    assert store.put_file("outputs/k/f.bin", src) == 12345
    assert store.size("outputs/k/f.bin") == 12345
    with store.open("outputs/k/copy", 7) as tail:  # a download's byte range
        assert tail.read() == b"file_10"


def test_copy_of_a_blob_larger_than_a_part(store: S3Storage) -> None:
    """A completed upload is copied from staging to its own key: larger than one 8 MiB part it
    is still one server-side copy (a multipart copy failed on rclone's S3 with a 500)."""
    data = os.urandom(9 * MiB)
    store.put("staging/file_big", io.BytesIO(data))
    assert store.copy("staging/file_big", "inputs/file_big") == len(data)
    with store.open("inputs/file_big") as fh:
        assert hashlib.sha256(fh.read()).digest() == hashlib.sha256(data).digest()


def test_a_prefix_keeps_deployments_apart(bucket: str) -> None:
    a = S3Storage.from_url(bucket.replace("?", "/one?"))
    b = S3Storage.from_url(bucket.replace("?", "/two?"))
    a.put("inputs/x", io.BytesIO(b"a"))
    assert not b.exists("inputs/x")
    assert b.delete_prefix("inputs/") == 0 and a.exists("inputs/x")


def test_a_listing_reads_every_page_and_only_its_own_deployments_keys(
    bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What ``purge --orphans`` lists: every page of the bucket's answer (1000 keys each on
    S3), under this deployment's prefix alone, never a sibling starting with the same letters."""
    monkeypatch.setattr(s3, "_LIST_PAGE", 2)
    a = S3Storage.from_url(bucket.replace("?", "/one?"))
    b = S3Storage.from_url(bucket.replace("?", "/two?"))
    keys = [f"outputs/req_{i}/attempt-1/vocals.wav" for i in range(5)]
    for key in (*keys, "outputs-old/x"):
        a.put(key, io.BytesIO(b"abc"))
    b.put("outputs/req_b/vocals.wav", io.BytesIO(b"b"))
    pages: list[object] = []
    a._client.meta.events.register("before-call.s3.ListObjectsV2", lambda **kw: pages.append(1))
    listed = list(a.blobs("outputs"))
    assert [(blob.key, blob.size) for blob in listed] == [(key, 3) for key in keys]
    assert len(pages) == 3  # six keys start with "outputs", two a page
    assert [blob.key for blob in b.blobs("outputs/")] == ["outputs/req_b/vocals.wav"]


# --- presigned URLs through the API ---------------------------------------------------------


def _announce(api: Api, data: bytes, name: str = "song.wav") -> dict[str, Any]:
    r = api.post(
        "/v1/files",
        json={"file_name": name, "content_type": "audio/wav", "file_size": len(data)},
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_tampered_or_expired_presigned_url_is_refused_by_the_bucket(s3_api: Api) -> None:
    api = s3_api  # local storage has no presigned URLs: see test_api_files' signature tests
    up = api.announce()
    key = f"inputs/{up['file_id']}"
    parts = urlsplit(up["upload_url"])
    query = parse_qs(parts.query)
    sig = query["X-Amz-Signature"][0]

    def with_query(**changed: str) -> str:
        fields = {name: values[0] for name, values in query.items()} | changed
        return parts._replace(query=urlencode(fields)).geturl()

    tampered = sig[:-1] + ("0" if sig[-1] != "0" else "1")
    r = api.put_bytes(up, url=with_query(**{"X-Amz-Signature": tampered}))
    assert bucket_refusal(r) == "SignatureDoesNotMatch"
    # A longer validity with the old signature is tampering too.
    longer = str(int(query["X-Amz-Expires"][0]) + 60)
    r = api.put_bytes(up, url=with_query(**{"X-Amz-Expires": longer}))
    assert bucket_refusal(r) == "SignatureDoesNotMatch"
    # A PUT signature does not allow a GET; no signature at all is anonymous and refused.
    assert bucket_refusal(api.fetch(up["upload_url"])) == "AccessDenied"
    assert bucket_refusal(api.put_bytes(up, url=parts._replace(query="").geturl())) == (
        "UnsupportedAlgorithm"
    )
    assert not api.services.storage.exists(key)

    with signed_an_hour_ago():
        short = api.services.links.upload_url(key, 60, content_type="audio/wav")
    assert bucket_refusal(api.put_bytes(up, url=short)) == "AccessDenied"
    assert not api.services.storage.exists(key)
    # The genuine URL still works.
    assert api.finish(up).json()["status"] == "uploaded"


def test_announce_put_to_the_bucket_complete(s3_api: Api, scale_servers: Servers) -> None:
    data = s3_api.files.get("stereo.wav").path.read_bytes()
    up = _announce(s3_api, data)
    assert up["upload_url"].startswith(scale_servers.s3_endpoint)  # straight to the bucket
    early = s3_api.post(f"/v1/files/{up['file_id']}/complete")
    assert early.status_code == 409, early.text
    assert early.json()["error"]["code"] == "FILE_NOT_READY"
    assert "no bytes uploaded yet" in early.json()["error"]["message"]
    put = httpx.put(up["upload_url"], content=data, headers=up["headers"])
    assert put.status_code == 200, put.text
    done = s3_api.post(f"/v1/files/{up['file_id']}/complete")
    assert done.status_code == 200, done.text
    info = done.json()
    assert info["status"] == "uploaded" and info["file_size"] == len(data)
    assert info["duration"] and info["channels"] == 2
    again = s3_api.post(f"/v1/files/{up['file_id']}/complete")  # idempotent
    assert again.status_code == 200 and again.json() == info
    r = s3_api.queue_separate(up["file_id"])
    assert r.status_code == 202, r.text


def test_a_pending_file_is_finished_when_read_or_used(s3_api: Api) -> None:
    data = s3_api.files.get("stereo.wav").path.read_bytes()
    read, used = _announce(s3_api, data), _announce(s3_api, data)
    for up in (read, used):
        assert httpx.put(up["upload_url"], content=data, headers=up["headers"]).status_code == 200
    assert s3_api.get(f"/v1/files/{read['file_id']}").json()["status"] == "uploaded"
    r = s3_api.queue_separate(used["file_id"])
    assert r.status_code == 202, r.text


def test_a_wrong_sized_upload_is_refused_by_the_bucket(s3_api: Api) -> None:
    data = s3_api.files.get("stereo.wav").path.read_bytes()
    up = _announce(s3_api, data)
    short = httpx.put(up["upload_url"], content=data[:-10], headers=up["headers"])
    assert short.status_code == 403 and b"SignatureDoesNotMatch" in short.content
    r = s3_api.post(f"/v1/files/{up['file_id']}/complete")
    assert r.status_code == 409 and r.json()["error"]["code"] == "FILE_NOT_READY", r.text


def test_bytes_put_again_after_completion_never_reach_the_file(s3_api: Api) -> None:
    """The PUT URL stays valid for its TTL; completing moved the bytes out of its reach, so
    what was checked and probed is what every job reads."""
    data = s3_api.files.get("stereo.wav").path.read_bytes()
    up = _announce(s3_api, data)
    assert httpx.put(up["upload_url"], content=data, headers=up["headers"]).status_code == 200
    done = s3_api.post(f"/v1/files/{up['file_id']}/complete").json()
    assert done["status"] == "uploaded"
    noise = bytes(len(data))  # same size, not audio
    assert httpx.put(up["upload_url"], content=noise, headers=up["headers"]).status_code == 200
    with s3_api.services.storage.open(f"inputs/{up['file_id']}") as fh:
        assert fh.read() == data
    again = s3_api.post(f"/v1/files/{up['file_id']}/complete").json()
    assert again == done
    # Deleting the file removes the stray bytes too.
    assert s3_api.delete(f"/v1/files/{up['file_id']}").status_code == 204
    assert not s3_api.services.storage.exists(f"staging/{up['file_id']}")


def test_a_presigned_result_url_never_outlives_the_result(s3_api: Api) -> None:
    file_id = _uploaded(s3_api)
    job_id = s3_api.queue_separate(file_id).json()["request_id"]
    s3_api.worker_done(job_id)
    with s3_api.services.db.write() as s:  # the result expires in 30 s (retention, moved)
        job = s.get(Job, job_id)
        assert job is not None
        job.expires_at = s3_api.services.db.clock() + timedelta(seconds=30)
    url = s3_api.get(f"/v1/queue/requests/{job_id}/result").json()["data"]["target"]["url"]
    expires = int(parse_qs(urlsplit(url).query)["X-Amz-Expires"][0])
    assert 25 <= expires <= 30


def test_presigned_download_of_a_stem(s3_api: Api, scale_servers: Servers) -> None:
    file_id = _uploaded(s3_api)
    r = s3_api.queue_separate(file_id)
    assert r.status_code == 202, r.text
    job_id = r.json()["request_id"]
    s3_api.worker_done(job_id)
    result = s3_api.get(f"/v1/queue/requests/{job_id}/result")
    assert result.status_code == 200, result.text
    target = result.json()["data"]["target"]
    assert target["url"].startswith(scale_servers.s3_endpoint)
    got = httpx.get(target["url"])
    assert got.status_code == 200, got.text
    assert got.headers["content-type"] == "audio/wav"
    assert 'filename="song_target.wav"' in got.headers["content-disposition"]
    assert got.headers["cache-control"] == "private"  # as the API's own downloads
    assert got.content == s3_api.files.get("mono.wav").path.read_bytes()


class _CutsOnce(httpx.BaseTransport):
    """A flaky link to the bucket: the first download's connection drops after 100 kB."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.asked: list[str | None] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        self.asked.append(request.headers.get("range"))
        if len(self.asked) > 1:
            return response
        stream = response.stream
        assert isinstance(stream, httpx.SyncByteStream)

        def cut() -> Iterator[bytes]:
            got = 0
            for chunk in stream:
                yield chunk[: 100_000 - got]
                got += len(chunk)
                if got >= 100_000:
                    raise httpx.ReadError("[Errno 104] Connection reset by peer")

        return httpx.Response(response.status_code, headers=response.headers, content=cut())

    def close(self) -> None:
        self.inner.close()


def test_a_stem_download_cut_mid_file_resumes_from_the_bucket(
    store: S3Storage, tmp_path: Any
) -> None:
    """The client resumes a cut download with ``Range``; the bucket (rclone) answers the rest
    as a 200 with its Content-Range, and the stem must come whole, not fail as short."""
    body = os.urandom(300_000)
    store.put("outputs/req_1/attempt-1/vocals.wav", io.BytesIO(body))
    url = store.presign_get(
        "outputs/req_1/attempt-1/vocals.wav", 600, content_type="audio/wav", file_name="v.wav"
    )
    output = {"url": url, "file_name": "song_vocals.wav", "content_type": "audio/wav",
              "size": len(body)}  # fmt: skip
    result = Result.from_json(
        {"request_id": "req_1", "model": "audio/stems", "data": {"vocals": output}}
    )
    link = _CutsOnce()
    with patch("time.sleep", lambda _s: None), Client("http://api.test", "k", transport=link) as c:
        paths = c.download(result, tmp_path)
    assert paths["vocals"].read_bytes() == body
    assert link.asked == [None, "bytes=100000-"]


def _uploaded(api: Api) -> str:
    data = api.files.get("stereo.wav").path.read_bytes()
    up = _announce(api, data)
    assert httpx.put(up["upload_url"], content=data, headers=up["headers"]).status_code == 200
    done = api.post(f"/v1/files/{up['file_id']}/complete")
    assert done.status_code == 200, done.text
    return str(up["file_id"])


# --- Gaudio's chunked upload as an S3 multipart upload ----------------------------------------


def _gaudio(api: Api, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = api.client.post(f"/developers/api{path}", json=body, headers={"x-ga-apikey": api.key})
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_gaudio_multipart_through_s3_out_of_order(s3_api: Api, scale_servers: Servers) -> None:
    data = _noise_wav(11)
    created = _gaudio(
        s3_api, "/v1/files/upload-multipart/create", {"fileName": "big.wav", "fileSize": len(data)}
    )
    assert created["resultCode"] == 1000, created
    info = created["resultData"]
    chunk, urls = info["chunkSize"], info["preSignedUrl"]
    assert chunk >= 5 * MiB  # raised from the 64 KiB setting
    assert len(urls) == math.ceil(len(data) / chunk) == 3
    assert all(u.startswith(scale_servers.s3_endpoint) for u in urls)
    etags: dict[int, str] = {}
    for i in (2, 0, 1):
        put = httpx.put(urls[i], content=data[i * chunk : (i + 1) * chunk], timeout=60)
        assert put.status_code == 200, put.text
        etags[i + 1] = put.headers["ETag"].strip('"')
    upload_id = info["uploadId"]
    parts = [{"partNumber": n, "awsETag": etags[n]} for n in (3, 1, 2)]  # listed out of order
    done = _gaudio(
        s3_api, "/v1/files/upload-multipart/complete", {"uploadId": upload_id, "parts": parts}
    )
    assert done["resultCode"] == 1000, done
    row = s3_api.get(f"/v1/files/{upload_id}").json()
    assert row["status"] == "uploaded" and row["file_size"] == len(data)
    with s3_api.services.storage.open(f"inputs/{upload_id}") as fh:
        assert hashlib.sha256(fh.read()).digest() == hashlib.sha256(data).digest()
    assert not s3_api.services.storage.exists(f"uploads/{upload_id}/upload-id")


def test_gaudio_wrong_etag_on_s3(s3_api: Api) -> None:
    data = _noise_wav(0.5)
    created = _gaudio(
        s3_api, "/v1/files/upload-multipart/create", {"fileName": "a.wav", "fileSize": len(data)}
    )["resultData"]
    assert httpx.put(created["preSignedUrl"][0], content=data).status_code == 200
    wrong = [{"partNumber": 1, "awsETag": "0" * 32}]
    bad = _gaudio(
        s3_api,
        "/v1/files/upload-multipart/complete",
        {"uploadId": created["uploadId"], "parts": wrong},
    )
    assert bad["resultCode"] == 1100 and "awsETag" in bad["resultMessage"], bad


# --- an outage ----------------------------------------------------------------------------------


@pytest.fixture
def outage(scale_servers: Servers) -> Iterator[None]:
    scale_servers.stop_s3()
    try:
        yield
    finally:
        scale_servers.start_s3()


def test_uploads_answer_503_while_s3_is_down(s3_api: Api, outage: None) -> None:
    data = s3_api.files.get("stereo.wav").path.read_bytes()
    r = s3_api.post("/v1/files", files={"file": ("song.wav", data, "audio/wav")})
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "STORAGE_UNAVAILABLE"
    assert r.json()["error"]["message"] == "object storage is unavailable; retry shortly"
    assert int(r.headers["retry-after"]) > 0
    up = _announce(s3_api, data)  # presigning needs no connection
    r = s3_api.post(f"/v1/files/{up['file_id']}/complete")
    assert r.status_code == 503 and r.json()["error"]["code"] == "STORAGE_UNAVAILABLE"
    r = s3_api.client.post(
        "/developers/api/v1/files/upload-multipart/create",
        json={"fileName": "a.wav", "fileSize": 10 * MiB},
        headers={"x-ga-apikey": s3_api.key},
    )
    assert r.status_code == 503 and "retry-after" in r.headers, r.text


def test_a_bucket_that_refuses_the_server_answers_503_naming_why_not_500(
    s3_api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bucket that is not there, wrong credentials or none: the operator's fault, said in
    words (it was a 500 "internal server error" with a boto traceback in the log)."""
    data = s3_api.files.get("stereo.wav").path.read_bytes()
    bucket = s3_api.services.settings.storage
    cases = {
        "the bucket does not exist (NoSuchBucket)": S3Storage.from_url(
            bucket.replace("s3://", "s3://no-such-", 1)
        )
    }
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    cases[
        "the bucket refused access (SignatureDoesNotMatch): check the credentials and their "
        "rights on it"
    ] = S3Storage.from_url(bucket)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance role to look for
    cases[
        "no credentials for the bucket: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or a "
        "profile or a role)"
    ] = S3Storage.from_url(bucket)
    for message, refusing in cases.items():
        s3_api.services.storage = refusing
        r = s3_api.post("/v1/files", files={"file": ("song.wav", data, "audio/wav")})
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "STORAGE_UNAVAILABLE"
        assert r.json()["error"]["message"] == message


@pytest.fixture
def full_minio(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A bucket whose S3 server is a MinIO that has reached its free-space threshold: every
    write is answered as MinIO answers it then (507 ``XMinioStorageFull``; its api-errors.go).
    A stand-in: rclone, the suite's S3 server, answers a full disk only a 500 InternalError."""
    body = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>XMinioStorageFull</Code>'
        b"<Message>Storage backend has reached its minimum free drive threshold. Please "
        b"delete a few objects to proceed.</Message></Error>"
    )

    class Full(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self.send_response(507)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_PUT = do_POST = do_GET = do_HEAD = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Full)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "minio")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "minio-secret")
    try:
        yield f"s3://full?endpoint=http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_full_minio_bucket_is_507_storage_full_not_an_outage(
    make_api: Callable[..., Api], full_minio: str
) -> None:
    """MinIO's own word for a full disk was read as any 5xx, an outage: 503
    STORAGE_UNAVAILABLE "retry shortly" (Retry-After: 5), and a worker held each job's attempt
    for five minutes of retries."""
    api = make_api(storage_url=full_minio)
    data = api.files.get("stereo.wav").path.read_bytes()
    r = api.post("/v1/files", files={"file": ("song.wav", data, "audio/wav")})
    assert r.status_code == 507, r.text
    assert r.json()["error"]["code"] == "STORAGE_FULL"
    assert r.headers["retry-after"] == "60"


def test_a_worker_whose_bucket_is_full_says_so_and_not_that_its_disk_is(
    tmp_path: Any, full_minio: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The pause after a STORAGE_FULL attempt named the worker's own data directory, whatever
    was full: here the bucket, which MinIO's 507 now says."""
    settings = Settings(data_dir=tmp_path / "data", storage_url=full_minio, poll_seconds=0.1,
                        heartbeat_seconds=0.3, lease_seconds=2.0)  # fmt: skip
    services = build_services(settings)
    services.db.create_all()
    account, _ = create_key(services.db)
    params = JobParams.from_row(
        {
            "input": {"file_id": "file_a", "storage_key": "inputs/file_a", "file_name": "a.wav"},
            "stems": ["vocals"],
            "output_format": "wav",
            "spans": None,
            "names": {"vocals": "vocals", "residual": "instrumental"},
        }
    )
    with services.db.write() as s:
        services.queue.submit(s, job_id=new_id("job"), account_id=account, params=params,
                              queue_model="audio/stems", engine_model="spleeter-2stems",
                              max_attempts=1)  # fmt: skip
    paused = "this worker claims no job"
    with caplog.at_level("WARNING", logger="demixer.worker"), running(Worker(services)):
        wait_until(lambda: any(paused in m for m in caplog.messages), what="the pause")
    line = next(m for m in caplog.messages if paused in m)
    assert line.split(": ", 1)[1] == (
        "object storage is full: this worker claims no job for 2 s, leaving them to workers "
        "with room"
    )


def test_the_web_page_may_fetch_stems_from_the_bucket(s3_api: Api, scale_servers: Servers) -> None:
    """The page decodes stems fetched from their (presigned) URLs: its Content-Security-Policy
    must allow the bucket's origin, and nothing else new."""
    policy = s3_api.client.get("/").headers["content-security-policy"]
    connect = next(p for p in policy.split(";") if p.strip().startswith("connect-src"))
    assert connect.split() == [
        "connect-src",
        "'self'",
        "http://testserver",
        scale_servers.s3_endpoint,
    ]
