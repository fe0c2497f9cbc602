"""The gateway's call to providers for a non-stream chat: one unary CompleteChat,
read as ChatCompletion's events; providers without CompleteChat (older, during a
rolling deploy) are asked through the streaming form instead."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from aiport.v1 import common_pb2, providers_pb2, providers_pb2_grpc, text_pb2

from services.common.grpc_server import ServicerContext
from services.gateway.server import UpstreamCall

USAGE = common_pb2.TokenUsage(prompt_tokens=3, completion_tokens=1)
VIA_STREAM = text_pb2.TextCompletion(id="via-stream")
VIA_UNARY = text_pb2.TextCompletion(id="via-unary")


class OldProviders(providers_pb2_grpc.ProvidersServicer):
    """Only the streaming form (CompleteChat answers UNIMPLEMENTED)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def ChatCompletion(
        self, request: providers_pb2.ChatCompletionRequest, context: ServicerContext
    ) -> AsyncIterator[providers_pb2.ChatCompletionEvent]:
        self.calls.append(f"ChatCompletion stream={request.stream}")
        yield providers_pb2.ChatCompletionEvent(completion=VIA_STREAM)
        yield providers_pb2.ChatCompletionEvent(usage=USAGE, provider="p-old")


class NewProviders(OldProviders):
    async def CompleteChat(
        self, request: providers_pb2.ChatCompletionRequest, context: ServicerContext
    ) -> providers_pb2.ChatCompleted:
        self.calls.append("CompleteChat")
        if request.model == "missing":
            await context.abort(grpc.StatusCode.NOT_FOUND, "no route")
        if request.HasField("native"):  # a route passed it through
            return providers_pb2.ChatCompleted(
                native_completion=b'{"type":"message"}', usage=USAGE, provider="p-new"
            )
        return providers_pb2.ChatCompleted(completion=VIA_UNARY, usage=USAGE, provider="p-new")


async def events_from(
    servicer: OldProviders, request: providers_pb2.ChatCompletionRequest
) -> list[providers_pb2.ChatCompletionEvent]:
    server = grpc.aio.server()
    providers_pb2_grpc.add_ProvidersServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
            call = UpstreamCall(providers_pb2_grpc.ProvidersStub(chan), request)
            return [event async for event in call.events()]
    finally:
        await server.stop(None)


def request(stream: bool, model: str = "m") -> providers_pb2.ChatCompletionRequest:
    return providers_pb2.ChatCompletionRequest(model=model, stream=stream)


async def test_a_non_stream_chat_is_one_unary_call_read_as_completion_then_usage() -> None:
    providers = NewProviders()
    events = await events_from(providers, request(stream=False))
    assert providers.calls == ["CompleteChat"]
    assert [e.WhichOneof("event") for e in events] == ["completion", "usage"]
    assert events[0].completion == VIA_UNARY
    assert (events[1].usage, events[1].provider) == (USAGE, "p-new")


async def test_a_passed_through_answer_stays_in_the_clients_protocol() -> None:
    native = request(stream=False)
    native.native.protocol = "anthropic-messages"
    events = await events_from(NewProviders(), native)
    assert [e.WhichOneof("event") for e in events] == ["native_completion", "usage"]
    assert events[0].native_completion == b'{"type":"message"}'


async def test_older_providers_are_asked_through_the_streaming_form() -> None:
    providers = OldProviders()
    events = await events_from(providers, request(stream=False))
    assert providers.calls == ["ChatCompletion stream=False"]
    assert events[0].completion == VIA_STREAM and events[1].provider == "p-old"


async def test_a_stream_uses_the_streaming_form_and_errors_pass_through() -> None:
    providers = NewProviders()
    await events_from(providers, request(stream=True))
    assert providers.calls == ["ChatCompletion stream=True"]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await events_from(providers, request(stream=False, model="missing"))
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
