"""The one-round-trip hold and capture keep every ledger rule (real PostgreSQL)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.billing import ledger, rules
from services.billing.money import Money
from services.billing.rules import FailedPrecondition, InsufficientFunds, Unauthenticated

from .helpers import IDR, funded_account

pytestmark = pytest.mark.usefixtures("check_invariants")


def key() -> str:
    return "req_" + rules.new_hold_id()


async def funded_key(engine: AsyncEngine, money: Money, amount: int) -> tuple[str, str, str]:
    account_id = await funded_account(engine, money, amount)
    created = await ledger.create_api_key(engine, account_id)
    return account_id, created.api_key, created.key_id


async def authorize(money: Money, api_key: str, amount: int, k: str | None = None) -> ledger.Hold:
    principal, hold = await money.authorize_hold(
        api_key, amount, k or key(), description="t", ttl_seconds=0, default_ttl_seconds=60
    )
    assert principal.account_id == hold.account_id
    return hold


async def test_authorize_reserves_and_names_the_owner(engine: AsyncEngine, money: Money) -> None:
    account_id, api_key, key_id = await funded_key(engine, money, 10 * IDR)
    principal, hold = await money.authorize_hold(
        api_key, 3 * IDR, key(), description="chat x", ttl_seconds=0, default_ttl_seconds=60
    )
    assert (principal.account_id, principal.key_id) == (account_id, key_id)
    assert (hold.status, hold.amount_micros, hold.description) == ("open", 3 * IDR, "chat x")
    balance = await ledger.get_balance(engine, account_id)
    assert (balance.held_micros, balance.available_micros) == (3 * IDR, 7 * IDR)


async def test_unknown_revoked_and_malformed_keys(engine: AsyncEngine, money: Money) -> None:
    account_id, api_key, key_id = await funded_key(engine, money, 10 * IDR)
    for bad in ("", "nope", rules.new_api_key()):
        with pytest.raises(Unauthenticated):
            await authorize(money, bad, IDR)
    await ledger.revoke_api_key(engine, key_id)
    with pytest.raises(Unauthenticated):
        await authorize(money, api_key, IDR)
    assert (await ledger.get_balance(engine, account_id)).held_micros == 0


async def test_insufficient_funds_reserves_nothing(engine: AsyncEngine, money: Money) -> None:
    account_id, api_key, _ = await funded_key(engine, money, 2 * IDR)
    with pytest.raises(InsufficientFunds):
        await authorize(money, api_key, 3 * IDR)
    assert (await ledger.get_balance(engine, account_id)).held_micros == 0


async def test_a_retried_key_returns_the_same_hold(engine: AsyncEngine, money: Money) -> None:
    account_id, api_key, _ = await funded_key(engine, money, 10 * IDR)
    k = key()
    first = await authorize(money, api_key, 3 * IDR, k)
    again = await authorize(money, api_key, 3 * IDR, k)
    assert first.id == again.id
    assert (await ledger.get_balance(engine, account_id)).held_micros == 3 * IDR


async def test_concurrent_twins_reserve_once(engine: AsyncEngine, money: Money) -> None:
    account_id, api_key, _ = await funded_key(engine, money, 100 * IDR)
    k = key()
    holds = await asyncio.gather(*(authorize(money, api_key, 3 * IDR, k) for _ in range(20)))
    assert len({h.id for h in holds}) == 1
    assert (await ledger.get_balance(engine, account_id)).held_micros == 3 * IDR


async def test_hundred_concurrent_authorizations_never_overdraw(
    engine: AsyncEngine, money: Money
) -> None:
    account_id, api_key, _ = await funded_key(engine, money, 10 * IDR)
    results = await asyncio.gather(
        *(authorize(money, api_key, IDR) for _ in range(100)), return_exceptions=True
    )
    assert sum(isinstance(r, ledger.Hold) for r in results) == 10
    assert sum(isinstance(r, InsufficientFunds) for r in results) == 90
    balance = await ledger.get_balance(engine, account_id)
    assert (balance.held_micros, balance.available_micros) == (10 * IDR, 0)


async def test_capture_charges_once_and_frees_the_rest(engine: AsyncEngine, money: Money) -> None:
    account_id, api_key, _ = await funded_key(engine, money, 10 * IDR)
    hold = await authorize(money, api_key, 4 * IDR)
    captured = await money.capture(hold.id, IDR + 5, "chat done")
    assert (captured.status, captured.captured_micros) == ("captured", IDR + 5)
    again = await money.capture(hold.id, 3 * IDR, "retry")  # idempotent: no second charge
    assert again.captured_micros == IDR + 5
    balance = await ledger.get_balance(engine, account_id)
    assert (balance.balance_micros, balance.held_micros) == (9 * IDR - 5, 0)
    entries = await ledger.list_ledger(engine, account_id, 10)
    newest = entries[0]
    assert (newest.kind, newest.amount_micros, newest.description) == (
        "capture",
        -(IDR + 5),
        "chat done",
    )


async def test_capture_beyond_the_hold_is_refused_and_zero_writes_no_entry(
    engine: AsyncEngine, money: Money
) -> None:
    """Premise changed (issue 12): a capture above its hold was clamped; now it
    is refused, and the hold can still be captured at what it reserved."""
    account_id, api_key, _ = await funded_key(engine, money, 10 * IDR)
    big = await authorize(money, api_key, 2 * IDR)
    with pytest.raises(rules.CaptureExceedsHold):
        await money.capture(big.id, 50 * IDR, "")
    assert (await money.capture(big.id, 2 * IDR, "")).captured_micros == 2 * IDR
    zero = await authorize(money, api_key, 2 * IDR)
    assert (await money.capture(zero.id, 0, "")).captured_micros == 0
    kinds = [e.kind for e in await ledger.list_ledger(engine, account_id, 10)]
    assert kinds.count("capture") == 1


async def test_concurrent_captures_charge_once(engine: AsyncEngine, money: Money) -> None:
    account_id, api_key, _ = await funded_key(engine, money, 10 * IDR)
    hold = await authorize(money, api_key, 4 * IDR)
    await asyncio.gather(*(money.capture(hold.id, IDR, "") for _ in range(20)))
    assert (await ledger.get_balance(engine, account_id)).balance_micros == 9 * IDR


async def test_released_hold_cannot_be_captured(engine: AsyncEngine, money: Money) -> None:
    _, api_key, _ = await funded_key(engine, money, 10 * IDR)
    hold = await authorize(money, api_key, 4 * IDR)
    await money.release(hold.id, "upstream failed")
    with pytest.raises(FailedPrecondition):
        await money.capture(hold.id, IDR, "")
