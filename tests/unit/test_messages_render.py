"""Canonical answers (TextCompletion, TextChunk) rendered as Anthropic Messages: the
message object, the event sequence (checked with the official SDK's own
accumulator), and errors."""

from __future__ import annotations

from typing import Any, cast

import orjson
import pytest
from aiport.v1 import text_pb2
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import RawMessageStreamEvent

from services.common.sse import named_frame
from services.common.usage import Usage
from services.gateway import errors
from services.gateway.messages_render import (
    MessageStream,
    anthropic_error,
    priced_event,
    render_message,
)
from services.gateway.renderers import MessagesRenderer
from tests.unit.canonical_answers import ASSISTANT, call, chunk, completion

# What the call was charged (µIDR): 1.2345 IDR, rendered as cost_idr "1.2345".
COST = 1_234_500
USAGE = Usage(
    prompt_tokens=100,
    completion_tokens=20,
    cached_prompt_tokens=30,
    reasoning_tokens=5,
    cache_write_prompt_tokens=10,
)


def tool_call(call_id: str, name: str, arguments: str) -> text_pb2.ToolCall:
    return text_pb2.ToolCall(
        id=call_id, function=text_pb2.FunctionCall(name=name, arguments=arguments)
    )


def events(data: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for frame in data.split(b"\n\n"):
        if not frame:
            continue
        name, payload = frame.split(b"\n")
        assert name.startswith(b"event: ") and payload.startswith(b"data: ")
        body = orjson.loads(payload[len(b"data: ") :])
        assert body["type"] == name[len(b"event: ") :].decode()
        out.append((body["type"], body))
    return out


def test_a_completion_becomes_a_message() -> None:
    answer = completion(
        text_pb2.Message(
            role=ASSISTANT,
            text="Calling.",
            reasoning_content="hmm",
            tool_calls=[tool_call("call_1", "f", '{"a":1}')],
        ),
        text_pb2.FINISH_REASON_TOOL_CALLS,
    )
    message = orjson.loads(render_message(answer, USAGE, "m", COST))
    assert message == {
        "id": "msg_abc",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": ""},
            {"type": "text", "text": "Calling."},
            {"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": 1}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        # input_tokens leaves out the 30 read from and the 10 written to the cache.
        "usage": {
            "input_tokens": 60,
            "cache_creation_input_tokens": 10,
            "cache_read_input_tokens": 30,
            "output_tokens": 20,
            "cost_idr": "1.2345",  # ours: what the call was charged
        },
    }


@pytest.mark.parametrize(
    ("finish", "stop_reason"),
    [
        (text_pb2.FINISH_REASON_STOP, "end_turn"),
        (text_pb2.FINISH_REASON_LENGTH, "max_tokens"),
        (text_pb2.FINISH_REASON_CONTENT_FILTER, "refusal"),
        (text_pb2.FINISH_REASON_UNSPECIFIED, "end_turn"),
    ],
)
def test_stop_reasons(finish: text_pb2.FinishReason, stop_reason: str) -> None:
    answer = completion(text_pb2.Message(role=ASSISTANT, text="a"), finish)
    assert orjson.loads(render_message(answer, USAGE, "m", COST))["stop_reason"] == stop_reason


def test_unparsable_tool_arguments_are_kept() -> None:
    answer = completion(
        text_pb2.Message(role=ASSISTANT, tool_calls=[tool_call("c", "f", "{oops")]),
        text_pb2.FINISH_REASON_TOOL_CALLS,
    )
    block = orjson.loads(render_message(answer, USAGE, "m", COST))["content"][0]
    assert block["input"] == {"_unparsed_arguments": "{oops"}


def test_a_stream_renders_anthropics_event_sequence() -> None:
    stream = MessageStream("chatcmpl-abc", "m")
    data = b"".join(
        [
            stream.chunk(chunk(reasoning="Let me ", first=True)),
            stream.chunk(chunk(reasoning="think.")),
            stream.chunk(chunk(text="Hello")),
            stream.chunk(chunk(text=" there.")),
            stream.chunk(chunk(calls=(call(0, "", "call_1", "f"),))),
            stream.chunk(chunk(calls=(call(0, '{"a"'),))),
            stream.chunk(chunk(calls=(call(0, ":1}"),))),
            stream.chunk(chunk(calls=(call(1, "{}", "call_2", "g"),))),
            stream.chunk(chunk(finish=text_pb2.FINISH_REASON_TOOL_CALLS)),
            # A chunk without choices (none is sent today) makes no events.
            stream.chunk(text_pb2.TextChunk(id="chatcmpl-abc", model="m")),
            stream.end(USAGE, COST),
        ]
    )
    sequence = events(data)
    assert [name for name, _ in sequence] == [
        "message_start",
        "ping",
        "content_block_start",  # 0 thinking
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",  # 1 text
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",  # 2 tool_use f
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",  # 3 tool_use g
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert [body["index"] for name, body in sequence if name == "content_block_start"] == [
        0,
        1,
        2,
        3,
    ]
    # The official SDK's accumulator builds the message the non-stream call returns.
    snapshot = None
    json_bufs: dict[int, bytes] = {}
    for _, body in sequence:
        snapshot = accumulate_event(
            event=cast(RawMessageStreamEvent, body),  # a dict: the SDK builds the event
            current_snapshot=snapshot,
            json_bufs=json_bufs,
        )
    assert snapshot is not None
    assert snapshot.id == "msg_abc"
    assert [block.type for block in snapshot.content] == [
        "thinking",
        "text",
        "tool_use",
        "tool_use",
    ]
    assert snapshot.content[0].thinking == "Let me think."  # type: ignore[union-attr]
    assert snapshot.content[1].text == "Hello there."  # type: ignore[union-attr]
    assert snapshot.content[2].input == {"a": 1}  # type: ignore[union-attr]
    assert snapshot.content[3].input == {}  # type: ignore[union-attr]
    assert snapshot.stop_reason == "tool_use"
    assert snapshot.usage.input_tokens == 60
    assert snapshot.usage.cache_read_input_tokens == 30
    assert snapshot.usage.output_tokens == 20


def test_a_stream_with_no_output_still_opens_and_closes_the_message() -> None:
    stream = MessageStream("chatcmpl-abc", "m")
    names = [name for name, _ in events(stream.end(USAGE, COST))]
    assert names == ["message_start", "ping", "message_delta", "message_stop"]
    with pytest.raises(RuntimeError):
        stream.chunk(chunk(text="late"))


@pytest.mark.parametrize(
    ("error", "status", "kind"),
    [
        (errors.invalid_request("bad", "x"), 400, "invalid_request_error"),
        (errors.unauthorized(), 401, "authentication_error"),
        (errors.insufficient_quota("Top up."), 400, "invalid_request_error"),
        (errors.insufficient_scope(), 403, "permission_error"),
        (errors.model_not_found_for_chat("x"), 404, "not_found_error"),
        (errors.upstream_rate_limited(3), 429, "rate_limit_error"),
        (errors.internal_error(), 500, "api_error"),
        (errors.provider_error(), 502, "api_error"),
        (errors.service_unavailable("down"), 503, "overloaded_error"),
    ],
)
def test_errors_in_messages_shape(error: errors.PublicError, status: int, kind: str) -> None:
    shaped = anthropic_error(error)
    assert (shaped.status, shaped.type) == (status, kind)
    assert orjson.loads(shaped.body()) == {
        "type": "error",
        "error": {"type": kind, "message": error.message},
    }
    assert shaped.sse_event().startswith(b"event: error\ndata: {")
    assert anthropic_error(shaped) is shaped
    # The retry signals travel unchanged.
    assert shaped.retry_after_seconds == error.retry_after_seconds


# -- a passed-through answer (Claude's own), priced -------------------------------------


def test_a_passed_through_message_gets_our_cost_and_keeps_the_rest() -> None:
    raw = orjson.dumps(
        {
            "id": "msg_x",
            "type": "message",
            "content": [{"type": "text", "text": "Hi", "citations": None}],
            "usage": {"input_tokens": 3, "output_tokens": 1, "service_tier": "standard"},
        }
    )
    priced = orjson.loads(MessagesRenderer("c", "m").native_completion(raw, COST))
    assert priced["usage"] == {
        "input_tokens": 3,
        "output_tokens": 1,
        "service_tier": "standard",
        "cost_idr": "1.2345",
    }
    assert priced["content"] == [{"type": "text", "text": "Hi", "citations": None}]


def test_a_passed_through_stream_closes_after_the_capture_with_its_cost() -> None:
    renderer = MessagesRenderer("c", "m")
    start = named_frame("message_start", b'{"type":"message_start","message":{}}')
    delta = named_frame(
        "message_delta",
        b'{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":2}}',
    )
    stop = named_frame("message_stop", b'{"type":"message_stop"}')
    assert renderer.native_chunk(start) == start
    # The closing events wait: the cost is known only once the usage is captured.
    assert renderer.native_chunk(delta) == b""
    assert renderer.native_chunk(stop) == b""
    closed = events(renderer.stream_end(USAGE, COST))
    assert [name for name, _ in closed] == ["message_delta", "message_stop"]
    assert closed[0][1]["usage"] == {"output_tokens": 2, "cost_idr": "1.2345"}
    assert closed[0][1]["delta"] == {"stop_reason": "end_turn"}


def test_priced_event_leaves_other_events_as_they_are() -> None:
    stop = named_frame("message_stop", b'{"type":"message_stop"}')
    assert priced_event(stop, COST) == stop
