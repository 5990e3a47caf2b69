"""Workers: claim a queued job and run it in a separation child process."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from demixer.service.worker.slots import Worker

__all__ = ["Worker"]


def __getattr__(name: str) -> object:
    # Loaded on first use: each separation child imports demixer.service.worker.child, and
    # should not pay for the worker's database and HTTP stack (about a second) at start-up.
    if name == "Worker":
        from demixer.service.worker.slots import Worker

        return Worker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
