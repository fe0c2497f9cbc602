"""Canonical answers (TextCompletion, TextChunk) for tests: built from a few facts,
and written as the chat JSON clients get (for tests that assert on what they see)."""

from __future__ import annotations

from typing import Any

import orjson
from aiport.v1 import text_pb2

from services.common.canonical_answer import chat_chunk, chat_completion
from services.common.usage import Usage

ASSISTANT = text_pb2.ROLE_ASSISTANT
NO_FINISH = text_pb2.FINISH_REASON_UNSPECIFIED
STOP = text_pb2.FINISH_REASON_STOP


def chunk(
    *,
    text: str = "",
    reasoning: str = "",
    calls: tuple[text_pb2.ToolCallDelta, ...] = (),
    finish: text_pb2.FinishReason = NO_FINISH,
    first: bool = False,
) -> text_pb2.TextChunk:
    """One canonical chunk of choice 0 (`first`: it carries the role)."""
    return text_pb2.TextChunk(
        id="chatcmpl-abc",
        model="m",
        choices=[
            text_pb2.ChoiceDelta(
                index=0,
                role=ASSISTANT if first else text_pb2.ROLE_UNSPECIFIED,
                text=text,
                reasoning_content=reasoning,
                tool_calls=calls,
                finish_reason=finish,
            )
        ],
    )


def call(index: int, arguments: str, call_id: str = "", name: str = "") -> text_pb2.ToolCallDelta:
    """A piece of a tool call: the first has its id and name, later ones arguments."""
    return text_pb2.ToolCallDelta(
        index=index, id=call_id, function=text_pb2.FunctionCall(name=name, arguments=arguments)
    )


def completion(
    message: text_pb2.Message, finish: text_pb2.FinishReason = STOP
) -> text_pb2.TextCompletion:
    """A whole canonical answer with one choice."""
    return text_pb2.TextCompletion(
        id="chatcmpl-abc",
        model="m",
        choices=[text_pb2.Choice(index=0, message=message, finish_reason=finish)],
    )


def chunk_json(chunk: text_pb2.TextChunk) -> dict[str, Any]:
    body: dict[str, Any] = orjson.loads(chat_chunk(chunk))
    return body


def completion_json(completion: text_pb2.TextCompletion, usage: Usage) -> dict[str, Any]:
    """An adapter's answer as a chat client would read it, without the cost (adapters
    do not price: the gateway adds what it captured)."""
    body: dict[str, Any] = orjson.loads(chat_completion(completion, usage, 0))
    del body["usage"]["cost_idr"]
    return body
