"""The canonical answer (TextCompletion, TextChunk) as OpenAI chat JSON. Pure.

Providers answer every translated text call with these typed messages, whatever
the upstream spoke; each client protocol's renderer at the gateway writes them
in its own shape. This is chat completions' writer: the mirror of
canonical_chat.py's `to_chat_body` for the answer. The usage is not on the
messages: it travels once, in its own event, and is written in here.

Log probabilities are the one part of the answer kept as the upstream's JSON
text (`logprobs_json`): they are returned to the client as they came, never read.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiport.v1 import text_pb2

from services.common.money import micros_to_idr
from services.common.usage import Usage

FINISH_REASONS: dict[text_pb2.FinishReason, str] = {
    text_pb2.FINISH_REASON_STOP: "stop",
    text_pb2.FINISH_REASON_LENGTH: "length",
    text_pb2.FINISH_REASON_TOOL_CALLS: "tool_calls",
    text_pb2.FINISH_REASON_CONTENT_FILTER: "content_filter",
}
# An upstream's finish reason as ours. The legacy `function_call` is a tool call;
# a value OpenAI does not define is read as a normal stop (see finish_reason_of).
FINISH_REASON_OF: dict[str, text_pb2.FinishReason] = {
    name: reason for reason, name in FINISH_REASONS.items()
} | {"function_call": text_pb2.FINISH_REASON_TOOL_CALLS}


def finish_reason_of(value: object) -> text_pb2.FinishReason:
    """An upstream's finish_reason: unset for none (null), STOP for one we do not know
    (the choice did end, and clients only handle OpenAI's four)."""
    if value is None or value == "":
        return text_pb2.FINISH_REASON_UNSPECIFIED
    if isinstance(value, str):
        return FINISH_REASON_OF.get(value, text_pb2.FINISH_REASON_STOP)
    return text_pb2.FINISH_REASON_STOP


def _tool_call(call: text_pb2.ToolCall) -> dict[str, Any]:
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.function.name, "arguments": call.function.arguments},
    }


def _message(message: text_pb2.Message) -> dict[str, Any]:
    out: dict[str, Any] = {
        "role": "assistant",
        "content": message.text if message.HasField("text") else None,
    }
    if message.tool_calls:
        out["tool_calls"] = [_tool_call(c) for c in message.tool_calls]
    if message.reasoning_content:
        out["reasoning_content"] = message.reasoning_content
    return out


def chat_usage(usage: Usage, cost_micros: int) -> dict[str, Any]:
    """OpenAI's `usage` object, and what the call cost in IDR (`cost_idr`, an exact
    decimal string: an extra field OpenAI's SDKs keep)."""
    return usage.to_public() | {"cost_idr": micros_to_idr(cost_micros)}


def chat_completion(completion: text_pb2.TextCompletion, usage: Usage, cost_micros: int) -> bytes:
    """A whole answer as a chat.completion object."""
    choices = []
    for choice in completion.choices:
        item: dict[str, Any] = {"index": choice.index, "message": _message(choice.message)}
        if choice.logprobs_json:
            item["logprobs"] = orjson.Fragment(choice.logprobs_json)
        item["finish_reason"] = FINISH_REASONS.get(choice.finish_reason, "stop")
        choices.append(item)
    return orjson.dumps(
        {
            "id": completion.id,
            "object": "chat.completion",
            "created": completion.created,
            "model": completion.model,
            "choices": choices,
            "usage": chat_usage(usage, cost_micros),
        }
    )


def _tool_call_delta(piece: text_pb2.ToolCallDelta) -> dict[str, Any]:
    out: dict[str, Any] = {"index": piece.index}
    if piece.id:
        out["id"] = piece.id
        out["type"] = "function"
    function: dict[str, str] = {}
    if piece.function.name:
        function["name"] = piece.function.name
    function["arguments"] = piece.function.arguments
    out["function"] = function
    return out


def _delta(choice: text_pb2.ChoiceDelta) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if choice.role != text_pb2.ROLE_UNSPECIFIED:
        out["role"] = "assistant"
    if choice.text:
        out["content"] = choice.text
    if choice.reasoning_content:
        out["reasoning_content"] = choice.reasoning_content
    if choice.tool_calls:
        out["tool_calls"] = [_tool_call_delta(p) for p in choice.tool_calls]
    return out


def chat_chunk(chunk: text_pb2.TextChunk) -> bytes:
    """One piece of a stream as a chat.completion.chunk object."""
    choices = []
    for choice in chunk.choices:
        item: dict[str, Any] = {"index": choice.index, "delta": _delta(choice)}
        if choice.logprobs_json:
            item["logprobs"] = orjson.Fragment(choice.logprobs_json)
        item["finish_reason"] = FINISH_REASONS.get(choice.finish_reason)
        choices.append(item)
    return orjson.dumps(_chunk_head(chunk.id, chunk.model, chunk.created) | {"choices": choices})


def chat_usage_chunk(
    completion_id: str, model: str, created: int, usage: Usage, cost_micros: int
) -> bytes:
    """A stream's last chunk: no choices, the usage and cost (OpenAI's include_usage chunk)."""
    return orjson.dumps(
        _chunk_head(completion_id, model, created)
        | {"choices": [], "usage": chat_usage(usage, cost_micros)}
    )


def _chunk_head(completion_id: str, model: str, created: int) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
    }


__all__ = [
    "FINISH_REASONS",
    "FINISH_REASON_OF",
    "chat_chunk",
    "chat_completion",
    "chat_usage_chunk",
    "finish_reason_of",
]
