"""A customer's journey in a real browser, as a person clicks it: sign up, the
mail in the sink, verify, log in, a key from the api-keys page, an operator's
credit, a call from the openai SDK with that key, the call on the usage page at
its cost, the key revoked and refused. And the refusals a person may meet: a
wrong password, an expired reset link, a tampered form (CSRF), another
person's key by URL."""

from __future__ import annotations

import hashlib
import secrets
from decimal import Decimal
from pathlib import Path

import httpx
import openai
import pytest
from aiport.v1 import accounts_pb2, accounts_pb2_grpc, billing_pb2, billing_pb2_grpc

from deploy.local.stack import Stack
from sandbox.mail_sink import mails_to, token_in, wait_for_mail
from services.common.money import idr_to_micros, micros_to_idr
from tests.browser.conftest import Tab
from tests.integration.conftest import balance_micros
from tests.integration.test_accounts import db, sign_up
from tests.integration.test_console import rupiah_value

Accounts = accounts_pb2_grpc.AccountsStub
PASSWORD = "sambal matah 2025"
# The sandbox upstream answers with 7 output tokens: a small, exact charge.
PROMPT = "Halo! [sim:tokens=7]"
MODEL = "kimi-k2.6"


def new_email(tag: str) -> str:
    return f"{tag}-{secrets.token_hex(4)}@example.co.id"


def sign_up_in_browser(tab: Tab, mail_folder: Path, email: str) -> None:
    """From the sign-up form to the log-in page, through the mailed link."""
    tab.open("/signup")
    tab.page.fill("form#signup [name=email]", email)
    tab.page.fill("form#signup [name=password]", PASSWORD)
    before = len(mails_to(mail_folder, email))
    tab.click("#signup-submit")
    assert tab.page.url.endswith("/signup/sent")

    mail = wait_for_mail(mail_folder, email, after=before)
    # Opening the link only shows a button (mail scanners open links too).
    tab.open(f"/verify?token={token_in(mail, '/verify')}")
    assert tab.page.locator("form#verify").count() == 1
    tab.click("#verify-submit")
    assert tab.page.url.endswith("/login?verified=1")


def log_in(tab: Tab, email: str, password: str = PASSWORD, *, status: int = 200) -> None:
    if "/login" not in tab.page.url:
        tab.open("/login")
    tab.page.fill("form#login [name=email]", email)
    tab.page.fill("form#login [name=password]", password)
    tab.click("#login-submit", status=status)


def create_key(tab: Tab, name: str) -> tuple[str, str]:
    """(key id, the key) as the api-keys page shows them once."""
    tab.open("/dashboard/api-keys")
    tab.page.fill("form#create-key [name=name]", name)
    tab.click("#create-key-submit")
    key = tab.text("#new-key-value")
    row = tab.page.locator(
        "table#keys tr[data-key-id]", has=tab.page.locator("td.name", has_text=name)
    )
    assert row.count() == 1
    key_id = row.get_attribute("data-key-id")
    assert key_id and key_id.startswith("key_"), key_id
    return key_id, key


def account_of(accounts: Accounts, email: str) -> str:
    user = accounts.FindUser(accounts_pb2.FindUserRequest(email=email))
    return str(user.memberships[0].billing_account_id)


def sdk(base_url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0)


def test_sign_up_to_a_paid_call_to_a_revoked_key(
    tab: Tab,
    base_url: str,
    mail_folder: Path,
    accounts: Accounts,
    billing: billing_pb2_grpc.BillingStub,
) -> None:
    page = tab.page
    email = new_email("sari")
    sign_up_in_browser(tab, mail_folder, email)
    log_in(tab, email)
    assert page.url.endswith("/dashboard")
    assert rupiah_value(tab.text("#balance-available")) == 0

    # The key, shown once, and its copy button (a script file: the CSP allows no inline one).
    tab.page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    key_id, key = create_key(tab, "laptop")
    assert key.startswith("aip_live_")
    page.click("#copy-key")
    assert page.evaluate("navigator.clipboard.readText()") == key
    tab.open("/dashboard/api-keys")
    assert page.locator("#new-key-value").count() == 0
    assert key not in page.content()

    # An operator credits the account (billing's TopUp, with the admin token).
    account_id = account_of(accounts, email)
    billing.TopUp(
        billing_pb2.TopUpRequest(account_id=account_id, amount_micros=idr_to_micros("250000"))
    )
    tab.open("/dashboard")
    assert tab.text("#balance-available") == "Rp 250.000"
    assert rupiah_value(tab.text("#balance-held")) == 0

    before = balance_micros(billing, account_id)
    raw = sdk(base_url, key).chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": PROMPT}]
    )
    completion = raw.parse()
    assert completion.choices[0].message.content
    request_id = raw.headers["x-request-id"]
    spent = before - balance_micros(billing, account_id)
    assert spent > 0

    # The API's record of the call costs exactly what left the balance...
    listed = httpx.get(
        f"{base_url}/v1/usage", headers={"Authorization": f"Bearer {key}"}, timeout=30
    )
    assert listed.status_code == 200, listed.text
    [record] = [r for r in listed.json()["data"] if r["request_id"] == request_id]
    assert idr_to_micros(record["cost_idr"]) == spent

    # ...and the usage page shows that record, at that cost, in Rupiah.
    tab.open("/dashboard/usage")
    row = page.locator(f'table#usage tr.usage-row[data-request-id="{request_id}"]')
    assert row.count() == 1
    assert row.locator("td.model").inner_text().strip() == MODEL
    assert rupiah_value(row.locator("td.cost").inner_text().strip()) == Decimal(
        micros_to_idr(spent)
    )
    assert row.locator("td.status").get_attribute("data-status") == record["status"]
    assert row.locator("td.status").inner_text().strip()
    tab.open("/dashboard")
    assert rupiah_value(tab.text("#balance-available")) == Decimal(micros_to_idr(before - spent))

    # Revoked on the page: the very next call is refused.
    tab.open("/dashboard/api-keys")
    tab.click(f'tr[data-key-id="{key_id}"] .revoke-key-submit')
    assert page.url.endswith("/dashboard/api-keys")
    assert page.locator(f'tr[data-key-id="{key_id}"] form.revoke-key').count() == 0
    with pytest.raises(openai.AuthenticationError) as refused:
        sdk(base_url, key).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": PROMPT}]
        )
    assert refused.value.status_code == 401

    # Logged out, the dashboard asks for a log-in again.
    tab.click("#logout-submit")
    tab.open("/dashboard/usage")
    assert "/login?next=" in page.url


def test_wrong_password_and_unknown_email_show_one_message(
    tab: Tab, accounts: Accounts, mail_folder: Path
) -> None:
    person = sign_up(accounts, mail_folder)
    log_in(tab, person.email, "not the password 123", status=401)
    wrong = tab.text(".error[role=alert]")
    assert tab.page.input_value("form#login [name=email]").lower() == person.email.lower()
    assert tab.page.input_value("form#login [name=password]") == ""  # never sent back
    log_in(tab, new_email("nobody"), "not the password 123", status=401)
    assert tab.text(".error[role=alert]") == wrong
    assert "/login" in tab.page.url  # no session
    tab.open("/dashboard")
    assert "/login?next=" in tab.page.url


def test_an_expired_reset_link_shows_the_error(
    tab: Tab, stack: Stack, accounts: Accounts, mail_folder: Path
) -> None:
    person = sign_up(accounts, mail_folder)
    tab.open("/forgot-password")
    tab.page.fill("form#forgot [name=email]", person.email)
    before = len(mails_to(mail_folder, person.email))
    tab.click("#forgot-submit")
    token = token_in(wait_for_mail(mail_folder, person.email, after=before), "/reset-password")
    # Its hour has passed.
    with db(stack) as conn:
        conn.execute(
            "UPDATE accounts.links SET created_at = now() - interval '2 hours',"
            " expires_at = now() - interval '1 hour' WHERE token_hash = %s",
            (hashlib.sha256(token.encode()).digest(),),
        )
    tab.open(f"/reset-password?token={token}")
    tab.page.fill("form#reset [name=password]", "a brand new password 7")
    tab.click("#reset-submit", status=400)
    assert tab.text(".error[role=alert]")
    assert tab.page.locator("form#reset").count() == 0
    # The old password still works.
    log_in(tab, person.email, person.password)
    assert tab.page.url.endswith("/dashboard")


def test_a_form_with_a_tampered_csrf_token_is_refused(
    tab: Tab, accounts: Accounts, mail_folder: Path
) -> None:
    person = sign_up(accounts, mail_folder)
    log_in(tab, person.email, person.password)
    tab.open("/dashboard/api-keys")
    field = tab.page.locator("form#create-key input[name=csrf_token]")
    token = field.get_attribute("value") or ""
    assert len(token) > 20
    tampered = ("A" if token[0] != "A" else "B") + token[1:]
    field.evaluate("(input, value) => { input.value = value; }", tampered)
    tab.page.fill("form#create-key [name=name]", "forged")
    tab.click("#create-key-submit", status=403)
    tab.open("/dashboard/api-keys")
    assert tab.page.locator("td.name", has_text="forged").count() == 0


def test_another_persons_key_cannot_be_revoked_by_url(
    tab: Tab, tab_id: Tab, base_url: str, accounts: Accounts, mail_folder: Path
) -> None:
    owner, other = sign_up(accounts, mail_folder), sign_up(accounts, mail_folder)
    log_in(tab, owner.email, owner.password)
    owners_key_id, owners_key = create_key(tab, "server")
    log_in(tab_id, other.email, other.password)
    create_key(tab_id, "mine")
    # The other person points their own revoke form at the owner's key.
    form = tab_id.page.locator("table#keys form.revoke-key").first
    form.evaluate(
        "(form, action) => form.setAttribute('action', action)",
        f"/dashboard/api-keys/{owners_key_id}/revoke",
    )
    tab_id.click("table#keys .revoke-key-submit", status=404)
    # The owner's key still works and is still listed as active.
    balance = httpx.get(
        f"{base_url}/v1/balance", headers={"Authorization": f"Bearer {owners_key}"}, timeout=30
    )
    assert balance.status_code == 200, balance.text
    tab.open("/dashboard/api-keys")
    assert tab.page.locator(f'tr[data-key-id="{owners_key_id}"] form.revoke-key').count() == 1
