"""Billing schema: accounts, api_keys, holds and the append-only ledger.

Revision ID: 0001
Revises:
Create Date: 2025-11-21
"""

from __future__ import annotations

from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

UPGRADE = [
    "CREATE SCHEMA IF NOT EXISTS billing",
    """
    CREATE TABLE billing.accounts (
        id             text PRIMARY KEY,
        name           text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
        created_at     timestamptz NOT NULL DEFAULT now(),
        balance_micros bigint NOT NULL DEFAULT 0,
        held_micros    bigint NOT NULL DEFAULT 0,
        CONSTRAINT accounts_balance_nonnegative CHECK (balance_micros >= 0),
        CONSTRAINT accounts_held_nonnegative CHECK (held_micros >= 0),
        CONSTRAINT accounts_held_covered CHECK (held_micros <= balance_micros)
    )
    """,
    """
    CREATE TABLE billing.api_keys (
        id         text PRIMARY KEY,
        account_id text NOT NULL REFERENCES billing.accounts (id),
        key_hash   bytea NOT NULL UNIQUE CHECK (octet_length(key_hash) = 32),
        prefix     text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        revoked_at timestamptz
    )
    """,
    "CREATE INDEX api_keys_account_idx ON billing.api_keys (account_id, created_at)",
    """
    CREATE TABLE billing.holds (
        id              text PRIMARY KEY,
        account_id      text NOT NULL REFERENCES billing.accounts (id),
        amount_micros   bigint NOT NULL CHECK (amount_micros > 0),
        status          text NOT NULL DEFAULT 'open'
                        CHECK (status IN ('open', 'captured', 'released', 'expired')),
        captured_micros bigint NOT NULL DEFAULT 0,
        idempotency_key text NOT NULL UNIQUE,
        description     text NOT NULL DEFAULT '',
        created_at      timestamptz NOT NULL DEFAULT now(),
        expires_at      timestamptz NOT NULL,
        settled_at      timestamptz,
        settle_note     text NOT NULL DEFAULT '',
        CONSTRAINT holds_captured_within_amount
            CHECK (captured_micros >= 0 AND captured_micros <= amount_micros),
        CONSTRAINT holds_captured_only_when_captured
            CHECK (status = 'captured' OR captured_micros = 0),
        CONSTRAINT holds_settled_at_iff_settled
            CHECK ((status = 'open') = (settled_at IS NULL))
    )
    """,
    "CREATE INDEX holds_account_idx ON billing.holds (account_id)",
    "CREATE INDEX holds_open_expiry_idx ON billing.holds (expires_at) WHERE status = 'open'",
    """
    CREATE TABLE billing.ledger_entries (
        id                   bigserial PRIMARY KEY,
        account_id           text NOT NULL REFERENCES billing.accounts (id),
        kind                 text NOT NULL,
        amount_micros        bigint NOT NULL,
        balance_after_micros bigint NOT NULL CHECK (balance_after_micros >= 0),
        hold_id              text REFERENCES billing.holds (id),
        idempotency_key      text UNIQUE,
        description          text NOT NULL DEFAULT '',
        created_at           timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT ledger_entries_kind_shape CHECK (
            (kind = 'topup' AND amount_micros > 0 AND hold_id IS NULL)
            OR (kind = 'capture' AND amount_micros < 0 AND hold_id IS NOT NULL)
        )
    )
    """,
    "CREATE INDEX ledger_entries_account_idx ON billing.ledger_entries (account_id, id DESC)",
    """
    CREATE FUNCTION billing.ledger_entries_append_only() RETURNS trigger
    LANGUAGE plpgsql AS $fn$
    BEGIN
        RAISE EXCEPTION 'billing.ledger_entries is append-only (% refused)', TG_OP;
    END
    $fn$
    """,
    """
    CREATE TRIGGER ledger_entries_no_update_delete
    BEFORE UPDATE OR DELETE ON billing.ledger_entries
    FOR EACH ROW EXECUTE FUNCTION billing.ledger_entries_append_only()
    """,
    """
    CREATE TRIGGER ledger_entries_no_truncate
    BEFORE TRUNCATE ON billing.ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION billing.ledger_entries_append_only()
    """,
]

DOWNGRADE = [
    "DROP TABLE billing.ledger_entries",
    "DROP FUNCTION billing.ledger_entries_append_only()",
    "DROP TABLE billing.holds",
    "DROP TABLE billing.api_keys",
    "DROP TABLE billing.accounts",
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
