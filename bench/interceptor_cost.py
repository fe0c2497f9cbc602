"""What the observability interceptors cost per gRPC call (CPU of the event-loop
thread), with tracing off as in production by default.

    .venv/bin/python -m bench.interceptor_cost

1. Server side, in isolation: the interceptor chain of grpc_server.serve()
   (request id, metrics) run against a trivial handler with a stand-in context,
   minus the same handler called bare. Stable to a microsecond or so.
2. End to end on loopback, one process: unary calls through serve()'s
   interceptors and channel()'s request-id propagation, against a bare server
   and channel sending the same metadata. Noisier (a shared machine), so
   rounds are interleaved and the median is reported.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import grpc
import uvloop

from services.common import requestctx
from services.common.grpc_server import channel, server_interceptors

SERVER_CALLS = 50_000
E2E_CALLS = 3_000
E2E_ROUNDS = 9


class _Details:
    method = "/bench.S/ok"
    invocation_metadata = (("x-request-id", "0f8c4a2e-bench"), ("user-agent", "bench"))


class _Context:
    def code(self) -> None:
        return None

    def time_remaining(self) -> float:
        return 10.0


async def _ok(request: bytes, context: Any) -> bytes:
    return b"ok"


async def server_side_us() -> float:
    handler = grpc.unary_unary_rpc_method_handler(_ok)
    interceptors = server_interceptors()
    context, details = _Context(), _Details()

    async def found(_: Any) -> Any:
        return handler

    async def through_chain() -> None:
        continuation = found
        for interceptor in reversed(interceptors):
            continuation = _bind(interceptor, continuation)
        wrapped = await continuation(details)
        await wrapped.unary_unary(b"", context)

    async def bare() -> None:
        await (await found(details)).unary_unary(b"", context)

    async def per_call(step: Any) -> float:
        started = time.thread_time()
        for _ in range(SERVER_CALLS):
            await step()
        return (time.thread_time() - started) / SERVER_CALLS * 1e6

    await per_call(through_chain)  # warm the per-method caches
    chain = [await per_call(through_chain) for _ in range(3)]
    alone = [await per_call(bare) for _ in range(3)]
    return min(chain) - min(alone)


def _bind(interceptor: Any, continuation: Any) -> Any:
    async def call(details: Any) -> Any:
        return await interceptor.intercept_service(continuation, details)

    return call


async def e2e_us(observed: bool) -> float:
    handlers = {"ok": grpc.unary_unary_rpc_method_handler(_ok)}
    server = grpc.aio.server(interceptors=server_interceptors() if observed else None)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.S", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    target = f"127.0.0.1:{port}"
    chan = channel(target) if observed else grpc.aio.insecure_channel(target)
    call = chan.unary_unary("/bench.S/ok", None, None)
    # Both send the id: the bare channel explicitly, the observed one from the context.
    metadata = None if observed else (("x-request-id", "0f8c4a2e-bench"),)
    token = requestctx.bind("0f8c4a2e-bench")
    try:
        for _ in range(200):
            await call(b"", metadata=metadata)
        started = time.thread_time()
        for _ in range(E2E_CALLS):
            await call(b"", metadata=metadata)
        return (time.thread_time() - started) / E2E_CALLS * 1e6
    finally:
        requestctx.unbind(token)
        await chan.close(None)
        await server.stop(None)


async def main() -> None:
    print(f"server interceptors alone: {await server_side_us():.1f} us/call")
    bare: list[float] = []
    observed: list[float] = []
    for _ in range(E2E_ROUNDS):
        bare.append(await e2e_us(False))
        observed.append(await e2e_us(True))
    print(
        f"loopback unary call, loop-thread CPU: bare {statistics.median(bare):.0f} us, "
        f"observed {statistics.median(observed):.0f} us, "
        f"added {statistics.median(observed) - statistics.median(bare):.0f} us (median of "
        f"{E2E_ROUNDS} interleaved rounds of {E2E_CALLS})"
    )


if __name__ == "__main__":
    uvloop.run(main())
