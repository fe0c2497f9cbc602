"""A canonical chunk read once, for every client protocol's renderer. Pure.

Providers stream the canonical answer (TextChunk); Messages and Responses render it
in their own events. Both need the same facts from it: the first choice's reasoning
and text, its tool-call pieces (and which piece starts a new call), and the finish
reason. They read them here, so a change to the canonical answer is
one change.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiport.v1 import text_pb2


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
    finish: text_pb2.FinishReason  # FINISH_REASON_UNSPECIFIED: not on this chunk


class CanonicalChunks:
    """Reads a stream's canonical chunks in order (it remembers the call being built)."""

    def __init__(self) -> None:
        self._tool_index: int | None = None  # the canonical index of the last call seen

    def _pieces(self, calls: list[text_pb2.ToolCallDelta]) -> tuple[ToolCallPiece, ...]:
        pieces = []
        for call in calls:
            starts = bool(call.id) or call.index != self._tool_index
            self._tool_index = call.index
            pieces.append(
                ToolCallPiece(starts, call.id, call.function.name, call.function.arguments)
            )
        return tuple(pieces)

    def read(self, chunk: text_pb2.TextChunk) -> Delta | None:
        """The chunk's first choice; None for a chunk with no choices."""
        if not chunk.choices:
            return None
        choice = chunk.choices[0]
        return Delta(
            reasoning=choice.reasoning_content,
            content=choice.text,
            tool_calls=self._pieces(list(choice.tool_calls)),
            finish=choice.finish_reason,
        )


__all__ = ["CanonicalChunks", "Delta", "ToolCallPiece"]
