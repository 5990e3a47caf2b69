"""where a file's sound starts and how many audio tracks it has: files.audio_start, audio_tracks

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 06:00:00.000000

A video's sound may start after its picture, and a file may hold several audio tracks (one
is separated: the one flagged default, else the first). The upload's probe now records both,
so the API and the web page can say them: the page plays the original in step with stems
that start at the file's start. Two nullable columns: rows from before read as unknown, and
a release before this one never reads them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("files") as batch:
        batch.add_column(sa.Column("audio_start", sa.Float(), nullable=True))
        batch.add_column(sa.Column("audio_tracks", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("files") as batch:
        batch.drop_column("audio_tracks")
        batch.drop_column("audio_start")
