"""Background expiry: open holds past their `expires_at` are released, and clients'
idempotency records past their retention deleted, in bounded batches."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.logs import fields

from . import auth_limits
from .money import Money

log = logging.getLogger(__name__)

# At most this many batches per sweep, so one sweep cannot run unbounded.
MAX_BATCHES_PER_SWEEP = 100


async def sweep_once(money: Money, batch_size: int = 500) -> int:
    """Expire due holds batch by batch (one transaction each); returns how many expired."""
    total = 0
    for _ in range(MAX_BATCHES_PER_SWEEP):
        batch = await money.expire_due_holds(batch_size)
        if batch.holds:
            log.info(
                "expired holds",
                extra=fields(
                    holds=batch.holds,
                    released_micros=batch.released_micros,
                    accounts=batch.accounts,
                ),
            )
        total += batch.holds
        if batch.holds < batch_size:
            break
    return total


async def sweep_idempotency_records(money: Money, batch_size: int = 500) -> int:
    """Delete clients' idempotency records past their retention, batch by batch."""
    total = 0
    for _ in range(MAX_BATCHES_PER_SWEEP):
        deleted = await money.sweep_idempotency_records(batch_size)
        total += deleted
        if deleted < batch_size:
            break
    if total:
        log.info("idempotency records past retention deleted", extra=fields(records=total))
    return total


async def run_forever(
    engine: AsyncEngine, money: Money, interval_seconds: float, batch_size: int = 500
) -> None:
    """Sweep every `interval_seconds` until cancelled; errors are logged, never fatal."""
    log.info(
        "hold sweeper started",
        extra=fields(interval_seconds=interval_seconds, batch_size=batch_size),
    )
    while True:
        try:
            await sweep_once(money, batch_size)
            # Keeps the shared failed-authentication table bounded.
            await auth_limits.prune(engine)
            await sweep_idempotency_records(money, batch_size)
        except Exception:
            log.exception("hold sweep failed; will retry")
        await asyncio.sleep(interval_seconds)
