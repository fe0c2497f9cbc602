"""What provider workers ask of an image or video upstream, whatever its protocol.

Adapters implement these protocols; the worker runtime (services/providers/
worker.py) fetches references, calls them, stores the files and reports the
outcome. References arrive already fetched and checked (size, type, SSRF).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

ReferenceRole = Literal["image", "first_frame", "last_frame", "video", "audio"]


@dataclass(frozen=True, slots=True)
class Reference:
    role: ReferenceRole
    data: bytes
    content_type: str  # image/png, image/jpeg, image/webp, video/mp4, audio/mpeg, ...


@dataclass(frozen=True, slots=True)
class ImageRequest:
    upstream_model: str
    prompt: str
    aspect_ratio: str = ""  # "" = the model's default
    resolution: str = ""  # "1k" | "2k" | "4k" | "" (model default)
    references: tuple[Reference, ...] = ()  # non-empty for img2img
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class GeneratedImage:
    data: bytes
    content_type: str  # what the bytes really are (sniffed), e.g. image/png


@dataclass(frozen=True, slots=True)
class VideoRequest:
    upstream_model: str
    prompt: str
    resolution: str = ""  # 480p | 720p | 1080p | 2k | 4k
    duration_seconds: int = 0  # 0 = model default
    ratio: str = ""  # adaptive | 16:9 | ...
    generate_audio: bool | None = None
    web_search: bool | None = None
    return_last_frame: bool = False
    seed: int | None = None
    real_person_mode: bool | None = None
    references: tuple[Reference, ...] = ()
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class TaskState:
    """One poll of an upstream task."""

    status: Literal["queued", "running", "succeeded", "failed"]
    video_url: str = ""  # where to download the result, when succeeded
    last_frame_url: str = ""
    duration_seconds: int = 0  # the generated length (billing), when succeeded
    error: str = ""  # safe to show a client, when failed
    extra: dict[str, str] = field(default_factory=dict)
    error_code: str = ""  # the upstream's code for the failure, when it gave one
    reason: str = ""  # the upstream's own message, scrubbed, when failed


class ImageAdapter(Protocol):
    async def generate(self, request: ImageRequest) -> GeneratedImage:
        """Raises services.providers.errors.UpstreamError on any failure."""
        ...

    async def close(self) -> None: ...


class VideoTaskAdapter(Protocol):
    async def submit(self, request: VideoRequest) -> str:
        """Create the upstream task; returns its id. Raises UpstreamError."""
        ...

    async def poll(self, task_id: str) -> TaskState:
        """Raises UpstreamError when the upstream cannot be asked (not when the task failed)."""
        ...

    def download(self, url: str, max_bytes: int) -> AsyncIterator[bytes]:
        """Stream a result file the upstream produced. Raises UpstreamError."""
        ...

    @property
    def poll_interval_seconds(self) -> float: ...

    async def close(self) -> None: ...
