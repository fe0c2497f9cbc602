"""The gRPC face of accounts: `aiport.v1.Accounts` over service.py.

Refusals become the status codes promised in accounts.proto. Anything
unexpected is logged with its stack and answered with a generic INTERNAL (or
UNAVAILABLE when the database, Redis or billing cannot be reached), never a
trace. No request field is ever logged: passwords and tokens travel in them.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import grpc
import psycopg
import redis.exceptions
from aiport.v1 import accounts_pb2, accounts_pb2_grpc
from psycopg_pool import PoolClosed, PoolTimeout

from services.common.logs import fields
from services.common.wire import RETRY_AFTER_KEY

from . import rules, store
from .service import Accounts, Grant, Resolved

log = logging.getLogger(__name__)

SERVICE_NAME = accounts_pb2.DESCRIPTOR.services_by_name["Accounts"].full_name
# On INVALID_ARGUMENT: the request field at fault (the console marks it).
FIELD_TRAILER = "x-aiport-field"

Ctx = grpc.aio.ServicerContext[Any, Any]
S = TypeVar("S")
Req = TypeVar("Req")
Resp = TypeVar("Resp")

STATUS_FOR_ERROR: dict[type[rules.AccountsError], grpc.StatusCode] = {
    rules.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    rules.BadCredentials: grpc.StatusCode.UNAUTHENTICATED,
    rules.NoSession: grpc.StatusCode.UNAUTHENTICATED,
    rules.EmailNotVerified: grpc.StatusCode.FAILED_PRECONDITION,
    rules.CsrfMismatch: grpc.StatusCode.PERMISSION_DENIED,
    rules.NotFound: grpc.StatusCode.NOT_FOUND,
    rules.RateLimited: grpc.StatusCode.RESOURCE_EXHAUSTED,
}
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    psycopg.OperationalError,
    PoolTimeout,
    PoolClosed,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    ConnectionError,
    TimeoutError,
)


class BillingUnavailable(Exception):
    """Billing could not open the new user's account."""


UNAVAILABLE_DEPENDENCIES: tuple[type[Exception], ...] = (*UNAVAILABLE_ERRORS, BillingUnavailable)


def _guarded(
    method: Callable[[S, Req, Ctx], Awaitable[Resp]],
) -> Callable[[S, Req, Ctx], Awaitable[Resp]]:
    @functools.wraps(method)
    async def wrapper(self: S, request: Req, context: Ctx) -> Resp:
        try:
            return await method(self, request, context)
        except rules.AccountsError as error:
            if isinstance(error, rules.RateLimited):
                context.set_trailing_metadata(((RETRY_AFTER_KEY, str(error.retry_after_seconds)),))
            if isinstance(error, rules.InvalidArgument):
                context.set_trailing_metadata(((FIELD_TRAILER, error.field),))
            await context.abort(STATUS_FOR_ERROR[type(error)], str(error))
        except UNAVAILABLE_DEPENDENCIES:
            log.exception("a dependency is unavailable", extra=fields(rpc=method.__name__))
            await context.abort(grpc.StatusCode.UNAVAILABLE, "accounts is unavailable; try again")
        except Exception:
            log.exception("unexpected error", extra=fields(rpc=method.__name__))
            await context.abort(grpc.StatusCode.INTERNAL, "internal error in accounts")

    return wrapper


def unix(moment: datetime | None) -> int:
    return 0 if moment is None else int(moment.timestamp())


def user_pb(user: store.UserRow) -> accounts_pb2.User:
    roles = [accounts_pb2.User.CUSTOMER]
    if user.is_operator:
        roles.append(accounts_pb2.User.OPERATOR)
    return accounts_pb2.User(
        user_id=user.id,
        email=user.email,
        locale=user.locale,
        email_verified=user.verified,
        roles=roles,
        memberships=[
            accounts_pb2.Membership(
                billing_account_id=m.billing_account_id, role=_membership_role(m.role)
            )
            for m in user.memberships
        ],
        created_at_unix=unix(user.created_at),
    )


def _membership_role(role: rules.MembershipRole) -> accounts_pb2.Membership.Role:
    if role is rules.MembershipRole.OWNER:
        return accounts_pb2.Membership.OWNER
    return accounts_pb2.Membership.MEMBER


def grant_pb(grant: Grant) -> accounts_pb2.NewSession:
    return accounts_pb2.NewSession(
        session_token=grant.token,
        csrf_token=grant.csrf_token,
        idle_expires_at_unix=unix(grant.idle_expires_at),
        expires_at_unix=unix(grant.expires_at),
        user=user_pb(grant.user),
    )


def resolved_pb(resolved: Resolved) -> accounts_pb2.ResolvedSession:
    user = resolved.user
    # Today a user has one billing account; with several, the console will say which.
    first = user.memberships[0] if user.memberships else None
    return accounts_pb2.ResolvedSession(
        user=user_pb(user),
        billing_account_id=first.billing_account_id if first else "",
        membership_role=(
            _membership_role(first.role) if first else accounts_pb2.Membership.ROLE_UNSPECIFIED
        ),
        csrf_token=resolved.csrf_token,
        idle_expires_at_unix=unix(resolved.idle_expires_at),
        expires_at_unix=unix(resolved.expires_at),
    )


class AccountsServicer(accounts_pb2_grpc.AccountsServicer):
    def __init__(self, accounts: Accounts) -> None:
        self._accounts = accounts

    @_guarded
    async def SignUp(
        self, request: accounts_pb2.SignUpRequest, context: Ctx
    ) -> accounts_pb2.Accepted:
        await self._accounts.sign_up(
            request.email, request.password, request.locale, request.client_address
        )
        return accounts_pb2.Accepted()

    @_guarded
    async def ResendVerification(
        self, request: accounts_pb2.EmailRequest, context: Ctx
    ) -> accounts_pb2.Accepted:
        await self._accounts.resend_verification(request.email, request.client_address)
        return accounts_pb2.Accepted()

    @_guarded
    async def VerifyEmail(
        self, request: accounts_pb2.TokenRequest, context: Ctx
    ) -> accounts_pb2.User:
        return user_pb(await self._accounts.verify_email(request.token))

    @_guarded
    async def LogIn(
        self, request: accounts_pb2.LogInRequest, context: Ctx
    ) -> accounts_pb2.NewSession:
        grant = await self._accounts.log_in(
            request.email,
            request.password,
            request.client_address,
            request.previous_session_token,
        )
        return grant_pb(grant)

    @_guarded
    async def ResolveSession(
        self, request: accounts_pb2.ResolveSessionRequest, context: Ctx
    ) -> accounts_pb2.ResolvedSession:
        return resolved_pb(await self._accounts.resolve(request.session_token, request.csrf_token))

    @_guarded
    async def LogOut(
        self, request: accounts_pb2.SessionRequest, context: Ctx
    ) -> accounts_pb2.Ended:
        ended = await self._accounts.log_out(request.session_token)
        return accounts_pb2.Ended(sessions_ended=ended)

    @_guarded
    async def RequestPasswordReset(
        self, request: accounts_pb2.EmailRequest, context: Ctx
    ) -> accounts_pb2.Accepted:
        await self._accounts.request_password_reset(request.email, request.client_address)
        return accounts_pb2.Accepted()

    @_guarded
    async def ResetPassword(
        self, request: accounts_pb2.ResetPasswordRequest, context: Ctx
    ) -> accounts_pb2.Ended:
        ended = await self._accounts.reset_password(request.token, request.new_password)
        return accounts_pb2.Ended(sessions_ended=ended)

    @_guarded
    async def ChangePassword(
        self, request: accounts_pb2.ChangePasswordRequest, context: Ctx
    ) -> accounts_pb2.NewSession:
        grant, _ended = await self._accounts.change_password(
            request.session_token,
            request.current_password,
            request.new_password,
            request.client_address,
        )
        return grant_pb(grant)

    @_guarded
    async def FindUser(
        self, request: accounts_pb2.FindUserRequest, context: Ctx
    ) -> accounts_pb2.User:
        user = await self._accounts.find_user(email=request.email, user_id=request.user_id)
        return user_pb(user)

    @_guarded
    async def SetOperator(
        self, request: accounts_pb2.SetOperatorRequest, context: Ctx
    ) -> accounts_pb2.User:
        user = await self._accounts.set_operator(
            request.operator, email=request.email, user_id=request.user_id
        )
        return user_pb(user)

    @_guarded
    async def ListMembers(
        self, request: accounts_pb2.ListMembersRequest, context: Ctx
    ) -> accounts_pb2.UserList:
        users = await self._accounts.members(request.billing_account_id)
        return accounts_pb2.UserList(users=[user_pb(u) for u in users])


def register(server: grpc.aio.Server, servicer: AccountsServicer) -> list[str]:
    accounts_pb2_grpc.add_AccountsServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    return [SERVICE_NAME]
