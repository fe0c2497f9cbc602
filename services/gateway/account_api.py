"""The caller's own account: balance, usage records and summaries, API keys.

Every method authenticates the caller's key and asks billing about that key's
account only: no parameter can name another account. Key management needs the
`manage` scope. Parsing and shaping are pure (account_views.py)."""

from __future__ import annotations

import logging
import time

import grpc
from aiport.v1 import account_pb2, account_pb2_grpc, billing_pb2
from google.api import httpbody_pb2

from services.common.grpc_server import ServicerContext
from services.common.logs import fields
from services.gateway import account_views, errors
from services.gateway.boundary import public_unary
from services.gateway.idempotent_calls import once
from services.gateway.server import Backends, Caller

log = logging.getLogger(__name__)


async def usage_page(
    backends: Backends, query: billing_pb2.ListUsageRequest
) -> account_pb2.UsageList:
    """One page of an account's usage records: the customer's own, or an
    operator's look at an account (admin_api)."""
    try:
        page = await backends.billing_call(
            backends.billing.ListUsage, query, expected=(grpc.StatusCode.INVALID_ARGUMENT,)
        )
    except grpc.aio.AioRpcError as exc:
        # Checked before the call already, except whose record `after` is.
        raise errors.invalid_usage_cursor() from exc
    return account_views.usage_list(page)


class AccountService(account_pb2_grpc.AccountServicer):
    def __init__(self, backends: Backends) -> None:
        self.backends = backends

    async def _manager(self, context: ServicerContext) -> Caller:
        caller = await self.backends.authenticate(context)
        if account_views.MANAGE not in caller.scopes:
            raise errors.insufficient_scope()
        return caller

    @public_unary
    async def GetBalance(
        self, request: account_pb2.GetBalanceRequest, context: ServicerContext
    ) -> account_pb2.Balance:
        caller = await self.backends.authenticate(context)
        balance = await self.backends.billing_call(
            self.backends.billing.GetAccountBalance,
            billing_pb2.GetAccountBalanceRequest(account_id=caller.account_id),
        )
        return account_views.balance(balance)

    @public_unary
    async def SetBalanceAlert(
        self, request: httpbody_pb2.HttpBody, context: ServicerContext
    ) -> account_pb2.Balance:
        caller = await self._manager(context)
        threshold = account_views.alert_threshold(errors.json_object_body(request.data))
        balance = await once(
            self.backends,
            context,
            caller,
            "balance.alert",
            request.data,
            billing_pb2.AccountBalance,
            lambda: self.backends.billing_call(
                self.backends.billing.SetLowBalanceAlert,
                billing_pb2.SetLowBalanceAlertRequest(
                    account_id=caller.account_id, threshold_micros=threshold
                ),
            ),
        )
        log.info(
            "low-balance alert set",
            extra=fields(
                account_id=caller.account_id, threshold_micros=threshold, by_key_id=caller.key_id
            ),
        )
        return account_views.balance(balance)

    @public_unary
    async def ListUsage(
        self, request: account_pb2.UsageQuery, context: ServicerContext
    ) -> account_pb2.UsageList:
        caller = await self.backends.authenticate(context)
        return await usage_page(
            self.backends, account_views.usage_request(caller.account_id, request)
        )

    @public_unary
    async def SummarizeUsage(
        self, request: account_pb2.UsageSummaryQuery, context: ServicerContext
    ) -> account_pb2.UsageReport:
        caller = await self.backends.authenticate(context)
        query = account_views.summary_request(caller.account_id, request, int(time.time()))
        summary = await self.backends.billing_call(self.backends.billing.SummarizeUsage, query)
        return account_views.usage_report(summary, query)

    @public_unary
    async def ListStatement(
        self, request: account_pb2.StatementQuery, context: ServicerContext
    ) -> account_pb2.Statement:
        caller = await self.backends.authenticate(context)
        page = await self.backends.billing_call(
            self.backends.billing.ListLedger,
            account_views.statement_request(caller.account_id, request),
        )
        return account_views.statement(page)

    @public_unary
    async def CreateKey(
        self, request: httpbody_pb2.HttpBody, context: ServicerContext
    ) -> account_pb2.CreatedKey:
        caller = await self._manager(context)
        body = errors.json_object_body(request.data) if request.data.strip() else {}
        new_key = account_views.new_key_request(caller.account_id, body)
        created = await once(
            self.backends,
            context,
            caller,
            "keys.create",
            request.data,
            billing_pb2.CreatedApiKey,
            lambda: self.backends.billing_call(self.backends.billing.CreateApiKey, new_key),
            # A key's value is shown once: a repeat shows the same key without it.
            kept=_without_secret,
        )
        log.info(
            "API key created",
            extra=fields(
                account_id=caller.account_id, key_id=created.key_id, by_key_id=caller.key_id
            ),
        )
        return account_views.created_key(created)

    @public_unary
    async def ListKeys(
        self, request: account_pb2.ListKeysRequest, context: ServicerContext
    ) -> account_pb2.KeyList:
        caller = await self._manager(context)
        keys = await self.backends.billing_call(
            self.backends.billing.ListApiKeys,
            billing_pb2.ListApiKeysRequest(account_id=caller.account_id),
        )
        return account_views.key_list(keys)

    @public_unary
    async def UpdateKey(
        self, request: account_pb2.UpdateKeyRequest, context: ServicerContext
    ) -> account_pb2.Key:
        caller = await self._manager(context)
        key_id = account_views.key_id_param(request.key_id)
        body = errors.json_object_body(request.body.data) if request.body.data.strip() else {}
        update = account_views.update_key_request(caller.account_id, key_id, body)
        try:
            updated = await once(
                self.backends,
                context,
                caller,
                f"keys.update {key_id}",
                request.body.data,
                billing_pb2.ApiKeyInfo,
                lambda: self.backends.billing_call(
                    self.backends.billing.UpdateApiKey,
                    update,
                    expected=(grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION),
                ),
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise errors.key_not_found() from exc
            raise errors.invalid_request(
                "This key is revoked; its settings cannot change.", "key_id"
            ) from exc
        log.info(
            "API key updated",
            extra=fields(account_id=caller.account_id, key_id=key_id, by_key_id=caller.key_id),
        )
        return account_views.public_key(updated)

    @public_unary
    async def RevokeKey(
        self, request: account_pb2.RevokeKeyRequest, context: ServicerContext
    ) -> account_pb2.Key:
        caller = await self._manager(context)
        key_id = account_views.key_id_param(request.key_id)
        try:
            revoked = await self.backends.billing_call(
                self.backends.billing.RevokeApiKey,
                billing_pb2.RevokeApiKeyRequest(key_id=key_id, account_id=caller.account_id),
                expected=(grpc.StatusCode.NOT_FOUND,),
            )
        except grpc.aio.AioRpcError as exc:
            raise errors.key_not_found() from exc
        log.info(
            "API key revoked",
            extra=fields(account_id=caller.account_id, key_id=key_id, by_key_id=caller.key_id),
        )
        return account_views.public_key(revoked)


def _without_secret(created: billing_pb2.CreatedApiKey) -> billing_pb2.CreatedApiKey:
    """What a repeat of a key's creation is answered: the key, never its value again."""
    kept = billing_pb2.CreatedApiKey()
    kept.CopyFrom(created)
    kept.api_key = ""
    return kept
