"""Scratch files of the API and worker processes, kept inside the data directory.

Uploads are spooled (and S3 inputs fetched) into ``{data_dir}/tmp``, never into ``$TMPDIR``:
the data directory's disk is the one its operator sized and watches, and a full one answers
507 (``STORAGE_FULL``) instead of filling another. Every entry's name carries the process id
that made it (``{kind}-{pid}-{random}``), so the entries of a process that was killed are
recognised and removed by the next process that starts on the data directory
(:func:`sweep_scratch`), while those of live processes sharing it are left alone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from demixer.storage.local import process_alive

__all__ = ["scratch_dir", "scratch_file", "sweep_scratch"]


def scratch_dir(data_dir: Path) -> Path:
    """The scratch directory of ``data_dir`` (created)."""
    path = data_dir / "tmp"
    path.mkdir(parents=True, exist_ok=True)
    return path


def scratch_file(data_dir: Path, kind: str) -> tuple[int, Path]:
    """A new empty file ``{kind}-{pid}-{random}`` in the scratch directory: ``(fd, path)``,
    open for writing (mode 0600). The caller removes it."""
    fd, name = tempfile.mkstemp(dir=scratch_dir(data_dir), prefix=f"{kind}-{os.getpid()}-")
    return fd, Path(name)


def sweep_scratch(data_dir: Path) -> int:
    """Remove the scratch entries of processes that no longer run; returns how many."""
    root = data_dir / "tmp"
    if not root.is_dir():
        return 0
    removed = 0
    for entry in root.iterdir():
        parts = entry.name.split("-")
        if len(parts) < 3 or not parts[1].isdigit():
            continue
        pid = int(parts[1])
        if pid == os.getpid() or process_alive(pid):
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed += 1
    return removed
