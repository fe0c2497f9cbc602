"""The OpenAI chat adapter over HTTP, against a fake upstream (httpx.MockTransport).

The adapter builds its own client (base URL, Authorization, timeouts); the tests
swap in a client with the same settings whose transport is the fake upstream.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest

from services.common.canonical_chat import from_chat_body
from services.common.usage import Usage
from services.providers.adapters.openai_chat import OpenAIChatAdapter
from services.providers.adapters.openai_chat_translate import (
    ChunkTranslator,
    Identity,
)
from services.providers.errors import UpstreamError
from services.providers.routes import Provider, Route
from tests.unit.canonical_answers import chunk_json, completion_json
from tests.unit.fake_upstream import (
    Respond,
    faked,
    json_response,
    raising,
    raw_response,
    sse_response,
)

API_KEY = "sk-test-0123456789abcdefghij"
PROVIDER = Provider(
    name="acme",
    protocol="openai-chat",
    base_url="http://upstream.test/v1",
    api_key=API_KEY,
    connect_timeout_seconds=1.5,
    read_timeout_seconds=7.0,
    max_connections=4,
    max_tokens_field="max_tokens",
)
REASONING_PROVIDER = dataclasses.replace(PROVIDER, max_tokens_field="max_completion_tokens")
ROUTE = Route(model="gpt-5.4", provider="acme", upstream_model="gpt-5.4-2026-03-05")
IDENTITY = Identity(completion_id="chatcmpl-aiport0001", model="gpt-5.4", created=1767225600)
REQUEST_ID = "req-0001"
# The gateway's canonical request: no model or stream keys, max_tokens always set.
REQUEST: dict[str, Any] = {
    "messages": [{"role": "user", "content": "Apa kabar?"}],
    "max_tokens": 64,
    "temperature": 0.5,
}


class FakeUpstream:
    def __init__(self, respond: Respond) -> None:
        self.respond = respond
        self.requests: list[httpx.Request] = []

    async def handle(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        self.requests.append(request)
        return self.respond(request)

    @property
    def body(self) -> Any:
        assert len(self.requests) == 1
        return orjson.loads(self.requests[0].content)


@asynccontextmanager
async def connected(
    respond: Respond, provider: Provider = PROVIDER
) -> AsyncIterator[tuple[OpenAIChatAdapter, FakeUpstream]]:
    upstream = FakeUpstream(respond)
    adapter = OpenAIChatAdapter(provider)
    own = adapter.client
    adapter.client = faked(own, upstream.handle)
    await own.aclose()
    try:
        yield adapter, upstream
    finally:
        await adapter.close()


def sse(events: list[Any], eol: bytes = b"\n") -> bytes:
    """SSE text for these events (dicts become JSON, strings are sent as they are)."""
    out = b""
    for event in events:
        data = event.encode() if isinstance(event, str) else orjson.dumps(event)
        out += b"data: " + data + eol + eol
    return out


async def run_stream(
    adapter: OpenAIChatAdapter, translator: ChunkTranslator, received: list[Any] | None = None
) -> list[Any]:
    """The chunks the adapter yields, as the public JSON the chat renderer writes
    (decoded); also appended to `received` as they come."""
    out = received if received is not None else []
    async for chunk in adapter.stream(
        ROUTE, from_chat_body(REQUEST), IDENTITY, REQUEST_ID, translator
    ):
        out.append(chunk_json(chunk))
    return out


def new_translator() -> ChunkTranslator:
    return ChunkTranslator(IDENTITY, prompt_chars=len("Apa kabar?"))


def public_chunk(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-aiport0001",
        "object": "chat.completion.chunk",
        "created": 1767225600,
        "model": "gpt-5.4",
        "choices": choices,
        **extra,
    }


def upstream_chunk(
    delta: dict[str, Any] | None, finish: str | None = None, usage: Any = None
) -> dict[str, Any]:
    choices = (
        []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    )
    return {
        "id": "chatcmpl-UPSTREAM",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-5.4-2026-03-05",
        "system_fingerprint": "fp_upstream",
        "choices": choices,
        "usage": usage,
    }


UPSTREAM_USAGE = {
    "prompt_tokens": 14,
    "completion_tokens": 9,
    "total_tokens": 23,
    "prompt_tokens_details": {"cached_tokens": 6},
    "completion_tokens_details": {"reasoning_tokens": 2},
}
PUBLIC_USAGE = {
    "prompt_tokens": 14,
    "completion_tokens": 9,
    "total_tokens": 23,
    "prompt_tokens_details": {"cached_tokens": 6},
    "completion_tokens_details": {"reasoning_tokens": 2},
}

UPSTREAM_COMPLETION = {
    "id": "chatcmpl-UPSTREAM",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-5.4-2026-03-05",
    "system_fingerprint": "fp_upstream",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Baik, terima kasih!", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": UPSTREAM_USAGE,
}

# A realistic stream: CRLF line endings, a keep-alive comment, the role-only opener,
# multi-byte UTF-8 content, the finish chunk, the upstream's usage-only chunk, then
# [DONE]. The usage comes back from the translator's finish(), not as a chunk.
STREAM_BODY = b": keep-alive\r\n\r\n" + sse(
    [
        upstream_chunk({"role": "assistant", "content": "", "refusal": None}),
        upstream_chunk({"content": "Baik 🙂, "}),
        upstream_chunk({"content": "terima kasih — ya!"}),
        upstream_chunk({}, finish="stop"),
        upstream_chunk(None, usage=UPSTREAM_USAGE),
        "[DONE]",
    ],
    eol=b"\r\n",
)
EXPECTED_CHUNKS = [
    public_chunk([{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]),
    public_chunk([{"index": 0, "delta": {"content": "Baik 🙂, "}, "finish_reason": None}]),
    public_chunk([{"index": 0, "delta": {"content": "terima kasih — ya!"}, "finish_reason": None}]),
    public_chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}]),
]


def split_every(raw: bytes, size: int) -> list[bytes]:
    return [raw[i : i + size] for i in range(0, len(raw), size)]


def split_after_each_cr(raw: bytes) -> list[bytes]:
    return [piece + b"\r" for piece in raw.split(b"\r")[:-1]] + [raw.split(b"\r")[-1]]


def split_inside_multibyte(raw: bytes) -> list[bytes]:
    cuts = [raw.index("🙂".encode()) + 2, raw.index("—".encode()) + 1]
    return [raw[: cuts[0]], raw[cuts[0] : cuts[1]], raw[cuts[1] :]]


SPLITS: dict[str, Callable[[bytes], list[bytes]]] = {
    "whole": lambda raw: [raw],
    "bytewise": lambda raw: split_every(raw, 1),
    "every-2": lambda raw: split_every(raw, 2),
    "every-7": lambda raw: split_every(raw, 7),
    "every-61": lambda raw: split_every(raw, 61),
    "between-cr-and-lf": split_after_each_cr,
    "inside-utf8": split_inside_multibyte,
}


# --- the client the adapter builds -------------------------------------------------------


async def test_client_settings_come_from_the_provider() -> None:
    adapter = OpenAIChatAdapter(PROVIDER)
    try:
        assert adapter.client.base_url == httpx.URL("http://upstream.test/v1/")
        assert adapter.client.headers["Authorization"] == f"Bearer {API_KEY}"
        assert adapter.client.timeout == httpx.Timeout(connect=1.5, read=7.0, write=7.0, pool=1.5)
    finally:
        await adapter.close()


# --- non-streaming -----------------------------------------------------------------------


async def test_complete_request_path_headers_and_body() -> None:
    async with connected(json_response(UPSTREAM_COMPLETION)) as (adapter, upstream):
        await adapter.complete(ROUTE, from_chat_body(REQUEST), IDENTITY, REQUEST_ID)
    (request,) = upstream.requests
    assert request.method == "POST"
    assert request.url == httpx.URL("http://upstream.test/v1/chat/completions")
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Request-Id"] == REQUEST_ID
    assert upstream.body == {
        "messages": [{"role": "user", "content": "Apa kabar?"}],
        "max_tokens": 64,
        "temperature": 0.5,
        "model": "gpt-5.4-2026-03-05",
    }
    assert "stream" not in upstream.body and "stream_options" not in upstream.body


async def test_complete_renames_max_tokens_for_reasoning_providers() -> None:
    respond = json_response(UPSTREAM_COMPLETION)
    async with connected(respond, REASONING_PROVIDER) as (adapter, upstream):
        await adapter.complete(ROUTE, from_chat_body(REQUEST), IDENTITY, REQUEST_ID)
    assert upstream.body["max_completion_tokens"] == 64
    assert "max_tokens" not in upstream.body


async def test_complete_translates_the_answer() -> None:
    async with connected(json_response(UPSTREAM_COMPLETION)) as (adapter, _):
        completion, usage = await adapter.complete(
            ROUTE, from_chat_body(REQUEST), IDENTITY, REQUEST_ID
        )
    assert completion_json(completion, usage) == {
        "id": "chatcmpl-aiport0001",
        "object": "chat.completion",
        "created": 1767225600,
        "model": "gpt-5.4",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Baik, terima kasih!"},
                "finish_reason": "stop",
            }
        ],
        "usage": PUBLIC_USAGE,
    }
    assert usage == Usage(14, 9, cached_prompt_tokens=6, reasoning_tokens=2)


async def test_complete_answer_split_into_pieces() -> None:
    pieces = split_every(orjson.dumps(UPSTREAM_COMPLETION), 5)
    async with connected(sse_response(pieces)) as (adapter, _):
        completion, usage = await adapter.complete(
            ROUTE, from_chat_body(REQUEST), IDENTITY, REQUEST_ID
        )
    assert completion.choices[0].message.text == "Baik, terima kasih!"
    assert usage.prompt_tokens == 14


# --- streaming ---------------------------------------------------------------------------


async def test_stream_request_asks_for_usage() -> None:
    async with connected(sse_response([STREAM_BODY]), REASONING_PROVIDER) as (adapter, upstream):
        await run_stream(adapter, new_translator())
    (request,) = upstream.requests
    assert request.url == httpx.URL("http://upstream.test/v1/chat/completions")
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert request.headers["X-Request-Id"] == REQUEST_ID
    assert upstream.body == {
        "messages": [{"role": "user", "content": "Apa kabar?"}],
        "max_completion_tokens": 64,
        "temperature": 0.5,
        "model": "gpt-5.4-2026-03-05",
        "stream": True,
        "stream_options": {"include_usage": True},
    }


@pytest.mark.parametrize("split", SPLITS.values(), ids=SPLITS.keys())
async def test_stream_translated_whatever_the_byte_boundaries(
    split: Callable[[bytes], list[bytes]],
) -> None:
    translator = new_translator()
    async with connected(sse_response(split(STREAM_BODY))) as (adapter, _):
        chunks = await run_stream(adapter, translator)
    assert chunks == EXPECTED_CHUNKS
    closing, usage = translator.finish()
    # No usage-only chunk: the gateway's chat renderer writes it from the usage.
    assert closing == []
    assert usage == Usage(14, 9, cached_prompt_tokens=6, reasoning_tokens=2)
    assert usage.to_public() == PUBLIC_USAGE


async def test_stream_with_lf_endings_and_usage_on_the_last_content_chunk() -> None:
    body = sse(
        [
            upstream_chunk({"role": "assistant", "content": "Hi"}),
            upstream_chunk({}, finish="stop", usage={"prompt_tokens": 3, "completion_tokens": 1}),
            "[DONE]",
        ]
    )
    translator = new_translator()
    async with connected(sse_response(split_every(body, 3))) as (adapter, _):
        chunks = await run_stream(adapter, translator)
    assert [c["choices"] for c in chunks] == [
        [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}, "finish_reason": None}],
        [{"index": 0, "delta": {}, "finish_reason": "stop"}],
    ]
    assert translator.finish()[1] == Usage(3, 1)


async def test_stream_with_bare_cr_line_endings() -> None:
    # SSE allows a lone \r as the line ending; such a stream must complete normally.
    body = STREAM_BODY.replace(b"\r\n", b"\r")
    translator = new_translator()
    async with connected(sse_response([body])) as (adapter, _):
        chunks = await run_stream(adapter, translator)
    assert chunks == EXPECTED_CHUNKS
    assert translator.finish()[1] == Usage(14, 9, cached_prompt_tokens=6, reasoning_tokens=2)


async def test_stream_ignores_anything_after_done() -> None:
    body = sse([upstream_chunk({"content": "x"}, finish="stop"), "[DONE]", "not json"])
    async with connected(sse_response([body])) as (adapter, _):
        chunks = await run_stream(adapter, new_translator())
    assert len(chunks) == 1


# --- upstream refusals and failures ------------------------------------------------------


def openai_error(message: str, code: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": code, "param": None, "code": None}}


async def call(adapter: OpenAIChatAdapter, stream: bool) -> list[Any]:
    """Run one request to completion; return the chunks a stream yielded."""
    if stream:
        return await run_stream(adapter, new_translator())
    await adapter.complete(ROUTE, from_chat_body(REQUEST), IDENTITY, REQUEST_ID)
    return []


BOTH = pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])


@BOTH
@pytest.mark.parametrize("status", [400, 422])
async def test_bad_request_is_rejected_with_the_upstream_message(status: int, stream: bool) -> None:
    body = openai_error("Invalid value for 'temperature': expected a number <= 2, got 7.")
    async with connected(json_response(body, status)) as (adapter, _):
        with pytest.raises(UpstreamError) as caught:
            await call(adapter, stream)
    assert caught.value.kind == "rejected"
    assert "Invalid value for 'temperature': expected a number <= 2, got 7." in caught.value.message


@BOTH
@pytest.mark.parametrize(
    "key",
    [
        API_KEY,  # looks like a key
        "sk-sandbox",  # too short to look like one, but it is ours
        "0f3a9c7d1e2b4a6c8d0e.Zk9QwErTyUiOp",  # Zhipu-style id.secret
    ],
)
async def test_rejection_message_never_shows_our_api_key(key: str, stream: bool) -> None:
    body = openai_error(f"Incorrect API key provided: {key}. Check your settings.")
    provider = dataclasses.replace(PROVIDER, api_key=key)
    async with connected(json_response(body, 400), provider) as (adapter, _):
        with pytest.raises(UpstreamError) as caught:
            await call(adapter, stream)
    assert caught.value.kind == "rejected"
    assert key not in caught.value.message
    assert "Incorrect API key provided: [redacted]. Check your settings." in caught.value.message


async def test_rejection_message_masks_other_credentials() -> None:
    google_key = "AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUv"
    body = openai_error(f"API key {google_key} is not valid for project 42.")
    async with connected(json_response(body, 400)) as (adapter, _):
        with pytest.raises(UpstreamError) as caught:
            await call(adapter, stream=False)
    assert google_key not in caught.value.message
    assert "API key [redacted] is not valid for project 42." in caught.value.message


async def test_rejection_message_is_bounded() -> None:
    body = openai_error("x" * 5000)
    async with connected(json_response(body, 400)) as (adapter, _):
        with pytest.raises(UpstreamError) as caught:
            await call(adapter, stream=False)
    assert caught.value.kind == "rejected"
    assert 0 < caught.value.message.count("x") <= 300


@BOTH
@pytest.mark.parametrize(
    "content", [b"<html>Bad Request</html>", b"", b'{"error": "plain string error"}']
)
async def test_rejection_with_odd_error_bodies(content: bytes, stream: bool) -> None:
    async with connected(raw_response(content, 400)) as (adapter, _):
        with pytest.raises(UpstreamError) as caught:
            await call(adapter, stream)
    assert caught.value.kind == "rejected"
    assert "<html>" not in caught.value.message


@BOTH
@pytest.mark.parametrize("status", [401, 403, 404, 429, 500, 502, 503])
async def test_other_error_statuses_are_failures(status: int, stream: bool) -> None:
    body = openai_error(f"server trouble, key {API_KEY}", code="server_error")
    async with connected(json_response(body, status)) as (adapter, _):
        with pytest.raises(UpstreamError) as caught:
            await call(adapter, stream)
    # A 429 is told apart (waiting helps; issue 11), still an upstream failure.
    assert caught.value.kind == ("rate_limited" if status == 429 else "failed")
    assert str(status) in caught.value.message
    assert API_KEY not in caught.value.message


@pytest.mark.parametrize(
    "content",
    [
        b"not json at all",
        b'{"id": "chatcmpl-1", "choices": [',  # cut off
        b'{"id": "chatcmpl-1", "object": "chat.completion"}',  # no choices
        orjson.dumps({**UPSTREAM_COMPLETION, "choices": [{"index": 0}]}),  # no message
    ],
    ids=["text", "truncated", "no-choices", "no-message"],
)
async def test_complete_malformed_answer_is_a_failure(content: bytes) -> None:
    async with connected(raw_response(content)) as (adapter, _):
        with pytest.raises(UpstreamError) as caught:
            await adapter.complete(ROUTE, from_chat_body(REQUEST), IDENTITY, REQUEST_ID)
    assert caught.value.kind == "failed"


async def test_stream_that_ends_without_done_is_a_failure() -> None:
    body = sse([upstream_chunk({"role": "assistant", "content": "Half an ans"})])
    received: list[Any] = []
    translator = new_translator()
    async with connected(sse_response([body])) as (adapter, _):
        with pytest.raises(UpstreamError) as caught:
            await run_stream(adapter, translator, received)
    assert caught.value.kind == "failed"
    # What arrived was passed on, so the caller knows output had started.
    assert [c["choices"][0]["delta"] for c in received] == [
        {"role": "assistant", "content": "Half an ans"}
    ]
    assert translator.output_started


async def test_stream_that_ends_before_any_output_is_a_failure() -> None:
    body = sse([upstream_chunk({"role": "assistant", "content": ""})])
    received: list[Any] = []
    translator = new_translator()
    async with connected(sse_response([body])) as (adapter, _):
        with pytest.raises(UpstreamError) as caught:
            await run_stream(adapter, translator, received)
    assert caught.value.kind == "failed"
    assert received == []
    assert not translator.output_started


async def test_stream_error_event_is_a_failure_with_a_scrubbed_message() -> None:
    body = sse(
        [
            upstream_chunk({"role": "assistant", "content": "Partial"}),
            openai_error(f"Overloaded while serving key {API_KEY}", code="server_error"),
            upstream_chunk({"content": " never seen"}),
            "[DONE]",
        ]
    )
    received: list[Any] = []
    async with connected(sse_response([body])) as (adapter, _):
        with pytest.raises(UpstreamError) as caught:
            await run_stream(adapter, new_translator(), received)
    assert caught.value.kind == "failed"
    assert "Overloaded while serving key [redacted]" in caught.value.message
    assert API_KEY not in caught.value.message
    assert len(received) == 1


@pytest.mark.parametrize(
    "events",
    [
        ["{not json", "[DONE]"],
        [[1, 2, 3], "[DONE]"],
        [{"choices": ["not an object"]}, "[DONE]"],
    ],
    ids=["bad-json", "json-list", "bad-choice"],
)
async def test_stream_malformed_event_is_a_failure(events: list[Any]) -> None:
    async with connected(sse_response([sse(events)])) as (adapter, _):
        with pytest.raises(UpstreamError) as caught:
            await run_stream(adapter, new_translator())
    assert caught.value.kind == "failed"


async def test_stream_with_an_endless_line_is_a_failure() -> None:
    pieces = [b"data: "] + [b"a" * (1024 * 1024)] * 5  # no line end, over the 4 MiB limit
    async with connected(sse_response(pieces)) as (adapter, _):
        with pytest.raises(UpstreamError) as caught:
            await run_stream(adapter, new_translator())
    assert caught.value.kind == "failed"


# --- timeouts and connection errors ------------------------------------------------------


@BOTH
@pytest.mark.parametrize("exc_type", [httpx.ReadTimeout, httpx.ConnectTimeout, httpx.PoolTimeout])
async def test_timeouts(exc_type: type[httpx.TransportError], stream: bool) -> None:
    async with connected(raising(exc_type)) as (adapter, _):
        with pytest.raises(UpstreamError) as caught:
            await call(adapter, stream)
    assert caught.value.kind == "timeout"


@BOTH
@pytest.mark.parametrize("exc_type", [httpx.ConnectError, httpx.RemoteProtocolError])
async def test_connection_errors_are_failures(
    exc_type: type[httpx.TransportError], stream: bool
) -> None:
    async with connected(raising(exc_type)) as (adapter, _):
        with pytest.raises(UpstreamError) as caught:
            await call(adapter, stream)
    assert caught.value.kind == "failed"


async def test_complete_body_read_timeout() -> None:
    pieces = [orjson.dumps(UPSTREAM_COMPLETION)[:40]]
    async with connected(sse_response(pieces, then=httpx.ReadTimeout("slow"))) as (adapter, _):
        with pytest.raises(UpstreamError) as caught:
            await adapter.complete(ROUTE, from_chat_body(REQUEST), IDENTITY, REQUEST_ID)
    assert caught.value.kind == "timeout"


async def test_stream_read_timeout_after_output_started() -> None:
    body = sse([upstream_chunk({"role": "assistant", "content": "Sebagian"})])
    received: list[Any] = []
    translator = new_translator()
    respond = sse_response([body], then=httpx.ReadTimeout("stalled"))
    async with connected(respond) as (adapter, _):
        with pytest.raises(UpstreamError) as caught:
            await run_stream(adapter, translator, received)
    assert caught.value.kind == "timeout"
    assert [c["choices"][0]["delta"].get("content") for c in received] == ["Sebagian"]
    assert translator.output_started
    assert translator.estimated_usage() == Usage(
        prompt_tokens=3, completion_tokens=2, estimated=True
    )
