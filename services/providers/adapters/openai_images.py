"""The OpenAI Images protocol over HTTP (OpenAI gpt-image, xAI Grok Imagine, the sandbox).

Implements services.providers.media.ImageAdapter. Request building and answer parsing
live in openai_images_translate (pure); this module only moves bytes. The two helpers
`read_limited` and `raise_for_status` are shared with the video-task adapter.
"""

from __future__ import annotations

import logging

import httpx
import orjson

from services.providers.adapters.openai_chat import MAX_ERROR_BODY_BYTES, upstream_failures
from services.providers.adapters.openai_images_translate import (
    ImageRequestError,
    JsonCall,
    SizeLimits,
    build_call,
    image_bytes,
    sniff_image,
)
from services.providers.errors import UpstreamError, safe_upstream_message
from services.providers.media import GeneratedImage, ImageRequest
from services.providers.routes import Provider

log = logging.getLogger(__name__)

# A 4k PNG is tens of MB, and base64 adds a third.
MAX_IMAGE_ANSWER_BYTES = 96 * 1024 * 1024


def api_client(provider: Provider) -> httpx.AsyncClient:
    """The provider's client: base URL, Bearer key, its timeouts and connection cap."""
    return httpx.AsyncClient(
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


async def read_limited(response: httpx.Response, limit: int) -> bytes:
    raw = bytearray()
    async for piece in response.aiter_bytes():
        raw += piece
        if len(raw) > limit:
            raise UpstreamError("failed", "upstream answer exceeds the size limit")
    return bytes(raw)


async def raise_for_status(
    response: httpx.Response, provider: Provider, *, client_fault_possible: bool = True
) -> None:
    """4xx/5xx as UpstreamError: 400/422 are the client's request ("rejected", with the
    upstream's scrubbed message) when `client_fault_possible`; everything else "failed"."""
    if response.status_code < 400:
        return
    raw = b""
    async for piece in response.aiter_bytes():
        raw += piece
        if len(raw) > MAX_ERROR_BODY_BYTES:
            break
    message = safe_upstream_message(raw, provider.api_key)
    log.warning(
        "upstream error",
        extra={
            "fields": {
                "provider": provider.name,
                "status": response.status_code,
                "upstream_message": message,
            }
        },
    )
    if client_fault_possible and response.status_code in (400, 422):
        raise UpstreamError("rejected", f"The upstream rejected the request: {message}")
    raise UpstreamError("failed", f"upstream answered HTTP {response.status_code}")


class OpenAIImagesAdapter:
    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self.limits = SizeLimits.of(provider)
        self.client = api_client(provider)

    async def close(self) -> None:
        await self.client.aclose()

    def _request(self, request: ImageRequest) -> httpx.Request:
        try:
            call = build_call(request, self.provider.image_dialect, self.limits)
        except ImageRequestError as exc:
            raise UpstreamError("rejected", f"The upstream cannot do this: {exc}") from exc
        headers = {"X-Request-Id": request.request_id} if request.request_id else {}
        if isinstance(call, JsonCall):
            return self.client.build_request(
                "POST",
                call.path,
                content=orjson.dumps(call.body),
                headers={**headers, "Content-Type": "application/json"},
            )
        # httpx writes the multipart body and its boundary header.
        return self.client.build_request(
            "POST", call.path, data=call.fields, files=call.files, headers=headers
        )

    async def generate(self, request: ImageRequest) -> GeneratedImage:
        http_request = self._request(request)
        with upstream_failures():
            response = await self.client.send(http_request, stream=True)
            try:
                await raise_for_status(response, self.provider)
                raw = await read_limited(response, MAX_IMAGE_ANSWER_BYTES)
            finally:
                await response.aclose()
            data = image_bytes(raw)
        content_type = sniff_image(data)
        if content_type is None:
            raise UpstreamError("failed", "upstream answer is not a PNG, JPEG or WEBP image")
        return GeneratedImage(data=data, content_type=content_type)
