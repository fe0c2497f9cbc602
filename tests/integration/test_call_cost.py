"""The cost of every text call, in Rupiah, where the caller can see it: the
x-aiport-cost-idr header of a whole answer, and `usage.cost_idr` on the answer or a
stream's last usage, in each protocol. Each figure must equal what billing took."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import anthropic
import httpx
import openai
import orjson
from aiport.v1 import billing_pb2_grpc

from tests.integration.conftest import Account, balance_micros

CHAT_MODEL = "deepseek-v4-flash"
MESSAGES_MODEL = "claude-sonnet-4-6"


def micros(idr: str) -> int:
    """An exact IDR decimal string as µIDR (no float on the way)."""
    value = Decimal(idr) * 1_000_000
    assert value == value.to_integral_value(), idr
    return int(value)


def sse_data(body: str) -> list[dict[str, Any]]:
    """The JSON payloads of an SSE body (its [DONE] left out)."""
    out = []
    for line in body.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            out.append(orjson.loads(line[len("data: ") :]))
    return out


def test_a_whole_chat_answer_says_its_cost_in_the_header_and_usage(
    http: httpx.Client, account: Account, billing: billing_pb2_grpc.BillingStub
) -> None:
    before = balance_micros(billing, account.account_id)
    response = http.post(
        "/v1/chat/completions",
        json={"model": CHAT_MODEL, "messages": [{"role": "user", "content": "hi [sim:tokens=9]"}]},
    )
    assert response.status_code == 200
    charged = before - balance_micros(billing, account.account_id)
    assert charged > 0
    header = response.headers["x-aiport-cost-idr"]
    assert micros(header) == charged
    assert response.json()["usage"]["cost_idr"] == header


def test_the_openai_sdk_keeps_cost_idr_on_usage(
    client: openai.OpenAI, account: Account, billing: billing_pb2_grpc.BillingStub
) -> None:
    before = balance_micros(billing, account.account_id)
    raw = client.chat.completions.with_raw_response.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": "hello [sim:tokens=5]"}]
    )
    completion = raw.parse()
    charged = before - balance_micros(billing, account.account_id)
    assert completion.usage is not None
    # An extra field: the SDK's model keeps it, and the header says the same.
    extra = completion.usage.model_extra or {}
    assert micros(extra["cost_idr"]) == charged
    assert raw.headers["x-aiport-cost-idr"] == extra["cost_idr"]


def test_a_streams_last_usage_chunk_says_its_cost(
    client: openai.OpenAI, account: Account, billing: billing_pb2_grpc.BillingStub
) -> None:
    before = balance_micros(billing, account.account_id)
    chunks = list(
        client.chat.completions.create(
            model=CHAT_MODEL,
            messages=[{"role": "user", "content": "stream [sim:tokens=8]"}],
            stream=True,
        )
    )
    charged = before - balance_micros(billing, account.account_id)
    usage = chunks[-1].usage
    assert usage is not None and charged > 0
    assert micros((usage.model_extra or {})["cost_idr"]) == charged
    # Only the last chunk carries a usage.
    assert all(chunk.usage is None for chunk in chunks[:-1])


def test_a_stream_has_no_cost_header(http: httpx.Client) -> None:
    """A stream's headers leave before its cost is known: the usage chunk says it."""
    with http.stream(
        "POST",
        "/v1/chat/completions",
        json={
            "model": CHAT_MODEL,
            "messages": [{"role": "user", "content": "stream [sim:tokens=3]"}],
            "stream": True,
        },
    ) as response:
        assert response.status_code == 200
        assert "x-aiport-cost-idr" not in response.headers
        body = response.read().decode()
    last = sse_data(body)[-1]
    assert last["choices"] == [] and "cost_idr" in last["usage"]


def test_messages_and_its_stream_say_the_cost_in_usage(
    base_url: str, account: Account, billing: billing_pb2_grpc.BillingStub
) -> None:
    claude = anthropic.Anthropic(base_url=base_url, api_key=account.api_key, max_retries=0)
    before = balance_micros(billing, account.account_id)
    raw = claude.messages.with_raw_response.create(
        model=MESSAGES_MODEL,
        max_tokens=64,
        messages=[{"role": "user", "content": "hi [sim:tokens=6]"}],
    )
    message = raw.parse()
    charged = before - balance_micros(billing, account.account_id)
    cost = (message.usage.model_extra or {})["cost_idr"]
    assert micros(cost) == charged > 0
    assert raw.headers["x-aiport-cost-idr"] == cost

    before = balance_micros(billing, account.account_id)
    with claude.messages.stream(
        model=MESSAGES_MODEL,
        max_tokens=64,
        messages=[{"role": "user", "content": "stream [sim:tokens=6]"}],
    ) as stream:
        deltas = [event for event in stream if event.type == "message_delta"]
    charged = before - balance_micros(billing, account.account_id)
    assert len(deltas) == 1
    assert micros((deltas[0].usage.model_extra or {})["cost_idr"]) == charged > 0


def test_responses_and_its_stream_say_the_cost_in_usage(
    client: openai.OpenAI, account: Account, billing: billing_pb2_grpc.BillingStub
) -> None:
    before = balance_micros(billing, account.account_id)
    raw = client.responses.with_raw_response.create(model=CHAT_MODEL, input="hi [sim:tokens=4]")
    response = raw.parse()
    charged = before - balance_micros(billing, account.account_id)
    assert response.usage is not None
    cost = (response.usage.model_extra or {})["cost_idr"]
    assert micros(cost) == charged > 0
    assert raw.headers["x-aiport-cost-idr"] == cost

    before = balance_micros(billing, account.account_id)
    events = list(client.responses.create(model=CHAT_MODEL, input="hi [sim:tokens=4]", stream=True))
    charged = before - balance_micros(billing, account.account_id)
    completed = [e for e in events if e.type == "response.completed"]
    assert len(completed) == 1
    usage = completed[0].response.usage
    assert usage is not None
    assert micros((usage.model_extra or {})["cost_idr"]) == charged > 0


def test_a_refused_call_has_no_cost_header(http: httpx.Client) -> None:
    response = http.post("/v1/chat/completions", json={"model": CHAT_MODEL, "messages": []})
    assert response.status_code == 400
    assert "x-aiport-cost-idr" not in response.headers
