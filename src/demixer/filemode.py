"""The user's files: the mode a new one gets (what their umask allows), and whether a folder
can take them.

Files written through :func:`tempfile.mkstemp` (then renamed into place, so a reader never sees
half a file) start private (0600). The stems and downloads demixer writes for a user are their
files, so they get ``0666 & ~umask`` like any file their shell would create.
"""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

from demixer.errors import InvalidOutput

__all__ = ["check_folder", "umask_mode", "unwritable"]

_lock = threading.Lock()


def _umask() -> int:
    """The process's umask. Linux shows it in /proc; elsewhere it can only be read by setting
    it, which is briefly visible to other threads (hence the lock, and reading it once)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def umask_mode() -> int:
    """``0o666`` less the umask: the permissions a new regular file would get."""
    return 0o666 & ~_umask()


def check_folder(folder: Path) -> None:
    """Raise :func:`unwritable`'s error when the stems could not be written into ``folder``
    (its nearest existing part is a file, or not writable), without making anything."""
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise unwritable(FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(existing)))
    if not os.access(existing, os.W_OK | os.X_OK):
        raise unwritable(PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(existing)))


def unwritable(e: OSError) -> InvalidOutput:
    """The stems cannot be written where asked: ``e`` (making the folder, or a file in it) in
    words, e.g. "cannot write the stems: out is a file, not a folder"."""
    if isinstance(e, FileExistsError) and e.filename:  # a folder to make is a file
        return InvalidOutput(f"cannot write the stems: {e.filename} is a file, not a folder")
    what = f" ({e.filename})" if e.filename else ""  # "[Errno 13] Permission denied: 'x'"
    return InvalidOutput(f"cannot write the stems: {e.strerror or e}{what}")
