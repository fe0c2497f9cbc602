"""Money through the whole stack: holds, exact captures, refunds, concurrency."""

from __future__ import annotations

import asyncio
import time
from decimal import ROUND_CEILING, Decimal
from typing import Any

import httpx
import openai
import orjson
import pytest
from aiport.v1 import billing_pb2, billing_pb2_grpc

from tests.integration.conftest import Account, NewAccount


def expected_cost_micros(base_url: str, model: str, usage: dict[str, Any]) -> int:
    """The charge computed from the public price list, independently of the gateway."""
    prices = {m["model"]: m for m in httpx.get(f"{base_url}/v1/pricing").json()["data"]}
    text = prices[model]["text"]
    cached = usage["prompt_tokens_details"]["cached_tokens"]
    idr = (
        (usage["prompt_tokens"] - cached) * Decimal(text["input_per_million_tokens_idr"])
        + cached * Decimal(text["cached_input_per_million_tokens_idr"])
        + usage["completion_tokens"] * Decimal(text["output_per_million_tokens_idr"])
    ) / 1_000_000
    return int((idr * 1_000_000).to_integral_value(rounding=ROUND_CEILING))


def account_state(billing: billing_pb2_grpc.BillingStub, account_id: str) -> tuple[int, int]:
    reply = billing.GetAccountBalance(billing_pb2.GetAccountBalanceRequest(account_id=account_id))
    return int(reply.balance_micros), int(reply.held_micros)


def ledger_sum(billing: billing_pb2_grpc.BillingStub, account_id: str) -> int:
    page = billing.ListLedger(billing_pb2.ListLedgerRequest(account_id=account_id, limit=1000))
    return sum(e.amount_micros for e in page.entries)


def test_charge_matches_usage_times_price(
    base_url: str, http: httpx.Client, account: Account, billing: billing_pb2_grpc.BillingStub
) -> None:
    before, _ = account_state(billing, account.account_id)
    response = http.post(
        "/v1/chat/completions",
        json={
            "model": "deepseek-v4-flash",
            "messages": [{"role": "user", "content": "count [sim:tokens=7] [sim:cached=2]"}],
        },
    )
    assert response.status_code == 200
    usage = response.json()["usage"]
    assert usage["completion_tokens"] == 7
    assert usage["prompt_tokens_details"]["cached_tokens"] == 2
    after, held = account_state(billing, account.account_id)
    cost = expected_cost_micros(base_url, "deepseek-v4-flash", usage)
    assert cost > 0
    assert before - after == cost
    assert held == 0
    page = billing.ListLedger(billing_pb2.ListLedgerRequest(account_id=account.account_id))
    assert page.entries[0].kind == "capture"
    assert page.entries[0].amount_micros == -cost
    assert ledger_sum(billing, account.account_id) == after


def test_stream_charge_matches_its_usage_chunk(
    base_url: str, client: openai.OpenAI, account: Account, billing: billing_pb2_grpc.BillingStub
) -> None:
    before, _ = account_state(billing, account.account_id)
    chunks = list(
        client.chat.completions.create(
            model="claude-sonnet-4-6",
            messages=[{"role": "user", "content": "stream [sim:tokens=9] [sim:reasoning=4]"}],
            stream=True,
        )
    )
    usage = chunks[-1].usage
    assert usage is not None
    after, held = account_state(billing, account.account_id)
    assert before - after == expected_cost_micros(base_url, "claude-sonnet-4-6", usage.model_dump())
    assert held == 0


def prompt_cache_write_cost_micros(base_url: str, model: str, written: int) -> int:
    """What `written` prompt tokens cost beyond the input price, as a prompt-cache write,
    by the public price list (a token at N IDR per million is N µIDR)."""
    prices = {m["model"]: m for m in httpx.get(f"{base_url}/v1/pricing").json()["data"]}
    text = prices[model]["text"]
    write = Decimal(text["cache_write_per_million_tokens_idr"])
    return int(written * (write - Decimal(text["input_per_million_tokens_idr"])))


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_cache_writes_are_charged_at_the_cache_write_rate(
    base_url: str,
    http: httpx.Client,
    account: Account,
    billing: billing_pb2_grpc.BillingStub,
    stream: bool,
) -> None:
    before, _ = account_state(billing, account.account_id)
    prompt = "remember [sim:tokens=4] [sim:cached=2] [sim:cache-write=6]"
    response = http.post(
        "/v1/chat/completions",
        json={
            "model": "claude-sonnet-4-6",
            "messages": [{"role": "user", "content": prompt}],
            "stream": stream,
            **({"stream_options": {"include_usage": True}} if stream else {}),
        },
    )
    assert response.status_code == 200
    if stream:
        frames = [line[6:] for line in response.text.splitlines() if line.startswith("data: {")]
        usage = orjson.loads(frames[-1])["usage"]
    else:
        usage = response.json()["usage"]
    # The public usage is OpenAI's: cache reads shown, cache writes not.
    assert usage["prompt_tokens_details"] == {"cached_tokens": 2}
    after, held = account_state(billing, account.account_id)
    assert held == 0
    # The sandbox wrote 6 of the prompt tokens to its cache: they cost the cache-write
    # rate (1.25x input for Claude), not the input rate.
    premium = prompt_cache_write_cost_micros(base_url, "claude-sonnet-4-6", 6)
    assert premium == 6 * (61_875 - 49_500)
    assert before - after == expected_cost_micros(base_url, "claude-sonnet-4-6", usage) + premium


def test_upstream_failure_refunds_everything(
    http: httpx.Client, account: Account, billing: billing_pb2_grpc.BillingStub
) -> None:
    before = account_state(billing, account.account_id)
    for stream in (False, True):
        response = http.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "x [sim:fail]"}], "stream": stream},
        )
        assert response.status_code == 502
    assert account_state(billing, account.account_id) == before


def test_stream_broken_midway_charges_what_was_sent(
    client: openai.OpenAI, account: Account, billing: billing_pb2_grpc.BillingStub
) -> None:
    before, _ = account_state(billing, account.account_id)
    received = []
    with pytest.raises(openai.APIError) as info:
        for chunk in client.chat.completions.create(
            model="deepseek-v4-flash",
            messages=[{"role": "user", "content": "x [sim:tokens=20] [sim:fail-after=3]"}],
            stream=True,
        ):
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)
    assert len(received) == 3
    assert "mid-stream" in str(info.value.message) or "interrupted" in str(info.value.message)
    after, held = account_state(billing, account.account_id)
    assert held == 0
    # Charged for what was delivered, far less than the 20-token answer.
    assert 0 < before - after
    assert ledger_sum(billing, account.account_id) == after


def test_concurrent_calls_never_overdraw(
    base_url: str, new_account: NewAccount, billing: billing_pb2_grpc.BillingStub
) -> None:
    # Each call holds 18.288 IDR: prompt bound (16 bytes + 16 + 32 = 64 tokens at
    # 4500 IDR/M) plus max_tokens 1000 at 18000 IDR/M. Fund exactly ten of them.
    content = "hi [sim:delay=3]"
    assert len(content.encode()) == 16
    acct: Account = new_account("182.88")

    async def one(client: httpx.AsyncClient) -> int:
        response = await client.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": content}], "max_tokens": 1000},
        )
        return response.status_code

    async def burst() -> list[int]:
        async with httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {acct.api_key}"},
            timeout=60,
            limits=httpx.Limits(max_connections=60),
        ) as client:
            return await asyncio.gather(*(one(client) for _ in range(50)))

    statuses = asyncio.run(burst())
    assert statuses.count(200) == 10, statuses
    assert statuses.count(429) == 40, statuses
    balance, held = account_state(billing, acct.account_id)
    assert held == 0
    assert 0 < balance < 182_880_000
    assert ledger_sum(billing, acct.account_id) == balance


def wait_until_settled(
    billing: billing_pb2_grpc.BillingStub, account_id: str, seconds: float = 10
) -> tuple[int, int]:
    deadline = time.monotonic() + seconds
    while True:
        balance, held = account_state(billing, account_id)
        if held == 0 or time.monotonic() > deadline:
            return balance, held
        time.sleep(0.05)


def test_client_leaving_a_stream_is_charged_for_what_it_got(
    base_url: str, account: Account, billing: billing_pb2_grpc.BillingStub
) -> None:
    before, _ = account_state(billing, account.account_id)
    with httpx.Client(
        base_url=base_url, headers={"Authorization": f"Bearer {account.api_key}"}
    ) as client:
        with client.stream(
            "POST",
            "/v1/chat/completions",
            json={
                "messages": [
                    {"role": "user", "content": "x [sim:tokens=50] [sim:chunk-delay=0.2]"}
                ],
                "stream": True,
                "max_tokens": 100,
            },
        ) as response:
            seen = 0
            for line in response.iter_lines():
                if '"content"' in line:
                    seen += 1
                if seen == 2:
                    break  # hang up mid-stream
    # The upstream finishes the answer (50 chunks, 0.2 s apart), then it is charged.
    balance, held = wait_until_settled(billing, account.account_id, seconds=25)
    assert held == 0
    charged = before - balance
    # Some output was delivered, so something is charged; far less than the hold.
    assert 0 < charged < 100 * 18_000
    assert ledger_sum(billing, account.account_id) == balance


def test_client_leaving_before_output_is_charged_the_work_it_ordered(
    base_url: str, account: Account, billing: billing_pb2_grpc.BillingStub
) -> None:
    # Issue 11 item 5: the upstream call goes on and its real usage is captured.
    before, _ = account_state(billing, account.account_id)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{base_url}/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "x [sim:delay=2]"}]},
            headers={"Authorization": f"Bearer {account.api_key}"},
            timeout=httpx.Timeout(5, read=0.5),
        )
    balance, held = wait_until_settled(billing, account.account_id)
    assert held == 0
    assert before - balance > 0
    assert ledger_sum(billing, account.account_id) == balance
