"""OpenAI Images API: our ImageRequest -> the upstream request; its answer -> image bytes.

Pure (no I/O). Two dialects of the same API (Provider.image_dialect):
  openai  size="WIDTHxHEIGHT", output_format=png; edits are multipart/form-data with one
          `image[]` file part per reference (OpenAI; also what the sandbox speaks)
  xai     aspect_ratio + resolution, response_format=b64_json; edits are JSON with
          data: URLs (xAI's /v1/images/edits takes no multipart)

Sizes: the resolution tier sets the long side (1k -> 1024, 2k -> 2048, 4k -> 4096), the
aspect ratio is kept EXACTLY, both sides are multiples of 16, and the provider's limits
(longest edge, min/max pixel count) move the size to the nearest one that is allowed.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from dataclasses import dataclass
from typing import Any

import orjson

from services.providers.adapters.openai_chat_translate import UpstreamProtocolError
from services.providers.media import ImageRequest, Reference
from services.providers.routes import Provider

LONG_SIDE = {"1k": 1024, "2k": 2048, "4k": 4096}
DEFAULT_RESOLUTION = "1k"
SIZE_MULTIPLE = 16
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp")
_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
_RATIO = re.compile(r"([1-9][0-9]{0,2}):([1-9][0-9]{0,2})")

# What xAI's aspect_ratio accepts (each with its width/height, to pick the nearest).
XAI_ASPECT_RATIOS: dict[str, float] = {
    r: float(r.split(":")[0]) / float(r.split(":")[1])
    for r in (
        "1:1",
        "3:4",
        "4:3",
        "9:16",
        "16:9",
        "2:3",
        "3:2",
        "9:19.5",
        "19.5:9",
        "9:20",
        "20:9",
        "1:2",
        "2:1",
    )
}
XAI_RESOLUTIONS = ("1k", "2k")


class ImageRequestError(ValueError):
    """Our request cannot be put to this upstream (the client asked for something it lacks)."""


@dataclass(frozen=True, slots=True)
class SizeLimits:
    max_edge: int = 4096
    min_pixels: int = 0  # 0 = no limit
    max_pixels: int = 0  # 0 = no limit
    multiple: int = SIZE_MULTIPLE

    @classmethod
    def of(cls, provider: Provider) -> SizeLimits:
        return cls(provider.image_max_edge, provider.image_min_pixels, provider.image_max_pixels)


@dataclass(frozen=True, slots=True)
class JsonCall:
    path: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class MultipartCall:
    path: str
    fields: dict[str, str]
    files: list[tuple[str, tuple[str, bytes, str]]]  # httpx's files= shape


def parse_ratio(text: str) -> tuple[int, int]:
    """'16:9' -> (16, 9), reduced ('32:18' -> (16, 9))."""
    match = _RATIO.fullmatch(text)
    if match is None:
        raise ImageRequestError(f"unsupported aspect ratio {text!r}")
    a, b = int(match.group(1)), int(match.group(2))
    g = math.gcd(a, b)
    return a // g, b // g


def output_size(
    aspect_ratio: str, resolution: str, limits: SizeLimits = SizeLimits()
) -> tuple[int, int] | None:
    """WIDTH, HEIGHT for (aspect ratio, tier); None when both are the model's default.

    The result is a * k by b * k for the reduced ratio a:b, so the ratio is exact; k
    is the largest step that keeps the long side within the tier, then moved down for
    max_pixels and up for min_pixels (both within max_edge).
    """
    if not aspect_ratio and not resolution:
        return None
    a, b = parse_ratio(aspect_ratio or "1:1")
    tier = (resolution or DEFAULT_RESOLUTION).lower()
    if tier not in LONG_SIDE:
        raise ImageRequestError(f"unsupported resolution {resolution!r}")
    m = limits.multiple
    step = math.lcm(m // math.gcd(m, a), m // math.gcd(m, b))
    unit_w, unit_h = a * step, b * step  # the smallest allowed size with this ratio
    longest = max(unit_w, unit_h)
    k_max = limits.max_edge // longest
    if k_max < 1:
        raise ImageRequestError(f"aspect ratio {aspect_ratio} does not fit this model")
    k = max(1, min(LONG_SIDE[tier] // longest, k_max))

    def pixels(k: int) -> int:
        return unit_w * unit_h * k * k

    while limits.max_pixels and k > 1 and pixels(k) > limits.max_pixels:
        k -= 1
    while limits.min_pixels and pixels(k) < limits.min_pixels and k < k_max:
        k += 1
    if (limits.max_pixels and pixels(k) > limits.max_pixels) or (
        limits.min_pixels and pixels(k) < limits.min_pixels
    ):
        raise ImageRequestError(f"no {aspect_ratio or '1:1'} size fits this model's limits")
    return unit_w * k, unit_h * k


def nearest_xai_ratio(aspect_ratio: str) -> str:
    """The closest ratio xAI offers (21:9 -> 20:9), compared on a log scale."""
    a, b = parse_ratio(aspect_ratio)
    want = math.log(a / b)
    return min(XAI_ASPECT_RATIOS, key=lambda r: abs(math.log(XAI_ASPECT_RATIOS[r]) - want))


def _image_references(request: ImageRequest) -> tuple[Reference, ...]:
    for ref in request.references:
        if ref.content_type not in IMAGE_TYPES:
            raise ImageRequestError(f"reference of type {ref.content_type} is not an image")
    return request.references


def data_url(ref: Reference) -> str:
    return f"data:{ref.content_type};base64,{base64.b64encode(ref.data).decode()}"


def build_call(request: ImageRequest, dialect: str, limits: SizeLimits) -> JsonCall | MultipartCall:
    """The HTTP call for this request: generations without references, edits with them."""
    refs = _image_references(request)
    if dialect == "xai":
        body: dict[str, Any] = {
            "model": request.upstream_model,
            "prompt": request.prompt,
            "n": 1,
            "response_format": "b64_json",
        }
        if request.aspect_ratio:
            body["aspect_ratio"] = nearest_xai_ratio(request.aspect_ratio)
        if request.resolution:
            tier = request.resolution.lower()
            if tier not in LONG_SIDE:
                raise ImageRequestError(f"unsupported resolution {request.resolution!r}")
            body["resolution"] = tier if tier in XAI_RESOLUTIONS else XAI_RESOLUTIONS[-1]
        if not refs:
            return JsonCall("/images/generations", body)
        images = [{"url": data_url(r), "type": "image_url"} for r in refs]
        if len(images) == 1:
            body["image"] = images[0]
        else:
            body["images"] = images
        return JsonCall("/images/edits", body)

    size = output_size(request.aspect_ratio, request.resolution, limits)
    fields: dict[str, Any] = {
        "model": request.upstream_model,
        "prompt": request.prompt,
        "n": 1,
        "output_format": "png",
    }
    if size is not None:
        fields["size"] = f"{size[0]}x{size[1]}"
    if not refs:
        return JsonCall("/images/generations", fields)
    files = [
        ("image[]", (f"image-{i + 1}.{_EXTENSIONS[r.content_type]}", r.data, r.content_type))
        for i, r in enumerate(refs)
    ]
    return MultipartCall("/images/edits", {k: str(v) for k, v in fields.items()}, files)


def image_bytes(raw: bytes) -> bytes:
    """The first image of an Images API answer, decoded from b64_json."""
    body = orjson.loads(raw)
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list) or not data or not isinstance(data[0], dict):
        raise UpstreamProtocolError("the answer has no images")
    encoded = data[0].get("b64_json")
    if not isinstance(encoded, str) or not encoded:
        kind = "a URL" if data[0].get("url") else "no image"
        raise UpstreamProtocolError(f"the answer carries {kind} instead of b64_json")
    try:
        decoded = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise UpstreamProtocolError("b64_json is not valid base64") from None
    if not decoded:
        raise UpstreamProtocolError("the image is empty")
    return decoded


def sniff_image(data: bytes) -> str | None:
    """image/png, image/jpeg or image/webp by magic number; None for anything else."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None
