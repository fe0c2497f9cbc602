"""Anthropic's Messages API over HTTP (POST {base_url}/messages, base_url ending in /v1).

Credentials go in `x-api-key` (never an Authorization header), and every request
carries `anthropic-version` (ANTHROPIC_VERSION unless the provider's `headers`
set one). Translation lives in anthropic_messages_translate; the public JSON and
the usage accounting are the shared half's (public_completion, ChunkTranslator).
A Messages client's own request passes through instead (`complete_native`,
`stream_native`; anthropic_passthrough says what is kept and what is changed).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
from aiport.v1 import providers_pb2, text_pb2

from services.common.canonical_chat import without
from services.common.sse import SseParser
from services.common.usage import Usage
from services.providers.adapters.anthropic_messages_translate import (
    ANTHROPIC_VERSION,
    MessagesStream,
    messages_request,
    openai_completion,
)
from services.providers.adapters.anthropic_passthrough import (
    PROTOCOL,
    NativeMessagesStream,
    native_message,
    native_request,
)
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
)
from services.providers.errors import UpstreamError
from services.providers.routes import Provider, Route

log = logging.getLogger(__name__)

MAX_COMPLETION_BYTES = 32 * 1024 * 1024


class AnthropicMessagesAdapter:
    # A client speaking this protocol is passed through (ChatAdapter.native_protocol).
    native_protocol = PROTOCOL

    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self.client = api_client(provider, auth={"x-api-key": provider.api_key})
        if "anthropic-version" not in self.client.headers:
            self.client.headers["anthropic-version"] = ANTHROPIC_VERSION

    async def close(self) -> None:
        await self.client.aclose()

    def _body(
        self, route: Route, request: providers_pb2.CanonicalChat, stream: bool
    ) -> dict[str, Any]:
        # Parameters the provider is configured to drop go before translation,
        # as for the OpenAI adapter.
        chat = without(request, self.provider.drop_params)
        return messages_request(chat, route.upstream_model, stream=stream)

    def _native_body(
        self,
        route: Route,
        request: providers_pb2.CanonicalChat,
        native: providers_pb2.NativeRequest,
        stream: bool,
    ) -> dict[str, Any]:
        drop = self.provider.drop_params
        chat = without(request, drop)
        return native_request(native.body, chat, route.upstream_model, stream=stream, drop=drop)

    def _post(self, body: dict[str, Any], request_id: str) -> httpx.Request:
        return self.client.build_request(
            "POST",
            "/messages",
            content=orjson.dumps(body),
            headers={"Content-Type": "application/json", "X-Request-Id": request_id},
        )

    async def _message(self, body: dict[str, Any], request_id: str) -> bytes:
        """The upstream's whole answer to a non-stream request, as bytes."""
        with upstream_failures():
            response = await self.client.send(self._post(body, request_id), stream=True)
            try:
                await raise_for_status(response, self.provider)
                return await read_limited(response, MAX_COMPLETION_BYTES)
            finally:
                await response.aclose()

    async def complete(
        self,
        route: Route,
        request: providers_pb2.CanonicalChat,
        identity: Identity,
        request_id: str,
    ) -> tuple[text_pb2.TextCompletion, Usage]:
        raw = await self._message(self._body(route, request, stream=False), request_id)
        with upstream_failures():
            return public_completion(openai_completion(orjson.loads(raw)), identity)

    async def stream(
        self,
        route: Route,
        request: providers_pb2.CanonicalChat,
        identity: Identity,
        request_id: str,
        translator: ChunkTranslator,
    ) -> AsyncIterator[text_pb2.TextChunk]:
        """Canonical chunks as they arrive; the caller reads usage from the translator."""
        body = self._body(route, request, stream=True)
        parser = SseParser()
        events = MessagesStream(api_key=self.provider.api_key)
        with upstream_failures():
            response = await self.client.send(self._post(body, request_id), stream=True)
            try:
                await raise_for_status(response, self.provider)
                async for piece in response.aiter_bytes():
                    for event in parser.feed(piece):
                        for chunk in events.feed(event.event, event.data):
                            for canonical in translator.feed(chunk):
                                yield canonical
                        if events.done:
                            return
            finally:
                await response.aclose()
            # The body ended without message_stop: the upstream broke off.
            raise UpstreamError("failed", "upstream stream ended early")

    async def complete_native(
        self,
        route: Route,
        request: providers_pb2.CanonicalChat,
        native: providers_pb2.NativeRequest,
        identity: Identity,
        request_id: str,
    ) -> tuple[bytes, Usage]:
        """The upstream's own message (our id and model), and its usage."""
        body = self._native_body(route, request, native, stream=False)
        raw = await self._message(body, request_id)
        with upstream_failures():
            return native_message(raw, native.response_id, identity.model)

    async def stream_native(
        self,
        route: Route,
        request: providers_pb2.CanonicalChat,
        native: providers_pb2.NativeRequest,
        request_id: str,
        passthrough: NativeMessagesStream,
    ) -> AsyncIterator[bytes]:
        """The upstream's own events, as `passthrough` lets them out (it keeps the usage)."""
        body = self._native_body(route, request, native, stream=True)
        parser = SseParser()
        with upstream_failures():
            response = await self.client.send(self._post(body, request_id), stream=True)
            try:
                await raise_for_status(response, self.provider)
                async for piece in response.aiter_bytes():
                    for event in parser.feed(piece):
                        for frame in passthrough.feed(event.event, event.data):
                            yield frame
                        if passthrough.done:
                            return
            finally:
                await response.aclose()
            raise UpstreamError("failed", "upstream stream ended early")
