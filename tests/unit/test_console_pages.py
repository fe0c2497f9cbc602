"""The account pages and the dashboard rendered by the real app, with accounts
and the gateway faked: every hook of the pages' contract (JOURNEY.md) in both
languages, CSP-clean HTML, the session middleware's redirect and cookies, and
accounts' refusals as the pages show them."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, cast
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiport.v1 import account_pb2, accounts_pb2, jobs_pb2, topups_pb2
from google.protobuf import struct_pb2

from services.console import security
from services.console.account_api import AccountApi, ApiRefused
from services.console.accounts_client import (
    AccountsClient,
    BadCredentials,
    FieldError,
    RateLimited,
    SessionEnded,
)
from services.console.server import create_app

TOKEN = "t" * 43
KEY_ID = "key_" + "k" * 20
HTML = {"Accept": "text/html"}


class FakeAccounts:
    def __init__(self) -> None:
        self.refuse_login: Exception | None = None
        self.logged_out: list[str] = []

    async def resolve(self, token: str) -> accounts_pb2.ResolvedSession:
        if token != TOKEN:
            raise SessionEnded()
        return accounts_pb2.ResolvedSession(
            user=accounts_pb2.User(email="ana@example.com"), billing_account_id="acct_1"
        )

    async def log_in(self, email: str, password: str, address: str, previous: str) -> Any:
        if self.refuse_login is not None:
            raise self.refuse_login
        return accounts_pb2.NewSession(session_token=TOKEN, expires_at_unix=4_000_000_000)

    async def sign_up(self, email: str, password: str, locale: str, address: str) -> None:
        raise FieldError("email", "the part after @ is not a valid domain")

    async def log_out(self, token: str) -> None:
        self.logged_out.append(token)


class FakeApi:
    async def balance(self, session: str) -> account_pb2.Balance:
        return account_pb2.Balance(available_idr="1250000", held_idr="0.35")

    async def summary(
        self, session: str, query: account_pb2.UsageSummaryQuery
    ) -> account_pb2.UsageReport:
        if query.group_by != "day":
            return account_pb2.UsageReport(total_cost_idr="4500", total_requests=3)
        today = datetime.now(ZoneInfo("Asia/Jakarta")).date().isoformat()
        day = account_pb2.UsageGroupTotals(group=today, requests=3, cost_idr="4500")
        day.cost_idr_by_model["kimi-k2.6"] = "4000"
        day.cost_idr_by_model["gpt-image-2"] = "500"
        return account_pb2.UsageReport(group_by="day", data=[day])

    async def keys(self, session: str) -> account_pb2.KeyList:
        key = account_pb2.Key(id=KEY_ID, name="laptop", prefix="aip_live_AbCd", created=1774976400)
        key.last_used.null_value = struct_pb2.NULL_VALUE
        key.revoked.null_value = struct_pb2.NULL_VALUE
        return account_pb2.KeyList(data=[key])

    async def create_key(self, session: str, name: str) -> account_pb2.CreatedKey:
        return account_pb2.CreatedKey(id=KEY_ID, name=name, key="aip_live_secret")

    async def revoke_key(self, session: str, key_id: str) -> account_pb2.Key:
        raise ApiRefused(404, "No such key.", None)

    async def usage(self, session: str, query: account_pb2.UsageQuery) -> account_pb2.UsageList:
        entry = account_pb2.UsageEntry(
            id="hold_" + "h" * 20,
            created=1774976400,
            key_name="laptop",
            model="kimi-k2.6",
            endpoint="chat.completions",
            request_id="req-42",
            status="succeeded",
            cost_idr="1250.5",
        )
        page = account_pb2.UsageList(data=[entry], has_more=True)
        page.next_cursor.string_value = "hold_" + "n" * 20
        return page

    async def statement(
        self, session: str, query: account_pb2.StatementQuery
    ) -> account_pb2.Statement:
        charge = account_pb2.StatementEntry(
            id="9",
            created=1774976400,
            kind="charge",
            amount_idr="-1250.5",
            balance_after_idr="98749.5",
            description="chat kimi-k2.6 req-42",
        )
        topup = account_pb2.StatementEntry(
            id="8",
            created=1774970000,
            kind="topup",
            amount_idr="100000",
            balance_after_idr="100000",
        )
        page = account_pb2.Statement(data=[charge, topup], has_more=True)
        page.next_cursor.string_value = "8"
        return page

    async def topups(self, session: str, query: topups_pb2.TopUpQuery) -> topups_pb2.TopUpList:
        return topups_pb2.TopUpList()

    async def quote_topup(
        self, session: str, amount_idr: str, gateway: str
    ) -> topups_pb2.TopUpQuote:
        if gateway != "midtrans":
            raise ApiRefused(400, "This gateway is not available.", "gateway")
        return topups_pb2.TopUpQuote(
            gateway=gateway, amount_idr=amount_idr, minimum_idr="10000", maximum_idr="20000000"
        )

    async def jobs(self, session: str, query: jobs_pb2.ListJobsRequest) -> jobs_pb2.JobList:
        job = jobs_pb2.Job(
            job_id="job_" + "j" * 26,
            status="failed",
            created_at="2026-04-01T00:00:00Z",
            model="gpt-image-2",
            estimated_cost_idr="2400",
        )
        job.actual_cost_idr.string_value = "0"
        job.error_code.string_value = "provider_error"
        page = jobs_pb2.JobList(data=[job], has_more=True)
        page.next_cursor.string_value = "MTpqb2Jf"
        return page


class NoPrices:
    async def price_list(self) -> Any:
        raise AssertionError("not used by these pages")


@pytest.fixture
async def accounts() -> FakeAccounts:
    return FakeAccounts()


@pytest.fixture
async def client(accounts: FakeAccounts) -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(
        NoPrices(),
        "http://127.0.0.1:8080",
        cast(AccountsClient, accounts),
        cast(AccountApi, FakeApi()),
    )
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


def csp_clean(page: str) -> None:
    assert not re.search(r"<script(?![^>]*\bsrc=)", page), "inline script"
    assert " style=" not in page and "<style" not in page, "inline style"
    assert re.search(r" on[a-z]+=", page) is None, "inline event handler"


@pytest.mark.parametrize("lang", ["id", "en"])
@pytest.mark.parametrize(
    ("path", "hooks"),
    [
        ("/signup", ['form id="signup"', 'name="email"', 'name="password"', 'id="signup-submit"']),
        (
            "/verify?token=abc",
            ['form id="verify"', 'name="token" value="abc"', 'id="verify-submit"'],
        ),
        ("/login", ['form id="login"', 'name="email"', 'name="password"', 'id="login-submit"']),
        ("/forgot-password", ['form id="forgot"', 'name="email"', 'id="forgot-submit"']),
        ("/reset-password?token=abc", ['form id="reset"', 'name="password"', 'id="reset-submit"']),
        ("/signup/sent", ['id="signup-sent"']),
    ],
)
async def test_public_account_pages_carry_their_hooks(
    client: TestClient[Any, Any], lang: str, path: str, hooks: list[str]
) -> None:
    response = await client.get(path, headers={**HTML, "Accept-Language": lang})
    page = await response.text()
    assert response.status == 200, page
    assert f'<html lang="{lang}">' in page
    for hook in hooks:
        assert hook in page, hook
    if "<form" in page:
        assert 'name="csrf_token" value="' in page
    csp_clean(page)
    assert 'href="/login"' in page and 'id="logout"' not in page


@pytest.mark.parametrize("lang", ["id", "en"])
@pytest.mark.parametrize(
    ("path", "hooks"),
    [
        (
            "/dashboard",
            [
                'id="balance-available"',
                "Rp 1.250.000",
                'id="balance-held"',
                "Rp 0,35",
                'figure id="spend-chart"',
                'class="bar"',
                ": 4000 IDR</title>",
                "<code>gpt-image-2</code>",
                'table id="recent-requests"',
                'data-request-id="req-42"',
                f'tr class="recent-job" data-job-id="job_{"j" * 26}"',
            ],
        ),
        (
            "/dashboard/api-keys",
            [
                'form id="create-key"',
                'id="create-key-submit"',
                'table id="keys"',
                f'tr data-key-id="{KEY_ID}"',
                'class="revoke-key"',
                'class="revoke-key-submit"',
                f'action="/dashboard/api-keys/{KEY_ID}/revoke"',
            ],
        ),
        (
            "/dashboard/billing",
            [
                'id="billing-available"',
                'id="billing-topup"',
                'table id="statement"',
                'tr class="statement-row" data-entry-id="9" data-kind="charge"',
                "-Rp 1.250,50",
                'id="statement-next"',
                'href="/dashboard/billing?after=8"',
                'id="in-flight-empty"',
                'id="refunds-empty"',
                'id="billing-topups-empty"',
                'form id="balance-alert"',
            ],
        ),
        (
            "/dashboard/topup",
            ['form id="topup-form"', 'name="preset"', "Rp 20.000.000", 'id="topups-empty"'],
        ),
        (
            "/dashboard/jobs?status=failed",
            [
                'form id="jobs-filters"',
                'table id="jobs"',
                f'tr class="job-row" data-job-id="job_{"j" * 26}"',
                'data-status="failed"',
                "provider_error",
                'class="money refund" data-idr="2400"',
                'id="jobs-next"',
                'href="/dashboard/jobs?status=failed&amp;after=MTpqb2Jf"',
            ],
        ),
        (
            "/dashboard/usage?from=2026-03-01&model=kimi-k2.6",
            [
                'form id="usage-filters"',
                'name="from"',
                'name="to"',
                'name="model"',
                'name="key_id"',
                'table id="usage"',
                'tr class="usage-row" data-request-id="req-42"',
                'class="model"',
                'class="money cost"',
                "Rp 1.250,50",
                'class="status"',
                'id="usage-next"',
                "after=hold_",
                'id="usage-csv"',
                'href="/dashboard/usage.csv?from=2026-03-01&amp;model=kimi-k2.6"',
            ],
        ),
        (
            "/dashboard/settings",
            [
                'form id="change-password"',
                'name="current_password"',
                'name="new_password"',
                'id="change-password-submit"',
            ],
        ),
    ],
)
async def test_dashboard_pages_carry_their_hooks(
    client: TestClient[Any, Any], lang: str, path: str, hooks: list[str]
) -> None:
    client.session.cookie_jar.update_cookies({"aiport_session": TOKEN})
    response = await client.get(path, headers={**HTML, "Accept-Language": lang})
    page = await response.text()
    assert response.status == 200, page
    for hook in hooks:
        assert hook in page, hook
    assert 'form id="logout"' in page and 'id="logout-submit"' in page
    assert 'href="/dashboard/api-keys"' in page
    csp_clean(page)


async def test_the_dashboard_without_a_session_redirects_to_login(
    client: TestClient[Any, Any],
) -> None:
    response = await client.get("/dashboard/usage?model=x", allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/login?next=/dashboard/usage%3Fmodel%3Dx"
    client.session.cookie_jar.update_cookies({"aiport_session": "ended" * 8})
    response = await client.get("/dashboard", allow_redirects=False)
    assert response.status == 303
    # The ended session's cookie is cleared.
    assert 'aiport_session=""' in response.headers.get("Set-Cookie", "")


async def _form_token(client: TestClient[Any, Any], path: str) -> str:
    page = await (await client.get(path, headers=HTML)).text()
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found
    return found.group(1)


async def test_log_in_sets_the_session_cookie_and_goes_on(client: TestClient[Any, Any]) -> None:
    token = await _form_token(client, "/login?next=/dashboard/usage")
    response = await client.post(
        "/login",
        data={
            "csrf_token": token,
            "email": "ana@example.com",
            "password": "x" * 12,
            "next": "/dashboard/usage",
        },
        allow_redirects=False,
    )
    assert response.status == 303 and response.headers["Location"] == "/dashboard/usage"
    cookie = response.cookies["aiport_session"]
    assert cookie.value == TOKEN
    assert cookie["httponly"] and cookie["samesite"] == "Lax" and cookie["path"] == "/"
    assert not cookie["secure"]  # AIPORT_PUBLIC_URL is http here


async def test_log_in_refusals_show_one_message(
    client: TestClient[Any, Any], accounts: FakeAccounts
) -> None:
    accounts.refuse_login = BadCredentials()
    token = await _form_token(client, "/login")
    response = await client.post(
        "/login",
        data={"csrf_token": token, "email": "ana@example.com", "password": "x" * 12},
        headers={"Accept-Language": "en", **HTML},
    )
    assert response.status == 401
    assert '<p class="error" role="alert">Incorrect email or password.</p>' in await response.text()
    accounts.refuse_login = RateLimited(150)
    response = await client.post(
        "/login",
        data={"csrf_token": token, "email": "ana@example.com", "password": "x" * 12},
        headers={"Accept-Language": "en", **HTML},
    )
    assert response.status == 429 and response.headers["Retry-After"] == "150"
    assert "about 3 minutes" in await response.text()


async def test_an_accounts_field_refusal_is_next_to_its_field(client: TestClient[Any, Any]) -> None:
    token = await _form_token(client, "/signup")
    response = await client.post(
        "/signup",
        data={"csrf_token": token, "email": "ana@example", "password": "x" * 12},
        headers={"Accept-Language": "en", **HTML},
    )
    page = await response.text()
    assert response.status == 400
    assert (
        '<span class="error" role="alert" id="email-error">'
        "The part after @ is not a valid domain.</span>" in page
    )
    assert 'value="ana@example"' in page and 'value="xxxxxxxxxxxx"' not in page


async def test_forms_need_the_sessions_csrf_token(client: TestClient[Any, Any]) -> None:
    anonymous = await _form_token(client, "/login")
    client.session.cookie_jar.update_cookies({"aiport_session": TOKEN})
    # The token of the page before log-in does not fit the session.
    refused = await client.post("/dashboard/api-keys", data={"csrf_token": anonymous, "name": "x"})
    assert refused.status == 403
    token = await _form_token(client, "/dashboard/api-keys")
    assert token == security.csrf_token(TOKEN)
    created = await client.post("/dashboard/api-keys", data={"csrf_token": token, "name": "ci"})
    page = await created.text()
    assert created.status == 200
    assert '<code id="new-key-value">aip_live_secret</code>' in page and 'id="copy-key"' in page
    # Another account's key (the gateway says 404) is a 404 page.
    missing = await client.post(
        f"/dashboard/api-keys/{KEY_ID}/revoke", data={"csrf_token": token}, headers=HTML
    )
    assert missing.status == 404


async def test_log_out_ends_the_session_and_clears_the_cookie(
    client: TestClient[Any, Any], accounts: FakeAccounts
) -> None:
    client.session.cookie_jar.update_cookies({"aiport_session": TOKEN})
    token = await _form_token(client, "/dashboard")
    response = await client.post("/logout", data={"csrf_token": token}, allow_redirects=False)
    assert response.status == 303 and response.headers["Location"] == "/"
    assert accounts.logged_out == [TOKEN]
    assert 'aiport_session=""' in response.headers["Set-Cookie"]


async def test_times_follow_the_zone_chosen_in_settings(client: TestClient[Any, Any]) -> None:
    client.session.cookie_jar.update_cookies({"aiport_session": TOKEN})
    en = {**HTML, "Accept-Language": "en"}
    default = await (await client.get("/dashboard/usage", headers=en)).text()
    assert "2026, 00:00 WIB" in default and "Dates and times in WIB (Asia/Jakarta)." in default
    token = await _form_token(client, "/dashboard/settings")
    saved = await client.post(
        "/dashboard/settings/time-zone",
        data={"csrf_token": token, "time_zone": "Asia/Jayapura"},
        allow_redirects=False,
    )
    assert saved.status == 303 and saved.headers["Location"] == "/dashboard/settings?zone=1"
    cookie = saved.cookies["tz"]
    assert cookie.value == "Asia/Jayapura" and cookie["httponly"] and cookie["path"] == "/"
    shown = await (await client.get("/dashboard/usage", headers=en)).text()
    assert "2026, 02:00 WIT" in shown and "Dates and times in WIT (Asia/Jayapura)." in shown
    settings_page = await (await client.get("/dashboard/settings?zone=1", headers=en)).text()
    assert 'id="zone-saved"' in settings_page
    assert '<option value="Asia/Jayapura" selected>' in settings_page
    refused = await client.post(
        "/dashboard/settings/time-zone",
        data={"csrf_token": token, "time_zone": "Europe/Paris"},
        allow_redirects=False,
    )
    assert refused.status == 400
    # A zone we do not offer, set by hand, is Jakarta.
    client.session.cookie_jar.clear(lambda cookie: cookie.key == "tz")
    client.session.cookie_jar.update_cookies({"tz": "Europe/Paris"})
    assert "WIB" in await (await client.get("/dashboard/usage", headers=en)).text()
