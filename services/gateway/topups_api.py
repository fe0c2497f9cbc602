"""Top-ups (/v1/topups): the caller's account buys balance through a payment
gateway. Every method authenticates the caller and asks payments about that
caller's account only; creating one needs the `manage` scope. Parsing and
shaping are pure (topup_views.py)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar, cast

import grpc
from aiport.v1 import billing_pb2, payments_pb2, payments_pb2_grpc, topups_pb2, topups_pb2_grpc
from google.api import httpbody_pb2

from services.common.grpc_server import ServicerContext
from services.common.logs import fields
from services.gateway import account_views, errors, topup_views
from services.gateway.boundary import public_unary
from services.gateway.idempotent_calls import once
from services.gateway.server import Backends, Caller

log = logging.getLogger(__name__)

T = TypeVar("T")
PAYMENTS_TIMEOUT_SECONDS = 20.0
FIELD_TRAILER = "x-aiport-field"
STATUS_TRAILER = "x-aiport-order-status"


def _field(exc: grpc.aio.AioRpcError, name: str = FIELD_TRAILER) -> str | None:
    pairs = cast(Iterable[tuple[str, str | bytes]], exc.trailing_metadata() or ())
    for key, value in pairs:
        if key == name:
            return value if isinstance(value, str) else value.decode("latin-1")
    return None


class TopUpsService(topups_pb2_grpc.TopUpsServicer):
    def __init__(self, backends: Backends, payments: grpc.aio.Channel | None) -> None:
        self.backends = backends
        # None: this deployment takes no top-ups (no payments token).
        self.payments = None if payments is None else payments_pb2_grpc.PaymentsStub(payments)

    async def _call(
        self,
        method: Callable[[payments_pb2_grpc.PaymentsStub], Callable[..., Awaitable[T]]],
        request: object,
    ) -> T:
        """Call payments: its refusals become the public 400/404, anything else a 503."""
        if self.payments is None:
            raise errors.service_unavailable("Top-ups are not available on this deployment.")
        try:
            return await method(self.payments)(request, timeout=PAYMENTS_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as exc:
            if exc.code() is grpc.StatusCode.INVALID_ARGUMENT:
                raise errors.invalid_request(
                    exc.details() or "invalid request", _field(exc)
                ) from exc
            if exc.code() is grpc.StatusCode.NOT_FOUND:
                raise topup_views.topup_not_found() from exc
            if exc.code() is grpc.StatusCode.FAILED_PRECONDITION:
                # GetReceipt of an order that is not paid: payments names its status.
                raise topup_views.not_paid(_field(exc, STATUS_TRAILER) or "not paid") from exc
            log.error(
                "payments call failed",
                extra=fields(code=exc.code().name, detail=exc.details()),
            )
            raise errors.service_unavailable(
                "Top-ups are temporarily unavailable. Please try again."
            ) from exc

    @public_unary
    async def QuoteTopUp(
        self, request: topups_pb2.TopUpQuoteQuery, context: ServicerContext
    ) -> topups_pb2.TopUpQuote:
        await self.backends.authenticate(context)
        query = payments_pb2.QuoteRequest(
            amount_micros=topup_views.amount_micros(request.amount_idr),
            gateway=topup_views.gateway_name(request.gateway),
        )
        return topup_views.quote(await self._call(lambda p: p.Quote, query))

    @public_unary
    async def CreateTopUp(
        self, request: httpbody_pb2.HttpBody, context: ServicerContext
    ) -> topups_pb2.TopUp:
        caller = await self._manager(context)
        body = errors.json_object_body(request.data)
        create = topup_views.create_request(caller.account_id, body, caller.email)
        order = await once(
            self.backends,
            context,
            caller,
            "topups.create",
            request.data,
            payments_pb2.PaymentOrder,
            lambda: self._call(lambda p: p.CreateOrder, create),
        )
        log.info(
            "top-up created",
            extra=fields(account_id=caller.account_id, topup_id=order.id, by_key_id=caller.key_id),
        )
        return topup_views.topup(order)

    @public_unary
    async def ListTopUps(
        self, request: topups_pb2.TopUpQuery, context: ServicerContext
    ) -> topups_pb2.TopUpList:
        caller = await self.backends.authenticate(context)
        query = topup_views.list_request(caller.account_id, request)
        try:
            page = await self._call(lambda p: p.ListOrders, query)
        except errors.PublicError as exc:
            if exc.param == "after":
                raise topup_views.invalid_cursor() from exc
            raise
        return topup_views.topup_list(page)

    @public_unary
    async def GetTopUp(
        self, request: topups_pb2.GetTopUpRequest, context: ServicerContext
    ) -> topups_pb2.TopUp:
        caller = await self.backends.authenticate(context)
        order = await self._call(
            lambda p: p.GetOrder,
            payments_pb2.GetOrderRequest(
                order_id=topup_views.topup_id(request.topup_id), account_id=caller.account_id
            ),
        )
        return topup_views.topup(order)

    @public_unary
    async def GetTopUpReceipt(
        self, request: topups_pb2.GetTopUpRequest, context: ServicerContext
    ) -> topups_pb2.TopUpReceipt:
        caller = await self.backends.authenticate(context)
        ask = payments_pb2.GetOrderRequest(
            order_id=topup_views.topup_id(request.topup_id), account_id=caller.account_id
        )
        receipt = await self._call(lambda p: p.GetReceipt, ask)
        account = await self.backends.billing_call(
            self.backends.billing.GetAccount,
            billing_pb2.GetAccountRequest(account_id=caller.account_id),
        )
        return topup_views.receipt(receipt, account.name)

    async def _manager(self, context: ServicerContext) -> Caller:
        caller = await self.backends.authenticate(context)
        if account_views.MANAGE not in caller.scopes:
            raise errors.PublicError(
                403,
                "permission_error",
                "insufficient_scope",
                'Creating a top-up needs an API key with the "manage" scope;'
                " this key does not have it.",
            )
        return caller
