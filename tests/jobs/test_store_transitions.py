"""The jobs store against real PostgreSQL: every status change follows the
transition table, an illegal one is refused (logged, nothing written), and the
database's trigger and CHECKs hold the same rule for any hand-written SQL."""

from __future__ import annotations

import itertools
import logging
import secrets

import psycopg
import pytest
from aiport.v1 import job_state_pb2

from services.common import pg
from services.common.job_states import (
    INITIAL,
    STATUS_CHANGES,
    IllegalTransition,
    JobEvent,
    JobStatus,
    Modality,
)
from services.jobs import rules, store


def creation(modality: Modality = Modality.IMAGE) -> job_state_pb2.CreateJobRequest:
    return job_state_pb2.CreateJobRequest(
        account_id="acct_1",
        hold_id="hold_" + secrets.token_hex(8),
        model="seedream-4.5",
        modality=modality.to_proto(),
        spec=job_state_pb2.WorkSpec(prompt="a cat"),
        unit_price_micros=700,
        estimated_units=1,
        estimated_cost_micros=700,
        idempotency_key="call-" + secrets.token_hex(8),
        job_id=rules.new_job_id(),
    )


async def new_job(pool: pg.Pool, modality: Modality = Modality.IMAGE) -> store.JobRow:
    job, outbox_id = await store.create_job(pool, creation(modality), modality.worker_kind)
    assert outbox_id is not None
    return job


async def begin(pool: pg.Pool, job_id: str) -> store.BegunAttempt:
    begun = await store.begin_attempt(pool, job_id, "worker-1", lease_seconds=30)
    assert begun is not None
    return begun


def outcome(job_id: str, *, succeeded: bool) -> job_state_pb2.JobOutcome:
    if succeeded:
        return job_state_pb2.JobOutcome(
            job_id=job_id, succeeded=True, result_key="results/t/a.png", units=1
        )
    return job_state_pb2.JobOutcome(
        job_id=job_id, succeeded=False, error_message="nope", error_code="provider_error"
    )


async def expire_lease(pool: pg.Pool, job_id: str) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE jobs.jobs SET lease_expires_at = now() - interval '1 second' WHERE id = %(id)s",
            {"id": job_id},
        )


# -- through the store -----------------------------------------------------------------


async def test_a_job_walks_the_table_and_rows_carry_the_enums(pool: pg.Pool) -> None:
    job = await new_job(pool, Modality.IMG2VIDEO)
    assert (job.status, job.modality) == (JobStatus.PENDING, Modality.IMG2VIDEO)
    assert isinstance(job.status, JobStatus) and isinstance(job.modality, Modality)

    first = await begin(pool, job.id)
    assert (first.decision.verdict, first.job.status) == (rules.Verdict.RUN, JobStatus.PROCESSING)
    await expire_lease(pool, job.id)  # its worker died: a new attempt resumes it
    second = await begin(pool, job.id)
    assert (second.job.status, second.job.attempts) == (JobStatus.PROCESSING, 2)

    done = await store.apply_outcome(pool, outcome(job.id, succeeded=True))
    assert done is not None and done.status is JobStatus.DONE and done.finished


async def test_an_abandoned_creation_is_born_failed(pool: pg.Pool) -> None:
    job, abandoned = await store.abandon_creation(pool, creation())
    assert abandoned and job.status is INITIAL[JobEvent.CREATION_ABANDONED] is JobStatus.FAILED
    assert job.finished_at is not None


async def test_an_illegal_transition_is_refused_logged_and_not_written(
    pool: pg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    job = await new_job(pool)
    done = await store.apply_outcome(pool, outcome(job.id, succeeded=True))
    assert done is not None and done.status is JobStatus.DONE

    caplog.set_level(logging.ERROR, logger="services.jobs.store")
    with pytest.raises(IllegalTransition) as refused:
        async with pg.transaction(pool) as conn:
            await store._change_status(conn, done, JobEvent.ATTEMPT_BEGUN, "attempts = 99", {})
    assert (refused.value.status, refused.value.event) == (JobStatus.DONE, JobEvent.ATTEMPT_BEGUN)
    assert "illegal job status transition refused" in caplog.text

    after = await store.get_job(pool, job.id)
    assert after is not None
    assert (after.status, after.attempts, after.result_key) == (
        JobStatus.DONE,
        done.attempts,
        "results/t/a.png",
    )


async def test_a_status_changed_behind_the_decision_is_refused_not_overwritten(
    pool: pg.Pool,
) -> None:
    # The UPDATE is guarded by the status the table was asked about: a stale row
    # (here: read as pending, finished since) changes nothing.
    job = await new_job(pool)
    assert await store.apply_outcome(pool, outcome(job.id, succeeded=False)) is not None
    with pytest.raises(IllegalTransition):
        async with pg.transaction(pool) as conn:
            await store._change_status(
                conn, job, JobEvent.SUCCEEDED, "result_key = 'x', finished_at = now()", {}
            )
    after = await store.get_job(pool, job.id)
    assert after is not None and (after.status, after.result_key) == (JobStatus.FAILED, None)


async def test_a_late_outcome_never_overwrites_a_finished_job(pool: pg.Pool) -> None:
    job = await new_job(pool)
    await begin(pool, job.id)
    assert await store.apply_outcome(pool, outcome(job.id, succeeded=True)) is not None
    assert await store.apply_outcome(pool, outcome(job.id, succeeded=False)) is None
    after = await store.get_job(pool, job.id)
    assert after is not None and (after.status, after.error_code) == (JobStatus.DONE, None)


async def test_a_finished_job_is_not_begun_again(pool: pg.Pool) -> None:
    job = await new_job(pool)
    await store.apply_outcome(pool, outcome(job.id, succeeded=False))
    again = await begin(pool, job.id)
    assert (again.decision.verdict, again.job.status) == (rules.Verdict.FINISHED, JobStatus.FAILED)
    assert again.job.attempts == 0


async def test_an_unqueued_job_a_worker_took_is_not_failed(pool: pg.Pool) -> None:
    # NOT_QUEUED is legal only for a pending job.
    request = creation()
    job, outbox_id = await store.create_job(pool, request, "image")
    assert outbox_id is not None
    await begin(pool, job.id)
    assert await store.cancel_unqueued(pool, job.id, outbox_id) is None
    after = await store.get_job(pool, job.id)
    assert after is not None and after.status is JobStatus.PROCESSING


async def test_the_sweeper_fails_only_active_jobs(pool: pg.Pool) -> None:
    pending, running, done = [await new_job(pool) for _ in range(3)]
    await begin(pool, running.id)
    await store.apply_outcome(pool, outcome(done.id, succeeded=True))
    expired = {j.id: j for j in await store.expire_overdue(pool, 0, batch=1000)}
    assert expired[pending.id].status is JobStatus.FAILED
    assert expired[running.id].status is JobStatus.FAILED
    assert expired[pending.id].error_code == "timeout"
    assert done.id not in expired


# -- the database's own rule -----------------------------------------------------------


async def job_in(pool: pg.Pool, status: JobStatus) -> str:
    """A job in `status`, reached by the store's own legal moves."""
    job = await new_job(pool)
    if status is JobStatus.PROCESSING:
        await begin(pool, job.id)
    elif status.finished:
        await store.apply_outcome(pool, outcome(job.id, succeeded=status is JobStatus.DONE))
    return job.id


async def raw_update(pool: pg.Pool, job_id: str, to: JobStatus) -> None:
    """What a hand-written UPDATE would do, keeping the row's other CHECKs satisfied."""
    async with pool.connection() as conn:
        await conn.execute(
            """
            UPDATE jobs.jobs SET status = %(to)s,
                finished_at = CASE WHEN %(finished)s THEN now() END,
                result_key = CASE WHEN %(to)s = 'done' THEN 'results/t/x.png' END,
                settled_at = NULL, charged_micros = NULL
            WHERE id = %(id)s
            """,
            {"id": job_id, "to": to.value, "finished": to.finished},
        )


@pytest.mark.parametrize(
    ("before", "after"),
    [(a, b) for a, b in itertools.permutations(JobStatus, 2)],
    ids=str,
)
async def test_the_trigger_allows_exactly_the_tables_status_changes(
    pool: pg.Pool, before: JobStatus, after: JobStatus
) -> None:
    job_id = await job_in(pool, before)
    if (before, after) in STATUS_CHANGES:
        await raw_update(pool, job_id, after)
        expected = after
    else:
        with pytest.raises(psycopg.errors.CheckViolation, match="illegal job status transition"):
            await raw_update(pool, job_id, after)
        expected = before
    row = await store.get_job(pool, job_id)
    assert row is not None and row.status is expected


INSERT = """
    INSERT INTO jobs.jobs (id, account_id, idempotency_key, model, modality, spec, hold_id,
        unit_price_micros, estimated_units, estimated_cost_micros, status, finished_at,
        result_key)
    VALUES (%(id)s, 'acct_1', %(id)s, 'm', %(modality)s, '', 'hold_1', 1, 1, 1, %(status)s,
        CASE WHEN %(finished)s THEN now() END, 'results/t/x.png')
"""


@pytest.mark.parametrize("status", list(JobStatus), ids=str)
async def test_the_database_creates_jobs_only_as_the_table_does(
    pool: pg.Pool, status: JobStatus
) -> None:
    params = {
        "id": rules.new_job_id(),
        "modality": "image",
        "status": status.value,
        "finished": status.finished,
    }
    async with pool.connection() as conn:
        if status in INITIAL.values():
            await conn.execute(INSERT, params)
        else:
            with pytest.raises(psycopg.errors.CheckViolation, match="is not created"):
                await conn.execute(INSERT, params)


@pytest.mark.parametrize("value", ["text", "IMAGE", ""])
async def test_the_database_refuses_an_unknown_modality(pool: pg.Pool, value: str) -> None:
    params = {"id": rules.new_job_id(), "modality": value, "status": "pending", "finished": False}
    async with pool.connection() as conn:
        with pytest.raises(psycopg.errors.CheckViolation, match="jobs_modality_known"):
            await conn.execute(INSERT, params)


async def test_the_database_knows_every_modality(pool: pg.Pool) -> None:
    async with pool.connection() as conn:
        for modality in Modality:
            params = {
                "id": rules.new_job_id(),
                "modality": modality.value,
                "status": "pending",
                "finished": False,
            }
            await conn.execute(INSERT, params)
