"""POST /v1/quote's rules: each paid endpoint's own parser and pricing (quotes.py)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from services.common.catalog import load_catalog
from services.common.settings import PROJECT_ROOT
from services.gateway.chat_request import parse_chat_request
from services.gateway.errors import PublicError
from services.gateway.generate_request import parse_video_generate
from services.gateway.pricing import hold_micros
from services.gateway.quotes import JOB_PATHS, TEXT_PATHS, quote

CATALOG = load_catalog(PROJECT_ROOT / "config" / "catalog.yaml")
IDR = 1_000_000
CHAT = {
    "model": "deepseek-v4-flash",
    "max_tokens": 100,
    "messages": [{"role": "user", "content": "x" * 400}],
}


def ask(path: str, body: Any) -> bytes:
    return orjson.dumps({"path": path, "body": body})


def test_a_chat_quote_holds_what_the_call_would_hold() -> None:
    found = quote(ask("/v1/chat/completions", CHAT), CATALOG)
    assert found.model == "deepseek-v4-flash"
    assert found.hold_micros == hold_micros(parse_chat_request(orjson.dumps(CHAT), CATALOG))
    # 400 characters at ~4 a token (and the estimate's overheads), 100 output tokens.
    assert found.prompt_tokens >= 100
    assert found.max_output_tokens == 100
    model = CATALOG.text_model("deepseek-v4-flash")
    assert model is not None
    expected = -(
        -(found.prompt_tokens * model.input_micros_per_m + 100 * model.output_micros_per_m)
        // 1_000_000
    )
    assert found.expected_cost_micros == expected
    assert 0 < found.expected_cost_micros < found.hold_micros
    assert (found.units, found.unit_price_micros) == (0, 0)


def test_every_choice_may_use_the_whole_output_budget() -> None:
    found = quote(ask("/v1/chat/completions", CHAT | {"n": 3}), CATALOG)
    assert found.max_output_tokens == 300


def test_messages_and_responses_quote_the_same_call_as_chat() -> None:
    messages = quote(
        ask(
            "/v1/messages",
            {"model": "deepseek-v4-flash", "max_tokens": 100, "messages": CHAT["messages"]},
        ),
        CATALOG,
    )
    responses = quote(
        ask(
            "/v1/responses",
            {"model": "deepseek-v4-flash", "max_output_tokens": 100, "input": "x" * 400},
        ),
        CATALOG,
    )
    for found in (messages, responses):
        assert found.max_output_tokens == 100
        assert 0 < found.expected_cost_micros <= found.hold_micros


def test_a_video_quote_is_its_price() -> None:
    body = {"prompt": "a temple", "duration": 8, "resolution": "720p"}
    found = quote(ask("/v1/video/generate", body), CATALOG)
    plan = parse_video_generate(orjson.dumps(body), CATALOG)
    assert found.hold_micros == found.expected_cost_micros == plan.estimated_cost_micros
    assert (found.units, found.unit_price_micros) == (8, plan.unit_price_micros)
    assert found.hold_micros == 8 * plan.unit_price_micros > 0


def test_an_image_quote_is_the_price_of_one_image() -> None:
    found = quote(ask("/v1/image/generate", {"prompt": "a temple"}), CATALOG)
    assert found.hold_micros == found.expected_cost_micros == 700 * IDR
    assert found.units == 1


def test_every_paid_endpoint_is_quotable() -> None:
    assert set(TEXT_PATHS) == {
        "/v1/chat/completions",
        "/v1/text/completions",
        "/v1/messages",
        "/v1/responses",
    }
    assert set(JOB_PATHS) == {
        "/v1/image/generate",
        "/v1/image/img2img",
        "/v1/video/generate",
        "/v1/video/img2video",
        "/v1/video/multimodal",
    }


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        (b"", None),
        (b"[]", None),
        (orjson.dumps({"body": CHAT}), "path"),
        (orjson.dumps({"path": "/v1/jobs", "body": CHAT}), "path"),
        (orjson.dumps({"path": "/v1/chat/completions"}), "body"),
        (orjson.dumps({"path": "/v1/chat/completions", "body": "hi"}), "body"),
        (orjson.dumps({"path": "/v1/chat/completions", "body": CHAT, "x": 1}), "x"),
        # The endpoint's own 400, its field named inside the quote's body.
        (ask("/v1/chat/completions", CHAT | {"max_tokens": -1}), "body.max_tokens"),
        (ask("/v1/chat/completions", {"model": "deepseek-v4-flash"}), "body.messages"),
        (ask("/v1/video/generate", {"prompt": "x", "duration": 999}), "body.duration"),
    ],
)
def test_a_bad_quote_request_is_a_400_naming_the_field(raw: bytes, param: str | None) -> None:
    with pytest.raises(PublicError) as caught:
        quote(raw, CATALOG)
    assert caught.value.status == 400
    assert caught.value.param == param


def test_an_unknown_model_is_the_endpoints_404() -> None:
    with pytest.raises(PublicError) as caught:
        quote(ask("/v1/chat/completions", CHAT | {"model": "no-such-model"}), CATALOG)
    assert caught.value.status == 404
