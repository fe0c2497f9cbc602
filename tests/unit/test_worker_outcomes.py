"""The outcome a worker reports for a job: references fitted to the model's upstream,
and failures that name their cause (the client's input or content, or the provider)."""

from __future__ import annotations

import io
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
from aiport.v1 import job_state_pb2
from PIL import Image

from services.common import blobs, broker
from services.common.catalog import load_catalog
from services.common.job_states import Modality
from services.common.settings import PROJECT_ROOT
from services.providers.errors import CONTENT_POLICY, PROVIDER_FAILED, UpstreamError
from services.providers.failover import Breakers, route_key
from services.providers.media import GeneratedImage, ImageRequest, TaskState, VideoRequest
from services.providers.routes import Route, RouteTable
from services.providers.worker import Worker
from tests.support import routes as support
from tests.support.clips import mp3, mp4, wav

CATALOG = load_catalog(PROJECT_ROOT / "config" / "catalog.yaml")
RESULT = Image.new("RGB", (8, 8))


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (1, 2, 3)).save(out, "PNG")
    return out.getvalue()


class FakeImages:
    """An image upstream that records what it was sent, or fails as told."""

    def __init__(self, error: UpstreamError | None = None) -> None:
        self.error = error
        self.requests: list[ImageRequest] = []

    async def generate(self, request: ImageRequest) -> GeneratedImage:
        self.requests.append(request)
        if self.error is not None:
            raise self.error
        out = io.BytesIO()
        RESULT.save(out, "PNG")
        return GeneratedImage(out.getvalue(), "image/png")

    async def close(self) -> None:
        return None


def worker(tmp_path: Path, images: FakeImages) -> Worker:
    provider = support.provider("dash", "dashscope-image")
    route = Route(model="wan-2.7-img2img", provider="dash", upstream_model="wan2.7-image")
    return Worker(
        kind="image",
        routes=RouteTable({"dash": provider}, {"wan-2.7-img2img": (route,)}),
        image_adapters={"dash": images},
        video_adapters={},
        breakers=Breakers(),
        job_state=cast(Any, None),
        store=blobs.LocalBlobStore(tmp_path),
        outcomes=cast(Any, None),
        names=broker.Names("test"),
        worker_id="w",
        job_timeout_seconds=60,
        catalog=CATALOG,
    )


async def job_with_upload(store: blobs.LocalBlobStore, data: bytes) -> job_state_pb2.JobRecord:
    key = blobs.new_key("uploads", "ref.png")
    await store.put_bytes(key, data)
    url = blobs.public_url("https://uploads.example", key)
    return job_state_pb2.JobRecord(
        job_id="job_1",
        account_id="acct_owner",
        model="wan-2.7-img2img",
        modality=Modality.IMG2IMG.to_proto(),
        spec=job_state_pb2.WorkSpec(prompt="snow", images=[url]),
        created_at_unix=int(time.time()),
    )


async def test_a_64px_reference_reaches_wan_at_240px(tmp_path: Path) -> None:
    images = FakeImages()
    w = worker(tmp_path, images)
    outcome = await w.run(await job_with_upload(w.store, png(64, 64)))
    assert outcome.succeeded, outcome
    (sent,) = images.requests[0].references
    assert Image.open(io.BytesIO(sent.data)).size == (240, 240)


@pytest.mark.parametrize(
    ("error", "code", "message"),
    [
        (
            UpstreamError("rejected", "x", code="DataInspectionFailed"),
            "content_policy",
            CONTENT_POLICY,
        ),
        (
            UpstreamError("rejected", "x", reason="size must be 1K or 2K", code="InvalidParameter"),
            "invalid_input",
            "The provider rejected the input: size must be 1K or 2K.",
        ),
        (UpstreamError("failed", "upstream answered HTTP 500"), "provider_error", PROVIDER_FAILED),
    ],
)
async def test_a_failure_names_its_cause(
    tmp_path: Path, error: UpstreamError, code: str, message: str
) -> None:
    w = worker(tmp_path, FakeImages(error))
    outcome = await w.run(await job_with_upload(w.store, png(300, 300)))
    assert not outcome.succeeded
    assert (outcome.error_code, outcome.error_message) == (code, message)


async def test_a_reference_beyond_the_aspect_limit_is_the_clients_input(tmp_path: Path) -> None:
    images = FakeImages()
    w = worker(tmp_path, images)
    outcome = await w.run(await job_with_upload(w.store, png(2700, 300)))
    assert outcome.error_code == "invalid_input"
    assert "aspect ratios up to 8:1" in outcome.error_message
    assert images.requests == []  # never sent: nothing paid upstream


async def test_a_refused_reference_leaves_a_half_open_route_probe_free(tmp_path: Path) -> None:
    """A job whose reference is refused never reaches the upstream; the half-open
    route it planned must stay free to probe, or the model stays down for good."""
    images = FakeImages()
    w = worker(tmp_path, images)
    (route,) = w.routes.routes["wan-2.7-img2img"]
    for _ in range(w.breakers.policy.failure_threshold):
        w.breakers.failure(route)
    opened_at = w.breakers._state[route_key(route)].opened_at
    assert opened_at is not None
    w.breakers.clock = lambda: opened_at + w.breakers.policy.cooldown_seconds + 1
    assert w.breakers.state(route) == "half-open"

    refused = await w.run(await job_with_upload(w.store, b"\x89PNG\r\n\x1a\n garbage"))
    assert not refused.succeeded and images.requests == []
    assert w.breakers.plan((route,)).routes == [route]  # the probe is still available


class FakeVideos:
    """A video task upstream that records what it was sent and refuses the task."""

    poll_interval_seconds = 0.01

    def __init__(self) -> None:
        self.requests: list[VideoRequest] = []

    async def submit(self, request: VideoRequest) -> str:
        self.requests.append(request)
        raise UpstreamError("failed", "upstream answered HTTP 500")

    async def poll(self, task_id: str) -> TaskState:
        raise AssertionError("no task was created")

    def download(self, url: str, max_bytes: int) -> AsyncIterator[bytes]:
        raise AssertionError("no task was created")

    async def close(self) -> None:
        return None


def video_worker(tmp_path: Path, videos: FakeVideos) -> Worker:
    provider = support.provider("ark", "video-tasks")
    model = "seedance-2.0-fast-multimodal"
    route = Route(model=model, provider="ark", upstream_model="seedance-2-0-fast")
    return Worker(
        kind="video",
        routes=RouteTable({"ark": provider}, {model: (route,)}),
        image_adapters={},
        video_adapters={"ark": cast(Any, videos)},
        breakers=Breakers(),
        job_state=cast(Any, None),
        store=blobs.LocalBlobStore(tmp_path),
        outcomes=cast(Any, None),
        names=broker.Names("test"),
        worker_id="w",
        job_timeout_seconds=60,
        catalog=CATALOG,
    )


async def multimodal_job(
    store: blobs.LocalBlobStore,
    images: list[bytes],
    videos: list[tuple[str, bytes]],
    audios: list[tuple[str, bytes]],
) -> job_state_pb2.JobRecord:
    async def stored(name: str, data: bytes) -> str:
        key = blobs.new_key("uploads", name)
        await store.put_bytes(key, data)
        return blobs.public_url("https://uploads.example", key)

    return job_state_pb2.JobRecord(
        job_id="job_2",
        account_id="acct_owner",
        model="seedance-2.0-fast-multimodal",
        modality=Modality.MULTIMODAL.to_proto(),
        spec=job_state_pb2.WorkSpec(
            prompt="walks",
            images=[await stored("i.png", data) for data in images],
            videos=[await stored(name, data) for name, data in videos],
            audios=[await stored(name, data) for name, data in audios],
            duration_seconds=5,
        ),
        created_at_unix=int(time.time()),
    )


async def test_clips_within_the_upstreams_rules_are_sent(tmp_path: Path) -> None:
    videos = FakeVideos()
    w = video_worker(tmp_path, videos)
    job = await multimodal_job(
        w.store,
        [],
        [("a.mp4", mp4(2.0)), ("b.mov", mp4(6, brand=b"qt  "))],
        [("c.mp3", mp3(4)), ("d.wav", wav(3))],
    )
    outcome = await w.run(job)
    assert outcome.error_code == "provider_error"  # the fake upstream's own failure
    sent = videos.requests[0].references
    assert [(r.role, r.content_type) for r in sent] == [
        ("video", "video/mp4"),
        ("video", "video/quicktime"),
        ("audio", "audio/mpeg"),
        ("audio", "audio/wav"),
    ]


@pytest.mark.parametrize(
    ("clips", "message"),
    [
        (
            {"videos": [("a.mp4", mp4(1.5))]},
            "Reference video `videos[0]` is 1.5 s long; this model takes 2 to 15 s per video.",
        ),
        (
            {"videos": [("a.mp4", mp4(6)), ("b.mp4", mp4(6)), ("c.mp4", mp4(6))]},
            "The reference videos add up to 18.0 s; this model takes at most 15 s of video in all.",
        ),
        (
            {"videos": [("a.mp4", mp4(4))], "audios": [("x.wav", wav(16))]},
            "Reference audio `audios[0]` is 16.0 s long; this model takes 2 to 15 s per audio.",
        ),
        (
            {"videos": [("a.mp4", mp4(4)), ("b.webm", b"\x1a\x45\xdf\xa3" + bytes(64))]},
            "Reference video `videos[1]` is video/webm, whose length cannot be checked;"
            " send one of video/mp4, video/quicktime.",
        ),
        (
            {"videos": [("a.mp4", mp4(4, handler=b"soun"))]},
            "Reference video `videos[0]` cannot be read: it has no video track.",
        ),
    ],
)
async def test_a_clip_the_upstream_would_refuse_is_the_clients_input(
    tmp_path: Path, clips: dict[str, list[tuple[str, bytes]]], message: str
) -> None:
    videos = FakeVideos()
    w = video_worker(tmp_path, videos)
    job = await multimodal_job(
        w.store, [png(400, 400)], clips.get("videos", []), clips.get("audios", [])
    )
    outcome = await w.run(job)
    assert (outcome.error_code, outcome.error_message) == ("invalid_input", message)
    assert videos.requests == []  # never sent: nothing paid upstream
