"""SIGKILL a video worker while its jobs run upstream. Each job's redelivery
waits for the dead worker's lease to lapse, then resumes the recorded upstream
task: every job is done, resumed exactly once, with one upstream task and one
charge. (Its own stack; it restarts none of the machine's shared services.)"""

from __future__ import annotations

import asyncio
import signal
import time

import httpx
import psycopg

from tests.faults.conftest import JOB_TIMEOUT_SECONDS, FaultStack
from tests.faults.scenario import MONEY_SQL, _money_violations, poll_until_terminal, wait_settled

JOBS = 4


async def test_sigkill_a_worker_mid_jobs_resumes_each_once(faults: FaultStack) -> None:
    key = faults.api_keys[1]
    prompts = [f"lease {time.monotonic_ns()} {i} [sim:delay=5]" for i in range(JOBS)]
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=faults.base_url, headers=headers, timeout=15) as c:
        accepted = []
        for prompt in prompts:
            response = await c.post("/v1/video/generate", json={"prompt": prompt, "duration": 4})
            assert response.status_code == 202, response.text
            accepted.append((key, response.json()["job_id"]))

    async def tasks() -> dict[str, int]:
        async with httpx.AsyncClient(base_url=faults.stack.config.sandbox_url) as sandbox:
            seen = (await sandbox.get("/_sandbox/tasks")).json()
        return {p: sum(1 for t in seen if t["prompt"] == p) for p in prompts}

    deadline = time.monotonic() + 15
    while min((await tasks()).values()) == 0:  # every job is with the upstream
        assert time.monotonic() < deadline, await tasks()
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # and has recorded its task
    await asyncio.to_thread(faults.stack.kill, "worker-video", signal.SIGKILL)
    await asyncio.to_thread(faults.stack.start_service, "worker-video")

    jobs, lost = await poll_until_terminal(faults.base_url, accepted, JOB_TIMEOUT_SECONDS + 10)
    assert not lost, jobs
    assert {job["status"] for job in jobs.values()} == {"done"}, jobs
    assert await tasks() == dict.fromkeys(prompts, 1)  # nothing paid upstream twice
    ids = [job_id for _, job_id in accepted]
    wait_settled(faults.conninfo, 30)
    with psycopg.connect(faults.conninfo) as conn:
        money = conn.execute(MONEY_SQL, (ids,)).fetchall()
        attempts = conn.execute(
            "SELECT id, attempts FROM jobs.jobs WHERE id = ANY(%s)", (ids,)
        ).fetchall()
    assert len(money) == JOBS and _money_violations(money) == []  # one capture each
    assert dict(attempts) == dict.fromkeys(ids, 2)  # resumed once, not deferred into attempts
