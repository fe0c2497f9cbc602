"""OpenAI-compatible text completions through the edge, with the official SDK."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

from tests.integration.conftest import Account, NewAccount

MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Write a haiku about Jakarta traffic."}
]
WEATHER_TOOL: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name"},
                "days": {"type": "integer", "minimum": 1},
            },
            "required": ["city"],
        },
    },
}


def test_plain_completion_has_the_openai_shape(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="deepseek-v4-flash", messages=MESSAGES)
    assert reply.id.startswith("chatcmpl-")
    assert reply.object == "chat.completion"
    assert reply.model == "deepseek-v4-flash"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "stop"
    usage = reply.usage
    assert usage is not None
    assert usage.completion_tokens == len(reply.choices[0].message.content.split())
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 0
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 0


def test_raw_json_is_byte_compatible(http: httpx.Client) -> None:
    response = http.post("/v1/chat/completions", json={"messages": MESSAGES})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    # Default model, numbers as numbers, index 0 present, snake_case details.
    assert body["model"] == "deepseek-v4-flash"
    assert isinstance(body["created"], int)
    assert body["choices"][0]["index"] == 0
    assert list(body["usage"]) == [
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "prompt_tokens_details",
        "completion_tokens_details",
        "cost_idr",  # ours: an extra field OpenAI's SDKs keep
    ]
    assert body["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}


def test_text_completions_alias(http: httpx.Client) -> None:
    response = http.post(
        "/v1/text/completions", json={"model": "gpt-5.4-mini", "messages": MESSAGES}
    )
    assert response.status_code == 200
    assert response.json()["model"] == "gpt-5.4-mini"


def test_stream_yields_the_spec_sequence(client: openai.OpenAI) -> None:
    plain = client.chat.completions.create(model="deepseek-v4-flash", messages=MESSAGES)
    chunks = list(
        client.chat.completions.create(model="deepseek-v4-flash", messages=MESSAGES, stream=True)
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    finish = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finish[-1] == "stop" and all(f is None for f in finish[:-1])
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert plain.usage is not None
    assert last.usage.completion_tokens == plain.usage.completion_tokens
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")


def test_logprobs_come_back_as_the_upstream_sent_them(client: openai.OpenAI) -> None:
    # The canonical answer carries them as JSON text, unread: whole and streamed.
    plain = client.chat.completions.create(
        model="deepseek-v4-flash", messages=MESSAGES, logprobs=True, top_logprobs=2
    )
    logprobs = plain.choices[0].logprobs
    assert logprobs is not None and logprobs.content
    assert "".join(t.token for t in logprobs.content) == plain.choices[0].message.content
    assert all(len(t.top_logprobs) == 2 and t.logprob < 0 for t in logprobs.content)
    chunks = list(
        client.chat.completions.create(
            model="deepseek-v4-flash", messages=MESSAGES, logprobs=True, top_logprobs=2, stream=True
        )
    )
    streamed = [
        token
        for c in chunks
        if c.choices and c.choices[0].logprobs is not None
        for token in c.choices[0].logprobs.content or ()
    ]
    assert streamed == logprobs.content


def test_raw_stream_framing(http: httpx.Client) -> None:
    with http.stream(
        "POST",
        "/v1/chat/completions",
        json={"messages": MESSAGES, "stream": True},
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = b"".join(response.iter_raw()).decode()
    events = raw.split("\n\n")
    assert events[-1] == ""
    assert events[-2] == "data: [DONE]"
    assert all(e.startswith("data: ") for e in events[:-1])
    first = json.loads(events[0][len("data: ") :])
    assert first["object"] == "chat.completion.chunk"
    assert first["choices"][0] == {
        "index": 0,
        "delta": {"role": "assistant"},
        "finish_reason": None,
    }
    usage_chunk = json.loads(events[-3][len("data: ") :])
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens_details"] == {"reasoning_tokens": 0}


def test_stream_chunks_arrive_incrementally(http: httpx.Client) -> None:
    # The upstream pauses 0.3 s between its 6 words. A gateway that buffered the
    # answer would deliver every chunk at once; a streaming one spreads them out.
    arrivals: list[float] = []
    with http.stream(
        "POST",
        "/v1/chat/completions",
        json={
            "messages": [{"role": "user", "content": "go [sim:tokens=6] [sim:chunk-delay=0.3]"}],
            "stream": True,
        },
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data: {") and '"content"' in line:
                arrivals.append(time.monotonic())
    assert len(arrivals) == 6
    # Five upstream pauses separate the first word from the last (1.5 s).
    assert arrivals[-1] - arrivals[0] > 1.0


def test_tool_call_round_trip(client: openai.OpenAI, sandbox: httpx.Client) -> None:
    first = client.chat.completions.create(
        model="deepseek-v4-flash",
        messages=[{"role": "user", "content": "What is the weather in Jakarta?"}],
        tools=[WEATHER_TOOL],
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1
    call = calls[0]
    assert call.type == "function"
    assert call.function.name == "get_weather"
    args = json.loads(call.function.arguments)
    assert isinstance(args["city"], str) and args["days"] >= 1

    # The client echoes an id of its own; it must reach the upstream untouched.
    opaque_id = "call_opaque:sig=AbC/123+=="
    sandbox.delete("/_sandbox/requests")
    second = client.chat.completions.create(
        model="deepseek-v4-flash",
        messages=[
            {"role": "user", "content": "What is the weather in Jakarta?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": opaque_id,
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Jakarta"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": opaque_id, "content": '{"temp_c":31}'},
        ],
        tools=[WEATHER_TOOL],
    )
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content
    seen = sandbox.get("/_sandbox/requests").json()
    body = seen[-1]["body"] if "body" in seen[-1] else seen[-1]
    assert body["messages"][1]["tool_calls"][0]["id"] == opaque_id
    assert body["messages"][2]["tool_call_id"] == opaque_id


def test_streamed_tool_call_fragments(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="deepseek-v4-flash",
        messages=[{"role": "user", "content": "Weather in Bandung?"}],
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        stream=True,
    )
    arguments: dict[int, str] = {}
    names: dict[int, str] = {}
    finish = None
    for chunk in stream:
        if not chunk.choices:
            continue
        for fragment in chunk.choices[0].delta.tool_calls or []:
            if fragment.function and fragment.function.name:
                names[fragment.index] = fragment.function.name
            if fragment.function and fragment.function.arguments:
                arguments[fragment.index] = (
                    arguments.get(fragment.index, "") + fragment.function.arguments
                )
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert names == {0: "get_weather"}
    assert json.loads(arguments[0])["city"]


def test_tool_choice_none_answers_in_text(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="deepseek-v4-flash",
        messages=[{"role": "user", "content": "Weather?"}],
        tools=[WEATHER_TOOL],
        tool_choice="none",
    )
    assert reply.choices[0].finish_reason == "stop"
    assert reply.choices[0].message.tool_calls is None


def test_standard_params_forwarded_unknown_dropped(
    http: httpx.Client, sandbox: httpx.Client
) -> None:
    sandbox.delete("/_sandbox/requests")
    response = http.post(
        "/v1/chat/completions",
        json={
            "messages": MESSAGES,
            "top_p": 0.5,
            "stop": ["\n\n"],
            "seed": 7,
            "presence_penalty": 0.1,
            "frequency_penalty": 0.2,
            "n": 2,
            "user": "u-42",
            "response_format": {"type": "json_object"},
            "max_tokens": 10_000_000,
            "made_up_param": {"x": 1},
        },
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["choices"]) == 2
    seen = sandbox.get("/_sandbox/requests").json()[-1]
    body = seen["body"] if "body" in seen else seen
    for key, value in {
        "top_p": 0.5,
        "stop": ["\n\n"],
        "seed": 7,
        "presence_penalty": 0.1,
        "frequency_penalty": 0.2,
        "n": 2,
        "user": "u-42",
        "response_format": {"type": "json_object"},
    }.items():
        assert body[key] == value, key
    assert "made_up_param" not in body
    # Capped by the model's own maximum output.
    assert body["max_tokens"] == 8192


def test_usage_details_cached_and_reasoning(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="deepseek-v4-pro",
        messages=[{"role": "user", "content": "think [sim:reasoning=5] [sim:cached=3]"}],
        reasoning_effort="high",
    )
    usage = reply.usage
    assert usage is not None
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 5
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 3


@pytest.mark.parametrize(
    "model", ["claude-opus-4-8", "gemini-3.1-flash-lite", "kimi-k2.7-code", "glm-5.2-fast"]
)
def test_catalog_text_models_answer(client: openai.OpenAI, model: str) -> None:
    reply = client.chat.completions.create(model=model, messages=MESSAGES)
    assert reply.model == model
    assert reply.choices[0].message.content


def test_each_account_sees_only_itself(
    base_url: str, new_account: NewAccount, account: Account
) -> None:
    other = new_account("5000")
    mine = httpx.get(
        f"{base_url}/v1/balance", headers={"Authorization": f"Bearer {account.api_key}"}
    ).json()
    theirs = httpx.get(
        f"{base_url}/v1/balance", headers={"Authorization": f"Bearer {other.api_key}"}
    ).json()
    assert mine["balance_idr"] == "100000"
    assert theirs["balance_idr"] == "5000"


# --- per-model parameter policy (issue 11, items 9 and 10) ---------------------------------


def last_upstream_body(sandbox: httpx.Client) -> dict[str, object]:
    seen = sandbox.get("/_sandbox/requests").json()[-1]
    body = seen["body"] if "body" in seen else seen
    assert isinstance(body, dict)
    return body


def test_deepseek_thinking_tool_loop_sends_reasoning_content_back(
    client: openai.OpenAI, sandbox: httpx.Client
) -> None:
    question: ChatCompletionMessageParam = {"role": "user", "content": "Weather in Medan?"}
    first = client.chat.completions.create(
        model="deepseek-v4-pro", messages=[question], tools=[WEATHER_TOOL]
    )
    turn = first.choices[0].message.model_dump(exclude_none=True)
    # Thinking mode (DeepSeek's default for a reasoning model): the reasoning comes back.
    assert turn["reasoning_content"] and turn["tool_calls"]
    call_id = turn["tool_calls"][0]["id"]
    sandbox.delete("/_sandbox/requests")
    second = client.chat.completions.create(
        model="deepseek-v4-pro",
        messages=[
            question,
            turn,  # type: ignore[list-item]
            {"role": "tool", "tool_call_id": call_id, "content": '{"temp_c":30}'},
        ],
        tools=[WEATHER_TOOL],
    )
    assert second.choices[0].finish_reason == "stop"
    sent = last_upstream_body(sandbox)["messages"]
    assert isinstance(sent, list) and sent[1]["reasoning_content"] == turn["reasoning_content"]


def test_non_reasoning_model_is_told_not_to_think(
    client: openai.OpenAI, sandbox: httpx.Client
) -> None:
    sandbox.delete("/_sandbox/requests")
    reply = client.chat.completions.create(
        model="deepseek-v4-flash", messages=[{"role": "user", "content": "Hi [sim:reasoning=6]"}]
    )
    assert last_upstream_body(sandbox)["thinking"] == {"type": "disabled"}
    assert reply.usage is not None and reply.usage.completion_tokens_details is not None
    assert reply.usage.completion_tokens_details.reasoning_tokens == 0
    assert getattr(reply.choices[0].message, "reasoning_content", None) is None


def test_opus_reasoning_effort_is_adaptive_thinking_and_temperature_dropped(
    client: openai.OpenAI, sandbox: httpx.Client
) -> None:
    sandbox.delete("/_sandbox/requests")
    reply = client.chat.completions.create(
        model="claude-opus-4-8",
        messages=[{"role": "user", "content": "Think [sim:reasoning=3]"}],
        reasoning_effort="high",
        temperature=0.3,
        top_p=0.8,
    )
    assert reply.choices[0].finish_reason == "stop"
    body = last_upstream_body(sandbox)
    assert body["thinking"] == {"type": "adaptive"}
    assert body["output_config"] == {"effort": "high"}
    assert "temperature" not in body and "top_p" not in body


def test_gpt5_refuses_stop_with_our_own_error(http: httpx.Client, sandbox: httpx.Client) -> None:
    sandbox.delete("/_sandbox/requests")
    response = http.post(
        "/v1/chat/completions",
        json={"model": "gpt-5.4", "messages": MESSAGES, "stop": ["\n"], "temperature": 0.2},
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "stop" and "gpt-5.4" in error["message"]
    assert sandbox.get("/_sandbox/requests").json() == []
    # Without stop the same request goes through; temperature is dropped for this model.
    ok = http.post(
        "/v1/chat/completions",
        json={
            "model": "gpt-5.4",
            "messages": MESSAGES,
            "temperature": 0.2,
            "reasoning_effort": "low",
        },
    )
    assert ok.status_code == 200, ok.text
    body = last_upstream_body(sandbox)
    assert "temperature" not in body and "thinking" not in body
    assert body["reasoning_effort"] == "low"
