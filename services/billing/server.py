"""The gRPC face of billing: `aiport.v1.Billing` over the money path
(money.py) and the records that move no money (ledger.py).

Domain errors become the status codes promised in billing.proto. Anything
unexpected is logged with its stack and answered with a generic INTERNAL (or
UNAVAILABLE when the database is unreachable or overloaded), never a trace.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import grpc
import psycopg
from aiport.v1 import billing_pb2, billing_pb2_grpc
from psycopg_pool import PoolClosed, PoolTimeout
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common import billing_errors
from services.common.auth_failures import CLIENT_HEADER, CLIENT_THROTTLED_HEADER
from services.common.billing_errors import HELD_MICROS_TRAILER
from services.common.logs import fields

from . import auth_limits, idempotency, ledger, postings, rules, usage
from .money import Money, Origin

log = logging.getLogger(__name__)

SERVICE_NAME = billing_pb2.DESCRIPTOR.services_by_name["Billing"].full_name

Ctx = grpc.aio.ServicerContext[Any, Any]
S = TypeVar("S")
Req = TypeVar("Req")
Resp = TypeVar("Resp")

STATUS_FOR_ERROR: dict[type[rules.BillingError], grpc.StatusCode] = {
    rules.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    rules.NotFound: grpc.StatusCode.NOT_FOUND,
    rules.InsufficientFunds: grpc.StatusCode.RESOURCE_EXHAUSTED,
    rules.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    rules.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    rules.CaptureExceedsHold: grpc.StatusCode.OUT_OF_RANGE,
    rules.BudgetExceeded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    rules.ModelNotAllowed: grpc.StatusCode.PERMISSION_DENIED,
    rules.KeyExpired: grpc.StatusCode.UNAUTHENTICATED,
}
# Database trouble a retry may cure: lost connections, timeouts, an exhausted pool.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    psycopg.OperationalError,
    PoolTimeout,
    PoolClosed,
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
    ConnectionError,
    TimeoutError,
)


def status_for(error: rules.BillingError) -> grpc.StatusCode:
    for cls, code in STATUS_FOR_ERROR.items():
        if isinstance(error, cls):
            return code
    return grpc.StatusCode.INTERNAL


def _guarded(
    method: Callable[[S, Req, Ctx], Awaitable[Resp]],
) -> Callable[[S, Req, Ctx], Awaitable[Resp]]:
    """Turn domain errors into their status and hide everything else."""

    @functools.wraps(method)
    async def wrapper(self: S, request: Req, context: Ctx) -> Resp:
        try:
            return await method(self, request, context)
        except rules.BillingError as error:
            trailers = _trailers_for(error)
            if trailers:
                context.set_trailing_metadata(trailers)
            await context.abort(status_for(error), str(error))
        except UNAVAILABLE_ERRORS:
            log.exception("database unavailable", extra=fields(rpc=method.__name__))
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, "billing storage is unavailable; try again"
            )
        except Exception:
            log.exception("unexpected error", extra=fields(rpc=method.__name__))
            await context.abort(grpc.StatusCode.INTERNAL, "internal error in billing")

    return wrapper


def _trailers_for(error: rules.BillingError) -> tuple[tuple[str, str], ...]:
    """What a caller needs beyond the status to act on the error (billing.proto)."""
    if isinstance(error, rules.CaptureExceedsHold):
        return ((HELD_MICROS_TRAILER, str(error.held_micros)),)
    if isinstance(error, rules.BudgetExceeded):
        return (
            (billing_errors.REFUSAL_TRAILER, billing_errors.BUDGET_EXCEEDED),
            (billing_errors.BUDGET_CAP_TRAILER, error.cap),
            (billing_errors.BUDGET_RESETS_AT_TRAILER, str(rules.unix_seconds(error.resets_at))),
        )
    if isinstance(error, rules.ModelNotAllowed):
        return ((billing_errors.REFUSAL_TRAILER, billing_errors.MODEL_NOT_ALLOWED),)
    if isinstance(error, rules.KeyExpired):
        return (
            (billing_errors.REFUSAL_TRAILER, billing_errors.KEY_EXPIRED),
            (billing_errors.KEY_EXPIRED_AT_TRAILER, str(rules.unix_seconds(error.expired_at))),
        )
    return ()


def _balance_pb(balance: ledger.Balance) -> billing_pb2.AccountBalance:
    return billing_pb2.AccountBalance(
        account_id=balance.account_id,
        balance_micros=balance.balance_micros,
        held_micros=balance.held_micros,
        available_micros=balance.available_micros,
        debt_micros=balance.debt_micros,
        low_balance_threshold_micros=balance.low_balance_threshold_micros,
    )


def _key_pb(key: ledger.ApiKey, periods: rules.SpendPeriods) -> billing_pb2.ApiKeyInfo:
    controls = key.controls
    return billing_pb2.ApiKeyInfo(
        key_id=key.id,
        account_id=key.account_id,
        prefix=key.prefix,
        created_at_unix=rules.unix_seconds(key.created_at),
        revoked_at_unix=rules.unix_seconds(key.revoked_at),
        name=key.name,
        scopes=key.scopes,
        last_used_at_unix=rules.unix_seconds(key.last_used_at),
        daily_cap_micros=controls.caps.daily_micros or 0,
        monthly_cap_micros=controls.caps.monthly_micros or 0,
        lifetime_cap_micros=controls.caps.lifetime_micros or 0,
        spent_today_micros=controls.spend.today(periods),
        spent_this_month_micros=controls.spend.this_month(periods),
        spent_lifetime_micros=controls.spend.lifetime_micros,
        allowed_models=controls.allowed_models,
        expires_at_unix=rules.unix_seconds(controls.expires_at),
        requests_per_minute=controls.requests_per_minute,
        concurrent_requests=controls.concurrent_requests,
        day_resets_at_unix=rules.unix_seconds(periods.day_resets_at),
        month_resets_at_unix=rules.unix_seconds(periods.month_resets_at),
    )


def _key_settings(pb: billing_pb2.ApiKeySettings) -> dict[str, object]:
    """The settings a request gives (unset fields: not given), checked."""

    def given(name: str) -> int | None:
        value: int = getattr(pb, name)
        return value if pb.HasField(name) else None

    return rules.check_key_settings(
        datetime.now(UTC),
        daily_cap_micros=given("daily_cap_micros"),
        monthly_cap_micros=given("monthly_cap_micros"),
        lifetime_cap_micros=given("lifetime_cap_micros"),
        allowed_models=list(pb.allowed_models.models) if pb.HasField("allowed_models") else None,
        expires_at_unix=given("expires_at_unix"),
        requests_per_minute=given("requests_per_minute"),
        concurrent_requests=given("concurrent_requests"),
    )


def _account_pb(account: ledger.Account) -> billing_pb2.AccountInfo:
    return billing_pb2.AccountInfo(
        account_id=account.id,
        name=account.name,
        created_at_unix=rules.unix_seconds(account.created_at),
        disabled_at_unix=rules.unix_seconds(account.disabled_at),
        disabled_reason=account.disabled_reason,
        disabled_by=account.disabled_by,
        requests_per_minute=account.requests_per_minute,
        concurrent_requests=account.concurrent_requests,
    )


def _principal_pb(principal: ledger.Principal) -> billing_pb2.Principal:
    limits = principal.rate_limits
    return billing_pb2.Principal(
        account_id=principal.account_id,
        key_id=principal.key_id,
        scopes=principal.scopes,
        rate_limits=billing_pb2.RateLimits(
            key_requests_per_minute=limits.key_requests_per_minute,
            key_concurrent_requests=limits.key_concurrent_requests,
            account_requests_per_minute=limits.account_requests_per_minute,
            account_concurrent_requests=limits.account_concurrent_requests,
        ),
    )


def _origin(pb: billing_pb2.CallOrigin) -> Origin:
    return Origin(pb.endpoint, pb.request_id, pb.job_id)


def _recorded(request: billing_pb2.CaptureHoldRequest) -> rules.RecordedUsage:
    tokens = request.usage
    return rules.recorded_usage(
        prompt_tokens=tokens.prompt_tokens,
        cached_prompt_tokens=tokens.cached_prompt_tokens,
        cache_write_prompt_tokens=tokens.cache_write_prompt_tokens,
        completion_tokens=tokens.completion_tokens,
        reasoning_tokens=tokens.reasoning_tokens,
        latency_ms=request.latency_ms,
    )


def _usage_record_pb(record: usage.UsageRecord) -> billing_pb2.UsageRecord:
    return billing_pb2.UsageRecord(
        id=record.id,
        created_at_unix=rules.unix_seconds(record.created_at),
        key_id=record.key_id,
        key_name=record.key_name,
        model=record.model,
        endpoint=record.endpoint,
        request_id=record.request_id,
        job_id=record.job_id,
        status=record.status,
        held_micros=record.held_micros,
        cost_micros=record.cost_micros,
        input_tokens=record.input_tokens,
        cached_input_tokens=record.cached_input_tokens,
        cache_write_input_tokens=record.cache_write_input_tokens,
        output_tokens=record.output_tokens,
        reasoning_tokens=record.reasoning_tokens,
        latency_ms=record.latency_ms or 0,
        settled_at_unix=rules.unix_seconds(record.settled_at),
    )


def _usage_group_pb(group: usage.UsageGroup) -> billing_pb2.UsageGroup:
    return billing_pb2.UsageGroup(
        group=group.group,
        key_name=group.key_name,
        requests=group.requests,
        cost_micros=group.cost_micros,
        input_tokens=group.input_tokens,
        output_tokens=group.output_tokens,
        cost_micros_by_model=group.cost_micros_by_model,
    )


def _hold_pb(hold: ledger.Hold) -> billing_pb2.Hold:
    return billing_pb2.Hold(
        hold_id=hold.id,
        account_id=hold.account_id,
        amount_micros=hold.amount_micros,
        status=hold.status,
        captured_micros=hold.captured_micros,
        expires_at_unix=rules.unix_seconds(hold.expires_at),
    )


_EARLIER_STATE = {
    idempotency.State.IN_FLIGHT: billing_pb2.IdempotentAnswer.IN_FLIGHT,
    idempotency.State.COMPLETED: billing_pb2.IdempotentAnswer.COMPLETED,
    idempotency.State.MISMATCH: billing_pb2.IdempotentAnswer.MISMATCH,
}


def _earlier_pb(earlier: idempotency.Earlier) -> billing_pb2.IdempotentAnswer:
    return billing_pb2.IdempotentAnswer(
        state=_EARLIER_STATE[earlier.state],
        http_status=earlier.http_status,
        content_type=earlier.content_type,
        body=earlier.body,
    )


def _entry_pb(entry: ledger.LedgerEntry) -> billing_pb2.LedgerEntry:
    return billing_pb2.LedgerEntry(
        entry_id=entry.id,
        account_id=entry.account_id,
        kind=entry.kind,
        amount_micros=entry.amount_micros,
        balance_after_micros=entry.balance_after_micros,
        hold_id=entry.hold_id or "",
        description=entry.description,
        created_at_unix=rules.unix_seconds(entry.created_at),
        actor=entry.actor,
        debt_change_micros=entry.debt_change_micros,
    )


REVERSAL_REASONS = {
    billing_pb2.ReverseTopUpRequest.REFUND: postings.ReversalReason.REFUND,
    billing_pb2.ReverseTopUpRequest.CHARGEBACK: postings.ReversalReason.CHARGEBACK,
}

ADJUST_KINDS = {
    billing_pb2.AdjustRequest.ADJUSTMENT: "adjustment",
    billing_pb2.AdjustRequest.PROMOTION: "promotion",
}


class BillingServicer(billing_pb2_grpc.BillingServicer):
    def __init__(
        self,
        engine: AsyncEngine,
        money: Money,
        *,
        hold_ttl_seconds: int = 3600,
        idempotency_retention_seconds: int = 24 * 3600,
    ) -> None:
        self._engine = engine
        self._money = money
        self._hold_ttl_seconds = hold_ttl_seconds
        self._retention_seconds = idempotency_retention_seconds

    @_guarded
    async def CreateAccount(
        self, request: billing_pb2.CreateAccountRequest, context: Ctx
    ) -> billing_pb2.AccountInfo:
        account = await ledger.create_account(self._engine, request.name)
        log.info("account created", extra=fields(account_id=account.id))
        return _account_pb(account)

    @_guarded
    async def SetAccountDisabled(
        self, request: billing_pb2.SetAccountDisabledRequest, context: Ctx
    ) -> billing_pb2.AccountInfo:
        account = await ledger.set_account_disabled(
            self._engine,
            request.account_id,
            disabled=request.disabled,
            reason=request.reason,
            operator=request.operator,
        )
        log.warning(
            "account disabled" if request.disabled else "account enabled",
            extra=fields(
                account_id=account.id,
                reason=account.disabled_reason,
                operator=request.operator or None,
            ),
        )
        return _account_pb(account)

    @_guarded
    async def GetAccount(
        self, request: billing_pb2.GetAccountRequest, context: Ctx
    ) -> billing_pb2.AccountInfo:
        return _account_pb(await ledger.get_account(self._engine, request.account_id))

    @_guarded
    async def GetAccountBalance(
        self, request: billing_pb2.GetAccountBalanceRequest, context: Ctx
    ) -> billing_pb2.AccountBalance:
        return _balance_pb(await ledger.get_balance(self._engine, request.account_id))

    @_guarded
    async def TopUp(
        self, request: billing_pb2.TopUpRequest, context: Ctx
    ) -> billing_pb2.AccountBalance:
        balance = await self._money.top_up(
            request.account_id,
            request.amount_micros,
            idempotency_key=request.idempotency_key,
            description=request.description,
            rail=request.payment_rail,
        )
        log.info(
            "top-up",
            extra=fields(
                account_id=balance.account_id,
                amount_micros=request.amount_micros,
                rail=request.payment_rail or "manual",
                balance_micros=balance.balance_micros,
            ),
        )
        return _balance_pb(balance)

    @_guarded
    async def ReverseTopUp(
        self, request: billing_pb2.ReverseTopUpRequest, context: Ctx
    ) -> billing_pb2.AccountBalance:
        reason = REVERSAL_REASONS.get(request.reason)
        if reason is None:
            raise rules.InvalidArgument("reason must be REFUND or CHARGEBACK")
        balance = await self._money.reverse_top_up(
            request.account_id,
            request.amount_micros,
            idempotency_key=request.idempotency_key,
            rail=request.payment_rail,
            reason=reason,
            description=request.description,
        )
        log.info(
            "top-up reversed",
            extra=fields(
                account_id=balance.account_id,
                amount_micros=request.amount_micros,
                rail=request.payment_rail or postings.MANUAL_RAIL,
                reason=reason.value,
                balance_micros=balance.balance_micros,
                debt_micros=balance.debt_micros,
            ),
        )
        return _balance_pb(balance)

    @_guarded
    async def SetLowBalanceAlert(
        self, request: billing_pb2.SetLowBalanceAlertRequest, context: Ctx
    ) -> billing_pb2.AccountBalance:
        balance = await ledger.set_low_balance_alert(
            self._engine, request.account_id, request.threshold_micros
        )
        log.info(
            "low-balance alert set",
            extra=fields(
                account_id=balance.account_id,
                threshold_micros=balance.low_balance_threshold_micros,
            ),
        )
        return _balance_pb(balance)

    @_guarded
    async def ClaimLowBalanceAlerts(
        self, request: billing_pb2.ClaimLowBalanceAlertsRequest, context: Ctx
    ) -> billing_pb2.LowBalanceAlerts:
        alerts = await ledger.claim_low_balance_alerts(self._engine, request.limit)
        if alerts:
            log.info("low-balance alerts claimed", extra=fields(accounts=len(alerts)))
        return billing_pb2.LowBalanceAlerts(
            alerts=[
                billing_pb2.LowBalanceAlert(
                    account_id=alert.account_id,
                    available_micros=alert.available_micros,
                    threshold_micros=alert.threshold_micros,
                )
                for alert in alerts
            ]
        )

    @_guarded
    async def Adjust(
        self, request: billing_pb2.AdjustRequest, context: Ctx
    ) -> billing_pb2.AccountBalance:
        kind = ADJUST_KINDS.get(request.kind)
        if kind is None:
            raise rules.InvalidArgument("kind must be ADJUSTMENT or PROMOTION")
        if kind == "promotion":
            if request.operator:
                raise rules.InvalidArgument("operator is kept for adjustments only")
            balance = await self._money.promote(
                request.account_id,
                request.amount_micros,
                idempotency_key=request.idempotency_key,
                description=request.description,
            )
        else:
            balance = await self._money.adjust(
                request.account_id,
                request.amount_micros,
                idempotency_key=request.idempotency_key,
                description=request.description,
                operator=request.operator,
            )
        log.info(
            kind,
            extra=fields(
                account_id=balance.account_id,
                amount_micros=request.amount_micros,
                balance_micros=balance.balance_micros,
                operator=request.operator or None,
            ),
        )
        return _balance_pb(balance)

    @_guarded
    async def CreateApiKey(
        self, request: billing_pb2.CreateApiKeyRequest, context: Ctx
    ) -> billing_pb2.CreatedApiKey:
        created = await ledger.create_api_key(
            self._engine,
            request.account_id,
            name=request.name,
            scopes=request.scopes,
            settings=_key_settings(request.settings),
        )
        log.info(
            "API key created",
            extra=fields(
                account_id=created.account_id, key_id=created.key_id, scopes=created.scopes
            ),
        )
        return billing_pb2.CreatedApiKey(
            key_id=created.key_id,
            account_id=created.account_id,
            api_key=created.api_key,
            key=_key_pb(created.info(), self._money.spend_periods()),
        )

    @_guarded
    async def ListApiKeys(
        self, request: billing_pb2.ListApiKeysRequest, context: Ctx
    ) -> billing_pb2.ApiKeyList:
        keys = await ledger.list_api_keys(self._engine, request.account_id)
        periods = self._money.spend_periods()
        return billing_pb2.ApiKeyList(keys=[_key_pb(key, periods) for key in keys])

    @_guarded
    async def RevokeApiKey(
        self, request: billing_pb2.RevokeApiKeyRequest, context: Ctx
    ) -> billing_pb2.ApiKeyInfo:
        key = await ledger.revoke_api_key(self._engine, request.key_id, request.account_id)
        log.info("API key revoked", extra=fields(account_id=key.account_id, key_id=key.id))
        return _key_pb(key, self._money.spend_periods())

    @_guarded
    async def UpdateApiKey(
        self, request: billing_pb2.UpdateApiKeyRequest, context: Ctx
    ) -> billing_pb2.ApiKeyInfo:
        settings = _key_settings(request.settings)
        key = await ledger.update_api_key(
            self._engine,
            request.key_id,
            account_id=request.account_id,
            name=request.name if request.HasField("name") else None,
            settings=settings,
        )
        log.info(
            "API key updated",
            extra=fields(
                account_id=key.account_id,
                key_id=key.id,
                changed=sorted(settings) + (["name"] if request.HasField("name") else []),
            ),
        )
        return _key_pb(key, self._money.spend_periods())

    @_guarded
    async def SetAccountRateLimits(
        self, request: billing_pb2.SetAccountRateLimitsRequest, context: Ctx
    ) -> billing_pb2.AccountInfo:
        account = await ledger.set_account_rate_limits(
            self._engine,
            request.account_id,
            requests_per_minute=request.requests_per_minute,
            concurrent_requests=request.concurrent_requests,
        )
        log.info(
            "account rate limits set",
            extra=fields(
                account_id=account.id,
                requests_per_minute=account.requests_per_minute,
                concurrent_requests=account.concurrent_requests,
            ),
        )
        return _account_pb(account)

    async def _count_failure(self, api_key: str, context: Ctx) -> None:
        """Count a failed authentication for every gateway replica, and send the
        caller the lock-outs now running (trailing metadata of the error)."""
        client = ""
        for key, value in context.invocation_metadata() or ():
            if key == CLIENT_HEADER:
                client = value if isinstance(value, str) else value.decode("latin-1")
            elif key == CLIENT_THROTTLED_HEADER and value == "1":
                # The gateway already refuses this client's failures: writing
                # nothing keeps a flood of bad keys to one index lookup each.
                return
        try:
            verdict = await auth_limits.record_failure_of(self._engine, client, api_key)
        except UNAVAILABLE_ERRORS as exc:
            # Still a plain 401; the gateway's own counters keep limiting meanwhile.
            log.warning("cannot count a failed authentication", extra=fields(error=repr(exc)))
            return
        context.set_trailing_metadata(verdict.metadata())

    @_guarded
    async def Authenticate(
        self, request: billing_pb2.AuthenticateRequest, context: Ctx
    ) -> billing_pb2.Principal:
        try:
            principal = await self._money.authenticate(request.api_key)
        except rules.Unauthenticated:
            await self._count_failure(request.api_key, context)
            raise
        return _principal_pb(principal)

    @_guarded
    async def PlaceHold(
        self, request: billing_pb2.PlaceHoldRequest, context: Ctx
    ) -> billing_pb2.Hold:
        hold = await self._money.place_hold(
            request.account_id,
            request.amount_micros,
            request.idempotency_key,
            description=request.description,
            ttl_seconds=request.ttl_seconds,
            default_ttl_seconds=self._hold_ttl_seconds,
            model=request.model,
            origin=_origin(request.origin),
        )
        log.debug(
            "hold placed",
            extra=fields(hold_id=hold.id, account_id=hold.account_id, amount=hold.amount_micros),
        )
        return _hold_pb(hold)

    @_guarded
    async def AuthorizeHold(
        self, request: billing_pb2.AuthorizeHoldRequest, context: Ctx
    ) -> billing_pb2.AuthorizedHold:
        if request.HasField("client_idempotency"):
            return await self._authorize_hold_once(request, context)
        try:
            principal, hold = await self._money.authorize_hold(
                request.api_key,
                request.amount_micros,
                request.idempotency_key,
                description=request.description,
                ttl_seconds=request.ttl_seconds,
                default_ttl_seconds=self._hold_ttl_seconds,
                model=request.model,
                origin=_origin(request.origin),
            )
        except rules.Unauthenticated:
            await self._count_failure(request.api_key, context)
            raise
        return billing_pb2.AuthorizedHold(principal=_principal_pb(principal), hold=_hold_pb(hold))

    async def _authorize_hold_once(
        self, request: billing_pb2.AuthorizeHoldRequest, context: Ctx
    ) -> billing_pb2.AuthorizedHold:
        client = idempotency.check_client_key(
            request.client_idempotency.key, request.client_idempotency.request_hash
        )
        try:
            principal, placed = await self._money.authorize_hold_once(
                request.api_key,
                request.amount_micros,
                request.idempotency_key,
                client,
                retention_seconds=self._retention_seconds,
                description=request.description,
                ttl_seconds=request.ttl_seconds,
                default_ttl_seconds=self._hold_ttl_seconds,
                model=request.model,
                origin=_origin(request.origin),
            )
        except rules.Unauthenticated:
            await self._count_failure(request.api_key, context)
            raise
        if isinstance(placed, idempotency.Earlier):
            return billing_pb2.AuthorizedHold(
                principal=_principal_pb(principal), earlier=_earlier_pb(placed)
            )
        return billing_pb2.AuthorizedHold(principal=_principal_pb(principal), hold=_hold_pb(placed))

    @_guarded
    async def StoreIdempotentAnswer(
        self, request: billing_pb2.StoreIdempotentAnswerRequest, context: Ctx
    ) -> billing_pb2.IdempotencyClaimResult:
        changed = await self._money.store_idempotent_answer(
            request.owner, request.http_status, request.content_type, request.body
        )
        return billing_pb2.IdempotencyClaimResult(changed=changed)

    @_guarded
    async def ClaimIdempotencyKey(
        self, request: billing_pb2.ClaimIdempotencyKeyRequest, context: Ctx
    ) -> billing_pb2.IdempotentAnswer:
        client = idempotency.check_client_key(request.client.key, request.client.request_hash)
        found = await self._money.claim_idempotency_key(
            rules.check_account_id(request.account_id),
            client,
            request.owner,
            claim_seconds=request.claim_seconds or self._hold_ttl_seconds,
            retention_seconds=self._retention_seconds,
        )
        return billing_pb2.IdempotentAnswer() if found is None else _earlier_pb(found)

    @_guarded
    async def DropIdempotencyClaim(
        self, request: billing_pb2.DropIdempotencyClaimRequest, context: Ctx
    ) -> billing_pb2.IdempotencyClaimResult:
        changed = await self._money.drop_idempotency_claim(request.owner)
        return billing_pb2.IdempotencyClaimResult(changed=changed)

    @_guarded
    async def CaptureHold(
        self, request: billing_pb2.CaptureHoldRequest, context: Ctx
    ) -> billing_pb2.Hold:
        hold = await self._money.capture(
            request.hold_id,
            request.amount_micros,
            request.description,
            model=request.model,
            provider=request.provider,
            usage=_recorded(request),
        )
        log.debug(
            "hold captured",
            extra=fields(hold_id=hold.id, status=hold.status, captured=hold.captured_micros),
        )
        return _hold_pb(hold)

    @_guarded
    async def ReleaseHold(
        self, request: billing_pb2.ReleaseHoldRequest, context: Ctx
    ) -> billing_pb2.Hold:
        hold = await self._money.release(
            request.hold_id, request.reason, latency_ms=request.latency_ms
        )
        log.debug("hold released", extra=fields(hold_id=hold.id, status=hold.status))
        return _hold_pb(hold)

    @_guarded
    async def ListLedger(
        self, request: billing_pb2.ListLedgerRequest, context: Ctx
    ) -> billing_pb2.LedgerPage:
        page = await ledger.ledger_page(
            self._engine, request.account_id, request.limit, request.after_entry_id
        )
        return billing_pb2.LedgerPage(
            entries=[_entry_pb(entry) for entry in page.entries],
            next_after_entry_id=page.next_after_entry_id,
        )

    @_guarded
    async def ListUsage(
        self, request: billing_pb2.ListUsageRequest, context: Ctx
    ) -> billing_pb2.UsagePage:
        window = rules.check_usage_window(
            request.start_unix, request.end_unix, request.model, request.key_id
        )
        page = await usage.list_usage(
            self._engine, request.account_id, window, limit=request.limit, after=request.after
        )
        return billing_pb2.UsagePage(
            records=[_usage_record_pb(record) for record in page.records],
            next_after=page.next_after,
        )

    @_guarded
    async def SummarizeUsage(
        self, request: billing_pb2.SummarizeUsageRequest, context: Ctx
    ) -> billing_pb2.UsageSummary:
        window = rules.check_usage_window(
            request.start_unix, request.end_unix, request.model, request.key_id
        )
        summary = await usage.summarize_usage(
            self._engine,
            request.account_id,
            window,
            group_by=request.group_by,
            time_zone=request.time_zone,
        )
        return billing_pb2.UsageSummary(
            group_by=summary.group_by,
            time_zone=summary.time_zone,
            groups=[_usage_group_pb(group) for group in summary.groups],
            total_cost_micros=summary.total_cost_micros,
            total_requests=summary.total_requests,
        )


def register(server: grpc.aio.Server, servicer: BillingServicer) -> list[str]:
    """Add the servicer to a server; returns the service names (for health checks)."""
    billing_pb2_grpc.add_BillingServicer_to_server(servicer, server)
    return [SERVICE_NAME]
