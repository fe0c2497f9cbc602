"""Canonical answers (TextCompletion, TextChunk) rendered as OpenAI Responses: the
Response object and the typed event sequence, each validated field by field against
the official openai SDK's own models, and the stream replayed through the SDK's own
accumulator."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiport.v1 import text_pb2
from openai import omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from services.common.usage import Usage
from services.gateway import errors
from services.gateway.responses_render import ResponseFrame, ResponseStream, render_response
from services.gateway.responses_request import ResponseEcho
from tests.unit.canonical_answers import ASSISTANT, STOP, call, chunk, completion

# What the call was charged (µIDR): 1.2345 IDR, rendered as cost_idr "1.2345".
COST = 1_234_500
USAGE = Usage(
    prompt_tokens=100,
    completion_tokens=20,
    cached_prompt_tokens=30,
    reasoning_tokens=5,
    cache_write_prompt_tokens=10,
)
EVENT = TypeAdapter(ResponseStreamEvent)
TOOLS: list[dict[str, Any]] = [
    {"type": "function", "name": "f", "description": None, "parameters": {}, "strict": True}
]


def frame(**echo: Any) -> ResponseFrame:
    return ResponseFrame("resp_abc", ResponseEcho(model="m", **echo), created_at=1_700_000_000)


def said(text: str) -> text_pb2.Message:
    return text_pb2.Message(role=ASSISTANT, text=text)


def events(data: bytes) -> list[dict[str, Any]]:
    """Each SSE frame, checked: `event:` names the data's type; the data validates
    as the SDK's event model (required fields present, types right)."""
    out = []
    for sse in data.split(b"\n\n"):
        if not sse:
            continue
        name, payload = sse.split(b"\n")
        assert name.startswith(b"event: ") and payload.startswith(b"data: ")
        body = orjson.loads(payload[len(b"data: ") :])
        assert body["type"] == name[len(b"event: ") :].decode()
        EVENT.validate_python(body)
        out.append(body)
    return out


def replay(bodies: list[dict[str, Any]], tools: list[Any] | None = None) -> Any:
    """The SDK's stream accumulator over our events: it raises on any id, index or
    order it does not accept. Returns its final Response (None if not completed)."""
    state: ResponseStreamState[Any] = ResponseStreamState(
        input_tools=tools if tools is not None else omit, text_format=omit
    )
    final = None
    for body in bodies:
        for parsed in state.handle_event(EVENT.validate_python(body)):
            if parsed.type == "response.completed":
                final = parsed.response
    return final


def test_a_completion_becomes_a_response() -> None:
    message = text_pb2.Message(
        role=ASSISTANT,
        text="Calling.",
        reasoning_content="hmm",
        tool_calls=[
            text_pb2.ToolCall(
                id="call_1", function=text_pb2.FunctionCall(name="f", arguments='{"a":1}')
            )
        ],
    )
    body = orjson.loads(
        render_response(
            completion(message, text_pb2.FINISH_REASON_TOOL_CALLS),
            USAGE,
            frame(tools=TOOLS),
            COST,
        )
    )
    Response.model_validate(body)
    assert body["id"] == "resp_abc"
    assert body["object"] == "response"
    assert body["status"] == "completed"
    assert body["store"] is False
    assert body["tools"] == TOOLS
    assert body["output"] == [
        {
            "id": "rs_abc_0",
            "type": "reasoning",
            "summary": [],
            "content": [{"type": "reasoning_text", "text": "hmm"}],
            "status": "completed",
        },
        {
            "id": "msg_abc_1",
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [
                {"type": "output_text", "text": "Calling.", "annotations": [], "logprobs": []}
            ],
        },
        {
            "id": "fc_abc_2",
            "type": "function_call",
            "status": "completed",
            "call_id": "call_1",
            "name": "f",
            "arguments": '{"a":1}',
        },
    ]
    assert body["usage"] == {
        "input_tokens": 100,
        "input_tokens_details": {"cached_tokens": 30, "cache_write_tokens": 10},
        "output_tokens": 20,
        "output_tokens_details": {"reasoning_tokens": 5},
        "total_tokens": 120,
        "cost_idr": "1.2345",  # ours: what the call was charged
    }


def test_the_sdk_reads_output_text_of_a_rendered_response() -> None:
    body = render_response(completion(said("Hi.")), USAGE, frame(), COST)
    assert Response.model_validate_json(body).output_text == "Hi."


def test_a_length_stop_is_incomplete_with_its_reason() -> None:
    body = orjson.loads(
        render_response(
            completion(said("Hi"), text_pb2.FINISH_REASON_LENGTH),
            USAGE,
            frame(max_output_tokens=16),
            COST,
        )
    )
    assert body["status"] == "incomplete"
    assert body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert body["max_output_tokens"] == 16


def test_the_request_is_echoed() -> None:
    echo = {
        "instructions": "Be brief.",
        "tool_choice": {"type": "function", "name": "f"},
        "parallel_tool_calls": False,
        "temperature": 0.5,
        "top_p": 0.9,
        "effort": "low",
        "text_format": {"type": "json_object"},
        "metadata": {"k": "v"},
        "user": "u1",
    }
    body = orjson.loads(render_response(completion(said("{}")), USAGE, frame(**echo), COST))
    Response.model_validate(body)
    assert body["instructions"] == "Be brief."
    assert body["tool_choice"] == {"type": "function", "name": "f"}
    assert body["parallel_tool_calls"] is False
    assert (body["temperature"], body["top_p"]) == (0.5, 0.9)
    assert body["reasoning"] == {"effort": "low", "summary": None}
    assert body["text"] == {"format": {"type": "json_object"}}
    assert (body["metadata"], body["user"]) == ({"k": "v"}, "u1")


def test_a_text_stream_is_responses_event_sequence() -> None:
    stream = ResponseStream(frame())
    data = stream.chunk(chunk(text="Hel", first=True))
    data += stream.chunk(chunk(text="lo"))
    data += stream.chunk(chunk(finish=STOP))
    data += stream.end(USAGE, COST)
    bodies = events(data)
    assert [b["type"] for b in bodies] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [b["sequence_number"] for b in bodies] == list(range(len(bodies)))
    assert bodies[0]["response"]["status"] == "in_progress"
    assert bodies[0]["response"]["usage"] is None
    assert bodies[6]["text"] == "Hello"
    final = replay(bodies)
    assert final.output_text == "Hello"
    assert final.usage.input_tokens == 100
    assert (
        bodies[-1]["response"]["output"]
        == orjson.loads(render_response(completion(said("Hello")), USAGE, frame(), COST))["output"]
    )


def test_reasoning_then_text_then_two_calls() -> None:
    stream = ResponseStream(frame(tools=TOOLS))
    data = b"".join(
        [
            stream.chunk(chunk(reasoning="think", first=True)),
            stream.chunk(chunk(reasoning="ing")),
            stream.chunk(chunk(text="Let me call.")),
            stream.chunk(chunk(calls=(call(0, '{"a"', "call_1", "f"),))),
            stream.chunk(chunk(calls=(call(0, ":1}"),))),
            stream.chunk(chunk(calls=(call(1, "{}", "call_2", "f"),))),
            stream.chunk(chunk(finish=text_pb2.FINISH_REASON_TOOL_CALLS)),
            stream.end(USAGE, COST),
        ]
    )
    bodies = events(data)
    final = replay(bodies, TOOLS)
    kinds = [item.type for item in final.output]
    assert kinds == ["reasoning", "message", "function_call", "function_call"]
    calls = [item for item in final.output if item.type == "function_call"]
    assert [(c.call_id, c.arguments) for c in calls] == [("call_1", '{"a":1}'), ("call_2", "{}")]
    assert final.output[0].content[0].text == "thinking"
    added = [b for b in bodies if b["type"] == "response.output_item.added"]
    assert [b["output_index"] for b in added] == [0, 1, 2, 3]
    argument_done = [b for b in bodies if b["type"] == "response.function_call_arguments.done"]
    assert [b["arguments"] for b in argument_done] == ['{"a":1}', "{}"]


def test_a_length_stop_streams_response_incomplete() -> None:
    stream = ResponseStream(frame())
    data = stream.chunk(chunk(text="Hi"))
    data += stream.chunk(chunk(finish=text_pb2.FINISH_REASON_LENGTH))
    bodies = events(data + stream.end(USAGE, COST))
    assert bodies[-1]["type"] == "response.incomplete"
    assert bodies[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_an_empty_stream_still_opens_and_completes() -> None:
    stream = ResponseStream(frame())
    bodies = events(stream.end(USAGE, COST))
    assert [b["type"] for b in bodies] == [
        "response.created",
        "response.in_progress",
        "response.completed",
    ]
    assert replay(bodies).output == []


def test_a_break_after_output_is_response_failed_with_the_items_closed() -> None:
    stream = ResponseStream(frame())
    data = stream.chunk(chunk(text="Hel"))
    data += stream.failed(errors.provider_error("The upstream broke."))
    bodies = events(data)
    assert [b["type"] for b in bodies][-3:] == [
        "response.content_part.done",
        "response.output_item.done",
        "response.failed",
    ]
    failed = bodies[-1]["response"]
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "server_error"
    assert "broke" in failed["error"]["message"]
    assert failed["output"][0]["content"][0]["text"] == "Hel"
    replay(bodies)  # the SDK accepts the sequence


def test_a_chunk_without_choices_sends_nothing() -> None:
    stream = ResponseStream(frame())
    assert stream.chunk(text_pb2.TextChunk(id="x")) == b""


def test_an_event_after_the_end_is_a_bug() -> None:
    stream = ResponseStream(frame())
    stream.end(USAGE, COST)
    with pytest.raises(RuntimeError):
        stream.chunk(chunk(text="late"))
