"""Restarts of the machine's shared PostgreSQL and RabbitMQ under load.

Not collected by `make test` (the file name does not start with test_):
restarting the shared servers would disturb anything else on the machine.
`make test-faults` runs it explicitly, and .ci/run calls that too.
"""

from __future__ import annotations

import asyncio
import os
import random

from tests.faults.conftest import FaultStack
from tests.faults.load import Load
from tests.faults.scenario import assert_promises, recovered, run_scenario

SEED = int(os.environ.get("AIPORT_FAULTS_SEED", "0")) or random.randrange(1, 1_000_000)


async def _run(*argv: str) -> None:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    assert await asyncio.wait_for(process.wait(), 60) == 0, argv


async def test_rabbitmq_restart_under_load(faults: FaultStack) -> None:
    rng = random.Random(f"{SEED}-rabbitmq")

    async def restart_rabbitmq() -> int:
        await asyncio.sleep(rng.uniform(1.5, 3.5))
        await _run("rabbitmqctl", "stop_app")
        await asyncio.sleep(1.0)
        await _run("rabbitmqctl", "start_app")
        return 1

    outcome = await run_scenario(
        faults, "restart RabbitMQ", [Load(rate=12, seconds=8)], restart_rabbitmq, seed=SEED
    )
    assert_promises(faults, outcome)
    assert faults.stack.exited() == []
    await recovered(faults)


async def test_postgresql_restart_under_load(faults: FaultStack) -> None:
    rng = random.Random(f"{SEED}-postgresql")
    version = sorted(os.listdir("/etc/postgresql"))[-1]

    async def restart_postgresql() -> int:
        await asyncio.sleep(rng.uniform(1.5, 3.5))
        await _run("pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart")
        return 1

    outcome = await run_scenario(
        faults, "restart PostgreSQL", [Load(rate=12, seconds=8)], restart_postgresql, seed=SEED
    )
    assert_promises(faults, outcome)
    assert faults.stack.exited() == []
    await recovered(faults)
