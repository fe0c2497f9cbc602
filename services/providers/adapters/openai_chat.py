"""The OpenAI Chat Completions protocol over HTTP (also DeepSeek, GLM, Kimi, ...)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import orjson

from services.common.sse import SseError, SseParser
from services.providers.adapters.openai_chat_translate import (
    ChunkTranslator,
    Identity,
    TokenCounts,
    UpstreamProtocolError,
    public_completion,
    upstream_request,
)
from services.providers.errors import UpstreamError, safe_upstream_message
from services.providers.routes import Provider, Route

log = logging.getLogger(__name__)

MAX_ERROR_BODY_BYTES = 64 * 1024
MAX_COMPLETION_BYTES = 32 * 1024 * 1024


@contextmanager
def upstream_failures() -> Iterator[None]:
    """Every way an upstream call can go wrong, as an UpstreamError."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise UpstreamError("timeout", "upstream did not answer in time") from exc
    except httpx.HTTPError as exc:
        raise UpstreamError("failed", f"upstream connection failed: {type(exc).__name__}") from exc
    except (orjson.JSONDecodeError, UpstreamProtocolError, SseError) as exc:
        raise UpstreamError("failed", f"upstream sent a malformed answer: {exc}") from exc


class OpenAIChatAdapter:
    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self.client = httpx.AsyncClient(
            base_url=provider.base_url,
            timeout=httpx.Timeout(
                connect=provider.connect_timeout_seconds,
                read=provider.read_timeout_seconds,
                write=provider.read_timeout_seconds,
                pool=provider.connect_timeout_seconds,
            ),
            limits=httpx.Limits(
                max_connections=provider.max_connections,
                max_keepalive_connections=provider.max_connections,
            ),
            headers={"Authorization": f"Bearer {provider.api_key}"},
        )

    async def close(self) -> None:
        await self.client.aclose()

    def _post(self, body: dict[str, Any], request_id: str) -> httpx.Request:
        return self.client.build_request(
            "POST",
            "/chat/completions",
            content=orjson.dumps(body),
            headers={"Content-Type": "application/json", "X-Request-Id": request_id},
        )

    async def _raise_for_status(self, response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        raw = b""
        async for piece in response.aiter_bytes():
            raw += piece
            if len(raw) > MAX_ERROR_BODY_BYTES:
                break
        message = safe_upstream_message(raw, self.provider.api_key)
        log.warning(
            "upstream error",
            extra={
                "fields": {
                    "provider": self.provider.name,
                    "status": response.status_code,
                    "upstream_message": message,
                }
            },
        )
        if response.status_code in (400, 422):
            raise UpstreamError("rejected", f"The upstream rejected the request: {message}")
        raise UpstreamError("failed", f"upstream answered HTTP {response.status_code}")

    async def complete(
        self, route: Route, request: dict[str, Any], identity: Identity, request_id: str
    ) -> tuple[bytes, TokenCounts]:
        body = upstream_request(
            request,
            route.upstream_model,
            stream=False,
            max_tokens_field=self.provider.max_tokens_field,
        )
        with upstream_failures():
            response = await self.client.send(self._post(body, request_id), stream=True)
            try:
                await self._raise_for_status(response)
                raw = bytearray()
                async for piece in response.aiter_bytes():
                    raw += piece
                    if len(raw) > MAX_COMPLETION_BYTES:
                        raise UpstreamError("failed", "upstream answer exceeds the size limit")
            finally:
                await response.aclose()
            return public_completion(orjson.loads(raw), identity)

    async def stream(
        self,
        route: Route,
        request: dict[str, Any],
        identity: Identity,
        request_id: str,
        translator: ChunkTranslator,
    ) -> AsyncIterator[bytes]:
        """Public chunks as they arrive; the caller reads usage from the translator."""
        body = upstream_request(
            request,
            route.upstream_model,
            stream=True,
            max_tokens_field=self.provider.max_tokens_field,
        )
        parser = SseParser()
        with upstream_failures():
            response = await self.client.send(self._post(body, request_id), stream=True)
            try:
                await self._raise_for_status(response)
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
