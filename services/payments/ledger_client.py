"""Billing, as the payments service uses it: a top-up's credit and its
reversal, each keyed by gateway and order id (rules.billing_key), so however
often settle runs, billing moves the money once. The description is part of
billing's input hash, so it is built from the order alone and never varies."""

from __future__ import annotations

import grpc
from aiport.v1 import billing_pb2, billing_pb2_grpc

from .service import LedgerRefused, LedgerUnavailable
from .store import Order

TIMEOUT_SECONDS = 10.0
# How the customer's statement names each gateway.
GATEWAY_NAMES = {"midtrans": "Midtrans", "xendit": "Xendit"}
# Worth another try later; any other refusal needs an operator.
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    }
)


def _failure(exc: grpc.aio.AioRpcError) -> Exception:
    if exc.code() in RETRYABLE:
        return LedgerUnavailable(exc.code().name)
    return LedgerRefused(f"{exc.code().name}: {exc.details()}")


class BillingLedger:
    def __init__(self, stub: billing_pb2_grpc.BillingStub) -> None:
        self._stub = stub

    async def credit(self, order: Order, key: str) -> None:
        rail = GATEWAY_NAMES.get(order.gateway, order.gateway)
        try:
            await self._stub.TopUp(
                billing_pb2.TopUpRequest(
                    account_id=order.account_id,
                    amount_micros=order.amount_micros,
                    idempotency_key=key,
                    description=f"Top-up {order.id} via {rail}",
                    payment_rail=order.gateway,
                ),
                timeout=TIMEOUT_SECONDS,
            )
        except grpc.aio.AioRpcError as exc:
            raise _failure(exc) from exc

    async def reverse(self, order: Order, key: str, chargeback: bool) -> None:
        reason = (
            billing_pb2.ReverseTopUpRequest.CHARGEBACK
            if chargeback
            else billing_pb2.ReverseTopUpRequest.REFUND
        )
        try:
            await self._stub.ReverseTopUp(
                billing_pb2.ReverseTopUpRequest(
                    account_id=order.account_id,
                    amount_micros=order.amount_micros,
                    idempotency_key=key,
                    payment_rail=order.gateway,
                    reason=reason,
                    description=f"{'Chargeback' if chargeback else 'Refund'} of top-up {order.id}",
                ),
                timeout=TIMEOUT_SECONDS,
            )
        except grpc.aio.AioRpcError as exc:
            raise _failure(exc) from exc
