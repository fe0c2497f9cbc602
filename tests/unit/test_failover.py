"""Circuit breakers and the route plan."""

from __future__ import annotations

import asyncio

import pytest

from services.common import metrics
from services.providers.errors import UpstreamError
from services.providers.failover import Breakers, Policy, route_key, should_fail_over
from services.providers.failover_driver import Failover
from services.providers.routes import Route
from tests.support.clock import Clock

A = Route("m", "primary", "m-a")
B = Route("m", "backup", "m-b")
C = Route("m", "third", "m-c")
D = Route("m", "fourth", "m-d")


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


# -- the plan as a lease: every reserved probe goes back --------------------------------------


def half_open(b: Breakers, clock: Clock, *routes: Route) -> None:
    """Open each of `routes` (threshold 1), then let the cooldown pass."""
    for route in routes:
        b.failure(route)
    clock.now += 30
    assert all(b.state(route) == "half-open" for route in routes)


def test_a_half_open_backup_behind_a_healthy_primary_stays_in_rotation() -> None:
    """The bug: the backup's probe was reserved by every plan behind a healthy
    primary and never given back, so once the primary failed nothing was left."""
    clock = Clock()
    b = breakers(clock, threshold=1)
    half_open(b, clock, B)
    with b.plan((A, B)) as lease:
        assert lease.routes == [A, B] and lease.probes == {B}
        lease.succeeded(A)
    # Later the primary fails: the backup is still there to probe.
    with b.plan((A, B)) as lease:
        assert lease.routes == [A, B]
        assert lease.failed(A, UpstreamError("failed", "503"))
        lease.succeeded(B)
    assert b.state(B) == "closed"


def test_an_answer_gives_the_other_probes_back_at_once() -> None:
    clock = Clock()
    b = breakers(clock, threshold=1)
    half_open(b, clock, B)
    with b.plan((A, B)) as lease:
        lease.succeeded(A)
        # Before this request ends (a long stream), another may probe the backup.
        assert b.plan((A, B)).probes == {B}


def test_output_reaching_the_client_gives_the_other_probes_back() -> None:
    clock = Clock()
    b = breakers(clock, threshold=1)
    half_open(b, clock, A, B)
    with b.plan((A, B)) as lease:
        lease.commit(A)  # the stream from A has started: B will not be tried
        assert lease.probes == {A}
        assert b.plan((A, B)).routes == [B]
        # A then fails mid-stream: it counts, but the request cannot move on.
        assert not lease.failed(A, UpstreamError("failed", "reset"))
    assert b.state(A) == "open"


def test_a_probe_ended_without_a_verdict_goes_back_uncounted() -> None:
    """Cancelled midway (the client went away, the job deadline passed)."""
    clock = Clock()
    b = breakers(clock, threshold=1)
    half_open(b, clock, A)
    try:
        with b.plan((A,)) as lease:
            assert lease.routes == [A]
            raise asyncio.CancelledError
    except asyncio.CancelledError:
        pass
    assert b.state(A) == "half-open"  # not a failure of the route
    assert b.plan((A,)).routes == [A]


def test_a_rejected_request_gives_the_probe_back_without_a_verdict() -> None:
    clock = Clock()
    b = breakers(clock, threshold=1)
    half_open(b, clock, A)
    with b.plan((A, B)) as lease:
        assert not lease.failed(A, UpstreamError("rejected", "bad request"))
        assert b.state(A) == "half-open"
        assert b.plan((A,)).routes == [A]  # free again before this request ends
        assert lease.final_error().kind == "rejected"


def test_a_stale_lease_never_frees_a_later_requests_probe() -> None:
    clock = Clock()
    b = breakers(clock, threshold=1)
    half_open(b, clock, A)
    stale = b.plan((A,))
    b.success(A)  # another request, planned while A was closed, got an answer
    b.failure(A)  # ...and later A opened again
    clock.now += 30
    with b.plan((A,)) as probing:
        assert probing.routes == [A]
        stale.close()
        assert b.plan((A,)).routes == []  # still probed by one request only


def test_the_final_error_of_a_lease() -> None:
    clock = Clock()
    b = breakers(clock, threshold=1)
    with b.plan((A, B)) as lease:
        lease.failed(A, UpstreamError("rate_limited", "429", 5))
        lease.failed(B, UpstreamError("rate_limited", "429", 2))
        error = lease.final_error()
    assert (error.kind, error.retry_after_seconds) == ("rate_limited", 2)
    clock.now += 10
    with b.plan((A, B)) as lease:  # both cooling down: nothing to try
        assert lease.routes == []
        error = lease.final_error()
    assert (error.kind, error.retry_after_seconds) == ("rate_limited", 20)


# -- the failover driver ----------------------------------------------------------------------


def failovers(route: Route) -> float:
    labels = {"route": route_key(route), "reason": "failed"}
    return metrics.REGISTRY.get_sample_value("aiport_failovers_total", labels) or 0.0


async def test_the_driver_moves_on_counts_and_gives_back_the_unused_probe() -> None:
    clock = Clock()
    b = breakers(clock, threshold=1)
    half_open(b, clock, C)
    tried: list[Route] = []

    async def call(route: Route) -> str:
        tried.append(route)
        if route == A:
            raise UpstreamError("failed", "503")
        return route.provider

    before = failovers(A)
    with Failover(b, (A, B, C), {"request_id": "r1"}) as failover:
        assert await failover.first_answer(call) == (B, "backup")
    assert tried == [A, B]
    assert failovers(A) == before + 1
    assert b.plan((C,)).routes == [C]  # planned third, never tried: given back


async def test_the_driver_stops_at_a_rejection() -> None:
    b = breakers(Clock())
    tried: list[Route] = []

    async def call(route: Route) -> str:
        tried.append(route)
        raise UpstreamError("rejected", "bad request")

    with pytest.raises(UpstreamError) as raised, Failover(b, (A, B), {}) as failover:
        await failover.first_answer(call)
    assert raised.value.kind == "rejected" and tried == [A]


async def test_a_cancelled_probe_through_the_driver_goes_back_uncounted() -> None:
    clock = Clock()
    b = breakers(clock, threshold=1)
    half_open(b, clock, A)
    started = asyncio.Event()

    async def call(route: Route) -> str:
        started.set()
        await asyncio.Event().wait()  # the upstream never answers
        raise AssertionError

    async def request() -> tuple[Route, str]:
        with Failover(b, (A,), {}) as failover:
            return await failover.first_answer(call)

    task = asyncio.create_task(request())
    await started.wait()
    assert b.plan((A,)).routes == []  # probing now
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert b.state(A) == "half-open"
    assert b.plan((A,)).routes == [A]
