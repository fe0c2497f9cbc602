"""Per-model parameter policy (catalog `thinking` / `parameters`, gateway chat_policy)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from services.common.catalog import CatalogError, TextModel, load_catalog, parse_catalog
from services.common.settings import PROJECT_ROOT
from services.gateway.chat_policy import apply_model_policy
from services.gateway.chat_request import ChatCall, parse_chat_request
from services.gateway.errors import PublicError

CATALOG = load_catalog(PROJECT_ROOT / "config" / "catalog.yaml")
HELLO = [{"role": "user", "content": "Hello"}]
SAMPLING = {"temperature": 0.3, "top_p": 0.9, "stop": ["END"], "seed": 7}

# Per model: what the upstream gets for (no reasoning_effort, reasoning_effort "high"),
# as (thinking instruction, reasoning_effort) pairs; and the parameters of SAMPLING that
# are dropped / refused. Every text model of the catalog is listed.
EXPECTED: dict[str, tuple[tuple[Any, Any], tuple[Any, Any] | None, set[str], set[str]]] = {
    "deepseek-v4-flash": (({"control": "toggle", "type": "disabled"}, None), None, set(), set()),
    "deepseek-v4-pro": (
        (None, None),
        ({"control": "toggle", "type": "enabled"}, "high"),
        set(),
        set(),
    ),
    "gpt-5.4-mini": (
        (None, None),
        ({"control": "effort", "type": "enabled"}, "high"),
        {"temperature", "top_p"},
        {"stop"},
    ),
    "gpt-5.4": (
        (None, None),
        ({"control": "effort", "type": "enabled"}, "high"),
        {"temperature", "top_p"},
        {"stop"},
    ),
    "gpt-5.5": (
        (None, None),
        ({"control": "effort", "type": "enabled"}, "high"),
        {"temperature", "top_p"},
        {"stop"},
    ),
    "gemini-3.1-flash-lite": (
        ({"control": "level", "type": "disabled", "off": "minimal"}, None),
        None,
        set(),
        set(),
    ),
    "gemini-3.5-flash": (
        (None, None),
        ({"control": "level", "type": "enabled"}, "high"),
        set(),
        set(),
    ),
    "claude-opus-4-8": (
        (None, None),
        ({"control": "adaptive", "type": "enabled"}, "high"),
        {"temperature", "top_p"},
        set(),
    ),
    "claude-sonnet-4-6": (
        (None, None),
        ({"control": "adaptive", "type": "enabled"}, "high"),
        set(),
        set(),
    ),
    "claude-haiku-4-5": (({"control": "budget", "type": "disabled"}, None), None, set(), set()),
    "minimax-m3": ((None, None), (None, "high"), set(), set()),
    "glm-5.2": ((None, None), ({"control": "toggle", "type": "enabled"}, "high"), set(), set()),
    "glm-5.2-fast": (({"control": "toggle", "type": "disabled"}, None), None, set(), set()),
    "kimi-k2.6": (({"control": "toggle", "type": "disabled"}, None), None, set(), set()),
    "kimi-k2.6-fast": (({"control": "toggle", "type": "disabled"}, None), None, set(), set()),
    "kimi-k2.7-code": ((None, None), (None, None), set(), set()),
}


def parse(body: dict[str, Any]) -> ChatCall:
    return parse_chat_request(orjson.dumps(body), CATALOG)


def test_every_text_model_has_an_expectation() -> None:
    assert {m.id for m in CATALOG.enabled_text_models()} == set(EXPECTED)


@pytest.mark.parametrize("model_id", sorted(EXPECTED))
def test_policy_of_every_model(model_id: str) -> None:
    plain, with_effort, dropped, refused = EXPECTED[model_id]
    request = parse({"model": model_id, "messages": HELLO}).upstream_request
    assert (request.get("thinking"), request.get("reasoning_effort")) == plain

    if with_effort is None:
        # /v1/pricing says it does not reason: reasoning_effort is our own 400.
        assert not CATALOG.models[model_id].supports_reasoning  # type: ignore[union-attr]
        with pytest.raises(PublicError) as info:
            parse({"model": model_id, "messages": HELLO, "reasoning_effort": "high"})
        assert info.value.param == "reasoning_effort"
    else:
        assert CATALOG.models[model_id].supports_reasoning  # type: ignore[union-attr]
        body = {"model": model_id, "messages": HELLO, "reasoning_effort": "high"}
        request = parse(body).upstream_request
        assert (request.get("thinking"), request.get("reasoning_effort")) == with_effort

    for name in refused:
        with pytest.raises(PublicError) as info:
            parse({"model": model_id, "messages": HELLO, name: SAMPLING[name]})
        assert info.value.status == 400 and info.value.param == name
        assert model_id in info.value.message
    allowed = {k: v for k, v in SAMPLING.items() if k not in refused}
    request = parse({"model": model_id, "messages": HELLO, **allowed}).upstream_request
    for name, value in allowed.items():
        assert request.get(name) == (None if name in dropped else value), name


def test_dropped_n_does_not_count_as_choices() -> None:
    model = TextModel(
        id="m",
        display_name="M",
        created=0,
        owned_by="x",
        input_micros_per_m=0,
        cached_input_micros_per_m=0,
        cache_write_micros_per_m=0,
        output_micros_per_m=0,
        max_output_tokens=10,
        supports_reasoning=False,
        parameters={"n": "drop"},
    )
    assert apply_model_policy(model, {"messages": HELLO, "n": 3}) == {"messages": HELLO}


def text_doc(**extra: Any) -> dict[str, Any]:
    entry = {
        "id": "m",
        "display_name": "M",
        "created": 0,
        "input_per_million_tokens": "1",
        "cached_input_per_million_tokens": "1",
        "output_per_million_tokens": "1",
        "max_output_tokens": 10,
        **extra,
    }
    return {"text": [entry]}


@pytest.mark.parametrize(
    "extra",
    [
        # supports_reasoning must be what the thinking control can deliver.
        {"supports_reasoning": True},
        {"supports_reasoning": True, "thinking": {"control": "none"}},
        {"supports_reasoning": False, "thinking": {"control": "always"}},
        {"supports_reasoning": False, "thinking": {"control": "effort"}},
        {
            "supports_reasoning": True,
            "thinking": {"control": "toggle"},
            "parameters": {"reasoning_effort": "drop"},
        },
        {"supports_reasoning": False, "thinking": {"control": "sometimes"}},
        {"supports_reasoning": False, "parameters": {"temperature": "clamp"}},
        {"supports_reasoning": False, "parameters": {"made_up": "drop"}},
    ],
)
def test_inconsistent_policies_are_catalog_errors(extra: dict[str, Any]) -> None:
    with pytest.raises(CatalogError):
        parse_catalog(text_doc(**extra))


def test_reasoning_content_of_assistant_turns_is_forwarded() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [call],
            "reasoning_content": "Look it up.",
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "22C"},
    ]
    parsed = parse({"model": "deepseek-v4-pro", "messages": messages})
    assert parsed.upstream_request["messages"][1]["reasoning_content"] == "Look it up."
    bare = parse(
        {
            "model": "deepseek-v4-pro",
            "messages": [messages[0], {**messages[1], "reasoning_content": None}, messages[2]],
        }
    )
    assert parsed.prompt_bytes == bare.prompt_bytes + len("Look it up.")
    with pytest.raises(PublicError) as info:
        parse(
            {
                "model": "deepseek-v4-pro",
                "messages": [messages[0], {**messages[1], "reasoning_content": 5}, messages[2]],
            }
        )
    assert info.value.param == "messages[1].reasoning_content"
