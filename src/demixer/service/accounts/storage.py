"""What an account's files and results hold in storage, and the cap on it.

A new file is refused when its account's files and results would then hold more than the cap
on stored bytes (the account's own, ``demixer keys quota --storage-bytes``, else
``DEMIXER_MAX_ACCOUNT_STORAGE_BYTES``): uploads are kept for the upload retention (72 h), and
stems for the result retention (48 h), whatever their owner does, so without it one API key
could fill the server's disk at its request rate. A result counts the stems it stores
(:func:`result_bytes`); a live file (not deleted, not past ``expires_at``) counts

- ``uploaded``: the bytes stored;
- ``pending``, or ``failed`` after its bytes were refused: the announced ``file_size``, which
  a PUT may still fill. Counting a pending file at once is what stops two announcements made
  together from both fitting under the same remainder;
- ``failed`` at the announcement (a Gaudio upload over the size limit): 0, it never takes bytes.

:func:`check_file_room` checks it (for :func:`~demixer.service.files.lifecycle.new_file`) in
the write transaction that adds the row, before any byte of the file is stored, with the
account's row locked on PostgreSQL (SQLite's write transaction holds the whole database), so
parallel announcements take turns. A new request's stems are not known before it runs:
:func:`check_request_room` refuses one, in the transaction that queues it and under the same
lock, once the account holds its whole cap. A file or result deleted, or past its
``expires_at``, stops counting at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, case, func, select
from sqlalchemy.orm import Session

from demixer.errors import StorageQuotaExceeded
from demixer.service.files.states import FileState, live_file
from demixer.service.retention.expiry import live_result
from demixer.service.schema import Account, File, Job, StorageCap

__all__ = [
    "StorageUse",
    "check_file_room",
    "check_request_room",
    "files_bytes",
    "result_bytes",
    "storage_use",
]


@dataclass(frozen=True)
class StorageUse:
    """The bytes an account holds in storage, and its cap.

    Attributes:
        files_bytes: what its live files hold (pending ones at their announced size).
        results_bytes: what the stems of its live results hold (:func:`result_bytes`).
        cap_bytes: the most both may hold at once; None: no cap.
    """

    files_bytes: int
    results_bytes: int
    cap_bytes: int | None

    @property
    def used_bytes(self) -> int:
        """What its files and results hold together."""
        return self.files_bytes + self.results_bytes

    @property
    def room_bytes(self) -> int | None:
        """What it may still store; None: no cap."""
        return None if self.cap_bytes is None else max(0, self.cap_bytes - self.used_bytes)

    def refusal(self, what: str, param: str | None = None) -> StorageQuotaExceeded:
        """The error refusing ``what`` (a sentence's start: why it does not fit), saying what
        holds the room and how to free it."""
        return StorageQuotaExceeded(
            f"{what}: it holds {self.used_bytes} of the {self.cap_bytes} bytes it may keep at "
            f"once ({self.files_bytes} in files, pending uploads at their announced size; "
            f"{self.results_bytes} in the stems of its requests' results); delete results "
            "(their requests) or files it no longer needs, or wait until they expire",
            param=param,
        )


def _cap(session: Session, account_id: str, default: int) -> int:
    """The account's cap in bytes: its own if the operator gave it one, else ``default``
    (the setting); 0: no cap."""
    own = session.execute(
        select(StorageCap.max_bytes).where(StorageCap.account_id == account_id)
    ).scalar_one_or_none()
    return default if own is None else int(own)


def storage_use(session: Session, account_id: str, default_cap: int, now: datetime) -> StorageUse:
    """What ``account_id``'s live files and results hold at ``now`` (the database clock; see
    the module docstring), against its cap: its own, else ``default_cap`` (the setting; 0: no
    cap)."""
    cap = _cap(session, account_id, default_cap)
    return _use(session, account_id, cap, now)


def _use(session: Session, account_id: str, cap: int, now: datetime) -> StorageUse:
    """What ``account_id``'s live files and results hold at ``now``, against ``cap``."""
    _, files = files_bytes(session, now, File.account_id == account_id)
    _, results = result_bytes(session, now, Job.account_id == account_id)
    return StorageUse(files, results, cap or None)


def files_bytes(session: Session, now: datetime, *where: ColumnElement[bool]) -> tuple[int, int]:
    """How many live files match ``where`` at ``now`` (the database clock), and the bytes they
    hold (see the module docstring)."""
    held = case(
        (File.status == FileState.UPLOADED, func.coalesce(File.bytes_stored, File.file_size, 0)),
        (and_(File.status == FileState.FAILED, File.bytes_stored.is_(None)), 0),
        else_=func.coalesce(File.file_size, 0),
    )
    count, used = session.execute(
        select(func.count(), func.coalesce(func.sum(held), 0)).where(live_file(now), *where)
    ).one()
    return int(count), int(used)


def result_bytes(session: Session, now: datetime, *where: ColumnElement[bool]) -> tuple[int, int]:
    """How many live results match ``where`` at ``now`` (the database clock), and the bytes
    their stems hold: each COMPLETED request's ``output_bytes`` (its outputs' sizes, stored as
    it completed), until the request is deleted, its outputs are swept, or its ``expires_at``
    passes. A result answered from the cache counts its own copies (``service/jobs/cache.py``:
    each request owns its blobs)."""
    count, held = session.execute(
        select(func.count(), func.sum(Job.output_bytes)).where(live_result(now), *where)
    ).one()
    return int(count), int(held or 0)  # SUM of no rows is NULL


def _locked_use(
    session: Session, account_id: str, default_cap: int, now: datetime
) -> StorageUse | None:
    """:func:`storage_use` with the account's row locked (None: it has no cap), inside a
    write transaction that adds to it: parallel ones for one account take turns here
    (PostgreSQL; SQLite's write transaction already holds the whole database)."""
    cap = _cap(session, account_id, default_cap)
    if not cap:
        return None
    session.execute(select(Account.id).where(Account.id == account_id).with_for_update())
    return _use(session, account_id, cap, now)


def check_file_room(
    session: Session, account_id: str, size: int, default_cap: int, now: datetime, param: str
) -> None:
    """Refuse a new file of ``size`` bytes when the account's files and results would then
    hold more than its cap (its own, else ``default_cap``; 0: no cap), inside the write
    transaction that adds its row; ``param`` names the field of ``size`` in the refusal.

    Raises:
        StorageQuotaExceeded: ``size`` bytes more do not fit.
    """
    use = _locked_use(session, account_id, default_cap, now)
    if use is not None and use.cap_bytes is not None and use.used_bytes + size > use.cap_bytes:
        what = f"this file's {size} bytes do not fit in this account's storage"
        raise use.refusal(what, param)


def check_request_room(session: Session, account_id: str, default_cap: int, now: datetime) -> None:
    """Refuse a new request while the account's files and results hold its whole cap (its
    own, else ``default_cap``; 0: no cap), inside the write transaction that queues it.

    A request's stems are stored when it completes, their size unknown before: one taken
    with any room left completes whatever its stems hold (as do the requests queued or
    running), and the next is refused until results or files are deleted or expire.

    Raises:
        StorageQuotaExceeded: the account holds its cap or more.
    """
    use = _locked_use(session, account_id, default_cap, now)
    if use is not None and use.room_bytes == 0:
        what = "this account's storage is full, so this request's stems would not fit"
        raise use.refusal(what)
