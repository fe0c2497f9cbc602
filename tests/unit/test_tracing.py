"""Tracing: off means no OTel at all; on, one trace spans every gRPC hop (W3C
traceparent), upstream HTTP calls get spans, and file:PATH writes JSON lines."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.common import requestctx, tracing
from services.common.grpc_server import channel, client_interceptors, server_interceptors
from services.providers.adapters.http import ObservedTransport
from tests.unit.grpc_harness import method, serving, unary


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.reset()
    tracing.configure(exporter, service="unit", batch=False)
    try:
        yield exporter
    finally:
        tracing.reset()


def test_modes_parse_and_typos_are_refused() -> None:
    assert tracing.parse_mode("") == tracing.Mode("off")
    assert tracing.parse_mode("off") == tracing.Mode("off")
    assert tracing.parse_mode("otlp") == tracing.Mode("otlp")
    assert tracing.parse_mode(" console ") == tracing.Mode("console")
    assert tracing.parse_mode("file:/tmp/s.jsonl") == tracing.Mode("file", "/tmp/s.jsonl")
    for bad in ("on", "file:", "jaeger", "OTLP"):
        with pytest.raises(ValueError):
            tracing.parse_mode(bad)


def test_off_installs_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIPORT_TRACING", "off")
    tracing.reset()
    try:
        assert not tracing.enabled()
        assert client_interceptors() == []
        assert not any(isinstance(i, tracing.ServerInterceptor) for i in server_interceptors())
        assert tracing._tracer is None and tracing._provider is None
    finally:
        tracing.reset()


def test_service_name_comes_from_the_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIPORT_SERVICE", "billing")
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    assert tracing.service_name() == "billing"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "billing-eu")
    assert tracing.service_name() == "billing-eu"


async def test_one_trace_spans_every_grpc_hop(spans: InMemorySpanExporter) -> None:
    async def back(request: bytes, context: Any) -> bytes:
        if request == b"fail":
            await context.abort(grpc.StatusCode.NOT_FOUND, "no")
        return b"ok"

    back_handlers = {"back": grpc.unary_unary_rpc_method_handler(back)}
    async with serving(back_handlers, server_interceptors()) as back_addr:
        back_channel = channel(back_addr)

        async def front(request: bytes, context: Any) -> bytes:
            try:
                reply: bytes = await unary(back_channel, "back")(request)
            except grpc.aio.AioRpcError as exc:
                await context.abort(exc.code(), "back failed")
            return reply

        front_handlers = {"front": grpc.unary_unary_rpc_method_handler(front)}
        try:
            async with serving(front_handlers, server_interceptors()) as front_addr:
                async with grpc.aio.insecure_channel(front_addr) as chan:
                    metadata = (("x-request-id", "trace-me"),)
                    assert await unary(chan, "front")(b"hi", metadata=metadata) == b"ok"
                    with pytest.raises(grpc.aio.AioRpcError):
                        await unary(chan, "front")(b"fail")
        finally:
            await back_channel.close(None)
    tracing.shutdown()  # flushes; client spans end from a done callback

    finished = spans.get_finished_spans()
    by_trace: dict[int, list[Any]] = {}
    for span in finished:
        by_trace.setdefault(span.context.trace_id, []).append(span)
    assert len(by_trace) == 2, [s.name for s in finished]
    ok_trace = next(t for t in by_trace.values() if all(s.status.is_ok for s in t))
    names = {(s.name, s.kind.name): s for s in ok_trace}
    front_server = names[(method("front").lstrip("/"), "SERVER")]
    back_client = names[(method("back").lstrip("/"), "CLIENT")]
    back_server = names[(method("back").lstrip("/"), "SERVER")]
    assert front_server.parent is None
    assert back_client.parent is not None
    assert back_client.parent.span_id == front_server.context.span_id
    assert back_server.parent is not None
    assert back_server.parent.span_id == back_client.context.span_id
    assert front_server.attributes is not None
    assert front_server.attributes["aiport.request_id"] == "trace-me"
    assert back_server.attributes is not None
    assert back_server.attributes["aiport.request_id"] == "trace-me"
    assert front_server.resource.attributes["service.name"] == "unit"
    failed = next(t for t in by_trace.values() if t is not ok_trace)
    assert {s.kind.name for s in failed} == {"SERVER", "CLIENT"}
    assert all(not s.status.is_ok for s in failed)


async def test_upstream_calls_get_a_span_with_their_outcome(
    spans: InMemorySpanExporter,
) -> None:
    def upstream(request: httpx.Request) -> httpx.Response:
        status = 429 if request.url.path == "/busy" else 200
        return httpx.Response(status, stream=_Body(b"{}"))

    transport = ObservedTransport(httpx.MockTransport(upstream), "prov")
    token = requestctx.bind("req-up")
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://up") as client:
            assert (await client.get("/ok", params={"key": "secret"})).status_code == 200
            assert (await client.get("/busy")).status_code == 429
    finally:
        requestctx.unbind(token)
    finished = spans.get_finished_spans()
    assert [s.attributes["aiport.outcome"] for s in finished if s.attributes] == [
        "ok",
        "rate_limited",
    ]
    first = finished[0].attributes
    assert first is not None
    assert first["url.full"] == "http://up/ok"  # no query: it may carry a key
    assert first["aiport.request_id"] == "req-up"
    assert first["http.response.status_code"] == 200


def test_file_exporter_writes_one_json_span_per_line(tmp_path: Path) -> None:
    path = tmp_path / "spans" / "unit.jsonl"
    exporter = tracing.JsonLinesSpanExporter(path)
    tracing.reset()
    tracing.configure(exporter, service="filed", batch=True)
    try:
        tracer = tracing.tracer()
        with tracer.start_as_current_span("outer"):
            with tracer.start_as_current_span("inner"):
                pass
    finally:
        tracing.reset()  # shutdown flushes the batch
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["name"] for line in lines] == ["inner", "outer"]
    inner, outer = lines
    assert inner["trace_id"] == outer["trace_id"] and len(inner["trace_id"]) == 32
    assert inner["parent_span_id"] == outer["span_id"]
    assert outer["parent_span_id"] is None and outer["service"] == "filed"


def test_file_exporter_stops_at_its_size_cap(tmp_path: Path) -> None:
    path = tmp_path / "capped.jsonl"
    exporter = tracing.JsonLinesSpanExporter(path, max_bytes=600)
    tracing.reset()
    tracing.configure(exporter, service="capped", batch=False)
    try:
        tracer = tracing.tracer()
        for i in range(20):
            with tracer.start_as_current_span(f"span-{i}"):
                pass
    finally:
        tracing.reset()
    assert 0 < path.stat().st_size <= 600
    assert exporter.dropped > 0


class _Body(httpx.AsyncByteStream):
    """A body that arrives as a stream (as from a real transport)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def __aiter__(self) -> Any:
        yield self.data
