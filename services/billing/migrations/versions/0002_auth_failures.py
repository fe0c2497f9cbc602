"""Failed authentications per key fingerprint and per client, shared by every
gateway replica (the rule: services/common/auth_failures.py).

Revision ID: 0002
Revises: 0001
Create Date: 2026-01-20
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

UPGRADE = [
    """
    CREATE TABLE billing.auth_failures (
        scope        text NOT NULL CHECK (scope IN ('key', 'client')),
        name         text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 64),
        -- Recent failure times (epoch seconds, database clock), at most a threshold's worth.
        failures     double precision[] NOT NULL DEFAULT '{}'
                     CHECK (cardinality(failures) <= 1000),
        locked_until double precision NOT NULL DEFAULT 0,
        strikes      integer NOT NULL DEFAULT 0,
        updated_at   timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (scope, name)
    )
    """,
    "CREATE INDEX auth_failures_updated_at ON billing.auth_failures (updated_at)",
]

DOWNGRADE = ["DROP TABLE billing.auth_failures"]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
