"""Gemini image output ("Nano Banana") over generateContent. Implements
services.providers.media.ImageAdapter.

Request: one user turn, the prompt as a text part followed by every reference image as an
inlineData part (img2img), and generationConfig
    responseModalities ["TEXT", "IMAGE"]    (Google's documented pair; the image is required)
    imageConfig.aspectRatio                 ours when Gemini offers it, else the nearest one
                                            Gemini offers (compared on a log scale: 9:21 -> 9:16)
    imageConfig.imageSize                   1k/2k/4k -> "1K"/"2K"/"4K"
(imageConfig fields only when the job asks for them: the model's defaults otherwise).

Answer: the last image inlineData part of the first candidate that is not a thought
(Gemini 3 image models may send interim "thought" images first); its bytes are sniffed,
not trusted to mimeType. A blocked prompt (promptFeedback.blockReason) or a safety
finishReason without an image is "rejected" (another route would refuse it too); any other
answer without an image is "failed".
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
from typing import Any

import httpx
import orjson

from services.providers.adapters.gemini import gemini_client, raise_for_gemini_status
from services.providers.adapters.gemini_translate import FILTER_REASONS, model_path
from services.providers.adapters.http import read_limited, upstream_failures
from services.providers.adapters.openai_images_translate import (
    ImageRequestError,
    parse_ratio,
    sniff_image,
)
from services.providers.errors import UpstreamError, UpstreamProtocolError
from services.providers.media import GeneratedImage, ImageRequest
from services.providers.routes import Provider

log = logging.getLogger(__name__)

# A 4K PNG is tens of MB, and base64 adds a third.
MAX_IMAGE_ANSWER_BYTES = 96 * 1024 * 1024
# Every Gemini image model takes these (3.1 Flash Image adds more extreme ones).
GEMINI_ASPECT_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
IMAGE_SIZES = {"1k": "1K", "2k": "2K", "4k": "4K"}
# What Gemini reads as an image reference.
REFERENCE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/heic", "image/heif")
RESPONSE_MODALITIES = ("TEXT", "IMAGE")


def gemini_aspect_ratio(aspect_ratio: str) -> str:
    """The ratio itself when Gemini offers it, else the nearest one it does."""
    a, b = parse_ratio(aspect_ratio)
    exact = f"{a}:{b}"
    if exact in GEMINI_ASPECT_RATIOS:
        return exact
    want = math.log(a / b)

    def distance(ratio: str) -> float:
        x, y = ratio.split(":")
        return abs(math.log(int(x) / int(y)) - want)

    return min(GEMINI_ASPECT_RATIOS, key=distance)


def image_request_body(request: ImageRequest) -> dict[str, Any]:
    """The generateContent body for an image job (raises ImageRequestError)."""
    if not request.prompt.strip():
        raise ImageRequestError("the prompt is empty")
    parts: list[dict[str, Any]] = [{"text": request.prompt}]
    for ref in request.references:
        if ref.content_type not in REFERENCE_TYPES:
            raise ImageRequestError(f"reference of type {ref.content_type} is not an image")
        parts.append(
            {
                "inlineData": {
                    "mimeType": ref.content_type,
                    "data": base64.b64encode(ref.data).decode(),
                }
            }
        )
    config: dict[str, Any] = {"responseModalities": list(RESPONSE_MODALITIES)}
    image_config: dict[str, Any] = {}
    if request.aspect_ratio:
        image_config["aspectRatio"] = gemini_aspect_ratio(request.aspect_ratio)
    if request.resolution:
        size = IMAGE_SIZES.get(request.resolution.lower())
        if size is None:
            raise ImageRequestError(f"unsupported resolution {request.resolution!r}")
        image_config["imageSize"] = size
    if image_config:
        config["imageConfig"] = image_config
    return {"contents": [{"role": "user", "parts": parts}], "generationConfig": config}


def image_from_response(body: Any) -> bytes:
    """The generated image's bytes; UpstreamError when there is none."""
    if not isinstance(body, dict):
        raise UpstreamProtocolError("the answer is not an object")
    feedback = body.get("promptFeedback")
    blocked = feedback.get("blockReason") if isinstance(feedback, dict) else None
    candidates = body.get("candidates") or []
    if not isinstance(candidates, list):
        raise UpstreamProtocolError("candidates is not a list")
    if not candidates:
        if blocked:
            raise UpstreamError(
                "rejected", f"The upstream refused the prompt ({blocked}).", code=str(blocked)[:80]
            )
        raise UpstreamProtocolError("the answer has no candidates")
    candidate = candidates[0]
    if not isinstance(candidate, dict):
        raise UpstreamProtocolError("the candidate is not an object")
    content = candidate.get("content") or {}
    parts = content.get("parts") if isinstance(content, dict) else None
    image: str | None = None
    for part in parts if isinstance(parts, list) else []:
        data = part.get("inlineData") if isinstance(part, dict) else None
        if (
            isinstance(data, dict)
            and part.get("thought") is not True
            and str(data.get("mimeType", "")).startswith("image/")
            and isinstance(data.get("data"), str)
        ):
            image = data["data"]
    reason = candidate.get("finishReason")
    if image is None:
        if reason in FILTER_REASONS:
            raise UpstreamError(
                "rejected", f"The upstream refused to draw this ({reason}).", code=str(reason)[:80]
            )
        raise UpstreamError("failed", f"upstream answered without an image (finishReason {reason})")
    try:
        decoded = base64.b64decode(image, validate=True)
    except (binascii.Error, ValueError):
        try:
            decoded = base64.urlsafe_b64decode(image)
        except (binascii.Error, ValueError):
            raise UpstreamProtocolError("inlineData is not valid base64") from None
    if not decoded:
        raise UpstreamProtocolError("the image is empty")
    return decoded


class GeminiImageAdapter:
    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self.client = gemini_client(provider)

    async def close(self) -> None:
        await self.client.aclose()

    def _request(self, request: ImageRequest) -> httpx.Request:
        try:
            body = image_request_body(request)
        except ImageRequestError as exc:
            raise UpstreamError(
                "rejected", f"The upstream cannot do this: {exc}", reason=str(exc)
            ) from exc
        headers = {"Content-Type": "application/json"}
        if request.request_id:
            headers["X-Request-Id"] = request.request_id
        return self.client.build_request(
            "POST",
            model_path(request.upstream_model, stream=False),
            content=orjson.dumps(body),
            headers=headers,
        )

    async def generate(self, request: ImageRequest) -> GeneratedImage:
        http_request = self._request(request)
        with upstream_failures():
            response = await self.client.send(http_request, stream=True)
            try:
                await raise_for_gemini_status(response, self.provider)
                raw = await read_limited(response, MAX_IMAGE_ANSWER_BYTES)
            finally:
                await response.aclose()
            data = image_from_response(orjson.loads(raw))
        content_type = sniff_image(data)
        if content_type is None:
            raise UpstreamError("failed", "upstream answer is not a PNG, JPEG or WEBP image")
        return GeneratedImage(data=data, content_type=content_type)
