"""The mode a new file of the user's gets: what their umask allows.

Files written through :func:`tempfile.mkstemp` (then renamed into place, so a reader never sees
half a file) start private (0600). The stems and downloads demixer writes for a user are their
files, so they get ``0666 & ~umask`` like any file their shell would create.
"""

from __future__ import annotations

import os
import threading

__all__ = ["umask_mode"]

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
