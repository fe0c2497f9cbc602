"""job leases, the input an idempotency key guarded, what billing really charged

Revision ID: 0004_leases_input_hash_charged
Revises: 0003_job_error_code
"""

from __future__ import annotations

from alembic import op

revision = "0004_leases_input_hash_charged"
down_revision = "0003_job_error_code"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE jobs.jobs
            -- sha256 of the CreateJobRequest the idempotency key guarded, written
            -- in the same transaction; NULL for jobs created before this column.
            ADD COLUMN input_hash bytea,
            -- The worker running the job holds it until lease_expires_at (the
            -- database's clock), renewing it while it works: a second delivery
            -- of the job waits instead of paying the upstream again.
            ADD COLUMN lease_token text,
            ADD COLUMN lease_expires_at timestamptz,
            -- What billing moved when the hold was settled (captured amount, or
            -- 0 for a release); NULL until then.
            ADD COLUMN charged_micros bigint,
            -- Settlements billing refused, and when the sweeper tries again.
            ADD COLUMN settle_refusals integer NOT NULL DEFAULT 0,
            ADD COLUMN settle_retry_at timestamptz,
            ADD COLUMN settle_error text;

        -- Jobs settled before this column: what they showed is what we believed.
        UPDATE jobs.jobs
        SET charged_micros = CASE WHEN status = 'done' THEN actual_cost_micros ELSE 0 END
        WHERE settled_at IS NOT NULL;

        ALTER TABLE jobs.jobs
            ADD CONSTRAINT jobs_lease_whole
                CHECK ((lease_token IS NULL) = (lease_expires_at IS NULL)),
            ADD CONSTRAINT jobs_charged_when_settled
                CHECK ((settled_at IS NULL) = (charged_micros IS NULL)),
            -- Billing never captures more than the hold, which is the estimate.
            ADD CONSTRAINT jobs_charged_within_hold
                CHECK (charged_micros IS NULL
                       OR (charged_micros >= 0 AND charged_micros <= estimated_cost_micros)),
            ADD CONSTRAINT jobs_failed_charge_nothing
                CHECK (status <> 'failed' OR COALESCE(charged_micros, 0) = 0),
            ADD CONSTRAINT jobs_settle_refusals_counted CHECK (settle_refusals >= 0);
        """
    )


def downgrade() -> None:
    op.execute(
        """
        ALTER TABLE jobs.jobs
            DROP COLUMN settle_error,
            DROP COLUMN settle_retry_at,
            DROP COLUMN settle_refusals,
            DROP COLUMN charged_micros,
            DROP COLUMN lease_expires_at,
            DROP COLUMN lease_token,
            DROP COLUMN input_hash
        """
    )
