"""The console's aiohttp app: server-rendered pages, its own static files,
and the browser security rules (security.py) on every response.

aiohttp because the project already runs its HTTP servers on it (files,
sandbox): one HTTP stack to know, async like every other service, and its
FileResponse serves the static files with conditional GETs.

Prices and models come from the gateway's Catalog over gRPC (catalog_client),
so the pages show what `GET /v1/pricing` says. A request's log line names the
route, never the path or query (later pages carry tokens in links).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Final, Protocol

import jinja2
import orjson
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Handler
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse
from markupsafe import Markup

from services.common import http_service, metrics, requestctx
from services.common.logs import fields
from services.common.settings import env
from services.console import docs, i18n, security
from services.console.account_api import AccountApi, ApiUnavailable
from services.console.accounts_client import AccountsClient, AccountsUnavailable, RateLimited
from services.console.catalog_client import CatalogUnavailable
from services.console.money import format_idr
from services.console.price_list import PriceList

log = logging.getLogger("console")

DEFAULT_ADDR: Final = "127.0.0.1:9300"
DEFAULT_PUBLIC_URL: Final = "http://127.0.0.1:8080"
SHUTDOWN_SECONDS: Final = 5.0
# Forms to come are small; nothing else takes a body.
MAX_BODY_BYTES: Final = 64 * 1024
PACKAGE_DIR: Final = Path(__file__).resolve().parent
STATIC_DIR: Final = PACKAGE_DIR / "static"
STATIC_TYPES: Final = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}
LANG_COOKIE: Final = "lang"
LANG_COOKIE_SECONDS: Final = 365 * 24 * 3600
HTML: Final = "text/html"
MARKDOWN: Final = "text/markdown"


class PriceSource(Protocol):
    async def price_list(self) -> PriceList: ...


@dataclass(frozen=True)
class NavItem:
    href: str
    label: str  # a message key


# The public pages; then the dashboard's for a logged-in person, or log-in and
# sign-up for anyone else (when the console has the account pages).
NAV: Final = (
    NavItem("/", "nav.home"),
    NavItem("/pricing", "nav.pricing"),
    NavItem("/docs", "nav.docs"),
)
NAV_LOGGED_IN: Final = (
    NavItem("/dashboard", "nav.dashboard"),
    NavItem("/dashboard/api-keys", "nav.api_keys"),
    NavItem("/dashboard/usage", "nav.usage"),
    NavItem("/dashboard/jobs", "nav.jobs"),
    NavItem("/dashboard/billing", "nav.billing"),
    NavItem("/dashboard/settings", "nav.settings"),
)
NAV_ADMIN: Final = (NavItem("/admin", "nav.admin"),)
NAV_LOGGED_OUT: Final = (
    NavItem("/login", "nav.login"),
    NavItem("/signup", "nav.signup"),
)

# Per status: the message keys of the error page, and the JSON error an API
# client gets instead (our public error shape).
ERRORS: Final[dict[int, tuple[str, str, str]]] = {
    400: ("error.400", "Malformed request.", "invalid_request_error"),
    403: ("error.403", "Request refused: missing or invalid CSRF token.", "forbidden"),
    404: ("error.404", "No such page.", "not_found"),
    405: ("error.405", "Method not allowed.", "method_not_allowed"),
    413: ("error.500", "Request body too large.", "request_too_large"),
    429: ("error.429", "Too many attempts. Please wait and try again.", "rate_limited"),
    500: ("error.500", "Internal error.", "internal_error"),
    503: ("error.503", "This part of aiport is unavailable right now.", "service_unavailable"),
}

CATALOG = web.AppKey("catalog", PriceSource)
PUBLIC_URL = web.AppKey("public_url", str)
TEMPLATES = web.AppKey("templates", jinja2.Environment)
STATIC = web.AppKey("static", dict)
DOCS_CACHE = web.AppKey("docs_cache", dict)
DRAINING = web.AppKey("draining", asyncio.Event)

# Request keys: the language, and the CSRF binding (security.py). An auth
# middleware that runs before csrf_protection sets SESSION_BINDING to the session
# token once sessions exist; until then the pre-session cookie binds the token.
REQUEST_ID = web.RequestKey("request_id", str)
LANG = web.RequestKey("lang", str)
SESSION_BINDING = web.RequestKey("session_binding", str)
NEW_CSRF_BINDING = web.RequestKey("new_csrf_binding", str)
# Set by account_pages.session_auth: the logged-in person's email (the nav shows it).
VISITOR_EMAIL = web.RequestKey("visitor_email", str)
# Set with it when the logged-in person is an operator (the nav shows /admin).
VISITOR_OPERATOR = web.RequestKey("visitor_operator", bool)
ACCOUNT_PAGES = web.AppKey("account_pages", bool)


def console_addr() -> str:
    """[AIPORT_CONSOLE_ADDR] HOST:PORT, default 127.0.0.1:9300."""
    return env("AIPORT_CONSOLE_ADDR", DEFAULT_ADDR)


def public_url() -> str:
    """[AIPORT_PUBLIC_URL] the origin clients use, shown in examples and docs."""
    return env("AIPORT_PUBLIC_URL", DEFAULT_PUBLIC_URL).rstrip("/")


def templates() -> jinja2.Environment:
    """HTML templates autoescape (a model name with `<` is text, never markup);
    the markdown reference does not (it is served as text/markdown, and /docs
    renders it with raw HTML off)."""
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("services.console", "templates"),
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html",), disabled_extensions=("md",), default=True
        ),
        undefined=jinja2.StrictUndefined,
    )
    environment.filters["rupiah"] = format_idr
    environment.filters["md_cell"] = docs.table_cell
    return environment


@dataclass(frozen=True)
class StaticFile:
    path: Path
    content_type: str
    version: str  # a hash of the content: URLs carry it, so caches can keep a file forever


def static_files(directory: Path = STATIC_DIR) -> dict[str, StaticFile]:
    """The files under static/ by name, read once at start. Only these names are
    served: no path from a request ever reaches the filesystem."""
    found = {}
    for path in sorted(directory.iterdir()):
        if path.is_file() and path.suffix in STATIC_TYPES:
            version = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
            found[path.name] = StaticFile(path, STATIC_TYPES[path.suffix], version)
    return found


def create_app(
    catalog: PriceSource,
    public_origin: str,
    accounts: AccountsClient | None = None,
    api: AccountApi | None = None,
) -> web.Application:
    """The console; with `accounts` and `api`, the account pages and the dashboard too."""
    # Imported here: account_pages renders with this module's helpers.
    from services.console import account_pages, admin_pages, topup_pages

    app = web.Application(
        middlewares=[
            request_id,
            language,
            error_pages,
            # /docs/ and the like: a redirect to the page without the slash, not a 404.
            web.normalize_path_middleware(append_slash=False, remove_slash=True),
            account_pages.session_auth,
            csrf_protection,
        ],
        client_max_size=MAX_BODY_BYTES,
    )
    app[CATALOG] = catalog
    app[PUBLIC_URL] = public_origin.rstrip("/")
    app[TEMPLATES] = templates()
    app[STATIC] = static_files()
    app[DOCS_CACHE] = {}
    app[DRAINING] = asyncio.Event()
    app.router.add_get("/", home, name="home")
    app.router.add_get("/pricing", pricing, name="pricing")
    app.router.add_get("/docs", docs_page, name="docs")
    app.router.add_get("/docs/aiport-docs.md", docs_markdown, name="docs_md")
    app.router.add_get("/lang/{code}", switch_language, name="lang")
    app.router.add_get("/static/{name}", static, name="static")
    app.router.add_get("/healthz", healthz, name="healthz")
    app[ACCOUNT_PAGES] = accounts is not None and api is not None
    if accounts is not None and api is not None:
        account_pages.add_routes(app, accounts, api)
        topup_pages.add_routes(app)
        admin_pages.add_routes(app)
    app.on_response_prepare.append(_add_security_headers)
    return app


def make_runner(app: web.Application, shutdown_seconds: float = SHUTDOWN_SECONDS) -> web.AppRunner:
    return web.AppRunner(
        app, access_log_class=AccessLogger, access_log=log, shutdown_timeout=shutdown_seconds
    )


async def serve(
    addr: str,
    catalog: PriceSource,
    public_origin: str,
    accounts: AccountsClient | None = None,
    api: AccountApi | None = None,
) -> None:
    """Run until SIGTERM/SIGINT, then drain like the other services: /healthz
    answers 503 for the drain delay, then pages in flight get the grace."""
    app = create_app(catalog, public_origin, accounts, api)
    await http_service.serve_app(
        app,
        addr,
        make_runner=make_runner,
        draining=app[DRAINING],
        default_grace=SHUTDOWN_SECONDS,
        log=log,
        public_url=app[PUBLIC_URL],
    )


# --- rendering ---------------------------------------------------------------------------


def lang_of(request: web.Request) -> str:
    return request[LANG] if LANG in request else i18n.FALLBACK


def render(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    app = request.app
    lang = lang_of(request)
    static_files_ = app[STATIC]

    def static_url(name: str) -> str:
        return f"/static/{name}?v={static_files_[name].version}"

    # Where the language switch brings the user back to (an error page: home,
    # so a mistyped path, which may hold anything, is never echoed).
    back_to = context.pop("current_path", request.path)
    page = (
        app[TEMPLATES]
        .get_template(template)
        .render(
            lang=lang,
            t=partial(i18n.translate, lang),
            nav=[
                {"href": item.href, "label": item.label, "current": item.href == request.path}
                for item in nav_items(request)
            ],
            visitor_email=request.get(VISITOR_EMAIL, ""),
            languages=[(code, i18n.LANGUAGE_NAMES[code]) for code in i18n.LANGUAGES],
            current_path=back_to,
            public_url=app[PUBLIC_URL],
            static_url=static_url,
            modality_name=partial(_modality_name, lang),
            number=partial(i18n.format_count, lang=lang),
            csrf_token=partial(csrf_token_for, request),
            **context,
        )
    )
    response = web.Response(text=page, status=status, content_type=HTML, charset="utf-8")
    _private(response)
    return response


def nav_items(request: web.Request) -> tuple[NavItem, ...]:
    if not request.app.get(ACCOUNT_PAGES):
        return NAV
    if VISITOR_EMAIL not in request:
        return NAV + NAV_LOGGED_OUT
    return NAV + NAV_LOGGED_IN + (NAV_ADMIN if request.get(VISITOR_OPERATOR) else ())


def _modality_name(lang: str, modality: str) -> str:
    key = f"modality.{modality}"
    return i18n.translate(lang, key) if key in i18n.MESSAGES[lang] else modality


def _private(response: web.StreamResponse) -> None:
    # Pages depend on the language (cookie, Accept-Language) and, later, on who is
    # logged in: no shared cache may keep one.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Vary"] = "Accept-Language, Cookie"


# --- pages -------------------------------------------------------------------------------


async def home(request: web.Request) -> web.Response:
    try:
        prices: PriceList | None = await request.app[CATALOG].price_list()
    except CatalogUnavailable:
        prices = None  # the page still explains aiport; the list says it is unavailable
    return render(request, "home.html", prices=prices)


async def pricing(request: web.Request) -> web.Response:
    prices = await request.app[CATALOG].price_list()
    return render(request, "pricing.html", prices=prices)


async def _reference(request: web.Request) -> tuple[str, str, list[docs.Heading]]:
    """(markdown, HTML, headings) of the API reference for the current price list,
    made once per price list (the catalog client keeps one for a few seconds)."""
    prices = await request.app[CATALOG].price_list()
    cache = request.app[DOCS_CACHE]
    if cache.get("prices") is not prices:
        markdown = docs.render_markdown(request.app[TEMPLATES], prices, request.app[PUBLIC_URL])
        html, headings = docs.to_html(markdown)
        cache.update(prices=prices, markdown=markdown, html=html, headings=headings)
    return cache["markdown"], cache["html"], cache["headings"]


async def docs_page(request: web.Request) -> web.Response:
    _, html, headings = await _reference(request)
    # Markup: markdown-it's output with raw HTML off (docs.py), not user text.
    return render(request, "docs.html", reference_html=Markup(html), headings=headings)


async def docs_markdown(request: web.Request) -> web.Response:
    markdown, _, _ = await _reference(request)
    response = web.Response(text=markdown, content_type=MARKDOWN, charset="utf-8")
    response.headers["Content-Disposition"] = 'inline; filename="aiport-docs.md"'
    response.headers["Cache-Control"] = "no-cache"
    return response


async def switch_language(request: web.Request) -> web.Response:
    code = request.match_info["code"]
    if code not in i18n.LANGUAGES:
        raise web.HTTPNotFound()
    target = security.local_path(request.query.get("next"))
    response = web.Response(status=303, headers={"Location": target})
    response.set_cookie(
        LANG_COOKIE,
        code,
        max_age=LANG_COOKIE_SECONDS,
        path="/",
        httponly=True,
        samesite="Lax",
        secure=is_https(request),
    )
    _private(response)
    return response


async def static(request: web.Request) -> web.StreamResponse:
    found = request.app[STATIC].get(request.match_info["name"])
    if found is None:
        raise web.HTTPNotFound()
    current = request.query.get("v") == found.version
    # A versioned URL names these exact bytes: keep it for a year. Without the
    # version (or an old one), revalidate every time.
    cache = "public, max-age=31536000, immutable" if current else "no-cache"
    return web.FileResponse(
        found.path,
        headers={"Content-Type": f"{found.content_type}; charset=utf-8", "Cache-Control": cache},
    )


async def healthz(request: web.Request) -> web.Response:
    if request.app[DRAINING].is_set():
        return _json({"status": "draining"}, 503)
    return _json({"status": "ok"})


# --- middlewares -------------------------------------------------------------------------


@web.middleware
async def request_id(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The edge's request id on this request's log lines and on the gRPC calls it
    makes (the gateway logs the same id)."""
    request[REQUEST_ID] = requestctx.ensure(request.headers.get(requestctx.HTTP_HEADER))
    token = requestctx.bind(request[REQUEST_ID])
    try:
        return await handler(request)
    finally:
        requestctx.unbind(token)


@web.middleware
async def language(request: web.Request, handler: Handler) -> web.StreamResponse:
    request[LANG] = i18n.pick_language(
        request.cookies.get(LANG_COOKIE), request.headers.get("Accept-Language")
    )
    return await handler(request)


@web.middleware
async def error_pages(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error is a page in the user's language for a browser, and our API
    error JSON for anything else; never a stack trace."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(request, exc.status, exc.headers.get("Allow"))
    except (CatalogUnavailable, AccountsUnavailable, ApiUnavailable):
        return error_response(request, 503)
    except RateLimited as limited:
        return too_many_attempts(request, limited.retry_after_seconds)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unexpected error", extra=fields(route=_route_name(request)))
        return error_response(request, 500)


def too_many_attempts(request: web.Request, retry_after_seconds: int) -> web.Response:
    """Accounts' rate limit (log-in, sign-up): a friendly page saying how long to wait."""
    minutes = max(1, -(-retry_after_seconds // 60))
    if wants_html(request):
        response = render(request, "too_many.html", status=429, current_path="/", minutes=minutes)
    else:
        response = error_response(request, 429)
    response.headers["Retry-After"] = str(max(1, retry_after_seconds))
    return response


def wants_html(request: web.Request) -> bool:
    """A browser asks for text/html; API clients and tools (curl's */*) do not."""
    return HTML in request.headers.get("Accept", "")


def error_response(request: web.Request, status: int, allow: str | None = None) -> web.Response:
    key, message, code = ERRORS.get(status, ERRORS[500] if status >= 500 else ERRORS[404])
    if wants_html(request):
        response = render(
            request,
            "error.html",
            status=status,
            code=status,
            current_path="/",
            title_key=f"{key}.title",
            body_key=f"{key}.body",
        )
    else:
        kind = "server_error" if status >= 500 else "invalid_request_error"
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        response = _json(body, status)
        _private(response)
    if allow:
        response.headers["Allow"] = allow
    return response


@web.middleware
async def csrf_protection(request: web.Request, handler: Handler) -> web.StreamResponse:
    """State-changing requests to a real route must carry the CSRF token of the
    browser's binding (security.py) and, when the browser says where it comes
    from, come from our origin. A fresh pre-session binding handed out while
    rendering (csrf_token_for) is set as a cookie on the way out."""
    matched = request.match_info.http_exception is None
    if matched and request.method not in security.SAFE_METHODS:
        if not origin_allowed(request):
            raise web.HTTPForbidden()
        binding = request.get(SESSION_BINDING) or request.cookies.get(security.CSRF_COOKIE)
        submitted = request.headers.get(security.CSRF_HEADER)
        if submitted is None and request.content_type in (
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ):
            form = await request.post()
            value = form.get(security.CSRF_FIELD)
            submitted = value if isinstance(value, str) else None
        if not security.csrf_matches(binding, submitted):
            raise web.HTTPForbidden()
    response = await handler(request)
    new_binding = request.get(NEW_CSRF_BINDING)
    if new_binding is not None:
        response.set_cookie(
            security.CSRF_COOKIE,
            new_binding,
            path="/",
            httponly=True,
            samesite="Lax",
            secure=is_https(request),
        )
    return response


def csrf_token_for(request: web.Request) -> str:
    """The token a form on this page must carry (templates: `csrf_token()`)."""
    binding = (
        request.get(SESSION_BINDING)
        or request.get(NEW_CSRF_BINDING)
        or request.cookies.get(security.CSRF_COOKIE)
    )
    if not binding or len(binding) < security.MIN_BINDING_CHARS:
        binding = security.new_binding()
        request[NEW_CSRF_BINDING] = binding
    return security.csrf_token(binding)


def is_https(request: web.Request) -> bool:
    """Whether the browser reached us over HTTPS (the edge says so in
    X-Forwarded-Proto; TLS ends before the console)."""
    return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


def origin_allowed(request: web.Request) -> bool:
    """The browser's `Origin` (if it sent one) is the site it was asked for, or
    our public origin (AIPORT_PUBLIC_URL)."""
    origin = request.headers.get("Origin")
    here = security.origin_of("https" if is_https(request) else "http", request.host)
    return security.same_origin(origin, here) or security.same_origin(
        origin, request.app[PUBLIC_URL]
    )


async def _add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in security.SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


def _json(obj: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, content_type="application/json")


# --- access log --------------------------------------------------------------------------


def _route_name(request: BaseRequest) -> str:
    match_info = getattr(request, "match_info", None)
    route = getattr(match_info, "route", None)
    name = getattr(route, "name", None)
    return name if isinstance(name, str) else "other"


class AccessLogger(AbstractAccessLogger):
    """One JSON line per request: method, route name, status, bytes, time.
    Never the path or query: later pages carry tokens in their links."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        route = _route_name(request)
        metrics.HTTP_REQUESTS.labels(f"console:{route}", str(response.status)).inc()
        self.logger.info(
            "request",
            extra=fields(
                request_id=request.get(REQUEST_ID),
                method=request.method,
                route=route,
                status=response.status,
                bytes=response.content_length,
                ms=round(time * 1000, 1),
            ),
        )
