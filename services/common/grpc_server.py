"""Start a grpc.aio server with health checking and drain it on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, cast

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import _async as health_aio  # what grpc_health.v1.health.aio names
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common import metrics, requestctx, settings, tracing

log = logging.getLogger(__name__)

# A servicer's context, whatever its message types.
ServicerContext = grpc.aio.ServicerContext[Any, Any]


def request_metadata(context: ServicerContext, name: str) -> str | None:
    """The value of one of a call's metadata entries (a request header), or None."""
    for key, value in context.invocation_metadata() or ():
        if key == name:
            return value if isinstance(value, str) else value.decode("latin-1")
    return None


# Bigger than any request the edge lets through (Envoy caps bodies first).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# Above the edge's 64 KiB header cap, so whatever Envoy accepts we accept too
# (gRPC's own default is far lower and turned big headers into a 500).
MAX_METADATA_BYTES = 96 * 1024
# SIGTERM: report NOT_SERVING but keep serving this long (so load balancers stop
# sending), then give in-flight calls and streams this long to finish.
DRAIN_DELAY_SECONDS = 0.0
GRACE_SECONDS = 10.0
MAX_DRAIN_SECONDS = 300.0
# Servers ask each client to reconnect after about this long, so long-lived
# clients re-resolve and spread over new replicas. No max_connection_age_grace:
# calls in flight (streams may last up to 15 min) keep their connection until done.
MAX_CONNECTION_AGE_MS = 5 * 60 * 1000
# Client-side health checking (gRFC A17): round_robin skips replicas whose
# overall health ("") is not SERVING.
CLIENT_SERVICE_CONFIG = json.dumps({"healthCheckConfig": {"serviceName": ""}})


async def serve(
    addr: str,
    register: Callable[[grpc.aio.Server], Iterable[str]],
    on_stop: Callable[[], Awaitable[None]] | None = None,
    on_drain: Callable[[], Awaitable[None]] | None = None,
    interceptors: Iterable[grpc.aio.ServerInterceptor[Any, Any]] = (),
) -> None:
    """Run until SIGTERM/SIGINT. `register` adds servicers and names the services.

    On the signal: health turns NOT_SERVING and `on_drain` runs (stop taking
    new background work); calls are still served for the drain delay, then
    the server stops with the grace for calls in flight, then `on_stop`.
    `interceptors` run after the common ones (e.g. billing's service tokens)."""
    addr_for_metrics = settings.metrics_addr()
    metrics_server = metrics.serve_metrics(addr_for_metrics) if addr_for_metrics else None
    server = grpc.aio.server(
        interceptors=[*server_interceptors(), *interceptors],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_metadata_size", MAX_METADATA_BYTES),
            ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
            ("grpc.so_reuseport", 0),
            ("grpc.max_connection_age_ms", MAX_CONNECTION_AGE_MS),
        ],
    )
    names = list(register(server))
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if server.add_insecure_port(addr) == 0:
        raise OSError(f"cannot listen on {addr}")
    await server.start()
    for name in ["", *names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("listening", extra={"fields": {"addr": addr, "services": names}})

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    drain_delay, grace = drain_seconds()
    log.info(
        "draining", extra={"fields": {"drain_delay_seconds": drain_delay, "grace_seconds": grace}}
    )
    for name in ["", *names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    if on_drain is not None:
        await on_drain()
    # Still serving: callers that have not yet seen NOT_SERVING keep being answered.
    await asyncio.sleep(drain_delay)
    # No new calls from here; calls and streams in flight get the grace to finish.
    await server.stop(grace)
    if on_stop is not None:
        await on_stop()
    tracing.shutdown()  # flushes spans still buffered
    if metrics_server is not None:
        metrics_server.close()
    log.info("stopped")


def drain_seconds(default_grace: float = GRACE_SECONDS) -> tuple[float, float]:
    """(AIPORT_DRAIN_DELAY_SECONDS, AIPORT_GRACE_SECONDS), each within [0, MAX_DRAIN_SECONDS]."""
    delay = settings.env_float("AIPORT_DRAIN_DELAY_SECONDS", DRAIN_DELAY_SECONDS)
    grace = settings.env_float("AIPORT_GRACE_SECONDS", default_grace)
    return (min(max(delay, 0.0), MAX_DRAIN_SECONDS), min(max(grace, 0.0), MAX_DRAIN_SECONDS))


MAX_RECONNECT_BACKOFF_MS = 5_000


def channel(addr: str, metadata: tuple[tuple[str, str], ...] = ()) -> grpc.aio.Channel:
    """An internal client channel with the same message limits as the servers;
    every call on it carries `metadata` (e.g. this service's token for billing,
    service_auth.metadata) and the current request id."""
    plain = grpc.aio.insecure_channel(
        addr,
        interceptors=client_interceptors(),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_metadata_size", MAX_METADATA_BYTES),
            ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
            ("grpc.enable_retries", 1),
            # A peer that restarted is dialled again within seconds, not after
            # gRPC's default backoff of up to two minutes (503s all the while).
            ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
            # Spread calls over every address the target resolves to (local
            # replicas, a headless Service) and move off one that goes away...
            ("grpc.lb_policy_name", "round_robin"),
            # ...or that reports NOT_SERVING on gRPC health (it is draining).
            ("grpc.service_config", CLIENT_SERVICE_CONFIG),
        ],
    )
    return requestctx.propagating(plain, metadata)


class LenientRequests:
    """Wraps a server for a generated add_*_to_server call on a public service.

    The edge builds request messages from URL paths, and a path like
    /v1/jobs/%ff decodes to bytes that are not valid UTF-8 for a proto string
    field: parsing would raise before our handler runs, and the client would
    get a 500. With this, such a request arrives as an empty message, which
    every handler answers as not found or invalid, in our error shape.
    """

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        # The generic handler added just before holds this same dict: one edit
        # covers both lookups.
        for name, handler in handlers.items():
            parse = handler.request_deserializer
            if parse is not None:
                handlers[name] = handler._replace(request_deserializer=_lenient(parse))
        # grpc >= 1.62 has this method; grpc-stubs predates it.
        cast(Any, self._server).add_registered_method_handlers(service, handlers)


def _lenient(parse: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def lenient(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError:
            return parse(b"")

    return lenient


def server_interceptors() -> list[grpc.aio.ServerInterceptor[Any, Any]]:
    """Request id first (so everything after sees it), then the trace span (when
    tracing is on), then metrics."""
    return [
        requestctx.ServerInterceptor(),
        *tracing.server_interceptors(),
        metrics.ServerInterceptor(),
    ]


def client_interceptors() -> list[Any]:
    """A client span and traceparent per call when tracing is on; none otherwise
    (the request id is added by requestctx.propagating, more cheaply)."""
    return tracing.client_interceptors()
