"""The long-running service commands, ``serve`` and ``worker``, and :func:`register`, which adds
every service command to the main CLI (the operator's others are in :mod:`demixer.cli_admin`).

Each builds its settings and services through :mod:`demixer.cli_startup`.
"""

from __future__ import annotations

import multiprocessing.util
import shutil
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from types import FrameType
from typing import Annotated, Any

import typer
from rich.console import Console

from demixer.cli_admin import copy_to, keys_app, migrate, workers_list
from demixer.cli_output import fail, print_error
from demixer.cli_purge import purge
from demixer.cli_signals import ignored, take_over
from demixer.cli_startup import (
    DataDir,
    check_precision,
    check_storage,
    load_settings,
    masked,
    open_services,
)
from demixer.errors import DemixerError, exit_code_for
from demixer.settings import Settings

__all__ = ["keys_app", "register"]

out = Console(soft_wrap=True)


def _start_dispatcher(services: Any, stop: threading.Event) -> threading.Thread:
    """The webhook dispatcher, in its own thread: a slow receiver never holds up a worker."""
    from demixer.service.delivery.dispatcher import Dispatcher

    thread = threading.Thread(
        target=Dispatcher(services).run,
        kwargs={"stop": stop},
        name="demixer-webhooks",
        daemon=True,
    )
    thread.start()
    return thread


def _start_sweeper(services: Any, stop: threading.Event) -> threading.Thread:
    """The retention sweeper (expired uploads and results), in its own daemon thread."""
    from demixer.service.retention.sweeper import Sweeper

    thread = threading.Thread(
        target=Sweeper(services).run, kwargs={"stop": stop}, name="demixer-sweeper", daemon=True
    )
    thread.start()
    return thread


def serve(
    host: Annotated[
        str | None,
        typer.Option(help="Address to listen on (default: $DEMIXER_HOST, else 127.0.0.1)."),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            min=1, max=65535, help="Port to listen on (default: $DEMIXER_PORT, else 8000)."
        ),
    ] = None,
    data_dir: DataDir = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=0,
            help="Embedded worker slots, 0: API only (default: $DEMIXER_WORKERS, else 1).",
        ),
    ] = None,
    dispatch: Annotated[
        bool, typer.Option("--dispatch/--no-dispatch", help="Send webhook deliveries here.")
    ] = True,
    local_session: Annotated[
        bool | None,
        typer.Option(
            "--local-session/--no-local-session",
            help="Give a browser on this machine the web page's key without asking (loopback "
            "only: every user of this machine gets it; default: $DEMIXER_LOCAL_SESSION, else "
            "off). Leave it off behind a proxy or on a shared machine.",
        ),
    ] = None,
) -> None:
    """Run the API (and web page) with N embedded worker slots.

    SQLite and storage in the data directory unless DEMIXER_DATABASE_URL / _STORAGE_URL say.
    GET /metrics (Prometheus) answers once DEMIXER_METRICS_TOKEN is set, to that Bearer token.
    Behind a reverse proxy, set DEMIXER_PUBLIC_URL to the address clients use (with its path,
    https://example.com/demixer, under one) and, for a proxy on another machine,
    DEMIXER_FORWARDED_ALLOW_IPS (docs/deploy.md, "Behind a reverse proxy").
    """
    from demixer.api.access_log import configure_logging, log_config
    from demixer.server.app import create_app
    from demixer.service.accounts.keys import SERVE_KEY_NAME, create_key, list_keys
    from demixer.service.worker import Worker

    settings = load_settings(
        data_dir, host=host, port=port, workers=workers, local_session=local_session
    )
    # Before the worker and dispatcher threads log; the separation children set it up too.
    log_setup = partial(configure_logging, settings.log_level, timestamps=settings.log_timestamps)
    log_setup()
    if settings.workers > 0:
        check_precision()
    listening = _listen(settings.host, settings.port)  # before anything starts or is shown
    services = open_services(settings)
    check_storage(services, holds_inputs=settings.workers == 0)
    worker = None
    if settings.workers > 0:  # before a key is shown: a worker that cannot run ends serve
        try:
            worker = Worker(services, slots=settings.workers, log_setup=log_setup)
        except DemixerError as e:
            print_error(e.code, f"{e.message} (or run the API only with --workers 0)")
            raise typer.Exit(exit_code_for(e)) from None
    if not list_keys(services.db):
        _, secret = create_key(services.db, name=SERVE_KEY_NAME)
        out.print("No API key existed, so one was created. It is shown only this once:")
        out.print(secret, highlight=False)
        if settings.local_session:
            out.print("(the web page on this machine uses the same account)")
        else:
            out.print("(the web page asks for a key: paste this one)")
    # Before any thread starts: their log lines (a worker registered, a sweep) came in the
    # middle of it once INFO was written.
    _banner(settings, worker)
    stop = threading.Event()
    worker_thread = None
    if worker is not None:
        worker_thread = threading.Thread(
            target=worker.run, kwargs={"stop": stop}, name="demixer-worker", daemon=True
        )
        worker_thread.start()
    dispatcher_thread = _start_dispatcher(services, stop) if dispatch else None
    _start_sweeper(services, stop)
    app = create_app(services)
    config = http_config(
        app,
        settings,
        log_level=settings.log_level.lower(),
        # Signed URLs' signatures never reach the log.
        log_config=log_config(settings.log_level, timestamps=settings.log_timestamps),
    )

    shut: list[bool] = []

    def shut_down() -> None:
        """Stop the worker slots (a running job is given back) and the webhook dispatcher (a
        send in flight finishes), and wait for them: once, when the server has stopped
        answering (they were told to stop when its signal came)."""
        if shut:
            return
        shut.append(True)
        stop.set()
        if worker_thread is not None:
            worker_thread.join(timeout=30)
        if dispatcher_thread is not None:
            dispatcher_thread.join(timeout=services.settings.webhook_timeout_seconds + 5)

    def stopping() -> None:
        """At the stop signal: the slots claim no more jobs (a running one is given back), and
        every status stream ends (uvicorn waits for open connections before it stops)."""
        stop.set()
        app.state.status_watcher.close()

    try:
        _clean_server(config, shut_down, stopping).run(sockets=[listening])
    finally:
        shut_down()


def http_config(app: Any, settings: Settings, **more: Any) -> Any:
    """The ``uvicorn.Config`` serving ``app`` as ``serve`` runs it; ``more``: the logging."""
    import uvicorn

    from demixer.server.protocol import head_timeout_protocol

    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=head_timeout_protocol(settings.body_timeout_seconds, settings.cors_origin_list),
        # Typed int, used as a float (asyncio's call_later): 0.5 s works.
        timeout_keep_alive=settings.keep_alive_seconds,  # type: ignore[arg-type]
        # Only the proxies named are believed: uvicorn's own FORWARDED_ALLOW_IPS, read when
        # none is given, was never one of demixer's settings.
        proxy_headers=bool(settings.forwarded_allow_ips),
        forwarded_allow_ips=settings.forwarded_allow_ips,
        **more,
    )


def _clean_server(config: Any, shut_down: Callable[[], None], stopping: Callable[[], None]) -> Any:
    """A uvicorn server for ``config`` that calls ``stopping`` when a signal tells it to stop,
    and ``shut_down`` when it has stopped serving."""
    import uvicorn

    class CleanServer(uvicorn.Server):
        """uvicorn's server, shutting demixer's threads down before it re-raises the signal
        that stopped it: uvicorn raises a SIGTERM again, with the default handler, as soon as
        it has stopped serving, which ended the process before any ``finally`` ran (a running
        job kept its lease, a webhook being sent was dropped and sent again 90 s later).

        The threads are told to stop at the signal, not once every connection has closed
        (an open status stream held that for as long as it lasted): a stopping server claims
        no more jobs, and a separation child killed by the same SIGTERM (sent to the whole
        process group, as systemd does) is known as the stop's: its attempt is given back,
        not counted as a crash. The status streams end at the signal too: each lasts until
        its job ends, and the server waited for them (a page watching a queued job kept a
        stopped server running until systemd killed it)."""

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            stopping()
            super().handle_exit(sig, frame)

        @contextmanager
        def capture_signals(self) -> Iterator[None]:
            # What each signal did before uvicorn took it over: what it does when raised again.
            before: dict[int, Any] = {
                sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)
            }
            with super().capture_signals():
                # uvicorn takes over a signal ignored since serve started too (`nohup`, a
                # script's `&`), stopped at it, and raised it again, ignored: exit 0. It is
                # meant to be ignored (cli_signals): it stays so.
                for sig, handler in before.items():
                    if handler == signal.SIG_IGN:
                        signal.signal(sig, signal.SIG_IGN)
                try:
                    yield
                finally:
                    shut_down()
                    if self._captured_signals:
                        _before_raising(self._captured_signals[-1], before)

    return CleanServer(config)


def _before_raising(sig: int, before: dict[int, Any]) -> None:
    """Ready to raise ``sig`` again with its handler in ``before`` (each signal's, before
    demixer's or uvicorn's) put back: when its default action ends the process before Python's
    exit handlers run, multiprocessing's pymp-* directory (the fork server's socket) is removed from
    $TMPDIR here, as its exit handler would (one was left behind on every stop). Only that one:
    the others may stop what still runs (a slot's child). Not when they do run (Ctrl-C's
    KeyboardInterrupt): multiprocessing's then found the directory gone and printed a traceback
    at every Ctrl-C."""
    if before.get(sig) == signal.SIG_DFL:
        shutil.rmtree(multiprocessing.util.get_temp_dir(), ignore_errors=True)


def _raise_again(sig: int, before: dict[int, Any]) -> None:
    """End as ``sig`` would have ended the process, had demixer not taken it over: the handlers
    in ``before`` are put back and ``sig`` raised again (as uvicorn does for ``serve``)."""
    for each, handler in before.items():
        signal.signal(each, handler)
    _before_raising(sig, before)
    signal.raise_signal(sig)


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` and listening, as uvicorn would make it; an address
    that cannot be had ends ``serve`` with one line, before it starts anything or says it runs.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
            sock.listen(2048)
        except OSError:
            sock.close()
            raise
    except (OSError, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        print_error("CANNOT_LISTEN", f"cannot listen on {host}:{port}: {reason}")
        raise typer.Exit(1) from None
    return sock


def _banner(settings: Any, worker: Any, *, api: bool = True, slots: int = 0) -> None:
    """Where to go next: the page, the docs, the data, the database and storage in force (an
    operator sees a missing or mistyped setting here, not at the first job), and what the
    workers run on. ``api=False``: a ``demixer worker`` process with ``slots``."""
    from demixer import __version__

    base = settings.base_url
    if worker is None:
        runs = "none here (API only: `demixer worker` runs them elsewhere)"
    else:
        count = slots if not api else settings.workers
        runs = f"{count} slot{'s' if count != 1 else ''} on {worker.device}; models: "
        runs += ", ".join(worker.models)
    out.print(f"demixer {__version__} {'is' if api else 'worker is'} running", highlight=False)
    lines = [("web page", f"{base}/"), ("API docs", f"{base}/v1/docs")] if api else []
    lines += [
        ("data", str(settings.data_dir)),
        ("database", masked(settings.database) or settings.database),
        ("storage", settings.storage),
        ("workers", runs),
    ]
    for label, value in lines:
        out.print(f"  {label:<9} {value}", highlight=False)
    if ignored(signal.SIGINT):  # started by `nohup` or a script's `&`: cli_signals
        out.print(
            "Ctrl-C is ignored, as it was when this started: stop it with SIGTERM.",
            highlight=False,
        )
    else:
        out.print("Press Ctrl-C to stop.", highlight=False)


def worker(
    data_dir: DataDir = None,
    slots: Annotated[int, typer.Option("--slots", min=1, help="Jobs run at once.")] = 1,
    models: Annotated[
        str | None,
        typer.Option(
            "--models",
            help="Comma-separated model ids this worker runs (default: every model installed "
            "here; ones not installed are left out).",
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads",
            min=1,
            help="CPU threads per slot's separation (default: cores ÷ slots). Set it when "
            "several worker processes share one machine.",
        ),
    ] = None,
    dispatch: Annotated[
        bool, typer.Option("--dispatch/--no-dispatch", help="Also send webhook deliveries.")
    ] = True,
) -> None:
    """Run worker slots only (no API): they claim jobs from the shared database.

    The worker advertises its device (DEMIXER_DEVICE: cpu, cuda, cuda:N or auto) and models
    in the database, and claims only jobs for those models (see `demixer workers`).
    """
    from demixer.api.access_log import configure_logging
    from demixer.service.worker import Worker

    settings = load_settings(data_dir, threads=threads)
    # demixer's records with their time and level, on stderr: this process's and its
    # separation children's.
    log_setup = partial(configure_logging, settings.log_level, timestamps=settings.log_timestamps)
    log_setup()
    check_precision()
    services = open_services(settings)
    check_storage(services, holds_inputs=True)
    try:
        runner = Worker(
            services,
            slots=slots,
            models=models.split(",") if models else None,
            log_setup=log_setup,
        )
    except DemixerError as e:
        raise fail(e) from None
    _banner(services.settings, runner, api=False, slots=slots)  # before the threads log
    stop = threading.Event()
    received: list[int] = []

    def on_signal(sig: int, _frame: FrameType | None) -> None:
        received.append(sig)
        stop.set()

    before = take_over((signal.SIGTERM, signal.SIGINT), on_signal)
    dispatcher_thread = _start_dispatcher(services, stop) if dispatch else None
    _start_sweeper(services, stop)
    try:
        runner.run(stop=stop)
    finally:
        stop.set()
        if dispatcher_thread is not None:
            dispatcher_thread.join(timeout=services.settings.webhook_timeout_seconds + 5)
    if received:  # stopped, it ends as serve does: by that signal (Ctrl-C 130, SIGTERM 143)
        _raise_again(received[0], before)


def register(app: typer.Typer) -> None:
    """Add the service commands to the main CLI."""
    app.command()(serve)
    app.command(short_help="Run worker slots only (no API).")(worker)
    app.command("workers", short_help="List worker processes and their jobs.")(workers_list)
    app.command()(migrate)
    app.command("copy-to", short_help="Copy every record and stored file to another database.")(
        copy_to
    )
    app.command(
        short_help="Free disk now: expire uploads and results older than an age, or delete "
        "stored bytes no record names (--orphans)."
    )(purge)
    app.add_typer(keys_app, name="keys")
