"""Clients' Idempotency-Key records: one row per (account, key).

A paid POST that carries an Idempotency-Key claims it in the same transaction
as its hold (services/billing/idempotency.py): the primary key is what makes
fifty parallel repeats of one key contend on one row, so exactly one of them
places a hold and calls the upstream. The row is `in_flight` until the gateway
stores the answer (`completed`: status, content type and body, replayed to
repeats) or drops the claim (the call failed before any money moved).

`claim_expires_at` bounds an in-flight claim whose gateway died: past it the
key can be claimed afresh (it lives as long as the claiming hold). `expires_at`
is the record's retention (AIPORT_IDEMPOTENCY_RETENTION_SECONDS, 24 hours by
default); billing's sweeper deletes rows past it, and a row past it that is not
yet swept counts as gone.

Self-contained: a new table and its indexes only, nothing else changes.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None

UPGRADE = [
    """
    CREATE TABLE billing.idempotency_records (
        account_id       text NOT NULL REFERENCES billing.accounts (id),
        key              text NOT NULL,
        request_hash     bytea NOT NULL,
        -- The idempotency_key of the hold that claimed it (the gateway's nonce).
        owner            text NOT NULL,
        state            text NOT NULL,
        http_status      integer,
        content_type     text,
        body             bytea,
        created_at       timestamptz NOT NULL DEFAULT now(),
        claim_expires_at timestamptz NOT NULL,
        expires_at       timestamptz NOT NULL,
        PRIMARY KEY (account_id, key),
        CONSTRAINT idempotency_key_form
            CHECK (char_length(key) BETWEEN 1 AND 255 AND key ~ '^[ -~]+$'),
        CONSTRAINT idempotency_hash_sha256 CHECK (octet_length(request_hash) = 32),
        CONSTRAINT idempotency_state CHECK (state IN ('in_flight', 'completed')),
        -- A completed record has its answer; an in-flight one has none yet.
        CONSTRAINT idempotency_answer_when_completed CHECK (
            (state = 'completed')
            = (http_status IS NOT NULL AND content_type IS NOT NULL AND body IS NOT NULL)),
        CONSTRAINT idempotency_status_range CHECK (http_status BETWEEN 100 AND 599),
        CONSTRAINT idempotency_expiry_order CHECK (expires_at >= created_at)
    )
    """,
    "CREATE UNIQUE INDEX idempotency_records_owner_idx ON billing.idempotency_records (owner)",
    "CREATE INDEX idempotency_records_expiry_idx ON billing.idempotency_records (expires_at)",
]

DOWNGRADE = ["DROP TABLE billing.idempotency_records"]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
