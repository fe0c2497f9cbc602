"""A key's developer controls through the whole stack (Envoy, gateway,
billing): spend caps hold under 100 parallel calls to the µIDR and refuse with
429 (text) or 402 (jobs) `budget_exceeded`; a model off the allowlist is 403; an
expired key is 401; aiportctl and the keys API set every control."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from typing import Any

import httpx
import openai
import psycopg
from aiport.v1 import billing_pb2, billing_pb2_grpc

from deploy.local.stack import Stack
from tests.integration.conftest import Account, NewAccount

MODEL = "deepseek-v4-flash"
PARALLEL = 100


def aiportctl(stack: Stack, *args: str) -> dict[str, Any]:
    """The real operator CLI against the stack's billing, as an operator runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIPORT_SERVICE_TOKEN")}
    env |= {
        "AIPORT_BILLING_ADDR": stack.config.billing_addr,
        "AIPORT_SERVICE_TOKEN": stack.config.admin_token,
    }
    done = subprocess.run(
        [sys.executable, "-m", "services.billing.cli", *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, (done.stdout, done.stderr)
    body: dict[str, Any] = json.loads(done.stdout)
    return body


def db(stack: Stack) -> psycopg.Connection[Any]:
    url = stack.config.database_url.replace("postgresql+psycopg://", "postgresql://")
    return psycopg.connect(url, autocommit=True)


def counted_by_key(stack: Stack, key_id: str) -> tuple[int, int, int]:
    """What the key's holds count (open amounts + captures), how many are still
    open, and the key's own daily counter."""
    with db(stack) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(CASE status WHEN 'open' THEN amount_micros"
            " WHEN 'captured' THEN captured_micros ELSE 0 END), 0),"
            " count(*) FILTER (WHERE status = 'open'),"
            " (SELECT spent_day_micros FROM billing.api_keys WHERE id = %(k)s)"
            " FROM billing.holds WHERE key_id = %(k)s",
            {"k": key_id},
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def error_of(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def new_key(billing: billing_pb2_grpc.BillingStub, account: Account, **settings: Any) -> Any:
    return billing.CreateApiKey(
        billing_pb2.CreateApiKeyRequest(
            account_id=account.account_id, settings=billing_pb2.ApiKeySettings(**settings)
        )
    )


def test_100_parallel_chats_never_pass_a_daily_cap(
    stack: Stack, base_url: str, new_account: NewAccount, billing: billing_pb2_grpc.BillingStub
) -> None:
    account = new_account("100000")
    # What one such call holds: measured with the account's uncapped key.
    sdk = openai.OpenAI(base_url=f"{base_url}/v1", api_key=account.api_key, max_retries=0)
    sdk.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=16
    )
    with db(stack) as conn:
        row = conn.execute(
            "SELECT max(amount_micros) FROM billing.holds WHERE key_id = %s", (account.key_id,)
        ).fetchone()
    assert row is not None
    held = int(row[0])
    cap_micros = 5 * held + held // 2  # room for five worst cases at once, not six
    cap_idr = f"{cap_micros // 1_000_000}.{cap_micros % 1_000_000:06d}"
    capped = new_key(billing, account)
    shown = aiportctl(stack, "key", "set", capped.key_id, "--daily-cap", cap_idr)
    assert shown["daily_cap_idr"] is not None

    async def one(client: openai.AsyncOpenAI) -> tuple[int, dict[str, Any] | None]:
        try:
            await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=16
            )
        except openai.APIStatusError as exc:
            return exc.status_code, exc.response.json()["error"]
        return 200, None

    seen: list[int] = []

    async def watch(done: asyncio.Event) -> None:
        """What the key's holds count, sampled while the calls run."""
        while not done.is_set():
            seen.append((await asyncio.to_thread(counted_by_key, stack, capped.key_id))[0])
            await asyncio.sleep(0.02)

    async def all_at_once() -> list[tuple[int, dict[str, Any] | None]]:
        client = openai.AsyncOpenAI(
            base_url=f"{base_url}/v1", api_key=capped.api_key, max_retries=0, timeout=60
        )
        done = asyncio.Event()
        watcher = asyncio.create_task(watch(done))
        async with client:
            results = await asyncio.gather(*(one(client) for _ in range(PARALLEL)))
        done.set()
        await watcher
        return results

    results = asyncio.run(all_at_once())
    # At no moment did open holds plus captures pass the cap.
    assert seen and max(seen) <= cap_micros, (max(seen), cap_micros)
    ok = [r for r in results if r[0] == 200]
    refused = [error for status, error in results if status != 200]
    assert len(ok) >= 5, results
    assert refused, "the cap never bound"
    for status, error in results:
        if status != 200:
            assert status == 429 and error is not None, (status, error)
            assert (error["type"], error["code"]) == ("budget_exceeded", "budget_exceeded")
            assert "daily spend cap" in error["message"] and "resets at" in error["message"]
    # Settled (captures land just after the answers), and never past the cap.
    for _ in range(50):
        counted, still_open, counter = counted_by_key(stack, capped.key_id)
        if still_open == 0:
            break
        asyncio.run(asyncio.sleep(0.2))
    assert still_open == 0
    assert counted == counter <= cap_micros
    listed = aiportctl(stack, "key", "list", account.account_id)
    mine = next(k for k in listed["keys"] if k["key_id"] == capped.key_id)
    assert mine["spent_today_idr"] == mine["spent_lifetime_idr"]


def test_a_job_over_the_cap_is_402_and_an_unlisted_model_403(
    base_url: str, new_account: NewAccount, billing: billing_pb2_grpc.BillingStub
) -> None:
    account = new_account("100000")
    tight = new_key(billing, account, lifetime_cap_micros=1)
    with httpx.Client(base_url=base_url, timeout=30) as http:
        job = http.post(
            "/v1/image/generate",
            headers={"Authorization": f"Bearer {tight.api_key}"},
            json={"prompt": "a lighthouse"},
        )
        assert job.status_code == 402, job.text
        error = error_of(job)
        assert error["code"] == "budget_exceeded"
        assert "lifetime spend cap" in error["message"]
        # Messages answers in its own shape; a client is told not to retry.
        message = http.post(
            "/v1/messages",
            headers={"x-api-key": tight.api_key, "anthropic-version": "2023-06-01"},
            json={
                "model": MODEL,
                "max_tokens": 16,
                "messages": [{"role": "user", "content": "hi"}],
            },
        )
        assert message.status_code == 429, message.text
        assert message.json()["type"] == "error"
        assert "lifetime spend cap" in message.json()["error"]["message"]
        assert message.headers.get("x-should-retry") == "false"

        listed = new_key(
            billing, account, allowed_models=billing_pb2.ModelAllowlist(models=["gpt-5.4-mini"])
        )
        chat = http.post(
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {listed.api_key}"},
            json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
        )
        assert chat.status_code == 403, chat.text
        error = error_of(chat)
        assert (error["code"], error["param"]) == ("model_not_allowed", "model")
        assert MODEL in error["message"]


def test_an_expired_key_is_401_saying_so(
    stack: Stack, base_url: str, new_account: NewAccount, billing: billing_pb2_grpc.BillingStub
) -> None:
    account = new_account("1000")
    key = new_key(billing, account)
    aiportctl(stack, "key", "set", key.key_id, "--expires", "2099-01-01")
    sdk = openai.OpenAI(base_url=f"{base_url}/v1", api_key=key.api_key, max_retries=0)
    sdk.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=8
    )
    with db(stack) as conn:
        conn.execute(
            "UPDATE billing.api_keys SET expires_at = now() - interval '1 second' WHERE id = %s",
            (key.key_id,),
        )
    try:
        sdk.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=8
        )
    except openai.AuthenticationError as exc:
        error = exc.response.json()["error"]
        assert error["code"] == "key_expired"
        assert "expired at" in error["message"]
    else:
        raise AssertionError("an expired key was accepted")


def test_aiportctl_sets_limits_that_the_principal_carries(
    stack: Stack, new_account: NewAccount, billing: billing_pb2_grpc.BillingStub
) -> None:
    account = new_account("1000")
    aiportctl(stack, "account", "limits", account.account_id, "--rpm", "600", "--concurrent", "9")
    shown = aiportctl(
        stack,
        "key",
        "set",
        account.key_id,
        "--rpm",
        "20",
        "--concurrent",
        "2",
        "--monthly-cap",
        "5000",
        "--models",
        "gpt-5.4-mini,deepseek-v4-flash",
    )
    assert shown["monthly_cap_idr"] == "5000"
    assert shown["allowed_models"] == ["gpt-5.4-mini", "deepseek-v4-flash"]
    principal = billing.Authenticate(billing_pb2.AuthenticateRequest(api_key=account.api_key))
    limits = principal.rate_limits
    assert (
        limits.key_requests_per_minute,
        limits.key_concurrent_requests,
        limits.account_requests_per_minute,
        limits.account_concurrent_requests,
    ) == (20, 2, 600, 9)


def test_the_keys_api_creates_updates_and_lists_controls(
    base_url: str, new_account: NewAccount, billing: billing_pb2_grpc.BillingStub
) -> None:
    account = new_account("1000")
    manager = billing.CreateApiKey(
        billing_pb2.CreateApiKeyRequest(
            account_id=account.account_id, scopes=["inference", "manage"]
        )
    )
    headers = {"Authorization": f"Bearer {manager.api_key}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as http:
        created = http.post(
            "/v1/keys",
            json={
                "name": "ci",
                "spend_caps": {"daily_idr": "2500", "monthly_idr": "50000"},
                "allowed_models": [MODEL],
                "expires_at": 4_000_000_000,
                "rate_limits": {"requests_per_minute": 30},
            },
        )
        assert created.status_code == 200, created.text
        key = created.json()
        assert key["spend_caps"] == {
            "daily_idr": "2500",
            "monthly_idr": "50000",
            "lifetime_idr": None,
        }
        assert key["allowed_models"] == [MODEL] and key["expires_at"] == 4_000_000_000
        assert key["rate_limits"] == {"requests_per_minute": 30, "concurrent_requests": None}
        assert key["spent"]["today_idr"] == "0" and key["spent"]["day_resets_at"] > 0

        updated = http.post(
            f"/v1/keys/{key['id']}",
            json={
                "name": "ci-2",
                "spend_caps": {"daily_idr": None, "lifetime_idr": "9000"},
                "allowed_models": None,
                "rate_limits": {"concurrent_requests": 4},
            },
        )
        assert updated.status_code == 200, updated.text
        changed = updated.json()
        assert changed["name"] == "ci-2"
        assert changed["spend_caps"] == {
            "daily_idr": None,
            "monthly_idr": "50000",
            "lifetime_idr": "9000",
        }
        assert changed["allowed_models"] is None
        assert changed["expires_at"] == 4_000_000_000  # left out: kept
        assert changed["rate_limits"] == {"requests_per_minute": 30, "concurrent_requests": 4}

        listed = http.get("/v1/keys").json()["data"]
        assert next(k for k in listed if k["id"] == key["id"]) == changed

        bad = http.post(f"/v1/keys/{key['id']}", json={"spend_caps": {"daily_idr": 5}})
        assert bad.status_code == 400, bad.text
        assert error_of(bad)["param"] == "spend_caps.daily_idr"
        # Another account's key is not found, and is left alone.
        other = new_account("0")
        foreign = http.post(f"/v1/keys/{other.key_id}", json={"name": "mine now"})
        assert foreign.status_code == 404, foreign.text
        assert error_of(foreign)["code"] == "not_found"
        # Without the manage scope: 403.
        plain = http.post(
            f"/v1/keys/{key['id']}",
            headers={"Authorization": f"Bearer {account.api_key}"},
            json={"name": "x"},
        )
        assert plain.status_code == 403, plain.text
