"""PostgreSQL URLs and a service's async engine (modest pool, timeouts, pre-ping)."""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

DRIVER = "postgresql+psycopg"
STATEMENT_TIMEOUT_MS = 5_000
IDLE_IN_TRANSACTION_TIMEOUT_MS = 30_000
CONNECT_TIMEOUT_SECONDS = 5


def sqlalchemy_url(url: str | URL) -> URL:
    """Any PostgreSQL URL ("postgres://", "postgresql://", "+psycopg") -> psycopg 3."""
    parsed = make_url(url) if isinstance(url, str) else url
    backend = parsed.drivername.split("+", 1)[0]
    if backend not in ("postgresql", "postgres"):
        raise ValueError(f"not a PostgreSQL URL: {parsed.render_as_string(hide_password=True)}")
    return parsed.set(drivername=DRIVER)


def libpq_conninfo(url: str | URL, database: str | None = None) -> str:
    """A libpq URI psycopg.connect() accepts, optionally for another database."""
    parsed = sqlalchemy_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


def create_engine(
    url: str, *, application_name: str, pool_size: int = 10, max_overflow: int = 10
) -> AsyncEngine:
    options = (
        f"-c statement_timeout={STATEMENT_TIMEOUT_MS}"
        f" -c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_TIMEOUT_MS}"
    )
    return create_async_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=10,
        pool_recycle=1800,
        pool_pre_ping=True,
        isolation_level="READ COMMITTED",
        connect_args={
            "options": options,
            "connect_timeout": CONNECT_TIMEOUT_SECONDS,
            "application_name": f"aiport-{application_name}",
        },
    )
