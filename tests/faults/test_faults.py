"""Faults under a steady mixed load: SIGKILL each of our services at a random
moment and restart it, and upstream faults from the sandbox. After each
scenario: no job lost, every failed job refunded once, no double charge, the
ledger balances, errors were prompt and in our JSON shape, and the system
recovered by itself."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time

import httpx
import psycopg
import pytest

from tests.faults.conftest import JOB_TIMEOUT_SECONDS, FaultStack
from tests.faults.load import Load
from tests.faults.scenario import (
    assert_promises,
    poll_until_terminal,
    recovered,
    run_scenario,
    wait_settled,
)
from tests.integration.conftest import assert_ledger_invariants

SEED = int(os.environ.get("AIPORT_FAULTS_SEED", "0")) or random.randrange(1, 1_000_000)


@pytest.mark.parametrize(
    "service", ["gateway", "billing", "jobs", "providers", "worker-image", "worker-video"]
)
async def test_sigkill_and_restart_under_load(faults: FaultStack, service: str) -> None:
    rng = random.Random(f"{SEED}-{service}")
    load = Load(rate=12, seconds=8)

    async def kill_and_restart() -> int:
        await asyncio.sleep(rng.uniform(1.5, 4.5))
        await asyncio.to_thread(faults.stack.kill, service, signal.SIGKILL)
        await asyncio.sleep(1.0)  # down for a moment: clients must get prompt errors
        await asyncio.to_thread(faults.stack.start_service, service)
        return 1

    outcome = await run_scenario(
        faults,
        f"SIGKILL {service} (seed {SEED})",
        [load],
        kill_and_restart,
        seed=rng.randrange(1 << 30),
    )
    assert_promises(faults, outcome)
    assert faults.stack.exited() == []
    await recovered(faults)


async def test_upstream_429_storm(faults: FaultStack) -> None:
    load = Load(
        rate=12,
        seconds=6,
        chat_directive="[sim:status=429]",
        job_directive="[sim:status=429]",
        directive_share=0.6,
    )
    outcome = await run_scenario(faults, "upstream 429 storm", [load], seed=SEED)
    assert_promises(faults, outcome)
    # Jobs the upstream refused all failed (and were refunded, checked above).
    for record in outcome.records:
        if record.job_id and record.op == "image":
            assert outcome.jobs[record.job_id]["status"] in ("done", "failed")
    await recovered(faults)


async def test_slow_upstream(faults: FaultStack) -> None:
    load = Load(
        rate=10,
        seconds=6,
        timeout=12,
        chat_directive="[sim:delay=3]",
        job_directive="[sim:delay=3]",
        directive_share=0.5,
    )
    outcome = await run_scenario(faults, "slow upstream (3 s)", [load], seed=SEED)
    assert_promises(faults, outcome)
    # Nothing is down: a slow upstream is slow, never an error.
    assert outcome.errors(lambda r: r.status >= 400 or r.status == 0) == []
    assert all(j["status"] == "done" for j in outcome.jobs.values()), outcome.jobs
    await recovered(faults)


async def test_stalled_stream_with_client_timeout(faults: FaultStack) -> None:
    normal = Load(rate=8, seconds=6)
    # Streams that pause 2 s between frames, read by a client that gives up after 1 s.
    stalled = Load(
        rate=2,
        seconds=4,
        timeout=1.0,
        chat_directive="[sim:chunk-delay=2]",
        directive_share=1.0,
        weights={"stream": 1.0},
    )
    outcome = await run_scenario(faults, "stalled stream", [normal, stalled], seed=SEED)
    assert_promises(faults, outcome, allow_timeouts=True)
    stalled_records = outcome.drivers[1].result.records
    assert stalled_records and all(r.timed_out for r in stalled_records)
    # The client's own timeout fired promptly; nothing else timed out.
    assert all(r.latency < 3 for r in stalled_records)
    assert not [r for r in outcome.drivers[0].result.records if r.timed_out]
    await recovered(faults)


async def test_video_task_that_never_finishes(faults: FaultStack) -> None:
    load = Load(
        rate=8,
        seconds=5,
        job_directive="[sim:hang]",
        directive_share=0.4,
        weights={"chat": 0.3, "image": 0.2, "video": 0.3, "poll": 0.2},
    )
    outcome = await run_scenario(faults, "video task hangs", [load], seed=SEED)
    assert_promises(faults, outcome)
    timed_out = [
        j
        for j in outcome.jobs.values()
        if j.get("error_message") == f"Job timed out after {JOB_TIMEOUT_SECONDS} seconds."
    ]
    assert timed_out, "no hung job was failed by the timeout"
    await recovered(faults)


async def test_sigterm_a_worker_with_slow_jobs_in_flight(faults: FaultStack) -> None:
    """One video worker, SIGTERMed with two jobs in hand: the one that ends within
    the grace finishes before the worker exits; the other goes back to the queue
    and, after the restart, resumes its recorded upstream task. Both are done,
    with one upstream task and one charge each."""
    stack = faults.stack
    grace = 2
    # The worker reads its grace from its environment: restart it with a short one.
    stack.config.extra_env["AIPORT_GRACE_SECONDS"] = str(grace)
    try:
        await asyncio.to_thread(stack.kill, "worker-video", signal.SIGTERM)
        await asyncio.to_thread(stack.start_service, "worker-video")
    finally:
        del stack.config.extra_env["AIPORT_GRACE_SECONDS"]
    tag = f"drain-{time.monotonic_ns()}"
    prompts = {"short": f"{tag} short [sim:delay=1]", "long": f"{tag} long [sim:delay=6]"}
    key = faults.api_keys[0]
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=faults.base_url, timeout=15, headers=headers) as c:
        job_ids = {}
        for name, prompt in prompts.items():
            created = await c.post("/v1/video/generate", json={"prompt": prompt, "duration": 4})
            assert created.status_code == 202, created.text
            job_ids[name] = created.json()["job_id"]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # both in hand (processing) before the SIGTERM
            statuses = [(await c.get(f"/v1/jobs/{j}")).json()["status"] for j in job_ids.values()]
            if statuses == ["processing", "processing"]:
                break
            await asyncio.sleep(0.1)
        assert statuses == ["processing", "processing"], statuses
        process = stack.processes["worker-video"]
        started = time.monotonic()
        await asyncio.to_thread(stack.kill, "worker-video", signal.SIGTERM)
        exited_after = time.monotonic() - started
        assert process.popen.returncode == 0
        assert grace - 0.5 < exited_after < grace + 3, exited_after  # waited for the grace
        short = (await c.get(f"/v1/jobs/{job_ids['short']}")).json()
        assert short["status"] == "done", short  # finished before the worker exited
        assert (await c.get(f"/v1/jobs/{job_ids['long']}")).json()["status"] == "processing"
        await asyncio.to_thread(stack.start_service, "worker-video")
        jobs, lost = await poll_until_terminal(
            faults.base_url, [(key, j) for j in job_ids.values()], 30
        )
    assert not lost and [jobs[j]["status"] for j in job_ids.values()] == ["done", "done"], jobs
    async with httpx.AsyncClient(base_url=stack.config.sandbox_url, timeout=10) as sandbox:
        tasks = [t["prompt"] for t in (await sandbox.get("/_sandbox/tasks")).json()]
    assert [tasks.count(p) for p in prompts.values()] == [1, 1]
    with psycopg.connect(faults.conninfo, autocommit=True) as conn:
        await asyncio.to_thread(wait_settled, faults.conninfo, 20)
        charges = conn.execute(
            "SELECT j.id, h.status, count(e.id) FROM jobs.jobs j"
            " JOIN billing.holds h ON h.id = j.hold_id"
            " LEFT JOIN billing.ledger_entries e ON e.hold_id = j.hold_id"
            " WHERE j.id = ANY(%s) GROUP BY j.id, h.status",
            (list(job_ids.values()),),
        ).fetchall()
    assert sorted(charges) == sorted((j, "captured", 1) for j in job_ids.values())
    assert_ledger_invariants(faults.url)
