"""The canonical answer written as chat JSON: every field a chat client reads."""

from __future__ import annotations

import orjson
import pytest
from aiport.v1 import text_pb2

from services.common.canonical_answer import (
    chat_chunk,
    chat_completion,
    chat_usage_chunk,
    finish_reason_of,
)
from services.common.usage import Usage

# What the call was charged (µIDR): 1.2345 IDR, rendered as cost_idr "1.2345".
COST = 1_234_500
USAGE = Usage(prompt_tokens=5, completion_tokens=2, cached_prompt_tokens=1)


def test_a_completion_with_text_tools_reasoning_and_logprobs() -> None:
    message = text_pb2.Message(
        role=text_pb2.ROLE_ASSISTANT,
        text="",
        reasoning_content="think",
        tool_calls=[
            text_pb2.ToolCall(
                id="call_1", function=text_pb2.FunctionCall(name="f", arguments='{"a":1}')
            )
        ],
    )
    completion = text_pb2.TextCompletion(
        id="chatcmpl-x",
        model="m",
        created=7,
        choices=[
            text_pb2.Choice(
                index=0,
                message=message,
                finish_reason=text_pb2.FINISH_REASON_TOOL_CALLS,
                logprobs_json='{"content":[{"token":"a","logprob":-0.5}]}',
            )
        ],
    )
    assert orjson.loads(chat_completion(completion, USAGE, COST)) == {
        "id": "chatcmpl-x",
        "object": "chat.completion",
        "created": 7,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"a":1}'},
                        }
                    ],
                    "reasoning_content": "think",
                },
                "logprobs": {"content": [{"token": "a", "logprob": -0.5}]},
                "finish_reason": "tool_calls",
            }
        ],
        "usage": USAGE.to_public() | {"cost_idr": "1.2345"},
    }


def test_a_message_without_text_has_null_content_and_an_unset_finish_is_stop() -> None:
    completion = text_pb2.TextCompletion(
        choices=[text_pb2.Choice(message=text_pb2.Message(role=text_pb2.ROLE_ASSISTANT))]
    )
    choice = orjson.loads(chat_completion(completion, USAGE, COST))["choices"][0]
    assert choice == {
        "index": 0,
        "message": {"role": "assistant", "content": None},
        "finish_reason": "stop",
    }


def test_chunks_carry_only_what_is_set() -> None:
    opening = text_pb2.TextChunk(
        id="c", model="m", created=1, choices=[text_pb2.ChoiceDelta(role=text_pb2.ROLE_ASSISTANT)]
    )
    assert orjson.loads(chat_chunk(opening)) == {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}],
    }
    call = text_pb2.TextChunk(
        choices=[
            text_pb2.ChoiceDelta(
                index=1,
                tool_calls=[
                    text_pb2.ToolCallDelta(
                        index=0, id="call_1", function=text_pb2.FunctionCall(name="f")
                    ),
                    text_pb2.ToolCallDelta(
                        index=0, function=text_pb2.FunctionCall(arguments='{"a"')
                    ),
                ],
                finish_reason=text_pb2.FINISH_REASON_LENGTH,
            )
        ]
    )
    assert orjson.loads(chat_chunk(call))["choices"] == [
        {
            "index": 1,
            "delta": {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "f", "arguments": ""},
                    },
                    {"index": 0, "function": {"arguments": '{"a"'}},
                ]
            },
            "finish_reason": "length",
        }
    ]


def test_the_usage_chunk_has_no_choices() -> None:
    assert orjson.loads(chat_usage_chunk("c", "m", 3, USAGE, COST)) == {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 3,
        "model": "m",
        "choices": [],
        "usage": USAGE.to_public() | {"cost_idr": "1.2345"},
    }


@pytest.mark.parametrize(
    ("upstream", "ours"),
    [
        (None, text_pb2.FINISH_REASON_UNSPECIFIED),
        ("", text_pb2.FINISH_REASON_UNSPECIFIED),
        ("stop", text_pb2.FINISH_REASON_STOP),
        ("length", text_pb2.FINISH_REASON_LENGTH),
        ("tool_calls", text_pb2.FINISH_REASON_TOOL_CALLS),
        ("function_call", text_pb2.FINISH_REASON_TOOL_CALLS),
        ("content_filter", text_pb2.FINISH_REASON_CONTENT_FILTER),
        ("eos", text_pb2.FINISH_REASON_STOP),  # not OpenAI's: the choice still ended
        (3, text_pb2.FINISH_REASON_STOP),
    ],
)
def test_upstream_finish_reasons(upstream: object, ours: text_pb2.FinishReason) -> None:
    assert finish_reason_of(upstream) == ours
