"""The (Messages client, Anthropic upstream) passthrough: what of the client's body is
changed on the way up, and how the upstream's own events come back (ids ours, usage
read, held until output starts)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from services.common.canonical_chat import from_chat_body
from services.providers.adapters.anthropic_passthrough import (
    NativeMessagesStream,
    native_message,
    native_request,
)
from services.providers.adapters.openai_chat_translate import Identity
from services.providers.errors import UpstreamError

IDENTITY = Identity("chatcmpl-abc", "claude-sonnet-4-6", 1_700_000_000)
CANONICAL: dict[str, Any] = {"messages": [], "max_tokens": 512, "temperature": 0.5}


def client(**fields: Any) -> bytes:
    body = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 100_000,
        "messages": [{"role": "user", "content": "Hi"}],
        **fields,
    }
    return orjson.dumps(body)


def test_model_max_tokens_and_stream_are_ours() -> None:
    body = native_request(
        client(), from_chat_body(CANONICAL), "claude-sonnet-4-6-20260101", stream=True
    )
    assert body["model"] == "claude-sonnet-4-6-20260101"
    assert body["max_tokens"] == 512  # the hold's bound, not the client's
    assert body["stream"] is True
    assert "stream" not in native_request(
        client(stream=True), from_chat_body(CANONICAL), "m", stream=False
    )


def test_what_the_canonical_request_dropped_is_dropped() -> None:
    canonical = {"messages": [], "max_tokens": 512}  # the model's policy took temperature
    body = native_request(
        client(temperature=0.2, top_p=0.9, stop_sequences=["x"], top_k=3),
        from_chat_body(canonical),
        "m",
        stream=False,
        drop=frozenset({"top_k"}),
    )
    assert not {"temperature", "top_p", "stop_sequences", "top_k"} & set(body)
    kept = native_request(
        client(temperature=0.2, top_k=3), from_chat_body(CANONICAL), "m", stream=False
    )
    assert (kept["temperature"], kept["top_k"]) == (0.2, 3)


def test_dearer_service_and_long_cache_writes_are_not_bought() -> None:
    body = native_request(
        client(
            service_tier="auto",
            inference_geo="us",
            system=[
                {"type": "text", "text": "S", "cache_control": {"type": "ephemeral", "ttl": "1h"}}
            ],
            tools=[
                {
                    "name": "f",
                    "input_schema": {"type": "object"},
                    "cache_control": {"type": "ephemeral", "ttl": "1h"},
                }
            ],
            messages=[
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t",
                            "content": [
                                {
                                    "type": "text",
                                    "text": "r",
                                    "cache_control": {"type": "ephemeral", "ttl": "1h"},
                                }
                            ],
                        }
                    ],
                }
            ],
        ),
        from_chat_body(CANONICAL),
        "m",
        stream=False,
    )
    assert "service_tier" not in body and "inference_geo" not in body
    assert body["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert body["tools"][0]["cache_control"] == {"type": "ephemeral"}
    inner = body["messages"][0]["content"][0]["content"][0]
    assert inner["cache_control"] == {"type": "ephemeral"}


def test_thinking_takes_the_models_mode() -> None:
    asked = {"type": "enabled", "budget_tokens": 2048}
    adaptive = {
        **CANONICAL,
        "thinking": {"control": "adaptive", "type": "enabled"},
        "reasoning_effort": "low",
    }
    body = native_request(
        client(thinking=asked, output_config={"format": {"type": "json_schema", "schema": {}}}),
        from_chat_body(adaptive),
        "m",
        stream=False,
    )
    assert body["thinking"] == {"type": "adaptive"}
    assert body["output_config"] == {
        "format": {"type": "json_schema", "schema": {}},
        "effort": "low",
    }
    budget = {**CANONICAL, "thinking": {"control": "budget", "type": "enabled"}}
    budget["reasoning_effort"] = "medium"
    roomy = {**budget, "max_tokens": 10_000}
    assert (
        native_request(client(thinking=asked), from_chat_body(roomy), "m", stream=False)["thinking"]
        == asked
    )
    # max_tokens capped under the client's budget: half of it; under the minimum, none.
    small = {**budget, "max_tokens": 4000}
    big_budget = {"type": "enabled", "budget_tokens": 8000}
    body = native_request(client(thinking=big_budget), from_chat_body(small), "m", stream=False)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2000}
    body = native_request(client(thinking=big_budget), from_chat_body(budget), "m", stream=False)
    assert "thinking" not in body  # max_tokens 512: 256 is under Anthropic's minimum
    # Only an effort asked, on a budget model: a budget for it, at most half of
    # max_tokens, and none below Anthropic's minimum.
    body = native_request(
        client(output_config={"effort": "medium"}), from_chat_body(budget), "m", stream=False
    )
    assert "thinking" not in body and "output_config" not in body  # 512 // 2 < 1024
    body = native_request(
        client(output_config={"effort": "medium"}), from_chat_body(roomy), "m", stream=False
    )
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    untouched = native_request(
        client(thinking={"type": "disabled"}), from_chat_body(CANONICAL), "m", stream=False
    )
    assert untouched["thinking"] == {"type": "disabled"}


def test_a_whole_message_comes_back_with_our_id_and_its_usage() -> None:
    raw = orjson.dumps(
        {
            "id": "msg_upstream",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-6-20260101",
            "content": [{"type": "thinking", "thinking": "t", "signature": "sig"}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": 10,
                "output_tokens": 5,
                "cache_read_input_tokens": 3,
                "cache_creation_input_tokens": 2,
            },
        }
    )
    body, usage = native_message(raw, "msg_abc", "claude-sonnet-4-6")
    message = orjson.loads(body)
    assert (message["id"], message["model"]) == ("msg_abc", "claude-sonnet-4-6")
    assert message["content"][0]["signature"] == "sig"
    assert (usage.prompt_tokens, usage.cached_prompt_tokens, usage.cache_write_prompt_tokens) == (
        15,
        3,
        2,
    )
    assert usage.completion_tokens == 5


def upstream_events(text: str = "Hi") -> list[tuple[str, dict[str, Any]]]:
    return [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_upstream",
                    "type": "message",
                    "role": "assistant",
                    "model": "claude-sonnet-4-6-20260101",
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 10, "output_tokens": 1},
                },
            },
        ),
        ("ping", {"type": "ping"}),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": text},
            },
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "stop_sequence", "stop_sequence": "END"},
                "usage": {"output_tokens": 4},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]


def test_events_pass_through_held_until_output_with_our_id() -> None:
    stream = NativeMessagesStream(IDENTITY, "msg_abc", prompt_chars=10)
    sent: list[bytes] = []
    for event, payload in upstream_events()[:3]:
        assert stream.feed(event, orjson.dumps(payload)) == []  # no output yet
    assert not stream.output_started
    for event, payload in upstream_events()[3:]:
        sent += stream.feed(event, orjson.dumps(payload))
    assert stream.output_started and stream.done
    names = [frame.split(b"\n")[0] for frame in sent]
    assert names == [
        b"event: " + name.encode() for name, _ in upstream_events()
    ]  # all seven, in order
    start = orjson.loads(sent[0].split(b"\n")[1][len(b"data: ") :])
    assert (start["message"]["id"], start["message"]["model"]) == ("msg_abc", "claude-sonnet-4-6")
    delta = orjson.loads(sent[5].split(b"\n")[1][len(b"data: ") :])
    assert delta["delta"]["stop_sequence"] == "END"  # what translation cannot tell
    closing, usage = stream.finish()
    assert closing == []
    assert (usage.prompt_tokens, usage.completion_tokens) == (10, 4)


def test_a_break_is_an_upstream_error_with_an_estimate() -> None:
    stream = NativeMessagesStream(IDENTITY, "msg_abc", prompt_chars=400)
    for event, payload in upstream_events("word " * 20)[:4]:
        stream.feed(event, orjson.dumps(payload))
    with pytest.raises(UpstreamError):
        stream.feed("error", b'{"type":"error","error":{"type":"overloaded_error","message":"x"}}')
    estimate = stream.estimated_usage()
    assert estimate.estimated and estimate.prompt_tokens == 100 and estimate.completion_tokens > 0
