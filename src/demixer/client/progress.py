"""The progress bar of ``separate()``: upload bytes, then the job, then downloads (rich)."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from demixer.client.types import Result, Status

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

__all__ = ["SeparateProgress"]


class SeparateProgress:
    """Three bars on stderr (upload, job, download), shown only on a terminal when enabled.

    Its methods are the ``on_bytes`` / ``on_progress`` callbacks of the client's operations.
    """

    def __init__(self, path: Path, size: int, enabled: bool) -> None:
        self._progress: Progress | None = None
        self._name = path.name
        self._size = size
        self._upload: TaskID | None = None
        self._job: TaskID | None = None
        self._download: TaskID | None = None
        if enabled:
            from rich.console import Console

            console = Console(stderr=True)
            if console.is_terminal:
                from rich.progress import (
                    BarColumn,
                    Progress,
                    TaskProgressColumn,
                    TextColumn,
                    TimeElapsedColumn,
                )

                self._progress = Progress(
                    TextColumn("{task.description}"),
                    BarColumn(),
                    TaskProgressColumn(),
                    TimeElapsedColumn(),
                    console=console,
                )

    def __enter__(self) -> SeparateProgress:
        if self._progress is not None:
            from rich.markup import escape

            self._progress.start()
            self._upload = self._progress.add_task(f"upload {escape(self._name)}", total=self._size)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def uploaded(self, n: int) -> None:
        if self._progress is not None and self._upload is not None:
            self._progress.advance(self._upload, n)

    def status(self, status: Status) -> None:
        if self._progress is None:
            return
        if self._job is None:
            self._job = self._progress.add_task("queued", total=None)
        if status.status == "IN_QUEUE":
            ahead = status.queue_position or 0
            self._progress.update(self._job, description=f"queued ({ahead} ahead)")
        else:
            done = status.progress if status.progress is not None else 0.0
            word = "separating" if not status.done else status.status.lower()
            self._progress.update(self._job, description=word, total=1.0, completed=done)

    def downloading(self, result: Result) -> None:
        """The downloads begin: their total size, as the result announces it."""
        if self._progress is not None:
            total = sum(out.size or 0 for out in result.outputs.values()) or None
            self._download = self._progress.add_task("download", total=total)

    def downloaded(self, n: int) -> None:
        if self._progress is not None and self._download is not None:
            self._progress.advance(self._download, n)
