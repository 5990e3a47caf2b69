"""``Idempotency-Key`` on POSTs: a repeat gets the first answer and creates nothing; the same
key with another body is a 409; a key whose first request is in flight is a 409."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session

from api_support import Api, api, make_api
from demixer.service.schema import File, IdempotencyRecord, Job

# The whole module runs on SQLite + local storage and on PostgreSQL + S3 (conftest.py).
pytestmark = pytest.mark.usefixtures("backend")

__all__ = ["api", "make_api"]  # fixtures


def _submit(api: Api, key: str, body: dict[str, Any], api_key: str | None = None) -> Any:
    return api.post(
        "/v1/queue/audio/separate", key=api_key, json=body, headers={"Idempotency-Key": key}
    )


def _jobs(api: Api) -> int:
    with api.services.db.read() as s:
        return s.query(Job).count()


def test_replay_returns_the_first_answer(api: Api) -> None:
    file_id = api.upload()
    body = {"input": {"file_id": file_id, "prompt": "vocals"}}
    first = _submit(api, "k-1", body)
    assert first.status_code == 202, first.text
    assert "Idempotent-Replayed" not in first.headers
    again = _submit(api, "k-1", {"input": {"prompt": "vocals", "file_id": file_id}})  # reordered
    assert again.status_code == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert _jobs(api) == 1
    # Without the header, or with another key, it is a new request.
    assert api.post("/v1/queue/audio/separate", json=body).status_code == 202
    assert _submit(api, "k-2", body).json()["request_id"] != first.json()["request_id"]
    assert _jobs(api) == 3


def test_same_key_other_body_or_path_is_a_conflict(api: Api) -> None:
    file_id = api.upload()
    assert _submit(api, "k", {"input": {"file_id": file_id, "prompt": "vocals"}}).status_code == 202
    r = _submit(api, "k", {"input": {"file_id": file_id, "prompt": "drums"}})
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
    r = api.post(
        "/v1/queue/audio/stems",
        json={"input": {"file_id": file_id, "stems": ["vocals"]}},
        headers={"Idempotency-Key": "k"},
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert _jobs(api) == 1


def test_keys_are_per_account(api: Api) -> None:
    mine = api.upload()
    theirs = api.post(
        "/v1/files", key=api.other_key, files={"file": ("a.wav", api.announce()["data"])}
    ).json()["file_id"]
    a = _submit(api, "shared", {"input": {"file_id": mine, "prompt": "vocals"}})
    b = _submit(api, "shared", {"input": {"file_id": theirs, "prompt": "vocals"}}, api.other_key)
    assert a.status_code == b.status_code == 202
    assert _jobs(api) == 2


def test_file_announcement_is_idempotent(api: Api) -> None:
    body = {"file_name": "a.wav", "content_type": "audio/wav", "file_size": 1234}
    first = api.post("/v1/files", json=body, headers={"Idempotency-Key": "f"})
    again = api.post("/v1/files", json=body, headers={"Idempotency-Key": "f"})
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    with api.services.db.read() as s:
        assert s.query(File).count() == 1


def test_a_failed_first_request_frees_the_key(api: Api) -> None:
    pending = api.announce()
    body = {"input": {"file_id": pending["file_id"], "prompt": "vocals"}}
    r = _submit(api, "retry-me", body)
    assert r.status_code == 409 and r.json()["error"]["code"] == "FILE_NOT_READY"
    assert api.finish(pending).status_code == 200
    assert _submit(api, "retry-me", body).status_code == 202
    assert _jobs(api) == 1


def test_in_flight_and_expiry(api: Api) -> None:
    file_id = api.upload()
    body = {"input": {"file_id": file_id, "prompt": "vocals"}}
    first = _submit(api, "k", body).json()
    db = api.services.db
    now = db.clock()
    # A first request still being answered (status not stored yet).
    with db.write() as s:
        row = s.get(IdempotencyRecord, (api.account, "k"))
        assert row is not None
        row.status_code, row.response = None, None
    r = _submit(api, "k", body)
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "IDEMPOTENCY_IN_PROGRESS"
    # Its process died: after a while the key is taken over.
    db.clock = lambda: now + timedelta(minutes=10)
    taken = _submit(api, "k", body).json()
    assert taken["request_id"] != first["request_id"]
    # After 24 hours a key is forgotten.
    assert _submit(api, "k", body).json()["request_id"] == taken["request_id"]
    db.clock = lambda: now + timedelta(hours=25)
    assert _submit(api, "k", body).json()["request_id"] != taken["request_id"]


def test_two_first_requests_racing_with_other_bodies_is_a_reused_key(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two API processes take the same key for different bodies at once: the one whose insert
    loses learns of the other's row only from the unique key. It answered 'still running'
    without looking, where the key was really used for another request."""
    file_id = api.upload()
    drums = {"input": {"file_id": file_id, "prompt": "drums"}}
    assert _submit(api, "k", drums).status_code == 202  # the winner's row, as if in flight
    with api.services.db.write() as s:
        row = s.get(IdempotencyRecord, (api.account, "k"))
        assert row is not None
        row.status_code, row.response = None, None
    real_get, raced = Session.get, []

    def not_yet_committed(self: Session, entity: Any, ident: Any, **kw: Any) -> Any:
        if entity is IdempotencyRecord and not raced:  # read before the winner committed
            raced.append(ident)
            return None
        return real_get(self, entity, ident, **kw)

    monkeypatch.setattr(Session, "get", not_yet_committed)
    r = _submit(api, "k", {"input": {"file_id": file_id, "prompt": "vocals"}})
    assert raced  # the race was run: the insert met the winner's row
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert _jobs(api) == 1


def test_bad_key_is_a_400(api: Api) -> None:
    r = api.post("/v1/files", json={}, headers={"Idempotency-Key": "x" * 300})
    assert r.status_code == 400 and r.json()["error"]["param"] == "Idempotency-Key"


def test_a_multipart_upload_ignores_the_key_as_documented_even_a_bad_one(api: Api) -> None:
    """It answered 400 for a key over 255 characters, though an upload never reads the key."""
    wav = api.files.get("mono.wav").path.read_bytes()
    ids = set()
    for key in ("x" * 300, "k1", "k1"):  # the same key twice: two uploads, no replay
        r = api.post(
            "/v1/files",
            files={"file": ("mono.wav", wav, "audio/wav")},
            headers={"Idempotency-Key": key},
        )
        assert r.status_code == 201, r.text
        assert "idempotent-replayed" not in r.headers
        ids.add(r.json()["file_id"])
    assert len(ids) == 3
