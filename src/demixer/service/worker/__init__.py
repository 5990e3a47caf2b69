"""Workers: claim a queued job and run it in a separation child process."""

from demixer.service.worker.slots import Worker

__all__ = ["Worker"]
