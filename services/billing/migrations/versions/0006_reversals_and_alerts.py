"""Top-up reversals (a gateway's refund or chargeback), debt, and low-balance alerts.

Reversal: a new transaction kind, 'reversal', keyed like a top-up, with its
reason ('refund' or 'chargeback'). It posts `payments:<rail> +X`, takes what it
can from the customer's `available` and books the rest to the customer's new
ledger account `debt` (its balance is <= 0: what the customer owes us). The
account row caches what is owed as `debt_micros` (>= 0), like its balances;
`aiportctl ledger verify` proves it against the `debt` postings. A later top-up
repays the debt first (`debt +`), so a top-up may also post to `debt`.

While debt remains, billing suspends the account with the existing disabled
mechanism, marked `disabled_by = 'billing:debt'` so that an operator's own
disable is never mistaken for it (nor lifted with it): the constraint below
keeps billing's suspension only on an account that owes money.

The statement view gains the reversal (and shows top-ups and reversals even
when they moved nothing on the balance, all into or out of debt) and the change
of the debt (appended column: CREATE OR REPLACE VIEW keeps the ones before it).

Low-balance alert: the customer's threshold (NULL: off) and when the alert was
claimed for mailing (NULL: armed). A partial index finds accounts with a
threshold without reading every account.

Existing rows are unchanged: the new columns are NULL or 0 by default (no
table is rewritten; the append-only triggers stay quiet) and the widened
constraints accept every existing row.

Revision ID: 0006
Revises: 0005
Create Date: 2027-01-12
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None

# services/billing/postings.py: DEBT_SUSPENSION.
SUSPENDED_FOR_DEBT = "billing:debt"
# One movement is at most 10^18 µIDR (services/billing/rules.py).
MAX_AMOUNT = 10**18

STATEMENT_VIEW = """
CREATE OR REPLACE VIEW billing.ledger_entries AS
SELECT t.id, t.account_id, t.kind, s.amount_micros, t.balance_after_micros, t.hold_id,
       t.idempotency_key, t.description, t.created_at, t.actor, s.debt_change_micros
FROM billing.transactions t
CROSS JOIN LATERAL (
    SELECT COALESCE(sum(p.amount_micros) FILTER (WHERE p.account IN ('available', 'held')), 0)
               ::bigint AS amount_micros,
           -- What the customer owes more (+) or less (-): the mirror of the `debt` postings.
           (-COALESCE(sum(p.amount_micros) FILTER (WHERE p.account = 'debt'), 0))::bigint
               AS debt_change_micros
    FROM billing.postings p
    WHERE p.transaction_id = t.id AND p.account IN ('available', 'held', 'debt')) s
WHERE t.kind IN ('topup', 'promotion', 'adjustment', 'capture', 'reversal')
  AND (s.amount_micros <> 0 OR s.debt_change_micros <> 0)
"""

UPGRADE = [
    # Debt, cached on the account like its balances.
    "ALTER TABLE billing.accounts ADD COLUMN debt_micros bigint NOT NULL DEFAULT 0"
    " CONSTRAINT accounts_debt_nonnegative CHECK (debt_micros >= 0)",
    # Billing's own suspension, told apart from an operator's.
    "ALTER TABLE billing.accounts DROP CONSTRAINT accounts_disabled_by_shape",
    "ALTER TABLE billing.accounts ADD CONSTRAINT accounts_disabled_by_shape"
    f" CHECK (disabled_by ~ '^(|usr_[0-9A-Za-z]{{20}}|{SUSPENDED_FOR_DEBT})$')",
    "ALTER TABLE billing.accounts ADD CONSTRAINT accounts_debt_suspension_owes CHECK ("
    f" disabled_by <> '{SUSPENDED_FOR_DEBT}' OR (disabled_at IS NOT NULL AND debt_micros > 0))",
    # The low-balance alert.
    "ALTER TABLE billing.accounts ADD COLUMN low_balance_threshold_micros bigint"
    " CONSTRAINT accounts_low_balance_threshold_range CHECK ("
    f" low_balance_threshold_micros BETWEEN 1 AND {MAX_AMOUNT})",
    "ALTER TABLE billing.accounts ADD COLUMN low_balance_alerted_at timestamptz",
    "ALTER TABLE billing.accounts ADD CONSTRAINT accounts_low_balance_alert_armed CHECK ("
    " low_balance_alerted_at IS NULL OR low_balance_threshold_micros IS NOT NULL)",
    "CREATE INDEX accounts_low_balance_idx ON billing.accounts (id)"
    " WHERE low_balance_threshold_micros IS NOT NULL",
    # Reversals: a kind of their own, keyed like the credits, with a reason.
    "ALTER TABLE billing.transactions DROP CONSTRAINT transactions_kind_check",
    "ALTER TABLE billing.transactions ADD CONSTRAINT transactions_kind_check CHECK (kind IN ("
    " 'topup', 'promotion', 'adjustment', 'reversal', 'hold', 'capture', 'release', 'expire'))",
    "ALTER TABLE billing.transactions DROP CONSTRAINT transactions_key_shape",
    """
    ALTER TABLE billing.transactions ADD CONSTRAINT transactions_key_shape CHECK (
        (idempotency_key IS NULL) = (input_hash IS NULL)
        AND (idempotency_key IS NULL OR kind IN ('topup', 'promotion', 'adjustment', 'reversal'))
        AND (input_hash IS NULL OR octet_length(input_hash) = 32)
        AND (kind <> 'reversal' OR idempotency_key IS NOT NULL))
    """,
    # No default: no row is rewritten.
    "ALTER TABLE billing.transactions ADD COLUMN reason text"
    " CONSTRAINT transactions_reason_shape CHECK ("
    " (reason IS NOT NULL) = (kind = 'reversal')"
    " AND (reason IS NULL OR reason IN ('refund', 'chargeback')))",
    # The customer's `debt` ledger account.
    "ALTER TABLE billing.postings DROP CONSTRAINT postings_account_check",
    "ALTER TABLE billing.postings ADD CONSTRAINT postings_account_check CHECK ("
    " account IN ('available', 'held', 'debt', 'promotions', 'adjustments')"
    " OR account ~ '^(revenue|payments):[!-~]{1,100}$')",
    # The statement: reversals on it too.
    "DROP INDEX billing.transactions_statement_idx",
    "CREATE INDEX transactions_statement_idx ON billing.transactions (account_id, id DESC)"
    " WHERE kind IN ('topup', 'promotion', 'adjustment', 'capture', 'reversal')",
    STATEMENT_VIEW,
]

DOWNGRADE = [
    # Only while nothing depends on it: a reversal or a debt cannot be expressed before.
    """
    DO $check$
    BEGIN
        IF EXISTS (SELECT 1 FROM billing.transactions WHERE kind = 'reversal')
           OR EXISTS (SELECT 1 FROM billing.postings WHERE account = 'debt') THEN
            RAISE EXCEPTION 'billing 0006: reversals or debt exist; restore a backup instead';
        END IF;
    END
    $check$
    """,
    "DROP VIEW billing.ledger_entries",
    """
    CREATE VIEW billing.ledger_entries AS
    SELECT t.id, t.account_id, t.kind, s.amount_micros, t.balance_after_micros, t.hold_id,
           t.idempotency_key, t.description, t.created_at, t.actor
    FROM billing.transactions t
    CROSS JOIN LATERAL (
        SELECT COALESCE(sum(p.amount_micros), 0)::bigint AS amount_micros
        FROM billing.postings p
        WHERE p.transaction_id = t.id AND p.account IN ('available', 'held')) s
    WHERE t.kind IN ('topup', 'promotion', 'adjustment', 'capture') AND s.amount_micros <> 0
    """,
    "DROP INDEX billing.transactions_statement_idx",
    "CREATE INDEX transactions_statement_idx ON billing.transactions (account_id, id DESC)"
    " WHERE kind IN ('topup', 'promotion', 'adjustment', 'capture')",
    "ALTER TABLE billing.postings DROP CONSTRAINT postings_account_check",
    "ALTER TABLE billing.postings ADD CONSTRAINT postings_account_check CHECK ("
    " account IN ('available', 'held', 'promotions', 'adjustments')"
    " OR account ~ '^(revenue|payments):[!-~]{1,100}$')",
    "ALTER TABLE billing.transactions DROP COLUMN reason",
    "ALTER TABLE billing.transactions DROP CONSTRAINT transactions_key_shape",
    """
    ALTER TABLE billing.transactions ADD CONSTRAINT transactions_key_shape CHECK (
        (idempotency_key IS NULL) = (input_hash IS NULL)
        AND (idempotency_key IS NULL OR kind IN ('topup', 'promotion', 'adjustment'))
        AND (input_hash IS NULL OR octet_length(input_hash) = 32))
    """,
    "ALTER TABLE billing.transactions DROP CONSTRAINT transactions_kind_check",
    "ALTER TABLE billing.transactions ADD CONSTRAINT transactions_kind_check CHECK (kind IN ("
    " 'topup', 'promotion', 'adjustment', 'hold', 'capture', 'release', 'expire'))",
    "DROP INDEX billing.accounts_low_balance_idx",
    "ALTER TABLE billing.accounts DROP COLUMN low_balance_alerted_at",
    "ALTER TABLE billing.accounts DROP COLUMN low_balance_threshold_micros",
    "ALTER TABLE billing.accounts DROP CONSTRAINT accounts_debt_suspension_owes",
    "ALTER TABLE billing.accounts DROP CONSTRAINT accounts_disabled_by_shape",
    "ALTER TABLE billing.accounts ADD CONSTRAINT accounts_disabled_by_shape"
    " CHECK (disabled_by ~ '^(|usr_[0-9A-Za-z]{20})$')",
    "ALTER TABLE billing.accounts DROP COLUMN debt_micros",
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
