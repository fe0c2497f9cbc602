"""Requests per minute and concurrent requests, per API key and per account,
shared by every gateway replica in Redis.

Limits: the deployment's defaults (AIPORT_KEY_REQUESTS_PER_MINUTE, ...), each
replaced by the principal's own when billing sends a non-zero one (a key's
override, an account's setting: billing.proto's RateLimits).

One Redis script per admitted call, one round trip: it checks both request
counters of this minute's window (fixed, epoch-aligned, as accounts' limiter)
and both sets of in-flight leases, and only when all four allow the call counts
it and takes a lease in both sets. A refused call is not counted, so a client
that backs off gets in as soon as the window turns. A lease is a member of a
sorted set scored by its expiry: the call gives it back when its response ends
(a stream: when the relay finishes or the client leaves); the replica renews
the leases of its calls in flight every few seconds, so a replica that dies
holds its slots for at most LEASE_SECONDS.

When Redis cannot be reached (or answers too slowly), both limits let the
call through, and aiport_rate_limit_unavailable counts each decision:
- requests per minute: the counters are cheap to lose, and refusing every
  call while Redis is away would turn a cache outage into an API outage. Money
  stays guarded without them (every paid call holds its worst case first).
- concurrent requests: the same reasoning; in-flight calls still end by
  their own timeouts, and leases taken before the outage expire on their own.
The answer then carries the limit with nothing counted against it.

The decisions and header values are pure functions; Limiter and Leases do the I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import redis.asyncio as aioredis
import redis.exceptions
from aiport.v1 import billing_pb2
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from services.common.fixed_window import KEY_MARGIN_SECONDS, millis_left
from services.common.metrics import RATE_LIMIT_UNAVAILABLE
from services.common.settings import env, env_int
from services.gateway import errors
from services.gateway.errors import PublicError

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60
# A lease outlives its renewal by this much; a dead replica's slots free after it.
LEASE_SECONDS = 30
RENEW_EVERY_SECONDS = LEASE_SECONDS / 3
# A Redis that hangs must not add its hang to every call: past this, let through.
REDIS_TIMEOUT_SECONDS = 0.25
# A refused concurrent call can retry as soon as any call of the key ends.
CONCURRENCY_RETRY_AFTER_SECONDS = 1

LIMIT_HEADER = "x-ratelimit-limit-requests"
REMAINING_HEADER = "x-ratelimit-remaining-requests"
RESET_HEADER = "x-ratelimit-reset-requests"

Headers = tuple[tuple[str, str], ...]


class LimitKind(StrEnum):
    """The metric's label for a limit type."""

    REQUESTS_PER_MINUTE = "requests_per_minute"
    CONCURRENT_REQUESTS = "concurrent_requests"


class Refused(StrEnum):
    """Which limit refused a call (the script's answer, 1..4)."""

    KEY_RPM = "key_rpm"
    ACCOUNT_RPM = "account_rpm"
    KEY_CONCURRENT = "key_concurrent"
    ACCOUNT_CONCURRENT = "account_concurrent"


_REFUSED_BY_CODE = {
    1: Refused.KEY_RPM,
    2: Refused.ACCOUNT_RPM,
    3: Refused.KEY_CONCURRENT,
    4: Refused.ACCOUNT_CONCURRENT,
}


@dataclass(frozen=True, slots=True)
class Limits:
    """The numbers that apply to one caller (all at least 1)."""

    key_rpm: int
    key_concurrent: int
    account_rpm: int
    account_concurrent: int

    def __post_init__(self) -> None:
        if min(self.key_rpm, self.key_concurrent, self.account_rpm, self.account_concurrent) < 1:
            raise ValueError("every rate limit must be at least 1")


DEFAULT_LIMITS = Limits(key_rpm=600, key_concurrent=20, account_rpm=1200, account_concurrent=40)


def defaults_from_env() -> Limits:
    """AIPORT_KEY_REQUESTS_PER_MINUTE, AIPORT_KEY_CONCURRENT_REQUESTS,
    AIPORT_ACCOUNT_REQUESTS_PER_MINUTE, AIPORT_ACCOUNT_CONCURRENT_REQUESTS."""
    try:
        return Limits(
            key_rpm=env_int("AIPORT_KEY_REQUESTS_PER_MINUTE", DEFAULT_LIMITS.key_rpm),
            key_concurrent=env_int("AIPORT_KEY_CONCURRENT_REQUESTS", DEFAULT_LIMITS.key_concurrent),
            account_rpm=env_int("AIPORT_ACCOUNT_REQUESTS_PER_MINUTE", DEFAULT_LIMITS.account_rpm),
            account_concurrent=env_int(
                "AIPORT_ACCOUNT_CONCURRENT_REQUESTS", DEFAULT_LIMITS.account_concurrent
            ),
        )
    except ValueError as exc:
        raise ValueError(f"rate limit settings: {exc}") from None


def redis_prefix() -> str:
    """AIPORT_REDIS_PREFIX, as accounts reads it: one Redis can serve several stacks."""
    return env("AIPORT_REDIS_PREFIX", "aiport")


def effective(defaults: Limits, own: billing_pb2.RateLimits) -> Limits:
    """The caller's limits: its own where billing sent one (non-zero), else the default."""
    return Limits(
        key_rpm=own.key_requests_per_minute or defaults.key_rpm,
        key_concurrent=own.key_concurrent_requests or defaults.key_concurrent,
        account_rpm=own.account_requests_per_minute or defaults.account_rpm,
        account_concurrent=own.account_concurrent_requests or defaults.account_concurrent,
    )


def reset_text(millis: int) -> str:
    """OpenAI's x-ratelimit-reset-requests format (Go's durations): "20ms", "1s", "6m0s"."""
    if millis < 1000:
        return f"{max(0, millis)}ms"
    seconds = math.ceil(millis / 1000)
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes}m{seconds}s" if minutes else f"{seconds}s"


def rate_headers(limits: Limits, used_key: int, used_account: int, reset_millis: int) -> Headers:
    """The x-ratelimit-*-requests headers: of the key's and the account's minute,
    the one with fewer requests left (the one the client will meet first)."""
    key_left = limits.key_rpm - used_key
    account_left = limits.account_rpm - used_account
    limit, left = (limits.key_rpm, key_left)
    if account_left < key_left:
        limit, left = limits.account_rpm, account_left
    return (
        (LIMIT_HEADER, str(limit)),
        (REMAINING_HEADER, str(max(0, left))),
        (RESET_HEADER, reset_text(reset_millis)),
    )


def refusal(refused: Refused, limits: Limits, seconds_left: int) -> PublicError:
    """The 429 for a refused call, naming the limit it met."""
    if refused is Refused.KEY_RPM:
        what = f"this API key's limit of {limits.key_rpm} requests per minute"
    elif refused is Refused.ACCOUNT_RPM:
        what = f"this account's limit of {limits.account_rpm} requests per minute"
    elif refused is Refused.KEY_CONCURRENT:
        what = f"this API key's limit of {limits.key_concurrent} concurrent requests"
    else:
        what = f"this account's limit of {limits.account_concurrent} concurrent requests"
    wait = (
        seconds_left
        if refused in (Refused.KEY_RPM, Refused.ACCOUNT_RPM)
        else CONCURRENCY_RETRY_AFTER_SECONDS
    )
    return errors.rate_limit_exceeded(f"Rate limit reached: {what}.", wait)


@dataclass(frozen=True, slots=True)
class Lease:
    """One admitted call's place in its key's and account's in-flight sets."""

    member: str
    key_set: str
    account_set: str


@dataclass(frozen=True, slots=True)
class Admission:
    """A limiter's answer: the headers for the response, the lease to give back
    when it ends (None when refused, or when Redis was away), and the refusal."""

    headers: Headers
    lease: Lease | None = None
    refused: PublicError | None = None


def decide(reply: Sequence[int], limits: Limits, now: float, lease: Lease) -> Admission:
    """The script's reply [refused code (0 = admitted), key count, account count]."""
    code, used_key, used_account = (int(v) for v in reply)
    millis = millis_left(now, WINDOW_SECONDS)
    headers = rate_headers(limits, used_key, used_account, millis)
    refused = _REFUSED_BY_CODE.get(code)
    if refused is None:
        return Admission(headers, lease)
    return Admission(headers, None, refusal(refused, limits, math.ceil(millis / 1000)))


def unavailable(limits: Limits, now: float) -> Admission:
    """Redis is away: let the call through (see the module's note), nothing counted."""
    for kind in LimitKind:
        RATE_LIMIT_UNAVAILABLE.labels(kind.value, "let_through").inc()
    return Admission(rate_headers(limits, 0, 0, millis_left(now, WINDOW_SECONDS)))


# KEYS: this window's counters (key, account), in-flight sets (key, account).
# ARGV: rpm (key, account), concurrency (key, account), now in ms, the lease's
# member, the lease's lifetime in ms, the counters' lifetime in seconds.
ADMIT_SCRIPT = """
local now = tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
local used_key = tonumber(redis.call('GET', KEYS[1]) or '0')
local used_account = tonumber(redis.call('GET', KEYS[2]) or '0')
local refused = 0
if used_key >= tonumber(ARGV[1]) then refused = 1
elseif used_account >= tonumber(ARGV[2]) then refused = 2
elseif redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[3]) then refused = 3
elseif redis.call('ZCARD', KEYS[4]) >= tonumber(ARGV[4]) then refused = 4
end
if refused == 0 then
  used_key = redis.call('INCR', KEYS[1])
  redis.call('EXPIRE', KEYS[1], ARGV[8])
  used_account = redis.call('INCR', KEYS[2])
  redis.call('EXPIRE', KEYS[2], ARGV[8])
  local expiry = now + tonumber(ARGV[7])
  redis.call('ZADD', KEYS[3], expiry, ARGV[6])
  redis.call('PEXPIRE', KEYS[3], ARGV[7])
  redis.call('ZADD', KEYS[4], expiry, ARGV[6])
  redis.call('PEXPIRE', KEYS[4], ARGV[7])
end
return {refused, used_key, used_account}
"""

# KEYS: the lease's two sets; ARGV: its member. A script, not a pipeline of two
# ZREMs: one command is cheaper for the client, and this runs on every call.
RELEASE_SCRIPT = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
"""

REDIS_ERRORS: tuple[type[Exception], ...] = (redis.exceptions.RedisError, OSError, TimeoutError)


def redis_client(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        url,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        # No retries: the client's default backs off for seconds, on every call,
        # while Redis is away; a call is let through at once instead.
        retry=Retry(NoBackoff(), 0),
    )


class Limiter:
    """Admits calls against their limits, and keeps their leases until they end."""

    def __init__(self, client: aioredis.Redis, prefix: str, defaults: Limits) -> None:
        self._redis = client
        self._prefix = f"{prefix}:gw"
        self.defaults = defaults
        self._admit = client.register_script(ADMIT_SCRIPT)
        self._release_script = client.register_script(RELEASE_SCRIPT)
        # Leases of this replica's calls in flight, renewed until given back.
        self._live: dict[str, Lease] = {}
        self._renewer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def keys(self, account_id: str, key_id: str, window: int) -> tuple[str, str, str, str]:
        p = self._prefix
        return (
            f"{p}:rpm:key:{key_id}:{window}",
            f"{p}:rpm:account:{account_id}:{window}",
            f"{p}:flying:key:{key_id}",
            f"{p}:flying:account:{account_id}",
        )

    async def admit(
        self, account_id: str, key_id: str, own: billing_pb2.RateLimits, now: float
    ) -> Admission:
        limits = effective(self.defaults, own)
        window = int(now // WINDOW_SECONDS)
        keys = self.keys(account_id, key_id, window)
        lease = Lease(secrets.token_hex(8), keys[2], keys[3])
        try:
            reply = await self._admit(
                keys=list(keys),
                args=[
                    limits.key_rpm,
                    limits.account_rpm,
                    limits.key_concurrent,
                    limits.account_concurrent,
                    int(now * 1000),
                    lease.member,
                    LEASE_SECONDS * 1000,
                    WINDOW_SECONDS + KEY_MARGIN_SECONDS,
                ],
            )
        except REDIS_ERRORS as exc:
            log.warning("rate limits unavailable; call let through", extra=_fields(exc))
            return unavailable(limits, now)
        admission = decide(reply, limits, now, lease)
        if admission.lease is not None:
            self._live[lease.member] = lease
            self._start_renewing()
        return admission

    def release(self, lease: Lease) -> None:
        """Give a lease back (in the background: the response is already over)."""
        self._live.pop(lease.member, None)
        task = asyncio.ensure_future(self._release(lease))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _release(self, lease: Lease) -> None:
        try:
            await self._release_script(keys=[lease.key_set, lease.account_set], args=[lease.member])
        except REDIS_ERRORS as exc:
            # It expires by itself within LEASE_SECONDS.
            log.warning("lease not given back", extra=_fields(exc))

    def _start_renewing(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.ensure_future(self._renew_forever())

    async def _renew_forever(self) -> None:
        while self._live:
            await asyncio.sleep(RENEW_EVERY_SECONDS)
            await self.renew()

    async def renew(self) -> None:
        """Push back the expiry of every lease still in flight (XX: never revive one
        given back meanwhile)."""
        leases = list(self._live.values())
        if not leases:
            return
        expiry = int(time.time() * 1000) + LEASE_SECONDS * 1000
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for lease in leases:
                    for name in (lease.key_set, lease.account_set):
                        pipe.zadd(name, {lease.member: expiry}, xx=True)
                        pipe.pexpire(name, LEASE_SECONDS * 1000)
                await pipe.execute()
        except REDIS_ERRORS as exc:
            log.warning("leases not renewed", extra=_fields(exc))

    async def drain(self, seconds: float = 2.0) -> None:
        """Wait (bounded) for the leases being given back."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=seconds)

    async def close(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        await self.drain()
        await self._redis.aclose()


def _fields(exc: BaseException) -> dict[str, object]:
    return {"fields": {"error": f"{type(exc).__name__}: {exc}"}}
