"""A worker and the job's lease: it runs a job only under a lease it keeps with
heartbeats, puts off a delivery of a job someone else runs, and stops (without
an outcome) once the lease is no longer its own."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aio_pika
import grpc
from aiport.v1 import job_state_pb2

from services.providers.media import GeneratedImage, ImageRequest
from services.providers.worker import Worker
from tests.unit.test_worker_outcomes import FakeImages, job_with_upload, png, worker

Attempt = job_state_pb2.Attempt


def rpc_error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), "test", None)


class SlowImages(FakeImages):
    """An upstream call that takes `seconds` (the paid work in progress)."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.cancelled = False

    async def generate(self, request: ImageRequest) -> GeneratedImage:
        try:
            await asyncio.sleep(self.seconds)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return await super().generate(request)


class JobState:
    def __init__(self, attempt: job_state_pb2.Attempt, renewals: list[grpc.StatusCode]) -> None:
        self.attempt = attempt
        self.renewals = renewals  # OK for a renewal that succeeds
        self.renewed: list[str] = []

    async def BeginLeasedAttempt(self, request: Any, timeout: float) -> job_state_pb2.Attempt:  # noqa: ASYNC109
        return self.attempt

    async def RenewLease(self, request: Any, timeout: float) -> job_state_pb2.Lease:  # noqa: ASYNC109
        self.renewed.append(request.lease_token)
        code = self.renewals.pop(0) if self.renewals else grpc.StatusCode.OK
        if code != grpc.StatusCode.OK:
            raise rpc_error(code)
        return job_state_pb2.Lease(job_id=request.job_id, token=request.lease_token)


class Exchange:
    def __init__(self) -> None:
        self.published: list[tuple[str, aio_pika.Message]] = []

    async def publish(self, message: aio_pika.Message, routing_key: str, timeout: float) -> None:  # noqa: ASYNC109
        self.published.append((routing_key, message))


class Delivery:
    """An incoming work message: what the worker did with it."""

    def __init__(self, job_id: str) -> None:
        self.body = job_state_pb2.WorkItem(job_id=job_id).SerializeToString()
        self.headers: dict[str, Any] = {}
        self.message_id = job_id
        self.acked = False
        self.nacked = False

    async def ack(self) -> None:
        self.acked = True

    async def nack(self, requeue: bool = True) -> None:
        self.nacked = True


async def leased_worker(
    tmp_path: Path, images: FakeImages, verdict: Any, renewals: list[grpc.StatusCode], **more: Any
) -> tuple[Worker, JobState, Exchange, Delivery]:
    w = worker(tmp_path, images)
    job = await job_with_upload(w.store, png(64, 64))
    lease = job_state_pb2.Lease(job_id=job.job_id, token="lease-1", renew_every_seconds=1)
    attempt = Attempt(verdict=verdict, job=job, lease=lease, **more)
    job_state, exchange = JobState(attempt, renewals), Exchange()
    w.job_state = job_state  # type: ignore[assignment]
    w.outcomes = exchange  # type: ignore[assignment]
    return w, job_state, exchange, Delivery(job.job_id)


async def test_a_job_leased_elsewhere_is_deferred_not_run(tmp_path: Path) -> None:
    images = FakeImages()
    w, _, exchange, delivery = await leased_worker(
        tmp_path, images, Attempt.DEFER, [], defer_seconds=7
    )
    await w.handle(delivery)  # type: ignore[arg-type]
    assert images.requests == []  # the upstream was not paid a second time
    [(queue, copy)] = exchange.published
    assert queue == "test.work.image.deferred"
    assert copy.body == delivery.body and copy.expiration == 7
    assert copy.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert delivery.acked and not delivery.nacked  # the copy carries it on


async def test_a_finished_job_is_skipped(tmp_path: Path) -> None:
    images = FakeImages()
    w, _, exchange, delivery = await leased_worker(tmp_path, images, Attempt.FINISHED, [])
    await w.handle(delivery)  # type: ignore[arg-type]
    assert images.requests == [] and exchange.published == []
    assert delivery.acked


async def test_heartbeats_keep_the_lease_while_the_work_lasts(tmp_path: Path) -> None:
    images = SlowImages(2.5)
    # One beat lost to a blip: the work goes on, the next beat renews.
    w, job_state, exchange, delivery = await leased_worker(
        tmp_path, images, Attempt.RUN, [grpc.StatusCode.UNAVAILABLE]
    )
    await w.handle(delivery)  # type: ignore[arg-type]
    assert job_state.renewed == ["lease-1", "lease-1"]
    [(queue, reply)] = exchange.published
    assert queue == "test.outcomes"
    assert job_state_pb2.JobOutcome.FromString(reply.body).succeeded
    assert delivery.acked


async def test_a_lost_lease_stops_the_work_without_an_outcome(tmp_path: Path) -> None:
    images = SlowImages(30)
    w, _, exchange, delivery = await leased_worker(
        tmp_path, images, Attempt.RUN, [grpc.StatusCode.FAILED_PRECONDITION]
    )
    await asyncio.wait_for(w.handle(delivery), 5)  # type: ignore[arg-type]
    assert images.cancelled  # stopped at the first beat, not after 30 s
    assert exchange.published == []  # the lease's holder reports the job
    assert delivery.acked and not delivery.nacked
