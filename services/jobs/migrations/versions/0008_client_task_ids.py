"""client task ids: a job the client names, unique per account

Revision ID: 0008_client_task_ids
Revises: 0007_jobs_listing
"""

from __future__ import annotations

from alembic import op

revision = "0008_client_task_ids"
down_revision = "0007_jobs_listing"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A client's own id for a job (GET /v1/jobs?client_task_id= finds it), and the
    # hash of what the creation asked for without our per-call ids, so a repeat with
    # the same id and the same request gets the first job, a different request a 422.
    # The unique index is the rule itself: two creations racing with one id cannot
    # both make a job. The shape matches the gateway's check (1-64 printable ASCII).
    op.execute(
        """
        ALTER TABLE jobs.jobs ADD COLUMN client_task_id text;
        ALTER TABLE jobs.jobs ADD COLUMN client_input_hash bytea;
        ALTER TABLE jobs.jobs ADD CONSTRAINT jobs_client_task_id_shape CHECK (
            client_task_id IS NULL OR (
                client_task_id ~ '^[\\x21-\\x7e]{1,64}$' AND client_input_hash IS NOT NULL
            )
        );
        CREATE UNIQUE INDEX jobs_by_client_task_id ON jobs.jobs (account_id, client_task_id)
            WHERE client_task_id IS NOT NULL;
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP INDEX jobs.jobs_by_client_task_id;
        ALTER TABLE jobs.jobs DROP CONSTRAINT jobs_client_task_id_shape;
        ALTER TABLE jobs.jobs DROP COLUMN client_input_hash;
        ALTER TABLE jobs.jobs DROP COLUMN client_task_id;
        """
    )
