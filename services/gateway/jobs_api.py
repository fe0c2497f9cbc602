"""The gateway's async API: Generate (create jobs, upload references) and Jobs (poll).

A create call places a hold for the job's worst-case price, asks the jobs
service to create the job (committed and queued before it answers), and
answers 202. If the job cannot be created the hold is released at once. If
the jobs service never answered, nobody knows whether the job exists: the hold
stays, the client gets a 503 naming the job id to poll, and a reconciler asks
the jobs service until it settles the question (AbandonCreation: the job if it
exists, otherwise a failed job under that id whose hold is released). Should
the gateway die first, the hold expires (its TTL is longer than any job), so
a job that exists is settled by the jobs service and one that does not is
released by billing.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
from aiport.v1 import (
    generate_pb2,
    generate_pb2_grpc,
    job_state_pb2,
    job_state_pb2_grpc,
    jobs_pb2,
    jobs_pb2_grpc,
)
from google.api import httpbody_pb2
from google.protobuf import struct_pb2

from services.common import blobs
from services.common.catalog import Catalog
from services.common.grpc_server import ServicerContext, request_metadata
from services.common.images import DecodeGate, InvalidImage
from services.common.job_ids import new_job_id
from services.common.job_states import JobStatus, status_label
from services.common.logs import fields
from services.common.money import micros_to_idr
from services.gateway import errors, idempotency
from services.gateway.boundary import add_response_header, public_unary
from services.gateway.generate_request import (
    JobPlan,
    parse_image_generate,
    parse_image_img2img,
    parse_video_generate,
    parse_video_img2video,
    parse_video_multimodal,
)
from services.gateway.holds import HoldKey, HoldKind, HoldPurpose
from services.gateway.idempotent_calls import once
from services.gateway.job_listing import encode_cursor, parse_listing
from services.gateway.references import ReferenceResolver, own_references
from services.gateway.server import Backends
from services.gateway.upload import FILE_FIELD, parse_upload

log = logging.getLogger(__name__)

JOBS_TIMEOUT_SECONDS = 15.0
CREATE_JOB_ATTEMPTS = 3
RETRYABLE = (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)
# Asking the jobs service whether an unanswered creation happened: soon, then
# every few seconds (a client polling the job id may get a 404 until then).
RECONCILE_FIRST_PAUSE_SECONDS = 0.5
RECONCILE_MAX_PAUSE_SECONDS = 5.0

Parser = Callable[[bytes, Catalog], JobPlan]


class Creation(enum.Enum):
    """How asking the jobs service to create a job ended, when no job came back."""

    NOT_CREATED = "not_created"  # refused: no job owns the hold (released)
    KEY_REUSED = "key_reused"  # the key guarded another request (hold released)
    UNKNOWN = "unknown"  # never answered: reconciled in the background, hold kept


@dataclass(frozen=True, slots=True)
class Created:
    job: job_state_pb2.JobRecord


def _value(text: str) -> struct_pb2.Value:
    return (
        struct_pb2.Value(string_value=text)
        if text
        else struct_pb2.Value(null_value=struct_pb2.NULL_VALUE)
    )


def _rfc3339(unix: int) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def public_job(job: job_state_pb2.JobRecord, base_url: str) -> jobs_pb2.Job:
    # The public status is the enum's value: "pending", "processing", "done", "failed".
    status = JobStatus.from_proto(job.status)
    finished = status.finished
    failed = status is JobStatus.FAILED
    return jobs_pb2.Job(
        job_id=job.job_id,
        status=status.value,
        result_url=_value(blobs.public_url(base_url, job.result_key) if job.result_key else ""),
        error_message=_value(job.error_message if failed else ""),
        error_code=_value(job.error_code if failed else ""),
        client_task_id=_value(job.client_task_id),
        created_at=_rfc3339(job.created_at_unix),
        model=job.model,
        estimated_cost_idr=micros_to_idr(job.estimated_cost_micros),
        actual_cost_idr=_value(micros_to_idr(job.actual_cost_micros) if finished else ""),
        finished_at=_value(_rfc3339(job.finished_at_unix) if finished else ""),
        last_frame_url=_value(
            blobs.public_url(base_url, job.last_frame_key) if job.last_frame_key else ""
        ),
    )


class JobsBackend:
    def __init__(
        self,
        backends: Backends,
        job_state: job_state_pb2_grpc.JobStateStub,
        hold_ttl_seconds: int,
    ) -> None:
        self.backends = backends
        self.job_state = job_state
        self.hold_ttl_seconds = hold_ttl_seconds

    async def create(
        self,
        context: ServicerContext,
        plan: JobPlan,
        endpoint: str,
        claim: idempotency.ClientClaim | None = None,
    ) -> generate_pb2.JobAccepted:
        """`endpoint` names the public endpoint on the customer's usage record.
        `claim`: the client's Idempotency-Key; a repeat raises idempotency.Replay
        with the first call's JobAccepted (the same job_id), and no second job."""
        amount = plan.estimated_cost_micros
        # Ours, so that the client can be told what to poll whatever happens (and
        # the hold's usage record names the job from the start).
        job_id = new_job_id()
        caller, hold = await self.backends.authorize_hold(
            context,
            amount,
            HoldPurpose(HoldKind.JOB, plan.model, plan.modality, endpoint=endpoint, job_id=job_id),
            lambda: errors.insufficient_balance(amount),
            # Longer than the job timeout: the jobs service settles first.
            ttl_seconds=self.hold_ttl_seconds,
            claim=claim,
        )
        owner = "" if claim is None else str(HoldKey(HoldKind.JOB, caller.call_id))
        request = job_state_pb2.CreateJobRequest(
            account_id=caller.account_id,
            hold_id=hold.hold_id,
            model=plan.model,
            modality=plan.modality.to_proto(),
            spec=plan.spec,
            unit_price_micros=plan.unit_price_micros,
            estimated_units=plan.estimated_units,
            min_billable_units=plan.min_billable_units,
            estimated_cost_micros=amount,
            idempotency_key=caller.call_id,
            job_id=job_id,
            client_task_id=plan.client_task_id,
        )
        # No await since the hold was placed. Creating the job, or settling the
        # hold when it cannot be created, runs in a task of its own: a client
        # that leaves (or whose deadline passes) meanwhile cannot strand the hold.
        created = await asyncio.shield(
            self.backends.settle_later(self._create_or_settle(request, caller.request_id, owner))
        )
        if created is Creation.UNKNOWN:
            raise errors.job_status_unknown(request.job_id)
        if created is Creation.KEY_REUSED:
            # Our own key is new on every call: only the client's task id repeats.
            if plan.client_task_id:
                raise errors.client_task_id_reused(plan.client_task_id)
            raise errors.idempotency_key_reused()
        if created is Creation.NOT_CREATED:
            raise errors.service_unavailable("Jobs cannot be accepted right now. Please try again.")
        job = created.job
        if job.hold_id != hold.hold_id:
            # The client's task id named an earlier call's job, for the same work: that
            # job is the answer, and this call's hold (not the job's) goes back.
            await self.backends.release(hold.hold_id, "repeat of an existing client task id")
        return accepted_job(job, hold.hold_id, amount)

    async def _create_or_settle(
        self, request: job_state_pb2.CreateJobRequest, request_id: str, owner: str = ""
    ) -> Created | Creation:
        """The job, which now owns the hold; or why there is none (the hold then
        released, or kept while the creation is reconciled). With a client's
        Idempotency-Key (`owner`: its claim) the answer is stored first, or the
        claim dropped when no job owns the hold."""
        try:
            job = await self._create_job(request)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code in RETRYABLE:
                # The job may exist and run: releasing the hold now would give it
                # away for free. Ask until the jobs service knows.
                log.error(
                    "job creation outcome unknown; reconciling",
                    extra=fields(request_id=request_id, job_id=request.job_id, code=code.name),
                )
                self.backends.settle_later(self._reconcile_claimed(request, request_id, owner))
                return Creation.UNKNOWN
            # No job owns the hold (or it was failed and refunded already): free it.
            await self.backends.release(request.hold_id, f"job not created: {code.name}")
            log.error("job not created", extra=fields(request_id=request_id, code=code.name))
            if owner:
                await self.backends.drop_claim(owner)
            if code == grpc.StatusCode.FAILED_PRECONDITION:
                return Creation.KEY_REUSED
            return Creation.NOT_CREATED
        if owner:
            await self._keep(owner, job, request)
        return Created(job)

    async def _keep(
        self, owner: str, job: job_state_pb2.JobRecord, request: job_state_pb2.CreateJobRequest
    ) -> None:
        accepted = accepted_job(job, request.hold_id, request.estimated_cost_micros)
        answer = idempotency.StoredAnswer(202, idempotency.PROTOBUF, accepted.SerializeToString())
        await self.backends.keep_answer(owner, answer)

    async def _reconcile_claimed(
        self, request: job_state_pb2.CreateJobRequest, request_id: str, owner: str
    ) -> None:
        """Reconcile an unanswered creation; under a client's key, a job that exists
        becomes the key's answer, and one that was failed instead frees the key.
        Until then a repeat gets 409 (in flight)."""
        job = await self.reconcile(request, request_id)
        if not owner or job is None:
            return  # unresolved: the claim lapses with the hold
        if JobStatus.from_proto(job.status) is JobStatus.FAILED and not job.actual_cost_micros:
            await self.backends.drop_claim(owner)
        else:
            await self._keep(owner, job, request)

    async def reconcile(
        self, request: job_state_pb2.CreateJobRequest, request_id: str
    ) -> job_state_pb2.JobRecord | None:
        """Ask the jobs service, until it answers, to settle a creation whose outcome
        is unknown: it returns the job if it exists (the job owns the hold), or
        fails the job under its id, so it can never be created late, and releases
        the hold itself. Gives up when the hold has expired anyway."""
        deadline = time.monotonic() + self.hold_ttl_seconds
        pause = RECONCILE_FIRST_PAUSE_SECONDS
        while True:
            await asyncio.sleep(pause)
            try:
                job: job_state_pb2.JobRecord = await self.job_state.AbandonCreation(
                    request, timeout=JOBS_TIMEOUT_SECONDS
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() in RETRYABLE and time.monotonic() < deadline:
                    pause = min(pause * 2, RECONCILE_MAX_PAUSE_SECONDS)
                    continue
                if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
                    # The client's task id names another job, of different work: no
                    # job owns this call's hold.
                    await self.backends.release(request.hold_id, "client task id reused")
                    return None
                # The hold expires and billing releases it; a job that exists is
                # settled by the jobs service before that (its hold outlives it).
                log.error(
                    "job creation not reconciled; its hold is left to expire",
                    extra=fields(
                        request_id=request_id, job_id=request.job_id, code=exc.code().name
                    ),
                )
                return None
            log.warning(
                "job creation reconciled",
                extra=fields(
                    request_id=request_id, job_id=job.job_id, status=status_label(job.status)
                ),
            )
            if job.hold_id != request.hold_id:
                # An earlier call's job under the client's task id: it owns its own hold.
                await self.backends.release(request.hold_id, "repeat of a client task id")
            return job

    async def _create_job(self, request: job_state_pb2.CreateJobRequest) -> job_state_pb2.JobRecord:
        """CreateJob is idempotent per request id, so a reply lost to a timeout or
        a restarting jobs service is asked for again rather than given up on:
        giving up would release the hold of a job that may exist and run."""
        for attempt in range(1, CREATE_JOB_ATTEMPTS + 1):
            try:
                job: job_state_pb2.JobRecord = await self.job_state.CreateJob(
                    request, timeout=JOBS_TIMEOUT_SECONDS
                )
                return job
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in RETRYABLE or attempt == CREATE_JOB_ATTEMPTS:
                    raise
                await asyncio.sleep(0.2 * attempt)
        raise AssertionError("unreachable")


def accepted_job(
    job: job_state_pb2.JobRecord, hold_id: str, amount_micros: int
) -> generate_pb2.JobAccepted:
    """The 202's body: a new job (it owns this call's hold) is pending at this call's
    estimate; an earlier call's job (a repeated client_task_id) is shown as it is."""
    if job.hold_id != hold_id:
        return generate_pb2.JobAccepted(
            job_id=job.job_id,
            status=JobStatus.from_proto(job.status).value,
            estimated_cost_idr=micros_to_idr(job.estimated_cost_micros),
        )
    return generate_pb2.JobAccepted(
        job_id=job.job_id,
        status=JobStatus.PENDING.value,
        estimated_cost_idr=micros_to_idr(amount_micros),
    )


class GenerateService(generate_pb2_grpc.GenerateServicer):
    def __init__(
        self,
        catalog: Catalog,
        backends: Backends,
        jobs: JobsBackend,
        store: blobs.LocalBlobStore,
        public_base_url: str,
        images: DecodeGate | None = None,
    ) -> None:
        self.catalog = catalog
        self.backends = backends
        self.jobs = jobs
        self.store = store
        self.public_base_url = public_base_url
        self.images = images if images is not None else DecodeGate.from_env()
        self.references = ReferenceResolver(store, public_base_url)

    async def _create(
        self,
        parse: Parser,
        endpoint: str,
        request: httpbody_pb2.HttpBody,
        context: ServicerContext,
    ) -> generate_pb2.JobAccepted:
        self.backends.api_key(context)  # no key at all: 401 before anything else
        plan = parse(request.data, self.catalog)
        # Validated first: a request refused as invalid never claims the key.
        claim = idempotency.claim_of(
            request_metadata(context, idempotency.HEADER), endpoint, request.data
        )
        if own_references(plan.spec):
            # Our blobs must be the caller's: resolved before anything is held.
            caller = await self.backends.authenticate(context)
            await self.references.resolve(plan.spec, caller.account_id)
        try:
            accepted = await self.jobs.create(context, plan, endpoint, claim)
        except idempotency.Replay as replay:
            return _replayed_job(replay.answer)
        add_response_header(errors.STATUS_HEADER, "202")  # error_shaping.lua sets it
        return accepted

    @public_unary
    async def GenerateImage(
        self, request: httpbody_pb2.HttpBody, context: ServicerContext
    ) -> generate_pb2.JobAccepted:
        return await self._create(parse_image_generate, "image.generate", request, context)

    @public_unary
    async def TransformImage(
        self, request: httpbody_pb2.HttpBody, context: ServicerContext
    ) -> generate_pb2.JobAccepted:
        return await self._create(parse_image_img2img, "image.img2img", request, context)

    @public_unary
    async def GenerateVideo(
        self, request: httpbody_pb2.HttpBody, context: ServicerContext
    ) -> generate_pb2.JobAccepted:
        return await self._create(parse_video_generate, "video.generate", request, context)

    @public_unary
    async def AnimateImage(
        self, request: httpbody_pb2.HttpBody, context: ServicerContext
    ) -> generate_pb2.JobAccepted:
        return await self._create(parse_video_img2video, "video.img2video", request, context)

    @public_unary
    async def GenerateMultimodalVideo(
        self, request: httpbody_pb2.HttpBody, context: ServicerContext
    ) -> generate_pb2.JobAccepted:
        return await self._create(parse_video_multimodal, "video.multimodal", request, context)

    @public_unary
    async def UploadImage(
        self, request: httpbody_pb2.HttpBody, context: ServicerContext
    ) -> generate_pb2.Upload:
        caller = await self.backends.authenticate(context)
        image = parse_upload(request.data, request.content_type)
        try:
            # Decoded in full (off the event loop, bounded) before it is stored.
            info = await self.images.verify(image.data)
        except InvalidImage as exc:
            raise errors.invalid_image(exc.message, FILE_FIELD) from None

        async def store() -> generate_pb2.Upload:
            key = blobs.new_key("uploads", f"image.{info.extension}")
            try:
                await self.store.record_owner(key, caller.account_id)
                await self.store.put_bytes(key, image.data)
            except OSError as exc:  # disk full, permissions: ours, not the client's
                log.error("upload not stored", extra=fields(error=repr(exc)))
                raise errors.service_unavailable(
                    "Uploads are temporarily unavailable. Please try again."
                ) from exc
            token = blobs.parse_key(key)
            assert token is not None
            log.info(
                "upload stored",
                extra=fields(
                    request_id=caller.request_id,
                    account_id=caller.account_id,
                    bytes=len(image.data),
                    content_type=info.content_type,
                ),
            )
            return generate_pb2.Upload(
                upload_id=f"upl_{token.token}",
                url=blobs.public_url(self.public_base_url, key),
                content_type=info.content_type,
                size_bytes=len(image.data),
            )

        # What the key guards is the image itself, not the multipart body around it
        # (its boundary is random: two sends of one file differ).
        return await once(
            self.backends, context, caller, "image.upload", image.data, generate_pb2.Upload, store
        )


class JobsService(jobs_pb2_grpc.JobsServicer):
    def __init__(self, backends: Backends, jobs: JobsBackend, public_base_url: str) -> None:
        self.backends = backends
        self.jobs = jobs
        self.public_base_url = public_base_url

    @public_unary
    async def GetJob(
        self, request: jobs_pb2.GetJobRequest, context: ServicerContext
    ) -> jobs_pb2.Job:
        caller = await self.backends.authenticate(context)
        try:
            job = await self.jobs.job_state.GetJob(
                job_state_pb2.GetJobStateRequest(
                    job_id=request.job_id, account_id=caller.account_id
                ),
                timeout=JOBS_TIMEOUT_SECONDS,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise errors.job_not_found() from exc
            raise _jobs_unavailable() from exc
        return public_job(job, self.public_base_url)

    @public_unary
    async def ListJobs(
        self, request: jobs_pb2.ListJobsRequest, context: ServicerContext
    ) -> jobs_pb2.JobList:
        caller = await self.backends.authenticate(context)
        # Only ever the authenticated account: the one tenancy rule here.
        return await self.account_jobs(caller.account_id, request)

    async def account_jobs(
        self, account_id: str, request: jobs_pb2.ListJobsRequest
    ) -> jobs_pb2.JobList:
        """One page of an account's jobs (the caller's own, or for an operator)."""
        listing = parse_listing(request)
        try:
            page = await self.jobs.job_state.ListJobs(
                job_state_pb2.ListJobRecordsRequest(
                    account_id=account_id,
                    limit=listing.limit,
                    after_job_id=listing.after_job_id or "",
                    status=(
                        listing.status.to_proto()
                        if listing.status
                        else job_state_pb2.JOB_STATUS_UNSPECIFIED
                    ),
                    model=listing.model or "",
                    client_task_id=listing.client_task_id or "",
                ),
                timeout=JOBS_TIMEOUT_SECONDS,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                # The cursor's job is not this account's (or does not exist).
                raise errors.invalid_cursor() from exc
            raise _jobs_unavailable() from exc
        return job_list(page, self.public_base_url)


def _replayed_job(answer: idempotency.StoredAnswer) -> generate_pb2.JobAccepted:
    """The first call's JobAccepted again: the same job, its status, Idempotent-Replayed."""
    if answer.content_type != idempotency.PROTOBUF:
        raise errors.idempotency_key_reused()  # the key's answer is not a job's
    add_response_header(idempotency.REPLAYED_HEADER, "true")
    add_response_header(errors.STATUS_HEADER, str(answer.http_status))
    return generate_pb2.JobAccepted.FromString(answer.body)


def job_list(page: job_state_pb2.JobRecordPage, base_url: str) -> jobs_pb2.JobList:
    """The public list object of one page of jobs."""
    cursor = encode_cursor(page.jobs[-1].job_id) if page.has_more and page.jobs else ""
    return jobs_pb2.JobList(
        object="list",
        data=[public_job(job, base_url) for job in page.jobs],
        has_more=page.has_more,
        next_cursor=_value(cursor),
    )


def _jobs_unavailable() -> errors.PublicError:
    return errors.service_unavailable("Jobs are temporarily unavailable. Please try again.")
