"""Run one fault scenario under load, let it settle, check the promises and
return the figures for the summary table."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg

from tests.faults.conftest import HOLD_TTL_SECONDS, JOB_TIMEOUT_SECONDS, SUMMARY, FaultStack
from tests.faults.load import CHAT_MODEL, TERMINAL, Driver, Load, LoadResult, Record
from tests.integration.conftest import assert_ledger_invariants

Fault = Callable[[], Awaitable[int]]  # injects its faults, returns how many


@dataclass
class Outcome:
    name: str
    load: LoadResult
    drivers: list[Driver]
    faults: int
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)  # job id -> last poll
    lost: list[str] = field(default_factory=list)
    money: list[tuple[Any, ...]] = field(default_factory=list)
    double: list[tuple[Any, ...]] = field(default_factory=list)
    expired_holds: int = 0

    @property
    def records(self) -> list[Record]:
        return self.load.records

    def errors(self, predicate: Callable[[Record], bool]) -> list[Record]:
        return [r for r in self.records if predicate(r)]


async def poll_until_terminal(
    base_url: str, accepted: list[tuple[str, str]], seconds: float
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Poll each accepted job until done or failed; those that never get
    there (or vanish) within the bound are lost."""
    jobs: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        pending = list(accepted)
        while pending and time.monotonic() < deadline:
            still: list[tuple[str, str]] = []
            for key, job_id in pending:
                try:
                    response = await client.get(
                        f"/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"}
                    )
                except httpx.HTTPError:
                    still.append((key, job_id))
                    continue
                if response.status_code == 200:
                    jobs[job_id] = response.json()
                    if jobs[job_id]["status"] in TERMINAL:
                        continue
                else:
                    jobs[job_id] = {"status": f"http {response.status_code}"}
                still.append((key, job_id))
            pending = still
            if pending:
                await asyncio.sleep(0.5)
    return jobs, [job_id for _, job_id in pending]


def wait_settled(conninfo: str, seconds: float) -> None:
    """Until no hold is open and every finished job is settled (bounded)."""
    deadline = time.monotonic() + seconds
    with psycopg.connect(conninfo, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM billing.holds WHERE status = 'open'),"
                " (SELECT count(*) FROM jobs.jobs WHERE settled_at IS NULL)"
            ).fetchone()
            if row == (0, 0):
                return
            time.sleep(0.3)


MONEY_SQL = """
SELECT j.id, j.status, j.actual_cost_micros, h.status, h.captured_micros,
       (SELECT count(*) FROM billing.ledger_entries e WHERE e.hold_id = j.hold_id),
       (SELECT COALESCE(-SUM(e.amount_micros), 0) FROM billing.ledger_entries e
         WHERE e.hold_id = j.hold_id)
FROM jobs.jobs j LEFT JOIN billing.holds h ON h.id = j.hold_id
WHERE j.id = ANY(%s)
"""


def _money_violations(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """A done job is captured exactly once for its actual cost; a failed job is
    refunded exactly once (its hold released, nothing captured)."""
    bad = []
    for job_id, status, actual, hold_status, captured, entries, charged in rows:
        if status == "done":
            ok = hold_status == "captured" and entries == 1 and charged == captured == actual
        elif status == "failed":
            ok = hold_status in ("released", "expired") and entries == 0 and charged == 0
        else:
            ok = False
        if not ok:
            bad.append((job_id, status, actual, hold_status, captured, entries, charged))
    return bad


async def recovered(faults: FaultStack) -> None:
    """Without any manual step, a fresh chat and a fresh job succeed."""
    key = faults.api_keys[0]
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=faults.base_url, timeout=15, headers=headers) as c:
        deadline = time.monotonic() + 25
        while True:  # a restarted service may need a moment to be dialled again
            chat = await c.post(
                "/v1/chat/completions",
                json={
                    "model": CHAT_MODEL,
                    "max_tokens": 8,
                    "messages": [{"role": "user", "content": "hi"}],
                },
            )
            if chat.status_code == 200 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        assert chat.status_code == 200, chat.text
        # A fresh job succeeds. A route's circuit breaker may still be cooling
        # down after an upstream storm (jobs then fail fast and are refunded):
        # retry for a bounded time, as a client would.
        job: dict[str, Any] = {}
        while True:
            created = await c.post("/v1/image/generate", json={"prompt": "recovered"})
            if created.status_code == 503 and time.monotonic() < deadline:
                # A prompt "try again" while a connection to the broker or a
                # service is re-established: retry, as a client would.
                await asyncio.sleep(0.5)
                continue
            assert created.status_code == 202, created.text
            job_id = created.json()["job_id"]
            jobs, lost = await poll_until_terminal(faults.base_url, [(key, job_id)], 30)
            assert not lost, jobs
            job = jobs[job_id]
            if job["status"] == "done" or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        assert job["status"] == "done", job


async def run_scenario(
    faults: FaultStack,
    name: str,
    loads: list[Load],
    fault: Fault | None = None,
    seed: int = 0,
) -> Outcome:
    with psycopg.connect(faults.conninfo, autocommit=True) as conn:
        since = conn.execute("SELECT now()").fetchone()
    assert since is not None
    drivers = [
        Driver(faults.base_url, faults.api_keys, load, seed + i) for i, load in enumerate(loads)
    ]

    async def no_fault() -> int:
        return 0

    runs = asyncio.gather(*(d.run() for d in drivers))
    injected, _ = await asyncio.gather((fault or no_fault)(), runs)
    result = LoadResult([r for d in drivers for r in d.result.records])
    outcome = Outcome(name, result, drivers, injected)
    accepted = [a for d in drivers for a in d.accepted]
    outcome.jobs, outcome.lost = await poll_until_terminal(
        faults.base_url, accepted, JOB_TIMEOUT_SECONDS + 20
    )
    await asyncio.to_thread(wait_settled, faults.conninfo, HOLD_TTL_SECONDS + 15)
    with psycopg.connect(faults.conninfo, autocommit=True) as conn:
        rows = conn.execute(MONEY_SQL, ([j for _, j in accepted],)).fetchall()
        outcome.money = _money_violations(rows)
        outcome.double = conn.execute(
            "SELECT hold_id, count(*) FROM billing.ledger_entries"
            " WHERE kind = 'capture' GROUP BY hold_id HAVING count(*) > 1"
        ).fetchall()
        expired = conn.execute(
            "SELECT count(*) FROM billing.holds WHERE status = 'expired' AND created_at >= %s",
            (since[0],),
        ).fetchone()
        outcome.expired_holds = int(expired[0]) if expired else 0
        refunded = conn.execute(
            "SELECT count(*) FROM jobs.jobs j JOIN billing.holds h ON h.id = j.hold_id"
            " WHERE j.id = ANY(%s) AND j.status = 'failed' AND h.status <> 'captured'",
            ([j for _, j in accepted],),
        ).fetchone()
    done = sum(1 for j in outcome.jobs.values() if j.get("status") == "done")
    failed = sum(1 for j in outcome.jobs.values() if j.get("status") == "failed")
    recs = result.records
    SUMMARY.append(
        {
            "scenario": name,
            "requests": len(recs),
            "faults": injected,
            "accepted": len(accepted),
            "done": done,
            "failed": failed,
            "refunded": refunded[0] if refunded else 0,
            "lost": len(outcome.lost),
            "double": len(outcome.double),
            "5xx": sum(1 for r in recs if r.status >= 500),
            "500": sum(1 for r in recs if r.status == 500),
            "bad_body": sum(1 for r in recs if r.bad_body),
            "hangs": sum(1 for r in recs if r.timed_out),
            "cut_streams": sum(
                1
                for r in recs
                if r.op == "stream" and (r.status == 0 or r.stream_complete is False)
            ),
            "expired_holds": outcome.expired_holds,
            "slowest_error": f"{max((r.latency for r in recs if r.status >= 400), default=0):.2f}",
            "codes": " ".join(
                f"{code}×{n}"
                for code, n in sorted(Counter(r.status for r in recs if r.status >= 400).items())
            ),
        }
    )
    return outcome


def assert_promises(faults: FaultStack, outcome: Outcome, allow_timeouts: bool = False) -> None:
    """What every scenario must keep, whatever the fault."""
    assert outcome.lost == [], (
        f"jobs lost or stuck: {[(j, outcome.jobs.get(j)) for j in outcome.lost]}"
    )
    assert outcome.money == [], f"jobs charged or refunded wrongly: {outcome.money}"
    assert outcome.double == [], f"holds captured more than once: {outcome.double}"
    internal = outcome.errors(lambda r: r.status == 500)
    assert internal == [], f"500s: {[(r.op, r.detail) for r in internal]}"
    shapes = outcome.errors(lambda r: r.bad_body)
    assert shapes == [], (
        "errors not in our JSON shape: "
        f"{[(r.op, r.status, r.content_type, r.detail) for r in shapes]}"
    )
    if not allow_timeouts:
        hung = outcome.errors(lambda r: r.timed_out)
        assert hung == [], (
            f"requests hung past the client timeout: {[(r.op, r.latency) for r in hung]}"
        )
    # A non-streamed request always gets an HTTP answer from the edge, even
    # when a service behind it is down (streams may be cut mid-way).
    dropped = outcome.errors(lambda r: r.status == 0 and not r.timed_out and r.op != "stream")
    assert dropped == [], f"no HTTP response: {[(r.op, r.detail) for r in dropped]}"
    assert_ledger_invariants(faults.url)
