"""per-account caps on stored upload bytes: the storage_caps table

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 03:40:00.000000

An operator may give an account its own cap on the bytes its uploads hold at once
(``demixer keys quota ACCOUNT --storage-bytes N``), in place of
``DEMIXER_MAX_ACCOUNT_STORAGE_BYTES``. An account without a row has the setting's, as every
account has before this. A new table only: no existing row is rewritten, and a release before
this one never reads it (its processes apply the setting to every account).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "storage_caps",
        sa.Column("account_id", sa.String(40), sa.ForeignKey("accounts.id"), primary_key=True),
        sa.Column("max_bytes", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("storage_caps")
