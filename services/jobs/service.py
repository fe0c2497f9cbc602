"""The jobs service's moving parts: the JobState servicer, publishing, settling
holds, and the background loops that make every accepted job end exactly once."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import psycopg
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage, AbstractRobustConnection
from aiport.v1 import billing_pb2, billing_pb2_grpc, job_state_pb2, job_state_pb2_grpc
from psycopg_pool import PoolTimeout

from services.common import broker, job_ids, metrics, pg, requestctx
from services.common.billing_errors import capture_within_hold
from services.common.grpc_server import ServicerContext
from services.common.job_states import JobStatus, Modality
from services.common.logs import fields
from services.jobs import rules, store
from services.jobs.store import JobRow

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Resp = TypeVar("Resp")

BILLING_TIMEOUT_SECONDS = 10.0
MAX_ID_CHARS = 100


@dataclass(frozen=True, slots=True)
class Timing:
    job_timeout_seconds: int = 600
    sweep_seconds: float = 5.0
    relay_after_seconds: float = 5.0
    batch: int = 200
    outcome_prefetch: int = 32
    # How long a worker's claim on a running job lasts without a heartbeat.
    lease_seconds: int = rules.DEFAULT_LEASE_SECONDS


def record(job: JobRow) -> job_state_pb2.JobRecord:
    return job_state_pb2.JobRecord(
        job_id=job.id,
        account_id=job.account_id,
        status=job.status.to_proto(),
        model=job.model,
        modality=job.modality.to_proto(),
        spec=job_state_pb2.WorkSpec.FromString(job.spec),
        hold_id=job.hold_id,
        estimated_cost_micros=job.estimated_cost_micros,
        # What was really charged (see rules.shown_cost_micros), not what was due.
        actual_cost_micros=job.shown_cost_micros or 0,
        result_key=job.result_key or "",
        last_frame_key=job.last_frame_key or "",
        error_message=job.error_message or "",
        error_code=job.error_code or "",
        created_at_unix=int(job.created_at.timestamp()),
        finished_at_unix=int(job.finished_at.timestamp()) if job.finished_at else 0,
        upstream_task_id=job.upstream_task_id or "",
        attempts=job.attempts,
        client_task_id=job.client_task_id or "",
    )


def _latency_ms(job: JobRow) -> int:
    """From submission to the job's end, for the customer's usage record (0: unknown)."""
    if job.finished_at is None:
        return 0
    return max(0, round((job.finished_at - job.created_at).total_seconds() * 1000))


class Settlement:
    """Captures a done job's cost or releases a failed job's hold, and records
    what billing really moved. A refusal leaves the job unsettled, showing
    nothing charged, for the sweeper to try again later (a few times)."""

    def __init__(
        self, pool: pg.Pool, billing: billing_pb2_grpc.BillingStub, retry_base_seconds: float = 5.0
    ) -> None:
        self.pool = pool
        self.billing = billing
        self.retry_base_seconds = retry_base_seconds

    async def settle(self, job: JobRow) -> bool:
        """True once billing has settled the hold (now or before) or settling was
        given up. Retry-safe: capture and release are idempotent per hold."""
        latency_ms = _latency_ms(job)
        try:
            if job.status is JobStatus.DONE:
                hold = await capture_within_hold(
                    self.billing,
                    billing_pb2.CaptureHoldRequest(
                        hold_id=job.hold_id,
                        amount_micros=job.actual_cost_micros or 0,
                        description=f"{job.modality} {job.model} {job.id}",
                        model=job.model,  # billing's revenue account (issue 12)
                        provider=job.provider,
                        latency_ms=latency_ms,
                    ),
                    BILLING_TIMEOUT_SECONDS,
                    {"job_id": job.id},
                )
                charged = hold.captured_micros
            else:
                await self.billing.ReleaseHold(
                    billing_pb2.ReleaseHoldRequest(
                        hold_id=job.hold_id, reason=f"job {job.id} failed", latency_ms=latency_ms
                    ),
                    timeout=BILLING_TIMEOUT_SECONDS,
                )
                charged = 0
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                log.warning("settle later: billing unavailable", extra=fields(job_id=job.id))
                return False
            return await self._refused(job, exc)
        if charged != (job.actual_cost_micros or 0) and job.status is JobStatus.DONE:
            log.error(
                "billing charged a different amount than the job's cost",
                extra=fields(job_id=job.id, cost_micros=job.actual_cost_micros, charged=charged),
            )
        await store.mark_settled(self.pool, job.id, charged)
        log.info(
            "job settled",
            extra=fields(job_id=job.id, status=job.status, charged_micros=charged),
        )
        return True

    async def _refused(self, job: JobRow, exc: grpc.aio.AioRpcError) -> bool:
        """Billing said no (e.g. the hold expired before a very late capture):
        nothing was charged. Tried again later; given up after a few refusals."""
        operation = "capture" if job.status is JobStatus.DONE else "release"
        refusals = job.settle_refusals + 1
        detail = f"{exc.code().name}: {exc.details()}"
        if rules.give_up_settling(refusals):
            metrics.JOB_SETTLEMENT_REFUSALS.labels(operation, "abandoned").inc()
            log.error(
                "billing refused settlement again; given up, nothing charged",
                extra=fields(job_id=job.id, hold_id=job.hold_id, refusals=refusals, e=detail),
            )
            await store.mark_settled(self.pool, job.id, 0)
            return True
        metrics.JOB_SETTLEMENT_REFUSALS.labels(operation, "retry").inc()
        retry = rules.settle_retry_seconds(refusals, self.retry_base_seconds)
        log.error(
            "billing refused settlement; retried later",
            extra=fields(
                job_id=job.id, hold_id=job.hold_id, refusals=refusals, retry_s=retry, e=detail
            ),
        )
        await store.record_settle_refusal(self.pool, job.id, detail, retry)
        return False


class Publisher:
    """Confirmed publishing of work messages."""

    def __init__(self, exchange: AbstractExchange) -> None:
        self.exchange = exchange

    async def publish(
        self, routing_key: str, payload: bytes, job_id: str, request_id: str | None = None
    ) -> None:
        message = broker.message(payload, job_id)
        if request_id:
            message.headers[requestctx.METADATA_KEY] = request_id
        await self.exchange.publish(
            message,
            routing_key=routing_key,
            timeout=broker.CONFIRM_TIMEOUT_SECONDS,
        )


def _valid_id(value: str, prefix: str) -> bool:
    return value.startswith(prefix) and 0 < len(value) <= MAX_ID_CHARS


def _lease(job_id: str, lease: store.Lease, lease_seconds: int) -> job_state_pb2.Lease:
    return job_state_pb2.Lease(
        job_id=job_id,
        token=lease.token,
        expires_at_unix=int(lease.expires_at.timestamp()),
        renew_every_seconds=rules.renew_every_seconds(lease_seconds),
    )


def _database_guarded(
    method: Callable[[Any, Req, ServicerContext], Awaitable[Resp]],
) -> Callable[[Any, Req, ServicerContext], Awaitable[Resp]]:
    """A lost or restarting database is UNAVAILABLE for the caller (who may
    retry), not an unexpected error with a stack in the log."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Req, context: ServicerContext) -> Resp:
        try:
            return await method(self, request, context)
        except (psycopg.OperationalError, PoolTimeout) as exc:
            log.warning("database unavailable", extra=fields(rpc=method.__name__, error=repr(exc)))
            await context.abort(grpc.StatusCode.UNAVAILABLE, "job storage is unavailable")
            raise AssertionError("unreachable") from exc

    return wrapper


class PublishedMarks:
    """Records confirmed publishes in batches: one UPDATE per flush instead of a
    transaction per job. A crash before a flush only means the relay sends
    those messages again, which workers tolerate (finished jobs are skipped)."""

    def __init__(self, pool: pg.Pool, every_seconds: float = 0.05) -> None:
        self.pool = pool
        self.every_seconds = every_seconds
        self.pending: list[int] = []

    def add(self, outbox_id: int) -> None:
        self.pending.append(outbox_id)

    async def flush(self) -> None:
        if not self.pending:
            return
        ids, self.pending = self.pending, []
        try:
            await store.mark_published(self.pool, ids)
        except psycopg.Error as exc:
            self.pending.extend(ids)  # tried again on the next flush
            log.warning("cannot record published messages yet", extra=fields(error=repr(exc)))

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.every_seconds)
            await self.flush()


class JobStateService(job_state_pb2_grpc.JobStateServicer):
    def __init__(
        self,
        pool: pg.Pool,
        publisher: Publisher,
        settlement: Settlement,
        published: PublishedMarks,
        lease_seconds: int = rules.DEFAULT_LEASE_SECONDS,
    ) -> None:
        self.pool = pool
        self.publisher = publisher
        self.settlement = settlement
        self.published = published
        self.lease_seconds = rules.clamp_lease_seconds(lease_seconds)

    @staticmethod
    async def _check_creation(
        request: job_state_pb2.CreateJobRequest, context: ServicerContext
    ) -> str:
        """The worker kind of a complete request (INVALID_ARGUMENT otherwise; also
        for a modality left unset by a peer of another version)."""
        try:
            kind = Modality.from_proto(request.modality).worker_kind.value
        except ValueError:
            kind = ""
        if (
            not kind
            or not request.account_id
            or not request.hold_id
            or not request.idempotency_key
            or not request.model
            or request.estimated_cost_micros <= 0
            or (request.job_id and not job_ids.is_job_id(request.job_id))
            or (request.client_task_id and not job_ids.is_client_task_id(request.client_task_id))
        ):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "incomplete CreateJobRequest")
            raise AssertionError("unreachable")
        return kind

    @staticmethod
    async def _conflict(context: ServicerContext, conflict: store.IdempotencyConflict) -> None:
        log.warning(
            "idempotency key reused for another request", extra=fields(job_id=conflict.job_id)
        )
        await context.abort(
            grpc.StatusCode.FAILED_PRECONDITION,
            "the idempotency key was used before for a different request",
        )

    @_database_guarded
    async def CreateJob(
        self, request: job_state_pb2.CreateJobRequest, context: ServicerContext
    ) -> job_state_pb2.JobRecord:
        kind = await self._check_creation(request, context)
        request_id = requestctx.current()
        try:
            job, outbox_id = await store.create_job(self.pool, request, kind, request_id)
        except store.IdempotencyConflict as conflict:
            await self._conflict(context, conflict)
            raise AssertionError("unreachable") from None
        if outbox_id is None:
            return record(job)  # a retry: the first call queued it (or it was abandoned)
        try:
            await self.publisher.publish(
                kind,
                job_state_pb2.WorkItem(
                    job_id=job.id, model=job.model, modality=request.modality, spec=request.spec
                ).SerializeToString(),
                job.id,
                request_id,
            )
        except Exception as exc:  # broker down or no confirm in time
            log.warning("publish failed", extra=fields(job_id=job.id, error=repr(exc)))
            failed = await store.cancel_unqueued(self.pool, job.id, outbox_id)
            if failed is not None:
                metrics.JOBS_FINISHED.labels(failed.modality, failed.status).inc()
                await self.settlement.settle(failed)
                # Definitive: this job was failed and refunded. A retry with the
                # same key would only find it failed.
                await context.abort(
                    grpc.StatusCode.ABORTED,
                    "the job queue is unavailable; the job was not created",
                )
            # The relay sent it meanwhile: the job is queued after all.
            return record(job)
        self.published.add(outbox_id)
        log.info(
            "job created",
            extra=fields(
                job_id=job.id,
                account_id=job.account_id,
                model=job.model,
                estimated_cost_micros=job.estimated_cost_micros,
            ),
        )
        return record(job)

    @_database_guarded
    async def AbandonCreation(
        self, request: job_state_pb2.CreateJobRequest, context: ServicerContext
    ) -> job_state_pb2.JobRecord:
        await self._check_creation(request, context)
        try:
            job, abandoned = await store.abandon_creation(self.pool, request)
        except store.IdempotencyConflict as conflict:
            await self._conflict(context, conflict)
            raise AssertionError("unreachable") from None
        if abandoned:
            metrics.JOBS_FINISHED.labels(job.modality, job.status).inc()
            log.warning(
                "creation abandoned: no job existed; its hold is released",
                extra=fields(job_id=job.id, hold_id=job.hold_id),
            )
            await self.settlement.settle(job)  # if billing is down, the sweep retries
        else:
            log.info("creation reconciled: the job exists", extra=fields(job_id=job.id))
        return record(job)

    @_database_guarded
    async def GetJob(
        self, request: job_state_pb2.GetJobStateRequest, context: ServicerContext
    ) -> job_state_pb2.JobRecord:
        job = None
        if _valid_id(request.job_id, "job_"):
            job = await store.get_job(self.pool, request.job_id)
        # Another account's job is indistinguishable from a missing one.
        if job is None or job.account_id != request.account_id:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such job")
            raise AssertionError("unreachable")
        return record(job)

    @_database_guarded
    async def ListJobs(
        self, request: job_state_pb2.ListJobRecordsRequest, context: ServicerContext
    ) -> job_state_pb2.JobRecordPage:
        try:
            asked = rules.listing(request)
        except rules.InvalidListing as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise AssertionError("unreachable") from None
        try:
            page = await store.list_jobs(
                self.pool,
                asked.account_id,
                asked.limit,
                after_job_id=asked.after_job_id,
                status=asked.status,
                model=asked.model,
                client_task_id=asked.client_task_id,
            )
        except store.UnknownAnchor:
            # Another account's job, like a missing one: the page cannot start there.
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such job to list after")
            raise AssertionError("unreachable") from None
        return job_state_pb2.JobRecordPage(
            jobs=[record(job) for job in page.jobs], has_more=page.has_more
        )

    @_database_guarded
    async def BeginLeasedAttempt(
        self, request: job_state_pb2.BeginAttemptRequest, context: ServicerContext
    ) -> job_state_pb2.Attempt:
        begun = None
        if _valid_id(request.job_id, "job_"):
            begun = await store.begin_attempt(
                self.pool, request.job_id, request.worker_id[:MAX_ID_CHARS], self.lease_seconds
            )
        if begun is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such job")
            raise AssertionError("unreachable")
        job, verdict = begun.job, begun.decision.verdict
        if verdict == rules.Verdict.DEFER:
            metrics.JOB_LEASE_DEFERRALS.labels(job.modality).inc()
            log.info(
                "job is leased to another attempt; deferred",
                extra=fields(
                    job_id=job.id,
                    worker=request.worker_id,
                    defer_s=begun.decision.defer_seconds,
                ),
            )
            return job_state_pb2.Attempt(
                verdict=job_state_pb2.Attempt.DEFER,
                job=record(job),
                defer_seconds=begun.decision.defer_seconds,
            )
        if verdict == rules.Verdict.RUN:
            assert begun.lease is not None
            return job_state_pb2.Attempt(
                verdict=job_state_pb2.Attempt.RUN,
                job=record(job),
                lease=_lease(job.id, begun.lease, self.lease_seconds),
            )
        if verdict == rules.Verdict.EXHAUSTED:
            metrics.JOBS_FINISHED.labels(job.modality, job.status).inc()
            log.warning("job failed after too many attempts", extra=fields(job_id=job.id))
        if job.finished and job.settled_at is None:
            await self.settlement.settle(job)  # failed after too many attempts
        return job_state_pb2.Attempt(verdict=job_state_pb2.Attempt.FINISHED, job=record(job))

    @_database_guarded
    async def RenewLease(
        self, request: job_state_pb2.LeaseRequest, context: ServicerContext
    ) -> job_state_pb2.Lease:
        expires = None
        if _valid_id(request.job_id, "job_") and request.lease_token:
            expires = await store.renew_lease(
                self.pool, request.job_id, request.lease_token, self.lease_seconds
            )
        if expires is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "the lease is not yours")
            raise AssertionError("unreachable")
        return _lease(request.job_id, store.Lease(request.lease_token, expires), self.lease_seconds)

    @_database_guarded
    async def ReleaseLease(
        self, request: job_state_pb2.LeaseRequest, context: ServicerContext
    ) -> job_state_pb2.Lease:
        if _valid_id(request.job_id, "job_") and request.lease_token:
            await store.release_lease(self.pool, request.job_id, request.lease_token)
        return job_state_pb2.Lease(job_id=request.job_id)

    @_database_guarded
    async def RecordUpstreamTask(
        self, request: job_state_pb2.RecordUpstreamTaskRequest, context: ServicerContext
    ) -> job_state_pb2.JobRecord:
        job = await store.record_upstream_task(self.pool, request.job_id, request.upstream_task_id)
        if job is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "job is not processing")
            raise AssertionError("unreachable")
        return record(job)


class OutcomeConsumer:
    """Applies worker outcomes; acks only after the job row is final."""

    def __init__(self, pool: pg.Pool, settlement: Settlement) -> None:
        self.pool = pool
        self.settlement = settlement

    async def handle(self, message: AbstractIncomingMessage) -> None:
        """One outcome, under the request id the job was created with (the worker
        sends it back), so settling it logs and calls billing under that id."""
        with requestctx.of_message(message.headers):
            await self._handle(message)

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        try:
            outcome = job_state_pb2.JobOutcome.FromString(message.body)
        except Exception:
            log.error("dropping unreadable outcome", extra=fields(id=message.message_id))
            await message.ack()
            return
        try:
            job = await store.apply_outcome(self.pool, outcome)
        except psycopg.Error as exc:
            log.error("cannot apply outcome now", extra=fields(job_id=outcome.job_id, e=repr(exc)))
            await asyncio.sleep(1.0)
            await message.nack(requeue=True)
            return
        # The job row is final now: the message has done its work. Acked before
        # settling, so a settlement error can never leave it unacked, holding a
        # prefetch slot; the settlement sweep settles whatever is missed here.
        await message.ack()
        if job is None:
            log.info("outcome for a finished job ignored", extra=fields(job_id=outcome.job_id))
            return
        metrics.JOBS_FINISHED.labels(job.modality, job.status).inc()
        log.info(
            "job finished",
            extra=fields(job_id=job.id, status=job.status, error=job.error_message),
        )
        try:
            await self.settlement.settle(job)  # if billing is down, the sweep retries
        except psycopg.Error as exc:
            log.error("settle later: database error", extra=fields(job_id=job.id, e=repr(exc)))


async def every(seconds: float, name: str, step: Callable[[], Awaitable[object]]) -> None:
    """Run `step` forever, a pause apart; a failing step is logged, never fatal."""
    while True:
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error(f"{name} failed", extra=fields(error=repr(exc)))
        await asyncio.sleep(seconds)


async def run_background(
    pool: pg.Pool,
    connection: AbstractRobustConnection,
    names: broker.Names,
    publisher: Publisher,
    settlement: Settlement,
    published: PublishedMarks,
    timing: Timing,
) -> None:
    async def relay() -> None:
        sent = await store.relay_outbox(
            pool,
            publisher.publish,
            older_than_seconds=timing.relay_after_seconds,
            batch=timing.batch,
        )
        if sent:
            log.warning("relayed unsent work messages", extra=fields(count=sent))

    async def expire() -> None:
        for job in await store.expire_overdue(pool, timing.job_timeout_seconds, timing.batch):
            metrics.JOBS_FINISHED.labels(job.modality, job.status).inc()
            log.warning("job timed out", extra=fields(job_id=job.id))
            await settlement.settle(job)

    async def settle_leftovers() -> None:
        for job in await store.unsettled(pool, timing.sweep_seconds, timing.batch):
            await settlement.settle(job)

    channel = await connection.channel()
    await channel.set_qos(prefetch_count=timing.outcome_prefetch)
    outcomes = await channel.declare_queue(names.outcomes_queue, durable=True)
    consumer = OutcomeConsumer(pool, settlement)
    await outcomes.consume(consumer.handle)
    await asyncio.gather(
        published.run(),
        every(1.0, "outbox relay", relay),
        every(timing.sweep_seconds, "timeout sweep", expire),
        every(timing.sweep_seconds, "settlement sweep", settle_leftovers),
    )


async def open_publisher(connection: AbstractRobustConnection, names: broker.Names) -> Publisher:
    channel = await connection.channel(publisher_confirms=True)
    exchange = await broker.declare(channel, names)
    return Publisher(exchange)
