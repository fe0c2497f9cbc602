"""users, memberships in billing accounts, sessions and mailed links

Revision ID: 0001_accounts
Revises:
"""

from __future__ import annotations

from alembic import op

revision = "0001_accounts"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.execute(
        r"""
        CREATE TABLE accounts.users (
            id text PRIMARY KEY CHECK (id ~ '^usr_[0-9A-Za-z]{20}$'),
            -- As typed (trimmed, domain lower-cased); unique in lower case below.
            email text NOT NULL CHECK (
                length(email) BETWEEN 3 AND 254 AND email ~ '^[^@\s]+@[^@\s]+\.[^@\s]+$'
            ),
            -- argon2id only: a hash of another kind is a bug, never accepted.
            password_hash text NOT NULL CHECK (password_hash LIKE '$argon2id$%'),
            locale text NOT NULL DEFAULT 'id' CHECK (locale IN ('id', 'en')),
            email_verified_at timestamptz,
            -- Granted with aiportctl; may use the console's /admin.
            is_operator boolean NOT NULL DEFAULT false,
            password_changed_at timestamptz NOT NULL DEFAULT now(),
            created_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE UNIQUE INDEX users_email_unique ON accounts.users (lower(email));

        -- Which billing accounts a user acts for, and as what. Sign-up makes one
        -- (the owner of a new billing account); several members per billing
        -- account, or several accounts per user, need no schema change.
        CREATE TABLE accounts.memberships (
            user_id text NOT NULL REFERENCES accounts.users (id) ON DELETE CASCADE,
            -- billing's id; billing owns the account (no cross-schema reference).
            billing_account_id text NOT NULL CHECK (billing_account_id ~ '^acct_[0-9A-Za-z]{20}$'),
            role text NOT NULL CHECK (role IN ('owner', 'member')),
            created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (user_id, billing_account_id)
        );
        CREATE INDEX memberships_by_account ON accounts.memberships (billing_account_id);

        -- Sessions: only the SHA-256 of the token is kept.
        CREATE TABLE accounts.sessions (
            id bigserial PRIMARY KEY,
            token_hash bytea NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
            user_id text NOT NULL REFERENCES accounts.users (id) ON DELETE CASCADE,
            csrf_token text NOT NULL CHECK (csrf_token ~ '^[A-Za-z0-9_-]{43}$'),
            client_address text NOT NULL DEFAULT '' CHECK (length(client_address) <= 64),
            created_at timestamptz NOT NULL DEFAULT now(),
            last_seen_at timestamptz NOT NULL DEFAULT now(),
            -- The absolute end; the idle end is last_seen_at + the configured idle time.
            expires_at timestamptz NOT NULL,
            ended_at timestamptz,
            CHECK (expires_at > created_at),
            CHECK (last_seen_at >= created_at),
            CHECK (ended_at IS NULL OR ended_at >= created_at)
        );
        CREATE INDEX sessions_live_by_user ON accounts.sessions (user_id) WHERE ended_at IS NULL;

        -- Verification and reset links: the SHA-256 of the token, used once.
        CREATE TABLE accounts.links (
            token_hash bytea PRIMARY KEY CHECK (octet_length(token_hash) = 32),
            user_id text NOT NULL REFERENCES accounts.users (id) ON DELETE CASCADE,
            purpose text NOT NULL CHECK (purpose IN ('verify_email', 'reset_password')),
            created_at timestamptz NOT NULL DEFAULT now(),
            expires_at timestamptz NOT NULL,
            used_at timestamptz,
            CHECK (expires_at > created_at),
            CHECK (used_at IS NULL OR used_at >= created_at)
        );
        CREATE INDEX links_open_by_user ON accounts.links (user_id, purpose) WHERE used_at IS NULL;
        """
    )


def downgrade() -> None:
    op.execute(
        "DROP TABLE accounts.links; DROP TABLE accounts.sessions;"
        " DROP TABLE accounts.memberships; DROP TABLE accounts.users;"
    )
