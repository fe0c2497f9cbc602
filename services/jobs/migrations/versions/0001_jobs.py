"""jobs and the outbox of their work messages

Revision ID: 0001_jobs
Revises:
"""

from __future__ import annotations

from alembic import op

revision = "0001_jobs"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE jobs.jobs (
            id text PRIMARY KEY,
            account_id text NOT NULL,
            idempotency_key text NOT NULL UNIQUE,
            model text NOT NULL,
            modality text NOT NULL,
            status text NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'processing', 'done', 'failed')),
            spec bytea NOT NULL,
            hold_id text NOT NULL,
            unit_price_micros bigint NOT NULL CHECK (unit_price_micros >= 0),
            estimated_units integer NOT NULL CHECK (estimated_units >= 0),
            min_billable_units integer NOT NULL DEFAULT 0 CHECK (min_billable_units >= 0),
            estimated_cost_micros bigint NOT NULL CHECK (estimated_cost_micros > 0),
            actual_cost_micros bigint,
            result_key text,
            last_frame_key text,
            error_message text,
            upstream_task_id text,
            attempts integer NOT NULL DEFAULT 0,
            worker_id text,
            created_at timestamptz NOT NULL DEFAULT now(),
            started_at timestamptz,
            finished_at timestamptz,
            -- The hold was captured or released after the job finished.
            settled_at timestamptz,
            CHECK ((status IN ('done', 'failed')) = (finished_at IS NOT NULL)),
            CHECK (status <> 'done' OR result_key IS NOT NULL),
            CHECK (settled_at IS NULL OR finished_at IS NOT NULL)
        );
        CREATE INDEX jobs_by_account ON jobs.jobs (account_id, created_at DESC);
        CREATE INDEX jobs_unfinished ON jobs.jobs (created_at)
            WHERE status IN ('pending', 'processing');
        CREATE INDEX jobs_unsettled ON jobs.jobs (finished_at)
            WHERE finished_at IS NOT NULL AND settled_at IS NULL;

        -- Work messages are written in the job's own transaction and sent to the
        -- broker afterwards: a crash in between leaves a row the relay still sends.
        CREATE TABLE jobs.outbox (
            id bigserial PRIMARY KEY,
            job_id text NOT NULL REFERENCES jobs.jobs (id),
            routing_key text NOT NULL,
            payload bytea NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            published_at timestamptz
        );
        CREATE INDEX outbox_unpublished ON jobs.outbox (id) WHERE published_at IS NULL;
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE jobs.outbox; DROP TABLE jobs.jobs;")
