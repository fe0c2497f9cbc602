"""The request id: cleaned at the door, current in each handler, passed on by
every client call, and written on every log line."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from services.common import requestctx
from services.common.grpc_server import channel, server_interceptors
from services.common.logs import JsonFormatter
from tests.unit.grpc_harness import server_stream, serving, unary


def test_only_well_formed_ids_are_kept() -> None:
    assert requestctx.clean("0f8c-4a2e_b.9") == "0f8c-4a2e_b.9"
    assert requestctx.clean(b"abc") == "abc"
    assert requestctx.clean("a" * 128) == "a" * 128
    assert requestctx.clean("a" * 129) is None
    assert requestctx.clean("") is None
    assert requestctx.clean("a b") is None
    assert requestctx.clean("id\nforged log line") is None
    assert requestctx.clean("ünï") is None
    assert requestctx.clean(None) is None
    fresh = requestctx.ensure("<script>")
    assert fresh != "<script>" and requestctx.clean(fresh) == fresh


async def echo_id(request: bytes, context: Any) -> bytes:
    await asyncio.sleep(0.01)  # let concurrent calls interleave
    return (requestctx.current() or "").encode()


async def test_the_handler_sees_the_callers_id_or_a_fresh_one() -> None:
    handlers = {"echo": grpc.unary_unary_rpc_method_handler(echo_id)}
    async with serving(handlers, server_interceptors()) as addr:
        async with grpc.aio.insecure_channel(addr) as chan:
            echo = unary(chan, "echo")
            assert await echo(b"", metadata=(("x-request-id", "req-1"),)) == b"req-1"
            fresh = (await echo(b"")).decode()
            assert len(fresh) == 32 and requestctx.clean(fresh) == fresh
            assert (await echo(b"")).decode() != fresh
            forged = (await echo(b"", metadata=(("x-request-id", "a" * 200),))).decode()
            assert forged != "a" * 200 and len(forged) == 32
            # Concurrent calls never see each other's id.
            replies = await asyncio.gather(
                *(echo(b"", metadata=(("x-request-id", f"c{i}"),)) for i in range(20))
            )
            assert replies == [f"c{i}".encode() for i in range(20)]


async def test_every_client_call_passes_the_id_on() -> None:
    """caller -> front (unary) -> back (unary and server-streaming): one id."""

    async def back_stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
        yield (requestctx.current() or "").encode()

    back_handlers = {
        "echo": grpc.unary_unary_rpc_method_handler(echo_id),
        "stream": grpc.unary_stream_rpc_method_handler(back_stream),
    }
    async with serving(back_handlers, server_interceptors()) as back_addr:
        back = channel(back_addr)

        async def front(request: bytes, context: Any) -> bytes:
            single: bytes = await unary(back, "echo")(b"")
            streamed = [p async for p in server_stream(back, "stream")(b"")]
            return single + b"|" + b"".join(streamed)

        handlers = {"front": grpc.unary_unary_rpc_method_handler(front)}
        try:
            async with serving(handlers, server_interceptors()) as front_addr:
                async with grpc.aio.insecure_channel(front_addr) as chan:
                    reply = await unary(chan, "front")(b"", metadata=(("x-request-id", "edge-7"),))
        finally:
            await back.close(None)
    assert reply == b"edge-7|edge-7"


async def test_a_call_made_outside_any_request_sends_no_id() -> None:
    handlers = {"echo": grpc.unary_unary_rpc_method_handler(echo_id)}
    async with serving(handlers, server_interceptors()) as addr:
        chan = channel(addr)
        try:

            async def background() -> bytes:
                assert requestctx.current() is None
                result: bytes = await unary(chan, "echo")(b"")
                return result

            # A fresh context, as a background task started at boot would have.
            reply = await asyncio.get_running_loop().create_task(
                background(), context=contextvars.Context()
            )
            token = requestctx.bind("explicit")
            try:
                own = await unary(chan, "echo")(b"", metadata=(("x-request-id", "callers-own"),))
            finally:
                requestctx.unbind(token)
        finally:
            await chan.close(None)
    assert len(reply) == 32  # the server made one up
    assert own == b"callers-own"  # an explicit id is not overwritten


async def test_a_channels_fixed_metadata_rides_on_every_call_with_the_id() -> None:
    """A service token set on the channel arrives on unary and streaming calls,
    beside the caller's own metadata and the request id."""

    def seen(context: Any) -> bytes:
        pairs = dict(context.invocation_metadata() or ())
        return f"{pairs.get('x-token')}|{pairs.get('x-own')}|{requestctx.current()}".encode()

    async def echo_metadata(request: bytes, context: Any) -> bytes:
        return seen(context)

    async def stream_metadata(request: bytes, context: Any) -> AsyncIterator[bytes]:
        yield seen(context)

    handlers = {
        "echo": grpc.unary_unary_rpc_method_handler(echo_metadata),
        "stream": grpc.unary_stream_rpc_method_handler(stream_metadata),
    }
    async with serving(handlers, server_interceptors()) as addr:
        chan = channel(addr, (("x-token", "t0k"),))
        token = requestctx.bind("req-5")
        try:
            single = await unary(chan, "echo")(b"", metadata=(("x-own", "mine"),))
            streamed = [p async for p in server_stream(chan, "stream")(b"")]
        finally:
            requestctx.unbind(token)
            await chan.close(None)
    assert single == b"t0k|mine|req-5"
    assert streamed == [b"t0k|None|req-5"]


def _line(message: str) -> dict[str, Any]:
    record = logging.LogRecord("svc.x", logging.INFO, __file__, 1, message, None, None)
    parsed: dict[str, Any] = json.loads(JsonFormatter().format(record))
    return parsed


def test_log_lines_carry_the_current_request_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIPORT_SERVICE", "svc")
    assert "request_id" not in _line("outside")
    token = requestctx.bind("req-42")
    try:
        line = _line("inside")
    finally:
        requestctx.unbind(token)
    assert line["request_id"] == "req-42"
    assert line["msg"] == "inside" and line["service"] == "svc"
    assert requestctx.current() is None


def test_of_message_makes_the_message_id_current_only_inside() -> None:
    assert requestctx.current() is None
    with requestctx.of_message({"x-request-id": "from-job"}) as request_id:
        assert request_id == "from-job"
        assert requestctx.current() == "from-job"
    assert requestctx.current() is None
    with requestctx.of_message(None) as fresh:
        assert fresh and requestctx.current() == fresh
