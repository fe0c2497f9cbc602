"""The top-up pages' pure parts: reading the amount a person asks for (and the
low-balance threshold), which payment gateways to offer, each order as a row,
and how its page follows the payment.

The console checks only what it can tell alone (a whole-rupiah amount, at least
the minimum every gateway takes); the gateway's quote decides the rest (its own
minimum and maximum, the fee) and its refusals name the field.

Amounts are whole rupiah: the payment gateways take integer IDR (Midtrans'
`gross_amount`, Xendit's `amount`). People write them the Indonesian way
(`100.000`), the English way (`100,000`) or bare (`100000`), with or without `Rp`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation
from typing import Final
from urllib.parse import quote, urlencode, urlsplit

from aiport.v1 import topups_pb2

from services.console import i18n, times
from services.console.account_api import ApiRefused
from services.console.usage_view import value_text
from services.console.web_forms import Form

# The floor for every gateway; the quote may say more.
MIN_TOPUP_IDR: Final = 10_000
PRESETS: Final = (50_000, 100_000, 250_000, 500_000)
# The gateways the API may offer, in the order the pages list them.
GATEWAYS: Final = ("midtrans", "xendit")
GATEWAY_NAMES: Final = {"midtrans": "Midtrans", "xendit": "Xendit"}
# The amount the form page quotes to learn which gateways answer and their limits.
PROBE_AMOUNT_IDR: Final = "100000"
# More digits than this is no top-up anyone makes (and keeps ints small).
MAX_AMOUNT_DIGITS: Final = 13
PAGE_SIZE: Final = 20
STATUSES: Final = (
    "awaiting_payment",
    "pending",
    "paid",
    "expired",
    "cancelled",
    "failed",
    "refunded",
    "charged_back",
)
# The payment gateway has not said its last word: the order page follows it.
LIVE_STATUSES: Final = frozenset({"awaiting_payment", "pending"})
REVERSED_STATUSES: Final = frozenset({"refunded", "charged_back"})
# The order page reloads every few seconds while a payment is being made, then
# slower: a tab left open on an order that waits for a day costs little.
FAST_REFRESH_SECONDS: Final = 3
SLOW_REFRESH_SECONDS: Final = 30
FAST_REFRESH_FOR_SECONDS: Final = 15 * 60
# The payments service's order ids (the gateway's order_id / external_id):
# Midtrans allows letters, digits, `-`, `_`, `.` and `~`, 50 at most.
TOPUP_ID_PATTERN: Final = r"[A-Za-z0-9][A-Za-z0-9_.~-]{0,63}"
_CURSOR = re.compile(r"[A-Za-z0-9_.~=:-]{1,200}")
_PREFIX = re.compile(r"^(rp\.?|idr)\s*", re.IGNORECASE)
_GROUPED = (re.compile(r"\d{1,3}(\.\d{3})+"), re.compile(r"\d{1,3}(,\d{3})+"))
METHOD_NAMES: Final = {
    "qris": "QRIS",
    "gopay": "GoPay",
    "shopeepay": "ShopeePay",
    "ovo": "OVO",
    "dana": "DANA",
    "linkaja": "LinkAja",
    "credit_card": "Credit card",
    "bca_va": "BCA Virtual Account",
    "bni_va": "BNI Virtual Account",
    "bri_va": "BRI Virtual Account",
    "mandiri_va": "Mandiri Virtual Account",
    "permata_va": "Permata Virtual Account",
    "cimb_va": "CIMB Niaga Virtual Account",
    "bsi_va": "BSI Virtual Account",
}


def parse_amount(text: str) -> int | None:
    """A whole-rupiah amount as people write it (`100000`, `100.000`, `100,000`,
    `Rp 100.000`), or None. A fraction (`100000,50`) is not a top-up amount."""
    cleaned = _PREFIX.sub("", text.strip()).replace(" ", "").replace("\u00a0", "")
    if cleaned.isascii() and cleaned.isdigit():
        digits = cleaned
    elif any(pattern.fullmatch(cleaned) for pattern in _GROUPED):
        digits = cleaned.replace(".", "").replace(",", "")
    else:
        return None
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= MAX_AMOUNT_DIGITS else None


def amount_form(raw: Mapping[str, object]) -> Form:
    """The top-up form: a preset button's amount, else the free field. Values
    keep what was typed (to show it again) until it is valid, then the amount
    in plain digits, as the API takes it."""
    preset = raw.get("preset")
    typed = raw.get("amount_idr")
    text = preset if isinstance(preset, str) and preset else typed
    text = text[:64] if isinstance(text, str) else ""
    gateway = raw.get("gateway")
    form = Form({"amount_idr": text.strip(), "gateway": gateway if gateway in GATEWAYS else ""})
    amount = parse_amount(text)
    if not text.strip():
        form.errors["amount_idr"] = "form.required"
    elif amount is None:
        form.errors["amount_idr"] = "topup.amount_invalid"
    elif amount < MIN_TOPUP_IDR:
        form.errors["amount_idr"] = "topup.amount_too_small"
    else:
        form.values["amount_idr"] = str(amount)
    return form


def threshold_form(raw: Mapping[str, object]) -> Form:
    """The low-balance alert: a whole-rupiah threshold above 0, or `off`."""
    if raw.get("action") == "off":
        return Form({"threshold_idr": "0"})
    typed = raw.get("threshold_idr")
    text = typed[:64].strip() if isinstance(typed, str) else ""
    form = Form({"threshold_idr": text})
    amount = parse_amount(text)
    if not text:
        form.errors["threshold_idr"] = "form.required"
    elif amount is None or amount <= 0:
        form.errors["threshold_idr"] = "billing.alert_invalid"
    else:
        form.values["threshold_idr"] = str(amount)
    return form


@dataclass(frozen=True)
class Limits:
    """What the gateways' quotes say a top-up may be (None: no quote said)."""

    minimum_idr: str
    maximum_idr: str | None


def _decimal(text: str) -> Decimal | None:
    try:
        value = Decimal(text)
    except (InvalidOperation, ValueError):
        return None
    return value if value.is_finite() else None


def offered(answers: Mapping[str, topups_pb2.TopUpQuote | Exception]) -> list[str]:
    """The gateways to offer, from each one's answer to a quote: one that quoted,
    or that refused only the amount (it exists; the amount is the problem).
    Refused otherwise (not configured, unavailable): not offered."""
    found = []
    for gateway in GATEWAYS:
        answer = answers.get(gateway)
        if isinstance(answer, topups_pb2.TopUpQuote) or (
            isinstance(answer, ApiRefused) and answer.status == 400 and answer.param == "amount_idr"
        ):
            found.append(gateway)
    return found


def limits(answers: Mapping[str, topups_pb2.TopUpQuote | Exception]) -> Limits:
    """The widest range the quoting gateways take (each quote names its own),
    never below the issue's floor."""
    quoted = [a for a in answers.values() if isinstance(a, topups_pb2.TopUpQuote)]
    minimums = [m for q in quoted if (m := _decimal(q.minimum_idr)) is not None]
    maximums = [m for q in quoted if (m := _decimal(q.maximum_idr)) is not None and m > 0]
    minimum = min(minimums).to_integral_value(ROUND_CEILING) if minimums else MIN_TOPUP_IDR
    maximum = max(maximums).to_integral_value(ROUND_FLOOR) if maximums else None
    return Limits(
        str(max(int(minimum), MIN_TOPUP_IDR)), None if maximum is None else str(int(maximum))
    )


def gateway_name(gateway: str) -> str:
    return GATEWAY_NAMES.get(gateway, gateway)


def method_name(method: str) -> str:
    """`bca_va` -> `BCA Virtual Account`; an unknown method as written, tidied."""
    if not method:
        return ""
    return METHOD_NAMES.get(method, method.replace("_", " ").upper())


def status_label(lang: str, status: str) -> str:
    key = f"topup.status.{status}"
    return i18n.translate(lang, key) if key in i18n.MESSAGES[lang] else status


def payment_link(url: str) -> str:
    """The order's payment page, if it is one a browser may be sent to (an
    absolute http(s) URL); '' otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        return ""
    if any(ord(ch) < 0x21 or ch == "\\" for ch in url):
        return ""
    return url


def refresh_seconds(status: str, created: int, now: int) -> int | None:
    """How soon the order page reloads itself (None: the order's state is final)."""
    if status not in LIVE_STATUSES:
        return None
    if now - created <= FAST_REFRESH_FOR_SECONDS:
        return FAST_REFRESH_SECONDS
    return SLOW_REFRESH_SECONDS


def order_path(topup_id: str) -> str:
    return f"/dashboard/topup/{quote(topup_id, safe='')}"


def cursor(text: str) -> str:
    """The list's `after`, if it looks like the API's cursor ('' otherwise)."""
    return text if _CURSOR.fullmatch(text) else ""


def next_url(page: topups_pb2.TopUpList, base: str = "/dashboard/topup") -> str:
    after = value_text(page.next_cursor)
    return f"{base}?{urlencode({'after': after})}" if page.has_more and after else ""


def _when(text: str, lang: str, zone: str) -> str:
    return times.format_datetime(int(text), lang, zone) if text.isdigit() else ""


def topup_row(topup: topups_pb2.TopUp, lang: str, zone: str) -> dict[str, str]:
    """One order as the pages show it."""
    paid_at = value_text(topup.paid_at)
    return {
        "id": topup.id,
        "url": order_path(topup.id),
        "receipt_url": order_path(topup.id) + "/receipt" if paid_at.isdigit() else "",
        "status": topup.status,
        "status_label": status_label(lang, topup.status),
        "gateway": gateway_name(topup.gateway),
        "method": method_name(value_text(topup.payment_method)),
        "amount_idr": topup.amount_idr,
        "fee_idr": topup.fee_idr,
        "total_idr": topup.total_idr,
        "reversed_idr": value_text(topup.reversed_idr),
        "created": times.format_datetime(topup.created, lang, zone) if topup.created else "",
        "iso_created": times.to_datetime(topup.created).astimezone(times.zone(zone)).isoformat(),
        "paid_at": _when(paid_at, lang, zone),
        "expires_at": _when(value_text(topup.expires_at), lang, zone),
        "payment_url": payment_link(value_text(topup.payment_url)),
    }


def positive(amount_idr: str) -> bool:
    """Whether an IDR amount from the API is above zero ('' for null is not):
    a debt to show, an alert threshold that is on."""
    amount = _decimal(amount_idr) if amount_idr else None
    return amount is not None and amount > 0
