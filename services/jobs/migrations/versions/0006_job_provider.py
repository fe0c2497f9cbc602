"""which provider served a finished job: billing's revenue report names it

Revision ID: 0006_job_provider
Revises: 0005_status_transitions
"""

from __future__ import annotations

from alembic import op

revision = "0006_job_provider"
down_revision = "0005_status_transitions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # '' for jobs that did not succeed (and for those finished before this column).
    op.execute(
        "ALTER TABLE jobs.jobs ADD COLUMN provider text NOT NULL DEFAULT ''"
        " CONSTRAINT jobs_provider_shape CHECK (provider ~ '^([!-~]{1,100})?$')"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE jobs.jobs DROP COLUMN provider")
