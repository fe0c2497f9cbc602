"""Client task ids against real PostgreSQL: one job per (account, client_task_id),
a repeat of the same work gets the first job, different work is refused, another
account's id is its own, and racing creations make exactly one job."""

from __future__ import annotations

import asyncio
import secrets

import psycopg
import pytest
from aiport.v1 import job_state_pb2

from services.common import pg
from services.common.job_states import Modality
from services.jobs import rules, store


def creation(
    account_id: str, task_id: str, prompt: str = "a cat"
) -> job_state_pb2.CreateJobRequest:
    """One call's creation: its own key, hold and job id, as the gateway makes them."""
    return job_state_pb2.CreateJobRequest(
        account_id=account_id,
        hold_id="hold_" + secrets.token_hex(8),
        model="seedream-4.5",
        modality=Modality.IMAGE.to_proto(),
        spec=job_state_pb2.WorkSpec(prompt=prompt),
        unit_price_micros=700,
        estimated_units=1,
        estimated_cost_micros=700,
        idempotency_key="call-" + secrets.token_hex(8),
        job_id=rules.new_job_id(),
        client_task_id=task_id,
    )


def account() -> str:
    return "acct_" + secrets.token_hex(6)


async def create(pool: pg.Pool, request: job_state_pb2.CreateJobRequest) -> store.JobRow:
    job, _ = await store.create_job(pool, request, Modality.IMAGE.worker_kind)
    return job


async def test_a_repeat_of_the_same_work_gets_the_first_job_and_queues_nothing(
    pool: pg.Pool,
) -> None:
    owner = account()
    first = creation(owner, "order-1")
    job = await create(pool, first)
    assert (job.id, job.client_task_id) == (first.job_id, "order-1")
    repeat = creation(owner, "order-1")
    again, outbox_id = await store.create_job(pool, repeat, Modality.IMAGE.worker_kind)
    # The first job, which owns the first call's hold (the caller releases its own).
    assert (again.id, again.hold_id) == (first.job_id, first.hold_id)
    assert outbox_id is None


async def test_a_repeat_asking_for_different_work_is_refused(pool: pg.Pool) -> None:
    owner = account()
    await create(pool, creation(owner, "order-2"))
    with pytest.raises(store.IdempotencyConflict):
        await create(pool, creation(owner, "order-2", prompt="a dog"))


async def test_another_accounts_task_id_is_its_own(pool: pg.Pool) -> None:
    mine = await create(pool, creation(account(), "shared-name"))
    theirs = await create(pool, creation(account(), "shared-name"))
    assert mine.id != theirs.id


async def test_the_listing_finds_a_job_by_its_task_id(pool: pg.Pool) -> None:
    owner = account()
    await create(pool, creation(owner, "a"))
    wanted = await create(pool, creation(owner, "b"))
    page = await store.list_jobs(pool, owner, 10, client_task_id="b")
    assert [job.id for job in page.jobs] == [wanted.id]
    assert (await store.list_jobs(pool, account(), 10, client_task_id="b")).jobs == []


async def test_racing_creations_with_one_task_id_make_one_job(pool: pg.Pool) -> None:
    owner = account()
    jobs = await asyncio.gather(*(create(pool, creation(owner, "race")) for _ in range(8)))
    assert len({job.id for job in jobs}) == 1
    page = await store.list_jobs(pool, owner, 10)
    assert len(page.jobs) == 1


async def test_the_table_refuses_a_malformed_task_id(pool: pg.Pool) -> None:
    request = creation(account(), "has space")
    with pytest.raises(psycopg.errors.CheckViolation):
        await create(pool, request)
