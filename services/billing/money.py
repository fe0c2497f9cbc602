"""Billing's one money path: every operation that moves money, written once.

Each operation is one PostgreSQL transaction on a psycopg pool, and all but
the background expiry are one statement (one round trip): the conditional
update of the hold and the account's cached balances, the transaction row and
its postings (services/billing/postings.py), in a chain of data-modifying CTEs.
psycopg without SQLAlchemy because SQLAlchemy's per-statement cost dominated
billing's CPU in profiles (bench/README.md); SQLAlchemy is left to the admin
reads and writes that move no money (ledger.py).

The posting rules, once each:
    hold     available -A, held +A
    capture  held -A, revenue:<model> +C, available +(A - C)     (C <= A)
    release  held -A, available +A        (expire: the same, by the sweeper)
    credit   <source> -X, available +X    (topup: payments:<rail>;
                                            promotion: promotions; adjustment: adjustments)
    topup    payments:<rail> -X, debt +R, available +(X - R)   (R = min(X, owed): debt first)
    reversal payments:<rail> +X, available -T, debt -(X - T)   (T = min(X, available))
A reversal that leaves debt suspends the account (disabled_by "billing:debt",
never confused with an operator's disable); the top-up that repays the last of
the debt lifts that suspension, and only that one.
The schema refuses a statement that leaves a transaction unbalanced, and each
operation asserts that what it posted sums to zero.

When a statement moves nothing (a retried idempotency key, a hold settled
already, a balance that cannot cover it), a read-only look afterwards says
which, precisely.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

from psycopg import errors
from psycopg.rows import DictRow

from services.common import metrics, pg
from services.common.logs import fields

from . import idempotency, postings, rules
from .ledger import (
    BALANCE_COLUMNS,
    HOLD_COLUMNS,
    Balance,
    ExpiredBatch,
    Hold,
    Principal,
    RateLimits,
    balance_of,
)
from .postings import Kind, ReversalReason
from .rules import (
    CaptureExceedsHold,
    FailedPrecondition,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidArgument,
    NotFound,
    Unauthenticated,
)

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

MAX_ATTEMPTS = 3
# Aborted as a deadlock or serialization victim: the whole transaction may run again.
RETRYABLE = (errors.DeadlockDetected, errors.SerializationFailure)

_HOLD_FIELDS = (
    "id",
    "account_id",
    "amount_micros",
    "status",
    "captured_micros",
    "idempotency_key",
    "model",
    "description",
    "created_at",
    "expires_at",
    "settled_at",
)

# A live (not revoked, not expired) key of an enabled account, with what a
# hold checks (its allowlist, whether it has spend caps) and the rate limits
# the gateway enforces. Its last use is recorded at most once a minute (a busy
# key does not rewrite its row for it on every call).
_KEY_PRINCIPAL = """
SELECT ak.id AS key_id, ak.account_id, ak.scopes, ak.allowed_models,
       (ak.daily_cap_micros IS NOT NULL OR ak.monthly_cap_micros IS NOT NULL
        OR ak.lifetime_cap_micros IS NOT NULL) AS capped,
       ak.requests_per_minute AS key_rpm, ak.concurrent_requests AS key_concurrency,
       a.requests_per_minute AS account_rpm, a.concurrent_requests AS account_concurrency
FROM billing.api_keys ak JOIN billing.accounts a ON a.id = ak.account_id
WHERE ak.key_hash = %(principal)s AND ak.revoked_at IS NULL AND a.disabled_at IS NULL
  AND (ak.expires_at IS NULL OR ak.expires_at > now())
"""
_LAST_USED = "(last_used_at IS NULL OR last_used_at < now() - interval '60 seconds')"
_KEY_USED = f"""
UPDATE billing.api_keys SET last_used_at = now()
WHERE id = (SELECT key_id FROM k) AND {_LAST_USED}
"""
_AUTHENTICATE = f"""
WITH k AS ({_KEY_PRINCIPAL}), used AS ({_KEY_USED})
SELECT * FROM k
"""
_BY_ACCOUNT = """
SELECT NULL::text AS key_id, id AS account_id, NULL::text[] AS scopes,
       NULL::text[] AS allowed_models, false AS capped,
       NULL::integer AS key_rpm, NULL::integer AS key_concurrency,
       requests_per_minute AS account_rpm, concurrent_requests AS account_concurrency
FROM billing.accounts
WHERE id = %(principal)s AND disabled_at IS NULL
"""
# Why a key was refused, when it is live but past its expiry.
_KEY_EXPIRED = """
SELECT ak.expires_at
FROM billing.api_keys ak JOIN billing.accounts a ON a.id = ak.account_id
WHERE ak.key_hash = %(principal)s AND ak.revoked_at IS NULL AND a.disabled_at IS NULL
  AND ak.expires_at <= now()
"""
# A capped key's holds run in a transaction that first locks its account's row
# and then its own (the order every hold, capture and release takes them in),
# so that the caps are checked against counters nobody else can change until
# the hold is placed: concurrent calls cannot pass a cap, not by one µIDR.
_LOCK_KEY_ACCOUNT = """
SELECT 1 FROM billing.accounts
WHERE id = (SELECT account_id FROM billing.api_keys WHERE key_hash = %(principal)s)
FOR NO KEY UPDATE
"""
_LOCK_KEY_SPEND = """
SELECT daily_cap_micros, monthly_cap_micros, lifetime_cap_micros, spent_lifetime_micros,
       spent_day, spent_day_micros, spent_month, spent_month_micros
FROM billing.api_keys WHERE key_hash = %(principal)s FOR NO KEY UPDATE
"""

# Hold: the principal (an API key's owner or a named account), the reservation
# (only if available covers it, the key may pay for the model, a capped key's
# caps were checked under its lock, and no hold has this key yet), the key's
# spend counters, the hold (remembering the periods it counted in), its
# transaction and postings. A concurrent twin with the same key makes the hold
# INSERT hit the unique key, which undoes the whole statement. The key's row is
# written by `c` when the hold is placed and by `used` when it is not: never
# twice in one statement.
_PLACE_HOLD = f"""
WITH k AS ({{principal}}),
r AS (
    UPDATE billing.accounts a SET held_micros = a.held_micros + %(amount)s
    FROM k
    WHERE a.id = k.account_id
      AND a.balance_micros - a.held_micros >= %(amount)s
      AND (k.allowed_models IS NULL OR %(model)s = ANY(k.allowed_models))
      AND (NOT k.capped OR %(caps_checked)s)
      AND NOT EXISTS (SELECT 1 FROM billing.holds WHERE idempotency_key = %(key)s)
    RETURNING a.id, a.balance_micros
), {{used}}
c AS (
    UPDATE billing.api_keys ak SET
        spent_lifetime_micros = ak.spent_lifetime_micros + %(amount)s,
        spent_day_micros = %(amount)s
            + CASE WHEN ak.spent_day >= %(day)s::date THEN ak.spent_day_micros ELSE 0 END,
        spent_day = GREATEST(ak.spent_day, %(day)s::date),
        spent_month_micros = %(amount)s
            + CASE WHEN ak.spent_month >= %(month)s::date THEN ak.spent_month_micros ELSE 0 END,
        spent_month = GREATEST(ak.spent_month, %(month)s::date),
        last_used_at = CASE WHEN {_LAST_USED} THEN now() ELSE ak.last_used_at END
    FROM r, k WHERE ak.id = k.key_id
    RETURNING ak.spent_day, ak.spent_month
), h AS (
    INSERT INTO billing.holds
        (id, account_id, amount_micros, idempotency_key, input_hash, model, description,
         expires_at, key_id, endpoint, request_id, job_id, spend_day, spend_month)
    SELECT %(hold_id)s, r.id, %(amount)s, %(key)s, %(input_hash)s, %(model)s, %(description)s,
           now() + %(ttl)s * interval '1 second', k.key_id, %(endpoint)s, %(request_id)s,
           %(job_id)s, c.spent_day, c.spent_month
    FROM r CROSS JOIN k LEFT JOIN c ON true
    RETURNING {HOLD_COLUMNS}
), t AS (
    INSERT INTO billing.transactions (kind, account_id, hold_id, balance_after_micros, description)
    SELECT 'hold', h.account_id, h.id, r.balance_micros, h.description FROM h, r
    RETURNING id
), p AS (
    INSERT INTO billing.postings (transaction_id, account, amount_micros)
    SELECT t.id, v.account, v.amount
    FROM t, (VALUES ('available', -%(amount)s::bigint), ('held', %(amount)s::bigint))
         AS v(account, amount)
    RETURNING amount_micros
)
SELECT k.key_id, k.account_id AS principal_account_id, k.scopes, k.allowed_models, k.capped,
       k.key_rpm, k.key_concurrency, k.account_rpm, k.account_concurrency, h.*,
       (SELECT array_agg(amount_micros) FROM p) AS posted
FROM k LEFT JOIN h ON true
"""
_PLACE_HOLD_BY_KEY = _PLACE_HOLD.format(
    principal=_KEY_PRINCIPAL, used=f"used AS ({_KEY_USED} AND NOT EXISTS (SELECT 1 FROM r)),"
)
_PLACE_HOLD_BY_ACCOUNT = _PLACE_HOLD.format(principal=_BY_ACCOUNT, used="")

# Capture: close the open hold (only if the amount fits it), move the money on
# the account, record the transaction and its postings (no zero legs).
_CAPTURE = f"""
WITH h AS (
    UPDATE billing.holds SET status = 'captured', captured_micros = %(amount)s,
        settled_at = now(), settle_note = %(note)s,
        input_tokens = %(input_tokens)s, cached_input_tokens = %(cached_input_tokens)s,
        cache_write_input_tokens = %(cache_write_input_tokens)s,
        output_tokens = %(output_tokens)s, reasoning_tokens = %(reasoning_tokens)s,
        latency_ms = %(latency_ms)s
    WHERE id = %(id)s AND status = 'open' AND amount_micros >= %(amount)s
    RETURNING {HOLD_COLUMNS}, key_id, spend_day, spend_month
), kc AS (
    UPDATE billing.api_keys ak SET
        spent_lifetime_micros = ak.spent_lifetime_micros - (h.amount_micros - h.captured_micros),
        spent_day_micros = ak.spent_day_micros - CASE WHEN ak.spent_day = h.spend_day
            THEN h.amount_micros - h.captured_micros ELSE 0 END,
        spent_month_micros = ak.spent_month_micros - CASE WHEN ak.spent_month = h.spend_month
            THEN h.amount_micros - h.captured_micros ELSE 0 END
    FROM h WHERE ak.id = h.key_id AND h.amount_micros > h.captured_micros
    RETURNING ak.id
), a AS (
    UPDATE billing.accounts acc
    SET held_micros = acc.held_micros - h.amount_micros,
        balance_micros = acc.balance_micros - h.captured_micros
    FROM h WHERE acc.id = h.account_id
    RETURNING acc.balance_micros
), t AS (
    INSERT INTO billing.transactions
        (kind, account_id, hold_id, provider, balance_after_micros, description)
    SELECT 'capture', h.account_id, h.id, %(provider)s, a.balance_micros,
           COALESCE(NULLIF(%(note)s, ''), h.description)
    FROM h, a
    RETURNING id
), p AS (
    INSERT INTO billing.postings (transaction_id, account, amount_micros)
    SELECT t.id, v.account, v.amount
    FROM t, h, LATERAL (VALUES
        ('held', -h.amount_micros),
        ('{postings.REVENUE_PREFIX}'
            || COALESCE(NULLIF(%(model)s, ''), NULLIF(h.model, ''), '{postings.UNATTRIBUTED}'),
         h.captured_micros),
        ('available', h.amount_micros - h.captured_micros)) AS v(account, amount)
    WHERE v.amount <> 0
    RETURNING amount_micros
)
SELECT h.*, (SELECT array_agg(amount_micros) FROM p) AS posted FROM h
"""

# Release or expiry of open holds: all of each goes back to available.
_FREE_HOLDS = f"""
WITH h AS (
    UPDATE billing.holds SET status = %(status)s, settled_at = now(), settle_note = %(note)s,
        latency_ms = %(latency_ms)s
    WHERE id = ANY(%(ids)s) AND status = 'open'
    RETURNING {HOLD_COLUMNS}, key_id, spend_day, spend_month
), per_key AS (
    SELECT key_id, sum(amount_micros) AS amount, array_agg(spend_day) AS days,
           array_agg(spend_month) AS months, array_agg(amount_micros) AS amounts
    FROM h WHERE key_id IS NOT NULL GROUP BY key_id
), kf AS (
    -- Each hold gives back to the period it counted in, if the counter is still
    -- that period's (compared with the row as it is when updated).
    UPDATE billing.api_keys ak SET
        spent_lifetime_micros = ak.spent_lifetime_micros - per_key.amount,
        spent_day_micros = ak.spent_day_micros - (
            SELECT COALESCE(sum(x.micros), 0) FROM unnest(per_key.days, per_key.amounts)
                AS x(period, micros) WHERE x.period = ak.spent_day),
        spent_month_micros = ak.spent_month_micros - (
            SELECT COALESCE(sum(x.micros), 0) FROM unnest(per_key.months, per_key.amounts)
                AS x(period, micros) WHERE x.period = ak.spent_month)
    FROM per_key WHERE ak.id = per_key.key_id
    RETURNING ak.id
), per_account AS (
    SELECT account_id, sum(amount_micros) AS amount FROM h GROUP BY account_id
), a AS (
    UPDATE billing.accounts acc SET held_micros = acc.held_micros - per_account.amount
    FROM per_account WHERE acc.id = per_account.account_id
    RETURNING acc.id, acc.balance_micros
), t AS (
    INSERT INTO billing.transactions (kind, account_id, hold_id, balance_after_micros, description)
    SELECT %(kind)s, h.account_id, h.id, a.balance_micros, %(note)s
    FROM h JOIN a ON a.id = h.account_id
    RETURNING id, hold_id
), p AS (
    INSERT INTO billing.postings (transaction_id, account, amount_micros)
    SELECT t.id, v.account, v.amount
    FROM t JOIN h ON h.id = t.hold_id,
         LATERAL (VALUES ('held', -h.amount_micros), ('available', h.amount_micros))
         AS v(account, amount)
    RETURNING amount_micros
)
SELECT h.*, (SELECT array_agg(amount_micros) FROM p) AS posted FROM h
"""
_LOCK_DUE_HOLDS = """
SELECT id, account_id FROM billing.holds
WHERE status = 'open' AND expires_at <= now()
ORDER BY expires_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED
"""
# In id order, so that concurrent sweepers cannot deadlock each other.
_LOCK_ACCOUNTS = """
SELECT id FROM billing.accounts WHERE id = ANY(%(ids)s) ORDER BY id FOR NO KEY UPDATE
"""

# The account row as it is now, locked (a concurrent writer is waited for and
# its result read): what a statement needs of the row before its own update
# (RETURNING only shows the row after).
_LOCKED_ACCOUNT = """
    SELECT id, balance_micros - held_micros AS available, debt_micros, disabled_at, disabled_by
    FROM billing.accounts WHERE id = %(account_id)s FOR NO KEY UPDATE
"""
_LOCK_ACCOUNT_ROW = "SELECT 1 FROM billing.accounts WHERE id = %(account_id)s FOR NO KEY UPDATE"
_BALANCE_RETURNED = "acc.balance_micros, acc.held_micros, acc.debt_micros,"
_BALANCE_RETURNED += " acc.low_balance_threshold_micros"

# Credit (top-up, promotion, adjustment): from a system account into available,
# unless the key was used already or a debit would take available below zero.
# A top-up (repays) pays the account's debt first, and lifts billing's own
# suspension with the last of it.
_CREDIT = f"""
WITH o AS ({_LOCKED_ACCOUNT}), r AS (
    SELECT id, disabled_by,
           CASE WHEN %(repays)s THEN LEAST(debt_micros, %(amount)s) ELSE 0 END AS repaid
    FROM o
), a AS (
    UPDATE billing.accounts acc
    SET balance_micros = acc.balance_micros + %(amount)s - r.repaid,
        debt_micros = acc.debt_micros - r.repaid,
        disabled_at = CASE WHEN {{lifted}} THEN NULL ELSE acc.disabled_at END,
        disabled_reason = CASE WHEN {{lifted}} THEN '' ELSE acc.disabled_reason END,
        disabled_by = CASE WHEN {{lifted}} THEN '' ELSE acc.disabled_by END
    FROM r
    WHERE acc.id = r.id
      AND acc.balance_micros - acc.held_micros + %(amount)s - r.repaid >= 0
      AND NOT EXISTS (SELECT 1 FROM billing.transactions WHERE idempotency_key = %(key)s)
    RETURNING acc.id, {_BALANCE_RETURNED}, r.repaid,
              r.disabled_by = '{postings.DEBT_SUSPENSION}' AND acc.disabled_at IS NULL AS lifted
), t AS (
    INSERT INTO billing.transactions
        (kind, account_id, idempotency_key, input_hash, balance_after_micros, description, actor)
    SELECT %(kind)s, a.id, %(key)s, %(input_hash)s, a.balance_micros, %(description)s,
           %(actor)s
    FROM a
    RETURNING id
), p AS (
    INSERT INTO billing.postings (transaction_id, account, amount_micros)
    SELECT t.id, v.account, v.amount
    FROM t, a, LATERAL (VALUES
        (%(source)s::text, -%(amount)s::bigint),
        ('{postings.DEBT}', a.repaid),
        ('{postings.AVAILABLE}', %(amount)s - a.repaid)) AS v(account, amount)
    WHERE v.amount <> 0
    RETURNING amount_micros
)
SELECT a.*, (SELECT array_agg(amount_micros) FROM p) AS posted
FROM a
""".format(
    # The suspension for debt ends when this credit repays all of the debt
    # (old values: every SET expression sees the row before the update).
    lifted=f"acc.disabled_by = '{postings.DEBT_SUSPENSION}' AND r.repaid > 0"
    " AND acc.debt_micros = r.repaid"
)

# Reversal: the top-up goes back to its rail, from what is available first; the
# rest becomes debt and suspends the account (unless it is disabled already: an
# operator's disable stays theirs). Held money is not touched.
_REVERSE = f"""
WITH o AS ({_LOCKED_ACCOUNT}), m AS (
    SELECT id, LEAST(available, %(amount)s) AS taken FROM o
    WHERE NOT EXISTS (SELECT 1 FROM billing.transactions WHERE idempotency_key = %(key)s)
), a AS (
    UPDATE billing.accounts acc
    SET balance_micros = acc.balance_micros - m.taken,
        debt_micros = acc.debt_micros + (%(amount)s - m.taken),
        disabled_at = CASE WHEN {{suspends}} THEN now() ELSE acc.disabled_at END,
        disabled_reason = CASE WHEN {{suspends}} THEN %(suspension_reason)s
                               ELSE acc.disabled_reason END,
        disabled_by = CASE WHEN {{suspends}} THEN '{postings.DEBT_SUSPENSION}'
                           ELSE acc.disabled_by END
    FROM m WHERE acc.id = m.id
    RETURNING acc.id, {_BALANCE_RETURNED}, m.taken, %(amount)s - m.taken AS owed,
              acc.disabled_by = '{postings.DEBT_SUSPENSION}' AS suspended
), t AS (
    INSERT INTO billing.transactions
        (kind, account_id, idempotency_key, input_hash, balance_after_micros, description, reason)
    SELECT '{Kind.REVERSAL.value}', a.id, %(key)s, %(input_hash)s, a.balance_micros,
           %(description)s, %(reason)s
    FROM a
    RETURNING id
), p AS (
    INSERT INTO billing.postings (transaction_id, account, amount_micros)
    SELECT t.id, v.account, v.amount
    FROM t, a, LATERAL (VALUES
        (%(source)s::text, %(amount)s::bigint),
        ('{postings.AVAILABLE}', -a.taken),
        ('{postings.DEBT}', -a.owed)) AS v(account, amount)
    WHERE v.amount <> 0
    RETURNING amount_micros
)
SELECT a.*, (SELECT array_agg(amount_micros) FROM p) AS posted
FROM a
""".format(suspends="m.taken < %(amount)s AND acc.disabled_at IS NULL")

_HOLD_BY_ID = f"SELECT {HOLD_COLUMNS}, input_hash FROM billing.holds WHERE id = %(id)s"
_HOLD_BY_KEY = (
    f"SELECT {HOLD_COLUMNS}, input_hash FROM billing.holds WHERE idempotency_key = %(key)s"
)
_CREDIT_BY_KEY = "SELECT input_hash FROM billing.transactions WHERE idempotency_key = %(key)s"
_BALANCE = f"SELECT {BALANCE_COLUMNS} FROM billing.accounts WHERE id = %(id)s"
_ACCOUNT_DISABLED = "SELECT 1 FROM billing.accounts WHERE id = %(id)s AND disabled_at IS NOT NULL"


def _hold(row: DictRow) -> Hold:
    return Hold(**{name: row[name] for name in _HOLD_FIELDS})


def _principal(account_id: str, row: DictRow) -> Principal:
    return Principal(
        account_id=account_id,
        key_id=row["key_id"],
        scopes=tuple(row["scopes"] or ()),
        rate_limits=RateLimits(
            key_requests_per_minute=row["key_rpm"] or 0,
            key_concurrent_requests=row["key_concurrency"] or 0,
            account_requests_per_minute=row["account_rpm"] or 0,
            account_concurrent_requests=row["account_concurrency"] or 0,
        ),
    )


def _key_spend(row: DictRow) -> tuple[rules.SpendCaps, rules.KeySpend]:
    caps = rules.SpendCaps(
        row["daily_cap_micros"], row["monthly_cap_micros"], row["lifetime_cap_micros"]
    )
    spend = rules.KeySpend(
        row["spent_lifetime_micros"],
        row["spent_day"],
        row["spent_day_micros"],
        row["spent_month"],
        row["spent_month_micros"],
    )
    return caps, spend


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Origin:
    """What a hold pays for, as the customer's usage record shows it."""

    endpoint: str = ""
    request_id: str = ""
    job_id: str = ""


NO_ORIGIN = Origin()
NO_USAGE = rules.RecordedUsage()


def _hold_params(
    principal: str | bytes,
    presented: str,
    amount_micros: int,
    idempotency_key: str,
    *,
    description: str,
    ttl_seconds: int,
    default_ttl_seconds: int,
    model: str,
    origin: Origin,
    periods: rules.SpendPeriods,
) -> dict[str, Any]:
    """A hold statement's parameters, validated, with the hash its key guards."""
    amount = rules.check_positive_amount(amount_micros)
    key = rules.check_idempotency_key(idempotency_key, required=True)
    assert key is not None
    description = rules.check_text("description", description)
    model = rules.check_ledger_name("model", model)
    ttl = rules.resolve_hold_ttl(ttl_seconds, default_ttl_seconds)
    digest = rules.input_hash(
        "hold",
        principal=presented,
        amount_micros=amount,
        description=description,
        ttl_seconds=ttl_seconds,
        model=model,
    )
    return {
        "principal": principal,
        "amount": amount,
        "key": key,
        "input_hash": digest,
        "hold_id": rules.new_hold_id(),
        "model": model,
        "description": description,
        "ttl": ttl,
        # Descriptive (the usage record), so not part of what the key guards.
        **rules.check_origin(origin.endpoint, origin.request_id, origin.job_id),
        # The key's spend periods (its caps count in them), never part of what the
        # key guards; caps_checked: set once a capped key's caps were checked under
        # its lock (_place_capped, _claim_and_hold).
        "day": periods.day,
        "month": periods.month,
        "caps_checked": False,
    }


class _NotPlaced(Exception):
    """Inside a claim's transaction: the hold was not placed, so the claim must not be
    kept either (rolled back with it); the reason is worked out after."""

    def __init__(self, principal_account_id: str | None, row: DictRow | None = None) -> None:
        super().__init__("hold not placed")
        self.principal_account_id = principal_account_id
        self.row = row  # the statement's answer: the key's allowlist, to say why


def _retry_conflicts(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Run a transaction PostgreSQL aborted as a deadlock/serialization victim again."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        attempt = 1
        while True:
            try:
                return await fn(*args, **kwargs)
            except RETRYABLE as exc:
                if attempt >= MAX_ATTEMPTS:
                    raise
                log.warning(
                    "transaction conflict, retrying",
                    extra=fields(op=fn.__name__, attempt=attempt, sqlstate=exc.sqlstate),
                )
                attempt += 1

    return wrapper


class Money:
    """The money operations over one psycopg pool."""

    def __init__(
        self,
        url: str,
        *,
        min_size: int = 2,
        max_size: int = 10,
        timeout_seconds: float = 10.0,
        cap_time_zone: str = "",
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        # Spend caps' days and months start at midnight here (Asia/Jakarta by default).
        self._cap_zone = rules.check_cap_time_zone(cap_time_zone)
        self._clock = clock
        self._pool = pg.pool(
            url,
            "billing-money",
            min_size=min_size,
            max_size=max_size,
            timeout_seconds=timeout_seconds,
        )

    async def open(self, *, wait: bool = True) -> None:
        """With wait, fail now if the database cannot be reached."""
        await self._pool.open(wait=wait, timeout=10)

    async def close(self) -> None:
        await self._pool.close()

    async def _one(self, sql: str, params: dict[str, Any]) -> DictRow | None:
        return await pg.fetchone(self._pool, sql, params)

    async def _one_after_lock(self, sql: str, params: dict[str, Any]) -> DictRow | None:
        """`sql` in a transaction that first locks the account's row in a
        statement of its own. The statement then reads the row as the last
        writer left it: a locking read inside the same statement's CTE (which
        the credit and reversal statements also have) saw an older debt than
        the UPDATE wrote against under concurrent top-ups and reversals (the
        debt CHECK caught it: a repayment larger than the debt). Credits and
        reversals are rare; the hot path's holds and captures stay one
        statement."""
        async with pg.transaction(self._pool) as conn:
            await conn.execute(_LOCK_ACCOUNT_ROW, {"account_id": params["account_id"]})
            cur = await conn.execute(sql, params)
            return await cur.fetchone()

    def spend_periods(self) -> rules.SpendPeriods:
        """The caps' current day and month."""
        return rules.spend_periods(self._clock(), self._cap_zone)

    # Keys.

    async def authenticate(self, api_key: str) -> Principal:
        """The key's owner. Unknown, revoked and malformed keys fail alike; an
        expired key is KeyExpired (it was valid: the caller is told why)."""
        if not rules.looks_like_api_key(api_key):
            raise Unauthenticated(rules.UNAUTHENTICATED_MESSAGE)
        key_hash = rules.hash_api_key(api_key)
        row = await self._one(_AUTHENTICATE, {"principal": key_hash})
        if row is None:
            await self._refuse_key(key_hash)
        assert row is not None
        return _principal(row["account_id"], row)

    async def _refuse_key(self, key_hash: bytes) -> None:
        """A key was refused: KeyExpired if it is only past its expiry, else the
        one Unauthenticated for every other reason."""
        expired = await self._one(_KEY_EXPIRED, {"principal": key_hash})
        if expired is not None:
            raise rules.KeyExpired(expired["expires_at"])
        raise Unauthenticated(rules.UNAUTHENTICATED_MESSAGE)

    # Holds.

    async def authorize_hold(
        self,
        api_key: str,
        amount_micros: int,
        idempotency_key: str,
        *,
        description: str = "",
        ttl_seconds: int = 0,
        default_ttl_seconds: int = 3600,
        model: str = "",
        origin: Origin = NO_ORIGIN,
    ) -> tuple[Principal, Hold]:
        """The key's owner and its hold, in one statement (a key with spend caps:
        in one transaction that checks them under the key's lock). Unknown or
        revoked keys are Unauthenticated, expired ones KeyExpired; a model off
        the key's allowlist is ModelNotAllowed, a cap it would pass
        BudgetExceeded, a balance that cannot cover it InsufficientFunds."""
        if not rules.looks_like_api_key(api_key):
            raise Unauthenticated(rules.UNAUTHENTICATED_MESSAGE)
        key_hash = rules.hash_api_key(api_key)
        row, hold = await self._place(
            _PLACE_HOLD_BY_KEY,
            key_hash,
            # The principal as presented: the key (by its hash), not its account.
            f"api_key:{key_hash.hex()}",
            amount_micros,
            idempotency_key,
            description=description,
            ttl_seconds=ttl_seconds,
            default_ttl_seconds=default_ttl_seconds,
            model=model,
            origin=origin,
        )
        if row is None:
            # Not placed because a twin won the key: who the key belongs to.
            principal = await self.authenticate(api_key)
        else:
            principal = _principal(row["principal_account_id"], row)
        return principal, hold

    async def authorize_hold_once(
        self,
        api_key: str,
        amount_micros: int,
        idempotency_key: str,
        client: idempotency.ClientKey,
        *,
        retention_seconds: int,
        description: str = "",
        ttl_seconds: int = 0,
        default_ttl_seconds: int = 3600,
        model: str = "",
        origin: Origin = NO_ORIGIN,
    ) -> tuple[Principal, Hold | idempotency.Earlier]:
        """authorize_hold under a client's idempotency key: the key is claimed for
        the key's account in the hold's own transaction (both or neither), or, when
        an earlier call holds it, nothing is held and that call's state comes back.

        The claim's owner is the hold's idempotency key: a retry of this very call
        (its answer was lost) finds its own claim and gets its hold back. An
        in-flight claim lapses with the hold it guarded (the hold's TTL)."""
        if not rules.looks_like_api_key(api_key):
            raise Unauthenticated(rules.UNAUTHENTICATED_MESSAGE)
        key_hash = rules.hash_api_key(api_key)
        periods = self.spend_periods()
        params = _hold_params(
            key_hash,
            f"api_key:{key_hash.hex()}",
            amount_micros,
            idempotency_key,
            description=description,
            ttl_seconds=ttl_seconds,
            default_ttl_seconds=default_ttl_seconds,
            model=model,
            origin=origin,
            periods=periods,
        )
        for _ in range(MAX_ATTEMPTS):
            try:
                outcome = await self._claim_and_hold(
                    key_hash, params, client, retention_seconds, periods
                )
            except _NotPlaced as missing:
                if missing.principal_account_id is None:
                    await self._refuse_key(key_hash)  # expired, or the one 401
                    raise AssertionError("unreachable") from None
                return await self._principal_and_unplaced(
                    api_key, missing.principal_account_id, params, missing.row
                )
            except RETRYABLE:
                continue
            if outcome is not None:
                return outcome
        raise RuntimeError("idempotency claim neither taken nor found")

    async def _claim_and_hold(
        self,
        key_hash: bytes,
        params: dict[str, Any],
        client: idempotency.ClientKey,
        retention_seconds: int,
        periods: rules.SpendPeriods,
    ) -> tuple[Principal, Hold | idempotency.Earlier] | None:
        """One transaction: the principal, the claim, the hold (a capped key's caps
        checked under its lock, as _place_capped does; a cap refused rolls the claim
        back with it). None: the record that blocked the claim vanished before it
        could be read (swept): try again."""
        async with pg.transaction(self._pool) as conn:
            # The order every hold takes the rows in: its account's, then its key's.
            await conn.execute(_LOCK_KEY_ACCOUNT, params)
            found = await (await conn.execute(_AUTHENTICATE, {"principal": key_hash})).fetchone()
            if found is None:
                raise _NotPlaced(None)
            principal = _principal(found["account_id"], found)
            claim = {
                "account_id": principal.account_id,
                "key": client.key,
                "request_hash": client.request_hash,
                "owner": params["key"],
                "claim_seconds": params["ttl"],
                "retention_seconds": retention_seconds,
            }
            claimed = await (await conn.execute(idempotency.CLAIM, claim)).fetchone()
            if claimed is None:
                record = await (await conn.execute(idempotency.LIVE_RECORD, claim)).fetchone()
                if record is None:
                    return None
                if record["owner"] != params["key"]:
                    return principal, idempotency.earlier(record, client.request_hash)
                # This very call, asked again (its first answer was lost): the
                # claim is its own, and its hold is found by the hold's key below.
            else:
                hold_params = params
                if found["capped"] and self._model_allowed(found, params["model"]):
                    locked = await (await conn.execute(_LOCK_KEY_SPEND, params)).fetchone()
                    assert locked is not None  # the key was found above, in this transaction
                    caps, spend = _key_spend(locked)
                    refusal = rules.cap_refusal(caps, spend, periods, params["amount"])
                    if refusal is not None:
                        raise refusal
                    hold_params = {**params, "caps_checked": True}
                row = await (await conn.execute(_PLACE_HOLD_BY_KEY, hold_params)).fetchone()
                if row is None or row["id"] is None:
                    raise _NotPlaced(None if row is None else row["principal_account_id"], row)
                postings.assert_balanced(f"hold {row['id']}", row["posted"])
                return principal, _hold(row)
        prior = await self._one(_HOLD_BY_KEY, {"key": params["key"]})
        if prior is None:
            raise RuntimeError("an idempotency claim without its hold")
        return principal, _hold(prior)

    async def _principal_and_unplaced(
        self, api_key: str, account_id: str, params: dict[str, Any], row: DictRow | None
    ) -> tuple[Principal, Hold]:
        hold = await self._unplaced_hold(
            account_id, params["key"], params["input_hash"], params["amount"], row, params["model"]
        )
        return await self.authenticate(api_key), hold

    async def store_idempotent_answer(
        self, owner: str, http_status: int, content_type: str, body: bytes
    ) -> bool:
        return await idempotency.store_answer(self._pool, owner, http_status, content_type, body)

    async def claim_idempotency_key(
        self,
        account_id: str,
        client: idempotency.ClientKey,
        owner: str,
        *,
        claim_seconds: int,
        retention_seconds: int,
    ) -> idempotency.Earlier | None:
        return await idempotency.claim(
            self._pool,
            account_id,
            client,
            owner,
            claim_seconds=claim_seconds,
            retention_seconds=retention_seconds,
        )

    async def drop_idempotency_claim(self, owner: str) -> bool:
        return await idempotency.drop_claim(self._pool, owner)

    async def sweep_idempotency_records(self, batch_size: int = 500) -> int:
        return await idempotency.sweep(self._pool, batch_size)

    async def place_hold(
        self,
        account_id: str,
        amount_micros: int,
        idempotency_key: str,
        *,
        description: str = "",
        ttl_seconds: int = 0,
        default_ttl_seconds: int = 3600,
        model: str = "",
        origin: Origin = NO_ORIGIN,
    ) -> Hold:
        """Reserve money on a named account. A retry with the same key and input
        returns the same hold; the same key with another input is refused."""
        account_id = rules.check_account_id(account_id)
        _, hold = await self._place(
            _PLACE_HOLD_BY_ACCOUNT,
            account_id,
            f"account:{account_id}",
            amount_micros,
            idempotency_key,
            description=description,
            ttl_seconds=ttl_seconds,
            default_ttl_seconds=default_ttl_seconds,
            model=model,
            origin=origin,
        )
        return hold

    @_retry_conflicts
    async def _place(
        self,
        sql: str,
        principal: str | bytes,
        presented: str,
        amount_micros: int,
        idempotency_key: str,
        *,
        description: str,
        ttl_seconds: int,
        default_ttl_seconds: int,
        model: str,
        origin: Origin,
    ) -> tuple[DictRow | None, Hold]:
        periods = self.spend_periods()
        params = _hold_params(
            principal,
            presented,
            amount_micros,
            idempotency_key,
            description=description,
            ttl_seconds=ttl_seconds,
            default_ttl_seconds=default_ttl_seconds,
            model=model,
            origin=origin,
            periods=periods,
        )
        key, digest, amount = params["key"], params["input_hash"], params["amount"]
        try:
            row = await self._one(sql, params)
        except errors.UniqueViolation:
            # A twin with this key committed first: its hold is the answer.
            return None, await self._unplaced_hold(None, key, digest, amount)
        if row is None:
            if sql is _PLACE_HOLD_BY_KEY:
                assert isinstance(principal, bytes)
                await self._refuse_key(principal)
            if await self._one(_ACCOUNT_DISABLED, {"id": principal}) is not None:
                raise FailedPrecondition(f"account {principal!s} is disabled")
            raise NotFound(f"account {principal!s} not found")
        if row["id"] is None and row["capped"] and self._model_allowed(row, model):
            # The key has spend caps: placed (or refused) under its lock instead.
            try:
                row = await self._place_capped(params, periods)
            except errors.UniqueViolation:
                return None, await self._unplaced_hold(None, key, digest, amount)
            except rules.BudgetExceeded:
                # A retry of a hold placed before the cap filled is still that hold.
                prior = await self._one(_HOLD_BY_KEY, {"key": key})
                if prior is None:
                    raise
                return None, await self._unplaced_hold(None, key, digest, amount)
            if row is None:  # the key was revoked or its account disabled meanwhile
                raise Unauthenticated(rules.UNAUTHENTICATED_MESSAGE)
        if row["id"] is None:
            return row, await self._unplaced_hold(
                row["principal_account_id"], key, digest, amount, row, model
            )
        postings.assert_balanced(f"hold {row['id']}", row["posted"])
        return row, _hold(row)

    @staticmethod
    def _model_allowed(row: DictRow, model: str) -> bool:
        allowed = row["allowed_models"]
        return allowed is None or model in allowed

    async def _place_capped(
        self, params: dict[str, Any], periods: rules.SpendPeriods
    ) -> DictRow | None:
        """A capped key's hold: lock its account's row and its own, check the
        caps against its counters (nobody else can change them now), and place
        the hold in the same transaction. BudgetExceeded moves nothing."""
        async with pg.transaction(self._pool) as conn:
            await conn.execute(_LOCK_KEY_ACCOUNT, params)
            locked = await (await conn.execute(_LOCK_KEY_SPEND, params)).fetchone()
            if locked is None:
                return None
            caps, spend = _key_spend(locked)
            refusal = rules.cap_refusal(caps, spend, periods, params["amount"])
            if refusal is not None:
                raise refusal
            cur = await conn.execute(_PLACE_HOLD_BY_KEY, {**params, "caps_checked": True})
            return await cur.fetchone()

    async def _unplaced_hold(
        self,
        account_id: str | None,
        key: str,
        digest: bytes,
        amount: int,
        row: DictRow | None = None,
        model: str = "",
    ) -> Hold:
        """Nothing was reserved: a retried key (that hold, if the input matches),
        a model off the key's allowlist, or a balance that cannot cover the amount."""
        prior = await self._one(_HOLD_BY_KEY, {"key": key})
        if prior is not None:
            if bytes(prior["input_hash"]) != digest:
                raise IdempotencyConflict(
                    "idempotency_key was already used for a different hold"
                    " (another account, amount, description, ttl or model)"
                )
            return _hold(prior)
        if account_id is None:
            raise RuntimeError("hold idempotency conflict but no hold found")
        if row is not None and not self._model_allowed(row, model):
            raise rules.ModelNotAllowed(model)
        balance = await self._balance(account_id)
        raise InsufficientFunds(
            f"insufficient balance: available {rules.idr(balance.available_micros)} IDR,"
            f" this needs {rules.idr(amount)} IDR"
        )

    @_retry_conflicts
    async def capture(
        self,
        hold_id: str,
        amount_micros: int,
        description: str = "",
        *,
        model: str = "",
        provider: str = "",
        usage: rules.RecordedUsage = NO_USAGE,
    ) -> Hold:
        """Charge `amount` (at most the hold) to revenue and free the rest.
        Capturing a captured hold returns it unchanged; a released or expired
        hold cannot be captured; more than the hold is CaptureExceedsHold."""
        hold_id = rules.check_hold_id(hold_id)
        amount = rules.check_capture_amount(amount_micros)
        note = rules.check_text("description", description)
        params = {
            "id": hold_id,
            "amount": amount,
            "note": note,
            "model": rules.check_ledger_name("model", model),
            "provider": rules.check_ledger_name("provider", provider),
            **usage.params(),
        }
        row = await self._one(_CAPTURE, params)
        if row is not None:
            postings.assert_balanced(f"capture of {hold_id}", row["posted"])
            return _hold(row)
        hold = await self._hold_by_id(hold_id)
        if hold.status == "captured":
            return hold
        if hold.status == "open" and amount > hold.amount_micros:
            metrics.CAPTURES_EXCEEDING_HOLD.inc()
            log.error(
                "capture exceeds its hold; refused",
                extra=fields(
                    hold_id=hold.id,
                    account_id=hold.account_id,
                    requested_micros=amount,
                    held_micros=hold.amount_micros,
                ),
            )
            raise CaptureExceedsHold(hold.id, amount, hold.amount_micros)
        if hold.status == "open":
            raise RuntimeError(f"hold {hold_id} is open but could not be captured")
        raise FailedPrecondition(f"hold {hold_id} is {hold.status}; it cannot be captured")

    @_retry_conflicts
    async def release(self, hold_id: str, reason: str = "", *, latency_ms: int = 0) -> Hold:
        """Free all of the hold. Releasing a released or expired hold returns it
        unchanged; a captured hold cannot be released."""
        hold_id = rules.check_hold_id(hold_id)
        params = {
            "ids": [hold_id],
            "status": "released",
            "kind": Kind.RELEASE.value,
            "note": rules.check_text("reason", reason),
            "latency_ms": rules.recorded_usage(latency_ms=latency_ms).latency_ms,
        }
        row = await self._one(_FREE_HOLDS, params)
        if row is not None:
            postings.assert_balanced(f"release of {hold_id}", row["posted"])
            return _hold(row)
        hold = await self._hold_by_id(hold_id)
        if hold.status in ("released", "expired"):
            return hold
        raise FailedPrecondition(f"hold {hold_id} is {hold.status}; it cannot be released")

    @_retry_conflicts
    async def expire_due_holds(self, batch_size: int = 500) -> ExpiredBatch:
        """Expire up to `batch_size` open holds past their expiry, in one transaction.

        Holds another transaction is settling right now are skipped (SKIP LOCKED),
        so several sweepers and concurrent captures never block or double-free."""
        if batch_size < 1:
            raise InvalidArgument("batch_size must be positive")
        async with pg.transaction(self._pool) as conn:
            due = await (await conn.execute(_LOCK_DUE_HOLDS, {"limit": batch_size})).fetchall()
            if not due:
                return ExpiredBatch(0, 0, 0)
            accounts = sorted({row["account_id"] for row in due})
            await conn.execute(_LOCK_ACCOUNTS, {"ids": accounts})
            cur = await conn.execute(
                _FREE_HOLDS,
                {
                    "ids": [row["id"] for row in due],
                    "status": "expired",
                    "kind": Kind.EXPIRE.value,
                    "note": "expired",
                    "latency_ms": None,
                },
            )
            expired = await cur.fetchall()
            if len(expired) != len(due):
                raise RuntimeError("locked holds changed while being expired")
            postings.assert_balanced("expiry batch", expired[0]["posted"])
        return ExpiredBatch(
            holds=len(expired),
            released_micros=sum(row["amount_micros"] for row in expired),
            accounts=len(accounts),
        )

    # Credits.

    async def top_up(
        self,
        account_id: str,
        amount_micros: int,
        *,
        idempotency_key: str = "",
        description: str = "",
        rail: str = "",
    ) -> Balance:
        """Money received through a payment rail ("" is `manual`: by hand)."""
        rail = rules.check_ledger_name("payment_rail", rail) or postings.MANUAL_RAIL
        return await self._credit(
            Kind.TOPUP,
            postings.credit_source(Kind.TOPUP, rail),
            account_id,
            rules.check_positive_amount(amount_micros),
            rules.check_idempotency_key(idempotency_key, required=False),
            description,
        )

    async def promote(
        self, account_id: str, amount_micros: int, *, idempotency_key: str, description: str
    ) -> Balance:
        """Credit the operator gives away (a welcome bonus, a goodwill credit)."""
        return await self._credit(
            Kind.PROMOTION,
            postings.PROMOTIONS,
            account_id,
            rules.check_positive_amount(amount_micros),
            rules.check_idempotency_key(idempotency_key, required=True),
            description,
        )

    async def adjust(
        self,
        account_id: str,
        amount_micros: int,
        *,
        idempotency_key: str,
        description: str,
        operator: str = "",
    ) -> Balance:
        """An operator's correction either way; a debit never takes available below zero.
        `operator` (the acting operator's user id; "" for aiportctl) is the
        transaction's actor."""
        return await self._credit(
            Kind.ADJUSTMENT,
            postings.ADJUSTMENTS,
            account_id,
            rules.check_signed_amount(amount_micros),
            rules.check_idempotency_key(idempotency_key, required=True),
            description,
            actor=rules.check_operator(operator),
        )

    @_retry_conflicts
    async def _credit(
        self,
        kind: Kind,
        source: str,
        account_id: str,
        amount: int,
        key: str | None,
        description: str,
        actor: str = "",
    ) -> Balance:
        """With a key, a repeat of the same input moves nothing and returns the
        current balance; the same key with another input is refused."""
        account_id = rules.check_account_id(account_id)
        description = rules.check_text("description", description)
        if kind is Kind.ADJUSTMENT and not description:
            raise InvalidArgument("an adjustment needs a reason (description)")
        # Namespaced by kind, so a caller's key never collides with another kind's.
        stored_key = None if key is None else f"{kind.value}:{key}"
        digest = None
        if stored_key is not None:
            digest = rules.input_hash(
                kind.value,
                account_id=account_id,
                amount_micros=amount,
                source=source,
                description=description,
            )
        params = {
            "kind": kind.value,
            "source": source,
            "account_id": account_id,
            "amount": amount,
            "key": stored_key,
            "input_hash": digest,
            "description": description,
            "actor": actor,
            # Money received for the customer pays what they owe first.
            "repays": kind is Kind.TOPUP,
        }
        try:
            row = await self._one_after_lock(_CREDIT, params)
        except errors.NumericValueOutOfRange as exc:
            raise InvalidArgument(f"this {kind.value} would overflow the account balance") from exc
        except errors.UniqueViolation:
            row = None  # a twin with this key committed first
        if row is not None:
            postings.assert_balanced(f"{kind.value} of {account_id}", row["posted"])
            if row["repaid"]:
                log.info(
                    "debt repaid",
                    extra=fields(
                        account_id=account_id,
                        repaid_micros=row["repaid"],
                        debt_micros=row["debt_micros"],
                        suspension_lifted=row["lifted"],
                    ),
                )
            return balance_of(account_id, row)
        if stored_key is not None:
            prior = await self._one(_CREDIT_BY_KEY, {"key": stored_key})
            if prior is not None:
                if bytes(prior["input_hash"]) != digest:
                    raise IdempotencyConflict(
                        f"idempotency_key was already used for a different {kind.value}"
                        " (another account, amount or description)"
                    )
                return await self._balance(account_id)
        balance = await self._balance(account_id)
        if amount < 0:
            raise InsufficientFunds(
                f"available {rules.idr(balance.available_micros)} IDR cannot cover"
                f" a debit of {rules.idr(-amount)} IDR"
            )
        raise RuntimeError(f"{kind.value} of {account_id} moved nothing")

    # Reversals.

    @_retry_conflicts
    async def reverse_top_up(
        self,
        account_id: str,
        amount_micros: int,
        *,
        idempotency_key: str,
        rail: str,
        reason: ReversalReason,
        description: str = "",
    ) -> Balance:
        """Give a top-up back to its payment rail (the gateway refunded it, or the
        payer charged it back): from available first, the rest recorded as debt,
        which suspends the account until a top-up repays it. The key is required:
        a repeat moves nothing and returns the current balance; the same key with
        another input is refused."""
        account_id = rules.check_account_id(account_id)
        amount = rules.check_positive_amount(amount_micros)
        key = rules.check_idempotency_key(idempotency_key, required=True)
        rail = rules.check_ledger_name("payment_rail", rail) or postings.MANUAL_RAIL
        description = rules.check_text("description", description)
        source = postings.payments_account(rail)
        kind = Kind.REVERSAL
        stored_key = f"{kind.value}:{key}"
        digest = rules.input_hash(
            kind.value,
            account_id=account_id,
            amount_micros=amount,
            source=source,
            reason=reason.value,
            description=description,
        )
        params = {
            "account_id": account_id,
            "amount": amount,
            "key": stored_key,
            "input_hash": digest,
            "source": source,
            "reason": reason.value,
            "description": description,
            "suspension_reason": f"unpaid debt: a top-up was reversed ({reason.value})"
            " after its money was spent",
        }
        try:
            row = await self._one_after_lock(_REVERSE, params)
        except errors.NumericValueOutOfRange as exc:
            raise InvalidArgument("this reversal would overflow the account's debt") from exc
        except errors.UniqueViolation:
            row = None  # a twin with this key committed first
        if row is None:
            prior = await self._one(_CREDIT_BY_KEY, {"key": stored_key})
            if prior is None:
                # Nothing under this key: only a missing account stops a reversal.
                await self._balance(account_id)
                raise RuntimeError(f"reversal of {account_id} moved nothing")
            if bytes(prior["input_hash"]) != digest:
                raise IdempotencyConflict(
                    "idempotency_key was already used for a different reversal"
                    " (another account, amount, payment_rail, reason or description)"
                )
            return await self._balance(account_id)
        postings.assert_balanced(f"reversal of {account_id}", row["posted"])
        metrics.REVERSALS.labels(reason.value).inc()
        if row["owed"]:
            metrics.DEBTS_RECORDED.labels(reason.value).inc()
            metrics.DEBT_RECORDED_MICROS.inc(row["owed"])
            log.warning(
                "top-up reversed after it was spent: debt recorded",
                extra=fields(
                    account_id=account_id,
                    reason=reason.value,
                    rail=rail,
                    amount_micros=amount,
                    taken_micros=row["taken"],
                    owed_micros=row["owed"],
                    debt_micros=row["debt_micros"],
                    suspended=row["suspended"],
                ),
            )
        return balance_of(account_id, row)

    # Reads the operations above need.

    async def _balance(self, account_id: str) -> Balance:
        row = await self._one(_BALANCE, {"id": account_id})
        if row is None:
            raise NotFound(f"account {account_id} not found")
        return balance_of(account_id, row)

    async def _hold_by_id(self, hold_id: str) -> Hold:
        row = await self._one(_HOLD_BY_ID, {"id": hold_id})
        if row is None:
            raise NotFound(f"hold {hold_id} not found")
        return _hold(row)
