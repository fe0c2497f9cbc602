"""The two billing operations every paid call makes, in one round trip each.

`authorize_hold` checks the API key and reserves the money in a single SQL
statement; `capture` settles a hold (hold, account and ledger entry) in
another. They run on a psycopg pool without the SQLAlchemy layer, whose
per-statement cost dominated billing's CPU in profiles (bench/README.md).
Every rule is the ledger's own (ledger.py): the same conditional updates and
constraints, so the invariants hold whichever path moved the money. The rare
cases (a retried idempotency key, a hold that is no longer open) fall back to
ledger.py, which explains them precisely.
"""

from __future__ import annotations

from typing import Any

from psycopg import errors
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common import pg

from . import ledger, rules
from .ledger import Hold, Principal

HOLD_COLUMNS = ledger.HOLD_COLUMNS

# One statement: the key's owner, the reservation (only if the balance covers
# it and no hold has this idempotency key yet) and the hold row. A concurrent
# twin with the same key makes the INSERT hit the unique constraint, which
# rolls the whole statement back: nothing is reserved twice.
_AUTHORIZE_HOLD = f"""
WITH k AS (
    SELECT id AS key_id, account_id FROM billing.api_keys
    WHERE key_hash = %(hash)s AND revoked_at IS NULL
), r AS (
    UPDATE billing.accounts a SET held_micros = a.held_micros + %(amount)s
    FROM k
    WHERE a.id = k.account_id
      AND a.balance_micros - a.held_micros >= %(amount)s
      AND NOT EXISTS (SELECT 1 FROM billing.holds WHERE idempotency_key = %(key)s)
    RETURNING a.id
), h AS (
    INSERT INTO billing.holds
        (id, account_id, amount_micros, idempotency_key, description, expires_at)
    SELECT %(hold_id)s, r.id, %(amount)s, %(key)s, %(description)s,
           now() + %(ttl)s * interval '1 second'
    FROM r
    RETURNING {HOLD_COLUMNS}
)
SELECT k.key_id, k.account_id AS principal_account_id, h.* FROM k LEFT JOIN h ON true
"""

_AUTHENTICATE = """
SELECT id AS key_id, account_id FROM billing.api_keys
WHERE key_hash = %(hash)s AND revoked_at IS NULL
"""

# One statement: close the hold (only if open), move the money on the account,
# append the ledger entry (none for a zero capture).
_CAPTURE = f"""
WITH h AS (
    UPDATE billing.holds SET status = 'captured',
        captured_micros = LEAST(%(amount)s::bigint, amount_micros),
        settled_at = now(), settle_note = %(note)s
    WHERE id = %(id)s AND status = 'open'
    RETURNING {HOLD_COLUMNS}
), a AS (
    UPDATE billing.accounts acc
    SET held_micros = acc.held_micros - h.amount_micros,
        balance_micros = acc.balance_micros - h.captured_micros
    FROM h WHERE acc.id = h.account_id
    RETURNING acc.balance_micros
), e AS (
    INSERT INTO billing.ledger_entries
        (account_id, kind, amount_micros, balance_after_micros, hold_id, idempotency_key,
         description)
    SELECT h.account_id, 'capture', -h.captured_micros, a.balance_micros, h.id,
           'capture:' || h.id, COALESCE(NULLIF(%(note)s, ''), h.description)
    FROM h, a WHERE h.captured_micros > 0
    RETURNING id
)
SELECT h.* FROM h
"""

_HOLD_FIELDS = (
    "id",
    "account_id",
    "amount_micros",
    "status",
    "captured_micros",
    "idempotency_key",
    "description",
    "created_at",
    "expires_at",
    "settled_at",
)


def _hold(row: dict[str, Any]) -> Hold:
    return Hold(**{name: row[name] for name in _HOLD_FIELDS})


class HotPath:
    def __init__(
        self,
        url: str,
        engine: AsyncEngine,
        *,
        min_size: int = 2,
        max_size: int = 10,
        timeout_seconds: float = 10.0,
    ) -> None:
        self._engine = engine  # for the rare cases, through ledger.py
        self._pool = pg.pool(
            url,
            "billing-hot",
            min_size=min_size,
            max_size=max_size,
            timeout_seconds=timeout_seconds,
        )

    async def open(self, *, wait: bool = True) -> None:
        """With wait, fail now if the database cannot be reached."""
        await self._pool.open(wait=wait, timeout=10)

    async def close(self) -> None:
        await self._pool.close()

    async def authenticate(self, api_key: str) -> Principal:
        """The key's owner. Unknown, revoked and malformed keys fail alike."""
        if not rules.looks_like_api_key(api_key):
            raise rules.Unauthenticated(rules.UNAUTHENTICATED_MESSAGE)
        row = await pg.fetchone(self._pool, _AUTHENTICATE, {"hash": rules.hash_api_key(api_key)})
        if row is None:
            raise rules.Unauthenticated(rules.UNAUTHENTICATED_MESSAGE)
        return Principal(account_id=row["account_id"], key_id=row["key_id"])

    async def authorize_hold(
        self,
        api_key: str,
        amount_micros: int,
        idempotency_key: str,
        *,
        description: str,
        ttl_seconds: int,
        default_ttl_seconds: int,
    ) -> tuple[Principal, Hold]:
        """The key's owner and its new hold. Unknown or revoked keys are
        Unauthenticated; a balance that cannot cover it is InsufficientFunds."""
        if not rules.looks_like_api_key(api_key):
            raise rules.Unauthenticated(rules.UNAUTHENTICATED_MESSAGE)
        amount = rules.check_positive_amount(amount_micros)
        key = rules.check_idempotency_key(idempotency_key, required=True)
        assert key is not None
        params = {
            "hash": rules.hash_api_key(api_key),
            "amount": amount,
            "key": key,
            "hold_id": rules.new_hold_id(),
            "description": rules.check_text("description", description),
            "ttl": rules.resolve_hold_ttl(ttl_seconds, default_ttl_seconds),
        }
        try:
            row = await pg.fetchone(self._pool, _AUTHORIZE_HOLD, params)
        except errors.UniqueViolation:
            row = None  # a twin with this idempotency key won: fall through
            principal = await ledger.authenticate(self._engine, api_key)
        else:
            if row is None:
                raise rules.Unauthenticated(rules.UNAUTHENTICATED_MESSAGE)
            principal = Principal(account_id=row["principal_account_id"], key_id=row["key_id"])
            if row["id"] is not None:
                return principal, _hold(row)
        # Not reserved: a retried idempotency key (return that hold), or a
        # balance that cannot cover it. ledger.place_hold tells which, exactly.
        hold = await ledger.place_hold(
            self._engine,
            principal.account_id,
            amount,
            key,
            description=str(params["description"]),
            ttl_seconds=ttl_seconds,
            default_ttl_seconds=default_ttl_seconds,
        )
        return principal, hold

    async def capture(self, hold_id: str, amount_micros: int, description: str) -> Hold:
        hold_id = rules.check_hold_id(hold_id)
        amount = rules.check_capture_amount(amount_micros)
        note = rules.check_text("description", description)
        row = await pg.fetchone(
            self._pool, _CAPTURE, {"id": hold_id, "amount": amount, "note": note}
        )
        if row is not None:
            return _hold(row)
        # Not open: already captured (idempotent), released, expired or unknown.
        return await ledger.capture_hold(self._engine, hold_id, amount, description)
