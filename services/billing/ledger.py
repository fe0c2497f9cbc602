"""Billing's records that move no money: accounts, API keys and the reads
(balances, holds, the customer's statement), on SQLAlchemy. Each public
function is one transaction.

Every operation that moves money lives in money.py, written once on psycopg.
The statement (`list_ledger`, `ledger_page`) reads `billing.ledger_entries`,
the view of the transactions that changed a customer's balance or debt (a
top-up, a capture, a promotion, an adjustment or a reversal). Low-balance
alerts (a threshold per account, claimed for mailing) move no money either.
Inputs are validated with `rules` before any SQL runs; failures raise the
`rules.BillingError` family.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import Row, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.common.logs import fields

from . import postings, rules
from .rules import NotFound

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

# serialization_failure, deadlock_detected: the transaction rolled back; run it again.
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})
MAX_ATTEMPTS = 3
# Above every ledger entry id (a bigint): where a listing from the newest starts.
MAX_BIGINT = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Account:
    id: str
    name: str
    created_at: datetime
    disabled_at: datetime | None = None
    disabled_reason: str = ""
    # The operator (accounts user id) who disabled it; "" for aiportctl.
    disabled_by: str = ""
    # Rate-limit overrides for the whole account; 0 = the deployment's default.
    requests_per_minute: int = 0
    concurrent_requests: int = 0


@dataclass(frozen=True, slots=True)
class Balance:
    account_id: str
    balance_micros: int
    held_micros: int
    # What the customer owes after a reversal of money already spent (>= 0).
    debt_micros: int = 0
    # The low-balance alert's threshold; 0 while the alert is off.
    low_balance_threshold_micros: int = 0

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
    name: str = ""
    scopes: tuple[str, ...] = (rules.SCOPE_INFERENCE,)
    last_used_at: datetime | None = None
    controls: KeyControls = field(default_factory=lambda: KeyControls())


@dataclass(frozen=True, slots=True)
class KeyControls:
    """A key's developer controls and what its caps have counted."""

    caps: rules.SpendCaps = field(default_factory=rules.SpendCaps)
    spend: rules.KeySpend = field(default_factory=rules.KeySpend)
    allowed_models: tuple[str, ...] = ()  # empty: every model
    expires_at: datetime | None = None
    requests_per_minute: int = 0  # 0: the deployment's default
    concurrent_requests: int = 0


@dataclass(frozen=True, slots=True)
class RateLimits:
    """What the gateway's limiter enforces for a caller; 0 = the deployment's default."""

    key_requests_per_minute: int = 0
    key_concurrent_requests: int = 0
    account_requests_per_minute: int = 0
    account_concurrent_requests: int = 0


@dataclass(frozen=True, slots=True)
class CreatedApiKey:
    key_id: str
    account_id: str
    api_key: str  # plaintext, returned once, never stored
    prefix: str
    created_at: datetime
    name: str = ""
    scopes: tuple[str, ...] = (rules.SCOPE_INFERENCE,)
    controls: KeyControls = field(default_factory=lambda: KeyControls())

    def info(self) -> ApiKey:
        return ApiKey(
            self.key_id,
            self.account_id,
            self.prefix,
            self.created_at,
            None,
            self.name,
            self.scopes,
            controls=self.controls,
        )


@dataclass(frozen=True, slots=True)
class Principal:
    account_id: str
    key_id: str  # "" for a principal named by account
    scopes: tuple[str, ...] = ()
    rate_limits: RateLimits = RateLimits()


@dataclass(frozen=True, slots=True)
class Hold:
    id: str
    account_id: str
    amount_micros: int
    status: str
    captured_micros: int
    idempotency_key: str
    model: str  # its capture credits revenue:<model>
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
    # The operator who made it (adjustments through /v1/admin); "" otherwise.
    actor: str = ""
    # How much more (+) or less (-) the customer owes after it.
    debt_change_micros: int = 0


@dataclass(frozen=True, slots=True)
class LedgerPage:
    entries: list[LedgerEntry]
    # Where the next page starts (its after_entry_id); 0 when this page is the last.
    next_after_entry_id: int


@dataclass(frozen=True, slots=True)
class LowBalanceAlert:
    """An account whose available balance fell below its alert's threshold."""

    account_id: str
    available_micros: int
    threshold_micros: int


@dataclass(frozen=True, slots=True)
class ExpiredBatch:
    holds: int
    released_micros: int
    accounts: int


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
    "id, account_id, amount_micros, status, captured_micros, idempotency_key, model,"
    " description, created_at, expires_at, settled_at"
)
ENTRY_COLUMNS = (
    "id, account_id, kind, amount_micros, balance_after_micros, hold_id, description, created_at,"
    " actor, debt_change_micros"
)
BALANCE_COLUMNS = "balance_micros, held_micros, debt_micros, low_balance_threshold_micros"
KEY_COLUMNS = (
    "id, account_id, prefix, created_at, revoked_at, name, scopes, last_used_at,"
    " daily_cap_micros, monthly_cap_micros, lifetime_cap_micros, spent_lifetime_micros,"
    " spent_day, spent_day_micros, spent_month, spent_month_micros, allowed_models, expires_at,"
    " requests_per_minute, concurrent_requests"
)
ACCOUNT_COLUMNS = (
    "id, name, created_at, disabled_at, disabled_reason, disabled_by, requests_per_minute,"
    " concurrent_requests"
)

_INSERT_ACCOUNT = text(
    "INSERT INTO billing.accounts (id, name) VALUES (:id, :name) RETURNING created_at"
)
_SELECT_BALANCE = text(f"SELECT {BALANCE_COLUMNS} FROM billing.accounts WHERE id = :id")
_ACCOUNT_EXISTS = text("SELECT 1 FROM billing.accounts WHERE id = :id")
_LIST_ENTRIES = text(
    f"SELECT {ENTRY_COLUMNS} FROM billing.ledger_entries"
    " WHERE account_id = :id AND id < :before ORDER BY id DESC LIMIT :limit"
)

_INSERT_KEY = text(
    "INSERT INTO billing.api_keys (id, account_id, key_hash, prefix, name, scopes"
    + "".join(f", {column}" for column in rules.KEY_SETTING_COLUMNS)
    + ") SELECT :id, a.id, :hash, :prefix, :name, :scopes"
    + "".join(f", :{column}" for column in rules.KEY_SETTING_COLUMNS)
    + f" FROM billing.accounts a WHERE a.id = :account_id RETURNING {KEY_COLUMNS}"
)
_SET_ACCOUNT_RATE_LIMITS = text(
    "UPDATE billing.accounts SET requests_per_minute = :rpm, concurrent_requests = :concurrency"
    f" WHERE id = :id RETURNING {ACCOUNT_COLUMNS}"
)
_LIST_KEYS = text(
    f"SELECT {KEY_COLUMNS} FROM billing.api_keys WHERE account_id = :id"
    " ORDER BY created_at, id LIMIT :limit"
)
# With an account, only that account's key (another's is "not found").
_REVOKE_KEY = text(
    "UPDATE billing.api_keys SET revoked_at = now() WHERE id = :id AND revoked_at IS NULL"
    " AND (:account_id = '' OR account_id = :account_id)"
    f" RETURNING {KEY_COLUMNS}"
)
_KEY_BY_ID = text(
    f"SELECT {KEY_COLUMNS} FROM billing.api_keys"
    " WHERE id = :id AND (:account_id = '' OR account_id = :account_id)"
)
_SET_DISABLED = text(
    "UPDATE billing.accounts SET"
    " disabled_at = CASE WHEN :disabled THEN COALESCE(disabled_at, now()) END,"
    " disabled_reason = CASE WHEN :disabled THEN :reason ELSE '' END,"
    " disabled_by = CASE WHEN :disabled THEN :operator ELSE '' END"
    f" WHERE id = :id RETURNING {ACCOUNT_COLUMNS}"
)
_HOLD_BY_ID = text(f"SELECT {HOLD_COLUMNS} FROM billing.holds WHERE id = :id")
# A changed threshold arms the alert again (the same one leaves it as it was).
_SET_LOW_BALANCE_ALERT = text(
    "UPDATE billing.accounts SET low_balance_threshold_micros = :threshold,"
    " low_balance_alerted_at = CASE"
    " WHEN low_balance_threshold_micros IS NOT DISTINCT FROM :threshold"
    " THEN low_balance_alerted_at END"
    f" WHERE id = :id RETURNING {BALANCE_COLUMNS}"
)
# One statement: re-arm the alerts of accounts back at or above their threshold,
# and claim (mark alerted) those below it that were not alerted since they were
# last above it. SKIP LOCKED: replicas polling at once never claim the same
# account, and nobody waits for an account a payment is writing right now (it
# is looked at again on the next poll). Accounts an operator disabled are not
# told to top up; an account suspended for its debt is.
_CLAIM_LOW_BALANCE_ALERTS = text(
    f"""
    WITH rearmed AS (
        UPDATE billing.accounts SET low_balance_alerted_at = NULL
        WHERE id IN (
            SELECT id FROM billing.accounts
            WHERE low_balance_threshold_micros IS NOT NULL
              AND low_balance_alerted_at IS NOT NULL
              AND balance_micros - held_micros >= low_balance_threshold_micros
            FOR NO KEY UPDATE SKIP LOCKED)
        RETURNING id
    ), due AS (
        SELECT id FROM billing.accounts
        WHERE low_balance_threshold_micros IS NOT NULL
          AND low_balance_alerted_at IS NULL
          AND balance_micros - held_micros < low_balance_threshold_micros
          AND (disabled_at IS NULL OR disabled_by = '{postings.DEBT_SUSPENSION}')
        ORDER BY id
        LIMIT :limit
        FOR NO KEY UPDATE SKIP LOCKED
    )
    UPDATE billing.accounts a SET low_balance_alerted_at = now()
    FROM due WHERE a.id = due.id
    RETURNING a.id, a.balance_micros - a.held_micros AS available_micros,
              a.low_balance_threshold_micros AS threshold_micros
    """
)
_ACCOUNT_BY_ID = text(f"SELECT {ACCOUNT_COLUMNS} FROM billing.accounts WHERE id = :id")


def _hold(row: Row[Any]) -> Hold:
    return Hold(
        id=row.id,
        account_id=row.account_id,
        amount_micros=row.amount_micros,
        status=row.status,
        captured_micros=row.captured_micros,
        idempotency_key=row.idempotency_key,
        model=row.model,
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
        name=row.name,
        scopes=tuple(row.scopes),
        last_used_at=row.last_used_at,
        controls=KeyControls(
            caps=rules.SpendCaps(
                row.daily_cap_micros, row.monthly_cap_micros, row.lifetime_cap_micros
            ),
            spend=rules.KeySpend(
                row.spent_lifetime_micros,
                row.spent_day,
                row.spent_day_micros,
                row.spent_month,
                row.spent_month_micros,
            ),
            allowed_models=tuple(row.allowed_models or ()),
            expires_at=row.expires_at,
            requests_per_minute=row.requests_per_minute or 0,
            concurrent_requests=row.concurrent_requests or 0,
        ),
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
        actor=row.actor,
        debt_change_micros=row.debt_change_micros,
    )


def balance_of(account_id: str, row: Mapping[Any, Any]) -> Balance:
    """A Balance from a row with BALANCE_COLUMNS."""
    return Balance(
        account_id,
        row["balance_micros"],
        row["held_micros"],
        row["debt_micros"],
        row["low_balance_threshold_micros"] or 0,
    )


async def _balance(conn: AsyncConnection, account_id: str) -> Balance:
    row = (await conn.execute(_SELECT_BALANCE, {"id": account_id})).first()
    if row is None:
        raise NotFound(f"account {account_id} not found")
    return balance_of(account_id, row._mapping)


async def _require_account(conn: AsyncConnection, account_id: str) -> None:
    if (await conn.execute(_ACCOUNT_EXISTS, {"id": account_id})).first() is None:
        raise NotFound(f"account {account_id} not found")


async def _hold_by_id(conn: AsyncConnection, hold_id: str) -> Hold:
    row = (await conn.execute(_HOLD_BY_ID, {"id": hold_id})).first()
    if row is None:
        raise NotFound(f"hold {hold_id} not found")
    return _hold(row)


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
async def create_api_key(
    engine: AsyncEngine,
    account_id: str,
    *,
    name: str = "",
    scopes: Sequence[str] = (),
    settings: Mapping[str, object] | None = None,
) -> CreatedApiKey:
    """`settings`: the key's controls as rules.check_key_settings returns them."""
    account_id = rules.check_account_id(account_id)
    name = rules.check_key_name(name)
    granted = rules.check_scopes(scopes)
    key_id = rules.new_key_id()
    api_key = rules.new_api_key()
    prefix = rules.key_display_prefix(api_key)
    controls = {column: None for column in rules.KEY_SETTING_COLUMNS} | dict(settings or {})
    async with engine.begin() as conn:
        row = (
            await conn.execute(
                _INSERT_KEY,
                {
                    "id": key_id,
                    "account_id": account_id,
                    "hash": rules.hash_api_key(api_key),
                    "prefix": prefix,
                    "name": name,
                    "scopes": granted,
                    **controls,
                },
            )
        ).first()
        if row is None:
            raise NotFound(f"account {account_id} not found")
    stored = _key(row)
    return CreatedApiKey(
        key_id,
        account_id,
        api_key,
        prefix,
        stored.created_at,
        name,
        tuple(granted),
        stored.controls,
    )


@_retry_conflicts
async def update_api_key(
    engine: AsyncEngine,
    key_id: str,
    *,
    account_id: str = "",
    name: str | None = None,
    settings: Mapping[str, object] | None = None,
) -> ApiKey:
    """Change a key's name and controls (only those given). With an account,
    another account's key is not found; a revoked key cannot be changed. A
    cap lowered below what the key already spent refuses its next holds."""
    key_id = rules.check_key_id(key_id)
    columns = dict(settings or {})
    if name is not None:
        columns["name"] = rules.check_key_name(name)
    unknown = set(columns) - {"name", *rules.KEY_SETTING_COLUMNS}
    if unknown:
        raise ValueError(f"not a key setting: {sorted(unknown)}")
    params = {"id": key_id, "account_id": rules.check_account_id(account_id) if account_id else ""}
    async with engine.begin() as conn:
        row = (await conn.execute(_KEY_BY_ID, params)).first()
        if row is None:
            raise NotFound(f"API key {key_id} not found")
        if row.revoked_at is not None:
            raise rules.FailedPrecondition(f"API key {key_id} is revoked; it cannot be changed")
        if not columns:
            return _key(row)
        # Column names come from the fixed list above, never from the caller.
        assignments = ", ".join(f"{column} = :{column}" for column in columns)
        row = (
            await conn.execute(
                text(
                    f"UPDATE billing.api_keys SET {assignments}"
                    f" WHERE id = :id AND revoked_at IS NULL RETURNING {KEY_COLUMNS}"
                ),
                {**params, **columns},
            )
        ).first()
        if row is None:
            raise rules.FailedPrecondition(f"API key {key_id} is revoked; it cannot be changed")
    return _key(row)


@_retry_conflicts
async def set_account_rate_limits(
    engine: AsyncEngine, account_id: str, *, requests_per_minute: int, concurrent_requests: int
) -> Account:
    """An operator's rate-limit overrides for the whole account (0: the default)."""
    account_id = rules.check_account_id(account_id)
    limits = rules.check_key_settings(
        datetime.now(UTC),
        requests_per_minute=requests_per_minute,
        concurrent_requests=concurrent_requests,
    )
    params = {
        "id": account_id,
        "rpm": limits["requests_per_minute"],
        "concurrency": limits["concurrent_requests"],
    }
    async with engine.begin() as conn:
        row = (await conn.execute(_SET_ACCOUNT_RATE_LIMITS, params)).first()
    if row is None:
        raise NotFound(f"account {account_id} not found")
    return _account(row)


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
async def revoke_api_key(engine: AsyncEngine, key_id: str, account_id: str = "") -> ApiKey:
    """Revoke now; revoking a revoked key returns it unchanged. With an account,
    another account's key is not found (and not revoked)."""
    key_id = rules.check_key_id(key_id)
    params = {"id": key_id, "account_id": rules.check_account_id(account_id) if account_id else ""}
    async with engine.begin() as conn:
        row = (await conn.execute(_REVOKE_KEY, params)).first()
        if row is None:
            row = (await conn.execute(_KEY_BY_ID, params)).first()
            if row is None:
                raise NotFound(f"API key {key_id} not found")
    return _key(row)


@_retry_conflicts
async def set_account_disabled(
    engine: AsyncEngine, account_id: str, *, disabled: bool, reason: str = "", operator: str = ""
) -> Account:
    """Disable (its keys stop authenticating at once) or enable an account.
    Disabling a disabled account keeps when it was first disabled; `operator`
    (the acting operator's user id, "" for aiportctl) is kept as disabled_by."""
    account_id = rules.check_account_id(account_id)
    reason = rules.check_disable_reason(disabled, reason)
    operator = rules.check_operator(operator)
    params = {"id": account_id, "disabled": disabled, "reason": reason, "operator": operator}
    async with engine.begin() as conn:
        row = (await conn.execute(_SET_DISABLED, params)).first()
    if row is None:
        raise NotFound(f"account {account_id} not found")
    return _account(row)


async def get_account(engine: AsyncEngine, account_id: str) -> Account:
    account_id = rules.check_account_id(account_id)
    async with engine.connect() as conn:
        row = (await conn.execute(_ACCOUNT_BY_ID, {"id": account_id})).first()
    if row is None:
        raise NotFound(f"account {account_id} not found")
    return _account(row)


@_retry_conflicts
async def set_low_balance_alert(
    engine: AsyncEngine, account_id: str, threshold_micros: int
) -> Balance:
    """Mail the account's members when available falls below `threshold_micros`
    (0: no alert). Setting another threshold arms the alert afresh."""
    account_id = rules.check_account_id(account_id)
    threshold = rules.check_low_balance_threshold(threshold_micros)
    async with engine.begin() as conn:
        row = (
            await conn.execute(_SET_LOW_BALANCE_ALERT, {"id": account_id, "threshold": threshold})
        ).first()
    if row is None:
        raise NotFound(f"account {account_id} not found")
    return balance_of(account_id, row._mapping)


@_retry_conflicts
async def claim_low_balance_alerts(engine: AsyncEngine, limit: int = 0) -> list[LowBalanceAlert]:
    """Up to `limit` accounts to alert now, each claimed once until its available
    balance is back at or above its threshold (then it is armed again)."""
    limit = rules.resolve_alert_claim_limit(limit)
    async with engine.begin() as conn:
        rows = (await conn.execute(_CLAIM_LOW_BALANCE_ALERTS, {"limit": limit})).all()
    return sorted(
        (LowBalanceAlert(r.id, r.available_micros, r.threshold_micros) for r in rows),
        key=lambda alert: alert.account_id,
    )


def _account(row: Row[Any]) -> Account:
    return Account(
        row.id,
        row.name,
        row.created_at,
        row.disabled_at,
        row.disabled_reason,
        row.disabled_by,
        row.requests_per_minute or 0,
        row.concurrent_requests or 0,
    )


async def get_hold(engine: AsyncEngine, hold_id: str) -> Hold:
    hold_id = rules.check_hold_id(hold_id)
    async with engine.connect() as conn:
        return await _hold_by_id(conn, hold_id)


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
