"""Listing an account's jobs against real PostgreSQL: newest first with a stable
order for jobs created in the same instant, keyset pages that neither skip nor
repeat, filters, and never another account's job (nor a page after one)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import pytest
from aiport.v1 import job_state_pb2

from services.common import pg
from services.common.job_states import JobStatus, Modality
from services.jobs import rules, store

T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def add_job(
    pool: pg.Pool, account_id: str, created_at: datetime, model: str = "seedream-4.5"
) -> str:
    request = job_state_pb2.CreateJobRequest(
        account_id=account_id,
        hold_id="hold_" + secrets.token_hex(8),
        model=model,
        modality=Modality.IMAGE.to_proto(),
        spec=job_state_pb2.WorkSpec(prompt="a cat"),
        unit_price_micros=700,
        estimated_units=1,
        estimated_cost_micros=700,
        idempotency_key="call-" + secrets.token_hex(8),
        job_id=rules.new_job_id(),
    )
    job, _ = await store.create_job(pool, request, Modality.IMAGE.worker_kind)
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE jobs.jobs SET created_at = %(at)s WHERE id = %(id)s",
            {"at": created_at, "id": job.id},
        )
    return job.id


async def fail(pool: pg.Pool, job_id: str) -> None:
    outcome = job_state_pb2.JobOutcome(
        job_id=job_id, succeeded=False, error_message="nope", error_code="provider_error"
    )
    assert await store.apply_outcome(pool, outcome) is not None


async def every_page(pool: pg.Pool, account_id: str, limit: int, **filters: object) -> list[str]:
    seen: list[str] = []
    after = None
    while True:
        page = await store.list_jobs(pool, account_id, limit, after_job_id=after, **filters)  # type: ignore[arg-type]
        assert len(page.jobs) <= limit
        seen += [job.id for job in page.jobs]
        if not page.has_more:
            return seen
        assert len(page.jobs) == limit
        after = page.jobs[-1].id


def account() -> str:
    return "acct_" + secrets.token_hex(6)


async def test_pages_walk_newest_first_without_gaps_or_repeats(pool: pg.Pool) -> None:
    mine, theirs = account(), account()
    # Three jobs share one instant: their order is by id, and paging through
    # them mid-tie loses none.
    at = [T0 + timedelta(seconds=s) for s in (1, 2, 3, 3, 3, 4, 5)]
    ids = [await add_job(pool, mine, when) for when in at]
    for when in at:
        await add_job(pool, theirs, when)
    expected = [
        job_id for _, job_id in sorted(zip(at, ids, strict=True), reverse=True)
    ]  # created_at desc, then id desc
    for limit in (1, 2, 3, 7, 100):
        assert await every_page(pool, mine, limit) == expected
    last = await store.list_jobs(pool, mine, 7)
    assert not last.has_more
    assert all(job.account_id == mine for job in last.jobs)


async def test_filters_by_status_and_model(pool: pg.Pool) -> None:
    mine = account()
    ids = [await add_job(pool, mine, T0 + timedelta(seconds=s)) for s in range(5)]
    other_model = await add_job(pool, mine, T0 + timedelta(seconds=9), model="seedance-1")
    await fail(pool, ids[1])
    await fail(pool, ids[3])
    assert await every_page(pool, mine, 1, status=JobStatus.FAILED) == [ids[3], ids[1]]
    assert await every_page(pool, mine, 2, status=JobStatus.PENDING) == [
        other_model,
        ids[4],
        ids[2],
        ids[0],
    ]
    assert await every_page(pool, mine, 2, model="seedance-1") == [other_model]
    assert await every_page(pool, mine, 2, status=JobStatus.DONE) == []
    # A page after a job the filter leaves out starts at that job's place.
    page = await store.list_jobs(pool, mine, 10, after_job_id=ids[3], status=JobStatus.PENDING)
    assert [job.id for job in page.jobs] == [ids[2], ids[0]]


async def test_no_page_starts_after_another_accounts_job(pool: pg.Pool) -> None:
    mine, theirs = account(), account()
    await add_job(pool, mine, T0)
    their_job = await add_job(pool, theirs, T0)
    with pytest.raises(store.UnknownAnchor):
        await store.list_jobs(pool, mine, 10, after_job_id=their_job)
    with pytest.raises(store.UnknownAnchor):
        await store.list_jobs(pool, mine, 10, after_job_id=rules.new_job_id())


async def test_a_deep_page_reads_the_listing_index(pool: pg.Pool) -> None:
    """Keyset, not OFFSET: the plan is an index range on the account's jobs past
    the cursor (with the status filter, the status index)."""
    async with pool.connection() as conn:
        await conn.execute("SET enable_seqscan = off")  # a tiny table would scan anyway
        try:
            for sql, index in (
                (
                    "SELECT id FROM jobs.jobs WHERE account_id = 'a'"
                    " AND (created_at, id) < (now(), 'job_x')"
                    " ORDER BY created_at DESC, id DESC LIMIT 21",
                    "jobs_listing",
                ),
                (
                    "SELECT id FROM jobs.jobs WHERE account_id = 'a' AND status = 'failed'"
                    " AND (created_at, id) < (now(), 'job_x')"
                    " ORDER BY created_at DESC, id DESC LIMIT 21",
                    "jobs_listing_by_status",
                ),
            ):
                rows = await (await conn.execute("EXPLAIN " + sql)).fetchall()
                plan = "\n".join(str(next(iter(row.values()))) for row in rows)
                assert f"using {index} on jobs" in plan.lower(), plan
                assert "sort" not in plan.lower(), plan
        finally:
            await conn.execute("RESET enable_seqscan")
