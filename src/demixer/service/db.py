"""Database engines and transactions (SQLite embedded by default, PostgreSQL at scale).

SQLite runs in WAL mode so readers never block the writer; write transactions start with
``BEGIN IMMEDIATE`` so two workers claiming at once serialise on the database lock instead of
failing on a lock upgrade halfway through.

On PostgreSQL many processes on several machines share the leases, so "now" must be one clock
for all of them: :class:`DatabaseClock` follows the server's ``clock_timestamp()`` (the local
clock plus an offset measured over a round trip and refreshed now and then), so a worker whose
machine clock is off by minutes still agrees with the others on when a lease expires.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, CursorResult, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from demixer.service.schema import Base

__all__ = [
    "Database",
    "DatabaseClock",
    "OutageNotice",
    "is_disk_full",
    "is_read_only",
    "is_refused",
    "is_unavailable",
    "masked_url",
    "retry_unavailable",
    "rows_changed",
    "utcnow",
]

log = logging.getLogger("demixer.db")

T = TypeVar("T")


# libpq and psycopg also take the password as a query parameter
# (``postgresql://demixer@db/demixer?password=...``), which SQLAlchemy does not hide.
_QUERY_PASSWORD = re.compile(r"(?i)([?&](?:ssl)?password=)[^&]*")


def masked_url(url: str) -> str | None:
    """A database URL as it may be shown (a banner, an error line): its password as ``***``,
    in its user part or its query; None when it is not a URL."""
    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return None
    return _QUERY_PASSWORD.sub(r"\1***", shown)


def rows_changed(result: Any) -> int:
    """Rows a conditional UPDATE (or DELETE) matched: how every owner of a state tells that a
    transition happened (``Session.execute`` is typed as returning a plain Result)."""
    return int(cast(CursorResult[Any], result).rowcount)


def utcnow() -> datetime:
    """Now, UTC, to the microsecond."""
    return datetime.now(UTC)


_SQLITE_FULL = 13  # SQLITE_FULL: "database or disk is full"
_PG_DISK_FULL = "53100"  # SQLSTATE disk_full


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` is the database refusing a write because its disk is full (SQLite's
    ``SQLITE_FULL``, PostgreSQL's ``disk_full``): nothing was written, retry once there is room.

    The error raised while handling another counts too: Alembic's clean-up after a SQLite
    table copy that filled the disk fails ("no such table: _alembic_tmp_jobs": SQLite had
    rolled the copy back) and hides the full disk behind it.
    """
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, DBAPIError):
            orig = seen.orig
            if getattr(orig, "sqlite_errorcode", None) == _SQLITE_FULL:
                return True
            if getattr(orig, "sqlstate", None) == _PG_DISK_FULL or "disk is full" in str(orig):
                return True
        seen = seen.__cause__ or seen.__context__
    return False


def is_nul_text(exc: BaseException) -> bool:
    """Whether ``exc`` is PostgreSQL refusing a text value holding a NUL character (SQLite
    stores it): the request's fault, refused before anything was written."""
    return isinstance(exc, DBAPIError) and "cannot contain NUL" in str(exc.orig)


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database cannot be reached now (down, restarting, connection
    cut, SQLite locked), as opposed to a bug or a constraint: trying again later may work."""
    if not isinstance(exc, DBAPIError):
        return False
    return exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError)


class OutageNotice:
    """Says a database outage began, once, and that it ended, once: a loop that polls every
    half second would otherwise log a line per poll (157 in a 75 s outage)."""

    def __init__(self, logger: logging.Logger, who: str) -> None:
        self.logger, self.who, self.down = logger, who, False

    def failed(self, exc: BaseException) -> None:
        """A call failed because the database is unavailable."""
        if not self.down:
            reason = " ".join(str(getattr(exc, "orig", exc)).split())
            self.logger.warning(
                "%s: the database is unavailable (%s); retrying until it is back", self.who, reason
            )
        self.down = True

    def answered(self) -> None:
        """A call reached the database."""
        if self.down:
            self.logger.warning("%s: the database is back", self.who)
        self.down = False


# The server answered and refused this connection for good: a wrong password, user or
# database name, or no pg_hba.conf line for this host. psycopg gives these no SQLSTATE.
_REFUSED = re.compile(
    r"FATAL:\s+(password authentication failed|role \"[^\"]*\" does not exist|database "
    r"\"[^\"]*\" does not exist|no pg_hba\.conf entry|\w+ authentication failed)"
    r"|no password supplied"
)


# SQLite's primary result codes for a database file this process cannot use as one: it
# cannot open it (a read-only folder: SQLite writes its WAL and shared memory beside the file),
# may not write it, or the file is not a SQLite database (or is damaged). Waiting changes none.
_SQLITE_UNUSABLE = frozenset({8, 11, 14, 26})  # READONLY, CORRUPT, CANTOPEN, NOTADB
# PostgreSQL's SQLSTATEs for a database that lets this process read but not write: a standby
# or a read-only database (read_only_sql_transaction), a user without the rights.
_PG_NO_WRITES = frozenset({"25006", "42501"})


def is_refused(exc: BaseException) -> bool:
    """Whether ``exc`` is the database refusing this process's connections for a reason that
    waiting will not change (:data:`_REFUSED`; a SQLite file this process cannot use,
    :data:`_SQLITE_UNUSABLE`; its writes, :data:`_PG_NO_WRITES`): the settings are wrong,
    say so at once."""
    if not isinstance(exc, DBAPIError):
        return False
    if getattr(exc.orig, "sqlstate", None) in _PG_NO_WRITES:
        return True
    code = getattr(exc.orig, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF in _SQLITE_UNUSABLE:  # extended codes too
        return True
    return bool(_REFUSED.search(str(exc.orig)))


_SQLITE_READONLY = 8
_SQLITE_READONLY_DBMOVED = 1032  # the file was deleted or moved away while open


def is_read_only(exc: BaseException) -> bool:
    """Whether ``exc`` is the database refusing a write it is reachable for: a PostgreSQL
    standby or read-only database, a user without write rights (:data:`_PG_NO_WRITES`), a
    SQLite file opened read-only (its mode or its filesystem). At start-up that is a wrong
    setting (:func:`is_refused`); while running it is an outage, answered 503."""
    if not isinstance(exc, DBAPIError):
        return False
    if getattr(exc.orig, "sqlstate", None) in _PG_NO_WRITES:
        return True
    code = getattr(exc.orig, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF == _SQLITE_READONLY


class _ReadOnlyWatch:
    """Replaces the connections that met a read-only database, and keeps none opened while it
    may still be one, so that the first writes once it takes them again succeed.

    A connection that met it keeps its session's read-only default (PostgreSQL) or its file
    opened read-only (SQLite) after the database takes writes again, and only a new connection
    reaches the writable primary after a failover: without this the server answered 503 until
    it was restarted. One opened meanwhile that only read would answer one more 503 at its
    first write. So from a refused write until a write commits, every connection is closed
    when it is given back. A SQLite file moved away is left alone: reconnecting would make a
    new, empty one.
    """

    def __init__(self, engine: Engine) -> None:
        self.suspect = False  # a write was refused as read-only; none has committed since
        event.listen(engine, "handle_error", self.failed)
        event.listen(engine, "commit", self.committed)
        event.listen(engine, "checkin", self.given_back)

    def failed(self, context: Any) -> None:
        exc = context.sqlalchemy_exception
        code = getattr(getattr(exc, "orig", None), "sqlite_errorcode", None)
        if exc is not None and is_read_only(exc) and code != _SQLITE_READONLY_DBMOVED:
            self.suspect = True
            context.is_disconnect = True  # this connection and the pool's older ones go

    def committed(self, _conn: Any) -> None:
        self.suspect = False

    def given_back(self, _dbapi_connection: Any, record: Any) -> None:
        if self.suspect and record.dbapi_connection is not None:
            record.invalidate()  # a new connection at its next checkout


class _OutageWatch:
    """When this process last found the database back after losing it (a connection cut, a
    connect that failed): the queue judges no lease for a while after that (see
    :meth:`Database.seconds_since_outage`).

    A restart cuts every pooled connection, so the first use after it meets a dead one
    (``pool_pre_ping`` or the statement fails) and then connects anew: that connect is the
    moment the database came back, whether or not this process tried to use it meanwhile.
    """

    def __init__(self, engine: Engine) -> None:
        self.down = False
        self.back_at: float | None = None  # time.monotonic()
        event.listen(engine, "handle_error", self.failed)
        event.listen(engine, "connect", self.connected)

    def failed(self, context: Any) -> None:
        # A connection lost, or none made (no connection: the connect itself failed); not a
        # statement's own error (a deadlock, a timeout) on a connection that still works.
        if context.is_disconnect or context.connection is None:
            self.down = True

    def connected(self, _dbapi_connection: Any, _record: Any) -> None:
        if self.down:
            self.down = False
            self.back_at = time.monotonic()


def retry_unavailable(
    call: Callable[[], T],
    *,
    within: float,
    what: str,
    stop: threading.Event | None = None,
    first_wait: float = 0.2,
    max_wait: float = 5.0,
    read_only: bool = False,
) -> T:
    """``call()``, tried again with backoff while the database is unavailable.

    Args:
        call: one complete transaction (it must be safe to run again after a failure).
        within: seconds after which the last error is raised.
        what: what is being done, for the log.
        stop: when set, no more retries (the last error is raised).
        first_wait: seconds before the first retry; doubled up to ``max_wait``.
        read_only: a database that takes no writes (:func:`is_read_only`) is waited for too:
            while running, that is a failover under way and the work done is worth keeping;
            at start-up (False) it is a wrong setting, raised at once.
    """
    deadline = time.monotonic() + within
    wait = first_wait
    while True:
        try:
            return call()
        except DBAPIError as exc:
            left = deadline - time.monotonic()
            refused = is_refused(exc) and not (read_only and is_read_only(exc))
            if not is_unavailable(exc) or refused or left <= 0:
                raise
            if stop is not None and stop.is_set():
                raise
            reason = " ".join(str(exc.orig).split())  # psycopg's hint is a second line
            log.warning("%s: the database is unavailable (%s); retrying", what, reason)
            pause = min(wait, left)
            if stop is not None:
                stop.wait(pause)
            else:
                time.sleep(pause)
            wait = min(wait * 2, max_wait)


class DatabaseClock:
    """ "Now" by the database server's clock: ``local() + offset``, for leases shared by
    machines whose own clocks disagree.

    The offset is measured with ``SELECT clock_timestamp()`` against the local clock at the
    round trip's midpoint (the best of a few tries), on first use and again every
    ``refresh_seconds`` (by the caller that finds it due; the others keep the old offset). While
    the database is unreachable the last offset stays in use (0 before the first measurement).

    Args:
        engine: the PostgreSQL engine.
        local: the local clock (tests pass a skewed one).
        refresh_seconds: how often the offset is measured again.
    """

    def __init__(
        self,
        engine: Engine,
        local: Callable[[], datetime] = utcnow,
        *,
        refresh_seconds: float = 60.0,
    ) -> None:
        self.engine = engine
        self.local = local
        self.refresh_seconds = refresh_seconds
        self.offset = timedelta(0)
        self.measured = False
        self._due = 0.0  # time.monotonic() of the next measurement
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        if time.monotonic() >= self._due and self._lock.acquire(blocking=not self.measured):
            try:
                if time.monotonic() >= self._due:
                    self.refresh()
            finally:
                self._lock.release()
        return self.local() + self.offset

    def refresh(self) -> None:
        """Measure the offset now (errors are logged; the old offset stays)."""
        try:
            samples = []
            with self.engine.connect() as conn:
                for _ in range(3):
                    before = self.local()
                    server = conn.execute(text("SELECT clock_timestamp()")).scalar_one()
                    after = self.local()
                    samples.append((after - before, server - (before + (after - before) / 2)))
        except DBAPIError as exc:
            # Unmeasured: try again soon; measured: the offset drifts slowly, keep it a while.
            self._due = time.monotonic() + (5.0 if self.measured else 1.0)
            log.warning("measuring the database clock failed (%s); keeping the last offset", exc)
            return
        _rtt, self.offset = min(samples)
        self.measured = True
        self._due = time.monotonic() + self.refresh_seconds


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own is deferred-only).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_begin(conn: Any) -> None:
    options = conn.get_execution_options()
    if options.get("snapshot", False):
        return  # Database.snapshot(): each statement on its own, no transaction
    conn.exec_driver_sql("BEGIN IMMEDIATE" if options.get("immediate", False) else "BEGIN")


class Database:
    """Engines and session factories for one database URL.

    Args:
        url: SQLAlchemy URL (``sqlite:///path``, ``postgresql+psycopg://…``).
        clock: returns "now" (UTC); tests pass a clock they can move. Default: ``local_time``
            on SQLite (one machine), the server's clock on other dialects
            (:class:`DatabaseClock`).
        local_time: this machine's clock (tests pass a skewed one).
    """

    def __init__(
        self,
        url: str,
        clock: Callable[[], datetime] | None = None,
        *,
        local_time: Callable[[], datetime] = utcnow,
    ) -> None:
        self.url = url
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite":
            if parsed.database:
                # Its user's alone, as the data directory: the webhook secrets are in it.
                Path(parsed.database).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # No limit on connections (each is a file handle): a read made in the event loop
            # (api/lanes.py) must never wait for the pool. With SQLAlchemy's default of 15,
            # 15 requests waiting in worker threads for the write lock (held a few seconds by
            # another process) took them all, and a status read then held up the event loop,
            # and every request of the process, until one came back.
            engine = create_engine(
                url,
                hide_parameters=True,
                connect_args={"check_same_thread": False, "timeout": 30},
                max_overflow=-1,
            )
            event.listen(engine, "connect", _sqlite_pragmas)
            event.listen(engine, "begin", _sqlite_begin)
        else:
            # connect_timeout: an unreachable server (not a refused port) fails a request in
            # seconds instead of hanging it; keepalives notice a silently dead peer.
            args: dict[str, Any] = {}
            if self.dialect == "postgresql":
                args = {"connect_timeout": 5, "keepalives": 1, "keepalives_idle": 30}
            engine = create_engine(url, hide_parameters=True, pool_pre_ping=True, connect_args=args)
        # hide_parameters: a failed statement's error (logged with its traceback) names its
        # SQL but not the values bound to it, which may be a webhook's whsec_ secret, a signed
        # URL or an audio_url's token: logs are shipped where secrets must not go.
        _ReadOnlyWatch(engine)
        # SQLite is a file on this machine: "unavailable" there is a lock held, never an outage
        # that every process sat out together.
        self._outage = _OutageWatch(engine) if self.dialect != "sqlite" else None
        self.engine: Engine = engine
        if clock is None:
            clock = local_time if self.dialect == "sqlite" else DatabaseClock(engine, local_time)
        self.clock = clock
        self._read = sessionmaker(engine, expire_on_commit=False)
        self._write = sessionmaker(engine.execution_options(immediate=True), expire_on_commit=False)
        # service.prepared.prepared(): statements compiled for this database, by statement.
        self.prepared_reads: dict[object, Any] = {}
        # SQLite: no BEGIN (pysqlite's own autocommit mode, see _sqlite_pragmas); elsewhere the
        # driver's autocommit (no BEGIN and ROLLBACK round trips).
        self._snapshot = engine.execution_options(
            **(
                {"snapshot": True}
                if self.dialect == "sqlite"
                else {"isolation_level": "AUTOCOMMIT"}
            )
        )

    def seconds_since_outage(self) -> float | None:
        """Seconds since this process found the database back after losing it (None: it
        never lost it)."""
        if self._outage is None or self._outage.back_at is None:
            return None
        return time.monotonic() - self._outage.back_at

    def create_all(self) -> None:
        """Create missing tables (what ``demixer migrate`` does for a new database)."""
        Base.metadata.create_all(self.engine)

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reading (rolled back at the end)."""
        with self._read() as session:
            yield session

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """A connection for reads outside any transaction: each statement sees what was
        committed when it ran, and nothing is begun or rolled back around it. For hot,
        read-only paths (a status poll is one SELECT); use :meth:`read` for a consistent view."""
        with self._snapshot.connect() as conn:
            yield conn

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A write transaction: committed on success, rolled back on any exception."""
        with self._write() as session, session.begin():
            yield session

    def dispose(self) -> None:
        """Close pooled connections (before fork, and at shutdown)."""
        self.engine.dispose()
