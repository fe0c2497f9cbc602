"""Clients' Idempotency-Key records (migration 0008): the rules, and their SQL.

The claim of a key is written by Money.authorize_hold_once in the same
transaction as the hold it guards, so a key is never claimed without its hold
nor a hold placed for a key someone else holds; the primary key (account, key)
is where parallel repeats meet, and exactly one inserts. The answer is stored
(or the claim dropped) afterwards by the owner, the claiming hold's own
idempotency key, which only the gateway knows.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from psycopg.rows import DictRow

from services.common import pg

from .rules import InvalidArgument

MAX_KEY_CHARS = 255
REQUEST_HASH_BYTES = 32
# What one stored answer may hold (a gRPC message carries it both ways).
MAX_ANSWER_BYTES = 8 * 2**20
MAX_CONTENT_TYPE_CHARS = 200


class State(Enum):
    """What an earlier call under the key left (billing.proto's IdempotentAnswer.State)."""

    IN_FLIGHT = "in_flight"
    COMPLETED = "completed"
    MISMATCH = "mismatch"


@dataclass(frozen=True, slots=True)
class ClientKey:
    """A client's key and the hash of what it guards, as claimed for an account."""

    key: str
    request_hash: bytes


@dataclass(frozen=True, slots=True)
class Earlier:
    """The claim was not taken: the earlier call's state, and its answer when completed."""

    state: State
    http_status: int = 0
    content_type: str = ""
    body: bytes = b""


def check_client_key(key: str, request_hash: bytes) -> ClientKey:
    """The gateway validates the header; this is billing's own guard (the table's too)."""
    if not 1 <= len(key) <= MAX_KEY_CHARS or not all(" " <= ch <= "~" for ch in key):
        raise InvalidArgument(
            f"client idempotency key must be 1-{MAX_KEY_CHARS} printable ASCII characters"
        )
    if len(request_hash) != REQUEST_HASH_BYTES:
        raise InvalidArgument("client idempotency request_hash must be 32 bytes (SHA-256)")
    return ClientKey(key, bytes(request_hash))


def check_answer(http_status: int, content_type: str, body: bytes) -> None:
    if not 100 <= http_status <= 599:
        raise InvalidArgument("http_status must be an HTTP status (100-599)")
    if len(content_type) > MAX_CONTENT_TYPE_CHARS:
        raise InvalidArgument("content_type is too long")
    if len(body) > MAX_ANSWER_BYTES:
        raise InvalidArgument(f"an answer to store is at most {MAX_ANSWER_BYTES} bytes")


def earlier(row: DictRow, request_hash: bytes) -> Earlier:
    """What a repeat is told about the live record `row`. A different request under
    the key is refused before anything else: its answer is not the caller's to see."""
    if bytes(row["request_hash"]) != request_hash:
        return Earlier(State.MISMATCH)
    if row["state"] == State.IN_FLIGHT.value:
        return Earlier(State.IN_FLIGHT)
    return Earlier(
        State.COMPLETED, int(row["http_status"]), str(row["content_type"]), bytes(row["body"])
    )


# Claim: a new key, or one whose record is past retention or whose in-flight claim
# has lapsed (its gateway died: the hold it guarded has expired too). Anything
# else conflicts and returns no row; the row is then read with LIVE_RECORD.
CLAIM = """
INSERT INTO billing.idempotency_records AS r
    (account_id, key, request_hash, owner, state, claim_expires_at, expires_at)
VALUES (%(account_id)s, %(key)s, %(request_hash)s, %(owner)s, 'in_flight',
        now() + %(claim_seconds)s * interval '1 second',
        now() + %(retention_seconds)s * interval '1 second')
ON CONFLICT (account_id, key) DO UPDATE
SET request_hash = EXCLUDED.request_hash, owner = EXCLUDED.owner, state = 'in_flight',
    http_status = NULL, content_type = NULL, body = NULL, created_at = now(),
    claim_expires_at = EXCLUDED.claim_expires_at, expires_at = EXCLUDED.expires_at
WHERE r.expires_at <= now() OR (r.state = 'in_flight' AND r.claim_expires_at <= now())
RETURNING r.owner
"""

LIVE_RECORD = """
SELECT request_hash, owner, state, http_status, content_type, body
FROM billing.idempotency_records
WHERE account_id = %(account_id)s AND key = %(key)s AND expires_at > now()
  AND NOT (state = 'in_flight' AND claim_expires_at <= now())
"""

_STORE = """
UPDATE billing.idempotency_records
SET state = 'completed', http_status = %(http_status)s, content_type = %(content_type)s,
    body = %(body)s
WHERE owner = %(owner)s AND state = 'in_flight'
RETURNING 1 AS changed
"""

_DROP = """
DELETE FROM billing.idempotency_records WHERE owner = %(owner)s AND state = 'in_flight'
RETURNING 1 AS changed
"""

_SWEEP = """
DELETE FROM billing.idempotency_records
WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM billing.idempotency_records WHERE expires_at <= now()
    LIMIT %(limit)s FOR UPDATE SKIP LOCKED))
"""


def _owner(owner: str) -> str:
    if not owner or len(owner) > 255:
        raise InvalidArgument("owner (the claiming hold's idempotency_key) is required")
    return owner


async def store_answer(
    pool: pg.Pool, owner: str, http_status: int, content_type: str, body: bytes
) -> bool:
    """The claim's answer, kept for repeats. False: the claim is not this owner's
    any more (it lapsed and was taken over) or is already completed."""
    check_answer(http_status, content_type, body)
    params = {
        "owner": _owner(owner),
        "http_status": http_status,
        "content_type": content_type,
        "body": body,
    }
    return await pg.fetchone(pool, _STORE, params) is not None


async def drop_claim(pool: pg.Pool, owner: str) -> bool:
    """Forget an in-flight claim whose call failed before any money moved: the
    client may use the key again. A completed record is never dropped."""
    return await pg.fetchone(pool, _DROP, {"owner": _owner(owner)}) is not None


async def claim(
    pool: pg.Pool,
    account_id: str,
    client: ClientKey,
    owner: str,
    *,
    claim_seconds: int,
    retention_seconds: int,
) -> Earlier | None:
    """Claim the client's key for a call that places no hold: None when claimed for
    `owner`, else what the earlier call under the key left. The primary key is
    where parallel repeats meet: exactly one inserts."""
    params = {
        "account_id": account_id,
        "key": client.key,
        "request_hash": client.request_hash,
        "owner": _owner(owner),
        "claim_seconds": claim_seconds,
        "retention_seconds": retention_seconds,
    }
    for _ in range(3):  # the record that blocked the claim may be swept meanwhile
        async with pg.transaction(pool) as conn:
            if await (await conn.execute(CLAIM, params)).fetchone() is not None:
                return None
            record = await (await conn.execute(LIVE_RECORD, params)).fetchone()
            if record is not None:
                if record["owner"] == owner:  # this very call, asked again
                    return None
                return earlier(record, client.request_hash)
    raise RuntimeError("idempotency claim neither taken nor found")


async def sweep(pool: pg.Pool, batch_size: int = 500) -> int:
    """Delete up to `batch_size` records past their retention; how many."""
    async with pg.transaction(pool) as conn:
        cur = await conn.execute(_SWEEP, {"limit": batch_size})
        return cur.rowcount
