"""Repeated bad API keys are slowed down before they reach billing.

Keys themselves are safe against guessing and timing: billing stores only the
SHA-256 of each key and looks a presented key up by that hash. An index lookup
of the hash of a key with ~190 random bits leaks nothing useful through timing
(an attacker cannot choose hash prefixes), which is the standard
constant-time-safe design; a slow hash such as bcrypt adds nothing for keys
this random. What remains is the cost of the attempts themselves, which this
limiter bounds.

Two counters, both in bounded LRU tables (limits on everything):
- per presented key (by a truncated SHA-256 fingerprint, never the key): after
  `key_threshold` failures inside `window` seconds that key is refused with a
  429 for a cool-down that doubles on each further lock-out, up to a cap.
  Only the failing key is refused, so a valid key sent from the same address
  keeps working.
- per client address: a looser cap (`client_threshold`) against someone who
  cycles through many different bad keys. While a client is locked out, only
  keys that did not authenticate recently are refused, so a valid key in use
  from the same address (through the same proxy, say) is not locked out by
  someone else's bad keys. A success never resets a counter.

The client address is the gRPC peer with its port stripped. Envoy in front of
the gateway (deploy/envoy/envoy.yaml.tmpl) sets neither `use_remote_address`
nor `xff_num_trusted_hops`, so `x-forwarded-for` reaches us exactly as the
client sent it and must not be trusted; pass `trust_forwarded=True` only
behind an edge that overwrites it (then `x-envoy-external-address`, else the
rightmost `x-forwarded-for` entry, is the client). Until then every caller
shares Envoy's address, so the per-client cap is in effect global: that is why
it is loose and why keys that authenticated in the last day are exempt from it.

A refusal is 429 `rate_limit_exceeded` with the seconds to wait in the message
and no `x-should-retry: false`: retrying later is the right thing to do.
Pure apart from the clock, which tests inject.

Shared across gateway replicas: billing counts every failure in PostgreSQL by
the same rule (services/common/auth_failures.py) and answers a failed
authentication with the lock-outs now running. `Attempt.failed` copies them
into this process's tables, so later attempts are refused here without a round
trip until they expire, whichever replica counted the failures; an attempt
that billing refused because a lock-out was already running is a 429 too. The
local counters stay as they were (each replica's count is a subset of
billing's, so they never lock earlier), and valid keys cost nothing extra:
billing looks at the counters only when a key fails. What stays per process is
the memory of recently good keys (so a valid key not yet seen by a replica is
refused there while its client is locked out) and the circuit breakers.
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
    CLIENT_HEADER,
    CLIENT_THRESHOLD,
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
# A key that authenticated within this long is exempt from its client's lock-out.
GOOD_KEY_SECONDS = 24 * 3600.0
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


def client_address(
    metadata: Iterable[tuple[str, str | bytes]], peer: str, *, trust_forwarded: bool
) -> str:
    """Who is calling: the gRPC peer, or the edge's forwarded address if trusted."""
    if trust_forwarded:
        values: dict[str, str] = {}
        for key, value in metadata:
            if key in ("x-envoy-external-address", "x-forwarded-for"):
                values[key] = value if isinstance(value, str) else value.decode("latin-1")
        external = values.get("x-envoy-external-address", "").strip()
        if external:
            return external[:MAX_ADDRESS_CHARS]
        forwarded = values.get("x-forwarded-for", "").rpartition(",")[2].strip()
        if forwarded:
            return forwarded[:MAX_ADDRESS_CHARS]
    return peer_address(peer)


def too_many_attempts(retry_after_seconds: float) -> PublicError:
    seconds = max(1, math.ceil(retry_after_seconds))
    return PublicError(
        429,
        "rate_limit_error",
        "rate_limit_exceeded",
        f"Too many failed authentication attempts. Retry after {seconds} seconds.",
    )


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
        good_key_seconds: float = GOOD_KEY_SECONDS,
        trust_forwarded: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        assert 1 <= key_threshold <= client_threshold
        assert max_tracked >= 1
        self.trust_forwarded = trust_forwarded
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
        # Keys that authenticated recently: exempt from a client's lock-out.
        self.good: OrderedDict[str, float] = OrderedDict()
        self.max_good = max_tracked
        self.good_key_seconds = good_key_seconds

    # -- the three calls the gateway makes ------------------------------------
    def check(self, client: str, api_key: str) -> None:
        """Raise the 429 when this key, or this client for a key not known good, is locked."""
        self.check_fingerprint(client, fingerprint(api_key))

    def failed(self, client: str, api_key: str) -> None:
        self.failed_fingerprint(client, fingerprint(api_key))

    def succeeded(self, client: str, api_key: str) -> None:
        """Remember the key as good; never resets any counter (client's or key's)."""
        self.succeeded_fingerprint(client, fingerprint(api_key))

    def check_fingerprint(self, client: str, key: str) -> None:
        now = self.clock()
        wait = locked_for(self.keys.get(key), now)
        if wait <= 0 and not self._recently_good(key, now):
            wait = locked_for(self.clients.get(client), now)
        if wait > 0:
            raise too_many_attempts(wait)

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

    def succeeded_fingerprint(self, client: str, key: str) -> None:
        del client
        self.good[key] = self.clock()
        self.good.move_to_end(key)
        while len(self.good) > self.max_good:
            self.good.popitem(last=False)

    # -- internals ------------------------------------------------------------
    def _recently_good(self, key: str, now: float) -> bool:
        seen = self.good.get(key)
        return seen is not None and now - seen <= self.good_key_seconds

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

    def billing_metadata(self) -> tuple[tuple[str, str], ...]:
        """What billing needs to count a failure of this attempt against the client."""
        printable = "".join(c for c in self.client if " " <= c <= "~")
        return ((CLIENT_HEADER, printable or "unknown"),)

    def failed(self, billing_metadata: Iterable[tuple[str, str | bytes]] = ()) -> float:
        """Count the failure here and cache billing's shared lock-outs (from its
        trailing metadata); the seconds to refuse this attempt for (0: a 401)."""
        verdict = Verdict.from_metadata(billing_metadata)
        if not verdict.refused:  # a refused attempt is not counted, as locally
            self.limiter.failed_fingerprint(self.client, self.key)
        return self.limiter.apply_shared(self.client, self.key, verdict)

    def succeeded(self) -> None:
        self.limiter.succeeded_fingerprint(self.client, self.key)


def begin(
    metadata: Iterable[tuple[str, str | bytes]] | None,
    peer: str,
    api_key: str,
    limiter: BadKeyLimiter | None = None,
) -> Attempt:
    """Check the limiter for this call (raises the 429) and return the attempt to report on."""
    limiter = limiter or default_limiter()
    client = client_address(metadata or (), peer, trust_forwarded=limiter.trust_forwarded)
    key = fingerprint(api_key)
    limiter.check_fingerprint(client, key)
    return Attempt(limiter, client, key)
