"""Repeated bad API keys are slowed down, and never lock out a valid key.

Keys themselves are safe against guessing and timing: billing stores only the
SHA-256 of each key and looks a presented key up by that hash. An index lookup
of the hash of a key with ~190 random bits leaks nothing useful through timing
(an attacker cannot choose hash prefixes), which is the standard
constant-time-safe design; a slow hash such as bcrypt adds nothing for keys
this random. What remains is the cost of the attempts themselves, which this
limiter bounds.

Two counters, both in bounded LRU tables (limits on everything), on what an
attacker controls:
- per presented key (by a truncated SHA-256 fingerprint, never the key): after
  `key_threshold` failures inside `window` seconds that key is refused with a
  429 for a cool-down that doubles on each further lock-out, up to a cap,
  without asking billing. A valid key never fails, so it is never locked.
- per client address: a looser cap (`client_threshold`) against someone who
  cycles through many different bad keys. While a client is throttled its keys
  are still verified with billing (one index lookup of the key's hash), so a
  valid key always works, new, rotated or idle; a key that fails is a 429
  instead of a 401, and is not counted again (billing is told so, and writes
  nothing). A success never resets a counter.

The client address is what the edge puts in `x-aiport-client-address`,
overwriting anything the client sent: the peer of its connection or, with
`xff_num_trusted_hops` set for load balancers in front, the address they
appended to x-forwarded-for (deploy/envoy/envoy.yaml.tmpl). Without the header
(a call that did not come through the edge) the gRPC peer is the client.

A refusal is 429 `rate_limit_exceeded` with a `retry-after` header, the seconds
to wait in the message, and no `x-should-retry: false`: retrying later is the
right thing to do. Pure apart from the clock, which tests inject.

Shared across gateway replicas: billing counts every failure in PostgreSQL by
the same rule (services/common/auth_failures.py) and answers a failed
authentication with the lock-outs now running. `Attempt.failed` copies them
into this process's tables, so later attempts are refused (a locked key) or
not counted again (a throttled client) here until they expire, whichever
replica counted the failures; an attempt that billing refused because a
lock-out was already running is a 429 too. Valid keys cost nothing extra:
billing looks at the counters only when a key fails.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from services.common.auth_failures import (
    BASE_COOLDOWN_SECONDS,
    CLIENT_ADDRESS_HEADER,
    CLIENT_HEADER,
    CLIENT_THRESHOLD,
    CLIENT_THROTTLED_HEADER,
    KEY_THRESHOLD,
    MAX_CLIENT_CHARS,
    MAX_COOLDOWN_SECONDS,
    WINDOW_SECONDS,
    FailureCounter,
    LockoutPolicy,
    Verdict,
    fingerprint,
    locked_for,
    new_counter,
    record_failure,
)
from services.gateway import errors
from services.gateway.errors import PublicError

log = logging.getLogger(__name__)

__all__ = [
    "BASE_COOLDOWN_SECONDS",
    "CLIENT_THRESHOLD",
    "KEY_THRESHOLD",
    "MAX_COOLDOWN_SECONDS",
    "WINDOW_SECONDS",
    "BadKeyLimiter",
    "fingerprint",
]

MAX_TRACKED = 10_000
MAX_ADDRESS_CHARS = MAX_CLIENT_CHARS


@dataclass(slots=True)
class _Table:
    """One bounded LRU table of counters."""

    policy: LockoutPolicy
    max_entries: int
    entries: OrderedDict[str, FailureCounter] = field(default_factory=OrderedDict)

    def get(self, name: str) -> FailureCounter | None:
        counter = self.entries.get(name)
        if counter is not None:
            self.entries.move_to_end(name)
        return counter

    def add(self, name: str) -> FailureCounter:
        counter = self.get(name)
        if counter is None:
            counter = new_counter(self.policy)
            self.entries[name] = counter
            while len(self.entries) > self.max_entries:
                self.entries.popitem(last=False)
        return counter


def peer_address(peer: str) -> str:
    """The host of a gRPC peer string ("ipv4:1.2.3.4:5", "ipv6:[::1]:5"), no port."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6" and rest.startswith("["):
        host = rest[1:].partition("]")[0]
    elif kind in ("ipv4", "ipv6"):
        host = rest.rpartition(":")[0] or rest
    else:
        host = peer
    return host[:MAX_ADDRESS_CHARS] or "unknown"


def client_address(metadata: Iterable[tuple[str, str | bytes]], peer: str) -> str:
    """Who is calling: the address the edge set, else the gRPC peer."""
    for key, value in metadata:
        if key == CLIENT_ADDRESS_HEADER:
            text = value if isinstance(value, str) else value.decode("latin-1")
            address = "".join(c for c in text if " " < c <= "~")[:MAX_ADDRESS_CHARS]
            if address:
                return address
    return peer_address(peer)


def too_many_attempts(retry_after_seconds: float) -> PublicError:
    return errors.too_many_auth_failures(max(1, math.ceil(retry_after_seconds)))


class BadKeyLimiter:
    """Counts authentication failures per key and per client; refuses during cool-downs."""

    def __init__(
        self,
        *,
        key_threshold: int = KEY_THRESHOLD,
        client_threshold: int = CLIENT_THRESHOLD,
        window_seconds: float = WINDOW_SECONDS,
        base_cooldown_seconds: float = BASE_COOLDOWN_SECONDS,
        max_cooldown_seconds: float = MAX_COOLDOWN_SECONDS,
        max_tracked: int = MAX_TRACKED,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        assert 1 <= key_threshold <= client_threshold
        assert max_tracked >= 1
        self.clock = clock
        self.keys = _Table(
            LockoutPolicy(
                key_threshold, window_seconds, base_cooldown_seconds, max_cooldown_seconds
            ),
            max_tracked,
        )
        self.clients = _Table(
            LockoutPolicy(
                client_threshold, window_seconds, base_cooldown_seconds, max_cooldown_seconds
            ),
            max_tracked,
        )

    # -- the calls the gateway makes ------------------------------------------
    def check(self, client: str, api_key: str) -> float:
        """Raise the 429 when this key is locked out; the seconds this client is
        still throttled for (> 0: verify the key, but a failure is a 429)."""
        return self.check_fingerprint(client, fingerprint(api_key))

    def failed(self, client: str, api_key: str) -> None:
        self.failed_fingerprint(client, fingerprint(api_key))

    def check_fingerprint(self, client: str, key: str) -> float:
        now = self.clock()
        wait = locked_for(self.keys.get(key), now)
        if wait > 0:
            raise too_many_attempts(wait)
        return max(locked_for(self.clients.get(client), now), 0.0)

    def failed_fingerprint(self, client: str, key: str) -> None:
        now = self.clock()
        for table, name in ((self.keys, key), (self.clients, client)):
            cooldown = self._record(table, name, now)
            if cooldown:
                # The fingerprint names the key for the operator; the key is never logged.
                log.warning(
                    "repeated bad API keys: locked out",
                    extra={
                        "fields": {
                            "scope": "key" if table is self.keys else "client",
                            "client": client,
                            "key_fingerprint": key,
                            "cooldown_seconds": cooldown,
                        }
                    },
                )

    def apply_shared(self, client: str, key: str, verdict: Verdict) -> float:
        """Cache the lock-outs billing reported for this key and client; the
        seconds to refuse this attempt for (0: it is a plain 401)."""
        now = self.clock()
        for table, name, seconds in (
            (self.keys, key, verdict.key_locked_seconds),
            (self.clients, client, verdict.client_locked_seconds),
        ):
            if seconds > 0:
                counter = table.add(name)
                counter.locked_until = max(counter.locked_until, now + seconds)
        if not verdict.refused:
            return 0.0
        return max(verdict.key_locked_seconds, verdict.client_locked_seconds, 1.0)

    # -- internals ------------------------------------------------------------
    @staticmethod
    def _record(table: _Table, name: str, now: float) -> float:
        """Count one failure; the cool-down it starts, or 0."""
        return record_failure(table.add(name), table.policy, now)


_DEFAULT: BadKeyLimiter | None = None


def default_limiter() -> BadKeyLimiter:
    """The gateway process's one limiter."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = BadKeyLimiter()
    return _DEFAULT


@dataclass(frozen=True, slots=True)
class Attempt:
    """One authentication attempt, checked against the limiter before billing."""

    limiter: BadKeyLimiter
    client: str
    key: str  # the key's fingerprint, never the key
    throttled_seconds: float = 0.0  # > 0: the client is throttled; a failure is a 429

    def billing_metadata(self) -> tuple[tuple[str, str], ...]:
        """What billing needs to count a failure of this attempt against the client
        (or, while the client is throttled, not to count it at all)."""
        printable = "".join(c for c in self.client if " " <= c <= "~")
        metadata = [(CLIENT_HEADER, printable or "unknown")]
        if self.throttled_seconds > 0:
            metadata.append((CLIENT_THROTTLED_HEADER, "1"))
        return tuple(metadata)

    def failed(self, billing_metadata: Iterable[tuple[str, str | bytes]] = ()) -> float:
        """Count the failure here and cache billing's shared lock-outs (from its
        trailing metadata); the seconds to refuse this attempt for (0: a 401)."""
        if self.throttled_seconds > 0:
            # Already throttled: refused, not counted (billing did not count it either).
            return max(self.throttled_seconds, 1.0)
        verdict = Verdict.from_metadata(billing_metadata)
        if not verdict.refused:  # a refused attempt is not counted, as locally
            self.limiter.failed_fingerprint(self.client, self.key)
        return self.limiter.apply_shared(self.client, self.key, verdict)


def begin(
    metadata: Iterable[tuple[str, str | bytes]] | None,
    peer: str,
    api_key: str,
    limiter: BadKeyLimiter | None = None,
) -> Attempt:
    """Check the limiter for this call (raises the 429 for a locked key) and
    return the attempt to report on."""
    limiter = limiter or default_limiter()
    client = client_address(metadata or (), peer)
    key = fingerprint(api_key)
    throttled = limiter.check_fingerprint(client, key)
    return Attempt(limiter, client, key, throttled)
