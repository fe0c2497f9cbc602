"""Holds cover the worst case; captures charge usage x price, rounded up once."""

from __future__ import annotations

import orjson
import pytest

from services.common.catalog import CatalogError, TextModel, load_catalog, parse_catalog
from services.common.money import AmountError, ceil_div, idr_to_micros, micros_to_idr
from services.common.settings import PROJECT_ROOT
from services.common.usage import Usage
from services.gateway.chat_request import ChatCall, parse_chat_request
from services.gateway.pricing import (
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


# --- prompt-cache writes -----------------------------------------------------------------

SONNET = text_model("claude-sonnet-4-6")


def test_claude_cache_writes_default_to_125_percent_of_input_at_load() -> None:
    assert SONNET.input_micros_per_m == 49_500_000_000
    assert SONNET.cache_write_micros_per_m == 61_875_000_000  # 1.25 x 49500 IDR
    # A model whose upstream does not bill writes apart: writes cost input.
    assert FLASH.cache_write_micros_per_m == FLASH.input_micros_per_m


def test_cache_writes_are_charged_at_the_cache_write_rate() -> None:
    usage = Usage(
        prompt_tokens=1_000,
        completion_tokens=10,
        cached_prompt_tokens=200,
        cache_write_prompt_tokens=500,
    )
    # A token at N IDR per million costs N µIDR.
    assert cost_micros(SONNET, usage) == 300 * 49_500 + 200 * 4_950 + 500 * 61_875 + 10 * 247_500
    without = Usage(1_000, 10, cached_prompt_tokens=200)
    assert cost_micros(SONNET, usage) - cost_micros(SONNET, without) == 500 * (61_875 - 49_500)
    # Reads and writes together never count more than the whole prompt.
    greedy = Usage(10, 0, cached_prompt_tokens=4, cache_write_prompt_tokens=50)
    assert cost_micros(SONNET, greedy) == 4 * 4_950 + 6 * 61_875


def test_hold_covers_a_prompt_written_to_the_cache_whole() -> None:
    c = parse_chat_request(
        orjson.dumps(
            {
                "model": "claude-sonnet-4-6",
                "messages": [{"role": "user", "content": "x" * 300}],
                "max_tokens": 5,
            }
        ),
        CATALOG,
    )
    bound = prompt_token_bound(c)
    worst = Usage(bound, 5, cache_write_prompt_tokens=bound)
    assert cost_micros(SONNET, worst) <= hold_micros(c)
    assert cost_micros(SONNET, Usage(bound, 5)) < hold_micros(c)


def catalog_with(**extra: object) -> dict[str, object]:
    entry = {
        "id": "claude-x",
        "display_name": "X",
        "created": 0,
        "input_per_million_tokens": "3",
        "cached_input_per_million_tokens": "0.3",
        "output_per_million_tokens": "15",
        "max_output_tokens": 10,
        "supports_reasoning": False,
    }
    return {"cache_write_multipliers": {"claude-": "1.25"}, "text": [{**entry, **extra}]}


def only_text_model(doc: dict[str, object]) -> TextModel:
    model = parse_catalog(doc).text_model("claude-x")
    assert model is not None
    return model


def test_cache_write_price_given_in_the_catalog_wins_over_the_default() -> None:
    assert only_text_model(catalog_with()).cache_write_micros_per_m == 3_750_000
    given = catalog_with(cache_write_per_million_tokens="6")
    assert only_text_model(given).cache_write_micros_per_m == 6_000_000


def test_cache_write_default_rounds_up_to_the_micro_rupiah() -> None:
    doc = catalog_with(input_per_million_tokens="0.000003")
    assert only_text_model(doc).cache_write_micros_per_m == 4  # 3.75 µIDR, rounded up


@pytest.mark.parametrize("bad", ["0.5", "abc", True, "NaN", ["1.25"]])
def test_bad_cache_write_multiplier_is_refused(bad: object) -> None:
    doc = catalog_with()
    doc["cache_write_multipliers"] = {"claude-": bad}
    with pytest.raises(CatalogError, match="cache_write_multipliers"):
        parse_catalog(doc)
