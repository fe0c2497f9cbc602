"""Developer controls on API keys: spend caps, a model allowlist, an expiry and
rate-limit overrides (per key and per account).

Caps are enforced by the hold that reserves the money, so what a cap counts is
kept beside it on the key's row, updated in the same statements as the holds:
`spent_lifetime_micros` (open holds + captures, ever), and the day's and the
month's (`spent_day`/`spent_month` name the period, in the deployment's cap
time zone; a hold in a later period starts the counter afresh). Each hold
remembers the periods it counted in (`spend_day`, `spend_month`), so that its
capture or release gives back exactly what it took, to the period it took it
from. Counters never go negative, and a cap or a limit is either NULL (none)
or positive: CHECKs below. Lifetime counters start with every hold the key
already has; the day's and month's start empty at this migration.

Rate limits are stored here only (the gateway enforces them): NULL is the
deployment's default.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None

UPGRADE = [
    "ALTER TABLE billing.api_keys"
    " ADD COLUMN daily_cap_micros bigint CONSTRAINT api_keys_daily_cap_positive"
    " CHECK (daily_cap_micros > 0),"
    " ADD COLUMN monthly_cap_micros bigint CONSTRAINT api_keys_monthly_cap_positive"
    " CHECK (monthly_cap_micros > 0),"
    " ADD COLUMN lifetime_cap_micros bigint CONSTRAINT api_keys_lifetime_cap_positive"
    " CHECK (lifetime_cap_micros > 0),"
    " ADD COLUMN spent_lifetime_micros bigint NOT NULL DEFAULT 0"
    " CONSTRAINT api_keys_spent_lifetime_nonnegative CHECK (spent_lifetime_micros >= 0),"
    " ADD COLUMN spent_day date,"
    " ADD COLUMN spent_day_micros bigint NOT NULL DEFAULT 0"
    " CONSTRAINT api_keys_spent_day_nonnegative CHECK (spent_day_micros >= 0),"
    " ADD COLUMN spent_month date"
    " CONSTRAINT api_keys_spent_month_first CHECK (extract(day FROM spent_month) = 1),"
    " ADD COLUMN spent_month_micros bigint NOT NULL DEFAULT 0"
    " CONSTRAINT api_keys_spent_month_nonnegative CHECK (spent_month_micros >= 0),"
    " ADD COLUMN allowed_models text[]"
    " CONSTRAINT api_keys_allowed_models_shape CHECK (cardinality(allowed_models) BETWEEN 1"
    " AND 100 AND array_position(allowed_models, NULL) IS NULL),"
    " ADD COLUMN expires_at timestamptz,"
    " ADD COLUMN requests_per_minute integer"
    " CONSTRAINT api_keys_rpm_positive CHECK (requests_per_minute > 0),"
    " ADD COLUMN concurrent_requests integer"
    " CONSTRAINT api_keys_concurrency_positive CHECK (concurrent_requests > 0)",
    "ALTER TABLE billing.accounts"
    " ADD COLUMN requests_per_minute integer"
    " CONSTRAINT accounts_rpm_positive CHECK (requests_per_minute > 0),"
    " ADD COLUMN concurrent_requests integer"
    " CONSTRAINT accounts_concurrency_positive CHECK (concurrent_requests > 0)",
    "ALTER TABLE billing.holds ADD COLUMN spend_day date, ADD COLUMN spend_month date",
    # What the lifetime counter means, for the holds already there.
    """
    UPDATE billing.api_keys ak SET spent_lifetime_micros = s.spent
    FROM (SELECT key_id,
                 sum(CASE status WHEN 'open' THEN amount_micros
                                 WHEN 'captured' THEN captured_micros ELSE 0 END) AS spent
          FROM billing.holds WHERE key_id IS NOT NULL GROUP BY key_id) s
    WHERE ak.id = s.key_id
    """,
]

DOWNGRADE = [
    "ALTER TABLE billing.holds DROP COLUMN spend_month, DROP COLUMN spend_day",
    "ALTER TABLE billing.accounts DROP COLUMN concurrent_requests, DROP COLUMN requests_per_minute",
    "ALTER TABLE billing.api_keys"
    " DROP COLUMN concurrent_requests, DROP COLUMN requests_per_minute,"
    " DROP COLUMN expires_at, DROP COLUMN allowed_models,"
    " DROP COLUMN spent_month_micros, DROP COLUMN spent_month,"
    " DROP COLUMN spent_day_micros, DROP COLUMN spent_day, DROP COLUMN spent_lifetime_micros,"
    " DROP COLUMN lifetime_cap_micros, DROP COLUMN monthly_cap_micros,"
    " DROP COLUMN daily_cap_micros",
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
