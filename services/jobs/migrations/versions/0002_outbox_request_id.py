"""the request id a work message carries, kept with it in the outbox

Revision ID: 0002_outbox_request_id
Revises: 0001_jobs
"""

from __future__ import annotations

from alembic import op

revision = "0002_outbox_request_id"
down_revision = "0001_jobs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The relay sends unsent rows later, outside the request: it needs the id
    # the job was created under to send it on to the worker.
    op.execute("ALTER TABLE jobs.outbox ADD COLUMN request_id text")


def downgrade() -> None:
    op.execute("ALTER TABLE jobs.outbox DROP COLUMN request_id")
