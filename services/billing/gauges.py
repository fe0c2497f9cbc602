"""Billing's gauges: open holds and the money they reserve, refreshed every
AIPORT_METRICS_REFRESH_SECONDS by one query on the partial index of open holds."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common import metrics

OPEN_HOLDS_SQL = text(
    "SELECT count(*), COALESCE(sum(amount_micros), 0) FROM billing.holds WHERE status = 'open'"
)


async def refresh_open_holds(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        row = (await conn.execute(OPEN_HOLDS_SQL)).one()
    metrics.OPEN_HOLDS.set(row[0])
    metrics.OPEN_HOLDS_MICROS.set(row[1])


async def run_forever(engine: AsyncEngine) -> None:
    await metrics.refresh_forever("billing", lambda: refresh_open_holds(engine))
