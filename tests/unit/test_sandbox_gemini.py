"""The sandbox's Gemini API: strict validation, planned answers, thought signatures, images,
in-process over loopback HTTP, and driven end to end by the Gemini adapters."""

from __future__ import annotations

import asyncio
import base64
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer

from sandbox import gemini, openai_chat, png, textgen
from sandbox.errors import ApiError
from sandbox.gemini_server import register
from sandbox.server import REQUEST_LOG, create_app
from services.common.canonical_chat import from_chat_body
from services.providers.adapters.gemini import GeminiChatAdapter
from services.providers.adapters.gemini_image import GeminiImageAdapter
from services.providers.adapters.gemini_translate import (
    THOUGHT_SIGNATURE_PLACEHOLDER,
    decode_tool_call_id,
    encode_tool_call_id,
)
from services.providers.adapters.openai_chat_translate import ChunkTranslator, Identity
from services.providers.errors import UpstreamError
from services.providers.media import ImageRequest, Reference
from services.providers.routes import Provider, Route
from tests.unit.canonical_answers import chunk_json, completion_json

KEY = "sk-sandbox"
MODEL = "gemini-3.5-flash"
GENERATE = f"/v1beta/models/{MODEL}:generateContent"
STREAM = f"/v1beta/models/{MODEL}:streamGenerateContent"
HEADERS = {"x-goog-api-key": KEY}
WEATHER_DECL = {
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {
        "type": "OBJECT",
        "properties": {"city": {"type": "STRING"}, "days": {"type": "INTEGER", "minimum": 2}},
        "required": ["city"],
    },
}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 2}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
TIME_TOOL = {"type": "function", "function": {"name": "get_time"}}


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "parts": [{"text": text}]}


def generate(text: str = "Say hello", **extra: Any) -> dict[str, Any]:
    return {"contents": [user(text)], **extra}


def parse(body: dict[str, Any], stream: bool = False) -> gemini.GeminiRequest:
    return gemini.parse_request(MODEL, body, stream)


def rejects(body: Any, fragment: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse(body)
    assert caught.value.status == 400
    assert fragment in caught.value.message, caught.value.message


# --- validation (pure) ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ([], "an object"),
        ({}, "contents is not specified"),
        ({"contents": []}, "contents is not specified"),
        ({"messages": [{"role": "user", "content": "hi"}]}, 'Unknown name "messages"'),
        (generate(model="x", max_tokens=5), 'Unknown name "max_tokens"'),
        ({"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}, "valid role"),
        ({"contents": [{"role": "tool", "parts": [{"text": "x"}]}]}, "valid role"),
        ({"contents": [{"role": "system", "parts": [{"text": "x"}]}]}, "valid role"),
        ({"contents": [{"role": "user", "content": "hi"}]}, 'Unknown name "content"'),
        ({"contents": [{"role": "user", "parts": []}]}, "must not be empty"),
        ({"contents": [{"role": "user", "parts": [{}]}]}, "oneof field 'data'"),
        ({"contents": [{"role": "user", "parts": [{"type": "text", "text": "x"}]}]}, '"type"'),
        (
            {"contents": [{"role": "user", "parts": [{"text": "a", "inlineData": {}}]}]},
            "already set",
        ),
        (
            {"contents": [{"parts": [{"inlineData": {"mimeType": "image/png", "data": "%%"}}]}]},
            "Base64 decoding failed",
        ),
        (
            {
                "contents": [
                    {
                        "parts": [
                            {
                                "inlineData": {
                                    "mimeType": "image/jpeg",
                                    "data": base64.b64encode(png.render(2, 2, "x")).decode(),
                                }
                            }
                        ]
                    }
                ]
            },
            "not the declared image/jpeg",
        ),
        (
            {
                "contents": [
                    user("go"),
                    {
                        "role": "model",
                        "parts": [{"functionCall": {"name": "f"}}],
                        "tool_calls": [],
                    },
                ]
            },
            'Unknown name "tool_calls"',
        ),
        (
            {
                "contents": [
                    user("go"),
                    {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]},
                    {
                        "role": "user",
                        "parts": [{"functionResponse": {"name": "f", "response": "sunny"}}],
                    },
                ]
            },
            "google.protobuf.Struct",
        ),
        (
            {
                "contents": [
                    user("go"),
                    {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]},
                    user("no answer to the call"),
                ]
            },
            "number of function response parts",
        ),
        (
            {"contents": [{"role": "user", "parts": [{"functionCall": {"name": "f"}}]}]},
            "only allowed in model turns",
        ),
        (
            generate(tools=[{"type": "function", "function": {"name": "f"}}]),
            'Unknown name "type"',
        ),
        (
            generate(
                tools=[
                    {
                        "functionDeclarations": [
                            {
                                "name": "f",
                                "parameters": {
                                    "type": "object",
                                    "properties": {"a": {"type": "string"}},
                                    "additionalProperties": False,
                                },
                            }
                        ]
                    }
                ]
            ),
            'Unknown name "additionalProperties"',
        ),
        (
            generate(
                tools=[{"functionDeclarations": [{"name": "f", "parameters": {"type": "map"}}]}]
            ),
            "v1beta.Type",
        ),
        (generate(tools=[{"functionDeclarations": [{"name": "1bad name"}]}]), "function name"),
        (generate(toolConfig={"functionCallingConfig": {"mode": "SOMETIMES"}}), "SOMETIMES"),
        (
            generate(
                tools=[{"functionDeclarations": [{"name": "f"}]}],
                toolConfig={
                    "functionCallingConfig": {"mode": "AUTO", "allowedFunctionNames": ["f"]}
                },
            ),
            "only be set when the mode is ANY",
        ),
        (
            generate(
                tools=[{"functionDeclarations": [{"name": "f"}]}],
                toolConfig={
                    "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["g"]}
                },
            ),
            "not declared",
        ),
        (generate(generationConfig={"maxOutputTokens": "many"}), "max_output_tokens"),
        (generate(generationConfig={"seed": 2**31}), "seed"),
        (generate(generationConfig={"temperature": 3}), "out of range"),
        (generate(generationConfig={"stopSequences": ["a"] * 6}), "stop_sequences"),
        (generate(generationConfig={"max_tokens": 5}), 'Unknown name "max_tokens"'),
        (generate(generationConfig={"responseMimeType": "text/html"}), "mimetypes"),
        (
            generate(generationConfig={"responseSchema": {"type": "OBJECT"}}),
            "response_mime_type must be",
        ),
        (
            generate(
                generationConfig={"thinkingConfig": {"thinkingBudget": 10, "thinkingLevel": "low"}}
            ),
            "not supported together",
        ),
        (generate(generationConfig={"thinkingConfig": {"thinkingLevel": "max"}}), "ThinkingLevel"),
        (generate(generationConfig={"responseModalities": ["PICTURE"]}), "Modality"),
        (generate(generationConfig={"imageConfig": {"aspectRatio": "7:3"}}), "aspect ratio"),
        (generate(generationConfig={"imageConfig": {"imageSize": "1k"}}), "image size"),
    ],
)
def test_google_strict_validation(body: Any, fragment: str) -> None:
    rejects(body, fragment)


def test_snake_case_and_camel_case_both_accepted() -> None:
    request = parse(
        {
            "contents": [{"parts": [{"text": "hi"}]}],
            "system_instruction": {"parts": [{"text": "Be brief."}]},
            "generation_config": {"max_output_tokens": 7, "candidate_count": 2},
            "tools": [{"function_declarations": [WEATHER_DECL]}],
            "tool_config": {"function_calling_config": {"mode": "none"}},
        }
    )
    assert (request.system, request.max_tokens, request.n, request.mode) == (
        "Be brief.",
        7,
        2,
        "NONE",
    )
    assert request.contents[0].role == "user"


# --- planning (pure) ------------------------------------------------------------------------


def test_text_answer_reuses_the_openai_plan() -> None:
    body = generate(
        "Say hello [sim:tokens=5] [sim:cached=3]", generationConfig={"candidateCount": 2}
    )
    request = parse(body)
    answer = gemini.answer_text(request)
    out = gemini.response_body(answer, "rid")
    expected = textgen.words(f"{MODEL}\x00Say hello\x000", 5)
    assert out["candidates"][0]["content"] == {
        "parts": [{"text": " ".join(expected)}],
        "role": "model",
    }
    assert [c["index"] for c in out["candidates"]] == [0, 1]
    assert out["candidates"][0]["finishReason"] == "STOP"
    prompt = openai_chat.prompt_tokens(
        [{"role": "user", "content": "Say hello [sim:tokens=5] [sim:cached=3]"}]
    )
    assert out["usageMetadata"] == {
        "promptTokenCount": prompt,
        "candidatesTokenCount": 10,
        "totalTokenCount": prompt + 10,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
        "cachedContentTokenCount": 3,
    }


def test_max_output_tokens_and_reasoning() -> None:
    body = generate(
        "think [sim:reasoning=4] [sim:tokens=20]",
        generationConfig={"maxOutputTokens": 10, "thinkingConfig": {"includeThoughts": True}},
    )
    out = gemini.response_body(gemini.answer_text(parse(body)), "rid")
    parts = out["candidates"][0]["content"]["parts"]
    assert parts[0]["thought"] is True and parts[0]["text"]
    assert len(parts[1]["text"].split()) == 6 and "thoughtSignature" in parts[1]
    assert out["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert out["usageMetadata"]["thoughtsTokenCount"] == 4
    assert out["usageMetadata"]["candidatesTokenCount"] == 6
    # Without includeThoughts the thoughts are counted but not shown, as Gemini does.
    hidden = gemini.response_body(
        gemini.answer_text(parse(generate("think [sim:reasoning=4]"))), "r"
    )
    assert all(not p.get("thought") for p in hidden["candidates"][0]["content"]["parts"])
    assert hidden["usageMetadata"]["thoughtsTokenCount"] == 4


def tools_body(
    text: str, mode: str | None = None, allowed: list[str] | None = None
) -> dict[str, Any]:
    body = generate(
        text,
        tools=[{"functionDeclarations": [WEATHER_DECL, {"name": "get_time"}]}],
    )
    if mode is not None:
        config: dict[str, Any] = {"mode": mode}
        if allowed is not None:
            config["allowedFunctionNames"] = allowed
        body["toolConfig"] = {"functionCallingConfig": config}
    return body


@pytest.mark.parametrize(
    ("text", "mode", "allowed", "names"),
    [
        ("weather?", None, None, ["get_weather"]),
        ("weather?", "AUTO", None, ["get_weather"]),
        ("weather?", "NONE", None, []),
        ("weather?", "ANY", None, ["get_weather"]),
        ("weather?", "ANY", ["get_time"], ["get_time"]),
        (
            "weather? [sim:parallel]",
            "ANY",
            ["get_time", "get_weather"],
            ["get_weather", "get_time"],
        ),
        ("weather? [sim:parallel]", None, None, ["get_weather", "get_time"]),
    ],
)
def test_function_calling_config(
    text: str, mode: str | None, allowed: list[str] | None, names: list[str]
) -> None:
    out = gemini.response_body(gemini.answer_text(parse(tools_body(text, mode, allowed))), "r")
    parts = out["candidates"][0]["content"]["parts"]
    calls = [p for p in parts if "functionCall" in p]
    assert [c["functionCall"]["name"] for c in calls] == names
    if calls:
        assert out["candidates"][0]["finishReason"] == "STOP"
        # Signature on the first call only, as Gemini does for parallel calls.
        first = calls[0]
        assert first["thoughtSignature"] == gemini.thought_signature(
            first["functionCall"]["name"], first["functionCall"]["args"]
        )
        assert all("thoughtSignature" not in c for c in calls[1:])
    if "get_weather" in names:
        weather = next(c for c in calls if c["functionCall"]["name"] == "get_weather")
        assert weather["functionCall"]["args"] == {"city": "sample", "days": 2}


def round_trip_body(signature: str | None, args: dict[str, Any] | None = None) -> dict[str, Any]:
    call: dict[str, Any] = {
        "functionCall": {"name": "get_weather", "args": args or {"city": "sample", "days": 2}}
    }
    if signature is not None:
        call["thoughtSignature"] = signature
    return {
        "contents": [
            user("weather?"),
            {"role": "model", "parts": [call]},
            {
                "role": "user",
                "parts": [{"functionResponse": {"name": "get_weather", "response": {"t": 31}}}],
            },
        ],
        "tools": [{"functionDeclarations": [WEATHER_DECL]}],
    }


def test_signature_checks() -> None:
    own = gemini.thought_signature("get_weather", {"city": "sample", "days": 2})
    gemini.check_signatures(parse(round_trip_body(own)))
    for wrong, fragment in [
        (None, "missing a thought_signature"),
        (THOUGHT_SIGNATURE_PLACEHOLDER, "not valid"),  # not for a call the sandbox made
        (base64.b64encode(b"forged").decode(), "not valid"),
    ]:
        with pytest.raises(ApiError, match=fragment):
            gemini.check_signatures(parse(round_trip_body(wrong)))
    # A call the sandbox did not make (other arguments): any signature, placeholder included.
    foreign = {"city": "Jakarta"}
    gemini.check_signatures(parse(round_trip_body(THOUGHT_SIGNATURE_PLACEHOLDER, foreign)))
    with pytest.raises(ApiError, match="missing"):
        gemini.check_signatures(parse(round_trip_body(None, foreign)))
    # Earlier turns are not checked (only the current one, as Gemini documents).
    old_turn = round_trip_body(None)
    old_turn["contents"] += [{"role": "model", "parts": [{"text": "31"}]}, user("thanks")]
    gemini.check_signatures(parse(old_turn))


def test_stream_frames_and_fail_after() -> None:
    answer = gemini.answer_text(parse(generate("hello [sim:tokens=3]"), stream=True))
    frames, drop = gemini.stream_frames(answer, "rid")
    assert not drop and len(frames) == 4
    assert all(f.startswith(b"data: ") and f.endswith(b"\r\n\r\n") for f in frames)
    events = [orjson.loads(f[6:]) for f in frames]
    assert [e["candidates"][0].get("finishReason") for e in events] == [None, None, None, "STOP"]
    assert "candidatesTokenCount" not in events[0]["usageMetadata"]
    assert events[-1]["usageMetadata"]["candidatesTokenCount"] == 3
    cut = gemini.answer_text(
        parse(generate("hello [sim:tokens=3] [sim:fail-after=2]"), stream=True)
    )
    frames, drop = gemini.stream_frames(cut, "rid")
    assert drop and len(frames) == 2


def test_error_body_is_googles_shape() -> None:
    assert gemini.error_body(ApiError(429, "slow down")) == {
        "error": {"code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED"}
    }
    keyed = gemini.error_body(ApiError(400, "API key not valid.", code="API_KEY_INVALID"))
    assert keyed["error"]["status"] == "INVALID_ARGUMENT"
    assert keyed["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    assert gemini.error_body(ApiError(418, "teapot"))["error"]["status"] == "FAILED_PRECONDITION"
    assert gemini.error_body(ApiError(502, "x"))["error"]["status"] == "INTERNAL"


# --- over loopback HTTP, in-process ---------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def sandbox() -> AsyncIterator[tuple[str, web.Application]]:
    app = create_app(KEY)
    register(app)
    register(app)  # idempotent: wiring it into create_app too must not break
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/"), app
    finally:
        await server.close()


@pytest_asyncio.fixture(loop_scope="session")
async def http(sandbox: tuple[str, web.Application]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sandbox[0], timeout=10) as client:
        yield client


def provider(base: str, read_timeout: float = 10.0) -> Provider:
    return Provider(
        name="sandbox-gemini",
        protocol="gemini",
        base_url=f"{base}/v1beta",
        api_key=KEY,
        connect_timeout_seconds=2,
        read_timeout_seconds=read_timeout,
        max_connections=8,
        max_tokens_field="max_tokens",
    )


async def test_auth_like_google(http: httpx.AsyncClient) -> None:
    missing = await http.post(GENERATE, json=generate())
    assert missing.status_code == 403
    assert missing.json()["error"]["status"] == "PERMISSION_DENIED"
    wrong = await http.post(GENERATE, json=generate(), headers={"x-goog-api-key": "nope"})
    assert wrong.status_code == 400
    assert wrong.json()["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    bearer = await http.post(
        GENERATE, json=generate(), headers={**HEADERS, "Authorization": f"Bearer {KEY}"}
    )
    assert bearer.status_code == 401 and bearer.json()["error"]["status"] == "UNAUTHENTICATED"
    by_query = await http.post(GENERATE, params={"key": KEY}, json=generate())
    assert by_query.status_code == 200, by_query.text
    by_header = await http.post(GENERATE, headers=HEADERS, json=generate())
    assert by_header.json()["candidates"] == by_query.json()["candidates"]


async def test_routes_and_errors_in_googles_shape(http: httpx.AsyncClient) -> None:
    unknown = await http.post(f"/v1beta/models/{MODEL}:countTokens", headers=HEADERS, json={})
    assert unknown.status_code == 404 and unknown.json()["error"]["status"] == "NOT_FOUND"
    no_sse = await http.post(STREAM, headers=HEADERS, json=generate())
    assert no_sse.status_code == 400 and "alt=sse" in no_sse.json()["error"]["message"]
    stray = await http.post(GENERATE, params={"foo": "1"}, headers=HEADERS, json=generate())
    assert stray.status_code == 400
    bad_json = await http.post(GENERATE, headers=HEADERS, content=b"{nope")
    assert bad_json.status_code == 400 and bad_json.json()["error"]["code"] == 400
    openai_body = await http.post(
        GENERATE, headers=HEADERS, json={"messages": [{"role": "user", "content": "hi"}]}
    )
    assert openai_body.json() == {
        "error": {
            "code": 400,
            "message": 'Invalid JSON payload received. Unknown name "messages": Cannot find field.',
            "status": "INVALID_ARGUMENT",
        }
    }
    elsewhere = await http.post("/v1beta/nothing", headers=HEADERS, json={})
    assert elsewhere.status_code == 404 and "status" in elsewhere.json()["error"]


@pytest.mark.parametrize(
    ("directive", "status", "google_status"),
    [
        ("[sim:fail]", 500, "INTERNAL"),
        ("[sim:fail-after=1]", 500, "INTERNAL"),
        ("[sim:status=429]", 429, "RESOURCE_EXHAUSTED"),
        ("[sim:status=503]", 503, "UNAVAILABLE"),
        ("[sim:token=3]", 400, "INVALID_ARGUMENT"),
        ("[sim:hang]", 400, "INVALID_ARGUMENT"),
    ],
)
async def test_directives_fail_in_googles_shape(
    http: httpx.AsyncClient, directive: str, status: int, google_status: str
) -> None:
    response = await http.post(GENERATE, headers=HEADERS, json=generate(f"hi {directive}"))
    assert response.status_code == status
    assert response.json()["error"]["status"] == google_status


async def test_delay_and_request_log(
    http: httpx.AsyncClient, sandbox: tuple[str, web.Application]
) -> None:
    started = time.monotonic()
    png_b64 = base64.b64encode(png.render(4, 4, "ref")).decode()
    body = {
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"text": "look [sim:delay=0.2]"},
                    {"inlineData": {"mimeType": "image/png", "data": png_b64}},
                ],
            }
        ]
    }
    response = await http.post(GENERATE, params={"key": KEY}, json=body)
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.2
    entry = sandbox[1][REQUEST_LOG][-1]
    assert entry["path"] == GENERATE and entry["api_key"] == KEY and entry["query"] == {}
    assert entry["authorization"] is None
    logged = entry["body"]["contents"][0]["parts"][1]["inlineData"]
    assert logged["mimeType"] == "image/png" and logged["data"].endswith("bytes]")


async def test_raw_stream_is_google_sse(http: httpx.AsyncClient) -> None:
    response = await http.post(
        STREAM, params={"alt": "sse"}, headers=HEADERS, json=generate("hi [sim:tokens=2]")
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [orjson.loads(line[6:]) for line in response.text.split("\r\n\r\n") if line]
    assert [e["candidates"][0].get("finishReason") for e in events] == [None, None, "STOP"]
    assert "[DONE]" not in response.text


# --- end to end through the adapters --------------------------------------------------------

ROUTE = Route(model="gemini-3.5-flash", provider="sandbox-gemini", upstream_model=MODEL)
IDENTITY = Identity("chatcmpl-e2e", "gemini-3.5-flash", 1767225600)


async def stream_all(
    adapter: GeminiChatAdapter, request: dict[str, Any]
) -> tuple[list[Any], ChunkTranslator]:
    translator = ChunkTranslator(IDENTITY, prompt_chars=10)
    chunks = [
        chunk_json(c)
        async for c in adapter.stream(ROUTE, from_chat_body(request), IDENTITY, "r", translator)
    ]
    return chunks, translator


async def test_e2e_text_complete_and_stream(sandbox: tuple[str, web.Application]) -> None:
    adapter = GeminiChatAdapter(provider(sandbox[0]))
    request = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Halo [sim:tokens=4] [sim:cached=2] [sim:reasoning=3]"},
        ],
        "max_tokens": 50,
        "temperature": 0.3,
        "seed": 2**40,
        "reasoning_effort": "medium",
        "response_format": {"type": "json_object"},
    }
    try:
        completion, usage = await adapter.complete(ROUTE, from_chat_body(request), IDENTITY, "r1")
        body = completion_json(completion, usage)
        message = body["choices"][0]["message"]
        assert len(message["content"].split()) == 4
        assert message["reasoning_content"]
        assert body["choices"][0]["finish_reason"] == "stop"
        assert (usage.completion_tokens, usage.reasoning_tokens, usage.cached_prompt_tokens) == (
            7,
            3,
            2,
        )
        chunks, translator = await stream_all(adapter, request)
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
        assert text == message["content"]
        assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
        held, streamed_usage = translator.finish()
        assert held == []
        assert streamed_usage == usage
    finally:
        await adapter.close()


async def test_e2e_tool_round_trip_needs_the_signature(
    sandbox: tuple[str, web.Application],
) -> None:
    adapter = GeminiChatAdapter(provider(sandbox[0]))
    question = {"role": "user", "content": "Weather in Jakarta? [sim:parallel]"}
    request = {"messages": [question], "max_tokens": 200, "tools": [WEATHER_TOOL, TIME_TOOL]}
    try:
        completion, usage = await adapter.complete(ROUTE, from_chat_body(request), IDENTITY, "r1")
        choice = completion_json(completion, usage)["choices"][0]
        assert choice["finish_reason"] == "tool_calls"
        calls = choice["message"]["tool_calls"]
        assert [c["function"]["name"] for c in calls] == ["get_weather", "get_time"]
        assert orjson.loads(calls[0]["function"]["arguments"]) == {"city": "sample", "days": 2}
        assert decode_tool_call_id(calls[0]["id"]).signature == gemini.thought_signature(
            "get_weather", {"city": "sample", "days": 2}
        )

        def follow_up(ids: list[str]) -> dict[str, Any]:
            echoed = [{**c, "id": i} for c, i in zip(calls, ids, strict=True)]
            return {
                **request,
                "messages": [
                    question,
                    {"role": "assistant", "content": None, "tool_calls": echoed},
                    {"role": "tool", "tool_call_id": ids[0], "content": '{"temp_c":31}'},
                    {"role": "tool", "tool_call_id": ids[1], "content": "14:00"},
                ],
            }

        # Ids echoed unchanged: the sandbox sees its own signature and answers.
        completion, usage = await adapter.complete(
            ROUTE, from_chat_body(follow_up([c["id"] for c in calls])), IDENTITY, "r2"
        )
        answer = completion_json(completion, usage)["choices"][0]
        assert answer["finish_reason"] == "stop" and answer["message"]["content"]
        chunks, _ = await stream_all(adapter, follow_up([c["id"] for c in calls]))
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"

        # Ids the client rewrote lose the signature: 400 from the sandbox -> rejected.
        with pytest.raises(UpstreamError) as caught:
            await adapter.complete(
                ROUTE, from_chat_body(follow_up(["call_a", "call_b"])), IDENTITY, "r3"
            )
        assert caught.value.kind == "rejected"
        assert "Thought signature is not valid" in caught.value.message
        forged = encode_tool_call_id(base64.b64encode(b"forged").decode())
        with pytest.raises(UpstreamError) as caught:
            await adapter.complete(
                ROUTE, from_chat_body(follow_up([forged, calls[1]["id"]])), IDENTITY, "r4"
            )
        assert caught.value.kind == "rejected"
    finally:
        await adapter.close()


async def test_e2e_streamed_tool_calls(sandbox: tuple[str, web.Application]) -> None:
    adapter = GeminiChatAdapter(provider(sandbox[0]))
    request = {
        "messages": [{"role": "user", "content": "Weather?"}],
        "max_tokens": 200,
        "tools": [WEATHER_TOOL],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    }
    try:
        chunks, translator = await stream_all(adapter, request)
        fragments = [
            c["choices"][0]["delta"]["tool_calls"][0]
            for c in chunks
            if c["choices"] and "tool_calls" in c["choices"][0]["delta"]
        ]
        assert len(fragments) == 1
        assert fragments[0]["function"]["name"] == "get_weather"
        assert decode_tool_call_id(fragments[0]["id"]).signature
        assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
        _, usage = translator.finish()
        assert usage.completion_tokens > 0
    finally:
        await adapter.close()


async def test_e2e_failures(sandbox: tuple[str, web.Application]) -> None:
    adapter = GeminiChatAdapter(provider(sandbox[0]))
    base = {"max_tokens": 50}
    try:
        for text, kind in [
            ("x [sim:fail]", "failed"),
            ("x [sim:status=429]", "rate_limited"),
            ("x [sim:token=1]", "rejected"),
        ]:
            with pytest.raises(UpstreamError) as caught:
                await adapter.complete(
                    ROUTE,
                    from_chat_body({**base, "messages": [{"role": "user", "content": text}]}),
                    IDENTITY,
                    "r",
                )
            assert caught.value.kind == kind, text
        # fail-after drops the stream before any finishReason: failed, after some output.
        translator = ChunkTranslator(IDENTITY, prompt_chars=1)
        got = []
        with pytest.raises(UpstreamError) as caught:
            request = {**base, "messages": [{"role": "user", "content": "x [sim:fail-after=2]"}]}
            async for chunk in adapter.stream(
                ROUTE, from_chat_body(request), IDENTITY, "r", translator
            ):
                got.append(chunk)
        assert caught.value.kind == "failed"
        assert translator.output_started and len(got) == 3  # role + 2 words
    finally:
        await adapter.close()

    bad = GeminiChatAdapter(
        Provider(
            name="bad",
            protocol="gemini",
            base_url=f"{sandbox[0]}/v1beta",
            api_key="wrong-key",
            connect_timeout_seconds=2,
            read_timeout_seconds=5,
            max_connections=2,
            max_tokens_field="max_tokens",
        )
    )
    try:
        with pytest.raises(UpstreamError) as caught:
            await bad.complete(
                ROUTE,
                from_chat_body({**base, "messages": [{"role": "user", "content": "x"}]}),
                IDENTITY,
                "r",
            )
        assert caught.value.kind == "failed"  # our key, not the client's request
    finally:
        await bad.close()


def png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(png.SIGNATURE)
    width, height = struct.unpack(">II", data[16:24])
    return width, height


async def test_e2e_images(sandbox: tuple[str, web.Application]) -> None:
    adapter = GeminiImageAdapter(provider(sandbox[0]))
    try:
        image = await adapter.generate(
            ImageRequest(
                upstream_model="nano-banana2-flash",
                prompt="Borobudur at dawn",
                aspect_ratio="16:9",
                resolution="2k",
            )
        )
        assert image.content_type == "image/png"
        assert png_size(image.data) == (512, 288)
        square = await adapter.generate(ImageRequest(upstream_model="nano", prompt="a cat"))
        assert png_size(square.data) == (512, 512)
        entry = sandbox[1][REQUEST_LOG][-1]
        assert entry["body"]["generationConfig"] == {"responseModalities": ["TEXT", "IMAGE"]}

        reference = png.render(10, 10, "ref")
        edited = await adapter.generate(
            ImageRequest(
                upstream_model="nano-banana2-img2img",
                prompt="make it blue",
                aspect_ratio="9:21",  # not Gemini's: the nearest, 9:16
                references=(Reference("image", reference, "image/png"),),
            )
        )
        assert png_size(edited.data) == (288, 512)
        entry = sandbox[1][REQUEST_LOG][-1]
        parts = entry["body"]["contents"][0]["parts"]
        assert parts[0] == {"text": "make it blue"}
        assert parts[1]["inlineData"]["mimeType"] == "image/png"
        assert edited.data != square.data

        for prompt, kind in [
            ("x [sim:fail]", "failed"),
            ("x [sim:status=400]", "rejected"),
            ("x [sim:tokens=2]", "rejected"),
        ]:
            with pytest.raises(UpstreamError) as caught:
                await adapter.generate(ImageRequest(upstream_model="nano", prompt=prompt))
            assert caught.value.kind == kind, prompt
    finally:
        await adapter.close()


async def test_e2e_image_delay_and_hang(sandbox: tuple[str, web.Application]) -> None:
    adapter = GeminiImageAdapter(provider(sandbox[0], read_timeout=0.5))
    try:
        started = time.monotonic()
        await adapter.generate(ImageRequest(upstream_model="nano", prompt="x [sim:delay=0.2]"))
        assert time.monotonic() - started >= 0.2
        with pytest.raises(UpstreamError) as caught:
            await adapter.generate(ImageRequest(upstream_model="nano", prompt="x [sim:hang]"))
        assert caught.value.kind == "timeout"
    finally:
        await adapter.close()
    await asyncio.sleep(0.1)  # the sandbox notices the client left


def test_thinking_level_only_on_gemini_3_onwards() -> None:
    level = generate(generationConfig={"thinkingConfig": {"thinkingLevel": "minimal"}})
    assert parse(level)
    with pytest.raises(ApiError) as caught:
        gemini.parse_request("gemini-2.5-flash", level, False)
    assert caught.value.status == 400 and "Thinking level" in caught.value.message
    budget = generate(generationConfig={"thinkingConfig": {"thinkingBudget": 0}})
    assert gemini.parse_request("gemini-2.5-flash", budget, False)
