"""A full disk: a live `demixer serve` whose data directory (storage, scratch, log) sits on a
small tmpfs mounted for the test, filled up and freed again; and a full disk under the SQLite
database (in process).

While it is full, uploads answer 507 ``STORAGE_FULL`` with ``Retry-After`` (nothing stored), a
job that cannot write its stems fails ``STORAGE_FULL`` (not an output error), and the server
keeps answering; once space is freed the same requests succeed, with no restart. The live
server's database is kept off the small disk: its heartbeats' WAL would otherwise take the last
bytes first (the database's own full disk is the second test). The mounts need root (the test
machines and CI run as root); without it the tests fail, they are never skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import soundfile as sf

import fake_models
from api_support import Api, make_api
from audiofiles import tone
from demixer.engine import Separator
from demixer.errors import StorageFull
from demixer.models import registry
from demixer.models.catalogue.recipes import recipe_spec
from service_harness import Server, fast_env, running_server, wait_status

__all__ = ["make_api"]

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
RATE = 44100


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A 48 MiB tmpfs, unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, f"mounting a tmpfs needs root: {done.stderr}"
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _free(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def _upload(server: Server, path: Path) -> tuple[int, dict[str, object], dict[str, str]]:
    with server.client() as client:
        r = client.post("/v1/files", files={"file": (path.name, path.read_bytes(), "audio/wav")})
    return r.status_code, r.json(), dict(r.headers)


def _put(server: Server, path: Path) -> tuple[int, dict[str, object], dict[str, str]]:
    data = path.read_bytes()
    with server.client() as client:
        up = client.post("/v1/files", json={"file_name": path.name, "content_type": "audio/wav",
                                            "file_size": len(data)}).json()  # fmt: skip
        r = client.put(up["upload_url"], content=data, headers=up["headers"])
    return r.status_code, r.json(), dict(r.headers)


def test_a_full_disk_answers_507_and_recovers_by_itself(disk: Path, tmp_path: Path) -> None:
    song = tmp_path / "song.wav"
    sf.write(song, tone(2.0, RATE, (440.0, 660.0)).T, RATE, subtype="PCM_16")  # 353 kB
    env = fast_env(
        DEMIXER_MAX_ATTEMPTS="1",
        DEMIXER_RATE_LIMIT_PER_MINUTE="0",
        DEMIXER_DATABASE_URL=f"sqlite:///{tmp_path / 'demixer.db'}",
    )
    figures: dict[str, object] = {}
    with running_server(disk / "data", env=env) as server:
        status, stored, _ = _upload(server, song)
        assert status == 201 and stored["status"] == "uploaded", stored
        # Fill the disk, leaving room for the database's small writes but not for a file.
        filler = disk / "filler"
        with filler.open("wb") as fh:
            fh.write(b"\0" * max(0, _free(disk) - (200 << 10)))
        figures["free_when_full"] = _free(disk)

        for name, send in (("multipart upload", _upload), ("signed PUT", _put)):
            status, body, headers = send(server, song)
            figures[name] = status
            assert status == 507, (name, body)
            error = body["error"]
            assert isinstance(error, dict) and error["code"] == "STORAGE_FULL", body
            assert int(headers["retry-after"]) > 0
        with server.client() as client:
            assert client.get("/v1/models").status_code == 200  # the server still answers
            # A job that cannot write its stems (32-bit float: 700 kB each) fails clearly.
            body = {"input": {"file_id": stored["file_id"], "bit_depth": "32f"}}
            r = client.post("/v1/queue/audio/stems", json=body)
            assert r.status_code == 202, r.text
            failed = wait_status(client, r.json()["request_id"], {"FAILED", "COMPLETED"}, 240)
            assert failed["status"] == "FAILED" and failed["error"]["code"] == "STORAGE_FULL"
            figures["job while full"] = failed["error"]

            filler.unlink()  # space is freed: nothing restarts, the same requests succeed
            status, again, _ = _upload(server, song)
            assert status == 201 and again["status"] == "uploaded", again
            assert _put(server, song)[0] == 200
            r = client.post("/v1/queue/audio/stems", json=body)
            done = wait_status(client, r.json()["request_id"], {"FAILED", "COMPLETED"}, 240)
            assert done["status"] == "COMPLETED", done
            figures["after freeing"] = {"upload": status, "job": done["status"]}
        leftovers = [p for sub in ("tmp", "work") for p in (disk / "data" / sub).glob("*")]
        assert leftovers == []
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "abuse-full-disk.json").write_text(json.dumps(figures, indent=1) + "\n")


def test_a_full_disk_under_the_database_answers_507(
    disk: Path, make_api: Callable[..., Api]
) -> None:
    api = make_api(data_dir=disk / "data", rate_limit_per_minute=0)
    body = {"file_name": "a.wav", "content_type": "audio/wav", "file_size": 1000}
    assert api.post("/v1/files", json=body).status_code == 201
    filler = disk / "filler"
    with filler.open("wb") as fh:
        fh.write(b"\0" * _free(disk))
    answers = [api.post("/v1/files", json={**body, "file_name": f"{i}.wav"}) for i in range(40)]
    full = [r for r in answers if r.status_code != 201]
    assert full, "the database never filled the disk"  # each row takes a page of the WAL
    for r in full:
        assert r.status_code == 507 and r.json()["error"]["code"] == "STORAGE_FULL", r.text
        assert int(r.headers["retry-after"]) > 0
    filler.unlink()
    assert api.post("/v1/files", json=body).status_code == 201  # by itself once there is room


def test_a_recipe_spooling_onto_a_full_disk_is_storage_full_and_leaves_nothing(
    disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A recipe whose second model scales by its whole input keeps the first model's stems in
    scratch files beside the outputs until it has them all: on a full disk that is the job's
    STORAGE_FULL (retried later), not a crash, and nothing is left on the disk."""
    vocals = fake_models.fake_spec("fake-vocals", "vocals")
    level = fake_models.fake_spec("fake-level", "level")
    steps = (
        {"model": "fake-vocals", "keep": {"vocals": "vocals"}, "rest": "instrumental"},
        {"model": "fake-level", "input": "vocals", "keep": {"lead": "lead"}, "rest": "back"},
    )
    recipe = recipe_spec(
        "fake-level-kara",
        description="test",
        stems=("lead", "back", "instrumental"),
        steps=steps,
        known={"fake-vocals": vocals, "fake-level": level},
    )
    for spec in (vocals, level, recipe):
        monkeypatch.setitem(registry._BY_ID, spec.id, spec)
    song = tone(12.0, RATE, [220.0, 440.0])  # 12 s: 4.2 MB a stream at float32
    sf.write(disk / "song.wav", song.T, RATE, subtype="PCM_16")
    filler = disk / "filler"
    with filler.open("wb") as fh:
        fh.write(b"\0" * (_free(disk) - 6 * 2**20))  # room for one stream and a half, not three
    with pytest.raises(StorageFull, match="intermediate stems: the disk is full"):
        Separator("fake-level-kara").separate_file(disk / "song.wav", disk / "out")
    assert sorted(p.name for p in disk.iterdir()) == ["filler", "out", "song.wav"]
    assert list((disk / "out").iterdir()) == []
    filler.unlink()
    result = Separator("fake-level-kara").separate_file(disk / "song.wav", disk / "out")
    assert sorted(result.paths) == ["back", "instrumental", "lead"]
