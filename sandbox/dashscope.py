"""A DashScope (Alibaba Cloud Model Studio) image generation API: pure logic, no I/O.

What it speaks (see services/providers/adapters/dashscope_image_translate.py for the
documents this follows):

  POST /api/v1/services/aigc/image-generation/generation      X-DashScope-Async: enable
       -> {"output": {"task_id", "task_status": "PENDING"}, "request_id"}
  GET  /api/v1/tasks/{task_id}
       -> {"output": {"task_id", "task_status", times, "choices"? | "code"/"message"?},
           "usage"?, "request_id"}
  POST /api/v1/services/aigc/multimodal-generation/generation  (synchronous)
       -> {"output": {"choices", "finished": true}, "usage", "request_id"}

Both create bodies: {"model", "input": {"messages": [{"role": "user", "content": [...]}]},
"parameters": {...}}; content is exactly one {"text"} item plus {"image"} items (base64
data: URLs only: the sandbox fetches nothing). Models and what each accepts:

  wan2.7-image, wan2.7-image-pro   both endpoints; 0..9 images; parameters size ("1K", "2K"
      (default), "4K" for -pro text-to-image, or "W*H" with 768*768..2048*2048 pixels, -pro
      text-to-image 4096*4096, ratio within 1:8..8:1), n 1..4 (1..12 with enable_sequential),
      watermark, seed, thinking_mode, enable_sequential, color_palette, bbox_list;
      each image JPEG, PNG, WEBP or BMP, at most 20 MB, 240..8000 px a side, ratio 1:8..8:1
  z-image-turbo                    synchronous endpoint only; text only; parameters size
      ("W*H", 512*512..2048*2048 pixels, default 1024*1536), prompt_extend, seed; one image

Anything else (unknown fields, wrong types, a model on an endpoint it lacks) is an error.
The async header must match the endpoint, with the messages DashScope uses:
"current user api does not support synchronous calls" (async endpoint without it) and
"... asynchronous calls" (with it where there is no task API); both 403 AccessDenied.

A task's status is a function of its age, so polling needs no background work:
  no delay          SUCCEEDED (or FAILED with [sim:fail]) by the first poll
  [sim:delay=S]     PENDING for S/2 s, RUNNING until S s, then SUCCEEDED (or FAILED)
  [sim:hang]        PENDING for S/2 s if a delay is given, then RUNNING forever
  [sim:status=C]    the create call itself answers HTTP C
  [sim:moderation]  the create call answers 400 DataInspectionFailed (input moderation)
On the synchronous endpoint delay sleeps, hang holds the request, fail answers 500.
Size names render with the same pixel count as the name's square ("2K" = 2048*2048 pixels),
square for text-to-image and in the last reference's ratio for an edit. Results are PNGs
of the requested ratio,
long side capped at png.RENDER_CAP, served without auth like pre-signed OSS URLs.
"""

from __future__ import annotations

import hashlib
import math
import re
import struct
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

from sandbox import directives, media, png
from sandbox.errors import ApiError

ASYNC_PATH = "/api/v1/services/aigc/image-generation/generation"
SYNC_PATH = "/api/v1/services/aigc/multimodal-generation/generation"
TASK_PATH = "/api/v1/tasks/{task_id}"
FILES_PATH = "/_sandbox/dashscope/files"
ERROR_PREFIX = "/api/v1/"

MAX_TASKS = 10_000
MAX_SEED = 2_147_483_647
MAX_REFERENCE_BYTES = 20 * 1024 * 1024
MODERATION_MESSAGE = "Input data may contain inappropriate content."
MAX_SIDE = 16_384  # sanity bound on one side of a "W*H" size
FAILURE_MESSAGE = "sandbox: simulated image generation failure"
NO_SYNC = "current user api does not support synchronous calls"
NO_ASYNC = "current user api does not support asynchronous calls"
TIER_SIDE = {"1K": 1024, "2K": 2048, "4K": 4096}
REFERENCE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/bmp")

_SIZE = re.compile(r"([0-9]{1,5})\*([0-9]{1,5})")
_TOP_LEVEL = frozenset({"model", "input", "parameters"})

Status = Literal["PENDING", "RUNNING", "SUCCEEDED", "FAILED"]


@dataclass(frozen=True)
class ModelRules:
    family: Literal["wan", "z-image"]
    asynchronous: bool  # has the task API
    max_images: int
    parameters: frozenset[str]
    t2i_pixels: tuple[int, int]  # (min, max) of W*H
    edit_pixels: tuple[int, int]
    t2i_tiers: tuple[str, ...]
    edit_tiers: tuple[str, ...]
    max_ratio: float | None  # long : short; None = only the pixel count is bounded
    default_size: str


_WAN_PARAMETERS = frozenset(
    {"size", "n", "watermark", "seed", "thinking_mode", "enable_sequential"}
    | {"color_palette", "bbox_list"}
)
_WAN_PIXELS = (768 * 768, 2048 * 2048)
MODELS: dict[str, ModelRules] = {
    "wan2.7-image": ModelRules(
        family="wan",
        asynchronous=True,
        max_images=9,
        parameters=_WAN_PARAMETERS,
        t2i_pixels=_WAN_PIXELS,
        edit_pixels=_WAN_PIXELS,
        t2i_tiers=("1K", "2K"),
        edit_tiers=("1K", "2K"),
        max_ratio=8.0,
        default_size="2K",
    ),
    "wan2.7-image-pro": ModelRules(
        family="wan",
        asynchronous=True,
        max_images=9,
        parameters=_WAN_PARAMETERS,
        t2i_pixels=(768 * 768, 4096 * 4096),
        edit_pixels=_WAN_PIXELS,
        t2i_tiers=("1K", "2K", "4K"),
        edit_tiers=("1K", "2K"),
        max_ratio=8.0,
        default_size="2K",
    ),
    "z-image-turbo": ModelRules(
        family="z-image",
        asynchronous=False,
        max_images=0,
        parameters=frozenset({"size", "prompt_extend", "seed"}),
        t2i_pixels=(512 * 512, 2048 * 2048),
        edit_pixels=(512 * 512, 2048 * 2048),
        t2i_tiers=(),
        edit_tiers=(),
        max_ratio=None,
        default_size="1024*1536",
    ),
}


@dataclass(frozen=True)
class Reference:
    media_type: str
    size: int  # bytes
    ratio: Fraction | None  # width / height


@dataclass(frozen=True)
class ImageSpec:
    """A validated create request."""

    model: str
    family: Literal["wan", "z-image"]
    prompt: str  # as sent, directives included
    references: tuple[Reference, ...]
    width: int  # what was asked for (or the tier's size)
    height: int
    n: int
    seed: int
    watermark: bool
    directives: directives.Directives

    @property
    def rendered(self) -> tuple[int, int]:
        return png.fit(self.width, self.height)


@dataclass
class Task:
    id: str
    spec: ImageSpec
    created_at: float
    asynchronous: bool = True  # False: a synchronous answer, kept only for its result URLs

    def timeline(self) -> tuple[float, float | None]:
        """(when it starts running, when it ends or None for never), as Unix times."""
        delay = self.spec.directives.delay
        start = self.created_at + delay / 2
        end = None if self.spec.directives.hang else self.created_at + delay
        return start, end

    def status(self, now: float) -> Status:
        start, end = self.timeline()
        if end is not None and now >= end:
            return "FAILED" if self.spec.directives.fail else "SUCCEEDED"
        return "RUNNING" if now >= start else "PENDING"


@dataclass
class TaskStore:
    """The last `limit` tasks, oldest first (synchronous answers are kept too: their
    result URLs point at them)."""

    limit: int = MAX_TASKS
    tasks: OrderedDict[str, Task] = field(default_factory=OrderedDict)

    def add(self, task: Task) -> None:
        self.tasks[task.id] = task
        while len(self.tasks) > self.limit:
            self.tasks.popitem(last=False)

    def get(self, task_id: str) -> Task | None:
        return self.tasks.get(task_id)

    def clear(self) -> None:
        self.tasks.clear()


# --- errors ------------------------------------------------------------------------------

_CODES = {
    400: "InvalidParameter",
    401: "InvalidApiKey",
    403: "AccessDenied",
    404: "NotFound",
    429: "Throttling",
}


def bad(message: str) -> ApiError:
    return ApiError(400, message, code="InvalidParameter")


def access_denied(message: str) -> ApiError:
    return ApiError(403, message, code="AccessDenied")


def error_body(err: ApiError) -> dict[str, Any]:
    """DashScope's error shape. Our own errors carry DashScope codes (CamelCase); others
    (the sandbox's shared helpers, aiohttp's 404/405/413) get the code for their status."""
    code = err.code if err.code and err.code[:1].isupper() else None
    default = "InternalError" if err.status >= 500 else _CODES.get(err.status, "InvalidParameter")
    return {"request_id": new_request_id(), "code": code or default, "message": err.message}


def new_request_id() -> str:
    return str(uuid.uuid4())


def new_task_id() -> str:
    return str(uuid.uuid4())


# --- request validation ------------------------------------------------------------------


def check_async_header(value: str | None, asynchronous_endpoint: bool) -> None:
    """The header must match the endpoint (DashScope answers 403 AccessDenied otherwise)."""
    enabled = value == "enable"
    if asynchronous_endpoint and not enabled:
        raise access_denied(NO_SYNC)
    if not asynchronous_endpoint and value is not None:
        raise access_denied(NO_ASYNC)


def parse_create(body: object, asynchronous: bool) -> ImageSpec:
    if not isinstance(body, dict):
        raise bad("The request body must be a JSON object.")
    unknown = sorted(set(body) - _TOP_LEVEL)
    if unknown:
        raise bad(f"Unsupported parameter: {unknown[0]}.")
    model = body.get("model")
    if model is None or model == "":
        raise ApiError(
            400, 'Required parameter "model" missing from request.', code="BadRequest.EmptyModel"
        )
    if not isinstance(model, str):
        raise bad("model must be a string.")
    rules = MODELS.get(model)
    if rules is None:
        raise bad("Model not exist.")
    if asynchronous and not rules.asynchronous:
        raise access_denied(NO_ASYNC)
    prompt, images = _messages(body.get("input"), rules)
    references = tuple(_reference(i, url) for i, url in enumerate(images))
    params = _parameters(body.get("parameters"), rules)
    found = directives.parse(prompt, allowed=directives.MEDIA, param="input.messages")
    if found.moderation:
        # Model Studio's input moderation answers the create call with HTTP 400.
        raise ApiError(400, MODERATION_MESSAGE, code="DataInspectionFailed")
    edit = bool(references)
    width, height = _size(params.get("size", rules.default_size), rules, edit, references)
    n = _n(params, rules)
    seed = params.get("seed")
    if seed is None:
        # Like a random seed, but repeatable; directives do not change the picture.
        text = directives.remove(prompt).encode()
        seed = int.from_bytes(hashlib.sha256(text).digest()[:4], "big") % MAX_SEED
    return ImageSpec(
        model=model,
        family=rules.family,
        prompt=prompt,
        references=references,
        width=width,
        height=height,
        n=n,
        seed=seed,
        watermark=bool(params.get("watermark", False)),
        directives=found,
    )


def _messages(value: object, rules: ModelRules) -> tuple[str, list[str]]:
    if not isinstance(value, dict):
        raise ApiError(
            400, "Required input parameter missing from request.", code="BadRequest.EmptyInput"
        )
    unknown = sorted(set(value) - {"messages"})
    if unknown:
        raise bad(f"Unsupported parameter: input.{unknown[0]}.")
    messages = value.get("messages")
    if not isinstance(messages, list) or len(messages) != 1:
        raise bad("input.messages must be an array of exactly one message (single turn only).")
    message = messages[0]
    if not isinstance(message, dict) or set(message) != {"role", "content"}:
        raise bad("input.messages[0] must be an object with role and content.")
    if message["role"] != "user":
        raise bad("input.messages[0].role must be user.")
    content = message["content"]
    if not isinstance(content, list) or not content:
        raise bad("input.messages[0].content must be a non-empty array.")
    texts: list[str] = []
    images: list[str] = []
    for i, item in enumerate(content):
        where = f"input.messages[0].content[{i}]"
        if not isinstance(item, dict) or len(item) != 1 or not {"text", "image"} & set(item):
            raise bad(f"{where} must be an object with exactly one of text or image.")
        key, item_value = next(iter(item.items()))
        if not isinstance(item_value, str):
            raise bad(f"{where}.{key} must be a string.")
        (texts if key == "text" else images).append(item_value)
    if len(texts) != 1:
        raise bad("input.messages[0].content must contain exactly one text item.")
    if not texts[0].strip():
        raise bad("The text item must not be empty.")
    if len(images) > rules.max_images:
        if rules.max_images == 0:
            raise bad("This model does not accept image input.")
        raise bad(f"At most {rules.max_images} images are allowed.")
    return texts[0], images


def _reference(i: int, url: str) -> Reference:
    param = f"input.messages[0].content image {i + 1}"
    declared, data = media.decode_data_url(url, param)
    actual = media.sniff(data) or ("image/bmp" if data.startswith(b"BM") else None)
    if actual not in REFERENCE_TYPES:
        raise bad(f"Image {i + 1} is not a JPEG, PNG, BMP or WEBP image.")
    declared_ok = declared in (actual, "application/octet-stream") or (
        declared == "image/jpg" and actual == "image/jpeg"
    )
    if not declared_ok:
        raise bad(f"Image {i + 1} is declared as {declared} but its data is {actual}.")
    if len(data) > MAX_REFERENCE_BYTES:
        raise bad(f"Image {i + 1} is larger than 20 MB.")
    dims = media.image_size(data)
    if dims is None:
        raise bad(f"Image {i + 1} could not be read as an image.")
    width, height = dims
    if not (240 <= width <= 8000 and 240 <= height <= 8000):
        raise bad(f"Image {i + 1} must be 240 to 8000 pixels on each side.")
    ratio = Fraction(width, height)
    if not Fraction(1, 8) <= ratio <= 8:
        raise bad(f"Image {i + 1} has an aspect ratio beyond 1:8..8:1.")
    return Reference(actual, len(data), ratio)


def _parameters(value: object, rules: ModelRules) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad("parameters must be an object.")
    unknown = sorted(set(value) - rules.parameters)
    if unknown:
        raise bad(f"parameters.{unknown[0]} is not supported by this model.")
    for key in ("watermark", "prompt_extend", "thinking_mode", "enable_sequential"):
        if key in value and not isinstance(value[key], bool):
            raise bad(f"parameters.{key} must be a boolean.")
    for key in ("n", "seed"):
        if key in value and (not isinstance(value[key], int) or isinstance(value[key], bool)):
            raise bad(f"parameters.{key} must be an integer.")
    if "seed" in value and not 0 <= value["seed"] <= MAX_SEED:
        raise bad(f"parameters.seed must be between 0 and {MAX_SEED}.")
    if "size" in value and not isinstance(value["size"], str):
        raise bad("parameters.size must be a string.")
    for key in ("color_palette", "bbox_list"):
        if key in value and not isinstance(value[key], list):
            raise bad(f"parameters.{key} must be an array.")
    return value


def _n(params: dict[str, Any], rules: ModelRules) -> int:
    if "n" not in rules.parameters:
        return 1  # Z-Image: always one image (and no n parameter)
    top = 12 if params.get("enable_sequential") else 4
    n = int(params.get("n", 1))
    if not 1 <= n <= top:
        raise bad(f"parameters.n must be between 1 and {top}.")
    return n


def _size(
    size: str, rules: ModelRules, edit: bool, references: tuple[Reference, ...]
) -> tuple[int, int]:
    tiers = rules.edit_tiers if edit else rules.t2i_tiers
    if size in tiers:
        ratio = references[-1].ratio if edit and references[-1].ratio is not None else 1
        return tier_size(TIER_SIDE[size], Fraction(ratio))
    match = _SIZE.fullmatch(size)
    if match is None:
        named = f"{', '.join(tiers)} or " if tiers else ""
        raise bad(f"parameters.size {size[:40]!r} is invalid: expected {named}'width*height'.")
    width, height = int(match.group(1)), int(match.group(2))
    low, high = rules.edit_pixels if edit else rules.t2i_pixels
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        raise bad("parameters.size: each side must be between 1 and 16384 pixels.")
    if not low <= width * height <= high:
        raise bad(
            f"parameters.size {size}: the total pixels must be between"
            f" {math.isqrt(low)}*{math.isqrt(low)} and {math.isqrt(high)}*{math.isqrt(high)}."
        )
    if rules.max_ratio is not None and max(width, height) > rules.max_ratio * min(width, height):
        raise bad(f"parameters.size {size}: the aspect ratio must be within 1:8..8:1.")
    return width, height


def tier_size(side: int, ratio: Fraction) -> tuple[int, int]:
    """The size of about side*side pixels with this width/height ratio, sides multiples of 16."""
    width = math.sqrt(side * side * ratio)
    height = width / float(ratio)
    return max(16, round(width / 16) * 16), max(16, round(height / 16) * 16)


# --- answers -----------------------------------------------------------------------------


def _clock(t: float) -> str:
    """DashScope's time format: 2026-03-31 19:57:58.840."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}"


def file_urls(task: Task, file_base: str) -> list[str]:
    return [f"{file_base}/{task.id}_{i}.png" for i in range(task.spec.n)]


def choices(task: Task, file_base: str) -> list[dict[str, Any]]:
    return [
        {
            "finish_reason": "stop",
            "message": {"role": "assistant", "content": [{"image": url, "type": "image"}]},
        }
        for url in file_urls(task, file_base)
    ]


def usage(spec: ImageSpec) -> dict[str, Any]:
    if spec.family == "z-image":
        return {"width": spec.width, "height": spec.height, "image_count": spec.n}
    return {
        "size": f"{spec.width}*{spec.height}",
        "image_count": spec.n,
        "input_tokens": 0,
        "output_tokens": 0,
        "total_tokens": 0,
    }


def created_body(task: Task) -> dict[str, Any]:
    return {
        "request_id": new_request_id(),
        "output": {"task_id": task.id, "task_status": "PENDING"},
    }


def task_body(task: Task | None, task_id: str, now: float, file_base: str) -> dict[str, Any]:
    """GET /api/v1/tasks/{id} at time `now`; an unknown id is UNKNOWN (HTTP 200), as the
    API answers for ids it never issued or that expired."""
    if task is None:
        return {
            "request_id": new_request_id(),
            "output": {"task_id": task_id, "task_status": "UNKNOWN"},
        }
    status = task.status(now)
    start, end = task.timeline()
    output: dict[str, Any] = {
        "task_id": task.id,
        "task_status": status,
        "submit_time": _clock(task.created_at),
    }
    if status != "PENDING":
        output["scheduled_time"] = _clock(start)
    body: dict[str, Any] = {"request_id": new_request_id(), "output": output}
    if status in ("SUCCEEDED", "FAILED") and end is not None:
        output["end_time"] = _clock(end)
        output["finished"] = True
    else:
        output["finished"] = False
    if status == "SUCCEEDED":
        output["choices"] = choices(task, file_base)
        body["usage"] = usage(task.spec)
    elif status == "FAILED":
        output["code"] = "InternalError"
        output["message"] = FAILURE_MESSAGE
    return body


def sync_body(task: Task, file_base: str) -> dict[str, Any]:
    """The synchronous endpoint's answer."""
    return {
        "request_id": new_request_id(),
        "output": {"choices": choices(task, file_base), "finished": True},
        "usage": usage(task.spec),
    }


def parse_file_name(name: str) -> tuple[str, int] | None:
    """'<task id>_<index>.png' -> (task id, index)."""
    stem, dot, ext = name.rpartition(".")
    task_id, _, index = stem.rpartition("_")
    if not dot or ext != "png" or not task_id or not index.isdigit() or len(index) > 2:
        return None
    return task_id, int(index)


def render(task: Task, index: int) -> bytes:
    """Result image `index` of a task: seeded by (model, prompt without directives, seed,
    references, index), the requested ratio, long side capped at png.RENDER_CAP."""
    spec = task.spec
    width, height = spec.rendered
    refs = "".join(f"\n{r.size}" for r in spec.references)
    seed_text = f"{spec.model}\n{directives.remove(spec.prompt)}\n{spec.seed}{refs}\n{index}"
    return png.render(width, height, seed_text)


def summary(task: Task, now: float) -> dict[str, Any]:
    """One row of GET /_sandbox/dashscope/tasks."""
    return {
        "id": task.id,
        "model": task.spec.model,
        "prompt": task.spec.prompt,
        "status": task.status(now),
        "size": f"{task.spec.width}*{task.spec.height}",
        "n": task.spec.n,
        "asynchronous": task.asynchronous,
        "created_at": int(task.created_at),
    }


def log_body(body: object) -> object:
    """The create body for the request log, data: URLs reduced to their type and size."""
    if isinstance(body, dict):
        return {k: log_body(v) for k, v in body.items()}
    if isinstance(body, list):
        return [log_body(v) for v in body]
    if isinstance(body, str) and body.startswith("data:"):
        return media.data_url_summary(body)
    return body


def png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR; None for anything else."""
    if len(data) < 24 or not data.startswith(png.SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)
