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

# A live key of an enabled account. Its last use is recorded at most once a
# minute (a busy key does not rewrite its row on every call).
_KEY_PRINCIPAL = """
SELECT ak.id AS key_id, ak.account_id, ak.scopes
FROM billing.api_keys ak JOIN billing.accounts a ON a.id = ak.account_id
WHERE ak.key_hash = %(principal)s AND ak.revoked_at IS NULL AND a.disabled_at IS NULL
"""
_KEY_USED = """
UPDATE billing.api_keys SET last_used_at = now()
WHERE id = (SELECT key_id FROM k)
  AND (last_used_at IS NULL OR last_used_at < now() - interval '60 seconds')
"""
_AUTHENTICATE = f"""
WITH k AS ({_KEY_PRINCIPAL}), used AS ({_KEY_USED})
SELECT key_id, account_id, scopes FROM k
"""
_BY_ACCOUNT = """
SELECT NULL::text AS key_id, id AS account_id, NULL::text[] AS scopes FROM billing.accounts
WHERE id = %(principal)s AND disabled_at IS NULL
"""

# Hold: the principal (an API key's owner or a named account), the reservation
# (only if available covers it and no hold has this key yet), the hold, its
# transaction and postings. A concurrent twin with the same key makes the hold
# INSERT hit the unique key, which undoes the whole statement.
_PLACE_HOLD = f"""
WITH k AS ({{principal}}), {{used}}
r AS (
    UPDATE billing.accounts a SET held_micros = a.held_micros + %(amount)s
    FROM k
    WHERE a.id = k.account_id
      AND a.balance_micros - a.held_micros >= %(amount)s
      AND NOT EXISTS (SELECT 1 FROM billing.holds WHERE idempotency_key = %(key)s)
    RETURNING a.id, a.balance_micros
), h AS (
    INSERT INTO billing.holds
        (id, account_id, amount_micros, idempotency_key, input_hash, model, description,
         expires_at, key_id, endpoint, request_id, job_id)
    SELECT %(hold_id)s, r.id, %(amount)s, %(key)s, %(input_hash)s, %(model)s, %(description)s,
           now() + %(ttl)s * interval '1 second', k.key_id, %(endpoint)s, %(request_id)s,
           %(job_id)s
    FROM r, k
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
SELECT k.key_id, k.account_id AS principal_account_id, k.scopes, h.*,
       (SELECT array_agg(amount_micros) FROM p) AS posted
FROM k LEFT JOIN h ON true
"""
_PLACE_HOLD_BY_KEY = _PLACE_HOLD.format(principal=_KEY_PRINCIPAL, used=f"used AS ({_KEY_USED}),")
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
    RETURNING {HOLD_COLUMNS}
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
    RETURNING {HOLD_COLUMNS}
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
    return Principal(account_id=account_id, key_id=row["key_id"], scopes=tuple(row["scopes"] or ()))


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
    }


class _NotPlaced(Exception):
    """Inside a claim's transaction: the hold was not placed, so the claim must not be
    kept either (rolled back with it); the reason is worked out after."""

    def __init__(self, principal_account_id: str | None) -> None:
        super().__init__("hold not placed")
        self.principal_account_id = principal_account_id


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
    ) -> None:
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

    # Keys.

    async def authenticate(self, api_key: str) -> Principal:
        """The key's owner. Unknown, revoked and malformed keys fail alike."""
        if not rules.looks_like_api_key(api_key):
            raise Unauthenticated(rules.UNAUTHENTICATED_MESSAGE)
        row = await self._one(_AUTHENTICATE, {"principal": rules.hash_api_key(api_key)})
        if row is None:
            raise Unauthenticated(rules.UNAUTHENTICATED_MESSAGE)
        return _principal(row["account_id"], row)

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
        """The key's owner and its hold, in one statement. Unknown or revoked keys
        are Unauthenticated; a balance that cannot cover it is InsufficientFunds."""
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
        )
        for _ in range(MAX_ATTEMPTS):
            try:
                outcome = await self._claim_and_hold(key_hash, params, client, retention_seconds)
            except _NotPlaced as missing:
                if missing.principal_account_id is None:
                    raise Unauthenticated(rules.UNAUTHENTICATED_MESSAGE) from None
                return await self._principal_and_unplaced(
                    api_key, missing.principal_account_id, params
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
    ) -> tuple[Principal, Hold | idempotency.Earlier] | None:
        """One transaction: the principal, the claim, the hold. None: the record
        that blocked the claim vanished before it could be read (swept): try again."""
        async with pg.transaction(self._pool) as conn:
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
                row = await (await conn.execute(_PLACE_HOLD_BY_KEY, params)).fetchone()
                if row is None or row["id"] is None:
                    raise _NotPlaced(None if row is None else row["principal_account_id"])
                postings.assert_balanced(f"hold {row['id']}", row["posted"])
                return principal, _hold(row)
        prior = await self._one(_HOLD_BY_KEY, {"key": params["key"]})
        if prior is None:
            raise RuntimeError("an idempotency claim without its hold")
        return principal, _hold(prior)

    async def _principal_and_unplaced(
        self, api_key: str, account_id: str, params: dict[str, Any]
    ) -> tuple[Principal, Hold]:
        hold = await self._unplaced_hold(
            account_id, params["key"], params["input_hash"], params["amount"]
        )
        return await self.authenticate(api_key), hold

    async def store_idempotent_answer(
        self, owner: str, http_status: int, content_type: str, body: bytes
    ) -> bool:
        return await idempotency.store_answer(self._pool, owner, http_status, content_type, body)

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
        )
        key, digest, amount = params["key"], params["input_hash"], params["amount"]
        try:
            row = await self._one(sql, params)
        except errors.UniqueViolation:
            # A twin with this key committed first: its hold is the answer.
            return None, await self._unplaced_hold(None, key, digest, amount)
        if row is None:
            if sql is _PLACE_HOLD_BY_KEY:
                raise Unauthenticated(rules.UNAUTHENTICATED_MESSAGE)
            if await self._one(_ACCOUNT_DISABLED, {"id": principal}) is not None:
                raise FailedPrecondition(f"account {principal!s} is disabled")
            raise NotFound(f"account {principal!s} not found")
        if row["id"] is None:
            return row, await self._unplaced_hold(row["principal_account_id"], key, digest, amount)
        postings.assert_balanced(f"hold {row['id']}", row["posted"])
        return row, _hold(row)

    async def _unplaced_hold(
        self, account_id: str | None, key: str, digest: bytes, amount: int
    ) -> Hold:
        """Nothing was reserved: a retried key (that hold, if the input matches)
        or a balance that cannot cover the amount."""
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
