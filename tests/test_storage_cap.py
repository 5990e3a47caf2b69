"""The cap on the bytes one account's uploads hold (``DEMIXER_MAX_ACCOUNT_STORAGE_BYTES``,
``service/accounts/storage.py``): without it any API key could fill the server's disk with
1 GiB uploads kept 72 h. Past it an upload is refused before a byte is stored, in each
protocol's own words; parallel announcements cannot pass it together; deleting a file or its
expiry makes room at once; ``GET /v1/usage`` shows where the account stands."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from api_support import Api, make_api
from conftest import Backend, downgrade
from demixer.api import forms
from demixer.client import Usage
from demixer.errors import InvalidRequest
from demixer.service.accounts.keys import create_key
from demixer.service.accounts.quota import set_storage_cap
from demixer.service.accounts.storage import StorageUse, storage_use
from demixer.service.db import Database
from demixer.service.migrate import migrate
from demixer.service.schema import File

# The whole module runs on SQLite + local storage and on PostgreSQL + S3 (conftest.py).
pytestmark = pytest.mark.usefixtures("backend")

__all__ = ["make_api"]  # fixtures

UNLIMITED = {"rate_limit_per_minute": 0, "max_concurrent_jobs": 0}
SMALL = {"file_name": "a.wav", "content_type": "audio/wav", "file_size": 1}


def _capped(make_api: Callable[..., Api], files: int) -> tuple[Api, int]:
    """An app whose accounts may hold ``files`` uploads of stereo.wav; and that file's size."""
    api = make_api(**UNLIMITED)
    size = api.files.get("stereo.wav").path.stat().st_size
    api.services.settings.max_account_storage_bytes = files * size
    return api, size


def _rows(api: Api) -> int:
    with api.services.db.read() as s:
        return int(s.execute(select(func.count()).select_from(File)).scalar_one())


def test_an_announcement_past_the_cap_is_413_saying_what_is_held_until_a_file_goes(
    make_api: Callable[..., Api],
) -> None:
    api, size = _capped(make_api, files=2)
    api.upload()
    pending = api.announce()["file_id"]  # counts at its announced size before a byte arrives
    rows = _rows(api)
    r = api.post("/v1/files", json=SMALL)
    assert r.status_code == 413, r.text
    error = r.json()["error"]
    assert error["code"] == "STORAGE_QUOTA_EXCEEDED" and error["param"] == "file_size"
    assert f"it holds {2 * size} of the {2 * size} bytes" in error["message"]
    assert _rows(api) == rows  # nothing recorded
    # Another account is not held back by this one's files.
    assert api.post("/v1/files", key=api.other_key, json=SMALL).status_code == 201
    # Deleting a file (a pending one too) makes its room free at once.
    assert api.delete(f"/v1/files/{pending}").status_code == 204
    assert api.post("/v1/files", json=SMALL).status_code == 201


def test_a_form_upload_past_the_cap_stores_no_byte(
    make_api: Callable[..., Api], monkeypatch: pytest.MonkeyPatch
) -> None:
    api, _ = _capped(make_api, files=1)
    api.upload()
    stored: list[str] = []
    put_file = api.services.storage.put_file

    def spy(key: str, path: Path) -> int:
        stored.append(key)
        return put_file(key, path)

    monkeypatch.setattr(api.services.storage, "put_file", spy)
    audio = api.files.get("stereo.wav").path.read_bytes()
    r = api.post("/v1/files", files={"file": ("song.wav", audio, "audio/wav")})
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "STORAGE_QUOTA_EXCEEDED"
    assert r.json()["error"]["param"] == "file"
    assert stored == []


@pytest.mark.parametrize("route", ["native", "musicgpt"])
def test_a_form_upload_past_the_room_left_is_refused_before_it_reaches_scratch(
    make_api: Callable[..., Api], monkeypatch: pytest.MonkeyPatch, route: str
) -> None:
    """A form's file is spooled in the data directory while it arrives: spooled whole, a file
    the account had no room for took a 1 GiB upload's disk before the check refused it."""
    api, size = _capped(make_api, files=1)
    room = size // 3
    api.services.settings.max_account_storage_bytes = size + room
    api.upload()
    spooled: list[int] = []
    write = forms._Parser.write

    def spy(parser: forms._Parser, data: bytes) -> None:
        spooled.append(len(data))
        write(parser, data)

    monkeypatch.setattr(forms._Parser, "write", spy)
    audio = api.files.get("stereo.wav").path.read_bytes()
    if route == "native":
        r = api.post("/v1/files", files={"file": ("song.wav", audio, "audio/wav")})
        assert r.status_code == 413, r.text
        code, message = r.json()["error"]["code"], r.json()["error"]["message"]
    else:
        r = api.extract(audio)
        assert r.status_code == 413, r.text
        code, message = r.json()["error"], r.json()["message"]
    assert sum(spooled) <= room  # not one byte past the room left
    assert code == "STORAGE_QUOTA_EXCEEDED"
    assert message.startswith(f"this file is over the {room} bytes left in this account's")


def test_parallel_announcements_take_exactly_the_room_left(make_api: Callable[..., Api]) -> None:
    """Ten announcements at once with room for three: exactly three are recorded, not every
    one that read the room before another was recorded."""
    api, size = _capped(make_api, files=3)
    body = {"file_name": "a.wav", "content_type": "audio/wav", "file_size": size}
    with ThreadPoolExecutor(10) as pool:
        statuses = sorted(
            pool.map(lambda _: api.post("/v1/files", json=body).status_code, range(10))
        )
    assert statuses == [201] * 3 + [413] * 7
    assert _rows(api) == 3


def test_an_expired_file_makes_room_at_once(make_api: Callable[..., Api]) -> None:
    api, _ = _capped(make_api, files=1)
    api.upload()
    assert api.post("/v1/files", json=SMALL).status_code == 413
    retention = timedelta(seconds=api.services.settings.upload_retention_seconds)
    later = api.services.db.clock() + retention + timedelta(seconds=1)
    api.services.db.clock = lambda: later  # past its expires_at, whether swept yet or not
    assert api.post("/v1/files", json=SMALL).status_code == 201


def test_each_vendor_protocol_refuses_in_its_own_code(make_api: Callable[..., Api]) -> None:
    api, size = _capped(make_api, files=1)
    api.upload()
    gaudio = api.client.post(
        "/developers/api/v1/files/upload-multipart/create",
        json={"fileName": "song.wav", "fileSize": size},
        headers={"x-ga-apikey": api.key},
    )
    assert gaudio.status_code == 200 and gaudio.json()["resultCode"] == 1110, gaudio.text
    assert f"{size} of the {size} bytes" in gaudio.json()["resultMessage"]
    audio = api.files.get("stereo.wav").path.read_bytes()
    musicgpt = api.extract(audio)
    assert musicgpt.status_code == 413, musicgpt.text
    assert musicgpt.json()["success"] is False
    assert musicgpt.json()["error"] == "STORAGE_QUOTA_EXCEEDED"


def test_usage_shows_what_the_uploads_hold_and_the_cap(make_api: Callable[..., Api]) -> None:
    api, size = _capped(make_api, files=3)
    api.upload()
    api.announce()
    body = api.get("/v1/usage").json()
    assert body["storage"] == {
        "used_bytes": 2 * size,
        "files_bytes": 2 * size,
        "results_bytes": 0,
        "cap_bytes": 3 * size,
    }
    storage = Usage.from_json(body).storage
    assert storage is not None and storage.used_bytes == 2 * size
    unlimited = make_api(max_account_storage_bytes=0)
    assert unlimited.get("/v1/usage").json()["storage"]["cap_bytes"] is None


def test_an_account_cap_of_its_own_replaces_the_setting(make_api: Callable[..., Api]) -> None:
    """``demixer keys quota ACCOUNT --storage-bytes``: a tighter cap for one account, none for
    another, and the setting's again."""
    api, size = _capped(make_api, files=1)
    set_storage_cap(api.services.db, api.account, 3 * size)  # more than the setting's
    api.upload()
    api.upload()
    storage = api.get("/v1/usage").json()["storage"]
    assert (storage["used_bytes"], storage["cap_bytes"]) == (2 * size, 3 * size)
    set_storage_cap(api.services.db, api.account, None)  # the setting's again: 1 file
    r = api.post("/v1/files", json=SMALL)
    assert r.status_code == 413, r.text
    assert f"holds {2 * size} of the {size} bytes" in r.json()["error"]["message"]
    set_storage_cap(api.services.db, api.account, 0)  # no cap at all
    assert api.post("/v1/files", json=SMALL).status_code == 201
    assert api.get("/v1/usage").json()["storage"]["cap_bytes"] is None
    with pytest.raises(InvalidRequest, match="0 \\(none\\) to"):
        set_storage_cap(api.services.db, api.account, -1)


def test_stored_stems_count_and_a_new_request_is_refused_in_each_protocol_once_full(
    make_api: Callable[..., Api],
) -> None:
    """A key that runs many requests fills the disk with their stems (kept 48 h) as surely
    as with uploads: they count, and once the account holds its cap every new request is
    refused (a result-cache answer too: its copies are its own). One queued before still
    completes; deleting a result, or its expiry, makes room at once."""
    api, size = _capped(make_api, files=10)
    file_id = api.upload()
    done = api.queue_separate(file_id).json()["request_id"]
    api.worker_done(done)
    stems = 2 * api.files.get("mono.wav").path.stat().st_size  # target and residual
    body = api.get("/v1/usage").json()
    client_side = Usage.from_json(body).storage
    assert client_side is not None and client_side.results_bytes == stems
    assert body["storage"] == {
        "used_bytes": size + stems,
        "files_bytes": size,
        "results_bytes": stems,
        "cap_bytes": 10 * size,
    }
    queued = api.queue_separate(file_id, "drums").json()["request_id"]
    cap = size + stems + 1  # one byte left
    api.services.settings.max_account_storage_bytes = cap
    api.worker_done(queued, track="drums")  # taken with room left: it completes, past the cap
    r = api.queue_separate(file_id, "bass")
    assert r.status_code == 413, r.text
    error = r.json()["error"]
    assert error["code"] == "STORAGE_QUOTA_EXCEEDED"
    assert f"it holds {size + 2 * stems} of the {cap} bytes" in error["message"]
    assert f"{2 * stems} in the stems of its requests' results" in error["message"]
    assert api.queue_separate(file_id).status_code == 413  # the cache's answer to it too
    gaudio = api.client.post(
        "/developers/api/v1/gsep_music_hq_v1/jobs",
        json={"audioUploadId": file_id, "type": "vocal"},
        headers={"x-ga-apikey": api.key},
    )
    assert gaudio.status_code == 200 and gaudio.json()["resultCode"] == 1110, gaudio.text
    musicgpt = api.client.post(
        "/api/public/v1/Extraction",
        data={"audio_url": "http://93.184.216.34/song.wav", "stems": '["vocals"]'},
        headers={"Authorization": api.key},
    )
    assert musicgpt.status_code == 413, musicgpt.text
    assert musicgpt.json()["error"] == "STORAGE_QUOTA_EXCEEDED"
    suno = api.client.post(
        "/api/v1/vocal-removal/generate",
        json={"type": "separate_vocal", "fileId": file_id},
        headers={"Authorization": f"Bearer {api.key}"},
    )
    assert suno.status_code == 200 and suno.json()["code"] == 413, suno.text
    # Deleting a result frees its stems at once; an expired one counts no more.
    assert api.delete(f"/v1/queue/requests/{queued}").status_code == 204
    assert api.get("/v1/usage").json()["storage"]["results_bytes"] == stems
    assert api.queue_separate(file_id, "bass").status_code == 202
    retention = timedelta(seconds=api.services.settings.result_retention_seconds)
    later = api.services.db.clock() + retention + timedelta(seconds=1)
    api.services.db.clock = lambda: later
    assert api.get("/v1/usage").json()["storage"]["results_bytes"] == 0


def test_the_migration_leaves_every_account_on_the_setting_and_downgrades(
    backend: Backend, tmp_path: Path
) -> None:
    url = backend.servers.create_database() if backend.servers else f"sqlite:///{tmp_path}/c.db"
    db = Database(url)
    try:
        migrate(db, "0008")  # the release before caps of an account's own
        account, _ = create_key(db)
        migrate(db)
        now = db.clock()
        with db.read() as s:
            assert storage_use(s, account, 5, now) == StorageUse(0, 0, 5)
        set_storage_cap(db, account, 7)
        with db.read() as s:
            assert storage_use(s, account, 5, now) == StorageUse(0, 0, 7)
        downgrade(db, "0008")
        with db.read() as s:
            assert s.execute(text("SELECT count(*) FROM accounts")).scalar_one() == 1
    finally:
        db.dispose()
        if backend.servers:
            backend.servers.drop_database(url)
