"""The two calls a worker makes after paid upstream work: retried in place on
transient failures, so a blip does not throw the paid work away."""

from __future__ import annotations

from typing import Any, cast

import aio_pika
import grpc
import pytest
from aio_pika.abc import AbstractExchange
from aiport.v1 import job_state_pb2_grpc

from services.providers import worker
from services.providers.worker import publish_confirmed, record_upstream_task


@pytest.fixture(autouse=True)
def no_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker, "RETRY_PAUSE_SECONDS", 0.0)


def rpc_error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), "test", None)


class JobState:
    """RecordUpstreamTask failing with the given codes, then succeeding."""

    def __init__(self, *failures: grpc.StatusCode) -> None:
        self.failures = list(failures)
        self.calls: list[Any] = []

    async def RecordUpstreamTask(self, request: Any, timeout: float) -> None:  # noqa: ASYNC109
        self.calls.append(request)
        if self.failures:
            raise rpc_error(self.failures.pop(0))


def stub(job_state: JobState) -> job_state_pb2_grpc.JobStateStub:
    return cast(job_state_pb2_grpc.JobStateStub, job_state)


async def test_a_transient_failure_is_retried_until_recorded() -> None:
    job_state = JobState(grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    await record_upstream_task(stub(job_state), "job_1", "ark/task-1")
    assert len(job_state.calls) == 3
    assert job_state.calls[-1].upstream_task_id == "ark/task-1"


async def test_an_unreachable_jobs_service_does_not_fail_the_job() -> None:
    job_state = JobState(*[grpc.StatusCode.UNAVAILABLE] * 5)
    await record_upstream_task(stub(job_state), "job_1", "ark/task-1")  # no raise: poll on
    assert len(job_state.calls) == worker.RECORD_TASK_ATTEMPTS


async def test_a_refusal_is_not_retried() -> None:
    job_state = JobState(grpc.StatusCode.FAILED_PRECONDITION)
    with pytest.raises(grpc.aio.AioRpcError):
        await record_upstream_task(stub(job_state), "job_1", "ark/task-1")
    assert len(job_state.calls) == 1


class Exchange:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.published: list[str] = []

    async def publish(
        self,
        message: aio_pika.Message,
        routing_key: str,
        timeout: float,  # noqa: ASYNC109 (aio_pika's signature, faked)
    ) -> None:
        self.published.append(routing_key)
        if self.failures:
            self.failures -= 1
            raise TimeoutError("no confirm")


@pytest.mark.parametrize(
    ("failures", "confirmed", "tries"),
    [(0, True, 1), (2, True, 3), (3, False, 3)],
)
async def test_an_outcome_publish_is_retried_in_place(
    failures: int, confirmed: bool, tries: int
) -> None:
    exchange = Exchange(failures)
    message = aio_pika.Message(b"outcome")
    assert await publish_confirmed(cast(AbstractExchange, exchange), message, "q") is confirmed
    assert exchange.published == ["q"] * tries
