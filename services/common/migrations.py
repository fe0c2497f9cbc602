"""Running one service's alembic migrations, for any service that owns a schema.

Each service keeps its own migrations folder and schema; this module creates
the database when missing, runs `upgrade head` without an alembic.ini, and is
what every service's migrations/env.py calls. A session advisory lock per
schema serialises replicas that migrate at the same time.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import psycopg
from alembic import command, context
from alembic.config import Config
from psycopg import errors, sql
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError as SAOperationalError
from sqlalchemy.pool import NullPool

from services.common import logs, settings
from services.common.db import libpq_conninfo, sqlalchemy_url

MAINTENANCE_DATABASE = "postgres"

log = logging.getLogger(__name__)


def ensure_database(url: str) -> bool:
    """Create the URL's database unless it exists (via the `postgres` database).

    Returns True when it was created. Safe to run concurrently.
    """
    name = make_url(url).database
    if not name:
        raise ValueError("the database URL names no database")
    conninfo = libpq_conninfo(url, database=MAINTENANCE_DATABASE)
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if found is not None:
            return False
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except (errors.DuplicateDatabase, errors.UniqueViolation):
            return False  # someone else created it meanwhile
    log.info("created database", extra=logs.fields(database=name))
    return True


def alembic_config(url: str, migrations_dir: Path) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    config.attributes["url"] = sqlalchemy_url(url).render_as_string(hide_password=False)
    return config


def upgrade(url: str, migrations_dir: Path, revision: str = "head") -> None:
    """Apply a service's migrations up to `revision` (the database must exist)."""
    command.upgrade(alembic_config(url, migrations_dir), revision)


def run_env(schema: str) -> None:
    """The body of a service's migrations/env.py (online migrations only)."""
    if context.is_offline_mode():
        raise SystemExit(f"{schema} migrations run online only")
    config = context.config
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    engine = create_engine(sqlalchemy_url(str(url or settings.database_url())), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            # Held by the session; released when the connection closes.
            connection.execute(
                text("SELECT pg_advisory_lock(hashtext(:name))"),
                {"name": f"aiport.{schema}.migrations"},
            )
            connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {schema}"))
            connection.commit()
            context.configure(
                connection=connection,
                target_metadata=None,
                version_table_schema=schema,
                transaction_per_migration=False,
            )
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
    finally:
        engine.dispose()


def main(service: str, migrations_dir: Path) -> int:
    """`python -m services.<service>.migrate`: ensure the database, then upgrade."""
    logs.setup(f"{service}-migrate")
    url = settings.database_url()
    shown = make_url(url).render_as_string(hide_password=True)
    try:
        ensure_database(url)
        upgrade(url, migrations_dir)
    except (psycopg.OperationalError, SAOperationalError, OSError) as exc:
        print(f"{service} migrate: cannot reach the database {shown}: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        log.exception(f"{service} migration failed")
        print(f"{service} migrate: failed: {exc}", file=sys.stderr)
        return 1
    log.info(f"{service} schema is up to date", extra=logs.fields(database=make_url(url).database))
    return 0
