"""Pure logic of the sandbox upstream: directives, token rules, tool arguments, SSE frames."""

from __future__ import annotations

import math
import re
from typing import Any

import orjson
import pytest

from sandbox import directives, openai_chat, textgen, toolargs
from sandbox.errors import ApiError, openai_error_body


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def body(text: str = "Say hello", **extra: Any) -> dict[str, Any]:
    return {"model": "sandbox-chat", "messages": [user(text)], **extra}


def answer(payload: dict[str, Any]) -> openai_chat.Plan:
    return openai_chat.plan_answer(openai_chat.parse_request(payload))


def frames(payload: dict[str, Any]) -> tuple[list[Any], bool]:
    """Decoded SSE frames (dicts, then the literal "[DONE]") and the drop flag."""
    raw, drop = openai_chat.stream_frames(answer(payload), "chatcmpl-sbxtest", 1700000000)
    decoded: list[Any] = []
    for frame in raw:
        assert frame.startswith(b"data: ") and frame.endswith(b"\n\n")
        data = frame[len(b"data: ") : -2]
        decoded.append("[DONE]" if data == b"[DONE]" else orjson.loads(data))
    return decoded, drop


# --- directives --------------------------------------------------------------------------


def test_directives_default_to_nothing() -> None:
    assert directives.parse("plain prompt, [not a directive]") == directives.Directives()


def test_directives_combine_anywhere_in_text() -> None:
    got = directives.parse(
        "[sim:tokens=5] a [sim:delay=0.25] b [SIM:Cached=7][sim:reasoning=3][sim:chunk-delay=0.1]"
        " [sim:fail-after=2][sim:status=503] [sim:echo] [sim:parallel] [sim:fail]"
    )
    assert got == directives.Directives(
        fail=True,
        fail_after=2,
        delay=0.25,
        chunk_delay=0.1,
        tokens=5,
        cached=7,
        reasoning=3,
        status=503,
        echo=True,
        parallel=True,
    )


def test_delay_is_capped() -> None:
    assert directives.parse("[sim:delay=9999]").delay == 600.0
    assert directives.parse("[sim:chunk-delay=9999]").chunk_delay == 600.0


@pytest.mark.parametrize(
    "text",
    [
        "[sim:token=3]",  # typo of tokens
        "[sim:tokens=-1]",
        "[sim:tokens=abc]",
        "[sim:tokens]",
        "[sim:tokens=100001]",
        "[sim:delay=nan]",
        "[sim:delay=-1]",
        "[sim:status=200]",
        "[sim:status=600]",
        "[sim:fail=1]",
    ],
)
def test_bad_directive_is_a_400(text: str) -> None:
    with pytest.raises(ApiError) as caught:
        directives.parse(text)
    assert caught.value.status == 400
    assert caught.value.param == "messages"


def test_remove_drops_directives_and_collapses_space() -> None:
    assert directives.remove("  hello [sim:tokens=3]\n world [sim:echo] ") == "hello world"


def test_directive_errors_and_precedence() -> None:
    assert directives.parse("").error(streaming=False) is None
    fail = directives.parse("[sim:fail]").error(streaming=True)
    assert fail is not None
    assert openai_error_body(fail) == {
        "error": {
            "message": "sandbox: simulated upstream failure",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }
    # fail-after breaks a stream midway; without a stream it is a plain failure.
    assert directives.parse("[sim:fail-after=2]").error(streaming=True) is None
    not_streamed = directives.parse("[sim:fail-after=2]").error(streaming=False)
    assert not_streamed is not None and not_streamed.status == 500
    # status wins over fail.
    limited = directives.parse("[sim:fail][sim:status=429]").error(streaming=False)
    assert limited is not None
    assert (limited.status, limited.type, limited.code) == (
        429,
        "rate_limit_error",
        "rate_limit_exceeded",
    )
    for status, kind in [(400, "invalid_request_error"), (503, "server_error")]:
        err = directives.parse(f"[sim:status={status}]").error(streaming=False)
        assert err is not None and (err.status, err.type) == (status, kind)


# --- deterministic words -------------------------------------------------------------------


def test_default_answer_is_twelve_vocabulary_words() -> None:
    plan = answer(body())
    (choice,) = plan.choices
    assert choice.content is not None
    words = choice.content.split(" ")
    assert len(words) == 12
    assert all(word in textgen.VOCABULARY for word in words)
    assert choice.finish_reason == "stop"
    assert plan.usage.completion_tokens == 12
    assert len(set(textgen.VOCABULARY)) == 64


def test_same_input_same_output_and_inputs_matter() -> None:
    first = answer(body("Tell me a story"))
    assert first == answer(body("Tell me a story"))
    assert first.choices[0].content != answer(body("Tell me a joke")).choices[0].content
    other_model = {**body("Tell me a story"), "model": "sandbox-chat-mini"}
    assert first.choices[0].content != answer(other_model).choices[0].content
    # Directives do not change the words, only what they are about.
    with_directive = answer(body("Tell me a story [sim:cached=2]"))
    assert with_directive.choices[0].content == first.choices[0].content


def test_words_come_from_the_last_user_message() -> None:
    convo = {
        "model": "m",
        "messages": [user("first"), {"role": "assistant", "content": "ok"}, user("second")],
    }
    assert answer(convo).choices[0].content == answer(body("second", model="m")).choices[0].content


def test_tokens_directive_sets_visible_length() -> None:
    (three,) = answer(body("x [sim:tokens=3]")).choices
    first, second, third = three.pieces
    assert three.content == f"{first}{second}{third}"
    assert second.startswith(" ") and third.startswith(" ") and not first.startswith(" ")
    assert len((three.content or "").split(" ")) == 3
    empty = answer(body("x [sim:tokens=0]"))
    assert empty.choices[0].content == ""
    assert empty.choices[0].finish_reason == "stop"
    assert empty.usage.completion_tokens == 0


@pytest.mark.parametrize(
    ("text", "cap", "visible", "reasoning", "finish"),
    [
        ("[sim:tokens=10]", 4, 4, 0, "length"),
        ("[sim:tokens=3]", 3, 3, 0, "stop"),
        ("[sim:tokens=3]", 50, 3, 0, "stop"),
        ("[sim:tokens=5][sim:reasoning=3]", 5, 2, 3, "length"),
        ("[sim:tokens=5][sim:reasoning=10]", 4, 0, 4, "length"),
        ("[sim:tokens=2][sim:reasoning=3]", None, 2, 3, "stop"),
    ],
)
@pytest.mark.parametrize("cap_field", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_rule(
    text: str, cap: int | None, visible: int, reasoning: int, finish: str, cap_field: str
) -> None:
    payload = body(f"go {text}", **({cap_field: cap} if cap is not None else {}))
    plan = answer(payload)
    (choice,) = plan.choices
    assert len(choice.pieces) == visible
    assert choice.finish_reason == finish
    assert plan.usage.completion_tokens == visible + reasoning
    usage = plan.usage.to_dict()
    assert usage["completion_tokens_details"] == {"reasoning_tokens": reasoning}
    assert usage["total_tokens"] == usage["prompt_tokens"] + visible + reasoning
    assert (choice.reasoning is not None) == (reasoning > 0)


def test_both_caps_given_the_smaller_wins() -> None:
    plan = answer(body("[sim:tokens=9]", max_tokens=5, max_completion_tokens=7))
    assert plan.usage.completion_tokens == 5


def test_n_choices_have_own_words_and_summed_usage() -> None:
    plan = answer(body("[sim:tokens=4]", n=3))
    assert [c.index for c in plan.choices] == [0, 1, 2]
    contents = [c.content for c in plan.choices]
    assert len(set(contents)) == 3
    assert plan.usage.completion_tokens == 12


def test_cached_tokens_are_capped_by_prompt() -> None:
    plan = answer(body("hi [sim:cached=3]"))
    assert plan.usage.cached_tokens == 3
    plan = answer(body("hi [sim:cached=100000]"))
    assert plan.usage.cached_tokens == plan.usage.prompt_tokens


def test_echo_dumps_the_body_without_messages() -> None:
    payload = body("[sim:echo]", temperature=0.2, seed=7, user="u 1", stop=["x"])
    (choice,) = answer(payload).choices
    assert choice.content is not None
    assert orjson.loads(choice.content) == {
        "model": "sandbox-chat",
        "temperature": 0.2,
        "seed": 7,
        "user": "u 1",
        "stop": ["x"],
    }
    assert choice.completion_tokens == len(choice.content.split())
    assert choice.completion_tokens == 2  # one space inside "u 1"


# --- prompt tokens ------------------------------------------------------------------------


def test_prompt_tokens_formula() -> None:
    tools = [{"type": "function", "function": {"name": "f"}}]
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are terse."},  # 14 chars
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "abc"},
                {"type": "text", "text": "de"},
                {"type": "image_url", "image_url": {"url": "data:..."}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
            ],
        },  # 7 chars
        {"role": "tool", "tool_call_id": "c", "content": "42"},
    ]
    tools_json = len(orjson.dumps(tools))
    expected = (4 + 4) + (2 + 4) + (2 + 4) + (1 + 4) + math.ceil(tools_json / 4)
    assert openai_chat.prompt_tokens(messages, tools) == expected
    plan = answer({"model": "m", "messages": messages, "tools": tools, "tool_choice": "none"})
    assert plan.usage.prompt_tokens == expected


@pytest.mark.parametrize("text", ["", "a", "héllo wörld", "日本語のテキスト" * 50, "🙂" * 333])
def test_prompt_tokens_stay_below_the_gateway_bound(text: str) -> None:
    messages = [user(text), {"role": "assistant", "content": text}]
    raw_bytes = sum(len(m["content"].encode()) for m in messages)
    assert openai_chat.prompt_tokens(messages) < raw_bytes + 16 * len(messages) + 32


# --- tools --------------------------------------------------------------------------------


WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 3},
                "hours": {"type": "integer"},
                "ratio": {"type": "number"},
                "floor": {"type": "number", "minimum": 0.25},
                "metric": {"type": "boolean"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "where": {"type": "object", "properties": {"lat": {"type": "number"}}},
                "kind": {"const": "daily"},
                "note": {"type": ["string", "null"]},
                "maybe": {"anyOf": [{"type": "null"}, {"type": "integer"}]},
                "blob": {},
            },
            "required": ["city"],
        },
    },
}
CLOCK = {"type": "function", "function": {"name": "get_time"}}


def test_tool_arguments_from_schema() -> None:
    arguments = openai_chat.tool_arguments(WEATHER["function"]["parameters"])
    assert arguments == (
        '{"city":"sample","unit":"celsius","days":3,"hours":1,"ratio":1.5,"floor":0.25,'
        '"metric":true,"tags":["sample"],"where":{"lat":1.5},"kind":"daily","note":"sample",'
        '"maybe":1,"blob":null}'
    )
    assert openai_chat.tool_arguments(None) == "{}"
    assert toolargs.sample({"type": "integer", "minimum": -5}) == 1
    assert toolargs.sample({"type": "integer", "minimum": 2, "maximum": 2}) == 2
    assert toolargs.sample({"type": "number", "maximum": 1}) == 1


def test_deep_schema_does_not_blow_up() -> None:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(5000):
        schema = {"type": "array", "items": schema}
    assert toolargs.sample(schema) is not None


def with_tools(text: str = "weather in Paris?", **extra: Any) -> dict[str, Any]:
    return body(text, tools=[WEATHER, CLOCK], **extra)


def test_auto_calls_the_first_tool_after_a_user_message() -> None:
    plan = answer(with_tools())
    (choice,) = plan.choices
    assert choice.content is None
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.tool_calls
    assert call.name == "get_weather"
    assert re.fullmatch(r"call_[0-9a-f]{24}", call.id)
    assert orjson.loads(call.arguments)["city"] == "sample"
    assert plan.usage.completion_tokens == math.ceil(len(call.arguments) / 4) + 5
    assert answer(with_tools()) == plan  # ids included


def test_auto_answers_a_tool_result_with_text() -> None:
    first = answer(with_tools()).choices[0].tool_calls[0]
    payload = with_tools()
    payload["messages"] += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": first.id,
                    "type": "function",
                    "function": {"name": first.name, "arguments": first.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": first.id, "content": '{"temp": 21}'},
    ]
    (choice,) = answer(payload).choices
    assert choice.tool_calls == ()
    assert choice.finish_reason == "stop"
    assert choice.content is not None and len(choice.content.split()) == 12


@pytest.mark.parametrize(
    ("extra", "text", "names"),
    [
        ({"tool_choice": "none"}, "hi", []),
        ({"tool_choice": "required"}, "hi", ["get_weather"]),
        (
            {"tool_choice": {"type": "function", "function": {"name": "get_time"}}},
            "hi",
            ["get_time"],
        ),
        ({}, "hi [sim:parallel]", ["get_weather", "get_time"]),
        ({"parallel_tool_calls": False}, "hi [sim:parallel]", ["get_weather"]),
        ({"tool_choice": "required"}, "hi [sim:parallel]", ["get_weather", "get_time"]),
    ],
)
def test_tool_choice(extra: dict[str, Any], text: str, names: list[str]) -> None:
    (choice,) = answer(with_tools(text, **extra)).choices
    assert [c.name for c in choice.tool_calls] == names
    assert choice.finish_reason == ("tool_calls" if names else "stop")


def test_parallel_calls_have_distinct_ids_and_summed_tokens() -> None:
    plan = answer(with_tools("hi [sim:parallel]"))
    calls = plan.choices[0].tool_calls
    assert len({c.id for c in calls}) == 2
    assert calls[1].arguments == "{}"
    assert plan.usage.completion_tokens == sum(math.ceil(len(c.arguments) / 4) + 5 for c in calls)


# --- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ([1, 2], None),
        ({"messages": [user("hi")]}, "model"),
        ({"model": 3, "messages": [user("hi")]}, "model"),
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": "hi"}, "messages"),
        ({"model": "m", "messages": ["hi"]}, "messages.[0]"),
        ({"model": "m", "messages": [{"role": "robot", "content": "x"}]}, "messages.[0].role"),
        ({"model": "m", "messages": [{"role": "user"}]}, "messages.[0].content"),
        ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages.[0].content"),
        (
            {"model": "m", "messages": [{"role": "user", "content": [{"type": "text"}]}]},
            "messages.[0].content.[0].text",
        ),
        (
            {"model": "m", "messages": [user("a"), {"role": "tool", "content": "r"}]},
            "messages.[1].tool_call_id",
        ),
        (body(n=0), "n"),
        (body(n=9), "n"),
        (body(n=True), "n"),
        (body(max_tokens=0), "max_tokens"),
        (body(max_completion_tokens="5"), "max_completion_tokens"),
        (body(stream="yes"), "stream"),
        (body(stream_options={"include_usage": True}), "stream_options"),
        (body(stream=True, stream_options={"include_usage": 1}), "stream_options.include_usage"),
        (body(tools=[]), "tools"),
        (
            body(tools=[{"type": "function", "function": {"name": "bad name"}}]),
            "tools.[0].function.name",
        ),
        (body(tools=[{"type": "retrieval"}]), "tools.[0].type"),
        (body(tool_choice="required"), "tool_choice"),
        (with_tools(tool_choice={"type": "function", "function": {"name": "nope"}}), "tool_choice"),
        (with_tools(tool_choice="sometimes"), "tool_choice"),
        (body("[sim:tokenz=1]"), "messages"),
    ],
)
def test_invalid_requests_are_400_naming_the_param(payload: object, param: str | None) -> None:
    with pytest.raises(ApiError) as caught:
        openai_chat.parse_request(payload)
    err = caught.value
    assert (err.status, err.type, err.param) == (400, "invalid_request_error", param)


def test_unknown_params_are_ignored() -> None:
    extra = {
        "temperature": 0.3,
        "top_p": 1,
        "stop": "\n",
        "seed": 1,
        "logit_bias": {"1": 2},
        "response_format": {"type": "json_object"},
        "user": "u",
        "frequency_penalty": 0,
    }
    assert answer(body("hi", **extra)).choices == answer(body("hi")).choices


def test_malformed_json_is_a_400() -> None:
    with pytest.raises(ApiError) as caught:
        openai_chat.parse_json(b'{"model": ')
    assert (caught.value.status, caught.value.param) == (400, None)


# --- stream frames ------------------------------------------------------------------------


def test_stream_sequence_with_usage() -> None:
    payload = body("Say hello", stream=True, stream_options={"include_usage": True})
    decoded, drop = frames(payload)
    assert drop is False
    assert decoded[-1] == "[DONE]"
    role, *words, finish, usage = decoded[:-1]
    for chunk in (role, *words, finish):
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["id"] == "chatcmpl-sbxtest"
        assert chunk["usage"] is None
        assert chunk["choices"][0]["logprobs"] is None
    assert role["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(w["choices"][0]["delta"]["content"] for w in words)
    assert len(words) == 12
    assert text == answer(body("Say hello")).choices[0].content
    assert all(w["choices"][0]["finish_reason"] is None for w in words)
    assert finish["choices"] == [
        {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    ]
    assert usage["choices"] == []
    assert usage["usage"]["completion_tokens"] == 12
    assert usage["usage"]["prompt_tokens"] == math.ceil(len("Say hello") / 4) + 4


def test_stream_without_usage_has_no_usage_key() -> None:
    decoded, _ = frames(body(stream=True))
    assert all("usage" not in chunk for chunk in decoded[:-1])
    assert len(decoded) == 1 + 12 + 1 + 1


def test_stream_reasoning_chunk_precedes_content() -> None:
    decoded, _ = frames(body("[sim:reasoning=2][sim:tokens=2]", stream=True))
    deltas = [chunk["choices"][0]["delta"] for chunk in decoded[:-1]]
    assert list(deltas[1]) == ["reasoning_content"]
    assert deltas[1]["reasoning_content"] == answer(body("[sim:reasoning=2]")).choices[0].reasoning
    assert [d.get("content") for d in deltas[2:4]] == [
        answer(body("[sim:tokens=2]")).choices[0].pieces[0],
        answer(body("[sim:tokens=2]")).choices[0].pieces[1],
    ]


def test_stream_n_choices_interleave_and_reassemble() -> None:
    decoded, _ = frames(body("[sim:tokens=3]", n=2, stream=True))
    texts = {0: "", 1: ""}
    for chunk in decoded[:-1]:
        (choice,) = chunk["choices"]
        texts[choice["index"]] += choice["delta"].get("content") or ""
    plan = answer(body("[sim:tokens=3]", n=2))
    assert [texts[0], texts[1]] == [c.content for c in plan.choices]
    assert [c["choices"][0]["index"] for c in decoded[:2]] == [0, 1]


def test_stream_tool_call_fragments_concatenate() -> None:
    decoded, _ = frames(with_tools("hi [sim:parallel]", stream=True))
    arguments: dict[int, str] = {}
    headers = []
    for chunk in decoded[:-1]:
        delta = chunk["choices"][0]["delta"]
        for call in delta.get("tool_calls", []):
            if "id" in call:
                headers.append(call)
                assert call["function"]["arguments"] == ""
            arguments[call["index"]] = (
                arguments.get(call["index"], "") + call["function"]["arguments"]
            )
    first = decoded[0]["choices"][0]["delta"]
    assert first["role"] == "assistant" and first["content"] is None
    calls = answer(with_tools("hi [sim:parallel]")).choices[0].tool_calls
    assert [(h["index"], h["id"], h["function"]["name"]) for h in headers] == [
        (i, c.id, c.name) for i, c in enumerate(calls)
    ]
    assert arguments == {i: c.arguments for i, c in enumerate(calls)}
    assert orjson.loads(arguments[0])["unit"] == "celsius"
    fragment_chunks = [
        c
        for c in decoded[:-1]
        if any("id" not in t for t in c["choices"][0]["delta"].get("tool_calls", []))
    ]
    assert len(fragment_chunks) == 3 + 2  # 3 for the long arguments, "{}" is too short for 3
    assert decoded[-2]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "tool_calls",
    }


@pytest.mark.parametrize(("after", "content_chunks"), [(0, 0), (2, 2), (50, 12)])
def test_fail_after_cuts_the_stream(after: int, content_chunks: int) -> None:
    decoded, drop = frames(
        body(f"[sim:fail-after={after}]", stream=True, stream_options={"include_usage": True})
    )
    assert drop is True
    assert "[DONE]" not in decoded
    assert all(c["choices"] and c["choices"][0]["finish_reason"] is None for c in decoded)
    assert sum("content" in c["choices"][0]["delta"] for c in decoded[1:]) == content_chunks


# --- per-model rules (model_rules) -------------------------------------------------------


def deepseek_tool_loop(reasoning: str | None, **extra: Any) -> dict[str, Any]:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    turn: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [call]}
    if reasoning is not None:
        turn["reasoning_content"] = reasoning
    return {
        "model": "deepseek-v4-pro",
        "messages": [
            user("Weather?"),
            turn,
            {"role": "tool", "tool_call_id": "call_1", "content": "22C"},
        ],
        **extra,
    }


def test_deepseek_thinking_mode_demands_reasoning_content_of_tool_turns() -> None:
    with pytest.raises(ApiError) as caught:
        openai_chat.parse_request(deepseek_tool_loop(None))
    assert caught.value.status == 400 and caught.value.param == "messages.[1].reasoning_content"
    assert openai_chat.parse_request(deepseek_tool_loop("I should look it up.")).thinking is True
    # Thinking off: the reasoning of earlier turns is not needed.
    off = deepseek_tool_loop(None, thinking={"type": "disabled"})
    assert openai_chat.parse_request(off).thinking is False
    with pytest.raises(ApiError):
        openai_chat.parse_request(deepseek_tool_loop("r", thinking={"type": "auto"}))


def test_deepseek_reasons_exactly_in_thinking_mode() -> None:
    on = answer({**body("Hi"), "model": "deepseek-v4-pro"})
    assert on.usage.reasoning_tokens == openai_chat.THINKING_MODE_REASONING_TOKENS
    assert on.choices[0].reasoning
    off = answer(
        {
            **body("Hi [sim:reasoning=5]"),
            "model": "deepseek-v4-flash",
            "thinking": {"type": "disabled"},
        }
    )
    assert off.usage.reasoning_tokens == 0 and off.choices[0].reasoning is None
    # A thinking-mode tool call carries its reasoning, so the client can send it back.
    tools = [{"type": "function", "function": {"name": "f"}}]
    called = answer({**body("Hi"), "model": "deepseek-v4-pro", "tools": tools})
    assert called.choices[0].tool_calls and called.choices[0].reasoning


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"stop": ["\n"]}, "stop"),
        ({"temperature": 0.2}, "temperature"),
        ({"top_p": 0.5}, "top_p"),
        ({"logprobs": True}, "logprobs"),
        ({"thinking": {"type": "disabled"}}, "thinking"),
    ],
)
def test_openai_reasoning_models_refuse_what_openai_refuses(
    extra: dict[str, Any], param: str
) -> None:
    with pytest.raises(ApiError) as caught:
        openai_chat.parse_request({**body("Hi"), "model": "gpt-5.4", **extra})
    assert caught.value.status == 400 and caught.value.param == param
    # Defaults are accepted, and other models are unaffected.
    openai_chat.parse_request({**body("Hi"), "model": "gpt-5.4", "temperature": 1})
    openai_chat.parse_request({**body("Hi"), **extra})


# --- logprobs ----------------------------------------------------------------------------


def test_logprobs_are_null_unless_asked_for() -> None:
    plan = answer(body())
    assert openai_chat.completion_body(plan, "c", 1)["choices"][0]["logprobs"] is None
    chunks, _ = frames(body(stream=True))
    assert all(c["choices"][0]["logprobs"] is None for c in chunks[:-1] if c["choices"])


def test_logprobs_cover_every_content_token_with_its_alternatives() -> None:
    plan = answer(body(logprobs=True, top_logprobs=2))
    (choice,) = openai_chat.completion_body(plan, "c", 1)["choices"]
    content = choice["logprobs"]["content"]
    assert "".join(t["token"] for t in content) == choice["message"]["content"]
    for entry in content:
        assert entry["logprob"] < 0 and bytes(entry["bytes"]) == entry["token"].encode()
        alternatives = entry["top_logprobs"]
        assert alternatives[0]["token"] == entry["token"] and len(alternatives) == 2
        assert alternatives[0]["logprob"] > alternatives[1]["logprob"]
    # The stream carries the same tokens, one per content chunk, at the same positions.
    chunks, _ = frames(body(logprobs=True, top_logprobs=2, stream=True))
    streamed = [
        entry
        for c in chunks[:-1]
        if c["choices"] and c["choices"][0]["logprobs"] is not None
        for entry in c["choices"][0]["logprobs"]["content"]
    ]
    assert streamed == content


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"logprobs": "yes"}, "logprobs"),
    ],
)
def test_bad_logprobs_settings_are_400s(extra: dict[str, Any], param: str) -> None:
    with pytest.raises(ApiError) as refused:
        openai_chat.parse_request(body(**extra))
    assert openai_error_body(refused.value)["error"]["param"] == param
