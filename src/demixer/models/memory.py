"""How much memory this machine gives a process: its RAM, or a container's smaller limit.

Read where a model is loaded, to refuse settings no run could fit (a chunk of 10**12 samples)
with words, before a job fails on the allocation.
"""

from __future__ import annotations

import os
from pathlib import Path

from demixer.errors import bytes_text

__all__ = ["bytes_text", "machine_memory"]

# A container's memory limit (cgroup v2, then v1); "max" or a huge number means none.
_LIMIT_FILES = (
    Path("/sys/fs/cgroup/memory.max"),
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
)


def machine_memory() -> int | None:
    """Bytes of memory this process can have at most: the physical RAM, or the container's
    limit where that is lower. None where the RAM cannot be read (not a POSIX system)."""
    try:
        ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # Windows has no sysconf
        return None
    if ram <= 0:
        return None
    for path in _LIMIT_FILES:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < ram:
            return int(text)
    return ram
