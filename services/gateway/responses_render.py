"""The canonical answer rendered as an OpenAI Response and its typed events. Pure.

The client protocol's outbound half, as messages_render.py is for Messages: a whole
canonical answer (TextCompletion) becomes a Response object; a stream of canonical
chunks (TextChunk) becomes Responses' event sequence, every event numbered
(`sequence_number`). No I/O.

Output mapping (canonical -> Response output items, in this order):
  reasoning_content -> a reasoning item, its text as reasoning_text content
      (summary empty: no upstream summarises)
  content           -> a message item with one output_text part
  tool_calls        -> function_call items (call_id: the canonical tool call id)
  finish_reason length -> status incomplete, incomplete_details max_output_tokens;
      content_filter -> incomplete, content_filter; else completed
  usage             -> input_tokens (cached included), input_tokens_details,
      output_tokens (reasoning included), output_tokens_details, total_tokens

The stream (one state machine, `ResponseStream`; TRANSITIONS lists every move):
  first output     -> response.created, response.in_progress (status in_progress)
  reasoning delta  -> (close the open item) output_item.added reasoning,
      content_part.added reasoning_text; reasoning_text.delta
  content delta    -> (close) output_item.added message, content_part.added
      output_text; output_text.delta
  tool call delta  -> a new call: (close) output_item.added function_call;
      its argument fragments: function_call_arguments.delta
  closing an item  -> its .done events (text / arguments, content_part), then
      output_item.done with the whole item
  the end (usage)  -> (close) response.completed, or response.incomplete
  a break          -> (close) response.failed with the error (`failed`)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import orjson
from aiport.v1 import text_pb2

from services.common.money import micros_to_idr
from services.common.sse import named_frame
from services.common.usage import Usage
from services.gateway.canonical_stream import CanonicalChunks, ToolCallPiece
from services.gateway.errors import PublicError
from services.gateway.responses_request import ResponseEcho

# finish_reason -> why a response is incomplete (others complete it).
INCOMPLETE_REASONS: dict[text_pb2.FinishReason, str] = {
    text_pb2.FINISH_REASON_LENGTH: "max_output_tokens",
    text_pb2.FINISH_REASON_CONTENT_FILTER: "content_filter",
}


def response_id(completion_id: str) -> str:
    return "resp_" + completion_id.removeprefix("chatcmpl-")


def usage_fields(usage: Usage, cost_micros: int) -> dict[str, Any]:
    """Responses' usage, and ours: cost_idr (what the call cost, an exact decimal string)."""
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cached_prompt_tokens,
            "cache_write_tokens": usage.cache_write_prompt_tokens,
        },
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "cost_idr": micros_to_idr(cost_micros),
    }


@dataclass(slots=True)
class ResponseFrame:
    """The Response object around the output: what every lifecycle event carries."""

    id: str
    echo: ResponseEcho
    created_at: int = field(default_factory=lambda: int(time.time()))

    def item_id(self, prefix: str, output_index: int) -> str:
        """An output item's id: unique in the response, derived from its id."""
        return f"{prefix}_{self.id.removeprefix('resp_')}_{output_index}"

    def render(
        self,
        status: str,
        output: list[dict[str, Any]],
        usage: Usage | None = None,
        *,
        cost_micros: int = 0,
        finish: text_pb2.FinishReason = text_pb2.FINISH_REASON_UNSPECIFIED,
        error: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        echo = self.echo
        reason = INCOMPLETE_REASONS.get(finish)
        if status == "completed" and reason is not None:
            status = "incomplete"
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": False,
            "error": error,
            "incomplete_details": {"reason": reason} if status == "incomplete" else None,
            "instructions": echo.instructions,
            "max_output_tokens": echo.max_output_tokens,
            "metadata": echo.metadata,
            "model": echo.model,
            "output": output,
            "parallel_tool_calls": echo.parallel_tool_calls,
            "previous_response_id": None,
            "reasoning": {"effort": echo.effort, "summary": None},
            "store": False,
            "temperature": echo.temperature,
            "text": {"format": echo.text_format},
            "tool_choice": echo.tool_choice,
            "tools": echo.tools,
            "top_p": echo.top_p,
            "truncation": "disabled",
            "usage": None if usage is None else usage_fields(usage, cost_micros),
            "user": echo.user,
        }


class Item(Enum):
    """What output item the stream has open."""

    NONE = "none"
    REASONING = "reasoning"
    MESSAGE = "message"
    FUNCTION_CALL = "function_call"


def _reasoning_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "reasoning",
        "summary": [],
        "content": [{"type": "reasoning_text", "text": text}] if text else [],
        "status": status,
    }


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [_text_part(text)] if text else [],
    }


def _reasoning_part(text: str) -> dict[str, Any]:
    return {"type": "reasoning_text", "text": text}


@dataclass(frozen=True, slots=True)
class TextItem:
    """An output item whose one content part streams text: how each looks."""

    prefix: str  # of its id
    item: Callable[[str, str, str], dict[str, Any]]  # (id, text, status) -> the item
    part: Callable[[str], dict[str, Any]]  # text -> its content part
    delta: str  # the event carrying a piece of the text
    done: str  # the event carrying the whole text
    extra: tuple[tuple[str, Any], ...] = ()  # more fields on both


# The two items that stream text (a function call streams arguments instead).
TEXT_ITEMS = {
    Item.REASONING: TextItem(
        "rs",
        _reasoning_item,
        _reasoning_part,
        "response.reasoning_text.delta",
        "response.reasoning_text.done",
    ),
    Item.MESSAGE: TextItem(
        "msg",
        _message_item,
        _text_part,
        "response.output_text.delta",
        "response.output_text.done",
        (("logprobs", []),),
    ),
}


def _call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str
) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def render_response(
    completion: text_pb2.TextCompletion, usage: Usage, frame: ResponseFrame, cost_micros: int
) -> bytes:
    """A whole answer as a Response object (its first choice: a Response has one)."""
    choice = completion.choices[0] if completion.choices else text_pb2.Choice()
    message = choice.message
    output: list[dict[str, Any]] = []
    if message.reasoning_content:
        output.append(
            _reasoning_item(frame.item_id("rs", 0), message.reasoning_content, "completed")
        )
    if message.text:
        output.append(_message_item(frame.item_id("msg", len(output)), message.text, "completed"))
    for call in message.tool_calls:
        output.append(
            _call_item(
                frame.item_id("fc", len(output)),
                call.id,
                call.function.name,
                call.function.arguments,
                "completed",
            )
        )
    return orjson.dumps(
        frame.render(
            "completed", output, usage, cost_micros=cost_micros, finish=choice.finish_reason
        )
    )


class Phase(Enum):
    BEFORE = "before"  # nothing sent yet
    OPEN = "open"  # response.created sent
    DONE = "done"  # response.completed / incomplete / failed sent


# Every legal move: (phase, input) -> phase. Anything else is a bug, raised.
TRANSITIONS = {
    (Phase.BEFORE, "chunk"): Phase.OPEN,
    (Phase.OPEN, "chunk"): Phase.OPEN,
    (Phase.BEFORE, "end"): Phase.DONE,
    (Phase.OPEN, "end"): Phase.DONE,
    (Phase.BEFORE, "fail"): Phase.DONE,
    (Phase.OPEN, "fail"): Phase.DONE,
}


def event(name: str, data: dict[str, Any]) -> bytes:
    return named_frame(name, orjson.dumps(data))


class ResponseStream:
    """Canonical chunks in, Responses events out (see the module's docstring)."""

    def __init__(self, frame: ResponseFrame) -> None:
        self.frame = frame
        self.phase = Phase.BEFORE
        self.sequence = 0
        self.output: list[dict[str, Any]] = []  # closed items, whole
        self.item = Item.NONE
        self.item_id = ""
        self.text = ""  # the open item's text or arguments so far
        self.call: tuple[str, str] = ("", "")  # the open function call's call_id, name
        self.chunks = CanonicalChunks()
        self.finish = text_pb2.FINISH_REASON_UNSPECIFIED

    def _move(self, move: str) -> None:
        after = TRANSITIONS.get((self.phase, move))
        if after is None:
            raise RuntimeError(f"response stream: {move} in phase {self.phase.value}")
        self.phase = after

    def _event(self, kind: str, /, **data: Any) -> bytes:
        out = event(kind, {"type": kind, "sequence_number": self.sequence, **data})
        self.sequence += 1
        return out

    def _start(self) -> list[bytes]:
        response = self.frame.render("in_progress", [])
        return [
            self._event("response.created", response=response),
            self._event("response.in_progress", response=response),
        ]

    @property
    def _index(self) -> int:
        """The open item's output_index."""
        return len(self.output)

    def _where(self) -> dict[str, Any]:
        """The open item's place, as every event about it names it."""
        return {"item_id": self.item_id, "output_index": self._index}

    def _close(self) -> list[bytes]:
        if self.item is Item.NONE:
            return []
        out: list[bytes] = []
        text_item = TEXT_ITEMS.get(self.item)
        if text_item is not None:
            item = text_item.item(self.item_id, self.text, "completed")
            out.append(
                self._event(
                    text_item.done,
                    **self._where(),
                    content_index=0,
                    text=self.text,
                    **dict(text_item.extra),
                )
            )
            out.append(
                self._event(
                    "response.content_part.done",
                    **self._where(),
                    content_index=0,
                    part=text_item.part(self.text),
                )
            )
        else:
            call_id, name = self.call
            item = _call_item(self.item_id, call_id, name, self.text, "completed")
            out.append(
                self._event(
                    "response.function_call_arguments.done",
                    **self._where(),
                    name=name,
                    arguments=self.text,
                )
            )
        out.append(self._event("response.output_item.done", output_index=self._index, item=item))
        self.output.append(item)
        self.item = Item.NONE
        self.text = ""
        return out

    def _open(self, kind: Item, item: dict[str, Any]) -> list[bytes]:
        out = self._close()
        self.item = kind
        self.item_id = item["id"]
        out.append(self._event("response.output_item.added", output_index=self._index, item=item))
        return out

    def _text(self, kind: Item, delta: str) -> list[bytes]:
        """A piece of reasoning or answer text: its item opened first if need be."""
        text_item = TEXT_ITEMS[kind]
        out: list[bytes] = []
        if self.item is not kind:
            item_id = self.frame.item_id(text_item.prefix, len(self.output))
            out += self._open(kind, text_item.item(item_id, "", "in_progress"))
            out.append(
                self._event(
                    "response.content_part.added",
                    **self._where(),
                    content_index=0,
                    part=text_item.part(""),
                )
            )
        self.text += delta
        out.append(
            self._event(
                text_item.delta,
                **self._where(),
                content_index=0,
                delta=delta,
                **dict(text_item.extra),
            )
        )
        return out

    def _tool_calls(self, pieces: tuple[ToolCallPiece, ...]) -> list[bytes]:
        out: list[bytes] = []
        for piece in pieces:
            if self.item is not Item.FUNCTION_CALL or piece.starts_call:
                out += self._close()  # before self.call names the new call
                self.call = (piece.call_id, piece.name)
                out += self._open(
                    Item.FUNCTION_CALL,
                    _call_item(
                        self.frame.item_id("fc", self._index), *self.call, "", "in_progress"
                    ),
                )
            if piece.arguments:
                self.text += piece.arguments
                out.append(
                    self._event(
                        "response.function_call_arguments.delta",
                        **self._where(),
                        delta=piece.arguments,
                    )
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
            out += self._text(Item.REASONING, delta.reasoning)
        if delta.content:
            out += self._text(Item.MESSAGE, delta.content)
        out += self._tool_calls(delta.tool_calls)
        if delta.finish:
            self.finish = delta.finish
        return b"".join(out)

    def end(self, usage: Usage, cost_micros: int) -> bytes:
        """The call ended with its usage (and cost): close the response."""
        out = self._start() if self.phase is Phase.BEFORE else []
        self._move("end")
        out += self._close()
        response = self.frame.render(
            "completed", self.output, usage, cost_micros=cost_micros, finish=self.finish
        )
        out.append(self._event(f"response.{response['status']}", response=response))
        return b"".join(out)

    def failed(self, error: PublicError) -> bytes:
        """The call broke after output had started: close what is open, then fail."""
        out = self._start() if self.phase is Phase.BEFORE else []
        self._move("fail")
        out += self._close()
        problem = {"code": "server_error", "message": error.message}
        response = self.frame.render("failed", self.output, error=problem)
        out.append(self._event("response.failed", response=response))
        return b"".join(out)


__all__ = ["ResponseFrame", "ResponseStream", "render_response", "response_id", "usage_fields"]
