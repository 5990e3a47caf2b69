"""The signals that stop a ``demixer`` command: Ctrl-C (SIGINT), SIGTERM and SIGHUP.

Two things a command inherits from whatever started it decide whether a signal reaches it:

- A stop signal *blocked* in the inherited signal mask is an accident of the starting process
  (Python's multiprocessing blocks SIGINT and SIGTERM in a thread while that thread starts a
  process): no convention asks for it, and it made ``serve`` stop at Ctrl-C yet exit 0 (the
  signal it raises again to exit as Ctrl-C, 130, stayed pending). :func:`unblock_stop_signals`
  unblocks them as the command starts.
- A stop signal *ignored* when the command started is meant to be: ``nohup`` ignores SIGHUP,
  and a shell ignores SIGINT for a command it starts with ``&`` without job control (a script),
  so that Ctrl-C aimed at the foreground leaves it running. Python keeps such a SIGINT ignored
  (no KeyboardInterrupt); :func:`take_over` does the same for demixer's own handlers, and
  ``serve`` for uvicorn's.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import typer
from rich.console import Console

__all__ = [
    "Stop",
    "Terminated",
    "ignored",
    "stopping_on_termination",
    "take_over",
    "unblock_stop_signals",
]

_err = Console(stderr=True)

#: The signals that stop a command (SIGHUP: not on Windows).
STOP_SIGNALS = (
    signal.SIGINT,
    signal.SIGTERM,
    *([signal.SIGHUP] if hasattr(signal, "SIGHUP") else []),
)


def unblock_stop_signals() -> None:
    """Unblock :data:`STOP_SIGNALS` in this thread; called in the main thread before any other
    starts (a thread starts with its creator's mask). No-op where there are no masks."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def ignored(sig: int) -> bool:
    """Whether ``sig`` is ignored here (as it was when the process started, unless a handler
    was installed since)."""
    return signal.getsignal(sig) == signal.SIG_IGN


def take_over(
    signals: Iterable[int], handler: Callable[[int, FrameType | None], Any]
) -> dict[int, Any]:
    """Install ``handler`` for each of ``signals`` that is not :func:`ignored`; returns the
    handlers it replaced, by signal, to put back with ``signal.signal``."""
    return {sig: signal.signal(sig, handler) for sig in signals if not ignored(sig)}


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP during a run (a ``timeout``, a ``kill``, a closed terminal), raised
    as Ctrl-C is, so that the same clean-up runs (no partial files left)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class Stop:
    """The termination signal received so far (``signum`` None: none)."""

    signum: int | None = None

    def requested(self) -> bool:
        """Whether to stop: a ``should_cancel`` for work that checks it as it goes (the
        handler's own exception can be lost when it lands inside a C library's callback)."""
        return self.signum is not None


@contextmanager
def stopping_on_termination() -> Iterator[Stop]:
    """SIGTERM and SIGHUP end what runs inside as Ctrl-C does (:class:`Terminated`), instead
    of killing the process where it stands with its hidden ``.part`` files left behind; each
    says so in a line and exits as the shell reports a signal (128 + its number; Ctrl-C 130).
    One ignored when the command started (``nohup``'s SIGHUP) stays ignored.
    The :class:`Stop` yielded records the signal, for work that polls it too."""
    received = Stop()

    def stop(signum: int, _frame: object) -> None:
        received.signum = signum
        raise Terminated(signum)

    previous = take_over((sig for sig in STOP_SIGNALS if sig != signal.SIGINT), stop)
    try:
        yield received
    except Terminated as stopped:
        _err.print("terminated")
        raise typer.Exit(128 + stopped.signum) from None
    except KeyboardInterrupt:
        _err.print("interrupted")
        raise typer.Exit(130) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
