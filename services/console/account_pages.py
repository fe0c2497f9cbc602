"""The customer's pages: sign-up, email verification, log-in and log-out,
password reset and change, and the dashboard (overview, API keys, usage).

People and sessions belong to the accounts service (accounts_client); the
dashboard's data comes from the gateway's public Account API, called with the
person's session (account_api): the dashboard is a client of our own API.

The session cookie (`aiport_session`, web_forms.session_cookie) is resolved
with accounts on every page view that carries it. Once resolved, the session
token is the CSRF binding (security.py), so a form rendered before log-in is
useless after it, and a log-in rotates the session (accounts ends the previous
one). Pure rules (forms, cookie, filters, CSV) are in web_forms and usage_view.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Final
from urllib.parse import quote
from zoneinfo import ZoneInfo

from aiohttp import web
from aiohttp.typedefs import Handler
from aiport.v1 import account_pb2, accounts_pb2, jobs_pb2, topups_pb2

from services.console import (
    i18n,
    jobs_view,
    money,
    security,
    spend_chart,
    times,
    topup_view,
    usage_view,
    web_forms,
)
from services.console.account_api import AccountApi, ApiRefused
from services.console.accounts_client import (
    AccountsClient,
    BadCredentials,
    FieldError,
    NotVerified,
    SessionEnded,
)
from services.console.server import (
    PUBLIC_URL,
    SESSION_BINDING,
    VISITOR_EMAIL,
    VISITOR_OPERATOR,
    is_https,
    lang_of,
    render,
)

ACCOUNTS = web.AppKey("accounts", AccountsClient)
API = web.AppKey("account_api", AccountApi)
SECURE_COOKIES = web.AppKey("secure_cookies", bool)


@dataclass(frozen=True)
class Visitor:
    """A logged-in person, for this request."""

    session_token: str
    email: str
    account_id: str
    operator: bool = False  # may use /admin (the gateway checks it again)


VISITOR = web.RequestKey("visitor", Visitor)
CLEAR_SESSION = web.RequestKey("clear_session", bool)

DASHBOARD: Final = "/dashboard"
# Routes that never need to know who is asking (no accounts call for them).
ANONYMOUS_ROUTES: Final = frozenset({"static", "healthz", "lang", "docs_md"})
# The person's time zone: a cookie set on the settings page (Asia/Jakarta
# when unset), like the language.
ZONE_COOKIE: Final = "tz"
ZONE_COOKIE_SECONDS: Final = 365 * 24 * 3600
# The billing page's recent top-ups (all of them: /dashboard/topup).
BILLING_TOPUPS: Final = 5


def zone_of(request: web.Request) -> str:
    return times.chosen(request.cookies.get(ZONE_COOKIE))


def add_routes(app: web.Application, accounts: AccountsClient, api: AccountApi) -> None:
    app[ACCOUNTS] = accounts
    app[API] = api
    app[SECURE_COOKIES] = web_forms.secure_cookies(app[PUBLIC_URL])
    router = app.router
    router.add_route("*", "/signup", signup, name="signup")
    router.add_get("/signup/sent", signup_sent, name="signup_sent")
    router.add_route("*", "/verify", verify, name="verify")
    router.add_route("*", "/login", login, name="login")
    router.add_post("/logout", logout, name="logout")
    router.add_route("*", "/forgot-password", forgot_password, name="forgot_password")
    router.add_route("*", "/reset-password", reset_password, name="reset_password")
    router.add_get("/dashboard", dashboard, name="dashboard")
    router.add_route("*", "/dashboard/settings", settings, name="settings")
    router.add_post("/dashboard/settings/time-zone", set_time_zone, name="set_time_zone")
    router.add_route("*", "/dashboard/api-keys", api_keys, name="api_keys")
    router.add_post("/dashboard/api-keys/{key_id}/revoke", revoke_key, name="revoke_key")
    router.add_get("/dashboard/usage", usage, name="usage")
    router.add_get("/dashboard/usage.csv", usage_csv, name="usage_csv")
    router.add_get("/dashboard/jobs", jobs, name="jobs")
    router.add_get("/dashboard/billing", billing, name="billing")
    router.add_post("/dashboard/billing/alert", balance_alert, name="balance_alert")
    # The top-up pages: topup_pages.add_routes.


# --- the session ---------------------------------------------------------------------------


@web.middleware
async def session_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Who is asking: the session cookie resolved with accounts (an ended one is
    cleared). Dashboard pages need a session: without one, log in first."""
    app = request.app
    route = request.match_info.route.name
    token = request.cookies.get(web_forms.SESSION_COOKIE, "")
    if ACCOUNTS in app and token and route not in ANONYMOUS_ROUTES:
        try:
            resolved = await app[ACCOUNTS].resolve(token)
        except (SessionEnded, FieldError):
            request[CLEAR_SESSION] = True
        else:
            request[VISITOR] = Visitor(
                token,
                resolved.user.email,
                resolved.billing_account_id,
                accounts_pb2.User.OPERATOR in resolved.user.roles,
            )
            request[VISITOR_EMAIL] = resolved.user.email
            request[VISITOR_OPERATOR] = request[VISITOR].operator
            request[SESSION_BINDING] = token
    protected = request.path == DASHBOARD or request.path.startswith(DASHBOARD + "/")
    if protected and VISITOR not in request and request.match_info.http_exception is None:
        response: web.StreamResponse = to_login(request)
    else:
        response = await handler(request)
    if request.get(CLEAR_SESSION):
        response.del_cookie(web_forms.SESSION_COOKIE, path="/")
    return response


def to_login(request: web.Request) -> web.Response:
    """303 to /login, back here afterwards (a GET page; a POST goes to the dashboard)."""
    back = request.path_qs if request.method == "GET" else DASHBOARD
    return see_other(f"/login?next={quote(back, safe='/')}")


def see_other(location: str) -> web.Response:
    response = web.Response(status=303, headers={"Location": location})
    response.headers["Cache-Control"] = "no-store"
    return response


def visitor(request: web.Request) -> Visitor:
    found: Visitor | None = request.get(VISITOR)
    if found is None:  # session_auth lets no dashboard request through without one
        raise web.HTTPNotFound()
    return found


def set_session(
    request: web.Request, response: web.StreamResponse, token: str, expires: int
) -> None:
    spec = web_forms.session_cookie(
        token, expires, int(time.time()), request.app[SECURE_COOKIES] or is_https(request)
    )
    response.set_cookie(
        spec.name,
        spec.value,
        max_age=spec.max_age,
        path=spec.path,
        httponly=spec.httponly,
        samesite=spec.samesite,
        secure=spec.secure,
    )
    request[CLEAR_SESSION] = False


def address(request: web.Request) -> str:
    return web_forms.client_address(request.headers, request.remote)


async def form_data(request: web.Request) -> dict[str, str]:
    """The form's text fields (the first of each name; no file uploads here)."""
    fields: dict[str, str] = {}
    for name, value in (await request.post()).items():
        if isinstance(value, str):
            fields.setdefault(name, value)
    return fields


def t(request: web.Request, key: str, **values: object) -> str:
    return i18n.translate(lang_of(request), key, **values)


def texts(request: web.Request, errors: dict[str, str]) -> dict[str, str]:
    """Message keys -> this page's language."""
    return {name: t(request, key) for name, key in errors.items()}


def field_refusal(
    request: web.Request, error: FieldError, fields: tuple[str, ...]
) -> dict[str, str]:
    """Accounts' refusal of a field, next to that field (or the form's first)."""
    name = web_forms.form_field(error.field, fields) or fields[0]
    detail = web_forms.field_message(lang_of(request), error.detail)
    return {name: detail or t(request, f"field.{name}")}


# --- sign-up and verification --------------------------------------------------------------


async def signup(request: web.Request) -> web.StreamResponse:
    if request.method == "GET":
        return render(request, "signup.html", values={}, errors={})
    if request.method != "POST":
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "POST"])
    form = web_forms.credentials_form(await form_data(request), new_account=True)
    values = {"email": form.values["email"]}
    if not form.ok:
        return render(
            request, "signup.html", 400, values=values, errors=texts(request, form.errors)
        )
    try:
        await request.app[ACCOUNTS].sign_up(
            form.values["email"], form.values["password"], lang_of(request), address(request)
        )
    except FieldError as error:
        errors = field_refusal(request, error, ("email", "password"))
        return render(request, "signup.html", 400, values=values, errors=errors)
    return see_other("/signup/sent")


async def signup_sent(request: web.Request) -> web.Response:
    return render(request, "signup_sent.html")


async def verify(request: web.Request) -> web.StreamResponse:
    # A GET only shows the button: mail scanners open links, and must not use the token.
    if request.method == "GET":
        return render(request, "verify.html", token=request.query.get("token", ""), error="")
    if request.method != "POST":
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "POST"])
    token = (await form_data(request)).get("token", "")
    try:
        await request.app[ACCOUNTS].verify_email(token)
    except FieldError:
        return render(request, "verify.html", 400, token="", error=t(request, "verify.bad_link"))
    return see_other("/login?verified=1")


# --- log-in and log-out --------------------------------------------------------------------


async def login(request: web.Request) -> web.StreamResponse:
    next_path = security.local_path(request.query.get("next"), DASHBOARD)
    notice = ""
    if request.query.get("verified") == "1":
        notice = t(request, "login.verified")
    elif request.query.get("reset") == "1":
        notice = t(request, "login.reset")
    if request.method == "GET":
        return render(
            request, "login.html", values={}, errors={}, error="", notice=notice, next=next_path
        )
    if request.method != "POST":
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "POST"])
    raw = await form_data(request)
    next_path = security.local_path(raw.get("next"), DASHBOARD)
    form = web_forms.credentials_form(raw, new_account=False)
    values = {"email": form.values["email"]}

    def failed(errors: dict[str, str], error: str = "") -> web.Response:
        return render(
            request,
            "login.html",
            400 if errors else 401,
            values=values,
            errors=errors,
            error=error,
            notice="",
            next=next_path,
        )

    if not form.ok:
        return failed(texts(request, form.errors))
    try:
        granted = await request.app[ACCOUNTS].log_in(
            form.values["email"],
            form.values["password"],
            address(request),
            request.cookies.get(web_forms.SESSION_COOKIE, ""),
        )
    except BadCredentials:
        return failed({}, t(request, "login.failed"))
    except NotVerified:
        return failed({}, t(request, "login.not_verified"))
    except FieldError as error:
        return failed(field_refusal(request, error, ("email", "password")))
    response = see_other(next_path)
    set_session(request, response, granted.session_token, granted.expires_at_unix)
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    token = request.cookies.get(web_forms.SESSION_COOKIE, "")
    if token:
        await request.app[ACCOUNTS].log_out(token)
    response = see_other("/")
    response.del_cookie(web_forms.SESSION_COOKIE, path="/")
    request.pop(VISITOR, None)
    return response


# --- passwords -----------------------------------------------------------------------------


async def forgot_password(request: web.Request) -> web.StreamResponse:
    if request.method == "GET":
        return render(request, "forgot.html", values={}, errors={})
    if request.method != "POST":
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "POST"])
    form = web_forms.email_form(await form_data(request))
    if not form.ok:
        return render(
            request, "forgot.html", 400, values=form.values, errors=texts(request, form.errors)
        )
    try:
        await request.app[ACCOUNTS].request_password_reset(form.values["email"], address(request))
    except FieldError as error:
        errors = field_refusal(request, error, ("email",))
        return render(request, "forgot.html", 400, values=form.values, errors=errors)
    # The same page whether or not the address is registered.
    return render(request, "forgot_sent.html")


async def reset_password(request: web.Request) -> web.StreamResponse:
    if request.method == "GET":
        token = request.query.get("token", "")
        return render(request, "reset.html", token=token, errors={}, error="")
    if request.method != "POST":
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "POST"])
    raw = await form_data(request)
    token = raw.get("token", "")
    form = web_forms.new_password_form(raw, ("password",))
    if not form.ok:
        errors = texts(request, form.errors)
        return render(request, "reset.html", 400, token=token, errors=errors, error="")
    try:
        await request.app[ACCOUNTS].reset_password(token, form.values["password"])
    except FieldError as error:
        if error.field == "token":
            bad_link = t(request, "reset.bad_link")
            return render(request, "reset.html", 400, token="", errors={}, error=bad_link)
        errors = field_refusal(request, error, ("password",))
        return render(request, "reset.html", 400, token=token, errors=errors, error="")
    return see_other("/login?reset=1")


async def settings(request: web.Request) -> web.StreamResponse:
    who = visitor(request)
    fields = ("current_password", "new_password")
    if request.method == "GET":
        changed = request.query.get("changed") == "1"
        return render(
            request,
            "settings.html",
            errors={},
            changed=changed,
            email=who.email,
            zones=times.CHOICES,
            zone=zone_of(request),
            request_zone_saved=request.query.get("zone") == "1",
        )
    if request.method != "POST":
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "POST"])
    form = web_forms.new_password_form(await form_data(request), fields)

    def failed(errors: dict[str, str]) -> web.Response:
        return render(
            request,
            "settings.html",
            400,
            errors=errors,
            changed=False,
            email=who.email,
            zones=times.CHOICES,
            zone=zone_of(request),
        )

    if not form.ok:
        return failed(texts(request, form.errors))
    try:
        granted = await request.app[ACCOUNTS].change_password(
            who.session_token,
            form.values["current_password"],
            form.values["new_password"],
            address(request),
        )
    except FieldError as error:
        return failed(field_refusal(request, error, fields))
    # Accounts ended every session, this one too, and made a new one for us.
    response = see_other("/dashboard/settings?changed=1")
    set_session(request, response, granted.session_token, granted.expires_at_unix)
    return response


async def set_time_zone(request: web.Request) -> web.StreamResponse:
    """Remember the person's time zone (a cookie, like the language); every page
    and the usage filters' days follow it."""
    visitor(request)
    choice = (await form_data(request)).get("time_zone", "")
    if choice not in times.CHOICES:
        raise web.HTTPBadRequest()
    response = see_other("/dashboard/settings?zone=1")
    response.set_cookie(
        ZONE_COOKIE,
        choice,
        max_age=ZONE_COOKIE_SECONDS,
        path="/",
        httponly=True,
        samesite="Lax",
        secure=request.app[SECURE_COOKIES],
    )
    return response


# --- the dashboard -------------------------------------------------------------------------


async def dashboard(request: web.Request) -> web.StreamResponse:
    who = visitor(request)
    api = request.app[API]
    lang = lang_of(request)
    now = int(time.time())
    try:
        balance = await api.balance(who.session_token)
        month = usage_view.month_start_unix(now, zone_of(request))
        report = await api.summary(
            who.session_token,
            account_pb2.UsageSummaryQuery(group_by="model", start_time=str(month)),
        )
        daily = await api.summary(
            who.session_token,
            account_pb2.UsageSummaryQuery(group_by="day", time_zone=zone_of(request)),
        )
        recent = await api.usage(who.session_token, account_pb2.UsageQuery(limit="5"))
        recent_jobs = await api.jobs(who.session_token, jobs_pb2.ListJobsRequest(limit="5"))
    except ApiRefused as refused:
        return api_refusal(request, refused)
    days = {
        group.group: {model: Decimal(idr) for model, idr in group.cost_idr_by_model.items()}
        for group in daily.data
    }
    today = datetime.fromtimestamp(now, ZoneInfo(zone_of(request))).date()
    return render(
        request,
        "dashboard.html",
        email=who.email,
        available=balance.available_idr,
        held=balance.held_idr,
        month_cost=report.total_cost_idr,
        month_requests=report.total_requests,
        by_model=list(report.data),
        chart=spend_chart.build(days, today),
        recent=[
            {
                "time": times.format_datetime(entry.created, lang, zone_of(request)),
                "model": entry.model,
                "endpoint": entry.endpoint,
                "cost_idr": entry.cost_idr,
                "status_label": _status_label(lang, entry.status),
                "request_id": entry.request_id,
            }
            for entry in recent.data
        ],
        recent_jobs=[jobs_view.job_row(job, lang, zone_of(request)) for job in recent_jobs.data],
    )


def api_refusal(request: web.Request, refused: ApiRefused) -> web.Response:
    """The gateway said no: an ended session logs in again, a missing key is a 404,
    anything else the matching error page."""
    if refused.status == 401:
        request[CLEAR_SESSION] = True
        return to_login(request)
    if refused.status in (400, 404):
        raise web.HTTPNotFound()
    raise web.HTTPForbidden()


async def _keys_page(
    request: web.Request, who: Visitor, status: int = 200, **context: object
) -> web.Response:
    keys = await request.app[API].keys(who.session_token)
    lang = lang_of(request)
    rows = [
        {
            "id": key.id,
            "name": key.name,
            "prefix": key.prefix,
            "scopes": list(key.scopes),
            "created": times.format_datetime(key.created, lang, zone_of(request)),
            "last_used": _when(usage_view.value_text(key.last_used), lang, zone_of(request)),
            "revoked": _when(usage_view.value_text(key.revoked), lang, zone_of(request)),
            "limits": _limits(request, key, lang),
        }
        for key in keys.data
    ]
    context.setdefault("new_key", None)
    context.setdefault("errors", {})
    context.setdefault("values", {})
    return render(request, "api_keys.html", status, keys=rows, **context)


def _limits(request: web.Request, key: account_pb2.Key, lang: str) -> list[str]:
    """A key's controls as lines a person reads: each spend cap with what it counted,
    its model allowlist and its expiry ([] for a key without any)."""
    value = usage_view.value_text
    lines = []
    for name, cap, spent in (
        ("keys.cap.daily", key.spend_caps.daily_idr, key.spent.today_idr),
        ("keys.cap.monthly", key.spend_caps.monthly_idr, key.spent.this_month_idr),
        ("keys.cap.lifetime", key.spend_caps.lifetime_idr, key.spent.lifetime_idr),
    ):
        if value(cap):
            lines.append(
                t(
                    request,
                    name,
                    spent=money.format_idr(spent or "0"),
                    cap=money.format_idr(value(cap)),
                )
            )
    models = key.allowed_models.list_value.values if key.HasField("allowed_models") else []
    if models:
        lines.append(t(request, "keys.models", models=", ".join(m.string_value for m in models)))
    expires = value(key.expires_at)
    if expires:
        lines.append(t(request, "keys.expires", when=_when(expires, lang, zone_of(request))))
    return lines


def _when(unix_text: str, lang: str, zone: str) -> str:
    return times.format_datetime(int(unix_text), lang, zone) if unix_text.isdigit() else ""


async def api_keys(request: web.Request) -> web.StreamResponse:
    who = visitor(request)
    try:
        if request.method == "GET":
            return await _keys_page(request, who)
        if request.method != "POST":
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "POST"])
        form = web_forms.key_name_form(await form_data(request))
        if not form.ok:
            errors = texts(request, form.errors)
            return await _keys_page(request, who, 400, errors=errors, values=form.values)
        try:
            created = await request.app[API].create_key(who.session_token, form.values["name"])
        except ApiRefused as refused:
            if refused.status != 400:
                raise
            errors = {"name": t(request, "field.name")}
            return await _keys_page(request, who, 400, errors=errors, values=form.values)
        # Shown this once: the page is not cached (no-store) and the key is never stored.
        new_key = {"id": created.id, "name": created.name, "key": created.key}
        return await _keys_page(request, who, new_key=new_key)
    except ApiRefused as refused:
        return api_refusal(request, refused)


async def revoke_key(request: web.Request) -> web.StreamResponse:
    who = visitor(request)
    try:
        await request.app[API].revoke_key(who.session_token, request.match_info["key_id"])
    except ApiRefused as refused:
        return api_refusal(request, refused)
    return see_other("/dashboard/api-keys")


async def usage(request: web.Request) -> web.StreamResponse:
    who = visitor(request)
    filters = usage_view.parse_filters(request.query)
    lang = lang_of(request)
    api = request.app[API]
    try:
        page = await api.usage(
            who.session_token,
            usage_view.usage_query(filters, usage_view.PAGE_SIZE, zone_of(request)),
        )
        keys = await api.keys(who.session_token)
    except ApiRefused as refused:
        if refused.status == 401:
            return api_refusal(request, refused)
        filters.errors.setdefault(refused.param or "from", "usage.bad_filter")
        return render(
            request,
            "usage.html",
            400,
            zone=zone_of(request),
            filters=filters,
            errors=texts(request, filters.errors),
            rows=[],
            keys=[],
            next_url="",
            csv_url="/dashboard/usage.csv?" + filters.query_string(),
        )
    rows = [
        {
            "id": entry.id,
            "request_id": entry.request_id,
            "time": times.format_datetime(entry.created, lang, zone_of(request)),
            "iso_time": usage_view.iso_time(entry.created, zone_of(request)),
            "key_name": entry.key_name,
            "key_id": usage_view.value_text(entry.key_id),
            "model": entry.model,
            "endpoint": entry.endpoint,
            "input_tokens": entry.input_tokens,
            "cached_input_tokens": entry.cached_input_tokens,
            "output_tokens": entry.output_tokens,
            "reasoning_tokens": entry.reasoning_tokens,
            "cost_idr": entry.cost_idr,
            "status": entry.status,
            "status_label": _status_label(lang, entry.status),
            "latency_ms": usage_view.value_text(entry.latency_ms),
        }
        for entry in page.data
    ]
    cursor = usage_view.value_text(page.next_cursor)
    next_url = (
        "/dashboard/usage?" + filters.query_string(after=cursor) if page.has_more and cursor else ""
    )
    return render(
        request,
        "usage.html",
        400 if filters.errors else 200,
        zone=zone_of(request),
        filters=filters,
        errors=texts(request, filters.errors),
        rows=rows,
        keys=[{"id": key.id, "name": key.name or key.prefix} for key in keys.data],
        next_url=next_url,
        csv_url="/dashboard/usage.csv?" + filters.query_string(),
    )


async def jobs(request: web.Request) -> web.StreamResponse:
    who = visitor(request)
    filters = jobs_view.parse_filters(request.query)
    lang = lang_of(request)
    try:
        page = await request.app[API].jobs(who.session_token, filters.query())
    except ApiRefused as refused:
        return api_refusal(request, refused)
    rows = [jobs_view.job_row(job, lang, zone_of(request)) for job in page.data]
    for row in rows:
        row["status_label"] = i18n.translate(lang, f"jobs.status.{row['status']}")
    cursor = usage_view.value_text(page.next_cursor)
    return render(
        request,
        "jobs.html",
        zone=zone_of(request),
        filters=filters,
        statuses=jobs_view.STATUSES,
        rows=rows,
        next_url=filters.next_url(cursor) if page.has_more and cursor else "",
    )


async def billing(request: web.Request) -> web.StreamResponse:
    """The ledger in the customer's words: the balance (and a debt, if a spent
    top-up was taken back), money still held for calls in flight, the recent
    top-ups, every movement with the balance after it, and the low-balance alert."""
    who = visitor(request)
    try:
        return await _billing_page(request, who, alert_saved=request.query.get("alert") == "1")
    except ApiRefused as refused:
        return api_refusal(request, refused)


async def balance_alert(request: web.Request) -> web.StreamResponse:
    """Set or turn off the low-balance email (POST /v1/balance/alert)."""
    who = visitor(request)
    form = topup_view.threshold_form(await form_data(request))
    try:
        if not form.ok:
            return await _billing_page(
                request, who, 400, alert_errors=texts(request, form.errors), alert_value=form.values
            )
        try:
            await request.app[API].set_balance_alert(
                who.session_token, form.values["threshold_idr"]
            )
        except ApiRefused as refused:
            if refused.status != 400:
                raise
            errors = {"threshold_idr": t(request, "billing.alert_invalid")}
            return await _billing_page(
                request, who, 400, alert_errors=errors, alert_value=form.values
            )
    except ApiRefused as refused:
        return api_refusal(request, refused)
    return see_other("/dashboard/billing?alert=1#alert")


async def _billing_page(
    request: web.Request, who: Visitor, status: int = 200, **context: object
) -> web.Response:
    lang = lang_of(request)
    after = request.query.get("after", "")
    api = request.app[API]
    balance = await api.balance(who.session_token)
    page = await api.statement(
        who.session_token,
        account_pb2.StatementQuery(limit="50", after=after if after.isdigit() else ""),
    )
    recent = await api.usage(who.session_token, account_pb2.UsageQuery(limit="100"))
    topups = await api.topups(who.session_token, topups_pb2.TopUpQuery(limit=str(BILLING_TOPUPS)))
    entries = [
        {
            "id": entry.id,
            "time": times.format_datetime(entry.created, lang, zone_of(request)),
            "iso_time": usage_view.iso_time(entry.created, zone_of(request)),
            "kind": entry.kind,
            "kind_label": _kind_label(lang, entry.kind),
            "amount_idr": entry.amount_idr,
            "balance_after_idr": entry.balance_after_idr,
            "description": entry.description,
        }
        for entry in page.data
    ]
    in_flight = [
        {
            "time": times.format_datetime(record.created, lang, zone_of(request)),
            "model": record.model,
            "endpoint": record.endpoint,
            "held_idr": record.held_idr,
            "request_id": record.request_id,
        }
        for record in recent.data
        if record.status == "in_progress"
    ]
    # A failed call's hold came back whole: no balance movement, so not on the
    # statement, but the customer's "refund" (the latest, from usage).
    refunds = [
        {
            "time": times.format_datetime(record.created, lang, zone_of(request)),
            "model": record.model,
            "endpoint": record.endpoint,
            "held_idr": record.held_idr,
            "request_id": record.request_id,
        }
        for record in recent.data
        if record.status in ("refunded", "expired")
    ]
    cursor = usage_view.value_text(page.next_cursor)
    threshold = usage_view.value_text(balance.low_balance_alert_idr)
    context.setdefault("alert_errors", {})
    context.setdefault("alert_value", {})
    context.setdefault("alert_saved", False)
    context.setdefault("current_path", "/dashboard/billing")
    return render(
        request,
        "billing.html",
        status,
        zone=zone_of(request),
        available=balance.available_idr,
        held=balance.held_idr,
        debt=balance.debt_idr if topup_view.positive(balance.debt_idr) else "",
        threshold=threshold if topup_view.positive(threshold) else "",
        topups=[topup_view.topup_row(item, lang, zone_of(request)) for item in topups.data],
        entries=entries,
        in_flight=in_flight,
        refunds=refunds,
        next_url=f"/dashboard/billing?after={cursor}" if page.has_more and cursor else "",
        **context,
    )


def _kind_label(lang: str, kind: str) -> str:
    # A kind billing adds later shows as its name until it has words here.
    key = f"billing.kind.{kind}"
    return i18n.translate(lang, key) if key in i18n.MESSAGES[lang] else kind


def _status_label(lang: str, status: str) -> str:
    key = f"usage.status.{status}"
    return i18n.translate(lang, key) if key in i18n.MESSAGES[lang] else status


async def usage_csv(request: web.Request) -> web.StreamResponse:
    """Every record the filters select, newest first, streamed page by page."""
    who = visitor(request)
    filters = usage_view.parse_filters(request.query)
    if filters.errors:
        raise web.HTTPNotFound()
    api = request.app[API]
    query = usage_view.usage_query(filters, usage_view.CSV_PAGE_SIZE, zone_of(request), after="")
    try:
        page = await api.usage(who.session_token, query)
    except ApiRefused as refused:
        return api_refusal(request, refused)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": 'attachment; filename="aiport-usage.csv"',
            "Cache-Control": "no-store",
        }
    )
    await response.prepare(request)
    await response.write(usage_view.csv_lines([list(usage_view.CSV_COLUMNS)]).encode())
    written = 0
    while True:
        rows = [usage_view.csv_row(entry, zone_of(request)) for entry in page.data]
        rows = rows[: usage_view.CSV_MAX_ROWS - written]
        await response.write(usage_view.csv_lines(rows).encode())
        written += len(rows)
        cursor = usage_view.value_text(page.next_cursor)
        if not page.has_more or not cursor or written >= usage_view.CSV_MAX_ROWS:
            break
        query.after = cursor
        page = await api.usage(who.session_token, query)
    await response.write_eof()
    return response
