"""a failed job's cause, as a code a client can act on

Revision ID: 0003_job_error_code
Revises: 0002_outbox_request_id
"""

from __future__ import annotations

from alembic import op

revision = "0003_job_error_code"
down_revision = "0002_outbox_request_id"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # invalid_input / content_policy (the client's), provider_error, timeout, ...;
    # NULL for jobs that did not fail (and for those failed before this column).
    op.execute("ALTER TABLE jobs.jobs ADD COLUMN error_code text")


def downgrade() -> None:
    op.execute("ALTER TABLE jobs.jobs DROP COLUMN error_code")
