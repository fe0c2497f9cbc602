"""The payment order's rules, without I/O: amounts and fees, the order's state
machine, what each gateway's statuses mean, how their notifications are
trusted, and the receipt's arithmetic.

Threat model for notifications: anyone can POST to /webhooks/*. A notification
is only a *hint* that an order changed: its signature (Midtrans) or token
(Xendit) is checked so forged ones are refused cheaply, but the state we act on
is always the one the gateway's own API confirms (status API, invoice
re-fetch), and the amount it confirms must equal the order's. Money moves on
the confirmed state only, through billing with a key derived from the gateway
and the order id, so any number of notifications, in any order, on any replica,
moves it once.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum

MICROS = 1_000_000
ORDER_ID_PREFIX = "top_"
ORDER_ID_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ORDER_ID_LENGTH = 20
ORDER_ID_RE = re.compile(r"^top_[0-9A-Za-z]{20}$")
# Gateways take whole rupiah; so do we, for top-ups.
MAX_AMOUNT_DIGITS = 12


class PaymentError(Exception):
    """A request we refuse (the message names the field)."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


class OrderStatus(StrEnum):
    AWAITING_PAYMENT = "awaiting_payment"  # a payment page exists, nothing chosen
    PENDING = "pending"  # a method chosen (a VA number issued, a QR shown)
    PAID = "paid"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    FAILED = "failed"  # denied by the gateway, or it never made a page
    REFUNDED = "refunded"
    CHARGED_BACK = "charged_back"


class Confirmed(StrEnum):
    """What a gateway's own API says about an order, in our words."""

    UNPAID = "unpaid"
    PENDING = "pending"
    PAID = "paid"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    DENIED = "denied"
    REFUNDED = "refunded"
    PARTIALLY_REFUNDED = "partially_refunded"
    CHARGED_BACK = "charged_back"
    UNKNOWN = "unknown"


class Money(StrEnum):
    """What a transition asks of billing."""

    NONE = "none"
    CREDIT = "credit"  # payments:<gateway> -> the customer's available
    REVERSE = "reverse"  # back to payments:<gateway> (a refund or chargeback)


# Midtrans transaction_status -> ours. `capture` is a card payment: it counts as
# paid only with fraud_status accept (challenge waits for a decision).
MIDTRANS_STATES: dict[str, Confirmed] = {
    "pending": Confirmed.PENDING,
    "settlement": Confirmed.PAID,
    "expire": Confirmed.EXPIRED,
    "cancel": Confirmed.CANCELLED,
    "deny": Confirmed.DENIED,
    "failure": Confirmed.DENIED,
    "refund": Confirmed.REFUNDED,
    "partial_refund": Confirmed.PARTIALLY_REFUNDED,
    "chargeback": Confirmed.CHARGED_BACK,
    "partial_chargeback": Confirmed.PARTIALLY_REFUNDED,
    "authorize": Confirmed.PENDING,
}

# Xendit invoice status -> ours. SETTLED follows PAID (the money reached the
# merchant balance): both are paid for us.
XENDIT_STATES: dict[str, Confirmed] = {
    "PENDING": Confirmed.UNPAID,
    "PAID": Confirmed.PAID,
    "SETTLED": Confirmed.PAID,
    "EXPIRED": Confirmed.EXPIRED,
}


def midtrans_state(transaction_status: str, fraud_status: str) -> Confirmed:
    if transaction_status == "capture":
        return {"accept": Confirmed.PAID, "deny": Confirmed.DENIED}.get(
            fraud_status, Confirmed.PENDING
        )
    return MIDTRANS_STATES.get(transaction_status, Confirmed.UNKNOWN)


def xendit_state(status: str) -> Confirmed:
    return XENDIT_STATES.get(status, Confirmed.UNKNOWN)


_OPEN = (OrderStatus.AWAITING_PAYMENT, OrderStatus.PENDING)
_CLOSED_UNPAID = (OrderStatus.EXPIRED, OrderStatus.CANCELLED, OrderStatus.FAILED)

# (our status, confirmed) -> (next status, money). Every pair not listed leaves
# the order as it is: a stale or repeated answer never moves an order back.
# Paid after expiry or cancellation is credited: the person's money arrived.
TRANSITIONS: dict[tuple[OrderStatus, Confirmed], tuple[OrderStatus, Money]] = {
    **{(s, Confirmed.PENDING): (OrderStatus.PENDING, Money.NONE) for s in _OPEN},
    **{(s, Confirmed.PAID): (OrderStatus.PAID, Money.CREDIT) for s in _OPEN + _CLOSED_UNPAID},
    **{(s, Confirmed.EXPIRED): (OrderStatus.EXPIRED, Money.NONE) for s in _OPEN},
    **{(s, Confirmed.CANCELLED): (OrderStatus.CANCELLED, Money.NONE) for s in _OPEN},
    **{(s, Confirmed.DENIED): (OrderStatus.FAILED, Money.NONE) for s in _OPEN},
    (OrderStatus.PAID, Confirmed.REFUNDED): (OrderStatus.REFUNDED, Money.REVERSE),
    (OrderStatus.PAID, Confirmed.CHARGED_BACK): (OrderStatus.CHARGED_BACK, Money.REVERSE),
}

# Confirmed states that need an operator's decision rather than a rule.
NEEDS_OPERATOR: dict[Confirmed, str] = {
    Confirmed.PARTIALLY_REFUNDED: "partial_refund",
    Confirmed.UNKNOWN: "unknown_gateway_status",
}


@dataclass(frozen=True, slots=True)
class Step:
    status: OrderStatus
    money: Money
    flag: str = ""


def next_step(current: OrderStatus, confirmed: Confirmed) -> Step:
    """Where an order goes when the gateway confirms `confirmed`."""
    if confirmed in NEEDS_OPERATOR:
        return Step(current, Money.NONE, NEEDS_OPERATOR[confirmed])
    status, money = TRANSITIONS.get((current, confirmed), (current, Money.NONE))
    return Step(status, money)


# Notifications.


def midtrans_signature(order_id: str, status_code: str, gross_amount: str, server_key: str) -> str:
    """SHA512(order_id + status_code + gross_amount + server key), lowercase hex;
    gross_amount exactly as the notification sent it ("50000.00")."""
    raw = (order_id + status_code + gross_amount + server_key).encode()
    return hashlib.sha512(raw).hexdigest()


def midtrans_signature_ok(body: dict[str, object], server_key: str) -> bool:
    fields = [body.get(k) for k in ("order_id", "status_code", "gross_amount", "signature_key")]
    if not all(isinstance(v, str) and v for v in fields) or not server_key:
        return False
    order_id, status_code, gross_amount, signature = (str(v) for v in fields)
    expected = midtrans_signature(order_id, status_code, gross_amount, server_key)
    return hmac.compare_digest(expected.encode(), signature.lower().encode())


def xendit_token_ok(header: str | None, token: str) -> bool:
    if not header or not token:
        return False
    return hmac.compare_digest(header.encode(), token.encode())


# Amounts.


def gateway_amount_micros(value: object) -> int | None:
    """A gateway's amount ("50000.00", 50000, 50000.0) in micro-rupiah; None if unreadable."""
    if isinstance(value, bool):
        return None
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    if not amount.is_finite() or amount < 0 or amount > Decimal(10) ** MAX_AMOUNT_DIGITS:
        return None
    micros = amount * MICROS
    return int(micros) if micros == micros.to_integral_value() else None


@dataclass(frozen=True, slots=True)
class Fee:
    fixed_idr: int
    percent: Decimal  # of the amount

    def of(self, amount_micros: int) -> int:
        """Rounded up to a whole rupiah (gateways charge whole rupiah)."""
        fee = Decimal(amount_micros) * self.percent / 100 + self.fixed_idr * MICROS
        whole = -(-int(fee.to_integral_value(rounding="ROUND_CEILING")) // MICROS)
        return whole * MICROS


@dataclass(frozen=True, slots=True)
class Limits:
    minimum_micros: int
    maximum_micros: int

    def check(self, amount_micros: int) -> int:
        if amount_micros < self.minimum_micros:
            raise PaymentError(
                f"amount_idr must be at least {idr(self.minimum_micros)}", "amount_idr"
            )
        if amount_micros > self.maximum_micros:
            raise PaymentError(
                f"amount_idr must be at most {idr(self.maximum_micros)}", "amount_idr"
            )
        return amount_micros


def idr(micros: int) -> str:
    """Whole rupiah as digits (every top-up amount is whole)."""
    assert micros % MICROS == 0, f"not whole rupiah: {micros}"
    return str(micros // MICROS)


def new_order_id() -> str:
    return ORDER_ID_PREFIX + "".join(
        secrets.choice(ORDER_ID_ALPHABET) for _ in range(ORDER_ID_LENGTH)
    )


def check_order_id(value: str, field: str = "topup_id") -> str:
    if not ORDER_ID_RE.match(value):
        raise PaymentError(f"{field} is not a top-up id", field)
    return value


def billing_key(gateway: str, order_id: str, money: Money) -> str:
    """The billing idempotency key of an order's money movement: one credit and
    at most one reversal per order, whoever asks and however often."""
    suffix = "" if money is Money.CREDIT else ":reversal"
    return f"{gateway}:{order_id}{suffix}"


# The receipt.


def ppn_split(total_micros: int, rate_bp: int) -> tuple[int, int]:
    """(DPP, PPN) of a total that includes PPN at rate_bp basis points, in whole
    rupiah: DPP = total / (1 + rate), rounded half up; PPN is the rest."""
    if rate_bp <= 0:
        return total_micros, 0
    total_idr = total_micros // MICROS
    dpp = (total_idr * 10_000 * 2 + (10_000 + rate_bp)) // (2 * (10_000 + rate_bp))
    return dpp * MICROS, (total_idr - dpp) * MICROS


_ONES = (
    "",
    "satu",
    "dua",
    "tiga",
    "empat",
    "lima",
    "enam",
    "tujuh",
    "delapan",
    "sembilan",
    "sepuluh",
    "sebelas",
)


def terbilang(n: int) -> str:
    """Indonesian words for a whole number (as a kwitansi writes the amount)."""
    if n < 0:
        raise ValueError("negative")
    if n == 0:
        return "nol"
    return _words(n).strip()


def _words(n: int) -> str:
    if n == 0:
        return ""
    if n < 12:
        return " " + _ONES[n]
    if n < 20:
        return _words(n - 10) + " belas"
    if n < 100:
        return _words(n // 10) + " puluh" + _words(n % 10)
    if n < 200:
        return " seratus" + _words(n - 100)
    if n < 1000:
        return _words(n // 100) + " ratus" + _words(n % 100)
    if n < 2000:
        return " seribu" + _words(n - 1000)
    for size, name in ((10**12, "triliun"), (10**9, "miliar"), (10**6, "juta"), (10**3, "ribu")):
        if n >= size:
            return _words(n // size) + f" {name}" + _words(n % size)
    raise AssertionError(n)
