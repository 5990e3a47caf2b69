"""Carry a deployment's records and stored files to another database and storage: the way from
one box (SQLite + a local folder) to the scale-out (PostgreSQL + S3), ``demixer copy-to``.

Both databases are at the same schema (each was migrated when it was opened), so every table
is copied row by row, in the order its foreign keys need, through the same column types the
service reads and writes with (UTC datetimes, JSON). Keys are stored as the SHA-256 of their
secret, so the keys users hold work on the copy; webhook deliveries keep their body and secret.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Connection, Table, func, select, text
from sqlalchemy.exc import DataError, IntegrityError

from demixer.errors import InvalidDatabaseUrl, InvalidRequest
from demixer.service.db import Database
from demixer.service.schema import Account, Base
from demixer.storage import Storage
from demixer.storage.local import LocalStorage

__all__ = ["SKIPPED_TABLES", "copy_files", "copy_records"]

#: What belongs to the processes of the old deployment, not to its users: the worker processes
#: (each live one registers itself again) and the per-minute request counters.
SKIPPED_TABLES = frozenset({"workers", "rate_counters"})

_BATCH = 500


def copy_records(source: Database, target: Database) -> dict[str, int]:
    """Copy every table's rows (but :data:`SKIPPED_TABLES`) from ``source`` to ``target``, in one
    transaction of ``target``; returns the rows copied per table. ``target`` must hold no
    account yet (:class:`InvalidDatabaseUrl` otherwise): the copy adds, it never merges. A row
    ``target`` refuses ends the copy (:class:`InvalidRequest`) with nothing written."""
    tables = [t for t in Base.metadata.sorted_tables if t.name not in SKIPPED_TABLES]
    copied: dict[str, int] = {}
    with source.engine.connect() as reading, target.engine.begin() as writing:
        if writing.scalar(select(func.count()).select_from(Account.__table__)):
            raise InvalidDatabaseUrl(
                "the target database already holds accounts: copy into a new, empty database"
            )
        for table in tables:
            copied[table.name] = 0
            rows = reading.execute(select(table)).mappings()
            while batch := [dict(row) for row in rows.fetchmany(_BATCH)]:
                try:
                    writing.execute(table.insert(), batch)
                except (DataError, IntegrityError) as exc:  # SQLite kept it, PostgreSQL not
                    reason = str(exc.orig).splitlines()[0]
                    raise InvalidRequest(
                        f"the target database refused a row of {table.name} ({reason}); "
                        "nothing was copied"
                    ) from None
                copied[table.name] += len(batch)
        if writing.dialect.name == "postgresql":
            for table in tables:
                _advance_sequence(writing, table)
    return copied


def _advance_sequence(conn: Connection, table: Table) -> None:
    """Rows copied with their own ids leave PostgreSQL's sequence at 1: the next insert would
    reuse an id (a unique violation on every job's first log line)."""
    key = table.c.get("id")
    if key is None or key.autoincrement is not True:
        return
    conn.execute(
        text(
            f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
            f"COALESCE((SELECT MAX(id) FROM {table.name}), 0) + 1, false)"
        )
    )


def copy_files(source: Storage, target: Storage) -> tuple[int, int]:
    """Copy every stored file of the local ``source`` to ``target`` under the same key; returns
    (files, bytes). Writes that never finished (``.*.part``) are left out. A bucket is copied
    with the bucket's own tools, so ``source`` must be a local folder
    (:class:`InvalidRequest` otherwise)."""
    if not isinstance(source, LocalStorage):
        raise InvalidRequest(
            "only a local storage folder is copied here; copy a bucket with its own tools "
            "(rclone sync, aws s3 sync)"
        )
    files = total = 0
    for key, path in _stored(source.root):
        total += target.put_file(key, path)
        files += 1
    return files, total


def _stored(root: Path) -> Iterator[tuple[str, Path]]:
    """Each finished file under ``root``, with its key (its path below ``root``, with ``/``)."""
    for folder, _dirs, names in os.walk(root):
        for name in sorted(names):
            if name.startswith(".") and name.endswith(".part"):
                continue
            path = Path(folder, name)
            yield path.relative_to(root).as_posix(), path
