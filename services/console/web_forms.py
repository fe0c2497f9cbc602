"""The pure rules of the console's account pages: the session cookie, the
client address accounts counts rate limits by, and reading and checking the
forms (sign-up, log-in, password changes, key names) before any call.

The console checks only what it can tell without accounts (a field present, a
password long enough); accounts checks everything again and its refusals name
the field too (accounts_client.FieldError).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

SESSION_COOKIE: Final = "aiport_session"
# The edge sets this on every request, overwriting a client's (deploy/envoy):
# the address it saw, or the one its trusted load balancers appended to
# x-forwarded-for.
CLIENT_ADDRESS_HEADER: Final = "X-Aiport-Client-Address"
MIN_PASSWORD_CHARS: Final = 10  # accounts' rule (services/accounts/rules.py)
MAX_FIELD_CHARS: Final = 1024
MAX_KEY_NAME_CHARS: Final = 100  # the gateway's rule (account_views.py)


@dataclass(frozen=True)
class CookieSpec:
    """What Set-Cookie says for the session (aiohttp's set_cookie arguments)."""

    name: str
    value: str
    max_age: int
    path: str = "/"
    httponly: bool = True
    samesite: str = "Lax"
    secure: bool = False


def session_cookie(token: str, expires_at_unix: int, now_unix: int, secure: bool) -> CookieSpec:
    """The session cookie: HttpOnly (no script reads it), SameSite=Lax (no
    cross-site POST carries it), Secure over HTTPS, and gone when the session's
    absolute lifetime ends (accounts ends it then anyway)."""
    return CookieSpec(
        SESSION_COOKIE, token, max_age=max(0, expires_at_unix - now_unix), secure=secure
    )


def secure_cookies(public_url: str) -> bool:
    """Cookies are Secure when the site is served over HTTPS (AIPORT_PUBLIC_URL)."""
    return public_url.lower().startswith("https://")


def client_address(headers: Mapping[str, str], remote: str | None) -> str:
    """The browser's address as the edge saw it; the peer's when the console is
    reached directly (tests, a developer). Accounts needs an IP address."""
    for candidate in (headers.get(CLIENT_ADDRESS_HEADER, ""), remote or ""):
        candidate = candidate.strip()
        try:
            return str(ipaddress.ip_address(candidate))
        except ValueError:
            continue
    return "127.0.0.1"


@dataclass
class Form:
    """Submitted values (never the passwords when re-rendered) and the errors by field.
    An error is a message key, or ("detail", text) from accounts in English."""

    values: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors


def _text(raw: Mapping[str, object], name: str) -> str:
    value = raw.get(name, "")
    return value[:MAX_FIELD_CHARS] if isinstance(value, str) else ""


def credentials_form(raw: Mapping[str, object], new_account: bool) -> Form:
    """email + password (sign-up checks the password's length too)."""
    form = Form({"email": _text(raw, "email").strip(), "password": _text(raw, "password")})
    if not form.values["email"]:
        form.errors["email"] = "form.required"
    elif "@" not in form.values["email"]:
        form.errors["email"] = "form.email"
    if not form.values["password"]:
        form.errors["password"] = "form.required"
    elif new_account and len(form.values["password"]) < MIN_PASSWORD_CHARS:
        form.errors["password"] = "form.password_short"
    return form


def email_form(raw: Mapping[str, object]) -> Form:
    form = Form({"email": _text(raw, "email").strip()})
    if not form.values["email"]:
        form.errors["email"] = "form.required"
    elif "@" not in form.values["email"]:
        form.errors["email"] = "form.email"
    return form


def new_password_form(raw: Mapping[str, object], names: tuple[str, ...]) -> Form:
    """Password fields: every one required, the last (the new one) long enough."""
    form = Form({name: _text(raw, name) for name in names})
    for name in names:
        if not form.values[name]:
            form.errors[name] = "form.required"
    new = names[-1]
    if new not in form.errors and len(form.values[new]) < MIN_PASSWORD_CHARS:
        form.errors[new] = "form.password_short"
    return form


def key_name_form(raw: Mapping[str, object]) -> Form:
    form = Form({"name": _text(raw, "name").strip()})
    name = form.values["name"]
    if not name:
        form.errors["name"] = "form.required"
    elif len(name) > MAX_KEY_NAME_CHARS or any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        form.errors["name"] = "form.key_name"
    return form


# Accounts names its own fields; the pages name some differently.
FIELD_ALIASES: Final = {"new_password": "password"}


def form_field(accounts_field: str, page_fields: tuple[str, ...]) -> str:
    """Which field of this page an accounts refusal belongs to (accounts calls the
    reset form's password `new_password`); '' when it is none of them."""
    if accounts_field in page_fields:
        return accounts_field
    alias = FIELD_ALIASES.get(accounts_field, "")
    return alias if alias in page_fields else ""


def field_message(lang: str, detail: str) -> str:
    """Accounts explains a refusal in English ("must be at least 10 characters"):
    shown as is in English; Indonesian pages show their own message (the caller
    falls back to the field's generic key)."""
    if lang != "en" or not detail:
        return ""
    return detail[:1].upper() + detail[1:] + ("" if detail.endswith(".") else ".")
