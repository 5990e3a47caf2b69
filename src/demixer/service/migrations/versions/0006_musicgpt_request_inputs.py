"""MusicGPT extraction uploads stored before they had their own purpose get it: unlisted

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 20:40:00.000000

A MusicGPT extraction's ``audio_file`` belongs to its request alone (no answer names its id),
and is stored with the purpose ``audio.separate.request_input``, which ``GET /v1/files`` does
not list. Those stored before that purpose existed kept ``audio.separate.input`` and were
listed to their owner until they expired, under an id nothing else names. This gives them the
purpose new ones get. Data only: the schema is unchanged.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# The values as this revision knows them (service/files/lifecycle.py may name others later).
_OWNED = "audio.separate.input"
_REQUEST_INPUT = "audio.separate.request_input"

_files = sa.table("files", sa.column("id", sa.String), sa.column("purpose", sa.String))
_jobs = sa.table("jobs", sa.column("params", sa.JSON))


def upgrade() -> None:
    params = _jobs.c.params
    # A MusicGPT job's row: version 2 (``vendor.name``) or version 1, written before the job
    # contract (a top-level ``musicgpt`` object; see service/jobs/contract.py).
    musicgpt = sa.or_(
        params[("vendor", "name")].as_string() == "musicgpt",
        params[("musicgpt", "stems")].as_string().is_not(None),
    )
    # One pass over jobs for the ids; each file is then found by its primary key.
    inputs = sa.select(params[("input", "file_id")].as_string()).where(musicgpt)
    op.execute(
        _files.update()
        .where(_files.c.purpose == _OWNED, _files.c.id.in_(inputs))
        .values(purpose=_REQUEST_INPUT)
    )


def downgrade() -> None:
    # Nothing to undo: the code of revision 0005 writes the same purpose for new extractions.
    pass
