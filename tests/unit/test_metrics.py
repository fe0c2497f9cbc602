"""The gRPC metrics interceptor (codes, durations, streams, cancellation), the
upstream/failover/breaker series and the /metrics endpoint."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common import metrics, requestctx
from services.common.grpc_server import server_interceptors
from services.providers.adapters.http import (
    ObservedTransport,
    outcome_for_exception,
    outcome_for_status,
)
from tests.unit.grpc_harness import method, server_stream, serving, unary

COUNT = "aiport_grpc_server_requests_total"
SECONDS = "aiport_grpc_server_request_seconds_count"


def count(name: str, code: str) -> float:
    value = metrics.REGISTRY.get_sample_value(COUNT, {"method": method(name), "code": code})
    return value or 0.0


def observed(name: str) -> float:
    return metrics.REGISTRY.get_sample_value(SECONDS, {"method": method(name)}) or 0.0


async def ok(request: bytes, context: Any) -> bytes:
    return b"ok"


async def aborts(request: bytes, context: Any) -> bytes:
    await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    raise AssertionError("unreachable")


async def sets_code(request: bytes, context: Any) -> bytes:
    context.set_code(grpc.StatusCode.INVALID_ARGUMENT)
    return b""


async def crashes(request: bytes, context: Any) -> bytes:
    raise ValueError("a bug")


async def slow(request: bytes, context: Any) -> bytes:
    await asyncio.sleep(10)
    return b""


async def streams(request: bytes, context: Any) -> AsyncIterator[bytes]:
    for piece in (b"a", b"b", b"c"):
        await asyncio.sleep(0.01)
        yield piece


async def stream_aborts(request: bytes, context: Any) -> AsyncIterator[bytes]:
    yield b"a"
    await context.abort(grpc.StatusCode.UNAVAILABLE, "upstream down")


async def stream_stalls(request: bytes, context: Any) -> AsyncIterator[bytes]:
    yield b"a"
    await asyncio.sleep(10)


HANDLERS: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
    "ok": grpc.unary_unary_rpc_method_handler(ok),
    "aborts": grpc.unary_unary_rpc_method_handler(aborts),
    "sets_code": grpc.unary_unary_rpc_method_handler(sets_code),
    "crashes": grpc.unary_unary_rpc_method_handler(crashes),
    "slow": grpc.unary_unary_rpc_method_handler(slow),
    "streams": grpc.unary_stream_rpc_method_handler(streams),
    "stream_aborts": grpc.unary_stream_rpc_method_handler(stream_aborts),
    "stream_stalls": grpc.unary_stream_rpc_method_handler(stream_stalls),
}


async def eventually(check: Any, seconds: float = 3.0) -> None:
    """Server-side recording of a cancelled call happens after the client saw it."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "not recorded in time"
        await asyncio.sleep(0.02)


async def test_unary_calls_are_counted_by_final_code_and_timed() -> None:
    before = {
        (n, c): count(n, c)
        for n, c in [
            ("ok", "OK"),
            ("aborts", "NOT_FOUND"),
            ("sets_code", "INVALID_ARGUMENT"),
            ("crashes", "UNKNOWN"),
        ]
    }
    timed = observed("ok")
    async with serving(HANDLERS, server_interceptors()) as addr:
        async with grpc.aio.insecure_channel(addr) as chan:
            for name in ("ok", "ok", "aborts", "sets_code", "crashes"):
                try:
                    await unary(chan, name)(b"")
                except grpc.aio.AioRpcError:
                    pass
    assert count("ok", "OK") == before[("ok", "OK")] + 2
    assert count("aborts", "NOT_FOUND") == before[("aborts", "NOT_FOUND")] + 1
    assert count("sets_code", "INVALID_ARGUMENT") == before[("sets_code", "INVALID_ARGUMENT")] + 1
    assert count("crashes", "UNKNOWN") == before[("crashes", "UNKNOWN")] + 1
    assert observed("ok") == timed + 2


async def test_deadline_and_client_cancel_have_their_own_codes() -> None:
    deadline_before = count("slow", "DEADLINE_EXCEEDED")
    cancelled_before = count("slow", "CANCELLED")
    async with serving(HANDLERS, server_interceptors()) as addr:
        async with grpc.aio.insecure_channel(addr) as chan:
            with pytest.raises(grpc.aio.AioRpcError):
                await unary(chan, "slow")(b"", timeout=0.2)
            await eventually(lambda: count("slow", "DEADLINE_EXCEEDED") == deadline_before + 1)
            call = unary(chan, "slow")(b"")
            await asyncio.sleep(0.2)
            call.cancel()
            await eventually(lambda: count("slow", "CANCELLED") == cancelled_before + 1)


async def test_a_stream_is_timed_to_its_end_and_counted_by_how_it_ended() -> None:
    ok_before, seconds_before = count("streams", "OK"), observed("streams")
    sum_before = (
        metrics.REGISTRY.get_sample_value(
            "aiport_grpc_server_request_seconds_sum", {"method": method("streams")}
        )
        or 0.0
    )
    aborted_before = count("stream_aborts", "UNAVAILABLE")
    left_before = count("stream_stalls", "CANCELLED")
    async with serving(HANDLERS, server_interceptors()) as addr:
        async with grpc.aio.insecure_channel(addr) as chan:
            pieces = [p async for p in server_stream(chan, "streams")(b"")]
            assert pieces == [b"a", b"b", b"c"]
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                async for _ in server_stream(chan, "stream_aborts")(b""):
                    pass
            assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
            call = server_stream(chan, "stream_stalls")(b"")
            async for _ in call:
                break
            call.cancel()
            await eventually(lambda: count("stream_stalls", "CANCELLED") == left_before + 1)
    assert count("streams", "OK") == ok_before + 1
    assert observed("streams") == seconds_before + 1
    total = metrics.REGISTRY.get_sample_value(
        "aiport_grpc_server_request_seconds_sum", {"method": method("streams")}
    )
    assert total is not None and total - sum_before >= 0.03  # three 10 ms pauses
    assert count("stream_aborts", "UNAVAILABLE") == aborted_before + 1


async def test_generated_services_and_coroutine_streams_pass_through() -> None:
    """Health (registered-method handlers; Watch writes with context.write) works
    through the interceptors and Check is counted."""
    name = "/grpc.health.v1.Health/Check"
    before = metrics.REGISTRY.get_sample_value(COUNT, {"method": name, "code": "OK"}) or 0.0
    server = grpc.aio.server(interceptors=server_interceptors())
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
            stub = health_pb2_grpc.HealthStub(chan)
            reply = await stub.Check(health_pb2.HealthCheckRequest())
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            watch = stub.Watch(health_pb2.HealthCheckRequest())
            first = await watch.read()
            assert first.status == health_pb2.HealthCheckResponse.SERVING
            watch.cancel()
    finally:
        await server.stop(None)
    after = metrics.REGISTRY.get_sample_value(COUNT, {"method": name, "code": "OK"})
    assert after == before + 1


async def test_unknown_methods_are_not_recorded() -> None:
    async with serving(HANDLERS, server_interceptors()) as addr:
        async with grpc.aio.insecure_channel(addr) as chan:
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await unary(chan, "nope")(b"")
    assert failure.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert count("nope", "UNIMPLEMENTED") == 0


def test_failover_reason_names_what_went_wrong() -> None:
    assert metrics.failover_reason("timeout", "ok") == "timeout"
    assert metrics.failover_reason("failed", "server_error") == "server_error"
    assert metrics.failover_reason("failed", "rate_limited") == "rate_limited"
    assert metrics.failover_reason("failed", "ok") == "malformed"
    assert metrics.failover_reason("failed", None) == "failed"


async def test_failovers_take_the_last_upstream_outcome_of_this_task() -> None:
    def value(reason: str) -> float:
        labels = {"route": "p/m", "reason": reason}
        return metrics.REGISTRY.get_sample_value("aiport_failovers_total", labels) or 0.0

    before = value("rate_limited"), value("failed")

    async def attempt() -> None:
        metrics.forget_upstream_outcome()
        metrics.record_upstream("p", "rate_limited", 0.01)
        metrics.record_failover("p/m", "failed")
        metrics.forget_upstream_outcome()
        metrics.record_failover("p/m", "failed")

    await asyncio.create_task(attempt())
    assert (value("rate_limited"), value("failed")) == (before[0] + 1, before[1] + 1)
    upstream = metrics.REGISTRY.get_sample_value(
        "aiport_upstream_requests_total", {"provider": "p", "outcome": "rate_limited"}
    )
    assert upstream is not None and upstream >= 1


def test_breaker_states_are_read_when_scraped() -> None:
    states = [("a/m", "closed"), ("b/m", "open")]
    metrics.watch_breakers(lambda: states)
    read = metrics.REGISTRY.get_sample_value
    assert read("aiport_circuit_breaker_state", {"route": "a/m"}) == 0
    assert read("aiport_circuit_breaker_state", {"route": "b/m"}) == 2
    states[1] = ("b/m", "half-open")
    assert read("aiport_circuit_breaker_state", {"route": "b/m"}) == 1


def test_labelled_gauge_zeroes_label_sets_that_vanished() -> None:
    metrics.set_labelled(metrics.JOBS_ACTIVE, {("image", "pending"): 3, ("video", "pending"): 1})
    metrics.set_labelled(metrics.JOBS_ACTIVE, {("image", "processing"): 2})
    read = metrics.REGISTRY.get_sample_value
    assert read("aiport_jobs_active", {"modality": "image", "status": "pending"}) == 0
    assert read("aiport_jobs_active", {"modality": "video", "status": "pending"}) == 0
    assert read("aiport_jobs_active", {"modality": "image", "status": "processing"}) == 2


async def test_refresh_counts_failures_and_keeps_going() -> None:
    runs: list[int] = []

    async def step() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("database away")
        if len(runs) == 2:
            await asyncio.sleep(10)  # longer than the interval: cut off

    read = metrics.REGISTRY.get_sample_value
    before = read("aiport_metrics_refresh_failures_total", {"source": "test"}) or 0.0
    task = asyncio.create_task(metrics.refresh_forever("test", step, every_seconds=0.05))
    await eventually(lambda: len(runs) >= 3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert read("aiport_metrics_refresh_failures_total", {"source": "test"}) == before + 2


def test_refresh_interval_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIPORT_METRICS_REFRESH_SECONDS", raising=False)
    assert metrics.refresh_seconds() == 5.0
    monkeypatch.setenv("AIPORT_METRICS_REFRESH_SECONDS", "2")
    assert metrics.refresh_seconds() == 2.0
    monkeypatch.setenv("AIPORT_METRICS_REFRESH_SECONDS", "0")
    assert metrics.refresh_seconds() == metrics.REFRESH_SECONDS_MIN


def test_metrics_endpoint_serves_the_registry() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = metrics.serve_metrics(f"127.0.0.1:{port}")
    try:
        body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        server.close()
    assert "# TYPE aiport_grpc_server_requests_total counter" in body
    assert "aiport_circuit_breaker_state" in body
    assert "process_resident_memory_bytes" in body
    with pytest.raises(ValueError):
        metrics.parse_addr("9090")


class _Body(httpx.AsyncByteStream):
    """A streamed upstream body; `breaks` makes the connection drop after one piece."""

    def __init__(self, breaks: bool = False) -> None:
        self.breaks = breaks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b"data: {}\n\n"
        if self.breaks:
            raise httpx.RemoteProtocolError("peer closed connection")


def upstream_count(provider: str, outcome: str) -> float:
    labels = {"provider": provider, "outcome": outcome}
    return metrics.REGISTRY.get_sample_value("aiport_upstream_requests_total", labels) or 0.0


async def test_upstream_calls_carry_the_request_id_and_are_counted_by_outcome() -> None:
    seen: list[str | None] = []

    def upstream(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("X-Request-Id"))
        path = request.url.path
        if path == "/down":
            raise httpx.ConnectError("refused")
        if path == "/slow":
            raise httpx.ReadTimeout("slow")
        status = {"/busy": 429, "/bad": 400, "/boom": 503}.get(path, 200)
        return httpx.Response(status, stream=_Body(breaks=path == "/breaks"))

    provider = "unit-upstream"
    transport = ObservedTransport(httpx.MockTransport(upstream), provider)
    token = requestctx.bind("req-9")
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://up") as client:
            for path in ("/ok", "/busy", "/bad", "/boom", "/down", "/slow", "/breaks"):
                try:
                    await client.get(path, headers={"X-Request-Id": "job_stale"})
                except httpx.HTTPError:
                    pass
    finally:
        requestctx.unbind(token)
    assert seen == ["req-9"] * 7  # the current id wins over an adapter's own
    for outcome in (
        "ok",
        "rate_limited",
        "client_error",
        "server_error",
        "connect_error",
        "timeout",
        "connection_error",
    ):
        assert upstream_count(provider, outcome) == 1, outcome
    timed = metrics.REGISTRY.get_sample_value(
        "aiport_upstream_request_seconds_count", {"provider": provider}
    )
    assert timed == 7


def test_upstream_outcomes_follow_status_and_error() -> None:
    assert [outcome_for_status(s) for s in (200, 204, 400, 404, 429, 500, 503)] == [
        "ok",
        "ok",
        "client_error",
        "client_error",
        "rate_limited",
        "server_error",
        "server_error",
    ]
    assert outcome_for_exception(httpx.ConnectTimeout("x")) == "timeout"
    assert outcome_for_exception(httpx.ConnectError("x")) == "connect_error"
    assert outcome_for_exception(httpx.ReadError("x")) == "connection_error"
    assert outcome_for_exception(asyncio.CancelledError()) == "cancelled"
    assert outcome_for_exception(ValueError("x")) == "error"


async def test_access_log_writes_one_line_per_call_when_switched_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    interceptors = [requestctx.ServerInterceptor(), metrics.ServerInterceptor(access_log=True)]
    with caplog.at_level(logging.INFO, logger="services.common.metrics"):
        async with serving(HANDLERS, interceptors) as addr:
            async with grpc.aio.insecure_channel(addr) as chan:
                await unary(chan, "ok")(b"")
                with pytest.raises(grpc.aio.AioRpcError):
                    await unary(chan, "aborts")(b"")
            # The server logs a call after its answer has left: the client can be
            # done first (a race the server's shutdown would otherwise cut short).
            for _ in range(200):
                if sum(r.getMessage() == "rpc" for r in caplog.records) >= 2:
                    break
                await asyncio.sleep(0.01)
    lines = [r for r in caplog.records if r.getMessage() == "rpc"]
    fields = [r.__dict__["fields"] for r in lines]
    assert [(f["method"], f["code"]) for f in fields] == [
        (method("ok"), "OK"),
        (method("aborts"), "NOT_FOUND"),
    ]
    assert all(f["ms"] >= 0 for f in fields)


def test_access_log_is_off_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIPORT_GRPC_ACCESS_LOG", raising=False)
    assert not metrics.ServerInterceptor().access_log
    monkeypatch.setenv("AIPORT_GRPC_ACCESS_LOG", "1")
    assert metrics.ServerInterceptor().access_log
