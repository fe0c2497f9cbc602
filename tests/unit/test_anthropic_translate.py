"""OpenAI chat <-> Anthropic Messages translation (pure: no HTTP)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiport.v1 import text_pb2

from services.common.canonical_answer import chat_usage_chunk
from services.common.canonical_chat import from_chat_body
from services.common.usage import Usage
from services.providers.adapters.anthropic_messages_translate import (
    JSON_OBJECT_INSTRUCTION,
    MessagesStream,
    finish_reason,
    messages_request,
    openai_completion,
    openai_usage,
)
from services.providers.adapters.openai_chat_translate import (
    ChunkTranslator,
    Identity,
    public_completion,
)
from services.providers.errors import UpstreamError, UpstreamProtocolError
from tests.unit.canonical_answers import chunk_json, completion_json

MODEL = "claude-sonnet-4-6-20260101"
API_KEY = "sk-ant-api03-0123456789abcdefghij"
WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
PNG_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGP4z8DwHwAFAAH/"
    "iZk9HQAAAABJRU5ErkJggg=="
)


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def call(call_id: str, name: str = "get_weather", arguments: str = '{"city":"Bandung"}') -> Any:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def build(messages: list[dict[str, Any]], stream: bool = False, **params: Any) -> dict[str, Any]:
    chat = from_chat_body({"messages": messages, "max_tokens": 64, **params})
    return messages_request(chat, MODEL, stream)


def rejected(messages: list[dict[str, Any]], **params: Any) -> str:
    with pytest.raises(UpstreamError) as caught:
        build(messages, **params)
    assert caught.value.kind == "rejected"
    return caught.value.message


# --- request: messages -------------------------------------------------------------------


def test_minimal_request() -> None:
    assert build([user("Apa kabar?")]) == {
        "model": MODEL,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": [text("Apa kabar?")]}],
    }
    assert build([user("Hi")], stream=True)["stream"] is True


def test_system_and_developer_messages_become_system_blocks_in_order() -> None:
    body = build(
        [
            {"role": "system", "content": "You are terse."},
            user("Hi"),
            {"role": "developer", "content": [text("Answer in Indonesian."), text("  ")]},
            {"role": "assistant", "content": "Halo"},
            {"role": "system", "content": ""},
            user("Lagi"),
        ]
    )
    assert body["system"] == [text("You are terse."), text("Answer in Indonesian.")]
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]


def test_consecutive_same_role_messages_are_merged() -> None:
    body = build(
        [
            user("one"),
            user([text("two"), text("three")]),
            {"role": "assistant", "content": "a"},
            {"role": "assistant", "content": [text("b")]},
            user("four"),
        ]
    )
    assert body["messages"] == [
        {"role": "user", "content": [text("one"), text("two"), text("three")]},
        {"role": "assistant", "content": [text("a"), text("b")]},
        {"role": "user", "content": [text("four")]},
    ]


def test_blank_messages_are_dropped_and_their_neighbours_merged() -> None:
    body = build([user("one"), {"role": "assistant", "content": "   "}, user("two")])
    assert body["messages"] == [{"role": "user", "content": [text("one"), text("two")]}]


def test_conversation_opening_with_the_assistant_gets_a_user_turn_first() -> None:
    body = build([{"role": "assistant", "content": "Selamat datang!"}, user("Hi")])
    assert body["messages"][0] == {"role": "user", "content": [text(".")]}
    assert body["messages"][1]["role"] == "assistant"


def test_trailing_assistant_message_is_a_prefill_without_trailing_whitespace() -> None:
    body = build([user("Hi"), {"role": "assistant", "content": "The answer is \n"}])
    assert body["messages"][-1] == {"role": "assistant", "content": [text("The answer is")]}


def test_no_user_or_assistant_content_is_rejected() -> None:
    message = rejected([{"role": "system", "content": "only a system prompt"}, user("  ")])
    assert "no user or assistant content" in message


@pytest.mark.parametrize(
    ("url", "source"),
    [
        (
            f"data:image/png;base64,{PNG_B64}",
            {"type": "base64", "media_type": "image/png", "data": PNG_B64},
        ),
        (
            "data:image/jpg;base64,/9j/4AAQ",
            {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"},
        ),
        (
            "DATA:Image/WebP;name=x.webp;base64,UklGR",
            {"type": "base64", "media_type": "image/webp", "data": "UklGR"},
        ),
        ("https://example.com/cat.png", {"type": "url", "url": "https://example.com/cat.png"}),
        ("http://example.com/cat.gif", {"type": "url", "url": "http://example.com/cat.gif"}),
    ],
)
def test_image_parts(url: str, source: dict[str, Any]) -> None:
    part = {"type": "image_url", "image_url": {"url": url, "detail": "high"}}
    body = build([user([text("What is this?"), part])])
    assert body["messages"][0]["content"] == [
        text("What is this?"),
        {"type": "image", "source": source},
    ]


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("data:image/bmp;base64,Qk0=", "'image/bmp' is not supported"),
        ("data:image/png,rawbytes", "base64"),
        ("data:image/png;base64,", "base64"),
        ("ftp://example.com/cat.png", "http(s)"),
    ],
)
def test_unusable_images_are_rejected_with_a_clear_message(url: str, needle: str) -> None:
    message = rejected([user([{"type": "image_url", "image_url": {"url": url}}])])
    assert needle in message
    assert message.startswith("messages[0][0]")


# --- request: tools ----------------------------------------------------------------------


def test_tool_calls_and_results_become_paired_blocks() -> None:
    body = build(
        [
            user("Weather in Bandung and Bogor?"),
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [call("toolu_01"), call("toolu_02", arguments='{"city":"Bogor"}')],
            },
            {"role": "tool", "tool_call_id": "toolu_01", "content": "22C"},
            {"role": "tool", "tool_call_id": "toolu_02", "content": [text("25C"), text("rain")]},
            user("Which is warmer?"),
        ],
        tools=[WEATHER],
    )
    assert body["messages"] == [
        {"role": "user", "content": [text("Weather in Bandung and Bogor?")]},
        {
            "role": "assistant",
            "content": [
                text("Checking."),
                {
                    "type": "tool_use",
                    "id": "toolu_01",
                    "name": "get_weather",
                    "input": {"city": "Bandung"},
                },
                {
                    "type": "tool_use",
                    "id": "toolu_02",
                    "name": "get_weather",
                    "input": {"city": "Bogor"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": "22C"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_02",
                    "content": [text("25C"), text("rain")],
                },
                text("Which is warmer?"),
            ],
        },
    ]


def test_tool_results_go_first_in_their_user_turn() -> None:
    body = build(
        [
            user("go"),
            {"role": "assistant", "content": None, "tool_calls": [call("toolu_01")]},
            user("(the tool may be slow)"),
            {"role": "tool", "tool_call_id": "toolu_01", "content": ""},
        ]
    )
    assert body["messages"][-1]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_01"},  # empty result: no content
        text("(the tool may be slow)"),
    ]


def test_foreign_tool_ids_are_made_to_fit_on_both_sides() -> None:
    body = build(
        [
            user("go"),
            {"role": "assistant", "content": None, "tool_calls": [call("functions.get_weather:0")]},
            {"role": "tool", "tool_call_id": "functions.get_weather:0", "content": "22C"},
        ]
    )
    assert body["messages"][1]["content"][0]["id"] == "functions_get_weather_0"
    assert body["messages"][2]["content"][0]["tool_use_id"] == "functions_get_weather_0"


def test_empty_tool_arguments_are_an_empty_object() -> None:
    body = build(
        [
            user("go"),
            {"role": "assistant", "content": None, "tool_calls": [call("t1", arguments=" ")]},
        ]
    )
    assert body["messages"][1]["content"][0]["input"] == {}


@pytest.mark.parametrize(
    ("arguments", "needle"), [('{"city": ', "not valid JSON"), ("[1, 2]", "JSON object")]
)
def test_bad_tool_arguments_are_a_client_error(arguments: str, needle: str) -> None:
    message = rejected(
        [
            user("go"),
            {"role": "assistant", "content": None, "tool_calls": [call("t1", arguments=arguments)]},
        ]
    )
    assert needle in message
    assert "messages[1].tool_calls[0].function.arguments" in message


def test_tool_definitions() -> None:
    bare = {"type": "function", "function": {"name": "ping"}}
    untyped = {
        "type": "function",
        "function": {"name": "echo", "parameters": {"properties": {"x": {}}}, "strict": True},
    }
    body = build([user("go")], tools=[WEATHER, bare, untyped])
    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": "Current weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
        {"name": "ping", "input_schema": {"type": "object", "properties": {}}},
        {"name": "echo", "input_schema": {"properties": {"x": {}}, "type": "object"}},
    ]
    assert "tool_choice" not in body


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("none", None, {"type": "none"}),
        ("required", None, {"type": "any"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            None,
            {"type": "tool", "name": "get_weather"},
        ),
        (None, True, None),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("auto", False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            False,
            {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        ),
        ("none", False, {"type": "none"}),
    ],
)
def test_tool_choice(choice: Any, parallel: bool | None, expected: dict[str, Any] | None) -> None:
    params: dict[str, Any] = {"tools": [WEATHER]}
    if choice is not None:
        params["tool_choice"] = choice
    if parallel is not None:
        params["parallel_tool_calls"] = parallel
    assert build([user("go")], **params).get("tool_choice") == expected


# --- request: parameters -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"temperature": 0.3}, {"temperature": 0.3}),
        ({"temperature": 1.7}, {"temperature": 1.0}),  # clamped to Anthropic's maximum
        ({"temperature": 2}, {"temperature": 1.0}),
        ({"top_p": 0.8}, {"top_p": 0.8}),
        ({"temperature": 0.5, "top_p": 0.8}, {"temperature": 0.5}),
        ({"stop": "END"}, {"stop_sequences": ["END"]}),
        ({"stop": ["a", "b"]}, {"stop_sequences": ["a", "b"]}),
        ({"stop": []}, {}),
        ({"user": "user-42"}, {"metadata": {"user_id": "user-42"}}),
        ({"user": "x" * 257}, {}),
        ({"n": 1}, {}),
        (
            {
                "seed": 7,
                "presence_penalty": 0.5,
                "frequency_penalty": 0.5,
                "logit_bias": {"50256": -100},
                "logprobs": True,
                "top_logprobs": 3,
                "response_format": {"type": "text"},
            },
            {},
        ),
    ],
)
def test_parameters(params: dict[str, Any], expected: dict[str, Any]) -> None:
    body = build([user("Hi")], **params)
    base = {"model", "max_tokens", "messages"}
    assert {k: v for k, v in body.items() if k not in base} == expected


def test_n_above_one_is_rejected() -> None:
    assert rejected([user("Hi")], n=2) == "n > 1 is not supported by this model"


def test_what_the_typed_call_leaves_unset_reads_as_not_given() -> None:
    chat = from_chat_body({"messages": [user("go")], "max_tokens": 64, "tools": [WEATHER]})
    chat.request.tool_choice.mode = text_pb2.ToolChoice.MODE_UNSPECIFIED  # set, but no mode
    chat.request.tools[0].function.parameters.Clear()  # present and empty: {}
    chat.request.tools[0].function.parameters.update({"properties": {"n": {"minimum": 1}}})
    body = messages_request(chat, MODEL, False)
    assert "tool_choice" not in body
    # Struct numbers are doubles; a schema keyword's whole number is an integer again.
    schema = body["tools"][0]["input_schema"]
    assert schema == {"type": "object", "properties": {"n": {"minimum": 1}}}
    assert type(schema["properties"]["n"]["minimum"]) is int


def test_a_call_without_max_tokens_fails_loudly() -> None:
    chat = from_chat_body({"messages": [user("Hi")], "max_tokens": 64})
    chat.request.ClearField("max_tokens")  # e.g. a provider's drop_params naming it
    with pytest.raises(ValueError, match="max_tokens"):
        messages_request(chat, MODEL, False)


def test_response_format_becomes_a_system_instruction() -> None:
    body = build(
        [{"role": "system", "content": "Be terse."}, user("List colours")],
        response_format={"type": "json_object"},
    )
    assert body["system"] == [text("Be terse."), text(JSON_OBJECT_INSTRUCTION)]
    # Keys not in sorted order: the model is shown them in the client's order.
    schema = {
        "type": "object",
        "properties": {"zeta": {"type": "string"}, "colours": {"type": "array"}},
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "palette", "schema": schema}}
    (instruction,) = build([user("List colours")], response_format=fmt)["system"]
    assert "(palette)" in instruction["text"]
    assert instruction["text"].endswith(orjson.dumps(schema).decode())


@pytest.mark.parametrize(
    ("effort", "max_tokens", "budget"),
    [
        ("low", 64_000, 1024),
        ("medium", 64_000, 4096),
        ("high", 64_000, 16_384),
        ("high", 5000, 2500),  # at most half of max_tokens
        ("low", 2048, 1024),
        ("low", 2047, None),  # 1024 would leave too little: no thinking, max_tokens untouched
        ("high", 64, None),
    ],
)
def test_reasoning_effort_maps_to_a_thinking_budget(
    effort: str, max_tokens: int, budget: int | None
) -> None:
    body = messages_request(
        from_chat_body(
            {"messages": [user("Think")], "max_tokens": max_tokens, "reasoning_effort": effort}
        ),
        MODEL,
        False,
    )
    assert body["max_tokens"] == max_tokens
    if budget is None:
        assert "thinking" not in body
    else:
        assert body["thinking"] == {"type": "enabled", "budget_tokens": budget}
        assert body["thinking"]["budget_tokens"] < body["max_tokens"]


def think(messages: list[dict[str, Any]], **params: Any) -> dict[str, Any]:
    return messages_request(
        from_chat_body(
            {"messages": messages, "max_tokens": 8000, "reasoning_effort": "medium", **params}
        ),
        MODEL,
        False,
    )


def test_thinking_drops_temperature_and_low_top_p() -> None:
    body = think([user("Think")], temperature=0.2, top_p=0.9)
    assert body["thinking"]["type"] == "enabled"
    assert "temperature" not in body and "top_p" not in body
    assert think([user("Think")], top_p=0.97)["top_p"] == 0.97


@pytest.mark.parametrize(
    "choice", ["required", {"type": "function", "function": {"name": "get_weather"}}]
)
def test_forced_tool_use_wins_over_thinking(choice: Any) -> None:
    body = think([user("go")], tools=[WEATHER], tool_choice=choice, temperature=0.2)
    assert "thinking" not in body
    assert body["temperature"] == 0.2


def test_thinking_stays_with_auto_tool_choice() -> None:
    assert "thinking" in think([user("go")], tools=[WEATHER], tool_choice="auto")


def test_no_thinking_when_continuing_a_tool_loop_or_prefilling() -> None:
    loop = [
        user("go"),
        {"role": "assistant", "content": None, "tool_calls": [call("toolu_01")]},
        {"role": "tool", "tool_call_id": "toolu_01", "content": "22C"},
    ]
    assert "thinking" not in think(loop, tools=[WEATHER])
    assert "thinking" in think(
        [*loop, {"role": "assistant", "content": "Warm."}, user("And tomorrow?")], tools=[WEATHER]
    )
    assert "thinking" not in think([user("Hi"), {"role": "assistant", "content": "Well,"}])


# --- response ----------------------------------------------------------------------------

USAGE = {
    "input_tokens": 12,
    "cache_creation_input_tokens": 100,
    "cache_read_input_tokens": 2000,
    "output_tokens": 40,
    "service_tier": "standard",
}
OPENAI_USAGE = {
    "prompt_tokens": 2112,
    "completion_tokens": 40,
    "total_tokens": 2152,
    # Cache writes are reported apart (billed at the cache-write rate), not publicly.
    "prompt_tokens_details": {"cached_tokens": 2000, "cache_write_tokens": 100},
    "completion_tokens_details": {"reasoning_tokens": 0},
}


def message(
    content: list[Any], stop_reason: str = "end_turn", usage: Any = USAGE
) -> dict[str, Any]:
    return {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage,
    }


def test_usage_counts_cache_reads_and_writes_in_the_prompt() -> None:
    assert openai_usage(USAGE) == OPENAI_USAGE
    assert openai_usage({"input_tokens": 5, "output_tokens": 1})["prompt_tokens_details"] == {
        "cached_tokens": 0
    }


def test_text_answer() -> None:
    out = openai_completion(message([text("Baik, "), text("terima kasih!")]))
    assert out == {
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Baik, terima kasih!"},
                "finish_reason": "stop",
            }
        ],
        "usage": OPENAI_USAGE,
    }


def test_thinking_and_tool_use_answer() -> None:
    out = openai_completion(
        message(
            [
                {"type": "thinking", "thinking": "Need the weather.", "signature": "EqQBCgIYAh"},
                {"type": "redacted_thinking", "data": "EmwKAhgB"},
                text("Let me check."),
                {
                    "type": "tool_use",
                    "id": "toolu_01A",
                    "name": "get_weather",
                    "input": {"city": "Bandung", "days": 2},
                },
                {"type": "tool_use", "id": "toolu_01B", "name": "ping", "input": {}},
            ],
            stop_reason="tool_use",
        )
    )
    (choice,) = out["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {
        "role": "assistant",
        "content": "Let me check.",
        "tool_calls": [
            {
                "id": "toolu_01A",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Bandung","days":2}'},
            },
            {
                "id": "toolu_01B",
                "type": "function",
                "function": {"name": "ping", "arguments": "{}"},
            },
        ],
        "reasoning_content": "Need the weather.",
    }


def test_tool_only_answer_has_null_content_and_empty_answer_has_empty_content() -> None:
    tool_only = openai_completion(
        message([{"type": "tool_use", "id": "t", "name": "n", "input": {}}], "tool_use")
    )
    assert tool_only["choices"][0]["message"]["content"] is None
    assert openai_completion(message([], "max_tokens"))["choices"][0]["message"] == {
        "role": "assistant",
        "content": "",
    }


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("model_context_window_exceeded", "length"),
        ("something_new", "stop"),
        (None, "stop"),
    ],
)
def test_stop_reasons(stop_reason: Any, finish: str) -> None:
    assert finish_reason(stop_reason) == finish


@pytest.mark.parametrize(
    "answer",
    [
        [1, 2],
        {"type": "message", "content": "text, not blocks", "usage": USAGE},
        message(["not a block"]),
        message([text("no usage")], usage=None),
        message([{"type": "tool_use", "id": "t", "name": "n", "input": "not an object"}]),
        message([{"type": "tool_use", "name": "n", "input": {}}]),
    ],
)
def test_malformed_answers(answer: Any) -> None:
    with pytest.raises(UpstreamProtocolError):
        openai_completion(answer)


def test_whole_answer_through_the_public_half() -> None:
    identity = Identity("chatcmpl-aiport0001", "claude-sonnet-4-6", 1767225600)
    completion, usage = public_completion(openai_completion(message([text("Halo")])), identity)
    assert usage == Usage(
        prompt_tokens=2112,
        completion_tokens=40,
        cached_prompt_tokens=2000,
        cache_write_prompt_tokens=100,
    )
    body = completion_json(completion, usage)
    # The public usage is OpenAI's: no cache-write field.
    assert body["usage"]["prompt_tokens_details"] == {"cached_tokens": 2000}
    assert body["id"] == "chatcmpl-aiport0001" and body["model"] == "claude-sonnet-4-6"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Halo"}


def test_tool_call_round_trip_keeps_the_id() -> None:
    answer = openai_completion(
        message(
            [
                {
                    "type": "tool_use",
                    "id": "toolu_01Xyz",
                    "name": "get_weather",
                    "input": {"city": "Bandung"},
                }
            ],
            "tool_use",
        )
    )
    assistant = answer["choices"][0]["message"]
    (tool_call,) = assistant["tool_calls"]
    body = build(
        [
            user("Weather?"),
            assistant,
            {"role": "tool", "tool_call_id": tool_call["id"], "content": "22C"},
        ]
    )
    tool_use = body["messages"][1]["content"][0]
    result = body["messages"][2]["content"][0]
    assert tool_use == {
        "type": "tool_use",
        "id": "toolu_01Xyz",
        "name": "get_weather",
        "input": {"city": "Bandung"},
    }
    assert result == {"type": "tool_result", "tool_use_id": "toolu_01Xyz", "content": "22C"}


# --- streaming ---------------------------------------------------------------------------


def start(usage: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    msg = message(
        [],
        usage=usage
        or {
            "input_tokens": 25,
            "cache_read_input_tokens": 10,
            "cache_creation_input_tokens": 0,
            "output_tokens": 1,
        },
    )
    msg["stop_reason"] = None
    return "message_start", {"type": "message_start", "message": msg}


def block_start(index: int, block: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return "content_block_start", {
        "type": "content_block_start",
        "index": index,
        "content_block": block,
    }


def delta(index: int, value: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return "content_block_delta", {"type": "content_block_delta", "index": index, "delta": value}


def block_stop(index: int) -> tuple[str, dict[str, Any]]:
    return "content_block_stop", {"type": "content_block_stop", "index": index}


def finish(stop_reason: str, output_tokens: int, **usage: int) -> list[tuple[str, dict[str, Any]]]:
    return [
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": output_tokens, **usage},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]


PING = ("ping", {"type": "ping"})


def run(events: list[tuple[str, Any]]) -> tuple[list[dict[str, Any]], MessagesStream]:
    stream = MessagesStream(api_key=API_KEY)
    out: list[dict[str, Any]] = []
    for name, payload in events:
        data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        out += stream.feed(name, data)
    return out, stream


def chunk(delta_: dict[str, Any], finish_: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": delta_, "finish_reason": finish_}]}


def usage_chunk(prompt: int, completion: int, cached: int) -> dict[str, Any]:
    return {
        "choices": [],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
    }


def test_text_stream() -> None:
    out, stream = run(
        [
            start(),
            block_start(0, text("")),
            PING,
            delta(0, {"type": "text_delta", "text": "Halo"}),
            delta(0, {"type": "text_delta", "text": ""}),
            delta(0, {"type": "text_delta", "text": " dunia"}),
            block_stop(0),
            *finish("end_turn", 15),
        ]
    )
    assert out == [
        chunk({"role": "assistant"}),
        chunk({"content": "Halo"}),
        chunk({"content": " dunia"}),
        chunk({}, "stop"),
        usage_chunk(35, 15, 10),
    ]
    assert stream.done


def test_tool_use_stream_by_index() -> None:
    out, _ = run(
        [
            start(),
            block_start(0, text("")),
            delta(0, {"type": "text_delta", "text": "Checking."}),
            block_stop(0),
            block_start(
                1, {"type": "tool_use", "id": "toolu_A", "name": "get_weather", "input": {}}
            ),
            delta(1, {"type": "input_json_delta", "partial_json": ""}),
            delta(1, {"type": "input_json_delta", "partial_json": '{"city": "Ban'}),
            delta(1, {"type": "input_json_delta", "partial_json": 'dung"}'}),
            block_stop(1),
            block_start(2, {"type": "tool_use", "id": "toolu_B", "name": "ping", "input": {}}),
            block_stop(2),  # no input streamed: "{}"
            *finish("tool_use", 60),
        ]
    )
    assert out[1:] == [
        chunk({"content": "Checking."}),
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "toolu_A",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": ""},
                    }
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": "Ban'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'dung"}'}}]}),
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 1,
                        "id": "toolu_B",
                        "type": "function",
                        "function": {"name": "ping", "arguments": ""},
                    }
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}),
        chunk({}, "tool_calls"),
        usage_chunk(35, 60, 10),
    ]


def test_thinking_stream() -> None:
    out, _ = run(
        [
            start(),
            block_start(0, {"type": "thinking", "thinking": "", "signature": ""}),
            delta(0, {"type": "thinking_delta", "thinking": "Let me think"}),
            delta(0, {"type": "signature_delta", "signature": "EqQBCgIYAhIM"}),
            block_stop(0),
            block_start(1, {"type": "redacted_thinking", "data": "EmwKAhgB"}),
            block_stop(1),
            block_start(2, text("")),
            delta(2, {"type": "text_delta", "text": "42"}),
            delta(2, {"type": "citations_delta", "citation": {}}),
            block_stop(2),
            *finish("max_tokens", 1024),
        ]
    )
    assert out[1:] == [
        chunk({"reasoning_content": "Let me think"}),
        chunk({"content": "42"}),
        chunk({}, "length"),
        usage_chunk(35, 1024, 10),
    ]


def test_usage_counts_reported_later_win() -> None:
    out, _ = run([start(), *finish("end_turn", 9, input_tokens=30, cache_read_input_tokens=0)])
    assert out[-1] == usage_chunk(30, 9, 0)


def test_stream_through_the_chunk_translator() -> None:
    identity = Identity("chatcmpl-aiport0001", "claude-sonnet-4-6", 1767225600)
    translator = ChunkTranslator(identity, prompt_chars=10)
    chunks, _ = run(
        [
            start(),
            block_start(0, text("")),
            delta(0, {"type": "text_delta", "text": "Hi"}),
            block_stop(0),
            *finish("end_turn", 3),
        ]
    )
    public = [chunk_json(c) for item in chunks for c in translator.feed(item)]
    assert [c["choices"][0]["delta"] for c in public] == [
        {"role": "assistant"},
        {"content": "Hi"},
        {},
    ]
    assert public[-1]["choices"][0]["finish_reason"] == "stop"
    # No usage chunk any more: finish() hands the usage over for its own event.
    held, usage = translator.finish()
    assert held == []
    assert usage == Usage(prompt_tokens=35, completion_tokens=3, cached_prompt_tokens=10)


def test_streamed_cache_writes_reach_the_usage_apart_but_not_the_public_chunk() -> None:
    identity = Identity("chatcmpl-aiport0001", "claude-sonnet-4-6", 1767225600)
    translator = ChunkTranslator(identity, prompt_chars=10)
    written = {"input_tokens": 5, "cache_read_input_tokens": 10, "cache_creation_input_tokens": 40}
    chunks, _ = run(
        [
            start({**written, "output_tokens": 1}),
            block_start(0, text("Hi")),
            block_stop(0),
            *finish("end_turn", 3),
        ]
    )
    for item in chunks:
        translator.feed(item)
    held, usage = translator.finish()
    assert held == []
    assert usage == Usage(
        prompt_tokens=55, completion_tokens=3, cached_prompt_tokens=10, cache_write_prompt_tokens=40
    )
    # The usage chunk the client gets (written from the usage event) has no cache-write field.
    public = orjson.loads(
        chat_usage_chunk(identity.completion_id, identity.model, identity.created, usage, 0)
    )
    assert public["usage"] == {
        "prompt_tokens": 55,
        "completion_tokens": 3,
        "total_tokens": 58,
        "prompt_tokens_details": {"cached_tokens": 10},
        "completion_tokens_details": {"reasoning_tokens": 0},
        "cost_idr": "0",
    }


@pytest.mark.parametrize("name", ["error", "message"])
def test_error_event_is_a_failure_with_a_scrubbed_message(name: str) -> None:
    error = {
        "type": "error",
        "error": {"type": "overloaded_error", "message": f"Overloaded (key {API_KEY})"},
    }
    with pytest.raises(UpstreamError) as caught:
        run([start(), block_start(0, text("")), (name, error)])
    assert caught.value.kind == "failed"
    assert caught.value.message == "upstream stream error: Overloaded (key [redacted])"


def test_unknown_events_and_anything_after_message_stop_are_ignored() -> None:
    out, stream = run([start(), ("future_event", {"type": "future_event"}), *finish("end_turn", 1)])
    assert stream.done
    more, _ = run([start(), *finish("end_turn", 1), block_start(0, text("late"))])
    assert len(more) == len(out) == 3


@pytest.mark.parametrize(
    "events",
    [
        [block_start(0, text(""))],  # before message_start
        [start(), start()],
        [start(), delta(0, {"type": "text_delta", "text": "x"})],  # block never started
        [
            start(),
            block_start(0, text("")),
            block_stop(0),
            delta(0, {"type": "text_delta", "text": "x"}),
        ],
        [start(), block_start(0, text("")), block_start(0, text(""))],
        [
            start(),
            block_start(0, text("")),
            delta(0, {"type": "input_json_delta", "partial_json": "{"}),
        ],
        [
            start(),
            block_start(0, {"type": "tool_use", "id": "t", "name": "n", "input": {}}),
            delta(0, {"type": "input_json_delta"}),
        ],
        [start(), block_start(0, {"type": "tool_use", "input": {}})],
        [
            start(),
            ("content_block_start", {"type": "content_block_start", "content_block": text("")}),
        ],
        [start(), ("message_stop", b"[1, 2]")],
        [("message_start", {"type": "message_start"})],
    ],
)
def test_protocol_violations(events: list[tuple[str, Any]]) -> None:
    with pytest.raises(UpstreamProtocolError):
        run(events)


def test_bad_json_in_an_event_is_an_error() -> None:
    with pytest.raises(orjson.JSONDecodeError):
        run([start(), ("content_block_delta", b"{not json")])


# --- thinking instruction (per-model policy) -------------------------------------------------


def test_adaptive_control_sends_adaptive_thinking_and_effort() -> None:
    adaptive = {"control": "adaptive", "type": "enabled"}
    out = build([user("Hi")], reasoning_effort="medium", thinking=adaptive, max_tokens=100)
    assert out["thinking"] == {"type": "adaptive"}
    assert out["output_config"] == {"effort": "medium"}
    # No fixed budget, so no minimum max_tokens either; no temperature with thinking.
    assert "budget_tokens" not in out["thinking"]
    out = build([user("Hi")], reasoning_effort="low", thinking=adaptive, temperature=0.5)
    assert out["thinking"] == {"type": "adaptive"} and "temperature" not in out
    # The tool-loop, prefill and forced-tool rules apply to adaptive thinking too.
    loop = [
        user("Weather?"),
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [call("c1")],
            "reasoning_content": "r",
        },
        {"role": "tool", "tool_call_id": "c1", "content": "22C"},
    ]
    out = build(loop, reasoning_effort="high", thinking=adaptive)
    assert "thinking" not in out and "output_config" not in out
    # reasoning_content has no place in Anthropic's turns (no signature to send back).
    assert all("reasoning_content" not in block for m in out["messages"] for block in m["content"])


def test_disabled_thinking_and_budget_control() -> None:
    off = build([user("Hi")], thinking={"control": "budget", "type": "disabled"})
    assert "thinking" not in off
    budget = {"control": "budget", "type": "enabled"}
    out = build([user("Hi")], reasoning_effort="low", thinking=budget, max_tokens=4096)
    assert out["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert "output_config" not in out
