"""an index on jobs (status, finished_at): the requests that finished lately, not all history

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 21:00:00.000000

``GET /metrics`` counts the requests that finished in the last hour (by final status and
model). With ``ix_jobs_queue`` alone (``status`` first) that read every finished row, most of
a table kept for ``DEMIXER_RECORD_RETENTION_SECONDS``, every 5 s in each API process. Writes to
``jobs`` wait while the index is built (longer the more rows the table keeps).
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_jobs_finished", "jobs", ["status", "finished_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_finished", table_name="jobs")
