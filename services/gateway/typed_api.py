"""Typed gRPC for internal callers: aiport.v1.Text and aiport.v1.Media.

Plain gRPC with typed messages, never behind the edge (their protos have no HTTP
binding). Each call is the public call inside: Text is a chat completion
(relay_chat: hold, failover, capture, refund), Media an image or video job
(JobsBackend.create), each with its own endpoint name on the usage record.
Jobs are polled with aiport.v1.Jobs/GetJob, which is typed already.

Errors leave as gRPC statuses a gRPC client understands (`typed_unary`,
`typed_stream`): the catalog error's code and message, with google.rpc details
(ErrorInfo; BadRequest naming the field; RetryInfo) in grpc-status-details-bin.
Not boundary.public_*: those shape errors for the edge's Lua filter and send a
stream's late errors as SSE events, which mean nothing to a gRPC client.
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import grpc
from aiport.v1 import generate_pb2, media_pb2, media_pb2_grpc, text_pb2, text_pb2_grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2

from services.common.catalog import Catalog
from services.common.grpc_server import ServicerContext
from services.gateway.boundary import (
    MARK,
    collect_response_headers,
    public_error,
    send_response_headers,
)
from services.gateway.errors import PublicError
from services.gateway.generate_request import JobPlan
from services.gateway.jobs_api import JobsBackend
from services.gateway.references import ReferenceResolver, own_references
from services.gateway.renderers import ClientRenderer
from services.gateway.server import Backends, relay_chat
from services.gateway.typed_media import (
    plan_image_job,
    plan_img2img_job,
    plan_img2video_job,
    plan_video_job,
)
from services.gateway.typed_text import (
    CanonicalRenderer,
    parse_text_request,
)

S = TypeVar("S")
Req = TypeVar("Req")
Resp = TypeVar("Resp")

# The usage record's names for these calls (billing takes any short printable name).
TEXT_ENDPOINT = "grpc.text"
IMAGE_ENDPOINT = "grpc.image.generate"
IMG2IMG_ENDPOINT = "grpc.image.img2img"
VIDEO_ENDPOINT = "grpc.video.generate"
IMG2VIDEO_ENDPOINT = "grpc.video.img2video"

ERROR_DOMAIN = "aiport"
STATUS_DETAILS_KEY = "grpc-status-details-bin"


def typed_code(error: PublicError) -> grpc.StatusCode:
    """The gRPC code of a catalog error. A balance that cannot cover the call is
    RESOURCE_EXHAUSTED for jobs too (their HTTP 402 maps to FAILED_PRECONDITION)."""
    if error.status == 402:
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    return error.grpc_code


def status_details(error: PublicError) -> status_pb2.Status:
    """The google.rpc.Status a gRPC client reads from grpc-status-details-bin."""
    code = typed_code(error)
    status = status_pb2.Status(code=code.value[0], message=error.message)
    info = error_details_pb2.ErrorInfo(
        reason=(error.code or error.type).upper(),
        domain=ERROR_DOMAIN,
        metadata={"type": error.type},
    )
    if error.param:
        info.metadata["param"] = error.param
    status.details.add().Pack(info)
    if error.param and code == grpc.StatusCode.INVALID_ARGUMENT:
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=error.param, description=error.message
        )
        status.details.add().Pack(error_details_pb2.BadRequest(field_violations=[violation]))
    if error.retry_after_seconds is not None:
        delay = duration_pb2.Duration(seconds=max(1, error.retry_after_seconds))
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    return status


async def abort_typed(context: ServicerContext, error: PublicError) -> None:
    await context.abort(
        typed_code(error),
        error.message,
        ((STATUS_DETAILS_KEY, status_details(error).SerializeToString()),),
    )


def typed_unary(
    method: Callable[[S, Req, ServicerContext], Awaitable[Resp]],
) -> Callable[[S, Req, ServicerContext], Awaitable[Resp]]:
    async def wrapper(self: S, request: Req, context: ServicerContext) -> Resp:
        collect_response_headers()
        try:
            response = await method(self, request, context)
            await send_response_headers(context)
            return response
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await abort_typed(context, public_error(method.__qualname__, exc))
            raise AssertionError("unreachable") from None  # abort raises

    functools.update_wrapper(wrapper, method)
    setattr(wrapper, MARK, True)  # behind a boundary (tests/unit/test_error_boundary.py)
    return wrapper


def typed_stream(
    method: Callable[[S, Req, ServicerContext], AsyncIterator[Resp]],
) -> Callable[[S, Req, ServicerContext], AsyncIterator[Resp]]:
    """For a server stream: an error ends it with its status, before or after
    messages (gRPC sends the status after the last message)."""

    async def wrapper(self: S, request: Req, context: ServicerContext) -> AsyncIterator[Resp]:
        collect_response_headers()
        started = False
        try:
            async for item in method(self, request, context):
                if not started:
                    await send_response_headers(context)
                    started = True
                yield item
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await abort_typed(context, public_error(method.__qualname__, exc))

    functools.update_wrapper(wrapper, method)
    setattr(wrapper, MARK, True)
    return wrapper


class TextService(text_pb2_grpc.TextServicer):
    def __init__(self, catalog: Catalog, backends: Backends) -> None:
        self.catalog = catalog
        self.backends = backends

    def _relay(
        self, request: text_pb2.TextRequest, context: ServicerContext, *, stream: bool
    ) -> AsyncIterator[bytes]:
        started = time.monotonic()
        self.backends.api_key(context)  # no key at all: UNAUTHENTICATED before anything else
        call = parse_text_request(request, self.catalog, stream=stream)

        def renderer(completion_id: str, created: int) -> ClientRenderer:
            return CanonicalRenderer(completion_id, call.model, created)

        async def relayed() -> AsyncIterator[bytes]:
            async for item in relay_chat(
                self.backends, context, call, TEXT_ENDPOINT, renderer, started
            ):
                yield item.data

        return relayed()

    @typed_unary
    async def Complete(
        self, request: text_pb2.TextRequest, context: ServicerContext
    ) -> text_pb2.TextCompletion:
        answer = b""
        async for data in self._relay(request, context, stream=False):
            answer = data  # one message: the completion
        return text_pb2.TextCompletion.FromString(answer)

    @typed_stream
    async def Stream(
        self, request: text_pb2.TextRequest, context: ServicerContext
    ) -> AsyncIterator[text_pb2.TextChunk]:
        async for data in self._relay(request, context, stream=True):
            yield text_pb2.TextChunk.FromString(data)


class MediaService(media_pb2_grpc.MediaServicer):
    def __init__(
        self, catalog: Catalog, backends: Backends, jobs: JobsBackend, references: ReferenceResolver
    ) -> None:
        self.catalog = catalog
        self.backends = backends
        self.jobs = jobs
        self.references = references

    async def _create(
        self,
        plan: Callable[[Catalog], JobPlan],
        endpoint: str,
        context: ServicerContext,
    ) -> generate_pb2.JobAccepted:
        """GenerateService._create for a typed request (no 202 header: no edge here)."""
        self.backends.api_key(context)  # no key at all: UNAUTHENTICATED before anything else
        job = plan(self.catalog)
        if own_references(job.spec):
            # Our blobs must be the caller's: resolved before anything is held.
            caller = await self.backends.authenticate(context)
            await self.references.resolve(job.spec, caller.account_id)
        return await self.jobs.create(context, job, endpoint)

    @typed_unary
    async def CreateImageJob(
        self, request: media_pb2.ImageJobRequest, context: ServicerContext
    ) -> generate_pb2.JobAccepted:
        return await self._create(
            lambda catalog: plan_image_job(request, catalog), IMAGE_ENDPOINT, context
        )

    @typed_unary
    async def CreateImg2ImgJob(
        self, request: media_pb2.Img2ImgJobRequest, context: ServicerContext
    ) -> generate_pb2.JobAccepted:
        return await self._create(
            lambda catalog: plan_img2img_job(request, catalog), IMG2IMG_ENDPOINT, context
        )

    @typed_unary
    async def CreateVideoJob(
        self, request: media_pb2.VideoJobRequest, context: ServicerContext
    ) -> generate_pb2.JobAccepted:
        return await self._create(
            lambda catalog: plan_video_job(request, catalog), VIDEO_ENDPOINT, context
        )

    @typed_unary
    async def CreateImg2VideoJob(
        self, request: media_pb2.Img2VideoJobRequest, context: ServicerContext
    ) -> generate_pb2.JobAccepted:
        return await self._create(
            lambda catalog: plan_img2video_job(request, catalog), IMG2VIDEO_ENDPOINT, context
        )
