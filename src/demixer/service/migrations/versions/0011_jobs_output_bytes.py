"""what a completed job's stems hold: jobs.output_bytes, filled in; an index the cap sums it by

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 06:40:00.000000

The storage cap counts the stems of an account's live results. It summed each output's
``size`` out of every live result's ``outputs`` JSON, on every upload announcement and new
request, inside the lock that queues (16 ms at 100 live results, 158 ms at 5,000, on SQLite).
A job now stores that sum when it completes; this fills it in for every COMPLETED job from its
``outputs``, in the database (``json_each``, SQLite's and PostgreSQL's alike), by the same rule:
an output without a ``size`` holds nothing. ``ix_jobs_stored`` holds every column the sum
reads, so it never reads the rows (and their JSON). Writes to ``jobs`` wait while the update
and the index run (longer the more rows the table keeps). A worker of the release before
never writes the column: a job it completes after this counts no stems until it expires.

"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# The table as this revision knows it.
_jobs = sa.table(
    "jobs",
    sa.column("status", sa.String),
    sa.column("outputs", sa.JSON),
    sa.column("output_bytes", sa.BigInteger),
)


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("output_bytes", sa.BigInteger(), nullable=True))
    # PostgreSQL's json_each refuses anything but an object (SQLite's reads a JSON null as
    # no sizes): only objects are read, and any other completed job holds nothing.
    typeof = "json_typeof" if op.get_bind().dialect.name == "postgresql" else "json_type"
    each = sa.func.json_each(_jobs.c.outputs).table_valued(sa.column("value", sa.JSON))
    size = sa.cast(each.c.value["size"].as_string(), sa.BigInteger)  # a stem may pass 2 GiB
    held = sa.select(sa.func.coalesce(sa.func.sum(size), 0)).select_from(each).scalar_subquery()
    is_object = getattr(sa.func, typeof)(_jobs.c.outputs) == "object"
    completed = _jobs.c.status == "COMPLETED"
    op.execute(_jobs.update().where(completed).values(output_bytes=0))
    op.execute(_jobs.update().where(completed, is_object).values(output_bytes=held))
    op.create_index(
        "ix_jobs_stored", "jobs", ["account_id", "status", "expired", "expires_at", "output_bytes"]
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_stored", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("output_bytes")
