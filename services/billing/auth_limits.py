"""Failed authentications counted in PostgreSQL, so every gateway replica shares them.

Only the failure path touches this table: a valid key never does. One failure
is one short transaction that locks the key's and the client's rows (key first,
always, so concurrent failures cannot deadlock), applies the shared rule
(services/common/auth_failures.py) with the database's clock, and writes both
back. Rows quiet for longer than the rule remembers are pruned by the sweeper.
"""

from __future__ import annotations

import logging

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.auth_failures import (
    CLIENT_POLICY,
    KEY_POLICY,
    MAX_CLIENT_CHARS,
    LockoutPolicy,
    Verdict,
    fingerprint,
    locked_for,
    new_counter,
    record_failure,
)
from services.common.logs import fields

from .ledger import _retry_conflicts

log = logging.getLogger(__name__)

UNKNOWN_CLIENT = "unknown"
PRUNE_BATCH = 5000

_ENSURE_ROWS = text(
    "INSERT INTO billing.auth_failures (scope, name) VALUES ('key', :key), ('client', :client)"
    # DO UPDATE (not DO NOTHING) locks rows that exist, so the sweeper's prune
    # cannot delete one between this statement and the SELECT below.
    " ON CONFLICT (scope, name) DO UPDATE SET updated_at = now()"
)
# ORDER BY scope DESC: 'key' before 'client', the order the INSERT above takes them in.
_LOCK_ROWS = text(
    "SELECT scope, failures, locked_until, strikes, extract(epoch FROM now()) AS now"
    " FROM billing.auth_failures"
    " WHERE (scope = 'key' AND name = :key) OR (scope = 'client' AND name = :client)"
    " ORDER BY scope DESC FOR UPDATE"
)
_SAVE_ROW = text(
    "UPDATE billing.auth_failures SET failures = CAST(:failures AS double precision[]),"
    " locked_until = :locked_until, strikes = :strikes, updated_at = now()"
    " WHERE scope = :scope AND name = :name"
)
_PRUNE = text(
    "DELETE FROM billing.auth_failures WHERE ctid = ANY(ARRAY("
    " SELECT ctid FROM billing.auth_failures"
    " WHERE updated_at < now() - CAST(:quiet AS integer) * interval '1 second'"
    " LIMIT :limit))"
)


def client_name(raw: str) -> str:
    """The client as the gateway named it, bounded and printable."""
    name = "".join(c for c in raw if " " <= c <= "~")[:MAX_CLIENT_CHARS]
    return name or UNKNOWN_CLIENT


@_retry_conflicts
async def record_failure_of(engine: AsyncEngine, client: str, api_key: str) -> Verdict:
    """Count one failed authentication of `api_key` from `client`; the lock-outs now running."""
    key = fingerprint(api_key)
    client = client_name(client)
    names = {"key": key, "client": client}
    policies: dict[str, LockoutPolicy] = {"key": KEY_POLICY, "client": CLIENT_POLICY}
    async with engine.begin() as conn:
        await conn.execute(_ENSURE_ROWS, names)
        rows = {row.scope: row for row in (await conn.execute(_LOCK_ROWS, names)).all()}
        now = float(rows["key"].now)
        counters = {}
        for scope, row in rows.items():
            counter = new_counter(policies[scope], row.failures)
            counter.locked_until = float(row.locked_until)
            counter.strikes = int(row.strikes)
            counters[scope] = counter
        key_wait = locked_for(counters["key"], now)
        client_wait = locked_for(counters["client"], now)
        if key_wait > 0 or client_wait > 0:
            # Already locked out: refused, not counted (as a gateway that knew would).
            return Verdict(max(key_wait, 0.0), max(client_wait, 0.0), refused=True)
        for scope, counter in counters.items():
            cooldown = record_failure(counter, policies[scope], now)
            if cooldown:
                log.warning(
                    "repeated bad API keys: locked out",
                    extra=fields(
                        scope=scope, client=client, key_fingerprint=key, cooldown_seconds=cooldown
                    ),
                )
            await conn.execute(
                _SAVE_ROW,
                {
                    "scope": scope,
                    "name": names[scope],
                    "failures": list(counter.failures),
                    "locked_until": counter.locked_until,
                    "strikes": counter.strikes,
                },
            )
    return Verdict(
        max(locked_for(counters["key"], now), 0.0),
        max(locked_for(counters["client"], now), 0.0),
        refused=False,
    )


async def prune(engine: AsyncEngine, limit: int = PRUNE_BATCH) -> int:
    """Delete rows the rule has forgotten (quiet for a window plus the longest lock-out)."""
    quiet = int(
        max(KEY_POLICY.window, CLIENT_POLICY.window)
        + max(KEY_POLICY.max_cooldown, CLIENT_POLICY.max_cooldown)
    )
    async with engine.begin() as conn:
        result = await conn.execute(_PRUNE, {"quiet": quiet, "limit": limit})
    return int(result.rowcount or 0)
