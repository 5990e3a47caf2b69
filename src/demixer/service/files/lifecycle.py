"""The one owner of an uploaded file's status: every row is created and changed here.

A file (an upload, the input of jobs) goes::

    pending --bytes probed as audio--> uploaded
    pending --bytes not audio, or too large--> failed --new bytes--> uploaded | failed
    pending | uploaded | failed --the owner deletes it--> deleted        (answers 404)
    pending | uploaded | failed --past expires_at, swept--> expired     (answers 410)

``deleted`` and ``expired`` hold no bytes any more. A file is *expired* for every reader as
soon as ``expires_at`` passes (compared with the database clock), whether or not the sweeper
(:mod:`demixer.service.retention.sweeper`) has marked the row yet. The API shows the states a
caller can see (:data:`VISIBLE`); ``FileStatus`` in ``demixer.api.schemas`` is that list.

Each transition is a conditional UPDATE that names the states it leaves; one that matches no
row raises :class:`FileConflict` (or returns False where a race is expected, for the sweeper),
as :mod:`demixer.service.jobs.queue` does for jobs.

A new row is refused when its account's files and results would then hold more than the cap
on stored bytes (the account's own, ``demixer keys quota --storage-bytes``, else
``DEMIXER_MAX_ACCOUNT_STORAGE_BYTES``): uploads are kept for the upload retention (72 h), and
stems for the result retention (48 h), whatever their owner does, so without it one API key
could fill the server's disk at its request rate. A result counts the stems it stores
(:func:`~demixer.service.retention.expiry.result_bytes`); a live file (not deleted, not past
``expires_at``) counts

- ``uploaded``: the bytes stored;
- ``pending``, or ``failed`` after its bytes were refused: the announced ``file_size``, which
  a PUT may still fill. Counting a pending file at once is what stops two announcements made
  together from both fitting under the same remainder;
- ``failed`` at the announcement (a Gaudio upload over the size limit): 0, it never takes bytes.

:func:`new_file` checks it in the write transaction that adds the row, before any byte of the
file is stored, with the account's row locked on PostgreSQL (SQLite's write transaction holds
the whole database), so parallel announcements take turns. A new request's stems are not
known before it runs: :func:`check_request_room` refuses one, in the transaction that queues
it and under the same lock, once the account holds its whole cap. A file or result deleted,
or past its ``expires_at``, stops counting at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import ColumnElement, and_, case, func, or_, select, update
from sqlalchemy.orm import Session

from demixer.audio import AudioInfo
from demixer.errors import AlreadyUploaded, StorageQuotaExceeded
from demixer.naming import stored_name
from demixer.service.accounts.keys import new_id
from demixer.service.db import rows_changed
from demixer.service.retention.expiry import result_bytes
from demixer.service.schema import Account, File, Job, StorageCap

__all__ = [
    "GONE",
    "PURPOSE",
    "RECEIVING",
    "REQUEST_INPUT",
    "VISIBLE",
    "FileConflict",
    "FileState",
    "StorageUse",
    "check_request_room",
    "expire_files",
    "files_bytes",
    "input_key",
    "listed",
    "mark_deleted",
    "mark_expired",
    "mark_failed",
    "mark_uploaded",
    "new_file",
    "storage_use",
]

#: An upload its owner holds the id of (``POST /v1/files``, a Gaudio upload).
PURPOSE = "audio.separate.input"
#: An upload that came with one request and belongs to it alone (a MusicGPT ``audio_file``):
#: no answer names its id, so it is never listed; it goes when its request is deleted.
REQUEST_INPUT = "audio.separate.request_input"


class FileState(StrEnum):
    """Where a file stands (the ``files.status`` column)."""

    PENDING = "pending"
    UPLOADED = "uploaded"
    FAILED = "failed"
    DELETED = "deleted"
    EXPIRED = "expired"


#: States in which bytes may (still) arrive.
RECEIVING = (FileState.PENDING, FileState.FAILED)
#: States with no bytes left.
GONE = (FileState.DELETED, FileState.EXPIRED)
#: What the API shows (a deleted file answers 404, an expired one 410).
VISIBLE = (FileState.PENDING, FileState.UPLOADED, FileState.FAILED)


class FileConflict(AlreadyUploaded):
    """The file is not in a state that allows the transition (it changed meanwhile)."""


def input_key(file_id: str) -> str:
    """The storage key of a file's bytes."""
    return f"inputs/{file_id}"


def listed(now: datetime) -> ColumnElement[bool]:
    """Which rows an owner's listing shows at ``now`` (the database clock): the files
    ``GET /v1/files/{id}`` answers (not deleted, not past ``expires_at``) whose id the owner
    was given (not a :data:`REQUEST_INPUT`)."""
    return and_(
        File.status.in_(VISIBLE),
        File.purpose == PURPOSE,
        or_(File.expires_at.is_(None), File.expires_at >= now),
    )


@dataclass(frozen=True)
class StorageUse:
    """The bytes an account holds in storage, and its cap.

    Attributes:
        files_bytes: what its live files hold (pending ones at their announced size).
        results_bytes: what the stems of its live results hold
            (:func:`~demixer.service.retention.expiry.result_bytes`).
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


def _live(now: datetime) -> ColumnElement[bool]:
    """A file that holds bytes (or may still take them) at ``now``: not deleted, not
    expired, not past its ``expires_at``."""
    return and_(File.status.not_in(GONE), or_(File.expires_at.is_(None), File.expires_at >= now))


def files_bytes(session: Session, now: datetime, *where: ColumnElement[bool]) -> tuple[int, int]:
    """How many live files match ``where`` at ``now`` (the database clock), and the bytes they
    hold (see the module docstring)."""
    held = case(
        (File.status == FileState.UPLOADED, func.coalesce(File.bytes_stored, File.file_size, 0)),
        (and_(File.status == FileState.FAILED, File.bytes_stored.is_(None)), 0),
        else_=func.coalesce(File.file_size, 0),
    )
    count, used = session.execute(
        select(func.count(), func.coalesce(func.sum(held), 0)).where(_live(now), *where)
    ).one()
    return int(count), int(used)


def expire_files(session: Session, now: datetime, *where: ColumnElement[bool]) -> int:
    """Bring the ``expires_at`` of the live files matching ``where`` forward to ``now`` (an
    operator frees their disk early: ``demixer purge``); the sweeper deletes their bytes and
    marks them expired (one a queued or running request reads when that request ends), and
    they answer 410 from now on. Returns how many."""
    # A microsecond before ``now``: expired for every reader, and due for a sweep, at ``now``.
    gone = now - timedelta(microseconds=1)
    done = session.execute(update(File).where(_live(now), *where).values(expires_at=gone))
    return rows_changed(done)


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


def _check_room(
    session: Session, account_id: str, size: int, default_cap: int, now: datetime, param: str
) -> None:
    """Refuse a new file of ``size`` bytes when the account's files and results would then
    hold more than its cap (its own, else ``default_cap``; 0: no cap)."""
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


def new_file(
    session: Session,
    *,
    account_id: str,
    file_name: str,
    content_type: str,
    file_size: int | None,
    now: datetime,
    retention: timedelta,
    storage_cap: int,
    cap_param: str = "file_size",
    refused: tuple[str, str] | None = None,
    purpose: str = PURPOSE,
) -> File:
    """Add a file row (``pending``; ``failed`` with ``refused = (code, message)``) inside the
    caller's write transaction; it expires ``retention`` after ``now``. ``file_name`` is stored
    as :func:`~demixer.naming.stored_name` spells it (no control or bidi characters).
    ``purpose``: :data:`REQUEST_INPUT` for an upload that belongs to one request alone.

    ``storage_cap``: the most bytes the account's files may hold with this one, unless the
    account has a cap of its own (the setting; 0: no cap); ``cap_param`` names the field of
    ``file_size`` in the refusal. A refused row (it never takes bytes) is not checked.

    Raises:
        StorageQuotaExceeded: ``file_size`` bytes more do not fit under ``storage_cap``.
    """
    if refused is None:
        _check_room(session, account_id, file_size or 0, storage_cap, now, cap_param)
    file_id = new_id("file")
    row = File(
        id=file_id,
        account_id=account_id,
        file_name=stored_name(file_name),
        content_type=content_type,
        file_size=file_size,
        purpose=purpose,
        status=FileState.FAILED if refused else FileState.PENDING,
        error_code=refused[0] if refused else None,
        error_message=refused[1] if refused else None,
        storage_key=input_key(file_id),
        created_at=now,
        expires_at=now + retention,
    )
    session.add(row)
    session.flush()
    return row


def mark_uploaded(
    session: Session,
    file_id: str,
    *,
    size: int,
    sha256: str | None,
    info: AudioInfo,
    now: datetime,
) -> File:
    """``pending``/``failed`` -> ``uploaded``: its bytes were probed as audio.

    Raises:
        FileConflict: the file was deleted, or uploaded by a racing request, meanwhile.
    """
    done = session.execute(
        update(File)
        .where(File.id == file_id, File.status.in_(RECEIVING))
        .values(
            status=FileState.UPLOADED,
            uploaded_at=now,
            bytes_stored=size,
            sha256=sha256,
            duration=info.duration,
            sample_rate=info.sample_rate,
            channels=info.channels,
            audio_start=info.offset,
            audio_tracks=info.tracks,
            error_code=None,
            error_message=None,
        )
    )
    if rows_changed(done) != 1:
        raise FileConflict(f"file {file_id!r} changed while its bytes arrived")
    return session.execute(select(File).where(File.id == file_id)).scalar_one()


def mark_failed(
    session: Session,
    file_id: str,
    *,
    code: str,
    message: str,
    size: int,
    sha256: str | None,
    sample_rate: int | None = None,
) -> bool:
    """``pending``/``failed`` -> ``failed``: its bytes are not usable audio (they are deleted).
    ``sample_rate``: the one it was refused for, if that was the reason.

    Returns False when the file left those states meanwhile (the caller's error stands).
    """
    done = session.execute(
        update(File)
        .where(File.id == file_id, File.status.in_(RECEIVING))
        .values(
            status=FileState.FAILED,
            error_code=code,
            error_message=message,
            bytes_stored=size,
            sha256=sha256,
            duration=None,
            sample_rate=sample_rate,
            channels=None,
        )
    )
    return rows_changed(done) == 1


def mark_deleted(session: Session, file_id: str) -> None:
    """Any live state -> ``deleted`` (its bytes are being deleted).

    Raises:
        FileConflict: the file is already deleted or expired.
    """
    done = session.execute(
        update(File)
        .where(File.id == file_id, File.status.not_in(GONE))
        .values(status=FileState.DELETED)
    )
    if rows_changed(done) != 1:
        raise FileConflict(f"file {file_id!r} is already gone")


def mark_expired(session: Session, file_id: str, now: datetime) -> bool:
    """A live file past ``expires_at`` -> ``expired`` (the sweeper deleted its bytes).

    Returns False when it no longer qualifies (another sweeper, or the owner, was first).
    """
    done = session.execute(
        update(File)
        .where(
            File.id == file_id,
            File.expires_at.is_not(None),
            File.expires_at < now,
            File.status.not_in(GONE),
        )
        .values(status=FileState.EXPIRED)
    )
    return rows_changed(done) == 1
