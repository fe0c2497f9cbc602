"""Keys' developer controls against real PostgreSQL: spend caps enforced by the
hold (exact under concurrency, given back by release and partial capture,
fresh at Jakarta midnight), the model allowlist, expiry, rate-limit overrides,
and their settings through billing's gRPC face."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta
from typing import cast

import grpc
import pytest
import pytest_asyncio
from aiport.v1 import billing_pb2 as pb
from aiport.v1 import billing_pb2_grpc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.billing import ledger, rules
from services.billing.money import Money
from services.billing.rules import (
    BudgetExceeded,
    FailedPrecondition,
    InsufficientFunds,
    InvalidArgument,
    KeyExpired,
    ModelNotAllowed,
    NotFound,
    Unauthenticated,
)
from services.common import billing_errors

from .helpers import IDR, funded_account, make_overdue

pytestmark = pytest.mark.usefixtures("check_invariants")

Stub = billing_pb2_grpc.BillingStub
NOW = datetime(2026, 12, 5, 16, 0, tzinfo=UTC)  # 23:00 in Jakarta


def hold_key() -> str:
    return "req_" + rules.new_hold_id()


class Clock:
    """A clock a test moves (caps' periods follow it; the database's does not)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest_asyncio.fixture
async def clock() -> Clock:
    return Clock(NOW)


@pytest_asyncio.fixture
async def timed_money(database_url: str, clock: Clock) -> AsyncIterator[Money]:
    money = Money(database_url, min_size=2, max_size=20, clock=clock)
    await money.open()
    yield money
    await money.close()


async def capped_key(
    engine: AsyncEngine, money: Money, balance_idr: int = 1000, **settings: object
) -> tuple[str, str]:
    account_id = await funded_account(engine, money, balance_idr * IDR)
    created = await ledger.create_api_key(
        engine,
        account_id,
        settings=rules.check_key_settings(NOW, **settings),  # type: ignore[arg-type]
    )
    return account_id, created.api_key


async def key_row(engine: AsyncEngine, api_key: str) -> ledger.ApiKey:
    async with engine.connect() as conn:
        key_id = (
            await conn.execute(
                text("SELECT id FROM billing.api_keys WHERE key_hash = :h"),
                {"h": rules.hash_api_key(api_key)},
            )
        ).scalar_one()
    keys = await ledger.list_api_keys(engine, await _account_of(engine, key_id))
    return next(k for k in keys if k.id == key_id)


async def _account_of(engine: AsyncEngine, key_id: str) -> str:
    async with engine.connect() as conn:
        account_id: str = (
            await conn.execute(
                text("SELECT account_id FROM billing.api_keys WHERE id = :id"), {"id": key_id}
            )
        ).scalar_one()
    return account_id


async def open_and_captured(engine: AsyncEngine, account_id: str) -> int:
    """What the account's holds count against a cap: open amounts + captures."""
    async with engine.connect() as conn:
        total: int = (
            await conn.execute(
                text(
                    "SELECT coalesce(sum(CASE status WHEN 'open' THEN amount_micros"
                    " WHEN 'captured' THEN captured_micros ELSE 0 END), 0)"
                    " FROM billing.holds WHERE account_id = :id"
                ),
                {"id": account_id},
            )
        ).scalar_one()
    return total


async def test_concurrent_holds_never_pass_a_daily_cap(
    engine: AsyncEngine, timed_money: Money
) -> None:
    cap = 10 * IDR + 7
    account_id, api_key = await capped_key(engine, timed_money, daily_cap_micros=cap)
    amount = 300_001  # 33 fit (9,900,033 µIDR); a 34th would pass the cap

    async def one() -> bool:
        try:
            await timed_money.authorize_hold(api_key, amount, hold_key(), model="m")
        except BudgetExceeded:
            return False
        return True

    placed = await asyncio.gather(*(one() for _ in range(100)))
    assert sum(placed) == cap // amount == 33
    assert await open_and_captured(engine, account_id) == 33 * amount <= cap
    key = await key_row(engine, api_key)
    assert key.controls.spend.day_micros == 33 * amount


async def test_release_and_partial_capture_give_room_back(
    engine: AsyncEngine, timed_money: Money
) -> None:
    _, api_key = await capped_key(engine, timed_money, lifetime_cap_micros=10 * IDR)
    _, first = await timed_money.authorize_hold(api_key, 6 * IDR, hold_key())
    with pytest.raises(BudgetExceeded, match="lifetime spend cap of 10 IDR") as refused:
        await timed_money.authorize_hold(api_key, 5 * IDR, hold_key())
    assert refused.value.cap == "lifetime" and refused.value.resets_at is None
    # Captured 2 of 6: 4 back, so 5 more fit (2 + 5 <= 10), then only 3.
    await timed_money.capture(first.id, 2 * IDR)
    _, second = await timed_money.authorize_hold(api_key, 5 * IDR, hold_key())
    with pytest.raises(BudgetExceeded):
        await timed_money.authorize_hold(api_key, 3 * IDR + 1, hold_key())
    await timed_money.release(second.id)
    await timed_money.authorize_hold(api_key, 8 * IDR, hold_key())
    key = await key_row(engine, api_key)
    assert key.controls.spend.lifetime_micros == 10 * IDR


async def test_a_retried_hold_is_the_same_hold_after_the_cap_filled(
    engine: AsyncEngine, timed_money: Money
) -> None:
    _, api_key = await capped_key(engine, timed_money, daily_cap_micros=5 * IDR)
    key = hold_key()
    _, first = await timed_money.authorize_hold(api_key, 5 * IDR, key)
    _, again = await timed_money.authorize_hold(api_key, 5 * IDR, key)
    assert again.id == first.id


async def test_a_capped_key_still_needs_the_balance(
    engine: AsyncEngine, timed_money: Money
) -> None:
    _, api_key = await capped_key(engine, timed_money, balance_idr=3, daily_cap_micros=50 * IDR)
    with pytest.raises(InsufficientFunds):
        await timed_money.authorize_hold(api_key, 4 * IDR, hold_key())


async def test_the_day_starts_afresh_at_jakarta_midnight(
    engine: AsyncEngine, timed_money: Money, clock: Clock
) -> None:
    _, api_key = await capped_key(
        engine, timed_money, daily_cap_micros=5 * IDR, monthly_cap_micros=8 * IDR
    )
    _, yesterdays = await timed_money.authorize_hold(api_key, 5 * IDR, hold_key())
    with pytest.raises(BudgetExceeded, match="daily spend cap") as refused:
        await timed_money.authorize_hold(api_key, 1, hold_key())
    # Midnight in Jakarta is 17:00 UTC.
    assert refused.value.resets_at == datetime(2026, 12, 5, 17, 0, tzinfo=UTC)
    clock.now = datetime(2026, 12, 5, 17, 0, 1, tzinfo=UTC)
    _, todays = await timed_money.authorize_hold(api_key, 3 * IDR, hold_key())
    # The month counts both days: 5 + 3 = 8; the monthly cap is named, not the daily.
    with pytest.raises(BudgetExceeded, match="monthly spend cap") as monthly:
        await timed_money.authorize_hold(api_key, 1, hold_key())
    assert monthly.value.resets_at == datetime(2026, 12, 31, 17, 0, tzinfo=UTC)
    # Yesterday's release gives back to yesterday (gone) and to the month.
    await timed_money.release(yesterdays.id)
    key = await key_row(engine, api_key)
    assert (key.controls.spend.day_micros, key.controls.spend.month_micros) == (3 * IDR, 3 * IDR)
    await timed_money.authorize_hold(api_key, 2 * IDR, hold_key())
    del todays


async def test_the_allowlist_refuses_other_models(engine: AsyncEngine, timed_money: Money) -> None:
    _, api_key = await capped_key(engine, timed_money, allowed_models=["gpt-5.4-mini", "a/b"])
    await timed_money.authorize_hold(api_key, IDR, hold_key(), model="a/b")
    with pytest.raises(ModelNotAllowed, match="deepseek-v4-flash"):
        await timed_money.authorize_hold(api_key, IDR, hold_key(), model="deepseek-v4-flash")


async def test_an_expired_key_says_so(engine: AsyncEngine, timed_money: Money) -> None:
    _, api_key = await capped_key(
        engine,
        timed_money,
        expires_at_unix=int((datetime.now(UTC) + timedelta(hours=1)).timestamp()),
    )
    await timed_money.authenticate(api_key)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE billing.api_keys SET expires_at = now() - interval '1 second'"
                " WHERE key_hash = :h"
            ),
            {"h": rules.hash_api_key(api_key)},
        )
    with pytest.raises(KeyExpired, match="expired at"):
        await timed_money.authenticate(api_key)
    with pytest.raises(KeyExpired):
        await timed_money.authorize_hold(api_key, IDR, hold_key())
    # An unknown key is still the one plain refusal.
    with pytest.raises(Unauthenticated):
        await timed_money.authenticate(rules.new_api_key())


async def test_principal_carries_rate_limits(engine: AsyncEngine, timed_money: Money) -> None:
    account_id, api_key = await capped_key(
        engine, timed_money, requests_per_minute=30, concurrent_requests=2
    )
    await ledger.set_account_rate_limits(
        engine, account_id, requests_per_minute=600, concurrent_requests=0
    )
    expected = ledger.RateLimits(30, 2, 600, 0)
    assert (await timed_money.authenticate(api_key)).rate_limits == expected
    principal, _ = await timed_money.authorize_hold(api_key, IDR, hold_key())
    assert principal.rate_limits == expected


async def test_update_changes_only_what_is_given(engine: AsyncEngine, timed_money: Money) -> None:
    account_id, api_key = await capped_key(
        engine, timed_money, daily_cap_micros=5 * IDR, allowed_models=["m"]
    )
    key = await key_row(engine, api_key)
    changed = await ledger.update_api_key(
        engine,
        key.id,
        account_id=account_id,
        name="ci",
        settings=rules.check_key_settings(NOW, monthly_cap_micros=9 * IDR),
    )
    assert changed.name == "ci"
    assert changed.controls.caps == rules.SpendCaps(5 * IDR, 9 * IDR, None)
    assert changed.controls.allowed_models == ("m",)
    cleared = await ledger.update_api_key(
        engine,
        key.id,
        settings=rules.check_key_settings(NOW, daily_cap_micros=0, allowed_models=[]),
    )
    assert cleared.controls.caps == rules.SpendCaps(None, 9 * IDR, None)
    assert cleared.controls.allowed_models == ()
    other = await funded_account(engine, timed_money)
    with pytest.raises(NotFound):
        await ledger.update_api_key(engine, key.id, account_id=other, name="x")
    with pytest.raises(InvalidArgument, match="daily_cap_micros"):
        rules.check_key_settings(NOW, daily_cap_micros=-1)
    with pytest.raises(InvalidArgument, match="expires_at_unix must be in the future"):
        rules.check_key_settings(NOW, expires_at_unix=int(NOW.timestamp()))
    await ledger.revoke_api_key(engine, key.id)
    with pytest.raises(FailedPrecondition, match="revoked"):
        await ledger.update_api_key(engine, key.id, name="y")


# Through gRPC: statuses and the trailers the gateway reads.


def _trailers(error: grpc.aio.AioRpcError) -> dict[str, str]:
    pairs = cast(Iterable[tuple[str, str]], error.trailing_metadata() or ())
    return dict(pairs)


async def test_grpc_settings_and_refusals(stub: Stub) -> None:
    account = await stub.CreateAccount(pb.CreateAccountRequest(name="controls"))
    await stub.TopUp(pb.TopUpRequest(account_id=account.account_id, amount_micros=100 * IDR))
    created = await stub.CreateApiKey(
        pb.CreateApiKeyRequest(
            account_id=account.account_id,
            name="capped",
            settings=pb.ApiKeySettings(
                daily_cap_micros=2 * IDR, allowed_models=pb.ModelAllowlist(models=["m"])
            ),
        )
    )
    assert created.key.daily_cap_micros == 2 * IDR
    assert list(created.key.allowed_models) == ["m"]
    assert created.key.day_resets_at_unix > 0

    def hold(model: str, micros: int) -> pb.AuthorizeHoldRequest:
        return pb.AuthorizeHoldRequest(
            api_key=created.api_key, amount_micros=micros, idempotency_key=hold_key(), model=model
        )

    await stub.AuthorizeHold(hold("m", IDR))
    with pytest.raises(grpc.aio.AioRpcError) as capped:
        await stub.AuthorizeHold(hold("m", IDR + 1))
    assert capped.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    trailers = _trailers(capped.value)
    assert trailers[billing_errors.REFUSAL_TRAILER] == billing_errors.BUDGET_EXCEEDED
    assert trailers[billing_errors.BUDGET_CAP_TRAILER] == "daily"
    assert int(trailers[billing_errors.BUDGET_RESETS_AT_TRAILER]) > 0
    with pytest.raises(grpc.aio.AioRpcError) as other_model:
        await stub.AuthorizeHold(hold("x", IDR))
    assert other_model.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert billing_errors.refusal_of(other_model.value) == {
        billing_errors.REFUSAL_TRAILER: billing_errors.MODEL_NOT_ALLOWED
    }

    updated = await stub.UpdateApiKey(
        pb.UpdateApiKeyRequest(
            key_id=created.key_id,
            account_id=account.account_id,
            settings=pb.ApiKeySettings(daily_cap_micros=0, requests_per_minute=12),
        )
    )
    assert updated.daily_cap_micros == 0 and updated.requests_per_minute == 12
    assert updated.name == "capped" and list(updated.allowed_models) == ["m"]
    assert updated.spent_today_micros == IDR == updated.spent_lifetime_micros
    await stub.AuthorizeHold(hold("m", 5 * IDR))
    principal = await stub.Authenticate(pb.AuthenticateRequest(api_key=created.api_key))
    assert principal.rate_limits.key_requests_per_minute == 12

    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await stub.UpdateApiKey(
            pb.UpdateApiKeyRequest(
                key_id=created.key_id, settings=pb.ApiKeySettings(lifetime_cap_micros=-5)
            )
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "lifetime_cap_micros" in (bad.value.details() or "")

    limited = await stub.SetAccountRateLimits(
        pb.SetAccountRateLimitsRequest(
            account_id=account.account_id, requests_per_minute=100, concurrent_requests=4
        )
    )
    assert (limited.requests_per_minute, limited.concurrent_requests) == (100, 4)


async def test_grpc_expired_key_is_unauthenticated_and_says_so(
    stub: Stub, engine: AsyncEngine
) -> None:
    account = await stub.CreateAccount(pb.CreateAccountRequest(name="expiring"))
    soon = int((datetime.now(UTC) + timedelta(hours=1)).timestamp())
    created = await stub.CreateApiKey(
        pb.CreateApiKeyRequest(
            account_id=account.account_id, settings=pb.ApiKeySettings(expires_at_unix=soon)
        )
    )
    assert created.key.expires_at_unix == soon
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE billing.api_keys SET expires_at = now() - interval '1 minute'"
                " WHERE id = :id"
            ),
            {"id": created.key_id},
        )
    with pytest.raises(grpc.aio.AioRpcError) as expired:
        await stub.Authenticate(pb.AuthenticateRequest(api_key=created.api_key))
    assert expired.value.code() == grpc.StatusCode.UNAUTHENTICATED
    trailers = _trailers(expired.value)
    assert trailers[billing_errors.REFUSAL_TRAILER] == billing_errors.KEY_EXPIRED
    assert int(trailers[billing_errors.KEY_EXPIRED_AT_TRAILER]) < soon


async def test_an_expired_hold_gives_its_room_back(engine: AsyncEngine, timed_money: Money) -> None:
    _, api_key = await capped_key(engine, timed_money, daily_cap_micros=4 * IDR)
    _, first = await timed_money.authorize_hold(api_key, 3 * IDR, hold_key())
    _, second = await timed_money.authorize_hold(api_key, IDR, hold_key())
    with pytest.raises(BudgetExceeded):
        await timed_money.authorize_hold(api_key, 1, hold_key())
    await make_overdue(engine, first.id, second.id)
    expired = await timed_money.expire_due_holds()
    assert expired.holds >= 2
    key = await key_row(engine, api_key)
    assert key.controls.spend.day_micros == 0 == key.controls.spend.lifetime_micros
    await timed_money.authorize_hold(api_key, 4 * IDR, hold_key())
