"""A BytePlus ModelArk / Volcengine Ark style video task API (Seedance): pure logic.

Create: {"model", "content": [text | image_url | video_url | audio_url items], and the
generation parameters as top-level fields (resolution, ratio, duration, seed,
generate_audio, return_last_frame, watermark, camera_fixed, tools, ...)}. The older
text-flag form (`--rs 720p --rt 16:9 --dur 5 --seed 11 --wm true --cf false --fps 24`
at the end of the prompt) is accepted too; top-level fields win over flags.

A task's status is a function of its age, so polling needs no background work:
  no delay            succeeded (or failed) by the first poll
  [sim:delay=S]       queued for S/2 s, running until S s, then succeeded (or failed)
  [sim:fail]          ends `failed` with error {code: InternalServiceError, message}
  [sim:hang]          queued for S/2 s if a delay is given, then running forever
  [sim:moderation]    ends `failed` with error {code: OutputVideoSensitiveContentDetected}
Seedance 2.0 models (ids with seedance-2-0 / seedance-2.0) follow their documented rules:
duration 4..15 (or -1), the Fast variants 480p and 720p only, and each image given as
data 300..6000 px a side, width/height 0.4..2.5, under 30 MB, and each video (MP4/MOV)
or audio (MP3/WAV) given as data 2..15 s long, at most 15 s of each kind in all (lengths
read by mutagen, independently of the gateway's own reader); other models take every
resolution and 2..15 s.
Usage: completion_tokens = ceil(width * height * 24 fps * duration / 1024) for the output
size of (resolution, ratio): short side 480/720/1080/1440/2160 for 480p/720p/1080p/2k/4k.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any

import mutagen

from sandbox import directives, media
from sandbox.errors import ApiError, invalid

MAX_TASKS = 10_000
FPS = 24
DEFAULT_DURATION = 5
RESOLUTIONS = {"480p": 480, "720p": 720, "1080p": 1080, "2k": 1440, "4k": 2160}
RATIOS = ("16:9", "4:3", "1:1", "3:4", "9:16", "21:9", "adaptive")
ROLES = {
    "image_url": ("first_frame", "last_frame", "reference_image"),
    "video_url": ("reference_video",),
    "audio_url": ("reference_audio",),
}
MEDIA_PREFIX = {"image_url": "image/", "video_url": "video/", "audio_url": "audio/"}
LIMITS = {"reference_image": 9, "reference_video": 3, "reference_audio": 3}
FAILURE_MESSAGE = "sandbox: simulated video generation failure"
MODERATION_CODE = "OutputVideoSensitiveContentDetected"
MODERATION_MESSAGE = (
    "The request failed because the output video may contain sensitive information."
)


@dataclass(frozen=True)
class ModelRules:
    resolutions: tuple[str, ...] = tuple(RESOLUTIONS)
    min_duration: int = 2
    max_duration: int = 15
    # Images sent as data: (0: not checked).
    image_min_side: int = 0
    image_max_side: int = 0
    image_min_ratio: float = 0.0
    image_max_ratio: float = 0.0
    image_max_bytes: int = 0
    # Videos and audios sent as data: (empty / 0: not checked): container types, and
    # seconds per clip and per kind in all.
    video_formats: tuple[str, ...] = ()
    audio_formats: tuple[str, ...] = ()
    clip_min_seconds: float = 0.0
    clip_max_seconds: float = 0.0
    clip_max_total_seconds: float = 0.0


_SEEDANCE_2 = ModelRules(
    resolutions=("480p", "720p", "1080p"),
    min_duration=4,
    image_min_side=300,
    image_max_side=6000,
    image_min_ratio=0.4,
    image_max_ratio=2.5,
    image_max_bytes=30 * 1024 * 1024,
    video_formats=("video/mp4",),  # MP4 and MOV: both sniff as ISO base media
    audio_formats=("audio/mpeg", "audio/wav"),
    clip_min_seconds=2,
    clip_max_seconds=15,
    clip_max_total_seconds=15,
)
# Most specific family first; matched on the id with dots as dashes.
MODEL_FAMILIES: tuple[tuple[str, ModelRules], ...] = (
    (
        "seedance-2-0-fast",
        replace(_SEEDANCE_2, resolutions=("480p", "720p")),
    ),
    (
        "seedance-2-0",
        _SEEDANCE_2,
    ),
)


def model_rules(model: str) -> ModelRules:
    normalised = model.lower().replace(".", "-")
    for family, rules in MODEL_FAMILIES:
        if family in normalised:
            return rules
    return ModelRules()


_TOP_LEVEL = frozenset(
    {"model", "content", "resolution", "ratio", "duration", "frames", "seed"}
    | {"camera_fixed", "watermark", "generate_audio", "return_last_frame", "draft"}
    | {"tools", "callback_url", "service_tier", "execution_expires_after", "priority"}
    | {"safety_identifier"}
)
_FLAG = re.compile(r"--(rs|rt|dur|seed|wm|cf|fps|resolution|ratio|duration|watermark)\s+(\S+)")
_FLAG_NAMES = {
    "rs": "resolution",
    "resolution": "resolution",
    "rt": "ratio",
    "ratio": "ratio",
    "dur": "duration",
    "duration": "duration",
    "seed": "seed",
    "wm": "watermark",
    "watermark": "watermark",
    "cf": "camera_fixed",
    "fps": "fps",
}


@dataclass(frozen=True)
class Reference:
    kind: str  # image_url | video_url | audio_url
    role: str
    media_type: str
    size: int  # bytes; 0 for a remote URL
    url: str  # remote URL, or a summary of the data: URL
    seconds: float = 0.0  # a video's or audio's length, when checked


@dataclass(frozen=True)
class TaskSpec:
    """A validated create request."""

    model: str
    prompt: str  # all text items, joined, as sent (directives and flags included)
    references: tuple[Reference, ...]
    resolution: str
    ratio: str
    duration: int
    seed: int
    generate_audio: bool
    return_last_frame: bool
    watermark: bool
    web_search: bool
    directives: directives.Directives


@dataclass
class Task:
    id: str
    spec: TaskSpec
    created_at: float

    def timeline(self) -> tuple[float, float | None]:
        """(when it starts running, when it ends or None for never), as Unix times."""
        delay = self.spec.directives.delay
        start = self.created_at + delay / 2
        end = None if self.spec.directives.hang else self.created_at + delay
        return start, end

    def status(self, now: float) -> str:
        start, end = self.timeline()
        if end is not None and now >= end:
            failed = self.spec.directives.fail or self.spec.directives.moderation
            return "failed" if failed else "succeeded"
        return "running" if now >= start else "queued"

    def updated_at(self, now: float) -> float:
        start, end = self.timeline()
        if end is not None and now >= end:
            return end
        return start if now >= start else self.created_at


@dataclass
class TaskStore:
    """The last MAX_TASKS tasks, oldest first."""

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


# --- request validation ----------------------------------------------------------------


def parse_create(body: object) -> TaskSpec:
    if not isinstance(body, dict):
        raise _bad("The request body must be a JSON object.", None)
    unknown = sorted(set(body) - _TOP_LEVEL)
    if unknown:
        raise _bad(f"The parameter `{unknown[0]}` is not supported.", unknown[0])
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _missing("model")
    content = body.get("content")
    if not isinstance(content, list) or not content:
        raise _missing("content")
    rules = model_rules(model)
    texts: list[str] = []
    references: list[Reference] = []
    for i, item in enumerate(content):
        where = f"content[{i}]"
        if not isinstance(item, dict):
            raise _bad(f"`{where}` must be an object.", where)
        kind = item.get("type")
        if kind == "text":
            text = item.get("text")
            if not isinstance(text, str):
                raise _bad(f"`{where}.text` must be a string.", f"{where}.text")
            texts.append(text)
        elif kind in ROLES:
            references.append(
                _reference(where, kind, item, image_count=_images(content), rules=rules)
            )
        else:
            raise _bad(f"`{where}.type` {kind!r} is not supported.", f"{where}.type")
    _check_references(references, rules)
    prompt = "\n".join(texts)
    flags = {_FLAG_NAMES[m.group(1)]: m.group(2) for m in _FLAG.finditer(prompt)}
    found = directives.parse(prompt, allowed=directives.MEDIA, param="content")
    if not prompt.strip() and not references:
        raise _bad("Provide a text prompt or at least one reference.", "content")

    resolution = _pick(body, flags, "resolution", "720p", str)
    if resolution not in rules.resolutions:
        raise _bad(
            f"The parameter `resolution` specified in the request is not valid for model "
            f"{model}: it must be one of {', '.join(rules.resolutions)}.",
            "resolution",
        )
    ratio = _pick(body, flags, "ratio", "adaptive" if references else "16:9", str)
    if ratio not in RATIOS:
        raise _bad(f"`ratio` must be one of {', '.join(RATIOS)}.", "ratio")
    duration = _pick(body, flags, "duration", DEFAULT_DURATION, int)
    if duration == -1:
        duration = DEFAULT_DURATION  # "smart duration": the sandbox always picks the default
    if not rules.min_duration <= duration <= rules.max_duration:
        raise _bad(
            f"`duration` must be -1 or between {rules.min_duration} and "
            f"{rules.max_duration} seconds.",
            "duration",
        )
    seed = _pick(body, flags, "seed", -1, int)
    if not -1 <= seed <= 2**32 - 1:
        raise _bad("`seed` must be between -1 and 4294967295.", "seed")
    if seed == -1:
        seed = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:4], "big")
    web_search = _tools(body.get("tools"))
    if web_search and references:
        raise _bad("The web_search tool only works for text-to-video.", "tools")
    return TaskSpec(
        model=model,
        prompt=prompt,
        references=tuple(references),
        resolution=resolution,
        ratio=ratio,
        duration=duration,
        seed=seed,
        generate_audio=_pick(body, flags, "generate_audio", True, bool),
        return_last_frame=_pick(body, flags, "return_last_frame", False, bool),
        watermark=_pick(body, flags, "watermark", False, bool),
        web_search=web_search,
        directives=found,
    )


def _images(content: list[Any]) -> int:
    return sum(1 for c in content if isinstance(c, dict) and c.get("type") == "image_url")


def _reference(
    where: str, kind: str, item: dict[str, Any], image_count: int, rules: ModelRules
) -> Reference:
    holder = item.get(kind)
    url = holder.get("url") if isinstance(holder, dict) else None
    if not isinstance(url, str) or not url:
        raise _bad(f"`{where}.{kind}.url` must be a non-empty string.", f"{where}.{kind}.url")
    # Ark: a lone image without a role is the first frame; otherwise say what it is.
    default_role = "first_frame" if kind == "image_url" and image_count == 1 else None
    role = item.get("role", default_role)
    if role not in ROLES[kind]:
        raise _bad(
            f"`{where}.role` must be one of {', '.join(ROLES[kind])} for {kind}.", f"{where}.role"
        )
    if url.startswith("data:"):
        declared, data = media.decode_data_url(url, f"{where}.{kind}.url")
        actual = media.sniff(data)
        if actual is None and kind == "image_url":
            raise _bad(f"`{where}` is not a PNG, JPEG or WEBP image.", f"{where}.{kind}.url")
        actual = actual or declared  # other video/audio containers: trust the declared type
        if not actual.startswith(MEDIA_PREFIX[kind]):
            raise _bad(f"`{where}` is a {kind} but its data is {actual}.", f"{where}.{kind}.url")
        seconds = 0.0
        if kind == "image_url":
            _check_image(where, data, rules)
        else:
            seconds = _check_clip(where, kind, actual, data, rules)
        summary = media.data_url_summary(url)
        return Reference(kind, str(role), actual, len(data), summary, seconds)
    if not url.startswith(("http://", "https://", "asset://")):
        raise _bad(f"`{where}.{kind}.url` must be an http(s) or data: URL.", f"{where}.{kind}.url")
    return Reference(kind, str(role), "", 0, url)


def _check_image(where: str, data: bytes, rules: ModelRules) -> None:
    param = f"{where}.image_url.url"
    if rules.image_max_bytes and len(data) >= rules.image_max_bytes:
        limit = rules.image_max_bytes // 2**20
        raise _bad(f"The image in `{where}` must be smaller than {limit} MB.", param)
    if not rules.image_min_side:
        return
    size = media.image_size(data)
    if size is None:
        raise _bad(f"The image in `{where}` cannot be read.", param)
    width, height = size
    low, high = rules.image_min_side, rules.image_max_side
    if not (low <= width <= high and low <= height <= high):
        raise _bad(
            f"The image in `{where}` is {width}x{height}; width and height must be "
            f"{low} to {high} px.",
            param,
        )
    if not rules.image_min_ratio <= width / height <= rules.image_max_ratio:
        raise _bad(
            f"The image in `{where}` has an aspect ratio (width/height) of "
            f"{width / height:.2f}; it must be {rules.image_min_ratio} to "
            f"{rules.image_max_ratio}.",
            param,
        )


def _check_clip(where: str, kind: str, actual: str, data: bytes, rules: ModelRules) -> float:
    """A video's or audio's length from its container (mutagen), held to the model's rules."""
    formats = rules.video_formats if kind == "video_url" else rules.audio_formats
    if not formats:
        return 0.0
    param = f"{where}.{kind}.url"
    noun = kind.removesuffix("_url")
    if actual not in formats:
        raise _bad(f"The {noun} in `{where}` is {actual}; use {' or '.join(formats)}.", param)
    try:
        found = mutagen.File(io.BytesIO(data))
        seconds = float(found.info.length) if found is not None else 0.0
    except Exception:  # whatever a parser raises on a malformed file
        seconds = 0.0
    if not seconds > 0:
        raise _bad(f"The duration of the {noun} in `{where}` cannot be read.", param)
    low, high = rules.clip_min_seconds, rules.clip_max_seconds
    if not low <= seconds <= high:
        raise _bad(
            f"The {noun} in `{where}` is {seconds:.1f} s long; each reference {noun} must be "
            f"{low:g} to {high:g} s.",
            param,
        )
    return seconds


def _check_references(references: list[Reference], rules: ModelRules) -> None:
    for kind in ("video_url", "audio_url"):
        total = sum(r.seconds for r in references if r.kind == kind)
        if rules.clip_max_total_seconds and total > rules.clip_max_total_seconds:
            noun = kind.removesuffix("_url")
            raise _bad(
                f"The reference {noun}s add up to {total:.1f} s; at most "
                f"{rules.clip_max_total_seconds:g} s are allowed.",
                "content",
            )
    roles = [r.role for r in references]
    for role, limit in LIMITS.items():
        if roles.count(role) > limit:
            raise _bad(f"At most {limit} {role} items are allowed.", "content")
    frames = {"first_frame", "last_frame"} & set(roles)
    if roles.count("first_frame") > 1 or roles.count("last_frame") > 1:
        raise _bad("At most one first_frame and one last_frame are allowed.", "content")
    if "last_frame" in roles and "first_frame" not in roles:
        raise _bad("A last_frame needs a first_frame.", "content")
    if frames and any(r.startswith("reference_") for r in roles):
        raise _bad("First/last frames cannot be combined with reference media.", "content")
    if "reference_audio" in roles and not {"reference_image", "reference_video"} & set(roles):
        raise _bad("Reference audio needs at least one reference image or video.", "content")


def _pick(body: dict[str, Any], flags: dict[str, str], key: str, default: Any, kind: type) -> Any:
    if key in body:
        value = body[key]
        if kind is int and (not isinstance(value, int) or isinstance(value, bool)):
            raise _bad(f"`{key}` must be an integer.", key)
        if kind is bool and not isinstance(value, bool):
            raise _bad(f"`{key}` must be a boolean.", key)
        if kind is str and not isinstance(value, str):
            raise _bad(f"`{key}` must be a string.", key)
        return value
    if key in flags:
        raw = flags[key]
        if kind is int:
            if not re.fullmatch(r"-?[0-9]{1,10}", raw):
                raise _bad(f"`--{key}` must be an integer.", "content")
            return int(raw)
        if kind is bool:
            if raw not in ("true", "false"):
                raise _bad(f"`--{key}` must be true or false.", "content")
            return raw == "true"
        return raw
    return default


def _tools(tools: object) -> bool:
    if tools is None:
        return False
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise _bad("`tools` must be an array of objects.", "tools")
    for tool in tools:
        if tool.get("type") != "web_search":
            raise _bad("Only the web_search tool is supported.", "tools")
    return bool(tools)


def _bad(message: str, param: str | None) -> ApiError:
    return invalid(message, param=param, code="InvalidParameter")


def _missing(param: str) -> ApiError:
    return invalid(
        f"The request failed because it is missing the required parameter `{param}`.",
        param=param,
        code="MissingParameter",
    )


# --- the answers -----------------------------------------------------------------------


def output_size(resolution: str, ratio: str) -> tuple[int, int]:
    """The frame size of (resolution, ratio); `adaptive` renders 16:9. Even sides."""
    short = RESOLUTIONS[resolution]
    w, h = (16, 9) if ratio == "adaptive" else (int(x) for x in ratio.split(":"))
    exact = Fraction(max(w, h), min(w, h))
    long = int(short * exact) // 2 * 2
    return (long, short) if w >= h else (short, long)


def completion_tokens(spec: TaskSpec) -> int:
    width, height = output_size(spec.resolution, spec.ratio)
    return math.ceil(width * height * FPS * spec.duration / 1024)


def task_body(task: Task, now: float, file_base: str) -> dict[str, Any]:
    """GET /contents/generations/tasks/{id}, as Ark answers it at time `now`."""
    spec = task.spec
    status = task.status(now)
    body: dict[str, Any] = {
        "id": task.id,
        "model": spec.model,
        "status": status,
        "error": None,
        "created_at": int(task.created_at),
        "updated_at": int(task.updated_at(now)),
    }
    if status == "succeeded":
        content = {"video_url": f"{file_base}/{task.id}.mp4"}
        if spec.return_last_frame:
            content["last_frame_url"] = f"{file_base}/{task.id}.png"
        body["content"] = content
        tokens = completion_tokens(spec)
        body["usage"] = {"completion_tokens": tokens, "total_tokens": tokens}
        if spec.web_search:
            body["usage"]["tool_usage"] = {"web_search": 1}
    elif status == "failed" and spec.directives.moderation:
        body["error"] = {"code": MODERATION_CODE, "message": MODERATION_MESSAGE}
    elif status == "failed":
        body["error"] = {"code": "InternalServiceError", "message": FAILURE_MESSAGE}
    body.update(
        seed=spec.seed,
        resolution=spec.resolution,
        ratio=spec.ratio,
        duration=spec.duration,
        framespersecond=FPS,
        generate_audio=spec.generate_audio,
        draft=False,
        service_tier="default",
        execution_expires_after=172800,
    )
    return body


def summary(task: Task, now: float) -> dict[str, Any]:
    """One row of GET /_sandbox/tasks."""
    return {
        "id": task.id,
        "model": task.spec.model,
        "prompt": task.spec.prompt,
        "status": task.status(now),
        "created_at": int(task.created_at),
    }


def log_body(body: object) -> object:
    """The create body for the request log, with data: URLs reduced to type and size."""
    if not isinstance(body, dict) or not isinstance(body.get("content"), list):
        return body
    items = []
    for item in body["content"]:
        if isinstance(item, dict):
            kind = item.get("type")
            holder = item.get(kind) if isinstance(kind, str) else None
            if isinstance(holder, dict) and isinstance(holder.get("url"), str):
                item = {**item, kind: {**holder, "url": media.data_url_summary(holder["url"])}}
        items.append(item)
    return {**body, "content": items}
