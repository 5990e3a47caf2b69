"""workers: which worker processes are alive and what they can run

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 10:02:11.204518
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import demixer.service.schema

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("id", sa.String(length=100), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("device", sa.String(length=200), nullable=False),
        sa.Column("models", sa.JSON(), nullable=False),
        sa.Column("slots", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(length=50), nullable=False),
        sa.Column("started_at", demixer.service.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column(
            "last_seen_at", demixer.service.schema.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("stopped_at", demixer.service.schema.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_workers_last_seen_at"), ["last_seen_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_workers_last_seen_at"))

    op.drop_table("workers")
