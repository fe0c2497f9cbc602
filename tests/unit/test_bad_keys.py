"""The bad-key limiter: window, cool-down, bounds, independence (pure, fake clock)."""

from __future__ import annotations

import grpc
import pytest

from services.gateway import bad_keys
from services.gateway.bad_keys import BadKeyLimiter
from services.gateway.errors import PublicError
from tests.support.clock import Clock

GOOD = "aip_live_" + "G" * 32


def limiter(clock: Clock, **overrides: float) -> BadKeyLimiter:
    settings: dict[str, float] = {
        "key_threshold": 3,
        "client_threshold": 6,
        "window_seconds": 60.0,
        "base_cooldown_seconds": 5.0,
        "max_cooldown_seconds": 20.0,
    }
    settings.update(overrides)
    return BadKeyLimiter(
        key_threshold=int(settings["key_threshold"]),
        client_threshold=int(settings["client_threshold"]),
        window_seconds=settings["window_seconds"],
        base_cooldown_seconds=settings["base_cooldown_seconds"],
        max_cooldown_seconds=settings["max_cooldown_seconds"],
        max_tracked=int(settings.get("max_tracked", 100)),
        clock=clock,
    )


def refused(lim: BadKeyLimiter, client: str, key: str) -> PublicError | None:
    try:
        lim.check(client, key)
    except PublicError as error:
        return error
    return None


def fail(lim: BadKeyLimiter, client: str, key: str, times: int) -> None:
    for _ in range(times):
        assert refused(lim, client, key) is None
        lim.failed(client, key)


def test_under_threshold_is_allowed_and_threshold_locks_with_429() -> None:
    clock = Clock()
    lim = limiter(clock)
    fail(lim, "1.1.1.1", "bad", 2)
    assert refused(lim, "1.1.1.1", "bad") is None
    lim.failed("1.1.1.1", "bad")
    error = refused(lim, "1.1.1.1", "bad")
    assert error is not None
    assert (error.status, error.type, error.code) == (
        429,
        "rate_limit_error",
        "rate_limit_exceeded",
    )
    assert "Retry after 5 seconds" in error.message
    assert error.retry_after_seconds == 5
    # The edge turns it into the client's retry-after header.
    assert ("x-aiport-retry-after", "5") in error.trailing_metadata()
    assert error.should_retry is None  # never x-should-retry: false
    assert "bad" not in error.message


def test_failures_outside_the_window_do_not_count() -> None:
    clock = Clock()
    lim = limiter(clock)
    for _ in range(10):
        fail(lim, "1.1.1.1", "bad", 1)
        clock.now += 31  # no three failures ever fall inside one 60 s window
    assert refused(lim, "1.1.1.1", "bad") is None


def test_cooldown_expires_then_doubles_up_to_the_cap() -> None:
    clock = Clock()
    lim = limiter(clock, client_threshold=1000)
    fail(lim, "c", "bad", 3)
    waits = []
    for _ in range(5):
        error = refused(lim, "c", "bad")
        assert error is not None
        waits.append(error.message)
        # Find the end of the cool-down to the second.
        seconds = int(error.message.split("Retry after ")[1].split()[0])
        clock.now += seconds - 0.5
        assert refused(lim, "c", "bad") is not None
        clock.now += 0.5
        assert refused(lim, "c", "bad") is None
        lim.failed("c", "bad")  # one more failure right after: locked again, longer
    assert [int(m.split("Retry after ")[1].split()[0]) for m in waits] == [5, 10, 20, 20, 20]


def test_a_quiet_window_forgives_past_lockouts() -> None:
    clock = Clock()
    lim = limiter(clock, client_threshold=1000)
    fail(lim, "c", "bad", 3)
    clock.now += 5
    fail(lim, "c", "bad", 1)  # locked again for 10 s
    clock.now += 10 + 61
    fail(lim, "c", "bad", 3)
    error = refused(lim, "c", "bad")
    assert error is not None and "Retry after 5 seconds" in error.message


def test_only_the_failing_key_is_refused_not_other_keys_from_the_same_client() -> None:
    clock = Clock()
    lim = limiter(clock)
    fail(lim, "shared-proxy", "bad", 3)
    assert refused(lim, "shared-proxy", "bad") is not None
    assert refused(lim, "shared-proxy", GOOD) is None
    assert refused(lim, "elsewhere", "bad") is not None  # the key itself is locked


def test_a_throttled_client_still_has_its_keys_verified_never_refused_outright() -> None:
    clock = Clock()
    lim = limiter(clock)
    for i in range(6):
        fail(lim, "attacker", f"bad{i}", 1)
    # The attacker cycling keys trips the looser per-client cap: its next keys are
    # throttled (a failure will be a 429), but none is refused before billing
    # verifies it, so a valid key from the same address still works.
    assert refused(lim, "attacker", "fresh-guess") is None
    assert lim.check("attacker", GOOD) == pytest.approx(5.0)
    # Another client is not throttled at all.
    assert lim.check("victim", "fresh-guess") == 0.0
    clock.now += 5
    assert lim.check("attacker", GOOD) == 0.0


def test_a_throttled_attempt_that_fails_is_a_429_and_is_not_counted_again() -> None:
    clock = Clock()
    lim = limiter(clock)
    for i in range(6):
        bad_keys.begin((), "ipv4:10.0.0.1:1", f"bad{i}", lim).failed()
    attempt = bad_keys.begin((), "ipv4:10.0.0.1:2", "another", lim)
    assert attempt.throttled_seconds == pytest.approx(5.0)
    # Billing is told not to count it.
    assert ("x-aiport-client-throttled", "1") in attempt.billing_metadata()
    assert attempt.failed() == pytest.approx(5.0)
    assert bad_keys.fingerprint("another") not in lim.keys.entries
    # An unthrottled attempt tells billing nothing of the kind.
    calm = bad_keys.begin((), "ipv4:10.0.0.2:2", "another", lim)
    assert calm.throttled_seconds == 0.0
    assert all(name != "x-aiport-client-throttled" for name, _ in calm.billing_metadata())
    assert calm.failed() == 0.0


def test_tracked_clients_and_keys_are_capped_lru() -> None:
    clock = Clock()
    lim = limiter(clock, max_tracked=50)
    for i in range(1000):
        lim.failed(f"10.0.{i // 256}.{i % 256}", f"key{i}")
    assert len(lim.clients.entries) == 50
    assert len(lim.keys.entries) == 50
    # The most recent survive; the oldest were evicted.
    assert "10.0.3.231" in lim.clients.entries
    assert "10.0.0.0" not in lim.clients.entries


def test_per_entry_memory_is_bounded_by_the_threshold() -> None:
    clock = Clock()
    lim = limiter(clock, client_threshold=1000)
    for _ in range(500):
        lim.failed("c", "bad")
    counter = lim.keys.entries[bad_keys.fingerprint("bad")]
    assert len(counter.failures) == 3


def test_no_key_is_held_only_fingerprints() -> None:
    clock = Clock()
    lim = limiter(clock)
    lim.failed("c", GOOD)
    assert GOOD not in lim.keys.entries
    attempt = bad_keys.begin((), "ipv4:127.0.0.1:5000", GOOD, lim)
    assert GOOD not in repr(attempt)


@pytest.mark.parametrize(
    ("peer", "host"),
    [
        ("ipv4:127.0.0.1:54321", "127.0.0.1"),
        ("ipv6:[::1]:54321", "::1"),
        ("unix:/tmp/sock", "unix:/tmp/sock"),
        ("", "unknown"),
    ],
)
def test_peer_address_drops_the_port(peer: str, host: str) -> None:
    assert bad_keys.peer_address(peer) == host


def test_the_client_is_the_address_the_edge_set_else_the_peer() -> None:
    peer = "ipv4:127.0.0.1:1"
    # x-forwarded-for is the client's to choose: never trusted here.
    forwarded = [("x-forwarded-for", "6.6.6.6"), ("x-envoy-external-address", "7.7.7.7")]
    assert bad_keys.client_address(forwarded, peer) == "127.0.0.1"
    edge = [*forwarded, ("x-aiport-client-address", "203.0.113.9")]
    assert bad_keys.client_address(edge, peer) == "203.0.113.9"
    assert bad_keys.client_address([("x-aiport-client-address", " ")], peer) == "127.0.0.1"
    long = [("x-aiport-client-address", "9" * 500)]
    assert len(bad_keys.client_address(long, peer)) == bad_keys.MAX_ADDRESS_CHARS


def test_begin_checks_and_reports_through_the_attempt() -> None:
    clock = Clock()
    lim = limiter(clock)
    edge = [("x-aiport-client-address", "9.9.9.9"), ("x-forwarded-for", "8.8.8.8")]
    for _ in range(3):
        bad_keys.begin(edge, "ipv4:10.0.0.1:9", "bad", lim).failed()
    with pytest.raises(PublicError) as raised:
        bad_keys.begin((), "ipv4:10.0.0.1:7", "bad", lim)
    assert raised.value.status == 429
    assert "9.9.9.9" in lim.clients.entries
    assert "8.8.8.8" not in lim.clients.entries
    assert "10.0.0.1" not in lim.clients.entries


def test_a_lockout_is_logged_without_the_key(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    lim = limiter(clock)
    with caplog.at_level("WARNING", logger="services.gateway.bad_keys"):
        fail(lim, "c", GOOD, 3)
    assert len(caplog.records) == 1
    record = caplog.records[0]
    fields = record.__dict__["fields"]
    assert fields["scope"] == "key" and fields["cooldown_seconds"] == 5.0
    assert fields["key_fingerprint"] == bad_keys.fingerprint(GOOD)
    assert GOOD not in caplog.text and GOOD not in repr(fields)


def _refusal(*trailing: tuple[str, str]) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(*trailing),
        "refused",
        None,
    )


def test_billing_refusing_the_gateways_own_token_is_a_503_and_no_strike() -> None:
    """A misconfigured service token must not look like (or count as) a bad API key:
    every customer would get 401s, then lock-outs that outlive the fix."""
    from services.common import service_auth
    from services.gateway.server import Backends

    lim = limiter(Clock())
    for i in range(20):
        attempt = bad_keys.begin((), "ipv4:10.0.0.9:1", f"good{i}", lim)
        error = Backends._refused(attempt, _refusal((service_auth.REFUSED_TRAILER, "1")))
        assert (error.status, error.code) == (503, "service_unavailable")
    assert not lim.keys.entries and not lim.clients.entries
    # A real bad key is still a 401, and counted.
    attempt = bad_keys.begin((), "ipv4:10.0.0.9:1", "bad", lim)
    assert Backends._refused(attempt, _refusal()).status == 401
    assert bad_keys.fingerprint("bad") in lim.keys.entries
