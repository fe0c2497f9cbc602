"""The gateway asks the jobs service again when a CreateJob reply is lost."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from aiport.v1 import job_state_pb2
from google.protobuf import json_format

from services.gateway.jobs_api import CREATE_JOB_ATTEMPTS, JobsBackend, public_job


def rpc_error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), "x", None)


class FakeJobState:
    def __init__(self, failures: list[grpc.StatusCode]) -> None:
        self.failures = failures
        self.calls: list[str] = []

    async def CreateJob(
        self,
        request: job_state_pb2.CreateJobRequest,
        timeout: float,  # noqa: ASYNC109 (the stub's signature)
    ) -> job_state_pb2.JobRecord:
        self.calls.append(request.idempotency_key)
        if self.failures:
            raise rpc_error(self.failures.pop(0))
        return job_state_pb2.JobRecord(job_id="job_1", status="pending")


def backend(fake: FakeJobState) -> JobsBackend:
    return JobsBackend(backends=None, job_state=fake, hold_ttl_seconds=60)  # type: ignore[arg-type]


REQUEST = job_state_pb2.CreateJobRequest(idempotency_key="req-1")


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED])
async def test_a_lost_reply_is_asked_for_again_with_the_same_key(code: Any) -> None:
    fake = FakeJobState([code, code])
    job = await backend(fake)._create_job(REQUEST)
    assert job.job_id == "job_1"
    assert fake.calls == ["req-1"] * 3


async def test_gives_up_after_the_last_attempt() -> None:
    fake = FakeJobState([grpc.StatusCode.UNAVAILABLE] * CREATE_JOB_ATTEMPTS)
    with pytest.raises(grpc.aio.AioRpcError):
        await backend(fake)._create_job(REQUEST)
    assert len(fake.calls) == CREATE_JOB_ATTEMPTS


async def test_a_refusal_is_not_retried() -> None:
    fake = FakeJobState([grpc.StatusCode.INVALID_ARGUMENT])
    with pytest.raises(grpc.aio.AioRpcError):
        await backend(fake)._create_job(REQUEST)
    assert len(fake.calls) == 1


def test_a_failed_jobs_cause_is_public_and_null_otherwise() -> None:
    failed = job_state_pb2.JobRecord(
        job_id="job_1",
        status="failed",
        error_message="The provider refused the prompt or image under its content policy.",
        error_code="content_policy",
    )
    shown = json_format.MessageToDict(
        public_job(failed, "https://x"), preserving_proto_field_name=True
    )
    assert (shown["error_code"], shown["error_message"]) == (
        "content_policy",
        failed.error_message,
    )
    running = job_state_pb2.JobRecord(job_id="job_2", status="processing", error_code="x")
    shown = json_format.MessageToDict(
        public_job(running, "https://x"), preserving_proto_field_name=True
    )
    assert shown["error_code"] is None and shown["error_message"] is None
