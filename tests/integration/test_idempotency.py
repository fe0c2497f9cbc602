"""Idempotency-Key through the edge (issue 16): one upstream call and one charge per
key, whatever the client repeats; with the openai SDK and with httpx.

Run with AIPORT_TEST_REPLICAS=2 too: repeats then land on either gateway replica,
and the one claim in billing is what they share."""

from __future__ import annotations

import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anthropic
import httpx
import openai
import pytest
from aiport.v1 import billing_pb2, billing_pb2_grpc

from tests.integration.conftest import Account

HEADER = "Idempotency-Key"
REPLAYED = "idempotent-replayed"


def prompt(tag: str = "") -> str:
    """A prompt no other test sends, so the sandbox's request log counts this test's calls."""
    return f"idempotency {secrets.token_hex(8)} {tag}".strip()


def chat_body(text: str, **more: Any) -> dict[str, Any]:
    return {"model": "deepseek-v4-flash", "messages": [{"role": "user", "content": text}], **more}


def upstream_calls(sandbox: httpx.Client, text: str) -> int:
    seen = sandbox.get("/_sandbox/requests").json()
    return sum(1 for entry in seen if text in str(entry["body"]))


def captures(billing: billing_pb2_grpc.BillingStub, account_id: str) -> int:
    page = billing.ListLedger(billing_pb2.ListLedgerRequest(account_id=account_id))
    return [entry.kind for entry in page.entries].count("capture")


def open_holds(billing: billing_pb2_grpc.BillingStub, account_id: str) -> int:
    balance = billing.GetAccountBalance(billing_pb2.GetAccountBalanceRequest(account_id=account_id))
    return int(balance.held_micros)


def wait_until(predicate: Any, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def key() -> str:
    return "test-" + secrets.token_hex(12)


def test_a_repeated_chat_replays_the_first_answer_and_charges_once(
    client: openai.OpenAI,
    sandbox: httpx.Client,
    billing: billing_pb2_grpc.BillingStub,
    account: Account,
) -> None:
    text = prompt()
    headers = {HEADER: key()}
    messages: Any = [{"role": "user", "content": text}]
    first = client.chat.completions.with_raw_response.create(
        model="deepseek-v4-flash", messages=messages, extra_headers=headers
    )
    again = client.chat.completions.with_raw_response.create(
        model="deepseek-v4-flash", messages=messages, extra_headers=headers
    )
    assert first.headers.get(REPLAYED) is None
    assert again.headers.get(REPLAYED) == "true"
    assert again.status_code == 200
    assert again.http_response.content == first.http_response.content
    assert again.parse().id == first.parse().id
    assert upstream_calls(sandbox, text) == 1
    assert captures(billing, account.account_id) == 1
    assert open_holds(billing, account.account_id) == 0


def test_the_same_key_with_another_body_is_422(http: httpx.Client) -> None:
    headers = {HEADER: key()}
    assert http.post("/v1/chat/completions", json=chat_body(prompt()), headers=headers).is_success
    other = http.post("/v1/chat/completions", json=chat_body(prompt()), headers=headers)
    assert other.status_code == 422, other.text
    assert other.json()["error"]["code"] == "idempotency_key_reused"


def test_a_repeat_while_the_first_runs_is_409_then_replays(
    http: httpx.Client,
    sandbox: httpx.Client,
    billing: billing_pb2_grpc.BillingStub,
    account: Account,
) -> None:
    text = prompt("[sim:delay=4]")
    headers = {HEADER: key()}
    results: list[httpx.Response] = []
    first = threading.Thread(
        target=lambda: results.append(
            http.post("/v1/chat/completions", json=chat_body(text), headers=headers)
        )
    )
    first.start()
    try:
        wait_until(lambda: upstream_calls(sandbox, text) == 1)  # the first is upstream now
        running = http.post("/v1/chat/completions", json=chat_body(text), headers=headers)
    finally:
        first.join()
    assert running.status_code == 409, running.text
    assert running.json()["error"]["code"] == "idempotent_request_in_progress"
    assert running.json()["error"]["param"] == HEADER
    (done,) = results
    assert done.status_code == 200, done.text
    replay = http.post("/v1/chat/completions", json=chat_body(text), headers=headers)
    assert replay.headers[REPLAYED] == "true"
    assert replay.content == done.content
    assert upstream_calls(sandbox, text) == 1
    assert captures(billing, account.account_id) == 1


def test_fifty_parallel_repeats_make_one_upstream_call_and_one_charge(
    base_url: str,
    sandbox: httpx.Client,
    billing: billing_pb2_grpc.BillingStub,
    account: Account,
) -> None:
    text = prompt()
    body = chat_body(text)
    headers = {HEADER: key(), "Authorization": f"Bearer {account.api_key}"}

    def send(_: int) -> httpx.Response:
        return httpx.post(f"{base_url}/v1/chat/completions", json=body, headers=headers, timeout=60)

    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(send, range(50)))
    statuses = sorted({answer.status_code for answer in answers})
    assert set(statuses) <= {200, 409}, [a.text for a in answers if a.status_code not in (200, 409)]
    ok = [answer for answer in answers if answer.status_code == 200]
    assert ok, "no repeat got the answer"
    assert len({answer.content for answer in ok}) == 1  # the one answer, replayed
    assert sum(1 for answer in ok if REPLAYED not in answer.headers) <= 1
    wait_until(lambda: open_holds(billing, account.account_id) == 0)
    assert upstream_calls(sandbox, text) == 1
    assert captures(billing, account.account_id) == 1
    # After the first has finished, every repeat is its replay.
    late = send(0)
    assert late.headers[REPLAYED] == "true"
    assert late.content == ok[0].content


def test_a_finished_stream_is_replayed_as_the_same_stream(
    http: httpx.Client,
    sandbox: httpx.Client,
    billing: billing_pb2_grpc.BillingStub,
    account: Account,
) -> None:
    text = prompt()
    headers = {HEADER: key()}
    body = chat_body(text, stream=True, stream_options={"include_usage": True})
    first = http.post("/v1/chat/completions", json=body, headers=headers)
    again = http.post("/v1/chat/completions", json=body, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.headers["content-type"].startswith("text/event-stream")
    assert again.headers[REPLAYED] == "true"
    assert again.content == first.content
    assert again.text.rstrip().endswith("data: [DONE]")
    assert upstream_calls(sandbox, text) == 1
    assert captures(billing, account.account_id) == 1


def test_the_sdk_reads_a_replayed_stream(client: openai.OpenAI, sandbox: httpx.Client) -> None:
    text = prompt()
    headers = {HEADER: key()}
    messages: Any = [{"role": "user", "content": text}]

    def streamed() -> str:
        stream = client.chat.completions.create(
            model="deepseek-v4-flash", messages=messages, stream=True, extra_headers=headers
        )
        return "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)

    first = streamed()
    assert first
    assert streamed() == first
    assert upstream_calls(sandbox, text) == 1


def test_a_repeated_job_creation_returns_the_same_job(
    http: httpx.Client, billing: billing_pb2_grpc.BillingStub, account: Account
) -> None:
    headers = {HEADER: key()}
    body = {"prompt": prompt()}
    first = http.post("/v1/image/generate", json=body, headers=headers)
    again = http.post("/v1/image/generate", json=body, headers=headers)
    assert first.status_code == again.status_code == 202, (first.text, again.text)
    assert again.headers[REPLAYED] == "true"
    assert again.json()["job_id"] == first.json()["job_id"]
    assert again.json() == first.json()
    jobs = http.get("/v1/jobs").json()["data"]
    assert [job["job_id"] for job in jobs] == [first.json()["job_id"]]


def test_a_malformed_key_is_a_400_naming_the_header(http: httpx.Client) -> None:
    for bad in ("x" * 256, ""):
        answer = http.post("/v1/chat/completions", json=chat_body(prompt()), headers={HEADER: bad})
        assert answer.status_code == 400, (bad, answer.text)
        assert answer.json()["error"]["param"] == HEADER
    not_ascii = http.post(
        "/v1/chat/completions",
        json=chat_body(prompt()),
        headers=[(HEADER.encode(), "caf\u00e9".encode())],
    )
    assert not_ascii.status_code == 400, not_ascii.text
    assert not_ascii.json()["error"]["param"] == HEADER, not_ascii.text
    # A credential is never kept as a request's key.
    secret = http.post(
        "/v1/chat/completions", json=chat_body(prompt()), headers={HEADER: "sk-not-a-key"}
    )
    assert secret.status_code == 400, secret.text
    assert secret.json()["error"]["param"] == HEADER


def test_a_validation_failure_is_not_stored(http: httpx.Client, sandbox: httpx.Client) -> None:
    headers = {HEADER: key()}
    text = prompt()
    invalid = http.post(
        "/v1/chat/completions", json=chat_body(text, max_tokens=-1), headers=headers
    )
    assert invalid.status_code == 400, invalid.text
    # The key was never claimed: a corrected request under it runs (no 422).
    valid = http.post("/v1/chat/completions", json=chat_body(text), headers=headers)
    assert valid.status_code == 200, valid.text
    assert REPLAYED not in valid.headers
    assert upstream_calls(sandbox, text) == 1


def test_a_failure_before_output_frees_the_key(
    http: httpx.Client,
    sandbox: httpx.Client,
    billing: billing_pb2_grpc.BillingStub,
    account: Account,
) -> None:
    headers = {HEADER: key()}
    text = prompt("[sim:fail]")
    failed = http.post("/v1/chat/completions", json=chat_body(text), headers=headers)
    assert failed.status_code >= 500, failed.text
    # Nothing was charged, so nothing was kept: the same request runs again.
    retried = http.post("/v1/chat/completions", json=chat_body(text), headers=headers)
    assert retried.status_code == failed.status_code
    assert REPLAYED not in retried.headers
    assert captures(billing, account.account_id) == 0


def test_anthropic_messages_and_responses_replay_too(
    base_url: str,
    http: httpx.Client,
    sandbox: httpx.Client,
    billing: billing_pb2_grpc.BillingStub,
    account: Account,
) -> None:
    # The anthropic SDK as a developer configures it (the key as x-api-key).
    claude = anthropic.Anthropic(base_url=base_url, api_key=account.api_key, max_retries=0)
    text = prompt()
    headers = {HEADER: key()}
    messages: Any = [{"role": "user", "content": text}]

    def ask() -> Any:
        return claude.messages.with_raw_response.create(
            model="claude-sonnet-4-6", max_tokens=256, messages=messages, extra_headers=headers
        )

    first, again = ask(), ask()
    assert again.headers.get(REPLAYED) == "true"
    assert again.http_response.content == first.http_response.content
    assert again.parse().id == first.parse().id
    # Another body under that key: Anthropic's error shape, 422.
    with pytest.raises(anthropic.UnprocessableEntityError):
        claude.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=256,
            messages=[{"role": "user", "content": prompt()}],
            extra_headers=headers,
        )
    assert upstream_calls(sandbox, text) == 1
    responses_text = prompt()
    body = {"model": "deepseek-v4-flash", "input": responses_text}
    response_headers = {HEADER: key()}
    once = http.post("/v1/responses", json=body, headers=response_headers)
    twice = http.post("/v1/responses", json=body, headers=response_headers)
    assert once.status_code == twice.status_code == 200, once.text
    assert twice.headers[REPLAYED] == "true"
    assert twice.content == once.content
    assert upstream_calls(sandbox, responses_text) == 1
    assert captures(billing, account.account_id) == 2
