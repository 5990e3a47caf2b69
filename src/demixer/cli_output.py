"""How every ``demixer`` command talks to a terminal: errors, help, live progress.

- An error is one line on stderr, never a traceback (:func:`print_error`).
- ``--help`` is click's plain layout with readable placeholders (``--model MODEL``,
  ``FILES...``), not typer's type tags (``<str>``, ``<list[Path]>``, ``{files}...``):
  :func:`readable_help`.
- Progress (:class:`FileProgress`) is one live line at the bottom of the terminal; everything
  printed while it runs goes through its console, so rich prints it above the bar and the bar
  never overwrites or joins a line (rich's Live display used as designed).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, TaskID
from typer.core import TyperArgument, TyperCommand, TyperOption

from demixer.client.progress import STAGE_WORDS, progress_line, short_name
from demixer.errors import DemixerError, exit_code_for
from demixer.naming import shown_name

__all__ = [
    "FileProgress",
    "Tally",
    "WarningLines",
    "fail",
    "level_notes",
    "print_error",
    "print_warning",
    "readable_help",
    "stems_there",
    "summed_up",
    "written_lines",
]

_err = Console(stderr=True)


def fail(error: DemixerError) -> typer.Exit:
    """``error`` as the one line :func:`print_error` writes, and the exit its class maps to
    (:func:`~demixer.errors.exit_code_for`): ``raise fail(e) from None``."""
    print_error(error.code, error.message)
    return typer.Exit(exit_code_for(error))


def print_error(code: str, message: str, console: Console | None = None) -> None:
    """``error [CODE] message`` on stderr (or through ``console``, a live display's).

    Messages hold file names and user input: escaped, or "[live]" in a name would vanish as
    markup and "[/x]" would crash rich. In a log or a pipe the line is never wrapped (one line
    per error); on a terminal it wraps between words.
    """
    _line(f"[bold red]error[/] \\[{code}] {escape(message)}", console)


def print_warning(message: str, console: Console | None = None) -> None:
    """``warning: message`` on stderr, escaped and wrapped as :func:`print_error`'s lines."""
    _line(f"[bold yellow]warning:[/] {escape(message)}", console)


def _line(markup: str, console: Console | None) -> None:
    target = console or _err
    target.print(markup, highlight=False, soft_wrap=not target.is_terminal)


# --- what a separation wrote ----------------------------------------------------------------


def written_lines(paths: Mapping[str, Path], clipped: Mapping[str, int]) -> Iterator[str]:
    """One line per file written (stdout, for scripts), with its clipped samples, if any."""
    for name, written in paths.items():
        over = clipped.get(name, 0)
        note = f"  [yellow]{over} samples clipped[/]" if over else ""
        yield f"  {escape(name)}: {escape(str(written))}{note}"


def level_notes(clipped: Mapping[str, int], gain: float) -> Iterator[str]:
    """What happened to samples beyond full scale (stderr, for the person)."""
    if any(clipped.values()):
        # --bit-depth 32f alone would be refused for mp3 and flac: the format goes with it
        yield (
            "  [yellow]some stems clipped at full scale: use --rescale, or float output "
            "(--format wav --bit-depth 32f)[/]"
        )
    if gain != 1.0:
        yield f"  rescaled all stems by {gain:.3f} to avoid clipping"


# --- a batch ----------------------------------------------------------------------------------


@dataclass
class Tally:
    """How a batch of ``files`` went so far (``separate`` and ``remote separate``)."""

    files: int
    separated: int = 0
    existing: int = 0  # left out by --skip-existing
    failed: list[Path] = field(default_factory=list)

    def skip(self, name: str) -> str:
        """Count ``name`` (as shown) left out by ``--skip-existing``; the line that says so."""
        self.existing += 1
        return f"{name}: its stems are there, skipped"

    def line(self) -> str:
        """``118 of 120 files separated; 2 failed: set/a/empty.wav, set/b/empty.wav``."""
        line = f"{self.separated} of {self.files} files separated"
        if self.existing:
            line += f", {self.existing} skipped (their stems were there)"
        if self.failed:
            names = ", ".join(shown_name(str(path)) for path in self.failed)
            line += f"; {len(self.failed)} failed: {names}"
        if self.separated + self.existing + len(self.failed) < self.files:
            line += "; stopped before the rest"
        return line


def stems_there(files: Iterable[Path]) -> bool:
    """``--skip-existing``'s rule, ``separate``'s and ``remote separate``'s: every file the
    song's separation writes is there already, whatever made it. Every one, the optional
    residual's too: a song whose residual was silent, and so never written, is separated again
    rather than one missing a stem ever skipped."""
    return all(path.exists() for path in files)


@contextmanager
def summed_up(tally: Tally, say: Callable[[str], Any]) -> Iterator[Tally]:
    """After a batch of several files (or when it is stopped), its :meth:`Tally.line`,
    escaped, through ``say`` (a stderr console's print): an error line names only the file
    (two folders' x.wav read alike), and in a run of 200 songs it has long scrolled away."""
    try:
        yield tally
    finally:
        if tally.files > 1:  # one file: its own line says it all
            say(escape(tally.line()))


# --- help ------------------------------------------------------------------------------------

_TYPE_TAG = re.compile(r" <[^<>]*>(\.\.\.)?$")


def _metavar(param: TyperArgument | TyperOption) -> str:
    """An option's placeholder: its own, else its long name in capitals (``--bit-depth
    BIT-DEPTH``); an argument's: its name in capitals with ``...`` when it takes several."""
    if isinstance(param, TyperArgument):
        name = (param.metavar or param.name or "ARG").upper()
        return name if param.nargs == 1 or name.endswith("...") else name + "..."
    if param.metavar:
        return param.metavar
    longest = max(param.opts, key=len)
    return longest.lstrip("-").upper()


class _Command(TyperCommand):
    """A typer command whose help and usage line read like a classic CLI's.

    (typer ships its own copy of click: contexts and formatters are typed ``Any`` here.)
    """

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                name = _metavar(param)
                pieces.append(name if param.required else f"[{name}]")
        return pieces

    def format_options(self, ctx: Any, formatter: Any) -> None:
        arguments: list[tuple[str, str]] = []
        options: list[tuple[str, str]] = []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            label, text = record
            if isinstance(param, TyperArgument):
                arguments.append((_metavar(param), text))
                continue
            plain = _TYPE_TAG.sub("", label)  # typer's "<str>", "<path>"...: a placeholder
            if plain != label and isinstance(param, TyperOption):
                label = f"{plain} {_metavar(param)}"
            options.append((label, text))
        if arguments:
            with formatter.section("Arguments"):
                formatter.write_dl(arguments)
        if options:
            with formatter.section("Options"):
                formatter.write_dl(options)


def readable_help(app: typer.Typer) -> None:
    """Give every command of ``app`` (and of its sub-apps) the plain help layout; call once
    after every command is registered."""
    app.rich_markup_mode = None
    for command in app.registered_commands:
        if command.cls in (None, TyperCommand):  # typer's default; a command's own class stays
            command.cls = _Command
    for group in app.registered_groups:
        if group.typer_instance is not None:
            readable_help(group.typer_instance)


# --- progress --------------------------------------------------------------------------------


class WarningLines(logging.Handler):
    """Log records of WARNING and above as :func:`print_warning`'s lines on ``console``."""

    def __init__(self, console: Console) -> None:
        super().__init__(logging.WARNING)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print_warning(record.getMessage(), self.console)
        except Exception:  # a logging handler never raises into the code that logged
            self.handleError(record)


class FileProgress:
    """The live line of a command that works through files, one after the other.

    On a terminal it shows the current file, what is being done, a bar and the time left;
    :meth:`print`, :meth:`print_out` and :meth:`error` put lines above it. Without a
    terminal it shows nothing and the lines go straight to their streams.

    Args:
        out: where results go (stdout: scripts read the paths printed there).
        err: where the bar and errors go (stderr).
    """

    def __init__(self, out: Console, err: Console) -> None:
        self.out = out
        self.err = err
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        if err.is_terminal:
            self._progress = progress_line(err)
        # What the engine logs while it works (a damaged frame read as silence, NaN samples)
        # as this command's own warning lines, above the bar.
        self._warnings = WarningLines(err)

    def __enter__(self) -> FileProgress:
        if self._progress is not None:
            self._progress.start()
        logging.getLogger("demixer").addHandler(self._warnings)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        logging.getLogger("demixer").removeHandler(self._warnings)
        if self._progress is not None:
            self._progress.stop()

    def start(self, name: str, number: int = 1, count: int = 1) -> None:
        """A new file, the ``number``-th of ``count``: the bar starts again at 0 % and, in a
        batch, says which file of how many it is on (``3/120 song.mp3``)."""
        if self._progress is None:
            return
        if self._task is not None:
            self._progress.remove_task(self._task)
        label = escape(short_name(name))
        if count > 1:
            label = f"{number}/{count} {label}"
        self._task = self._progress.add_task("starting", total=1.0, name=label)

    def advance(self, fraction: float) -> None:
        """The current file is ``fraction`` done (0-1)."""
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=fraction)

    def stage(self, stage: str) -> None:
        """The current file's stage (engine and service names, see :data:`STAGE_WORDS`)."""
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, description=STAGE_WORDS.get(stage, stage))

    def print(self, text: str, **options: Any) -> None:
        """A line for the person watching (stderr), above the live bar; in a log or a pipe
        one line, never wrapped (as :func:`print_error`'s)."""
        options.setdefault("soft_wrap", not self.err.is_terminal)
        self.err.print(text, **options)

    def print_out(self, text: str) -> None:
        """A result line (stdout). On the terminal that shows the bar it goes through the
        bar's console, so rich keeps the two apart; into a pipe or file it goes as is."""
        console = self.err if self._progress is not None and self.out.is_terminal else self.out
        console.print(text, highlight=False, soft_wrap=True)

    def error(self, code: str, message: str) -> None:
        """An error line, above the live bar."""
        print_error(code, message, self.err if self._progress is not None else None)
