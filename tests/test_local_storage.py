"""The local store's unfinished writes: a process killed during an upload leaves its temporary
file, and the next process to start on the directory removes it (never a live one's)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from demixer.server.compose import build_services
from demixer.settings import Settings
from demixer.storage.local import LocalStorage


def test_a_dead_writers_temporary_is_swept_and_a_live_ones_kept(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    store.put("inputs/file_done", io.BytesIO(b"kept"))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    inputs = tmp_path / "inputs"
    (inputs / f".file_a.{dead.pid}.k2j4_x.part").write_bytes(b"half an upload")
    (inputs / f".file_b.{os.getppid()}.k2j4_x.part").write_bytes(b"still arriving")
    parts = tmp_path / "uploads" / "up_1"
    parts.mkdir(parents=True)
    (parts / f".part-1.{dead.pid}.zz9_q.part").write_bytes(b"a chunk")
    assert store.sweep_partials() == 2
    assert sorted(p.name for p in inputs.iterdir()) == [
        f".file_b.{os.getppid()}.k2j4_x.part",
        "file_done",
    ]
    assert list(parts.iterdir()) == []
    assert store.open("inputs/file_done").read() == b"kept"


def test_a_data_directory_named_with_a_hash_or_question_mark_holds_its_own_files(
    tmp_path: Path,
) -> None:
    """The default database and storage are URLs built from the data directory: for
    'C# songs?' the database went to 'C# songs' (cut at the '?') and the stored files to 'C'
    (cut at the '#'), both beside the data directory, not in it."""
    data = tmp_path / "C# songs? 100%"
    services = build_services(Settings(data_dir=data))
    services.db.create_all()
    services.storage.put("inputs/file_a", io.BytesIO(b"a song"))
    services.db.dispose()
    assert sorted(p.name for p in tmp_path.iterdir()) == [data.name]
    assert (data / "demixer.db").is_file()
    assert (data / "storage" / "inputs" / "file_a").read_bytes() == b"a song"
