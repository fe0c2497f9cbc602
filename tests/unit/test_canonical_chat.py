"""The canonical chat call: the gate's output survives the typed message unchanged,
and the edits on it (a route's drop_params) leave the original alone."""

from __future__ import annotations

from typing import Any

import orjson
from aiport.v1 import providers_pb2, text_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.canonical_chat import (
    from_chat_body,
    prompt_size,
    thinking_json,
    to_chat_body,
    tool_parameters,
    without,
)
from services.common.catalog import load_catalog
from services.common.settings import PROJECT_ROOT
from services.gateway.chat_request import parse_chat_request
from services.gateway.errors import PublicError

CATALOG = load_catalog(PROJECT_ROOT / "config" / "catalog.yaml")


def chat_json(chat: providers_pb2.CanonicalChat) -> dict[str, Any]:
    """The whole call in the gate's shape: chat JSON with the thinking instruction."""
    body = to_chat_body(chat.request)
    thinking = thinking_json(chat)
    if thinking is not None:
        body["thinking"] = thinking
    return body


TEXT_MODELS = [m.id for m in CATALOG.enabled_text_models()]

words = st.text(st.characters(codec="utf-8"), max_size=12)
names = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_-]{0,10}", fullmatch=True)
json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(-1e6, 1e6, allow_nan=False).filter(lambda f: not f.is_integer()),
    words,
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(names, inner, max_size=3)),
    max_leaves=8,
)
schema = st.dictionaries(names, json_value, max_size=4)
part = st.one_of(
    st.builds(lambda t: {"type": "text", "text": t}, words),
    st.builds(
        lambda url, detail: {
            "type": "image_url",
            "image_url": {"url": url, **({"detail": detail} if detail else {})},
        },
        st.sampled_from(["https://example.com/a.png", "data:image/png;base64,AAAA"]),
        st.sampled_from([None, "low", "high", "auto"]),
    ),
)
content = st.one_of(words, st.lists(part, min_size=1, max_size=3))
tool_call = st.builds(
    lambda i, n, a: {
        "id": f"call_{i}",
        "type": "function",
        "function": {"name": n, "arguments": a},
    },
    st.integers(0, 99),
    names,
    st.sampled_from(["{}", '{"a": 1}']),
)


@st.composite
def message(draw: st.DrawFn) -> dict[str, Any]:
    role = draw(st.sampled_from(["system", "developer", "user", "assistant", "tool"]))
    out: dict[str, Any] = {"role": role}
    if role == "assistant":
        calls = draw(st.lists(tool_call, max_size=2))
        if calls:
            out["tool_calls"] = calls
            out["content"] = draw(st.one_of(st.none(), words))
        else:
            out["content"] = draw(words)
        if draw(st.booleans()):
            out["reasoning_content"] = draw(words)
    elif role == "tool":
        out["tool_call_id"] = f"call_{draw(st.integers(0, 99))}"
        out["content"] = draw(words)
    elif role == "user":
        out["content"] = draw(content)
    else:
        out["content"] = draw(words)
    if role in ("user", "system") and draw(st.booleans()):
        out["name"] = draw(st.one_of(st.just(""), names))
    return out


def _tool_name(tool: dict[str, Any]) -> str:
    return str(tool["function"]["name"])


@st.composite
def chat_body(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": draw(st.sampled_from(TEXT_MODELS)),
        "messages": draw(st.lists(message(), min_size=1, max_size=4)),
    }
    optional: dict[str, Any] = {
        "max_tokens": st.integers(1, 100_000),
        "temperature": st.sampled_from([0, 0.5, 1.3, 2]),
        "top_p": st.sampled_from([0, 0.25, 1]),
        "seed": st.integers(-(2**63), 2**63 - 1),
        "n": st.integers(1, 4),
        "presence_penalty": st.sampled_from([-2, -0.5, 1.5]),
        "frequency_penalty": st.sampled_from([-1, 0.25]),
        "stop": st.one_of(words, st.lists(words, max_size=4)),
        "logprobs": st.booleans(),
        "top_logprobs": st.integers(0, 20),
        "logit_bias": st.dictionaries(
            st.integers(0, 100_000).map(str), st.sampled_from([-100, -1.5, 0, 7]), max_size=3
        ),
        "user": words,
        "reasoning_effort": st.sampled_from(["low", "medium", "high"]),
        "response_format": st.one_of(
            st.sampled_from([{"type": "text"}, {"type": "json_object"}]),
            st.builds(
                lambda n, s, strict, d: {
                    "type": "json_schema",
                    "json_schema": {
                        "name": n,
                        "schema": s,
                        **({"strict": strict} if strict is not None else {}),
                        **({"description": d} if d is not None else {}),
                    },
                },
                names,
                schema,
                st.one_of(st.none(), st.booleans()),
                st.one_of(st.none(), words),
            ),
        ),
    }
    for key, values in optional.items():
        if draw(st.booleans()):
            body[key] = draw(values)
    if draw(st.booleans()):
        tools = draw(
            st.lists(
                st.builds(
                    lambda n, d, p, strict: {
                        "type": "function",
                        "function": {
                            "name": n,
                            **({"description": d} if d is not None else {}),
                            **({"parameters": p} if p is not None else {}),
                            **({"strict": strict} if strict is not None else {}),
                        },
                    },
                    names,
                    st.one_of(st.none(), words),
                    st.one_of(st.none(), schema),
                    st.one_of(st.none(), st.booleans()),
                ),
                min_size=1,
                max_size=3,
                unique_by=_tool_name,
            )
        )
        body["tools"] = tools
        body["tool_choice"] = draw(
            st.one_of(
                st.sampled_from(["auto", "none", "required"]),
                st.sampled_from(tools).map(
                    lambda t: {"type": "function", "function": {"name": _tool_name(t)}}
                ),
            )
        )
        if draw(st.booleans()):
            body["parallel_tool_calls"] = draw(st.booleans())
    return body


@settings(max_examples=400, deadline=None)
@given(chat_body())
def test_every_gate_output_survives_the_canonical_call(body: dict[str, Any]) -> None:
    try:
        call = parse_chat_request(orjson.dumps(body), CATALOG)
    except PublicError:
        return  # refused at the gate: never becomes a canonical call
    gate = call.upstream_request
    chat = from_chat_body(gate)
    # Through the wire too: the providers service reads what the gateway wrote.
    assert chat_json(type(chat).FromString(chat.SerializeToString())) == gate


def test_a_one_string_stop_and_empty_assistant_content_keep_their_shape() -> None:
    gate = {
        "messages": [
            {"role": "user", "content": ""},
            {"role": "assistant", "content": None, "tool_calls": []},
        ],
        "stop": ["END"],
        "max_tokens": 5,
    }
    body = to_chat_body(from_chat_body(gate).request)
    assert body["messages"][0]["content"] == ""  # set, though empty
    assert body["messages"][1]["content"] is None
    assert body["stop"] == ["END"]


def test_a_schema_keeps_its_key_order_and_exact_numbers() -> None:
    # Models write JSON in the schema's key order; a Struct would shuffle it.
    schema = {"type": "object", "properties": {"z": {}, "a": {}, "m": {}}, "big": 2**60}
    gate = {
        "messages": [{"role": "user", "content": "x"}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": schema}}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "o", "schema": schema}},
    }
    wire = providers_pb2.CanonicalChat.FromString(from_chat_body(gate).SerializeToString())
    body = to_chat_body(wire.request)
    for got in (
        body["tools"][0]["function"]["parameters"],
        body["response_format"]["json_schema"]["schema"],
    ):
        assert orjson.dumps(got) == orjson.dumps(schema)


def test_a_typed_callers_struct_schema_comes_back_with_whole_numbers_as_integers() -> None:
    fn = text_pb2.FunctionTool(name="f")
    fn.parameters.update({"type": "array", "minItems": 2, "maximum": 2.5})
    params = tool_parameters(fn)
    assert params == {"type": "array", "minItems": 2, "maximum": 2.5}
    assert params is not None and isinstance(params["minItems"], int)
    assert tool_parameters(text_pb2.FunctionTool(name="f")) is None


def test_without_drops_on_a_copy_and_ignores_unknown_names() -> None:
    chat = from_chat_body(
        {"messages": [{"role": "user", "content": "x"}], "seed": 7, "logprobs": True}
    )
    dropped = without(chat, ["seed", "logprobs", "no_such_param"])
    assert "seed" not in to_chat_body(dropped.request)
    assert "logprobs" not in to_chat_body(dropped.request)
    assert to_chat_body(chat.request)["seed"] == 7  # the next route still has it
    assert without(chat, ["no_such_param"]) is chat
    thinking = from_chat_body(
        {
            "messages": [{"role": "user", "content": "x"}],
            "thinking": {"control": "toggle", "type": "disabled"},
        }
    )
    assert not without(thinking, ["thinking"]).HasField("thinking")
    assert thinking.HasField("thinking")


def test_the_thinking_instruction_round_trips() -> None:
    for thinking in (
        {"control": "toggle", "type": "disabled"},
        {"control": "effort", "type": "enabled"},
        {"control": "budget", "type": "disabled", "off": "minimal"},
    ):
        gate = {"messages": [{"role": "user", "content": "x"}], "thinking": thinking}
        assert chat_json(from_chat_body(gate))["thinking"] == thinking


def test_prompt_size_counts_text_and_images() -> None:
    chat = from_chat_body(
        {
            "messages": [
                {"role": "system", "content": "abc"},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "de"},
                        {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                    ],
                },
            ]
        }
    )
    assert prompt_size(chat.request) == (5, 1)
