"""Server-Sent Events parsing as a state machine with no I/O (in the manner of h11).

Feed it bytes as they arrive; it returns the events those bytes completed.
Only `data` (joined by newlines) and `event` fields matter to us; comments,
`id` and `retry` are ignored. Sizes are bounded so a hostile or broken
upstream cannot make us buffer without limit.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_LINE_BYTES = 4 * 1024 * 1024
MAX_EVENT_BYTES = 8 * 1024 * 1024


class SseError(ValueError):
    """The stream broke the SSE format or a size limit."""


@dataclass(frozen=True, slots=True)
class SseEvent:
    data: bytes
    event: str = "message"


class SseParser:
    def __init__(self) -> None:
        self._buffer = bytearray()
        self._data: list[bytes] = []
        self._data_size = 0
        self._event = "message"
        self._skip_lf = False

    def feed(self, chunk: bytes) -> list[SseEvent]:
        self._buffer += chunk
        events: list[SseEvent] = []
        while True:
            line = self._next_line()
            if line is None:
                break
            event = self._line(line)
            if event is not None:
                events.append(event)
        if len(self._buffer) > MAX_LINE_BYTES:
            raise SseError("SSE line exceeds the size limit")
        return events

    def _next_line(self) -> bytes | None:
        if self._skip_lf and self._buffer:
            # The \n of a \r\n whose \r ended the previous feed.
            if self._buffer[0] == 0x0A:
                del self._buffer[:1]
            self._skip_lf = False
        lf = self._buffer.find(b"\n")
        cr = self._buffer.find(b"\r")
        if cr == -1 or (lf != -1 and lf < cr):
            if lf == -1:
                return None
            end, skip = lf, 1
        elif cr + 1 == len(self._buffer):
            # A trailing \r ends the line now; a \n arriving next belongs to it.
            end, skip, self._skip_lf = cr, 1, True
        else:
            end, skip = cr, 2 if self._buffer[cr + 1] == 0x0A else 1
        line = bytes(self._buffer[:end])
        del self._buffer[: end + skip]
        return line

    def _line(self, line: bytes) -> SseEvent | None:
        if not line:
            if not self._data:
                self._event = "message"
                return None
            event = SseEvent(b"\n".join(self._data), self._event)
            self._data, self._data_size, self._event = [], 0, "message"
            return event
        if line.startswith(b":"):
            return None
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            self._data_size += len(value)
            if self._data_size > MAX_EVENT_BYTES:
                raise SseError("SSE event exceeds the size limit")
            self._data.append(value)
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        return None


def frame(data: bytes) -> bytes:
    """One SSE event carrying `data` (a single line of JSON)."""
    return b"data: " + data + b"\n\n"


def named_frame(event: str, data: bytes) -> bytes:
    """One SSE event with an `event:` name (Anthropic's and Responses' streams)."""
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


DONE = frame(b"[DONE]")
