"""The service commands: ``serve``, ``worker``, ``workers``, ``keys``, ``migrate``.

Each builds one :class:`~demixer.settings.Settings` from its options and the ``DEMIXER_*``
environment, and passes it down; nothing is created at import time.
"""

from __future__ import annotations

import multiprocessing.util
import os
import shutil
import signal
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.padding import Padding
from rich.table import Table

from demixer.cli_output import fail, print_error, print_warning
from demixer.errors import DemixerError, InvalidRequest, exit_code_for

__all__ = ["keys_app", "register"]

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Where the database, storage and signing key live (default: $DEMIXER_DATA_DIR, "
        "else the per-user data directory).",
    ),
]

keys_app = typer.Typer(
    help="Create, list and revoke API keys, and set monthly allowances.",
    no_args_is_help=True,
)
out = Console(soft_wrap=True)


def _settings(data_dir: Path | None, **overrides: Any) -> Any:
    from pydantic import ValidationError

    from demixer.settings import Settings, is_secret, unknown_variables

    for warning in unknown_variables():
        print_warning(warning)
    values = {k: v for k, v in overrides.items() if v is not None}
    if data_dir is not None:
        values["data_dir"] = data_dir
    try:
        return Settings(**values)
    except ValidationError as exc:  # a DEMIXER_* variable (or .env line) that does not parse
        for error in exc.errors():
            name = "DEMIXER_" + "_".join(str(part) for part in error["loc"]).upper()
            message = error["msg"].removeprefix("Value error, ")
            # A secret refused (too short) is still a secret: the error goes to logs.
            shown = "***" if is_secret(str(error["loc"][0])) else repr(error["input"])
            print_error("INVALID_SETTING", f"{name}={shown}: {message}")
        raise typer.Exit(2) from None


def _check_precision() -> None:
    """A ``DEMIXER_PRECISION`` the models would refuse ends ``serve``/``worker`` at start, not
    every job later."""
    from demixer.errors import InvalidSetting
    from demixer.models.precision import requested_precision

    try:
        requested_precision()
    except InvalidSetting as exc:
        raise fail(exc) from None


def _services(settings: Any) -> Any:
    """The services of a ``serve``/``worker``/``keys``/... process, migrated and swept; what
    the operator must fix (a data directory, a URL, a database that does not answer) ends the
    command with one error line."""
    from demixer.service.scratch import sweep_scratch

    _make_data_dir(settings)
    _check_room(settings)
    services = _build(settings)
    _migrate(services, settings)
    sweep_scratch(settings.data_dir)  # spools and downloads of processes that were killed
    services.storage.sweep_partials()  # and the unfinished writes of their uploads
    return services


def _check_storage(services: Any, *, holds_inputs: bool = False) -> None:
    """Storage accepts this process, and with ``holds_inputs`` (a worker) holds the newest
    inputs the database lists: a worker left on another storage than the API's (its default
    local folder, a mistyped URL) would fail every job with "the input file is gone". A
    refusal (no bucket, wrong or no credentials) ends the command with one error line. Storage
    that does not answer now is an outage, which workers ride out holding their jobs and the
    API answers 503: a warning, and the process starts."""
    from sqlalchemy import select

    from demixer.errors import StorageRefused, StorageUnavailable
    from demixer.service.db import retry_unavailable
    from demixer.service.files.lifecycle import FileState
    from demixer.service.schema import File

    settings = services.settings
    where = f"the storage {settings.storage}"
    try:
        services.storage.ping()
    except StorageRefused as exc:
        print_error(exc.code, f"{where} refused this process: {exc.message}")
        raise typer.Exit(1) from None
    except StorageUnavailable as exc:
        print_warning(
            f"{where} does not answer now ({exc.message}); starting anyway: work waits for it"
        )
        return
    if not holds_inputs:
        return
    soon = services.db.clock() + timedelta(minutes=5)  # not about to be swept

    def newest_inputs() -> list[str]:
        with services.db.read() as s:
            return list(
                s.scalars(
                    select(File.storage_key)
                    .where(File.status == FileState.UPLOADED, File.expires_at > soon)
                    .order_by(File.uploaded_at.desc())
                    .limit(3)
                ).all()
            )

    # The database can restart just after the start-up wait found it: wait for it as long
    # again (it was a traceback).
    with _waited_for_database(settings):
        keys = retry_unavailable(
            newest_inputs, within=settings.database_wait_seconds, what="reading the newest inputs"
        )
    try:
        holds = not keys or any(services.storage.exists(key) for key in keys)
    except StorageUnavailable:  # it went away since the ping: as above, start
        return
    if not holds:
        print_error(
            "INVALID_STORAGE_URL",
            f"{where} holds none of the newest inputs the database lists ({', '.join(keys)}): "
            "it is not the storage the API uses; give this worker the API's "
            "DEMIXER_STORAGE_URL",
        )
        raise typer.Exit(2)


def _make_data_dir(settings: Any) -> None:
    """Create the data directory for its owner alone (0700): it holds every account's uploads
    and stems and the database with its webhook secrets, and other users of the machine must
    reach none of them (the signing key inside is 0600 for nothing otherwise). One that exists
    keeps the mode its operator gave it."""
    try:
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        print_error(
            "INVALID_DATA_DIR",
            f"cannot use {settings.data_dir} as the data directory: {exc.strerror or exc} "
            "(--data-dir or DEMIXER_DATA_DIR chooses another)",
        )
        raise typer.Exit(2) from None


def _check_room(settings: Any) -> None:
    """A data directory on a full disk ends the command with one line: SQLite could not even
    open its database there (it was waited for as an outage, then "did not answer: disk I/O
    error"), a new one failed as "cannot create None", and a first key was a traceback. So
    does a SQLite database kept on a disk of its own (``DEMIXER_DATABASE_URL``) that is full."""
    from demixer.errors import StorageFull

    data_dir = settings.data_dir
    if StorageFull.at(data_dir):
        raise fail(
            StorageFull(
                f"the disk under the data directory {data_dir} is full: demixer cannot write "
                "its database or files there; free some space and start again"
            )
        )
    folder = _sqlite_folder(settings.database)
    if folder is not None and folder.is_dir() and StorageFull.at(folder):
        raise fail(
            StorageFull(
                f"the disk under the database's folder {folder} is full: demixer cannot write "
                "its database there (DEMIXER_DATABASE_URL); free some space and start again"
            )
        )


def _build(settings: Any) -> Any:
    from sqlalchemy.exc import ArgumentError

    from demixer.server.compose import build_services
    from demixer.storage import InvalidStorageUrl

    try:
        return build_services(settings)
    except (ImportError, ArgumentError) as exc:  # an unknown dialect or driver, or no URL
        print_error(
            "INVALID_DATABASE_URL",
            f"DEMIXER_DATABASE_URL {_shown_url(settings.database)} cannot be used ({exc}); "
            "demixer runs on SQLite (sqlite:///PATH) or PostgreSQL (postgresql://USER@HOST/DB)",
        )
    except InvalidStorageUrl as exc:
        print_error("INVALID_STORAGE_URL", f"DEMIXER_STORAGE_URL: {exc}")
    except OSError as exc:  # a database file's or storage directory's folder
        print_error(
            "INVALID_PATH",
            f"cannot create {exc.filename}: {exc.strerror or exc} (DEMIXER_DATABASE_URL and "
            "DEMIXER_STORAGE_URL say where the database and the files go)",
        )
    raise typer.Exit(2)


def _migrate(services: Any, settings: Any) -> None:
    """The schema brought up to date, waiting a while for a database started together with
    this process; an existing schema upgraded is said in a warning line."""
    from demixer.service.migrate import migrate

    with _waited_for_database(settings):
        try:
            before, after = migrate(services.db, within=settings.database_wait_seconds)
        except DemixerError as e:  # a later release's schema, another application's
            # database, no room to upgrade: each says what to do
            raise fail(e) from None
    if before is not None and before != after:  # an upgrade is said (a new schema is not):
        # other processes on the same database, still at the old version, may now fail
        print_warning(
            f"the database {_shown_url(settings.database)} was migrated from schema {before} "
            f"to {after}"
        )


@contextmanager
def _waited_for_database(settings: Any) -> Iterator[None]:
    """A database that refuses this process, or still does not answer after the start-up wait
    (``DEMIXER_DATABASE_WAIT_SECONDS``), ends the command with one error line."""
    from sqlalchemy.exc import DBAPIError

    from demixer.service.db import is_refused, is_unavailable

    try:
        yield
    except DBAPIError as exc:
        if is_refused(exc):  # no use waiting: a wrong user, password or database, one that
            # takes no writes, or a SQLite file that is not one or cannot be opened
            print_error(
                "INVALID_DATABASE_URL",
                f"the database {_shown_url(settings.database)} refused this process "
                f"(DEMIXER_DATABASE_URL): {' '.join(str(exc.orig).split())}"
                f"{_read_only_folder(settings.database)}",
            )
            raise typer.Exit(2) from None
        if not is_unavailable(exc):
            raise
        print_error(
            "DATABASE_UNAVAILABLE",
            f"the database {_shown_url(settings.database)} did not answer within "
            f"{settings.database_wait_seconds:g} s (DEMIXER_DATABASE_WAIT_SECONDS): "
            f"{' '.join(str(exc.orig).split())}",
        )
        raise typer.Exit(1) from None


def _read_only_folder(url: str) -> str:
    """`` (FOLDER is read-only)`` when ``url`` is a SQLite file in a folder this process may
    not write: SQLite's own words ("unable to open database file") do not say so, and it
    needs to write its journal beside the file even to read."""
    folder = _sqlite_folder(url)
    if folder is None or not folder.is_dir() or os.access(folder, os.W_OK):
        return ""
    return f" ({folder} is read-only)"


def _sqlite_folder(url: str) -> Path | None:
    """The folder of the SQLite database file ``url`` names (None: not a SQLite file)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    return Path(parsed.database).parent


def _shown_url(url: str) -> str:
    """``url`` without its password, quoted."""
    masked = _masked(url)
    return repr(masked) if masked is not None else "(not a URL)"


def _masked(url: str) -> str | None:
    """A database URL with its password as ``***``; None when it is not a URL."""
    from demixer.service.db import masked_url

    return masked_url(url)


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
    """
    import uvicorn

    from demixer.api.access_log import configure_logging, log_config
    from demixer.server.app import create_app
    from demixer.server.protocol import head_timeout_protocol
    from demixer.service.accounts.keys import SERVE_KEY_NAME, create_key, list_keys
    from demixer.service.worker import Worker

    settings = _settings(
        data_dir, host=host, port=port, workers=workers, local_session=local_session
    )
    # Before the worker and dispatcher threads log; the separation children set it up too.
    log_setup = partial(configure_logging, settings.log_level, timestamps=settings.log_timestamps)
    log_setup()
    if settings.workers > 0:
        _check_precision()
    listening = _listen(settings.host, settings.port)  # before anything starts or is shown
    services = _services(settings)
    _check_storage(services, holds_inputs=settings.workers == 0)
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
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        # Signed URLs' signatures never reach the log.
        log_config=log_config(settings.log_level, timestamps=settings.log_timestamps),
        http=head_timeout_protocol(settings.body_timeout_seconds, settings.cors_origin_list),
        timeout_keep_alive=settings.keep_alive_seconds,
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
                try:
                    yield
                finally:
                    shut_down()
                    if _ends_without_exit_handlers(self._captured_signals, before):
                        # The re-raised signal ends the process before Python's exit handlers
                        # run: multiprocessing's would remove its pymp-* directory (the fork
                        # server's socket) from $TMPDIR, left behind on every stop otherwise.
                        # Only that one: the others may stop what still runs (a slot's child).
                        # Not when they do run (Ctrl-C's KeyboardInterrupt): multiprocessing's
                        # then found the directory gone and printed a traceback at every Ctrl-C.
                        shutil.rmtree(multiprocessing.util.get_temp_dir(), ignore_errors=True)

    return CleanServer(config)


def _ends_without_exit_handlers(captured: Sequence[int], before: dict[int, Any]) -> bool:
    """Whether uvicorn raising ``captured`` again (the last one first) ends the process at once,
    by the default action, rather than through Python's exit (KeyboardInterrupt) or not at all
    (an ignored signal). ``before``: each signal's handler before uvicorn's."""
    for sig in reversed(captured):
        handler = before.get(sig)
        if handler == signal.SIG_IGN:
            continue  # raised and ignored: the next one decides
        return handler == signal.SIG_DFL
    return False


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
        ("database", _masked(settings.database) or settings.database),
        ("storage", settings.storage),
        ("workers", runs),
    ]
    for label, value in lines:
        out.print(f"  {label:<9} {value}", highlight=False)
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

    settings = _settings(data_dir, threads=threads)
    # demixer's records with their time and level, on stderr: this process's and its
    # separation children's.
    log_setup = partial(configure_logging, settings.log_level, timestamps=settings.log_timestamps)
    log_setup()
    _check_precision()
    services = _services(settings)
    _check_storage(services, holds_inputs=True)
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
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    dispatcher_thread = _start_dispatcher(services, stop) if dispatch else None
    _start_sweeper(services, stop)
    try:
        runner.run(stop=stop)
    finally:
        stop.set()
        if dispatcher_thread is not None:
            dispatcher_thread.join(timeout=services.settings.webhook_timeout_seconds + 5)


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.0f} h ago"


def workers_list(data_dir: DataDir = None) -> None:
    """List worker processes (live ones, then those stopped or lost in the last day) and the
    jobs they run now."""
    from demixer.service.worker.registry import list_workers

    settings = _settings(data_dir)
    services = _services(settings)
    found = list_workers(services.db, settings)
    if not found:
        out.print("no worker has registered in the last day", highlight=False)
        return
    now = services.db.clock()
    rows = [
        (
            w.id,
            w.state,
            w.device,
            ", ".join(w.models),
            str(w.slots),
            w.version,
            _ago((now - w.last_seen_at).total_seconds()),
        )
        for w in found
    ]
    table = _table(
        ("id", "state", "device", "models", "slots", "version", "last seen"),
        rows,
        wrap={"device": 6, "models": 15},
    )
    out.print(table)
    live = [w for w in found if w.state == "live"]
    runs = sorted({m for w in live for m in w.models})
    out.print(f"{len(live)} live worker(s) run: {', '.join(runs) or 'nothing'}", highlight=False)
    running = _running_jobs(services, [w.id for w in live])
    if running:
        out.print("running now:", highlight=False)
        out.print(_table(("job", "model", "done", "worker", "slot"), running, wrap={"model": 20}))


def _running_jobs(services: Any, worker_ids: Sequence[str]) -> list[tuple[str, ...]]:
    """``(job, model, progress, worker, slot)`` of each job a live worker holds now (its
    lease owner is one of the worker's slots: :func:`~demixer.service.worker.registry.slot_of`).
    """
    from sqlalchemy import select

    from demixer.service.jobs.queue import IN_PROGRESS
    from demixer.service.schema import Job
    from demixer.service.worker.registry import slot_of

    with services.db.read() as s:
        jobs = s.execute(
            select(Job.id, Job.engine_model, Job.progress, Job.lease_owner)
            .where(Job.status == IN_PROGRESS)
            .order_by(Job.created_at)
        ).all()
    rows: list[tuple[str, ...]] = []
    for job_id, model, progress, owner in jobs:
        for worker_id in worker_ids:
            slot = slot_of(worker_id, owner or "")
            if slot is not None:
                rows.append((job_id, model, f"{progress or 0.0:.0%}", worker_id, str(slot)))
    return rows


def migrate(data_dir: DataDir = None) -> None:
    """Create or upgrade the database schema."""
    settings = _settings(data_dir)
    _services(settings)
    out.print(f"database at {_masked(settings.database)} is up to date", highlight=False)


@keys_app.command("create", short_help="Create a key (and an account unless --account).")
def keys_create(
    data_dir: DataDir = None,
    account: Annotated[
        str | None, typer.Option("--account", help="Add the key to this account.")
    ] = None,
    name: Annotated[str, typer.Option("--name", help="A label for the key.")] = "",
    scopes: Annotated[
        str | None,
        typer.Option(
            "--scopes",
            help="Comma-separated scopes (default: all): audio:separate (submit, cancel, "
            "delete requests), files:write (upload, delete files), files:read (files and "
            "results), models:read (list models).",
        ),
    ] = None,
    minutes: Annotated[
        int | None,
        typer.Option(
            "--minutes",
            help="The new account's allowance of audio minutes per calendar month (UTC); "
            "default: unlimited. Change it later with `keys quota`.",
        ),
    ] = None,
) -> None:
    """Create a key (and a new account unless --account); the key is the last line printed."""
    from demixer.service.accounts.keys import ALL_SCOPES, create_key

    services = _services(_settings(data_dir))
    chosen = tuple(s.strip() for s in scopes.split(",")) if scopes else ALL_SCOPES
    try:
        account_id, secret = create_key(
            services.db, account_id=account, scopes=chosen, name=name, monthly_minutes=minutes
        )
    except DemixerError as e:
        raise fail(e) from None
    allowance = "" if minutes is None else f", {minutes} audio minutes a month"
    out.print(f"account {account_id}, scopes {' '.join(chosen)}{allowance}", highlight=False)
    out.print(secret, highlight=False)


@keys_app.command("quota", short_help="Set an account's audio minutes a month, or its storage cap.")
def keys_quota(
    account: Annotated[str, typer.Argument(help="The account's id (from `keys list`).")],
    minutes: Annotated[
        str | None,
        typer.Option(
            "--minutes",
            help="Audio minutes its requests may use per calendar month (UTC), or `none` "
            "for unlimited.",
        ),
    ] = None,
    storage_bytes: Annotated[
        str | None,
        typer.Option(
            "--storage-bytes",
            help="The most bytes its uploads may hold at once, in place of "
            "DEMIXER_MAX_ACCOUNT_STORAGE_BYTES: a whole number of bytes, `none` for no cap, "
            "or `default` for the setting's again.",
        ),
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Set an account's allowance of audio minutes per calendar month (UTC), or its cap on
    the bytes its uploads hold, in force at once: a request whose input does not fit in what
    is left is refused (402 QUOTA_EXCEEDED), an upload that does not fit in its storage too
    (413 STORAGE_QUOTA_EXCEEDED)."""
    from demixer.service.accounts.quota import set_quota, set_storage_cap

    if minutes is None and storage_bytes is None:
        raise fail(InvalidRequest("give --minutes, --storage-bytes or both"))
    allowance = cap = None
    if minutes is not None:
        wanted = minutes.strip().lower()
        if wanted != "none" and not wanted.isdigit():
            message = f"--minutes is a whole number of minutes or `none`, not {minutes!r}"
            raise fail(InvalidRequest(message))
        allowance = None if wanted == "none" else int(wanted)
    if storage_bytes is not None:
        wanted = storage_bytes.strip().lower()
        if wanted not in ("none", "default") and not wanted.isdigit():
            message = (
                "--storage-bytes is a whole number of bytes, `none` or `default`, "
                f"not {storage_bytes!r}"
            )
            raise fail(InvalidRequest(message))
        if wanted == "default":
            cap = None  # the setting's again
        elif wanted == "none":
            cap = 0
        else:
            cap = int(wanted)
    db = _services(_settings(data_dir)).db
    try:
        if minutes is not None:
            set_quota(db, account, allowance)
        if storage_bytes is not None:
            set_storage_cap(db, account, cap)
    except DemixerError as e:
        raise fail(e) from None
    if minutes is not None:
        said = "unlimited" if allowance is None else f"{allowance} audio minutes a month"
        out.print(f"account {account}: {said}", highlight=False)
    if storage_bytes is not None:
        if cap is None:
            said = "the server's storage cap (DEMIXER_MAX_ACCOUNT_STORAGE_BYTES)"
        else:
            said = "no storage cap" if cap == 0 else f"uploads hold at most {cap} bytes"
        out.print(f"account {account}: {said}", highlight=False)


@keys_app.command("list", short_help="List keys by account, with each allowance.")
def keys_list(data_dir: DataDir = None) -> None:
    """List keys by account (never their secrets), with each account's monthly allowance:
    minutes used or queued this month and when it resets; and its own storage cap, if it
    has one."""
    from demixer.service.accounts.keys import ALL_SCOPES, list_keys
    from demixer.service.accounts.quota import account_quotas, account_storage_caps

    db = _services(_settings(data_dir)).db
    keys = list_keys(db)
    if not keys:
        out.print("no keys yet: `demixer keys create` makes one", highlight=False)
        return
    quotas = account_quotas(db)
    caps = account_storage_caps(db)
    accounts: dict[str, list[Any]] = {}
    for k in keys:
        accounts.setdefault(k.account_id, []).append(k)
    for account, owned in accounts.items():
        out.print(f"account {account}", highlight=False, style="bold")
        if account in quotas:
            out.print("  " + _allowance(quotas[account]), highlight=False)
        if account in caps:  # its own, in place of DEMIXER_MAX_ACCOUNT_STORAGE_BYTES
            cap = caps[account]
            said = f"at most {cap} bytes" if cap else "no cap"
            out.print(f"  storage: {said} (its own)", highlight=False)
        rows = [
            (
                k.id,
                k.prefix + "…",
                _scopes(k, ALL_SCOPES),
                k.name,
                k.created_at[:10],
            )
            for k in owned
        ]
        table = _table(
            # The day in UTC, said so: east of UTC it is often the local day before.
            ("key id", "prefix", "scopes", "name", "created (UTC)"),
            rows,
            wrap={"scopes": 14, "name": 6},
            styles=["dim" if k.revoked else None for k in owned],
            width=out.width - 2,  # indented under its account
        )
        out.print(Padding(table, (0, 0, 1, 2)), width=out.width)


def _allowance(state: Any) -> str:
    """An account's monthly allowance and where it stands (the line under its heading)."""
    used = (state.used_seconds + state.held_seconds) / 60
    return (
        f"allowance {state.minutes} audio minutes a month: {used:.1f} used or queued, "
        f"resets {state.resets_at:%Y-%m-%d}"
    )


def _scopes(key: Any, every: tuple[str, ...]) -> str:
    """A key's scopes in a word or a few: ``revoked`` (it can do nothing), ``all``, or each."""
    if key.revoked:
        return "revoked"
    return "all" if set(key.scopes) == set(every) else " ".join(key.scopes)


def _table(
    columns: tuple[str, ...],
    rows: Sequence[tuple[str, ...]],
    wrap: dict[str, int] | None = None,
    styles: list[str | None] | None = None,
    width: int | None = None,
) -> Table:
    """A borderless table that fits ``width`` (default: the terminal): ids and times never
    break and keep their full width; the ``wrap`` columns (name -> narrowest useful width)
    share what is left and wrap between words."""
    wrap = wrap or {}
    widest = [max([len(name), *(len(row[i]) for row in rows)]) for i, name in enumerate(columns)]
    fixed = sum(w for name, w in zip(columns, widest, strict=True) if name not in wrap)
    room = (width or out.width) - fixed - 2 * (len(columns) - 1)
    wanted = {name: w for name, w in zip(columns, widest, strict=True) if name in wrap}
    # Never keep a column wider than its longest word: scopes named one by one ("files:read
    # models:read") need 11, and the 3 more of its 14 let a key's name keep its words whole.
    least = {
        name: min(wrap[name], max(len(word) for row in rows for word in [name, *row[i].split()]))
        for i, name in enumerate(columns)
        if name in wrap
    }
    share = _share(room, wanted, least)
    table = Table(
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
        header_style="bold",
    )
    for name, w in zip(columns, widest, strict=True):
        if name in wrap:
            table.add_column(name, overflow="fold", width=share[name])
        else:
            table.add_column(name, no_wrap=True, min_width=w)
    for row, style in zip(rows, styles or [None] * len(rows), strict=True):
        table.add_row(*row, style=style)
    return table


def _share(room: int, wanted: dict[str, int], least: dict[str, int]) -> dict[str, int]:
    """``room`` characters split among wrapping columns: each gets what it needs when all fit,
    else its ``least`` and a share of the rest in proportion to what it lacks."""
    if sum(wanted.values()) <= room:
        return wanted
    share = {name: min(least[name], need) for name, need in wanted.items()}
    spare = max(0, room - sum(share.values()))
    extra = {name: need - share[name] for name, need in wanted.items()}
    total = sum(extra.values()) or 1
    return {name: share[name] + spare * extra[name] // total for name in wanted}


@keys_app.command("revoke", short_help="Revoke a key: refused everywhere within 2 s.")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (from `keys list`).")],
    data_dir: DataDir = None,
) -> None:
    """Revoke a key: every API process refuses it (401) within DEMIXER_KEY_CACHE_SECONDS, 2 s."""
    from demixer.service.accounts.keys import revoke_key

    try:
        revoke_key(_services(_settings(data_dir)).db, key_id)
    except DemixerError as e:
        raise fail(e) from None
    out.print(f"revoked {key_id}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add the service commands to the main CLI."""
    app.command()(serve)
    app.command(short_help="Run worker slots only (no API).")(worker)
    app.command("workers", short_help="List worker processes and their jobs.")(workers_list)
    app.command()(migrate)
    app.add_typer(keys_app, name="keys")
