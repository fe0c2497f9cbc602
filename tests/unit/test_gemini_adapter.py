"""The Gemini chat adapter over HTTP, against a strict fake Gemini (httpx.MockTransport).

The fake checks what Google checks: the method path, `x-goog-api-key` (and no Bearer
header, no key in the query), JSON content, `alt=sse` for streams, and the body against
the sandbox's Google-strict validation plus documented field types.
"""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest

from sandbox import gemini as sandbox_gemini
from services.common.canonical_chat import from_chat_body
from services.providers.adapters.gemini import GeminiChatAdapter, classify_error
from services.providers.adapters.gemini_translate import decode_tool_call_id
from services.providers.adapters.openai_chat_translate import ChunkTranslator, Identity
from services.providers.chat import ChatAdapter
from services.providers.errors import UpstreamError
from services.providers.routes import Provider, Route
from tests.unit.canonical_answers import chunk_json, completion_json
from tests.unit.fake_upstream import Respond, faked, json_response, raising, sse_response

API_KEY = "AIzaSyTest0123456789abcdefghijklmnop"
PROVIDER = Provider(
    name="google",
    protocol="gemini",
    base_url="https://generativelanguage.test/v1beta",
    api_key=API_KEY,
    connect_timeout_seconds=1.5,
    read_timeout_seconds=7.0,
    max_connections=4,
    max_tokens_field="max_tokens",
)
ROUTE = Route(model="gemini-3.5-flash", provider="google", upstream_model="gemini-3.5-flash-001")
IDENTITY = Identity(
    completion_id="chatcmpl-aiport0001", model="gemini-3.5-flash", created=1767225600
)
REQUEST_ID = "req-0001"
REQUEST: dict[str, Any] = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Apa kabar?"},
    ],
    "max_tokens": 64,
    "temperature": 0.5,
}
SIGNATURE = base64.b64encode(b"\x01\xfe opaque thought state \xff" * 4).decode()
PATH = re.compile(r"/v1beta/models/([A-Za-z0-9._-]+):(generateContent|streamGenerateContent)")
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


class StrictGemini:
    """Records requests; answers 400 in Google's shape for anything Google would refuse."""

    def __init__(self, respond: Respond) -> None:
        self.respond = respond
        self.requests: list[httpx.Request] = []

    @staticmethod
    def problem(request: httpx.Request) -> str | None:
        match = PATH.fullmatch(request.url.path)
        if request.method != "POST" or match is None:
            return f"bad method or path {request.method} {request.url.path}"
        if request.headers.get("x-goog-api-key") != API_KEY:
            return "x-goog-api-key missing or wrong"
        if "authorization" in request.headers or "key" in request.url.params:
            return "credentials anywhere but x-goog-api-key"
        if request.headers.get("content-type") != "application/json":
            return "not JSON"
        stream = match.group(2) == "streamGenerateContent"
        if stream != (request.url.params.get("alt") == "sse"):
            return "alt=sse must come with (and only with) streamGenerateContent"
        body = orjson.loads(request.content)
        try:
            sandbox_gemini.parse_request(match.group(1), body, stream)
        except Exception as exc:
            return f"invalid body: {exc}"
        config = body.get("generationConfig") or {}
        if not isinstance(config.get("maxOutputTokens"), int):
            return "maxOutputTokens missing"
        for content in body["contents"]:
            if content.get("role") not in ("user", "model"):
                return "role missing"
        return None

    async def handle(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        self.requests.append(request)
        problem = self.problem(request)
        if problem is not None:
            error = {"code": 400, "message": f"fake: {problem}", "status": "INVALID_ARGUMENT"}
            return httpx.Response(400, content=orjson.dumps({"error": error}))
        return self.respond(request)

    @property
    def body(self) -> Any:
        return orjson.loads(self.requests[-1].content)


@asynccontextmanager
async def connected(respond: Respond) -> AsyncIterator[tuple[GeminiChatAdapter, StrictGemini]]:
    upstream = StrictGemini(respond)
    adapter = GeminiChatAdapter(PROVIDER)
    own = adapter.client
    adapter.client = faked(own, upstream.handle)
    await own.aclose()
    try:
        yield adapter, upstream
    finally:
        await adapter.close()


def sse(events: list[Any]) -> bytes:
    return b"".join(b"data: " + orjson.dumps(e) + b"\r\n\r\n" for e in events)


def candidate(parts: list[dict[str, Any]], finish: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        out["finishReason"] = finish
    return out


def answer(parts: list[dict[str, Any]], finish: str = "STOP", **usage: int) -> dict[str, Any]:
    return {
        "candidates": [candidate(parts, finish)],
        "usageMetadata": {"promptTokenCount": 11, "candidatesTokenCount": 4, **usage},
        "modelVersion": "gemini-3.5-flash-001",
        "responseId": "upstream-id-must-not-leak",
    }


def new_translator() -> ChunkTranslator:
    return ChunkTranslator(IDENTITY, prompt_chars=len("Apa kabar?"))


async def run_stream(
    adapter: GeminiChatAdapter, translator: ChunkTranslator, request: dict[str, Any] = REQUEST
) -> list[Any]:
    out = []
    async for chunk in adapter.stream(
        ROUTE, from_chat_body(request), IDENTITY, REQUEST_ID, translator
    ):
        out.append(chunk_json(chunk))
    return out


async def test_it_is_a_chat_adapter() -> None:
    adapter = GeminiChatAdapter(PROVIDER)
    as_protocol: ChatAdapter = adapter
    assert as_protocol is adapter
    assert adapter.client.headers["x-goog-api-key"] == API_KEY
    assert "authorization" not in adapter.client.headers
    assert str(adapter.client.base_url) == "https://generativelanguage.test/v1beta/"
    await adapter.close()


# --- whole answers --------------------------------------------------------------------------


async def test_complete_sends_gemini_and_answers_openai() -> None:
    upstream_answer = answer(
        [{"text": "Baik", "thoughtSignature": "c2ln"}, {"text": ", terima kasih."}],
        thoughtsTokenCount=6,
        cachedContentTokenCount=3,
    )
    async with connected(json_response(upstream_answer)) as (adapter, upstream):
        completion, usage = await adapter.complete(
            ROUTE, from_chat_body(REQUEST), IDENTITY, REQUEST_ID
        )
    request = upstream.requests[0]
    assert request.url.path == "/v1beta/models/gemini-3.5-flash-001:generateContent"
    assert "alt" not in request.url.params
    assert request.headers["x-request-id"] == REQUEST_ID
    assert upstream.body == {
        "contents": [{"role": "user", "parts": [{"text": "Apa kabar?"}]}],
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "generationConfig": {"maxOutputTokens": 64, "temperature": 0.5},
    }
    assert completion_json(completion, usage) == {
        "id": "chatcmpl-aiport0001",
        "object": "chat.completion",
        "created": 1767225600,
        "model": "gemini-3.5-flash",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Baik, terima kasih."},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 11,
            "completion_tokens": 10,
            "total_tokens": 21,
            "prompt_tokens_details": {"cached_tokens": 3},
            "completion_tokens_details": {"reasoning_tokens": 6},
        },
    }
    assert (usage.prompt_tokens, usage.completion_tokens) == (11, 10)
    assert (usage.cached_prompt_tokens, usage.reasoning_tokens) == (3, 6)


async def test_tool_call_round_trip_restores_the_thought_signature() -> None:
    first_answer = answer(
        [
            {
                "functionCall": {"name": "get_weather", "args": {"city": "Jakarta"}},
                "thoughtSignature": SIGNATURE,
            },
        ]
    )
    request: dict[str, Any] = {
        "messages": [{"role": "user", "content": "Weather in Jakarta?"}],
        "max_tokens": 64,
        "tools": [WEATHER],
        "tool_choice": "required",
        "reasoning_effort": "high",
    }
    async with connected(json_response(first_answer)) as (adapter, upstream):
        completion, usage = await adapter.complete(
            ROUTE, from_chat_body(request), IDENTITY, REQUEST_ID
        )
        sent = upstream.body
        assert sent["tools"] == [
            {
                "functionDeclarations": [
                    {
                        "name": "get_weather",
                        "parameters": {
                            "type": "OBJECT",
                            "properties": {"city": {"type": "STRING"}},
                            "required": ["city"],
                        },
                    }
                ]
            }
        ]
        assert sent["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
        assert sent["generationConfig"]["thinkingConfig"] == {
            "thinkingLevel": "high",
            "includeThoughts": True,
        }
        choice = completion_json(completion, usage)["choices"][0]
        assert choice["finish_reason"] == "tool_calls"
        call = choice["message"]["tool_calls"][0]
        assert call["function"] == {"name": "get_weather", "arguments": '{"city":"Jakarta"}'}
        assert SIGNATURE not in call["id"]  # encoded, not pasted
        # The client sends the id back unchanged.
        upstream.respond = json_response(answer([{"text": "31 °C"}]))
        follow_up = {
            **request,
            "tool_choice": "auto",
            "messages": [
                *request["messages"],
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": call["id"], "content": '{"temp_c":31}'},
            ],
        }
        completion, _ = await adapter.complete(
            ROUTE, from_chat_body(follow_up), IDENTITY, REQUEST_ID
        )
    assert completion.choices[0].message.text == "31 °C"
    assert upstream.body["contents"][1:] == [
        {
            "role": "model",
            "parts": [
                {
                    "functionCall": {"name": "get_weather", "args": {"city": "Jakarta"}},
                    "thoughtSignature": SIGNATURE,
                }
            ],
        },
        {
            "role": "user",
            "parts": [{"functionResponse": {"name": "get_weather", "response": {"temp_c": 31}}}],
        },
    ]


async def test_a_request_gemini_cannot_take_is_rejected_without_a_call() -> None:
    request = {
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "tool", "tool_call_id": "call_unknown", "content": "1"},
        ],
        "max_tokens": 5,
    }
    async with connected(json_response(answer([{"text": "x"}]))) as (adapter, upstream):
        with pytest.raises(UpstreamError) as caught:
            await adapter.complete(ROUTE, from_chat_body(request), IDENTITY, REQUEST_ID)
    assert caught.value.kind == "rejected"
    assert "call_unknown" in caught.value.message
    assert upstream.requests == []


async def test_blocked_prompt_answers_content_filter() -> None:
    blocked = {
        "promptFeedback": {"blockReason": "SAFETY"},
        "usageMetadata": {"promptTokenCount": 9},
    }
    async with connected(json_response(blocked)) as (adapter, _):
        completion, usage = await adapter.complete(
            ROUTE, from_chat_body({**REQUEST, "n": 2}), IDENTITY, REQUEST_ID
        )
    body = completion_json(completion, usage)
    assert [c["finish_reason"] for c in body["choices"]] == ["content_filter", "content_filter"]
    assert body["choices"][0]["message"]["content"] == ""
    assert usage.prompt_tokens == 9 and usage.completion_tokens == 0


# --- errors ---------------------------------------------------------------------------------


def google_error(code: int, status: str, message: str, reason: str | None = None) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if reason:
        error["details"] = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason}]
    return orjson.dumps({"error": error})


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (400, google_error(400, "INVALID_ARGUMENT", "Invalid value at 'contents'"), "rejected"),
        (
            400,
            google_error(400, "INVALID_ARGUMENT", "API key not valid.", "API_KEY_INVALID"),
            "failed",
        ),
        (400, google_error(400, "FAILED_PRECONDITION", "User location is not supported"), "failed"),
        (401, google_error(401, "UNAUTHENTICATED", "no"), "failed"),
        (403, google_error(403, "PERMISSION_DENIED", "no"), "failed"),
        (404, google_error(404, "NOT_FOUND", "models/x is not found"), "failed"),
        (429, google_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded"), "rate_limited"),
        (500, google_error(500, "INTERNAL", "boom"), "failed"),
        (503, google_error(503, "UNAVAILABLE", "The model is overloaded."), "failed"),
        (502, b"<html>bad gateway</html>", "failed"),
    ],
)
async def test_error_statuses(status: int, body: bytes, kind: str) -> None:
    respond: Respond = lambda request: httpx.Response(status, content=body)  # noqa: E731
    async with connected(respond) as (adapter, _):
        with pytest.raises(UpstreamError) as caught:
            await adapter.complete(ROUTE, from_chat_body(REQUEST), IDENTITY, REQUEST_ID)
        assert caught.value.kind == kind
        with pytest.raises(UpstreamError) as streamed:
            await run_stream(adapter, new_translator())
        assert streamed.value.kind == kind


async def test_rejection_carries_googles_message_scrubbed() -> None:
    message = f"Invalid argument: key {API_KEY} and AIzaSyOther012345678901234 rejected"
    respond = json_response(
        {"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}}, 400
    )
    async with connected(respond) as (adapter, _):
        with pytest.raises(UpstreamError) as caught:
            await adapter.complete(ROUTE, from_chat_body(REQUEST), IDENTITY, REQUEST_ID)
    assert caught.value.kind == "rejected"
    assert caught.value.message.startswith("The upstream rejected the request: Invalid argument")
    assert API_KEY not in caught.value.message and "AIzaSyOther" not in caught.value.message


def test_array_wrapped_errors_are_read() -> None:
    raw = orjson.dumps(
        [{"error": {"code": 400, "message": "bad schema", "status": "INVALID_ARGUMENT"}}]
    )
    error = classify_error(400, raw, API_KEY)
    assert error.kind == "rejected" and error.message.endswith("bad schema")
    assert "no error message" in classify_error(400, b"not json", API_KEY).message


@pytest.mark.parametrize(
    ("respond", "kind"),
    [
        (raising(httpx.ReadTimeout), "timeout"),
        (raising(httpx.ConnectTimeout), "timeout"),
        (raising(httpx.ConnectError), "failed"),
        (lambda request: httpx.Response(200, content=b"{not json"), "failed"),
        (json_response({"candidates": "nope"}), "failed"),
        (json_response({"candidates": [candidate([{"text": "x"}], "STOP")]}), "failed"),
    ],
)
async def test_transport_failures_and_garbage(respond: Respond, kind: str) -> None:
    async with connected(respond) as (adapter, _):
        with pytest.raises(UpstreamError) as caught:
            await adapter.complete(ROUTE, from_chat_body(REQUEST), IDENTITY, REQUEST_ID)
    assert caught.value.kind == kind


# --- streams --------------------------------------------------------------------------------

STREAM_EVENTS = [
    {
        "candidates": [candidate([{"text": "I think", "thought": True}])],
        "usageMetadata": {"promptTokenCount": 11},
    },
    {"candidates": [candidate([{"text": "Baik"}])], "usageMetadata": {"promptTokenCount": 11}},
    {"candidates": [candidate([{"text": ", terima kasih"}])]},
    {
        "candidates": [candidate([{"text": "", "thoughtSignature": "c2ln"}], "STOP")],
        "usageMetadata": {
            "promptTokenCount": 11,
            "candidatesTokenCount": 3,
            "thoughtsTokenCount": 2,
        },
    },
]


def public(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-aiport0001",
        "object": "chat.completion.chunk",
        "created": 1767225600,
        "model": "gemini-3.5-flash",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


EXPECTED_STREAM = [
    public({"role": "assistant"}),
    public({"reasoning_content": "I think"}),
    public({"content": "Baik"}),
    public({"content": ", terima kasih"}),
    public({}, "stop"),
]


async def test_stream_translates_and_reports_usage() -> None:
    translator = new_translator()
    async with connected(sse_response([sse(STREAM_EVENTS)])) as (adapter, upstream):
        chunks = await run_stream(adapter, translator)
    request = upstream.requests[0]
    assert request.url.path == "/v1beta/models/gemini-3.5-flash-001:streamGenerateContent"
    assert request.url.params["alt"] == "sse"
    assert chunks == EXPECTED_STREAM
    # The usage is no chunk of the stream: finish() hands it over for its own event.
    held, usage = translator.finish()
    assert held == []
    assert usage.to_public()["completion_tokens_details"] == {"reasoning_tokens": 2}
    assert (usage.prompt_tokens, usage.completion_tokens, usage.reasoning_tokens) == (11, 5, 2)


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 13, 64])
async def test_stream_split_at_awkward_byte_boundaries(size: int) -> None:
    # Multi-byte UTF-8 and CRLF pairs get cut in half by the piece boundaries.
    events = [
        {"candidates": [candidate([{"text": "Selamat pagi ☀️ — ünïcödé"}])]},
        {
            "candidates": [candidate([{"text": "!"}], "STOP")],
            "usageMetadata": {"promptTokenCount": 2},
        },
    ]
    raw = sse(events)
    pieces = [raw[i : i + size] for i in range(0, len(raw), size)]
    translator = new_translator()
    async with connected(sse_response(pieces)) as (adapter, _):
        chunks = await run_stream(adapter, translator)
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant"},
        {"content": "Selamat pagi ☀️ — ünïcödé"},
        {"content": "!"},
        {},
    ]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_stream_tool_calls_with_signature_in_the_id() -> None:
    events = [
        {
            "candidates": [
                candidate(
                    [
                        {
                            "functionCall": {"name": "get_weather", "args": {"city": "Bandung"}},
                            "thoughtSignature": SIGNATURE,
                        },
                        {"functionCall": {"name": "get_weather", "args": {"city": "Bogor"}}},
                    ],
                    "STOP",
                )
            ],
            "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 8},
        },
    ]
    request = {**REQUEST, "tools": [WEATHER]}
    async with connected(sse_response([sse(events)])) as (adapter, _):
        chunks = await run_stream(adapter, new_translator(), request)
    calls = [
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in chunks
        if "tool_calls" in c["choices"][0]["delta"]
    ]
    assert [(c["index"], c["function"]["arguments"]) for c in calls] == [
        (0, '{"city":"Bandung"}'),
        (1, '{"city":"Bogor"}'),
    ]
    assert decode_tool_call_id(calls[0]["id"]).signature == SIGNATURE
    assert decode_tool_call_id(calls[1]["id"]).signature is None
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_stream_ending_without_finish_reason_failed() -> None:
    translator = new_translator()
    received: list[Any] = []
    async with connected(sse_response([sse(STREAM_EVENTS[:3])])) as (adapter, _):
        with pytest.raises(UpstreamError) as caught:
            async for chunk in adapter.stream(
                ROUTE, from_chat_body(REQUEST), IDENTITY, REQUEST_ID, translator
            ):
                received.append(chunk_json(chunk))
    assert caught.value.kind == "failed"
    assert caught.value.message == "upstream stream ended early"
    assert received == EXPECTED_STREAM[:4]
    assert translator.output_started


async def test_stream_broken_connection_and_error_events() -> None:
    async with connected(sse_response([sse(STREAM_EVENTS[:2])], then=httpx.ReadError("reset"))) as (
        adapter,
        _,
    ):
        with pytest.raises(UpstreamError) as caught:
            await run_stream(adapter, new_translator())
    assert caught.value.kind == "failed"
    error_event = {"error": {"code": 500, "message": "Internal error", "status": "INTERNAL"}}
    async with connected(sse_response([sse([STREAM_EVENTS[1], error_event])])) as (adapter, _):
        with pytest.raises(UpstreamError, match="upstream stream error: Internal error"):
            await run_stream(adapter, new_translator())
    async with connected(sse_response([b"data: {oops\r\n\r\n"])) as (adapter, _):
        with pytest.raises(UpstreamError, match="malformed"):
            await run_stream(adapter, new_translator())


async def test_stream_timeout() -> None:
    async with connected(raising(httpx.ReadTimeout)) as (adapter, _):
        with pytest.raises(UpstreamError) as caught:
            await run_stream(adapter, new_translator())
    assert caught.value.kind == "timeout"


def test_the_fake_refuses_what_google_refuses() -> None:
    """The strict fake is only worth something if it can say no."""

    def request(
        body: Any, headers: dict[str, str] | None = None, path: str = "", params: Any = None
    ) -> httpx.Request:
        return httpx.Request(
            "POST",
            f"https://generativelanguage.test{path or '/v1beta/models/m:generateContent'}",
            params=params,
            content=orjson.dumps(body),
            headers={
                "x-goog-api-key": API_KEY,
                "content-type": "application/json",
                **(headers or {}),
            },
        )

    good = {
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        "generationConfig": {"maxOutputTokens": 5},
    }
    assert StrictGemini.problem(request(good)) is None
    openai_shaped = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    assert "invalid body" in str(StrictGemini.problem(request(openai_shaped)))
    assert "credentials" in str(
        StrictGemini.problem(request(good, {"authorization": f"Bearer {API_KEY}"}))
    )
    assert "x-goog-api-key" in str(StrictGemini.problem(request(good, {"x-goog-api-key": "k"})))
    assert "alt=sse" in str(
        StrictGemini.problem(request(good, path="/v1beta/models/m:streamGenerateContent"))
    )
    assert "path" in str(StrictGemini.problem(request(good, path="/v1beta/chat/completions")))
    no_max = {"contents": good["contents"]}
    assert "maxOutputTokens" in str(StrictGemini.problem(request(no_max)))
