"""The public pages in a real browser: they render under the strict CSP with no
console error (their stylesheet and script load and run), the language switch
changes the text a person reads, and /pricing shows the Rupiah amounts of
GET /v1/pricing."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.browser.conftest import Tab
from tests.integration.test_console import api_prices, rupiah_value


@pytest.mark.parametrize("path", ["/", "/pricing", "/docs"])
def test_public_page_renders_without_console_errors(tab: Tab, path: str) -> None:
    tab.open(path)
    assert tab.page.get_attribute("html", "lang") == "en"
    assert tab.text("h1")
    # The stylesheet applied (the CSP allows our own files only)...
    header = tab.page.eval_on_selector(".site-header", "e => getComputedStyle(e).display")
    assert header == "flex"
    # ...and the script ran: every code block got its copy button.
    blocks = tab.page.locator("pre").count()
    assert tab.page.locator("pre > button.copy").count() == blocks


def test_docs_page_has_code_to_copy(tab: Tab) -> None:
    tab.open("/docs")
    assert tab.page.locator("pre > button.copy").count() > 0
    assert tab.page.locator('a[href="/docs/aiport-docs.md"]').count() >= 1


def test_language_switch_changes_the_text(tab_id: Tab) -> None:
    page = tab_id.page
    tab_id.open("/pricing")  # the browser asks for Indonesian
    assert page.get_attribute("html", "lang") == "id"
    assert "Harga per 1 juta token." in tab_id.text("main")
    assert page.get_by_role("link", name="Beranda").count() == 1

    tab_id.click(".lang-switch a[hreflang=en]")
    assert page.url.endswith("/pricing")  # back where the person was
    assert page.get_attribute("html", "lang") == "en"
    assert "Prices per 1 million tokens." in tab_id.text("main")
    assert "Harga per 1 juta token." not in tab_id.text("main")
    assert page.get_by_role("link", name="Home").count() == 1

    # The choice sticks on the next page, whatever the browser asks for.
    tab_id.open("/docs")
    assert page.get_attribute("html", "lang") == "en"
    tab_id.click(".lang-switch a[hreflang=id]")
    assert page.get_attribute("html", "lang") == "id"
    assert page.url.endswith("/docs")


def test_pricing_shows_the_api_prices_in_rupiah(tab: Tab, base_url: str) -> None:
    reply = httpx.get(f"{base_url}/v1/pricing", timeout=30)
    assert reply.status_code == 200, reply.text
    pricing: dict[str, Any] = reply.json()
    expected = api_prices(pricing)
    assert len(expected) > 20

    tab.open("/pricing")
    # What the browser renders in each price cell, as a person reads it.
    cells: list[list[str]] = tab.page.eval_on_selector_all(
        "td[data-idr]",
        "cells => cells.map(c => [c.dataset.model, c.dataset.field, c.dataset.tier || '',"
        " c.innerText.trim()])",
    )
    shown = {(model, fld, tier): text for model, fld, tier, text in cells}
    assert len(shown) == len(cells), "a price cell is shown twice"
    assert set(shown) == set(expected)
    for key, amount in expected.items():
        assert shown[key].startswith("Rp "), (key, shown[key])
        assert rupiah_value(shown[key]) == Decimal(amount), (key, shown[key], amount)
    # Every model of the catalog has a row, visible on the page.
    for model in {m["model"] for m in pricing["data"]}:
        assert tab.page.locator(f'td[data-model="{model}"]').first.is_visible(), model


def test_an_unknown_page_is_a_friendly_404(tab: Tab) -> None:
    # Its own 404 is the one console line allowed (Chromium reports the status).
    tab.open("/ZqNoSuchPage", status=404)
    assert tab.page.get_attribute("html", "lang") == "en"
    assert tab.text("h1") == "Page not found"
    assert "ZqNoSuchPage" not in tab.text("body")  # a mistyped path is never echoed
