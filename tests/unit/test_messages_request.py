"""Anthropic Messages requests: how each field reaches the canonical chat call, and
what is refused under its Messages name."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from services.common.catalog import load_catalog
from services.common.settings import PROJECT_ROOT
from services.gateway.errors import PublicError
from services.gateway.messages_request import parse_messages_request, to_chat_body

CATALOG = load_catalog(PROJECT_ROOT / "config" / "catalog.yaml")
HELLO = [{"role": "user", "content": "Hello"}]
WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "deepseek-v4-flash", "max_tokens": 256, "messages": HELLO, **fields}


def refused(request: dict[str, Any]) -> PublicError:
    with pytest.raises(PublicError) as caught:
        parse_messages_request(orjson.dumps(request), CATALOG)
    return caught.value


def test_a_plain_request_is_the_canonical_chat_call() -> None:
    call = parse_messages_request(orjson.dumps(body(system="Be brief.")), CATALOG)
    assert call.model.id == "deepseek-v4-flash"
    assert call.stream is False
    assert call.max_output_tokens == 256
    assert call.upstream_request["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello"},
    ]


def test_system_blocks_images_and_sampling() -> None:
    chat = to_chat_body(
        body(
            system=[{"type": "text", "text": "One.", "cache_control": {"type": "ephemeral"}}],
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"},
                        },
                        {"type": "image", "source": {"type": "url", "url": "https://x.test/a.jpg"}},
                    ],
                }
            ],
            temperature=0.5,
            top_p=0.9,
            top_k=40,
            stop_sequences=["END"],
            metadata={"user_id": "u-1"},
            stream=True,
        )
    )
    assert chat["messages"][0] == {"role": "system", "content": [{"type": "text", "text": "One."}]}
    assert chat["messages"][1]["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
        {"type": "image_url", "image_url": {"url": "https://x.test/a.jpg"}},
    ]
    assert chat["temperature"] == 0.5 and chat["top_p"] == 0.9
    assert chat["stop"] == ["END"] and chat["user"] == "u-1" and chat["stream"] is True
    assert "top_k" not in chat  # accepted, dropped (documented)


def test_a_tool_round_trip_becomes_tool_calls_and_tool_messages() -> None:
    chat = to_chat_body(
        body(
            tools=[WEATHER],
            tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
            messages=[
                {"role": "user", "content": "Weather in Jakarta?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "Use the tool.", "signature": "sig"},
                        {"type": "text", "text": "Checking."},
                        {
                            "type": "tool_use",
                            "id": "toolu_1",
                            "name": "get_weather",
                            "input": {"city": "Jakarta"},
                        },
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Also say hi."},
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "31C"},
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_2",
                            "is_error": True,
                            "content": [{"type": "text", "text": "timeout"}],
                        },
                    ],
                },
            ],
        )
    )
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": WEATHER["input_schema"],
                "description": "Weather for a city",
            },
        }
    ]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert chat["parallel_tool_calls"] is False
    assistant, first, second, user = chat["messages"][1:]
    assert assistant == {
        "role": "assistant",
        "content": "Checking.",
        "reasoning_content": "Use the tool.",
        "tool_calls": [
            {
                "id": "toolu_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Jakarta"}'},
            }
        ],
    }
    # Tool results first (the canonical order), then the rest of the turn.
    assert first == {"role": "tool", "tool_call_id": "toolu_1", "content": "31C"}
    assert second == {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: timeout"}
    assert user == {"role": "user", "content": [{"type": "text", "text": "Also say hi."}]}


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "any"}, "required"),
        ({"type": "none"}, "none"),
    ],
)
def test_tool_choices(choice: dict[str, Any], expected: str) -> None:
    assert to_chat_body(body(tools=[WEATHER], tool_choice=choice))["tool_choice"] == expected


@pytest.mark.parametrize(
    ("budget", "effort"), [(1024, "low"), (4095, "low"), (4096, "medium"), (16384, "high")]
)
def test_thinking_budget_becomes_an_effort(budget: int, effort: str) -> None:
    chat = to_chat_body(
        body(max_tokens=32000, thinking={"type": "enabled", "budget_tokens": budget})
    )
    assert chat["reasoning_effort"] == effort


def test_thinking_disabled_and_output_config() -> None:
    assert "reasoning_effort" not in to_chat_body(body(thinking={"type": "disabled"}))
    chat = to_chat_body(
        body(
            output_config={"effort": "max", "format": {"type": "json_schema", "schema": {}}},
        )
    )
    assert chat["reasoning_effort"] == "high"
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": {}},
    }


@pytest.mark.parametrize(
    ("request_fields", "param"),
    [
        ({"max_tokens": None}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"model": None}, "model"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
        (
            {"messages": [{"role": "user", "content": [{"type": "document"}]}]},
            "messages[0].content[0].type",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image",
                                "source": {
                                    "type": "base64",
                                    "media_type": "image/bmp",
                                    "data": "x",
                                },
                            }
                        ],
                    }
                ]
            },
            "messages[0].content[0].source.media_type",
        ),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "content": [{"type": "tool_use", "id": "t", "name": "f", "input": "x"}],
                    }
                ]
            },
            "messages[0].content[0].input",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}],
                    }
                ]
            },
            "messages[0].content[0].type",
        ),
        ({"temperature": 1.5}, "temperature"),
        ({"stop_sequences": ["a", "b", "c", "d", "e"]}, "stop_sequences"),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0].type"),
        ({"tools": [{"name": "f"}]}, "tools[0].input_schema"),
        ({"tools": [{"name": "bad name!", "input_schema": {}}]}, "tools[0].name"),
        ({"tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
        ({"thinking": {"type": "enabled", "budget_tokens": 100}}, "thinking.budget_tokens"),
        (
            {"thinking": {"type": "enabled", "budget_tokens": 2048}, "max_tokens": 2048},
            "thinking.budget_tokens",
        ),
        ({"mcp_servers": []}, "mcp_servers"),
        ({"made_up": 1}, "made_up"),
        ({"output_config": {"verbosity": "low"}}, "output_config.verbosity"),
    ],
)
def test_refusals_name_the_messages_field(request_fields: dict[str, Any], param: str) -> None:
    error = refused(body(**request_fields))
    assert (error.status, error.param) == (400, param), error.message


def test_the_canonical_gate_speaks_messages_words() -> None:
    # Thinking on a model that does not reason: refused by the chat gate, named as thinking.
    error = refused(body(thinking={"type": "enabled", "budget_tokens": 1024}, max_tokens=4096))
    assert error.param == "thinking"
    assert "'thinking'" in error.message and "reasoning_effort" not in error.message


def test_an_unknown_model_is_a_404() -> None:
    error = refused(body(model="no-such-model"))
    assert (error.status, error.param) == (404, "model")


def test_max_tokens_is_capped_by_the_model() -> None:
    call = parse_messages_request(orjson.dumps(body(max_tokens=10**9)), CATALOG)
    assert call.max_output_tokens == call.model.max_output_tokens
