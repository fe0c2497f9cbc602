"""The console's client of the accounts service (people and sessions), with
accounts' status codes turned into the refusals the pages show.

The console presents its own token (AIPORT_ACCOUNTS_TOKEN) on every call. No
request field is ever logged: passwords and tokens travel in them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Final, cast

import grpc
from aiport.v1 import accounts_pb2, accounts_pb2_grpc

from services.common import grpc_server, service_auth
from services.common.logs import fields
from services.common.wire import RETRY_AFTER_KEY

log = logging.getLogger("console")

CALL_TIMEOUT_SECONDS: Final = 10.0
# accounts.proto: on INVALID_ARGUMENT the field at fault.
FIELD_TRAILER: Final = "x-aiport-field"


class AccountsRefusal(Exception):
    """A refusal the page explains to the person."""


class FieldError(AccountsRefusal):
    """A form field accounts refused; `detail` is its English explanation."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail


class BadCredentials(AccountsRefusal):
    """Unknown email or wrong password: one refusal for both."""


class NotVerified(AccountsRefusal):
    """The right password, but the email is not verified yet."""


class SessionEnded(AccountsRefusal):
    """An unknown, ended or expired session."""


class RateLimited(AccountsRefusal):
    def __init__(self, retry_after_seconds: int) -> None:
        super().__init__(f"retry after {retry_after_seconds} s")
        self.retry_after_seconds = retry_after_seconds


class AccountsUnavailable(Exception):
    """Accounts did not answer (or answered what the console cannot explain): a 503."""


def _trailer(exc: grpc.aio.AioRpcError, name: str) -> str | None:
    pairs = cast(Iterable[tuple[str, str | bytes]], exc.trailing_metadata() or ())
    for key, value in pairs:
        if key == name:
            return value if isinstance(value, str) else value.decode("latin-1")
    return None


def refusal(exc: grpc.aio.AioRpcError, logging_in: bool = False) -> Exception:
    """The console's name for an accounts error (pure: reads the code and trailers).
    UNAUTHENTICATED means bad credentials when logging in, else an ended session."""
    code = exc.code()
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        field = _trailer(exc, FIELD_TRAILER) or ""
        details = exc.details() or ""
        prefix = f"{field}: "
        detail = details[len(prefix) :] if details.startswith(prefix) else details
        return FieldError(field, detail)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return BadCredentials() if logging_in else SessionEnded()
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return NotVerified()
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return SessionEnded()
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        raw = _trailer(exc, RETRY_AFTER_KEY) or ""
        return RateLimited(int(raw) if raw.isascii() and raw.isdigit() else 60)
    return AccountsUnavailable(code.name)


class AccountsClient:
    def __init__(self, addr: str, token: str | None) -> None:
        self._channel = grpc_server.channel(addr, service_auth.metadata(token))
        self._stub = accounts_pb2_grpc.AccountsStub(self._channel)

    async def _call(self, name: str, request: object) -> object:
        method = getattr(self._stub, name)
        try:
            return await method(request, timeout=CALL_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as exc:
            error = refusal(exc, logging_in=name == "LogIn")
            if isinstance(error, AccountsUnavailable):
                log.warning("accounts call failed", extra=fields(rpc=name, code=exc.code().name))
            raise error from exc

    async def sign_up(self, email: str, password: str, locale: str, client_address: str) -> None:
        await self._call(
            "SignUp",
            accounts_pb2.SignUpRequest(
                email=email, password=password, locale=locale, client_address=client_address
            ),
        )

    async def verify_email(self, token: str) -> accounts_pb2.User:
        return cast(
            accounts_pb2.User,
            await self._call("VerifyEmail", accounts_pb2.TokenRequest(token=token)),
        )

    async def log_in(
        self, email: str, password: str, client_address: str, previous_session: str
    ) -> accounts_pb2.NewSession:
        request = accounts_pb2.LogInRequest(
            email=email,
            password=password,
            client_address=client_address,
            previous_session_token=previous_session,
        )
        return cast(accounts_pb2.NewSession, await self._call("LogIn", request))

    async def resolve(self, session_token: str) -> accounts_pb2.ResolvedSession:
        request = accounts_pb2.ResolveSessionRequest(session_token=session_token)
        return cast(accounts_pb2.ResolvedSession, await self._call("ResolveSession", request))

    async def log_out(self, session_token: str) -> None:
        await self._call("LogOut", accounts_pb2.SessionRequest(session_token=session_token))

    async def request_password_reset(self, email: str, client_address: str) -> None:
        request = accounts_pb2.EmailRequest(email=email, client_address=client_address)
        await self._call("RequestPasswordReset", request)

    async def reset_password(self, token: str, new_password: str) -> None:
        request = accounts_pb2.ResetPasswordRequest(token=token, new_password=new_password)
        await self._call("ResetPassword", request)

    async def change_password(
        self, session_token: str, current: str, new: str, client_address: str
    ) -> accounts_pb2.NewSession:
        request = accounts_pb2.ChangePasswordRequest(
            session_token=session_token,
            current_password=current,
            new_password=new,
            client_address=client_address,
        )
        return cast(accounts_pb2.NewSession, await self._call("ChangePassword", request))

    async def close(self) -> None:
        await self._channel.close(None)
