"""indexes for listing an account's jobs a page at a time (GET /v1/jobs)

Revision ID: 0007_jobs_listing
Revises: 0006_job_provider
"""

from __future__ import annotations

from alembic import op

revision = "0007_jobs_listing"
down_revision = "0006_job_provider"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Keyset pagination orders by (created_at, id) within an account, so the
    # index carries id too (jobs created in the same instant keep a stable
    # order); it replaces 0001's (account_id, created_at), its prefix. The status
    # filter gets its own so that listing a rare status reads only those rows.
    op.execute(
        """
        CREATE INDEX jobs_listing ON jobs.jobs (account_id, created_at DESC, id DESC);
        CREATE INDEX jobs_listing_by_status
            ON jobs.jobs (account_id, status, created_at DESC, id DESC);
        DROP INDEX jobs.jobs_by_account;
        """
    )


def downgrade() -> None:
    op.execute(
        """
        CREATE INDEX jobs_by_account ON jobs.jobs (account_id, created_at DESC);
        DROP INDEX jobs.jobs_listing_by_status;
        DROP INDEX jobs.jobs_listing;
        """
    )
