"""The gRPC face of payments: `aiport.v1.Payments` over service.py.

Refusals become status codes (INVALID_ARGUMENT with the field in
x-aiport-field, NOT_FOUND, FAILED_PRECONDITION for a receipt of an unpaid
order, UNAVAILABLE when a gateway or the database cannot be reached);
anything unexpected is logged and answered INTERNAL, never a trace."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import grpc
import psycopg
from aiport.v1 import payments_pb2, payments_pb2_grpc
from psycopg_pool import PoolTimeout

from . import rules
from .config import ReceiptSettings
from .service import NotFound, Payments, Unavailable
from .store import Order

log = logging.getLogger("payments")

FIELD_TRAILER = "x-aiport-field"
# On FAILED_PRECONDITION from GetReceipt: the order's status (it is not paid).
STATUS_TRAILER = "x-aiport-order-status"
SERVICE_NAME = payments_pb2.DESCRIPTOR.services_by_name["Payments"].full_name
Ctx = grpc.aio.ServicerContext[Any, Any]
S = TypeVar("S")
Req = TypeVar("Req")
Resp = TypeVar("Resp")
PAID_ONCE = (rules.OrderStatus.PAID, rules.OrderStatus.REFUNDED, rules.OrderStatus.CHARGED_BACK)


def _guarded(
    method: Callable[[S, Req, Ctx], Awaitable[Resp]],
) -> Callable[[S, Req, Ctx], Awaitable[Resp]]:
    @functools.wraps(method)
    async def wrapper(self: S, request: Req, context: Ctx) -> Resp:
        try:
            return await method(self, request, context)
        except rules.PaymentError as exc:
            if exc.field:
                context.set_trailing_metadata(((FIELD_TRAILER, exc.field),))
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except NotFound as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        except Unavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except (psycopg.OperationalError, PoolTimeout, OSError):
            log.warning("database unavailable", extra={"method": method.__name__})
            await context.abort(grpc.StatusCode.UNAVAILABLE, "payments cannot reach its database")
        raise AssertionError("unreachable")

    return wrapper


def _seconds(value: datetime | None) -> int:
    return int(value.timestamp()) if value is not None else 0


def order_message(order: Order) -> payments_pb2.PaymentOrder:
    return payments_pb2.PaymentOrder(
        id=order.id,
        account_id=order.account_id,
        gateway=order.gateway,
        status=order.status.value,
        amount_micros=order.amount_micros,
        fee_micros=order.fee_micros,
        total_micros=order.total_micros,
        payment_url=order.payment_url,
        payment_method=order.payment_method,
        created_at=_seconds(order.created_at),
        expires_at=_seconds(order.expires_at),
        paid_at=_seconds(order.paid_at),
        reversed_micros=order.reversed_micros,
        flag=order.flag,
        gateway_ref=order.gateway_ref,
        payer_email=order.payer_email,
        payer_name=order.payer_name,
    )


def receipt_message(order: Order, seller: ReceiptSettings) -> payments_pb2.Receipt:
    """A kwitansi for a paid order: the top-up, the fee if any, and the PPN the
    total includes when the operator charges it."""
    assert order.paid_at is not None
    lines = [payments_pb2.ReceiptLineItem(description="topup", amount_micros=order.amount_micros)]
    if order.fee_micros:
        lines.append(
            payments_pb2.ReceiptLineItem(description="fee", amount_micros=order.fee_micros)
        )
    dpp, ppn = rules.ppn_split(order.total_micros, seller.ppn_rate_bp)
    assert dpp + ppn == order.total_micros
    return payments_pb2.Receipt(
        number=f"KW/{order.paid_at:%Y/%m}/{order.id}",
        order=order_message(order),
        seller_name=seller.company_name,
        seller_address=seller.address,
        seller_email=seller.email,
        seller_tax_id=seller.npwp,
        lines=lines,
        total_micros=order.total_micros,
        ppn_rate_bp=seller.ppn_rate_bp,
        ppn_micros=ppn,
        dpp_micros=dpp,
        amount_in_words=rules.terbilang(order.total_micros // rules.MICROS) + " rupiah",
    )


class PaymentsServicer(payments_pb2_grpc.PaymentsServicer):
    def __init__(self, payments: Payments, receipt: ReceiptSettings) -> None:
        self._payments = payments
        self._receipt = receipt

    @_guarded
    async def Quote(
        self, request: payments_pb2.QuoteRequest, context: Ctx
    ) -> payments_pb2.OrderQuote:
        quote = self._payments.quote(request.amount_micros, request.gateway)
        return payments_pb2.OrderQuote(
            gateway=quote.gateway,
            amount_micros=quote.amount_micros,
            fee_micros=quote.fee_micros,
            total_micros=quote.total_micros,
            minimum_micros=quote.limits.minimum_micros,
            maximum_micros=quote.limits.maximum_micros,
        )

    @_guarded
    async def CreateOrder(
        self, request: payments_pb2.CreateOrderRequest, context: Ctx
    ) -> payments_pb2.PaymentOrder:
        if not request.account_id:
            raise rules.PaymentError("account_id is required", "account_id")
        order = await self._payments.create_order(
            request.account_id,
            request.amount_micros,
            request.gateway,
            request.payer_email,
            request.payer_name,
        )
        return order_message(order)

    @_guarded
    async def GetOrder(
        self, request: payments_pb2.GetOrderRequest, context: Ctx
    ) -> payments_pb2.PaymentOrder:
        order = await self._payments.get_order(request.order_id, request.account_id or None)
        return order_message(order)

    @_guarded
    async def ListOrders(
        self, request: payments_pb2.ListOrdersRequest, context: Ctx
    ) -> payments_pb2.OrderPage:
        orders, cursor = await self._payments.list_orders(
            request.account_id or None,
            request.limit,
            request.after,
            request.status,
            request.flagged_only,
        )
        return payments_pb2.OrderPage(orders=[order_message(o) for o in orders], next_cursor=cursor)

    @_guarded
    async def GetReceipt(
        self, request: payments_pb2.GetOrderRequest, context: Ctx
    ) -> payments_pb2.Receipt:
        order = await self._payments.get_order(request.order_id, request.account_id or None)
        if order.status not in PAID_ONCE or order.paid_at is None:
            context.set_trailing_metadata(((STATUS_TRAILER, order.status.value),))
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"top-up {order.id} is not paid ({order.status})",
            )
        return receipt_message(order, self._receipt)

    @_guarded
    async def Reconcile(
        self, request: payments_pb2.ReconcileRequest, context: Ctx
    ) -> payments_pb2.ReconcileReport:
        findings, checked = await self._payments.reconcile(request.apply, request.limit)
        return payments_pb2.ReconcileReport(
            checked=checked,
            findings=[
                payments_pb2.ReconcileFinding(
                    order_id=f.order.id,
                    gateway=f.order.gateway,
                    our_status=f.order.status.value,
                    gateway_status=f.gateway_status,
                    credited_micros=f.order.amount_micros if f.order.credited_at else 0,
                    problem=f.problem,
                    action=f.action,
                )
                for f in findings
            ],
        )


def register(server: grpc.aio.Server, servicer: PaymentsServicer) -> list[str]:
    payments_pb2_grpc.add_PaymentsServicer_to_server(servicer, server)
    return [SERVICE_NAME]
