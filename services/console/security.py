"""The console's browser-facing security rules, as pure functions: the headers
every response carries, CSRF tokens, and which redirect targets are safe.

CSRF design (ready for the forms that come with accounts): a token *bound* to
a secret the browser holds in an HttpOnly cookie and an attacker cannot read.

- The binding is the session token once there is a session, and before that
  (sign-up, log-in forms) a random pre-session cookie, `aiport_csrf`.
- The token is a hash of the binding: the page embeds it in a hidden field
  (or a script sends it as `X-CSRF`), the server recomputes it from the cookie
  and compares in constant time. Because it is derived, nothing is stored, any
  replica can check it, and it changes whenever the session does (login
  rotates the session, so a token seen before login is useless after it).
- A cross-site page can make the browser *send* the cookie but cannot read
  the token out of our page, so it cannot forge the field. On top of that the
  `Origin` of an unsafe request, when the browser sends one, must be ours, and
  the cookies are SameSite=Lax.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from typing import Final
from urllib.parse import urlsplit

# Everything from our own origin, as files: no inline script or style (so an
# injected <script> or style attribute does nothing), no plugins, no framing,
# forms post only to us, <base> cannot redirect relative URLs.
CSP: Final = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS: Final[Mapping[str, str]] = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    # Our URLs may carry tokens later (a verification link): never send them on.
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}

SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_COOKIE: Final = "aiport_csrf"
CSRF_FIELD: Final = "csrf_token"
# Not X-CSRF-Token: the edge drops request headers whose names look like credentials.
CSRF_HEADER: Final = "X-CSRF"
_CSRF_CONTEXT: Final = b"aiport-console-csrf-v1\x00"
# A binding shorter than this was not made by new_binding(): refused.
MIN_BINDING_CHARS: Final = 32


def new_binding() -> str:
    """A fresh pre-session secret for the CSRF cookie (256 random bits)."""
    return secrets.token_urlsafe(32)


def csrf_token(binding: str) -> str:
    """The token forms carry for this binding (the session or pre-session secret)."""
    if len(binding) < MIN_BINDING_CHARS:
        raise ValueError("a CSRF binding must be a secret of at least 32 characters")
    digest = hashlib.sha256(_CSRF_CONTEXT + binding.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def csrf_matches(binding: str | None, submitted: str | None) -> bool:
    """Whether `submitted` is this binding's token, in constant time."""
    if not binding or not submitted or len(binding) < MIN_BINDING_CHARS:
        return False
    return hmac.compare_digest(csrf_token(binding).encode(), submitted.encode())


def same_origin(origin: str | None, expected: str) -> bool:
    """An `Origin` header against our origin (scheme://host[:port]). No header
    is not a refusal (older browsers, same-origin GET-initiated forms); the token
    decides then. `null` (sandboxed or privacy-stripped) is refused."""
    if origin is None:
        return True
    return origin.strip().lower() == expected.lower()


def origin_of(scheme: str, host: str) -> str:
    """scheme://host as a browser writes it in `Origin` (default ports left out)."""
    host = host.lower()
    for default in ((":80", "http"), (":443", "https")):
        if scheme == default[1] and host.endswith(default[0]):
            host = host[: -len(default[0])]
    return f"{scheme}://{host}"


def local_path(target: str | None, default: str = "/") -> str:
    """`target` if it is a path on this site, else `default`: a `next=` parameter
    must never send the user to another site (`//evil`, `/\\evil`, `https:...`)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return default
    if any(ch in target for ch in "\r\n\t\\") or any(ord(ch) < 0x20 for ch in target):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return default
    return target
