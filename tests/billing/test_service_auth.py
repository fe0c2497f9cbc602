"""Billing requires a caller's service token, and allows each caller only its methods."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from aiport.v1 import billing_pb2, billing_pb2_grpc
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from services.billing import ledger
from services.billing.money import Money
from services.billing.server import BillingServicer, register
from services.common import service_auth
from services.common.service_auth import BILLING_CALLERS, TOKEN_HEADER, caller_tokens, decide

from .helpers import IDR

TOKENS = {caller: secrets.token_urlsafe(32) for caller in BILLING_CALLERS}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def guarded_addr(engine: AsyncEngine, money: Money) -> AsyncIterator[str]:
    """The real servicer behind the token interceptor, with health checks."""
    server = grpc.aio.server(interceptors=[service_auth.ServerInterceptor(TOKENS)])
    register(server, BillingServicer(engine, money, hold_ttl_seconds=3600))
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    yield f"127.0.0.1:{port}"
    await server.stop(None)


def as_caller(token: str | None) -> tuple[tuple[str, str], ...]:
    return ((TOKEN_HEADER, token),) if token is not None else ()


async def topup_code(
    stub: billing_pb2_grpc.BillingStub, account_id: str, token: str | None
) -> grpc.StatusCode:
    try:
        await stub.TopUp(
            billing_pb2.TopUpRequest(account_id=account_id, amount_micros=5 * IDR),
            metadata=as_caller(token),
        )
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def test_no_or_a_wrong_token_is_refused_and_moves_no_money(
    guarded_addr: str, engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    account = await ledger.create_account(engine, "guarded")
    wrong = secrets.token_urlsafe(32)
    async with grpc.aio.insecure_channel(guarded_addr) as channel:
        stub = billing_pb2_grpc.BillingStub(channel)
        with caplog.at_level(logging.WARNING, logger="services.common.service_auth"):
            for token in (None, "", wrong, TOKENS["admin"][:-1]):
                assert await topup_code(stub, account.id, token) == (
                    grpc.StatusCode.UNAUTHENTICATED
                )
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.CreateAccount(billing_pb2.CreateAccountRequest(name="x"))
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert (await ledger.get_balance(engine, account.id)).balance_micros == 0
        assert wrong not in caplog.text
        # The right caller's token works.
        assert await topup_code(stub, account.id, TOKENS["admin"]) == grpc.StatusCode.OK
        assert (await ledger.get_balance(engine, account.id)).balance_micros == 5 * IDR


async def test_each_caller_may_call_only_its_methods(
    guarded_addr: str, engine: AsyncEngine, money: Money
) -> None:
    account = await ledger.create_account(engine, "callers")
    async with grpc.aio.insecure_channel(guarded_addr) as channel:
        stub = billing_pb2_grpc.BillingStub(channel)
        # The gateway and jobs settle holds but cannot mint money.
        for caller in ("gateway", "jobs"):
            code = await topup_code(stub, account.id, TOKENS[caller])
            assert code == grpc.StatusCode.PERMISSION_DENIED
        assert (await ledger.get_balance(engine, account.id)).balance_micros == 0
        balance = await stub.GetAccountBalance(
            billing_pb2.GetAccountBalanceRequest(account_id=account.id),
            metadata=as_caller(TOKENS["gateway"]),
        )
        assert balance.account_id == account.id
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await stub.GetAccountBalance(
                billing_pb2.GetAccountBalanceRequest(account_id=account.id),
                metadata=as_caller(TOKENS["jobs"]),
            )
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_health_checks_need_no_token(guarded_addr: str) -> None:
    async with grpc.aio.insecure_channel(guarded_addr) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_decide_is_pure_and_names_the_caller() -> None:
    tokens = {"gateway": "g" * 40, "admin": "a" * 40}
    callers = {"gateway": frozenset({"/aiport.v1.Billing/Authenticate"}), "admin": frozenset()}
    ok = decide("/aiport.v1.Billing/Authenticate", "g" * 40, tokens, callers)
    assert (ok.caller, ok.code) == ("gateway", None)
    assert decide("/aiport.v1.Billing/TopUp", "g" * 40, tokens, callers).code == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    assert decide("/aiport.v1.Billing/TopUp", None, tokens, callers).code == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    assert decide("/grpc.health.v1.Health/Check", None, tokens, callers).code is None


def test_billing_loads_every_callers_token_from_env_or_file(tmp_path: Path) -> None:
    path = tmp_path / "jobs"
    path.write_text(TOKENS["jobs"] + "\n")
    environ = {
        "AIPORT_SERVICE_TOKEN_GATEWAY": TOKENS["gateway"],
        "AIPORT_SERVICE_TOKEN_JOBS_FILE": str(path),
        "AIPORT_SERVICE_TOKEN_ADMIN": TOKENS["admin"],
        "AIPORT_SERVICE_TOKEN_ACCOUNTS": TOKENS["accounts"],
        "AIPORT_SERVICE_TOKEN_PAYMENTS": TOKENS["payments"],
    }
    assert caller_tokens(environ=environ) == TOKENS
    with pytest.raises(ValueError, match="AIPORT_SERVICE_TOKEN_ADMIN"):
        caller_tokens(environ={k: v for k, v in environ.items() if "ADMIN" not in k})
    with pytest.raises(ValueError, match="its own"):
        caller_tokens(environ={**environ, "AIPORT_SERVICE_TOKEN_ADMIN": TOKENS["gateway"]})
    with pytest.raises(ValueError, match="printable"):
        caller_tokens(environ={**environ, "AIPORT_SERVICE_TOKEN_ADMIN": "short"})
    assert service_auth.own_token({"AIPORT_SERVICE_TOKEN": TOKENS["gateway"]}) == TOKENS["gateway"]
    assert service_auth.own_token({}) is None


def test_job_state_has_its_own_callers_and_tokens() -> None:
    jobs = service_auth.JOBS_CALLERS
    tokens = {"gateway": "g" * 40, "worker": "w" * 40}
    create = "/aiport.v1.JobState/CreateJob"
    begin = "/aiport.v1.JobState/BeginLeasedAttempt"
    assert decide(create, "g" * 40, tokens, jobs).code is None
    assert decide(create, "w" * 40, tokens, jobs).code == grpc.StatusCode.PERMISSION_DENIED
    assert decide(begin, "w" * 40, tokens, jobs).code is None
    assert decide(begin, "g" * 40, tokens, jobs).code == grpc.StatusCode.PERMISSION_DENIED
    assert decide(begin, None, tokens, jobs).code == grpc.StatusCode.UNAUTHENTICATED
    environ = {"AIPORT_JOBS_TOKEN_GATEWAY": "g" * 40, "AIPORT_JOBS_TOKEN_WORKER": "w" * 40}
    assert caller_tokens(environ=environ, names=service_auth.JOBS_CALLER_TOKEN_ENV) == tokens
    with pytest.raises(ValueError, match="AIPORT_JOBS_TOKEN_WORKER"):
        caller_tokens(
            environ={"AIPORT_JOBS_TOKEN_GATEWAY": "g" * 40},
            names=service_auth.JOBS_CALLER_TOKEN_ENV,
        )


@pytest.mark.parametrize(
    ("caller", "allowed", "denied"),
    [
        (
            "payments",
            ("TopUp", "ReverseTopUp", "GetAccountBalance", "GetAccount"),
            ("Adjust", "CreateAccount", "SetAccountDisabled", "AuthorizeHold", "CaptureHold"),
        ),
        ("gateway", ("SetLowBalanceAlert",), ("ReverseTopUp", "TopUp", "ClaimLowBalanceAlerts")),
        ("accounts", ("ClaimLowBalanceAlerts",), ("ReverseTopUp", "SetLowBalanceAlert")),
        ("jobs", (), ("ReverseTopUp", "SetLowBalanceAlert", "ClaimLowBalanceAlerts")),
    ],
)
def test_who_may_reverse_top_ups_and_handle_low_balance_alerts(
    caller: str, allowed: tuple[str, ...], denied: tuple[str, ...]
) -> None:
    for method in allowed:
        decision = decide(f"/aiport.v1.Billing/{method}", TOKENS[caller], TOKENS, BILLING_CALLERS)
        assert (decision.caller, decision.code) == (caller, None), method
    for method in denied:
        decision = decide(f"/aiport.v1.Billing/{method}", TOKENS[caller], TOKENS, BILLING_CALLERS)
        assert decision.code == grpc.StatusCode.PERMISSION_DENIED, method
