"""The outcome a worker reports for a job: references fitted to the model's upstream,
and failures that name their cause (the client's input or content, or the provider)."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any, cast

import pytest
from aiport.v1 import job_state_pb2
from PIL import Image

from services.common import blobs, broker
from services.common.catalog import load_catalog
from services.common.settings import PROJECT_ROOT
from services.providers.errors import CONTENT_POLICY, PROVIDER_FAILED, UpstreamError
from services.providers.failover import Breakers, route_key
from services.providers.media import GeneratedImage, ImageRequest
from services.providers.routes import Provider, Route, RouteTable
from services.providers.worker import Worker

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
    provider = Provider(
        name="dash",
        protocol="dashscope-image",
        base_url="https://example.invalid",
        api_key="k",
        connect_timeout_seconds=1,
        read_timeout_seconds=1,
        max_connections=1,
        max_tokens_field="max_tokens",
    )
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
        modality="img2img",
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
    assert w.breakers.plan((route,)) == [route]  # the probe is still available
