"""Prometheus metrics: one registry per process, served on AIPORT_METRICS_ADDR.

Every series aiport defines (Envoy's own stats come from the edge's "metrics"
listener, /stats/prometheus):

| series (type) | labels | served by | meaning |
|---|---|---|---|
| aiport_grpc_server_requests_total (counter) | method, code | gRPC servers | by final status [1] |
| aiport_grpc_server_request_seconds (histogram) | method | gRPC servers | until final status [2] |
| aiport_upstream_requests_total (counter) | provider, outcome | providers, workers | [3] |
| aiport_upstream_request_seconds (histogram) | provider | providers, workers | [4] |
| aiport_failovers_total (counter) | route, reason | providers, workers | [5] |
| aiport_circuit_breaker_state (gauge) | route | providers, workers | 0 closed 1 half-open 2 open |
| aiport_billing_open_holds (gauge) | - | billing | holds not yet settled or expired |
| aiport_billing_open_holds_micros (gauge) | - | billing | what they reserve, in µIDR |
| aiport_jobs_active (gauge) | modality, status | jobs | jobs pending or processing |
| aiport_jobs_finished_total (counter) | modality, status | jobs | jobs this process finished |
| aiport_queue_messages_ready (gauge) | queue | jobs | messages waiting per work/outcome queue |
| aiport_metrics_refresh_failures_total (counter) | source | billing, jobs | refreshes failed |
| aiport_http_requests_total (counter) | route, status | files | HTTP answers by route |

[1] The code abort() or set_code() chose; UNKNOWN for an unexpected exception;
    CANCELLED when the client went away; DEADLINE_EXCEEDED when its deadline passed.
[2] A server stream is timed until it ended.
[3] Upstream HTTP calls by outcome: ok, rate_limited (429), client_error (other
    4xx), server_error (5xx), timeout, connect_error, connection_error (broke
    after connecting, mid-stream too), cancelled, error.
[4] Until the body was read and closed, or the call failed.
[5] A route failed and the next route was tried. reason: the failed call's
    outcome, "malformed" (answered but unparseable) or "timeout".

Gauges read from PostgreSQL or RabbitMQ are refreshed every
AIPORT_METRICS_REFRESH_SECONDS (default 5) by one bounded query each; the
breaker gauge is read from memory when scraped.

The gRPC interceptor is on every call, so it is built to be cheap: the wrapped
handler and the label children are made once per method and reused. With
AIPORT_GRPC_ACCESS_LOG=1 it also writes one "rpc" log line per finished call
(method, code, ms; off by default: a JSON line costs more than the metrics).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import grpc
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from services.common.settings import env, env_float

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)
for _collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    REGISTRY.register(_collector)

RPC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
UPSTREAM_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

GRPC_REQUESTS = Counter(
    "aiport_grpc_server_requests",
    "gRPC calls served, by method and final status code.",
    ("method", "code"),
    registry=REGISTRY,
)
GRPC_SECONDS = Histogram(
    "aiport_grpc_server_request_seconds",
    "gRPC call duration until its final status (streams: until the stream ended).",
    ("method",),
    buckets=RPC_BUCKETS,
    registry=REGISTRY,
)
UPSTREAM_REQUESTS = Counter(
    "aiport_upstream_requests",
    "Upstream HTTP calls by provider and outcome.",
    ("provider", "outcome"),
    registry=REGISTRY,
)
UPSTREAM_SECONDS = Histogram(
    "aiport_upstream_request_seconds",
    "Upstream HTTP call duration until the body was read or the call failed.",
    ("provider",),
    buckets=UPSTREAM_BUCKETS,
    registry=REGISTRY,
)
FAILOVERS = Counter(
    "aiport_failovers",
    "A route failed and the request moved on to the next route.",
    ("route", "reason"),
    registry=REGISTRY,
)
OPEN_HOLDS = Gauge(
    "aiport_billing_open_holds", "Holds not yet settled or expired.", registry=REGISTRY
)
OPEN_HOLDS_MICROS = Gauge(
    "aiport_billing_open_holds_micros",
    "Money reserved by open holds, in micro-IDR.",
    registry=REGISTRY,
)
CAPTURES_EXCEEDING_HOLD = Counter(
    "aiport_billing_captures_exceeding_hold",
    "Captures billing refused because they asked for more than their hold reserved"
    " (a pricing bug: alert on any).",
    registry=REGISTRY,
)
REVERSALS = Counter(
    "aiport_billing_reversals",
    "Top-ups given back to their payment rail (reason: refund or chargeback).",
    ("reason",),
    registry=REGISTRY,
)
DEBTS_RECORDED = Counter(
    "aiport_billing_debts_recorded",
    "Reversals of money the customer had already spent: the rest is recorded as"
    " debt and the account is suspended until a top-up repays it.",
    ("reason",),
    registry=REGISTRY,
)
DEBT_RECORDED_MICROS = Counter(
    "aiport_billing_debt_recorded_micros",
    "Debt recorded by reversals, in micro-IDR.",
    registry=REGISTRY,
)
JOBS_ACTIVE = Gauge(
    "aiport_jobs_active",
    "Jobs pending or processing, by modality and status.",
    ("modality", "status"),
    registry=REGISTRY,
)
JOBS_FINISHED = Counter(
    "aiport_jobs_finished",
    "Jobs this process moved to a terminal status.",
    ("modality", "status"),
    registry=REGISTRY,
)
JOB_FAILURES = Counter(
    "aiport_job_failures",
    "Jobs a worker failed, by modality and cause: invalid_input and content_policy are "
    "the client's (no alert), provider_error and timeout are ours or the provider's.",
    ("modality", "code"),
    registry=REGISTRY,
)
JOB_LEASE_DEFERRALS = Counter(
    "aiport_job_lease_deferrals",
    "Deliveries of a job another worker was running (its lease live): put off, not run.",
    ("modality",),
    registry=REGISTRY,
)
JOB_SETTLEMENT_REFUSALS = Counter(
    "aiport_job_settlement_refusals",
    "Captures or releases of a finished job's hold that billing refused: retried later, "
    "or abandoned (nothing charged) after several refusals. Any is worth a look.",
    ("operation", "outcome"),
    registry=REGISTRY,
)
QUEUE_READY = Gauge(
    "aiport_queue_messages_ready",
    "Messages ready for delivery in a queue.",
    ("queue",),
    registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    "aiport_http_requests",
    "HTTP requests answered, by route (never the path: it carries tokens) and status.",
    ("route", "status"),
    registry=REGISTRY,
)
PAYMENT_NOTIFICATIONS = Counter(
    "aiport_payment_notifications",
    "Payment gateways' notifications, by gateway and what became of them.",
    ("gateway", "outcome"),
    registry=REGISTRY,
)
PAYMENT_MONEY = Counter(
    "aiport_payment_money",
    "Credits and reversals billing confirmed for payment orders.",
    ("gateway", "movement"),
    registry=REGISTRY,
)
PAYMENT_FLAGS = Counter(
    "aiport_payment_orders_flagged",
    "Payment orders flagged for an operator, by reason.",
    ("gateway", "flag"),
    registry=REGISTRY,
)
RATE_LIMIT_UNAVAILABLE = Counter(
    "aiport_rate_limit_unavailable",
    "Calls the gateway decided on without its rate limits (Redis unreachable or slow),"
    " by limit type and decision (let_through: see services/gateway/rate_limits.py).",
    ("limit", "decision"),
    registry=REGISTRY,
)
REFRESH_FAILURES = Counter(
    "aiport_metrics_refresh_failures",
    "Periodic gauge refreshes that failed or timed out.",
    ("source",),
    registry=REGISTRY,
)

REFRESH_SECONDS_DEFAULT = 5.0
REFRESH_SECONDS_MIN = 0.5


def refresh_seconds() -> float:
    """[AIPORT_METRICS_REFRESH_SECONDS] how often gauges read from a store refresh."""
    return max(REFRESH_SECONDS_MIN, env_float("AIPORT_METRICS_REFRESH_SECONDS", 5.0))


# -- the /metrics endpoint ---------------------------------------------------------------


@dataclass
class MetricsServer:
    addr: str
    _server: Any

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def parse_addr(addr: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port)."""
    host, sep, port = addr.strip().rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"expected HOST:PORT, got {addr!r}")
    return host.strip("[]"), int(port)


def serve_metrics(addr: str) -> MetricsServer:
    """Serve the registry at http://addr/metrics from a daemon thread (so a slow
    scrape never holds up the event loop's requests)."""
    host, port = parse_addr(addr)
    server, _thread = start_http_server(port, addr=host, registry=REGISTRY)
    log.info("metrics listening", extra={"fields": {"addr": addr}})
    return MetricsServer(addr, server)


# -- gRPC server interceptor -----------------------------------------------------------------

OK = "OK"


def final_code(exc: BaseException, context: Any) -> str:
    """The status a call that raised `exc` ended with: what abort() / set_code()
    chose, DEADLINE_EXCEEDED or CANCELLED when the task was cancelled, else UNKNOWN
    (what grpc answers for an unexpected exception)."""
    code = context.code()
    if code is not None and code != grpc.StatusCode.OK:
        return str(code.name)
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            return "DEADLINE_EXCEEDED"
        return "CANCELLED"
    return "UNKNOWN"


def ok_code(context: Any) -> str:
    code = context.code()
    return OK if code is None else str(code.name)


def access_log_enabled() -> bool:
    """[AIPORT_GRPC_ACCESS_LOG] 1/true/on: one log line per finished gRPC call."""
    return env("AIPORT_GRPC_ACCESS_LOG", "off").lower() in ("1", "true", "on")


class _MethodSeries:
    """One method's label children, made on first use of each code."""

    __slots__ = ("access_log", "by_code", "method", "seconds")

    def __init__(self, method: str, access_log: bool) -> None:
        self.method = method
        self.access_log = access_log
        self.seconds = GRPC_SECONDS.labels(method)
        self.by_code: dict[str, Any] = {}

    def record(self, code: str, started: float) -> None:
        counter = self.by_code.get(code)
        if counter is None:
            counter = self.by_code[code] = GRPC_REQUESTS.labels(self.method, code)
        counter.inc()
        elapsed = time.perf_counter() - started
        self.seconds.observe(elapsed)
        if self.access_log:
            log.info(
                "rpc",
                extra={
                    "fields": {"method": self.method, "code": code, "ms": round(elapsed * 1e3, 2)}
                },
            )


def _observe_unary(behavior: Callable[..., Any], series: _MethodSeries) -> Callable[..., Any]:
    async def observed(request: Any, context: Any) -> Any:
        started = time.perf_counter()
        try:
            response = await behavior(request, context)
        except BaseException as exc:
            series.record(final_code(exc, context), started)
            raise
        series.record(ok_code(context), started)
        return response

    return observed


def _observe_stream(behavior: Callable[..., Any], series: _MethodSeries) -> Callable[..., Any]:
    async def observed(request: Any, context: Any) -> AsyncIterator[Any]:
        started = time.perf_counter()
        try:
            async for response in behavior(request, context):
                yield response
        except BaseException as exc:
            series.record(final_code(exc, context), started)
            raise
        series.record(ok_code(context), started)

    return observed


def wrap_handler(
    handler: grpc.RpcMethodHandler[Any, Any],
    unary: Callable[[Callable[..., Any]], Callable[..., Any]],
    stream: Callable[[Callable[..., Any]], Callable[..., Any]],
) -> grpc.RpcMethodHandler[Any, Any]:
    """`handler` with its async behavior wrapped (`unary` for a single response,
    `stream` for an async-generator stream). Sync behaviors and coroutine-style
    streams (context.write) are left alone: grpc treats those differently."""
    h: Any = handler
    if h.unary_unary is not None and inspect.iscoroutinefunction(h.unary_unary):
        return h._replace(unary_unary=unary(h.unary_unary))  # type: ignore[no-any-return]
    if h.stream_unary is not None and inspect.iscoroutinefunction(h.stream_unary):
        return h._replace(stream_unary=unary(h.stream_unary))  # type: ignore[no-any-return]
    if h.unary_stream is not None and inspect.isasyncgenfunction(h.unary_stream):
        return h._replace(unary_stream=stream(h.unary_stream))  # type: ignore[no-any-return]
    if h.stream_stream is not None and inspect.isasyncgenfunction(h.stream_stream):
        return h._replace(stream_stream=stream(h.stream_stream))  # type: ignore[no-any-return]
    return handler


class ServerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Counts every call by method and final code and times it. Unknown methods
    (no handler) are not recorded, so labels stay bounded by what we serve."""

    def __init__(self, access_log: bool | None = None) -> None:
        self.access_log = access_log_enabled() if access_log is None else access_log
        # method -> (the handler grpc gave us, our wrapped one)
        self._wrapped: dict[
            str, tuple[grpc.RpcMethodHandler[Any, Any], grpc.RpcMethodHandler[Any, Any]]
        ] = {}

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method: str = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        series = _MethodSeries(method, self.access_log)
        wrapped = wrap_handler(
            handler,
            lambda b: _observe_unary(b, series),
            lambda b: _observe_stream(b, series),
        )
        self._wrapped[method] = (handler, wrapped)
        return wrapped


# -- upstream calls --------------------------------------------------------------------------

_last_upstream_outcome: ContextVar[str | None] = ContextVar("aiport_upstream_outcome", default=None)


def record_upstream(provider: str, outcome: str, seconds: float) -> None:
    UPSTREAM_REQUESTS.labels(provider, outcome).inc()
    UPSTREAM_SECONDS.labels(provider).observe(seconds)
    _last_upstream_outcome.set(outcome)


def forget_upstream_outcome() -> None:
    """Before a route attempt, so its failover reason is its own."""
    _last_upstream_outcome.set(None)


def failover_reason(kind: str, last_outcome: str | None) -> str:
    """Why a route failed, for aiport_failovers_total: the upstream's own outcome
    when its HTTP call failed, "malformed" when the call succeeded but the answer
    did not parse, "timeout" for our deadline."""
    if kind == "timeout":
        return "timeout"
    if last_outcome == "ok":
        return "malformed"
    return last_outcome or "failed"


def record_failover(route: str, kind: str) -> None:
    FAILOVERS.labels(route, failover_reason(kind, _last_upstream_outcome.get())).inc()


# -- circuit breakers ------------------------------------------------------------------------

BREAKER_LEVEL = {"closed": 0, "half-open": 1, "open": 2}


BreakerStates = Callable[[], Iterable[tuple[str, str]]]
"""(route, state) pairs, state one of BREAKER_LEVEL's keys."""


class _BreakerCollector(Collector):
    """Reads the process's breakers when scraped (plain dict reads, safe from the
    metrics thread)."""

    def __init__(self) -> None:
        self.states: BreakerStates | None = None

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "aiport_circuit_breaker_state",
            "Circuit breaker per route: 0 closed, 1 half-open, 2 open.",
            labels=("route",),
        )
        if self.states is not None:
            for route, state in self.states():
                family.add_metric((route,), BREAKER_LEVEL[state])
        yield family


_breakers = _BreakerCollector()
REGISTRY.register(_breakers)


def watch_breakers(states: BreakerStates) -> None:
    """The process's breakers (one set per process; a later call replaces it)."""
    _breakers.states = states


# -- periodic refresh ------------------------------------------------------------------------


async def refresh_forever(
    source: str, step: Callable[[], Awaitable[None]], every_seconds: float | None = None
) -> None:
    """Run `step` every `every_seconds`, each run bounded by that same time; a
    failure is counted and logged once until the next success, never fatal."""
    interval = every_seconds if every_seconds is not None else refresh_seconds()
    failing = False
    while True:
        try:
            async with asyncio.timeout(interval):
                await step()
            if failing:
                log.info("metrics refresh recovered", extra={"fields": {"source": source}})
            failing = False
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            REFRESH_FAILURES.labels(source).inc()
            if not failing:
                log.warning(
                    "metrics refresh failed",
                    extra={"fields": {"source": source, "error": repr(exc)}},
                )
            failing = True
        await asyncio.sleep(interval)


def set_labelled(gauge: Gauge, values: Mapping[tuple[str, ...], float]) -> None:
    """Set a labelled gauge to exactly `values`: label sets that disappeared read 0
    (not stale), so a drained status shows as empty rather than its last count."""
    seen = {tuple(labels) for labels in _label_sets(gauge)}
    for labels in seen - set(values):
        gauge.labels(*labels).set(0)
    for labels, value in values.items():
        gauge.labels(*labels).set(value)


def _label_sets(gauge: Gauge) -> list[tuple[str, ...]]:
    return [tuple(s.labels.values()) for m in gauge.collect() for s in m.samples]
