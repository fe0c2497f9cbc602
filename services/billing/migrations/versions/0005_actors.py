"""Who acted: operators' adjustments and disables carry the operator's user id.

An operator acting through /v1/admin (the console's /admin) is a user of the
accounts service; the gateway passes that user's id to billing, and billing
keeps it with what it changed: `transactions.actor` for an adjustment (the
ledger is append-only, so the audit trail is too), `accounts.disabled_by` for a
disable. Both are '' for what aiportctl and the services do (their caller is
named by their service token, not by a person).

The statement view gains the actor (appended: CREATE OR REPLACE VIEW keeps the
columns before it).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

# An accounts user id, or '' (no person).
ACTOR = "^(|usr_[0-9A-Za-z]{20})$"

UPGRADE = [
    # A constant default: no row is rewritten (the append-only trigger stays quiet).
    "ALTER TABLE billing.transactions ADD COLUMN actor text NOT NULL DEFAULT ''"
    f" CONSTRAINT transactions_actor_shape CHECK (actor ~ '{ACTOR}')",
    "ALTER TABLE billing.accounts ADD COLUMN disabled_by text NOT NULL DEFAULT ''"
    f" CONSTRAINT accounts_disabled_by_shape CHECK (disabled_by ~ '{ACTOR}')",
    """
    CREATE OR REPLACE VIEW billing.ledger_entries AS
    SELECT t.id, t.account_id, t.kind, s.amount_micros, t.balance_after_micros, t.hold_id,
           t.idempotency_key, t.description, t.created_at, t.actor
    FROM billing.transactions t
    CROSS JOIN LATERAL (
        SELECT COALESCE(sum(p.amount_micros), 0)::bigint AS amount_micros
        FROM billing.postings p
        WHERE p.transaction_id = t.id AND p.account IN ('available', 'held')) s
    WHERE t.kind IN ('topup', 'promotion', 'adjustment', 'capture') AND s.amount_micros <> 0
    """,
]

DOWNGRADE = [
    "DROP VIEW billing.ledger_entries",
    """
    CREATE VIEW billing.ledger_entries AS
    SELECT t.id, t.account_id, t.kind, s.amount_micros, t.balance_after_micros, t.hold_id,
           t.idempotency_key, t.description, t.created_at
    FROM billing.transactions t
    CROSS JOIN LATERAL (
        SELECT COALESCE(sum(p.amount_micros), 0)::bigint AS amount_micros
        FROM billing.postings p
        WHERE p.transaction_id = t.id AND p.account IN ('available', 'held')) s
    WHERE t.kind IN ('topup', 'promotion', 'adjustment', 'capture') AND s.amount_micros <> 0
    """,
    "ALTER TABLE billing.accounts DROP COLUMN disabled_by",
    "ALTER TABLE billing.transactions DROP COLUMN actor",
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
