"""The one owner of an uploaded file's status: every row is created and changed here.

A file (an upload, the input of jobs) goes::

    pending --bytes probed as audio--> uploaded
    pending --bytes not audio, or too large--> failed --new bytes--> uploaded | failed
    pending | uploaded | failed --the owner deletes it--> deleted        (answers 404)
    pending | uploaded | failed --past expires_at, swept--> expired     (answers 410)

``deleted`` and ``expired`` hold no bytes any more. A file is *expired* for every reader as
soon as ``expires_at`` passes (compared with the database clock), whether or not the sweeper
(:mod:`demixer.service.retention.sweeper`) has marked the row yet. The API shows the states a
caller can see (:data:`~demixer.service.files.states.VISIBLE`); ``FileStatus`` in
``demixer.api.schemas`` is that list.

Each transition is a conditional UPDATE that names the states it leaves; one that matches no
row raises :class:`FileConflict` (or returns False where a race is expected, for the sweeper),
as :mod:`demixer.service.jobs.queue` does for jobs.

:func:`new_file` refuses a row its account's storage cap has no room for, before any byte of
the file is stored (:mod:`demixer.service.accounts.storage` counts what files and results
hold). The states, and which of them hold bytes, are :mod:`demixer.service.files.states`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.orm import Session

from demixer.audio import AudioInfo
from demixer.errors import AlreadyUploaded
from demixer.naming import stored_name
from demixer.service.accounts.keys import new_id
from demixer.service.accounts.storage import check_file_room
from demixer.service.db import rows_changed
from demixer.service.files.states import GONE, RECEIVING, VISIBLE, FileState, live_file
from demixer.service.schema import File

__all__ = [
    "PURPOSE",
    "REQUEST_INPUT",
    "FileConflict",
    "expire_files",
    "input_key",
    "listed",
    "mark_deleted",
    "mark_expired",
    "mark_failed",
    "mark_uploaded",
    "new_file",
]

#: An upload its owner holds the id of (``POST /v1/files``, a Gaudio upload).
PURPOSE = "audio.separate.input"
#: An upload that came with one request and belongs to it alone (a MusicGPT ``audio_file``):
#: no answer names its id, so it is never listed; it goes when its request is deleted.
REQUEST_INPUT = "audio.separate.request_input"


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


def expire_files(session: Session, now: datetime, *where: ColumnElement[bool]) -> int:
    """Bring the ``expires_at`` of the live files matching ``where`` forward to ``now`` (an
    operator frees their disk early: ``demixer purge``); the sweeper deletes their bytes and
    marks them expired (one a queued or running request reads when that request ends), and
    they answer 410 from now on. Returns how many."""
    # A microsecond before ``now``: expired for every reader, and due for a sweep, at ``now``.
    gone = now - timedelta(microseconds=1)
    done = session.execute(update(File).where(live_file(now), *where).values(expires_at=gone))
    return rows_changed(done)


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
        check_file_room(session, account_id, file_size or 0, storage_cap, now, cap_param)
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
