"""Midtrans as our adapters meet it: Snap (create a transaction, the redirect page), the
Core API status request and the HTTP notifications. The pure part: request checks, the
transaction's states and the exact bodies. server.py moves the bytes.

What the docs say, and what this module does about it (docs.midtrans.com, 2025-26):
- Snap create `POST /snap/v1/transactions`, Basic auth (server key, empty password). 201
  {"token", "redirect_url"}; errors are {"error_messages": [...]}: 401 "Access denied due
  to unauthorized transaction, please check client or server key", 400 for validation
  (e.g. "transaction_details.gross_amount is not equal to the sum of item_details").
  A re-used order_id is a 400 too: "transaction_details.order_id has already been taken"
  (what Snap answers in practice), or "... has been paid and utilized, please use another
  order ID" once paid (the documented case). The 406 "duplicate order ID" in the status
  code list is the Core API charge's answer, not Snap's.
- Status `GET /v2/{order_id or transaction_id}/status`, Basic auth. Before the customer
  picks a payment method on the Snap page there is no Core API transaction yet: 404 (the
  docs' "Notes When Using Snap API"). 404 and 401 bodies are {"status_code": "404",
  "status_message": "Transaction doesn't exist.", "id": uuid} / {"status_code": "401",
  "status_message": "Unknown Merchant server_key/id", "id": uuid}, sent with that HTTP
  status (clients should read the body's status_code: Midtrans also sends some errors
  with HTTP 200).
- status_code per transaction_status: pending 201, settlement/capture 200, deny 202,
  cancel 200, expire 407, refund 200; chargeback is not in the docs' samples: 200 here.
  status_message: "Success, transaction is found" from the status API, "midtrans payment
  notification" in notifications.
- signature_key = sha512(order_id + status_code + gross_amount + server_key), lowercase
  hex, with gross_amount exactly as sent ("50000.00").
- Notification bodies per payment type follow the docs' samples: bank_transfer carries
  va_numbers [{bank, va_number}] and payment_amounts (Permata: permata_va_number
  instead), echannel carries biller_code and bill_key, qris carries acquirer/issuer and
  transaction_type. Every body has fraud_status "accept", currency "IDR", merchant_id,
  transaction_time and expiry_time ("YYYY-MM-DD HH:MM:SS", Jakarta time), and
  settlement_time once settled. A refund adds refund_amount and refunds [...]; a
  chargeback carries the common fields only (its extra fields are undocumented).
- Retries (docs "Responding HTTP Notification"): 2xx done; 500 retried once, 503 four
  times, 400/404 twice, 301/302/303 never, 307/308 followed (at most five redirects),
  anything else (and no answer) five times. The real intervals are minutes to hours;
  the sandbox takes them from --retry-delays, and has fewer retries if fewer delays.
- `X-Override-Notification` / `X-Append-Notification` on the create request: up to 3
  comma-separated http(s) URLs; override replaces the dashboard's URL, append adds to it;
  with both, override wins. A malformed header is a 400 here (the docs do not say).
- Snap `expiry` {start_time "YYYY-MM-DD HH:MM:SS +0700"?, unit day|hour|minute (or
  plural), duration}; default 24 h. The sandbox uses it for the whole transaction: an
  unpaid Snap page closes, and a pending payment expires (with a notification) then.

Sandbox choices: order_id 1..50 of [A-Za-z0-9-_~.] (Midtrans' allowed symbols);
gross_amount a whole number of rupiah, 1..MAX_GROSS_AMOUNT. Expire or cancel before a
method is chosen first takes one (default QRIS, or the first enabled), so the merchant
sees `pending` and then `expire`/`cancel`, as a customer who picked a method and walked
away would produce.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TypeGuard
from urllib.parse import urlencode

from sandbox.payment_gateway.common import GatewayError, Refused, is_http_url, with_query

JAKARTA = timezone(timedelta(hours=7))
MERCHANT_ID = "G100000001"
ORDER_ID_MAX_CHARS = 50
ORDER_ID_RE = re.compile(r"[A-Za-z0-9_~.\-]+")
MAX_GROSS_AMOUNT = 100_000_000_000
MAX_TEXT_CHARS = 255
MAX_ITEMS = 100
MAX_ENABLED_PAYMENTS = 40
MAX_NOTIFY_URLS = 3
DEFAULT_EXPIRY_SECONDS = 24 * 3600
MAX_EXPIRY_SECONDS = 366 * 24 * 3600
EXPIRY_UNITS = {
    "minute": 60,
    "minutes": 60,
    "hour": 3600,
    "hours": 3600,
    "day": 86400,
    "days": 86400,
}
BILLER_CODE = "70012"
VA_LENGTHS = {"bca": 11, "bni": 16, "bri": 18, "permata": 16, "mandiri": 12}

STATUS_CODES = {
    "pending": "201",
    "settlement": "200",
    "capture": "200",
    "deny": "202",
    "cancel": "200",
    "expire": "407",
    "refund": "200",
    "chargeback": "200",
}
# States in which the money reached the merchant at some point (settlement_time is set).
SETTLED = frozenset({"settlement", "refund", "chargeback"})
STATUS_MESSAGE = "Success, transaction is found"
NOTIFICATION_MESSAGE = "midtrans payment notification"
AUTH_MESSAGES = [
    "Access denied due to unauthorized transaction, please check client or server key",
    "Visit https://snap-docs.midtrans.com/#request-headers for more details",
]


@dataclass(frozen=True)
class Method:
    key: str  # the sandbox's name: the page's button, the control's {"method": ...}
    label: str
    payment_type: str
    snap_names: frozenset[str]  # the enabled_payments names that allow it
    bank: str | None = None


METHODS: dict[str, Method] = {
    m.key: m
    for m in (
        Method("qris", "QRIS", "qris", frozenset({"other_qris", "qris"})),
        Method("bca_va", "BCA virtual account", "bank_transfer", frozenset({"bca_va"}), "bca"),
        Method("bni_va", "BNI virtual account", "bank_transfer", frozenset({"bni_va"}), "bni"),
        Method("bri_va", "BRI virtual account", "bank_transfer", frozenset({"bri_va"}), "bri"),
        Method("echannel", "Mandiri bill payment", "echannel", frozenset({"echannel"}), "mandiri"),
        Method("permata_va", "Permata virtual account", "bank_transfer", frozenset({"permata_va"})),
        Method("gopay", "GoPay", "gopay", frozenset({"gopay"})),
        Method("shopeepay", "ShopeePay", "shopeepay", frozenset({"shopeepay"})),
    )
}
ACTIONS = ("choose", "pay", "expire", "cancel", "refund", "chargeback", "late_settle")


def auth_error() -> GatewayError:
    return GatewayError(401, {"error_messages": list(AUTH_MESSAGES)})


def core_error(status: int, message: str) -> GatewayError:
    """A Core API error (the status API's shape)."""
    return GatewayError(
        status, {"status_code": str(status), "status_message": message, "id": str(uuid.uuid4())}
    )


def core_auth_error() -> GatewayError:
    return core_error(401, "Unknown Merchant server_key/id")


def not_found() -> GatewayError:
    return core_error(404, "Transaction doesn't exist.")


def snap_error(status: int, *messages: str) -> GatewayError:
    return GatewayError(status, {"error_messages": list(messages)})


def signature(order_id: str, status_code: str, gross_amount: str, server_key: str) -> str:
    return hashlib.sha512(f"{order_id}{status_code}{gross_amount}{server_key}".encode()).hexdigest()


def gross_text(amount: int) -> str:
    return f"{amount}.00"


def midtrans_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, JAKARTA).strftime("%Y-%m-%d %H:%M:%S")


# --- create ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SnapRequest:
    order_id: str
    gross_amount: int
    finish_url: str | None
    enabled: tuple[str, ...]  # method keys offered, in page order
    starts_at: float
    expires_at: float
    customer_name: str
    customer_email: str


def parse_snap_request(body: object, now: float) -> SnapRequest:
    """Check a Snap create body; every problem found is one of Midtrans' error_messages."""
    if not isinstance(body, dict):
        raise snap_error(400, "transaction_details is required")
    errors: list[str] = []
    details = body.get("transaction_details")
    order_id = ""
    gross = 0
    if not isinstance(details, dict):
        errors.append("transaction_details is required")
    else:
        order_id = _order_id(details.get("order_id"), errors)
        gross = _gross_amount(details.get("gross_amount"), errors)
    _check_items(body.get("item_details"), gross, errors)
    finish_url = _finish_url(body.get("callbacks"), errors)
    enabled = _enabled_payments(body.get("enabled_payments"), errors)
    starts_at, expires_at = _expiry(body.get("expiry"), now, errors)
    name, email = _customer(body.get("customer_details"), errors)
    if errors:
        raise snap_error(400, *errors)
    return SnapRequest(order_id, gross, finish_url, enabled, starts_at, expires_at, name, email)


def _order_id(value: object, errors: list[str]) -> str:
    if value is None or value == "":
        errors.append("transaction_details.order_id is required")
        return ""
    if not isinstance(value, str):
        errors.append("transaction_details.order_id must be a string")
        return ""
    if len(value) > ORDER_ID_MAX_CHARS:
        errors.append(
            f"transaction_details.order_id may not be longer than {ORDER_ID_MAX_CHARS} characters"
        )
    elif not ORDER_ID_RE.fullmatch(value):
        errors.append(
            "transaction_details.order_id may only contain letters, digits, "
            "dash (-), underscore (_), tilde (~) and dot (.)"
        )
    return value


def _gross_amount(value: object, errors: list[str]) -> int:
    if value is None:
        errors.append("transaction_details.gross_amount is required")
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float):
        errors.append("transaction_details.gross_amount is not a number")
        return 0
    if isinstance(value, float) and not value.is_integer():
        # IDR has no minor unit: Midtrans charges whole rupiah.
        errors.append("transaction_details.gross_amount must be a whole number of IDR")
        return 0
    amount = int(value)
    if amount < 1:
        errors.append("transaction_details.gross_amount must be greater than or equal to 1")
    elif amount > MAX_GROSS_AMOUNT:
        errors.append(
            f"transaction_details.gross_amount must be less than or equal to {MAX_GROSS_AMOUNT}"
        )
    return amount


def _check_items(items: object, gross: int, errors: list[str]) -> None:
    if items is None:
        return
    if not isinstance(items, list) or len(items) > MAX_ITEMS:
        errors.append(f"item_details must be a list of at most {MAX_ITEMS} items")
        return
    total = 0
    for i, item in enumerate(items):
        price = item.get("price") if isinstance(item, dict) else None
        quantity = item.get("quantity") if isinstance(item, dict) else None
        if not _whole(price) or not _whole(quantity) or quantity < 1:
            errors.append(f"item_details[{i}] needs an integer price and a quantity >= 1")
            return
        total += price * quantity
    if gross and total != gross:
        errors.append("transaction_details.gross_amount is not equal to the sum of item_details")


def _whole(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _finish_url(callbacks: object, errors: list[str]) -> str | None:
    if callbacks is None:
        return None
    if not isinstance(callbacks, dict):
        errors.append("callbacks must be an object")
        return None
    finish = callbacks.get("finish")
    if finish is None:
        return None
    if not is_http_url(finish):
        errors.append("callbacks.finish must be an http(s) URL of at most 2048 characters")
        return None
    return str(finish)


def _enabled_payments(value: object, errors: list[str]) -> tuple[str, ...]:
    if value is None:
        return tuple(METHODS)
    if (
        not isinstance(value, list)
        or len(value) > MAX_ENABLED_PAYMENTS
        or not all(isinstance(v, str) and 0 < len(v) <= 40 for v in value)
    ):
        errors.append(
            f"enabled_payments must be a list of at most {MAX_ENABLED_PAYMENTS} payment names"
        )
        return ()
    names = set(value)
    return tuple(key for key, m in METHODS.items() if m.snap_names & names)


def _expiry(value: object, now: float, errors: list[str]) -> tuple[float, float]:
    if value is None:
        return now, now + DEFAULT_EXPIRY_SECONDS
    if not isinstance(value, dict):
        errors.append("expiry must be an object")
        return now, now + DEFAULT_EXPIRY_SECONDS
    start = now
    start_time = value.get("start_time")
    if start_time is not None:
        try:
            if not isinstance(start_time, str):
                raise ValueError(start_time)
            start = datetime.strptime(start_time, "%Y-%m-%d %H:%M:%S %z").timestamp()
        except ValueError:
            errors.append('expiry.start_time must look like "2026-01-31 13:00:00 +0700"')
    unit = value.get("unit")
    duration = value.get("duration")
    if unit not in EXPIRY_UNITS:
        errors.append("expiry.unit must be one of day, hour, minute")
        return now, now + DEFAULT_EXPIRY_SECONDS
    if not isinstance(duration, int) or isinstance(duration, bool) or duration < 1:
        errors.append("expiry.duration must be a positive integer")
        return now, now + DEFAULT_EXPIRY_SECONDS
    seconds = duration * EXPIRY_UNITS[str(unit)]
    if seconds > MAX_EXPIRY_SECONDS:
        errors.append("expiry.duration may not exceed 366 days")
        return now, now + DEFAULT_EXPIRY_SECONDS
    return start, start + seconds


def _customer(value: object, errors: list[str]) -> tuple[str, str]:
    if value is None:
        return "", ""
    if not isinstance(value, dict):
        errors.append("customer_details must be an object")
        return "", ""
    out = []
    for field in ("first_name", "last_name", "email"):
        text = value.get(field)
        if text is None:
            out.append("")
        elif not isinstance(text, str) or len(text) > MAX_TEXT_CHARS:
            errors.append(
                f"customer_details.{field} must be a string of at most {MAX_TEXT_CHARS} characters"
            )
            out.append("")
        else:
            out.append(text)
    return " ".join(p for p in out[:2] if p), out[2]


def notification_urls(
    override: str | None, append: str | None, configured: str | None
) -> tuple[str, ...]:
    """Where this transaction's notifications go (Midtrans' per-request header feature)."""
    if override is not None:
        return _header_urls("X-Override-Notification", override)
    urls = [configured] if configured else []
    if append is not None:
        urls += [u for u in _header_urls("X-Append-Notification", append) if u not in urls]
    return tuple(urls)


def _header_urls(name: str, value: str) -> tuple[str, ...]:
    urls = [u.strip() for u in value.split(",") if u.strip()]
    if not urls or len(urls) > MAX_NOTIFY_URLS or not all(is_http_url(u) for u in urls):
        raise snap_error(400, f"{name} must be 1 to {MAX_NOTIFY_URLS} comma-separated http(s) URLs")
    return tuple(dict.fromkeys(urls))


# --- the transaction ---------------------------------------------------------------------


@dataclass
class Transaction:
    order_id: str
    gross_amount: int
    token: str
    created_at: float
    expires_at: float
    finish_url: str | None
    notify_urls: tuple[str, ...]
    enabled: tuple[str, ...]
    customer_name: str = ""
    customer_email: str = ""
    # Set when the customer picks a payment method (before that Core API has no record).
    transaction_id: str = ""
    method: str | None = None
    status: str | None = None
    transaction_time: float | None = None
    settlement_time: float | None = None
    refund_time: float | None = None

    @property
    def paid(self) -> bool:
        return self.status in SETTLED or self.status == "capture"


def new_transaction(request: SnapRequest, notify_urls: tuple[str, ...], now: float) -> Transaction:
    return Transaction(
        order_id=request.order_id,
        gross_amount=request.gross_amount,
        token=str(uuid.uuid4()),
        created_at=now,
        expires_at=request.expires_at,
        finish_url=request.finish_url,
        notify_urls=notify_urls,
        enabled=request.enabled,
        customer_name=request.customer_name,
        customer_email=request.customer_email,
    )


def duplicate_error(existing: Transaction) -> GatewayError:
    if existing.paid:
        return snap_error(
            400,
            "transaction_details.order_id has been paid and utilized, please use another order ID",
        )
    return snap_error(400, "transaction_details.order_id has already been taken")


def create_answer(tx: Transaction, public_url: str) -> dict[str, object]:
    return {"token": tx.token, "redirect_url": f"{public_url}/snap/v4/redirection/{tx.token}"}


def apply(tx: Transaction, action: str, method: str | None, now: float) -> list[str]:
    """Move `tx` by a customer click or a test control; returns the statuses entered, in
    order (each one is a notification)."""
    if action not in ACTIONS:
        raise Refused(f"unknown action {action[:40]!r}; use one of {', '.join(ACTIONS)}", "action")
    if method is not None and method not in METHODS:
        raise Refused(f"unknown method {method[:40]!r}; use one of {', '.join(METHODS)}", "method")
    entered: list[str] = []
    if action == "choose":
        # The customer picked a method and has not paid yet (a VA number to transfer to).
        if tx.status is not None:
            raise Refused(f"cannot choose a method: the transaction is {tx.status}")
        if now >= tx.expires_at:
            raise Refused("the Snap transaction has expired")
        _choose(tx, method or _default_method(tx), now)
        return ["pending"]
    if action in ("pay", "expire", "cancel"):
        if tx.status is None:
            if now >= tx.expires_at:
                raise Refused("the Snap transaction has expired")
            _choose(tx, method or _default_method(tx), now)
            entered.append("pending")
        elif tx.status != "pending":
            raise Refused(f"cannot {action}: the transaction is {tx.status}")
        elif method is not None and method != tx.method:
            raise Refused(f"the transaction is already pending with {tx.method}", "method")
        elif action == "pay" and now >= tx.expires_at:
            raise Refused("the payment has expired")  # the sweeper has not got to it yet
        final = {"pay": "settlement", "expire": "expire", "cancel": "cancel"}[action]
        if final == "settlement":
            tx.settlement_time = now
        tx.status = final
        entered.append(final)
        return entered
    if action == "late_settle":
        # A drill, not a click: the bank's transfer to an expired VA settles after
        # all (it happens when a transfer starts just before the expiry), so an
        # expired transaction becomes settlement and is notified again.
        if tx.status != "expire":
            raise Refused(
                f"cannot late_settle: only an expired transaction can be (it is {tx.status})"
            )
        tx.status = "settlement"
        tx.settlement_time = now
        return ["settlement"]
    if tx.status != "settlement":
        raise Refused(f"cannot {action}: only a settled transaction can be (it is {tx.status})")
    tx.status = action
    tx.refund_time = now
    return [action]


def _default_method(tx: Transaction) -> str:
    return "qris" if "qris" in tx.enabled or not tx.enabled else tx.enabled[0]


def _choose(tx: Transaction, method: str, now: float) -> None:
    if method not in tx.enabled:
        raise Refused(f"{method} is not among this transaction's enabled_payments", "method")
    tx.method = method
    tx.status = "pending"
    tx.transaction_id = str(uuid.uuid4())
    tx.transaction_time = now


def overdue(transactions: Iterable[Transaction], now: float) -> list[Transaction]:
    """Pending payments past their expiry: Midtrans expires them and notifies."""
    return [tx for tx in transactions if tx.status == "pending" and now >= tx.expires_at]


# --- what Midtrans says about a transaction ----------------------------------------------


def transaction_body(
    tx: Transaction, status: str, server_key: str, *, notification: bool
) -> dict[str, object]:
    """The status API answer (notification=False) or the notification body for `tx` as it
    was when it entered `status`."""
    assert tx.method is not None and tx.transaction_time is not None
    method = METHODS[tx.method]
    gross = gross_text(tx.gross_amount)
    code = STATUS_CODES[status]
    body: dict[str, object] = {
        "transaction_time": midtrans_time(tx.transaction_time),
        "transaction_status": status,
        "transaction_id": tx.transaction_id,
        "status_message": NOTIFICATION_MESSAGE if notification else STATUS_MESSAGE,
        "status_code": code,
        "signature_key": signature(tx.order_id, code, gross, server_key),
        "payment_type": method.payment_type,
        "order_id": tx.order_id,
        "merchant_id": MERCHANT_ID,
        "gross_amount": gross,
        "fraud_status": "accept",
        "currency": "IDR",
        "expiry_time": midtrans_time(tx.expires_at),
    }
    settled = status in SETTLED and tx.settlement_time is not None
    if settled:
        body["settlement_time"] = midtrans_time(tx.settlement_time)  # type: ignore[arg-type]
    body.update(_method_fields(tx, method, gross, settled))
    if status == "refund" and tx.refund_time is not None:
        body["refund_amount"] = gross
        body["refunds"] = [
            {
                "refund_chargeback_id": 1,
                "refund_amount": gross,
                "created_at": midtrans_time(tx.refund_time),
                "reason": "sandbox refund",
                "refund_key": f"{tx.order_id}-refund",
            }
        ]
    return body


def _method_fields(tx: Transaction, method: Method, gross: str, settled: bool) -> dict[str, object]:
    if method.key == "qris":
        fields: dict[str, object] = {
            "transaction_type": "on-us",
            "acquirer": "gopay",
            "merchant_cross_reference_id": str(uuid.uuid5(uuid.NAMESPACE_URL, tx.transaction_id)),
        }
        if settled:
            fields["issuer"] = "gopay"
        return fields
    if method.key == "permata_va":
        return {"permata_va_number": va_number(tx.order_id, "permata")}
    if method.key == "echannel":
        return {"biller_code": BILLER_CODE, "bill_key": va_number(tx.order_id, "mandiri")}
    if method.payment_type == "bank_transfer":
        assert method.bank is not None
        paid = (
            [{"paid_at": midtrans_time(tx.settlement_time), "amount": gross}]
            if settled and tx.settlement_time is not None
            else []
        )
        return {
            "va_numbers": [{"bank": method.bank, "va_number": va_number(tx.order_id, method.bank)}],
            "payment_amounts": paid,
        }
    return {}


def va_number(order_id: str, bank: str) -> str:
    """The VA number (Mandiri: bill key) for an order: the same every time it is asked."""
    length = VA_LENGTHS[bank]
    number = int.from_bytes(hashlib.sha256(f"{bank}:{order_id}".encode()).digest(), "big")
    return str(number)[-length:].rjust(length, "0")


def payment_codes(tx: Transaction) -> list[tuple[str, str]]:
    """What the customer pays to, for the page: (label, number)."""
    method = METHODS[tx.method] if tx.method is not None else None
    if method is None or method.payment_type not in ("bank_transfer", "echannel"):
        return []
    if method.key == "echannel":
        return [("Biller code / bill key", f"{BILLER_CODE} / {va_number(tx.order_id, 'mandiri')}")]
    bank = method.bank or "permata"
    return [(f"{bank.upper()} virtual account", va_number(tx.order_id, bank))]


def status_answer(tx: Transaction | None, server_key: str) -> dict[str, object]:
    if tx is None or tx.status is None:
        raise not_found()
    return transaction_body(tx, tx.status, server_key, notification=False)


def finish_redirect(tx: Transaction) -> str | None:
    """Where Snap sends the browser after a click: the finish URL with the status (the
    window-redirection docs' query parameters), or None without a finish URL."""
    if tx.finish_url is None or tx.status is None:
        return None
    query = urlencode(
        {
            "merchant_id": MERCHANT_ID,
            "order_id": tx.order_id,
            "status_code": STATUS_CODES[tx.status],
            "transaction_status": tx.status,
        }
    )
    return with_query(tx.finish_url, query)


def retries_after(status: int | None) -> int:
    """How many times Midtrans retries a notification answered with `status` (None: no
    answer, a connection error or a timeout)."""
    if status is None:
        return 5
    if 200 <= status < 300 or status in (301, 302, 303):
        return 0
    return {500: 1, 503: 4, 400: 2, 404: 2}.get(status, 5)
