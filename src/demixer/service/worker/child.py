"""The separation child process, both ends of a worker slot's pipe: the child's own loop and
the parent's handle that starts, talks to and kills it.

Each worker slot (see :mod:`demixer.service.worker`) owns one long-lived child, forked by
multiprocessing's fork server on Linux (``spawn`` elsewhere; see :meth:`Child.start`). The child
keeps loaded :class:`~demixer.engine.Separator` objects between
jobs, so a model is loaded once, not per job. It never touches the database or storage: the
parent (:mod:`demixer.service.worker.runner`) downloads the input, sends a :class:`ChildJob` through
its :class:`Child` handle, and stores the files the child wrote. What crosses the pipe is
:mod:`demixer.service.worker.protocol`'s; what the child does with a job,
:mod:`demixer.service.worker.separation`'s.

The child's own log records (a decoder's "samples were NaN") and Python warnings go to the
stderr it shares with the worker, in the worker's format when the worker hands it its set-up
(:attr:`ChildOptions.log_setup`).

The slot starts its child as it starts; it kills the child (SIGKILL) on cancel, timeout or lost
lease, and starts another for its next job;
an OOM kill or a crash shows up as the pipe closing. This module imports only the engine and
audio layers (torch is imported by the fork server, or by the model loader under ``spawn``).
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import select
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from multiprocessing.connection import Connection, wait
from typing import Any

from demixer.engine import Separator
from demixer.errors import DemixerError
from demixer.service.worker.protocol import (
    PROGRESS_INTERVAL,
    STAGES,
    ChildJob,
    ChildOptions,
    ChildOutput,
    ChildResult,
)
from demixer.service.worker.separation import check_input, classify_error, run_job

# The protocol's and the separation's names stay importable from here, where the worker and
# the API have always found them.
__all__ = [
    "PROGRESS_INTERVAL",
    "STAGES",
    "Child",
    "ChildDied",
    "ChildJob",
    "ChildOptions",
    "ChildOutput",
    "ChildResult",
    "check_input",
    "child_context",
    "child_main",
    "classify_error",
    "run_job",
]

_PR_SET_PDEATHSIG = 1
_START_WAIT = 60.0  # seconds a kill waits for a child being started (the fork server's imports)


class _ParentGone(BaseException):
    """The pipe to the parent broke: stop at once (BaseException, so nothing swallows it)."""


def _die_with_parent(parent_pid: int) -> None:
    """SIGKILL this process as soon as the worker is gone (a SIGKILLed worker's child must
    not keep the CPU or GPU busy); elsewhere than Linux the closed pipe ends the child.

    A thread waits on a pidfd of the worker, which becomes readable when it exits. Linux also
    SIGKILLs this process when its parent dies (``PR_SET_PDEATHSIG``): the worker under
    ``spawn``, or the fork server, which exits once the worker is gone (see
    :func:`_leave_fork_server`) but only after a second or more of interpreter shutdown.
    """
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    try:
        watched = os.pidfd_open(parent_pid)
    except ProcessLookupError:  # the worker died before this child could watch it
        os._exit(0)
    except OSError:  # a kernel without pidfds (before 5.3): the parent-death signal only
        return

    def watch() -> None:
        select.select([watched], [], [])
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="demixer-watch-worker", daemon=True).start()


def _leave_fork_server() -> None:
    """Close this child's copy of the fork server's "alive" pipe.

    multiprocessing hands every forked child the write end of the pipe the server watches, so
    the server runs while any child does; this child's own death is tied to the server's
    (``PR_SET_PDEATHSIG``), so holding it would keep both alive after a worker is SIGKILLed.
    Without it the server exits when the worker does, and this child with it.
    """
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    fd = getattr(server, "_forkserver_alive_fd", None)
    if isinstance(fd, int):
        with contextlib.suppress(OSError):
            os.close(fd)
        server._forkserver_alive_fd = None  # type: ignore[union-attr]


def _take_environment(options: ChildOptions) -> None:
    """The parent's environment, and the thread count, as a spawned child would have had them.

    A forked child starts with the fork server's environment, and with torch already imported
    (it read ``OMP_NUM_THREADS`` then): the count is set by call as well.
    """
    if options.environ is not None:
        os.environ.clear()
        os.environ.update(options.environ)
    if options.threads is not None:
        # Read by torch and BLAS when they are first imported (under spawn, on the first job).
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ.setdefault(var, str(options.threads))
    torch = sys.modules.get("torch")
    wanted = os.environ.get("OMP_NUM_THREADS", "")
    if torch is not None and wanted.isdigit() and int(wanted) > 0:
        torch.set_num_threads(int(wanted))


def child_main(conn: Connection, options: ChildOptions) -> None:
    """The child's loop: receive a job, separate, answer; exit on ``None`` or a closed pipe."""
    _leave_fork_server()  # a spawned child holds none
    _die_with_parent(options.parent_pid)
    # Ctrl-C in a terminal reaches the whole process group: the parent decides what to do.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _take_environment(options)
    if options.log_setup is not None:
        # The fork server's interpreter (or a spawned one) starts with Python's default
        # logging: a record printed as its bare message and a warning as bare
        # "file:line: UserWarning" lines, amid the worker's lines with their time and level.
        options.log_setup()
    separators: OrderedDict[str, Separator] = OrderedDict()
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        try:
            result = run_job(job, options, separators, _progress_sender(conn), _stage_sender(conn))
            conn.send(("done", result))
        except _ParentGone:
            return
        except BaseException as exc:
            code, message, retryable = classify_error(exc)
            # demixer's own errors say all there is to say; any other is a bug or the
            # machine's, and its traceback is what the operator needs to find out which.
            trace = (
                None if isinstance(exc, DemixerError) else "".join(traceback.format_exception(exc))
            )
            try:
                conn.send(("error", code, message, retryable, trace))
            except (OSError, EOFError):
                return


def _to_parent(conn: Connection, message: tuple[Any, ...]) -> None:
    """Send ``message`` while a job runs; a broken pipe (the worker gone) stops the child."""
    try:
        conn.send(message)
    except (OSError, EOFError):
        raise _ParentGone() from None


def _progress_sender(conn: Connection) -> Callable[[float], None]:
    last = [0.0]

    def send(fraction: float) -> None:
        now = time.monotonic()
        if now - last[0] < PROGRESS_INTERVAL and fraction < 1.0:
            return
        last[0] = now
        _to_parent(conn, ("progress", float(fraction)))

    return send


def _stage_sender(conn: Connection) -> Callable[[str], None]:
    def send(stage: str) -> None:
        _to_parent(conn, ("stage", stage))

    return send


# --- the parent's end ------------------------------------------------------------------------


class ChildDied(Exception):
    """The child process exited or its pipe broke while it had a job (OOM killer, segfault)."""


#: The longest path of a Unix socket (``sun_path``, less its NUL), and what multiprocessing adds
#: to the temporary directory for the fork server's (``/pymp-XXXXXXXX/listener-XXXXXXXX``).
_SOCKET_PATH_MAX = 107
_FORK_SERVER_SOCKET = len("/pymp-12345678/listener-12345678")


def child_context() -> (
    multiprocessing.context.ForkServerContext | multiprocessing.context.SpawnContext
):
    """How children start: forked from multiprocessing's fork server on Linux (see
    :meth:`Child.start`), spawned elsewhere, and where the fork server's socket would not fit
    a Unix socket's path in the temporary directory (a ``$TMPDIR`` of over 75 bytes made every
    child fail at once, "AF_UNIX path too long", and every job with it)."""
    fits = len(os.fsencode(tempfile.gettempdir())) + _FORK_SERVER_SOCKET <= _SOCKET_PATH_MAX
    if sys.platform.startswith("linux") and fits:
        return multiprocessing.get_context("forkserver")
    return multiprocessing.get_context("spawn")


class Child:
    """The parent's handle on one separation child (a daemon process; see :meth:`start`)."""

    def __init__(self, process: multiprocessing.process.BaseProcess, conn: Connection) -> None:
        self.process = process
        self.conn = conn
        self._launch: threading.Thread | None = None
        self._launch_error: BaseException | None = None

    @classmethod
    def start(cls, options: ChildOptions, *, name: str = "demixer-child") -> Child:
        """Start a child; it loads nothing until its first job (each worker slot starts its
        child as the slot starts).

        On Linux the child is a fork of multiprocessing's fork server, which imports torch and
        this module once per worker process: a child restarted after a cancel, a timeout or a
        crash, and each further slot, is ready in milliseconds instead of the seconds that
        importing torch takes (about 3 s of CPU). The server itself never loads a model
        or touches CUDA. Elsewhere (and with a long ``$TMPDIR``: :func:`child_context`) children
        are spawned. Either way the child
        re-imports the parent's ``__main__`` module (see :class:`Worker`).

        The first start waits for the server's imports, so the process is started on a thread:
        the caller goes on (heartbeats, cancels) meanwhile, a job sent before the process
        exists waits in the pipe, and :meth:`receive` waits for the start within its timeout.
        """
        context = child_context()
        if isinstance(context, multiprocessing.context.ForkServerContext):
            context.set_forkserver_preload([__name__, "torch"])
        parent_end, child_end = context.Pipe()
        options = replace(options, environ=dict(os.environ))
        process = context.Process(
            target=child_main, args=(child_end, options), name=name, daemon=True
        )
        child = cls(process, parent_end)

        def launch() -> None:
            try:
                process.start()
            except BaseException as exc:  # reported by receive() as the child's death
                child._launch_error = exc
            finally:
                # Only the child may hold its end: when the child dies, the parent's end
                # reads EOF.
                child_end.close()

        child._launch = threading.Thread(target=launch, name=f"{name}-start", daemon=True)
        child._launch.start()
        return child

    def _started(self, timeout: float | None) -> bool:
        """Whether the process has been started, waiting up to ``timeout`` seconds for it.

        Raises:
            ChildDied: the process could not be started.
        """
        launch = self._launch
        if launch is not None:
            launch.join(timeout)
            if launch.is_alive():
                return False
            self._launch = None
        if self._launch_error is not None:
            error = self._launch_error
            raise ChildDied(f"the separation process could not start: {error}")
        return True

    def _join_launch(self) -> None:
        """Wait for a start under way (up to :data:`_START_WAIT`), whatever its outcome."""
        launch = self._launch
        if launch is not None:
            launch.join(_START_WAIT)

    @property
    def pid(self) -> int | None:
        """The child's process id (None while it is being started)."""
        return self.process.pid

    def alive(self) -> bool:
        """Whether the process is running, or being started."""
        launch = self._launch
        if launch is not None and launch.is_alive():
            return True
        return self._launch_error is None and self.process.is_alive()

    def send(self, job: ChildJob) -> None:
        """Hand the child a job; raises :class:`ChildDied` when it is gone."""
        try:
            self.conn.send(job)
        except (OSError, EOFError):
            raise ChildDied(self._obituary()) from None

    def receive(self, timeout: float) -> tuple[Any, ...] | None:
        """The child's next message, or None when none came within ``timeout`` seconds.

        Raises:
            ChildDied: the process ended or its pipe closed before it answered.
        """
        deadline = time.monotonic() + timeout
        if not self._started(timeout):
            return None
        ready = wait([self.conn, self.process.sentinel], max(0.0, deadline - time.monotonic()))
        if not ready:
            return None
        if self.conn in ready or self.conn.poll():
            try:
                message: tuple[Any, ...] = self.conn.recv()
            except (EOFError, OSError):
                raise ChildDied(self._obituary()) from None
            return message
        raise ChildDied(self._obituary())

    def _obituary(self) -> str:
        if not self._started(_START_WAIT):
            self.kill()
            return "the separation process did not start"
        self.process.join(2.0)
        code = self.process.exitcode
        if code is None:  # the pipe broke but the process lingers: make sure it is gone
            self.kill()
            return "the separation process stopped answering"
        self.conn.close()
        if code < 0:
            try:
                how = f"killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"killed by signal {-code}"
            return f"the separation process died (exit code {code}: {how})"
        return f"the separation process died (exit code {code})"

    def kill(self) -> None:
        """SIGKILL the child and wait for it; its memory (and GPU memory) is freed.

        A child still being started is waited for first (up to a minute); one that starts
        later still finds its pipe closed, and exits.
        """
        self._join_launch()
        if self.process.pid is not None and self.process.is_alive():
            self.process.kill()
            self.process.join(5.0)
        self.conn.close()

    def close(self) -> None:
        """Ask an idle child to exit; kill it if it does not within two seconds.

        A child still being started is not waited for (a slot starts its child as it starts,
        and a stop just after would wait for the fork server's imports): it reads the request
        to exit first thing, or finds its pipe closed, and exits.
        """
        with contextlib.suppress(OSError, EOFError):
            self.conn.send(None)
        launch = self._launch
        if launch is not None and launch.is_alive():
            self.conn.close()
            return
        self._join_launch()
        if self.process.pid is not None:
            self.process.join(2.0)
        self.kill()
