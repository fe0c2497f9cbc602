"""The gateway asks the jobs service again when a CreateJob reply is lost."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Coroutine
from typing import Any

import grpc
import pytest
from aiport.v1 import billing_pb2, job_state_pb2
from google.protobuf import json_format

from services.common.job_ids import is_job_id
from services.common.job_states import JobStatus, Modality
from services.gateway import jobs_api
from services.gateway.errors import PublicError
from services.gateway.generate_request import JobPlan
from services.gateway.holds import HoldPurpose
from services.gateway.jobs_api import CREATE_JOB_ATTEMPTS, JobsBackend, public_job
from services.gateway.server import Caller


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
        # The job owns the hold it was created with.
        return job_state_pb2.JobRecord(
            job_id="job_1", hold_id=request.hold_id, status=JobStatus.PENDING.to_proto()
        )


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
        status=JobStatus.FAILED.to_proto(),
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
    running = job_state_pb2.JobRecord(
        job_id="job_2", status=JobStatus.PROCESSING.to_proto(), error_code="x"
    )
    shown = json_format.MessageToDict(
        public_job(running, "https://x"), preserving_proto_field_name=True
    )
    assert shown["error_code"] is None and shown["error_message"] is None


# -- issue 12: an unanswered creation keeps its hold and is reconciled ----------


class FakeBackends:
    """The gateway's billing side: one hold, and the releases asked for."""

    def __init__(self) -> None:
        self.released: list[str] = []
        self.tasks: list[asyncio.Task[Any]] = []
        self.purposes: list[HoldPurpose] = []

    async def authorize_hold(
        self, context: Any, amount: int, purpose: HoldPurpose, *args: Any, **kwargs: Any
    ) -> tuple[Caller, billing_pb2.Hold]:
        self.purposes.append(purpose)
        caller = Caller("acct_1", "key_1", "req-1", "call-1")
        return caller, billing_pb2.Hold(hold_id="hold_1", amount_micros=700_000_000)

    def settle_later(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self.tasks.append(task)
        return task

    async def release(self, hold_id: str, reason: str, latency_ms: int = 0) -> None:
        self.released.append(hold_id)


class Unreachable(FakeJobState):
    """CreateJob never answers; AbandonCreation answers after `abandon_failures`."""

    def __init__(self, create: grpc.StatusCode, abandon_failures: list[grpc.StatusCode]) -> None:
        super().__init__([create] * CREATE_JOB_ATTEMPTS)
        self.abandon_failures = abandon_failures
        self.created: list[job_state_pb2.CreateJobRequest] = []
        self.abandoned: list[job_state_pb2.CreateJobRequest] = []

    async def CreateJob(
        self,
        request: job_state_pb2.CreateJobRequest,
        timeout: float,  # noqa: ASYNC109 (the stub's signature)
    ) -> job_state_pb2.JobRecord:
        self.created.append(request)
        return await super().CreateJob(request, timeout)

    async def AbandonCreation(
        self,
        request: job_state_pb2.CreateJobRequest,
        timeout: float,  # noqa: ASYNC109 (the stub's signature)
    ) -> job_state_pb2.JobRecord:
        self.abandoned.append(request)
        if self.abandon_failures:
            raise rpc_error(self.abandon_failures.pop(0))
        return job_state_pb2.JobRecord(
            job_id=request.job_id, hold_id=request.hold_id, status=JobStatus.FAILED.to_proto()
        )


PLAN = JobPlan(
    model="seedream-4.5",
    modality=Modality.IMAGE,
    spec=job_state_pb2.WorkSpec(prompt="a cat"),
    unit_price_micros=700_000_000,
    estimated_units=1,
    min_billable_units=0,
)


@pytest.fixture(autouse=True)
def quick_reconcile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs_api, "RECONCILE_FIRST_PAUSE_SECONDS", 0.001)
    monkeypatch.setattr(jobs_api, "RECONCILE_MAX_PAUSE_SECONDS", 0.001)


def jobs_with(fake: FakeJobState, billing: FakeBackends) -> JobsBackend:
    return JobsBackend(backends=billing, job_state=fake, hold_ttl_seconds=60)  # type: ignore[arg-type]


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED])
async def test_an_unanswered_creation_keeps_the_hold_names_the_job_and_is_reconciled(
    code: grpc.StatusCode,
) -> None:
    fake = Unreachable(code, [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE])
    billing = FakeBackends()
    with pytest.raises(PublicError) as raised:
        await jobs_with(fake, billing).create(None, PLAN, "image.generate")  # type: ignore[arg-type]
    error = raised.value
    job_id = fake.created[0].job_id
    assert is_job_id(job_id)
    assert (error.status, error.code, error.should_retry) == (503, "job_status_unknown", False)
    assert f"GET /v1/jobs/{job_id}" in error.message
    assert billing.released == []  # the job may exist: its hold is not given away
    await asyncio.gather(*billing.tasks)
    # Asked until answered, with exactly the request that went unanswered.
    assert len(fake.abandoned) == 3
    assert all(r == fake.created[0] for r in fake.abandoned + fake.created)
    # The jobs service releases the hold of a job it abandons, not the gateway.
    assert billing.released == []


async def test_a_reconciler_that_cannot_ask_leaves_the_hold_to_expire() -> None:
    fake = Unreachable(grpc.StatusCode.UNAVAILABLE, [grpc.StatusCode.UNIMPLEMENTED])
    billing = FakeBackends()
    assert await jobs_with(fake, billing).reconcile(REQUEST, "req-1") is None
    assert len(fake.abandoned) == 1
    assert billing.released == []


async def test_a_reused_key_is_a_422_and_the_hold_is_released() -> None:
    fake = FakeJobState([grpc.StatusCode.FAILED_PRECONDITION])
    billing = FakeBackends()
    with pytest.raises(PublicError) as raised:
        await jobs_with(fake, billing).create(None, PLAN, "image.generate")  # type: ignore[arg-type]
    assert (raised.value.status, raised.value.code) == (422, "idempotency_key_reused")
    assert billing.released == ["hold_1"]


@pytest.mark.parametrize("code", [grpc.StatusCode.ABORTED, grpc.StatusCode.INVALID_ARGUMENT])
async def test_a_job_not_created_is_a_503_and_the_hold_is_released(code: grpc.StatusCode) -> None:
    fake = FakeJobState([code])
    billing = FakeBackends()
    with pytest.raises(PublicError) as raised:
        await jobs_with(fake, billing).create(None, PLAN, "image.generate")  # type: ignore[arg-type]
    assert (raised.value.status, raised.value.code) == (503, "service_unavailable")
    assert billing.released == ["hold_1"]


async def test_a_created_job_is_accepted_under_the_id_the_gateway_chose() -> None:
    fake = Unreachable(grpc.StatusCode.OK, [])
    fake.failures = []  # CreateJob answers at once
    billing = FakeBackends()
    accepted = await jobs_with(fake, billing).create(None, PLAN, "image.generate")  # type: ignore[arg-type]
    assert accepted.job_id == "job_1"  # what the jobs service answered
    assert is_job_id(fake.created[0].job_id)
    assert billing.released == []
    # The hold's usage record names the endpoint and the job from the start.
    (purpose,) = billing.purposes
    assert (purpose.endpoint, purpose.job_id) == ("image.generate", fake.created[0].job_id)


@pytest.mark.parametrize(
    ("status", "public"),
    [
        (JobStatus.PENDING, "pending"),
        (JobStatus.PROCESSING, "processing"),
        (JobStatus.DONE, "done"),
        (JobStatus.FAILED, "failed"),
    ],
)
def test_the_public_status_is_the_same_string_as_before_the_enum(
    status: JobStatus, public: str
) -> None:
    job = job_state_pb2.JobRecord(job_id="job_1", status=status.to_proto())
    assert public_job(job, "https://x").status == public


def test_a_record_without_a_status_is_not_shown_as_pending() -> None:
    # A jobs service of another version leaves the enum unset: refused, not guessed.
    with pytest.raises(ValueError, match="no job status"):
        public_job(job_state_pb2.JobRecord(job_id="job_1"), "https://x")


# -- client task ids ---------------------------------------------------------------


class EarlierTask(FakeJobState):
    """The client's task id names an earlier call's job (which owns its own hold)."""

    async def CreateJob(
        self,
        request: job_state_pb2.CreateJobRequest,
        timeout: float,  # noqa: ASYNC109 (the stub's signature)
    ) -> job_state_pb2.JobRecord:
        self.calls.append(request.client_task_id)
        return job_state_pb2.JobRecord(
            job_id="job_earlier",
            hold_id="hold_earlier",
            status=JobStatus.DONE.to_proto(),
            estimated_cost_micros=700_000_000,
        )


async def test_a_repeated_client_task_id_answers_the_earlier_job_and_releases_this_hold() -> None:
    billing = FakeBackends()
    fake = EarlierTask([])
    plan = dataclasses.replace(PLAN, client_task_id="order-1")
    accepted = await jobs_with(fake, billing).create(None, plan, "image.generate")  # type: ignore[arg-type]
    assert fake.calls == ["order-1"]
    assert (accepted.job_id, accepted.status) == ("job_earlier", "done")
    assert accepted.estimated_cost_idr == "700"
    assert billing.released == ["hold_1"]  # this call's, never the earlier job's
