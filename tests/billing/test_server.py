"""The gRPC service: the status codes billing.proto promises, end to end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import grpc
import pytest
import pytest_asyncio
from aiport.v1 import billing_pb2 as pb
from aiport.v1 import billing_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from services.billing import ledger, rules
from services.billing.money import Money
from services.billing.server import BillingServicer, register
from services.common import db
from services.common.billing_errors import capture_exceeded_hold
from tests.support.databases import drop_database, fresh_database_url

from .helpers import IDR

pytestmark = pytest.mark.usefixtures("check_invariants")

Stub = billing_pb2_grpc.BillingStub
UNKNOWN_ACCOUNT = "acct_" + "1" * 20
UNKNOWN_HOLD = "hold_" + "1" * 20
UNKNOWN_KEY = "key_" + "1" * 20


async def code_of(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value.code(), err.value.details() or ""


async def new_account(stub: Stub, idr: int = 0) -> str:
    info = await stub.CreateAccount(pb.CreateAccountRequest(name="grpc test"))
    if idr:
        await stub.TopUp(pb.TopUpRequest(account_id=info.account_id, amount_micros=idr * IDR))
    account_id: str = info.account_id
    return account_id


async def test_money_flow(stub: Stub) -> None:
    info = await stub.CreateAccount(pb.CreateAccountRequest(name="Flow Co"))
    assert info.name == "Flow Co"
    assert info.created_at_unix > 1_700_000_000
    balance = await stub.TopUp(
        pb.TopUpRequest(account_id=info.account_id, amount_micros=10 * IDR, description="seed")
    )
    assert (balance.balance_micros, balance.held_micros, balance.available_micros) == (
        10 * IDR,
        0,
        10 * IDR,
    )
    hold = await stub.PlaceHold(
        pb.PlaceHoldRequest(
            account_id=info.account_id, amount_micros=3 * IDR, idempotency_key="r1", ttl_seconds=60
        )
    )
    assert hold.status == "open"
    assert hold.expires_at_unix > info.created_at_unix
    balance = await stub.GetAccountBalance(pb.GetAccountBalanceRequest(account_id=info.account_id))
    assert (balance.held_micros, balance.available_micros) == (3 * IDR, 7 * IDR)
    captured = await stub.CaptureHold(
        pb.CaptureHoldRequest(hold_id=hold.hold_id, amount_micros=IDR)
    )
    assert (captured.status, captured.captured_micros, captured.amount_micros) == (
        "captured",
        IDR,
        3 * IDR,
    )
    again = await stub.CaptureHold(pb.CaptureHoldRequest(hold_id=hold.hold_id, amount_micros=2))
    assert again == captured
    page = await stub.ListLedger(pb.ListLedgerRequest(account_id=info.account_id))
    assert [(e.kind, e.amount_micros, e.balance_after_micros, e.hold_id) for e in page.entries] == [
        ("capture", -IDR, 9 * IDR, hold.hold_id),
        ("topup", 10 * IDR, 10 * IDR, ""),
    ]
    assert page.entries[1].description == "seed"
    released = await stub.PlaceHold(
        pb.PlaceHoldRequest(account_id=info.account_id, amount_micros=IDR, idempotency_key="r2")
    )
    out = await stub.ReleaseHold(pb.ReleaseHoldRequest(hold_id=released.hold_id, reason="x"))
    assert out.status == "released"
    balance = await stub.GetAccountBalance(pb.GetAccountBalanceRequest(account_id=info.account_id))
    assert (balance.balance_micros, balance.held_micros) == (9 * IDR, 0)


async def test_keys_and_authenticate(stub: Stub) -> None:
    account_id = await new_account(stub)
    created = await stub.CreateApiKey(pb.CreateApiKeyRequest(account_id=account_id))
    assert created.account_id == account_id
    assert created.api_key.startswith("aip_live_")
    principal = await stub.Authenticate(pb.AuthenticateRequest(api_key=created.api_key))
    assert (principal.account_id, principal.key_id) == (account_id, created.key_id)
    listed = await stub.ListApiKeys(pb.ListApiKeysRequest(account_id=account_id))
    assert [(k.key_id, k.prefix, k.revoked_at_unix) for k in listed.keys] == [
        (created.key_id, created.api_key[:13], 0)
    ]
    revoked = await stub.RevokeApiKey(pb.RevokeApiKeyRequest(key_id=created.key_id))
    assert revoked.revoked_at_unix >= revoked.created_at_unix > 0
    # Effective for the very next call.
    code, details = await code_of(
        stub.Authenticate(pb.AuthenticateRequest(api_key=created.api_key))
    )
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert details == rules.UNAUTHENTICATED_MESSAGE
    code, unknown_details = await code_of(
        stub.Authenticate(pb.AuthenticateRequest(api_key=rules.new_api_key()))
    )
    assert (code, unknown_details) == (grpc.StatusCode.UNAUTHENTICATED, details)
    code, _ = await code_of(stub.Authenticate(pb.AuthenticateRequest(api_key="")))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    listed = await stub.ListApiKeys(pb.ListApiKeysRequest(account_id=account_id))
    assert listed.keys[0].revoked_at_unix == revoked.revoked_at_unix


async def test_invalid_argument_cases(stub: Stub) -> None:
    account_id = await new_account(stub, 5)
    hold = await stub.PlaceHold(
        pb.PlaceHoldRequest(account_id=account_id, amount_micros=IDR, idempotency_key="inv")
    )
    calls: list[Awaitable[Any]] = [
        stub.CreateAccount(pb.CreateAccountRequest(name="")),
        stub.CreateAccount(pb.CreateAccountRequest(name="n" * 201)),
        stub.GetAccountBalance(pb.GetAccountBalanceRequest(account_id="bad")),
        stub.TopUp(pb.TopUpRequest(account_id=account_id, amount_micros=0)),
        stub.TopUp(pb.TopUpRequest(account_id=account_id, amount_micros=-IDR)),
        stub.CreateApiKey(pb.CreateApiKeyRequest(account_id="")),
        stub.RevokeApiKey(pb.RevokeApiKeyRequest(key_id="key_nope")),
        stub.PlaceHold(pb.PlaceHoldRequest(account_id=account_id, amount_micros=IDR)),
        stub.PlaceHold(
            pb.PlaceHoldRequest(account_id=account_id, amount_micros=0, idempotency_key="z")
        ),
        stub.PlaceHold(
            pb.PlaceHoldRequest(
                account_id=account_id,
                amount_micros=IDR,
                idempotency_key="ttl",
                ttl_seconds=4_000_000_000,
            )
        ),
        stub.CaptureHold(pb.CaptureHoldRequest(hold_id=hold.hold_id, amount_micros=-1)),
        stub.CaptureHold(pb.CaptureHoldRequest(hold_id="hold_1", amount_micros=1)),
        stub.ReleaseHold(pb.ReleaseHoldRequest(hold_id="")),
        stub.ListLedger(pb.ListLedgerRequest(account_id=account_id, limit=1001)),
    ]
    for call in calls:
        code, details = await code_of(call)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, details
        assert details
    # Premise changed (issue 12): the same key with another input is refused as
    # FAILED_PRECONDITION (it was INVALID_ARGUMENT), by the stored input hash.
    code, details = await code_of(
        stub.PlaceHold(
            pb.PlaceHoldRequest(account_id=account_id, amount_micros=2 * IDR, idempotency_key="inv")
        )
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "idempotency_key" in details
    balance = await stub.GetAccountBalance(pb.GetAccountBalanceRequest(account_id=account_id))
    assert (balance.balance_micros, balance.held_micros) == (5 * IDR, IDR)


async def test_capture_beyond_the_hold_is_out_of_range_with_the_held_amount(stub: Stub) -> None:
    account_id = await new_account(stub, 5)
    hold = await stub.PlaceHold(
        pb.PlaceHoldRequest(account_id=account_id, amount_micros=IDR, idempotency_key="over")
    )
    call = stub.CaptureHold(pb.CaptureHoldRequest(hold_id=hold.hold_id, amount_micros=IDR + 1))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call
    assert refused.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert capture_exceeded_hold(refused.value) == IDR
    balance = await stub.GetAccountBalance(pb.GetAccountBalanceRequest(account_id=account_id))
    assert (balance.balance_micros, balance.held_micros) == (5 * IDR, IDR)
    captured = await stub.CaptureHold(
        pb.CaptureHoldRequest(hold_id=hold.hold_id, amount_micros=IDR, model="m1")
    )
    assert captured.captured_micros == IDR


async def test_adjust_and_promotion_over_grpc(stub: Stub) -> None:
    account_id = await new_account(stub, 5)
    kind = pb.AdjustRequest.Kind
    promoted = await stub.Adjust(
        pb.AdjustRequest(
            account_id=account_id,
            amount_micros=2 * IDR,
            idempotency_key="welcome",
            description="welcome bonus",
            kind=kind.PROMOTION,
        )
    )
    assert promoted.balance_micros == 7 * IDR
    corrected = await stub.Adjust(
        pb.AdjustRequest(
            account_id=account_id,
            amount_micros=-IDR,
            idempotency_key="fix-1",
            description="double top-up",
            kind=kind.ADJUSTMENT,
        )
    )
    assert corrected.balance_micros == 6 * IDR
    for bad, expected in (
        (
            pb.AdjustRequest(account_id=account_id, amount_micros=IDR, idempotency_key="k"),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),  # no kind
        (
            pb.AdjustRequest(
                account_id=account_id, amount_micros=-IDR, idempotency_key="k2", kind=kind.PROMOTION
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            pb.AdjustRequest(
                account_id=account_id,
                amount_micros=-100 * IDR,
                idempotency_key="k3",
                description="too much",
                kind=kind.ADJUSTMENT,
            ),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        ),
        (
            pb.AdjustRequest(
                account_id=account_id,
                amount_micros=-2 * IDR,
                idempotency_key="fix-1",
                description="double top-up",
                kind=kind.ADJUSTMENT,
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
        ),
    ):
        code, _ = await code_of(stub.Adjust(bad))
        assert code == expected
    page = await stub.ListLedger(pb.ListLedgerRequest(account_id=account_id))
    assert [(e.kind, e.amount_micros) for e in page.entries] == [
        ("adjustment", -IDR),
        ("promotion", 2 * IDR),
        ("topup", 5 * IDR),
    ]


async def test_not_found_cases(stub: Stub) -> None:
    calls: list[Awaitable[Any]] = [
        stub.GetAccountBalance(pb.GetAccountBalanceRequest(account_id=UNKNOWN_ACCOUNT)),
        stub.TopUp(pb.TopUpRequest(account_id=UNKNOWN_ACCOUNT, amount_micros=IDR)),
        stub.CreateApiKey(pb.CreateApiKeyRequest(account_id=UNKNOWN_ACCOUNT)),
        stub.ListApiKeys(pb.ListApiKeysRequest(account_id=UNKNOWN_ACCOUNT)),
        stub.RevokeApiKey(pb.RevokeApiKeyRequest(key_id=UNKNOWN_KEY)),
        stub.PlaceHold(
            pb.PlaceHoldRequest(account_id=UNKNOWN_ACCOUNT, amount_micros=1, idempotency_key="nf")
        ),
        stub.CaptureHold(pb.CaptureHoldRequest(hold_id=UNKNOWN_HOLD, amount_micros=1)),
        stub.ReleaseHold(pb.ReleaseHoldRequest(hold_id=UNKNOWN_HOLD)),
        stub.ListLedger(pb.ListLedgerRequest(account_id=UNKNOWN_ACCOUNT)),
    ]
    for call in calls:
        code, details = await code_of(call)
        assert code == grpc.StatusCode.NOT_FOUND, details


async def test_resource_exhausted_and_failed_precondition(stub: Stub) -> None:
    account_id = await new_account(stub, 2)
    code, details = await code_of(
        stub.PlaceHold(
            pb.PlaceHoldRequest(account_id=account_id, amount_micros=3 * IDR, idempotency_key="a")
        )
    )
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "insufficient balance" in details

    first = await stub.PlaceHold(
        pb.PlaceHoldRequest(account_id=account_id, amount_micros=IDR, idempotency_key="b")
    )
    await stub.ReleaseHold(pb.ReleaseHoldRequest(hold_id=first.hold_id))
    again = await stub.ReleaseHold(pb.ReleaseHoldRequest(hold_id=first.hold_id))
    assert again.status == "released"
    code, _ = await code_of(
        stub.CaptureHold(pb.CaptureHoldRequest(hold_id=first.hold_id, amount_micros=1))
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION

    second = await stub.PlaceHold(
        pb.PlaceHoldRequest(account_id=account_id, amount_micros=IDR, idempotency_key="c")
    )
    await stub.CaptureHold(pb.CaptureHoldRequest(hold_id=second.hold_id, amount_micros=IDR))
    code, _ = await code_of(stub.ReleaseHold(pb.ReleaseHoldRequest(hold_id=second.hold_id)))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    balance = await stub.GetAccountBalance(pb.GetAccountBalanceRequest(account_id=account_id))
    assert (balance.balance_micros, balance.held_micros) == (IDR, 0)


async def test_fifty_concurrent_holds_over_grpc(stub: Stub) -> None:
    account_id = await new_account(stub, 5)

    async def place(i: int) -> grpc.StatusCode:
        try:
            await stub.PlaceHold(
                pb.PlaceHoldRequest(
                    account_id=account_id, amount_micros=IDR, idempotency_key=f"{account_id}-{i}"
                )
            )
        except grpc.aio.AioRpcError as err:
            return err.code()
        return grpc.StatusCode.OK

    codes = await asyncio.gather(*(place(i) for i in range(50)))
    assert codes.count(grpc.StatusCode.OK) == 5
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 45
    balance = await stub.GetAccountBalance(pb.GetAccountBalanceRequest(account_id=account_id))
    assert balance.available_micros == 0


async def test_unexpected_errors_are_internal_without_details(
    stub: Stub, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(engine: AsyncEngine, account_id: str) -> ledger.Balance:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(ledger, "get_balance", broken)
    code, details = await code_of(
        stub.GetAccountBalance(pb.GetAccountBalanceRequest(account_id=UNKNOWN_ACCOUNT))
    )
    assert code == grpc.StatusCode.INTERNAL
    assert "secret" not in details
    assert "Traceback" not in details


@pytest_asyncio.fixture(loop_scope="session")
async def dead_db_stub() -> AsyncIterator[Stub]:
    """A server whose database has gone away."""
    url = fresh_database_url("aiport_test_gone")
    drop_database(url)
    engine = db.create_engine(url, application_name="billing")
    money = Money(url, timeout_seconds=0.5)
    await money.open(wait=False)
    server = grpc.aio.server()
    register(server, BillingServicer(engine, money))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield billing_pb2_grpc.BillingStub(channel)
    finally:
        await server.stop(None)
        await money.close()
        await engine.dispose()


async def test_database_down_is_unavailable(dead_db_stub: Stub) -> None:
    code, details = await code_of(
        dead_db_stub.GetAccountBalance(pb.GetAccountBalanceRequest(account_id=UNKNOWN_ACCOUNT))
    )
    assert code == grpc.StatusCode.UNAVAILABLE
    assert "does not exist" not in details
