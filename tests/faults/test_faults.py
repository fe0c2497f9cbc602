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

import pytest

from tests.faults.conftest import JOB_TIMEOUT_SECONDS, FaultStack
from tests.faults.load import Load
from tests.faults.scenario import assert_promises, recovered, run_scenario

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
