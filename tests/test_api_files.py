"""Uploads: JSON announcement + signed PUT + probe, multipart, signatures, limits, deletion."""

from __future__ import annotations

import errno
import io
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import event, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from api_support import TESTSERVER, Api, api, bucket_refusal, make_api
from audiofiles import encode, tone
from conftest import Backend
from demixer.api import uploads
from demixer.service.schema import File
from demixer.storage.local import LocalStorage

# The whole module runs on SQLite + local storage and on PostgreSQL + S3 (conftest.py).
pytestmark = pytest.mark.usefixtures("backend")

__all__ = ["api", "make_api"]  # fixtures


def _error(r: object, status: int, code: str) -> dict[str, object]:
    assert r.status_code == status, r.text  # type: ignore[attr-defined]
    body = r.json()["error"]  # type: ignore[attr-defined]
    assert body["code"] == code, body
    assert body["request_id"] == r.headers["x-request-id"]  # type: ignore[attr-defined]
    return dict(body)


def upload_base(api: Api, backend: Backend) -> str:
    """Where the upload URLs of ``api`` point: its own ``/v1/blobs``, or the test bucket."""
    if backend.servers is None:
        return f"{TESTSERVER}/v1/blobs/"
    bucket = urlsplit(api.services.settings.storage_url or "").netloc
    return f"{backend.servers.s3_endpoint}/{bucket}/"


def test_announce_put_probe_and_get(api: Api, backend: Backend) -> None:
    up = api.announce("stereo.flac", "audio/flac")
    assert up["upload_method"] == "PUT"
    # As AudioLasso's upload page shows it: a client reading headers["content-type"] finds it.
    assert up["headers"] == {"content-type": "audio/flac"}
    # On S3 the PUT lands on a staging key; completing moves it out of the URL's reach.
    landing = "staging" if api.direct else "inputs"
    assert up["upload_url"].startswith(f"{upload_base(api, backend)}{landing}/{up['file_id']}?")
    assert up["retention"]["delete_after"] > up["expires_at"]

    r = api.get(f"/v1/files/{up['file_id']}")
    assert r.status_code == 200
    assert r.json()["status"] == "pending" and r.json()["uploaded_at"] is None

    # The signed URL needs no key (on S3 the bucket takes the PUT, then the API is told).
    r = api.finish(up)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "uploaded"
    assert (body["sample_rate"], body["channels"]) == (44100, 2)
    assert abs(body["duration"] - 1.5) < 0.05

    got = api.get(f"/v1/files/{up['file_id']}").json()
    for field in ("file_id", "file_name", "content_type", "file_size", "purpose", "status"):
        assert got[field] == body[field]
    assert got["file_name"] == "stereo.flac" and got["purpose"] == "audio.separate.input"
    assert got["file_size"] == len(up["data"]) and got["uploaded_at"] is not None
    assert api.services.storage.size(f"inputs/{up['file_id']}") == len(up["data"])

    # The same bytes again: the file already has them. (The bucket cannot refuse a second
    # PUT to a presigned URL; completing again answers the file as it was probed.)
    if not api.direct:
        _error(api.put_bytes(up), 409, "FILE_ALREADY_UPLOADED")
    else:
        assert api.put_bytes(up).status_code == 200
        again = api.post(f"/v1/files/{up['file_id']}/complete")
        assert again.status_code == 200 and again.json() == got


def test_every_time_is_written_in_one_form(api: Api) -> None:
    """ISO 8601 in UTC to the microsecond, with a "Z": the upload URL's `expires_at` (on the
    second) came without a fraction while `created_at` had one, so a client parsing one
    fixed form (Swift's ISO8601DateFormatter, strptime) failed on one or the other."""
    up = api.announce("mono.wav", "audio/wav")
    assert api.finish(up).status_code == 200
    got = api.get(f"/v1/files/{up['file_id']}").json()
    times = [up["expires_at"], up["retention"]["delete_after"]]
    times += [got["created_at"], got["uploaded_at"], got["expires_at"]]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", t) for t in times), times


@pytest.mark.backends("pg-s3")  # only there do the bytes land on a staging key first
def test_a_complete_racing_another_answers_the_file(api: Api) -> None:
    # A complete that starts while another has moved the bytes out of staging and is still
    # probing them (or was killed doing so) found no bytes: 409 FILE_NOT_READY, for 6 of 8
    # concurrent completes of one file.
    up = api.announce("stereo.flac")
    assert api.put_bytes(up).status_code == 200
    staging, final = f"staging/{up['file_id']}", f"inputs/{up['file_id']}"
    api.services.storage.copy(staging, final)  # what the other complete has done so far
    api.services.storage.delete_prefix(staging)
    r = api.post(f"/v1/files/{up['file_id']}/complete")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "uploaded" and r.json()["file_size"] == len(up["data"])
    with api.services.storage.open(final) as stored:
        assert stored.read() == up["data"]


@pytest.mark.backends("pg-s3")  # only there do the bytes land on a staging key first
def test_a_job_or_a_read_racing_a_complete_uses_the_file(api: Api) -> None:
    # A submit (or GET of the file) while a complete has moved the bytes out of staging and is
    # still probing them (or was killed doing so): 409 FILE_NOT_READY "PUT its bytes to the
    # upload_url first", for 2 to 3 of 5 submits sent with 10 completes of one file.
    up = api.announce("stereo.flac")
    assert api.put_bytes(up).status_code == 200
    staging, final = f"staging/{up['file_id']}", f"inputs/{up['file_id']}"
    api.services.storage.copy(staging, final)  # what the other complete has done so far
    api.services.storage.delete_prefix(staging)
    r = api.queue_separate(up["file_id"])
    assert r.status_code == 202, r.text
    assert api.get(f"/v1/files/{up['file_id']}").json()["status"] == "uploaded"


# On S3 the bytes go to the bucket, never through the API, and S3 refuses a PUT without
# Content-Length (411 MissingContentLength): nothing to stream there.
@pytest.mark.backends("sqlite")
def test_upload_streams_a_chunked_body(api: Api) -> None:
    up = api.announce("long.wav")
    data: bytes = up["data"]

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(data), 7000):
            yield data[i : i + 7000]

    r = api.finish(up, chunks())
    assert r.status_code == 200, r.text
    assert abs(r.json()["duration"] - 3.0) < 0.05


def test_multipart_upload(api: Api) -> None:
    mp3 = api.files.get("stereo.mp3").path.read_bytes()
    r = api.post("/v1/files", files={"file": ("song.mp3", mp3, "audio/mpeg")})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["status"] == "uploaded" and body["file_name"] == "song.mp3"
    assert body["content_type"] == "audio/mpeg" and body["file_size"] == len(mp3)
    assert body["sample_rate"] == 44100 and body["channels"] == 2
    assert api.get(f"/v1/files/{body['file_id']}").json()["status"] == "uploaded"

    # No content type on the part: guessed from the name.
    r = api.post(
        "/v1/files", files={"file": ("clip.flac", api.files.get("mono.flac").path.read_bytes())}
    )
    assert r.status_code == 201, r.text
    assert r.json()["content_type"] == "audio/flac" and r.json()["channels"] == 1

    r = api.post("/v1/files", files={"other": ("a.wav", b"x")})
    assert _error(r, 400, "INVALID_REQUEST")["param"] == "file"


@pytest.mark.parametrize("name", ["camcorder.MTS", "recording.ts"])
def test_a_video_sent_as_octet_stream_is_not_refused_for_the_type_its_name_guesses(
    api: Api, tmp_path: Path, name: str
) -> None:
    """An MPEG-TS video (a camcorder's .MTS, a TV or screen recorder's .ts) sent as curl sends
    it, application/octet-stream: the server guessed its type from the name, and the system's
    table says a 3D model (.mts) or a Qt translation file (.ts): refused 415 "content type
    'model/vnd.mts' is not audio or video". A guess that is not audio or video is no guess."""
    video = encode(tmp_path / name, tone(1.0, 48000, [440.0, 660.0]), 48000, "aac",
                   video="mpeg4", container_format="mpegts")  # fmt: skip
    files = {"file": (name, video.read_bytes(), "application/octet-stream")}
    r = api.post("/v1/files", files=files)
    assert r.status_code == 201, r.text
    assert (r.json()["content_type"], r.json()["status"]) == (
        "application/octet-stream",
        "uploaded",
    )


def test_a_multipart_file_name_sent_as_dotnet_sends_it_is_the_songs_name(api: Api) -> None:
    """.NET's HttpClient (and PowerShell) send a name that is not ASCII twice: ``filename`` as
    a MIME encoded word, ``filename*`` in RFC 5987's form. The file, and so its stems, were
    called "=?utf-8?B?...?="."""
    wav = api.files.get("stereo.wav").path.read_bytes()
    disposition = (
        'form-data; name=file; filename="=?utf-8?B?QmV5b25jw6kgLSBEw6lqw6AgVnUud2F2?="; '
        "filename*=utf-8''Beyonc%C3%A9%20-%20D%C3%A9j%C3%A0%20Vu.wav"
    )
    body = (
        f"--b0\r\nContent-Disposition: {disposition}\r\nContent-Type: audio/wav\r\n\r\n".encode()
        + wav
        + b"\r\n--b0--\r\n"
    )
    r = api.post(
        "/v1/files", content=body, headers={"Content-Type": "multipart/form-data; boundary=b0"}
    )
    assert r.status_code == 201, r.text
    assert r.json()["file_name"] == "Beyoncé - Déjà Vu.wav"


def test_a_quote_in_a_multipart_file_name_is_a_quote(api: Api) -> None:
    """Browsers, curl and httpx send '"' in a file name as %22: the song and its stems were
    called 'Take %222%22 (live).wav'."""
    wav = api.files.get("stereo.wav").path.read_bytes()
    r = api.post("/v1/files", files={"file": ('Take "2" (live).wav', wav, "audio/wav")})
    assert r.status_code == 201, r.text
    assert r.json()["file_name"] == 'Take "2" (live).wav'


def test_multipart_non_audio_is_422(api: Api) -> None:
    r = api.post(
        "/v1/files", files={"file": ("notes.wav", b"this is text, not audio" * 50, "audio/wav")}
    )
    body = _error(r, 422, "INVALID_AUDIO")
    assert "notes.wav" in str(body["message"])


def test_non_audio_put_fails_the_file(api: Api) -> None:
    junk = b"definitely not audio\n" * 100
    r = api.post(
        "/v1/files",
        json={"file_name": "x.mp3", "content_type": "audio/mpeg", "file_size": len(junk)},
    )
    up = r.json()
    r = api.finish(up, junk)
    body = _error(r, 422, "INVALID_AUDIO")
    assert "x.mp3" in str(body["message"])
    got = api.get(f"/v1/files/{up['file_id']}").json()
    assert got["status"] == "failed"
    assert got["error"]["code"] == "INVALID_AUDIO"
    assert not api.services.storage.exists(f"inputs/{up['file_id']}")


def _racing_put(
    api: Api, monkeypatch: pytest.MonkeyPatch, up: dict[str, Any], late: bytes, first: Any
) -> httpx.Response:
    """PUT ``late`` to ``up``'s URL; ``first`` (another request) runs from start to end once
    this one has found the file waiting for bytes, before they are stored."""
    storage = api.services.storage
    real = storage.put

    def first_then_stored(key: str, source: BinaryIO, **kw: Any) -> tuple[int, str]:
        monkeypatch.setattr(storage, "put", real)
        first()
        return real(key, source, **kw)

    monkeypatch.setattr(storage, "put", first_then_stored)
    return api.put_bytes(up, late)  # type: ignore[no-any-return]


def _first_put(api: Api, up: dict[str, Any]) -> Callable[[], None]:
    """The whole of another PUT of ``up``'s own bytes (it is recorded)."""
    key = f"inputs/{up['file_id']}"
    source = io.BytesIO(up["data"])
    return lambda: (
        uploads.receive_put(  # type: ignore[func-returns-value]
            api.services, key, source, content_type="audio/wav", content_length=len(up["data"])
        )
        and None
    )


# Only the API receives (and may race) PUTs on local storage; S3 takes the last PUT's bytes to
# the staging key, and completing copies what is there.
@pytest.mark.backends("sqlite")
@pytest.mark.parametrize("late", ["other audio", "not audio"])
def test_a_put_racing_another_never_touches_the_bytes_the_file_holds(
    api: Api, monkeypatch: pytest.MonkeyPatch, late: str
) -> None:
    # Two PUTs to one upload URL, the late one's bytes stored before the first one finished:
    # they replaced the recorded file's (a job then separated them, and the result cache
    # served their stems for the first one's audio), or, not audio, were deleted with it.
    up = api.announce()
    data = bytearray(up["data"])
    data[-4000:] = bytes(4000) if late == "other audio" else b"\xff" * 4000
    if late == "not audio":
        data[:64] = b"\xff" * 64
    r = _racing_put(api, monkeypatch, up, bytes(data), _first_put(api, up))
    if late == "other audio":
        _error(r, 409, "FILE_ALREADY_UPLOADED")
    else:
        _error(r, 422, "INVALID_AUDIO")
    got = api.get(f"/v1/files/{up['file_id']}").json()
    assert (got["status"], got["file_size"]) == ("uploaded", len(up["data"]))
    with api.services.storage.open(f"inputs/{up['file_id']}") as stored:
        assert stored.read() == up["data"]
    staging = api.services.settings.data_dir / "storage" / "staging"
    assert staging.is_dir() and list(staging.iterdir()) == []  # each PUT's own key, removed


@pytest.mark.backends("sqlite")
def test_a_delete_while_the_bytes_arrive_leaves_none_of_them(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The DELETE answered 204, the PUT then stored its bytes for good (409; nothing deletes
    # the bytes of a deleted file).
    up = api.announce()

    def delete() -> None:
        uploads.delete_file(api.services, api.account, up["file_id"])

    _error(_racing_put(api, monkeypatch, up, up["data"], delete), 404, "NOT_FOUND")
    root = api.services.settings.data_dir / "storage"
    assert root.is_dir() and [p for p in root.rglob("*") if p.is_file()] == []


@pytest.mark.backends("sqlite")
def test_a_put_whose_record_finds_the_disk_full_stores_nothing_and_may_be_sent_again(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    # The bytes were moved to the file's key before the record's COMMIT failed: the PUT said
    # 507 "nothing was stored", the next read recorded the file uploaded all the same, and the
    # PUT retried as Retry-After invites was 409 FILE_ALREADY_UPLOADED ("create a new file").
    up = api.announce()

    def disk_full(_session: Session) -> None:
        raise OperationalError("COMMIT", {}, sqlite3.OperationalError("database or disk is full"))

    event.listen(Session, "before_commit", disk_full)
    try:
        with caplog.at_level("ERROR", logger="demixer.api"):
            r = api.put_bytes(up)
    finally:
        event.remove(Session, "before_commit", disk_full)
    _error(r, 507, "STORAGE_FULL")
    assert caplog.messages[-1].endswith("; the database's disk is full"), caplog.messages
    assert api.get(f"/v1/files/{up['file_id']}").json()["status"] == "pending"
    r = api.put_bytes(up)
    assert (r.status_code, r.json()["status"]) == (200, "uploaded"), r.text


@pytest.mark.backends("sqlite")
def test_a_put_onto_a_full_disk_is_507_and_the_log_names_the_folder(
    api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The operator's line said only "the server's storage is full": not which disk, the data
    # directory's or the database's, when the two are apart.
    up = api.announce()

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(LocalStorage, "_put", disk_full)
    with caplog.at_level("ERROR", logger="demixer.api"):
        r = api.put_bytes(up)
    _error(r, 507, "STORAGE_FULL")
    assert r.headers["retry-after"] == "60"
    root = api.services.settings.data_dir / "storage"
    assert caplog.messages == [
        f"PUT /v1/blobs/inputs/{up['file_id']} failed: STORAGE_FULL: the server's storage is "
        "full; nothing was stored, retry once space is freed (request "
        f"{r.headers['x-request-id']}); the disk under {root} is full"
    ]
    assert str(root) not in r.text  # the server's own paths are the operator's


# The API's own HMAC-signed /v1/blobs URLs; on S3 the bucket checks its presigned URLs
# (test_s3_storage: test_tampered_or_expired_presigned_url_is_refused_by_the_bucket).
@pytest.mark.backends("sqlite")
def test_bad_signature_is_403_and_expired_is_410(api: Api) -> None:
    up = api.announce()
    parts = urlsplit(up["upload_url"])
    query = parse_qs(parts.query)
    sig = query["sig"][0]
    tampered = sig[:-1] + ("A" if sig[-1] != "A" else "B")
    url = f"{parts.path}?expires={query['expires'][0]}&sig={tampered}"
    _error(api.client.put(url, content=up["data"], headers=up["headers"]), 403, "INVALID_SIGNATURE")
    # A later expiry with the old signature is tampering too.
    url = f"{parts.path}?expires={int(query['expires'][0]) + 1}&sig={sig}"
    _error(api.client.put(url, content=up["data"], headers=up["headers"]), 403, "INVALID_SIGNATURE")
    # A PUT signature does not allow a GET.
    _error(api.client.get(up["upload_url"]), 403, "INVALID_SIGNATURE")

    key = f"inputs/{up['file_id']}"
    old = api.services.signer.url("PUT", key, 60, now=time.time() - 3600)
    _error(api.client.put(old, content=up["data"], headers=up["headers"]), 410, "URL_EXPIRED")

    r = api.client.put(parts.path, content=up["data"], headers=up["headers"])
    _error(r, 400, "INVALID_REQUEST")  # no expires/sig at all


def test_wrong_content_type_and_size(api: Api) -> None:
    up = api.announce()
    data = up["data"]
    r = api.put_bytes(up, headers={"Content-Type": "audio/mpeg"})
    if api.direct:  # the Content-Type is part of the presigned PUT's signature
        assert bucket_refusal(r) == "SignatureDoesNotMatch"
    else:
        _error(r, 415, "CONTENT_TYPE_MISMATCH")
    assert not api.services.storage.exists(f"inputs/{up['file_id']}")
    if api.direct:
        # The announced size is part of the presigned PUT's signature: the bucket refuses
        # any other, so no wrong-sized bytes are ever stored.
        for wrong in (data[:-10], data + b"\0" * 100, data[:1000]):
            assert bucket_refusal(api.put_bytes(up, wrong)) == "SignatureDoesNotMatch"
            assert not api.services.storage.exists(f"staging/{up['file_id']}")
    else:
        _error(api.finish(up, data[:-10]), 400, "SIZE_MISMATCH")
        # Chunked (no Content-Length) through the API: the excess is caught while streaming.
        _error(api.finish(up, iter([data + b"\0" * 100])), 400, "SIZE_MISMATCH")
        assert not api.services.storage.exists(f"inputs/{up['file_id']}")
        _error(api.finish(up, iter([data[:1000]])), 400, "SIZE_MISMATCH")
    # Still pending: the right bytes are accepted afterwards.
    r = api.finish(up)
    assert r.status_code == 200 and r.json()["status"] == "uploaded"


def test_announce_validation(api: Api) -> None:
    ok = {"file_name": "a.wav", "content_type": "audio/wav", "file_size": 10}
    r = api.post("/v1/files", json={**ok, "content_type": "text/plain"})
    assert _error(r, 415, "UNSUPPORTED_MEDIA_TYPE")["param"] == "content_type"
    # Not a media type at all: it was stored, and handed back as the PUT's header to send.
    for odd in ("audio/wav\r\nX-Injected: 1", "audio/", "video/mp4 x"):
        r = api.post("/v1/files", json={**ok, "content_type": odd})
        assert _error(r, 415, "UNSUPPORTED_MEDIA_TYPE")["param"] == "content_type"
    r = api.post("/v1/files", json={**ok, "file_size": 0})
    assert _error(r, 400, "INVALID_REQUEST")["param"] == "file_size"
    r = api.post("/v1/files", json={**ok, "purpose": "fine-tune"})
    assert _error(r, 400, "INVALID_REQUEST")["param"] == "purpose"
    r = api.post(
        "/v1/files",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    _error(r, 400, "INVALID_REQUEST")
    r = api.post("/v1/files", content=b"abc", headers={"Content-Type": "text/plain"})
    _error(r, 415, "UNSUPPORTED_MEDIA_TYPE")
    # A part's content type longer than any real one is refused, not stored (nor a 500 on
    # PostgreSQL, whose column holds 100 characters).
    wav = api.files.get("stereo.wav").path.read_bytes()
    r = api.post("/v1/files", files={"file": ("a.wav", wav, "audio/" + "x" * 200)})
    _error(r, 415, "UNSUPPORTED_MEDIA_TYPE")


def test_too_large(make_api: Callable[..., Api]) -> None:
    """Files this big are most often videos: the refusal counted bytes ("file_size 2147483648
    is over this server's limit of 1073741824 bytes"); it reads the sizes in units and says
    how to send the sound alone, all that is separated."""
    api = make_api(max_upload_bytes=50_000)
    announced = {"file_name": "phone.mov", "content_type": "video/quicktime", "file_size": 80_000}
    r = api.post("/v1/files", json=announced)
    error = _error(r, 413, "FILE_TOO_LARGE")
    assert error["param"] == "file_size"
    assert error["message"] == (
        "file_size 80000 (78.1 KiB) is over this server's limit of 48.8 KiB (50000 bytes); for "
        "a video, send its sound alone, a small part of its size (e.g. `ffmpeg -i video.mp4 "
        "-vn -c:a copy sound.m4a`): the sound is all that is separated"
    )
    big = api.files.get("long.wav").path.read_bytes()
    assert len(big) > 50_000
    r = api.post("/v1/files", files={"file": ("long.wav", big, "audio/wav")})
    _error(r, 413, "FILE_TOO_LARGE")
    # A PUT announcing more than the server takes (its Content-Length) is refused up front.
    up = api.post(
        "/v1/files", json={"file_name": "a.wav", "content_type": "audio/wav", "file_size": 40_000}
    ).json()
    up["data"] = big
    if api.direct:  # the bucket takes exactly the announced size (signed), no more
        assert bucket_refusal(api.put_bytes(up)) == "SignatureDoesNotMatch"
        assert not api.services.storage.exists(f"staging/{up['file_id']}")
    else:
        _error(api.put_bytes(up), 413, "FILE_TOO_LARGE")


def test_delete_and_other_accounts(api: Api) -> None:
    file_id = api.upload()
    # Another account's id is indistinguishable from an unknown one.
    _error(api.get(f"/v1/files/{file_id}", key=api.other_key), 404, "NOT_FOUND")
    _error(api.delete(f"/v1/files/{file_id}", key=api.other_key), 404, "NOT_FOUND")
    _error(api.get("/v1/files/file_nope"), 404, "NOT_FOUND")

    r = api.delete(f"/v1/files/{file_id}")
    assert r.status_code == 204
    assert not api.services.storage.exists(f"inputs/{file_id}")
    _error(api.get(f"/v1/files/{file_id}"), 404, "NOT_FOUND")
    _error(api.delete(f"/v1/files/{file_id}"), 404, "NOT_FOUND")


def test_a_delete_racing_another_answers_as_a_later_one(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two DELETEs at once: the one that lost answered 409 FILE_ALREADY_UPLOADED "already gone".
    file_id = api.upload()
    storage = api.services.storage
    real = storage.delete_prefix

    def other_delete_first(prefix: str) -> int:
        monkeypatch.setattr(storage, "delete_prefix", real)
        uploads.delete_file(api.services, api.account, file_id)  # the other one ends first
        return real(prefix)

    monkeypatch.setattr(storage, "delete_prefix", other_delete_first)
    _error(api.delete(f"/v1/files/{file_id}"), 404, "NOT_FOUND")
    assert not storage.exists(f"inputs/{file_id}")


def test_an_uploads_name_is_listed_without_control_or_bidi_characters(api: Api) -> None:
    """A JSON ``file_name`` was stored and listed as sent (``GET /v1/files/{id}``, the jobs
    made from it in the web page's history): a bidi override (U+202E) showed
    "evil<U+202E>gnp.wav" as "evilvaw.png", a newline broke a line, while the stems were named
    without them. An ordinary name, spaces and joiners included, is kept byte for byte."""
    ordinary = "米津玄師\u3000Lemon (Live) \U0001f468\u200d\U0001f469 آهنگ\u200cها.wav"
    for sent, listed in (("evil\u202egnp\r\n.wav", "evilgnp.wav"), (ordinary, ordinary)):
        up = api.announce(as_name=sent)
        assert api.finish(up).status_code == 200
        assert api.get(f"/v1/files/{up['file_id']}").json()["file_name"] == listed
        job = api.queue_separate(up["file_id"]).json()
        status = api.get(f"/v1/queue/requests/{job['request_id']}/status").json()
        assert status["file_name"] == listed


def _listed(api: Api, url: str = "/v1/files", key: str | None = None) -> list[str]:
    r = api.get(url, key=key)
    assert r.status_code == 200, r.text
    assert r.json()["object"] == "list"
    return [item["file_id"] for item in r.json()["data"]]


def test_the_owner_lists_their_uploads_a_page_at_a_time_and_no_one_elses(api: Api) -> None:
    """There was no ``GET /v1/files``: an upload whose id was lost stayed until it expired
    (72 h) and its owner could not delete it."""
    ids = [api.upload() for _ in range(3)]
    seen: list[str] = []
    cursor = None
    for _ in range(4):
        url = "/v1/files?limit=1" + (f"&cursor={cursor}" if cursor else "")
        page = api.get(url).json()
        assert len(page["data"]) == 1
        seen += [item["file_id"] for item in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))  # newest first, each once, in three pages
    # Each item is the file as GET /v1/files/{id} answers it.
    assert api.get("/v1/files").json()["data"][0] == api.get(f"/v1/files/{ids[-1]}").json()

    # Another account sees none of them, and its own upload is not in the owner's list.
    assert _listed(api, key=api.other_key) == []
    theirs = api.post(
        "/v1/files",
        key=api.other_key,
        json={"file_name": "theirs.wav", "content_type": "audio/wav", "file_size": 10},
    ).json()["file_id"]
    assert _listed(api, key=api.other_key) == [theirs]
    assert theirs not in _listed(api)


def test_deleted_expired_and_request_owned_uploads_are_not_listed(api: Api) -> None:
    kept, deleted, expired = api.upload(), api.upload(), api.upload()
    pending = api.announce()["file_id"]
    assert api.delete(f"/v1/files/{deleted}").status_code == 204
    with api.services.db.write() as s:  # past its retention, not swept yet
        s.execute(
            update(File)
            .where(File.id == expired)
            .values(expires_at=api.services.db.clock() - timedelta(seconds=1))
        )
    assert _listed(api) == [pending, kept]
    assert _listed(api, "/v1/files?status=uploaded") == [kept]
    assert _listed(api, "/v1/files?status=pending") == [pending]
    # A MusicGPT extraction's audio_file is its request's alone: no answer names its id.
    song = api.files.get("stereo.wav").path
    r = api.client.post(
        "/api/public/v1/Extraction",
        headers={"Authorization": api.key},
        data={"stems": '["vocals"]'},
        files={"audio_file": ("song.wav", song.read_bytes(), "audio/wav")},
    )
    assert r.status_code == 200, r.text
    assert _listed(api) == [pending, kept]


def test_a_listing_refuses_what_it_cannot_read(api: Api) -> None:
    for query, param in (
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("cursor=%25%25%25", "cursor"),
        ("status=deleted", "status"),
    ):
        assert _error(api.get(f"/v1/files?{query}"), 400, "INVALID_REQUEST")["param"] == param
    _error(api.client.get("/v1/files"), 401, "UNAUTHENTICATED")
    _error(api.get("/v1/files", key=api.key_with("files:write")), 403, "PERMISSION_DENIED")
