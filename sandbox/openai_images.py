"""OpenAI Images API (generations + edits): validate a request, plan and build the answer.

No I/O here: the server hands in parsed JSON or multipart fields and the clock.

Sizes: `size` is "WIDTHxHEIGHT" (1..8192 each) or "auto" (1024x1024); xAI-style
`aspect_ratio` ("W:H", decimals allowed, or "auto") with `resolution` (1k/2k/4k ->
long side 1024/2048/4096) is accepted instead. The PNG actually drawn keeps that
ratio exactly with its long side capped at png.RENDER_CAP (512).

Usage (documented because tests may assert it):
  input_tokens  = ceil(len(prompt) / 4) text tokens + 256 per reference image
  output_tokens = n * ceil(width * height / 1024) for the requested (not rendered) size
"""

from __future__ import annotations

import base64
import math
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from sandbox import directives, media, png
from sandbox.errors import ApiError, invalid

MAX_N = 10
MAX_EDGE = 8192
MAX_PROMPT_CHARS = 32_000
MAX_REFERENCES = 16
MODERATION_MESSAGE = (
    "Your request was rejected by the safety system. If you believe this is an error, "
    "contact us and include the request ID."
)
MAX_REFERENCE_BYTES = 50 * 1024 * 1024
IMAGE_TOKENS_PER_REFERENCE = 256
LONG_SIDE = {"1k": 1024, "2k": 2048, "4k": 4096}
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp")

_SIZE = re.compile(r"([0-9]{1,5})x([0-9]{1,5})")
_RATIO = re.compile(r"([0-9]{1,3}(?:\.[0-9]{1,2})?):([0-9]{1,3}(?:\.[0-9]{1,2})?)")

# Fields we understand; anything else is a 400, as OpenAI answers unknown parameters.
_COMMON = frozenset(
    {"model", "prompt", "n", "size", "quality", "response_format", "output_format"}
    | {"aspect_ratio", "resolution", "background", "moderation", "user", "output_compression"}
)
_EDIT_ONLY = frozenset({"image", "image[]", "images", "mask", "input_fidelity"})


@dataclass(frozen=True)
class Upload:
    """One reference image as it arrived (a multipart file part or a data: URL)."""

    field: str
    filename: str
    declared_type: str
    data: bytes


@dataclass(frozen=True)
class ImageJob:
    model: str
    prompt: str
    n: int
    width: int  # as requested
    height: int
    size_label: str  # what the answer reports as `size`
    quality: str
    response_format: str  # "b64_json" | "url"
    references: tuple[Upload, ...]
    directives: directives.Directives
    seed_text: str

    @property
    def rendered(self) -> tuple[int, int]:
        return png.fit(self.width, self.height)


# --- request validation ----------------------------------------------------------------


def parse_generation(body: object) -> ImageJob:
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.", code="invalid_type")
    _reject_unknown(body, _COMMON)
    return _job(body, ())


def parse_edit_json(body: object) -> ImageJob:
    """JSON edits: `images: [{"image_url"|"url": data-URL}]` or `image: {"url": data-URL}`."""
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.", code="invalid_type")
    _reject_unknown(body, _COMMON | _EDIT_ONLY)
    refs: list[object] = []
    if "images" in body:
        if not isinstance(body["images"], list):
            raise _wrong_type("images", "an array of image references")
        refs = list(body["images"])
    elif "image" in body:
        refs = [body["image"]]
    uploads = []
    for i, ref in enumerate(refs):
        param = f"images[{i}]"
        url = ref.get("image_url") or ref.get("url") if isinstance(ref, dict) else None
        if not isinstance(url, str):
            raise _wrong_type(param, "an object with an 'image_url' or 'url' string")
        declared, data = media.decode_data_url(url, param)
        uploads.append(Upload(param, f"image{i}", declared, data))
    return _job(body, tuple(uploads))


def parse_edit_form(fields: dict[str, str], files: list[Upload]) -> ImageJob:
    """multipart/form-data edits: text fields plus `image[]` (or `image`) file parts."""
    unknown = sorted(set(fields) - _COMMON - _EDIT_ONLY)
    if unknown:
        raise _unknown(unknown[0])
    body: dict[str, Any] = dict(fields)
    for key in ("n", "output_compression"):
        if key in body:
            raw = body[key]
            if not re.fullmatch(r"[0-9]{1,6}", raw):
                raise _wrong_type(key, "an integer")
            body[key] = int(raw)
    images = [f for f in files if f.field in ("image", "image[]")]
    return _job(body, tuple(images))


def _job(body: dict[str, Any], references: tuple[Upload, ...]) -> ImageJob:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("You must provide a model parameter (a string).", param="model")
    prompt = body.get("prompt")
    if prompt is None:
        raise _missing("prompt")
    if not isinstance(prompt, str):
        raise _wrong_type("prompt", "a string")
    if not prompt.strip():
        raise invalid("'prompt' must not be empty.", param="prompt", code="invalid_value")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise invalid(
            f"'prompt' is longer than {MAX_PROMPT_CHARS} characters.",
            param="prompt",
            code="string_above_max_length",
        )
    n = body.get("n", 1)
    if not isinstance(n, int) or isinstance(n, bool):
        raise _wrong_type("n", "an integer")
    if not 1 <= n <= MAX_N:
        raise invalid(f"Invalid 'n': must be between 1 and {MAX_N}.", param="n")
    width, height, label = _size(body)
    quality = _choice(body, "quality", ("auto", "low", "medium", "high", "standard", "hd"), "auto")
    response_format = _choice(body, "response_format", ("b64_json", "url"), "b64_json")
    _choice(body, "output_format", ("png",), "png", why="the sandbox renders PNG only")
    for i, ref in enumerate(references):
        _check_reference(i, ref)
    found = directives.parse(prompt, allowed=directives.MEDIA, param="prompt")
    if found.moderation:
        raise invalid(MODERATION_MESSAGE, code="moderation_blocked")
    return ImageJob(
        model=model,
        prompt=prompt,
        n=n,
        width=width,
        height=height,
        size_label=label,
        quality=quality,
        response_format=response_format,
        references=references,
        directives=found,
        seed_text=f"{model}\n{directives.remove(prompt)}",
    )


def _size(body: dict[str, Any]) -> tuple[int, int, str]:
    size = body.get("size")
    ratio = body.get("aspect_ratio")
    if size is not None and ratio is not None:
        raise invalid(
            "'size' and 'aspect_ratio' are mutually exclusive.", param="size", code="invalid_value"
        )
    if size is not None:
        if not isinstance(size, str):
            raise _wrong_type("size", "a string")
        if size == "auto":
            return 1024, 1024, "1024x1024"
        match = _SIZE.fullmatch(size)
        if match is None:
            raise invalid(
                f"Invalid 'size': {size!r}; expected 'WIDTHxHEIGHT' or 'auto'.",
                param="size",
                code="invalid_value",
            )
        width, height = int(match.group(1)), int(match.group(2))
        if not (1 <= width <= MAX_EDGE and 1 <= height <= MAX_EDGE):
            raise invalid(
                f"Invalid 'size': each side must be between 1 and {MAX_EDGE} pixels.",
                param="size",
                code="invalid_value",
            )
        return width, height, size
    resolution = body.get("resolution", "1k")
    if not isinstance(resolution, str) or resolution.lower() not in LONG_SIDE:
        raise invalid(
            "Invalid 'resolution': expected one of 1k, 2k, 4k.",
            param="resolution",
            code="invalid_value",
        )
    long_side = LONG_SIDE[resolution.lower()]
    if ratio is None or ratio == "auto":
        return long_side, long_side, f"{long_side}x{long_side}"
    match = _RATIO.fullmatch(ratio) if isinstance(ratio, str) else None
    if match is None or not float(match.group(1)) > 0 or not float(match.group(2)) > 0:
        raise invalid(
            f"Invalid 'aspect_ratio': {ratio!r}; expected 'W:H' or 'auto'.",
            param="aspect_ratio",
            code="invalid_value",
        )
    exact = Fraction(match.group(1)) / Fraction(match.group(2))
    a, b = exact.numerator, exact.denominator
    k = long_side // max(a, b)
    if k < 1:
        raise invalid(
            f"Invalid 'aspect_ratio': {ratio!r} is too extreme.",
            param="aspect_ratio",
            code="invalid_value",
        )
    return a * k, b * k, f"{a * k}x{b * k}"


def _check_reference(i: int, ref: Upload) -> None:
    param = f"image[{i}]"
    if len(ref.data) > MAX_REFERENCE_BYTES:
        raise invalid(
            f"Invalid '{param}': images must be under {MAX_REFERENCE_BYTES // 2**20} MB.",
            param=param,
            code="image_too_large",
        )
    actual = media.sniff(ref.data)
    if actual not in IMAGE_TYPES:
        raise invalid(
            f"Invalid '{param}': unsupported image format. Supported formats are"
            " 'image/jpeg', 'image/png' and 'image/webp'.",
            param=param,
            code="invalid_image_format",
        )
    if ref.declared_type and ref.declared_type not in (actual, "application/octet-stream"):
        raise invalid(
            f"Invalid '{param}': declared as {ref.declared_type!r} but the bytes are {actual}.",
            param=param,
            code="invalid_image_format",
        )


def check_edit_has_images(job: ImageJob) -> None:
    if not job.references:
        raise _missing("image")
    if len(job.references) > MAX_REFERENCES:
        raise invalid(
            f"Invalid 'image': at most {MAX_REFERENCES} images per edit.",
            param="image",
            code="invalid_value",
        )


def _choice(
    body: dict[str, Any], key: str, allowed: tuple[str, ...], default: str, why: str = ""
) -> str:
    value = body.get(key, default)
    if value not in allowed:
        extra = f" ({why})" if why else ""
        raise invalid(
            f"Invalid value for '{key}': expected one of {', '.join(allowed)}{extra}.",
            param=key,
            code="invalid_value",
        )
    return str(value)


def _reject_unknown(body: dict[str, Any], known: frozenset[str]) -> None:
    unknown = sorted(set(body) - known)
    if unknown:
        raise _unknown(unknown[0])


def _unknown(name: str) -> ApiError:
    return invalid(f"Unknown parameter: '{name}'.", param=name, code="unknown_parameter")


def _missing(param: str) -> ApiError:
    return invalid(
        f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
    )


def _wrong_type(param: str, expected: str) -> ApiError:
    return invalid(
        f"Invalid type for '{param}': expected {expected}.", param=param, code="invalid_type"
    )


# --- the answer ------------------------------------------------------------------------


def render(job: ImageJob) -> list[bytes]:
    """One PNG per requested image; image i is seeded by (model, prompt, i)."""
    width, height = job.rendered
    refs = "".join(f"\n{len(r.data)}" for r in job.references)
    return [png.render(width, height, f"{job.seed_text}{refs}\n{i}") for i in range(job.n)]


def usage(job: ImageJob) -> dict[str, Any]:
    text = math.ceil(len(job.prompt) / 4)
    image = IMAGE_TOKENS_PER_REFERENCE * len(job.references)
    output = job.n * math.ceil(job.width * job.height / 1024)
    return {
        "input_tokens": text + image,
        "input_tokens_details": {"text_tokens": text, "image_tokens": image},
        "output_tokens": output,
        "total_tokens": text + image + output,
    }


def response_body(
    job: ImageJob, images: list[bytes], urls: list[str], created: int
) -> dict[str, Any]:
    """gpt-image's answer shape; `urls` replaces b64_json when response_format is "url"."""
    if job.response_format == "url":
        data = [{"url": url} for url in urls]
    else:
        data = [{"b64_json": base64.b64encode(image).decode()} for image in images]
    return {
        "created": created,
        "background": "opaque",
        "data": data,
        "output_format": "png",
        "quality": "medium" if job.quality == "auto" else job.quality,
        "size": job.size_label,
        "usage": usage(job),
    }
