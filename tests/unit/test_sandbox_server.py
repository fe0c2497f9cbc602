"""The sandbox over real loopback HTTP: raw httpx, the official openai SDK, and the CLI.

The app runs on its own event loop in a thread, so the synchronous clients here
(httpx.Client, openai.OpenAI) can call it without blocking the server.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from aiohttp import web

from deploy.local.ports import free_port
from sandbox import textgen
from sandbox.server import create_app

KEY = "sk-sandbox"
AUTH = {"Authorization": f"Bearer {KEY}"}
REPO = Path(__file__).resolve().parents[2]


class ThreadedSandbox:
    def __init__(self, chunk_delay: float = 0.0) -> None:
        self.app = create_app(KEY, chunk_delay=chunk_delay)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        self.port = 0

    async def _start(self) -> None:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.port = self.runner.addresses[0][1]

    def __enter__(self) -> str:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with ThreadedSandbox() as url:
        yield url


@pytest.fixture
def http(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, headers=AUTH, timeout=10) as client:
        yield client


@pytest.fixture
def sdk(base_url: str) -> openai.OpenAI:
    # No retries: a retried 429/500 would hide what the sandbox answered.
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=KEY, max_retries=0, timeout=10)


def chat(text: str = "Say hello", **extra: Any) -> dict[str, Any]:
    return {"model": "sandbox-chat", "messages": [{"role": "user", "content": text}], **extra}


def sse_events(response: httpx.Response) -> list[Any]:
    """Parse SSE frames strictly: `data: <json>` lines separated by blank lines."""
    events: list[Any] = []
    for line in response.iter_lines():
        if not line:
            continue
        assert line.startswith("data: "), line
        data = line[len("data: ") :]
        events.append("[DONE]" if data == "[DONE]" else orjson.loads(data))
    return events


WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 2},
            },
            "required": ["city"],
        },
    },
}
WEATHER_ARGS = {"city": "sample", "unit": "celsius", "days": 2}


# --- raw HTTP ---------------------------------------------------------------------------


def test_non_stream_answer_shape(http: httpx.Client) -> None:
    response = http.post("/v1/chat/completions", json=chat())
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert list(body) == [
        "id",
        "object",
        "created",
        "model",
        "system_fingerprint",
        "choices",
        "usage",
    ]
    assert body["id"].startswith("chatcmpl-sbx") and len(body["id"]) > len("chatcmpl-sbx")
    assert body["object"] == "chat.completion"
    assert body["model"] == "sandbox-chat"
    assert abs(body["created"] - time.time()) < 60
    (choice,) = body["choices"]
    assert choice["index"] == 0
    assert choice["logprobs"] is None
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant"
    words = choice["message"]["content"].split(" ")
    assert len(words) == 12 and set(words) <= set(textgen.VOCABULARY)
    prompt = math.ceil(len("Say hello") / 4) + 4
    assert body["usage"] == {
        "prompt_tokens": prompt,
        "completion_tokens": 12,
        "total_tokens": prompt + 12,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    # Deterministic across requests (only id/created differ).
    again = http.post("/v1/chat/completions", json=chat()).json()
    assert again["choices"] == body["choices"] and again["id"] != body["id"]


def test_stream_sequence_ends_with_usage_and_done(http: httpx.Client) -> None:
    expected = http.post("/v1/chat/completions", json=chat()).json()
    payload = chat(stream=True, stream_options={"include_usage": True})
    with http.stream("POST", "/v1/chat/completions", json=payload) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
    assert events[-1] == "[DONE]"
    role, *words, finish, usage = events[:-1]
    assert role["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert len({e["id"] for e in events[:-1]}) == 1
    assert all(e["object"] == "chat.completion.chunk" for e in events[:-1])
    text = "".join(e["choices"][0]["delta"]["content"] for e in words)
    assert text == expected["choices"][0]["message"]["content"]
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert finish["choices"][0]["delta"] == {}
    assert usage["choices"] == []
    assert usage["usage"] == expected["usage"]


def test_stream_without_include_usage(http: httpx.Client) -> None:
    with http.stream("POST", "/v1/chat/completions", json=chat(stream=True)) as response:
        events = sse_events(response)
    assert events[-1] == "[DONE]"
    assert events[-2]["choices"][0]["finish_reason"] == "stop"
    assert not any("usage" in e for e in events[:-1])


def test_tool_call_stream_fragments_concatenate(http: httpx.Client) -> None:
    payload = chat("weather in Paris?", stream=True, tools=[WEATHER_TOOL])
    with http.stream("POST", "/v1/chat/completions", json=payload) as response:
        events = sse_events(response)
    assert events[-1] == "[DONE]"
    first = events[0]["choices"][0]["delta"]
    assert first["role"] == "assistant" and first["content"] is None
    (header,) = first["tool_calls"]
    assert header["index"] == 0 and header["type"] == "function"
    assert header["id"].startswith("call_") and len(header["id"]) == 5 + 24
    assert header["function"] == {"name": "get_weather", "arguments": ""}
    fragments = [e["choices"][0]["delta"]["tool_calls"][0] for e in events[1:-2]]
    assert len(fragments) == 3
    assert all(f["index"] == 0 and list(f["function"]) == ["arguments"] for f in fragments)
    arguments = "".join(f["function"]["arguments"] for f in fragments)
    assert orjson.loads(arguments) == WEATHER_ARGS
    assert events[-2]["choices"][0]["finish_reason"] == "tool_calls"


def test_sim_fail_is_a_500_openai_error(http: httpx.Client) -> None:
    response = http.post("/v1/chat/completions", json=chat("boom [sim:fail]"))
    assert response.status_code == 500
    assert response.json() == {
        "error": {
            "message": "sandbox: simulated upstream failure",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }


def test_sim_status_429(http: httpx.Client) -> None:
    response = http.post("/v1/chat/completions", json=chat("[sim:status=429]"))
    assert response.status_code == 429
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limit_exceeded")


def test_fail_after_drops_the_stream(http: httpx.Client) -> None:
    payload = chat("[sim:fail-after=2]", stream=True)
    lines: list[str] = []
    with (
        pytest.raises(httpx.RemoteProtocolError),
        http.stream("POST", "/v1/chat/completions", json=payload) as response,
    ):
        assert response.status_code == 200
        lines.extend(line for line in response.iter_lines() if line)
    assert "data: [DONE]" not in lines
    events = [orjson.loads(line[len("data: ") :]) for line in lines]
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert len(events) == 3  # role + exactly 2 content chunks, then the cut
    assert all(e["choices"][0]["finish_reason"] is None for e in events)


def test_delay_directive_waits(http: httpx.Client) -> None:
    start = time.monotonic()
    response = http.post("/v1/chat/completions", json=chat("[sim:delay=0.3]"))
    assert response.status_code == 200
    assert time.monotonic() - start >= 0.3


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer sk-wrong"}, {"Authorization": "Basic c2stc2FuZGJveA=="}],
)
def test_bad_or_missing_key_is_401(base_url: str, headers: dict[str, str]) -> None:
    response = httpx.post(f"{base_url}/v1/chat/completions", json=chat(), headers=headers)
    assert response.status_code == 401
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"], error["code"]) == (
        "invalid_request_error",
        None,
        "invalid_api_key",
    )


def test_malformed_json_is_400(http: httpx.Client) -> None:
    response = http.post(
        "/v1/chat/completions",
        content=b'{"model": "x", ',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", None)


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({"model": "m"}, "messages"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        (
            {"model": "m", "messages": [{"role": "tool", "content": "r"}]},
            "messages.[0].tool_call_id",
        ),
    ],
)
def test_invalid_body_is_400_with_param(
    http: httpx.Client, payload: dict[str, Any], param: str
) -> None:
    response = http.post("/v1/chat/completions", json=payload)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_unknown_route_is_an_openai_404(http: httpx.Client) -> None:
    response = http.post("/v1/nothing", json={})
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_request_log_records_bodies_and_key(http: httpx.Client, base_url: str) -> None:
    assert http.delete("/_sandbox/requests").status_code == 204
    payload = chat("[sim:echo]", temperature=0.1, seed=42, user="tester")
    echoed = http.post("/v1/chat/completions", json=payload).json()
    content = echoed["choices"][0]["message"]["content"]
    assert orjson.loads(content) == {
        "model": "sandbox-chat",
        "temperature": 0.1,
        "seed": 42,
        "user": "tester",
    }
    httpx.post(f"{base_url}/v1/chat/completions", json=chat(), headers={"Authorization": "x"})
    log = http.get("/_sandbox/requests").json()
    assert log == [
        {
            "path": "/v1/chat/completions",
            "authorization": f"Bearer {KEY}",
            "route": None,
            "body": payload,
        },
        {"path": "/v1/chat/completions", "authorization": "x", "route": None, "body": chat()},
    ]
    http.delete("/_sandbox/requests")
    assert http.get("/_sandbox/requests").json() == []


def test_models_and_healthz(http: httpx.Client, base_url: str) -> None:
    models = http.get("/v1/models").json()
    assert models["object"] == "list"
    assert "sandbox-chat" in [m["id"] for m in models["data"]]
    assert httpx.get(f"{base_url}/v1/models").status_code == 401
    health = httpx.get(f"{base_url}/healthz")
    assert (health.status_code, health.text) == (200, "ok")


@pytest.mark.parametrize(
    ("server_delay", "directive"), [(0.05, ""), (0.0, "[sim:chunk-delay=0.05]")]
)
def test_frames_arrive_incrementally(server_delay: float, directive: str) -> None:
    delay = 0.05
    payload = chat(f"[sim:tokens=6] {directive}", stream=True)
    with (
        ThreadedSandbox(chunk_delay=server_delay) as url,
        httpx.Client(base_url=url, headers=AUTH, timeout=10) as client,
        client.stream("POST", "/v1/chat/completions", json=payload) as response,
    ):
        arrivals = [time.monotonic() for line in response.iter_lines() if line]
    assert len(arrivals) == 1 + 6 + 1 + 1
    # Paced, not buffered: the frames' arrival times spread over the pacing.
    assert arrivals[-1] - arrivals[0] >= delay * (len(arrivals) - 1) * 0.8
    assert arrivals[1] - arrivals[0] >= delay * 0.5


# --- the official openai SDK ------------------------------------------------------------


def test_sdk_plain_completion(sdk: openai.OpenAI, http: httpx.Client) -> None:
    completion = sdk.chat.completions.create(
        model="sandbox-chat",
        messages=[{"role": "user", "content": "Say hello [sim:reasoning=2][sim:cached=3]"}],
        max_tokens=100,
        temperature=0.5,
    )
    raw = http.post("/v1/chat/completions", json=chat("Say hello")).json()
    assert completion.choices[0].message.content == raw["choices"][0]["message"]["content"]
    assert completion.choices[0].finish_reason == "stop"
    usage = completion.usage
    assert usage is not None
    assert usage.completion_tokens == 14
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 2
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 3
    extra = completion.choices[0].message.model_extra or {}
    assert len(extra["reasoning_content"].split()) > 0


def test_sdk_streamed_completion(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(
        model="sandbox-chat",
        messages=[{"role": "user", "content": "Count [sim:tokens=5]"}],
        stream=True,
        stream_options={"include_usage": True},
        n=2,
    )
    texts = ["", ""]
    finishes: dict[int, str | None] = {}
    usage = None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason is not None:
                finishes[choice.index] = choice.finish_reason
    assert [len(t.split(" ")) for t in texts] == [5, 5]
    assert texts[0] != texts[1]
    assert finishes == {0: "stop", 1: "stop"}
    assert usage is not None and usage.completion_tokens == 10


def test_sdk_tool_round_trip(sdk: openai.OpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    first = sdk.chat.completions.create(
        model="sandbox-chat", messages=messages, tools=[WEATHER_TOOL]
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert orjson.loads(call.function.arguments) == WEATHER_ARGS

    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 21}'})
    second = sdk.chat.completions.create(
        model="sandbox-chat", messages=messages, tools=[WEATHER_TOOL]
    )
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.tool_calls is None
    assert len((second.choices[0].message.content or "").split()) == 12


def test_sdk_streamed_tool_calls(sdk: openai.OpenAI) -> None:
    with sdk.chat.completions.stream(
        model="sandbox-chat",
        messages=[{"role": "user", "content": "Weather? [sim:parallel]"}],
        tools=[WEATHER_TOOL, {"type": "function", "function": {"name": "now"}}],
    ) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_weather", "now"]
    assert [orjson.loads(c.function.arguments) for c in calls] == [WEATHER_ARGS, {}]
    assert final.choices[0].finish_reason == "tool_calls"


def test_sdk_maps_errors(sdk: openai.OpenAI, base_url: str) -> None:
    def ask(text: str) -> None:
        sdk.chat.completions.create(
            model="sandbox-chat", messages=[{"role": "user", "content": text}]
        )

    with pytest.raises(openai.RateLimitError) as limited:
        ask("[sim:status=429]")
    assert limited.value.code == "rate_limit_exceeded"
    with pytest.raises(openai.InternalServerError):
        ask("[sim:fail]")
    with pytest.raises(openai.BadRequestError):
        ask("[sim:status=400]")
    bad_key = openai.OpenAI(base_url=f"{base_url}/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as denied:
        bad_key.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert denied.value.code == "invalid_api_key"


def test_sdk_sees_a_broken_stream(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(
        model="sandbox-chat",
        messages=[{"role": "user", "content": "hi [sim:fail-after=2]"}],
        stream=True,
    )
    received: list[str] = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert len([piece for piece in received if piece]) == 2


# --- the CLI ----------------------------------------------------------------------------


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_cli_serves_env_key_and_stops_on_signal(stop_signal: signal.Signals) -> None:
    port = free_port()
    env = {**os.environ, "AIPORT_SANDBOX_API_KEY": "sk-from-env", "AIPORT_SANDBOX_PORT": str(port)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "--host", "127.0.0.1"],
        cwd=REPO,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while True:
            try:
                httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "sandbox did not start"
                time.sleep(0.05)
        ok = httpx.post(
            f"{url}/v1/chat/completions",
            json=chat(),
            headers={"Authorization": "Bearer sk-from-env"},
        )
        assert ok.status_code == 200
        assert (
            httpx.post(f"{url}/v1/chat/completions", json=chat(), headers=AUTH).status_code == 401
        )
        proc.send_signal(stop_signal)
        _, stderr = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    lines = [orjson.loads(line) for line in stderr.splitlines()]
    requests = [line for line in lines if line["msg"] == "request"]
    assert [(r["path"], r["status"]) for r in requests] == [
        ("/healthz", 200),
        ("/v1/chat/completions", 200),
        ("/v1/chat/completions", 401),
    ]
    assert lines[-1]["msg"] == "stopped"
