"""Alembic environment for the `billing` schema (online migrations only).

The URL comes from `config.attributes["url"]` (set by services.billing.migrate),
else `sqlalchemy.url`, else AIPORT_DATABASE_URL. The version table lives in the
`billing` schema; a session advisory lock serialises concurrent upgrades.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from services.billing.db import sqlalchemy_url
from services.common.settings import database_url

SCHEMA = "billing"
# Any constant shared by every billing replica; hashtext keeps it readable.
# The lock is held by the session and goes away when the connection closes.
LOCK_SQL = "SELECT pg_advisory_lock(hashtext('aiport.billing.migrations'))"


def _url() -> str:
    config = context.config
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    return str(url or database_url())


def run_migrations_online() -> None:
    engine = create_engine(sqlalchemy_url(_url()), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            connection.execute(text(LOCK_SQL))
            connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
            connection.commit()
            context.configure(
                connection=connection,
                target_metadata=None,
                version_table_schema=SCHEMA,
                transaction_per_migration=False,
            )
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("billing migrations run online only (python -m services.billing.migrate)")
run_migrations_online()
