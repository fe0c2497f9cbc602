"""The Anthropic Messages adapter over HTTP, against a strict fake Anthropic (httpx.MockTransport).

The fake checks what Anthropic documents for every request (POST /v1/messages, the key
in x-api-key and nowhere else, anthropic-version, a JSON body of the documented shape,
checked by the sandbox's strict validator) and fails the test on any deviation; it
answers with Anthropic's documented bodies, streams and errors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest

from sandbox import anthropic as sandbox_anthropic
from sandbox.errors import ApiError
from services.common.canonical_chat import from_chat_body
from services.common.usage import Usage
from services.providers.adapters.anthropic_messages import AnthropicMessagesAdapter
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

API_KEY = "sk-ant-api03-0123456789abcdefghij"
PROVIDER = Provider(
    name="anthropic",
    protocol="anthropic-messages",
    base_url="https://api.anthropic.com/v1",
    api_key=API_KEY,
    connect_timeout_seconds=1.5,
    read_timeout_seconds=7.0,
    max_connections=4,
    max_tokens_field="max_tokens",
)
ROUTE = Route(model="claude-sonnet-4-6", provider="anthropic", upstream_model="claude-sonnet-4-6")
IDENTITY = Identity(
    completion_id="chatcmpl-aiport0001", model="claude-sonnet-4-6", created=1767225600
)
REQUEST_ID = "req-0001"
REQUEST: dict[str, Any] = {
    "messages": [
        {"role": "system", "content": "Jawab singkat."},
        {"role": "user", "content": "Apa kabar?"},
    ],
    "max_tokens": 64,
    "temperature": 1.4,
    "seed": 7,
}
WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


class FakeAnthropic:
    def __init__(self, respond: Respond, version: str = "2023-06-01") -> None:
        self.respond = respond
        self.version = version
        self.requests: list[httpx.Request] = []

    async def handle(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        self.requests.append(request)
        assert request.method == "POST"
        assert request.url == httpx.URL("https://api.anthropic.com/v1/messages")
        assert request.headers["x-api-key"] == API_KEY
        assert request.headers["anthropic-version"] == self.version
        assert request.headers["content-type"] == "application/json"
        assert "authorization" not in request.headers
        leaks = [k for k, v in request.headers.items() if API_KEY in v and k != "x-api-key"]
        assert leaks == []
        body = orjson.loads(request.content)
        assert isinstance(body["model"], str) and isinstance(body["max_tokens"], int)
        try:
            sandbox_anthropic.parse_request(body)
        except ApiError as err:
            raise AssertionError(f"not a valid Anthropic request: {err.message}") from None
        return self.respond(request)

    @property
    def body(self) -> Any:
        assert len(self.requests) == 1
        return orjson.loads(self.requests[0].content)


@asynccontextmanager
async def connected(
    respond: Respond, provider: Provider = PROVIDER, version: str = "2023-06-01"
) -> AsyncIterator[tuple[AnthropicMessagesAdapter, FakeAnthropic]]:
    upstream = FakeAnthropic(respond, version)
    adapter = AnthropicMessagesAdapter(provider)
    own = adapter.client
    adapter.client = faked(own, upstream.handle)
    await own.aclose()
    try:
        yield adapter, upstream
    finally:
        await adapter.close()


def error_body(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_011C"}


def sse(events: list[tuple[str, Any]], eol: bytes = b"\n") -> bytes:
    out = b""
    for name, payload in events:
        data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        out += b"event: " + name.encode() + eol + b"data: " + data + eol + eol
    return out


USAGE = {
    "input_tokens": 14,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 6,
    "output_tokens": 9,
}
MESSAGE = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-6",
    "content": [{"type": "text", "text": "Baik, terima kasih!"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": USAGE,
}
PUBLIC_USAGE = {
    "prompt_tokens": 20,
    "completion_tokens": 9,
    "total_tokens": 29,
    "prompt_tokens_details": {"cached_tokens": 6},
    "completion_tokens_details": {"reasoning_tokens": 0},
}


def start_event(usage: dict[str, Any] | None = None) -> tuple[str, Any]:
    message = {
        **MESSAGE,
        "content": [],
        "stop_reason": None,
        "usage": usage or {**USAGE, "output_tokens": 1},
    }
    return "message_start", {"type": "message_start", "message": message}


def block_start(index: int, block: dict[str, Any]) -> tuple[str, Any]:
    return "content_block_start", {
        "type": "content_block_start",
        "index": index,
        "content_block": block,
    }


def delta(index: int, value: dict[str, Any]) -> tuple[str, Any]:
    return "content_block_delta", {"type": "content_block_delta", "index": index, "delta": value}


def block_stop(index: int) -> tuple[str, Any]:
    return "content_block_stop", {"type": "content_block_stop", "index": index}


def end_events(stop_reason: str = "end_turn", output_tokens: int = 9) -> list[tuple[str, Any]]:
    return [
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": output_tokens},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]


def text_delta(index: int, text: str) -> tuple[str, Any]:
    return delta(index, {"type": "text_delta", "text": text})


# Thinking, then multi-byte UTF-8 text, with a ping: the documented event flow.
STREAM_BODY = sse(
    [
        start_event(),
        block_start(0, {"type": "thinking", "thinking": "", "signature": ""}),
        ("ping", {"type": "ping"}),
        delta(0, {"type": "thinking_delta", "thinking": "Sapaan 🙂"}),
        delta(0, {"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA"}),
        block_stop(0),
        block_start(1, {"type": "text", "text": ""}),
        text_delta(1, "Baik 🙂, "),
        text_delta(1, "terima kasih — ya!"),
        block_stop(1),
        *end_events(),
    ]
)


def public_chunk(delta_: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-aiport0001",
        "object": "chat.completion.chunk",
        "created": 1767225600,
        "model": "claude-sonnet-4-6",
        "choices": [{"index": 0, "delta": delta_, "finish_reason": finish}],
    }


EXPECTED_CHUNKS = [
    public_chunk({"role": "assistant"}),
    public_chunk({"reasoning_content": "Sapaan 🙂"}),
    public_chunk({"content": "Baik 🙂, "}),
    public_chunk({"content": "terima kasih — ya!"}),
    public_chunk({}, "stop"),
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
    "inside-utf8": split_inside_multibyte,
    "crlf-between-cr-and-lf": lambda raw: split_after_each_cr(raw.replace(b"\n", b"\r\n")),
}


def new_translator() -> ChunkTranslator:
    return ChunkTranslator(IDENTITY, prompt_chars=len("Jawab singkat.Apa kabar?"))


async def run_stream(
    adapter: AnthropicMessagesAdapter,
    translator: ChunkTranslator,
    received: list[Any] | None = None,
    request: dict[str, Any] = REQUEST,
) -> list[Any]:
    out = received if received is not None else []
    async for chunk in adapter.stream(
        ROUTE, from_chat_body(request), IDENTITY, REQUEST_ID, translator
    ):
        out.append(chunk_json(chunk))
    return out


async def call(
    adapter: AnthropicMessagesAdapter, stream: bool, request: dict[str, Any] = REQUEST
) -> list[Any]:
    if stream:
        return await run_stream(adapter, new_translator(), request=request)
    await adapter.complete(ROUTE, from_chat_body(request), IDENTITY, REQUEST_ID)
    return []


BOTH = pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])


# --- the client the adapter builds -------------------------------------------------------


async def test_client_settings_come_from_the_provider() -> None:
    adapter = AnthropicMessagesAdapter(PROVIDER)
    try:
        assert adapter.client.base_url == httpx.URL("https://api.anthropic.com/v1/")
        assert adapter.client.headers["x-api-key"] == API_KEY
        assert adapter.client.headers["anthropic-version"] == "2023-06-01"
        assert "authorization" not in adapter.client.headers
        assert adapter.client.timeout == httpx.Timeout(connect=1.5, read=7.0, write=7.0, pool=1.5)
    finally:
        await adapter.close()


async def test_configured_headers_win_over_the_default_version() -> None:
    headers = (
        ("Anthropic-Version", "2023-01-01"),
        ("anthropic-beta", "interleaved-thinking-2025-05-14"),
    )
    provider = dataclasses.replace(PROVIDER, headers=headers)
    async with connected(json_response(MESSAGE), provider, version="2023-01-01") as (
        adapter,
        upstream,
    ):
        await adapter.complete(ROUTE, from_chat_body(REQUEST), IDENTITY, REQUEST_ID)
    (request,) = upstream.requests
    assert request.headers.get_list("anthropic-version") == ["2023-01-01"]
    assert request.headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"


# --- non-streaming -----------------------------------------------------------------------


async def test_complete_request_path_headers_and_body() -> None:
    async with connected(json_response(MESSAGE)) as (adapter, upstream):
        await adapter.complete(ROUTE, from_chat_body(REQUEST), IDENTITY, REQUEST_ID)
    (request,) = upstream.requests
    assert request.headers["X-Request-Id"] == REQUEST_ID
    assert upstream.body == {
        "model": "claude-sonnet-4-6",
        "max_tokens": 64,
        "system": [{"type": "text", "text": "Jawab singkat."}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Apa kabar?"}]}],
        "temperature": 1.0,
    }


async def test_complete_translates_the_answer() -> None:
    answer = {
        **MESSAGE,
        "content": [
            {"type": "thinking", "thinking": "Greeting.", "signature": "EqQBCgIYAh"},
            {"type": "text", "text": "Baik, terima kasih!"},
        ],
    }
    async with connected(json_response(answer)) as (adapter, _):
        completion, usage = await adapter.complete(
            ROUTE, from_chat_body(REQUEST), IDENTITY, REQUEST_ID
        )
    assert completion_json(completion, usage) == {
        "id": "chatcmpl-aiport0001",
        "object": "chat.completion",
        "created": 1767225600,
        "model": "claude-sonnet-4-6",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Baik, terima kasih!",
                    "reasoning_content": "Greeting.",
                },
                "finish_reason": "stop",
            }
        ],
        "usage": PUBLIC_USAGE,
    }
    assert usage == Usage(prompt_tokens=20, completion_tokens=9, cached_prompt_tokens=6)


async def test_complete_answer_split_into_pieces() -> None:
    pieces = split_every(orjson.dumps(MESSAGE), 5)
    async with connected(sse_response(pieces)) as (adapter, _):
        completion, usage = await adapter.complete(
            ROUTE, from_chat_body(REQUEST), IDENTITY, REQUEST_ID
        )
    assert completion.choices[0].message.text == "Baik, terima kasih!"
    assert usage.prompt_tokens == 20


async def test_tool_call_round_trip() -> None:
    tool_answer = {
        **MESSAGE,
        "content": [
            {
                "type": "tool_use",
                "id": "toolu_01A09q90qw90lq917835lq9",
                "name": "get_weather",
                "input": {"city": "Bandung"},
            }
        ],
        "stop_reason": "tool_use",
    }
    ask: dict[str, Any] = {
        "messages": [{"role": "user", "content": "Cuaca Bandung?"}],
        "max_tokens": 64,
        "tools": [WEATHER],
        "parallel_tool_calls": False,
    }
    async with connected(json_response(tool_answer)) as (adapter, upstream):
        completion, usage = await adapter.complete(ROUTE, from_chat_body(ask), IDENTITY, REQUEST_ID)
    assert upstream.body["tools"] == [
        {"name": "get_weather", "input_schema": WEATHER["function"]["parameters"]}
    ]
    assert upstream.body["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    choice = completion_json(completion, usage)["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assistant = choice["message"]
    assert assistant["tool_calls"] == [
        {
            "id": "toolu_01A09q90qw90lq917835lq9",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Bandung"}'},
        }
    ]

    follow_up = {
        **ask,
        "messages": [
            *ask["messages"],
            assistant,
            {
                "role": "tool",
                "tool_call_id": "toolu_01A09q90qw90lq917835lq9",
                "content": "22C, cerah",
            },
        ],
    }
    async with connected(json_response(MESSAGE)) as (adapter, upstream):
        await adapter.complete(ROUTE, from_chat_body(follow_up), IDENTITY, REQUEST_ID)
    assert upstream.body["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "toolu_01A09q90qw90lq917835lq9",
                    "name": "get_weather",
                    "input": {"city": "Bandung"},
                }
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_01A09q90qw90lq917835lq9",
                    "content": "22C, cerah",
                }
            ],
        },
    ]


async def test_reasoning_effort_sends_a_valid_thinking_request() -> None:
    ask = {**REQUEST, "max_tokens": 10_000, "reasoning_effort": "high", "top_p": 0.5}
    async with connected(json_response(MESSAGE)) as (adapter, upstream):
        await adapter.complete(ROUTE, from_chat_body(ask), IDENTITY, REQUEST_ID)
    assert upstream.body["thinking"] == {"type": "enabled", "budget_tokens": 5000}
    assert "temperature" not in upstream.body and "top_p" not in upstream.body


async def test_parameters_the_provider_drops_are_not_sent() -> None:
    provider = dataclasses.replace(PROVIDER, drop_params=frozenset({"temperature"}))
    async with connected(json_response(MESSAGE), provider) as (adapter, upstream):
        await adapter.complete(ROUTE, from_chat_body(REQUEST), IDENTITY, REQUEST_ID)
    assert "temperature" not in upstream.body


# --- streaming ---------------------------------------------------------------------------


async def test_stream_request_asks_for_a_stream() -> None:
    async with connected(sse_response([STREAM_BODY])) as (adapter, upstream):
        await run_stream(adapter, new_translator())
    assert upstream.body["stream"] is True
    assert upstream.body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Apa kabar?"}]}
    ]


@pytest.mark.parametrize("split", SPLITS.values(), ids=SPLITS.keys())
async def test_stream_translated_whatever_the_byte_boundaries(
    split: Callable[[bytes], list[bytes]],
) -> None:
    translator = new_translator()
    async with connected(sse_response(split(STREAM_BODY))) as (adapter, _):
        chunks = await run_stream(adapter, translator)
    assert chunks == EXPECTED_CHUNKS
    # The usage is no chunk of the stream: finish() hands it over for its own event.
    held, usage = translator.finish()
    assert held == []
    assert usage.to_public() == PUBLIC_USAGE
    assert usage == Usage(prompt_tokens=20, completion_tokens=9, cached_prompt_tokens=6)


async def test_stream_of_tool_calls() -> None:
    body = sse(
        [
            start_event(),
            block_start(
                0, {"type": "tool_use", "id": "toolu_A", "name": "get_weather", "input": {}}
            ),
            delta(0, {"type": "input_json_delta", "partial_json": ""}),
            delta(0, {"type": "input_json_delta", "partial_json": '{"city": "Band'}),
            delta(0, {"type": "input_json_delta", "partial_json": 'ung"}'}),
            block_stop(0),
            block_start(
                1, {"type": "tool_use", "id": "toolu_B", "name": "get_weather", "input": {}}
            ),
            delta(1, {"type": "input_json_delta", "partial_json": '{"city": "Bogor"}'}),
            block_stop(1),
            *end_events("tool_use", 40),
        ]
    )
    async with connected(sse_response(split_every(body, 13))) as (adapter, _):
        chunks = await run_stream(adapter, new_translator())
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[1:] == [
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "toolu_A",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": "Band'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": 'ung"}'}}]},
        {
            "tool_calls": [
                {
                    "index": 1,
                    "id": "toolu_B",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ]
        },
        {"tool_calls": [{"index": 1, "function": {"arguments": '{"city": "Bogor"}'}}]},
        {},
    ]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_stream_ignores_anything_after_message_stop() -> None:
    body = STREAM_BODY + sse([("content_block_delta", b"not json at all")])
    async with connected(sse_response([body])) as (adapter, _):
        chunks = await run_stream(adapter, new_translator())
    assert chunks == EXPECTED_CHUNKS


# --- upstream refusals and failures ------------------------------------------------------


@BOTH
async def test_invalid_request_is_rejected_with_the_upstream_message(stream: bool) -> None:
    body = error_body("invalid_request_error", "messages.0.content.0.text: Field required")
    async with connected(json_response(body, 400)) as (adapter, _):
        with pytest.raises(UpstreamError) as caught:
            await call(adapter, stream)
    assert caught.value.kind == "rejected"
    assert (
        caught.value.message
        == "The upstream rejected the request: messages.0.content.0.text: Field required"
    )


@BOTH
async def test_rejection_message_never_shows_our_api_key(stream: bool) -> None:
    body = error_body("invalid_request_error", f"bad request from key {API_KEY}")
    async with connected(json_response(body, 400)) as (adapter, _):
        with pytest.raises(UpstreamError) as caught:
            await call(adapter, stream)
    assert API_KEY not in caught.value.message
    assert "bad request from key [redacted]" in caught.value.message


@BOTH
@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (529, "overloaded_error"),
    ],
)
async def test_other_error_statuses_are_failures(status: int, kind: str, stream: bool) -> None:
    async with connected(json_response(error_body(kind, f"trouble, key {API_KEY}"), status)) as (
        adapter,
        _,
    ):
        with pytest.raises(UpstreamError) as caught:
            await call(adapter, stream)
    # A 429 is told apart (waiting helps; issue 11), still an upstream failure.
    assert caught.value.kind == ("rate_limited" if status == 429 else "failed")
    assert caught.value.message == f"upstream answered HTTP {status}"


@BOTH
@pytest.mark.parametrize("content", [b"<html>Bad Request</html>", b"", b'{"type": "error"}'])
async def test_rejection_with_odd_error_bodies(content: bytes, stream: bool) -> None:
    async with connected(raw_response(content, 400)) as (adapter, _):
        with pytest.raises(UpstreamError) as caught:
            await call(adapter, stream)
    assert caught.value.kind == "rejected"
    assert "<html>" not in caught.value.message


@BOTH
@pytest.mark.parametrize(
    ("request_", "needle"),
    [
        ({**REQUEST, "n": 3}, "n > 1 is not supported by this model"),
        (
            {
                "messages": [
                    {"role": "user", "content": "go"},
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "t1",
                                "type": "function",
                                "function": {"name": "f", "arguments": "{oops"},
                            }
                        ],
                    },
                ],
                "max_tokens": 16,
            },
            "not valid JSON",
        ),
    ],
    ids=["n", "bad-arguments"],
)
async def test_untranslatable_requests_are_rejected_before_any_call(
    request_: dict[str, Any], needle: str, stream: bool
) -> None:
    async with connected(json_response(MESSAGE)) as (adapter, upstream):
        with pytest.raises(UpstreamError) as caught:
            await call(adapter, stream, request_)
    assert caught.value.kind == "rejected"
    assert needle in caught.value.message
    assert upstream.requests == []


@pytest.mark.parametrize(
    "content",
    [
        b"not json at all",
        b'{"id": "msg_1", "content": [',
        orjson.dumps({**MESSAGE, "content": None}),
        orjson.dumps({k: v for k, v in MESSAGE.items() if k != "usage"}),
    ],
    ids=["text", "truncated", "no-content", "no-usage"],
)
async def test_complete_malformed_answer_is_a_failure(content: bytes) -> None:
    async with connected(raw_response(content)) as (adapter, _):
        with pytest.raises(UpstreamError) as caught:
            await adapter.complete(ROUTE, from_chat_body(REQUEST), IDENTITY, REQUEST_ID)
    assert caught.value.kind == "failed"


async def test_stream_error_event_is_a_failure_with_a_scrubbed_message() -> None:
    body = sse(
        [
            start_event(),
            block_start(0, {"type": "text", "text": ""}),
            text_delta(0, "Sebagian"),
            ("error", error_body("overloaded_error", f"Overloaded while serving key {API_KEY}")),
            text_delta(0, " never seen"),
        ]
    )
    received: list[Any] = []
    translator = new_translator()
    async with connected(sse_response([body])) as (adapter, _):
        with pytest.raises(UpstreamError) as caught:
            await run_stream(adapter, translator, received)
    assert caught.value.kind == "failed"
    assert caught.value.message == "upstream stream error: Overloaded while serving key [redacted]"
    assert [c["choices"][0]["delta"] for c in received] == [
        {"role": "assistant"},
        {"content": "Sebagian"},
    ]
    assert translator.output_started


async def test_error_event_before_any_output_leaves_nothing_sent() -> None:
    body = sse([start_event(), ("error", error_body("overloaded_error", "Overloaded"))])
    received: list[Any] = []
    translator = new_translator()
    async with connected(sse_response([body])) as (adapter, _):
        with pytest.raises(UpstreamError) as caught:
            await run_stream(adapter, translator, received)
    assert caught.value.kind == "failed"
    assert received == [] and not translator.output_started


async def test_stream_that_ends_without_message_stop_is_a_failure() -> None:
    body = sse(
        [
            start_event(),
            block_start(0, {"type": "text", "text": ""}),
            text_delta(0, "Half an ans"),
            *end_events()[:1],
        ]
    )
    received: list[Any] = []
    translator = new_translator()
    async with connected(sse_response([body])) as (adapter, _):
        with pytest.raises(UpstreamError) as caught:
            await run_stream(adapter, translator, received)
    assert caught.value.kind == "failed"
    assert caught.value.message == "upstream stream ended early"
    assert [c["choices"][0]["delta"] for c in received] == [
        {"role": "assistant"},
        {"content": "Half an ans"},
    ]


async def test_stream_that_ends_before_any_output_is_a_failure() -> None:
    received: list[Any] = []
    translator = new_translator()
    async with connected(sse_response([sse([start_event()])])) as (adapter, _):
        with pytest.raises(UpstreamError) as caught:
            await run_stream(adapter, translator, received)
    assert caught.value.kind == "failed"
    assert received == [] and not translator.output_started


@pytest.mark.parametrize(
    "events",
    [
        [start_event(), ("content_block_delta", b"{not json")],
        [start_event(), ("content_block_delta", b"[1, 2, 3]")],
        [block_start(0, {"type": "text", "text": ""})],
        [start_event(), text_delta(3, "no such block")],
    ],
    ids=["bad-json", "json-list", "no-message-start", "unknown-block"],
)
async def test_stream_malformed_event_is_a_failure(events: list[tuple[str, Any]]) -> None:
    async with connected(sse_response([sse(events)])) as (adapter, _):
        with pytest.raises(UpstreamError) as caught:
            await run_stream(adapter, new_translator())
    assert caught.value.kind == "failed"
    assert "malformed" in caught.value.message


async def test_stream_with_an_endless_line_is_a_failure() -> None:
    pieces = [b"data: "] + [b"a" * (1024 * 1024)] * 5
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


async def test_stream_read_timeout_after_output_started() -> None:
    body = sse(
        [start_event(), block_start(0, {"type": "text", "text": ""}), text_delta(0, "Sebagian")]
    )
    received: list[Any] = []
    translator = new_translator()
    async with connected(sse_response([body], then=httpx.ReadTimeout("stalled"))) as (adapter, _):
        with pytest.raises(UpstreamError) as caught:
            await run_stream(adapter, translator, received)
    assert caught.value.kind == "timeout"
    assert received[-1]["choices"][0]["delta"] == {"content": "Sebagian"}
    assert translator.output_started
