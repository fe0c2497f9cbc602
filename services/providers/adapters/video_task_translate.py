"""The Ark content-generation task API (BytePlus ModelArk, Volcengine; Seedance): pure.

Create: POST {base}/contents/generations/tasks with
  {"model", "content": [{"type": "text", "text"},
                        {"type": "image_url", "image_url": {"url"}, "role": first_frame |
                         last_frame | reference_image},
                        {"type": "video_url", "video_url": {"url"}, "role": reference_video},
                        {"type": "audio_url", "audio_url": {"url"}, "role": reference_audio}],
   "resolution", "ratio", "duration", "seed", "generate_audio", "return_last_frame",
   "tools": [{"type": "web_search"}]}   (top-level parameters, Ark's current form)
  -> {"id": "cgt-..."}
Poll: GET {base}/contents/generations/tasks/{id} -> {"id", "status", "content":
  {"video_url", "last_frame_url"?}, "duration", "error": {"code", "message"} | null, ...}

References travel as base64 data: URLs of the bytes the worker fetched.
"""

from __future__ import annotations

import base64
import re
from typing import Any

import orjson

from services.providers.adapters.openai_chat_translate import UpstreamProtocolError
from services.providers.errors import MAX_MESSAGE_CHARS, safe_upstream_message
from services.providers.media import Reference, TaskState, VideoRequest

TASKS_PATH = "/contents/generations/tasks"
TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")

# Our reference role -> (content item type, Ark role).
ROLE_ITEMS = {
    "first_frame": ("image_url", "first_frame"),
    "last_frame": ("image_url", "last_frame"),
    "image": ("image_url", "reference_image"),
    "video": ("video_url", "reference_video"),
    "audio": ("audio_url", "reference_audio"),
}
# Ark names formats in data: URLs by their short names (data:audio/mp3;base64,...).
_DATA_URL_TYPES = {
    "audio/mpeg": "audio/mp3",
    "audio/x-wav": "audio/wav",
    "audio/wave": "audio/wav",
    "video/quicktime": "video/mov",
}
_TERMINAL_FAILURES = {
    "cancelled": "The upstream task was cancelled.",
    "expired": "The upstream task expired before it finished.",
}
_REQUEST_ID_NOISE = re.compile(r"\s*Request id:\s*\S+", re.IGNORECASE)


def data_url(ref: Reference) -> str:
    kind = _DATA_URL_TYPES.get(ref.content_type, ref.content_type)
    return f"data:{kind};base64,{base64.b64encode(ref.data).decode()}"


def create_body(request: VideoRequest) -> dict[str, Any]:
    """The create-task body: the prompt, then references in the order given."""
    content: list[dict[str, Any]] = []
    if request.prompt:
        content.append({"type": "text", "text": request.prompt})
    for ref in request.references:
        kind, role = ROLE_ITEMS[ref.role]
        content.append({"type": kind, kind: {"url": data_url(ref)}, "role": role})
    body: dict[str, Any] = {"model": request.upstream_model, "content": content}
    if request.resolution:
        body["resolution"] = request.resolution
    if request.ratio:
        body["ratio"] = request.ratio
    if request.duration_seconds > 0:
        body["duration"] = request.duration_seconds
    if request.seed is not None:
        body["seed"] = request.seed
    if request.generate_audio is not None:
        body["generate_audio"] = request.generate_audio
    if request.return_last_frame:
        body["return_last_frame"] = True
    if request.web_search:
        body["tools"] = [{"type": "web_search"}]
    # real_person_mode has no Ark parameter; Ark handles real people through its own
    # asset registration, so the hint is not sent.
    return body


def task_id_of(raw: bytes) -> str:
    """The id in a create-task answer."""
    body = orjson.loads(raw)
    task_id = body.get("id") if isinstance(body, dict) else None
    if not isinstance(task_id, str) or not TASK_ID.fullmatch(task_id):
        raise UpstreamProtocolError("the create-task answer has no usable task id")
    return task_id


def valid_task_id(task_id: str) -> bool:
    """Safe to put in a URL path (no slashes, dots-only or query characters)."""
    return bool(TASK_ID.fullmatch(task_id))


def failure_message(raw: bytes, api_key: str = "") -> str:
    """A failed task's error.message, short, scrubbed of credentials and request ids."""
    message = _REQUEST_ID_NOISE.sub("", safe_upstream_message(raw, api_key)).strip(" .")
    if message == "no error message" or not message:
        return "The upstream could not generate the video."
    return f"The upstream could not generate the video: {message}."[:MAX_MESSAGE_CHARS]


def _failure_reason(raw: bytes, api_key: str) -> str:
    """A failed task's error.message alone (for the client when it is their input)."""
    message = _REQUEST_ID_NOISE.sub("", safe_upstream_message(raw, api_key)).strip(" .")
    return "" if message == "no error message" else message


def task_state(raw: bytes, api_key: str = "") -> TaskState:
    body = orjson.loads(raw)
    if not isinstance(body, dict):
        raise UpstreamProtocolError("the task answer is not an object")
    status = body.get("status")
    extra = _extra(body)
    if status in ("queued", "running"):
        return TaskState(status=status, extra=extra)
    if status == "succeeded":
        content = body.get("content")
        video_url = content.get("video_url") if isinstance(content, dict) else None
        if not isinstance(video_url, str) or not video_url:
            raise UpstreamProtocolError("a succeeded task has no content.video_url")
        last_frame = content.get("last_frame_url") if isinstance(content, dict) else None
        duration = body.get("duration")
        seconds = duration if isinstance(duration, int) and _is_count(duration) else 0
        return TaskState(
            status="succeeded",
            video_url=video_url,
            last_frame_url=last_frame if isinstance(last_frame, str) else "",
            duration_seconds=seconds,
            extra=extra,
        )
    if status == "failed":
        return TaskState(
            status="failed",
            error=failure_message(raw, api_key),
            extra=extra,
            error_code=extra.get("error_code", ""),
            reason=_failure_reason(raw, api_key),
        )
    if isinstance(status, str) and status in _TERMINAL_FAILURES:
        return TaskState(status="failed", error=_TERMINAL_FAILURES[status], extra=extra)
    raise UpstreamProtocolError(f"unknown task status {str(status)[:40]!r}")


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _extra(body: dict[str, Any]) -> dict[str, str]:
    """Details worth logging, as strings."""
    extra: dict[str, str] = {}
    if isinstance(body.get("status"), str):
        extra["upstream_status"] = body["status"][:40]
    for key in ("resolution", "ratio", "seed", "framespersecond", "model"):
        value = body.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool):
            extra[key] = str(value)[:80]
    usage = body.get("usage")
    if isinstance(usage, dict) and _is_count(usage.get("completion_tokens")):
        extra["completion_tokens"] = str(usage["completion_tokens"])
    error = body.get("error")
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        extra["error_code"] = error["code"][:80]
    return extra
