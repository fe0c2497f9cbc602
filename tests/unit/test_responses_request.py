"""OpenAI Responses requests: how each field reaches the canonical chat call and the
Response's echo, and what is refused under its Responses name."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from services.common.catalog import load_catalog
from services.common.settings import PROJECT_ROOT
from services.gateway.errors import PublicError
from services.gateway.responses_request import parse_responses_request, to_chat_body

CATALOG = load_catalog(PROJECT_ROOT / "config" / "catalog.yaml")
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "deepseek-v4-flash", "input": "Hello", **fields}


def refused(request: dict[str, Any]) -> PublicError:
    with pytest.raises(PublicError) as caught:
        parse_responses_request(orjson.dumps(request), CATALOG)
    return caught.value


def test_a_string_input_is_one_user_message() -> None:
    call = parse_responses_request(orjson.dumps(body(instructions="Be brief.")), CATALOG)
    assert call.chat.model.id == "deepseek-v4-flash"
    assert call.chat.stream is False
    assert call.chat.upstream_request["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello"},
    ]
    assert call.echo.instructions == "Be brief."
    assert call.echo.tool_choice == "auto"
    assert call.echo.parallel_tool_calls is True


def test_items_make_the_conversation_with_its_tool_loop() -> None:
    chat, _ = to_chat_body(
        body(
            input=[
                {"role": "developer", "content": "Use tools."},
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "Weather in Jakarta? "},
                        {"type": "input_image", "image_url": "https://x.test/a.png"},
                    ],
                },
                {
                    "type": "reasoning",
                    "id": "rs_1",
                    "summary": [],
                    "content": [{"type": "reasoning_text", "text": "need weather"}],
                },
                {
                    "type": "message",
                    "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": "Checking.", "annotations": []}],
                },
                {
                    "type": "function_call",
                    "call_id": "call_1",
                    "name": "get_weather",
                    "arguments": '{"city":"Jakarta"}',
                },
                {
                    "type": "function_call",
                    "call_id": "call_2",
                    "name": "get_weather",
                    "arguments": '{"city":"Bogor"}',
                },
                {"type": "function_call_output", "call_id": "call_1", "output": "31C"},
                {
                    "type": "function_call_output",
                    "call_id": "call_2",
                    "output": [{"type": "input_text", "text": "27C"}],
                },
            ],
            tools=[WEATHER],
        )
    )
    assert chat["messages"] == [
        {"role": "system", "content": "Use tools."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Weather in Jakarta? "},
                {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
            ],
        },
        {
            "role": "assistant",
            "content": "Checking.",
            "reasoning_content": "need weather",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Jakarta"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Bogor"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "31C"},
        {"role": "tool", "tool_call_id": "call_2", "content": "27C"},
    ]
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": WEATHER["parameters"],
            },
        }
    ]


def test_the_tool_loop_passes_the_chat_gate() -> None:
    request = body(
        input=[
            {"role": "user", "content": "Weather?"},
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "31C"},
        ],
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        parallel_tool_calls=False,
    )
    call = parse_responses_request(orjson.dumps(request), CATALOG)
    upstream = call.chat.upstream_request
    assert upstream["messages"][1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
        ],
    }
    assert upstream["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert upstream["parallel_tool_calls"] is False
    assert call.echo.tool_choice == {"type": "function", "name": "get_weather"}
    assert call.echo.tools[0]["name"] == "get_weather"


def test_sampling_limits_and_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    chat, echo = to_chat_body(
        body(
            max_output_tokens=64,
            temperature=0.2,
            top_p=0.9,
            stream=True,
            user="u1",
            metadata={"order": "42"},
            text={
                "format": {"type": "json_schema", "name": "out", "schema": schema, "strict": True}
            },
        )
    )
    assert (chat["max_tokens"], chat["temperature"], chat["top_p"]) == (64, 0.2, 0.9)
    assert chat["stream"] is True and chat["user"] == "u1"
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "out", "schema": schema, "strict": True},
    }
    assert echo.text_format == {
        "type": "json_schema",
        "name": "out",
        "schema": schema,
        "strict": True,
    }
    assert echo.metadata == {"order": "42"}
    assert "metadata" not in chat


def test_reasoning_effort_maps_to_our_scale() -> None:
    for effort, ours in (("minimal", "low"), ("medium", "medium"), ("xhigh", "high")):
        chat, echo = to_chat_body(body(model="gpt-5.4-mini", reasoning={"effort": effort}))
        assert chat["reasoning_effort"] == ours == echo.effort
    chat, _ = to_chat_body(body(reasoning={"effort": "none", "summary": "auto"}))
    assert "reasoning_effort" not in chat


def test_dropped_fields_are_accepted() -> None:
    chat, _ = to_chat_body(
        body(
            store=False,
            include=["reasoning.encrypted_content"],
            prompt_cache_key="k",
            service_tier="auto",
            truncation="disabled",
            safety_identifier="s",
        )
    )
    assert set(chat) == {"model", "messages"}


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"store": True}, "store"),
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"prompt": {"id": "pmpt_1"}}, "prompt"),
        ({"background": True}, "background"),
        ({"frobnicate": 1}, "frobnicate"),
        ({"input": []}, "input"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
        ({"input": [{"type": "web_search_call", "id": "ws_1"}]}, "input[0].type"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            "input[0].content[0].type",
        ),
        ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
        ({"input": [{"role": "user", "content": []}]}, "input[0].content"),
        (
            {"input": [{"type": "function_call", "call_id": "", "name": "f", "arguments": "{}"}]},
            "input[0].call_id",
        ),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"tools": [{"type": "function", "name": "bad name"}]}, "tools[0].name"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"max_output_tokens": 8}, "max_output_tokens"),
        ({"temperature": 3}, "temperature"),
        ({"reasoning": {"effort": "max"}}, "reasoning.effort"),
        ({"text": {"format": {"type": "json_schema", "name": "o"}}}, "text.format.schema"),
        ({"text": {"format": {"type": "yaml"}}}, "text.format.type"),
        ({"metadata": {"k": 1}}, "metadata.k"),
        ({"model": None}, "model"),
    ],
)
def test_refusals_name_the_responses_field(fields: dict[str, Any], param: str) -> None:
    error = refused(body(**fields))
    assert (error.status, error.param) == (400, param)
    assert error.protocol == "openai"


def test_the_chat_gate_speaks_in_responses_words() -> None:
    # deepseek-v4-flash does not reason: the chat gate refuses reasoning_effort.
    error = refused(body(reasoning={"effort": "high"}))
    assert error.param == "reasoning.effort"
    assert "'reasoning.effort'" in error.message
    error = refused(body(model="no-such-model"))
    assert error.status == 404


def test_a_big_input_is_refused_as_input() -> None:
    error = refused(body(input="x" * 30_000))
    assert (error.status, error.param) == (400, "input")
    assert "input" in error.message
