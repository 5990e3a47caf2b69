"""How every ``demixer`` command prints an error: one line on stderr, never a traceback."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

__all__ = ["print_error"]

_err = Console(stderr=True)


def print_error(code: str, message: str) -> None:
    """``error [CODE] message`` on stderr.

    Messages hold file names and user input: escaped, or "[live]" in a name would vanish as
    markup and "[/x]" would crash rich; soft-wrapped, so a long one stays one line in logs.
    """
    _err.print(f"[bold red]error[/] \\[{code}] {escape(message)}", highlight=False, soft_wrap=True)
