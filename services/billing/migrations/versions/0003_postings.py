"""Double-entry postings: every movement of money is a balanced transaction.

Before: `ledger_entries` recorded top-ups and captures against one balance;
holds, releases and expiries moved money on the account row only.

After: `transactions` (one row per movement: topup, promotion, adjustment,
hold, capture, release, expire) and `postings` (its legs between ledger
accounts, summing to zero). A customer owns two ledger accounts, `available`
and `held` (the posting's account; the customer is the transaction's); the
system accounts are `revenue:<model>`, `payments:<rail>`, `promotions` and
`adjustments`. The cached balances on `accounts` stay for the hot path and
`aiportctl ledger verify` proves them against the postings.

`ledger_entries` becomes a view of the customer's statement: the transactions
that changed the customer's balance (available + held), with the same columns.

Existing rows are carried over without changing a balance: each ledger entry
becomes a transaction with the same id (statement cursors stay valid); each
hold gets its `hold` transaction and, once settled, its capture, release or
expiry. Keys stored before this revision get an input hash that no request
matches, so replaying such a key is refused rather than guessed at. The
upgrade checks the result (every transaction balances, every cached balance
equals its postings) and fails, rolling back, if it does not.

Revision ID: 0003
Revises: 0002
Create Date: 2026-02-10
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

# A model or rail name inside a ledger account: printable ASCII, no spaces.
NAME_RE = "[!-~]{1,100}"
# The model a legacy hold was for, from the description the gateway wrote:
# "chat <model> <request>" or "job <modality> <model> <request>".
LEGACY_MODEL = f"""
    CASE
        WHEN split_part(description, ' ', 1) = 'chat'
             AND split_part(description, ' ', 2) ~ '^{NAME_RE}$'
            THEN split_part(description, ' ', 2)
        WHEN split_part(description, ' ', 1) = 'job'
             AND split_part(description, ' ', 3) ~ '^{NAME_RE}$'
            THEN split_part(description, ' ', 3)
        ELSE ''
    END
"""

UPGRADE = [
    # Holds: what the key guarded, and the model the money is for (revenue account).
    "ALTER TABLE billing.holds ADD COLUMN input_hash bytea",
    "ALTER TABLE billing.holds ADD COLUMN model text NOT NULL DEFAULT ''",
    f"UPDATE billing.holds SET model = {LEGACY_MODEL},"
    " input_hash = sha256(convert_to('legacy hold ' || id, 'UTF8'))",
    "ALTER TABLE billing.holds ALTER COLUMN input_hash SET NOT NULL",
    "ALTER TABLE billing.holds ADD CONSTRAINT holds_input_hash_sha256"
    " CHECK (octet_length(input_hash) = 32)",
    f"ALTER TABLE billing.holds ADD CONSTRAINT holds_model_shape CHECK (model ~ '^({NAME_RE})?$')",
    """
    CREATE TABLE billing.transactions (
        id                   bigserial PRIMARY KEY,
        kind                 text NOT NULL CHECK (kind IN (
                                 'topup', 'promotion', 'adjustment',
                                 'hold', 'capture', 'release', 'expire')),
        account_id           text NOT NULL REFERENCES billing.accounts (id),
        hold_id              text REFERENCES billing.holds (id),
        -- Keyed credits only (a hold's key lives on the hold); stored with the
        -- hash of the input it guarded, in the same transaction.
        idempotency_key      text,
        input_hash           bytea,
        -- Who served a capture, when the caller knew it.
        provider             text NOT NULL DEFAULT '',
        -- The customer's balance (available + held) after this transaction.
        balance_after_micros bigint NOT NULL CHECK (balance_after_micros >= 0),
        description          text NOT NULL DEFAULT '',
        created_at           timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT transactions_hold_shape
            CHECK ((hold_id IS NOT NULL) = (kind IN ('hold', 'capture', 'release', 'expire'))),
        CONSTRAINT transactions_key_shape CHECK (
            (idempotency_key IS NULL) = (input_hash IS NULL)
            AND (idempotency_key IS NULL OR kind IN ('topup', 'promotion', 'adjustment'))
            AND (input_hash IS NULL OR octet_length(input_hash) = 32)),
        CONSTRAINT transactions_provider_shape CHECK (provider ~ '^([!-~]{1,100})?$')
    )
    """,
    # Unique among keyed credits (a partial index: unkeyed rows add no entry).
    "CREATE UNIQUE INDEX transactions_idempotency_key ON billing.transactions (idempotency_key)"
    " WHERE idempotency_key IS NOT NULL",
    # The customer's statement, newest first; holds and their release are not on it.
    "CREATE INDEX transactions_statement_idx ON billing.transactions (account_id, id DESC)"
    " WHERE kind IN ('topup', 'promotion', 'adjustment', 'capture')",
    # A hold is placed once and settled once: one 'hold' and at most one settlement.
    "CREATE UNIQUE INDEX transactions_hold_phase ON billing.transactions"
    " (hold_id, (kind = 'hold')) WHERE hold_id IS NOT NULL",
    f"""
    CREATE TABLE billing.postings (
        -- Its transaction exists: checked per statement by transactions_balance()
        -- (one lookup per statement instead of a foreign key check per posting).
        transaction_id bigint NOT NULL,
        -- The customer's 'available' or 'held' (the customer is the
        -- transaction's account), or a system account.
        account        text NOT NULL CHECK (
                           account IN ('available', 'held', 'promotions', 'adjustments')
                           OR account ~ '^(revenue|payments):{NAME_RE}$'),
        amount_micros  bigint NOT NULL CHECK (amount_micros <> 0),
        PRIMARY KEY (transaction_id, account)
    )
    """,
    # Carry the ledger over. Entries keep their ids; synthesized rows follow.
    """
    INSERT INTO billing.transactions
        (id, kind, account_id, hold_id, idempotency_key, input_hash, balance_after_micros,
         description, created_at)
    SELECT id, kind, account_id, hold_id,
           CASE WHEN kind = 'topup' THEN idempotency_key END,
           CASE WHEN kind = 'topup' AND idempotency_key IS NOT NULL
                THEN sha256(convert_to('legacy topup ' || id, 'UTF8')) END,
           balance_after_micros, description, created_at
    FROM billing.ledger_entries ORDER BY id
    """,
    "SELECT setval('billing.transactions_id_seq',"
    " GREATEST((SELECT max(id) FROM billing.transactions), 1))",
    # Top-ups before this revision were operator top-ups: money received by hand.
    """
    INSERT INTO billing.postings (transaction_id, account, amount_micros)
    SELECT e.id, v.account, v.amount
    FROM billing.ledger_entries e,
         LATERAL (VALUES ('payments:manual', -e.amount_micros),
                         ('available', e.amount_micros)) v(account, amount)
    WHERE e.kind = 'topup'
    """,
    # The customer's balance at a moment: the last entry at or before it.
    """
    CREATE TEMPORARY TABLE legacy_moves ON COMMIT DROP AS
    SELECT h.id AS hold_id, h.account_id, m.kind, m.at, h.settle_note AS note
    FROM billing.holds h,
         LATERAL (VALUES ('hold', h.created_at),
                         (CASE h.status WHEN 'released' THEN 'release'
                                        WHEN 'expired' THEN 'expire'
                                        WHEN 'captured' THEN 'capture' END, h.settled_at)
                 ) m(kind, at)
    WHERE m.kind IS NOT NULL
      AND NOT (m.kind = 'capture' AND EXISTS (
          SELECT 1 FROM billing.ledger_entries e WHERE e.hold_id = h.id))
    """,
    """
    INSERT INTO billing.transactions
        (kind, account_id, hold_id, balance_after_micros, description, created_at)
    SELECT m.kind, m.account_id, m.hold_id,
           COALESCE((SELECT e.balance_after_micros FROM billing.ledger_entries e
                     WHERE e.account_id = m.account_id AND e.created_at <= m.at
                     ORDER BY e.created_at DESC, e.id DESC LIMIT 1), 0),
           CASE WHEN m.kind = 'hold' THEN h.description ELSE m.note END,
           m.at
    FROM legacy_moves m JOIN billing.holds h ON h.id = m.hold_id
    ORDER BY m.at, m.kind = 'hold' DESC, m.hold_id
    """,
    # Postings of every hold transaction (old or new): the same rules as money.py.
    """
    INSERT INTO billing.postings (transaction_id, account, amount_micros)
    SELECT t.id, v.account, v.amount
    FROM billing.transactions t
    JOIN billing.holds h ON h.id = t.hold_id,
    LATERAL (VALUES
        ('available', CASE t.kind WHEN 'hold' THEN -h.amount_micros
                                  WHEN 'capture' THEN h.amount_micros - h.captured_micros
                                  ELSE h.amount_micros END),
        ('held', CASE t.kind WHEN 'hold' THEN h.amount_micros ELSE -h.amount_micros END),
        ('revenue:' || COALESCE(NULLIF(h.model, ''), 'unattributed'),
         CASE t.kind WHEN 'capture' THEN h.captured_micros ELSE 0 END)
    ) v(account, amount)
    WHERE v.amount <> 0
    """,
    "ALTER TABLE billing.ledger_entries RENAME TO ledger_entries_0002",
    # Nothing moved money without postings, and nothing was lost on the way.
    """
    DO $check$
    DECLARE
        bad text;
    BEGIN
        SELECT string_agg(t.id::text, ', ') INTO bad FROM (
            SELECT t.id FROM billing.transactions t
            LEFT JOIN billing.postings p ON p.transaction_id = t.id
            GROUP BY t.id HAVING COALESCE(sum(p.amount_micros), 0) <> 0 OR count(p.*) < 2
            LIMIT 20) t;
        IF bad IS NOT NULL THEN
            RAISE EXCEPTION 'migration 0003: unbalanced transactions: %', bad;
        END IF;
        SELECT string_agg(a.id, ', ') INTO bad FROM (
            SELECT a.id FROM billing.accounts a
            LEFT JOIN (SELECT t.account_id,
                              sum(p.amount_micros) FILTER (WHERE p.account = 'available') AS av,
                              sum(p.amount_micros) FILTER (WHERE p.account = 'held') AS he
                       FROM billing.postings p
                       JOIN billing.transactions t ON t.id = p.transaction_id
                       GROUP BY t.account_id) s ON s.account_id = a.id
            WHERE a.balance_micros - a.held_micros <> COALESCE(s.av, 0)
               OR a.held_micros <> COALESCE(s.he, 0)
            LIMIT 20) a;
        IF bad IS NOT NULL THEN
            RAISE EXCEPTION 'migration 0003: balances differ from postings: %', bad;
        END IF;
        IF EXISTS (
            SELECT 1 FROM billing.ledger_entries_0002 e
            JOIN billing.transactions t ON t.id = e.id
            WHERE (SELECT sum(p.amount_micros) FROM billing.postings p
                   WHERE p.transaction_id = t.id AND p.account IN ('available', 'held'))
                  IS DISTINCT FROM e.amount_micros) THEN
            RAISE EXCEPTION 'migration 0003: an entry changed amount';
        END IF;
    END
    $check$
    """,
    "DROP TABLE billing.ledger_entries_0002",
    "DROP FUNCTION billing.ledger_entries_append_only()",
    # The customer's statement: transactions that changed the balance.
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
    # Append-only, both tables.
    """
    CREATE FUNCTION billing.append_only() RETURNS trigger
    LANGUAGE plpgsql AS $fn$
    BEGIN
        RAISE EXCEPTION 'billing.% is append-only (% refused)', TG_TABLE_NAME, TG_OP;
    END
    $fn$
    """,
    """
    CREATE TRIGGER transactions_no_update_delete
    BEFORE UPDATE OR DELETE ON billing.transactions
    FOR EACH ROW EXECUTE FUNCTION billing.append_only()
    """,
    """
    CREATE TRIGGER transactions_no_truncate
    BEFORE TRUNCATE ON billing.transactions
    FOR EACH STATEMENT EXECUTE FUNCTION billing.append_only()
    """,
    """
    CREATE TRIGGER postings_no_update_delete
    BEFORE UPDATE OR DELETE ON billing.postings
    FOR EACH ROW EXECUTE FUNCTION billing.append_only()
    """,
    """
    CREATE TRIGGER postings_no_truncate
    BEFORE TRUNCATE ON billing.postings
    FOR EACH STATEMENT EXECUTE FUNCTION billing.append_only()
    """,
    # Every statement that adds postings leaves each transaction it touched
    # balanced (all of its postings, earlier ones included), with two legs or
    # more, and existing. One index lookup per transaction: a loop, not a join,
    # since a cached generic plan for a join with the transition table would
    # scan every posting on every statement. (A transaction inserted without
    # any posting is refused by the write path's assertion and found by
    # `aiportctl ledger verify`; a second trigger for it cost the hot path more
    # than the rest of this check.)
    """
    CREATE FUNCTION billing.new_postings_balance() RETURNS trigger
    LANGUAGE plpgsql AS $fn$
    DECLARE
        tid bigint;
        total numeric;
        legs bigint;
    BEGIN
        FOR tid IN SELECT DISTINCT transaction_id FROM added LOOP
            SELECT sum(amount_micros), count(*) INTO total, legs
            FROM billing.postings WHERE transaction_id = tid;
            IF total IS DISTINCT FROM 0 OR legs < 2
               OR NOT EXISTS (SELECT 1 FROM billing.transactions WHERE id = tid) THEN
                RAISE EXCEPTION
                    'billing transaction % does not balance (or has under two postings,'
                    ' or is missing)', tid USING ERRCODE = 'check_violation';
            END IF;
        END LOOP;
        RETURN NULL;
    END
    $fn$
    """,
    """
    CREATE TRIGGER postings_balance
    AFTER INSERT ON billing.postings
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION billing.new_postings_balance()
    """,
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    # Going back would fold hold history into the account rows and lose the
    # postings that prove the balances: restore the pre-upgrade backup instead.
    raise RuntimeError("billing 0003 (postings) is not reversible; restore a backup taken before")
