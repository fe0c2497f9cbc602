"""Every paid call settles its hold, whatever ends it: a client that leaves or
whose deadline passes (at any point of the call), an upstream that rate-limits.
Upstream work a departed client ordered is finished and charged at its real
usage; an upstream 429 is a retryable 429 and costs nothing."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import openai
import orjson
import pytest
from aiport.v1 import billing_pb2, billing_pb2_grpc, chat_pb2_grpc, generate_pb2_grpc
from google.api import httpbody_pb2
from openai.types.chat import ChatCompletionMessageParam

from deploy.local.stack import Stack
from tests.integration.conftest import BREAKER_COOLDOWN_SECONDS, REPLICAS, Account
from tests.integration.test_jobs import poll, state, submit

# A gRPC status the gateway may end a call with when the caller's deadline
# passes or it cancels; never INTERNAL or UNKNOWN (an HTTP 500 at the edge).
ACCEPTABLE = {
    grpc.StatusCode.OK,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
}
DEADLINES = (0.001, 0.003, 0.006, 0.01, 0.015, 0.02, 0.03, 0.05, 0.08, 0.15, 0.3, 0.8, 1.5)


@pytest.fixture(scope="module")
def gateway(stack: Stack) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(stack.config.dial_addr("gateway")) as chan:
        yield chan


def captures(billing: billing_pb2_grpc.BillingStub, account_id: str) -> list[int]:
    page = billing.ListLedger(billing_pb2.ListLedgerRequest(account_id=account_id, limit=100))
    return sorted(-e.amount_micros for e in page.entries if e.kind == "capture")


def settled(
    billing: billing_pb2_grpc.BillingStub, account_id: str, seconds: float = 20
) -> tuple[int, int]:
    """The account's (balance, held) once nothing is held any more (or the wait ends)."""
    deadline = time.monotonic() + seconds
    while True:
        balance, held = state(billing, account_id)
        if held == 0 or time.monotonic() > deadline:
            return balance, held
        time.sleep(0.2)


def body(content: str, **extra: Any) -> httpbody_pb2.HttpBody:
    data = {"model": "gpt-5.4-mini", "messages": [{"role": "user", "content": content}], **extra}
    return httpbody_pb2.HttpBody(content_type="application/json", data=orjson.dumps(data))


def chat_code(
    stub: chat_pb2_grpc.ChatStub,
    account: Account,
    request: httpbody_pb2.HttpBody,
    timeout: float | None = None,
    cancel_after: float | None = None,
) -> grpc.StatusCode:
    call = stub.CreateChatCompletion(
        request, timeout=timeout, metadata=(("authorization", f"Bearer {account.api_key}"),)
    )
    timer = threading.Timer(cancel_after, call.cancel) if cancel_after is not None else None
    if timer is not None:
        timer.start()
    try:
        for _ in call:
            pass
    except grpc.RpcError as error:
        return error.code()  # type: ignore[no-any-return]
    finally:
        if timer is not None:
            timer.cancel()
    return grpc.StatusCode.OK


def test_chat_deadline_or_cancel_at_any_point_leaves_no_hold(
    gateway: grpc.Channel, account: Account, billing: billing_pb2_grpc.BillingStub
) -> None:
    stub = chat_pb2_grpc.ChatStub(gateway)
    codes: list[tuple[str, float, grpc.StatusCode]] = []
    for stream in (False, True):
        request = body("deadline [sim:delay=0.5][sim:tokens=5]", stream=stream)
        for seconds in DEADLINES:
            codes.append(("deadline", seconds, chat_code(stub, account, request, timeout=seconds)))
        for seconds in DEADLINES[::2]:
            codes.append(
                ("cancel", seconds, chat_code(stub, account, request, cancel_after=seconds))
            )
    assert {code for _, _, code in codes} <= ACCEPTABLE, codes
    # Some calls ended early: each hold was captured (the upstream finished) or released.
    assert any(code != grpc.StatusCode.OK for _, _, code in codes)
    assert settled(billing, account.account_id)[1] == 0


def test_job_creation_deadline_at_any_point_leaves_no_hold(
    gateway: grpc.Channel, account: Account, billing: billing_pb2_grpc.BillingStub
) -> None:
    stub = generate_pb2_grpc.GenerateStub(gateway)
    request = httpbody_pb2.HttpBody(
        content_type="application/json", data=orjson.dumps({"prompt": "deadline job"})
    )
    codes = []
    for seconds in DEADLINES:
        try:
            stub.GenerateImage(
                request,
                timeout=seconds,
                metadata=(("authorization", f"Bearer {account.api_key}"),),
            )
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as error:
            codes.append(error.code())
    assert set(codes) <= ACCEPTABLE, codes
    # Jobs that were created settle their own holds when they finish.
    assert settled(billing, account.account_id, seconds=40)[1] == 0


def test_non_stream_client_leaving_is_charged_the_real_usage(
    base_url: str, client: openai.OpenAI, account: Account, billing: billing_pb2_grpc.BillingStub
) -> None:
    prompt = f"leave early {time.monotonic_ns()} [sim:delay=2]"
    payload = {"model": "gpt-5.4-mini", "messages": [{"role": "user", "content": prompt}]}
    headers = {"Authorization": f"Bearer {account.api_key}"}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{base_url}/v1/chat/completions", json=payload, headers=headers, timeout=0.7)
    # The same call to its end: the upstream's real usage, captured.
    whole = client.chat.completions.create(
        model="gpt-5.4-mini", messages=[{"role": "user", "content": prompt}]
    )
    assert whole.usage is not None and whole.usage.completion_tokens > 0
    assert settled(billing, account.account_id)[1] == 0
    charged = captures(billing, account.account_id)
    assert len(charged) == 2 and charged[0] == charged[1] > 0, charged


def test_stream_client_leaving_is_charged_the_real_usage(
    base_url: str, client: openai.OpenAI, account: Account, billing: billing_pb2_grpc.BillingStub
) -> None:
    prompt = f"leave mid-stream {time.monotonic_ns()} [sim:chunk-delay=0.2][sim:tokens=12]"
    payload = {
        "model": "gpt-5.4-mini",
        "messages": [{"role": "user", "content": prompt}],
        "stream": True,
    }
    headers = {"Authorization": f"Bearer {account.api_key}"}
    with httpx.stream(
        "POST", f"{base_url}/v1/chat/completions", json=payload, headers=headers, timeout=10
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: "):
                break  # one chunk, then the client leaves
    chunks = list(
        client.chat.completions.create(
            model="gpt-5.4-mini", messages=[{"role": "user", "content": prompt}], stream=True
        )
    )
    assert chunks[-1].usage is not None
    assert settled(billing, account.account_id)[1] == 0
    charged = captures(billing, account.account_id)
    assert len(charged) == 2 and charged[0] == charged[1] > 0, charged


@pytest.mark.parametrize("model", ["gpt-5.4-mini", "claude-sonnet-4-6", "gemini-3.1-flash-lite"])
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_rate_limit_is_a_retryable_429_and_free(
    client: openai.OpenAI,
    account: Account,
    billing: billing_pb2_grpc.BillingStub,
    model: str,
    stream: bool,
) -> None:
    before = state(billing, account.account_id)
    with pytest.raises(openai.RateLimitError) as caught:
        response = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "busy [sim:status=429][sim:retry-after=7]"}],
            stream=stream,
        )
        if stream:
            list(response)  # type: ignore[arg-type]
    error = caught.value
    assert error.status_code == 429
    assert error.code == "upstream_rate_limited"
    assert error.type == "rate_limit_error"
    assert error.response.headers["retry-after"] == "7"
    assert error.response.headers["x-should-retry"] == "true"
    assert settled(billing, account.account_id) == before


def test_rate_limit_without_retry_after_has_no_header(
    client: openai.OpenAI, account: Account, billing: billing_pb2_grpc.BillingStub
) -> None:
    before = state(billing, account.account_id)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(
            model="deepseek-v4-flash",
            messages=[{"role": "user", "content": "busy [sim:status=429]"}],
        )
    assert caught.value.code == "upstream_rate_limited"
    assert "retry-after" not in caught.value.response.headers
    assert settled(billing, account.account_id) == before


def test_rate_limited_job_fails_saying_so_and_is_refunded(
    http: httpx.Client, account: Account, billing: billing_pb2_grpc.BillingStub
) -> None:
    before = state(billing, account.account_id)
    job = poll(http, submit(http, "/v1/image/generate", {"prompt": "x [sim:status=429]"})["job_id"])
    assert job["status"] == "failed"
    assert "rate limit" in job["error_message"]
    assert job["actual_cost_idr"] == "0"
    assert settled(billing, account.account_id) == before


def test_routes_cooling_down_after_429s_still_answer_429(
    client: openai.OpenAI, account: Account, billing: billing_pb2_grpc.BillingStub
) -> None:
    before = state(billing, account.account_id)
    busy: list[ChatCompletionMessageParam] = [{"role": "user", "content": "busy [sim:status=429]"}]
    # Enough 429s on every replica to open both routes' breakers, then more.
    for _ in range(7 * REPLICAS):
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(model="gpt-5.4", messages=busy)
        assert caught.value.code == "upstream_rate_limited"
    # Answered from the open breakers: the wait is the rest of their cooldown.
    assert 1 <= int(caught.value.response.headers["retry-after"]) <= BREAKER_COOLDOWN_SECONDS
    assert settled(billing, account.account_id) == before
    # The cooldown over, a probe that succeeds closes the breakers again.
    time.sleep(BREAKER_COOLDOWN_SECONDS + 0.5)
    for _ in range(2 * REPLICAS):
        client.chat.completions.create(
            model="gpt-5.4", messages=[{"role": "user", "content": "hello"}]
        )
