"""Throwaway PostgreSQL databases for tests: one fresh database per test session.

    url = fresh_database_url()   # creates aiport_test_<8 hex>, returns its URL
    migrate_all(url)             # every service's schema
    ...
    drop_database(url)

The server comes from AIPORT_TEST_DATABASE_URL (any database name in it is
ignored), default postgresql+psycopg://postgres@127.0.0.1:5432.
"""

from __future__ import annotations

import os
import re
import secrets

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL, make_url

DEFAULT_BASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
MAINTENANCE_DATABASE = "postgres"
_PREFIX_RE = re.compile(r"[a-z][a-z0-9_]{0,40}")


def base_url() -> URL:
    raw = os.environ.get("AIPORT_TEST_DATABASE_URL", "").strip() or DEFAULT_BASE_URL
    return make_url(raw).set(drivername="postgresql+psycopg")


def _maintenance_conninfo(url: URL) -> str:
    return url.set(drivername="postgresql", database=MAINTENANCE_DATABASE).render_as_string(
        hide_password=False
    )


def fresh_database_url(prefix: str = "aiport_test") -> str:
    """Create a uniquely named empty database and return its SQLAlchemy URL."""
    if not _PREFIX_RE.fullmatch(prefix):
        raise ValueError(f"database prefix must be lowercase letters, digits, _: {prefix!r}")
    name = f"{prefix}_{secrets.token_hex(4)}"
    base = base_url()
    with psycopg.connect(_maintenance_conninfo(base), autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return base.set(database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    """Drop the URL's database, disconnecting anyone still connected."""
    parsed = make_url(url)
    name = parsed.database
    if not name or name in (MAINTENANCE_DATABASE, "template0", "template1"):
        raise ValueError(f"refusing to drop database {name!r}")
    with psycopg.connect(
        _maintenance_conninfo(parsed), autocommit=True, connect_timeout=10
    ) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def migrate_all(url: str) -> None:
    """Bring every service's schema in the database to its latest revision."""
    from services.billing.migrate import upgrade as upgrade_billing

    upgrade_billing(url)
