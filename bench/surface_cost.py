"""What each client surface's own work costs in the gateway, without the noise.

    .venv/bin/python -m bench.surface_cost

The surfaces group (bench/run.py) measures whole requests on a shared machine;
this measures, in one process, only the code in which surfaces differ: parsing
the request body (chat's parser, or Messages' or Responses' into the same
canonical call) and rendering the canonical answer for the client (chat's JSON,
the Messages `message` / event stream, or the Response / its typed
events). Inputs are the bodies of the surfaces group
and the mock upstream's fixed answer (a completion; 8 chunks and a usage chunk).
The surfaces take turns over several rounds and the median is reported, in µs
per request: compare the difference with the gateway's CPU per request in
`make bench` (a few ms).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import orjson
from aiport.v1 import text_pb2

from bench import clients, mock, surfaces
from services.common import settings
from services.common.catalog import Catalog, load_catalog
from services.common.usage import Usage
from services.gateway.chat_request import parse_chat_request
from services.gateway.messages_request import parse_messages_request
from services.gateway.renderers import (
    ChatCompletionsRenderer,
    ClientRenderer,
    MessagesRenderer,
    ResponsesRenderer,
)
from services.gateway.responses_render import ResponseFrame
from services.gateway.responses_request import ResponseEcho, parse_responses_request
from services.providers.adapters.openai_chat_translate import (
    ChunkTranslator,
    Identity,
    public_completion,
)

MODEL = "deepseek-v4-flash"
MAX_TOKENS = 16
CALLS = 5_000
ROUNDS = 7
COST_MICROS = 1_234_500
USAGE = Usage(prompt_tokens=12, completion_tokens=6)

Parser = Callable[[bytes, Catalog], object]
# What the gateway runs per surface: its parser, and a renderer per call.
GATEWAY_WORK: dict[str, tuple[Parser, Callable[[], ClientRenderer]]] = {
    "chat": (parse_chat_request, lambda: ChatCompletionsRenderer("chatcmpl-bench", MODEL, 0)),
    "messages": (parse_messages_request, lambda: MessagesRenderer("chatcmpl-bench", MODEL)),
    "responses": (
        parse_responses_request,
        lambda: ResponsesRenderer(ResponseFrame("resp_bench", ResponseEcho(model=MODEL))),
    ),
}


IDENTITY = Identity("chatcmpl-bench", MODEL, 0)


def stream_chunks() -> list[text_pb2.TextChunk]:
    """The mock's stream as the relay receives it: canonical chunks (the providers'
    translation of its chat.completion.chunks; the usage is the relay's event)."""
    frames = mock.stream_body().split(b"\n\n")
    translator = ChunkTranslator(IDENTITY, prompt_chars=0)
    chunks = [
        chunk
        for f in frames
        if f.startswith(b"data: {")
        for chunk in translator.feed(orjson.loads(f.removeprefix(b"data: ")))
    ]
    return chunks + translator.finish()[0]


def whole_answer() -> text_pb2.TextCompletion:
    """The mock's completion as the relay receives it (canonical)."""
    return public_completion(orjson.loads(mock.completion_body()), IDENTITY)[0]


def one_request(surface: surfaces.Surface, stream: bool, catalog: Catalog) -> Callable[[], bytes]:
    parse, renderer = GATEWAY_WORK[surface.name]
    body = clients.json_body(surface.request_body(MODEL, MAX_TOKENS, stream))
    completion, chunks = whole_answer(), stream_chunks()

    def run() -> bytes:
        parse(body, catalog)
        r = renderer()
        if not stream:
            return r.completion(completion, USAGE, COST_MICROS)
        out = [r.chunk(c) for c in chunks]
        out.append(r.stream_end(USAGE, COST_MICROS))
        return b"".join(out)

    return run


def per_call_us(run: Callable[[], object]) -> float:
    start = time.process_time()
    for _ in range(CALLS):
        run()
    return (time.process_time() - start) / CALLS * 1e6


def main() -> None:
    catalog = load_catalog(settings.catalog_path())
    reference = surfaces.SURFACES[0]
    known = [s for s in surfaces.SURFACES if s.name in GATEWAY_WORK]
    for stream in (False, True):
        runs = {s.name: one_request(s, stream, catalog) for s in known}
        for s in known:
            answer = runs[s.name]()  # a warm-up, and an early failure if a surface broke
            marker = s.stream_marker if stream else s.marker
            if marker.encode() not in answer:
                raise RuntimeError(f"{s.name}: no {marker!r} in {answer[:300]!r}")
        samples: dict[str, list[float]] = {s.name: [] for s in known}
        for _ in range(ROUNDS):
            for s in known:
                samples[s.name].append(per_call_us(runs[s.name]))
        ref = statistics.median(samples[reference.name])
        mode = "stream" if stream else "non-stream"
        for s in known:
            us = statistics.median(samples[s.name])
            print(
                f"{mode:<10} {s.name:<10} parse + render {us:7.1f} µs/request "
                f"({us - ref:+6.1f} µs vs {reference.name})"
            )


if __name__ == "__main__":
    main()
