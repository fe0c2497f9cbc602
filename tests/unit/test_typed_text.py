"""aiport.v1.Text's translators: a typed request is the canonical chat body and passes
the same gate (the same call, errors naming the same fields); canonical answers come
back as typed completions and chunks with usage and cost."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiport.v1 import text_pb2
from google.protobuf import json_format, struct_pb2

from services.common.catalog import load_catalog
from services.common.settings import PROJECT_ROOT
from services.common.usage import Usage
from services.gateway.chat_request import parse_chat_request
from services.gateway.errors import PublicError
from services.gateway.pricing import cost_micros
from services.gateway.typed_text import (
    CanonicalRenderer,
    chat_body,
    parse_text_request,
    text_chunk,
    text_completion,
)

CATALOG = load_catalog(PROJECT_ROOT / "config" / "catalog.yaml")
USER = text_pb2.ROLE_USER
ASSISTANT = text_pb2.ROLE_ASSISTANT


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(value)
    return out


WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
    "required": ["city"],
}


def hello(**fields: Any) -> text_pb2.TextRequest:
    return text_pb2.TextRequest(messages=[text_pb2.Message(role=USER, text="Hello")], **fields)


def refused(request: text_pb2.TextRequest) -> PublicError:
    with pytest.raises(PublicError) as info:
        parse_text_request(request, CATALOG, stream=False)
    return info.value


def test_a_full_request_is_the_canonical_body() -> None:
    request = text_pb2.TextRequest(
        model="gpt-5.4",
        messages=[
            text_pb2.Message(role=text_pb2.ROLE_SYSTEM, text="Be brief."),
            text_pb2.Message(
                role=USER,
                content=[
                    text_pb2.ContentPart(text="What is this?"),
                    text_pb2.ContentPart(
                        image_url=text_pb2.ImageUrl(url="https://x.test/a.png", detail="low")
                    ),
                ],
            ),
            text_pb2.Message(
                role=ASSISTANT,
                tool_calls=[
                    text_pb2.ToolCall(
                        id="call_1",
                        function=text_pb2.FunctionCall(name="w", arguments='{"city":"Bogor"}'),
                    )
                ],
                reasoning_content="thought",
            ),
            text_pb2.Message(role=text_pb2.ROLE_TOOL, tool_call_id="call_1", text="31C"),
        ],
        max_tokens=100,
        temperature=0.0,
        top_p=0.5,
        stop=["END"],
        reasoning_effort=text_pb2.REASONING_EFFORT_HIGH,
        tools=[
            text_pb2.Tool(
                function=text_pb2.FunctionTool(
                    name="w", description="weather", parameters=struct(WEATHER_SCHEMA), strict=True
                )
            )
        ],
        tool_choice=text_pb2.ToolChoice(function_name="w"),
        parallel_tool_calls=False,
        response_format=text_pb2.ResponseFormat(
            type=text_pb2.ResponseFormat.TYPE_JSON_SCHEMA,
            json_schema=text_pb2.JsonSchema(name="out", schema=struct({"type": "object"})),
        ),
        n=2,
        seed=7,
        user="svc-a",
    )
    body = chat_body(request, stream=True)
    assert body == {
        "model": "gpt-5.4",
        "stream": True,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "https://x.test/a.png", "detail": "low"},
                    },
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "w", "arguments": '{"city":"Bogor"}'},
                    }
                ],
                "reasoning_content": "thought",
            },
            {"role": "tool", "content": "31C", "tool_call_id": "call_1"},
        ],
        "max_tokens": 100,
        "temperature": 0.0,  # zero is given, not absent
        "top_p": 0.5,
        "parallel_tool_calls": False,
        "n": 2,
        "seed": 7,
        "stop": ["END"],
        "reasoning_effort": "high",
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "w",
                    "description": "weather",
                    # Whole numbers stay integers (Struct keeps doubles).
                    "parameters": WEATHER_SCHEMA,
                    "strict": True,
                },
            }
        ],
        "tool_choice": {"type": "function", "function": {"name": "w"}},
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "out", "schema": {"type": "object"}},
        },
        "user": "svc-a",
    }
    assert isinstance(
        body["tools"][0]["function"]["parameters"]["properties"]["days"]["minimum"], int
    )


def test_the_same_call_as_the_same_chat_completion() -> None:
    typed = parse_text_request(hello(max_tokens=64), CATALOG, stream=False)
    chat = parse_chat_request(
        orjson.dumps({"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 64}),
        CATALOG,
    )
    assert typed == chat
    assert parse_text_request(hello(), CATALOG, stream=True).stream is True


def test_json_names_work_for_grpcurl_callers() -> None:
    request = json_format.Parse(
        '{"model": "deepseek-v4-flash", "messages": [{"role": "ROLE_USER", "text": "Hi"}],'
        ' "maxTokens": 16}',
        text_pb2.TextRequest(),
    )
    assert chat_body(request, stream=False)["messages"] == [{"role": "user", "content": "Hi"}]


@pytest.mark.parametrize(
    ("request_", "param"),
    [
        (text_pb2.TextRequest(), "messages"),
        (text_pb2.TextRequest(messages=[text_pb2.Message(text="hi")]), "messages[0].role"),
        (text_pb2.TextRequest(messages=[text_pb2.Message(role=USER)]), "messages[0].content"),
        (
            text_pb2.TextRequest(
                messages=[
                    text_pb2.Message(role=USER, text="a", content=[text_pb2.ContentPart(text="b")])
                ]
            ),
            "messages[0].content",
        ),
        (
            text_pb2.TextRequest(
                messages=[text_pb2.Message(role=USER, content=[text_pb2.ContentPart()])]
            ),
            "messages[0].content[0]",
        ),
        (
            text_pb2.TextRequest(
                messages=[
                    text_pb2.Message(
                        role=ASSISTANT,
                        content=[
                            text_pb2.ContentPart(image_url=text_pb2.ImageUrl(url="https://x/y"))
                        ],
                    )
                ]
            ),
            "messages[0].content[0].type",
        ),
        (hello(temperature=2.5), "temperature"),
        (hello(top_p=1.5), "top_p"),
        (hello(max_tokens=0), "max_tokens"),
        (hello(n=9), "n"),
        (hello(stop=["a", "b", "c", "d", "e"]), "stop"),
        (hello(reasoning_effort=text_pb2.REASONING_EFFORT_LOW), "reasoning_effort"),
        (hello(tools=[text_pb2.Tool()]), "tools[0]"),
        (
            hello(tools=[text_pb2.Tool(function=text_pb2.FunctionTool(name="bad name"))]),
            "tools[0].function.name",
        ),
        (hello(tool_choice=text_pb2.ToolChoice(function_name="nope")), "tool_choice"),
        (
            hello(
                response_format=text_pb2.ResponseFormat(
                    type=text_pb2.ResponseFormat.TYPE_JSON_SCHEMA
                )
            ),
            "response_format.json_schema",
        ),
        (
            hello(
                tools=[
                    text_pb2.Tool(function=text_pb2.FunctionTool(name="f", parameters_json="[1]"))
                ]
            ),
            "tools[0].function.parameters_json",
        ),
        (
            hello(
                response_format=text_pb2.ResponseFormat(
                    type=text_pb2.ResponseFormat.TYPE_JSON_SCHEMA,
                    json_schema=text_pb2.JsonSchema(name="o", schema_json="{not json"),
                )
            ),
            "response_format.json_schema.schema_json",
        ),
    ],
)
def test_bad_input_names_the_field(request_: text_pb2.TextRequest, param: str) -> None:
    error = refused(request_)
    assert (error.status, error.param) == (400, param)
    assert param.split(".")[0].split("[")[0] in error.message


def test_an_unknown_model_is_not_found() -> None:
    error = refused(hello(model="no-such-model"))
    assert (error.status, error.param) == (404, "model")


def test_unset_choices_are_as_if_not_given() -> None:
    body = chat_body(
        hello(
            tool_choice=text_pb2.ToolChoice(),
            response_format=text_pb2.ResponseFormat(),
        ),
        stream=False,
    )
    assert "tool_choice" not in body and "response_format" not in body


USAGE = Usage(prompt_tokens=20, completion_tokens=7, cached_prompt_tokens=4, reasoning_tokens=2)


def renderer(model: str = "deepseek-v4-flash") -> CanonicalRenderer:
    text_model = CATALOG.text_model(model)
    assert text_model is not None
    return CanonicalRenderer("chatcmpl-1", text_model)


def test_a_completion_with_text_and_tool_calls() -> None:
    completion = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "deepseek-v4-flash",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Checking.",
                    "reasoning_content": "hmm",
                    "tool_calls": [
                        {
                            "id": "call_9",
                            "type": "function",
                            "function": {"name": "w", "arguments": '{"city":"Medan"}'},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": USAGE.to_public(),
    }
    out = text_completion(renderer().completion(orjson.dumps(completion), USAGE))
    assert (out.id, out.model, out.created) == ("chatcmpl-1", "deepseek-v4-flash", 1700000000)
    (choice,) = out.choices
    assert choice.finish_reason == text_pb2.FINISH_REASON_TOOL_CALLS
    assert choice.message == text_pb2.Message(
        role=ASSISTANT,
        text="Checking.",
        reasoning_content="hmm",
        tool_calls=[
            text_pb2.ToolCall(
                id="call_9", function=text_pb2.FunctionCall(name="w", arguments='{"city":"Medan"}')
            )
        ],
    )
    assert out.usage == USAGE.to_proto()
    model = CATALOG.text_model("deepseek-v4-flash")
    assert model is not None
    assert out.cost_micros == cost_micros(model, USAGE) > 0
    assert out.cost_idr and float(out.cost_idr) * 1_000_000 == pytest.approx(out.cost_micros)


def test_a_reply_goes_back_into_the_conversation_as_it_is() -> None:
    completion = {
        "id": "c",
        "model": "m",
        "created": 1,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "w", "arguments": "{}"},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
    }
    reply = text_completion(renderer().completion(orjson.dumps(completion), USAGE)).choices[0]
    follow_up = text_pb2.TextRequest(
        messages=[
            text_pb2.Message(role=USER, text="Weather?"),
            reply.message,
            text_pb2.Message(role=text_pb2.ROLE_TOOL, tool_call_id="call_1", text="31C"),
        ]
    )
    call = parse_text_request(follow_up, CATALOG, stream=False)
    assert call.upstream_request["messages"][1]["tool_calls"][0]["id"] == "call_1"


def chunk(choices: list[dict[str, Any]], **more: Any) -> bytes:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 5,
        "model": "deepseek-v4-flash",
        "choices": choices,
        **more,
    }
    return renderer().chunk(orjson.dumps(body))


def test_chunks_text_tool_calls_and_the_end() -> None:
    first = text_chunk(chunk([{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]))
    assert first is not None and first.choices[0].role == ASSISTANT and first.id == "chatcmpl-1"
    text = text_chunk(chunk([{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]))
    assert text is not None and text.choices[0].text == "Hi"
    call = text_chunk(
        chunk(
            [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {
                                "index": 1,
                                "id": "call_2",
                                "function": {"name": "w", "arguments": "{"},
                            }
                        ]
                    },
                    "finish_reason": None,
                }
            ]
        )
    )
    assert call is not None
    assert call.choices[0].tool_calls[0] == text_pb2.ToolCallDelta(
        index=1, id="call_2", function=text_pb2.FunctionCall(name="w", arguments="{")
    )
    last = text_chunk(chunk([{"index": 0, "delta": {}, "finish_reason": "length"}]))
    assert last is not None and last.choices[0].finish_reason == text_pb2.FINISH_REASON_LENGTH
    # The usage-only chunk says nothing new: the end carries usage and cost.
    assert text_chunk(chunk([], usage=USAGE.to_public())) is None
    end = text_chunk(renderer().stream_end(USAGE))
    assert end is not None and not end.choices
    assert (end.id, end.model) == ("chatcmpl-1", "deepseek-v4-flash")
    assert end.usage == USAGE.to_proto() and end.cost_micros > 0 and end.cost_idr


def test_a_schema_as_json_text_keeps_its_key_order() -> None:
    text = '{"type":"object","properties":{"z":{"type":"string"},"a":{"type":"integer"}}}'
    request = hello(
        tools=[text_pb2.Tool(function=text_pb2.FunctionTool(name="f", parameters_json=text))]
    )
    body = chat_body(request, stream=False)
    assert orjson.dumps(body["tools"][0]["function"]["parameters"]).decode() == text
