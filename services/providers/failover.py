"""Which routes to try, in what order, and which to skip for a while. Pure.

Each route (provider + upstream model) has a circuit breaker: after
`failure_threshold` consecutive failures it opens and is skipped for
`cooldown_seconds`; then one request may probe it (half-open); a success
closes it, a failure opens it again. A request tries at most `max_attempts`
routes, so one request can never multiply upstream cost without bound.

State is per process: each replica learns about its own failures. That is
enough to stop hammering a dead upstream; it is not a shared rate limiter.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from services.common.settings import env_float, env_int
from services.providers.errors import FailureKind, UpstreamError
from services.providers.routes import Route

State = Literal["closed", "open", "half-open"]


@dataclass(frozen=True, slots=True)
class Policy:
    failure_threshold: int = 5
    cooldown_seconds: float = 30.0
    max_attempts: int = 3


def policy_from_env() -> Policy:
    return Policy(
        failure_threshold=max(1, env_int("AIPORT_BREAKER_FAILURES", 5)),
        cooldown_seconds=max(0.0, env_float("AIPORT_BREAKER_COOLDOWN_SECONDS", 30.0)),
        max_attempts=max(1, env_int("AIPORT_MAX_ROUTE_ATTEMPTS", 3)),
    )


@dataclass(slots=True)
class _Breaker:
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False
    last_kind: FailureKind = "failed"


def route_key(route: Route) -> str:
    return f"{route.provider}/{route.upstream_model}"


def should_fail_over(error: UpstreamError) -> bool:
    """Connection errors, timeouts, 429 and 5xx: another route may do better.
    A request the upstream rejected as malformed would be rejected anywhere."""
    return error.kind in ("failed", "timeout", "rate_limited")


def final_error(errors: list[UpstreamError], fallback: UpstreamError) -> UpstreamError:
    """What a request whose every route failed reports: rate limited only when
    every route tried answered 429 (waiting then helps), with the shortest wait
    any of them asked for; otherwise the last failure that was not a 429.
    `fallback` when no route was tried at all (all cooling down)."""
    if not errors:
        return fallback
    if all(error.kind == "rate_limited" for error in errors):
        waits = [e.retry_after_seconds for e in errors if e.retry_after_seconds is not None]
        return UpstreamError(
            "rate_limited",
            "every route for this model is rate limited",
            min(waits) if waits else None,
        )
    return next(e for e in reversed(errors) if e.kind != "rate_limited")


@dataclass
class Breakers:
    policy: Policy = field(default_factory=Policy)
    clock: Callable[[], float] = time.monotonic
    _state: dict[str, _Breaker] = field(default_factory=dict)

    def state(self, route: Route) -> State:
        breaker = self._state.get(route_key(route))
        if breaker is None or breaker.opened_at is None:
            return "closed"
        if self.clock() - breaker.opened_at >= self.policy.cooldown_seconds:
            return "half-open"
        return "open"

    def plan(self, routes: tuple[Route, ...]) -> list[Route]:
        """The routes to try for one request, in priority order: closed ones, and
        a half-open one only if no other request is probing it right now."""
        chosen: list[Route] = []
        for route in routes:
            if len(chosen) == self.policy.max_attempts:
                break
            state = self.state(route)
            if state == "closed":
                chosen.append(route)
            elif state == "half-open":
                breaker = self._state[route_key(route)]
                if not breaker.probing:
                    breaker.probing = True
                    chosen.append(route)
        return chosen

    def success(self, route: Route) -> None:
        self._state.pop(route_key(route), None)

    def failure(self, route: Route, kind: FailureKind = "failed") -> None:
        breaker = self._state.setdefault(route_key(route), _Breaker())
        breaker.failures += 1
        breaker.last_kind = kind
        if breaker.probing or breaker.failures >= self.policy.failure_threshold:
            breaker.opened_at = self.clock()
        breaker.probing = False

    def cooling_error(self, routes: Iterable[Route]) -> UpstreamError:
        """Why a request found no route to try: rate limited (with the wait until
        the first may be probed) when every route's breaker opened on 429s."""
        waits: list[float] = []
        for route in routes:
            breaker = self._state.get(route_key(route))
            if breaker is None or breaker.opened_at is None or breaker.last_kind != "rate_limited":
                return UpstreamError("failed", "every route for this model is cooling down")
            waits.append(breaker.opened_at + self.policy.cooldown_seconds - self.clock())
        if not waits:
            return UpstreamError("failed", "no route for this model")
        return UpstreamError(
            "rate_limited",
            "every route for this model is rate limited and cooling down",
            max(math.ceil(min(waits)), 1),
        )

    def states(self, routes: Iterable[Route]) -> list[tuple[str, State]]:
        """(route key, state) for each of `routes`: the metrics gauge reads this."""
        return [(route_key(route), self.state(route)) for route in routes]

    def release_probe(self, route: Route) -> None:
        """A probe that ended without a verdict (cancelled, rejected request)."""
        breaker = self._state.get(route_key(route))
        if breaker is not None:
            breaker.probing = False
