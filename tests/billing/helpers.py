"""Shared helpers for the billing tests: invariant checks and small fixtures' building blocks."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.billing import audit, ledger
from services.billing.money import Money

IDR = 1_000_000
BIN = Path(sys.executable).parent
AIPORTCTL = BIN / "aiportctl"

# Every account whose stored balance/held disagrees with its ledger/open holds.
_ACCOUNT_DRIFT = text(
    """
    WITH l AS (SELECT account_id, sum(amount_micros) AS total
               FROM billing.ledger_entries GROUP BY account_id),
         h AS (SELECT account_id, sum(amount_micros) AS total
               FROM billing.holds WHERE status = 'open' GROUP BY account_id)
    SELECT a.id, a.balance_micros, a.held_micros,
           coalesce(l.total, 0) AS ledger_total, coalesce(h.total, 0) AS open_holds
    FROM billing.accounts a
    LEFT JOIN l ON l.account_id = a.id
    LEFT JOIN h ON h.account_id = a.id
    WHERE a.balance_micros <> coalesce(l.total, 0)
       OR a.held_micros <> coalesce(h.total, 0)
       OR a.balance_micros - a.held_micros < 0
       OR a.held_micros < 0
    """
)
# Ledger rows whose balance_after is not the running sum of the account's entries.
_RUNNING_DRIFT = text(
    """
    SELECT id FROM (
        SELECT id, balance_after_micros,
               sum(amount_micros) OVER (PARTITION BY account_id ORDER BY id) AS running
        FROM billing.ledger_entries) s
    WHERE running <> balance_after_micros
    """
)
# Captured holds and their capture entries must match one to one.
_CAPTURE_DRIFT = text(
    """
    SELECT h.id FROM billing.holds h
    LEFT JOIN billing.ledger_entries e ON e.hold_id = h.id
    WHERE (h.status = 'captured' AND h.captured_micros > 0
           AND (e.id IS NULL OR e.amount_micros <> -h.captured_micros))
       OR ((h.status <> 'captured' OR h.captured_micros = 0) AND e.id IS NOT NULL)
    """
)

# Every key whose spend counters disagree with its holds: what a hold counts is
# its amount while open and its capture once captured, ever (lifetime) and in
# the day and month it was placed in (the periods it remembers).
_KEY_SPEND_DRIFT = text(
    """
    WITH h AS (
        SELECT key_id, spend_day, spend_month,
               CASE status WHEN 'open' THEN amount_micros
                           WHEN 'captured' THEN captured_micros ELSE 0 END AS counted
        FROM billing.holds WHERE key_id IS NOT NULL)
    SELECT ak.id, ak.spent_lifetime_micros, ak.spent_day_micros, ak.spent_month_micros
    FROM billing.api_keys ak
    WHERE ak.spent_lifetime_micros
              <> (SELECT coalesce(sum(counted), 0) FROM h WHERE h.key_id = ak.id)
       OR ak.spent_day_micros <> (SELECT coalesce(sum(counted), 0) FROM h
                                  WHERE h.key_id = ak.id AND h.spend_day = ak.spent_day)
       OR ak.spent_month_micros <> (SELECT coalesce(sum(counted), 0) FROM h
                                    WHERE h.key_id = ak.id AND h.spend_month = ak.spent_month)
    """
)


async def assert_invariants(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        accounts = (await conn.execute(_ACCOUNT_DRIFT)).all()
        running = (await conn.execute(_RUNNING_DRIFT)).all()
        captures = (await conn.execute(_CAPTURE_DRIFT)).all()
        key_spend = (await conn.execute(_KEY_SPEND_DRIFT)).all()
    assert key_spend == [], f"key spend counters drift from their holds: {key_spend}"
    assert accounts == [], f"balance/held drift from ledger/holds: {accounts}"
    assert running == [], f"ledger balance_after drift: {running}"
    assert captures == [], f"captured holds without matching entries: {captures}"
    # And the postings prove every cached balance, transaction and hold.
    url = engine.url.render_as_string(hide_password=False)
    verdict = await asyncio.to_thread(audit.verify, url)
    assert verdict.ok, f"ledger verify: {verdict.as_json()}"


async def funded_account(
    engine: AsyncEngine, money: Money, micros: int = 0, name: str = "test"
) -> str:
    account = await ledger.create_account(engine, name)
    if micros:
        await money.top_up(account.id, micros)
    return account.id


async def make_overdue(engine: AsyncEngine, *hold_ids: str) -> None:
    """Move holds' expiry into the past (as if their TTL ran out)."""
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE billing.holds SET expires_at = now() - interval '1 second'"
                " WHERE id = ANY(CAST(:ids AS text[]))"
            ),
            {"ids": list(hold_ids)},
        )
