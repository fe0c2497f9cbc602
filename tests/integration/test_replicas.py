"""What must hold with several replicas of every service (AIPORT_TEST_REPLICAS=2;
with one replica the same promises hold trivially): failed authentications
spread over the gateway replicas lock a key out on all of them, and jobs
spread over the worker replicas are each processed, paid for and charged once."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import grpc
import httpx
import psycopg
from aiport.v1 import account_pb2, account_pb2_grpc

from deploy.local.stack import Stack
from services.common.auth_failures import KEY_THRESHOLD
from services.gateway.errors import STATUS_HEADER
from tests.integration.conftest import REPLICAS, Account
from tests.integration.test_jobs import poll, submit

JOBS_PER_KIND = 8


def gateway_status(addr: str, api_key: str) -> int:
    """The HTTP status one gateway replica answers GetBalance with, called directly."""
    with grpc.insecure_channel(addr) as chan:
        stub = account_pb2_grpc.AccountStub(chan)
        try:
            stub.GetBalance(
                account_pb2.GetBalanceRequest(),
                metadata=(("authorization", f"Bearer {api_key}"),),
                timeout=10,
            )
        except grpc.RpcError as exc:
            # A sync call's error is also its grpc.Call: (key, value) pairs at run time.
            pairs = cast(Iterable[tuple[str, str]], cast(grpc.Call, exc).trailing_metadata())
            return int(dict(pairs)[STATUS_HEADER])
        return 200


def test_failures_spread_over_the_gateways_lock_the_key_out_on_all(
    stack: Stack, account: Account
) -> None:
    gateways = [
        f"127.0.0.1:{stack.config.port(name)}" for name in stack.config.replica_names("gateway")
    ]
    assert len(gateways) == REPLICAS
    bad = "aip_live_" + secrets.token_hex(16)
    # Round robin over the replicas: none of them alone sees the threshold.
    statuses = [gateway_status(gateways[i % len(gateways)], bad) for i in range(KEY_THRESHOLD)]
    assert statuses == [401] * KEY_THRESHOLD
    # Every replica now refuses the key, and so does the edge.
    assert [gateway_status(addr, bad) for addr in gateways] == [429] * len(gateways)
    edge = httpx.get(
        f"{stack.config.base_url}/v1/balance", headers={"Authorization": f"Bearer {bad}"}
    )
    assert edge.status_code == 429, edge.text
    # A valid key is untouched on every replica.
    assert [gateway_status(addr, account.api_key) for addr in gateways] == [200] * len(gateways)


def _db(stack: Stack) -> psycopg.Connection[Any]:
    url = stack.config.database_url.replace("postgresql+psycopg://", "postgresql://")
    return psycopg.connect(url, autocommit=True)


def test_jobs_over_the_replicas_run_and_charge_once(
    stack: Stack, http: httpx.Client, sandbox: httpx.Client
) -> None:
    tag = f"once-{time.monotonic_ns()}"
    bodies: list[tuple[str, dict[str, Any]]] = [
        ("/v1/image/generate", {"prompt": f"{tag} image {i}"}) for i in range(JOBS_PER_KIND)
    ]
    bodies += [
        ("/v1/video/generate", {"prompt": f"{tag} video {i}", "duration": 4})
        for i in range(JOBS_PER_KIND)
    ]
    with ThreadPoolExecutor(max_workers=8) as pool:
        accepted = list(pool.map(lambda pb: submit(http, pb[0], pb[1]), bodies))
        jobs = list(pool.map(lambda a: poll(http, a["job_id"], 60), accepted))
    assert [job["status"] for job in jobs] == ["done"] * len(jobs), jobs
    job_ids = [job["job_id"] for job in jobs]
    # One upstream video task per video job: no job was run twice.
    tasks = [t["prompt"] for t in sandbox.get("/_sandbox/tasks").json()]
    for i in range(JOBS_PER_KIND):
        assert tasks.count(f"{tag} video {i}") == 1
    deadline = time.monotonic() + 20
    with _db(stack) as conn:
        while time.monotonic() < deadline:
            rows = conn.execute(
                "SELECT j.id, j.attempts, j.settled_at IS NOT NULL, h.status,"
                " (SELECT count(*) FROM billing.ledger_entries e WHERE e.hold_id = j.hold_id)"
                " FROM jobs.jobs j JOIN billing.holds h ON h.id = j.hold_id"
                " WHERE j.id = ANY(%s)",
                (job_ids,),
            ).fetchall()
            if all(settled for _, _, settled, _, _ in rows):
                break
            time.sleep(0.2)
        # Each work message was taken by one worker, once; each hold captured once.
        assert sorted(r[0] for r in rows) == sorted(job_ids)
        assert [(r[1], r[2], r[3], r[4]) for r in rows] == [(1, True, "captured", 1)] * len(rows)
        # Every message in the outbox was published (by CreateJob, or once by a relay).
        unsent = conn.execute(
            "SELECT count(*) FROM jobs.outbox WHERE job_id = ANY(%s) AND published_at IS NULL",
            (job_ids,),
        ).fetchone()
    assert unsent == (0,)
    # Each job was started by exactly one worker process, and with replicas the
    # work really was spread: every worker replica ran some of it.
    started: dict[str, list[str]] = {}
    for kind in ("image", "video"):
        for name in stack.config.replica_names(f"worker-{kind}"):
            ran = jobs_started(stack.processes[name].log_path.read_text(errors="replace"))
            mine = [job_id for job_id in ran if job_id in job_ids]
            assert mine, f"{name} ran none of the jobs"
            for job_id in mine:
                started.setdefault(job_id, []).append(name)
    assert {job_id: len(names) for job_id, names in started.items()} == dict.fromkeys(job_ids, 1)


def jobs_started(log: str) -> list[str]:
    """The job ids of a worker's "job started" log lines (JSON lines)."""
    ids = []
    for line in log.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("msg") == "job started":
            ids.append(str(entry.get("job_id")))
    return ids
