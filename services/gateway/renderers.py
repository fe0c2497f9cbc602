"""How a chat's canonical answer reaches each client protocol. Pure.

Providers answer every text call with the typed canonical answer (TextCompletion,
or TextChunks and then the usage); the relay hands each piece to the call's
renderer and sends what it returns. Chat completions writes OpenAI chat JSON
(canonical_answer.py; SSE-framed, the usage chunk last); Messages renders
Anthropic's shapes (messages_render.py); Responses renders OpenAI's Response
and its typed events (responses_render.py). Adding a client protocol is a
renderer and a request parser; the relay, settlement and every upstream adapter
stay as they are.
"""

from __future__ import annotations

from typing import Protocol

from aiport.v1 import text_pb2

from services.common.canonical_answer import chat_chunk, chat_completion, chat_usage_chunk
from services.common.sse import DONE, frame
from services.common.usage import Usage
from services.gateway.errors import PublicError
from services.gateway.messages_render import (
    CLOSING_EVENTS,
    MessageStream,
    anthropic_error,
    priced_event,
    priced_message,
    render_message,
)
from services.gateway.responses_render import ResponseFrame, ResponseStream, render_response


class ClientRenderer(Protocol):
    def chunk(self, chunk: text_pb2.TextChunk) -> bytes:
        """A canonical chunk: the bytes for the client (maybe none)."""

    def stream_end(self, usage: Usage, cost_micros: int) -> bytes:
        """A stream ended with its usage reported, and captured at `cost_micros`."""

    def completion(
        self, completion: text_pb2.TextCompletion, usage: Usage, cost_micros: int
    ) -> bytes:
        """A whole canonical answer (stream false), captured at `cost_micros`."""

    def failure(self, error: PublicError) -> bytes:
        """A stream broke after output had started: the in-band error event."""

    def native_chunk(self, data: bytes) -> bytes:
        """A piece of a stream a route passed through in the client's own protocol
        (only a protocol that asked for it, with a NativeRequest, gets one)."""

    def native_completion(self, data: bytes, cost_micros: int) -> bytes:
        """A whole answer a route passed through in the client's own protocol."""


class ChatCompletionsRenderer:
    """OpenAI chat completions: chat.completion, or its chunks and then the usage chunk
    (always sent, as if the client asked for include_usage: it is our bill)."""

    def __init__(self, completion_id: str, model: str, created: int) -> None:
        self.completion_id = completion_id
        self.model = model
        self.created = created

    def chunk(self, chunk: text_pb2.TextChunk) -> bytes:
        return frame(chat_chunk(chunk))

    def stream_end(self, usage: Usage, cost_micros: int) -> bytes:
        usage_chunk = chat_usage_chunk(
            self.completion_id, self.model, self.created, usage, cost_micros
        )
        return frame(usage_chunk) + DONE

    def completion(
        self, completion: text_pb2.TextCompletion, usage: Usage, cost_micros: int
    ) -> bytes:
        return chat_completion(completion, usage, cost_micros)

    def failure(self, error: PublicError) -> bytes:
        return error.sse_event()

    def native_chunk(self, data: bytes) -> bytes:
        raise RuntimeError("chat completions never ask for a native passthrough")

    def native_completion(self, data: bytes, cost_micros: int) -> bytes:
        raise RuntimeError("chat completions never ask for a native passthrough")


class MessagesRenderer:
    """Anthropic Messages: a `message` object, or its event stream. A route that passed
    Claude's own events through closes its message itself; its closing events wait
    for the capture, so message_delta's usage can carry the cost."""

    def __init__(self, completion_id: str, model: str) -> None:
        self.model = model
        self.stream = MessageStream(completion_id, model)
        self.passed_through = False  # the upstream's own events: it closes its message
        self.closing: list[bytes] = []  # its message_delta and message_stop, held back

    def chunk(self, chunk: text_pb2.TextChunk) -> bytes:
        return self.stream.chunk(chunk)

    def stream_end(self, usage: Usage, cost_micros: int) -> bytes:
        if not self.passed_through:
            return self.stream.end(usage, cost_micros)
        out = b"".join(priced_event(frame, cost_micros) for frame in self.closing)
        self.closing = []
        return out

    def completion(
        self, completion: text_pb2.TextCompletion, usage: Usage, cost_micros: int
    ) -> bytes:
        return render_message(completion, usage, self.model, cost_micros)

    def failure(self, error: PublicError) -> bytes:
        return anthropic_error(error).sse_event()

    def native_chunk(self, data: bytes) -> bytes:
        self.passed_through = True
        if data.startswith(CLOSING_EVENTS):
            self.closing.append(data)
            return b""
        return data

    def native_completion(self, data: bytes, cost_micros: int) -> bytes:
        return priced_message(data, cost_micros)


class ResponsesRenderer:
    """OpenAI Responses: a Response object, or its typed event stream."""

    def __init__(self, frame: ResponseFrame) -> None:
        self.frame = frame
        self.stream = ResponseStream(frame)

    def chunk(self, chunk: text_pb2.TextChunk) -> bytes:
        return self.stream.chunk(chunk)

    def stream_end(self, usage: Usage, cost_micros: int) -> bytes:
        return self.stream.end(usage, cost_micros)

    def completion(
        self, completion: text_pb2.TextCompletion, usage: Usage, cost_micros: int
    ) -> bytes:
        return render_response(completion, usage, self.frame, cost_micros)

    def failure(self, error: PublicError) -> bytes:
        return self.stream.failed(error)

    def native_chunk(self, data: bytes) -> bytes:
        raise RuntimeError("Responses never asks for a native passthrough")

    def native_completion(self, data: bytes, cost_micros: int) -> bytes:
        raise RuntimeError("Responses never asks for a native passthrough")
