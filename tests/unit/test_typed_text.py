"""aiport.v1.Text's translators: a typed request is the canonical chat body and passes
the same gate (the same call, errors naming the same fields); the canonical answer
(TextCompletion, TextChunk) goes back to typed callers as it is, serialized, with
the usage and its cost on the completion and on a stream's end chunk."""

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
from services.gateway.typed_text import CanonicalRenderer, chat_body, parse_text_request

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


# What the call was charged (µIDR): 1.2345 IDR, rendered as cost_idr "1.2345".
COST = 1_234_500
USAGE = Usage(prompt_tokens=20, completion_tokens=7, cached_prompt_tokens=4, reasoning_tokens=2)


CREATED = 1700000000


def renderer(model: str = "deepseek-v4-flash") -> CanonicalRenderer:
    text_model = CATALOG.text_model(model)
    assert text_model is not None
    return CanonicalRenderer("chatcmpl-1", text_model, CREATED)


def answer(message: text_pb2.Message) -> text_pb2.TextCompletion:
    """A canonical answer as providers send it: no usage, no cost."""
    return text_pb2.TextCompletion(
        id="chatcmpl-1",
        model="deepseek-v4-flash",
        created=CREATED,
        choices=[
            text_pb2.Choice(
                index=0, message=message, finish_reason=text_pb2.FINISH_REASON_TOOL_CALLS
            )
        ],
    )


def test_a_completion_with_text_and_tool_calls() -> None:
    message = text_pb2.Message(
        role=ASSISTANT,
        text="Checking.",
        reasoning_content="hmm",
        tool_calls=[
            text_pb2.ToolCall(
                id="call_9", function=text_pb2.FunctionCall(name="w", arguments='{"city":"Medan"}')
            )
        ],
    )
    out = text_pb2.TextCompletion.FromString(renderer().completion(answer(message), USAGE, COST))
    assert (out.id, out.model, out.created) == ("chatcmpl-1", "deepseek-v4-flash", CREATED)
    (choice,) = out.choices
    assert choice.finish_reason == text_pb2.FINISH_REASON_TOOL_CALLS
    assert choice.message == message
    assert out.usage == USAGE.to_proto()
    model = CATALOG.text_model("deepseek-v4-flash")
    assert model is not None
    # What the relay captured, as given: the renderer does not price again.
    assert (out.cost_micros, out.cost_idr) == (COST, "1.2345")


def test_a_reply_goes_back_into_the_conversation_as_it_is() -> None:
    message = text_pb2.Message(
        role=ASSISTANT,
        tool_calls=[
            text_pb2.ToolCall(id="call_1", function=text_pb2.FunctionCall(name="w", arguments="{}"))
        ],
    )
    completion = renderer().completion(answer(message), USAGE, COST)
    reply = text_pb2.TextCompletion.FromString(completion).choices[0]
    follow_up = text_pb2.TextRequest(
        messages=[
            text_pb2.Message(role=USER, text="Weather?"),
            reply.message,
            text_pb2.Message(role=text_pb2.ROLE_TOOL, tool_call_id="call_1", text="31C"),
        ]
    )
    call = parse_text_request(follow_up, CATALOG, stream=False)
    assert call.upstream_request["messages"][1]["tool_calls"][0]["id"] == "call_1"


def chunk(*choices: text_pb2.ChoiceDelta) -> text_pb2.TextChunk:
    """A chunk through the renderer, read back as the typed caller reads it."""
    sent = text_pb2.TextChunk(
        id="chatcmpl-1", model="deepseek-v4-flash", created=5, choices=choices
    )
    out = text_pb2.TextChunk.FromString(renderer().chunk(sent))
    assert out == sent  # handed through as it is
    return out


def test_chunks_text_tool_calls_and_the_end() -> None:
    first = chunk(text_pb2.ChoiceDelta(index=0, role=ASSISTANT))
    assert first.choices[0].role == ASSISTANT and first.id == "chatcmpl-1"
    text = chunk(text_pb2.ChoiceDelta(index=0, text="Hi"))
    assert text.choices[0].text == "Hi"
    piece = text_pb2.ToolCallDelta(
        index=1, id="call_2", function=text_pb2.FunctionCall(name="w", arguments="{")
    )
    call = chunk(text_pb2.ChoiceDelta(index=0, tool_calls=[piece]))
    assert call.choices[0].tool_calls[0] == piece
    last = chunk(text_pb2.ChoiceDelta(index=0, finish_reason=text_pb2.FINISH_REASON_LENGTH))
    assert last.choices[0].finish_reason == text_pb2.FINISH_REASON_LENGTH
    # Chunks with output carry no usage: the end carries usage and cost.
    assert not last.HasField("usage") and not last.cost_micros and not last.cost_idr
    end = text_pb2.TextChunk.FromString(renderer().stream_end(USAGE, COST))
    assert not end.choices
    assert (end.id, end.model, end.created) == ("chatcmpl-1", "deepseek-v4-flash", CREATED)
    model = CATALOG.text_model("deepseek-v4-flash")
    assert model is not None
    assert end.usage == USAGE.to_proto()
    assert (end.cost_micros, end.cost_idr) == (COST, "1.2345")


def test_a_schema_as_json_text_keeps_its_key_order() -> None:
    text = '{"type":"object","properties":{"z":{"type":"string"},"a":{"type":"integer"}}}'
    request = hello(
        tools=[text_pb2.Tool(function=text_pb2.FunctionTool(name="f", parameters_json=text))]
    )
    body = chat_body(request, stream=False)
    assert orjson.dumps(body["tools"][0]["function"]["parameters"]).decode() == text
