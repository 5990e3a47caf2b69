"""Hot reads: a Core SELECT compiled once and run on a pooled driver connection.

SQLAlchemy's ``Connection`` spends several times what the driver itself spends on a one-row read
by key (events, an execution context, result metadata, the reset on return), and the status poll
is such a read, thousands of times a second. :class:`PreparedRead` keeps what defines the
statement, a Core ``SELECT`` and its columns' types, and drops that per-statement machinery:

- the SQL is compiled once, for the database's dialect;
- it runs on a connection checked out of the engine's own pool (its ping and connect events
  included), outside any transaction: pysqlite's autocommit mode on SQLite (see
  ``service/db.py``), the driver's autocommit elsewhere (no ``BEGIN``/``ROLLBACK`` round trips);
- each bound value goes through its type's bind processor and each result value through its
  column type's result processor, exactly as SQLAlchemy's own execution does;
- a driver error is raised as SQLAlchemy's :class:`~sqlalchemy.exc.DBAPIError` (a lost
  connection is invalidated first, as SQLAlchemy does), so callers handle it as any other
  database error (``is_unavailable``: 503).

It is for reads by key that need no transaction; use ``Database.read`` for anything else.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable
from typing import Any

from sqlalchemy import Select
from sqlalchemy.exc import DBAPIError

from demixer.service.db import Database

__all__ = ["PreparedRead", "prepared"]


class PreparedRead:
    """``stmt`` (a Core ``SELECT`` with named bind parameters) ready to run on ``db``.

    Args:
        db: the database.
        stmt: the statement; its selected columns name the attributes of the rows returned.
    """

    def __init__(self, db: Database, stmt: Select[Any]) -> None:
        self.db = db
        engine = db.engine
        self._dialect = dialect = engine.dialect
        compiled = stmt.compile(dialect=dialect)
        self._compiled = compiled
        self._sql = compiled.string
        self._order = compiled.positiontup if compiled.positional else None
        self._bind_processors: dict[str, Callable[[Any], Any]] = {}
        for name, bind in compiled.binds.items():
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                self._bind_processors[name] = processor
        columns = list(stmt.selected_columns)
        self._types = [c.type.dialect_impl(dialect) for c in columns]
        self._row: Any = namedtuple("Row", [c.key for c in columns])  # type: ignore[misc]
        self._processors: list[Callable[[Any], Any] | None] | None = None
        self._autocommit = db.dialect != "sqlite"  # pysqlite connections are already

    def one_or_none(self, **params: Any) -> Any:
        """The first row for ``params``, or None: a named tuple of the selected columns."""
        rows = self._run(params, many=False)
        return rows[0] if rows else None

    def all(self, **params: Any) -> list[Any]:
        """Every row for ``params``: named tuples of the selected columns."""
        return self._run(params, many=True)

    def _run(self, params: dict[str, Any], *, many: bool) -> list[Any]:
        values = self._compiled.construct_params(params)
        for name, processor in self._bind_processors.items():
            values[name] = processor(values[name])
        bound: Any = values if self._order is None else tuple(values[n] for n in self._order)
        dialect = self._dialect
        try:
            raw = self.db.engine.raw_connection()  # the pool's checkout: ping, events
        except dialect.loaded_dbapi.Error as exc:  # e.g. the server is down: as Engine.connect
            raise DBAPIError.instance(
                None,
                None,
                exc,
                dialect.loaded_dbapi.Error,
                connection_invalidated=dialect.is_disconnect(exc, None, None),
                dialect=dialect,
            ) from exc
        cursor = None
        try:
            dbapi_connection = raw.dbapi_connection
            assert dbapi_connection is not None  # just checked out
            if self._autocommit:
                dialect.set_isolation_level(dbapi_connection, "AUTOCOMMIT")
            try:
                cursor = raw.cursor()
                cursor.execute(self._sql, bound)
                if many:
                    found = cursor.fetchall()
                else:
                    one = cursor.fetchone()
                    found = [] if one is None else [one]
                if self._processors is None:  # (psycopg builds the description per access)
                    self._processors = [
                        type_.result_processor(dialect, column[1])
                        for type_, column in zip(self._types, cursor.description, strict=True)
                    ]
                cursor.close()
            finally:
                if self._autocommit and raw.is_valid:
                    dialect.reset_isolation_level(dbapi_connection)
        except dialect.loaded_dbapi.Error as exc:
            lost = dialect.is_disconnect(exc, raw.dbapi_connection, cursor)
            if lost:
                raw.invalidate(exc)
            raise DBAPIError.instance(
                self._sql,
                bound,
                exc,
                dialect.loaded_dbapi.Error,
                connection_invalidated=lost,
                dialect=dialect,
            ) from exc
        finally:
            raw.close()  # back to the pool
        processors = self._processors
        assert processors is not None
        make = self._row._make
        return [
            make(value if p is None else p(value) for p, value in zip(processors, row, strict=True))
            for row in found
        ]


def prepared(db: Database, stmt: Select[Any]) -> PreparedRead:
    """``stmt`` prepared for ``db``, once per database (kept in ``db.prepared_reads``)."""
    found = db.prepared_reads.get(stmt)
    if found is None:
        found = db.prepared_reads[stmt] = PreparedRead(db, stmt)
    return found
