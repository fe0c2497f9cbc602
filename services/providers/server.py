"""The Providers gRPC service: picks the route, runs its adapter, streams events."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import NoReturn

import grpc
from aiport.v1 import common_pb2, providers_pb2, providers_pb2_grpc

from services.common import metrics
from services.common.canonical_chat import prompt_size
from services.common.grpc_server import ServicerContext
from services.common.usage import Usage
from services.common.wire import RETRY_AFTER_KEY, UPSTREAM_FAILURE_KEY, completed_events
from services.providers import registry
from services.providers.adapters.anthropic_passthrough import NativeMessagesStream
from services.providers.adapters.openai_chat_translate import (
    ChunkTranslator,
    Identity,
)
from services.providers.chat import Answer, ChatAdapter, NativeChatAdapter, StreamAccounting
from services.providers.errors import UpstreamError
from services.providers.failover import Breakers, route_key
from services.providers.failover_driver import Failover
from services.providers.routes import Route, RouteTable

log = logging.getLogger(__name__)


def _usage_pb(usage: Usage) -> common_pb2.TokenUsage:
    return usage.to_proto()


def _native(
    adapter: ChatAdapter, request: providers_pb2.ChatCompletionRequest
) -> NativeChatAdapter | None:
    """The adapter, when it passes this client's own protocol through."""
    if (
        request.HasField("native")
        and isinstance(adapter, NativeChatAdapter)
        and adapter.native_protocol == request.native.protocol
    ):
        return adapter
    return None


def _chunk_event(chunk: Answer) -> providers_pb2.ChatCompletionEvent:
    if isinstance(chunk, bytes):
        return providers_pb2.ChatCompletionEvent(native_chunk=chunk)
    return providers_pb2.ChatCompletionEvent(chunk=chunk)


class ProvidersService(providers_pb2_grpc.ProvidersServicer):
    def __init__(self, table: RouteTable, breakers: Breakers | None = None) -> None:
        self.table = table
        self.adapters = registry.build(table, registry.CHAT)
        self.breakers = breakers or Breakers()
        served = {
            route_key(r): r
            for rs in table.routes.values()
            for r in rs
            if r.provider in self.adapters
        }
        metrics.watch_breakers(lambda: self.breakers.states(served.values()))

    async def close(self) -> None:
        for adapter in self.adapters.values():
            await adapter.close()

    async def _abort(self, context: ServicerContext, error: UpstreamError) -> NoReturn:
        if error.kind == "rejected":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, error.message)
        if error.kind == "rate_limited":
            trailing: tuple[tuple[str, str], ...] = ((UPSTREAM_FAILURE_KEY, "rate_limited"),)
            if error.retry_after_seconds is not None:
                trailing += ((RETRY_AFTER_KEY, str(error.retry_after_seconds)),)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, error.message, trailing)
        code = (
            grpc.StatusCode.DEADLINE_EXCEEDED
            if error.kind == "timeout"
            else grpc.StatusCode.UNAVAILABLE
        )
        await context.abort(code, error.message, trailing_metadata=((UPSTREAM_FAILURE_KEY, "1"),))

    async def _routes(
        self, request: providers_pb2.ChatCompletionRequest, context: ServicerContext
    ) -> tuple[Route, ...]:
        """The model's routes this process has an adapter for (NOT_FOUND if none)."""
        routes = tuple(
            r for r in self.table.routes_for(request.model) if r.provider in self.adapters
        )
        if not routes:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no route for model {request.model}")
        return routes

    async def _complete(
        self,
        route: Route,
        body: providers_pb2.CanonicalChat,
        request: providers_pb2.ChatCompletionRequest,
        identity: Identity,
    ) -> providers_pb2.ChatCompleted:
        """One route's whole answer: canonical, or in the client's own protocol when
        the route passed the request through. Its usage is set; its provider not."""
        adapter = self.adapters[route.provider]
        native = _native(adapter, request)
        if native is not None:
            answer, usage = await native.complete_native(
                route, body, request.native, identity, request.request_id
            )
            return providers_pb2.ChatCompleted(native_completion=answer, usage=_usage_pb(usage))
        completion, usage = await adapter.complete(route, body, identity, request.request_id)
        return providers_pb2.ChatCompleted(completion=completion, usage=_usage_pb(usage))

    def _stream(
        self,
        route: Route,
        body: providers_pb2.CanonicalChat,
        request: providers_pb2.ChatCompletionRequest,
        identity: Identity,
        prompt_chars: int,
        image_parts: int,
    ) -> tuple[StreamAccounting, AsyncIterator[Answer]]:
        """One route's stream: its accounting and its chunks (canonical, or bytes in
        the client's own protocol when the route passed the request through)."""
        adapter = self.adapters[route.provider]
        native = _native(adapter, request)
        if native is not None:
            passthrough = NativeMessagesStream(
                identity,
                request.native.response_id,
                prompt_chars=prompt_chars,
                image_parts=image_parts,
                api_key=self.table.providers[route.provider].api_key,
            )
            chunks = native.stream_native(
                route, body, request.native, request.request_id, passthrough
            )
            return passthrough, chunks
        translator = ChunkTranslator(identity, prompt_chars=prompt_chars, image_parts=image_parts)
        return translator, adapter.stream(route, body, identity, request.request_id, translator)

    async def CompleteChat(
        self,
        request: providers_pb2.ChatCompletionRequest,
        context: ServicerContext,
    ) -> providers_pb2.ChatCompleted:
        routes = await self._routes(request, context)
        body = request.chat
        identity = Identity(request.completion_id, request.model, request.created_unix)
        request_fields = {"request_id": request.request_id, "model": request.model, "stream": False}
        with Failover(self.breakers, routes, request_fields) as failover:
            for attempt in failover.attempts():
                route = attempt.route
                try:
                    done = await self._complete(route, body, request, identity)
                except UpstreamError as error:
                    attempt.failed(error, output_started=False)
                    continue
                attempt.succeeded()
                done.provider = route.provider
                return done
            final = failover.final_error()
        await self._abort(context, final)

    async def ChatCompletion(
        self,
        request: providers_pb2.ChatCompletionRequest,
        context: ServicerContext,
    ) -> AsyncIterator[providers_pb2.ChatCompletionEvent]:
        routes = await self._routes(request, context)
        body = request.chat
        identity = Identity(request.completion_id, request.model, request.created_unix)
        # The same for every route tried; the gateway's hold counts both.
        prompt_chars, image_parts = prompt_size(body.request)
        request_fields = {
            "request_id": request.request_id,
            "model": request.model,
            "stream": request.stream,
        }
        # Leaving this block gives back the probes the plan reserved and did not
        # use, including when the client goes away in the middle of one.
        with Failover(self.breakers, routes, request_fields) as failover:
            for attempt in failover.attempts():
                route = attempt.route
                # A stream's accounting (None for a whole answer: no output before it).
                translator: StreamAccounting | None = None
                try:
                    if request.stream:
                        translator, chunks = self._stream(
                            route, body, request, identity, prompt_chars, image_parts
                        )
                        async for chunk in chunks:
                            if translator.output_started:
                                attempt.output_started()
                            yield _chunk_event(chunk)
                        closing, usage = translator.finish()
                        attempt.succeeded()
                        for chunk in closing:
                            yield _chunk_event(chunk)
                        yield providers_pb2.ChatCompletionEvent(
                            usage=_usage_pb(usage), provider=route.provider
                        )
                    else:
                        done = await self._complete(route, body, request, identity)
                        attempt.succeeded()
                        done.provider = route.provider
                        for event in completed_events(done):
                            yield event
                    return
                except UpstreamError as error:
                    started = translator is not None and translator.output_started
                    attempt.failed(error, output_started=started)
                    if translator is not None and started:
                        # Output reached the client: no second route, end in-band.
                        yield providers_pb2.ChatCompletionEvent(
                            failure=providers_pb2.StreamFailure(
                                message="The upstream AI provider failed mid-stream.",
                                usage=_usage_pb(translator.estimated_usage()),
                            ),
                            provider=route.provider,
                        )
                        return
            final = failover.final_error()
        await self._abort(context, final)
