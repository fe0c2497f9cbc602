"""The customer's journey through the console, over the edge with a cookie jar:
sign up, the mail in the sink, verify, log in, the dashboard, a key that works
for /v1 and stops at once when revoked, usage with its Rupiah cost and the same
rows in the CSV; and the refusals: a wrong password, an expired reset link, a
form without its CSRF token, the dashboard logged out, another person's key."""

from __future__ import annotations

import csv
import hashlib
import html
import io
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from aiport.v1 import accounts_pb2, accounts_pb2_grpc, billing_pb2, billing_pb2_grpc

from deploy.local.stack import Stack
from sandbox.mail_sink import mails_to, token_in, wait_for_mail
from services.common.money import idr_to_micros
from services.console.money import format_idr
from services.console.web_forms import SESSION_COOKIE

BROWSER = {"Accept": "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8", "Accept-Language": "en"}
PASSWORD = "nasi goreng 2025"
CHAT = {"model": "kimi-k2.6", "messages": [{"role": "user", "content": "hello [sim:tokens=7]"}]}


def csrf(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, page[:2000]
    return found.group(1)


def new_email() -> str:
    return f"budi-{secrets.token_hex(4)}@example.co.id"


@dataclass
class Person:
    email: str
    web: httpx.Client


def browser(base_url: str) -> httpx.Client:
    """A person's browser, at an address of its own (the stack trusts one proxy
    hop), so the per-address sign-up and log-in limits never carry from one
    test to the next; the rate limits are tested on their own."""
    address = f"2001:db8::{secrets.token_hex(2)}:{secrets.token_hex(2)}"
    return httpx.Client(
        base_url=base_url,
        headers={**BROWSER, "X-Forwarded-For": address},
        timeout=30,
        follow_redirects=False,
    )


def post_form(web: httpx.Client, path: str, page_path: str, **fields: str) -> httpx.Response:
    page = web.get(page_path)
    assert page.status_code == 200, (page_path, page.status_code, page.text[:500])
    return web.post(path, data={"csrf_token": csrf(page.text), **fields})


def sign_up_and_verify(web: httpx.Client, mail_folder: Path, email: str) -> None:
    before = len(mails_to(mail_folder, email))
    signed = post_form(web, "/signup", "/signup", email=email, password=PASSWORD)
    assert signed.status_code == 303, signed.text[:1000]
    assert signed.headers["location"] == "/signup/sent"
    assert web.get("/signup/sent").status_code == 200
    token = token_in(wait_for_mail(mail_folder, email, after=before), "/verify")
    # The link's GET shows a button and does not use the token.
    page = web.get("/verify", params={"token": token})
    assert (
        page.status_code == 200 and 'id="verify"' in page.text and 'id="verify-submit"' in page.text
    )
    verified = web.post("/verify", data={"csrf_token": csrf(page.text), "token": token})
    assert verified.status_code == 303 and verified.headers["location"] == "/login?verified=1"
    # Single use: the same link again is refused on the page.
    again = web.post("/verify", data={"csrf_token": csrf(page.text), "token": token})
    assert again.status_code == 400 and 'role="alert"' in again.text


def log_in(web: httpx.Client, email: str, password: str = PASSWORD) -> httpx.Response:
    return post_form(web, "/login", "/login", email=email, password=password)


@pytest.fixture
def person(base_url: str, mail_folder: Path) -> Iterator[Person]:
    with browser(base_url) as web:
        email = new_email()
        sign_up_and_verify(web, mail_folder, email)
        logged = log_in(web, email)
        assert logged.status_code == 303 and logged.headers["location"] == "/dashboard"
        yield Person(email, web)


def account_of(accounts: accounts_pb2_grpc.AccountsStub, email: str) -> str:
    user = accounts.FindUser(accounts_pb2.FindUserRequest(email=email))
    return str(user.memberships[0].billing_account_id)


def create_key(web: httpx.Client, name: str) -> tuple[str, str]:
    """(key id, the key) from the api-keys page."""
    created = post_form(web, "/dashboard/api-keys", "/dashboard/api-keys", name=name)
    assert created.status_code == 200, created.text[:1000]
    key = re.search(r'id="new-key-value">([^<]+)<', created.text)
    assert key and 'id="copy-key"' in created.text
    row = re.search(
        r'<tr data-key-id="(key_[0-9A-Za-z]+)"[^>]*>\s*<td class="name">' + re.escape(name),
        created.text,
    )
    assert row, created.text
    # Shown once: the list never shows it again.
    assert key.group(1) not in web.get("/dashboard/api-keys").text
    return row.group(1), key.group(1)


def test_the_journey_sign_up_to_a_revoked_key(
    base_url: str,
    person: Person,
    accounts: accounts_pb2_grpc.AccountsStub,
    billing: billing_pb2_grpc.BillingStub,
) -> None:
    web = person.web
    # The cookie: HttpOnly, SameSite=Lax, whole site.
    jar = [c for c in web.cookies.jar if c.name == SESSION_COOKIE]
    assert len(jar) == 1 and jar[0].path == "/"
    assert jar[0].has_nonstandard_attr("HttpOnly")
    assert str(jar[0].get_nonstandard_attr("SameSite")).lower() == "lax"

    account_id = account_of(accounts, person.email)
    billing.TopUp(
        billing_pb2.TopUpRequest(account_id=account_id, amount_micros=idr_to_micros("250000"))
    )
    page = web.get("/dashboard")
    assert page.status_code == 200
    assert re.search(r'id="balance-available"[^>]*>Rp 250\.000<', page.text), page.text
    assert re.search(r'id="balance-held"[^>]*>Rp 0<', page.text)
    assert 'id="logout"' in page.text and 'id="logout-submit"' in page.text

    key_id, key = create_key(web, "laptop")
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}) as api:
        balance = api.get("/v1/balance")
        assert balance.status_code == 200 and balance.json()["available_idr"] == "250000"
        chat = api.post("/v1/chat/completions", json=CHAT)
        assert chat.status_code == 200, chat.text
        request_id = chat.headers["x-request-id"]
        [record] = api.get("/v1/usage").json()["data"]
        assert record["request_id"] == request_id

        usage = web.get("/dashboard/usage")
        row = re.search(
            rf'<tr class="usage-row" data-request-id="{re.escape(request_id)}".*?</tr>',
            usage.text,
            re.S,
        )
        assert row, usage.text
        assert "kimi-k2.6" in row.group(0) and "laptop" in row.group(0)
        cost = re.search(r'<td class="money cost" data-idr="([^"]+)">([^<]+)<', row.group(0))
        assert cost and cost.group(1) == record["cost_idr"]
        assert html.unescape(cost.group(2)) == format_idr(record["cost_idr"])
        assert 'id="usage-csv"' in usage.text

        # The CSV: the same rows, filtered the same way.
        download = web.get("/dashboard/usage.csv", params={"key_id": key_id})
        assert download.status_code == 200
        assert download.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(download.text)))
        assert [(r["request_id"], r["cost_idr"], r["model"]) for r in rows] == [
            (request_id, record["cost_idr"], "kimi-k2.6")
        ]
        assert (
            web.get("/dashboard/usage", params={"model": "none-such"}).text.count(
                'class="usage-row"'
            )
            == 0
        )

        revoked = post_form(web, f"/dashboard/api-keys/{key_id}/revoke", "/dashboard/api-keys")
        assert revoked.status_code == 303
        assert api.get("/v1/balance").status_code == 401

    # Log out: the cookie goes and the session ends.
    token = web.cookies[SESSION_COOKIE]
    out = post_form(web, "/logout", "/dashboard")
    assert out.status_code == 303
    assert SESSION_COOKIE not in web.cookies
    web.cookies.set(SESSION_COOKIE, token)
    assert web.get("/dashboard").status_code == 303


def test_wrong_password_and_unknown_email_get_one_message(base_url: str, person: Person) -> None:
    with browser(base_url) as web:
        wrong = log_in(web, person.email, "not the password at all")
        unknown = log_in(web, new_email(), "not the password at all")
    for response in (wrong, unknown):
        assert response.status_code == 401
        assert '<p class="error" role="alert">Incorrect email or password.</p>' in response.text
        assert SESSION_COOKIE not in response.cookies


def test_logged_out_dashboard_redirects_to_login(base_url: str) -> None:
    with browser(base_url) as web:
        for path in ("/dashboard", "/dashboard/api-keys", "/dashboard/usage?model=x"):
            response = web.get(path)
            assert response.status_code == 303
            assert response.headers["location"].startswith("/login?next=/dashboard")


def test_a_post_without_its_csrf_token_is_403(base_url: str, person: Person) -> None:
    refused = person.web.post("/dashboard/api-keys", data={"name": "sneaky"})
    assert refused.status_code == 403
    assert "sneaky" not in person.web.get("/dashboard/api-keys").text
    with browser(base_url) as web:
        web.get("/login")
        assert (
            web.post("/login", data={"email": person.email, "password": PASSWORD}).status_code
            == 403
        )


def test_another_persons_key_is_404_and_keeps_working(
    base_url: str, mail_folder: Path, person: Person
) -> None:
    key_id, key = create_key(person.web, "theirs")
    with browser(base_url) as other:
        email = new_email()
        sign_up_and_verify(other, mail_folder, email)
        assert log_in(other, email).status_code == 303
        refused = post_form(other, f"/dashboard/api-keys/{key_id}/revoke", "/dashboard/api-keys")
        assert refused.status_code == 404
        assert key_id not in other.get("/dashboard/api-keys").text
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}) as api:
        assert api.get("/v1/balance").status_code == 200


def test_an_expired_reset_link_is_refused(
    base_url: str, stack: Stack, mail_folder: Path, person: Person
) -> None:
    with browser(base_url) as web:
        before = len(mails_to(mail_folder, person.email))
        asked = post_form(web, "/forgot-password", "/forgot-password", email=person.email)
        assert asked.status_code == 200 and 'id="forgot-sent"' in asked.text
        token = token_in(wait_for_mail(mail_folder, person.email, after=before), "/reset-password")
        with psycopg.connect(
            stack.config.database_url.replace("postgresql+psycopg://", "postgresql://"),
            autocommit=True,
        ) as db:
            db.execute(
                "UPDATE accounts.links SET created_at = now() - interval '2 hours',"
                " expires_at = now() - interval '1 hour' WHERE token_hash = %s",
                (hashlib.sha256(token.encode()).digest(),),
            )
        page = web.get("/reset-password", params={"token": token})
        assert 'id="reset"' in page.text
        refused = web.post(
            "/reset-password",
            data={"csrf_token": csrf(page.text), "token": token, "password": "a brand new one 9"},
        )
        assert refused.status_code == 400
        assert 'class="error" role="alert"' in refused.text
        # Unknown addresses get the same page as known ones.
        unknown = post_form(web, "/forgot-password", "/forgot-password", email=new_email())
        assert unknown.status_code == 200 and 'id="forgot-sent"' in unknown.text


def test_change_password_keeps_this_session_and_ends_the_others(
    base_url: str, person: Person
) -> None:
    with browser(base_url) as elsewhere:
        assert log_in(elsewhere, person.email).status_code == 303
        changed = post_form(
            person.web,
            "/dashboard/settings",
            "/dashboard/settings",
            current_password=PASSWORD,
            new_password="teh manis dingin 7",
        )
        assert changed.status_code == 303, changed.text[:1000]
        assert person.web.get("/dashboard").status_code == 200
        assert elsewhere.get("/dashboard").status_code == 303


def funded_api(
    base_url: str,
    person: Person,
    accounts: accounts_pb2_grpc.AccountsStub,
    billing: billing_pb2_grpc.BillingStub,
    key_name: str,
) -> httpx.Client:
    """The person's account credited 250,000 IDR by an operator, and an API
    client with a key they made on the keys page."""
    account_id = account_of(accounts, person.email)
    billing.TopUp(
        billing_pb2.TopUpRequest(account_id=account_id, amount_micros=idr_to_micros("250000"))
    )
    _, key = create_key(person.web, key_name)
    return httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def test_the_jobs_page_shows_the_persons_jobs_with_what_they_cost(
    base_url: str,
    person: Person,
    accounts: accounts_pb2_grpc.AccountsStub,
    billing: billing_pb2_grpc.BillingStub,
) -> None:
    with funded_api(base_url, person, accounts, billing, "jobs") as api:
        done = api.post("/v1/image/generate", json={"prompt": "a becak at dusk"}).json()["job_id"]
        failed = api.post("/v1/image/generate", json={"prompt": "x [sim:fail]"}).json()["job_id"]
        deadline = time.monotonic() + 30
        while {api.get(f"/v1/jobs/{j}").json()["status"] for j in (done, failed)} != {
            "done",
            "failed",
        }:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    page = person.web.get("/dashboard/jobs")
    assert page.status_code == 200, page.text[:500]
    for job_id in (done, failed):
        assert f'data-job-id="{job_id}"' in page.text
    failed_row = page.text.split(f'data-job-id="{failed}"', 1)[1].split("</tr>", 1)[0]
    assert 'data-status="failed"' in failed_row
    # A failed job gave its whole hold back.
    held = re.search(r'class="money held" data-idr="([0-9.]+)"', failed_row)
    refund = re.search(r'class="money refund" data-idr="([0-9.]+)"', failed_row)
    assert held and refund and held.group(1) == refund.group(1)
    only_done = person.web.get("/dashboard/jobs", params={"status": "done"}).text
    assert f'data-job-id="{done}"' in only_done and f'data-job-id="{failed}"' not in only_done


def test_the_billing_page_is_the_statement_with_the_balance_after_each_movement(
    base_url: str,
    person: Person,
    accounts: accounts_pb2_grpc.AccountsStub,
    billing: billing_pb2_grpc.BillingStub,
) -> None:
    with funded_api(base_url, person, accounts, billing, "billing") as api:
        reply = api.post(
            "/v1/chat/completions",
            json={"model": "kimi-k2.6", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert reply.status_code == 200, reply.text
        failed = api.post(
            "/v1/chat/completions",
            json={"model": "kimi-k2.6", "messages": [{"role": "user", "content": "x [sim:fail]"}]},
            headers={"x-request-id": "refund-me"},
        )
        assert failed.status_code == 502
        statement = api.get("/v1/statement").json()["data"]
    page = person.web.get("/dashboard/billing")
    assert page.status_code == 200, page.text[:500]
    kinds = re.findall(r'class="statement-row" data-entry-id="(\d+)" data-kind="(\w+)"', page.text)
    assert kinds == [(entry["id"], entry["kind"]) for entry in statement]
    assert [kind for _, kind in kinds] == ["charge", "topup"]
    after = re.findall(r'class="money balance-after" data-idr="([0-9.]+)"', page.text)
    assert after[0] == statement[0]["balance_after_idr"] and after[1] == "250000"
    assert 'id="billing-topup"' in page.text
    # The failed call is a refund, not a statement entry.
    assert 'class="refund-row" data-request-id="refund-me"' in page.text
    assert person.web.get("/dashboard/topup").status_code == 200


def test_an_operator_adjusts_disables_and_enables_an_account_from_admin(
    base_url: str,
    person: Person,
    mail_folder: Path,
    accounts: accounts_pb2_grpc.AccountsStub,
    accounts_admin: accounts_pb2_grpc.AccountsStub,
) -> None:
    customer = person
    account_id = account_of(accounts, customer.email)
    _, key = create_key(customer.web, "shop")
    # A customer has no /admin.
    assert customer.web.get("/admin").status_code == 404
    with browser(base_url) as web:
        email = new_email()
        sign_up_and_verify(web, mail_folder, email)
        accounts_admin.SetOperator(accounts_pb2.SetOperatorRequest(email=email, operator=True))
        assert log_in(web, email).status_code == 303
        assert 'href="/admin"' in web.get("/dashboard").text
        found = web.get("/admin", params={"q": customer.email})
        assert (
            found.status_code == 303
            and found.headers["location"] == f"/admin/accounts/{account_id}"
        )
        assert web.get("/admin", params={"q": "nobody@example.co.id"}).status_code == 404
        page = web.get(f"/admin/accounts/{account_id}")
        assert page.status_code == 200 and customer.email in page.text
        token = csrf(page.text)
        idem = re.search(r'name="idempotency_key" value="([^"]+)"', page.text)
        assert idem
        credit = {"csrf_token": token, "idempotency_key": idem.group(1), "reason": "goodwill"}
        for _ in range(2):  # a double submit of the same form
            done = web.post(
                f"/admin/accounts/{account_id}/adjust", data={**credit, "amount_idr": "12500.5"}
            )
            assert done.status_code == 303 and done.headers["location"].endswith("?done=adjust")
        page = web.get(f"/admin/accounts/{account_id}")
        assert 'id="admin-available" data-idr="12500.5"' in page.text
        assert page.text.count('data-kind="adjustment"') == 1
        no_reason = web.post(
            f"/admin/accounts/{account_id}/disable", data={"csrf_token": token, "reason": ""}
        )
        assert no_reason.headers["location"].endswith("?error=reason")
        disabled = web.post(
            f"/admin/accounts/{account_id}/disable", data={"csrf_token": token, "reason": "fraud"}
        )
        assert disabled.status_code == 303
        with httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as api:
            assert api.get("/v1/balance").status_code == 401
            enabled = web.post(f"/admin/accounts/{account_id}/enable", data={"csrf_token": token})
            assert enabled.status_code == 303
            assert api.get("/v1/balance").json()["available_idr"] == "12500.5"


def test_the_keys_page_shows_a_keys_controls(
    person: Person, billing: billing_pb2_grpc.BillingStub, accounts: accounts_pb2_grpc.AccountsStub
) -> None:
    """Set through the API (here billing, as the keys API and aiportctl do), read here."""
    web = person.web
    key_id, _ = create_key(web, "capped")
    plain_id, _ = create_key(web, "plain")
    billing.UpdateApiKey(
        billing_pb2.UpdateApiKeyRequest(
            key_id=key_id,
            account_id=account_of(accounts, person.email),
            settings=billing_pb2.ApiKeySettings(
                daily_cap_micros=5_000_000_000,
                allowed_models=billing_pb2.ModelAllowlist(models=["kimi-k2.6"]),
            ),
        )
    )
    page = web.get("/dashboard/api-keys").text

    def limits(row_key: str) -> str:
        cell = re.search(
            r'<tr data-key-id="' + row_key + r'".*?<td class="limits">(.*?)</td>', page, re.S
        )
        assert cell, page
        return cell.group(1)

    capped = limits(key_id)
    assert "5.000" in capped and "kimi-k2.6" in capped
    assert limits(plain_id) in ("No limits", "Tanpa batas")
