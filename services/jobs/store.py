"""The jobs schema: each function is one transaction and returns plain rows.

Every change of a job's status goes through `_change_status`, which asks the
transition table (services.common.job_states) first: an illegal move is logged
and refused (IllegalTransition), never written. Callers for whom a refusal is an
expected race (a redelivered outcome for a finished job) check `allows` first.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiport.v1 import job_state_pb2
from psycopg import AsyncConnection
from psycopg.rows import DictRow

from services.common import pg
from services.common.job_states import (
    IllegalTransition,
    JobEvent,
    JobStatus,
    Modality,
    allows,
    initial_status,
    next_status,
    sources,
)
from services.common.logs import fields
from services.jobs import rules

log = logging.getLogger(__name__)

COLUMNS = (
    "id, account_id, model, modality, status, spec, hold_id, unit_price_micros,"
    " estimated_units, min_billable_units, estimated_cost_micros, actual_cost_micros,"
    " result_key, last_frame_key, error_message, error_code, upstream_task_id, attempts,"
    " created_at, finished_at, settled_at, input_hash, lease_token, lease_expires_at,"
    " charged_micros, settle_refusals, settle_error, provider, client_task_id,"
    " client_input_hash"
)


class IdempotencyConflict(Exception):
    """The idempotency key guarded a different request before."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id


@dataclass(frozen=True, slots=True)
class Lease:
    token: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class BegunAttempt:
    job: JobRow
    decision: rules.AttemptDecision
    lease: Lease | None  # with RUN


@dataclass(frozen=True, slots=True)
class JobRow:
    id: str
    account_id: str
    model: str
    modality: Modality
    status: JobStatus
    spec: bytes
    hold_id: str
    unit_price_micros: int
    estimated_units: int
    min_billable_units: int
    estimated_cost_micros: int
    actual_cost_micros: int | None
    result_key: str | None
    last_frame_key: str | None
    error_message: str | None
    error_code: str | None
    upstream_task_id: str | None
    attempts: int
    created_at: datetime
    finished_at: datetime | None
    settled_at: datetime | None
    input_hash: bytes | None
    lease_token: str | None
    lease_expires_at: datetime | None
    charged_micros: int | None
    settle_refusals: int
    settle_error: str | None
    provider: str  # whose route produced the result ('' unless done)
    client_task_id: str | None
    client_input_hash: bytes | None

    @property
    def finished(self) -> bool:
        return self.status.finished

    @property
    def shown_cost_micros(self) -> int | None:
        return rules.shown_cost_micros(
            status=self.status,
            actual_cost_micros=self.actual_cost_micros,
            charged_micros=self.charged_micros,
            settle_refusals=self.settle_refusals,
        )


def _row(row: DictRow) -> JobRow:
    # The columns' CHECK constraints keep both to known values.
    return JobRow(
        **{**row, "status": JobStatus(row["status"]), "modality": Modality(row["modality"])}
    )


def sql_in(statuses: Iterable[JobStatus]) -> str:
    """Statuses as an SQL list of literals, for a WHERE that must match a partial
    index's predicate (a parameter would not). Values are our enum's, never input."""
    return ", ".join(f"'{status.value}'" for status in statuses)


async def _one(conn: AsyncConnection[DictRow], sql: str, params: dict[str, Any]) -> JobRow | None:
    row = await (await conn.execute(sql, params)).fetchone()
    return _row(row) if row is not None else None


_INSERT_JOB = f"""
    INSERT INTO jobs.jobs (id, account_id, idempotency_key, input_hash, model, modality, spec,
        hold_id, unit_price_micros, estimated_units, min_billable_units, estimated_cost_micros,
        status, error_message, error_code, actual_cost_micros, finished_at, client_task_id,
        client_input_hash)
    VALUES (%(id)s, %(account_id)s, %(key)s, %(hash)s, %(model)s, %(modality)s, %(spec)s,
        %(hold_id)s, %(unit_price)s, %(units)s, %(min_units)s, %(estimated)s,
        %(status)s, %(error)s, %(code)s, %(cost)s,
        CASE WHEN %(finished)s THEN now() END, %(task)s, %(task_hash)s)
    -- Our key (a retried CreateJob) or the client's task id (a repeat): _existing says.
    ON CONFLICT DO NOTHING
    RETURNING {COLUMNS}
"""


def _job_params(
    request: job_state_pb2.CreateJobRequest, job_id: str, input_hash: bytes, event: JobEvent
) -> dict[str, Any]:
    status = initial_status(event)
    return {
        "id": job_id,
        "account_id": request.account_id,
        "key": request.idempotency_key,
        "hash": input_hash,
        "model": request.model,
        "modality": Modality.from_proto(request.modality).value,
        "spec": request.spec.SerializeToString(),
        "hold_id": request.hold_id,
        "unit_price": request.unit_price_micros,
        "units": request.estimated_units,
        "min_units": request.min_billable_units,
        "estimated": request.estimated_cost_micros,
        "status": status.value,
        "finished": status.finished,
        "error": None,
        "code": None,
        "cost": None,
        "task": request.client_task_id or None,
        "task_hash": rules.client_input_hash(request) if request.client_task_id else None,
    }


async def _existing(
    conn: AsyncConnection[DictRow], request: job_state_pb2.CreateJobRequest, input_hash: bytes
) -> JobRow:
    """The job a repeated key created, if it guarded the same input; else the job
    the client's task id named before, if it asked for the same work."""
    existing = await _one(
        conn,
        f"SELECT {COLUMNS} FROM jobs.jobs WHERE idempotency_key = %(key)s",
        {"key": request.idempotency_key},
    )
    if existing is None:
        # The conflict was the client's task id: a new call repeating an earlier one.
        assert request.client_task_id  # else only the key can conflict
        existing = await _one(
            conn,
            f"SELECT {COLUMNS} FROM jobs.jobs"
            " WHERE account_id = %(account)s AND client_task_id = %(task)s",
            {"account": request.account_id, "task": request.client_task_id},
        )
        assert existing is not None
        if not rules.same_input(existing.client_input_hash, rules.client_input_hash(request)):
            raise IdempotencyConflict(existing.id)
        return existing
    if not rules.same_input(existing.input_hash, input_hash):
        raise IdempotencyConflict(existing.id)
    return existing


async def create_job(
    pool: pg.Pool,
    request: job_state_pb2.CreateJobRequest,
    routing_key: str,
    request_id: str | None = None,
) -> tuple[JobRow, int | None]:
    """Insert the job, the hash of the request its key guards and its work message
    together. A repeated idempotency key returns the existing job and no outbox
    id (its message is already handled), or raises IdempotencyConflict when it
    guarded a different request. `request_id` travels with the message."""
    job_id = request.job_id or rules.new_job_id()
    input_hash = rules.creation_input_hash(request)
    item = job_state_pb2.WorkItem(
        job_id=job_id, model=request.model, modality=request.modality, spec=request.spec
    )
    params = _job_params(request, job_id, input_hash, JobEvent.CREATED)
    async with pg.transaction(pool) as conn:
        job = await _one(conn, _INSERT_JOB, params)
        if job is None:
            return await _existing(conn, request, input_hash), None
        cur = await conn.execute(
            "INSERT INTO jobs.outbox (job_id, routing_key, payload, request_id)"
            " VALUES (%(job_id)s, %(routing_key)s, %(payload)s, %(request_id)s) RETURNING id",
            {
                "job_id": job_id,
                "routing_key": routing_key,
                "payload": item.SerializeToString(),
                "request_id": request_id,
            },
        )
        inserted = await cur.fetchone()
        assert inserted is not None
        return job, int(inserted["id"])


async def abandon_creation(
    pool: pg.Pool, request: job_state_pb2.CreateJobRequest
) -> tuple[JobRow, bool]:
    """The job the key created; or, if there is none, a failed job under the key
    (so a CreateJob arriving late finds it failed instead of creating it), with
    True: its hold is to be released. No work message either way."""
    job_id = request.job_id or rules.new_job_id()
    input_hash = rules.creation_input_hash(request)
    params = {
        **_job_params(request, job_id, input_hash, JobEvent.CREATION_ABANDONED),
        "error": rules.NOT_CREATED,
        "code": "provider_error",
        "cost": 0,
    }
    async with pg.transaction(pool) as conn:
        job = await _one(conn, _INSERT_JOB, params)
        if job is None:
            # The job under the key; or an earlier call's job under the client's task
            # id, which does not own this call's hold (the caller releases that).
            return await _existing(conn, request, input_hash), False
        return job, True


async def mark_published(pool: pg.Pool, outbox_ids: list[int]) -> None:
    """Many at once: confirmed publishes are recorded in batches."""
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE jobs.outbox SET published_at = now()"
            " WHERE id = ANY(%(ids)s) AND published_at IS NULL",
            {"ids": outbox_ids},
        )


async def cancel_unqueued(pool: pg.Pool, job_id: str, outbox_id: int) -> JobRow | None:
    """Fail a job whose message never reached the broker, if the relay has not
    sent it meanwhile. Returns the failed job (to settle) or None."""
    async with pg.transaction(pool) as conn:
        removed = await conn.execute(
            "DELETE FROM jobs.outbox WHERE id = %(id)s AND published_at IS NULL",
            {"id": outbox_id},
        )
        if removed.rowcount != 1:
            return None
        job = await _locked(conn, job_id)
        if job is None or not allows(job.status, JobEvent.NOT_QUEUED):
            return None  # a worker took it meanwhile: it was queued after all
        return await _change_status(
            conn,
            job,
            JobEvent.NOT_QUEUED,
            """error_message = %(message)s, error_code = 'provider_error',
               actual_cost_micros = 0, finished_at = now()""",
            {"message": rules.NOT_QUEUED},
        )


async def relay_outbox(
    pool: pg.Pool,
    publish: Callable[[str, bytes, str, str | None], Awaitable[None]],
    *,
    older_than_seconds: float,
    batch: int,
) -> int:
    """Send outbox rows nobody sent (a crash after commit, a broker outage).
    Rows stay locked while being sent, so replicas never send the same row twice
    at once; a message sent twice anyway is harmless (workers skip finished jobs)."""
    async with pg.transaction(pool) as conn:
        cur = await conn.execute(
            """
            SELECT id, job_id, routing_key, payload, request_id FROM jobs.outbox
            WHERE published_at IS NULL
              AND created_at < now() - make_interval(secs => %(age)s)
            ORDER BY id LIMIT %(batch)s FOR UPDATE SKIP LOCKED
            """,
            {"age": older_than_seconds, "batch": batch},
        )
        rows = await cur.fetchall()
        for row in rows:
            await publish(
                row["routing_key"], bytes(row["payload"]), row["job_id"], row["request_id"]
            )
            await conn.execute(
                "UPDATE jobs.outbox SET published_at = now() WHERE id = %(id)s", {"id": row["id"]}
            )
        return len(rows)


async def _locked(conn: AsyncConnection[DictRow], job_id: str) -> JobRow | None:
    return await _one(
        conn, f"SELECT {COLUMNS} FROM jobs.jobs WHERE id = %(id)s FOR UPDATE", {"id": job_id}
    )


async def _change_status(
    conn: AsyncConnection[DictRow],
    job: JobRow,
    event: JobEvent,
    assignments: str,
    params: dict[str, Any],
) -> JobRow:
    """The one way a job's status changes: `event` happens to `job` (its row
    locked by this transaction), setting `assignments` too. Refused, with an
    error log, unless the transition table allows it; the UPDATE is guarded by
    the status the decision was made on, and the database's trigger checks the
    same table once more."""
    try:
        target = next_status(job.status, event)
    except IllegalTransition:
        log.error(
            "illegal job status transition refused",
            extra=fields(job_id=job.id, status=job.status, transition=event),
        )
        raise
    changed = await _one(
        conn,
        f"""
        UPDATE jobs.jobs SET status = %(to)s, {assignments}
        WHERE id = %(id)s AND status = %(from)s RETURNING {COLUMNS}
        """,
        {**params, "id": job.id, "from": job.status.value, "to": target.value},
    )
    if changed is None:  # the row lock makes this impossible; never write blind
        log.error(
            "job status changed under a row lock; transition refused",
            extra=fields(job_id=job.id, status=job.status, transition=event),
        )
        raise IllegalTransition(job.status, event)
    return changed


async def get_job(pool: pg.Pool, job_id: str) -> JobRow | None:
    async with pool.connection() as conn:
        return await _one(
            conn, f"SELECT {COLUMNS} FROM jobs.jobs WHERE id = %(id)s", {"id": job_id}
        )


class UnknownAnchor(Exception):
    """The job a page should start after is not one of the account's."""


@dataclass(frozen=True, slots=True)
class JobPage:
    jobs: list[JobRow]
    has_more: bool


async def list_jobs(
    pool: pg.Pool,
    account_id: str,
    limit: int,
    *,
    after_job_id: str | None = None,
    status: JobStatus | None = None,
    model: str | None = None,
    client_task_id: str | None = None,
) -> JobPage:
    """The account's jobs, newest first, by keyset: the page after `after_job_id`
    (the previous page's last job, which must be the account's: UnknownAnchor
    otherwise) reads only the index range past it, however deep the page.
    One row more than asked says whether more follow."""
    conditions = ["account_id = %(account)s"]
    params: dict[str, Any] = {"account": account_id, "rows": limit + 1}
    # Fixed fragments only; every value is a parameter. A filter left out is
    # left out of the SQL (not `%(x)s IS NULL OR ...`), so the planner can pick
    # the status index.
    if status is not None:
        conditions.append("status = %(status)s")
        params["status"] = status.value
    if model is not None:
        conditions.append("model = %(model)s")
        params["model"] = model
    if client_task_id is not None:
        conditions.append("client_task_id = %(task)s")
        params["task"] = client_task_id
    async with pool.connection() as conn:
        if after_job_id is not None:
            anchor = await (
                await conn.execute(
                    "SELECT created_at, id FROM jobs.jobs"
                    " WHERE id = %(id)s AND account_id = %(account)s",
                    {"id": after_job_id, "account": account_id},
                )
            ).fetchone()
            if anchor is None:
                raise UnknownAnchor(after_job_id)
            conditions.append("(created_at, id) < (%(anchor_at)s, %(anchor_id)s)")
            params["anchor_at"], params["anchor_id"] = anchor["created_at"], anchor["id"]
        cur = await conn.execute(
            f"SELECT {COLUMNS} FROM jobs.jobs WHERE {' AND '.join(conditions)}"
            " ORDER BY created_at DESC, id DESC LIMIT %(rows)s",
            params,
        )
        rows = [_row(r) for r in await cur.fetchall()]
    return JobPage(rows[:limit], has_more=len(rows) > limit)


async def begin_attempt(
    pool: pg.Pool, job_id: str, worker_id: str, lease_seconds: int
) -> BegunAttempt | None:
    """A worker offers to run the job; rules.decide_attempt says what it may do,
    by the database's clock, with the row locked (two deliveries deciding at
    once see each other). RUN: pending/processing -> processing, one attempt
    more, under a new lease. EXHAUSTED: the job fails (to be refunded). None:
    no such job."""
    async with pg.transaction(pool) as conn:
        row = await (
            await conn.execute(
                f"SELECT {COLUMNS}, now() AS db_now FROM jobs.jobs WHERE id = %(id)s FOR UPDATE",
                {"id": job_id},
            )
        ).fetchone()
        if row is None:
            return None
        now: datetime = row.pop("db_now")
        job = _row(row)
        decision = rules.decide_attempt(
            status=job.status,
            attempts=job.attempts,
            lease_expires_at=job.lease_expires_at,
            now=now,
            lease_seconds=lease_seconds,
        )
        if decision.verdict in (rules.Verdict.FINISHED, rules.Verdict.DEFER):
            return BegunAttempt(job, decision, None)
        if decision.verdict == rules.Verdict.EXHAUSTED:
            failed = await _change_status(
                conn,
                job,
                JobEvent.ATTEMPTS_EXHAUSTED,
                """error_message = %(message)s, error_code = 'provider_error',
                   actual_cost_micros = 0, finished_at = now(),
                   lease_token = NULL, lease_expires_at = NULL""",
                {"message": rules.PROVIDER_FAILED},
            )
            return BegunAttempt(failed, decision, None)
        lease = Lease(secrets.token_hex(16), rules.lease_expiry(now, lease_seconds))
        running = await _change_status(
            conn,
            job,
            JobEvent.ATTEMPT_BEGUN,
            """attempts = attempts + 1, worker_id = %(worker)s,
               started_at = COALESCE(started_at, now()),
               lease_token = %(token)s, lease_expires_at = %(expires)s""",
            {"worker": worker_id, "token": lease.token, "expires": lease.expires_at},
        )
        return BegunAttempt(running, decision, lease)


async def renew_lease(
    pool: pg.Pool, job_id: str, token: str, lease_seconds: int
) -> datetime | None:
    """The lease's new expiry, or None: it is not the caller's any more."""
    async with pg.transaction(pool) as conn:
        row = await (
            await conn.execute(
                "SELECT status, lease_token, now() AS db_now FROM jobs.jobs"
                " WHERE id = %(id)s FOR UPDATE",
                {"id": job_id},
            )
        ).fetchone()
        if row is None or not rules.may_renew(
            status=JobStatus(row["status"]), held_token=row["lease_token"], token=token
        ):
            return None
        expires = rules.lease_expiry(row["db_now"], lease_seconds)
        await conn.execute(
            "UPDATE jobs.jobs SET lease_expires_at = %(expires)s WHERE id = %(id)s",
            {"id": job_id, "expires": expires},
        )
        return expires


async def release_lease(pool: pg.Pool, job_id: str, token: str) -> None:
    """Ends the caller's lease now (if it still holds it): the next delivery runs
    at once instead of waiting for it to expire."""
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE jobs.jobs SET lease_expires_at = now()"
            " WHERE id = %(id)s AND lease_token = %(token)s AND lease_expires_at > now()",
            {"id": job_id, "token": token},
        )


async def record_upstream_task(pool: pg.Pool, job_id: str, task_id: str) -> JobRow | None:
    async with pg.transaction(pool) as conn:
        return await _one(
            conn,
            f"""
            UPDATE jobs.jobs SET upstream_task_id = %(task)s
            WHERE id = %(id)s AND status = %(processing)s RETURNING {COLUMNS}
            """,
            {"id": job_id, "task": task_id, "processing": JobStatus.PROCESSING.value},
        )


async def apply_outcome(pool: pg.Pool, outcome: job_state_pb2.JobOutcome) -> JobRow | None:
    """Finish an active job from a worker's outcome. None when the job is unknown
    or already finished (a redelivered or late outcome changes nothing)."""
    event = JobEvent.SUCCEEDED if outcome.succeeded else JobEvent.WORKER_FAILED
    async with pg.transaction(pool) as conn:
        job = await _locked(conn, outcome.job_id)
        if job is None or not allows(job.status, event):
            return None
        if outcome.succeeded:
            cost = rules.cost_micros(
                units=outcome.units,
                estimated_units=job.estimated_units,
                min_billable_units=job.min_billable_units,
                unit_price_micros=job.unit_price_micros,
                held_micros=job.estimated_cost_micros,
            )
            params = {
                "result": outcome.result_key,
                "frame": outcome.last_frame_key or None,
                "error": None,
                "code": None,
                "cost": cost,
                "provider": outcome.provider,
            }
        else:
            params = {
                "result": None,
                "frame": None,
                "error": outcome.error_message or rules.PROVIDER_FAILED,
                "code": outcome.error_code or "provider_error",
                "cost": 0,
                "provider": "",
            }
        return await _change_status(
            conn,
            job,
            event,
            """result_key = %(result)s, last_frame_key = %(frame)s, error_message = %(error)s,
               error_code = %(code)s, actual_cost_micros = %(cost)s, finished_at = now(),
               provider = %(provider)s""",
            params,
        )


async def expire_overdue(pool: pg.Pool, timeout_seconds: int, batch: int) -> list[JobRow]:
    """Fail (and so refund) active jobs older than the timeout, a batch at a time.
    One UPDATE for the batch: the statuses it may leave are the table's, as
    literals matching the partial index of unfinished jobs."""
    async with pg.transaction(pool) as conn:
        cur = await conn.execute(
            f"""
                    UPDATE jobs.jobs SET status = %(to)s, error_message = %(message)s,
                        error_code = 'timeout', actual_cost_micros = 0, finished_at = now()
                    WHERE id IN (
                        SELECT id FROM jobs.jobs
                        WHERE status IN ({_TIMEOUT_SOURCES})
                          AND created_at < now() - make_interval(secs => %(timeout)s)
                        ORDER BY created_at LIMIT %(batch)s FOR UPDATE SKIP LOCKED)
                    RETURNING {COLUMNS}
                    """,
            {
                "to": _TIMEOUT_TARGET.value,
                "timeout": timeout_seconds,
                "batch": batch,
                "message": rules.timed_out_message(timeout_seconds),
            },
        )
        rows = await cur.fetchall()
        return [_row(r) for r in rows]


_TIMEOUT_SOURCES = sql_in(sources(JobEvent.TIMED_OUT))
# The same for every source status (asserted): one UPDATE can set it.
(_TIMEOUT_TARGET,) = {next_status(s, JobEvent.TIMED_OUT) for s in sources(JobEvent.TIMED_OUT)}


async def unsettled(pool: pg.Pool, older_than_seconds: float, batch: int) -> list[JobRow]:
    """Finished jobs whose hold is not settled yet and are due: not settled just
    now by the outcome consumer, and past the retry time of a refusal."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            f"""
                    SELECT {COLUMNS} FROM jobs.jobs
                    WHERE finished_at IS NOT NULL AND settled_at IS NULL
                      AND finished_at < now() - make_interval(secs => %(age)s)
                      AND (settle_retry_at IS NULL OR settle_retry_at <= now())
                    ORDER BY finished_at LIMIT %(batch)s
                    """,
            {"age": older_than_seconds, "batch": batch},
        )
        rows = await cur.fetchall()
        return [_row(r) for r in rows]


async def mark_settled(pool: pg.Pool, job_id: str, charged_micros: int) -> JobRow | None:
    """Billing settled the hold, having moved `charged_micros` (what the client
    then sees as the job's cost)."""
    async with pool.connection() as conn:
        return await _one(
            conn,
            f"""
            UPDATE jobs.jobs SET settled_at = now(), charged_micros = %(charged)s,
                settle_retry_at = NULL
            WHERE id = %(id)s AND settled_at IS NULL RETURNING {COLUMNS}
            """,
            {"id": job_id, "charged": charged_micros},
        )


async def record_settle_refusal(
    pool: pg.Pool, job_id: str, error: str, retry_after_seconds: float
) -> JobRow | None:
    """Billing refused to settle: counted, kept unsettled, tried again later."""
    async with pool.connection() as conn:
        return await _one(
            conn,
            f"""
            UPDATE jobs.jobs SET settle_refusals = settle_refusals + 1,
                settle_error = %(error)s,
                settle_retry_at = now() + make_interval(secs => %(after)s)
            WHERE id = %(id)s AND settled_at IS NULL RETURNING {COLUMNS}
            """,
            {"id": job_id, "error": error[:500], "after": retry_after_seconds},
        )
