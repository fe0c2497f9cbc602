"""The console (web UI) through the edge, against the real gateway: every
public page, the same prices as `GET /v1/pricing`, both languages, the markdown
reference with every live model, friendly 404s, and the edge's rules for a
browser surface (cookies reach the console, API keys do not)."""

from __future__ import annotations

import re
import time
import uuid
from decimal import Decimal
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest

from deploy.local.stack import Stack
from services.console import security
from tests.integration.conftest import Account

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
HTML = "text/html; charset=utf-8"


@pytest.fixture(scope="module")
def web(base_url: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, timeout=30, follow_redirects=False)


@pytest.fixture(scope="module")
def live_pricing(web: httpx.Client) -> dict[str, Any]:
    response = web.get("/v1/pricing")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert len(body["data"]) > 20
    return body


def assert_browser_headers(response: httpx.Response) -> None:
    for name, value in security.SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, (name, response.url)
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "'unsafe-inline'" not in csp


class Cells(HTMLParser):
    """Every <td data-idr> of the pricing page: (model, field, tier) -> (data, text)."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[tuple[str, str, str], tuple[str, str]] = {}
        self._open: tuple[tuple[str, str, str], str] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {k: v or "" for k, v in attrs}
        if tag == "td" and "data-idr" in found:
            key = (found["data-model"], found["data-field"], found.get("data-tier", ""))
            self._open, self._text = (key, found["data-idr"]), []

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._open is not None:
            key, amount = self._open
            assert key not in self.cells, f"{key} shown twice"
            self.cells[key] = (amount, "".join(self._text).strip())
            self._open = None


def api_prices(pricing: dict[str, Any]) -> dict[tuple[str, str, str], str]:
    """Every IDR amount of GET /v1/pricing, keyed like the page's cells."""
    found: dict[tuple[str, str, str], str] = {}
    for model in pricing["data"]:
        for field, amount in model.get("text", {}).items():
            if field.endswith("_idr"):
                found[(model["model"], field, "")] = amount
        for tier in model.get("image_tiers", []):
            found[(model["model"], "per_image_idr", tier["resolution"])] = tier["per_image_idr"]
        for tier in model.get("video_tiers", []):
            for field in ("per_second_idr", "per_second_with_reference_idr"):
                if tier.get(field):
                    found[(model["model"], field, tier["resolution"])] = tier[field]
    return found


def rupiah_value(shown: str) -> Decimal:
    """`Rp 1.250.000` / `Rp 0,35` / `-Rp 2.500` back to a number (read
    independently of the console's own formatter)."""
    match = re.fullmatch(r"(-?)Rp (\d{1,3}(?:\.\d{3})*)(?:,(\d+))?", shown)
    assert match, f"not Indonesian Rupiah: {shown!r}"
    sign, whole, fraction = match.groups()
    return Decimal(f"{sign}{whole.replace('.', '')}.{fraction or '0'}")


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/", HTML),
        ("/pricing", HTML),
        ("/docs", HTML),
        ("/docs/aiport-docs.md", "text/markdown; charset=utf-8"),
    ],
)
def test_every_public_page(web: httpx.Client, path: str, content_type: str) -> None:
    response = web.get(path, headers=BROWSER)
    assert response.status_code == 200, response.text[:500]
    assert response.headers["content-type"] == content_type
    assert_browser_headers(response)
    assert response.headers.get("x-request-id")  # the edge's, as on every response


def test_static_files_are_served_by_the_console(web: httpx.Client) -> None:
    page = web.get("/", headers=BROWSER).text
    for url in re.findall(r'(?:href|src)="(/static/[^"]+)"', page):
        response = web.get(url.replace("&amp;", "&"))
        assert response.status_code == 200, url
        assert response.headers["content-type"].startswith(
            ("text/css", "text/javascript", "image/svg+xml")
        )
        assert_browser_headers(response)


def test_pricing_page_shows_exactly_the_api_prices(
    web: httpx.Client, live_pricing: dict[str, Any]
) -> None:
    parser = Cells()
    parser.feed(web.get("/pricing", headers=BROWSER).text)
    expected = api_prices(live_pricing)
    assert set(parser.cells) == set(expected)
    for key, amount in expected.items():
        data, shown = parser.cells[key]
        assert data == amount, key
        assert rupiah_value(shown) == Decimal(amount), (key, shown, amount)


def test_home_lists_every_live_model_with_its_modality(
    web: httpx.Client, live_pricing: dict[str, Any]
) -> None:
    page = web.get("/", headers={**BROWSER, "Accept-Language": "en"}).text
    rows = dict(re.findall(r'<tr data-model="([^"]+)" data-modality="([^"]+)">', page))
    assert rows == {m["model"]: m["modality"] for m in live_pricing["data"]}
    assert "Image editing" in page and "Multimodal video" in page


def test_accept_language_id_gives_indonesian(web: httpx.Client) -> None:
    page = web.get("/pricing", headers={**BROWSER, "Accept-Language": "id-ID,id;q=0.9"})
    assert '<html lang="id">' in page.text
    assert "Harga per 1 juta token." in page.text
    assert "Beranda" in page.text
    english = web.get("/pricing", headers={**BROWSER, "Accept-Language": "en-US,en"})
    assert '<html lang="en">' in english.text
    assert "Prices per 1 million tokens." in english.text


def test_the_language_switch_works_through_the_edge(base_url: str) -> None:
    # A client of its own: the cookie must not stay in the shared one.
    with httpx.Client(base_url=base_url, timeout=30) as web:
        switched = web.get("/lang/en", params={"next": "/pricing"})
        assert switched.status_code == 303
        assert switched.headers["location"] == "/pricing"
        cookie = switched.headers["set-cookie"].split(";", 1)[0]
        assert cookie == "lang=en"
        # The edge passes the console its cookies (it drops them on the API).
        page = web.get("/pricing", headers={**BROWSER, "Accept-Language": "id"}).text
        assert '<html lang="en">' in page


def test_the_markdown_reference_lists_every_live_model(
    web: httpx.Client, live_pricing: dict[str, Any], base_url: str
) -> None:
    text = web.get("/docs/aiport-docs.md").text
    for model in live_pricing["data"]:
        assert f"| `{model['model']}` |" in text, model["model"]
        assert f"- `{model['model']}` (" in text, model["model"]
    assert f"{base_url}/v1" in text
    for path in ("/v1/chat/completions", "/v1/jobs/{job_id}", "/v1/balance", "/v1/pricing"):
        assert path in text
    html = web.get("/docs", headers=BROWSER).text
    assert 'id="errors"' in html and 'href="/docs/aiport-docs.md"' in html


def test_an_unknown_page_is_a_friendly_404(web: httpx.Client) -> None:
    marker = "ZqNoSuchPage"
    page = web.get(f"/{marker}/deeper", headers={**BROWSER, "Accept-Language": "id"})
    assert page.status_code == 404
    assert page.headers["content-type"] == HTML
    assert "Halaman tidak ditemukan" in page.text
    assert marker not in page.text and "Traceback" not in page.text
    assert_browser_headers(page)
    # A tool (curl's Accept: */*) gets the API's error shape instead.
    tool = web.get(f"/{marker}")
    assert tool.status_code == 404
    assert tool.json()["error"]["code"] == "not_found"


def test_api_paths_keep_the_api_404(web: httpx.Client) -> None:
    for path in ("/v1/ZqNothing", "/v1", "/aiport.v1.Billing/TopUp"):
        response = web.get(path, headers=BROWSER)
        assert response.status_code == 404, path
        assert response.headers["content-type"].startswith("application/json"), path
        assert response.json()["error"]["code"] == "not_found"


def test_api_keys_never_reach_the_console(
    stack: Stack, web: httpx.Client, account: Account
) -> None:
    request_id = str(uuid.uuid4())
    response = web.get(
        "/pricing?note=ZqQuery",
        headers={"Authorization": f"Bearer {account.api_key}", "x-request-id": request_id},
    )
    assert response.status_code == 200
    time.sleep(1.5)
    log = "".join(  # every console replica's log
        process.log_path.read_text(errors="replace")
        for name, process in stack.processes.items()
        if name.split("-")[0] == "console"
    )
    assert account.api_key not in log
    assert "ZqQuery" not in log  # the console logs routes, never paths or queries
    line = next(x for x in log.splitlines() if request_id in x)
    assert '"route": "pricing"' in line and '"status": 200' in line


def test_a_page_view_is_counted(stack: Stack, web: httpx.Client) -> None:
    request_id = str(uuid.uuid4())
    assert web.get("/pricing", headers={"x-request-id": request_id}).status_code == 200
    metrics = "".join(  # every console replica's
        httpx.get(url, timeout=10).text
        for name, url in stack.metrics_urls().items()
        if name.split("-")[0] == "console"
    )
    assert re.search(
        r'aiport_http_requests_total\{route="console:pricing",status="200"\} [1-9]', metrics
    ), metrics[-2000:]
