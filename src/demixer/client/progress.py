"""The progress line of ``separate()``: upload, queue, the server's stages, download (rich)."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from demixer.client.types import Result, Status

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

__all__ = ["STAGE_WORDS", "SeparateProgress", "progress_line"]

# What a running request's ``stage`` is called on screen.
STAGE_WORDS = {
    "loading_model": "loading model",
    "decoding": "reading",
    "separating": "separating",
    "encoding": "writing",
    "storing": "storing",
}


def progress_line(console: Console) -> Progress:
    """One live line for one file: its name (task field ``name``), what is being done (the
    task's description), a bar, the percentage and the time left; gone once stopped."""
    from rich.progress import (
        BarColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.fields[name]}"),
        TextColumn("[cyan]{task.description}", justify="right"),
        BarColumn(bar_width=None),
        TaskProgressColumn(),
        TimeRemainingColumn(compact=True),
        console=console,
        transient=True,
        expand=True,
        redirect_stdout=False,
        redirect_stderr=False,
    )


def short_name(name: str, width: int = 28) -> str:
    """A file name that fits its column: long names keep their start and their extension."""
    return name if len(name) <= width else name[: width - 8] + "…" + name[-7:]


class SeparateProgress:
    """One line on stderr that follows a file through upload, queue, separation and download,
    shown only on a terminal when enabled, and gone when the file is done (so the caller's
    own lines are never interleaved with old bars).

    Its methods are the ``on_bytes`` / ``on_progress`` callbacks of the client's operations.
    """

    def __init__(self, path: Path, size: int, enabled: bool) -> None:
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._name = path.name
        self._size = size
        if enabled:
            from rich.console import Console

            console = Console(stderr=True)
            if console.is_terminal:
                self._progress = progress_line(console)

    def __enter__(self) -> SeparateProgress:
        if self._progress is not None:
            from rich.markup import escape

            self._progress.start()
            name = escape(short_name(self._name))
            self._task = self._progress.add_task("upload", total=self._size, name=name)
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
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, n)

    def status(self, status: Status) -> None:
        if self._progress is None or self._task is None:
            return
        if status.status == "IN_QUEUE":
            ahead = status.queue_position or 0
            word = f"queued, {ahead} ahead" if ahead else "queued"
            self._progress.update(self._task, description=word, total=None, completed=0)
        else:
            done = status.progress if status.progress is not None else 0.0
            if status.done:
                word = status.status.lower()
            else:
                word = STAGE_WORDS.get(status.stage or "", "separating")
            self._progress.update(self._task, description=word, total=1.0, completed=done)

    def downloading(self, result: Result) -> None:
        """The downloads begin: their total size, as the result announces it."""
        if self._progress is not None and self._task is not None:
            total = sum(out.size or 0 for out in result.outputs.values()) or None
            self._progress.reset(self._task, description="download", total=total)

    def downloaded(self, n: int) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, n)
