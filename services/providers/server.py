"""The Providers gRPC service: picks the route, runs its adapter, streams events."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc
import orjson
from aiport.v1 import common_pb2, providers_pb2, providers_pb2_grpc

from services.common.grpc_server import ServicerContext
from services.providers.adapters.openai_chat import OpenAIChatAdapter
from services.providers.adapters.openai_chat_translate import (
    ChunkTranslator,
    Identity,
    TokenCounts,
)
from services.providers.errors import UpstreamError
from services.providers.routes import Route, RouteTable

log = logging.getLogger(__name__)

UPSTREAM_FAILURE_KEY = "x-aiport-upstream-failure"


def _usage_pb(usage: TokenCounts) -> common_pb2.TokenUsage:
    return common_pb2.TokenUsage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cached_prompt_tokens=usage.cached_prompt_tokens,
        reasoning_tokens=usage.reasoning_tokens,
    )


def _prompt_chars(request: dict[str, object]) -> int:
    total = 0
    for message in request.get("messages") or []:  # type: ignore[attr-defined]
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            total += sum(len(p.get("text", "")) for p in content if isinstance(p, dict))
    return total


class ProvidersService(providers_pb2_grpc.ProvidersServicer):
    def __init__(self, table: RouteTable) -> None:
        self.table = table
        self.adapters = {
            name: OpenAIChatAdapter(provider)
            for name, provider in table.providers.items()
            if provider.protocol == "openai-chat"
        }

    async def close(self) -> None:
        for adapter in self.adapters.values():
            await adapter.close()

    def _route(self, model: str) -> Route | None:
        # The first route serves; failover across routes arrives with issue 4.
        routes = self.table.routes_for(model)
        return routes[0] if routes else None

    async def _abort(self, context: ServicerContext, error: UpstreamError) -> None:
        if error.kind == "rejected":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, error.message)
        code = (
            grpc.StatusCode.DEADLINE_EXCEEDED
            if error.kind == "timeout"
            else grpc.StatusCode.UNAVAILABLE
        )
        await context.abort(code, error.message, trailing_metadata=((UPSTREAM_FAILURE_KEY, "1"),))

    async def ChatCompletion(
        self,
        request: providers_pb2.ChatCompletionRequest,
        context: ServicerContext,
    ) -> AsyncIterator[providers_pb2.ChatCompletionEvent]:
        route = self._route(request.model)
        if route is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no route for model {request.model}")
            return
        adapter = self.adapters[route.provider]
        body = orjson.loads(request.request_json)
        identity = Identity(request.completion_id, request.model, request.created_unix)
        fields = {
            "request_id": request.request_id,
            "model": request.model,
            "provider": route.provider,
            "stream": request.stream,
        }
        if not request.stream:
            try:
                completion, usage = await adapter.complete(
                    route, body, identity, request.request_id
                )
            except UpstreamError as error:
                log.warning("upstream failed", extra={"fields": {**fields, "error": error.message}})
                await self._abort(context, error)
                return
            yield providers_pb2.ChatCompletionEvent(completion=completion)
            yield providers_pb2.ChatCompletionEvent(usage=_usage_pb(usage))
            return

        translator = ChunkTranslator(identity, prompt_chars=_prompt_chars(body))
        try:
            async for chunk in adapter.stream(
                route, body, identity, request.request_id, translator
            ):
                yield providers_pb2.ChatCompletionEvent(chunk=chunk)
        except UpstreamError as error:
            log.warning(
                "upstream failed",
                extra={
                    "fields": {
                        **fields,
                        "error": error.message,
                        "output_started": translator.output_started,
                    }
                },
            )
            if not translator.output_started:
                await self._abort(context, error)
                return
            yield providers_pb2.ChatCompletionEvent(
                failure=providers_pb2.StreamFailure(
                    message="The upstream AI provider failed mid-stream.",
                    usage=_usage_pb(translator.estimated_usage()),
                )
            )
            return
        closing, usage = translator.finish()
        for chunk in closing:
            yield providers_pb2.ChatCompletionEvent(chunk=chunk)
        yield providers_pb2.ChatCompletionEvent(usage=_usage_pb(usage))
