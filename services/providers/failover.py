"""Which routes to try, in what order, and which to skip for a while. Pure.

Each route (provider + upstream model) has a circuit breaker: after
`failure_threshold` consecutive failures it opens and is skipped for
`cooldown_seconds`; then one request may probe it (half-open); a success
closes it, a failure opens it again. A request tries at most `max_attempts`
routes, so one request can never multiply upstream cost without bound.

A request's plan is a `RouteLease`: it reserves the probes of the half-open
routes it lists, hears each tried route's verdict, and gives back on close
every probe that got none (a route planned but never tried, a try that was
cancelled or rejected as the client's fault). A probe that nobody gives back
would keep its route out of rotation until the process restarts.

State is per process: each replica learns about its own failures. That is
enough to stop hammering a dead upstream; it is not a shared rate limiter.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
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
    # The lease whose request holds this route's one probe, if any: only it may
    # give the probe back (a stale lease never frees a later request's probe).
    prober: RouteLease | None = None
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

    def plan(self, routes: tuple[Route, ...]) -> RouteLease:
        """The routes to try for one request, in priority order: closed ones, and
        a half-open one only if no other request is probing it right now (its
        probe is then reserved for this request). Close the lease when done."""
        lease = RouteLease(self, routes)
        for route in routes:
            if len(lease.routes) == self.policy.max_attempts:
                break
            state = self.state(route)
            if state == "closed":
                lease.routes.append(route)
            elif state == "half-open":
                breaker = self._state[route_key(route)]
                if breaker.prober is None:
                    breaker.prober = lease
                    lease.routes.append(route)
                    lease.probes.add(route)
        return lease

    def success(self, route: Route) -> None:
        self._state.pop(route_key(route), None)

    def failure(self, route: Route, kind: FailureKind = "failed") -> None:
        breaker = self._state.setdefault(route_key(route), _Breaker())
        breaker.failures += 1
        breaker.last_kind = kind
        if breaker.prober is not None or breaker.failures >= self.policy.failure_threshold:
            breaker.opened_at = self.clock()
        breaker.prober = None

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

    def give_back_probe(self, route: Route, lease: RouteLease) -> None:
        """A probe that ended without a verdict: the next request may take it."""
        breaker = self._state.get(route_key(route))
        if breaker is not None and breaker.prober is lease:
            breaker.prober = None


class RouteLease:
    """One request's plan: the routes it may try, in order (`routes`), and the
    half-open probes it reserved among them (`probes`). A context manager: on exit
    every reserved probe that got no verdict goes back, whatever ended the request
    (an answer, an error, a cancellation). The request reports each route it tried:
    `succeeded`, or `failed` (which says whether another route may do better), and
    `commit` once it can no longer move on (output reached the client)."""

    def __init__(self, breakers: Breakers, candidates: tuple[Route, ...]) -> None:
        self.routes: list[Route] = []
        self.probes: set[Route] = set()
        self._breakers = breakers
        self._candidates = candidates
        self._failures: list[UpstreamError] = []
        self._committed = False

    def __enter__(self) -> RouteLease:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def succeeded(self, route: Route) -> None:
        """`route` answered: its breaker closes, and no other route will be tried."""
        self._breakers.success(route)
        self.probes.discard(route)
        self.commit(route)

    def failed(self, route: Route, error: UpstreamError) -> bool:
        """`route` failed with `error`; True when the request may move on to the
        next route (a failure another route might not have, and no output yet).
        Only such failures count against the route: a request the upstream
        rejected as malformed says nothing about the route's health."""
        self._failures.append(error)
        if not should_fail_over(error):
            self._give_back(route)
            return False
        self._breakers.failure(route, error.kind)
        self.probes.discard(route)
        return not self._committed

    def commit(self, route: Route) -> None:
        """The request stays with `route` from now on: give back the other probes
        now rather than when the request ends (a long stream would hold them)."""
        self._committed = True
        for other in [r for r in self.probes if r != route]:
            self._give_back(other)

    def final_error(self) -> UpstreamError:
        """What the request reports when no route answered (see `final_error`);
        why nothing was tried when the plan was empty (see `cooling_error`)."""
        if self._failures:
            return final_error(self._failures, self._failures[-1])
        return self._breakers.cooling_error(self._candidates)

    def close(self) -> None:
        for route in list(self.probes):
            self._give_back(route)

    def _give_back(self, route: Route) -> None:
        if route in self.probes:
            self.probes.discard(route)
            self._breakers.give_back_probe(route, self)
