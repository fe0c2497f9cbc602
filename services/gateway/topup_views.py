"""Top-ups as the public API shows them (pure: no I/O): the parameters of
/v1/topups parsed into payments requests, naming the field in every 400, and
payments' orders shaped into public objects. Payments checks the same limits;
these exist so a client learns which field is wrong."""

from __future__ import annotations

import re
from typing import Any

from aiport.v1 import payments_pb2, topups_pb2

from services.common.money import micros_to_idr
from services.gateway import errors
from services.gateway.account_views import _nullable, _u32

MICROS = 1_000_000
DEFAULT_LIMIT = 20
MAX_LIMIT = 100
MAX_AMOUNT_DIGITS = 12
STATUSES = (
    "awaiting_payment",
    "pending",
    "paid",
    "expired",
    "cancelled",
    "failed",
    "refunded",
    "charged_back",
)
_TOPUP_ID = re.compile(r"top_[0-9A-Za-z]{20}")
_GATEWAY = re.compile(r"[a-z]{1,20}")
_DIGITS = re.compile(r"[0-9]{1,3}")


def amount_micros(value: Any, param: str = "amount_idr") -> int:
    """A whole number of rupiah, as a string of digits (or a JSON integer)."""
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        raise errors.invalid_request(
            f'{param} is required: whole rupiah as a string, e.g. "50000"', param
        )
    text = str(value).strip()
    if not text.isdigit() or len(text) > MAX_AMOUNT_DIGITS:
        raise errors.invalid_request(f'{param} must be whole rupiah, e.g. "50000"', param)
    return int(text) * MICROS


def gateway_name(value: Any) -> str:
    if value is None or value == "":
        return ""
    if not isinstance(value, str) or not _GATEWAY.fullmatch(value):
        raise errors.invalid_request('gateway must be "midtrans" or "xendit"', "gateway")
    return value


def topup_id(value: str) -> str:
    if not _TOPUP_ID.fullmatch(value):
        raise topup_not_found()
    return value


def create_request(
    account_id: str, body: dict[str, Any], payer_email: str = ""
) -> payments_pb2.CreateOrderRequest:
    unknown = sorted(set(body) - {"amount_idr", "gateway"})
    if unknown:
        raise errors.invalid_request(f"unknown field {unknown[0]}", unknown[0])
    return payments_pb2.CreateOrderRequest(
        account_id=account_id,
        amount_micros=amount_micros(body.get("amount_idr")),
        gateway=gateway_name(body.get("gateway")),
        payer_email=payer_email,
    )


def list_request(account_id: str, query: topups_pb2.TopUpQuery) -> payments_pb2.ListOrdersRequest:
    limit = DEFAULT_LIMIT
    if query.limit:
        if not _DIGITS.fullmatch(query.limit) or not 1 <= int(query.limit) <= MAX_LIMIT:
            raise errors.invalid_request(f"limit must be between 1 and {MAX_LIMIT}", "limit")
        limit = int(query.limit)
    if query.status and query.status not in STATUSES:
        raise errors.invalid_request(f"status must be one of: {', '.join(STATUSES)}", "status")
    if query.after and not _TOPUP_ID.fullmatch(query.after):
        raise invalid_cursor()
    return payments_pb2.ListOrdersRequest(
        account_id=account_id, limit=limit, after=query.after, status=query.status
    )


def topup_not_found() -> errors.PublicError:
    """An unknown id, or another account's (the same answer for both)."""
    return errors.PublicError(
        404, "invalid_request_error", "not_found", "No such top-up.", "topup_id"
    )


def invalid_cursor() -> errors.PublicError:
    return errors.invalid_request(
        "after is not a cursor of this listing: pass the next_cursor of a previous page.", "after"
    )


def not_paid(status: str) -> errors.PublicError:
    return errors.PublicError(
        409,
        "invalid_request_error",
        "topup_not_paid",
        f"A receipt exists once a top-up is paid; this one is {status}.",
        "topup_id",
    )


def quote(answer: payments_pb2.OrderQuote) -> topups_pb2.TopUpQuote:
    return topups_pb2.TopUpQuote(
        object="topup.quote",
        gateway=answer.gateway,
        amount_idr=micros_to_idr(answer.amount_micros),
        fee_idr=micros_to_idr(answer.fee_micros),
        total_idr=micros_to_idr(answer.total_micros),
        minimum_idr=micros_to_idr(answer.minimum_micros),
        maximum_idr=micros_to_idr(answer.maximum_micros),
        currency="IDR",
    )


def topup(order: payments_pb2.PaymentOrder) -> topups_pb2.TopUp:
    return topups_pb2.TopUp(
        object="topup",
        id=order.id,
        status=order.status,
        gateway=order.gateway,
        amount_idr=micros_to_idr(order.amount_micros),
        fee_idr=micros_to_idr(order.fee_micros),
        total_idr=micros_to_idr(order.total_micros),
        currency="IDR",
        payment_url=_nullable(order.payment_url),
        payment_method=_nullable(order.payment_method),
        created=_u32(order.created_at),
        expires_at=_nullable(order.expires_at),
        paid_at=_nullable(order.paid_at),
        reversed_idr=_nullable(
            micros_to_idr(order.reversed_micros) if order.reversed_micros else None
        ),
    )


def topup_list(page: payments_pb2.OrderPage) -> topups_pb2.TopUpList:
    return topups_pb2.TopUpList(
        object="list",
        data=[topup(o) for o in page.orders],
        has_more=bool(page.next_cursor),
        next_cursor=_nullable(page.next_cursor),
    )


LINE_NAMES = {
    "topup": "Isi saldo aiport (aiport balance top-up)",
    "fee": "Biaya pembayaran (payment fee)",
}


def receipt(answer: payments_pb2.Receipt, account_name: str) -> topups_pb2.TopUpReceipt:
    """The receipt; its buyer is the person who paid (their email, when the
    top-up was made in the console), else the account's name."""
    order = answer.order
    return topups_pb2.TopUpReceipt(
        object="topup.receipt",
        number=answer.number,
        topup_id=order.id,
        paid_at=_u32(order.paid_at),
        seller=topups_pb2.ReceiptParty(
            name=answer.seller_name,
            address=answer.seller_address,
            email=answer.seller_email,
            tax_id=answer.seller_tax_id,
        ),
        buyer=topups_pb2.ReceiptParty(
            name=order.payer_name or ("" if order.payer_email else account_name),
            email=order.payer_email,
        ),
        gateway=order.gateway,
        payment_method=order.payment_method,
        lines=[
            topups_pb2.ReceiptLine(
                description=LINE_NAMES.get(line.description, line.description),
                amount_idr=micros_to_idr(line.amount_micros),
            )
            for line in answer.lines
        ],
        total_idr=micros_to_idr(answer.total_micros),
        ppn_rate_percent=micros_to_idr(answer.ppn_rate_bp * 10_000),
        ppn_idr=micros_to_idr(answer.ppn_micros),
        dpp_idr=micros_to_idr(answer.dpp_micros),
        currency="IDR",
        amount_in_words=answer.amount_in_words,
    )
