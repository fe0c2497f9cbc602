"""SIGTERM drains under load, with two replicas of every service behind Envoy.

Each service in turn gets one replica SIGTERMed and restarted while plain and
streamed chats, jobs, uploads and polls keep coming, streams among them long
enough to be in flight on a gateway when it is told to stop. The promise is
stronger than for a SIGKILL: no client sees any error at all. A draining
replica reports NOT_SERVING (Envoy's health checks and our channels' client-side
health checks then send new work to the other replica), keeps serving for the
drain delay, then lets calls, streams and jobs in hand finish within the grace.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator

import pytest

from deploy.local.stack import replica_name
from tests.faults.conftest import FaultStack, fault_stack
from tests.faults.load import Load
from tests.faults.scenario import assert_promises, recovered, run_scenario

# Longer than Envoy's health check takes to see NOT_SERVING (2 checks, 1 s apart).
DRAIN_DELAY_SECONDS = 2.5
GRACE_SECONDS = 10
IN_TURN = ("gateway", "billing", "jobs", "providers", "worker-image", "worker-video", "files")
MAX_LOAD_SECONDS = 150.0


@pytest.fixture(scope="module")
def replicated() -> Iterator[FaultStack]:
    env = {
        "AIPORT_DRAIN_DELAY_SECONDS": str(DRAIN_DELAY_SECONDS),
        "AIPORT_GRACE_SECONDS": str(GRACE_SECONDS),
    }
    with fault_stack(replicas=2, extra_env=env) as stack:
        yield stack


async def test_sigterm_each_replica_in_turn_under_load_loses_nothing(
    replicated: FaultStack,
) -> None:
    stack = replicated.stack
    finished = asyncio.Event()
    steady = Load(rate=8, seconds=MAX_LOAD_SECONDS, timeout=20, until=finished)
    # ~18 frames 0.2 s apart: a few seconds in flight, well within the grace.
    streams = Load(
        rate=2,
        seconds=MAX_LOAD_SECONDS,
        timeout=20,
        chat_directive="[sim:chunk-delay=0.2]",
        directive_share=1.0,
        weights={"stream": 1.0},
        until=finished,
    )
    stopped: list[tuple[str, int | None, float]] = []  # name, exit code, seconds to exit
    gateway_terminated_at: list[float] = []

    async def sigterm_in_turn() -> int:
        try:
            await asyncio.sleep(3.0)
            for i, service in enumerate(IN_TURN):
                name = replica_name(service, 1 + i % 2)
                process = stack.processes[name]
                started = time.monotonic()
                if service == "gateway":
                    gateway_terminated_at.append(started)
                await asyncio.to_thread(stack.kill, name, signal.SIGTERM)
                stopped.append((name, process.popen.returncode, time.monotonic() - started))
                await asyncio.to_thread(stack.start_service, name)
                # Back in Envoy's and the channels' rotation before the next one goes.
                await asyncio.sleep(2.0)
        finally:
            finished.set()
        return len(IN_TURN)

    outcome = await run_scenario(
        replicated, "SIGTERM one replica of each, in turn", [steady, streams], sigterm_in_turn
    )
    assert_promises(replicated, outcome)
    assert len(stopped) == len(IN_TURN)
    for name, code, seconds in stopped:
        assert code == 0, f"{name} exited with {code} after SIGTERM"
        assert seconds < DRAIN_DELAY_SECONDS + GRACE_SECONDS + 3, (name, seconds)
    # No errors at all: every request got its answer, every stream its [DONE].
    failed = outcome.errors(lambda r: r.status == 0 or r.status >= 400)
    assert failed == [], [(r.op, r.status, r.detail) for r in failed]
    streamed = [r for r in outcome.records if r.op == "stream"]
    assert streamed and all(r.stream_complete for r in streamed)
    # Streams were in flight when the gateway replica was told to stop.
    (terminated,) = gateway_terminated_at
    spanning = [r for r in streamed if r.started < terminated < r.started + r.latency]
    assert len(spanning) >= 2, "no stream was in flight across the gateway's SIGTERM"
    assert outcome.jobs and all(j["status"] == "done" for j in outcome.jobs.values())
    assert stack.exited() == []
    await recovered(replicated)
