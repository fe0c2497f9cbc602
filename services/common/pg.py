"""Pooled psycopg for hot paths: prepared statements, dict rows, no ORM layer.

SQLAlchemy's async bridge cost more CPU per statement than the statements
themselves in our profiles (bench/README.md); services keep SQLAlchemy for
migrations and rare paths and use this for what every request does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from services.common.db import libpq_conninfo

STATEMENT_TIMEOUT_MS = 5_000


def pool(
    url: str,
    application_name: str,
    *,
    min_size: int = 2,
    max_size: int = 10,
    timeout_seconds: float = 10.0,
) -> AsyncConnectionPool[AsyncConnection[DictRow]]:
    """Not opened yet: `await pool.open()` in the service's start-up."""
    return AsyncConnectionPool(
        libpq_conninfo(url),
        connection_class=AsyncConnection[DictRow],
        min_size=min_size,
        max_size=max_size,
        timeout=timeout_seconds,
        open=False,
        kwargs={
            "autocommit": True,  # a statement is its own transaction unless we open one
            "prepare_threshold": 0,  # prepared from the first use
            "row_factory": dict_row,
            "application_name": f"aiport-{application_name}",
            "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
        },
    )


Pool = AsyncConnectionPool[AsyncConnection[DictRow]]


async def fetchone(pool: Pool, sql: str, params: dict[str, Any]) -> DictRow | None:
    async with pool.connection() as conn:
        cur = await conn.execute(sql, params)
        return await cur.fetchone()


@asynccontextmanager
async def transaction(pool: Pool) -> AsyncIterator[AsyncConnection[DictRow]]:
    """A connection inside one transaction (committed on exit, rolled back on error)."""
    async with pool.connection() as conn, conn.transaction():
        yield conn
