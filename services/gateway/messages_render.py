"""The canonical answer rendered as Anthropic Messages JSON and events. Pure.

The client protocol's outbound half. Providers answer every text call with the
typed canonical answer (TextCompletion, TextChunk); this turns a whole answer
into a Messages `message`, a stream of chunks into Messages' event sequence, and
a public error into Messages' error shape. No I/O: messages in, bytes out.

Response mapping (canonical -> Messages):
  reasoning_content            -> a thinking block (signature "": only Anthropic
      signs thinking, and no upstream reached through translation does)
  content                      -> a text block
  tool_calls                   -> tool_use blocks (arguments parsed as the input object)
  finish_reason                -> stop_reason (STOP_REASONS); which stop sequence
      matched is not known to the canonical answer, so stop_sequence is null
  usage                        -> input_tokens (uncached, unwritten prompt tokens),
      cache_read_input_tokens, cache_creation_input_tokens, output_tokens

The stream (one state machine, `MessageStream`; TRANSITIONS lists every move):
  first chunk      -> message_start (usage so far: zero), ping
  reasoning delta  -> (close the open block) content_block_start thinking, thinking_delta
  content delta    -> (close the open block) content_block_start text, text_delta
  tool call delta  -> a new call: (close) content_block_start tool_use {id, name, input {}};
      its argument fragments: input_json_delta
  the end (usage)  -> content_block_stop, message_delta {stop_reason, usage}, message_stop
  a break          -> `event: error` (the boundary sends it; the stream just ends)
"""

from __future__ import annotations

import dataclasses
from enum import Enum
from typing import Any

import orjson
from aiport.v1 import text_pb2

from services.common.money import micros_to_idr
from services.common.sse import named_frame
from services.common.usage import Usage
from services.gateway.canonical_stream import CanonicalChunks, ToolCallPiece
from services.gateway.errors import PublicError

STOP_REASONS: dict[text_pb2.FinishReason, str] = {
    text_pb2.FINISH_REASON_STOP: "end_turn",
    text_pb2.FINISH_REASON_LENGTH: "max_tokens",
    text_pb2.FINISH_REASON_TOOL_CALLS: "tool_use",
    text_pb2.FINISH_REASON_CONTENT_FILTER: "refusal",
}
DEFAULT_STOP_REASON = "end_turn"

# Public HTTP status -> Messages error type (Anthropic's documented pairs).
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "invalid_request_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "api_error",
}
# An empty balance is Anthropic's "credit balance is too low": a 400 the SDK raises
# as BadRequestError and that no retry fixes (our chat API says 429 insufficient_quota,
# OpenAI's convention; a Messages client would retry a 429).
BALANCE_CODES = frozenset({"insufficient_quota", "insufficient_balance"})


def anthropic_error(error: PublicError) -> PublicError:
    """The same error in Messages' shape and status."""
    if error.protocol == "anthropic":
        return error
    status = 400 if error.code in BALANCE_CODES else error.status
    kind = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return dataclasses.replace(error, status=status, type=kind, protocol="anthropic")


def message_id(completion_id: str) -> str:
    return "msg_" + completion_id.removeprefix("chatcmpl-")


def usage_fields(usage: Usage, cost_micros: int) -> dict[str, Any]:
    """Messages' usage: input_tokens excludes what was read from or written to the cache;
    cost_idr is ours (what the call cost, an exact decimal string)."""
    cached = min(usage.cached_prompt_tokens, usage.prompt_tokens)
    written = min(usage.cache_write_prompt_tokens, usage.prompt_tokens - cached)
    return {
        "input_tokens": usage.prompt_tokens - cached - written,
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": cached,
        "output_tokens": usage.completion_tokens,
        "cost_idr": micros_to_idr(cost_micros),
    }


def _tool_input(arguments: Any) -> Any:
    if not isinstance(arguments, str) or not arguments.strip():
        return {}
    try:
        parsed = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        # Kept, not dropped: the client sees what the model wrote.
        return {"_unparsed_arguments": arguments}
    return parsed if isinstance(parsed, dict) else {"_value": parsed}


def render_message(
    completion: text_pb2.TextCompletion, usage: Usage, model: str, cost_micros: int
) -> bytes:
    """A whole answer as a Messages `message` object (its first choice: Messages has one)."""
    choice = completion.choices[0] if completion.choices else text_pb2.Choice()
    message = choice.message
    content: list[dict[str, Any]] = []
    if message.reasoning_content:
        content.append({"type": "thinking", "thinking": message.reasoning_content, "signature": ""})
    if message.text:
        content.append({"type": "text", "text": message.text})
    for call in message.tool_calls:
        content.append(
            {
                "type": "tool_use",
                "id": call.id,
                "name": call.function.name,
                "input": _tool_input(call.function.arguments),
            }
        )
    return orjson.dumps(
        {
            "id": message_id(completion.id),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": STOP_REASONS.get(choice.finish_reason, DEFAULT_STOP_REASON),
            "stop_sequence": None,
            "usage": usage_fields(usage, cost_micros),
        }
    )


def event(name: str, data: dict[str, Any]) -> bytes:
    return named_frame(name, orjson.dumps(data))


# -- a passed-through answer (Claude's own JSON and events), priced ------------------------

# The events that close a passed-through stream: sent once the call is captured.
CLOSING_EVENTS = (b"event: message_delta\n", b"event: message_stop\n")


def _with_cost(body: Any, cost_micros: int) -> Any:
    if isinstance(body, dict) and isinstance(body.get("usage"), dict):
        body["usage"]["cost_idr"] = micros_to_idr(cost_micros)
    return body


def priced_message(raw: bytes, cost_micros: int) -> bytes:
    """A passed-through `message` with our cost_idr on its usage."""
    return orjson.dumps(_with_cost(orjson.loads(raw), cost_micros))


def priced_event(frame: bytes, cost_micros: int) -> bytes:
    """A passed-through closing event (one `event:`/`data:` frame), message_delta's
    usage with our cost_idr; any other event as it is."""
    head, sep, rest = frame.partition(b"\ndata: ")
    if not sep or head != b"event: message_delta":
        return frame
    return named_frame("message_delta", orjson.dumps(_with_cost(orjson.loads(rest), cost_micros)))


class Block(Enum):
    """What content block the stream has open."""

    NONE = "none"
    THINKING = "thinking"
    TEXT = "text"
    TOOL_USE = "tool_use"


class Phase(Enum):
    BEFORE = "before"  # nothing sent yet
    OPEN = "open"  # message_start sent
    DONE = "done"  # message_stop sent


# Every legal move: (phase, input) -> phase. Anything else is a bug, raised.
TRANSITIONS = {
    (Phase.BEFORE, "chunk"): Phase.OPEN,
    (Phase.OPEN, "chunk"): Phase.OPEN,
    (Phase.BEFORE, "end"): Phase.DONE,
    (Phase.OPEN, "end"): Phase.DONE,
}


class MessageStream:
    """Canonical chunks in, Messages events out (see the module's docstring)."""

    def __init__(self, completion_id: str, model: str) -> None:
        self.id = message_id(completion_id)
        self.model = model
        self.phase = Phase.BEFORE
        self.block = Block.NONE
        self.index = -1  # the open (or last) block's index
        self.chunks = CanonicalChunks()
        self.finish = text_pb2.FINISH_REASON_UNSPECIFIED

    def _move(self, move: str) -> None:
        after = TRANSITIONS.get((self.phase, move))
        if after is None:
            raise RuntimeError(f"message stream: {move} in phase {self.phase.value}")
        self.phase = after

    def _start(self) -> list[bytes]:
        return [
            event(
                "message_start",
                {
                    "type": "message_start",
                    "message": {
                        "id": self.id,
                        "type": "message",
                        "role": "assistant",
                        "model": self.model,
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        # Known at the end (message_delta); zero until then.
                        "usage": {"input_tokens": 0, "output_tokens": 0},
                    },
                },
            ),
            event("ping", {"type": "ping"}),
        ]

    def _close(self) -> list[bytes]:
        if self.block is Block.NONE:
            return []
        self.block = Block.NONE
        return [event("content_block_stop", {"type": "content_block_stop", "index": self.index})]

    def _open(self, block: Block, content_block: dict[str, Any]) -> list[bytes]:
        out = self._close()
        self.block = block
        self.index += 1
        out.append(
            event(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": self.index,
                    "content_block": content_block,
                },
            )
        )
        return out

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return event(
            "content_block_delta",
            {"type": "content_block_delta", "index": self.index, "delta": delta},
        )

    def _tool_calls(self, pieces: tuple[ToolCallPiece, ...]) -> list[bytes]:
        out: list[bytes] = []
        for piece in pieces:
            if self.block is not Block.TOOL_USE or piece.starts_call:
                out += self._open(
                    Block.TOOL_USE,
                    {"type": "tool_use", "id": piece.call_id, "name": piece.name, "input": {}},
                )
            if piece.arguments:
                out.append(
                    self._delta({"type": "input_json_delta", "partial_json": piece.arguments})
                )
        return out

    def chunk(self, chunk: text_pb2.TextChunk) -> bytes:
        """One canonical chunk: the events it makes."""
        delta = self.chunks.read(chunk)
        if delta is None:
            return b""
        out: list[bytes] = []
        if self.phase is Phase.BEFORE:
            out += self._start()
        self._move("chunk")
        if delta.reasoning:
            if self.block is not Block.THINKING:
                out += self._open(
                    Block.THINKING, {"type": "thinking", "thinking": "", "signature": ""}
                )
            out.append(self._delta({"type": "thinking_delta", "thinking": delta.reasoning}))
        if delta.content:
            if self.block is not Block.TEXT:
                out += self._open(Block.TEXT, {"type": "text", "text": ""})
            out.append(self._delta({"type": "text_delta", "text": delta.content}))
        out += self._tool_calls(delta.tool_calls)
        if delta.finish:
            self.finish = delta.finish
        return b"".join(out)

    def end(self, usage: Usage, cost_micros: int) -> bytes:
        """The call ended with its usage (and cost): close the message."""
        out = self._start() if self.phase is Phase.BEFORE else []
        self._move("end")
        out += self._close()
        out.append(
            event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {
                        "stop_reason": STOP_REASONS.get(self.finish, DEFAULT_STOP_REASON),
                        "stop_sequence": None,
                    },
                    "usage": usage_fields(usage, cost_micros),
                },
            )
        )
        out.append(event("message_stop", {"type": "message_stop"}))
        return b"".join(out)


__all__ = [
    "CLOSING_EVENTS",
    "MessageStream",
    "anthropic_error",
    "priced_event",
    "priced_message",
    "render_message",
    "usage_fields",
]
