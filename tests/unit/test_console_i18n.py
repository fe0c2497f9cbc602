"""Which language a page is in, and that both languages say everything."""

from __future__ import annotations

import pytest

from services.console import i18n


def test_both_languages_have_every_message_with_the_same_placeholders() -> None:
    indonesian, english = i18n.MESSAGES["id"], i18n.MESSAGES["en"]
    assert set(indonesian) == set(english)
    for key in indonesian:
        assert i18n.placeholders(indonesian[key]) == i18n.placeholders(english[key]), key
        assert indonesian[key].strip(), key


def test_the_languages_really_differ() -> None:
    assert i18n.translate("id", "nav.pricing") == "Harga"
    assert i18n.translate("en", "nav.pricing") == "Pricing"
    assert i18n.translate("id", "home.models.count", count=29) == "29 model aktif"


def test_an_unknown_key_fails_loudly() -> None:
    with pytest.raises(KeyError):
        i18n.translate("id", "nav.pricnig")


@pytest.mark.parametrize(
    ("header", "chosen"),
    [
        ("id", "id"),
        ("id-ID,id;q=0.9,en-US;q=0.8,en;q=0.7", "id"),
        ("en-US,en;q=0.9,id;q=0.8", "en"),
        ("en;q=0.5, id;q=0.8", "id"),  # weights, not order
        ("in-ID", "id"),  # the withdrawn ISO code some systems still send
        ("ID-id", "id"),  # tags are case-insensitive
        ("fr-FR,fr;q=0.9", "en"),  # neither: English
        ("fr, id;q=0.1", "id"),  # a low weight still beats none
        ("*", "id"),  # anything: our first language
        ("en;q=0, *", "id"),  # q=0 is "not English"
        ("id;q=0, *;q=0.5", "en"),
        ("en;q=0.2, *;q=0.9", "id"),  # * weighs only the languages not named
        ("id;q=abc, en;q=0.3", "en"),  # a malformed weight drops its range
        ("id;q=2, en", "en"),  # out of range: dropped
        ("", "en"),
        (None, "en"),
        (",,,;;;", "en"),
    ],
)
def test_accept_language(header: str | None, chosen: str) -> None:
    assert i18n.pick_language(None, header) == chosen


def test_the_cookie_the_switch_sets_beats_the_browser() -> None:
    assert i18n.pick_language("en", "id-ID,id") == "en"
    assert i18n.pick_language("id", "en-US") == "id"


@pytest.mark.parametrize("cookie", ["fr", "", "ID", "id;q=1", "x" * 100])
def test_a_cookie_that_is_not_one_of_ours_is_ignored(cookie: str) -> None:
    assert i18n.pick_language(cookie, "id") == "id"


def test_a_huge_header_is_read_only_so_far() -> None:
    header = ",".join(["fr"] * 1000 + ["id"])
    assert i18n.pick_language(None, header) == "en"
