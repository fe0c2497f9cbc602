"""The jobs schema: each function is one transaction and returns plain rows."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiport.v1 import job_state_pb2
from sqlalchemy import text
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.jobs import rules

COLUMNS = (
    "id, account_id, model, modality, status, spec, hold_id, unit_price_micros,"
    " estimated_units, min_billable_units, estimated_cost_micros, actual_cost_micros,"
    " result_key, last_frame_key, error_message, upstream_task_id, attempts, created_at,"
    " finished_at, settled_at"
)


@dataclass(frozen=True, slots=True)
class JobRow:
    id: str
    account_id: str
    model: str
    modality: str
    status: str
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
    upstream_task_id: str | None
    attempts: int
    created_at: datetime
    finished_at: datetime | None
    settled_at: datetime | None

    @property
    def finished(self) -> bool:
        return self.status in rules.TERMINAL


def _row(row: Row[Any]) -> JobRow:
    return JobRow(**row._asdict())


async def _one(conn: AsyncConnection, sql: str, params: dict[str, Any]) -> JobRow | None:
    row = (await conn.execute(text(sql), params)).first()
    return _row(row) if row is not None else None


async def create_job(
    engine: AsyncEngine, request: job_state_pb2.CreateJobRequest, routing_key: str
) -> tuple[JobRow, int | None]:
    """Insert the job and its work message together. A repeated idempotency key
    returns the existing job and no outbox id (its message is already handled)."""
    job_id = rules.new_job_id()
    item = job_state_pb2.WorkItem(
        job_id=job_id, model=request.model, modality=request.modality, spec=request.spec
    )
    async with engine.begin() as conn:
        job = await _one(
            conn,
            f"""
            INSERT INTO jobs.jobs (id, account_id, idempotency_key, model, modality, spec,
                hold_id, unit_price_micros, estimated_units, min_billable_units,
                estimated_cost_micros)
            VALUES (:id, :account_id, :key, :model, :modality, :spec, :hold_id, :unit_price,
                :units, :min_units, :estimated)
            ON CONFLICT (idempotency_key) DO NOTHING
            RETURNING {COLUMNS}
            """,
            {
                "id": job_id,
                "account_id": request.account_id,
                "key": request.idempotency_key,
                "model": request.model,
                "modality": request.modality,
                "spec": request.spec.SerializeToString(),
                "hold_id": request.hold_id,
                "unit_price": request.unit_price_micros,
                "units": request.estimated_units,
                "min_units": request.min_billable_units,
                "estimated": request.estimated_cost_micros,
            },
        )
        if job is None:
            existing = await _one(
                conn,
                f"SELECT {COLUMNS} FROM jobs.jobs WHERE idempotency_key = :key",
                {"key": request.idempotency_key},
            )
            assert existing is not None  # the conflict says it exists
            return existing, None
        outbox_id = (
            await conn.execute(
                text(
                    "INSERT INTO jobs.outbox (job_id, routing_key, payload)"
                    " VALUES (:job_id, :routing_key, :payload) RETURNING id"
                ),
                {
                    "job_id": job_id,
                    "routing_key": routing_key,
                    "payload": item.SerializeToString(),
                },
            )
        ).scalar_one()
        return job, int(outbox_id)


async def mark_published(engine: AsyncEngine, outbox_id: int) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE jobs.outbox SET published_at = now() WHERE id = :id"), {"id": outbox_id}
        )


async def cancel_unqueued(engine: AsyncEngine, job_id: str, outbox_id: int) -> JobRow | None:
    """Fail a job whose message never reached the broker, if the relay has not
    sent it meanwhile. Returns the failed job (to settle) or None."""
    async with engine.begin() as conn:
        removed = await conn.execute(
            text("DELETE FROM jobs.outbox WHERE id = :id AND published_at IS NULL"),
            {"id": outbox_id},
        )
        if removed.rowcount != 1:
            return None
        return await _one(
            conn,
            f"""
            UPDATE jobs.jobs SET status = 'failed', error_message = :message,
                actual_cost_micros = 0, finished_at = now()
            WHERE id = :id AND status = 'pending' RETURNING {COLUMNS}
            """,
            {"id": job_id, "message": rules.NOT_QUEUED},
        )


async def relay_outbox(
    engine: AsyncEngine,
    publish: Callable[[str, bytes, str], Awaitable[None]],
    *,
    older_than_seconds: float,
    batch: int,
) -> int:
    """Send outbox rows nobody sent (a crash after commit, a broker outage).
    Rows stay locked while being sent, so replicas never send the same row twice
    at once; a message sent twice anyway is harmless (workers skip finished jobs)."""
    async with engine.begin() as conn:
        rows = (
            await conn.execute(
                text(
                    """
                    SELECT id, job_id, routing_key, payload FROM jobs.outbox
                    WHERE published_at IS NULL
                      AND created_at < now() - make_interval(secs => :age)
                    ORDER BY id LIMIT :batch FOR UPDATE SKIP LOCKED
                    """
                ),
                {"age": older_than_seconds, "batch": batch},
            )
        ).all()
        for row in rows:
            await publish(row.routing_key, bytes(row.payload), row.job_id)
            await conn.execute(
                text("UPDATE jobs.outbox SET published_at = now() WHERE id = :id"), {"id": row.id}
            )
        return len(rows)


async def get_job(engine: AsyncEngine, job_id: str) -> JobRow | None:
    async with engine.connect() as conn:
        return await _one(conn, f"SELECT {COLUMNS} FROM jobs.jobs WHERE id = :id", {"id": job_id})


async def begin_attempt(engine: AsyncEngine, job_id: str, worker_id: str) -> JobRow | None:
    """pending/processing -> processing, counting attempts; past MAX_ATTEMPTS the
    job fails instead. Finished jobs come back unchanged (the worker skips them)."""
    async with engine.begin() as conn:
        job = await _one(
            conn,
            f"""
            UPDATE jobs.jobs SET status = 'processing', attempts = attempts + 1,
                worker_id = :worker, started_at = COALESCE(started_at, now())
            WHERE id = :id AND status IN ('pending', 'processing') RETURNING {COLUMNS}
            """,
            {"id": job_id, "worker": worker_id},
        )
        if job is None:
            return await _one(
                conn, f"SELECT {COLUMNS} FROM jobs.jobs WHERE id = :id", {"id": job_id}
            )
        if job.attempts > rules.MAX_ATTEMPTS:
            return await _one(
                conn,
                f"""
                UPDATE jobs.jobs SET status = 'failed', error_message = :message,
                    actual_cost_micros = 0, finished_at = now()
                WHERE id = :id RETURNING {COLUMNS}
                """,
                {"id": job_id, "message": rules.PROVIDER_FAILED},
            )
        return job


async def record_upstream_task(engine: AsyncEngine, job_id: str, task_id: str) -> JobRow | None:
    async with engine.begin() as conn:
        return await _one(
            conn,
            f"""
            UPDATE jobs.jobs SET upstream_task_id = :task
            WHERE id = :id AND status = 'processing' RETURNING {COLUMNS}
            """,
            {"id": job_id, "task": task_id},
        )


async def apply_outcome(engine: AsyncEngine, outcome: job_state_pb2.JobOutcome) -> JobRow | None:
    """Finish an active job from a worker's outcome. None when the job is unknown
    or already finished (a redelivered or late outcome changes nothing)."""
    async with engine.begin() as conn:
        job = await _one(
            conn,
            f"""
            SELECT {COLUMNS} FROM jobs.jobs
            WHERE id = :id AND status IN ('pending', 'processing') FOR UPDATE
            """,
            {"id": outcome.job_id},
        )
        if job is None:
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
                "status": "done",
                "result": outcome.result_key,
                "frame": outcome.last_frame_key or None,
                "error": None,
                "cost": cost,
            }
        else:
            params = {
                "status": "failed",
                "result": None,
                "frame": None,
                "error": outcome.error_message or rules.PROVIDER_FAILED,
                "cost": 0,
            }
        return await _one(
            conn,
            f"""
            UPDATE jobs.jobs SET status = :status, result_key = :result,
                last_frame_key = :frame, error_message = :error,
                actual_cost_micros = :cost, finished_at = now()
            WHERE id = :id RETURNING {COLUMNS}
            """,
            {"id": job.id, **params},
        )


async def expire_overdue(engine: AsyncEngine, timeout_seconds: int, batch: int) -> list[JobRow]:
    """Fail (and so refund) active jobs older than the timeout, a batch at a time."""
    async with engine.begin() as conn:
        rows = (
            await conn.execute(
                text(
                    f"""
                    UPDATE jobs.jobs SET status = 'failed', error_message = :message,
                        actual_cost_micros = 0, finished_at = now()
                    WHERE id IN (
                        SELECT id FROM jobs.jobs
                        WHERE status IN ('pending', 'processing')
                          AND created_at < now() - make_interval(secs => :timeout)
                        ORDER BY created_at LIMIT :batch FOR UPDATE SKIP LOCKED)
                    RETURNING {COLUMNS}
                    """
                ),
                {
                    "timeout": timeout_seconds,
                    "batch": batch,
                    "message": rules.timed_out_message(timeout_seconds),
                },
            )
        ).all()
        return [_row(r) for r in rows]


async def unsettled(engine: AsyncEngine, older_than_seconds: float, batch: int) -> list[JobRow]:
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    f"""
                    SELECT {COLUMNS} FROM jobs.jobs
                    WHERE finished_at IS NOT NULL AND settled_at IS NULL
                      AND finished_at < now() - make_interval(secs => :age)
                    ORDER BY finished_at LIMIT :batch
                    """
                ),
                {"age": older_than_seconds, "batch": batch},
            )
        ).all()
        return [_row(r) for r in rows]


async def mark_settled(engine: AsyncEngine, job_id: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE jobs.jobs SET settled_at = now() WHERE id = :id AND settled_at IS NULL"),
            {"id": job_id},
        )
