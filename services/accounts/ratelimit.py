"""Rate limits for sign-up, log-in and mailed links, shared by every replica in Redis.

The rule (pure, below): at most `count` attempts per `window` seconds for each
(action, scope, value), e.g. ("login", "email", "ana@x.id"). Windows are fixed
and aligned to the epoch, so a counter is one Redis key per window that expires
by itself: one round trip per check (SET NX EX + INCR in a MULTI), no clean-up.
A fixed window lets up to twice `count` through around a boundary; the limits
are set with that in mind. Every attempt counts, before any password is
checked: this also bounds the argon2 work one address can cause.

Values are hashed into the key, so Redis never holds an email or an address.
If Redis cannot be reached the attempt is refused as UNAVAILABLE (fail closed):
without the limits, password guessing would be unbounded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from enum import StrEnum

import redis.asyncio as aioredis

from services.common.fixed_window import KEY_MARGIN_SECONDS
from services.common.fixed_window import Limit as Limit  # re-exported: the settings name it
from services.common.fixed_window import window_of as window_of

from .rules import RateLimited


class Action(StrEnum):
    SIGN_UP = "signup"
    LOG_IN = "login"
    # Reset and verification mails (and password changes' re-checks of the password).
    MAIL = "mail"


class Scope(StrEnum):
    ADDRESS = "address"
    EMAIL = "email"


# Per address the numbers are larger: many people can share one (an office NAT).
DEFAULT_LIMITS: Mapping[tuple[Action, Scope], Limit] = {
    (Action.SIGN_UP, Scope.ADDRESS): Limit(10, 3600),
    (Action.SIGN_UP, Scope.EMAIL): Limit(5, 3600),
    (Action.LOG_IN, Scope.ADDRESS): Limit(30, 900),
    (Action.LOG_IN, Scope.EMAIL): Limit(10, 900),
    (Action.MAIL, Scope.ADDRESS): Limit(10, 3600),
    (Action.MAIL, Scope.EMAIL): Limit(5, 3600),
}


def parse_limits(text: str) -> dict[tuple[Action, Scope], Limit]:
    """AIPORT_ACCOUNTS_RATE_LIMITS: "login_email=10/900,signup_address=10/3600";
    unnamed ones keep their defaults."""
    limits = dict(DEFAULT_LIMITS)
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, eq, value = item.partition("=")
        action, _, scope = name.strip().partition("_")
        count, slash, window = value.partition("/")
        try:
            key = (Action(action), Scope(scope))
            if not (eq and slash):
                raise ValueError
            limits[key] = Limit(int(count), int(window))
        except ValueError:
            known = ", ".join(sorted(f"{a}_{s}" for a, s in DEFAULT_LIMITS))
            raise ValueError(
                f"AIPORT_ACCOUNTS_RATE_LIMITS: {item!r} is not NAME=COUNT/SECONDS"
                f" with NAME one of {known}"
            ) from None
    return limits


def counter_key(prefix: str, action: Action, scope: Scope, value: str, index: int) -> str:
    digest = hashlib.sha256(f"{action}\0{scope}\0{value}".encode()).hexdigest()[:32]
    return f"{prefix}:rl:{action}:{scope}:{digest}:{index}"


def refusal(count_after: int, limit: Limit, seconds_left: int) -> RateLimited | None:
    """The refusal for the attempt that brought the window's count to `count_after`."""
    return RateLimited(seconds_left) if count_after > limit.count else None


class RateLimiter:
    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str,
        limits: Mapping[tuple[Action, Scope], Limit] = DEFAULT_LIMITS,
    ) -> None:
        self._redis = client
        self._prefix = prefix
        self._limits = dict(limits)

    async def attempt(self, action: Action, values: Mapping[Scope, str], now: float) -> None:
        """Count one attempt under every scope given; RateLimited if any is over
        its limit (with the longest wait among those that are)."""
        checks = []
        async with self._redis.pipeline(transaction=True) as pipe:
            for scope, value in values.items():
                limit = self._limits[(action, scope)]
                index, left = window_of(now, limit)
                key = counter_key(self._prefix, action, scope, value, index)
                # The key outlives its window a little: clocks of replicas differ.
                pipe.set(key, 0, ex=limit.window_seconds + KEY_MARGIN_SECONDS, nx=True)
                pipe.incr(key)
                checks.append((limit, left))
            replies = await pipe.execute()
        counts = replies[1::2]
        refusals = [
            r
            for (limit, left), count in zip(checks, counts, strict=True)
            if (r := refusal(int(count), limit, left)) is not None
        ]
        if refusals:
            raise max(refusals, key=lambda r: r.retry_after_seconds)
