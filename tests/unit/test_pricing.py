"""Holds cover the worst case; captures charge usage x price, rounded up once."""

from __future__ import annotations

import orjson

from services.common.catalog import TextModel, load_catalog
from services.common.money import AmountError, ceil_div, idr_to_micros, micros_to_idr
from services.common.settings import PROJECT_ROOT
from services.gateway.chat_request import ChatCall, parse_chat_request
from services.gateway.pricing import (
    Usage,
    cost_micros,
    estimated_usage,
    hold_micros,
    prompt_token_bound,
)

CATALOG = load_catalog(PROJECT_ROOT / "config" / "catalog.yaml")


def text_model(model_id: str) -> TextModel:
    model = CATALOG.text_model(model_id)
    assert model is not None
    return model


FLASH = text_model("deepseek-v4-flash")


def call(content: str, **extra: object) -> ChatCall:
    body = {"messages": [{"role": "user", "content": content}], **extra}
    return parse_chat_request(orjson.dumps(body), CATALOG)


def test_money_parsing_is_exact() -> None:
    assert idr_to_micros("182.88") == 182_880_000
    assert idr_to_micros(7) == 7_000_000
    assert micros_to_idr(182_880_000) == "182.88"
    assert micros_to_idr(5) == "0.000005"
    assert micros_to_idr(-1_500_000) == "-1.5"
    for bad in ("1.0000001", "abc", "NaN", "inf"):
        try:
            idr_to_micros(bad)
        except AmountError:
            continue
        raise AssertionError(f"{bad!r} was accepted")
    assert ceil_div(10, 3) == 4 and ceil_div(9, 3) == 3 and ceil_div(0, 7) == 0


def test_hold_is_prompt_bound_plus_max_output() -> None:
    c = call("hi [sim:delay=3]", max_tokens=1000)
    # 16 bytes + 16 per message + 32 per request.
    assert prompt_token_bound(c) == 64
    # 64 x 4500 IDR/M + 1000 x 18000 IDR/M = 18.288 IDR
    assert hold_micros(c) == 18_288_000


def test_hold_covers_every_choice_and_image() -> None:
    one = hold_micros(call("x", max_tokens=100))
    three = hold_micros(call("x", max_tokens=100, n=3))
    assert three - one == 2 * 100 * 18_000
    body = {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "https://a/b.png"}}],
            }
        ],
        "max_tokens": 1,
    }
    with_image = parse_chat_request(orjson.dumps(body), CATALOG)
    assert prompt_token_bound(with_image) >= 2_000


def test_cost_uses_cached_rate_and_rounds_up_once() -> None:
    usage = Usage(prompt_tokens=10, completion_tokens=7, cached_prompt_tokens=2)
    # (8 x 4500 + 2 x 1200 + 7 x 18000) / 1e6 IDR = 0.1644 IDR = 164400 µIDR
    assert cost_micros(FLASH, usage) == 164_400
    # One token at 4500 IDR/M is 4500 µIDR exactly; a fraction of a µIDR rounds up.
    assert cost_micros(FLASH, Usage(prompt_tokens=1, completion_tokens=0)) == 4_500
    cheap = text_model("gemini-3.1-flash-lite")
    assert (
        cost_micros(cheap, Usage(prompt_tokens=1, completion_tokens=0, cached_prompt_tokens=1))
        == 430
    )
    # Cached can never exceed prompt.
    assert cost_micros(FLASH, Usage(1, 0, cached_prompt_tokens=5)) == 1_200


def test_cost_never_exceeds_the_hold_for_an_honest_upstream() -> None:
    c = call("The quick brown fox " * 50, max_tokens=300)
    worst = Usage(prompt_tokens=prompt_token_bound(c), completion_tokens=300)
    assert cost_micros(FLASH, worst) <= hold_micros(c)


def test_estimate_for_a_broken_stream() -> None:
    c = call("a" * 400, max_tokens=10)
    usage = estimated_usage(c, chunks_delivered=25)
    assert usage.prompt_tokens == 100
    assert usage.completion_tokens == 10  # never more than max_tokens
