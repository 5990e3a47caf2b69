"""Schema migrations (Alembic), run by ``demixer migrate`` and at service start."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text
from sqlalchemy.exc import DBAPIError

from demixer.errors import DemixerError, InvalidDatabaseUrl, StorageFull
from demixer.service.db import Database, is_disk_full, masked_url, retry_unavailable
from demixer.service.schema import Base

__all__ = ["MIGRATION_LOCK", "SchemaTooNew", "alembic_config", "migrate"]


class SchemaTooNew(DemixerError):
    """The database's schema is at a revision this release does not know: a later release
    upgraded it (the software was rolled back, or an old process shares the database)."""

    code = "SCHEMA_TOO_NEW"


def alembic_config() -> Config:
    """An Alembic config pointing at the migrations shipped inside the package."""
    config = Config()
    config.set_main_option(
        "script_location", str(resources.files("demixer.service") / "migrations")
    )
    return config


#: PostgreSQL advisory lock key held while migrating ("demixer" in ASCII, as an integer).
MIGRATION_LOCK = 0x64656D69786572


#: How long :func:`migrate` keeps trying while the database is unreachable or locked (a
#: process started together with its database, or with others on a new SQLite file).
WAIT_SECONDS = 60.0


def migrate(
    db: Database, revision: str = "head", *, within: float = WAIT_SECONDS
) -> tuple[str | None, str | None]:
    """Bring the database's schema to ``revision`` (idempotent); returns the schema revision
    found and the one left (None: no schema yet), so the caller can say what changed.

    Every ``serve`` and ``worker`` process migrates at start; on PostgreSQL they take turns
    (an advisory lock held to the end of the migration's transaction), so processes starting
    together on a new database do not all create the same tables; the later ones find the
    schema at ``revision`` and do nothing. On SQLite the write lock, taken up front
    (``BEGIN IMMEDIATE``), does the same. A database that is not up yet, or a new SQLite file
    still being switched to WAL by another process ("database is locked"), is waited for up to
    ``within`` seconds (:data:`WAIT_SECONDS`; ``DEMIXER_DATABASE_WAIT_SECONDS`` for the CLI):
    the migration is one transaction, so trying again is safe.

    Raises:
        SchemaTooNew: the schema is at a revision a later release made; nothing is changed.
        InvalidDatabaseUrl: the database is another application's; nothing is changed.
        StorageFull: the database's disk has no room for the migration; nothing is changed.
    """
    return retry_unavailable(
        lambda: _upgrade(db, revision), within=within, what="migrating", max_wait=2.0
    )


def _upgrade(db: Database, revision: str) -> tuple[str | None, str | None]:
    try:
        return _upgrade_once(db, revision)
    except DBAPIError as exc:
        if not is_disk_full(exc):
            raise
        # Not an outage to wait out: said at once, and what it needs (a SQLite migration
        # copies a table whole while it runs).
        raise StorageFull(
            "the database's disk has no room to upgrade its schema (a table is copied while "
            "it runs); nothing was changed: free some space and start again"
        ) from None


def _upgrade_once(db: Database, revision: str) -> tuple[str | None, str | None]:
    config = alembic_config()
    with (
        db.engine.connect() as connection,
        _foreign_keys_off(connection, db.dialect),
        connection.execution_options(immediate=True).begin(),
    ):
        if db.dialect == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        before = MigrationContext.configure(connection).get_current_revision()
        _check_known(config, before)
        if before is None:
            _check_ours(connection, db.url)
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
        # A database this process may read but not write (a standby a failover left the URL
        # on, a read-only user) started every process, whose every write then failed (500s,
        # a worker logging a traceback a second): a write here says so at start.
        connection.execute(text("UPDATE alembic_version SET version_num = version_num"))
        return before, MigrationContext.configure(connection).get_current_revision()


@contextmanager
def _foreign_keys_off(connection: Connection, dialect: str) -> Iterator[None]:
    """SQLite's foreign keys off while ``connection`` migrates, on again after.

    Alembic changes a SQLite column by copying its table and dropping the old one, and with
    foreign keys on, the drop deletes every row that references it ``ON DELETE CASCADE``:
    upgrading to 0005 deleted every job's log and webhook deliveries, those still to be sent
    too. The pragma does nothing inside a transaction, so it goes to the driver's connection
    before the migration's begins.
    """
    if dialect != "sqlite":
        yield
        return
    raw = connection.connection.driver_connection
    assert raw is not None  # a checked-out connection always has one
    raw.execute("PRAGMA foreign_keys=OFF")
    try:
        yield
    finally:
        raw.execute("PRAGMA foreign_keys=ON")  # the pool hands it to others next


def _check_ours(connection: Connection, url: str) -> None:
    """Refuse a database with no demixer schema that holds tables of demixer's names (a URL
    pointing at another application's database): creating them failed deep inside Alembic
    ("relation accounts already exists", a traceback; on SQLite it was waited for as an
    outage), and tables of other names would have been mixed into it."""
    taken = sorted(set(inspect(connection).get_table_names()) & set(Base.metadata.tables))
    if taken:
        raise InvalidDatabaseUrl(
            f"the database {masked_url(url)!r} holds tables "
            f"named as demixer's ({', '.join(taken)}) but no demixer schema: it is another "
            "application's; give demixer a database of its own (DEMIXER_DATABASE_URL)"
        )


def _check_known(config: Config, revision: str | None) -> None:
    """Refuse a schema that a later release upgraded: Alembic cannot even read the way back
    from it (it raised "Can't locate revision" from deep inside, a traceback), and this
    release's code would misread its tables."""
    scripts = ScriptDirectory.from_config(config)
    if revision is None or revision in {script.revision for script in scripts.walk_revisions()}:
        return
    raise SchemaTooNew(
        f"the database's schema is at revision {revision}, made by a later demixer release; "
        f"this release knows revisions up to {scripts.get_current_head()}: run the later "
        "release, or restore the backup taken before it upgraded the database"
    )
