"""The gateway's public services: Chat, Catalog and Account.

Every public call authenticates with billing, validates, and for chat places
a hold for the worst case before the upstream call, captures the real cost
afterwards and releases the rest (or all of it, when the upstream failed
before any output).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass
from typing import TypeVar, cast

import grpc
import orjson
from aiport.v1 import (
    account_pb2,
    account_pb2_grpc,
    billing_pb2,
    billing_pb2_grpc,
    catalog_pb2,
    catalog_pb2_grpc,
    chat_pb2_grpc,
    providers_pb2,
    providers_pb2_grpc,
)
from google.api import httpbody_pb2

from services.common import requestctx
from services.common.catalog import Catalog, ImageModel, TextModel, VideoModel
from services.common.grpc_server import ServicerContext
from services.common.money import micros_to_idr
from services.common.sse import DONE, frame
from services.gateway import bad_keys, errors
from services.gateway.chat_request import parse_chat_request
from services.gateway.errors import PublicError
from services.gateway.pricing import Usage, cost_micros, estimated_usage, hold_micros

log = logging.getLogger(__name__)

T = TypeVar("T")

# Bounded waits on our own services; the upstream's own timeouts live in providers.
BILLING_TIMEOUT_SECONDS = 10.0
UPSTREAM_CALL_TIMEOUT_SECONDS = 900.0
SETTLE_ATTEMPTS = 4
UPSTREAM_FAILURE_KEY = "x-aiport-upstream-failure"
BEARER = "bearer "


@dataclass(frozen=True, slots=True)
class Caller:
    account_id: str
    key_id: str
    request_id: str  # for correlation only: the client may choose it
    # Idempotency key of this call's hold and job: made here, never by the client
    # (a reused x-request-id must not share, or collide with, another call's hold).
    call_id: str


def new_call_id() -> str:
    return secrets.token_hex(16)


def _metadata(context: ServicerContext, name: str) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == name:
            return value if isinstance(value, str) else value.decode("latin-1")
    return None


async def abort_with(context: ServicerContext, error: PublicError) -> None:
    context.set_trailing_metadata(error.trailing_metadata())
    await context.abort(error.grpc_code, error.message)


def _is_upstream_failure(exc: grpc.aio.AioRpcError) -> bool:
    # At run time this is a sequence of (key, value) pairs; grpc-stubs says otherwise.
    pairs = cast(Iterable[tuple[str, object]], exc.trailing_metadata() or ())
    return any(key == UPSTREAM_FAILURE_KEY for key, _ in pairs)


class Backends:
    """The gateway's clients for billing and providers, with error translation."""

    def __init__(self, billing: grpc.aio.Channel, providers: grpc.aio.Channel) -> None:
        self.billing = billing_pb2_grpc.BillingStub(billing)
        self.providers = providers_pb2_grpc.ProvidersStub(providers)
        # Settlement tasks that must outlive a cancelled request.
        self._background: set[asyncio.Task[None]] = set()

    async def billing_call(
        self,
        call: Callable[..., Awaitable[T]],
        request: object,
        expected: tuple[grpc.StatusCode, ...] = (),
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> T:
        """Call billing; codes in `expected` are re-raised for the caller to handle,
        anything else becomes a clean 503 (and a log line for the operator)."""
        try:
            if metadata:
                return await call(request, timeout=BILLING_TIMEOUT_SECONDS, metadata=metadata)
            return await call(request, timeout=BILLING_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in expected:
                raise
            log.error(
                "billing call failed",
                extra={"fields": {"code": exc.code().name, "detail": exc.details()}},
            )
            raise errors.service_unavailable(
                "Billing is temporarily unavailable. Please try again."
            ) from exc

    @staticmethod
    def api_key(context: ServicerContext) -> str:
        """The Bearer key of the call (401 when there is none)."""
        header = _metadata(context, "authorization") or ""
        key = header[len(BEARER) :].strip()
        if header[: len(BEARER)].lower() != BEARER or not key:
            raise errors.unauthorized()
        return key

    @staticmethod
    def request_id(context: ServicerContext) -> str:
        """The call's request id: the one the server interceptor made current (the
        edge's x-request-id, cleaned), so logs, holds and every hop share it."""
        return requestctx.current() or requestctx.ensure(_metadata(context, "x-request-id"))

    async def authenticate(self, context: ServicerContext) -> Caller:
        key = self.api_key(context)
        # A key locked out by repeated failures is refused (429) before billing.
        attempt = bad_keys.begin(context.invocation_metadata(), context.peer(), key)
        try:
            principal = await self.billing_call(
                self.billing.Authenticate,
                billing_pb2.AuthenticateRequest(api_key=key),
                expected=(grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INVALID_ARGUMENT),
                metadata=attempt.billing_metadata(),
            )
        except grpc.aio.AioRpcError as exc:
            raise self._refused(attempt, exc) from exc
        return Caller(
            principal.account_id, principal.key_id, self.request_id(context), new_call_id()
        )

    async def authorize_hold(
        self,
        context: ServicerContext,
        amount_micros: int,
        purpose: str,
        insufficient: Callable[[], PublicError],
        ttl_seconds: int = 0,
    ) -> tuple[Caller, billing_pb2.Hold]:
        """Authenticate and reserve the worst-case cost in one billing call."""
        key = self.api_key(context)
        request_id = self.request_id(context)
        call_id = new_call_id()
        attempt = bad_keys.begin(context.invocation_metadata(), context.peer(), key)
        try:
            authorized: billing_pb2.AuthorizedHold = await self.billing_call(
                self.billing.AuthorizeHold,
                billing_pb2.AuthorizeHoldRequest(
                    api_key=key,
                    amount_micros=amount_micros,
                    # One hold per call, whatever retries happen in between.
                    idempotency_key=f"{purpose.split()[0]}:{call_id}",
                    description=f"{purpose} {request_id}",
                    ttl_seconds=ttl_seconds,
                ),
                expected=(
                    grpc.StatusCode.UNAUTHENTICATED,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                ),
                metadata=attempt.billing_metadata(),
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise insufficient() from exc
            raise self._refused(attempt, exc) from exc
        principal = authorized.principal
        return Caller(principal.account_id, principal.key_id, request_id, call_id), authorized.hold

    @staticmethod
    def _refused(attempt: bad_keys.Attempt, exc: grpc.aio.AioRpcError) -> PublicError:
        """A failed authentication: a 401, or a 429 when billing reports that this
        key or client is locked out (counted across every gateway replica)."""
        # grpc.aio.Metadata at run time: (key, value) pairs (grpc-stubs says otherwise).
        trailing = cast(Iterable[tuple[str, str | bytes]], exc.trailing_metadata() or ())
        wait = attempt.failed(trailing)
        return bad_keys.too_many_attempts(wait) if wait > 0 else errors.unauthorized()

    def settle_later(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _settle_shielded(
        self, name: str, call: Callable[[], Awaitable[object]], hold_id: str
    ) -> None:
        """Settle in a task of its own: a client leaving mid-capture cancels the
        request's task, and must not cancel the capture of what it already got."""
        await asyncio.shield(self.settle_later(self._settle(name, call, hold_id)))

    async def _settle(self, name: str, call: Callable[[], Awaitable[object]], hold_id: str) -> None:
        # Capture and release are idempotent per hold, so retrying is safe.
        for attempt in range(SETTLE_ATTEMPTS):
            try:
                await call()
                return
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                ):
                    log.error(
                        f"{name} refused",
                        extra={"fields": {"hold_id": hold_id, "detail": exc.details()}},
                    )
                    return
                await asyncio.sleep(0.2 * 2**attempt)
        # The hold expires and is released by billing: the customer is not charged.
        log.error(f"{name} failed; hold left to expire", extra={"fields": {"hold_id": hold_id}})

    async def capture(self, hold_id: str, amount: int, description: str) -> None:
        request = billing_pb2.CaptureHoldRequest(
            hold_id=hold_id, amount_micros=amount, description=description
        )
        await self._settle_shielded(
            "capture",
            lambda: self.billing.CaptureHold(request, timeout=BILLING_TIMEOUT_SECONDS),
            hold_id,
        )

    async def release(self, hold_id: str, reason: str) -> None:
        request = billing_pb2.ReleaseHoldRequest(hold_id=hold_id, reason=reason)
        await self._settle_shielded(
            "release",
            lambda: self.billing.ReleaseHold(request, timeout=BILLING_TIMEOUT_SECONDS),
            hold_id,
        )


def _usage(pb: object) -> Usage:
    return Usage(
        prompt_tokens=pb.prompt_tokens,  # type: ignore[attr-defined]
        completion_tokens=pb.completion_tokens,  # type: ignore[attr-defined]
        cached_prompt_tokens=pb.cached_prompt_tokens,  # type: ignore[attr-defined]
        reasoning_tokens=pb.reasoning_tokens,  # type: ignore[attr-defined]
    )


def _upstream_error(exc: grpc.aio.AioRpcError) -> PublicError:
    code = exc.code()
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return errors.invalid_request(exc.details() or "The upstream rejected the request.")
    if code == grpc.StatusCode.NOT_FOUND:
        return errors.PublicError(
            404,
            "invalid_request_error",
            "MODEL_NOT_FOUND",
            "The model is not available right now.",
            "model",
        )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED or _is_upstream_failure(exc):
        return errors.provider_error()
    return errors.service_unavailable("aiport is temporarily unavailable. Please try again.")


class ChatService(chat_pb2_grpc.ChatServicer):
    def __init__(self, catalog: Catalog, backends: Backends) -> None:
        self.catalog = catalog
        self.backends = backends

    async def CreateChatCompletion(
        self, request: httpbody_pb2.HttpBody, context: ServicerContext
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        try:
            self.backends.api_key(context)  # no key at all: 401 before anything else
            call = parse_chat_request(request.data, self.catalog)
            completion_id = "chatcmpl-" + secrets.token_urlsafe(18)
            amount = hold_micros(call)
            caller, hold = await self.backends.authorize_hold(
                context,
                amount,
                f"chat {call.model.id}",
                lambda: errors.insufficient_quota(
                    "Your IDR balance cannot cover this request "
                    f"(it may cost up to {micros_to_idr(amount)} IDR). "
                    "Top up, or lower max_tokens, to continue."
                ),
            )
        except PublicError as error:
            await abort_with(context, error)
            return
        fields = {
            "request_id": caller.request_id,
            "account_id": caller.account_id,
            "model": call.model.id,
            "stream": call.stream,
            "hold_id": hold.hold_id,
        }
        upstream = self.backends.providers.ChatCompletion(
            providers_pb2.ChatCompletionRequest(
                model=call.model.id,
                request_json=orjson.dumps(call.upstream_request),
                stream=call.stream,
                completion_id=completion_id,
                created_unix=int(time.time()),
                request_id=caller.request_id,
            ),
            timeout=UPSTREAM_CALL_TIMEOUT_SECONDS,
        )
        delivered = 0
        settled = False
        try:
            try:
                async for event in upstream:
                    kind = event.WhichOneof("event")
                    if kind == "completion":
                        # Held back until usage arrives and is captured.
                        completion = event.completion
                    elif kind == "chunk":
                        delivered += 1
                        yield httpbody_pb2.HttpBody(
                            content_type="text/event-stream", data=frame(event.chunk)
                        )
                    elif kind == "usage":
                        usage = _usage(event.usage)
                        cost = cost_micros(call.model, usage)
                        settled = True
                        await self.backends.capture(hold.hold_id, cost, f"chat {call.model.id}")
                        log.info(
                            "chat completed",
                            extra={"fields": {**fields, "cost_micros": cost, **asdict(usage)}},
                        )
                        if call.stream:
                            yield httpbody_pb2.HttpBody(content_type="text/event-stream", data=DONE)
                        else:
                            yield httpbody_pb2.HttpBody(
                                content_type="application/json", data=completion
                            )
                        return
                    elif kind == "failure":
                        # Output had started: charge what was delivered, end in-band.
                        cost = cost_micros(call.model, _usage(event.failure.usage))
                        settled = True
                        await self.backends.capture(
                            hold.hold_id, cost, f"chat {call.model.id} (stream broke)"
                        )
                        log.warning(
                            "stream broke after output",
                            extra={"fields": {**fields, "cost_micros": cost}},
                        )
                        yield httpbody_pb2.HttpBody(
                            content_type="text/event-stream",
                            data=errors.provider_error(event.failure.message).sse_event(),
                        )
                        return
                failure = errors.service_unavailable("The call ended unexpectedly.")
                detail = "providers ended the call without usage"
            except grpc.aio.AioRpcError as exc:
                failure, detail = _upstream_error(exc), f"{exc.code().name}: {exc.details()}"
            settled = True
            if delivered == 0:
                await self.backends.release(hold.hold_id, f"upstream failed: {detail}")
                log.warning(
                    "chat failed before output; hold released",
                    extra={"fields": {**fields, "detail": detail}},
                )
                await abort_with(context, failure)
                return
            # Broken after output without a usage report: charge an estimate.
            cost = cost_micros(call.model, estimated_usage(call, delivered))
            await self.backends.capture(hold.hold_id, cost, f"chat {call.model.id} (broken)")
            log.warning(
                "stream interrupted", extra={"fields": {**fields, "detail": detail, "cost": cost}}
            )
            yield httpbody_pb2.HttpBody(content_type="text/event-stream", data=failure.sse_event())
        except asyncio.CancelledError:
            # The client went away. Settle outside this cancelled task.
            if not settled:
                if delivered == 0:
                    self.backends.settle_later(
                        self.backends.release(hold.hold_id, "client disconnected")
                    )
                else:
                    cost = cost_micros(call.model, estimated_usage(call, delivered))
                    self.backends.settle_later(
                        self.backends.capture(
                            hold.hold_id, cost, f"chat {call.model.id} (client left)"
                        )
                    )
            upstream.cancel()
            raise


class CatalogService(catalog_pb2_grpc.CatalogServicer):
    def __init__(self, catalog: Catalog, backends: Backends) -> None:
        self.catalog = catalog
        self.backends = backends

    @staticmethod
    def _model(model: TextModel) -> catalog_pb2.Model:
        return catalog_pb2.Model(
            id=model.id, object="model", created=model.created, owned_by=model.owned_by
        )

    async def ListModels(
        self, request: catalog_pb2.ListModelsRequest, context: ServicerContext
    ) -> catalog_pb2.ModelList:
        try:
            await self.backends.authenticate(context)
        except PublicError as error:
            await abort_with(context, error)
        return catalog_pb2.ModelList(
            object="list", data=[self._model(m) for m in self.catalog.enabled_text_models()]
        )

    async def GetModel(
        self, request: catalog_pb2.GetModelRequest, context: ServicerContext
    ) -> catalog_pb2.Model:
        try:
            await self.backends.authenticate(context)
            model = self.catalog.text_model(request.model)
            if model is None:
                raise errors.model_not_found(request.model)
        except PublicError as error:
            await abort_with(context, error)
            raise AssertionError("unreachable") from None
        return self._model(model)

    async def GetPricing(
        self, request: catalog_pb2.GetPricingRequest, context: ServicerContext
    ) -> catalog_pb2.PriceList:
        return catalog_pb2.PriceList(
            object="list",
            currency=self.catalog.currency,
            data=[_price(m) for m in self.catalog.enabled_models()],
        )


def _price(model: TextModel | ImageModel | VideoModel) -> catalog_pb2.ModelPrice:
    out = catalog_pb2.ModelPrice(model=model.id, display_name=model.display_name)
    if isinstance(model, TextModel):
        out.modality = "text"
        out.text.CopyFrom(
            catalog_pb2.TextPrice(
                input_per_million_tokens_idr=micros_to_idr(model.input_micros_per_m),
                cached_input_per_million_tokens_idr=micros_to_idr(model.cached_input_micros_per_m),
                output_per_million_tokens_idr=micros_to_idr(model.output_micros_per_m),
                max_output_tokens=model.max_output_tokens,
                supports_reasoning=model.supports_reasoning,
            )
        )
    elif isinstance(model, ImageModel):
        out.modality = model.modality
        out.image_tiers.extend(
            catalog_pb2.ImageTierPrice(resolution=tier, per_image_idr=micros_to_idr(price))
            for tier, price in model.price_per_image.items()
        )
    else:
        out.modality = model.modality
        out.video_tiers.extend(
            catalog_pb2.VideoTierPrice(
                resolution=res,
                per_second_idr=micros_to_idr(price),
                per_second_with_reference_idr=micros_to_idr(
                    model.price_per_second_with_reference[res]
                )
                if res in model.price_per_second_with_reference
                else "",
            )
            for res, price in model.price_per_second.items()
        )
        out.min_billable_seconds_with_reference = model.min_billable_seconds_with_reference
    return out


class AccountService(account_pb2_grpc.AccountServicer):
    def __init__(self, backends: Backends) -> None:
        self.backends = backends

    async def GetBalance(
        self, request: account_pb2.GetBalanceRequest, context: ServicerContext
    ) -> account_pb2.Balance:
        try:
            caller = await self.backends.authenticate(context)
            balance = await self.backends.billing_call(
                self.backends.billing.GetAccountBalance,
                billing_pb2.GetAccountBalanceRequest(account_id=caller.account_id),
            )
        except PublicError as error:
            await abort_with(context, error)
            raise AssertionError("unreachable") from None
        return account_pb2.Balance(
            object="balance",
            currency="IDR",
            balance_idr=micros_to_idr(balance.balance_micros),
            held_idr=micros_to_idr(balance.held_micros),
            available_idr=micros_to_idr(balance.available_micros),
        )
