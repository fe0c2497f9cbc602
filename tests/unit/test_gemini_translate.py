"""OpenAI chat <-> Gemini generateContent translation (pure; no HTTP)."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from services.common.canonical_chat import from_chat_body
from services.providers.adapters.gemini_translate import (
    THOUGHT_SIGNATURE_PLACEHOLDER,
    CallRef,
    GeminiRequestError,
    StreamTranslation,
    clean_schema,
    completion,
    decode_tool_call_id,
    encode_tool_call_id,
    finish_reason,
    generate_content_request,
    model_path,
    openai_usage,
    thinking_config,
    thinking_style,
)
from services.providers.adapters.openai_chat_translate import (
    Identity,
    UpstreamProtocolError,
    public_completion,
)
from services.providers.errors import UpstreamError

# A realistic signature: standard base64 of opaque bytes (with + and /).
SIGNATURE = base64.b64encode(bytes(range(200, 256)) + b"\x00" * 40 + bytes(range(64))).decode()
ID_CHARS = re.compile(r"[A-Za-z0-9_-]+")
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


def counter() -> Callable[[], str]:
    numbers: Iterator[int] = iter(range(10**6))
    return lambda: f"{next(numbers):016d}"


def body(messages: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return generate_content_request(
        from_chat_body({"messages": messages, "max_tokens": 256, **extra}), "gemini-3.5-flash"
    )


def model_answer(parts: list[dict[str, Any]], finish: str = "STOP") -> dict[str, Any]:
    return {
        "candidates": [
            {"content": {"role": "model", "parts": parts}, "finishReason": finish, "index": 0}
        ],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15},
    }


# --- request: messages -> contents ----------------------------------------------------------


def test_roles_system_instruction_and_generation_config() -> None:
    out = body(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in Indonesian."}]},
            {"role": "user", "content": "Halo", "name": "budi"},
            {"role": "assistant", "content": "Halo juga"},
            {"role": "user", "content": [{"type": "text", "text": "Apa kabar?"}]},
        ]
    )
    assert out == {
        "contents": [
            {"role": "user", "parts": [{"text": "Halo"}]},
            {"role": "model", "parts": [{"text": "Halo juga"}]},
            {"role": "user", "parts": [{"text": "Apa kabar?"}]},
        ],
        "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Answer in Indonesian."}]},
        "generationConfig": {"maxOutputTokens": 256},
    }


def test_model_goes_in_the_path_never_the_body() -> None:
    out = body([{"role": "user", "content": "hi"}])
    assert "model" not in out and "messages" not in out and "stream" not in out
    assert (
        model_path("gemini-3.5-flash", stream=False) == "/models/gemini-3.5-flash:generateContent"
    )
    assert (
        model_path("models/gemini-2.5-pro", stream=True)
        == "/models/gemini-2.5-pro:streamGenerateContent"
    )
    assert model_path("a b/c", stream=False) == "/models/a%20b%2Fc:generateContent"


def test_images_inline_data_and_file_data() -> None:
    png = base64.b64encode(b"\x89PNG\r\n\x1a\nrest").decode()
    out = body(
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Compare"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
                    {"type": "image_url", "image_url": {"url": "https://x.test/a/cat.JPG?s=1"}},
                    {"type": "image_url", "image_url": {"url": "https://x.test/render"}},
                ],
            }
        ]
    )
    assert out["contents"][0]["parts"] == [
        {"text": "Compare"},
        {"inlineData": {"mimeType": "image/png", "data": png}},
        {"fileData": {"fileUri": "https://x.test/a/cat.JPG?s=1", "mimeType": "image/jpeg"}},
        {"fileData": {"fileUri": "https://x.test/render"}},
    ]


@pytest.mark.parametrize("url", ["data:image/png,%89PNG", "ftp://x.test/a.png", ""])
def test_images_gemini_cannot_take(url: str) -> None:
    with pytest.raises(GeminiRequestError):
        body([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}])


def test_tool_calls_and_results_with_merged_turns() -> None:
    out = body(
        [
            {"role": "user", "content": "Weather in Jakarta and Bandung?"},
            {
                "role": "assistant",
                "content": "Let me check.",
                "tool_calls": [
                    {
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Jakarta"}'},
                    },
                    {
                        "id": "call_b",
                        "type": "function",
                        "function": {"name": "get_time", "arguments": ""},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_b", "content": "14:00"},
            {"role": "tool", "tool_call_id": "call_a", "content": '{"temp_c": 31}'},
            {"role": "user", "content": "And tomorrow?"},
        ],
        tools=[WEATHER],
    )
    assert out["contents"] == [
        {"role": "user", "parts": [{"text": "Weather in Jakarta and Bandung?"}]},
        {
            "role": "model",
            "parts": [
                {"text": "Let me check."},
                {
                    "functionCall": {"name": "get_weather", "args": {"city": "Jakarta"}},
                    # Ids from elsewhere carry no signature: Google's placeholder on the first.
                    "thoughtSignature": THOUGHT_SIGNATURE_PLACEHOLDER,
                },
                {"functionCall": {"name": "get_time", "args": {}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "get_time", "response": {"result": "14:00"}}},
                {"functionResponse": {"name": "get_weather", "response": {"temp_c": 31}}},
                {"text": "And tomorrow?"},
            ],
        },
    ]


@pytest.mark.parametrize(
    ("content", "response"),
    [
        ('{"ok": true}', {"ok": True}),
        ("[1, 2]", {"result": [1, 2]}),
        ("42", {"result": 42}),
        ('"quoted"', {"result": "quoted"}),
        ("plain words", {"result": "plain words"}),
        ([{"type": "text", "text": '{"a":'}, {"type": "text", "text": "1}"}], {"a": 1}),
    ],
)
def test_function_response_is_always_an_object(content: Any, response: dict[str, Any]) -> None:
    out = body(
        [
            {"role": "user", "content": "go"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "x1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "x1", "content": content},
        ]
    )
    assert out["contents"][2]["parts"] == [
        {"functionResponse": {"name": "f", "response": response}}
    ]


@pytest.mark.parametrize(
    ("arguments", "args"),
    [
        ("", {}),
        ('{"a":1}', {"a": 1}),
        ("[1]", {"arguments": [1]}),
        ("{oops", {"arguments": "{oops"}),
    ],
)
def test_call_arguments_become_an_object(arguments: str, args: dict[str, Any]) -> None:
    out = body(
        [
            {"role": "user", "content": "go"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "x",
                        "type": "function",
                        "function": {"name": "f", "arguments": arguments},
                    }
                ],
            },
        ]
    )
    assert out["contents"][1]["parts"][0]["functionCall"]["args"] == args


def test_tool_result_for_an_unknown_call_is_the_clients_fault() -> None:
    with pytest.raises(GeminiRequestError, match="call_nowhere"):
        body(
            [
                {"role": "user", "content": "go"},
                {"role": "tool", "tool_call_id": "call_nowhere", "content": "1"},
            ]
        )
    # A legacy `name` on the tool message is enough to answer it.
    out = body(
        [
            {"role": "user", "content": "go"},
            {"role": "tool", "tool_call_id": "call_nowhere", "name": "f", "content": "1"},
        ]
    )
    assert out["contents"][0]["parts"][1] == {
        "functionResponse": {"name": "f", "response": {"result": 1}}
    }


def test_empty_turns_are_dropped_and_neighbours_merged() -> None:
    out = body(
        [
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": ""},
            {"role": "user", "content": "two"},
        ]
    )
    assert out["contents"] == [{"role": "user", "parts": [{"text": "one"}, {"text": "two"}]}]
    with pytest.raises(GeminiRequestError):
        body([{"role": "system", "content": "only a system prompt"}])


# --- request: parameters --------------------------------------------------------------------


def test_sampling_parameters() -> None:
    out = body(
        [{"role": "user", "content": "hi"}],
        temperature=0.2,
        top_p=0.9,
        stop=["\n\n"],  # the gate makes a stop string a list of one
        n=2,
        seed=7,
        presence_penalty=0.5,
        frequency_penalty=0,
        logprobs=True,
        top_logprobs=3,
        logit_bias={"1": 2},
        user="u-1",
        parallel_tool_calls=False,
    )
    assert out["generationConfig"] == {
        "maxOutputTokens": 256,
        "temperature": 0.2,
        "topP": 0.9,
        "stopSequences": ["\n\n"],
        "candidateCount": 2,
        "seed": 7,
        "presencePenalty": 0.5,
    }
    assert set(out) == {"contents", "generationConfig"}


@pytest.mark.parametrize(
    ("seed", "sent"), [(2**31 - 1, 2**31 - 1), (-5, -5), (2**31, 0), (2**40 + 3, 3)]
)
def test_seed_fits_int32(seed: int, sent: int) -> None:
    out = body([{"role": "user", "content": "hi"}], seed=seed)
    assert out["generationConfig"]["seed"] == sent


def test_stop_list_and_drop_params() -> None:
    request = {
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 9,
        "stop": ["a", "b"],
        "temperature": 1.5,
        "presence_penalty": 0.3,
    }
    out = generate_content_request(
        from_chat_body(request),
        "gemini-2.5-pro",
        drop_params=frozenset({"temperature", "presence_penalty"}),
    )
    assert out["generationConfig"] == {"maxOutputTokens": 9, "stopSequences": ["a", "b"]}


def test_drop_params_reach_every_parameter_and_the_thinking_instruction() -> None:
    chat = from_chat_body(
        {
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 9,
            "stop": ["a"],
            "n": 2,
            "seed": 1,
            "reasoning_effort": "high",
            "response_format": {"type": "json_object"},
            "tools": [WEATHER],
            "tool_choice": "required",
            "thinking": {"control": "budget", "type": "disabled"},
        }
    )
    kept = generate_content_request(chat, "gemini-3.5-flash")
    assert kept["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
    assert kept["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 0}
    out = generate_content_request(
        chat,
        "gemini-3.5-flash",
        drop_params=frozenset({"stop", "n", "seed", "response_format", "tool_choice", "thinking"}),
    )
    assert "toolConfig" not in out and out["tools"]
    # Without the instruction, the effort by the model's own style.
    assert out["generationConfig"] == {
        "maxOutputTokens": 9,
        "thinkingConfig": {"thinkingLevel": "high", "includeThoughts": True},
    }
    out = generate_content_request(
        chat, "gemini-3.5-flash", drop_params=frozenset({"tools", "thinking", "reasoning_effort"})
    )
    assert "tools" not in out and "toolConfig" not in out
    assert "thinkingConfig" not in out["generationConfig"]
    # The call itself is left alone (the next route may take what this one drops).
    assert generate_content_request(chat, "gemini-3.5-flash") == kept
    with pytest.raises(GeminiRequestError, match="max_tokens"):
        generate_content_request(chat, "gemini-3.5-flash", drop_params=frozenset({"max_tokens"}))


def test_whole_numbers_in_schemas_stay_integers() -> None:
    # A Struct keeps every number as a double; Gemini's schema counts must be integers.
    tags = {
        "type": "object",
        "properties": {"tags": {"type": "array", "items": {"type": "string"}, "minItems": 1}},
    }
    out = body(
        [{"role": "user", "content": "hi"}],
        tools=[{"type": "function", "function": {"name": "tag", "parameters": tags}}],
        response_format={"type": "json_schema", "json_schema": {"name": "t", "schema": tags}},
    )
    for schema in (
        out["tools"][0]["functionDeclarations"][0]["parameters"],
        out["generationConfig"]["responseSchema"],
    ):
        count = schema["properties"]["tags"]["minItems"]
        assert count == 1 and isinstance(count, int)


def test_typed_values_the_gate_never_makes_are_refused_not_guessed() -> None:
    chat = from_chat_body({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 9})
    chat.request.messages.add(text="?")  # ROLE_UNSPECIFIED
    with pytest.raises(GeminiRequestError, match=r"messages\[1\] has an unsupported role"):
        generate_content_request(chat, "gemini-3.5-flash")
    chat = from_chat_body({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 9})
    chat.request.tools.add()  # no kind of tool
    with pytest.raises(GeminiRequestError, match=r"tools\[0\] is not a function tool"):
        generate_content_request(chat, "gemini-3.5-flash")
    chat = from_chat_body({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 9})
    chat.request.reasoning_effort = 99  # type: ignore[assignment]  # a value from a newer proto
    with pytest.raises(GeminiRequestError, match="unsupported reasoning_effort"):
        generate_content_request(chat, "gemini-3.5-flash")
    # An unspecified tool_choice mode is as if none was given.
    chat = from_chat_body(
        {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 9, "tools": [WEATHER]}
    )
    chat.request.tool_choice.mode = 0  # type: ignore[assignment]
    assert chat.request.HasField("tool_choice")
    out = generate_content_request(chat, "gemini-3.5-flash")
    assert out["tools"] and "toolConfig" not in out


def test_response_format() -> None:
    out = body([{"role": "user", "content": "hi"}], response_format={"type": "json_object"})
    assert out["generationConfig"]["responseMimeType"] == "application/json"
    assert "responseSchema" not in out["generationConfig"]
    out = body(
        [{"role": "user", "content": "hi"}],
        response_format={
            "type": "json_schema",
            "json_schema": {
                "name": "person",
                "strict": True,
                "schema": {
                    "$schema": "https://json-schema.org/draft/2020-12/schema",
                    "type": "object",
                    "properties": {"name": {"type": "string"}},
                    "required": ["name"],
                    "additionalProperties": False,
                },
            },
        },
    )
    assert out["generationConfig"]["responseMimeType"] == "application/json"
    assert out["generationConfig"]["responseSchema"] == {
        "type": "OBJECT",
        "properties": {"name": {"type": "STRING"}},
        "required": ["name"],
    }
    out = body([{"role": "user", "content": "hi"}], response_format={"type": "text"})
    assert "responseMimeType" not in out["generationConfig"]


def test_tools_and_tool_choice() -> None:
    no_params = {"type": "function", "function": {"name": "now"}}
    empty = {"type": "function", "function": {"name": "ping", "parameters": {"type": "object"}}}
    out = body([{"role": "user", "content": "hi"}], tools=[WEATHER, no_params, empty])
    assert out["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Weather for a city",
                    "parameters": {
                        "type": "OBJECT",
                        "properties": {"city": {"type": "STRING"}, "days": {"type": "INTEGER"}},
                        "required": ["city"],
                    },
                },
                {"name": "now"},
                {"name": "ping"},
            ]
        }
    ]
    assert "toolConfig" not in out
    for choice, config in [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"mode": "ANY", "allowedFunctionNames": ["get_weather"]},
        ),
    ]:
        out = body([{"role": "user", "content": "hi"}], tools=[WEATHER], tool_choice=choice)
        assert out["toolConfig"] == {"functionCallingConfig": config}, choice


def test_thinking_by_model_generation() -> None:
    assert thinking_style("gemini-2.5-flash") == "budget"
    assert thinking_style("models/gemini-2.0-flash-thinking") == "budget"
    assert thinking_style("gemini-3.5-flash") == "level"
    assert thinking_style("gemini-3-pro-preview") == "level"
    assert thinking_style("gemini-20-future") == "level"
    assert thinking_config("medium", "budget") == {"thinkingBudget": 8192, "includeThoughts": True}
    assert thinking_config("high", "level") == {"thinkingLevel": "high", "includeThoughts": True}
    request = {"messages": [{"role": "user", "content": "x"}], "max_tokens": 5}
    for model, effort, expected in [
        ("gemini-2.5-pro", "low", {"thinkingBudget": 1024, "includeThoughts": True}),
        ("gemini-2.5-pro", "high", {"thinkingBudget": 24576, "includeThoughts": True}),
        ("gemini-3.5-flash", "low", {"thinkingLevel": "low", "includeThoughts": True}),
        ("gemini-3.5-flash", "medium", {"thinkingLevel": "medium", "includeThoughts": True}),
    ]:
        out = generate_content_request(
            from_chat_body({**request, "reasoning_effort": effort}), model
        )
        assert out["generationConfig"]["thinkingConfig"] == expected
    # An explicit style wins over the model name.
    out = generate_content_request(
        from_chat_body({**request, "reasoning_effort": "low"}), "gemini-3.5-flash", style="budget"
    )
    assert out["generationConfig"]["thinkingConfig"]["thinkingBudget"] == 1024
    plain = generate_content_request(from_chat_body(request), "x")
    assert "thinkingConfig" not in plain["generationConfig"]
    with pytest.raises(GeminiRequestError):
        thinking_config("extreme", "level")


# --- JSON Schema cleaning -------------------------------------------------------------------


def test_schema_strips_what_gemini_rejects() -> None:
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$id": "x",
        "type": "object",
        "additionalProperties": False,
        "strict": True,
        "properties": {
            "name": {"type": "string", "minLength": 1, "format": "email", "default": "a"},
            "when": {"type": "string", "format": "date-time"},
            "ratio": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "multipleOf": 0.1},
            "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
            "count": {"type": "integer", "format": "int64", "examples": [1]},
        },
        "required": ["name", "ghost"],
    }
    assert clean_schema(schema) == {
        "type": "OBJECT",
        "properties": {
            "name": {"type": "STRING", "minLength": 1},
            "when": {"type": "STRING", "format": "date-time"},
            "ratio": {"type": "NUMBER", "maximum": 1},
            "tags": {"type": "ARRAY", "items": {"type": "STRING"}},
            "count": {"type": "INTEGER", "format": "int64"},
        },
        "required": ["name"],
    }


def test_schema_conversions() -> None:
    schema = {
        "type": "object",
        "$defs": {"Unit": {"type": "string", "enum": ["c", "f"]}},
        "properties": {
            "maybe": {"type": ["string", "null"], "description": "optional"},
            "either": {"type": ["string", "integer"]},
            "one": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
            "opt": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
            "fixed": {"const": "yes"},
            "level": {"type": "integer", "enum": [1, 2, 3], "description": "Level."},
            "unit": {"$ref": "#/$defs/Unit", "description": "The unit."},
            "both": {
                "allOf": [
                    {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
                    {"properties": {"b": {"type": "boolean"}}},
                ]
            },
            "pair": {"type": "array", "items": [{"type": "string"}, {"type": "integer"}]},
        },
    }
    props = clean_schema(schema)["properties"]
    assert props["maybe"] == {"type": "STRING", "nullable": True, "description": "optional"}
    assert props["either"] == {"anyOf": [{"type": "STRING"}, {"type": "INTEGER"}]}
    assert props["one"] == {"anyOf": [{"type": "STRING"}, {"type": "INTEGER"}]}
    assert props["opt"] == {"type": "INTEGER", "nullable": True}
    assert props["fixed"] == {"type": "STRING", "enum": ["yes"]}
    assert props["level"] == {"type": "INTEGER", "description": "Level. Allowed values: 1, 2, 3"}
    assert props["unit"] == {"type": "STRING", "enum": ["c", "f"], "description": "The unit."}
    assert props["both"] == {
        "type": "OBJECT",
        "properties": {"a": {"type": "STRING"}, "b": {"type": "BOOLEAN"}},
        "required": ["a"],
    }
    assert props["pair"] == {"type": "ARRAY", "items": {"type": "STRING"}}


def test_schema_recursion_and_hostile_depth_terminate() -> None:
    recursive = {
        "$ref": "#/definitions/Node",
        "definitions": {
            "Node": {
                "type": "object",
                "properties": {"child": {"$ref": "#/definitions/Node"}, "v": {"type": "string"}},
            }
        },
    }
    assert clean_schema(recursive) == {
        "type": "OBJECT",
        "properties": {"child": {"type": "OBJECT"}, "v": {"type": "STRING"}},
    }
    deep: dict[str, Any] = {"type": "string"}
    for _ in range(200):
        deep = {"type": "object", "properties": {"x": deep}}
    cleaned = clean_schema(deep)
    assert cleaned["type"] == "OBJECT"
    assert clean_schema("not a schema") == {}
    assert clean_schema({"$ref": "#/nowhere"}) == {}


# --- thought signatures inside tool call ids -----------------------------------------------


@pytest.mark.parametrize(
    "signature",
    [
        SIGNATURE,
        "c2ln",
        "not base64 at all!",
        "YWJj-_",
        "YWJjZA",
        "skip_thought_signature_validator",
    ],
)
def test_signature_survives_an_id_round_trip_byte_for_byte(signature: str) -> None:
    call_id = encode_tool_call_id(signature)
    assert call_id.startswith("call_") and ID_CHARS.fullmatch(call_id)
    assert decode_tool_call_id(call_id) == CallRef(signature=signature)


def test_ids_carry_geminis_own_call_id_and_stay_short_without_one() -> None:
    plain = encode_tool_call_id(None)
    assert re.fullmatch(r"call_[A-Za-z0-9]{16}", plain)
    assert decode_tool_call_id(plain) == CallRef()
    both = encode_tool_call_id("c2ln", "46ww9pp1", random_part="A" * 16)
    assert both.startswith("call_" + "A" * 16 + "_")
    assert decode_tool_call_id(both) == CallRef(signature="c2ln", gemini_id="46ww9pp1")
    only_id = encode_tool_call_id(None, "fc-1")
    assert decode_tool_call_id(only_id) == CallRef(gemini_id="fc-1")
    # Base64 bytes, not base64 of base64: the id is barely longer than the signature.
    assert len(encode_tool_call_id(SIGNATURE)) < len(SIGNATURE) + 30


@pytest.mark.parametrize(
    "foreign",
    [
        "call_abc",
        "call_opaque:sig=AbC/123+==",
        "toolu_01A09q90qw90lq917835lq9",
        "call_" + "x" * 16 + "_",
        "call_" + "x" * 16 + "_!!!!",
        "call_" + "x" * 16 + "_" + base64.urlsafe_b64encode(b"\x00\x02abc").decode(),
        "call_" + "x" * 16 + "_" + base64.urlsafe_b64encode(b"\x9e\x08abc").decode(),
        "call_" + "x" * 16 + "_" + base64.urlsafe_b64encode(b"\x9e\x01\x09ab").decode(),
        "call_" + "x" * 16 + "_" + base64.urlsafe_b64encode(b"\x9e\x02").decode(),
    ],
)
def test_ids_we_did_not_make_carry_nothing(foreign: str) -> None:
    assert decode_tool_call_id(foreign) == CallRef()


def test_thought_signature_round_trip_through_a_completion() -> None:
    answer = model_answer(
        [
            {"text": "thinking...", "thought": True},
            {
                "functionCall": {"name": "get_weather", "args": {"city": "Jakarta"}},
                "thoughtSignature": SIGNATURE,
            },
            {"functionCall": {"name": "get_time", "args": {}, "id": "fc-2"}},
        ]
    )
    message = completion(answer)["choices"][0]["message"]
    first, second = message["tool_calls"]
    # The client echoes the ids unchanged on the next turn.
    out = body(
        [
            {"role": "user", "content": "Weather and time?"},
            {"role": "assistant", "content": None, "tool_calls": message["tool_calls"]},
            {"role": "tool", "tool_call_id": first["id"], "content": '{"temp_c":31}'},
            {"role": "tool", "tool_call_id": second["id"], "content": "14:00"},
        ]
    )
    assert out["contents"][1] == {
        "role": "model",
        "parts": [
            {
                "functionCall": {"name": "get_weather", "args": {"city": "Jakarta"}},
                "thoughtSignature": SIGNATURE,
            },
            # Parallel calls: only the first had a signature, so only the first gets one back.
            {"functionCall": {"name": "get_time", "args": {}, "id": "fc-2"}},
        ],
    }
    assert out["contents"][2]["parts"] == [
        {"functionResponse": {"name": "get_weather", "response": {"temp_c": 31}}},
        {"functionResponse": {"name": "get_time", "response": {"result": "14:00"}, "id": "fc-2"}},
    ]


# --- response -------------------------------------------------------------------------------


def test_completion_text_reasoning_and_usage() -> None:
    answer = model_answer(
        [
            {"text": "Let me think. ", "thought": True},
            {"text": "Hello", "thoughtSignature": "c2ln"},
            {"text": " there"},
        ]
    )
    answer["usageMetadata"] = {
        "promptTokenCount": 100,
        "cachedContentTokenCount": 40,
        "candidatesTokenCount": 7,
        "thoughtsTokenCount": 30,
        "totalTokenCount": 137,
    }
    out = completion(answer)
    assert out == {
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Hello there",
                    "reasoning_content": "Let me think. ",
                },
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 100,
            "completion_tokens": 37,
            "total_tokens": 137,
            "prompt_tokens_details": {"cached_tokens": 40},
            "completion_tokens_details": {"reasoning_tokens": 30},
        },
    }
    identity = Identity("chatcmpl-x", "gemini-3.5-flash", 1767225600)
    public, usage = public_completion(out, identity)
    message = public.choices[0].message
    assert (message.text, message.reasoning_content) == ("Hello there", "Let me think. ")
    assert (usage.prompt_tokens, usage.completion_tokens) == (100, 37)
    assert (usage.cached_prompt_tokens, usage.reasoning_tokens) == (40, 30)


def test_completion_tool_calls() -> None:
    out = completion(
        model_answer(
            [
                {"text": "Checking."},
                {"functionCall": {"name": "f", "args": {"b": [1, 2], "a": {"x": None}}}},
                {"functionCall": {"name": "g"}},
            ]
        ),
        new_id=counter(),
    )
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Checking."
    assert choice["message"]["tool_calls"] == [
        {
            "id": "call_0000000000000000",
            "type": "function",
            "function": {"name": "f", "arguments": '{"b":[1,2],"a":{"x":null}}'},
        },
        {
            "id": "call_0000000000000001",
            "type": "function",
            "function": {"name": "g", "arguments": "{}"},
        },
    ]
    only_calls = completion(model_answer([{"functionCall": {"name": "g", "args": {}}}]))
    assert only_calls["choices"][0]["message"]["content"] is None


@pytest.mark.parametrize(
    ("reason", "calls", "expected"),
    [
        ("STOP", False, "stop"),
        ("STOP", True, "tool_calls"),
        ("MAX_TOKENS", False, "length"),
        ("MAX_TOKENS", True, "length"),
        ("SAFETY", False, "content_filter"),
        ("RECITATION", False, "content_filter"),
        ("BLOCKLIST", False, "content_filter"),
        ("PROHIBITED_CONTENT", False, "content_filter"),
        ("SPII", False, "content_filter"),
        ("IMAGE_SAFETY", False, "content_filter"),
        ("MALFORMED_FUNCTION_CALL", False, "stop"),
        ("OTHER", False, "stop"),
        ("FINISH_REASON_UNSPECIFIED", True, "tool_calls"),
        (None, False, "stop"),
    ],
)
def test_finish_reasons(reason: str | None, calls: bool, expected: str) -> None:
    assert finish_reason(reason, calls) == expected


def test_safety_stop_without_content() -> None:
    answer = {
        "candidates": [{"finishReason": "SAFETY", "index": 0, "safetyRatings": []}],
        "usageMetadata": {"promptTokenCount": 3, "totalTokenCount": 3},
    }
    choice = completion(answer)["choices"][0]
    assert choice["message"]["content"] == ""
    assert choice["finish_reason"] == "content_filter"


def test_blocked_prompt_is_a_content_filter_per_choice() -> None:
    answer = {
        "promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
        "usageMetadata": {"promptTokenCount": 12, "totalTokenCount": 12},
    }
    out = completion(answer, choices=2)
    assert [c["finish_reason"] for c in out["choices"]] == ["content_filter"] * 2
    assert [c["message"]["content"] for c in out["choices"]] == ["", ""]
    assert out["usage"]["prompt_tokens"] == 12 and out["usage"]["completion_tokens"] == 0


def test_several_candidates_in_index_order() -> None:
    answer = {
        "candidates": [
            {"content": {"parts": [{"text": "b"}]}, "finishReason": "STOP", "index": 1},
            {"content": {"parts": [{"text": "a"}]}, "finishReason": "MAX_TOKENS"},
        ],
        "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": "2"},
    }
    out = completion(answer, choices=2)
    assert [(c["index"], c["message"]["content"], c["finish_reason"]) for c in out["choices"]] == [
        (0, "a", "length"),
        (1, "b", "stop"),
    ]
    assert out["usage"]["completion_tokens"] == 2


@pytest.mark.parametrize(
    "answer",
    [
        [],
        {"candidates": []},
        {"candidates": [{"index": 0, "finishReason": "STOP"}]},  # no usageMetadata
        {"candidates": [{"content": "text"}], "usageMetadata": {}},
        {"candidates": [{"content": {"parts": ["x"]}}], "usageMetadata": {}},
        {"candidates": [{"content": {"parts": [{"functionCall": {"args": {}}}]}}]},
    ],
)
def test_malformed_answers(answer: Any) -> None:
    with pytest.raises(UpstreamProtocolError):
        completion(answer)


def test_usage_counts_tool_prompt_tokens_and_caps_cached() -> None:
    usage = openai_usage(
        {"promptTokenCount": 10, "toolUsePromptTokenCount": 5, "cachedContentTokenCount": 99}
    )
    assert usage["prompt_tokens"] == 15
    assert usage["prompt_tokens_details"] == {"cached_tokens": 15}
    assert usage["completion_tokens"] == 0


# --- streaming ------------------------------------------------------------------------------


def event(
    parts: list[dict[str, Any]], finish: str | None = None, index: int = 0, **extra: Any
) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": index}
    if finish:
        candidate["finishReason"] = finish
    return {"candidates": [candidate], **extra}


def test_stream_text_reasoning_finish_and_usage() -> None:
    state = StreamTranslation()
    usage1 = {"promptTokenCount": 5, "totalTokenCount": 5}
    usage2 = {"promptTokenCount": 5, "candidatesTokenCount": 2, "thoughtsTokenCount": 3}
    chunks = state.feed(event([{"text": "hmm", "thought": True}], usageMetadata=usage1))
    chunks += state.feed(event([{"text": "Hel"}]))
    chunks += state.feed(event([{"text": "lo"}, {"text": "", "thoughtSignature": "c2ln"}]))
    chunks += state.feed(event([{"text": ""}], "STOP", usageMetadata=usage2))
    deltas = [(c["choices"][0]["delta"], c["choices"][0]["finish_reason"]) for c in chunks]
    assert deltas == [
        ({"role": "assistant"}, None),
        ({"reasoning_content": "hmm"}, None),
        ({"content": "Hel"}, None),
        ({"content": "lo"}, None),
        ({}, "stop"),
    ]
    assert state.end() == [
        {
            "choices": [],
            "usage": {
                "prompt_tokens": 5,
                "completion_tokens": 5,
                "total_tokens": 10,
                "prompt_tokens_details": {"cached_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 3},
            },
        }
    ]


def test_stream_tool_calls_are_whole_fragments() -> None:
    state = StreamTranslation(new_id=counter())
    chunks = state.feed(
        event([{"functionCall": {"name": "f", "args": {"a": 1}}, "thoughtSignature": SIGNATURE}])
    )
    chunks += state.feed(event([{"functionCall": {"name": "g", "args": {}}}], "STOP"))
    calls = [c["choices"][0]["delta"].get("tool_calls") for c in chunks]
    assert calls[0] is None  # the role chunk
    first, second = calls[1][0], calls[2][0]
    assert first["index"] == 0 and second["index"] == 1
    assert first["function"] == {"name": "f", "arguments": '{"a":1}'}
    assert decode_tool_call_id(first["id"]).signature == SIGNATURE
    assert second["id"] == "call_0000000000000001" and second["type"] == "function"
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert state.end() == []  # no usage reported: the translator estimates


def test_stream_several_candidates() -> None:
    state = StreamTranslation(choices=2)
    chunks = state.feed(event([{"text": "a"}], index=0))
    chunks += state.feed(event([{"text": "b"}], "STOP", index=1))
    with pytest.raises(UpstreamError):
        StreamTranslation(choices=2).end()
    early = StreamTranslation(choices=2)
    early.feed(event([{"text": "a"}], index=0))
    early.feed(event([{"text": "b"}], "STOP", index=1))
    with pytest.raises(UpstreamError, match="ended early") as caught:
        early.end()
    assert caught.value.kind == "failed"
    chunks += state.feed(event([], "MAX_TOKENS", index=0))
    assert [
        c["choices"][0]["finish_reason"] for c in chunks if c["choices"][0]["finish_reason"]
    ] == [
        "stop",
        "length",
    ]
    state.end()


def test_stream_without_a_finish_reason_ended_early() -> None:
    state = StreamTranslation()
    state.feed(event([{"text": "Hello"}]))
    with pytest.raises(UpstreamError, match="ended early"):
        state.end()
    with pytest.raises(UpstreamError):
        StreamTranslation().end()


def test_stream_blocked_prompt() -> None:
    state = StreamTranslation(choices=1)
    chunks = state.feed(
        {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 4}}
    )
    assert chunks == [
        {"choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "content_filter"}]},
    ]
    assert state.end()[0]["usage"]["prompt_tokens"] == 4


def test_stream_rejects_content_after_finish() -> None:
    state = StreamTranslation()
    state.feed(event([{"text": "a"}], "STOP"))
    late_usage = event([{"text": ""}], "STOP", usageMetadata={"promptTokenCount": 8})
    assert state.feed(late_usage) == []
    assert state.end()[0]["usage"]["prompt_tokens"] == 8
    with pytest.raises(UpstreamProtocolError):
        state.feed(event([{"text": "b"}]))


# --- thinking instruction (per-model policy) -------------------------------------------------


def test_thinking_instruction_picks_the_style_and_switches_off() -> None:
    hello = [{"role": "user", "content": "Hi"}]
    off = body(hello, thinking={"control": "level", "type": "disabled", "off": "minimal"})
    assert off["generationConfig"]["thinkingConfig"] == {"thinkingLevel": "minimal"}
    budget_off = generate_content_request(
        from_chat_body(
            {
                "messages": hello,
                "max_tokens": 9,
                "thinking": {"control": "budget", "type": "disabled"},
            }
        ),
        "any-model",
    )
    assert budget_off["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 0}
    # The instruction's control wins over the model name's generation.
    on = generate_content_request(
        from_chat_body(
            {
                "messages": hello,
                "max_tokens": 9,
                "reasoning_effort": "high",
                "thinking": {"control": "level", "type": "enabled"},
            }
        ),
        "gemini-2.5-flash",
    )
    assert on["generationConfig"]["thinkingConfig"] == {
        "thinkingLevel": "high",
        "includeThoughts": True,
    }
    assert "thinking" not in on and "thinking" not in on["generationConfig"]
