"""The OpenAI Chat Completions protocol over HTTP (also DeepSeek, GLM, Kimi, ...)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
from aiport.v1 import providers_pb2, text_pb2

from services.common.sse import SseParser
from services.common.usage import Usage
from services.providers.adapters.http import (
    api_client,
    raise_for_status,
    read_limited,
    upstream_failures,
)
from services.providers.adapters.openai_chat_translate import (
    ChunkTranslator,
    Identity,
    public_completion,
    upstream_request,
)
from services.providers.errors import UpstreamError, safe_upstream_message
from services.providers.routes import Provider, Route

log = logging.getLogger(__name__)

MAX_COMPLETION_BYTES = 32 * 1024 * 1024


class OpenAIChatAdapter:
    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self.client = api_client(provider)

    async def close(self) -> None:
        await self.client.aclose()

    def _post(self, body: dict[str, Any], request_id: str) -> httpx.Request:
        return self.client.build_request(
            "POST",
            "/chat/completions",
            content=orjson.dumps(body),
            headers={"Content-Type": "application/json", "X-Request-Id": request_id},
        )

    async def complete(
        self,
        route: Route,
        request: providers_pb2.CanonicalChat,
        identity: Identity,
        request_id: str,
    ) -> tuple[text_pb2.TextCompletion, Usage]:
        body = upstream_request(
            request,
            route.upstream_model,
            stream=False,
            max_tokens_field=self.provider.max_tokens_field,
            drop_params=self.provider.drop_params,
        )
        with upstream_failures():
            response = await self.client.send(self._post(body, request_id), stream=True)
            try:
                await raise_for_status(response, self.provider)
                raw = await read_limited(response, MAX_COMPLETION_BYTES)
            finally:
                await response.aclose()
            return public_completion(orjson.loads(raw), identity)

    async def stream(
        self,
        route: Route,
        request: providers_pb2.CanonicalChat,
        identity: Identity,
        request_id: str,
        translator: ChunkTranslator,
    ) -> AsyncIterator[text_pb2.TextChunk]:
        """Canonical chunks as they arrive; the caller reads usage from the translator."""
        body = upstream_request(
            request,
            route.upstream_model,
            stream=True,
            max_tokens_field=self.provider.max_tokens_field,
            drop_params=self.provider.drop_params,
        )
        parser = SseParser()
        with upstream_failures():
            response = await self.client.send(self._post(body, request_id), stream=True)
            try:
                await raise_for_status(response, self.provider)
                async for piece in response.aiter_bytes():
                    for event in parser.feed(piece):
                        if event.data == b"[DONE]":
                            return
                        payload = orjson.loads(event.data)
                        if isinstance(payload, dict) and "error" in payload:
                            message = safe_upstream_message(event.data, self.provider.api_key)
                            raise UpstreamError("failed", f"upstream stream error: {message}")
                        for chunk in translator.feed(payload):
                            yield chunk
            finally:
                await response.aclose()
            # The body ended without [DONE]: the upstream broke off.
            raise UpstreamError("failed", "upstream stream ended early")
