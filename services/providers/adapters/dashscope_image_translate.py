"""DashScope (Alibaba Cloud Model Studio) image generation: our ImageRequest -> the upstream
call, and its answers -> task states and result URLs. Pure (no I/O).

Base URL: https://dashscope-intl.aliyuncs.com/api/v1 (Singapore) or
https://dashscope.aliyuncs.com/api/v1 (Beijing); keys do not cross regions. Which call each
model takes is what Alibaba's own API references document for it:

Wan 2.7 (wan2.7-image, wan2.7-image-pro): asynchronous task. "Wan2.7 - image generation and
editing API reference" (alibabacloud.com/help/en/model-studio/wan-image-generation-and-editing-
api-reference) and Qwen Cloud's "Wan 2.7 - Generate or edit an image" / "Retrieve image result"
(docs.qwencloud.com/api-reference/image-generation/wan27-image-gen-edit/...):
  POST /services/aigc/image-generation/generation    header X-DashScope-Async: enable
    {"model", "input": {"messages": [{"role": "user",
                                      "content": [{"text": PROMPT}, {"image": URL}, ...]}]},
     "parameters": {"size", "n", "watermark", "seed", "thinking_mode", ...}}
    -> {"output": {"task_id", "task_status": "PENDING"}, "request_id"}
  GET /tasks/{task_id}
    -> {"output": {"task_id", "task_status", "submit_time", ..., "choices": [{"finish_reason",
        "message": {"role": "assistant", "content": [{"image": URL, "type": "image"}]}}],
        "code"?, "message"?}, "usage": {"size": "W*H", "image_count"}, "request_id"}
  content: exactly one text item and 0..9 image items, each a public http(s) URL or a base64
  data: URL (JPEG/PNG/BMP/WEBP, 240..8000 px a side, ratio 1:8..8:1, <= 20 MB).
  size: "1K" | "2K" (default) | "4K" (wan2.7-image-pro text-to-image only), or "W*H" with
  768*768 <= W*H <= 2048*2048 (wan2.7-image-pro text-to-image: up to 4096*4096) and a ratio
  within 1:8..8:1. n: 1..4 (default 1). watermark: default false. Wan 2.7 takes neither
  prompt_extend nor negative_prompt (thinking_mode, on by default, plays that part).

Z-Image (z-image-turbo): text-to-image only, and the "Z-Image API reference"
(alibabacloud.com/help/en/model-studio/z-image-api-reference) documents only a synchronous call:
  POST /services/aigc/multimodal-generation/generation    (no async header)
    the same messages body with one text item; parameters {"size": "W*H", "prompt_extend",
    "seed"}; always one PNG; 512*512 <= W*H <= 2048*2048.
    -> {"output": {"choices": [...as above...]}, "usage": {"width", "height", "image_count"},
        "request_id"}
  prompt_extend is sent as false (its default; true rewrites the prompt and costs more).

Older DashScope image models (wanx, wan2.5 and earlier, qwen-image) use
/services/aigc/text2image/image-synthesis with input.prompt and answer output.results[].url.
No model here is sent there, but the answer parsers read that shape too.

Errors: HTTP 4xx/5xx with {"request_id", "code", "message"}; a task that ends FAILED carries
output.code and output.message. Task statuses: PENDING -> RUNNING -> SUCCEEDED | FAILED, and
CANCELED, UNKNOWN (an unknown or expired task id; task ids live 24 hours).

Sizes: with an aspect ratio we send "W*H" with the ratio EXACT (both sides multiples of 16;
see openai_images_translate.output_size), the long side set by the tier (1k/2k/4k ->
1024/2048/4096) and then moved into the model's pixel bounds (so 4k on a 2048*2048 model
becomes the largest size of that ratio within 2048*2048 pixels). Without an aspect ratio, Wan
gets the tier by name ("1K"/"2K", "4K" only where documented, else the largest allowed) so the
model keeps its own choice of ratio (for an edit: the input image's); Z-Image, which takes no
names, gets a square. A provider's image_max_edge / image_min_pixels / image_max_pixels can
only tighten a model's bounds.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from services.providers.adapters.openai_images_translate import (
    IMAGE_TYPES,
    LONG_SIDE,
    ImageRequestError,
    SizeLimits,
    data_url,
    output_size,
    parse_ratio,
)
from services.providers.errors import (
    MAX_MESSAGE_CHARS,
    UpstreamProtocolError,
    safe_upstream_message,
)
from services.providers.media import ImageRequest
from services.providers.routes import Provider

ASYNC_PATH = "/services/aigc/image-generation/generation"
SYNC_PATH = "/services/aigc/multimodal-generation/generation"
TASKS_PATH = "/tasks"
ASYNC_HEADER = "X-DashScope-Async"
TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_NO_MESSAGE = "no error message"

TaskStatus = Literal["pending", "running", "succeeded", "failed"]


class UnsupportedModel(ValueError):
    """The provider was configured with an upstream model this adapter does not know."""


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What one DashScope image model takes, from its API reference (module docstring)."""

    family: Literal["wan", "z-image"]
    asynchronous: bool
    max_references: int  # 0: text-to-image only
    t2i_limits: SizeLimits
    edit_limits: SizeLimits
    t2i_tiers: tuple[str, ...]  # size names it accepts ("1K", ...); () = "W*H" only
    edit_tiers: tuple[str, ...]
    max_ratio: float  # long side : short side
    default_tier: str  # our tier when only an aspect ratio is given


_WAN_STANDARD = SizeLimits(max_edge=4096, min_pixels=768 * 768, max_pixels=2048 * 2048)
WAN = ModelSpec(
    family="wan",
    asynchronous=True,
    max_references=9,
    t2i_limits=_WAN_STANDARD,
    edit_limits=_WAN_STANDARD,
    t2i_tiers=("1K", "2K"),
    edit_tiers=("1K", "2K"),
    max_ratio=8.0,
    default_tier="2k",
)
WAN_PRO = ModelSpec(
    family="wan",
    asynchronous=True,
    max_references=9,
    t2i_limits=SizeLimits(max_edge=4096, min_pixels=768 * 768, max_pixels=4096 * 4096),
    edit_limits=_WAN_STANDARD,
    t2i_tiers=("1K", "2K", "4K"),
    edit_tiers=("1K", "2K"),
    max_ratio=8.0,
    default_tier="2k",
)
# Only total pixels are documented; 2048 a side keeps 2k 1:1 (2048*2048) the largest square.
_Z_IMAGE_LIMITS = SizeLimits(max_edge=2048, min_pixels=512 * 512, max_pixels=2048 * 2048)
Z_IMAGE = ModelSpec(
    family="z-image",
    asynchronous=False,
    max_references=0,
    t2i_limits=_Z_IMAGE_LIMITS,
    edit_limits=_Z_IMAGE_LIMITS,
    t2i_tiers=(),
    edit_tiers=(),
    max_ratio=8.0,
    default_tier="1k",
)
# Exact names first, then families by prefix (dated snapshots such as wan2.7-image-2026-...).
MODELS: dict[str, ModelSpec] = {
    "wan2.7-image": WAN,
    "wan2.7-image-pro": WAN_PRO,
    "z-image-turbo": Z_IMAGE,
}
_PREFIXES: tuple[tuple[str, ModelSpec], ...] = (
    ("wan2.7-image-pro", WAN_PRO),
    ("wan2.7-image", WAN),
    ("z-image", Z_IMAGE),
)


def model_spec(upstream_model: str) -> ModelSpec:
    spec = MODELS.get(upstream_model)
    if spec is not None:
        return spec
    for prefix, candidate in _PREFIXES:
        if upstream_model.startswith(prefix):
            return candidate
    raise UnsupportedModel(f"dashscope-image does not know the model {upstream_model[:80]!r}")


@dataclass(frozen=True, slots=True)
class DashScopeCall:
    path: str
    body: dict[str, Any]
    asynchronous: bool  # send X-DashScope-Async: enable and poll the task it creates


@dataclass(frozen=True, slots=True)
class ImageTask:
    """One poll of an image task."""

    status: TaskStatus
    image_url: str = ""  # when succeeded
    error: str = ""  # when failed: short, scrubbed, safe to show a client
    upstream_status: str = ""  # PENDING, RUNNING, ... as the upstream said it
    code: str = ""  # the upstream's error code, when failed
    reason: str = ""  # the upstream's message alone, scrubbed, when failed


def limits_for(spec: ModelSpec, edit: bool, provider: Provider | None = None) -> SizeLimits:
    """The model's documented bounds, tightened (never widened) by the provider's config."""
    own = spec.edit_limits if edit else spec.t2i_limits
    if provider is None:
        return own
    max_pixels = own.max_pixels
    if provider.image_max_pixels:
        max_pixels = min(max_pixels, provider.image_max_pixels)
    return SizeLimits(
        max_edge=min(own.max_edge, provider.image_max_edge),
        min_pixels=max(own.min_pixels, provider.image_min_pixels),
        max_pixels=max_pixels,
        multiple=own.multiple,
    )


def size_parameter(
    aspect_ratio: str, resolution: str, spec: ModelSpec, edit: bool, limits: SizeLimits
) -> str | None:
    """parameters.size for (aspect ratio, tier); None leaves the model's default."""
    tier = resolution.lower()
    if tier and tier not in LONG_SIDE:
        raise ImageRequestError(f"unsupported resolution {resolution!r}")
    if not aspect_ratio:
        if not tier:
            return None
        names = spec.edit_tiers if edit else spec.t2i_tiers
        if names:
            name = tier.upper()
            return name if name in names else names[-1]
    ratio = aspect_ratio or "1:1"
    a, b = parse_ratio(ratio)
    if max(a, b) > spec.max_ratio * min(a, b):
        raise ImageRequestError(f"aspect ratio {ratio} is beyond this model's 1:8..8:1")
    size = output_size(ratio, tier or spec.default_tier, limits)
    if size is None:  # not reached: a ratio is always given
        return None
    return f"{size[0]}*{size[1]}"


def build_call(request: ImageRequest, provider: Provider | None = None) -> DashScopeCall:
    """The create call for this request. Raises UnsupportedModel (our configuration) or
    ImageRequestError (the client asked for something this model cannot do)."""
    spec = model_spec(request.upstream_model)
    refs = request.references
    if len(refs) > spec.max_references:
        if spec.max_references == 0:
            raise ImageRequestError(f"{request.upstream_model} takes no reference images")
        raise ImageRequestError(f"at most {spec.max_references} reference images")
    for ref in refs:
        if ref.content_type not in IMAGE_TYPES:
            raise ImageRequestError(f"reference of type {ref.content_type} is not an image")
    if not request.prompt.strip():
        raise ImageRequestError("a prompt is required")
    edit = bool(refs)
    size = size_parameter(
        request.aspect_ratio, request.resolution, spec, edit, limits_for(spec, edit, provider)
    )
    content: list[dict[str, str]] = [{"text": request.prompt}]
    content += [{"image": data_url(ref)} for ref in refs]
    parameters: dict[str, Any] = {}
    if size is not None:
        parameters["size"] = size
    if spec.family == "wan":
        parameters["n"] = 1
        parameters["watermark"] = False
    else:
        parameters["prompt_extend"] = False
    body = {
        "model": request.upstream_model,
        "input": {"messages": [{"role": "user", "content": content}]},
        "parameters": parameters,
    }
    return DashScopeCall(
        path=ASYNC_PATH if spec.asynchronous else SYNC_PATH,
        body=body,
        asynchronous=spec.asynchronous,
    )


# --- answers -----------------------------------------------------------------------------


def _object(raw: bytes) -> dict[str, Any]:
    body = orjson.loads(raw)
    if not isinstance(body, dict):
        raise UpstreamProtocolError("the answer is not an object")
    return body


def _output(body: dict[str, Any]) -> dict[str, Any]:
    output = body.get("output")
    if not isinstance(output, dict):
        raise UpstreamProtocolError("the answer has no output object")
    return output


def valid_task_id(task_id: str) -> bool:
    """Safe to put in a URL path (no slashes, dots-only names or query characters)."""
    return bool(TASK_ID.fullmatch(task_id))


def task_id_of(raw: bytes) -> str:
    """output.task_id of a create-task answer."""
    task_id = _output(_object(raw)).get("task_id")
    if not isinstance(task_id, str) or not valid_task_id(task_id):
        raise UpstreamProtocolError("the create-task answer has no usable task id")
    return task_id


def _first_image(output: dict[str, Any]) -> str:
    """The first result URL: choices[].message.content[].image (multimodal answers), else
    results[].url (image-synthesis answers); "" when there is none."""
    choices = output.get("choices")
    for choice in choices if isinstance(choices, list) else ():
        message = choice.get("message") if isinstance(choice, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        for item in content if isinstance(content, list) else ():
            image = item.get("image") if isinstance(item, dict) else None
            if isinstance(image, str) and image:
                return image
    results = output.get("results")
    for result in results if isinstance(results, list) else ():
        url = result.get("url") if isinstance(result, dict) else None
        if isinstance(url, str) and url:
            return url
    return ""


def image_url_of(raw: bytes) -> str:
    """The image URL of a synchronous (multimodal-generation) answer."""
    url = _first_image(_output(_object(raw)))
    if not url:
        raise UpstreamProtocolError("the answer carries no image")
    return url


def scrubbed(code: str, message: str, api_key: str) -> str:
    """'message (code)', short and without credentials; '' when the upstream said nothing."""
    text = f"{message} ({code})" if message and code else message or code
    if not text:
        return ""
    clean = safe_upstream_message(orjson.dumps({"error": {"message": text}}), api_key)
    return "" if clean == _NO_MESSAGE else clean


def _code_and_message(holder: dict[str, Any]) -> tuple[str, str]:
    code, message = holder.get("code"), holder.get("message")
    return (
        code if isinstance(code, str) else "",
        message if isinstance(message, str) else "",
    )


def error_message(raw: bytes, api_key: str = "") -> str:
    """An HTTP error answer's message: {"request_id", "code", "message"}, scrubbed."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _NO_MESSAGE
    if not isinstance(body, dict):
        return _NO_MESSAGE
    return scrubbed(*_code_and_message(body), api_key) or _NO_MESSAGE


def task_state(raw: bytes, api_key: str = "") -> ImageTask:
    """A GET /tasks/{id} answer."""
    output = _output(_object(raw))
    status = output.get("task_status")
    upstream = status[:40] if isinstance(status, str) else ""
    if status == "PENDING":
        return ImageTask(status="pending", upstream_status=upstream)
    if status == "RUNNING":
        return ImageTask(status="running", upstream_status=upstream)
    if status == "SUCCEEDED":
        url = _first_image(output)
        if not url:
            # n=1 and it succeeded, yet no image: the one result failed on its own.
            code, message = _failed_result(output)
            return _failed(upstream, code, message, api_key)
        return ImageTask(status="succeeded", image_url=url, upstream_status=upstream)
    if status == "FAILED":
        code, message = _code_and_message(output)
        return _failed(upstream, code, message, api_key)
    if status == "CANCELED":
        return ImageTask(
            status="failed", error="The upstream task was cancelled.", upstream_status=upstream
        )
    if status == "UNKNOWN":
        return ImageTask(
            status="failed",
            error="The upstream no longer knows the task (it may have expired).",
            upstream_status=upstream,
        )
    raise UpstreamProtocolError(f"unknown task status {str(status)[:40]!r}")


def _failed_result(output: dict[str, Any]) -> tuple[str, str]:
    """The code and message of a per-image failure (image-synthesis results[] entries)."""
    results = output.get("results")
    for result in results if isinstance(results, list) else ():
        if isinstance(result, dict) and (result.get("code") or result.get("message")):
            return _code_and_message(result)
    return "", "the task succeeded without an image"


def _failed(upstream: str, code: str, message: str, api_key: str) -> ImageTask:
    detail = scrubbed(code, message, api_key)
    error = "The upstream could not generate the image"
    error = f"{error}: {detail.rstrip('.')}." if detail else f"{error}."
    return ImageTask(
        status="failed",
        error=error[:MAX_MESSAGE_CHARS],
        upstream_status=upstream,
        code=code[:80],
        reason=scrubbed("", message, api_key),
    )


def poll_limit(interval_seconds: float, budget_seconds: float, max_polls: int) -> int:
    """How many polls fit in the budget at this interval (at least one, at most max_polls)."""
    if interval_seconds <= 0:
        return max_polls
    return max(1, min(max_polls, math.ceil(budget_seconds / interval_seconds)))
