"""Validation of chat requests: what is accepted, forwarded, capped or refused."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from services.common.catalog import load_catalog
from services.common.settings import PROJECT_ROOT
from services.gateway.chat_request import MAX_CONTENT_CHARS, parse_chat_request
from services.gateway.errors import PublicError

CATALOG = load_catalog(PROJECT_ROOT / "config" / "catalog.yaml")
HELLO = [{"role": "user", "content": "Hello"}]
# One array past MAX_SCHEMA_DEPTH: 1 object and 24 arrays.
DEEP: dict[str, Any] = {"type": "object", "enum": [[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]}


def parse(body: dict[str, Any]) -> Any:
    return parse_chat_request(orjson.dumps(body), CATALOG)


def refused(body: dict[str, Any] | bytes) -> PublicError:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    with pytest.raises(PublicError) as info:
        parse_chat_request(raw, CATALOG)
    return info.value


def test_defaults() -> None:
    call = parse({"messages": HELLO})
    assert call.model.id == "deepseek-v4-flash"
    assert call.stream is False
    # No max_tokens from the client: the model's own cap bounds the upstream; the
    # default model does not reason, so its upstream is told not to think.
    assert call.upstream_request == {
        "messages": HELLO,
        "max_tokens": 8192,
        "thinking": {"control": "toggle", "type": "disabled"},
    }
    assert call.max_output_tokens == 8192
    assert call.choices == 1


def test_max_tokens_is_capped_by_the_model() -> None:
    assert parse({"messages": HELLO, "max_tokens": 10**9}).max_output_tokens == 8192
    assert parse({"messages": HELLO, "max_tokens": 50}).upstream_request["max_tokens"] == 50
    both = parse({"messages": HELLO, "max_tokens": 70, "max_completion_tokens": 60})
    assert both.max_output_tokens == 60


def test_unknown_parameters_are_dropped() -> None:
    call = parse({"messages": HELLO, "store": True, "x_custom": [1], "metadata": {"a": "b"}})
    assert set(call.upstream_request) == {"messages", "max_tokens", "thinking"}


def test_standard_parameters_are_forwarded() -> None:
    body = {
        "messages": HELLO,
        "temperature": 0.7,
        "top_p": 0.9,
        "stop": "END",
        "seed": 42,
        "n": 3,
        "presence_penalty": -1,
        "frequency_penalty": 1.5,
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
        "logit_bias": {"50256": -100},
        "logprobs": True,
        "top_logprobs": 2,
        "user": "end-user-7",
    }
    call = parse(body)
    for key, value in body.items():
        if key != "stop":
            assert call.upstream_request[key] == value
    # One stop string is a list of one: the canonical call has one shape for it.
    assert call.upstream_request["stop"] == ["END"]
    assert call.choices == 3


def test_a_schema_at_the_depth_limit_passes() -> None:
    inner = DEEP["enum"][0]  # 23 arrays: with its object, 24 levels
    schema = {"type": "object", "enum": inner}
    tool = {"type": "function", "function": {"name": "f", "parameters": schema}}
    assert parse({"messages": HELLO, "tools": [tool]}).upstream_request["tools"] == [tool]


def test_response_format_keeps_only_what_openai_defines() -> None:
    fmt = parse({"messages": HELLO, "response_format": {"type": "json_object", "x": 1}})
    assert fmt.upstream_request["response_format"] == {"type": "json_object"}
    spec = {"name": "out", "schema": {"type": "object"}, "strict": True, "extra": 1}
    fmt = parse(
        {"messages": HELLO, "response_format": {"type": "json_schema", "json_schema": spec}}
    )
    assert fmt.upstream_request["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": True},
    }


def test_content_parts_and_roles() -> None:
    call = parse(
        {
            "messages": [
                {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                    ],
                },
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "42"},
            ]
        }
    )
    messages = call.upstream_request["messages"]
    assert messages[2]["content"] is None
    assert messages[2]["tool_calls"][0]["id"] == "call_1"
    assert messages[3]["tool_call_id"] == "call_1"
    assert call.image_parts == 1


def test_content_cap_counts_characters_not_bytes() -> None:
    ok = parse({"messages": [{"role": "user", "content": "ü" * MAX_CONTENT_CHARS}]})
    assert ok.prompt_chars == MAX_CONTENT_CHARS
    assert ok.prompt_bytes == 2 * MAX_CONTENT_CHARS
    over = refused(
        {
            "messages": [
                {"role": "system", "content": "a" * 10_000},
                {"role": "user", "content": [{"type": "text", "text": "b" * 10_001}]},
            ]
        }
    )
    assert over.status == 400 and over.param == "messages"


def test_reasoning_effort_only_on_reasoning_models() -> None:
    assert parse({"model": "gpt-5.4", "messages": HELLO, "reasoning_effort": "high"})
    error = refused({"messages": HELLO, "reasoning_effort": "high"})
    assert error.param == "reasoning_effort" and "does not support" in error.message


def test_tools_and_tool_choice() -> None:
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}
    call = parse(
        {
            "messages": HELLO,
            "tools": [tool],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "parallel_tool_calls": False,
        }
    )
    assert call.upstream_request["tool_choice"]["function"]["name"] == "get_weather"
    assert call.upstream_request["parallel_tool_calls"] is False
    # Without tools the tool settings mean nothing and are not forwarded.
    assert "tool_choice" not in parse({"messages": HELLO, "tool_choice": "auto"}).upstream_request
    assert (
        refused(
            {
                "messages": HELLO,
                "tools": [tool],
                "tool_choice": {"type": "function", "function": {"name": "other"}},
            }
        ).param
        == "tool_choice"
    )


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": HELLO, "model": 7}, "model"),
        ({"messages": "hi"}, "messages"),
        ({"messages": [{"role": "user"}]}, "messages[0].content"),
        ({"messages": [{"role": "assistant"}]}, "messages[0].content"),
        (
            {"messages": [{"role": "user", "content": [{"type": "audio"}]}]},
            "messages[0].content[0].type",
        ),
        ({"messages": HELLO, "temperature": True}, "temperature"),
        ({"messages": HELLO, "temperature": -0.1}, "temperature"),
        ({"messages": HELLO, "top_p": 1.5}, "top_p"),
        ({"messages": HELLO, "n": 9}, "n"),
        ({"messages": HELLO, "max_tokens": 1.5}, "max_tokens"),
        ({"messages": HELLO, "max_tokens": "7"}, "max_tokens"),
        ({"messages": HELLO, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        (
            {"messages": HELLO, "tools": [{"type": "function", "function": {"name": "bad name"}}]},
            "tools[0].function.name",
        ),
        ({"messages": HELLO, "response_format": {"type": "yaml"}}, "response_format"),
        (
            {"messages": HELLO, "response_format": {"type": "json_schema", "json_schema": {}}},
            "response_format.json_schema.name",
        ),
        (
            {
                "messages": HELLO,
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "o", "strict": "yes"},
                },
            },
            "response_format.json_schema.strict",
        ),
        ({"messages": [{"role": "user", "content": []}]}, "messages[0].content"),
        (
            {
                "messages": HELLO,
                "tools": [{"type": "function", "function": {"name": "f", "parameters": DEEP}}],
            },
            "tools[0].function.parameters",
        ),
        (
            {
                "messages": HELLO,
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "o", "schema": DEEP},
                },
            },
            "response_format.json_schema.schema",
        ),
        ({"messages": HELLO, "logit_bias": {"1": 500}}, "logit_bias"),
        ({"messages": HELLO, "stream_options": "yes"}, "stream_options"),
    ],
)
def test_bad_values_name_their_parameter(body: dict[str, Any], param: str) -> None:
    error = refused(body)
    assert error.status == 400
    assert error.param == param


@pytest.mark.parametrize("raw", [b"", b"   ", b"{", b"null", b"[]", b'"text"'])
def test_bodies_that_are_not_json_objects(raw: bytes) -> None:
    assert refused(raw).status == 400


@pytest.mark.parametrize("model", ["nope", "gpt-image-2", "seedance-2.0-fast"])
def test_unknown_and_non_text_models_are_404(model: str) -> None:
    error = refused({"model": model, "messages": HELLO})
    assert (error.status, error.code) == (404, "MODEL_NOT_FOUND")
