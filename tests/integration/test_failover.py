"""Provider routing: a failing first route is invisible to the client and
charged once; a route that keeps failing is skipped, then probed again."""

from __future__ import annotations

import time
from typing import Any

import httpx
import openai
import pytest
from aiport.v1 import billing_pb2, billing_pb2_grpc
from openai.types.chat import ChatCompletionMessageParam

from tests.integration.conftest import BREAKER_COOLDOWN_SECONDS, REPLICAS, Account
from tests.integration.test_jobs import poll, state, submit


def captures(billing: billing_pb2_grpc.BillingStub, account_id: str) -> int:
    page = billing.ListLedger(billing_pb2.ListLedgerRequest(account_id=account_id))
    return [e.kind for e in page.entries].count("capture")


def test_chat_fails_over_invisibly_and_is_charged_once(
    client: openai.OpenAI,
    sandbox: httpx.Client,
    account: Account,
    billing: billing_pb2_grpc.BillingStub,
) -> None:
    sandbox.delete("/_sandbox/requests")
    plain = client.chat.completions.create(
        model="kimi-k2.6",
        messages=[{"role": "user", "content": "hello [sim:fail-route=primary]"}],
    )
    assert plain.choices[0].message.content
    chunks = list(
        client.chat.completions.create(
            model="kimi-k2.6",
            messages=[{"role": "user", "content": "again [sim:fail-route=primary]"}],
            stream=True,
        )
    )
    assert chunks[-1].usage is not None
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    labels = [e["route"] for e in sandbox.get("/_sandbox/requests").json()]
    assert labels == ["primary", "backup", "primary", "backup"]
    assert captures(billing, account.account_id) == 2
    assert state(billing, account.account_id)[1] == 0


def test_every_route_failing_is_a_502_and_refunded(
    client: openai.OpenAI, account: Account, billing: billing_pb2_grpc.BillingStub
) -> None:
    before = state(billing, account.account_id)
    try:
        client.chat.completions.create(
            model="minimax-m3",
            messages=[{"role": "user", "content": "x [sim:fail-route=primary,backup]"}],
        )
        raise AssertionError("expected a 502")
    except openai.InternalServerError as error:
        assert error.status_code == 502
    assert state(billing, account.account_id) == before


def test_breaker_skips_a_failing_route_then_probes_it(
    client: openai.OpenAI, sandbox: httpx.Client
) -> None:
    sandbox.delete("/_sandbox/requests")
    failing: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "x [sim:fail-route=primary]"}
    ]
    # Breakers are per providers process: with replicas, each one opens its own
    # after five failures. Round robin spreads the calls, so 7 per replica
    # (a margin of 2) get every breaker open.
    calls = 7 * REPLICAS
    for _ in range(calls):
        client.chat.completions.create(model="glm-5.2", messages=failing)
    labels = [e["route"] for e in sandbox.get("/_sandbox/requests").json()]
    # Five failures open a primary's breaker; later calls go straight to backup.
    assert labels.count("primary") == 5 * REPLICAS
    assert labels.count("backup") == calls
    assert labels[-2:] == ["backup", "backup"]
    time.sleep(BREAKER_COOLDOWN_SECONDS + 0.2)
    sandbox.delete("/_sandbox/requests")
    client.chat.completions.create(
        model="glm-5.2", messages=[{"role": "user", "content": "healthy again"}]
    )
    # After the cool-down one probe goes to the primary, which now answers.
    assert [e["route"] for e in sandbox.get("/_sandbox/requests").json()] == ["primary"]


def test_jobs_fail_over_to_the_backup_route(
    http: httpx.Client,
    sandbox: httpx.Client,
    account: Account,
    billing: billing_pb2_grpc.BillingStub,
) -> None:
    prompt = f"failover {time.monotonic_ns()} [sim:fail-route=primary]"
    bodies: list[tuple[str, dict[str, Any]]] = [
        ("/v1/image/generate", {"prompt": prompt, "model": "grok-image"}),
        ("/v1/video/generate", {"prompt": prompt, "duration": 4}),
    ]
    for path, body in bodies:
        job = poll(http, submit(http, path, body)["job_id"])
        assert job["status"] == "done", job
    # The primary refused before creating anything: exactly one upstream task.
    tasks = [t for t in sandbox.get("/_sandbox/tasks").json() if t["prompt"] == prompt]
    assert len(tasks) == 1
    assert captures(billing, account.account_id) == 2


@pytest.mark.parametrize("fault", ["reset", "malformed"])
@pytest.mark.parametrize("stream", [False, True])
def test_broken_upstreams_are_a_refunded_502(
    http: httpx.Client,
    account: Account,
    billing: billing_pb2_grpc.BillingStub,
    fault: str,
    stream: bool,
) -> None:
    # Both routes break the same way: failover tries both, then gives up cleanly.
    before = state(billing, account.account_id)
    response = http.post(
        "/v1/chat/completions",
        json={
            "model": "gpt-5.5",
            "messages": [{"role": "user", "content": f"x [sim:{fault}]"}],
            "stream": stream,
        },
    )
    assert response.status_code == 502, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["code"] == "provider_error"
    assert state(billing, account.account_id) == before
