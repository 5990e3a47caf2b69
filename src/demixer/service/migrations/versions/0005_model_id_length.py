"""model ids up to 200 characters: an ensemble's id names every model in it

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 06:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_COLUMNS = (("jobs", "engine_model"), ("usage_records", "model"))


def _resize(old: int, new: int) -> None:
    for table, column in _COLUMNS:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column(
                column,
                existing_type=sa.String(length=old),
                type_=sa.String(length=new),
                existing_nullable=False,
            )


def upgrade() -> None:
    _resize(50, 200)


def downgrade() -> None:
    # Rows with a longer id would not fit back: refuse rather than truncate them.
    bind = op.get_bind()
    for table, column in _COLUMNS:
        longest = bind.execute(sa.text(f"SELECT MAX(LENGTH({column})) FROM {table}")).scalar()
        if longest is not None and longest > 50:
            raise RuntimeError(
                f"{table}.{column} holds a {longest}-character model id; downgrading to 50 "
                "characters would cut it"
            )
    _resize(200, 50)
