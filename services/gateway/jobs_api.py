"""The gateway's async API: Generate (create jobs, upload references) and Jobs (poll).

A create call places a hold for the job's worst-case price, asks the jobs
service to create the job (committed and queued before it answers), and
answers 202. If the job cannot be created the hold is released at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
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
from services.common.grpc_server import ServicerContext
from services.common.images import DecodeGate, InvalidImage
from services.common.logs import fields
from services.common.money import micros_to_idr
from services.gateway import errors
from services.gateway.errors import PublicError
from services.gateway.generate_request import (
    JobPlan,
    parse_image_generate,
    parse_image_img2img,
    parse_video_generate,
    parse_video_img2video,
    parse_video_multimodal,
)
from services.gateway.references import ReferenceResolver, own_references
from services.gateway.server import Backends, abort_with
from services.gateway.upload import FILE_FIELD, parse_upload

log = logging.getLogger(__name__)

JOBS_TIMEOUT_SECONDS = 15.0
CREATE_JOB_ATTEMPTS = 3
ACCEPTED = (("x-aiport-http-status", "202"),)

Parser = Callable[[bytes, Catalog], JobPlan]


def insufficient_balance(amount_micros: int) -> PublicError:
    return PublicError(
        402,
        "insufficient_balance",
        "insufficient_balance",
        "Your IDR balance cannot cover this job "
        f"(it costs up to {micros_to_idr(amount_micros)} IDR). Top up to continue.",
    )


def invalid_image(message: str) -> PublicError:
    return PublicError(400, "invalid_request_error", "invalid_image", message, FILE_FIELD)


def job_not_found() -> PublicError:
    return PublicError(
        404, "invalid_request_error", "not_found", "No such job for this API key.", "job_id"
    )


def _value(text: str) -> struct_pb2.Value:
    return (
        struct_pb2.Value(string_value=text)
        if text
        else struct_pb2.Value(null_value=struct_pb2.NULL_VALUE)
    )


def _rfc3339(unix: int) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def public_job(job: job_state_pb2.JobRecord, base_url: str) -> jobs_pb2.Job:
    finished = job.status in ("done", "failed")
    return jobs_pb2.Job(
        job_id=job.job_id,
        status=job.status,
        result_url=_value(blobs.public_url(base_url, job.result_key) if job.result_key else ""),
        error_message=_value(job.error_message if job.status == "failed" else ""),
        error_code=_value(job.error_code if job.status == "failed" else ""),
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

    async def create(self, context: ServicerContext, plan: JobPlan) -> generate_pb2.JobAccepted:
        amount = plan.estimated_cost_micros
        caller, hold = await self.backends.authorize_hold(
            context,
            amount,
            f"job {plan.modality} {plan.model}",
            lambda: insufficient_balance(amount),
            # Longer than the job timeout: the jobs service settles first.
            ttl_seconds=self.hold_ttl_seconds,
            model=plan.model,  # billing's revenue account (issue 12)
        )
        request = job_state_pb2.CreateJobRequest(
            account_id=caller.account_id,
            hold_id=hold.hold_id,
            model=plan.model,
            modality=plan.modality,
            spec=plan.spec,
            unit_price_micros=plan.unit_price_micros,
            estimated_units=plan.estimated_units,
            min_billable_units=plan.min_billable_units,
            estimated_cost_micros=amount,
            idempotency_key=caller.call_id,
        )
        # No await since the hold was placed. Creating the job, or releasing the
        # hold when it cannot be created, runs in a task of its own: a client
        # that leaves (or whose deadline passes) meanwhile cannot strand the hold.
        job = await asyncio.shield(
            self.backends.settle_later(self._create_or_release(request, caller.request_id))
        )
        if job is None:
            raise errors.service_unavailable("Jobs cannot be accepted right now. Please try again.")
        return generate_pb2.JobAccepted(
            job_id=job.job_id, status="pending", estimated_cost_idr=micros_to_idr(amount)
        )

    async def _create_or_release(
        self, request: job_state_pb2.CreateJobRequest, request_id: str
    ) -> job_state_pb2.JobRecord | None:
        """The job, which now owns the hold; or None, the hold released."""
        try:
            return await self._create_job(request)
        except grpc.aio.AioRpcError as exc:
            # No job exists (or it was failed and refunded already): free the money now.
            await self.backends.release(request.hold_id, f"job not created: {exc.code().name}")
            log.error("job not created", extra=fields(request_id=request_id, code=exc.code().name))
            return None

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
                retryable = exc.code() in (
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    grpc.StatusCode.UNAVAILABLE,
                )
                # A job the jobs service refused (and refunded) comes back failed
                # on the retry, which the client then sees when polling.
                if not retryable or attempt == CREATE_JOB_ATTEMPTS:
                    raise
                await asyncio.sleep(0.2 * attempt)
        raise AssertionError("unreachable")


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
        self, parse: Parser, request: httpbody_pb2.HttpBody, context: ServicerContext
    ) -> generate_pb2.JobAccepted:
        try:
            self.backends.api_key(context)  # no key at all: 401 before anything else
            plan = parse(request.data, self.catalog)
            if own_references(plan.spec):
                # Our blobs must be the caller's: resolved before anything is held.
                caller = await self.backends.authenticate(context)
                await self.references.resolve(plan.spec, caller.account_id)
            accepted = await self.jobs.create(context, plan)
        except PublicError as error:
            await abort_with(context, error)
            raise AssertionError("unreachable") from None
        await context.send_initial_metadata(ACCEPTED)
        return accepted

    async def GenerateImage(
        self, request: httpbody_pb2.HttpBody, context: ServicerContext
    ) -> generate_pb2.JobAccepted:
        return await self._create(parse_image_generate, request, context)

    async def TransformImage(
        self, request: httpbody_pb2.HttpBody, context: ServicerContext
    ) -> generate_pb2.JobAccepted:
        return await self._create(parse_image_img2img, request, context)

    async def GenerateVideo(
        self, request: httpbody_pb2.HttpBody, context: ServicerContext
    ) -> generate_pb2.JobAccepted:
        return await self._create(parse_video_generate, request, context)

    async def AnimateImage(
        self, request: httpbody_pb2.HttpBody, context: ServicerContext
    ) -> generate_pb2.JobAccepted:
        return await self._create(parse_video_img2video, request, context)

    async def GenerateMultimodalVideo(
        self, request: httpbody_pb2.HttpBody, context: ServicerContext
    ) -> generate_pb2.JobAccepted:
        return await self._create(parse_video_multimodal, request, context)

    async def UploadImage(
        self, request: httpbody_pb2.HttpBody, context: ServicerContext
    ) -> generate_pb2.Upload:
        try:
            caller = await self.backends.authenticate(context)
            image = parse_upload(request.data, request.content_type)
            try:
                # Decoded in full (off the event loop, bounded) before it is stored.
                info = await self.images.verify(image.data)
            except InvalidImage as exc:
                raise invalid_image(exc.message) from None
        except PublicError as error:
            await abort_with(context, error)
            raise AssertionError("unreachable") from None
        key = blobs.new_key("uploads", f"image.{info.extension}")
        try:
            await self.store.record_owner(key, caller.account_id)
            await self.store.put_bytes(key, image.data)
        except OSError as exc:  # disk full, permissions: ours, not the client's
            log.error("upload not stored", extra=fields(error=repr(exc)))
            await abort_with(
                context,
                errors.service_unavailable(
                    "Uploads are temporarily unavailable. Please try again."
                ),
            )
            raise AssertionError("unreachable") from exc
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


class JobsService(jobs_pb2_grpc.JobsServicer):
    def __init__(self, backends: Backends, jobs: JobsBackend, public_base_url: str) -> None:
        self.backends = backends
        self.jobs = jobs
        self.public_base_url = public_base_url

    async def GetJob(
        self, request: jobs_pb2.GetJobRequest, context: ServicerContext
    ) -> jobs_pb2.Job:
        try:
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
                    raise job_not_found() from exc
                raise errors.service_unavailable(
                    "Jobs are temporarily unavailable. Please try again."
                ) from exc
        except PublicError as error:
            await abort_with(context, error)
            raise AssertionError("unreachable") from None
        return public_job(job, self.public_base_url)
