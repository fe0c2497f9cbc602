"""The OpenAI Images protocol over HTTP (OpenAI gpt-image, xAI Grok Imagine, the sandbox).

Implements services.providers.media.ImageAdapter. Request building and answer parsing
live in openai_images_translate (pure); this module only moves bytes.
"""

from __future__ import annotations

import logging

import httpx
import orjson

from services.providers.adapters.http import (
    api_client,
    raise_for_status,
    read_limited,
    upstream_failures,
)
from services.providers.adapters.openai_images_translate import (
    ImageRequestError,
    JsonCall,
    SizeLimits,
    build_call,
    image_bytes,
    sniff_image,
)
from services.providers.errors import UpstreamError
from services.providers.media import GeneratedImage, ImageRequest
from services.providers.routes import Provider

log = logging.getLogger(__name__)

# A 4k PNG is tens of MB, and base64 adds a third.
MAX_IMAGE_ANSWER_BYTES = 96 * 1024 * 1024


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
            raise UpstreamError(
                "rejected", f"The upstream cannot do this: {exc}", reason=str(exc)
            ) from exc
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
