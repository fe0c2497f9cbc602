"""Start a grpc.aio server with health checking and drain it on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, cast

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import _async as health_aio  # what grpc_health.v1.health.aio names
from grpc_health.v1 import health_pb2, health_pb2_grpc

log = logging.getLogger(__name__)

# A servicer's context, whatever its message types.
ServicerContext = grpc.aio.ServicerContext[Any, Any]

# Bigger than any request the edge lets through (Envoy caps bodies first).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# Above the edge's 64 KiB header cap, so whatever Envoy accepts we accept too
# (gRPC's own default is far lower and turned big headers into a 500).
MAX_METADATA_BYTES = 96 * 1024
GRACE_SECONDS = 10.0


async def serve(
    addr: str,
    register: Callable[[grpc.aio.Server], Iterable[str]],
    on_stop: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Run until SIGTERM/SIGINT. `register` adds servicers and names the services."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_metadata_size", MAX_METADATA_BYTES),
            ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
            ("grpc.so_reuseport", 0),
        ]
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
    log.info("draining", extra={"fields": {"grace_seconds": GRACE_SECONDS}})
    for name in ["", *names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.stop(GRACE_SECONDS)
    if on_stop is not None:
        await on_stop()
    log.info("stopped")


def channel(addr: str) -> grpc.aio.Channel:
    """An internal client channel with the same message limits as the servers."""
    return grpc.aio.insecure_channel(
        addr,
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_metadata_size", MAX_METADATA_BYTES),
            ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
            ("grpc.enable_retries", 1),
        ],
    )


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
