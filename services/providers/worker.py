"""Provider workers: take jobs from the broker, run them upstream, store the
result, report the outcome.

    python -m services.providers.worker_main --kind image|video

At-least-once delivery, made exactly-once where it matters: a worker acks its
message only after the outcome is confirmed by the broker; a redelivered job
that was already finished is skipped; a job another worker is running (it
holds the job's lease, renewed by heartbeats) is put off, not run a second
time; a video job whose upstream task was recorded resumes polling that task
instead of paying for another once the lease of a worker that died expires.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import grpc
from aio_pika import Message
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage
from aiport.v1 import job_state_pb2, job_state_pb2_grpc

from services.common import blobs, broker, metrics, requestctx
from services.common.catalog import (
    Catalog,
    ImageModel,
    ReferenceClipRules,
    ReferenceImageRules,
    VideoModel,
)
from services.common.images import DecodeGate, InvalidImage
from services.common.job_states import Modality, WorkerKind, modality_label
from services.common.logs import fields
from services.providers.errors import (
    PROVIDER_FAILED,
    JobErrorCode,
    UpstreamError,
    job_error,
    task_error,
)
from services.providers.failover import Breakers, route_key
from services.providers.failover_driver import Failover
from services.providers.fetch import FetchFailed, FetchRefused, load_reference
from services.providers.media import (
    GeneratedImage,
    ImageAdapter,
    ImageRequest,
    Reference,
    ReferenceRole,
    VideoRequest,
    VideoTaskAdapter,
)
from services.providers.reference_clips import (
    ClipKind,
    ReferenceClipRefused,
    check_clips,
    measure,
)
from services.providers.reference_images import ReferenceImageRefused, adapt_reference_image
from services.providers.routes import Route, RouteTable

T = TypeVar("T")

log = logging.getLogger(__name__)

JOB_STATE_TIMEOUT_SECONDS = 10.0
# The jobs service fails overdue jobs itself; a worker stops a little later so
# the two never race to report the same timeout.
DEADLINE_GRACE_SECONDS = 30
IMAGE_REFERENCE_MAX_BYTES = 30 * 1024 * 1024
MEDIA_REFERENCE_MAX_BYTES = 50 * 1024 * 1024
IMAGE_RESULT_MAX_BYTES = 64 * 1024 * 1024
VIDEO_RESULT_MAX_BYTES = 512 * 1024 * 1024
IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp")
IMAGE_ROLES = ("image", "first_frame", "last_frame")
VIDEO_TYPES = ("video/mp4", "video/quicktime", "video/webm")
AUDIO_TYPES = ("audio/mpeg", "audio/mp3", "audio/wav", "audio/x-wav", "audio/mp4", "audio/aac")
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
# Transient failures of the two calls after paid upstream work, retried in place
# before falling back (a redelivered job would pay the upstream again).
RECORD_TASK_ATTEMPTS = 3
PUBLISH_ATTEMPTS = 3
RETRY_PAUSE_SECONDS = 0.5
TRANSIENT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
# The jobs service says the lease is not ours any more: stop working on the job.
LEASE_LOST = (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND)


async def record_upstream_task(
    job_state: job_state_pb2_grpc.JobStateStub, job_id: str, upstream_task_id: str
) -> None:
    """Remember a submitted task before polling it, so a worker killed from here on
    resumes it. If the jobs service stays unreachable, polling goes on with the id
    in hand: only resume-after-crash is lost, not the task we already paid for."""
    request = job_state_pb2.RecordUpstreamTaskRequest(
        job_id=job_id, upstream_task_id=upstream_task_id
    )
    for attempt in range(1, RECORD_TASK_ATTEMPTS + 1):
        try:
            await job_state.RecordUpstreamTask(request, timeout=JOB_STATE_TIMEOUT_SECONDS)
            return
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in TRANSIENT:
                raise
            if attempt == RECORD_TASK_ATTEMPTS:
                log.warning(
                    "upstream task not recorded; polling it anyway",
                    extra=fields(job_id=job_id, code=exc.code().name),
                )
                return
            await asyncio.sleep(RETRY_PAUSE_SECONDS * attempt)


async def publish_confirmed(exchange: AbstractExchange, message: Message, queue: str) -> bool:
    """Publish with broker confirmation, retried a few times in place: True once
    confirmed, False if it never was."""
    for attempt in range(1, PUBLISH_ATTEMPTS + 1):
        try:
            await exchange.publish(
                message, routing_key=queue, timeout=broker.CONFIRM_TIMEOUT_SECONDS
            )
            return True
        except Exception as exc:
            log.warning("publish not confirmed", extra=fields(attempt=attempt, e=repr(exc)))
            if attempt < PUBLISH_ATTEMPTS:
                await asyncio.sleep(RETRY_PAUSE_SECONDS * attempt)
    return False


def _clip_max_bytes(rules: ReferenceClipRules | None) -> int:
    """The fetch limit for a clip: the upstream's, never above our endpoint's."""
    if rules is None or not rules.max_bytes:
        return MEDIA_REFERENCE_MAX_BYTES
    return min(rules.max_bytes, MEDIA_REFERENCE_MAX_BYTES)


class JobFailed(Exception):
    """The job cannot succeed; the message is safe to show the client, the code says
    whose doing it was (the client's input, or ours / the provider's)."""

    def __init__(self, message: str, code: JobErrorCode = "provider_error") -> None:
        super().__init__(message)
        self.code: JobErrorCode = code


@dataclass(frozen=True, slots=True)
class Result:
    result_key: str
    units: int
    last_frame_key: str = ""
    provider: str = ""  # whose route produced it (billing's revenue by provider)


class Worker:
    def __init__(
        self,
        kind: str,
        routes: RouteTable,
        image_adapters: dict[str, ImageAdapter],
        video_adapters: dict[str, VideoTaskAdapter],
        breakers: Breakers,
        job_state: job_state_pb2_grpc.JobStateStub,
        store: blobs.LocalBlobStore,
        outcomes: AbstractExchange,
        names: broker.Names,
        worker_id: str,
        job_timeout_seconds: int,
        catalog: Catalog,
        images: DecodeGate | None = None,
    ) -> None:
        self.kind = kind
        self.catalog = catalog
        self.routes = routes
        self.image_adapters = image_adapters
        self.video_adapters = video_adapters
        self.breakers = breakers
        self.job_state = job_state
        self.store = store
        self.outcomes = outcomes
        self.names = names
        self.worker_id = worker_id
        self.job_timeout_seconds = job_timeout_seconds
        self.images = images if images is not None else DecodeGate.from_env()
        adapters = {**image_adapters, **video_adapters}
        served = {
            route_key(r): r for rs in routes.routes.values() for r in rs if r.provider in adapters
        }
        metrics.watch_breakers(lambda: self.breakers.states(served.values()))

    # -- the message -----------------------------------------------------------
    async def handle(self, message: AbstractIncomingMessage) -> None:
        """One work message, with the request id it carries (the one the job was
        created under) current for its log lines and upstream calls."""
        with requestctx.of_message(message.headers):
            await self._handle(message)

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        try:
            item = job_state_pb2.WorkItem.FromString(message.body)
        except Exception:
            # Unreadable: the job (if any) times out and is refunded by the jobs service.
            log.error("dropping unreadable work message", extra=fields(id=message.message_id))
            await message.ack()
            return
        try:
            attempt = await self.job_state.BeginLeasedAttempt(
                job_state_pb2.BeginAttemptRequest(job_id=item.job_id, worker_id=self.worker_id),
                timeout=JOB_STATE_TIMEOUT_SECONDS,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                log.error("work for an unknown job dropped", extra=fields(job_id=item.job_id))
                await message.ack()
            else:
                await asyncio.sleep(1.0)
                await message.nack(requeue=True)
            return
        job = attempt.job
        if attempt.verdict == job_state_pb2.Attempt.DEFER:
            await self._defer(message, job.job_id, attempt.defer_seconds)
            return
        if attempt.verdict != job_state_pb2.Attempt.RUN:
            log.info("job already finished; skipped", extra=fields(job_id=job.job_id))
            await message.ack()
            return
        log.info(
            "job started",
            extra=fields(job_id=job.job_id, model=job.model, attempt=job.attempts),
        )
        outcome = await self._run_leased(job, attempt.lease)
        if outcome is None:
            # Another attempt owns the job now and reports it; this delivery is done.
            await message.ack()
            return
        reply = broker.message(outcome.SerializeToString(), job.job_id)
        reply.headers.update(requestctx.message_headers())
        if not await publish_confirmed(self.outcomes, reply, self.names.outcomes_queue):
            # Still not confirmed: leave the work unacked so it is tried again (at
            # once: the lease is given back). A video resumes its recorded
            # upstream task; an image is generated again.
            log.error("outcome not confirmed", extra=fields(job_id=job.job_id))
            await self._release_lease(attempt.lease)
            await message.nack(requeue=True)
            return
        await message.ack()
        log.info(
            "job outcome sent",
            extra=fields(job_id=job.job_id, succeeded=outcome.succeeded, units=outcome.units),
        )

    async def _defer(self, message: AbstractIncomingMessage, job_id: str, seconds: int) -> None:
        """Put off a delivery of a job another worker is running: a copy waits in
        the deferred queue until about when that lease ends, then comes back. The
        original is acked only once the copy is confirmed, so it is never lost."""
        copy = broker.message(message.body, message.message_id or job_id, max(1, seconds))
        copy.headers.update(requestctx.message_headers())
        queue = self.names.deferred_queue(self.kind)
        if await publish_confirmed(self.outcomes, copy, queue):
            await message.ack()
            log.info("job leased elsewhere; deferred", extra=fields(job_id=job_id, defer_s=seconds))
            return
        await asyncio.sleep(max(1, seconds))
        await message.nack(requeue=True)

    async def _run_leased(
        self, job: job_state_pb2.JobRecord, lease: job_state_pb2.Lease
    ) -> job_state_pb2.JobOutcome | None:
        """Run the job while heartbeats keep its lease; None if the lease was lost
        (expired and taken by another worker, or the job finished meanwhile):
        the work is stopped rather than paid for twice."""
        work = asyncio.ensure_future(self.run(job))
        heartbeat = asyncio.ensure_future(self._keep_lease(lease))
        try:
            await asyncio.wait({work, heartbeat}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (work, heartbeat):
                task.cancel()  # a no-op for the finished one
            await asyncio.gather(work, heartbeat, return_exceptions=True)
        if work.cancelled():
            return None
        return work.result()

    async def _keep_lease(self, lease: job_state_pb2.Lease) -> None:
        """Renew the lease until told it is not ours (then return). An unreachable
        jobs service is tried again at the next beat: the work goes on meanwhile."""
        every = max(1, lease.renew_every_seconds)
        timeout = min(every, JOB_STATE_TIMEOUT_SECONDS)
        request = job_state_pb2.LeaseRequest(job_id=lease.job_id, lease_token=lease.token)
        while True:
            await asyncio.sleep(every)
            try:
                await self.job_state.RenewLease(request, timeout=timeout)
            except grpc.aio.AioRpcError as exc:
                if exc.code() in LEASE_LOST:
                    log.warning(
                        "job lease lost; stopping this attempt", extra=fields(job_id=lease.job_id)
                    )
                    return
                log.warning(
                    "job lease not renewed; trying again",
                    extra=fields(job_id=lease.job_id, code=exc.code().name),
                )

    async def _release_lease(self, lease: job_state_pb2.Lease) -> None:
        try:
            await self.job_state.ReleaseLease(
                job_state_pb2.LeaseRequest(job_id=lease.job_id, lease_token=lease.token),
                timeout=JOB_STATE_TIMEOUT_SECONDS,
            )
        except grpc.aio.AioRpcError as exc:  # it expires on its own
            log.warning("lease not released", extra=fields(job_id=lease.job_id, e=exc.code().name))

    async def run(self, job: job_state_pb2.JobRecord) -> job_state_pb2.JobOutcome:
        deadline = job.created_at_unix + self.job_timeout_seconds + DEADLINE_GRACE_SECONDS
        try:
            # ValueError if unset (a jobs service of another version): crashed below.
            modality = Modality.from_proto(job.modality)
            remaining = deadline - time.time()
            if remaining <= 0:
                raise TimeoutError
            async with asyncio.timeout(remaining):
                if modality.worker_kind is WorkerKind.IMAGE:
                    result = await self._image(job)
                else:
                    result = await self._video(job)
            return job_state_pb2.JobOutcome(
                job_id=job.job_id,
                succeeded=True,
                result_key=result.result_key,
                last_frame_key=result.last_frame_key,
                units=result.units,
                provider=result.provider,
            )
        except JobFailed as exc:
            code, message = exc.code, str(exc)
        except UpstreamError as exc:
            code, message = job_error(exc)
            log.warning(
                "upstream failed",
                extra=fields(
                    job_id=job.job_id, error=exc.message, upstream_code=exc.code, outcome=code
                ),
            )
        except TimeoutError:
            code, message = "timeout", "Job timed out."
        except blobs.BlobTooLarge:
            code, message = "result_too_large", "The result was larger than we can store."
        except Exception:
            log.exception("job crashed", extra=fields(job_id=job.job_id))
            code, message = "provider_error", PROVIDER_FAILED
        metrics.JOB_FAILURES.labels(modality_label(job.modality), code).inc()
        log.info("job failed", extra=fields(job_id=job.job_id, code=code))
        return job_state_pb2.JobOutcome(
            job_id=job.job_id, succeeded=False, error_message=message, error_code=code
        )

    def _plan(self, job: job_state_pb2.JobRecord, adapters: Mapping[str, object]) -> Failover:
        """The job's routes, to use in a `with` block (which gives back the probes
        it reserved and did not use). Plan only once the job is ready to go
        upstream: a reserved probe keeps other jobs off a recovering route."""
        routes = tuple(r for r in self.routes.routes_for(job.model) if r.provider in adapters)
        if not routes:
            raise JobFailed("The model is not available right now.")
        return Failover(self.breakers, routes, {"job_id": job.job_id})

    async def _with_failover(
        self,
        job: job_state_pb2.JobRecord,
        adapters: Mapping[str, object],
        call: Callable[[Route], Awaitable[T]],
    ) -> tuple[Route, T]:
        """Try each route in turn until one answers; only failures another route
        might not have (connection, timeout, 429, 5xx) move on to the next."""
        with self._plan(job, adapters) as failover:
            return await failover.first_answer(call)

    # -- references ------------------------------------------------------------
    async def _reference(
        self,
        url: str,
        role: ReferenceRole,
        allowed: tuple[str, ...],
        max_bytes: int,
        rules: ReferenceImageRules,
    ) -> Reference:
        # Our own uploads (any host they were served on) come from the store;
        # anything else is fetched with the SSRF rules. Same size/type checks.
        try:
            fetched = await load_reference(
                url, store=self.store, max_bytes=max_bytes, allowed=allowed
            )
        except FetchRefused as exc:
            raise JobFailed(f"Reference {role} refused: {exc.message}", "invalid_input") from exc
        except FetchFailed as exc:
            raise JobFailed(
                f"Reference {role} could not be fetched: {exc.message}", "invalid_input"
            ) from exc
        if role not in IMAGE_ROLES:
            return Reference(role, fetched.data, fetched.content_type)
        # The same decode-and-verify as an upload: no corrupt file, bomb or animation
        # is sent upstream (where some models would charge for it).
        try:
            await self.images.verify(fetched.data)
        except InvalidImage as exc:
            raise JobFailed(f"Reference {role} refused: {exc.message}", "invalid_input") from exc
        # Fit the image to what the model's upstream takes (CPU work: off the loop).
        try:
            adapted = await asyncio.to_thread(
                adapt_reference_image, fetched.data, fetched.content_type, rules
            )
        except ReferenceImageRefused as exc:
            raise JobFailed(f"Reference {role} refused: {exc}", "invalid_input") from exc
        if adapted.changed:
            log.info(
                "reference image adapted",
                extra=fields(
                    role=role,
                    size=f"{adapted.width}x{adapted.height}",
                    content_type=adapted.content_type,
                    bytes=len(adapted.data),
                ),
            )
        return Reference(role, adapted.data, adapted.content_type)

    async def _references(
        self, model_id: str, spec: job_state_pb2.WorkSpec
    ) -> tuple[Reference, ...]:
        model = self.catalog.models.get(model_id)
        media = model if isinstance(model, ImageModel | VideoModel) else None
        image_rules = media.reference_image if media else ReferenceImageRules()
        video_rules = media.reference_video if isinstance(media, VideoModel) else None
        audio_rules = media.reference_audio if isinstance(media, VideoModel) else None
        wanted: list[tuple[str, ReferenceRole, tuple[str, ...], int]] = []
        wanted += [(u, "image", IMAGE_TYPES, IMAGE_REFERENCE_MAX_BYTES) for u in spec.images]
        if spec.first_frame_url:
            wanted.append(
                (spec.first_frame_url, "first_frame", IMAGE_TYPES, IMAGE_REFERENCE_MAX_BYTES)
            )
        if spec.last_frame_url:
            wanted.append(
                (spec.last_frame_url, "last_frame", IMAGE_TYPES, IMAGE_REFERENCE_MAX_BYTES)
            )
        wanted += [(u, "video", VIDEO_TYPES, _clip_max_bytes(video_rules)) for u in spec.videos]
        wanted += [(u, "audio", AUDIO_TYPES, _clip_max_bytes(audio_rules)) for u in spec.audios]
        references = tuple(
            await asyncio.gather(
                *(self._reference(u, r, a, m, image_rules) for u, r, a, m in wanted)
            )
        )
        # Clips cannot be adapted (no transcoder): measure them, refuse what the
        # upstream would (before it is paid or fails for it).
        kinds: tuple[tuple[ClipKind, ReferenceClipRules | None], ...] = (
            ("video", video_rules),
            ("audio", audio_rules),
        )
        for kind, rules in kinds:
            clips = [ref for ref in references if ref.role == kind]
            try:
                measured = [
                    measure(kind, f"{kind}s[{i}]", ref.data, ref.content_type)
                    for i, ref in enumerate(clips)
                ]
                check_clips(kind, measured, rules or ReferenceClipRules())
            except ReferenceClipRefused as exc:
                raise JobFailed(str(exc), "invalid_input") from exc
        return references

    # -- images ----------------------------------------------------------------
    async def _image(self, job: job_state_pb2.JobRecord) -> Result:
        spec = job.spec
        # References first, routes planned after (in _with_failover): a half-open
        # route's probe is not held while they are fetched, nor for a refused one.
        references = await self._references(job.model, spec)

        async def generate(route: Route) -> GeneratedImage:
            return await self.image_adapters[route.provider].generate(
                ImageRequest(
                    upstream_model=route.upstream_model,
                    prompt=spec.prompt,
                    aspect_ratio=spec.aspect_ratio,
                    resolution=spec.resolution,
                    references=references,
                    request_id=job.job_id,
                )
            )

        route, image = await self._with_failover(job, self.image_adapters, generate)
        if len(image.data) > IMAGE_RESULT_MAX_BYTES:
            raise JobFailed("The result was larger than we can store.", "result_too_large")
        key = blobs.new_key("results", f"image.{EXTENSIONS.get(image.content_type, 'png')}")
        await self.store.record_owner(key, job.account_id)  # first: see blobs.record_owner
        await self.store.put_bytes(key, image.data)
        return Result(result_key=key, units=1, provider=route.provider)

    # -- video -----------------------------------------------------------------
    async def _video(self, job: job_state_pb2.JobRecord) -> Result:
        spec = job.spec
        if job.upstream_task_id:
            # "<provider>/<task id>": resume polling where the task lives.
            provider, _, task_id = job.upstream_task_id.partition("/")
            adapter = self.video_adapters.get(provider)
            if adapter is None or not task_id:
                raise JobFailed(PROVIDER_FAILED)
            log.info("resuming upstream task", extra=fields(job_id=job.job_id))
        else:
            references = await self._references(job.model, spec)  # first: see _image

            async def submit(route: Route) -> str:
                return await self.video_adapters[route.provider].submit(
                    VideoRequest(
                        upstream_model=route.upstream_model,
                        prompt=spec.prompt,
                        resolution=spec.resolution,
                        duration_seconds=spec.duration_seconds,
                        ratio=spec.ratio,
                        generate_audio=(
                            spec.generate_audio if spec.HasField("generate_audio") else None
                        ),
                        web_search=spec.web_search if spec.HasField("web_search") else None,
                        return_last_frame=spec.return_last_frame,
                        seed=spec.seed if spec.HasField("seed") else None,
                        real_person_mode=(
                            spec.real_person_mode if spec.HasField("real_person_mode") else None
                        ),
                        references=references,
                        request_id=job.job_id,
                    )
                )

            # Failover only before a task exists: a running task stays where it is.
            route, task_id = await self._with_failover(job, self.video_adapters, submit)
            provider = route.provider
            adapter = self.video_adapters[provider]
            await record_upstream_task(self.job_state, job.job_id, f"{route.provider}/{task_id}")
        while True:
            try:
                state = await adapter.poll(task_id)
            except UpstreamError as exc:
                # Asking failed, not the task: ask again (the job deadline bounds this).
                log.warning("poll failed; retrying", extra=fields(job_id=job.job_id, e=exc.message))
                await asyncio.sleep(adapter.poll_interval_seconds)
                continue
            if state.status == "succeeded":
                break
            if state.status == "failed":
                log.warning("upstream task failed", extra=fields(job_id=job.job_id, e=state.error))
                raise task_error(state.error_code, state.reason, state.error)
            await asyncio.sleep(adapter.poll_interval_seconds)
        if not state.video_url:
            raise UpstreamError("failed", "the task succeeded without a video")
        key = blobs.new_key("results", "video.mp4")
        await self.store.record_owner(key, job.account_id)
        await self.store.put_stream(
            key, adapter.download(state.video_url, VIDEO_RESULT_MAX_BYTES), VIDEO_RESULT_MAX_BYTES
        )
        frame_key = ""
        if spec.return_last_frame and state.last_frame_url:
            frame_key = blobs.new_key("results", "last_frame.png")
            await self.store.record_owner(frame_key, job.account_id)
            await self.store.put_stream(
                frame_key,
                adapter.download(state.last_frame_url, IMAGE_RESULT_MAX_BYTES),
                IMAGE_RESULT_MAX_BYTES,
            )
        units = state.duration_seconds or spec.duration_seconds
        return Result(result_key=key, units=units, last_frame_key=frame_key, provider=provider)
