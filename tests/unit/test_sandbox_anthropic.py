"""The sandbox's Anthropic Messages protocol: pure rules, raw HTTP, and our adapter end to end.

The app is create_app() plus anthropic_server.register(), served in-process on this
test's event loop (aiohttp's TestServer on loopback).
"""

from __future__ import annotations

import base64
import dataclasses
import math
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from sandbox import anthropic, anthropic_server, openai_chat, png
from sandbox.errors import ApiError
from sandbox.server import REQUEST_LOG, ROUTE_HEADER, create_app
from services.common.canonical_chat import from_chat_body
from services.providers.adapters.anthropic_messages import AnthropicMessagesAdapter
from services.providers.adapters.openai_chat_translate import ChunkTranslator, Identity
from services.providers.errors import UpstreamError
from services.providers.routes import Provider, Route
from tests.unit.canonical_answers import chunk_json, completion_json

KEY = "sk-sandbox"
HEADERS = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
MODEL = "claude-sandbox"
PNG_B64 = base64.b64encode(png.render(4, 4, "x")).decode()
TOOL: dict[str, Any] = {
    "name": "get_weather",
    "description": "Current weather",
    "input_schema": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer", "minimum": 2},
        },
        "required": ["city"],
    },
}
TOOL_ARGS = {"city": "sample", "unit": "celsius", "days": 2}


def body(text: str = "Say hello", **extra: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }


def tool_loop(thinking_first: bool = False) -> list[dict[str, Any]]:
    assistant: list[dict[str, Any]] = [
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}
    ]
    if thinking_first:
        assistant.insert(0, {"type": "thinking", "thinking": "hmm", "signature": "c2ln"})
    return [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": assistant},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "22C"}],
        },
    ]


def plan(payload: dict[str, Any]) -> openai_chat.Plan:
    return openai_chat.plan_answer(anthropic.parse_request(payload))


def events(frames: list[bytes]) -> list[tuple[str, Any]]:
    """Strictly `event: NAME\\ndata: JSON\\n\\n` frames."""
    out = []
    for frame in frames:
        head, data = frame.split(b"\n", 1)
        assert head.startswith(b"event: ") and data.startswith(b"data: ") and data.endswith(b"\n\n")
        payload = orjson.loads(data[len(b"data: ") : -2])
        name = head[len(b"event: ") :].decode()
        assert payload["type"] == name
        out.append((name, payload))
    return out


# --- validation --------------------------------------------------------------------------


def bad(payload: dict[str, Any]) -> str:
    with pytest.raises(ApiError) as caught:
        anthropic.parse_request(payload)
    assert caught.value.status == 400
    return caught.value.message


def with_messages(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 64, "messages": list(messages), **extra}


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def assistant(content: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": content}


def image(media_type: str, data: str) -> dict[str, Any]:
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}


THINKING = {"type": "enabled", "budget_tokens": 1024}


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"messages": [user("hi")], "max_tokens": 5}, "model: Field required"),
        ({"model": MODEL, "messages": [user("hi")]}, "max_tokens: Field required"),
        (body(max_tokens=0), "max_tokens: Input should be greater than or equal to 1"),
        (body(max_tokens=True), "max_tokens: Input should be a valid integer"),
        (body(n=1), "n: Extra inputs are not permitted"),
        (body(stream_options={}), "stream_options: Extra inputs are not permitted"),
        (with_messages(), "messages: at least one message is required"),
        (with_messages(assistant("hi")), 'first message must use the "user" role'),
        (with_messages(user("a"), user("b")), 'found multiple "user" roles in a row'),
        (
            with_messages({"role": "system", "content": "x"}),
            "messages.0.role: Input should be 'user' or 'assistant'",
        ),
        (
            with_messages(user("a"), {"role": "tool", "content": "x", "tool_call_id": "t"}),
            "messages.1",
        ),
        (
            with_messages(user("a"), {**assistant(None), "tool_calls": []}),
            "messages.1.tool_calls: Extra inputs",
        ),
        (
            with_messages({**user("a"), "name": "bob"}),
            "messages.0.name: Extra inputs are not permitted",
        ),
        (with_messages(user("")), "all messages must have non-empty content"),
        (with_messages(user([])), "all messages must have non-empty content"),
        (with_messages(user("   ")), "must contain non-whitespace text"),
        (
            with_messages(user([{"type": "text", "text": ""}])),
            "text content blocks must be non-empty",
        ),
        (
            with_messages(user([{"type": "image_url", "image_url": {"url": "x"}}])),
            "Input tag 'image_url'",
        ),
        (with_messages(user([{"text": "no type"}])), "messages.0.content.0.type: Field required"),
        (
            with_messages(user([{"type": "text", "text": "a", "extra": 1}])),
            "content.0.extra: Extra inputs",
        ),
        (with_messages(user([image("image/bmp", PNG_B64)])), "source.media_type"),
        (
            with_messages(user([image("image/jpeg", PNG_B64)])),
            "does not match the provided media type image/jpeg",
        ),
        (with_messages(user([image("image/png", "not base64!")])), "not valid base64"),
        (
            with_messages(user([{"type": "image", "source": {"type": "url", "url": "ftp://x"}}])),
            "source.url",
        ),
        (
            with_messages(
                user("a"), assistant([{"type": "tool_use", "id": "t.1", "name": "f", "input": {}}])
            ),
            ".id",
        ),
        (
            with_messages(
                user("a"), assistant([{"type": "tool_use", "id": "t1", "name": "f", "input": "{}"}])
            ),
            ".input",
        ),
        (
            with_messages(
                user("a"),
                assistant([{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]),
                user("b"),
            ),
            "`tool_use` ids were found without `tool_result` blocks immediately after: t1",
        ),
        (
            with_messages(
                user("a"), assistant([{"type": "tool_use", "id": "t1", "name": "f", "input": {}}])
            ),
            "`tool_use` ids were found without `tool_result` blocks",
        ),
        (
            with_messages(user([{"type": "tool_result", "tool_use_id": "t9"}])),
            "unexpected `tool_use_id` found in `tool_result` blocks: t9",
        ),
        (
            with_messages(
                user("a"),
                assistant([{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]),
                user([{"type": "text", "text": "b"}, {"type": "tool_result", "tool_use_id": "t1"}]),
            ),
            "tool_result blocks must come first",
        ),
        (
            with_messages(user("a"), assistant("b ")),
            "final assistant content cannot end with trailing whitespace",
        ),
        (
            body(system=[{"type": "text", "text": ""}]),
            "system.0: text content blocks must be non-empty",
        ),
        (body(system={"text": "x"}), "system: Input should be"),
        (
            body(metadata={"user_id": "u", "tags": []}),
            "metadata.tags: Extra inputs are not permitted",
        ),
        (body(metadata={"user_id": "u" * 257}), "metadata.user_id"),
        (body(stop_sequences="END"), "stop_sequences"),
        (body(stream="yes"), "stream: Input should be a valid boolean"),
        (body(temperature=1.5), "temperature: Input should be less than or equal to 1"),
        (body(top_p=-0.1), "top_p: Input should be greater than or equal to 0"),
        (body(temperature=0.5, top_p=0.9), "cannot both be specified"),
        (body(tools=[{"type": "function", "function": {"name": "f"}}]), "tools.0.type"),
        (body(tools=[{"name": "f", "parameters": {}}]), "tools.0.input_schema: Field required"),
        (
            body(tools=[{"name": "f", "input_schema": {}, "function": {}}]),
            "tools.0.function: Extra inputs",
        ),
        (
            body(tools=[{"name": "f", "input_schema": {"type": "array"}}]),
            "tools.0.input_schema.type",
        ),
        (body(tools=[{"name": "f.g", "input_schema": {"type": "object"}}]), "tools.0.name"),
        (body(tools=[TOOL, TOOL]), "Tool names must be unique"),
        (body(tools=[TOOL], tool_choice="auto"), "tool_choice: Input should be a valid dictionary"),
        (
            body(tools=[TOOL], tool_choice={"type": "required"}),
            "tool_choice.type: Input tag 'required'",
        ),
        (
            body(tool_choice={"type": "any"}),
            "tool_choice may only be specified while providing tools",
        ),
        (body(tools=[TOOL], tool_choice={"type": "tool", "name": "nope"}), "Tool 'nope' not found"),
        (body(tools=[TOOL], tool_choice={"type": "tool"}), "tool_choice.name: Field required"),
        (
            body(tools=[TOOL], tool_choice={"type": "none", "disable_parallel_tool_use": True}),
            "Extra inputs",
        ),
        (
            body(tools=[TOOL], tool_choice={"type": "auto", "disable_parallel_tool_use": 1}),
            "valid boolean",
        ),
        (
            body(thinking={"type": "enabled", "budget_tokens": 512}, max_tokens=4096),
            "greater than or equal to 1024",
        ),
        (
            body(thinking={"type": "enabled"}, max_tokens=4096),
            "thinking.budget_tokens: Field required",
        ),
        (
            body(thinking=THINKING, max_tokens=1024),
            "`max_tokens` must be greater than `thinking.budget_tokens`",
        ),
        (body(thinking={"type": "adaptive"}), '"thinking.type.adaptive" is not supported'),
        (
            body(thinking=THINKING, max_tokens=4096, temperature=0.5),
            "`temperature` may only be set to 1",
        ),
        (body(thinking=THINKING, max_tokens=4096, top_k=5), "`top_k` must be unset"),
        (
            body(thinking=THINKING, max_tokens=4096, top_p=0.5),
            "`top_p` must be greater than or equal to 0.95",
        ),
        (
            body(thinking=THINKING, max_tokens=4096, tools=[TOOL], tool_choice={"type": "any"}),
            "tool_choice forces tool use",
        ),
        (
            with_messages(user("a"), assistant("Well,"), thinking=THINKING, max_tokens=4096),
            "prefill) is not supported with thinking",
        ),
        (
            with_messages(*tool_loop(), thinking=THINKING, max_tokens=4096, tools=[TOOL]),
            "messages.1.content.0.type: Expected `thinking` or `redacted_thinking`, but found"
            " `tool_use`",
        ),
        (
            body("[sim:tokens=many]"),
            "sandbox: directive [sim:tokens=many] needs a non-negative integer",
        ),
        (body("[sim:hang]"), "is not supported by this endpoint"),
    ],
)
def test_invalid_requests(payload: dict[str, Any], message: str) -> None:
    assert message in bad(payload)


def test_a_full_valid_request() -> None:
    look = [
        {"type": "text", "text": "Look", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
        image("image/png", PNG_B64),
    ]
    payload = with_messages(
        user(look),
        assistant("It is an image."),
        *tool_loop(thinking_first=True),
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        metadata={"user_id": "u-1"},
        stop_sequences=["END"],
        stream=True,
        top_p=0.97,
        tools=[TOOL, {"name": "ping", "input_schema": {"type": "object"}, "type": "custom"}],
        tool_choice={"type": "auto", "disable_parallel_tool_use": True},
        thinking=THINKING,
        max_tokens=4096,
        service_tier="auto",
    )
    request = anthropic.parse_request(payload)
    assert request.stream and request.max_tokens == 4096 and request.n == 1
    assert request.tool_choice == "auto" and not request.parallel_tool_calls
    assert [t.name for t in request.tools] == ["get_weather", "ping"]
    # The planner sees OpenAI messages: the system prompt first, tool results as tool messages.
    assert [m["role"] for m in request.messages] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
        "tool",
    ]
    assert request.messages[4]["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": "{}",
    }
    assert request.seed_text == "Weather?"


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (None, ("auto", None)),
        ({"type": "auto"}, ("auto", None)),
        ({"type": "none"}, ("none", None)),
        ({"type": "any"}, ("required", None)),
        ({"type": "tool", "name": "get_weather"}, ("function", "get_weather")),
    ],
)
def test_tool_choice_in_the_planners_terms(choice: Any, expected: tuple[str, str | None]) -> None:
    extra = {"tools": [TOOL]} if choice is None else {"tools": [TOOL], "tool_choice": choice}
    request = anthropic.parse_request(body(**extra))
    assert (request.tool_choice, request.forced_tool) == expected
    assert request.parallel_tool_calls


def test_directives_come_from_the_last_user_text() -> None:
    messages = tool_loop()
    messages[0]["content"] = "Weather? [sim:tokens=3] [sim:cached=2]"
    request = anthropic.parse_request(with_messages(*messages, tools=[TOOL]))
    assert request.directives.tokens == 3 and request.directives.cached == 2
    assert request.seed_text == "Weather?"


# --- answers -----------------------------------------------------------------------------


def test_text_answer_body() -> None:
    answer = plan(body("Say hello [sim:cached=3]"))
    out = anthropic.message_body(answer, "msg_sbx1")
    assert list(out) == [
        "id",
        "type",
        "role",
        "model",
        "content",
        "stop_reason",
        "stop_sequence",
        "usage",
    ]
    assert out["id"] == "msg_sbx1" and out["type"] == "message" and out["role"] == "assistant"
    assert (
        out["model"] == MODEL and out["stop_reason"] == "end_turn" and out["stop_sequence"] is None
    )
    (block,) = out["content"]
    assert block["type"] == "text" and len(block["text"].split(" ")) == openai_chat.DEFAULT_WORDS
    prompt = math.ceil(len("Say hello [sim:cached=3]") / 4) + 4
    assert out["usage"] == {
        "input_tokens": prompt - 3,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 3,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
        "output_tokens": openai_chat.DEFAULT_WORDS,
        "service_tier": "standard",
    }


def test_cache_writes_are_reported_apart_and_bounded_by_the_uncached_prompt() -> None:
    text = "Say hello [sim:cached=3] [sim:cache-write=5]"
    usage = anthropic.message_body(plan(body(text)), "m")["usage"]
    prompt = math.ceil(len(text) / 4) + 4
    assert usage["cache_read_input_tokens"] == 3
    assert usage["cache_creation_input_tokens"] == 5
    assert usage["cache_creation"]["ephemeral_5m_input_tokens"] == 5
    assert usage["input_tokens"] == prompt - 3 - 5
    greedy = anthropic.message_body(plan(body("Hi [sim:cached=2] [sim:cache-write=9999]")), "m")
    assert greedy["usage"]["input_tokens"] == 0
    assert (
        greedy["usage"]["cache_creation_input_tokens"] + 2
        == math.ceil(len("Hi [sim:cached=2] [sim:cache-write=9999]") / 4) + 4
    )


def test_same_words_as_the_openai_sandbox() -> None:
    mine = anthropic.message_body(plan(body("Tell me [sim:tokens=7]")), "m")["content"][0]["text"]
    openai = openai_chat.plan_answer(
        openai_chat.parse_request(
            {"model": MODEL, "messages": [{"role": "user", "content": "Tell me [sim:tokens=7]"}]}
        )
    )
    assert mine == openai.choices[0].content


def test_reasoning_and_max_tokens() -> None:
    out = anthropic.message_body(
        plan(body("Hi [sim:reasoning=4] [sim:tokens=10]", max_tokens=8)), "m"
    )
    thinking, answer = out["content"]
    assert (
        thinking["type"] == "thinking"
        and thinking["thinking"]
        and base64.b64decode(thinking["signature"])
    )
    assert len(answer["text"].split(" ")) == 4  # 8 tokens, 4 of them thinking
    assert out["stop_reason"] == "max_tokens" and out["usage"]["output_tokens"] == 8


def test_tool_use_answer() -> None:
    out = anthropic.message_body(plan(body("Weather?", tools=[TOOL])), "m")
    (block,) = out["content"]
    assert (
        block["type"] == "tool_use" and block["id"].startswith("toolu_") and len(block["id"]) == 30
    )
    assert block["name"] == "get_weather" and block["input"] == TOOL_ARGS
    assert out["stop_reason"] == "tool_use"
    # Answering the tool result ends the loop with text.
    messages = [
        user("Weather?"),
        assistant([block]),
        user([{"type": "tool_result", "tool_use_id": block["id"], "content": "22C"}]),
    ]
    follow = anthropic.message_body(plan(with_messages(*messages, tools=[TOOL])), "m")
    assert follow["content"][0]["type"] == "text" and follow["stop_reason"] == "end_turn"


def test_parallel_and_forced_tools() -> None:
    ping = {"name": "ping", "input_schema": {"type": "object"}}
    both = anthropic.message_body(plan(body("[sim:parallel]", tools=[TOOL, ping])), "m")["content"]
    assert [b["name"] for b in both] == ["get_weather", "ping"]
    single = plan(
        body(
            "[sim:parallel]",
            tools=[TOOL, ping],
            tool_choice={"type": "auto", "disable_parallel_tool_use": True},
        )
    )
    assert len(single.choices[0].tool_calls) == 1
    forced = anthropic.message_body(
        plan(body("hi", tools=[TOOL, ping], tool_choice={"type": "tool", "name": "ping"})), "m"
    )
    assert [b["name"] for b in forced["content"]] == ["ping"]
    assert (
        anthropic.message_body(plan(body("hi", tools=[TOOL], tool_choice={"type": "none"})), "m")[
            "stop_reason"
        ]
        == "end_turn"
    )


def test_stream_events_in_documented_order() -> None:
    answer = plan(body("Hi [sim:reasoning=3] [sim:tokens=4]"))
    got = events(anthropic.stream_frames(answer, "msg_sbx1"))
    names = [name for name, _ in got]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]
    start = got[0][1]["message"]
    assert (
        start["content"] == []
        and start["stop_reason"] is None
        and start["usage"]["output_tokens"] == 1
    )
    whole = anthropic.message_body(answer, "msg_sbx1")
    thinking = "".join(
        p["delta"].get("thinking", "")
        for n, p in got
        if p.get("index") == 0 and n == "content_block_delta"
    )
    text = "".join(
        p["delta"].get("text", "")
        for n, p in got
        if p.get("index") == 1 and n == "content_block_delta"
    )
    assert thinking == whole["content"][0]["thinking"] and text == whole["content"][1]["text"]
    signature = [
        p["delta"]["signature"]
        for _, p in got
        if p.get("delta", {}).get("type") == "signature_delta"
    ]
    assert signature == [whole["content"][0]["signature"]]
    assert got[-2][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": 7},
    }


def test_stream_tool_input_in_fragments() -> None:
    got = events(anthropic.stream_frames(plan(body("Weather?", tools=[TOOL])), "m"))
    starts = [p["content_block"] for n, p in got if n == "content_block_start"]
    assert starts[0]["type"] == "tool_use" and starts[0]["input"] == {}
    pieces = [p["delta"]["partial_json"] for n, p in got if n == "content_block_delta"]
    assert pieces[0] == "" and len(pieces) == 4
    assert orjson.loads("".join(pieces)) == TOOL_ARGS


def test_fail_after_ends_the_stream_with_an_error_event() -> None:
    got = events(anthropic.stream_frames(plan(body("Hi [sim:fail-after=2]")), "m"))
    text_deltas = [p for n, p in got if n == "content_block_delta"]
    assert len(text_deltas) == 2
    assert got[-1] == ("error", anthropic.MID_STREAM_ERROR)
    assert "message_stop" not in [n for n, _ in got]
    late = events(anthropic.stream_frames(plan(body("Hi [sim:fail-after=99] [sim:tokens=2]")), "m"))
    assert [n for n, _ in late][-2:] == ["content_block_stop", "error"]


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (405, "invalid_request_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (503, "api_error"),
        (529, "overloaded_error"),
    ],
)
def test_error_body(status: int, kind: str) -> None:
    out = anthropic.error_body(ApiError(status, "boom"))
    assert out["type"] == "error" and out["error"] == {"type": kind, "message": "boom"}
    assert out["request_id"].startswith("req_sbx")


def test_auth_and_headers() -> None:
    assert anthropic.auth_error(KEY, KEY) is None
    for key, message in [
        (None, "x-api-key header is required"),
        (" ", "x-api-key header is required"),
        ("sk-other", "invalid x-api-key"),
    ]:
        err = anthropic.auth_error(key, KEY)
        assert err is not None and err.status == 401 and err.message == message
    anthropic.check_headers("2023-06-01", "application/json")
    for version, content_type, message in [
        (None, "application/json", "anthropic-version: header is required"),
        ("2024-13-01", "application/json", "is not a valid version"),
        ("2023-06-01", "text/plain", "content-type"),
    ]:
        with pytest.raises(ApiError) as caught:
            anthropic.check_headers(version, content_type)
        assert message in caught.value.message


# --- over HTTP ---------------------------------------------------------------------------


@dataclasses.dataclass
class Sandbox:
    app: web.Application
    url: str


@pytest.fixture(scope="module")
async def sandbox() -> AsyncIterator[Sandbox]:
    app = create_app(KEY)
    anthropic_server.register(app)
    anthropic_server.register(app)  # idempotent: create_app may already have done it
    server = TestServer(app)
    await server.start_server()
    try:
        yield Sandbox(app, str(server.make_url("")).rstrip("/"))
    finally:
        await server.close()


@pytest.fixture
async def http(sandbox: Sandbox) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sandbox.url, headers=HEADERS, timeout=10) as client:
        yield client


async def test_http_answer(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/messages", json=body())
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    out = response.json()
    assert out["id"].startswith("msg_sbx") and out["content"][0]["type"] == "text"


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"anthropic-version": "2023-06-01"}, "x-api-key header is required"),
        (
            {"anthropic-version": "2023-06-01", "Authorization": f"Bearer {KEY}"},
            "x-api-key header is required",
        ),
        ({"anthropic-version": "2023-06-01", "x-api-key": "sk-wrong"}, "invalid x-api-key"),
    ],
)
async def test_http_auth(sandbox: Sandbox, headers: dict[str, str], message: str) -> None:
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        response = await client.post("/v1/messages", content=b"{broken", headers=headers)
    assert response.status_code == 401
    assert response.json()["type"] == "error"
    assert response.json()["error"] == {"type": "authentication_error", "message": message}


async def test_http_needs_version_and_json(sandbox: Sandbox) -> None:
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        response = await client.post("/v1/messages", json=body(), headers={"x-api-key": KEY})
        assert response.status_code == 400
        assert response.json()["error"] == {
            "type": "invalid_request_error",
            "message": "anthropic-version: header is required",
        }
        response = await client.post(
            "/v1/messages",
            content=orjson.dumps(body()),
            headers={**HEADERS, "content-type": "text/plain"},
        )
        assert response.status_code == 400


@pytest.mark.parametrize(
    ("text", "status", "kind"),
    [
        ("[sim:fail]", 500, "api_error"),
        ("[sim:status=529]", 529, "overloaded_error"),
        ("[sim:status=429]", 429, "rate_limit_error"),
        ("[sim:status=400]", 400, "invalid_request_error"),
    ],
)
async def test_http_simulated_errors_in_anthropic_shape(
    http: httpx.AsyncClient, text: str, status: int, kind: str
) -> None:
    response = await http.post("/v1/messages", json=body(text))
    assert response.status_code == status
    assert response.json()["error"]["type"] == kind


async def test_http_other_errors_in_anthropic_shape(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/messages", json=body(n=2))
    assert response.status_code == 400
    assert response.json()["error"] == {
        "type": "invalid_request_error",
        "message": "n: Extra inputs are not permitted",
    }
    response = await http.get("/v1/messages")
    assert response.status_code == 405 and response.json()["type"] == "error"
    response = await http.post(
        "/v1/messages", json=body("[sim:fail-route=primary]"), headers={ROUTE_HEADER: "primary"}
    )
    assert response.status_code == 503 and response.json()["error"]["type"] == "api_error"
    # Other paths keep OpenAI's shape.
    assert "type" not in (await http.post("/v1/nothing", json={})).json()


async def test_http_request_log(sandbox: Sandbox, http: httpx.AsyncClient) -> None:
    sandbox.app[REQUEST_LOG].clear()
    payload = with_messages(user([{"type": "text", "text": "What?"}, image("image/png", PNG_B64)]))
    assert (await http.post("/v1/messages", json=payload)).status_code == 200
    (entry,) = sandbox.app[REQUEST_LOG]
    assert entry["path"] == "/v1/messages"
    assert entry["x-api-key"] == KEY and entry["anthropic-version"] == "2023-06-01"
    assert entry["authorization"] is None
    logged_image = entry["body"]["messages"][0]["content"][1]["source"]
    assert logged_image == {
        "type": "base64",
        "media_type": "image/png",
        "data": f"<{len(PNG_B64)} base64 characters>",
    }
    sandbox.app[REQUEST_LOG].clear()


async def test_http_stream(http: httpx.AsyncClient) -> None:
    async with http.stream(
        "POST", "/v1/messages", json=body("Hi [sim:tokens=3]", stream=True)
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = await response.aread()
    frames = [frame + b"\n\n" for frame in raw.split(b"\n\n") if frame]
    names = [name for name, _ in events(frames)]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * 3,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


# --- our adapter against the sandbox -----------------------------------------------------

ROUTE = Route(model="claude-sonnet-4-6", provider="sandbox-anthropic", upstream_model=MODEL)
IDENTITY = Identity("chatcmpl-aiport0001", "claude-sonnet-4-6", 1767225600)


@pytest.fixture
async def adapter(sandbox: Sandbox) -> AsyncIterator[AnthropicMessagesAdapter]:
    provider = Provider(
        name="sandbox-anthropic",
        protocol="anthropic-messages",
        base_url=f"{sandbox.url}/v1",
        api_key=KEY,
        connect_timeout_seconds=2,
        read_timeout_seconds=10,
        max_connections=8,
        max_tokens_field="max_tokens",
    )
    client = AnthropicMessagesAdapter(provider)
    try:
        yield client
    finally:
        await client.close()


def ask(text: str, **params: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], "max_tokens": 64, **params}


async def complete(adapter: AnthropicMessagesAdapter, request: dict[str, Any]) -> dict[str, Any]:
    completion, usage = await adapter.complete(ROUTE, from_chat_body(request), IDENTITY, "req-1")
    return completion_json(completion, usage)


async def stream(
    adapter: AnthropicMessagesAdapter, request: dict[str, Any], received: list[Any] | None = None
) -> tuple[list[Any], ChunkTranslator]:
    translator = ChunkTranslator(IDENTITY, prompt_chars=10)
    out = received if received is not None else []
    async for chunk in adapter.stream(
        ROUTE, from_chat_body(request), IDENTITY, "req-1", translator
    ):
        out.append(chunk_json(chunk))
    return out, translator


WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": TOOL["input_schema"]},
}


async def test_e2e_plain_and_streamed_agree(
    adapter: AnthropicMessagesAdapter, http: httpx.AsyncClient
) -> None:
    request = ask(
        "Say hello",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hello"},
        ],
    )
    whole = await complete(adapter, request)
    chunks, translator = await stream(adapter, request)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == whole["choices"][0]["message"]["content"]
    assert (
        chunks[-1]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"] == "stop"
    )
    held, usage = translator.finish()
    assert held == []
    assert usage.to_public() == whole["usage"]
    # The very answer the OpenAI sandbox gives the same prompt.
    openai = await http.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": request["messages"]},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert openai.json()["choices"][0]["message"]["content"] == text
    assert openai.json()["usage"]["prompt_tokens"] == usage.prompt_tokens


@pytest.mark.parametrize("streamed", [False, True], ids=["complete", "stream"])
async def test_e2e_tool_call_round_trip(adapter: AnthropicMessagesAdapter, streamed: bool) -> None:
    request = ask("Weather in Bandung?", tools=[WEATHER], reasoning_effort="low", max_tokens=4096)
    if streamed:
        chunks, _ = await stream(adapter, request)
        deltas = [c["choices"][0]["delta"] for c in chunks]
        calls = [call for d in deltas for call in d.get("tool_calls", [])]
        assert calls[0]["id"].startswith("toolu_") and calls[0]["function"]["arguments"] == ""
        arguments = "".join(c["function"]["arguments"] for c in calls)
        tool_call = {
            "id": calls[0]["id"],
            "type": "function",
            "function": {"name": "get_weather", "arguments": arguments},
        }
        assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    else:
        choice = (await complete(adapter, request))["choices"][0]
        assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
        (tool_call,) = choice["message"]["tool_calls"]
    assert orjson.loads(tool_call["function"]["arguments"]) == TOOL_ARGS
    follow_up = {
        **request,
        "messages": [
            *request["messages"],
            {"role": "assistant", "content": None, "tool_calls": [tool_call]},
            {"role": "tool", "tool_call_id": tool_call["id"], "content": "22C"},
        ],
    }
    # The sandbox refuses thinking here without the signed thinking block: the adapter
    # must have left thinking out of this continuation.
    answer = (await complete(adapter, follow_up))["choices"][0]
    assert answer["finish_reason"] == "stop" and answer["message"]["content"]


async def test_e2e_parallel_tools(adapter: AnthropicMessagesAdapter) -> None:
    ping = {"type": "function", "function": {"name": "ping"}}
    both = (await complete(adapter, ask("[sim:parallel]", tools=[WEATHER, ping])))["choices"][0][
        "message"
    ]
    assert [c["function"]["name"] for c in both["tool_calls"]] == ["get_weather", "ping"]
    one = await complete(
        adapter, ask("[sim:parallel]", tools=[WEATHER, ping], parallel_tool_calls=False)
    )
    assert len(one["choices"][0]["message"]["tool_calls"]) == 1
    forced = await complete(
        adapter,
        ask(
            "hi",
            tools=[WEATHER, ping],
            tool_choice={"type": "function", "function": {"name": "ping"}},
        ),
    )
    assert forced["choices"][0]["message"]["tool_calls"][0]["function"] == {
        "name": "ping",
        "arguments": "{}",
    }


async def test_e2e_directives(adapter: AnthropicMessagesAdapter) -> None:
    out = await complete(adapter, ask("Hi [sim:tokens=5] [sim:cached=3] [sim:reasoning=2]"))
    message = out["choices"][0]["message"]
    assert len(message["content"].split(" ")) == 5 and message["reasoning_content"]
    assert out["usage"]["completion_tokens"] == 7
    assert out["usage"]["prompt_tokens_details"] == {"cached_tokens": 3}
    short = await complete(adapter, ask("Hi [sim:tokens=10]", max_tokens=3))
    assert short["choices"][0]["finish_reason"] == "length"


async def test_e2e_echo_shows_what_the_adapter_sent(adapter: AnthropicMessagesAdapter) -> None:
    request = ask(
        "[sim:echo]",
        messages=[
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": "[sim:echo]"},
        ],
        temperature=1.8,
        stop="END",
        user="u-42",
        seed=1,
        reasoning_effort="medium",
        max_tokens=4096,
    )
    echoed = orjson.loads((await complete(adapter, request))["choices"][0]["message"]["content"])
    assert echoed == {
        "model": MODEL,
        "max_tokens": 4096,
        "system": [{"type": "text", "text": "Be brief."}],
        "stop_sequences": ["END"],
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "metadata": {"user_id": "u-42"},
    }


async def test_e2e_images(adapter: AnthropicMessagesAdapter) -> None:
    def with_image(url: str) -> dict[str, Any]:
        return ask(
            "x",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What?"},
                        {"type": "image_url", "image_url": {"url": url}},
                    ],
                }
            ],
        )

    assert (await complete(adapter, with_image(f"data:image/png;base64,{PNG_B64}")))["choices"][0][
        "message"
    ]["content"]
    with pytest.raises(UpstreamError) as caught:
        await complete(adapter, with_image(f"data:image/jpeg;base64,{PNG_B64}"))
    assert caught.value.kind == "rejected"
    assert "does not match the provided media type image/jpeg" in caught.value.message


@pytest.mark.parametrize(
    ("text", "kind", "message"),
    [
        ("[sim:fail]", "failed", "upstream answered HTTP 500"),
        ("[sim:status=529]", "failed", "upstream answered HTTP 529"),
        (
            "[sim:status=400]",
            "rejected",
            "The upstream rejected the request: sandbox: simulated HTTP 400",
        ),
    ],
)
@pytest.mark.parametrize("streamed", [False, True], ids=["complete", "stream"])
async def test_e2e_failures(
    adapter: AnthropicMessagesAdapter, text: str, kind: str, message: str, streamed: bool
) -> None:
    with pytest.raises(UpstreamError) as caught:
        if streamed:
            await stream(adapter, ask(text))
        else:
            await complete(adapter, ask(text))
    assert (caught.value.kind, caught.value.message) == (kind, message)


async def test_e2e_failure_mid_stream(adapter: AnthropicMessagesAdapter) -> None:
    received: list[Any] = []
    with pytest.raises(UpstreamError) as caught:
        await stream(adapter, ask("Hi [sim:fail-after=2] [sim:chunk-delay=0.001]"), received)
    assert caught.value.kind == "failed"
    assert caught.value.message == "upstream stream error: sandbox: simulated failure mid-stream"
    # The role chunk, then exactly the two words sent before the error event.
    deltas = [c["choices"][0]["delta"] for c in received]
    assert deltas[0] == {"role": "assistant"}
    assert [list(d) for d in deltas[1:]] == [["content"], ["content"]]
    assert all(c["choices"][0]["finish_reason"] is None for c in received)


async def test_e2e_wrong_key_is_a_failure(sandbox: Sandbox) -> None:
    provider = Provider(
        name="s",
        protocol="anthropic-messages",
        base_url=f"{sandbox.url}/v1",
        api_key="sk-wrong-key-0123456789",
        connect_timeout_seconds=2,
        read_timeout_seconds=10,
        max_connections=2,
        max_tokens_field="max_tokens",
    )
    client = AnthropicMessagesAdapter(provider)
    try:
        with pytest.raises(UpstreamError) as caught:
            await client.complete(ROUTE, from_chat_body(ask("hi")), IDENTITY, "req-1")
    finally:
        await client.close()
    assert (caught.value.kind, caught.value.message) == ("failed", "upstream answered HTTP 401")


def test_register_adds_one_route() -> None:
    app = create_app(KEY)
    anthropic_server.register(app)
    anthropic_server.register(app)
    routes = [
        r
        for r in app.router.routes()
        if r.resource is not None and r.resource.canonical == "/v1/messages"
    ]
    assert [r.method for r in routes] == ["POST"]


# --- per-model rules (model_rules) -------------------------------------------------------


def test_adaptive_only_opus_refuses_budget_thinking_and_sampling() -> None:
    opus = {"model": "claude-opus-4-8", "max_tokens": 4096}
    enabled = {**body("Hi"), **opus, "thinking": {"type": "enabled", "budget_tokens": 1024}}
    assert '"thinking.type.enabled" is not supported' in bad(enabled)
    assert "`temperature` is deprecated" in bad({**body("Hi"), **opus, "temperature": 0.5})
    assert "`top_p` is deprecated" in bad({**body("Hi"), **opus, "top_p": 0.5})
    adaptive = {
        **body("Hi [sim:reasoning=3]"),
        **opus,
        "thinking": {"type": "adaptive"},
        "output_config": {"effort": "high"},
    }
    assert plan(adaptive).usage.reasoning_tokens == 3
    assert "output_config.effort" in bad({**adaptive, "output_config": {"effort": "huge"}})
    # Adaptive thinking obeys the thinking rules too (no forced tool use, tool loops).
    looped = with_messages(*tool_loop(), **opus, tools=[TOOL], thinking={"type": "adaptive"})
    assert "must start with a thinking block" in bad(looped)


def test_budget_only_models_refuse_adaptive_thinking() -> None:
    haiku = {**body("Hi"), "model": "claude-haiku-4-5", "thinking": {"type": "adaptive"}}
    assert '"thinking.type.adaptive" is not supported' in bad(haiku)
    effort = {**body("Hi"), "model": "claude-haiku-4-5", "output_config": {"effort": "low"}}
    assert "effort" in bad(effort)
    sonnet = {**body("Hi"), "model": "claude-sonnet-4-6", "thinking": {"type": "adaptive"}}
    assert plan(sonnet).choices
