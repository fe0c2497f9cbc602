"""The chat relay under a client's Idempotency-Key (services/gateway/server.py
ChatRelay): the whole answer is stored before its last part is sent, a failure
before any output frees the key instead, and a departed client's answer is still
stored. Fake billing and upstream, no servers."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any, cast

import grpc
import orjson
from aiport.v1 import billing_pb2, common_pb2, providers_pb2, text_pb2

from services.common.catalog import load_catalog
from services.common.settings import PROJECT_ROOT
from services.gateway.chat_request import parse_chat_request
from services.gateway.idempotency import StoredAnswer
from services.gateway.renderers import ChatCompletionsRenderer
from services.gateway.server import ChatRelay, UpstreamCall

CATALOG = load_catalog(PROJECT_ROOT / "config" / "catalog.yaml")
OWNER = "chat:" + "0" * 32
USAGE = providers_pb2.ChatCompletionEvent(
    usage=common_pb2.TokenUsage(prompt_tokens=10, completion_tokens=2), provider="p"
)


class FakeBackends:
    """Billing as the relay sees it: what was asked, and how much of the answer had
    been queued for the client when the answer was stored."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.relay: ChatRelay | None = None

    async def capture(self, hold_id: str, amount: int, *_: Any, **__: Any) -> int:
        self.calls.append(("capture", amount))
        return amount

    async def release(self, hold_id: str, reason: str, *_: Any) -> None:
        self.calls.append(("release", reason))

    async def keep_answer(self, owner: str, answer: StoredAnswer) -> None:
        assert self.relay is not None
        self.calls.append(("keep", (owner, answer, self.relay.outbox.qsize())))

    async def drop_claim(self, owner: str) -> None:
        self.calls.append(("drop", owner))

    def settle_later(self, coro: Any) -> None:
        coro.close()


class FakeUpstream:
    def __init__(self, events: list[providers_pb2.ChatCompletionEvent], fail: bool) -> None:
        self._events = events
        self._fail = fail

    def cancel(self) -> None:
        return None

    async def events(self) -> AsyncIterator[providers_pb2.ChatCompletionEvent]:
        for event in self._events:
            yield event
        if self._fail:
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "down", None
            )


def chunk(text: str) -> providers_pb2.ChatCompletionEvent:
    return providers_pb2.ChatCompletionEvent(
        chunk=text_pb2.TextChunk(choices=[text_pb2.ChoiceDelta(index=0, text=text)])
    )


def completion(text: str) -> providers_pb2.ChatCompletionEvent:
    message = text_pb2.Message(role=text_pb2.ROLE_ASSISTANT, text=text)
    return providers_pb2.ChatCompletionEvent(
        completion=text_pb2.TextCompletion(choices=[text_pb2.Choice(message=message)])
    )


def relay_of(
    events: list[providers_pb2.ChatCompletionEvent], *, stream: bool, fail: bool = False
) -> tuple[ChatRelay, FakeBackends]:
    body = {
        "model": "deepseek-v4-flash",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 50,
        "stream": stream,
    }
    call = parse_chat_request(orjson.dumps(body), CATALOG)
    backends = FakeBackends()
    relay = ChatRelay(
        cast(Any, backends),
        call,
        billing_pb2.Hold(hold_id="hold_1", amount_micros=10**9),
        cast(UpstreamCall, FakeUpstream(events, fail)),
        {},
        time.monotonic(),
        ChatCompletionsRenderer("chatcmpl-1", "deepseek-v4-flash", 1),
        OWNER,
    )
    backends.relay = relay
    return relay, backends


def sent(relay: ChatRelay) -> list[Any]:
    items = []
    while not relay.outbox.empty():
        items.append(relay.outbox.get_nowait())
    return items


def kept(backends: FakeBackends) -> tuple[str, StoredAnswer, int]:
    (stored,) = [args for name, args in backends.calls if name == "keep"]
    return cast(tuple[str, StoredAnswer, int], stored)


async def test_a_whole_answer_is_stored_before_it_is_sent() -> None:
    relay, backends = relay_of([completion("hello"), USAGE], stream=False)
    await relay.run()
    owner, answer, queued = kept(backends)
    body, end = sent(relay)
    assert owner == OWNER
    assert queued == 0  # stored first: a repeat after the answer finds it
    assert answer == StoredAnswer(200, "application/json", body.data)
    assert end is None
    assert [name for name, _ in backends.calls] == ["capture", "keep"]


async def test_a_stream_is_stored_whole_before_its_last_event() -> None:
    relay, backends = relay_of([chunk("a"), chunk("b"), USAGE], stream=True)
    await relay.run()
    _, answer, queued = kept(backends)
    items = sent(relay)[:-1]
    assert queued == len(items) - 1  # every event but the last was out already
    assert answer.content_type == "text/event-stream"
    assert answer.body == b"".join(item.data for item in items)
    assert answer.body.rstrip().endswith(b"data: [DONE]")


async def test_a_failure_before_output_frees_the_key_and_stores_nothing() -> None:
    relay, backends = relay_of([], stream=True, fail=True)
    await relay.run()
    assert [name for name, _ in backends.calls] == ["release", "drop"]
    assert backends.calls[-1] == ("drop", OWNER)


async def test_a_stream_broken_after_output_is_charged_and_stored_with_its_error() -> None:
    relay, backends = relay_of([chunk("a")], stream=True, fail=True)
    await relay.run()
    assert [name for name, _ in backends.calls] == ["capture", "keep"]
    _, answer, _ = kept(backends)
    assert answer.body.startswith(b"data: ")
    assert b'"error"' in answer.body.splitlines()[-2]  # the in-band error event, last


async def test_the_answer_of_a_client_that_left_is_still_stored() -> None:
    relay, backends = relay_of([chunk("a"), chunk("b"), USAGE], stream=True)
    relay.client_left()
    await relay.run()
    _, answer, _ = kept(backends)
    assert answer.body.count(b"data: ") >= 3  # both chunks and the end
    assert sent(relay) == []
