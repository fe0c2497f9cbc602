"""The jobs path's failover (Worker._with_failover) against fake upstreams, no
servers: a half-open backup planned behind a healthy primary stays in rotation,
and a job cancelled in the middle of a probe gives the probe back."""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path
from typing import Any, cast

import pytest
from aiport.v1 import job_state_pb2
from PIL import Image

from services.common import blobs, broker
from services.common.catalog import load_catalog
from services.common.job_states import Modality
from services.common.settings import PROJECT_ROOT
from services.providers.errors import UpstreamError
from services.providers.failover import Breakers, Policy, route_key
from services.providers.media import GeneratedImage, ImageRequest
from services.providers.routes import Provider, Route, RouteTable
from services.providers.worker import Worker
from tests.support.clock import Clock
from tests.support.routes import provider as support_provider

CATALOG = load_catalog(PROJECT_ROOT / "config" / "catalog.yaml")
MODEL = "test-image"
PRIMARY = Route(MODEL, "primary", "img-a")
BACKUP = Route(MODEL, "backup", "img-b")
COOLDOWN = 30.0


class FakeImages:
    """An image upstream that answers, fails as told, or hangs until cancelled."""

    def __init__(self, calls: list[str], name: str) -> None:
        self.calls = calls
        self.name = name
        self.error: UpstreamError | None = None
        self.hang = False
        self.started = asyncio.Event()

    async def generate(self, request: ImageRequest) -> GeneratedImage:
        self.calls.append(self.name)
        self.started.set()
        if self.hang:
            await asyncio.Event().wait()
        if self.error is not None:
            raise self.error
        out = io.BytesIO()
        Image.new("RGB", (4, 4)).save(out, "PNG")
        return GeneratedImage(out.getvalue(), "image/png")

    async def close(self) -> None:
        return None


def provider(name: str) -> Provider:
    return support_provider(name, "openai-images")


class Setup:
    def __init__(self, tmp_path: Path) -> None:
        self.clock = Clock()
        self.calls: list[str] = []
        self.upstreams = {
            "primary": FakeImages(self.calls, "primary"),
            "backup": FakeImages(self.calls, "backup"),
        }
        self.breakers = Breakers(Policy(failure_threshold=1, cooldown_seconds=COOLDOWN), self.clock)
        self.worker = Worker(
            kind="image",
            routes=RouteTable(
                {"primary": provider("primary"), "backup": provider("backup")},
                {MODEL: (PRIMARY, BACKUP)},
            ),
            image_adapters=dict(self.upstreams),
            video_adapters={},
            breakers=self.breakers,
            job_state=cast(Any, None),
            store=blobs.LocalBlobStore(tmp_path),
            outcomes=cast(Any, None),
            names=broker.Names("test"),
            worker_id="w",
            job_timeout_seconds=60,
            catalog=CATALOG,
        )

    def half_open(self, route: Route) -> None:
        self.breakers.failure(route)
        self.clock.now += COOLDOWN
        assert self.breakers.state(route) == "half-open"

    async def run(self, job_id: str) -> job_state_pb2.JobOutcome:
        return await self.worker.run(
            job_state_pb2.JobRecord(
                job_id=job_id,
                account_id="acct_1",
                model=MODEL,
                modality=Modality.IMAGE.to_proto(),
                spec=job_state_pb2.WorkSpec(prompt="a lighthouse"),
                created_at_unix=int(time.time()),
            )
        )


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    return Setup(tmp_path)


async def test_a_half_open_backup_behind_a_healthy_primary_takes_over_later(
    setup: Setup,
) -> None:
    setup.half_open(BACKUP)
    assert (await setup.run("job_1")).succeeded
    # Later the primary fails: the backup, still half-open, gets the probe
    # (it used to stay reserved by job_1's plan, and job_2 failed).
    setup.upstreams["primary"].error = UpstreamError("failed", "upstream answered HTTP 503")
    outcome = await setup.run("job_2")
    assert outcome.succeeded, outcome
    assert setup.calls == ["primary", "primary", "backup"]
    assert setup.breakers.state(BACKUP) == "closed"


async def test_a_job_cancelled_mid_probe_gives_the_probe_back(setup: Setup) -> None:
    setup.half_open(PRIMARY)
    setup.upstreams["primary"].hang = True
    job = asyncio.create_task(setup.run("job_1"))
    await setup.upstreams["primary"].started.wait()
    assert setup.breakers.plan((PRIMARY,)).routes == []  # being probed
    job.cancel()  # e.g. the worker shutting down
    with pytest.raises(asyncio.CancelledError):
        await job
    # Not the route's failure, and the next job may probe it.
    assert setup.breakers.state(PRIMARY) == "half-open"
    assert setup.breakers._state[route_key(PRIMARY)].failures == 1
    assert setup.breakers.plan((PRIMARY,)).routes == [PRIMARY]


async def test_a_job_whose_routes_all_cool_down_after_429s_is_rate_limited(
    setup: Setup,
) -> None:
    for route in (PRIMARY, BACKUP):
        setup.breakers.failure(route, "rate_limited")
    outcome = await setup.run("job_1")
    assert not outcome.succeeded
    assert outcome.error_code == "rate_limited"
    assert setup.calls == []
