"""The gateway's session callers: the console's x-aiport-session metadata
becomes the person's billing account (owners may manage keys), an ended
session or a missing accounts service is a 401, and an API key still wins."""

from __future__ import annotations

from typing import Any, cast

import grpc
import pytest
from aiport.v1 import accounts_pb2

from services.common.grpc_server import ServicerContext
from services.gateway import sessions
from services.gateway.errors import PublicError
from services.gateway.server import Backends

TOKEN = "s" * 43
OWNER = accounts_pb2.Membership.OWNER
MEMBER = accounts_pb2.Membership.MEMBER


class Context:
    def __init__(self, *metadata: tuple[str, str]) -> None:
        self._metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def peer(self) -> str:
        return "ipv4:127.0.0.1:5555"


class Refused(grpc.aio.AioRpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        super().__init__(code, grpc.aio.Metadata(), grpc.aio.Metadata(), "refused", None)


class FakeAccounts:
    def __init__(self, answer: accounts_pb2.ResolvedSession | grpc.StatusCode) -> None:
        self.answer = answer
        self.asked: list[str] = []

    async def ResolveSession(
        self, request: accounts_pb2.ResolveSessionRequest, **options: float
    ) -> accounts_pb2.ResolvedSession:
        self.asked.append(request.session_token)
        if isinstance(self.answer, grpc.StatusCode):
            raise Refused(self.answer)
        return self.answer


def resolved(account: str = "acct_1", role: Any = OWNER) -> accounts_pb2.ResolvedSession:
    return accounts_pb2.ResolvedSession(billing_account_id=account, membership_role=role)


async def backends(accounts: FakeAccounts | None) -> Backends:
    chan = grpc.aio.insecure_channel("127.0.0.1:9")
    made = Backends(chan, chan, chan if accounts is not None else None)
    made.accounts = cast(Any, accounts)
    return made


def ctx(*metadata: tuple[str, str]) -> ServicerContext:
    return cast(ServicerContext, Context(*metadata))


async def refusal(backend: Backends, context: ServicerContext) -> PublicError:
    with pytest.raises(PublicError) as caught:
        await backend.authenticate(context)
    return caught.value


async def test_an_owners_session_acts_for_the_billing_account_with_manage() -> None:
    accounts = FakeAccounts(resolved("acct_9", OWNER))
    backend = await backends(accounts)
    caller = await backend.authenticate(ctx((sessions.SESSION_METADATA, TOKEN)))
    assert (caller.account_id, caller.key_id) == ("acct_9", "")
    assert caller.scopes == ("inference", "manage")
    assert accounts.asked == [TOKEN]


async def test_a_members_session_reads_but_does_not_manage() -> None:
    backend = await backends(FakeAccounts(resolved("acct_9", MEMBER)))
    caller = await backend.authenticate(ctx((sessions.SESSION_METADATA, TOKEN)))
    assert caller.scopes == ("inference",)


@pytest.mark.parametrize(
    "answer", [grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INVALID_ARGUMENT, resolved("")]
)
async def test_an_ended_session_or_one_without_an_account_is_401(answer: Any) -> None:
    backend = await backends(FakeAccounts(answer))
    error = await refusal(backend, ctx((sessions.SESSION_METADATA, TOKEN)))
    assert error.status == 401


async def test_accounts_down_is_503_not_401() -> None:
    backend = await backends(FakeAccounts(grpc.StatusCode.UNAVAILABLE))
    error = await refusal(backend, ctx((sessions.SESSION_METADATA, TOKEN)))
    assert error.status == 503


async def test_no_accounts_channel_or_a_malformed_token_is_401_without_a_call() -> None:
    without = await backends(None)
    assert (await refusal(without, ctx((sessions.SESSION_METADATA, TOKEN)))).status == 401
    accounts = FakeAccounts(resolved())
    backend = await backends(accounts)
    for bad in ("", "x" * 300, "a b", "tok\u00e9n"):
        assert (await refusal(backend, ctx((sessions.SESSION_METADATA, bad)))).status == 401
    assert accounts.asked == []


async def test_an_authorization_header_means_the_api_key_path() -> None:
    accounts = FakeAccounts(resolved())
    backend = await backends(accounts)
    # A non-Bearer Authorization is refused as a key, never read as a session.
    context = ctx(("authorization", "Basic abc"), (sessions.SESSION_METADATA, TOKEN))
    assert (await refusal(backend, context)).status == 401
    assert accounts.asked == []


async def test_paid_endpoints_read_only_the_api_key() -> None:
    with pytest.raises(PublicError) as caught:
        Backends.api_key(ctx((sessions.SESSION_METADATA, TOKEN)))
    assert caught.value.status == 401


def test_session_scopes_by_role() -> None:
    assert sessions.session_scopes(OWNER) == ("inference", "manage")
    assert sessions.session_scopes(MEMBER) == ("inference",)
    assert sessions.session_scopes(accounts_pb2.Membership.ROLE_UNSPECIFIED) == ("inference",)
    assert sessions.plausible_token("abc-DEF_123")
    assert not sessions.plausible_token("abc=")


# -- operators (/v1/admin) -----------------------------------------------------------------------


def operator_session(*roles: Any) -> accounts_pb2.ResolvedSession:
    return accounts_pb2.ResolvedSession(
        user=accounts_pb2.User(user_id="usr_" + "o" * 20, roles=list(roles)),
        billing_account_id="acct_1",
        membership_role=OWNER,
    )


async def test_an_operators_session_names_the_operator() -> None:
    accounts = FakeAccounts(
        operator_session(accounts_pb2.User.CUSTOMER, accounts_pb2.User.OPERATOR)
    )
    backend = await backends(accounts)
    assert await backend.operator(ctx((sessions.SESSION_METADATA, TOKEN))) == "usr_" + "o" * 20


async def operator_refusal(backend: Backends, context: ServicerContext) -> PublicError:
    with pytest.raises(PublicError) as caught:
        await backend.operator(context)
    return caught.value


async def test_a_customers_session_or_any_api_key_is_403_and_nothing_is_401() -> None:
    accounts = FakeAccounts(operator_session(accounts_pb2.User.CUSTOMER))
    backend = await backends(accounts)
    customer = await operator_refusal(backend, ctx((sessions.SESSION_METADATA, TOKEN)))
    assert (customer.status, customer.code) == (403, "operators_only")
    # An API key is refused without asking anyone, even next to an operator's session.
    accounts.asked.clear()
    key = ("authorization", "Bearer aip_live_x")
    keyed = await operator_refusal(backend, ctx(key, (sessions.SESSION_METADATA, TOKEN)))
    assert keyed.status == 403
    assert accounts.asked == []
    assert (await operator_refusal(backend, ctx())).status == 401
    ended = await backends(FakeAccounts(grpc.StatusCode.UNAUTHENTICATED))
    assert (await operator_refusal(ended, ctx((sessions.SESSION_METADATA, TOKEN)))).status == 401
