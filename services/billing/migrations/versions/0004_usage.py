"""Usage records, named and scoped keys, disabled accounts.

Usage: a paid call is a hold, so the hold row is the call's usage record. It
gets what the call was (the key that placed it, the public endpoint, the
request and job ids: written with the hold) and what it consumed (tokens and
latency: written by the same statement that captures or releases it). The
usage the customer sees is therefore written in the same transaction as the
money it explains, and cannot disagree with the ledger. No new row per call:
the capture already rewrites the hold row.

Keys: a name, scopes ('inference' for paid calls and reads of the account's own
records; 'manage' for key management too) and when the key was last used
(updated at most once a minute, so a busy key does not rewrite its row on
every call).

Accounts: an operator can disable one (its keys stop authenticating at once)
and enable it again; the reason is kept.

The usage listing reads an account's holds newest first: the account index
becomes (account_id, created_at DESC, id DESC) instead of (account_id), so
listing costs no extra index on the hot path.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

# A key's name, an endpoint, a request or job id: printable, bounded.
PRINTABLE = "^[^[:cntrl:]]*$"

UPGRADE = [
    # Keys.
    "ALTER TABLE billing.api_keys ADD COLUMN name text NOT NULL DEFAULT ''",
    f"ALTER TABLE billing.api_keys ADD CONSTRAINT api_keys_name_shape"
    f" CHECK (char_length(name) <= 100 AND name ~ '{PRINTABLE}')",
    "ALTER TABLE billing.api_keys ADD COLUMN scopes text[] NOT NULL DEFAULT '{inference}'",
    "ALTER TABLE billing.api_keys ADD CONSTRAINT api_keys_scopes_known"
    " CHECK (cardinality(scopes) >= 1 AND scopes <@ ARRAY['inference', 'manage']::text[])",
    "ALTER TABLE billing.api_keys ADD COLUMN last_used_at timestamptz",
    # Accounts.
    "ALTER TABLE billing.accounts ADD COLUMN disabled_at timestamptz",
    "ALTER TABLE billing.accounts ADD COLUMN disabled_reason text NOT NULL DEFAULT ''",
    "ALTER TABLE billing.accounts ADD CONSTRAINT accounts_disabled_has_reason"
    " CHECK (disabled_at IS NULL OR char_length(disabled_reason) BETWEEN 1 AND 500)",
    # Holds: what the call was.
    "ALTER TABLE billing.holds ADD COLUMN key_id text",
    "ALTER TABLE billing.holds ADD COLUMN endpoint text NOT NULL DEFAULT ''",
    "ALTER TABLE billing.holds ADD COLUMN request_id text NOT NULL DEFAULT ''",
    "ALTER TABLE billing.holds ADD COLUMN job_id text NOT NULL DEFAULT ''",
    f"""
    ALTER TABLE billing.holds ADD CONSTRAINT holds_origin_shape CHECK (
        char_length(endpoint) <= 100 AND endpoint ~ '{PRINTABLE}'
        AND char_length(request_id) <= 200 AND request_id ~ '{PRINTABLE}'
        AND char_length(job_id) <= 100 AND job_id ~ '{PRINTABLE}')
    """,
    # Holds: what it consumed (set when settled).
    "ALTER TABLE billing.holds ADD COLUMN input_tokens bigint NOT NULL DEFAULT 0",
    "ALTER TABLE billing.holds ADD COLUMN cached_input_tokens bigint NOT NULL DEFAULT 0",
    "ALTER TABLE billing.holds ADD COLUMN cache_write_input_tokens bigint NOT NULL DEFAULT 0",
    "ALTER TABLE billing.holds ADD COLUMN output_tokens bigint NOT NULL DEFAULT 0",
    "ALTER TABLE billing.holds ADD COLUMN reasoning_tokens bigint NOT NULL DEFAULT 0",
    "ALTER TABLE billing.holds ADD COLUMN latency_ms integer",
    """
    ALTER TABLE billing.holds ADD CONSTRAINT holds_usage_shape CHECK (
        input_tokens >= 0 AND output_tokens >= 0
        AND cached_input_tokens >= 0 AND cache_write_input_tokens >= 0
        AND cached_input_tokens + cache_write_input_tokens <= input_tokens
        AND reasoning_tokens >= 0 AND reasoning_tokens <= output_tokens
        AND (latency_ms IS NULL OR latency_ms >= 0))
    """,
    # The account's calls, newest first (replaces the plain account index).
    "CREATE INDEX holds_usage_idx ON billing.holds (account_id, created_at DESC, id DESC)",
    "DROP INDEX billing.holds_account_idx",
]

DOWNGRADE = [
    "CREATE INDEX holds_account_idx ON billing.holds (account_id)",
    "DROP INDEX billing.holds_usage_idx",
    "ALTER TABLE billing.holds DROP CONSTRAINT holds_usage_shape",
    *(
        f"ALTER TABLE billing.holds DROP COLUMN {column}"
        for column in (
            "latency_ms",
            "reasoning_tokens",
            "output_tokens",
            "cache_write_input_tokens",
            "cached_input_tokens",
            "input_tokens",
        )
    ),
    "ALTER TABLE billing.holds DROP CONSTRAINT holds_origin_shape",
    *(
        f"ALTER TABLE billing.holds DROP COLUMN {column}"
        for column in ("job_id", "request_id", "endpoint", "key_id")
    ),
    "ALTER TABLE billing.accounts DROP CONSTRAINT accounts_disabled_has_reason",
    "ALTER TABLE billing.accounts DROP COLUMN disabled_reason",
    "ALTER TABLE billing.accounts DROP COLUMN disabled_at",
    "ALTER TABLE billing.api_keys DROP COLUMN last_used_at",
    "ALTER TABLE billing.api_keys DROP CONSTRAINT api_keys_scopes_known",
    "ALTER TABLE billing.api_keys DROP COLUMN scopes",
    "ALTER TABLE billing.api_keys DROP CONSTRAINT api_keys_name_shape",
    "ALTER TABLE billing.api_keys DROP COLUMN name",
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
