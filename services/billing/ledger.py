"""Billing's database operations. Each public function is one transaction.

Money rules enforced here (and backed by CHECK constraints in the schema):
balance = sum of the account's ledger entries; held = sum of its open holds;
available = balance - held never goes below zero. Inputs are validated with
`rules` before any SQL runs; failures raise the `rules.BillingError` family.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import Row, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.common.logs import fields

from . import rules
from .rules import (
    FailedPrecondition,
    InsufficientFunds,
    InvalidArgument,
    NotFound,
    Unauthenticated,
)

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

# serialization_failure, deadlock_detected: the transaction rolled back; run it again.
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})
NUMERIC_OUT_OF_RANGE = "22003"
MAX_ATTEMPTS = 3
# Above every ledger entry id (a bigint): where a listing from the newest starts.
MAX_BIGINT = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Account:
    id: str
    name: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Balance:
    account_id: str
    balance_micros: int
    held_micros: int

    @property
    def available_micros(self) -> int:
        return self.balance_micros - self.held_micros


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    account_id: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class CreatedApiKey:
    key_id: str
    account_id: str
    api_key: str  # plaintext, returned once, never stored
    prefix: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Principal:
    account_id: str
    key_id: str


@dataclass(frozen=True, slots=True)
class Hold:
    id: str
    account_id: str
    amount_micros: int
    status: str
    captured_micros: int
    idempotency_key: str
    description: str
    created_at: datetime
    expires_at: datetime
    settled_at: datetime | None


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    id: int
    account_id: str
    kind: str
    amount_micros: int
    balance_after_micros: int
    hold_id: str | None
    description: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class LedgerPage:
    entries: list[LedgerEntry]
    # Where the next page starts (its after_entry_id); 0 when this page is the last.
    next_after_entry_id: int


@dataclass(frozen=True, slots=True)
class ExpiredBatch:
    holds: int
    released_micros: int
    accounts: int


class _Replay(Exception):
    """A concurrent request with the same idempotency key won; roll back and return its result."""


def sqlstate(exc: DBAPIError) -> str | None:
    code = getattr(exc.orig, "sqlstate", None)
    return code if isinstance(code, str) else None


def _retry_conflicts(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Re-run a whole transaction that PostgreSQL aborted as a deadlock/serialization victim."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        attempt = 1
        while True:
            try:
                return await fn(*args, **kwargs)
            except DBAPIError as exc:
                code = sqlstate(exc)
                if attempt >= MAX_ATTEMPTS or code not in RETRYABLE_SQLSTATES:
                    raise
                log.warning(
                    "transaction conflict, retrying",
                    extra=fields(op=fn.__name__, attempt=attempt, sqlstate=code),
                )
                attempt += 1

    return wrapper


HOLD_COLUMNS = (
    "id, account_id, amount_micros, status, captured_micros, idempotency_key,"
    " description, created_at, expires_at, settled_at"
)
ENTRY_COLUMNS = (
    "id, account_id, kind, amount_micros, balance_after_micros, hold_id, description, created_at"
)
KEY_COLUMNS = "id, account_id, prefix, created_at, revoked_at"

_INSERT_ACCOUNT = text(
    "INSERT INTO billing.accounts (id, name) VALUES (:id, :name) RETURNING created_at"
)
_SELECT_BALANCE = text("SELECT balance_micros, held_micros FROM billing.accounts WHERE id = :id")
_ACCOUNT_EXISTS = text("SELECT 1 FROM billing.accounts WHERE id = :id")
_CREDIT = text(
    "UPDATE billing.accounts SET balance_micros = balance_micros + :amount"
    " WHERE id = :id RETURNING balance_micros, held_micros"
)
_INSERT_ENTRY = text(
    "INSERT INTO billing.ledger_entries"
    " (account_id, kind, amount_micros, balance_after_micros, hold_id, idempotency_key,"
    " description)"
    " VALUES (:account_id, :kind, :amount, :balance_after, :hold_id, :key, :description)"
    " ON CONFLICT (idempotency_key) DO NOTHING RETURNING id"
)
_ENTRY_BY_KEY = text(
    "SELECT account_id, amount_micros FROM billing.ledger_entries WHERE idempotency_key = :key"
)
_LIST_ENTRIES = text(
    f"SELECT {ENTRY_COLUMNS} FROM billing.ledger_entries"
    " WHERE account_id = :id AND id < :before ORDER BY id DESC LIMIT :limit"
)

_INSERT_KEY = text(
    "INSERT INTO billing.api_keys (id, account_id, key_hash, prefix)"
    " SELECT :id, a.id, :hash, :prefix FROM billing.accounts a WHERE a.id = :account_id"
    " RETURNING created_at"
)
_LIST_KEYS = text(
    f"SELECT {KEY_COLUMNS} FROM billing.api_keys WHERE account_id = :id"
    " ORDER BY created_at, id LIMIT :limit"
)
_REVOKE_KEY = text(
    "UPDATE billing.api_keys SET revoked_at = now() WHERE id = :id AND revoked_at IS NULL"
    f" RETURNING {KEY_COLUMNS}"
)
_KEY_BY_ID = text(f"SELECT {KEY_COLUMNS} FROM billing.api_keys WHERE id = :id")
_AUTHENTICATE = text(
    "SELECT id, account_id FROM billing.api_keys WHERE key_hash = :hash AND revoked_at IS NULL"
)

# The guard: the reservation happens only if the available balance covers it.
_RESERVE = text(
    "UPDATE billing.accounts SET held_micros = held_micros + :amount"
    " WHERE id = :id AND balance_micros - held_micros >= :amount"
    " RETURNING balance_micros, held_micros"
)
_INSERT_HOLD = text(
    "INSERT INTO billing.holds"
    " (id, account_id, amount_micros, idempotency_key, description, expires_at)"
    " VALUES (:id, :account_id, :amount, :key, :description,"
    " now() + CAST(:ttl AS integer) * interval '1 second')"
    f" ON CONFLICT (idempotency_key) DO NOTHING RETURNING {HOLD_COLUMNS}"
)
_HOLD_BY_KEY = text(f"SELECT {HOLD_COLUMNS} FROM billing.holds WHERE idempotency_key = :key")
_HOLD_BY_ID = text(f"SELECT {HOLD_COLUMNS} FROM billing.holds WHERE id = :id")
_CAPTURE = text(
    "UPDATE billing.holds SET status = 'captured',"
    " captured_micros = LEAST(CAST(:amount AS bigint), amount_micros),"
    " settled_at = now(), settle_note = :note"
    f" WHERE id = :id AND status = 'open' RETURNING {HOLD_COLUMNS}"
)
_RELEASE = text(
    "UPDATE billing.holds SET status = 'released', settled_at = now(), settle_note = :note"
    f" WHERE id = :id AND status = 'open' RETURNING {HOLD_COLUMNS}"
)
_SETTLE_ACCOUNT = text(
    "UPDATE billing.accounts SET held_micros = held_micros - :held,"
    " balance_micros = balance_micros - :spent"
    " WHERE id = :id RETURNING balance_micros, held_micros"
)

_LOCK_DUE_HOLDS = text(
    "SELECT id, account_id, amount_micros FROM billing.holds"
    " WHERE status = 'open' AND expires_at <= now()"
    " ORDER BY expires_at LIMIT :limit FOR UPDATE SKIP LOCKED"
)
_EXPIRE_HOLDS = text(
    "UPDATE billing.holds SET status = 'expired', settled_at = now(), settle_note = 'expired'"
    " WHERE id = ANY(CAST(:ids AS text[])) AND status = 'open'"
)
# Accounts are locked in id order so concurrent sweepers cannot deadlock each other.
_LOCK_ACCOUNTS = text(
    "SELECT id FROM billing.accounts WHERE id = ANY(CAST(:ids AS text[]))"
    " ORDER BY id FOR NO KEY UPDATE"
)
_UNHOLD_MANY = text(
    "UPDATE billing.accounts AS a SET held_micros = a.held_micros - v.amount"
    " FROM unnest(CAST(:ids AS text[]), CAST(:amounts AS bigint[])) AS v(id, amount)"
    " WHERE a.id = v.id"
)


def _hold(row: Row[Any]) -> Hold:
    return Hold(
        id=row.id,
        account_id=row.account_id,
        amount_micros=row.amount_micros,
        status=row.status,
        captured_micros=row.captured_micros,
        idempotency_key=row.idempotency_key,
        description=row.description,
        created_at=row.created_at,
        expires_at=row.expires_at,
        settled_at=row.settled_at,
    )


def _key(row: Row[Any]) -> ApiKey:
    return ApiKey(
        id=row.id,
        account_id=row.account_id,
        prefix=row.prefix,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


def _entry(row: Row[Any]) -> LedgerEntry:
    return LedgerEntry(
        id=row.id,
        account_id=row.account_id,
        kind=row.kind,
        amount_micros=row.amount_micros,
        balance_after_micros=row.balance_after_micros,
        hold_id=row.hold_id,
        description=row.description,
        created_at=row.created_at,
    )


async def _balance(conn: AsyncConnection, account_id: str) -> Balance:
    row = (await conn.execute(_SELECT_BALANCE, {"id": account_id})).first()
    if row is None:
        raise NotFound(f"account {account_id} not found")
    return Balance(account_id, row.balance_micros, row.held_micros)


async def _require_account(conn: AsyncConnection, account_id: str) -> None:
    if (await conn.execute(_ACCOUNT_EXISTS, {"id": account_id})).first() is None:
        raise NotFound(f"account {account_id} not found")


async def _hold_by_id(conn: AsyncConnection, hold_id: str) -> Hold:
    row = (await conn.execute(_HOLD_BY_ID, {"id": hold_id})).first()
    if row is None:
        raise NotFound(f"hold {hold_id} not found")
    return _hold(row)


async def _hold_by_key(conn: AsyncConnection, key: str) -> Hold | None:
    row = (await conn.execute(_HOLD_BY_KEY, {"key": key})).first()
    return None if row is None else _hold(row)


def _same_hold_request(hold: Hold, account_id: str, amount_micros: int) -> Hold:
    """A PlaceHold retry must repeat the first request; anything else is a caller bug."""
    if hold.account_id != account_id or hold.amount_micros != amount_micros:
        raise InvalidArgument(
            "idempotency_key was already used for a different hold (another account or amount)"
        )
    return hold


# Accounts and balances.


@_retry_conflicts
async def create_account(engine: AsyncEngine, name: str) -> Account:
    name = rules.check_name(name)
    account_id = rules.new_account_id()
    async with engine.begin() as conn:
        created_at = (
            await conn.execute(_INSERT_ACCOUNT, {"id": account_id, "name": name})
        ).scalar_one()
    return Account(account_id, name, created_at)


async def get_balance(engine: AsyncEngine, account_id: str) -> Balance:
    account_id = rules.check_account_id(account_id)
    async with engine.connect() as conn:
        return await _balance(conn, account_id)


@_retry_conflicts
async def top_up(
    engine: AsyncEngine,
    account_id: str,
    amount_micros: int,
    *,
    idempotency_key: str = "",
    description: str = "",
) -> Balance:
    """Credit the account. With an idempotency key, a repeat moves nothing and
    returns the current balance."""
    account_id = rules.check_account_id(account_id)
    amount = rules.check_positive_amount(amount_micros)
    key = rules.check_idempotency_key(idempotency_key, required=False)
    description = rules.check_text("description", description)
    # Namespaced so a caller's key can never collide with "capture:<hold>".
    stored_key = None if key is None else f"topup:{key}"
    try:
        async with engine.begin() as conn:
            if stored_key is not None and await _prior_top_up(conn, stored_key, account_id, amount):
                return await _balance(conn, account_id)
            row = (await conn.execute(_CREDIT, {"id": account_id, "amount": amount})).first()
            if row is None:
                raise NotFound(f"account {account_id} not found")
            entry_id = (
                await conn.execute(
                    _INSERT_ENTRY,
                    {
                        "account_id": account_id,
                        "kind": "topup",
                        "amount": amount,
                        "balance_after": row.balance_micros,
                        "hold_id": None,
                        "key": stored_key,
                        "description": description,
                    },
                )
            ).scalar_one_or_none()
            if entry_id is None:
                raise _Replay
            return Balance(account_id, row.balance_micros, row.held_micros)
    except _Replay:
        pass
    except DBAPIError as exc:
        if sqlstate(exc) == NUMERIC_OUT_OF_RANGE:
            raise InvalidArgument("this top-up would overflow the account balance") from exc
        raise
    assert stored_key is not None  # only a keyed top-up can be replayed
    async with engine.connect() as conn:
        if not await _prior_top_up(conn, stored_key, account_id, amount):
            raise RuntimeError("top-up idempotency conflict but no entry found")
        return await _balance(conn, account_id)


async def _prior_top_up(
    conn: AsyncConnection, stored_key: str, account_id: str, amount_micros: int
) -> bool:
    prior = (await conn.execute(_ENTRY_BY_KEY, {"key": stored_key})).first()
    if prior is None:
        return False
    if prior.account_id != account_id or prior.amount_micros != amount_micros:
        raise InvalidArgument(
            "idempotency_key was already used for a different top-up (another account or amount)"
        )
    return True


async def list_ledger(engine: AsyncEngine, account_id: str, limit: int = 0) -> list[LedgerEntry]:
    """The account's newest entries, newest first."""
    return (await ledger_page(engine, account_id, limit)).entries


async def ledger_page(
    engine: AsyncEngine, account_id: str, limit: int = 0, after_entry_id: int = 0
) -> LedgerPage:
    """One page of the account's entries, newest first, starting after entry
    `after_entry_id` (0: at the newest). Entry ids only grow, so a cursor stays
    valid while new entries arrive: they are newer than every page after it."""
    account_id = rules.check_account_id(account_id)
    limit = rules.resolve_ledger_limit(limit)
    after = rules.check_ledger_cursor(after_entry_id)
    async with engine.connect() as conn:
        await _require_account(conn, account_id)
        # One row beyond the page tells whether another page follows.
        before = after or MAX_BIGINT
        params = {"id": account_id, "limit": limit + 1, "before": before}
        rows = (await conn.execute(_LIST_ENTRIES, params)).all()
    entries = [_entry(row) for row in rows[:limit]]
    return LedgerPage(entries, entries[-1].id if len(rows) > limit else 0)


# API keys.


@_retry_conflicts
async def create_api_key(engine: AsyncEngine, account_id: str) -> CreatedApiKey:
    account_id = rules.check_account_id(account_id)
    key_id = rules.new_key_id()
    api_key = rules.new_api_key()
    prefix = rules.key_display_prefix(api_key)
    async with engine.begin() as conn:
        created_at = (
            await conn.execute(
                _INSERT_KEY,
                {
                    "id": key_id,
                    "account_id": account_id,
                    "hash": rules.hash_api_key(api_key),
                    "prefix": prefix,
                },
            )
        ).scalar_one_or_none()
        if created_at is None:
            raise NotFound(f"account {account_id} not found")
    return CreatedApiKey(key_id, account_id, api_key, prefix, created_at)


async def list_api_keys(engine: AsyncEngine, account_id: str) -> list[ApiKey]:
    """The account's keys (active and revoked), oldest first, at most 1000."""
    account_id = rules.check_account_id(account_id)
    async with engine.connect() as conn:
        await _require_account(conn, account_id)
        rows = (
            await conn.execute(_LIST_KEYS, {"id": account_id, "limit": rules.MAX_LISTED_KEYS})
        ).all()
    return [_key(row) for row in rows]


@_retry_conflicts
async def revoke_api_key(engine: AsyncEngine, key_id: str) -> ApiKey:
    """Revoke now; revoking a revoked key returns it unchanged."""
    key_id = rules.check_key_id(key_id)
    async with engine.begin() as conn:
        row = (await conn.execute(_REVOKE_KEY, {"id": key_id})).first()
        if row is None:
            row = (await conn.execute(_KEY_BY_ID, {"id": key_id})).first()
            if row is None:
                raise NotFound(f"API key {key_id} not found")
    return _key(row)


async def authenticate(engine: AsyncEngine, api_key: str) -> Principal:
    """The key's owner. Unknown, revoked and malformed keys fail alike."""
    if not rules.looks_like_api_key(api_key):
        raise Unauthenticated(rules.UNAUTHENTICATED_MESSAGE)
    async with engine.connect() as conn:
        row = (await conn.execute(_AUTHENTICATE, {"hash": rules.hash_api_key(api_key)})).first()
    if row is None:
        raise Unauthenticated(rules.UNAUTHENTICATED_MESSAGE)
    return Principal(account_id=row.account_id, key_id=row.id)


# Holds: place, capture, release, expire.


@_retry_conflicts
async def place_hold(
    engine: AsyncEngine,
    account_id: str,
    amount_micros: int,
    idempotency_key: str,
    *,
    description: str = "",
    ttl_seconds: int = 0,
    default_ttl_seconds: int = 3600,
) -> Hold:
    """Reserve money. A retry with the same idempotency key returns the same hold."""
    account_id = rules.check_account_id(account_id)
    amount = rules.check_positive_amount(amount_micros)
    key = rules.check_idempotency_key(idempotency_key, required=True)
    assert key is not None
    description = rules.check_text("description", description)
    ttl = rules.resolve_hold_ttl(ttl_seconds, default_ttl_seconds)
    try:
        async with engine.begin() as conn:
            existing = await _hold_by_key(conn, key)
            if existing is not None:
                return _same_hold_request(existing, account_id, amount)
            reserved = (await conn.execute(_RESERVE, {"id": account_id, "amount": amount})).first()
            if reserved is None:
                # A concurrent twin may have committed since the check above.
                existing = await _hold_by_key(conn, key)
                if existing is not None:
                    return _same_hold_request(existing, account_id, amount)
                balance = await _balance(conn, account_id)
                raise InsufficientFunds(
                    f"insufficient balance: available {rules.idr(balance.available_micros)} IDR,"
                    f" this needs {rules.idr(amount)} IDR"
                )
            row = (
                await conn.execute(
                    _INSERT_HOLD,
                    {
                        "id": rules.new_hold_id(),
                        "account_id": account_id,
                        "amount": amount,
                        "key": key,
                        "description": description,
                        "ttl": ttl,
                    },
                )
            ).first()
            if row is None:
                raise _Replay  # rolls back our reservation
            return _hold(row)
    except _Replay:
        pass
    async with engine.connect() as conn:
        existing = await _hold_by_key(conn, key)
    if existing is None:
        raise RuntimeError("hold idempotency conflict but no hold found")
    return _same_hold_request(existing, account_id, amount)


async def get_hold(engine: AsyncEngine, hold_id: str) -> Hold:
    hold_id = rules.check_hold_id(hold_id)
    async with engine.connect() as conn:
        return await _hold_by_id(conn, hold_id)


@_retry_conflicts
async def capture_hold(
    engine: AsyncEngine, hold_id: str, amount_micros: int, description: str = ""
) -> Hold:
    """Charge min(amount, held) and free the rest. Capturing a captured hold
    returns it unchanged; a released or expired hold cannot be captured."""
    hold_id = rules.check_hold_id(hold_id)
    amount = rules.check_capture_amount(amount_micros)
    description = rules.check_text("description", description)
    async with engine.begin() as conn:
        row = (
            await conn.execute(_CAPTURE, {"id": hold_id, "amount": amount, "note": description})
        ).first()
        if row is None:
            hold = await _hold_by_id(conn, hold_id)
            if hold.status == "captured":
                return hold
            raise FailedPrecondition(f"hold {hold_id} is {hold.status}; it cannot be captured")
        hold = _hold(row)
        account = (
            await conn.execute(
                _SETTLE_ACCOUNT,
                {
                    "id": hold.account_id,
                    "held": hold.amount_micros,
                    "spent": hold.captured_micros,
                },
            )
        ).one()
        if hold.captured_micros > 0:
            entry_id = (
                await conn.execute(
                    _INSERT_ENTRY,
                    {
                        "account_id": hold.account_id,
                        "kind": "capture",
                        "amount": -hold.captured_micros,
                        "balance_after": account.balance_micros,
                        "hold_id": hold.id,
                        "key": f"capture:{hold.id}",
                        "description": description or hold.description,
                    },
                )
            ).scalar_one_or_none()
            if entry_id is None:
                raise RuntimeError(f"hold {hold.id} already has a capture entry")
    return hold


@_retry_conflicts
async def release_hold(engine: AsyncEngine, hold_id: str, reason: str = "") -> Hold:
    """Free all of the hold. Releasing a released or expired hold returns it
    unchanged; a captured hold cannot be released."""
    hold_id = rules.check_hold_id(hold_id)
    reason = rules.check_text("reason", reason)
    async with engine.begin() as conn:
        row = (await conn.execute(_RELEASE, {"id": hold_id, "note": reason})).first()
        if row is None:
            hold = await _hold_by_id(conn, hold_id)
            if hold.status in ("released", "expired"):
                return hold
            raise FailedPrecondition(f"hold {hold_id} is {hold.status}; it cannot be released")
        hold = _hold(row)
        await conn.execute(
            _SETTLE_ACCOUNT, {"id": hold.account_id, "held": hold.amount_micros, "spent": 0}
        )
    return hold


@_retry_conflicts
async def expire_due_holds(engine: AsyncEngine, batch_size: int = 500) -> ExpiredBatch:
    """Expire up to `batch_size` open holds past their expiry, in one transaction.

    Holds another transaction is settling right now are skipped (SKIP LOCKED),
    so several sweepers and concurrent captures never block or double-free.
    """
    if batch_size < 1:
        raise InvalidArgument("batch_size must be positive")
    async with engine.begin() as conn:
        due = (await conn.execute(_LOCK_DUE_HOLDS, {"limit": batch_size})).all()
        if not due:
            return ExpiredBatch(0, 0, 0)
        expired = await conn.execute(_EXPIRE_HOLDS, {"ids": [row.id for row in due]})
        if expired.rowcount != len(due):
            raise RuntimeError("locked holds changed while being expired")
        per_account: dict[str, int] = {}
        for row in due:
            per_account[row.account_id] = per_account.get(row.account_id, 0) + row.amount_micros
        account_ids = sorted(per_account)
        await conn.execute(_LOCK_ACCOUNTS, {"ids": account_ids})
        await conn.execute(
            _UNHOLD_MANY,
            {"ids": account_ids, "amounts": [per_account[a] for a in account_ids]},
        )
    return ExpiredBatch(
        holds=len(due), released_micros=sum(per_account.values()), accounts=len(account_ids)
    )


async def schema_revision(engine: AsyncEngine) -> str | None:
    """The applied billing migration, or None when the schema was never migrated."""
    async with engine.connect() as conn:
        table = (
            await conn.execute(text("SELECT to_regclass('billing.alembic_version')"))
        ).scalar_one()
        if table is None:
            return None
        revision = (
            await conn.execute(text("SELECT version_num FROM billing.alembic_version"))
        ).scalar_one_or_none()
    return None if revision is None else str(revision)
