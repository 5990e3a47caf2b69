"""audio-minute allowances: accounts.monthly_minutes and jobs.quota_seconds

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 21:20:00.000000

An operator may cap an account's audio minutes per calendar month
(``demixer keys quota``). ``accounts.monthly_minutes`` is the allowance (NULL: unlimited, as
every account was before); ``jobs.quota_seconds`` is what a queued or running job holds against
it, so that parallel submits cannot all fit under the same remainder. Both are nullable
columns: adding them rewrites nothing.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("accounts", sa.Column("monthly_minutes", sa.Integer(), nullable=True))
    op.add_column("jobs", sa.Column("quota_seconds", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("quota_seconds")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("monthly_minutes")
