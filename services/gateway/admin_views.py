"""Operators' /v1/admin as the public API shows it (pure: no I/O).

Parses the queries and bodies of the admin methods into what billing and
accounts take, naming the field in every 400, and shapes their answers. The
listings (statement, usage, jobs) reuse the customer's own parsers and shapes
(account_views.py, job_listing.py): an operator sees what the customer sees.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from aiport.v1 import account_pb2, accounts_pb2, admin_pb2, billing_pb2
from google.protobuf import struct_pb2

from services.common.money import AmountError, idr_to_micros, micros_to_idr
from services.gateway import errors
from services.gateway.errors import PublicError

_ACCOUNT_ID = re.compile(r"acct_[0-9A-Za-z]{20}")
# Loose on purpose: accounts normalizes and checks the address itself.
_EMAIL = re.compile(r"[^@\s]{1,200}@[^@\s]{1,200}")
MAX_REASON_CHARS = 500
MAX_IDEMPOTENCY_KEY_CHARS = 200
_IDEMPOTENCY_KEY = re.compile(rf"[!-~]{{1,{MAX_IDEMPOTENCY_KEY_CHARS}}}")
# 10^12 IDR: far beyond any real correction; a typo's extra zeros stop here.
MAX_ADJUSTMENT_MICROS = 10**12 * 10**6


@dataclass(frozen=True, slots=True)
class Lookup:
    """How an operator names an account: by one of its users' email, or its id."""

    email: str = ""
    account_id: str = ""


@dataclass(frozen=True, slots=True)
class Adjustment:
    amount_micros: int
    reason: str
    idempotency_key: str


def _invalid(message: str, param: str) -> PublicError:
    return errors.invalid_request(message, param)


def account_id_param(text: str) -> str:
    """A path's account id; anything that is not one is a 404 like an unknown one."""
    if not _ACCOUNT_ID.fullmatch(text):
        raise errors.account_not_found()
    return text


def lookup(query: admin_pb2.FindAccountQuery) -> Lookup:
    email, account_id = query.email.strip(), query.account_id.strip()
    if bool(email) == bool(account_id):
        raise _invalid("Give exactly one of email or account_id.", "email")
    if email:
        if not _EMAIL.fullmatch(email):
            raise _invalid("email must be an email address.", "email")
        return Lookup(email=email)
    if not _ACCOUNT_ID.fullmatch(account_id):
        raise _invalid("account_id must be an account id (acct_...).", "account_id")
    return Lookup(account_id=account_id)


def _fields(body: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise _invalid(
            f"Unknown field '{unknown[0]}'; expected only {', '.join(allowed)}.", unknown[0]
        )


def _reason(body: dict[str, Any], required: bool) -> str:
    reason = body.get("reason", "")
    if not isinstance(reason, str):
        raise _invalid("reason must be a string.", "reason")
    reason = reason.strip()
    if required and not reason:
        raise _invalid("reason is required: say why, for the account's record.", "reason")
    if len(reason) > MAX_REASON_CHARS or any(ord(ch) < 32 or ord(ch) == 127 for ch in reason):
        raise _invalid(
            f"reason must be at most {MAX_REASON_CHARS} characters, without control characters.",
            "reason",
        )
    return reason


def adjustment(body: dict[str, Any]) -> Adjustment:
    """{"amount_idr": signed decimal string, "reason": str, "idempotency_key": str}."""
    _fields(body, ("amount_idr", "reason", "idempotency_key"))
    raw = body.get("amount_idr")
    if not isinstance(raw, str) or not raw.strip():
        raise _invalid(
            'amount_idr must be a decimal string, e.g. "50000" or "-1250.5".', "amount_idr"
        )
    try:
        micros = idr_to_micros(raw)
    except AmountError:
        raise _invalid(
            'amount_idr must be a decimal string with at most 6 decimal places, e.g. "-1250.5".',
            "amount_idr",
        ) from None
    if micros == 0 or abs(micros) > MAX_ADJUSTMENT_MICROS:
        raise _invalid(
            "amount_idr must be non-zero and at most 1000000000000 IDR either way.", "amount_idr"
        )
    key = body.get("idempotency_key")
    if not isinstance(key, str) or not _IDEMPOTENCY_KEY.fullmatch(key):
        raise _invalid(
            f"idempotency_key is required: 1 to {MAX_IDEMPOTENCY_KEY_CHARS} printable ASCII"
            " characters, new for each adjustment.",
            "idempotency_key",
        )
    return Adjustment(micros, _reason(body, required=True), key)


def disable_reason(body: dict[str, Any]) -> str:
    _fields(body, ("reason",))
    return _reason(body, required=True)


def enable_body(body: dict[str, Any]) -> None:
    """Enabling takes no fields; an optional reason is accepted but not kept."""
    _fields(body, ("reason",))
    _reason(body, required=False)


# -- shapes ------------------------------------------------------------------------------------


def _nullable(value: str | int) -> struct_pb2.Value:
    if not value:
        return struct_pb2.Value(null_value=struct_pb2.NULL_VALUE)
    if isinstance(value, int):
        return struct_pb2.Value(number_value=value)
    return struct_pb2.Value(string_value=value)


def _user(user: accounts_pb2.User, account_id: str) -> admin_pb2.AdminUser:
    role = next((m.role for m in user.memberships if m.billing_account_id == account_id), None)
    return admin_pb2.AdminUser(
        id=user.user_id,
        email=user.email,
        email_verified=user.email_verified,
        role="owner" if role == accounts_pb2.Membership.OWNER else "member",
        operator=accounts_pb2.User.OPERATOR in user.roles,
    )


def admin_account(
    info: billing_pb2.AccountInfo,
    balance: billing_pb2.AccountBalance,
    users: list[accounts_pb2.User],
) -> admin_pb2.AdminAccount:
    return admin_pb2.AdminAccount(
        object="admin.account",
        id=info.account_id,
        name=info.name,
        created=min(info.created_at_unix, 2**32 - 1),
        users=[_user(u, info.account_id) for u in users],
        balance=account_pb2.Balance(
            object="balance",
            currency="IDR",
            balance_idr=micros_to_idr(balance.balance_micros),
            held_idr=micros_to_idr(balance.held_micros),
            available_idr=micros_to_idr(balance.available_micros),
        ),
        disabled=info.disabled_at_unix != 0,
        disabled_at=_nullable(info.disabled_at_unix),
        disabled_reason=info.disabled_reason,
        disabled_by=_nullable(info.disabled_by),
    )
