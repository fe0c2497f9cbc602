"""What the typed canonical call costs between gateway and providers, without the noise.

    .venv/bin/python -m bench.canonical_cost

The gateway used to hand the providers service the gate's output as JSON bytes
(orjson out, orjson in). It now builds a CanonicalChat (`from_chat_body`), which
gRPC serializes and the providers service parses; an OpenAI-compatible adapter
turns it back into chat JSON (`to_chat_body`), the others read its fields. This
measures, in one process, both ways for two gate outputs (a one-line chat, and a
tool loop of four messages and one tool), in µs per call (median of rounds).
Compare the difference with the gateway's CPU per request in `make bench` (a few
ms): at that size it is under the noise of a whole-stack run.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import orjson
from aiport.v1 import providers_pb2

from bench.surface_cost import per_call_us
from services.common.canonical_chat import from_chat_body, to_chat_body

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


def main() -> None:
    print(f"{'body':<10} {'JSON bytes µs':>14} {'typed call µs':>14} {'added µs':>9}")
    for name, body in BODIES.items():
        before, after = as_json_bytes(body), as_typed_call(body)
        rounds = [(per_call_us(before), per_call_us(after)) for _ in range(ROUNDS)]
        old = statistics.median(r[0] for r in rounds)
        new = statistics.median(r[1] for r in rounds)
        print(f"{name:<10} {old:>14.1f} {new:>14.1f} {new - old:>9.1f}")


if __name__ == "__main__":
    main()
