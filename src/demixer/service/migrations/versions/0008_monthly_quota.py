"""audio-minute allowances: the quotas and quota_holds tables

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 21:20:00.000000

An operator may cap an account's audio minutes per calendar month (``demixer keys quota``).
``quotas`` holds each capped account's allowance (an account without a row is unlimited, as
every account was before); ``quota_holds`` the seconds each queued or running job holds
against it, so that parallel submits cannot all fit under the same remainder. New tables only:
no existing row is rewritten, and a release before this one never reads them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "quotas",
        sa.Column("account_id", sa.String(40), sa.ForeignKey("accounts.id"), primary_key=True),
        sa.Column("monthly_minutes", sa.Integer(), nullable=False),
    )
    op.create_table(
        "quota_holds",
        sa.Column(
            "job_id",
            sa.String(40),
            sa.ForeignKey("jobs.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("account_id", sa.String(40), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
    )
    op.create_index("ix_quota_holds_account_id", "quota_holds", ["account_id"])


def downgrade() -> None:
    op.drop_index("ix_quota_holds_account_id", table_name="quota_holds")
    op.drop_table("quota_holds")
    op.drop_table("quotas")
