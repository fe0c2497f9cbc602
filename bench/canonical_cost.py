"""What the typed canonical call costs between gateway and providers, without the noise.

    .venv/bin/python -m bench.canonical_cost

The gateway used to hand the providers service the gate's output as JSON bytes
(orjson out, orjson in). It now builds a CanonicalChat (`from_chat_body`), which
gRPC serializes and the providers service parses; an OpenAI-compatible adapter
turns it back into chat JSON (`to_chat_body`), the others read its fields. This
measures, in one process, both ways for two gate outputs (a one-line chat, and a
tool loop of four messages and one tool), in µs per call (median of rounds).

The answer came back as chat JSON bytes too, which chat's renderer passed
through; it is now typed (TextChunk, TextCompletion), built by the providers'
ChunkTranslator and written as chat JSON by the gateway (canonical_answer.py).
The answer rows measure one stream chunk of text and a whole completion both
ways. "Before" counts only the JSON dump and the bytes on the wire, not the
dict the old translator built first, so the added figure is an upper bound.

Compare the differences with the gateway's CPU per request in `make bench` (a
few ms): at that size they are under the noise of a whole-stack run.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import orjson
from aiport.v1 import providers_pb2

from bench.surface_cost import per_call_us
from services.common.canonical_answer import chat_chunk, chat_completion
from services.common.canonical_chat import from_chat_body, to_chat_body
from services.providers.adapters.openai_chat_translate import (
    ChunkTranslator,
    Identity,
    public_completion,
)

ROUNDS = 5
THINKING = {"control": "toggle", "type": "disabled"}
BODIES: dict[str, dict[str, Any]] = {
    "one line": {
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 16,
        "thinking": THINKING,
    },
    "tool loop": {
        "messages": [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": "What is the weather in Jakarta today?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Jakarta"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "31C, sunny"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "The weather in a city.",
                    "parameters": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}},
                        "required": ["city"],
                    },
                },
            }
        ],
        "max_tokens": 512,
        "temperature": 0.7,
        "thinking": THINKING,
    },
}


def as_json_bytes(body: dict[str, Any]) -> Callable[[], object]:
    """Before: the gate's dict as JSON bytes, read back by the providers service."""
    return lambda: orjson.loads(orjson.dumps(body))


def as_typed_call(body: dict[str, Any]) -> Callable[[], object]:
    """Now: the typed call, over the wire, back to chat JSON for an OpenAI upstream."""

    def run() -> object:
        wire = providers_pb2.ChatCompletionRequest(chat=from_chat_body(body)).SerializeToString()
        return to_chat_body(providers_pb2.ChatCompletionRequest.FromString(wire).chat.request)

    return run


IDENTITY = Identity("chatcmpl-bench", "deepseek-v3", 1_700_000_000)
UPSTREAM_CHUNK = {"choices": [{"index": 0, "delta": {"content": "Halo, apa kabar"}}]}
PUBLIC_CHUNK = {
    "id": IDENTITY.completion_id,
    "object": "chat.completion.chunk",
    "created": IDENTITY.created,
    "model": IDENTITY.model,
    "choices": [{"index": 0, "delta": {"content": "Halo, apa kabar"}, "finish_reason": None}],
}
UPSTREAM_COMPLETION = {
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Halo! Ada yang bisa saya bantu?"},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21},
}


def chunk_as_json_bytes() -> object:
    """Before: the public chunk dumped, carried as bytes, framed as it was."""
    wire = providers_pb2.ChatCompletionEvent(
        native_chunk=orjson.dumps(PUBLIC_CHUNK)
    ).SerializeToString()
    return providers_pb2.ChatCompletionEvent.FromString(wire).native_chunk


def chunk_as_typed() -> object:
    """Now: the translator's TextChunk, over the wire, written as chat JSON."""
    translator = ChunkTranslator(IDENTITY, prompt_chars=10)
    (chunk,) = translator.feed(UPSTREAM_CHUNK)
    wire = providers_pb2.ChatCompletionEvent(chunk=chunk).SerializeToString()
    return chat_chunk(providers_pb2.ChatCompletionEvent.FromString(wire).chunk)


def completion_as_json_bytes() -> object:
    wire = providers_pb2.ChatCompleted(
        native_completion=orjson.dumps(UPSTREAM_COMPLETION)
    ).SerializeToString()
    return providers_pb2.ChatCompleted.FromString(wire).native_completion


def completion_as_typed() -> object:
    completion, usage = public_completion(UPSTREAM_COMPLETION, IDENTITY)
    wire = providers_pb2.ChatCompleted(completion=completion).SerializeToString()
    return chat_completion(providers_pb2.ChatCompleted.FromString(wire).completion, usage, 0)


def compare(name: str, before: Callable[[], object], after: Callable[[], object]) -> None:
    rounds = [(per_call_us(before), per_call_us(after)) for _ in range(ROUNDS)]
    old = statistics.median(r[0] for r in rounds)
    new = statistics.median(r[1] for r in rounds)
    print(f"{name:<18} {old:>14.1f} {new:>14.1f} {new - old:>9.1f}")


def main() -> None:
    print(f"{'':<18} {'JSON bytes µs':>14} {'typed µs':>14} {'added µs':>9}")
    for name, body in BODIES.items():
        compare(f"call: {name}", as_json_bytes(body), as_typed_call(body))
    compare("answer: a chunk", chunk_as_json_bytes, chunk_as_typed)
    compare("answer: whole", completion_as_json_bytes, completion_as_typed)


if __name__ == "__main__":
    main()
