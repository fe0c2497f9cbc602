"""Keys and money through the whole stack: repeated bad keys are slowed down,
no key or upstream credential reaches a log or an error body, and 1,000
concurrent spends on one account never overdraw it and sum exactly."""

from __future__ import annotations

import asyncio
import random
import secrets
import string
import time
from collections import Counter
from typing import Any, cast

import grpc
import httpx
import psycopg
import pytest
from aiport.v1 import billing_pb2, billing_pb2_grpc, job_state_pb2, job_state_pb2_grpc

from deploy.local.stack import Stack
from sandbox.png import render
from services.common import service_auth
from services.gateway import bad_keys
from tests.integration.conftest import JOB_TIMEOUT_SECONDS, NewAccount
from tests.integration.test_billing_flow import expected_cost_micros

ALPHABET = string.ascii_letters + string.digits
TERMINAL = ("done", "failed")
# Every key this module presents, good or bad: none may reach a log.
KEYS_USED: set[str] = set()


def fake_key() -> str:
    key = "aip_live_" + "".join(secrets.choice(ALPHABET) for _ in range(32))
    KEYS_USED.add(key)
    return key


def db(stack: Stack) -> psycopg.Connection[Any]:
    url = stack.config.database_url.replace("postgresql+psycopg://", "postgresql://")
    return psycopg.connect(url, autocommit=True)


def error_of(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"].startswith("application/json"), response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


# -- repeated bad keys ---------------------------------------------------------


def test_repeated_bad_keys_get_429_quickly_and_good_keys_still_work(
    base_url: str, new_account: NewAccount
) -> None:
    good = new_account("1000")
    KEYS_USED.add(good.api_key)
    bad = fake_key()
    statuses: list[int] = []
    with httpx.Client(base_url=base_url, timeout=10) as http:
        for _ in range(15):
            started = time.monotonic()
            response = http.get("/v1/balance", headers={"Authorization": f"Bearer {bad}"})
            elapsed = time.monotonic() - started
            statuses.append(response.status_code)
            error = error_of(response)
            if response.status_code == 429:
                assert error["type"] == "rate_limit_error"
                assert error["code"] == "rate_limit_exceeded"
                assert "Retry after" in error["message"]
                # Retrying later is right: no x-should-retry: false.
                assert response.headers.get("x-should-retry") != "false"
                assert elapsed < 1.0
            else:
                assert response.status_code == 401, response.text
            assert bad not in response.text
        assert statuses == [401] * bad_keys.KEY_THRESHOLD + [429] * (15 - bad_keys.KEY_THRESHOLD)
        # Paid calls go through the same limiter (authorize_hold).
        locked = http.post(
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {bad}"},
            json={"model": "deepseek-v4-flash", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert locked.status_code == 429, locked.text
        # Everyone comes from 127.0.0.1 through Envoy: a valid key is not locked
        # out by someone else's bad key, and another bad key is a plain 401.
        ok = http.get("/v1/balance", headers={"Authorization": f"Bearer {good.api_key}"})
        assert ok.status_code == 200, ok.text
        other = http.get("/v1/balance", headers={"Authorization": f"Bearer {fake_key()}"})
        assert other.status_code == 401, other.text


FLOOD = 150


def _from(client: str, key: str) -> dict[str, str]:
    """Headers of a request from `client`: the stack's edge trusts one hop of
    X-Forwarded-For (a load balancer in front), so this names the client."""
    return {"Authorization": f"Bearer {key}", "X-Forwarded-For": client}


def test_a_bad_key_flood_from_one_client_never_refuses_a_valid_key(
    base_url: str, new_account: NewAccount
) -> None:
    attacker, other = "203.0.113.7", "198.51.100.20"
    bystander = new_account("1000")  # created before the flood, never used yet
    KEYS_USED.add(bystander.api_key)
    statuses: Counter[int] = Counter()
    with httpx.Client(base_url=base_url, timeout=10) as http:
        for _ in range(FLOOD):
            response = http.get("/v1/balance", headers=_from(attacker, fake_key()))
            statuses[response.status_code] += 1
            assert response.status_code in (401, 429), response.text
        # The attacker's client is throttled: well-formed bad keys get 429 with retry-after.
        assert statuses[429] > 0, statuses
        locked = http.get("/v1/balance", headers=_from(attacker, fake_key()))
        assert locked.status_code == 429, locked.text
        assert error_of(locked)["code"] == "rate_limit_exceeded"
        assert int(locked.headers["retry-after"]) >= 1
        # A fresh valid key (created after the flood) works from the attacker's
        # address and from anyone else's; so does an older key never used before.
        fresh = new_account("1000")
        KEYS_USED.add(fresh.api_key)
        for client in (attacker, other):
            for account in (fresh, bystander):
                ok = http.get("/v1/balance", headers=_from(client, account.api_key))
                assert ok.status_code == 200, (client, ok.text)
        # Paid calls too (authorize_hold), from the throttled client.
        chat = http.post(
            "/v1/chat/completions",
            headers=_from(attacker, fresh.api_key),
            json={"model": "deepseek-v4-flash", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert chat.status_code == 200, chat.text
        # Another client's bad key is a plain 401: only the attacker is throttled.
        other_bad = http.get("/v1/balance", headers=_from(other, fake_key()))
        assert other_bad.status_code == 401, other_bad.text
        # A remote client's own request id is still kept (README: One request id).
        tagged = http.get(
            "/v1/balance",
            headers={**_from(other, fresh.api_key), "x-request-id": "flood-check-1"},
        )
        assert tagged.headers["x-request-id"] == "flood-check-1"
        # A client cannot pick its address past the trusted hop: a spoofed
        # left-hand entry is ignored, so the attacker stays throttled.
        spoofed = http.get(
            "/v1/balance",
            headers={
                "Authorization": f"Bearer {fake_key()}",
                "X-Forwarded-For": f"{other}, {attacker}",
                "X-Aiport-Client-Address": other,
            },
        )
        assert spoofed.status_code == 429, spoofed.text


# -- service identity: billing needs a caller's token ---------------------------


def test_billing_refuses_calls_without_the_callers_service_token(
    stack: Stack, new_account: NewAccount, billing: billing_pb2_grpc.BillingStub
) -> None:
    account = new_account("1000")
    before = billing.GetAccountBalance(
        billing_pb2.GetAccountBalanceRequest(account_id=account.account_id)
    ).balance_micros
    gateway_token = stack.config.service_tokens["gateway"]
    refusals = {
        (): grpc.StatusCode.UNAUTHENTICATED,
        ((service_auth.TOKEN_HEADER, secrets.token_urlsafe(32)),): grpc.StatusCode.UNAUTHENTICATED,
        # A compromised gateway still cannot mint money.
        ((service_auth.TOKEN_HEADER, gateway_token),): grpc.StatusCode.PERMISSION_DENIED,
    }
    with grpc.insecure_channel(stack.config.billing_addr) as chan:
        raw = billing_pb2_grpc.BillingStub(chan)
        for metadata, code in refusals.items():
            with pytest.raises(grpc.RpcError) as refused:
                raw.TopUp(
                    billing_pb2.TopUpRequest(account_id=account.account_id, amount_micros=10**12),
                    metadata=metadata,
                    timeout=10,
                )
            assert cast(grpc.Call, refused.value).code() == code
            with pytest.raises(grpc.RpcError):
                raw.CreateAccount(billing_pb2.CreateAccountRequest(name="x"), metadata=metadata)
    after = billing.GetAccountBalance(
        billing_pb2.GetAccountBalanceRequest(account_id=account.account_id)
    ).balance_micros
    assert after == before
    # Jobs' JobState (which decides whose hold a job captures) likewise.
    worker_token = stack.config.jobs_tokens["worker"]
    with grpc.insecure_channel(stack.config.dial_addr("jobs")) as chan:
        job_state = job_state_pb2_grpc.JobStateStub(chan)
        for metadata, code in {
            (): grpc.StatusCode.UNAUTHENTICATED,
            ((service_auth.TOKEN_HEADER, gateway_token),): grpc.StatusCode.UNAUTHENTICATED,
            ((service_auth.TOKEN_HEADER, worker_token),): grpc.StatusCode.PERMISSION_DENIED,
        }.items():
            with pytest.raises(grpc.RpcError) as refused:
                job_state.CreateJob(job_state_pb2.CreateJobRequest(), metadata=metadata, timeout=10)
            assert cast(grpc.Call, refused.value).code() == code
    # Each process got only the token it needs; the public paths work with them.
    assert stack.config.env("gateway")["AIPORT_SERVICE_TOKEN"] == gateway_token
    assert "AIPORT_SERVICE_TOKEN" not in stack.config.env("providers")
    assert "AIPORT_JOBS_TOKEN" not in stack.config.env("providers")
    assert stack.config.env("worker-image")["AIPORT_JOBS_TOKEN"] == worker_token
    assert "AIPORT_SERVICE_TOKEN" not in stack.config.env("worker-image")
    assert not any(k.startswith("AIPORT_SERVICE_TOKEN_") for k in stack.config.env("gateway"))
    with httpx.Client(base_url=stack.config.base_url, timeout=10) as http:
        ok = http.get("/v1/balance", headers={"Authorization": f"Bearer {account.api_key}"})
    assert ok.status_code == 200, ok.text


# -- money: 1,000 concurrent spends on one account ------------------------------

SPENDS = 1000
IMAGE_SPENDS = 250
IMAGE_PRICE_IDR = 700  # gpt-image-2 at 1k (config/catalog.yaml)
AFFORDABLE_IMAGES = 40
CONNECTIONS = 64


async def _spend(
    http: httpx.AsyncClient, kind: str, index: int
) -> tuple[str, int, dict[str, Any], str]:
    if kind in ("chat", "bigchat"):
        # A big max_tokens holds ~150 IDR for a capture of a few micros: holds compete.
        response = await http.post(
            "/v1/chat/completions",
            json={
                "model": "deepseek-v4-flash",
                "max_tokens": 8192 if kind == "bigchat" else 16,
                "messages": [{"role": "user", "content": f"spend {index} [sim:tokens=5]"}],
            },
        )
    else:
        response = await http.post(
            "/v1/image/generate",
            json={"model": "gpt-image-2", "resolution": "1k", "prompt": f"spend {index}"},
        )
    body: dict[str, Any] = response.json()
    kind = "image" if kind == "image" else "chat"
    return kind, response.status_code, body, response.headers.get("x-request-id", "")


async def _spend_all(base_url: str, api_key: str, kinds: list[str]) -> list[Any]:
    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    async with httpx.AsyncClient(
        base_url=base_url,
        headers={"Authorization": f"Bearer {api_key}"},
        limits=limits,
        timeout=httpx.Timeout(30, pool=60),
    ) as http:
        return await asyncio.wait_for(
            asyncio.gather(*(_spend(http, kind, i) for i, kind in enumerate(kinds))),
            timeout=60,
        )


def test_1000_concurrent_spends_never_overdraw_and_sum_exactly(
    stack: Stack, base_url: str, new_account: NewAccount, billing: billing_pb2_grpc.BillingStub
) -> None:
    # Enough for AFFORDABLE_IMAGES images and the chats beside them, not for all.
    initial_idr = AFFORDABLE_IMAGES * IMAGE_PRICE_IDR + 100
    account = new_account(str(initial_idr))
    KEYS_USED.add(account.api_key)
    initial = initial_idr * 1_000_000
    chats = SPENDS - IMAGE_SPENDS
    kinds = ["image"] * IMAGE_SPENDS + ["bigchat"] * (chats // 3) + ["chat"] * (chats - chats // 3)
    random.Random(6).shuffle(kinds)
    started = time.monotonic()
    results = asyncio.run(_spend_all(base_url, account.api_key, kinds))
    spend_seconds = time.monotonic() - started

    by_status = Counter((kind, status) for kind, status, _, _ in results)
    unexpected = {k: n for k, n in by_status.items() if k[1] not in (200, 202, 402, 429)}
    assert unexpected == {}, f"unexpected statuses: {by_status}"
    chats_ok = [(body, rid) for kind, status, body, rid in results if status == 200]
    jobs_ok = [body["job_id"] for kind, status, body, _ in results if status == 202]
    refusals = [(kind, status, body) for kind, status, body, _ in results if status in (402, 429)]
    assert len(chats_ok) + len(jobs_ok) + len(refusals) == SPENDS
    assert all(kind == "chat" for kind, status, _, _ in results if status == 200)
    assert all(kind == "image" for kind, status, _, _ in results if status == 202)
    for kind, status, body in refusals:
        expected = "insufficient_quota" if kind == "chat" else "insufficient_balance"
        assert (status, body["error"]["code"]) == ((429 if kind == "chat" else 402), expected)
    # The balance covered only part of the load.
    assert refusals and chats_ok and jobs_ok
    assert AFFORDABLE_IMAGES // 2 <= len(jobs_ok)

    # Every accepted job ends done or failed and is settled (bounded wait).
    with db(stack) as conn:
        deadline = time.monotonic() + 3 * JOB_TIMEOUT_SECONDS
        while True:
            rows = conn.execute(
                "SELECT id, status, settled_at IS NOT NULL, hold_id FROM jobs.jobs"
                " WHERE account_id = %s",
                (account.account_id,),
            ).fetchall()
            settled = all(done for _, _, done, _ in rows)
            if settled or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert sorted(r[0] for r in rows) == sorted(jobs_ok)
        assert [r for r in rows if r[1] not in TERMINAL or not r[2]] == []

        # Every 2xx chat's hold was captured exactly once, at the usage price.
        chat_costs = 0
        prices: dict[tuple[int, ...], int] = {}
        for body, request_id in chats_ok:
            assert request_id
            # Holds are keyed by a gateway nonce; the request id is in the description.
            holds = conn.execute(
                "SELECT id, status, captured_micros FROM billing.holds"
                " WHERE account_id = %s AND description LIKE %s",
                (account.account_id, f"chat % {request_id}"),
            ).fetchall()
            assert len(holds) == 1 and holds[0][1] == "captured", holds
            usage = body["usage"]
            shape = (
                usage["prompt_tokens"],
                usage["prompt_tokens_details"]["cached_tokens"],
                usage["completion_tokens"],
            )
            if shape not in prices:
                prices[shape] = expected_cost_micros(base_url, "deepseek-v4-flash", usage)
            cost = prices[shape]
            assert holds[0][2] == cost
            entries = conn.execute(
                "SELECT amount_micros FROM billing.ledger_entries WHERE hold_id = %s",
                (holds[0][0],),
            ).fetchall()
            assert entries == ([(-cost,)] if cost else [])
            chat_costs += cost

        # Each job hold is settled once: at most one capture entry per hold.
        job_holds = [r[3] for r in rows]
        doubled = conn.execute(
            "SELECT hold_id, count(*) FROM billing.ledger_entries WHERE hold_id = ANY(%s)"
            " GROUP BY hold_id HAVING count(*) > 1",
            (job_holds,),
        ).fetchall()
        assert doubled == []
        open_holds = conn.execute(
            "SELECT count(*) FROM billing.holds WHERE account_id = %s AND status = 'open'",
            (account.account_id,),
        ).fetchone()
        assert open_holds == (0,)
        ledger_count, ledger_total, captures = conn.execute(
            "SELECT count(*), COALESCE(SUM(amount_micros), 0),"
            " COALESCE(SUM(-amount_micros) FILTER (WHERE kind = 'capture'), 0)"
            " FROM billing.ledger_entries WHERE account_id = %s",
            (account.account_id,),
        ).fetchone() or (0, 0, 0)
        job_captures = conn.execute(
            "SELECT COALESCE(SUM(captured_micros), 0) FROM billing.holds WHERE id = ANY(%s)",
            (job_holds,),
        ).fetchone()

    reply = billing.GetAccountBalance(
        billing_pb2.GetAccountBalanceRequest(account_id=account.account_id)
    )
    balance, held = int(reply.balance_micros), int(reply.held_micros)
    # Never overdrawn, nothing still held, and the money sums exactly.
    assert balance >= 0 and held == 0 and balance - held >= 0
    assert balance == initial - captures
    assert ledger_total == balance
    assert job_captures is not None and captures == chat_costs + int(job_captures[0])
    # The public ledger agrees, when one page holds it all.
    if ledger_count <= 1000:
        page = billing.ListLedger(
            billing_pb2.ListLedgerRequest(account_id=account.account_id, limit=1000)
        )
        assert len(page.entries) == ledger_count
        assert sum(e.amount_micros for e in page.entries) == balance
    print(
        f"\n1000 spends in {spend_seconds:.1f}s: {len(chats_ok)} chats,"
        f" {len(jobs_ok)} jobs, {len(refusals)} refused; {dict(by_status)}"
    )


# -- no secret in any log or error body -----------------------------------------


def test_no_key_or_upstream_credential_in_logs_or_error_bodies(
    stack: Stack, base_url: str, new_account: NewAccount
) -> None:
    account = new_account("100000")
    KEYS_USED.add(account.api_key)
    upstream = stack.config.sandbox_api_key
    auth = {"Authorization": f"Bearer {account.api_key}"}
    bodies: list[str] = []
    with httpx.Client(base_url=base_url, timeout=30) as http:
        # The upstream refusing our credential: its error must not echo the key.
        failing = http.post(
            "/v1/chat/completions",
            headers=auth,
            json={
                "model": "deepseek-v4-flash",
                "messages": [{"role": "user", "content": "boom [sim:status=401]"}],
            },
        )
        assert failing.status_code >= 400
        bodies.append(failing.text)
        chat = http.post(
            "/v1/chat/completions",
            headers=auth,
            json={
                "model": "deepseek-v4-flash",
                "messages": [{"role": "user", "content": "hi [sim:tokens=3]"}],
            },
        )
        assert chat.status_code == 200, chat.text
        uploaded = http.post(
            "/v1/image/upload",
            headers=auth,
            files={"file": ("ref.png", render(64, 64, "keys"), "image/png")},
        )
        assert uploaded.status_code == 200, uploaded.text
        job = http.post("/v1/image/generate", headers=auth, json={"prompt": "a key-less log"})
        assert job.status_code == 202, job.text
        job_id = job.json()["job_id"]
        deadline = time.monotonic() + 2 * JOB_TIMEOUT_SECONDS
        while True:
            polled = http.get(f"/v1/jobs/{job_id}", headers=auth)
            assert polled.status_code == 200, polled.text
            if polled.json()["status"] in TERMINAL or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert polled.json()["status"] in TERMINAL
        # Error paths that hold a secret in the request: wrong keys, the upstream's
        # own key presented as ours, a key in a malformed header, a failing upstream.
        for headers in (
            {"Authorization": f"Bearer {fake_key()}"},
            {"Authorization": f"Bearer {upstream}"},
            {"Authorization": f"Basic {account.api_key}"},
            {"Authorization": f"Bearer {account.api_key}x"},
        ):
            for response in (
                http.get("/v1/balance", headers=headers),
                http.post("/v1/image/generate", headers=headers, json={"prompt": "x"}),
            ):
                assert response.status_code == 401, response.text
                error_of(response)
                bodies.append(response.text)
        KEYS_USED.add(account.api_key + "x")
        bad_field = http.post(
            "/v1/chat/completions",
            headers=auth,
            json={"model": account.api_key, "messages": [{"role": "user", "content": "hi"}]},
        )
        assert bad_field.status_code in (400, 404)
        # Echoing the caller's own field back is fine; it must not be in a log.
        for response in (chat, uploaded, job, polled):
            bodies.append(response.text)
    secrets_used = sorted(KEYS_USED | {upstream})
    for body in bodies:
        for secret in secrets_used:
            assert secret not in body, f"a secret appears in a response: {body[:200]}"
    time.sleep(0.5)  # let the services flush their last lines
    checked = 0
    for name, process in stack.processes.items():
        if name == "sandbox":  # the upstream itself: it is given the upstream key
            continue
        text = process.log_path.read_text(encoding="utf-8", errors="replace")
        checked += 1
        for secret in secrets_used:
            assert secret not in text, f"{name}'s log contains a secret"
    assert checked >= 4
