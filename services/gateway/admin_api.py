"""Operators' methods (/v1/admin): find an account, read its statement, usage and
jobs, adjust its balance, disable and enable it.

Only an operator's console session may call them (Backends.operator: accounts
resolves the session and says whether its user holds the OPERATOR role). Every
change passes the operator's user id to billing, which keeps it with the change
(the transaction's actor, the account's disabled_by), and is logged as an
`operator action`. Parsing and shaping are pure (admin_views.py); the listings
reuse the customer's own (account_views.py, JobsService.account_jobs).
"""

from __future__ import annotations

import logging

import grpc
from aiport.v1 import (
    account_pb2,
    accounts_pb2,
    admin_pb2,
    admin_pb2_grpc,
    billing_pb2,
    jobs_pb2,
)
from google.api import httpbody_pb2

from services.common.grpc_server import ServicerContext
from services.common.logs import fields
from services.common.money import micros_to_idr
from services.gateway import account_views, admin_views, errors
from services.gateway.account_api import usage_page
from services.gateway.boundary import public_unary
from services.gateway.jobs_api import JobsService
from services.gateway.server import ACCOUNTS_TIMEOUT_SECONDS, Backends

log = logging.getLogger(__name__)

NOT_FOUND = (grpc.StatusCode.NOT_FOUND,)


def _body(request: httpbody_pb2.HttpBody) -> dict[str, object]:
    return errors.json_object_body(request.data) if request.data.strip() else {}


class AdminService(admin_pb2_grpc.AdminServicer):
    def __init__(self, backends: Backends, jobs: JobsService) -> None:
        self.backends = backends
        self.jobs = jobs

    async def _accounts_call(
        self, method: str, request: object, param: str
    ) -> accounts_pb2.User | accounts_pb2.UserList:
        """FindUser / ListMembers: a user that is not there is a 404 naming `param`."""
        accounts = self.backends.accounts
        if accounts is None:  # the gateway has no accounts token: no sessions at all
            raise errors.unauthorized("Log in to the console as an operator.")
        try:
            answer: accounts_pb2.User | accounts_pb2.UserList = await getattr(accounts, method)(
                request, timeout=ACCOUNTS_TIMEOUT_SECONDS
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                raise errors.account_not_found(param) from exc
            log.error("accounts call failed", extra=fields(code=exc.code().name))
            raise errors.service_unavailable(
                "Accounts are temporarily unavailable. Please try again."
            ) from exc
        return answer

    async def _account(self, account_id: str) -> admin_pb2.AdminAccount:
        """The account as operators see it (404 when billing does not know it)."""
        billing = self.backends.billing
        try:
            info = await self.backends.billing_call(
                billing.GetAccount,
                billing_pb2.GetAccountRequest(account_id=account_id),
                expected=NOT_FOUND,
            )
        except grpc.aio.AioRpcError as exc:
            raise errors.account_not_found() from exc
        balance = await self.backends.billing_call(
            billing.GetAccountBalance, billing_pb2.GetAccountBalanceRequest(account_id=account_id)
        )
        members = await self._accounts_call(
            "ListMembers",
            accounts_pb2.ListMembersRequest(billing_account_id=account_id),
            "account_id",
        )
        assert isinstance(members, accounts_pb2.UserList)
        return admin_views.admin_account(info, balance, list(members.users))

    @public_unary
    async def FindAccount(
        self, request: admin_pb2.FindAccountQuery, context: ServicerContext
    ) -> admin_pb2.AdminAccount:
        await self.backends.operator(context)
        lookup = admin_views.lookup(request)
        account_id = lookup.account_id
        if lookup.email:
            user = await self._accounts_call(
                "FindUser", accounts_pb2.FindUserRequest(email=lookup.email), "email"
            )
            assert isinstance(user, accounts_pb2.User)
            if not user.memberships:
                raise errors.account_not_found("email")
            account_id = user.memberships[0].billing_account_id
        return await self._account(account_id)

    @public_unary
    async def ListStatement(
        self, request: admin_pb2.AdminStatementQuery, context: ServicerContext
    ) -> account_pb2.Statement:
        await self.backends.operator(context)
        account_id = admin_views.account_id_param(request.account_id)
        query = account_pb2.StatementQuery(limit=request.limit, after=request.after)
        try:
            page = await self.backends.billing_call(
                self.backends.billing.ListLedger,
                account_views.statement_request(account_id, query),
                expected=NOT_FOUND,
            )
        except grpc.aio.AioRpcError as exc:
            raise errors.account_not_found() from exc
        return account_views.statement(page, show_actor=True)

    @public_unary
    async def ListUsage(
        self, request: admin_pb2.AdminUsageQuery, context: ServicerContext
    ) -> account_pb2.UsageList:
        await self.backends.operator(context)
        account_id = admin_views.account_id_param(request.account_id)
        query = account_views.usage_request(
            account_id,
            account_pb2.UsageQuery(
                start_time=request.start_time,
                end_time=request.end_time,
                model=request.model,
                key_id=request.key_id,
                limit=request.limit,
                after=request.after,
            ),
        )
        return await usage_page(self.backends, query)

    @public_unary
    async def ListJobs(
        self, request: admin_pb2.AdminJobsQuery, context: ServicerContext
    ) -> jobs_pb2.JobList:
        await self.backends.operator(context)
        account_id = admin_views.account_id_param(request.account_id)
        return await self.jobs.account_jobs(
            account_id,
            jobs_pb2.ListJobsRequest(
                limit=request.limit, after=request.after, status=request.status, model=request.model
            ),
        )

    @public_unary
    async def CreateAdjustment(
        self, request: admin_pb2.AccountAction, context: ServicerContext
    ) -> admin_pb2.AdminAccount:
        operator = await self.backends.operator(context)
        account_id = admin_views.account_id_param(request.account_id)
        adjustment = admin_views.adjustment(_body(request.body))
        try:
            await self.backends.billing_call(
                self.backends.billing.Adjust,
                billing_pb2.AdjustRequest(
                    account_id=account_id,
                    amount_micros=adjustment.amount_micros,
                    idempotency_key=adjustment.idempotency_key,
                    description=adjustment.reason,
                    kind=billing_pb2.AdjustRequest.ADJUSTMENT,
                    operator=operator,
                ),
                expected=(
                    grpc.StatusCode.NOT_FOUND,
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    grpc.StatusCode.FAILED_PRECONDITION,
                    grpc.StatusCode.INVALID_ARGUMENT,
                ),
            )
        except grpc.aio.AioRpcError as exc:
            raise _adjust_refused(exc) from exc
        log.warning(
            "operator action",
            extra=fields(
                operator_id=operator,
                account_id=account_id,
                action="adjustment",
                amount_idr=micros_to_idr(adjustment.amount_micros),
                reason=adjustment.reason,
                idempotency_key=adjustment.idempotency_key,
            ),
        )
        return await self._account(account_id)

    async def _set_disabled(
        self, context: ServicerContext, request: admin_pb2.AccountAction, disabled: bool
    ) -> admin_pb2.AdminAccount:
        operator = await self.backends.operator(context)
        account_id = admin_views.account_id_param(request.account_id)
        body = _body(request.body)
        reason = ""
        if disabled:
            reason = admin_views.disable_reason(body)
        else:
            admin_views.enable_body(body)
        try:
            await self.backends.billing_call(
                self.backends.billing.SetAccountDisabled,
                billing_pb2.SetAccountDisabledRequest(
                    account_id=account_id, disabled=disabled, reason=reason, operator=operator
                ),
                expected=NOT_FOUND,
            )
        except grpc.aio.AioRpcError as exc:
            raise errors.account_not_found() from exc
        log.warning(
            "operator action",
            extra=fields(
                operator_id=operator,
                account_id=account_id,
                action="disable" if disabled else "enable",
                reason=reason,
            ),
        )
        return await self._account(account_id)

    @public_unary
    async def DisableAccount(
        self, request: admin_pb2.AccountAction, context: ServicerContext
    ) -> admin_pb2.AdminAccount:
        return await self._set_disabled(context, request, True)

    @public_unary
    async def EnableAccount(
        self, request: admin_pb2.AccountAction, context: ServicerContext
    ) -> admin_pb2.AdminAccount:
        return await self._set_disabled(context, request, False)


def _adjust_refused(exc: grpc.aio.AioRpcError) -> errors.PublicError:
    code = exc.code()
    if code == grpc.StatusCode.NOT_FOUND:
        return errors.account_not_found()
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return errors.idempotency_key_reused()
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return errors.insufficient_available(
            "The account's available balance cannot cover this debit."
        )
    # Billing's own checks (e.g. a balance that would overflow); its message says which.
    return errors.invalid_request(f"billing refused the adjustment: {exc.details()}", "amount_idr")
