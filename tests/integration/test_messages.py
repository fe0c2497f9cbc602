"""Anthropic's Messages API through the edge, with the official anthropic SDK unchanged:
plain and streamed answers, tools, images, thinking, errors in Anthropic's shape, and
the same money as a chat completion."""

from __future__ import annotations

import base64
from decimal import Decimal
from typing import Any

import anthropic
import httpx
import pytest
from aiport.v1 import billing_pb2_grpc
from anthropic.types import MessageParam, ToolParam

from tests.integration.conftest import Account, NewAccount, balance_micros, usage_records

WEATHER: ToolParam = {
    "name": "get_weather",
    "description": "Get the current weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "City name"},
            "days": {"type": "integer", "minimum": 1},
        },
        "required": ["city"],
    },
}
HAIKU: list[MessageParam] = [{"role": "user", "content": "Write a haiku about Jakarta traffic."}]
# A 1x1 PNG.
PIXEL = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
    )
).decode()


@pytest.fixture
def claude(base_url: str, account: Account) -> anthropic.Anthropic:
    # The SDK as a developer configures it: base URL and key (sent as x-api-key).
    return anthropic.Anthropic(base_url=base_url, api_key=account.api_key, max_retries=0)


def last_upstream_body(sandbox: httpx.Client) -> dict[str, Any]:
    seen = sandbox.get("/_sandbox/requests").json()[-1]
    body = seen["body"] if "body" in seen else seen
    assert isinstance(body, dict)
    return body


@pytest.mark.parametrize("model", ["deepseek-v4-flash", "claude-sonnet-4-6", "gemini-3.5-flash"])
def test_a_plain_message_has_the_messages_shape(claude: anthropic.Anthropic, model: str) -> None:
    reply = claude.messages.create(model=model, max_tokens=256, messages=HAIKU)
    assert reply.id.startswith("msg_")
    assert (reply.type, reply.role, reply.model) == ("message", "assistant", model)
    assert reply.stop_reason == "end_turn" and reply.stop_sequence is None
    (block,) = reply.content
    assert block.type == "text" and block.text
    assert reply.usage.input_tokens > 0 and reply.usage.output_tokens > 0
    assert reply.usage.cache_read_input_tokens == 0


@pytest.mark.parametrize("model", ["deepseek-v4-flash", "claude-haiku-4-5"])
def test_a_stream_through_the_sdks_helpers(claude: anthropic.Anthropic, model: str) -> None:
    with claude.messages.stream(model=model, max_tokens=256, messages=HAIKU) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.content[0].type == "text" and final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens > 0 and final.usage.output_tokens > 0


def test_the_raw_event_sequence(base_url: str, account: Account) -> None:
    with httpx.stream(
        "POST",
        f"{base_url}/v1/messages",
        headers={"x-api-key": account.api_key, "anthropic-version": "2023-06-01"},
        json={"model": "deepseek-v4-flash", "max_tokens": 64, "messages": HAIKU, "stream": True},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        names = [
            line[len("event: ") :] for line in response.iter_lines() if line.startswith("event: ")
        ]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert set(names[3:-3]) == {"content_block_delta"}
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]


def test_a_tool_round_trip(claude: anthropic.Anthropic, sandbox: httpx.Client) -> None:
    question: MessageParam = {"role": "user", "content": "What is the weather in Jakarta?"}
    first = claude.messages.create(
        model="deepseek-v4-flash", max_tokens=256, messages=[question], tools=[WEATHER]
    )
    assert first.stop_reason == "tool_use"
    (call,) = [b for b in first.content if b.type == "tool_use"]
    assert call.name == "get_weather" and isinstance(call.input, dict) and call.input["city"]
    sandbox.delete("/_sandbox/requests")
    second = claude.messages.create(
        model="deepseek-v4-flash",
        max_tokens=256,
        tools=[WEATHER],
        messages=[
            question,
            {"role": "assistant", "content": first.content},  # type: ignore[typeddict-item]
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "31C"}],
            },
        ],
    )
    assert second.stop_reason == "end_turn" and second.content[0].type == "text"
    sent = last_upstream_body(sandbox)["messages"]
    assert sent[1]["tool_calls"][0]["id"] == call.id
    assert sent[2] == {"role": "tool", "tool_call_id": call.id, "content": "31C"}


def test_a_streamed_tool_call(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(
        model="deepseek-v4-flash",
        max_tokens=256,
        messages=[{"role": "user", "content": "Weather in Bandung?"}],
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    (call,) = [b for b in final.content if b.type == "tool_use"]
    assert call.name == "get_weather" and isinstance(call.input, dict) and call.input["city"]


def test_an_image_reaches_the_upstream(claude: anthropic.Anthropic, sandbox: httpx.Client) -> None:
    sandbox.delete("/_sandbox/requests")
    reply = claude.messages.create(
        model="gpt-5.4-mini",
        max_tokens=128,
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PIXEL},
                    },
                    {"type": "text", "text": "What is in this image?"},
                ],
            }
        ],
    )
    assert reply.content[0].type == "text"
    sent = last_upstream_body(sandbox)["messages"][0]["content"]
    assert sent[0]["type"] == "image_url"
    assert sent[0]["image_url"]["url"] == f"data:image/png;base64,{PIXEL}"


def test_thinking_comes_back_as_thinking_blocks(claude: anthropic.Anthropic) -> None:
    reply = claude.messages.create(
        model="deepseek-v4-pro",
        max_tokens=8192,
        thinking={"type": "enabled", "budget_tokens": 2048},
        messages=[{"role": "user", "content": "think [sim:reasoning=5]"}],
    )
    kinds = [block.type for block in reply.content]
    assert kinds[0] == "thinking" and "text" in kinds
    with claude.messages.stream(
        model="deepseek-v4-pro",
        max_tokens=8192,
        thinking={"type": "enabled", "budget_tokens": 2048},
        messages=[{"role": "user", "content": "think [sim:reasoning=5]"}],
    ) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "thinking" and final.content[0].thinking


def test_bearer_auth_works_too(base_url: str, account: Account) -> None:
    claude = anthropic.Anthropic(base_url=base_url, auth_token=account.api_key, max_retries=0)
    reply = claude.messages.create(model="deepseek-v4-flash", max_tokens=32, messages=HAIKU)
    assert reply.content


def test_errors_have_anthropics_shape(base_url: str, new_account: NewAccount) -> None:
    wrong = anthropic.Anthropic(base_url=base_url, api_key="aip_live_nope", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as unauthorized:
        wrong.messages.create(model="deepseek-v4-flash", max_tokens=32, messages=HAIKU)
    assert unauthorized.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "Missing or invalid API key."},
    }
    broke = new_account("0")
    claude = anthropic.Anthropic(base_url=base_url, api_key=broke.api_key, max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as low:
        claude.messages.create(model="deepseek-v4-flash", max_tokens=32, messages=HAIKU)
    assert isinstance(low.value.body, dict)
    assert low.value.body["error"]["type"] == "invalid_request_error"
    assert "balance" in low.value.body["error"]["message"]
    with pytest.raises(anthropic.NotFoundError) as missing:
        claude.messages.create(model="no-such-model", max_tokens=32, messages=HAIKU)
    assert isinstance(missing.value.body, dict)
    assert missing.value.body["error"]["type"] == "not_found_error"
    response = httpx.post(
        f"{base_url}/v1/messages",
        headers={"x-api-key": broke.api_key},
        json={"model": "deepseek-v4-flash", "messages": HAIKU},
    )
    assert response.status_code == 400
    assert response.json() == {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "max_tokens: is required and must be a positive integer.",
        },
    }


# Translated (DeepSeek) and passed through (Claude): the same in-band end.
@pytest.mark.parametrize("model", ["deepseek-v4-flash", "claude-haiku-4-5"])
def test_a_break_after_output_is_an_in_band_error_event(
    claude: anthropic.Anthropic, model: str
) -> None:
    with pytest.raises(anthropic.APIStatusError) as broke:
        with claude.messages.stream(
            model=model,
            max_tokens=256,
            messages=[{"role": "user", "content": "hello [sim:fail-after=3]"}],
        ) as stream:
            for _ in stream.text_stream:
                pass
    assert isinstance(broke.value.body, dict)
    assert broke.value.body["type"] == "error"


def test_count_tokens_is_the_prompt_bound(claude: anthropic.Anthropic) -> None:
    small = claude.messages.count_tokens(model="deepseek-v4-flash", messages=HAIKU)
    large = claude.messages.count_tokens(
        model="deepseek-v4-flash",
        system="You are a poet. " * 50,
        messages=HAIKU,
        tools=[WEATHER],
    )
    assert 0 < small.input_tokens < large.input_tokens


def test_a_message_costs_what_its_usage_record_says(
    new_account: NewAccount, billing: billing_pb2_grpc.BillingStub, base_url: str
) -> None:
    account = new_account("100000")
    start = balance_micros(billing, account.account_id)
    claude = anthropic.Anthropic(base_url=base_url, api_key=account.api_key, max_retries=0)
    reply = claude.messages.create(
        model="kimi-k2.6",
        max_tokens=128,
        messages=[{"role": "user", "content": "hello [sim:tokens=7]"}],
    )
    spent = start - balance_micros(billing, account.account_id)
    assert spent > 0
    (record,) = usage_records(base_url, account.api_key)
    assert (record["endpoint"], record["model"], record["status"]) == (
        "messages",
        "kimi-k2.6",
        "succeeded",
    )
    assert Decimal(record["cost_idr"]) * 1_000_000 == spent
    assert record["output_tokens"] == reply.usage.output_tokens == 7


def test_the_edges_own_answers_have_anthropics_shape(base_url: str) -> None:
    # Refused by the edge itself: a key that cannot be one, a method no route takes.
    garbled = httpx.post(
        f"{base_url}/v1/messages",
        headers={b"x-api-key": "aip_live_\u00e9".encode("latin-1")},
        json={"model": "deepseek-v4-flash", "max_tokens": 8, "messages": HAIKU},
    )
    assert (garbled.status_code, garbled.json()) == (
        401,
        {
            "type": "error",
            "error": {"type": "authentication_error", "message": "Missing or invalid API key."},
        },
    )
    wrong_method = httpx.get(f"{base_url}/v1/messages")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["type"] == "invalid_request_error"
    assert wrong_method.json()["type"] == "error"


def test_a_claude_model_gets_the_clients_own_request(
    claude: anthropic.Anthropic, sandbox: httpx.Client
) -> None:
    # Passed through: what the canonical request cannot carry reaches Anthropic.
    sandbox.delete("/_sandbox/requests")
    reply = claude.messages.create(
        model="claude-haiku-4-5",
        max_tokens=64,
        system=[
            {
                "type": "text",
                "text": "You are a poet. " * 20,
                "cache_control": {"type": "ephemeral", "ttl": "1h"},
            }
        ],
        messages=HAIKU,
        extra_body={"top_k": 5, "service_tier": "auto"},
    )
    sent = last_upstream_body(sandbox)
    assert sent["model"] == "claude-haiku-4-5" and sent["top_k"] == 5
    # The 1-hour cache write costs more than we price: the 5-minute default is asked.
    assert sent["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert "service_tier" not in sent
    assert sent["messages"] == HAIKU
    assert reply.id.startswith("msg_") and reply.model == "claude-haiku-4-5"
    assert reply.content[0].type == "text"


def test_a_claude_tool_loop_keeps_its_signed_thinking(
    claude: anthropic.Anthropic, sandbox: httpx.Client
) -> None:
    question: MessageParam = {"role": "user", "content": "Weather in Jakarta? [sim:reasoning=5]"}
    thinking: Any = {"type": "enabled", "budget_tokens": 2048}
    first = claude.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=8192,
        thinking=thinking,
        tools=[WEATHER],
        messages=[question],
    )
    assert first.content[0].type == "thinking" and first.content[0].signature
    (call,) = [b for b in first.content if b.type == "tool_use"]
    sandbox.delete("/_sandbox/requests")
    with claude.messages.stream(
        model="claude-sonnet-4-6",
        max_tokens=8192,
        thinking=thinking,
        tools=[WEATHER],
        messages=[
            question,
            {"role": "assistant", "content": first.content},  # type: ignore[typeddict-item]
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "31C"}],
            },
        ],
    ) as stream:
        final = stream.get_final_message()
    sent = last_upstream_body(sandbox)
    # Thinking stays on, the signed block goes back as it came (the translated path
    # cannot carry signatures and has to turn thinking off here).
    assert sent["thinking"] == {"type": "adaptive"}  # this model's only mode
    assert sent["messages"][1]["content"][0]["signature"] == first.content[0].signature
    assert final.id.startswith("msg_") and final.model == "claude-sonnet-4-6"
    assert final.content[-1].type == "text"


def test_an_adaptive_only_claude_takes_budget_thinking_as_adaptive(
    claude: anthropic.Anthropic, sandbox: httpx.Client
) -> None:
    sandbox.delete("/_sandbox/requests")
    reply = claude.messages.create(
        model="claude-opus-4-8",
        max_tokens=8192,
        # The catalog drops temperature for this model, on both paths.
        extra_body={"temperature": 0.5},
        thinking={"type": "enabled", "budget_tokens": 2048},
        messages=[{"role": "user", "content": "think [sim:reasoning=5]"}],
    )
    sent = last_upstream_body(sandbox)
    assert sent["thinking"] == {"type": "adaptive"}
    assert sent["output_config"] == {"effort": "low"}
    assert "temperature" not in sent
    assert reply.content[0].type == "thinking"


def test_a_passed_through_stream_is_anthropics_own_and_bills_cache_writes(
    new_account: NewAccount, billing: billing_pb2_grpc.BillingStub, base_url: str
) -> None:
    account = new_account("100000")
    start = balance_micros(billing, account.account_id)
    claude = anthropic.Anthropic(base_url=base_url, api_key=account.api_key, max_retries=0)
    with claude.messages.stream(
        model="claude-sonnet-4-6",
        max_tokens=128,
        system=[{"type": "text", "text": "Rules. " * 50, "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": "hello [sim:tokens=7] [sim:cache-write=40]"}],
    ) as stream:
        final = stream.get_final_message()
    assert final.usage.cache_creation_input_tokens == 40
    assert final.usage.output_tokens == 7
    spent = start - balance_micros(billing, account.account_id)
    (record,) = usage_records(base_url, account.api_key)
    assert record["endpoint"] == "messages" and record["output_tokens"] == 7
    assert Decimal(record["cost_idr"]) * 1_000_000 == spent
    assert record["input_tokens"] == (
        final.usage.input_tokens + final.usage.cache_creation_input_tokens
    )
