"""The chat path's failover (ProvidersService.ChatCompletion, and CompleteChat for
non-stream calls) against fake upstreams,
no servers: a half-open backup planned behind a healthy primary stays in rotation,
and a client that goes away in the middle of a probe gives the probe back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, NoReturn, cast

import grpc
import pytest
from aiport.v1 import providers_pb2, text_pb2

from services.common.canonical_chat import from_chat_body
from services.common.grpc_server import ServicerContext
from services.common.usage import Usage
from services.common.wire import completed_events
from services.providers.adapters.openai_chat_translate import ChunkTranslator, Identity
from services.providers.errors import UpstreamError
from services.providers.failover import Breakers, Policy, route_key
from services.providers.routes import Provider, Route, RouteTable
from services.providers.server import ProvidersService
from tests.support.clock import Clock
from tests.support.routes import provider as support_provider

MODES = ["unary", "events", "stream"]
PRIMARY = Route("m", "primary", "m-a")
BACKUP = Route("m", "backup", "m-b")
COOLDOWN = 30.0


class FakeChat:
    """A chat upstream that answers, fails as told, or hangs (after its first
    token when streaming) until the call is cancelled."""

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls
        self.error: UpstreamError | None = None
        self.hang = False
        self.started = asyncio.Event()

    async def complete(
        self,
        route: Route,
        request: providers_pb2.CanonicalChat,
        identity: Identity,
        request_id: str,
    ) -> tuple[text_pb2.TextCompletion, Usage]:
        self.calls.append(route.provider)
        self.started.set()
        if self.hang:
            await asyncio.Event().wait()
        if self.error is not None:
            raise self.error
        answer = text_pb2.Message(role=text_pb2.ROLE_ASSISTANT, text=route.provider)
        return text_pb2.TextCompletion(choices=[text_pb2.Choice(message=answer)]), Usage(3, 1)

    async def stream(
        self,
        route: Route,
        request: providers_pb2.CanonicalChat,
        identity: Identity,
        request_id: str,
        translator: ChunkTranslator,
    ) -> AsyncIterator[text_pb2.TextChunk]:
        self.calls.append(route.provider)
        self.started.set()
        if self.error is not None:
            raise self.error
        delta = {"content": route.provider}
        for chunk in translator.feed({"choices": [{"index": 0, "delta": delta}]}):
            yield chunk
        if self.hang:
            await asyncio.Event().wait()

    async def close(self) -> None:
        return None


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode) -> None:
        super().__init__(code)
        self.code = code


class Context:
    async def abort(self, code: grpc.StatusCode, details: str, *_: Any, **__: Any) -> NoReturn:
        raise Aborted(code)


def provider(name: str) -> Provider:
    return support_provider(name, "openai-chat")


class Setup:
    def __init__(self, service: ProvidersService, clock: Clock, calls: list[str]) -> None:
        self.service = service
        self.breakers = service.breakers
        self.clock = clock
        self.calls = calls
        self.upstreams = cast(dict[str, FakeChat], service.adapters)

    def half_open(self, route: Route) -> None:
        self.breakers.failure(route)
        self.clock.now += COOLDOWN
        assert self.breakers.state(route) == "half-open"

    def chat(self, mode: str) -> AsyncIterator[providers_pb2.ChatCompletionEvent]:
        """One call in `mode`: "stream", "events" (ChatCompletion, stream=false) or
        "unary" (CompleteChat, its answer read as the events the gateway makes of it)."""
        request = providers_pb2.ChatCompletionRequest(
            model="m",
            chat=from_chat_body({"messages": [{"role": "user", "content": "hello"}]}),
            stream=mode == "stream",
            completion_id="chatcmpl-1",
            created_unix=1,
            request_id="req-1",
        )
        context = cast(ServicerContext, Context())
        if mode != "unary":
            return self.service.ChatCompletion(request, context)

        async def unary() -> AsyncIterator[providers_pb2.ChatCompletionEvent]:
            done = await self.service.CompleteChat(request, context)
            for event in completed_events(done):
                yield event

        return unary()


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    clock = Clock()
    table = RouteTable(
        {"primary": provider("primary"), "backup": provider("backup")},
        {"m": (PRIMARY, BACKUP)},
    )
    breakers = Breakers(Policy(failure_threshold=1, cooldown_seconds=COOLDOWN), clock)
    service = ProvidersService(table, breakers)
    await service.close()  # the real adapters: replaced by fakes
    calls: list[str] = []
    service.adapters = {"primary": FakeChat(calls), "backup": FakeChat(calls)}
    yield Setup(service, clock, calls)


def answered_by(events: list[providers_pb2.ChatCompletionEvent]) -> str:
    assert events[-1].HasField("usage")
    if events[0].HasField("completion"):
        return events[0].completion.choices[0].message.text
    return events[0].chunk.choices[0].text


@pytest.mark.parametrize("mode", MODES)
async def test_a_half_open_backup_behind_a_healthy_primary_answers_when_it_fails(
    setup: Setup, mode: str
) -> None:
    setup.half_open(BACKUP)
    first = [event async for event in setup.chat(mode)]
    assert answered_by(first) == "primary"
    # Later the primary fails: the backup, still half-open, gets the probe
    # (it used to stay reserved by the first request's plan: a 503 here).
    setup.upstreams["primary"].error = UpstreamError("failed", "upstream answered HTTP 503")
    second = [event async for event in setup.chat(mode)]
    assert answered_by(second) == "backup"
    assert setup.calls == ["primary", "primary", "backup"]
    assert setup.breakers.state(BACKUP) == "closed"
    assert setup.breakers.state(PRIMARY) == "open"


@pytest.mark.parametrize("mode", MODES)
async def test_a_client_going_away_mid_probe_gives_the_probe_back(setup: Setup, mode: str) -> None:
    setup.half_open(PRIMARY)
    setup.upstreams["primary"].hang = True

    async def client() -> None:
        async for _ in setup.chat(mode):
            pass

    call = asyncio.create_task(client())
    await setup.upstreams["primary"].started.wait()
    assert setup.breakers.plan((PRIMARY,)).routes == []  # being probed
    call.cancel()  # what grpc does to the handler when the client cancels
    with pytest.raises(asyncio.CancelledError):
        await call
    # Not the route's failure, and the next request may probe it.
    assert setup.breakers.state(PRIMARY) == "half-open"
    assert setup.breakers._state[route_key(PRIMARY)].failures == 1
    assert setup.breakers.plan((PRIMARY,)).routes == [PRIMARY]


async def test_a_client_that_stops_reading_a_probing_stream_gives_the_probe_back(
    setup: Setup,
) -> None:
    setup.half_open(PRIMARY)
    setup.upstreams["primary"].hang = True
    events = setup.chat("stream")
    first = await anext(aiter(events))
    assert first.HasField("chunk")
    await cast(Any, events).aclose()  # the generator is closed at its yield
    assert setup.breakers.state(PRIMARY) == "half-open"
    assert setup.breakers.plan((PRIMARY,)).routes == [PRIMARY]


@pytest.mark.parametrize("mode", ["unary", "events"])
async def test_every_route_failing_reports_the_last_failure(setup: Setup, mode: str) -> None:
    for name in ("primary", "backup"):
        setup.upstreams[name].error = UpstreamError("failed", "upstream answered HTTP 500")
    with pytest.raises(Aborted) as aborted:
        [event async for event in setup.chat(mode)]
    assert aborted.value.code == grpc.StatusCode.UNAVAILABLE
    assert setup.calls == ["primary", "backup"]


async def test_a_long_stream_does_not_hold_the_backups_probe(setup: Setup) -> None:
    """Once output reached the client the request cannot move on: the backup's
    probe goes back then, not when the stream ends (minutes, for some models)."""
    setup.half_open(BACKUP)
    setup.upstreams["primary"].hang = True
    events = setup.chat("stream")
    first = await anext(aiter(events))
    assert first.HasField("chunk")  # streaming from the primary, not finished
    assert setup.breakers.plan((BACKUP,)).routes == [BACKUP]
    await cast(Any, events).aclose()
