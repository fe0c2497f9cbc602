"""payment orders and the gateways' notifications

Revision ID: 0001_payments
Revises:
"""

from __future__ import annotations

from alembic import op

revision = "0001_payments"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.execute(
        r"""
        -- One row per top-up: its id is the gateway's order_id / external_id.
        CREATE TABLE payments.orders (
            id text PRIMARY KEY CHECK (id ~ '^top_[0-9A-Za-z]{20}$'),
            -- billing's id; billing owns the account (no cross-schema reference).
            account_id text NOT NULL CHECK (account_id ~ '^acct_[0-9A-Za-z]{20}$'),
            gateway text NOT NULL CHECK (gateway IN ('midtrans', 'xendit')),
            status text NOT NULL CHECK (status IN (
                'awaiting_payment', 'pending', 'paid', 'expired', 'cancelled', 'failed',
                'refunded', 'charged_back')),
            -- Whole rupiah: what the balance goes up by, and the fee paid on top.
            amount_micros bigint NOT NULL
                CHECK (amount_micros > 0 AND amount_micros % 1000000 = 0),
            fee_micros bigint NOT NULL CHECK (fee_micros >= 0 AND fee_micros % 1000000 = 0),
            payment_url text NOT NULL DEFAULT '' CHECK (length(payment_url) <= 2048),
            -- Snap token / Xendit invoice id.
            gateway_ref text NOT NULL DEFAULT '' CHECK (length(gateway_ref) <= 128),
            payment_method text NOT NULL DEFAULT '' CHECK (length(payment_method) <= 40),
            payer_email text NOT NULL DEFAULT '' CHECK (length(payer_email) <= 254),
            payer_name text NOT NULL DEFAULT '' CHECK (length(payer_name) <= 100),
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            expires_at timestamptz NOT NULL,
            paid_at timestamptz,
            -- When billing confirmed the credit / the reversal (null: not yet).
            credited_at timestamptz,
            reversed_at timestamptz,
            reversed_micros bigint NOT NULL DEFAULT 0 CHECK (reversed_micros >= 0),
            -- Something an operator must look at ('' when nothing).
            flag text NOT NULL DEFAULT '' CHECK (length(flag) <= 64),
            last_checked_at timestamptz,
            -- Money only follows a confirmed payment.
            CHECK (credited_at IS NULL OR status IN ('paid', 'refunded', 'charged_back')),
            CHECK (reversed_at IS NULL OR (credited_at IS NOT NULL
                AND status IN ('refunded', 'charged_back'))),
            CHECK (reversed_micros <= amount_micros),
            CHECK (status NOT IN ('paid', 'refunded', 'charged_back') OR paid_at IS NOT NULL)
        );
        CREATE INDEX orders_by_account ON payments.orders (account_id, created_at DESC, id DESC);
        CREATE INDEX orders_by_time ON payments.orders (created_at DESC, id DESC);
        -- What the sweeper looks at: money still owed either way, and open orders.
        CREATE INDEX orders_unsettled ON payments.orders (updated_at) WHERE
            (status = 'paid' AND credited_at IS NULL)
            OR (status IN ('refunded', 'charged_back') AND reversed_at IS NULL)
            OR status IN ('awaiting_payment', 'pending');
        CREATE INDEX orders_flagged ON payments.orders (created_at) WHERE flag <> '';

        -- Every authentic notification, kept before it is acknowledged: the 2xx
        -- means "recorded", and a crash after it loses nothing.
        CREATE TABLE payments.notifications (
            id bigserial PRIMARY KEY,
            gateway text NOT NULL CHECK (gateway IN ('midtrans', 'xendit')),
            order_id text NOT NULL CHECK (length(order_id) BETWEEN 1 AND 64),
            raw_status text NOT NULL DEFAULT '' CHECK (length(raw_status) <= 40),
            amount_micros bigint,
            body jsonb NOT NULL,
            received_at timestamptz NOT NULL DEFAULT now(),
            processed_at timestamptz,
            outcome text NOT NULL DEFAULT '' CHECK (length(outcome) <= 64)
        );
        CREATE INDEX notifications_unprocessed ON payments.notifications (id)
            WHERE processed_at IS NULL;
        CREATE INDEX notifications_by_order ON payments.notifications (order_id, id);
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE payments.notifications; DROP TABLE payments.orders")
