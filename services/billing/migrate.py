"""Create the database if needed and bring the `billing` schema to the latest revision.

    python -m services.billing.migrate      # uses AIPORT_DATABASE_URL

Works from any working directory; no alembic.ini is needed.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from psycopg import errors, sql
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError as SAOperationalError

from services.common import logs, settings

from .db import libpq_conninfo, sqlalchemy_url

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
MAINTENANCE_DATABASE = "postgres"

log = logging.getLogger("services.billing.migrate")


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


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["url"] = sqlalchemy_url(url).render_as_string(hide_password=False)
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Apply billing migrations up to `revision` (the database must exist)."""
    command.upgrade(alembic_config(url), revision)


def main() -> int:
    logs.setup("billing-migrate")
    url = settings.database_url()
    shown = make_url(url).render_as_string(hide_password=True)
    try:
        ensure_database(url)
        upgrade(url)
    except (psycopg.OperationalError, SAOperationalError, OSError) as exc:
        print(f"billing migrate: cannot reach the database {shown}: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        log.exception("billing migration failed")
        print(f"billing migrate: failed: {exc}", file=sys.stderr)
        return 1
    log.info("billing schema is up to date", extra=logs.fields(database=make_url(url).database))
    return 0


if __name__ == "__main__":
    sys.exit(main())
