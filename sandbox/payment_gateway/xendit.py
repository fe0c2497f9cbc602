"""Xendit Invoices as our adapters meet them: create, get, expire, the invoice page and the
invoice callback. The pure part: request checks, the invoice's states and the exact
bodies. server.py moves the bytes.

What the docs and the official SDKs' models say (docs.xendit.co, xendit-node/-php), and
what this module does about it:
- `POST /v2/invoices`, Basic auth (secret key, empty password). Body: external_id and
  amount required; description, payer_email, invoice_duration (seconds; default 24 h,
  at most a year), success_redirect_url, failure_redirect_url, currency, payment_methods.
  200 with the invoice object: id (24 hex), external_id, user_id, status PENDING,
  merchant_name, merchant_profile_picture_url, amount, description, expiry_date,
  invoice_url, available_banks [{bank_code, collection_type "POOL", transfer_amount,
  bank_branch "Virtual Account", account_holder_name, identity_amount}],
  available_retail_outlets, available_ewallets [{ewallet_type}], available_qr_codes
  [{qr_code_type "QRIS"}], available_direct_debits, available_paylaters,
  should_exclude_credit_card, should_send_email, created, updated, currency. Times are
  ISO 8601 UTC with milliseconds ("2024-01-17T02:18:06.932Z"). Duplicate external_ids are
  allowed (Xendit's default).
- Errors are {"error_code", "message"}: 401 INVALID_API_KEY, 400 API_VALIDATION_ERROR
  (message in Xendit's style: '"amount" is required'), 404 INVOICE_NOT_FOUND_ERROR.
  A currency other than IDR is a 400 UNSUPPORTED_CURRENCY (the sandbox only has IDR).
- `GET /v2/invoices/{id}`: the invoice; once paid it adds paid_amount, paid_at,
  payment_method (BANK_TRANSFER | EWALLET | QR_CODE), payment_channel, payment_destination,
  bank_code (VA), ewallet_type (e-wallet), payment_id. Status PENDING, PAID, SETTLED or
  EXPIRED.
- `POST /invoices/{id}/expire!`: a PENDING invoice becomes EXPIRED (and its callback
  goes); an EXPIRED one is answered as it is; a PAID/SETTLED one is a 404
  INVOICE_NOT_FOUND_ERROR (there is no pending invoice to expire; the docs do not name
  this case).
- Callback: POST JSON with header `x-callback-token` (the account's verification token):
  id, external_id, user_id, is_high, payment_method, status, merchant_name, amount,
  paid_amount, bank_code, paid_at, payer_email, description, adjusted_received_amount,
  fees_paid_amount, updated, created, currency, payment_channel, payment_destination,
  payment_id, success_redirect_url, failure_redirect_url (absent fields are left out).
  It goes on PAID, on EXPIRED and (in the sandbox, so settlement can be drilled) on
  SETTLED. Xendit retries any non-2xx or no answer within 30 s, up to 6 times over 24 h;
  the sandbox retries after each of --retry-delays.

Sandbox choices: external_id 1..255 characters, description up to 1000, amount a whole
number of rupiah 1..MAX_AMOUNT, payment_methods narrowing the page to the channels below
(at least one must remain).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sandbox.payment_gateway.common import GatewayError, Refused, is_http_url

USER_ID = "64b5f1e2c0ffee0000000001"
MERCHANT_NAME = "aiport sandbox"
MERCHANT_PICTURE_URL = "https://xnd-companies.s3.amazonaws.com/prod/sandbox.png"
ACCOUNT_HOLDER = "AIPORT SANDBOX"
DEFAULT_DURATION = 86400
MAX_DURATION = 31_536_000
MAX_AMOUNT = 100_000_000_000
MAX_EXTERNAL_ID_CHARS = 255
MAX_DESCRIPTION_CHARS = 1000
MAX_EMAIL_CHARS = 254
MAX_PAYMENT_METHODS = 50
EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
ACTIONS = ("pay", "expire", "settle")


@dataclass(frozen=True)
class Channel:
    code: str  # Xendit's channel name: payment_methods entries, bank_code, ewallet_type
    label: str
    payment_method: str  # the callback's payment_method


CHANNELS: dict[str, Channel] = {
    c.code: c
    for c in (
        Channel("QRIS", "QRIS", "QR_CODE"),
        Channel("BCA", "BCA virtual account", "BANK_TRANSFER"),
        Channel("BNI", "BNI virtual account", "BANK_TRANSFER"),
        Channel("BRI", "BRI virtual account", "BANK_TRANSFER"),
        Channel("MANDIRI", "Mandiri virtual account", "BANK_TRANSFER"),
        Channel("PERMATA", "Permata virtual account", "BANK_TRANSFER"),
        Channel("OVO", "OVO", "EWALLET"),
        Channel("DANA", "DANA", "EWALLET"),
        Channel("SHOPEEPAY", "ShopeePay", "EWALLET"),
    )
}


def error(status: int, code: str, message: str) -> GatewayError:
    return GatewayError(status, {"error_code": code, "message": message})


def auth_error(header_sent: bool) -> GatewayError:
    if not header_sent:
        return error(401, "INVALID_API_KEY", "API key is required (HTTP Basic, key as username)")
    return error(401, "INVALID_API_KEY", "API key is invalid")


def validation_error(message: str) -> GatewayError:
    return error(400, "API_VALIDATION_ERROR", message)


def not_found(invoice_id: str) -> GatewayError:
    return error(404, "INVOICE_NOT_FOUND_ERROR", f"Invoice {invoice_id[:64]} not found")


def xendit_time(epoch: float) -> str:
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


# --- create ------------------------------------------------------------------------------


@dataclass(frozen=True)
class InvoiceRequest:
    external_id: str
    amount: int
    description: str | None
    payer_email: str | None
    duration: int
    success_url: str | None
    failure_url: str | None
    channels: tuple[str, ...]


def parse_invoice_request(body: object) -> InvoiceRequest:
    """Check a create body; the first problem found is the 400's message."""
    if not isinstance(body, dict):
        raise validation_error('"value" must be an object')
    external_id = body.get("external_id")
    if external_id is None or external_id == "":
        raise validation_error('"external_id" is required')
    if not isinstance(external_id, str):
        raise validation_error('"external_id" must be a string')
    if len(external_id) > MAX_EXTERNAL_ID_CHARS:
        raise validation_error(
            f'"external_id" length must be less than or equal to {MAX_EXTERNAL_ID_CHARS} '
            "characters long"
        )
    amount = _amount(body.get("amount"))
    currency = body.get("currency", "IDR")
    if currency != "IDR":
        raise error(
            400, "UNSUPPORTED_CURRENCY", f"Currency {str(currency)[:8]} is not supported (IDR)"
        )
    description = _optional_text(body, "description", MAX_DESCRIPTION_CHARS)
    payer_email = _optional_text(body, "payer_email", MAX_EMAIL_CHARS)
    if payer_email is not None and not EMAIL_RE.fullmatch(payer_email):
        raise validation_error('"payer_email" must be a valid email')
    duration = body.get("invoice_duration", DEFAULT_DURATION)
    if isinstance(duration, str) and duration.isdigit():
        duration = int(duration)  # the SDKs' model types it as a string
    if not isinstance(duration, int) or isinstance(duration, bool):
        raise validation_error('"invoice_duration" must be a number')
    if not 1 <= duration <= MAX_DURATION:
        raise validation_error(f'"invoice_duration" must be between 1 and {MAX_DURATION}')
    urls: dict[str, str | None] = {}
    for field in ("success_redirect_url", "failure_redirect_url"):
        value = body.get(field)
        if value is not None and not is_http_url(value):
            raise validation_error(f'"{field}" must be a valid http(s) uri')
        urls[field] = None if value is None else str(value)
    return InvoiceRequest(
        external_id=external_id,
        amount=amount,
        description=description,
        payer_email=payer_email,
        duration=duration,
        success_url=urls["success_redirect_url"],
        failure_url=urls["failure_redirect_url"],
        channels=_channels(body.get("payment_methods")),
    )


def _amount(value: object) -> int:
    if value is None:
        raise validation_error('"amount" is required')
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise validation_error('"amount" must be a number')
    if isinstance(value, float) and not value.is_integer():
        raise validation_error('"amount" must be a whole number for IDR')
    amount = int(value)
    if amount < 1:
        raise validation_error('"amount" must be larger than or equal to 1')
    if amount > MAX_AMOUNT:
        raise validation_error(f'"amount" must be less than or equal to {MAX_AMOUNT}')
    return amount


def _optional_text(body: dict[str, object], field: str, limit: int) -> str | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise validation_error(f'"{field}" must be a string')
    if len(value) > limit:
        raise validation_error(
            f'"{field}" length must be less than or equal to {limit} characters long'
        )
    return value


def _channels(value: object) -> tuple[str, ...]:
    if value is None:
        return tuple(CHANNELS)
    if (
        not isinstance(value, list)
        or len(value) > MAX_PAYMENT_METHODS
        or not all(isinstance(v, str) and len(v) <= 40 for v in value)
    ):
        raise validation_error('"payment_methods" must be an array of channel names')
    wanted = {v.upper() for v in value}
    channels = tuple(code for code in CHANNELS if code in wanted)
    if not channels:
        raise validation_error(
            '"payment_methods" must include one of the sandbox\'s channels: ' + ", ".join(CHANNELS)
        )
    return channels


# --- the invoice -------------------------------------------------------------------------


@dataclass
class Invoice:
    id: str
    request: InvoiceRequest
    created: float
    updated: float
    expires_at: float
    status: str = "PENDING"
    paid_at: float | None = None
    channel: str | None = None
    payment_id: str | None = None


def new_invoice(request: InvoiceRequest, now: float) -> Invoice:
    return Invoice(
        id=secrets.token_hex(12),
        request=request,
        created=now,
        updated=now,
        expires_at=now + request.duration,
    )


def apply(invoice: Invoice, action: str, channel: str | None, now: float) -> bool:
    """Move `invoice` by a page click, a control or the expire API; returns whether its
    status changed (a callback goes)."""
    if action not in ACTIONS:
        raise Refused(f"unknown action {action[:40]!r}; use one of {', '.join(ACTIONS)}", "action")
    if action == "pay":
        if channel is None or channel.upper() not in CHANNELS:
            raise Refused(f"method must be one of {', '.join(CHANNELS)}", "method")
        code = channel.upper()
        if code not in invoice.request.channels:
            raise Refused(f"{code} is not among this invoice's payment_methods", "method")
        _require(invoice, "PENDING", action)
        if now >= invoice.expires_at:
            raise Refused("the invoice has expired")
        invoice.status = "PAID"
        invoice.channel = code
        invoice.paid_at = now
        invoice.payment_id = secrets.token_hex(12)
    elif action == "expire":
        if invoice.status == "EXPIRED":
            return False
        _require(invoice, "PENDING", action)
        invoice.status = "EXPIRED"
    else:
        _require(invoice, "PAID", action)
        invoice.status = "SETTLED"
    invoice.updated = now
    return True


def _require(invoice: Invoice, status: str, action: str) -> None:
    if invoice.status != status:
        raise Refused(f"cannot {action}: the invoice is {invoice.status}, not {status}")


def overdue(invoices: Iterable[Invoice], now: float) -> list[Invoice]:
    return [inv for inv in invoices if inv.status == "PENDING" and now >= inv.expires_at]


# --- what Xendit says about an invoice ---------------------------------------------------


def invoice_body(invoice: Invoice, public_url: str) -> dict[str, object]:
    request = invoice.request
    banks = [c for c in request.channels if CHANNELS[c].payment_method == "BANK_TRANSFER"]
    body: dict[str, object] = {
        "id": invoice.id,
        "external_id": request.external_id,
        "user_id": USER_ID,
        "is_high": False,
        "status": invoice.status,
        "merchant_name": MERCHANT_NAME,
        "merchant_profile_picture_url": MERCHANT_PICTURE_URL,
        "amount": request.amount,
        "payer_email": request.payer_email,
        "description": request.description,
        "expiry_date": xendit_time(invoice.expires_at),
        "invoice_url": f"{public_url}/web/{invoice.id}",
        "available_banks": [
            {
                "bank_code": code,
                "collection_type": "POOL",
                "transfer_amount": request.amount,
                "bank_branch": "Virtual Account",
                "account_holder_name": ACCOUNT_HOLDER,
                "identity_amount": 0,
            }
            for code in banks
        ],
        "available_retail_outlets": [],
        "available_ewallets": [
            {"ewallet_type": c} for c in request.channels if CHANNELS[c].payment_method == "EWALLET"
        ],
        "available_qr_codes": [{"qr_code_type": "QRIS"}] if "QRIS" in request.channels else [],
        "available_direct_debits": [],
        "available_paylaters": [],
        "should_exclude_credit_card": False,
        "should_send_email": False,
        "success_redirect_url": request.success_url,
        "failure_redirect_url": request.failure_url,
        "created": xendit_time(invoice.created),
        "updated": xendit_time(invoice.updated),
        "currency": "IDR",
    }
    body.update(_payment_fields(invoice))
    return {k: v for k, v in body.items() if v is not None}


def _payment_fields(invoice: Invoice) -> dict[str, object]:
    if invoice.channel is None or invoice.paid_at is None:
        return {}
    channel = CHANNELS[invoice.channel]
    fields: dict[str, object] = {
        "paid_amount": invoice.request.amount,
        "paid_at": xendit_time(invoice.paid_at),
        "payment_method": channel.payment_method,
        "payment_channel": channel.code,
        "payment_id": invoice.payment_id,
    }
    if channel.payment_method == "BANK_TRANSFER":
        fields["bank_code"] = channel.code
        fields["payment_destination"] = _digits(invoice.id, channel.code, 16)
    elif channel.payment_method == "EWALLET":
        fields["ewallet_type"] = channel.code
    else:
        fields["payment_destination"] = f"qr_{invoice.payment_id}"
    return fields


def _digits(invoice_id: str, bank: str, length: int) -> str:
    number = int.from_bytes(hashlib.sha256(f"{bank}:{invoice_id}".encode()).digest(), "big")
    return str(number)[-length:].rjust(length, "0")


def callback_body(invoice: Invoice) -> dict[str, object]:
    request = invoice.request
    body: dict[str, object] = {
        "id": invoice.id,
        "external_id": request.external_id,
        "user_id": USER_ID,
        "is_high": False,
        "status": invoice.status,
        "merchant_name": MERCHANT_NAME,
        "amount": request.amount,
        "payer_email": request.payer_email,
        "description": request.description,
        "created": xendit_time(invoice.created),
        "updated": xendit_time(invoice.updated),
        "currency": "IDR",
        "success_redirect_url": request.success_url,
        "failure_redirect_url": request.failure_url,
    }
    payment = _payment_fields(invoice)
    if payment:
        body.update(payment)
        body["adjusted_received_amount"] = request.amount
        body["fees_paid_amount"] = 0
    return {k: v for k, v in body.items() if v is not None}


def redirect_after(invoice: Invoice) -> str | None:
    """Where the invoice page sends the browser: success after paying, failure after
    expiring; None if the merchant gave no URL."""
    if invoice.status in ("PAID", "SETTLED"):
        return invoice.request.success_url
    if invoice.status == "EXPIRED":
        return invoice.request.failure_url
    return None
