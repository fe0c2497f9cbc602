"""Circuit breakers and the route plan."""

from __future__ import annotations

from services.providers.errors import UpstreamError
from services.providers.failover import Breakers, Policy, should_fail_over
from services.providers.routes import Route

A = Route("m", "primary", "m-a")
B = Route("m", "backup", "m-b")
C = Route("m", "third", "m-c")
D = Route("m", "fourth", "m-d")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breakers(clock: Clock, threshold: int = 3) -> Breakers:
    return Breakers(Policy(failure_threshold=threshold, cooldown_seconds=30), clock)


def test_plan_keeps_priority_and_caps_attempts() -> None:
    b = Breakers(Policy(max_attempts=3))
    assert b.plan((A, B, C, D)).routes == [A, B, C]


def test_route_opens_after_consecutive_failures_only() -> None:
    clock = Clock()
    b = breakers(clock)
    b.failure(A)
    b.failure(A)
    b.success(A)  # a success resets the count
    b.failure(A)
    b.failure(A)
    assert b.state(A) == "closed"
    b.failure(A)
    assert b.state(A) == "open"
    assert b.plan((A, B)).routes == [B]


def test_half_open_allows_one_probe_then_closes_or_reopens() -> None:
    clock = Clock()
    b = breakers(clock, threshold=1)
    b.failure(A)
    assert b.plan((A, B)).routes == [B]
    clock.now += 30
    assert b.state(A) == "half-open"
    assert b.plan((A, B)).routes == [A, B]
    # While one request probes, others do not pile onto the sick route.
    assert b.plan((A, B)).routes == [B]
    b.failure(A)  # the probe failed: open again for a full cooldown
    assert b.state(A) == "open"
    clock.now += 29
    assert b.plan((A, B)).routes == [B]
    clock.now += 1
    assert b.plan((A, B)).routes == [A, B]
    b.success(A)
    assert b.state(A) == "closed"
    assert b.plan((A, B)).routes == [A, B]


def test_a_failing_probe_reopens_even_below_the_threshold() -> None:
    clock = Clock()
    b = breakers(clock, threshold=5)
    for _ in range(5):
        b.failure(A)
    clock.now += 30
    assert b.plan((A,)).routes == [A]
    b.failure(A)
    assert b.state(A) == "open"


def test_released_probe_can_be_taken_again() -> None:
    clock = Clock()
    b = breakers(clock, threshold=1)
    b.failure(A)
    clock.now += 30
    with b.plan((A,)) as lease:
        assert lease.routes == [A]
    assert b.plan((A,)).routes == [A]


def test_all_routes_open_means_no_attempt() -> None:
    clock = Clock()
    b = breakers(clock, threshold=1)
    b.failure(A)
    b.failure(B)
    assert b.plan((A, B)).routes == []


def test_which_errors_fail_over() -> None:
    assert should_fail_over(UpstreamError("failed", "503"))
    assert should_fail_over(UpstreamError("timeout", "slow"))
    assert not should_fail_over(UpstreamError("rejected", "bad request"))


def test_routes_cooling_down_after_429s_still_say_rate_limited() -> None:
    clock = Clock()
    b = breakers(clock, threshold=1)
    limited = UpstreamError("rate_limited", "429", 2)
    b.failure(A, limited.kind)
    b.failure(B, limited.kind)
    assert b.plan((A, B)).routes == []
    clock.now += 10
    cooling = b.cooling_error((A, B))
    assert cooling.kind == "rate_limited"
    assert cooling.retry_after_seconds == 20  # until the first route may be probed
    # One route down for another reason: a plain failure.
    b.failure(C, "failed")
    assert b.cooling_error((A, C)).kind == "failed"
