"""The console app over real loopback HTTP, with a stand-in price list: the
security headers on every response, languages and the switch, error pages for
browsers and JSON for tools, CSRF on state-changing requests, static files."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from functools import cache
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from aiohttp.typedefs import Handler
from aiport.v1 import catalog_pb2

from services.common.catalog import load_catalog
from services.console import security
from services.console.catalog_client import CatalogUnavailable
from services.console.price_list import PriceList, from_proto
from services.console.server import SESSION_BINDING, create_app, csrf_token_for, make_runner
from services.gateway.server import _price

REPO = Path(__file__).resolve().parents[2]
PUBLIC = "https://aiport.example"
BROWSER = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


@cache
def _catalog_reply() -> bytes:
    catalog = load_catalog(REPO / "config" / "catalog.yaml")
    data = [_price(m) for m in catalog.enabled_models()]
    return catalog_pb2.PriceList(object="list", currency="IDR", data=data).SerializeToString()


def catalog_prices(extra: list[catalog_pb2.ModelPrice] | None = None) -> PriceList:
    """What the gateway's GetPricing answers for the repository's catalog."""
    reply = catalog_pb2.PriceList.FromString(_catalog_reply())
    reply.data.extend(extra or [])
    return from_proto(reply)


class Prices:
    def __init__(self, prices: PriceList | None) -> None:
        self.prices = prices

    async def price_list(self) -> PriceList:
        if self.prices is None:
            raise CatalogUnavailable
        return self.prices


class Console:
    def __init__(self, client: httpx.AsyncClient, prices: Prices) -> None:
        self.client = client
        self.prices = prices


async def form(request: web.Request) -> web.Response:
    return web.Response(text="accepted")


async def form_page(request: web.Request) -> web.Response:
    """A page with a form, as later pages will render one (templates: csrf_token())."""
    return web.Response(text=csrf_token_for(request))


@pytest.fixture
async def console() -> AsyncIterator[Console]:
    prices = Prices(catalog_prices())
    app = create_app(prices, PUBLIC)
    # A form endpoint as later pages will have, to exercise the CSRF middleware.
    app.router.add_post("/_form", form)
    app.router.add_get("/_form", form_page)
    runner = make_runner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        yield Console(client, prices)
    await runner.cleanup()


def assert_secure_headers(response: httpx.Response) -> None:
    for name, value in security.SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, (name, response.status_code)


@pytest.mark.parametrize(
    "path",
    ["/", "/pricing", "/docs", "/docs/aiport-docs.md", "/healthz", "/nowhere", "/lang/en"],
)
async def test_every_response_carries_the_security_headers(console: Console, path: str) -> None:
    response = await console.client.get(path, headers=BROWSER)
    assert_secure_headers(response)


async def test_a_trailing_slash_redirects_to_the_page(console: Console) -> None:
    response = await console.client.get("/docs/", headers=BROWSER)
    assert response.status_code == 308 and response.headers["location"] == "/docs"
    assert_secure_headers(response)
    assert (await console.client.get("/nowhere/", headers=BROWSER)).status_code == 404


async def test_static_files_carry_them_too_and_cache_by_version(console: Console) -> None:
    page = await console.client.get("/", headers=BROWSER)
    css_url = re.search(r'href="(/static/console\.css\?v=[0-9a-f]+)"', page.text)
    js_url = re.search(r'src="(/static/console\.js\?v=[0-9a-f]+)"', page.text)
    assert css_url and js_url
    css = await console.client.get(css_url.group(1))
    assert css.status_code == 200
    assert css.headers["content-type"] == "text/css; charset=utf-8"
    assert "immutable" in css.headers["cache-control"]
    assert_secure_headers(css)
    js = await console.client.get(js_url.group(1))
    assert js.headers["content-type"] == "text/javascript; charset=utf-8"
    unversioned = await console.client.get("/static/console.css")
    assert unversioned.headers["cache-control"] == "no-cache"


@pytest.mark.parametrize(
    "path", ["/static/../server.py", "/static/%2e%2e%2fserver.py", "/static/nope.css"]
)
async def test_only_the_known_static_files_are_served(console: Console, path: str) -> None:
    response = await console.client.get(path)
    assert response.status_code == 404
    assert "import" not in response.text


async def test_pages_use_no_inline_script_or_style(console: Console) -> None:
    for path in ("/", "/pricing", "/docs", "/nowhere"):
        html = (await console.client.get(path, headers=BROWSER)).text
        assert "<style" not in html
        assert " style=" not in html
        assert re.search(r"<script(?![^>]*\bsrc=)", html) is None, path
        assert re.search(r"\son[a-z]+=", html) is None, path  # no onclick= handlers


async def test_language_follows_accept_language(console: Console) -> None:
    indonesian = await console.client.get("/pricing", headers={"Accept-Language": "id-ID,id"})
    assert '<html lang="id">' in indonesian.text
    assert "Harga per 1 juta token." in indonesian.text
    english = await console.client.get("/pricing", headers={"Accept-Language": "en-GB"})
    assert '<html lang="en">' in english.text
    assert "Prices per 1 million tokens." in english.text
    assert "Accept-Language" in english.headers["vary"]


async def test_the_switch_sets_a_cookie_and_goes_back(console: Console) -> None:
    switched = await console.client.get("/lang/en", params={"next": "/pricing"})
    assert switched.status_code == 303
    assert switched.headers["location"] == "/pricing"
    cookie = switched.headers["set-cookie"]
    assert cookie.startswith("lang=en;")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain http here
    page = await console.client.get(
        "/pricing", headers={"Accept-Language": "id", "Cookie": "lang=en"}
    )
    assert '<html lang="en">' in page.text


async def test_the_switch_is_secure_behind_https(console: Console) -> None:
    switched = await console.client.get("/lang/id", headers={"X-Forwarded-Proto": "https"})
    assert "Secure" in switched.headers["set-cookie"]


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example", "/\\evil"])
async def test_the_switch_never_redirects_off_site(console: Console, target: str) -> None:
    switched = await console.client.get("/lang/id", params={"next": target})
    assert switched.headers["location"] == "/"


async def test_switch_links_point_to_the_current_page(console: Console) -> None:
    page = await console.client.get("/docs", headers={"Accept-Language": "id"})
    assert 'href="/lang/en?next=/docs"' in page.text
    assert 'href="/lang/id' not in page.text  # the current language is not a link


async def test_an_unknown_language_is_a_404(console: Console) -> None:
    assert (await console.client.get("/lang/fr")).status_code == 404


async def test_a_browser_gets_a_friendly_404_page(console: Console) -> None:
    marker = "ZqNotHere<script>"
    response = await console.client.get(f"/{marker}", headers={**BROWSER, "Accept-Language": "id"})
    assert response.status_code == 404
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "Halaman tidak ditemukan" in response.text
    assert "ZqNotHere" not in response.text and "Traceback" not in response.text


async def test_a_tool_gets_our_json_error(console: Console) -> None:
    response = await console.client.post("/v2/ZqMarker", json={})
    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "message": "No such page.",
            "type": "invalid_request_error",
            "param": None,
            "code": "not_found",
        }
    }
    assert "ZqMarker" not in response.text


async def test_a_wrong_method_is_405_with_allow(console: Console) -> None:
    response = await console.client.post("/pricing", headers=BROWSER)
    assert response.status_code == 405
    assert "GET" in response.headers["allow"]
    assert response.headers["content-type"].startswith("text/html")


async def test_catalog_down_is_a_503_page_but_home_still_explains(console: Console) -> None:
    console.prices.prices = None
    pricing = await console.client.get("/pricing", headers={**BROWSER, "Accept-Language": "en"})
    assert pricing.status_code == 503
    assert "Temporarily unavailable" in pricing.text
    home = await console.client.get("/", headers={**BROWSER, "Accept-Language": "en"})
    assert home.status_code == 200
    assert "The model list cannot be loaded right now" in home.text
    markdown = await console.client.get("/docs/aiport-docs.md")
    assert markdown.status_code == 503
    assert markdown.json()["error"]["code"] == "service_unavailable"


async def test_an_unexpected_error_is_a_500_page_without_a_trace(console: Console) -> None:
    console.prices.prices = "not a price list"  # type: ignore[assignment]
    response = await console.client.get("/pricing", headers=BROWSER)
    assert response.status_code == 500
    assert "Traceback" not in response.text and "AttributeError" not in response.text
    assert_secure_headers(response)


async def test_model_names_are_escaped(console: Console) -> None:
    evil = catalog_pb2.ModelPrice(
        model="evil-model", display_name="<img src=x onerror=alert(1)>", modality="image"
    )
    evil.image_tiers.add(resolution="default", per_image_idr="100")
    console.prices.prices = catalog_prices([evil])
    for path in ("/", "/pricing", "/docs"):
        html = (await console.client.get(path)).text
        assert "<img src=x" not in html, path
        assert "&lt;img src=x onerror=alert(1)&gt;" in html, path


async def test_healthz(console: Console) -> None:
    response = await console.client.get("/healthz")
    assert response.json() == {"status": "ok"}


# --- CSRF ---------------------------------------------------------------------------------


async def _token_and_cookie(console: Console) -> tuple[str, str]:
    """What a page that renders a form hands a new browser: the token in the
    page and a pre-session cookie it is bound to."""
    console.client.cookies.clear()  # a new browser; and the tests send cookies themselves
    page = await console.client.get("/_form")
    console.client.cookies.clear()
    cookie = page.headers["set-cookie"]
    assert cookie.startswith(f"{security.CSRF_COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    binding = cookie.split(";", 1)[0].split("=", 1)[1]
    assert page.text == security.csrf_token(binding)
    return page.text, binding


async def test_a_browser_with_the_cookie_keeps_it(console: Console) -> None:
    token, binding = await _token_and_cookie(console)
    again = await console.client.get(
        "/_form", headers={"Cookie": f"{security.CSRF_COOKIE}={binding}"}
    )
    assert "set-cookie" not in again.headers
    assert again.text == token


async def test_pages_without_forms_set_no_cookie(console: Console) -> None:
    for path in ("/", "/pricing", "/docs"):
        assert "set-cookie" not in (await console.client.get(path)).headers


async def test_a_post_without_a_token_is_refused(console: Console) -> None:
    response = await console.client.post("/_form", data={"name": "x"}, headers=BROWSER)
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("text/html")


async def test_a_post_with_the_right_token_in_the_form_passes(console: Console) -> None:
    token, binding = await _token_and_cookie(console)
    response = await console.client.post(
        "/_form",
        data={"csrf_token": token},
        headers={"Cookie": f"{security.CSRF_COOKIE}={binding}"},
    )
    assert response.status_code == 200, response.text
    assert response.text == "accepted"


async def test_the_token_may_come_in_a_header(console: Console) -> None:
    token, binding = await _token_and_cookie(console)
    response = await console.client.post(
        "/_form",
        json={},
        headers={"Cookie": f"{security.CSRF_COOKIE}={binding}", security.CSRF_HEADER: token},
    )
    assert response.status_code == 200


async def test_another_browsers_token_is_refused(console: Console) -> None:
    token, _ = await _token_and_cookie(console)
    _, other_binding = await _token_and_cookie(console)
    response = await console.client.post(
        "/_form",
        data={"csrf_token": token},
        headers={"Cookie": f"{security.CSRF_COOKIE}={other_binding}"},
    )
    assert response.status_code == 403


async def test_a_cross_site_origin_is_refused_even_with_a_token(console: Console) -> None:
    token, binding = await _token_and_cookie(console)
    cookie = {"Cookie": f"{security.CSRF_COOKIE}={binding}"}
    refused = await console.client.post(
        "/_form",
        data={"csrf_token": token},
        headers={**cookie, "Origin": "https://evil.example"},
    )
    assert refused.status_code == 403
    for origin in (PUBLIC, str(console.client.base_url).rstrip("/")):
        ours = await console.client.post(
            "/_form", data={"csrf_token": token}, headers={**cookie, "Origin": origin}
        )
        assert ours.status_code == 200, origin


async def test_a_session_binding_replaces_the_pre_session_cookie() -> None:
    """Once a session exists (set by the auth middleware that comes with
    accounts), only the session's token is accepted."""
    session = security.new_binding()
    pre_session = security.new_binding()

    @web.middleware
    async def logged_in(request: web.Request, handler: Handler) -> web.StreamResponse:
        request[SESSION_BINDING] = session
        return await handler(request)

    app = create_app(Prices(catalog_prices()), PUBLIC)
    app.middlewares.insert(1, logged_in)
    app.router.add_post("/_form", form)
    runner = make_runner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with httpx.AsyncClient(base_url=base) as client:
            cookie = {"Cookie": f"{security.CSRF_COOKIE}={pre_session}"}
            stale = await client.post(
                "/_form", data={"csrf_token": security.csrf_token(pre_session)}, headers=cookie
            )
            assert stale.status_code == 403
            fresh = await client.post(
                "/_form", data={"csrf_token": security.csrf_token(session)}, headers=cookie
            )
            assert fresh.status_code == 200
    finally:
        await runner.cleanup()


async def test_safe_methods_need_no_token(console: Console) -> None:
    assert (await console.client.get("/pricing")).status_code == 200
    assert (await console.client.head("/pricing")).status_code == 200
