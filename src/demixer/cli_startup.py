"""What every service command (``serve``, ``worker``, ``workers``, ``keys``, ``migrate``,
``purge``) does before its own work: one :class:`~demixer.settings.Settings` built from its
options and the ``DEMIXER_*`` environment (nothing is created at import time), the data
directory, database and storage checked, the schema migrated and the scratch of killed
processes swept. What the operator must fix ends the command with one error line, never a
traceback.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from demixer.cli_output import fail, print_error, print_warning
from demixer.errors import DemixerError

__all__ = [
    "DataDir",
    "check_precision",
    "check_storage",
    "load_settings",
    "masked",
    "open_services",
]

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Where the database, storage and signing key live (default: $DEMIXER_DATA_DIR, "
        "else the per-user data directory).",
    ),
]


def load_settings(data_dir: Path | None, **overrides: Any) -> Any:
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


def check_precision() -> None:
    """A ``DEMIXER_PRECISION`` the models would refuse ends ``serve``/``worker`` at start, not
    every job later."""
    from demixer.errors import InvalidSetting
    from demixer.models.precision import requested_precision

    try:
        requested_precision()
    except InvalidSetting as exc:
        raise fail(exc) from None


def open_services(settings: Any) -> Any:
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


def check_storage(services: Any, *, holds_inputs: bool = False) -> None:
    """Storage accepts this process, and with ``holds_inputs`` (a worker) holds some of the
    newest or oldest inputs the database lists: a worker left on another storage than the
    API's (its default local folder, a mistyped URL) would fail every job with "the input file
    is gone". The oldest count too: a bucket restored from a backup older than the database
    lacks the uploads made since, not those before (and answers 404 for the missing ones). A
    refusal (no bucket, wrong or no credentials) ends the command with one error line. Storage
    that does not answer now is an outage, which workers ride out holding their jobs and the
    API answers 503: a warning, and the process starts."""
    from sqlalchemy import select

    from demixer.errors import StorageRefused, StorageUnavailable
    from demixer.service.db import retry_unavailable
    from demixer.service.files.states import FileState
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
        kept = select(File.storage_key).where(
            File.status == FileState.UPLOADED, File.expires_at > soon
        )
        with services.db.read() as s:
            newest = s.scalars(kept.order_by(File.uploaded_at.desc()).limit(3)).all()
            oldest = s.scalars(kept.order_by(File.uploaded_at).limit(3)).all()
        return list(dict.fromkeys([*newest, *oldest]))

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
            f"{where} holds none of the newest and oldest inputs the database lists "
            f"({', '.join(keys)}): "
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
    shown = masked(url)
    return repr(shown) if shown is not None else "(not a URL)"


def masked(url: str) -> str | None:
    """A database URL with its password as ``***``; None when it is not a URL."""
    from demixer.service.db import masked_url

    return masked_url(url)
