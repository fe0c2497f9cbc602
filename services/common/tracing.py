"""OpenTelemetry tracing, switched by AIPORT_TRACING.

    off (default)   nothing: no OTel object is created and no interceptor installed
    otlp            OTLP over HTTP to OTEL_EXPORTER_OTLP_ENDPOINT (the standard variables)
    console         spans printed to stdout
    file:PATH       one JSON object per span per line, appended to PATH

Spans: a server span per gRPC call (continuing the caller's W3C `traceparent`),
a client span per outgoing gRPC call (which sends `traceparent` on), and a span
around each upstream HTTP call. service.name is the process (AIPORT_SERVICE, as
set by logs.setup); OTEL_SERVICE_NAME overrides it. serve() flushes on shutdown.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from services.common import requestctx
from services.common.metrics import final_code, ok_code, wrap_handler

log = logging.getLogger(__name__)

# A trace file never grows past this; later spans are dropped (and counted in the log).
FILE_MAX_BYTES = 256 * 1024 * 1024
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"


@dataclass(frozen=True, slots=True)
class Mode:
    exporter: str  # "off" | "otlp" | "console" | "file"
    path: str = ""


def parse_mode(raw: str) -> Mode:
    """AIPORT_TRACING's value; ValueError for anything unknown (a typo must not
    silently turn tracing off)."""
    value = raw.strip()
    if value in ("", "off"):
        return Mode("off")
    if value in ("otlp", "console"):
        return Mode(value)
    if value.startswith("file:") and len(value) > len("file:"):
        return Mode("file", value[len("file:") :])
    raise ValueError(f"AIPORT_TRACING must be off, otlp, console or file:PATH, not {raw!r}")


_mode: Mode | None = None
_provider: TracerProvider | None = None
_tracer: Tracer | None = None
_lock = threading.Lock()


def mode() -> Mode:
    global _mode
    if _mode is None:
        _mode = parse_mode(os.environ.get("AIPORT_TRACING", "off"))
    return _mode


def enabled() -> bool:
    return mode().exporter != "off"


def service_name() -> str:
    return (
        os.environ.get("OTEL_SERVICE_NAME", "").strip()
        or os.environ.get("AIPORT_SERVICE", "").strip()
        or "aiport"
    )


def _exporter(chosen: Mode) -> SpanExporter:
    if chosen.exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if chosen.exporter == "console":
        return ConsoleSpanExporter()
    return JsonLinesSpanExporter(Path(chosen.path))


def configure(exporter: SpanExporter, *, service: str | None = None, batch: bool = True) -> None:
    """Trace into `exporter` from now on (tests pass an in-memory one)."""
    global _provider, _tracer, _mode
    provider = TracerProvider(resource=Resource.create({"service.name": service or service_name()}))
    processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    _provider, _tracer = provider, provider.get_tracer("aiport")
    if _mode is None or _mode.exporter == "off":
        _mode = Mode("custom")


def tracer() -> Tracer:
    """The process's tracer, set up on first use (only ever called when enabled)."""
    if _tracer is None:
        with _lock:
            if _tracer is None:
                configure(_exporter(mode()))
    assert _tracer is not None
    return _tracer


def shutdown() -> None:
    """Flush and stop: spans still buffered are exported now."""
    global _provider, _tracer
    if _provider is not None:
        _provider.shutdown()
    _provider, _tracer = None, None


def reset() -> None:
    """Forget the mode and provider (tests switch tracing on and off)."""
    global _mode
    shutdown()
    _mode = None


# -- propagation ------------------------------------------------------------------------------


_PROPAGATOR = TraceContextTextMapPropagator()


def _extract(metadata: Sequence[tuple[str, str | bytes]] | None) -> Any:
    carrier = {
        key: value if isinstance(value, str) else value.decode("latin-1")
        for key, value in metadata or ()
        if key in (TRACEPARENT, TRACESTATE)
    }
    return _PROPAGATOR.extract(carrier)


# -- gRPC server --------------------------------------------------------------------------------


def _server_span(method: str, context: Any) -> Any:
    service, _, name = method.lstrip("/").partition("/")
    attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}
    request_id = requestctx.current()
    if request_id:
        attributes["aiport.request_id"] = request_id
    return tracer().start_as_current_span(
        method.lstrip("/"),
        context=_extract(context.invocation_metadata()),
        kind=SpanKind.SERVER,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    )


def _finish(span: Span, code: str) -> None:
    span.set_attribute("rpc.grpc.status_code", getattr(grpc.StatusCode, code).value[0])
    if code != "OK":
        span.set_status(Status(StatusCode.ERROR, code))


def _traced_unary(method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
    async def traced(request: Any, context: Any) -> Any:
        with _server_span(method, context) as span:
            try:
                response = await behavior(request, context)
            except BaseException as exc:
                _finish(span, final_code(exc, context))
                raise
            _finish(span, ok_code(context))
            return response

    return traced


def _traced_stream(method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
    async def traced(request: Any, context: Any) -> AsyncIterator[Any]:
        with _server_span(method, context) as span:
            try:
                async for response in behavior(request, context):
                    yield response
            except BaseException as exc:
                _finish(span, final_code(exc, context))
                raise
            _finish(span, ok_code(context))

    return traced


# Probes and the edge ask every few seconds: spans of those would drown the rest.
UNTRACED_PREFIX = "/grpc.health.v1.Health/"


class ServerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """A server span per call (health checks excepted), child of the caller's span
    when it sent one."""

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method.startswith(UNTRACED_PREFIX):
            return handler
        return wrap_handler(
            handler,
            lambda b: _traced_unary(method, b),
            lambda b: _traced_stream(method, b),
        )


# -- gRPC client --------------------------------------------------------------------------------


def _client_span(details: grpc.aio.ClientCallDetails) -> tuple[Span, grpc.aio.ClientCallDetails]:
    method = details.method if isinstance(details.method, str) else details.method.decode()
    service, _, name = method.lstrip("/").partition("/")
    span = tracer().start_span(
        method.lstrip("/"),
        kind=SpanKind.CLIENT,
        attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
    )
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=set_span_in_context(span))
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    for key, value in carrier.items():
        metadata.add(key, value)
    return span, grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


_pending_ends: set[asyncio.Task[None]] = set()


def _end_when_done(span: Span, call: Any) -> None:
    async def end() -> None:
        try:
            code = await call.code()
            _finish(span, code.name)
        finally:
            span.end()

    def done(_: object) -> None:
        task = asyncio.ensure_future(end())
        _pending_ends.add(task)
        task.add_done_callback(_pending_ends.discard)

    call.add_done_callback(done)


class UnaryUnaryClientInterceptor(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        span, details = _client_span(client_call_details)
        try:
            call = await continuation(details, request)
        except BaseException:
            span.end()
            raise
        _end_when_done(span, call)
        return call


class UnaryStreamClientInterceptor(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[type-arg]
    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        span, details = _client_span(client_call_details)
        try:
            call = await continuation(details, request)
        except BaseException:
            span.end()
            raise
        _end_when_done(span, call)
        return call


def server_interceptors() -> list[grpc.aio.ServerInterceptor[Any, Any]]:
    return [ServerInterceptor()] if enabled() else []


def client_interceptors() -> list[Any]:
    if not enabled():
        return []
    return [UnaryUnaryClientInterceptor(), UnaryStreamClientInterceptor()]


# -- upstream HTTP ------------------------------------------------------------------------------


def start_upstream_span(provider: str, method: str, url: str) -> Span:
    """A client span for one upstream HTTP call; the caller ends it. Only call
    when enabled(). The URL is recorded without its query (it may carry a key)."""
    attributes = {
        "http.request.method": method,
        "url.full": url.split("?", 1)[0],
        "aiport.provider": provider,
    }
    request_id = requestctx.current()
    if request_id:
        attributes["aiport.request_id"] = request_id
    return tracer().start_span(f"{method} {provider}", kind=SpanKind.CLIENT, attributes=attributes)


def end_upstream_span(span: Span, outcome: str, status: int | None) -> None:
    span.set_attribute("aiport.outcome", outcome)
    if status is not None:
        span.set_attribute("http.response.status_code", status)
    if outcome != "ok":
        span.set_status(Status(StatusCode.ERROR, outcome))
    span.end()


# -- file exporter ------------------------------------------------------------------------------


def span_json(span: ReadableSpan) -> dict[str, Any]:
    context = span.context
    parent = span.parent
    return {
        "trace_id": f"{context.trace_id:032x}" if context else "",
        "span_id": f"{context.span_id:016x}" if context else "",
        "parent_span_id": f"{parent.span_id:016x}" if parent else None,
        "name": span.name,
        "kind": span.kind.name,
        "service": span.resource.attributes.get("service.name"),
        "start_unix_nano": span.start_time,
        "end_unix_nano": span.end_time,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
    }


class JsonLinesSpanExporter(SpanExporter):
    """file:PATH — one JSON object per span per line, appended; capped at FILE_MAX_BYTES."""

    def __init__(self, path: Path, max_bytes: int = FILE_MAX_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.dropped = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", encoding="utf-8")

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._file.closed:
            return SpanExportResult.FAILURE
        lines = "".join(json.dumps(span_json(s), default=str) + "\n" for s in spans)
        if self._file.tell() + len(lines) > self.max_bytes:
            self.dropped += len(spans)
            return SpanExportResult.FAILURE
        self._file.write(lines)
        self._file.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        if not self._file.closed:
            self._file.close()
        if self.dropped:
            log.warning("trace file full; spans dropped", extra={"fields": {"n": self.dropped}})

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        if not self._file.closed:
            self._file.flush()
        return True
