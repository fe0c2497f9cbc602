"""A canonical chat.completion.chunk read once, for every client protocol's renderer. Pure.

Providers stream the canonical (OpenAI chat) chunk; Messages and Responses render it
in their own events. Both need the same facts from it: the first choice's reasoning
and text, its tool-call pieces (and which piece starts a new call), and the finish
reason. They read them here, so a change to the canonical shape is one change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class ToolCallPiece:
    starts_call: bool  # the first piece of a call: its id and name are set
    call_id: str
    name: str
    arguments: str  # this piece's fragment of the arguments ("" for none)


@dataclass(frozen=True, slots=True)
class Delta:
    reasoning: str
    content: str
    tool_calls: tuple[ToolCallPiece, ...]
    finish: str | None


class CanonicalChunks:
    """Reads a stream's canonical chunks in order (it remembers the call being built)."""

    def __init__(self) -> None:
        self._tool_index: int | None = None  # the canonical index of the last call seen

    def _pieces(self, calls: Any) -> tuple[ToolCallPiece, ...]:
        pieces = []
        for call in calls if isinstance(calls, list) else ():
            if not isinstance(call, dict):
                continue
            function = call.get("function") or {}
            position = call.get("index", 0)
            starts = bool(call.get("id")) or position != self._tool_index
            self._tool_index = position
            pieces.append(
                ToolCallPiece(
                    starts,
                    call.get("id", ""),
                    function.get("name", ""),
                    function.get("arguments") or "",
                )
            )
        return tuple(pieces)

    def read(self, data: bytes) -> Delta | None:
        """The chunk's first choice; None for the usage-only chunk (no choices)."""
        body = orjson.loads(data)
        choices = body.get("choices") or []
        if not choices:
            return None
        choice = choices[0]
        delta = choice.get("delta") or {}
        return Delta(
            reasoning=delta.get("reasoning_content") or "",
            content=delta.get("content") or "",
            tool_calls=self._pieces(delta.get("tool_calls")),
            finish=choice.get("finish_reason") or None,
        )


__all__ = ["CanonicalChunks", "Delta", "ToolCallPiece"]
