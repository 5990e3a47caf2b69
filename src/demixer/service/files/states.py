"""The states of an uploaded file (the ``files.status`` column), and which of them hold bytes.

Only :mod:`demixer.service.files.lifecycle` changes a file's state; the states live here, below
it, because what reads them needs no transition: the API and the sweeper, and the storage
cap (:mod:`demixer.service.accounts.storage`), which the lifecycle itself asks before it adds
a file.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ColumnElement, and_, or_

from demixer.service.schema import File

__all__ = ["GONE", "RECEIVING", "VISIBLE", "FileState", "live_file"]


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


def live_file(now: datetime) -> ColumnElement[bool]:
    """A file that holds bytes (or may still take them) at ``now`` (the database clock): not
    deleted, not expired, not past its ``expires_at``."""
    return and_(File.status.not_in(GONE), or_(File.expires_at.is_(None), File.expires_at >= now))
