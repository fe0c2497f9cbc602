"""A logged-in person as a caller of the gateway's read and key-management
methods (the console's dashboard is a client of our own API).

The console passes the browser's session token in gRPC metadata
`x-aiport-session`. Only internal callers can: the edge drops every x-aiport-*
header a client sends (deploy/envoy/error_shaping.lua). The gateway asks the
accounts service who the session belongs to, and acts for that person's billing
account. Paid endpoints (chat, jobs, uploads) take API keys only: they read the
Authorization header before anything else, so a session there is a 401.

The rules are pure here; the accounts call is in server.Backends.
"""

from __future__ import annotations

from typing import Final

from aiport.v1 import accounts_pb2

SESSION_METADATA: Final = "x-aiport-session"
# What a session may do, by the person's role in the billing account: an owner
# reads and manages keys; any other member reads only.
OWNER_SCOPES: Final = ("inference", "manage")
MEMBER_SCOPES: Final = ("inference",)
# A session token is url-safe base64 (accounts' secrets); anything longer or
# stranger is not one, and is refused without a call.
MAX_SESSION_CHARS: Final = 256


def plausible_token(token: str) -> bool:
    """Whether `token` could be a session token (cheap check before the call)."""
    return 0 < len(token) <= MAX_SESSION_CHARS and all(
        ch.isascii() and (ch.isalnum() or ch in "-_") for ch in token
    )


def session_scopes(role: accounts_pb2.Membership.Role) -> tuple[str, ...]:
    """The scopes of a session acting in a billing account with this role."""
    return OWNER_SCOPES if role == accounts_pb2.Membership.OWNER else MEMBER_SCOPES


def acting_account(resolved: accounts_pb2.ResolvedSession) -> str | None:
    """The billing account a resolved session acts for (None: it has none)."""
    return resolved.billing_account_id or None


def is_operator(resolved: accounts_pb2.ResolvedSession) -> bool:
    """Whether the session's user holds the OPERATOR role (granted with aiportctl)."""
    return accounts_pb2.User.OPERATOR in resolved.user.roles
