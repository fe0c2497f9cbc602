"""The rule for repeated failed authentications, shared by billing and the gateway.

Billing counts failures (per key fingerprint and per client) in PostgreSQL, so
every gateway replica sees the same counts; each gateway keeps the lock-outs
billing reports in a local cache until they expire, so a locked-out key or
client is refused without a round trip. The rule itself (pure):

after `threshold` failures inside `window` seconds the name is locked out for a
cool-down that doubles on each further lock-out, up to `max_cooldown`. Quiet
for a whole window after the last failure or lock-out forgives both. Failures
while locked out are not counted (the caller refuses them first).

The gateway tells billing who the client is, and billing answers with the
lock-outs, in gRPC metadata (names below): errors carry no message body.
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

KEY_THRESHOLD = 10
CLIENT_THRESHOLD = 100
WINDOW_SECONDS = 60.0
BASE_COOLDOWN_SECONDS = 5.0
MAX_COOLDOWN_SECONDS = 300.0
MAX_STRIKES = 32
FINGERPRINT_BYTES = 16
MAX_CLIENT_CHARS = 64

# Edge -> gateway: the client's address as the edge determined it (the peer of
# its connection, or the one trusted load balancers appended to x-forwarded-for).
CLIENT_ADDRESS_HEADER = "x-aiport-client-address"
# Gateway -> billing: the caller's address, as the gateway's limiter names it.
CLIENT_HEADER = "x-aiport-client"
# Gateway -> billing: "1" when the client is already throttled: verify the key,
# but do not count a failure (the gateway refuses it with a 429 anyway).
CLIENT_THROTTLED_HEADER = "x-aiport-client-throttled"
# Billing -> gateway, on a failed authentication: seconds each scope is locked
# out for (0 or absent: not locked), and "1" when the attempt was refused
# because a lock-out was already running (a 429, not a 401).
KEY_LOCKED_HEADER = "x-aiport-key-locked-seconds"
CLIENT_LOCKED_HEADER = "x-aiport-client-locked-seconds"
REFUSED_HEADER = "x-aiport-auth-refused"
MAX_LOCK_SECONDS = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class LockoutPolicy:
    threshold: int
    window: float = WINDOW_SECONDS
    base_cooldown: float = BASE_COOLDOWN_SECONDS
    max_cooldown: float = MAX_COOLDOWN_SECONDS

    def __post_init__(self) -> None:
        assert self.threshold >= 1 and self.window > 0
        assert 0 < self.base_cooldown <= self.max_cooldown


KEY_POLICY = LockoutPolicy(KEY_THRESHOLD)
CLIENT_POLICY = LockoutPolicy(CLIENT_THRESHOLD)


@dataclass(slots=True)
class FailureCounter:
    """Recent failure times (at most `threshold` kept) and the lock-out state."""

    failures: deque[float]
    locked_until: float = 0.0
    strikes: int = 0


def new_counter(policy: LockoutPolicy, failures: Iterable[float] = ()) -> FailureCounter:
    return FailureCounter(deque(failures, maxlen=policy.threshold))


def locked_for(counter: FailureCounter | None, now: float) -> float:
    """Seconds of lock-out left (<= 0: not locked)."""
    return 0.0 if counter is None else counter.locked_until - now


def record_failure(counter: FailureCounter, policy: LockoutPolicy, now: float) -> float:
    """Count one failure; the cool-down it starts, or 0."""
    if counter.failures and now - max(counter.failures[-1], counter.locked_until) > policy.window:
        # Quiet for a whole window after the last failure or lock-out: forgive both.
        counter.failures.clear()
        counter.strikes = 0
    counter.failures.append(now)
    full = len(counter.failures) == policy.threshold
    if full and now - counter.failures[0] <= policy.window and now >= counter.locked_until:
        cooldown = min(policy.max_cooldown, policy.base_cooldown * 2.0**counter.strikes)
        counter.strikes = min(counter.strikes + 1, MAX_STRIKES)
        counter.locked_until = now + cooldown
        return cooldown
    return 0.0


def fingerprint(api_key: str) -> str:
    """A short digest that names a presented key without holding it."""
    return hashlib.sha256(api_key.encode("utf-8", "replace")).hexdigest()[: 2 * FINGERPRINT_BYTES]


@dataclass(frozen=True, slots=True)
class Verdict:
    """Billing's answer to one failed authentication."""

    key_locked_seconds: float = 0.0
    client_locked_seconds: float = 0.0
    refused: bool = False  # a lock-out was already running: 429, not 401

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (
            (KEY_LOCKED_HEADER, f"{max(0.0, self.key_locked_seconds):.3f}"),
            (CLIENT_LOCKED_HEADER, f"{max(0.0, self.client_locked_seconds):.3f}"),
            (REFUSED_HEADER, "1" if self.refused else "0"),
        )

    @classmethod
    def from_metadata(cls, metadata: Iterable[tuple[str, str | bytes]]) -> Verdict:
        """Parse what billing sent; anything missing or malformed counts as nothing."""
        values: dict[str, str] = {}
        for key, value in metadata:
            if key in (KEY_LOCKED_HEADER, CLIENT_LOCKED_HEADER, REFUSED_HEADER):
                values[key] = value if isinstance(value, str) else value.decode("latin-1")
        return cls(
            _seconds(values.get(KEY_LOCKED_HEADER, "")),
            _seconds(values.get(CLIENT_LOCKED_HEADER, "")),
            values.get(REFUSED_HEADER) == "1",
        )


def _seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        return 0.0
    return min(value, MAX_LOCK_SECONDS) if math.isfinite(value) and value > 0 else 0.0
