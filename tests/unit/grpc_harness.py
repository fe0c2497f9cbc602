"""In-process grpc.aio servers for interceptor tests: raw-bytes methods on a
service named `t.S`, served on a free local port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import grpc

SERVICE = "t.S"


def method(name: str) -> str:
    return f"/{SERVICE}/{name}"


@asynccontextmanager
async def serving(
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]],
    interceptors: Sequence[grpc.aio.ServerInterceptor[Any, Any]],
) -> AsyncIterator[str]:
    """Yields the address; stops the server (no grace) on exit."""
    server = grpc.aio.server(interceptors=interceptors)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


def unary(chan: grpc.aio.Channel, name: str) -> Any:
    """A raw-bytes unary-unary multicallable for method `name`."""
    return chan.unary_unary(method(name), None, None)


def server_stream(chan: grpc.aio.Channel, name: str) -> Any:
    """A raw-bytes unary-stream multicallable for method `name`."""
    return chan.unary_stream(method(name), None, None)
