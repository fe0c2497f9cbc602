"""The one boundary between a gateway method and what its client sees.

Every public gRPC method of the gateway is wrapped by `public_unary` or
`public_stream` (tests/unit/test_error_boundary.py checks that none is missed).
Inside, code raises the errors of the catalog (errors.py) wherever it finds one;
here they become the edge's error shape (trailing metadata the Lua filter turns
into the HTTP status and JSON body). What nobody expected is logged with its
traceback for the operator and reaches the client as the edge's plain 500, or a
503 when a backend was unreachable: never a stack trace, never gRPC's UNKNOWN.

Response headers a method wants (a job's 202, a call's cost) are collected with
`add_response_header` and sent here, once, as the call's initial metadata (the
edge turns it into HTTP headers): gRPC sends initial metadata only once, so no
method sends its own. An error answer carries them in its trailers instead.
What must happen when a call ends, however it ends (a rate limit's lease given
back), is registered on its CallState (call_state.py) and run here.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from typing import TypeVar

import grpc
from google.api import httpbody_pb2

from services.common import requestctx
from services.common.grpc_server import ServicerContext
from services.common.logs import fields
from services.gateway import call_state, errors
from services.gateway.errors import PublicError
from services.gateway.messages_render import anthropic_error

log = logging.getLogger(__name__)

S = TypeVar("S")
Req = TypeVar("Req")
Resp = TypeVar("Resp")

MARK = "__aiport_public_boundary__"
_UNREACHABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)

Headers = list[tuple[str, str]]
# The headers this call's answer will carry: one list per call (each gRPC call
# runs in a task of its own, with its own context).
_pending: ContextVar[Headers | None] = ContextVar("aiport_response_headers", default=None)


def add_response_header(name: str, value: str) -> None:
    """Have the call's answer carry `name: value` (lowercase ASCII name). Only inside
    a public method, before its first message."""
    pending = _pending.get()
    if pending is None:
        raise RuntimeError("add_response_header outside a public method")
    pending.append((name, value))


def collect_response_headers() -> None:
    """A public method's call begins: nothing to send yet. (Each boundary calls it.)"""
    _pending.set([])


async def send_response_headers(context: ServicerContext) -> None:
    """Send what was collected, as initial metadata, before the first message."""
    pending = _pending.get()
    if pending:
        await context.send_initial_metadata(tuple(pending))
        pending.clear()


async def abort_with(context: ServicerContext, error: PublicError) -> None:
    context.set_trailing_metadata((*(_pending.get() or ()), *error.trailing_metadata()))
    await context.abort(error.grpc_code, error.message)


def public_error(method: str, exc: Exception) -> PublicError:
    """What the client sees for `exc` (a catalog error as itself; anything else logged)."""
    if isinstance(exc, PublicError):
        return exc
    log.exception(
        "gateway method failed unexpectedly",
        extra=fields(method=method, request_id=requestctx.current()),
    )
    if isinstance(exc, grpc.aio.AioRpcError) and exc.code() in _UNREACHABLE:
        return errors.service_unavailable("aiport is temporarily unavailable. Please try again.")
    return errors.internal_error()


# How a client protocol shapes the errors it sends (Anthropic's Messages has its own).
Shape = Callable[[PublicError], PublicError]


def _as_is(error: PublicError) -> PublicError:
    return error


def public_unary(
    method: Callable[[S, Req, ServicerContext], Awaitable[Resp]],
    shape: Shape = _as_is,
) -> Callable[[S, Req, ServicerContext], Awaitable[Resp]]:
    async def wrapper(self: S, request: Req, context: ServicerContext) -> Resp:
        collect_response_headers()
        state = call_state.begin()
        try:
            response = await method(self, request, context)
            await send_response_headers(context)
            return response
        except grpc.aio.AbortError:
            raise  # already answered (context.abort)
        except Exception as exc:
            await abort_with(context, shape(public_error(method.__qualname__, exc)))
            raise AssertionError("unreachable") from None  # abort raises
        finally:
            state.end()

    functools.update_wrapper(wrapper, method)
    setattr(wrapper, MARK, True)
    return wrapper


def public_stream(
    method: Callable[[S, Req, ServicerContext], AsyncIterator[httpbody_pb2.HttpBody]],
    shape: Shape = _as_is,
) -> Callable[[S, Req, ServicerContext], AsyncIterator[httpbody_pb2.HttpBody]]:
    """For a server-streaming method of SSE bodies: an error before the first message
    is a normal error answer; after it, headers are out, so it goes in-band."""

    async def wrapper(
        self: S, request: Req, context: ServicerContext
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        started = False
        collect_response_headers()
        state = call_state.begin()
        try:
            async for item in method(self, request, context):
                if not started:
                    await send_response_headers(context)
                started = True
                yield item
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            error = shape(public_error(method.__qualname__, exc))
            if not started:
                await abort_with(context, error)
                return
            yield httpbody_pb2.HttpBody(content_type="text/event-stream", data=error.sse_event())
        finally:
            # The stream is over, or its client left: its lease goes back now.
            state.end()

    functools.update_wrapper(wrapper, method)
    setattr(wrapper, MARK, True)
    return wrapper


def anthropic_stream(
    method: Callable[[S, Req, ServicerContext], AsyncIterator[httpbody_pb2.HttpBody]],
) -> Callable[[S, Req, ServicerContext], AsyncIterator[httpbody_pb2.HttpBody]]:
    """`public_stream` for Anthropic's Messages: every error in Anthropic's shape."""
    return public_stream(method, anthropic_error)


def anthropic_unary(
    method: Callable[[S, Req, ServicerContext], Awaitable[Resp]],
) -> Callable[[S, Req, ServicerContext], Awaitable[Resp]]:
    """`public_unary` for Anthropic's Messages: every error in Anthropic's shape."""
    return public_unary(method, anthropic_error)


__all__ = [
    "MARK",
    "abort_with",
    "add_response_header",
    "anthropic_stream",
    "anthropic_unary",
    "collect_response_headers",
    "public_error",
    "public_stream",
    "public_unary",
    "send_response_headers",
]
