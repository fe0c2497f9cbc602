"""The ledger against real PostgreSQL: holds, settlement, expiry, idempotency, races."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.billing import ledger, rules, sweeper
from services.billing.money import Money
from services.billing.rules import (
    CaptureExceedsHold,
    FailedPrecondition,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidArgument,
    NotFound,
    Unauthenticated,
)
from services.common import metrics

from .helpers import IDR, assert_invariants, funded_account, make_overdue

pytestmark = pytest.mark.usefixtures("check_invariants")

UNKNOWN_ACCOUNT = "acct_" + "0" * 20
UNKNOWN_HOLD = "hold_" + "0" * 20
UNKNOWN_KEY = "key_" + "0" * 20


def key() -> str:
    return "req_" + rules.new_hold_id()


async def entries(engine: AsyncEngine, account_id: str) -> list[ledger.LedgerEntry]:
    return await ledger.list_ledger(engine, account_id, 1000)


async def test_account_starts_empty(engine: AsyncEngine) -> None:
    account = await ledger.create_account(engine, "  Demo Co  ")
    assert account.name == "Demo Co"
    assert account.id.startswith("acct_")
    balance = await ledger.get_balance(engine, account.id)
    assert (balance.balance_micros, balance.held_micros, balance.available_micros) == (0, 0, 0)
    assert await entries(engine, account.id) == []


async def test_bad_input_is_invalid_argument(engine: AsyncEngine) -> None:
    with pytest.raises(InvalidArgument):
        await ledger.create_account(engine, "")
    with pytest.raises(InvalidArgument):
        await ledger.create_account(engine, "x" * 201)
    with pytest.raises(InvalidArgument):
        await ledger.get_balance(engine, "nope")
    with pytest.raises(NotFound):
        await ledger.get_balance(engine, UNKNOWN_ACCOUNT)


async def test_top_up_writes_ledger(engine: AsyncEngine, money: Money) -> None:
    account_id = await funded_account(engine, money)
    balance = await money.top_up(account_id, 5 * IDR, description="first")
    assert balance.balance_micros == 5 * IDR
    balance = await money.top_up(account_id, 2 * IDR)
    assert balance.balance_micros == 7 * IDR
    rows = await entries(engine, account_id)
    assert [(e.kind, e.amount_micros, e.balance_after_micros) for e in rows] == [
        ("topup", 2 * IDR, 7 * IDR),
        ("topup", 5 * IDR, 5 * IDR),
    ]
    assert rows[1].description == "first"
    assert rows[0].id > rows[1].id
    assert [e.id for e in await ledger.list_ledger(engine, account_id, 1)] == [rows[0].id]


async def test_top_up_validation(engine: AsyncEngine, money: Money) -> None:
    account_id = await funded_account(engine, money)
    for amount in (0, -5):
        with pytest.raises(InvalidArgument):
            await money.top_up(account_id, amount)
    with pytest.raises(NotFound):
        await money.top_up(UNKNOWN_ACCOUNT, IDR)
    assert (await ledger.get_balance(engine, account_id)).balance_micros == 0


async def test_top_up_idempotent(engine: AsyncEngine, money: Money) -> None:
    account_id = await funded_account(engine, money)
    first = await money.top_up(account_id, 3 * IDR, idempotency_key="pay_1")
    again = await money.top_up(account_id, 3 * IDR, idempotency_key="pay_1")
    assert first.balance_micros == again.balance_micros == 3 * IDR
    assert len(await entries(engine, account_id)) == 1
    # Premise changed (issue 12): the same key with another input is a
    # FAILED_PRECONDITION (IdempotencyConflict), told by the stored input hash.
    with pytest.raises(IdempotencyConflict):
        await money.top_up(account_id, 4 * IDR, idempotency_key="pay_1")
    with pytest.raises(IdempotencyConflict):
        await money.top_up(account_id, 3 * IDR, idempotency_key="pay_1", description="other")
    with pytest.raises(IdempotencyConflict):
        await money.top_up(account_id, 3 * IDR, idempotency_key="pay_1", rail="midtrans")
    other = await funded_account(engine, money)
    with pytest.raises(IdempotencyConflict):
        await money.top_up(other, 3 * IDR, idempotency_key="pay_1")
    assert (await ledger.get_balance(engine, other)).balance_micros == 0
    # A caller's key can never collide with the internal capture keys.
    await money.top_up(account_id, IDR, idempotency_key="capture:hold_x")
    assert (await ledger.get_balance(engine, account_id)).balance_micros == 4 * IDR


async def test_concurrent_top_ups_with_one_key_move_money_once(
    engine: AsyncEngine, money: Money
) -> None:
    account_id = await funded_account(engine, money)
    results = await asyncio.gather(
        *(money.top_up(account_id, 2 * IDR, idempotency_key="dup") for _ in range(20))
    )
    assert {r.balance_micros for r in results} == {2 * IDR}
    assert len(await entries(engine, account_id)) == 1


async def test_top_up_overflow_is_invalid(engine: AsyncEngine, money: Money) -> None:
    account_id = await funded_account(engine, money)
    for _ in range(9):
        await money.top_up(account_id, rules.MAX_AMOUNT_MICROS)
    with pytest.raises(InvalidArgument, match="overflow"):
        await money.top_up(account_id, rules.MAX_AMOUNT_MICROS)
    assert (await ledger.get_balance(engine, account_id)).balance_micros == (
        9 * rules.MAX_AMOUNT_MICROS
    )


async def test_place_hold_reserves(engine: AsyncEngine, money: Money) -> None:
    account_id = await funded_account(engine, money, 10 * IDR)
    hold = await money.place_hold(account_id, 4 * IDR, key(), description="chat x")
    assert hold.status == "open"
    assert hold.amount_micros == 4 * IDR
    assert hold.captured_micros == 0
    assert hold.description == "chat x"
    assert 3590 <= (hold.expires_at - hold.created_at).total_seconds() <= 3610
    balance = await ledger.get_balance(engine, account_id)
    assert (balance.balance_micros, balance.held_micros, balance.available_micros) == (
        10 * IDR,
        4 * IDR,
        6 * IDR,
    )
    short = await money.place_hold(account_id, IDR, key(), ttl_seconds=60)
    assert 55 <= (short.expires_at - short.created_at).total_seconds() <= 65


async def test_place_hold_insufficient_and_unknown(engine: AsyncEngine, money: Money) -> None:
    account_id = await funded_account(engine, money, 10 * IDR)
    await money.place_hold(account_id, 7 * IDR, key())
    with pytest.raises(InsufficientFunds, match="available 3 IDR"):
        await money.place_hold(account_id, 3 * IDR + 1, key())
    exact = await money.place_hold(account_id, 3 * IDR, key())
    assert exact.status == "open"
    assert (await ledger.get_balance(engine, account_id)).available_micros == 0
    with pytest.raises(NotFound):
        await money.place_hold(UNKNOWN_ACCOUNT, IDR, key())


async def test_place_hold_validation(engine: AsyncEngine, money: Money) -> None:
    account_id = await funded_account(engine, money, 10 * IDR)
    for kwargs in (
        {"amount_micros": 0, "idempotency_key": key()},
        {"amount_micros": -1, "idempotency_key": key()},
        {"amount_micros": IDR, "idempotency_key": ""},
    ):
        with pytest.raises(InvalidArgument):
            await money.place_hold(account_id, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        await money.place_hold(account_id, IDR, key(), ttl_seconds=10**7)
    with pytest.raises(InvalidArgument):
        await money.place_hold("acct_bad", IDR, key())
    assert (await ledger.get_balance(engine, account_id)).held_micros == 0


async def test_place_hold_idempotent(engine: AsyncEngine, money: Money) -> None:
    account_id = await funded_account(engine, money, 10 * IDR)
    k = key()
    first = await money.place_hold(account_id, 10 * IDR, k)
    # The retry succeeds even though nothing is available any more.
    again = await money.place_hold(account_id, 10 * IDR, k)
    assert again == first
    assert (await ledger.get_balance(engine, account_id)).held_micros == 10 * IDR
    # Premise changed (issue 12): another input under the key is an
    # IdempotencyConflict (FAILED_PRECONDITION), by the stored input hash.
    with pytest.raises(IdempotencyConflict):
        await money.place_hold(account_id, 5 * IDR, k)
    with pytest.raises(IdempotencyConflict):
        await money.place_hold(account_id, 10 * IDR, k, description="something else")
    with pytest.raises(IdempotencyConflict):
        await money.place_hold(account_id, 10 * IDR, k, model="other-model")
    other = await funded_account(engine, money, 10 * IDR)
    with pytest.raises(IdempotencyConflict):
        await money.place_hold(other, 10 * IDR, k)
    assert (await ledger.get_balance(engine, other)).held_micros == 0
    # After settlement a retry still returns the same (now settled) hold.
    await money.capture(first.id, 2 * IDR)
    settled = await money.place_hold(account_id, 10 * IDR, k)
    assert (settled.id, settled.status, settled.captured_micros) == (first.id, "captured", 2 * IDR)
    assert (await ledger.get_balance(engine, account_id)).held_micros == 0


async def test_concurrent_place_holds_with_one_key_reserve_once(
    engine: AsyncEngine, money: Money
) -> None:
    account_id = await funded_account(engine, money, 100 * IDR)
    k = key()
    holds = await asyncio.gather(*(money.place_hold(account_id, 3 * IDR, k) for _ in range(30)))
    assert len({h.id for h in holds}) == 1
    assert (await ledger.get_balance(engine, account_id)).held_micros == 3 * IDR


async def test_hundred_concurrent_holds_never_overdraw(engine: AsyncEngine, money: Money) -> None:
    account_id = await funded_account(engine, money, 10 * IDR)
    results = await asyncio.gather(
        *(money.place_hold(account_id, IDR, key()) for _ in range(100)),
        return_exceptions=True,
    )
    placed = [r for r in results if isinstance(r, ledger.Hold)]
    refused = [r for r in results if isinstance(r, InsufficientFunds)]
    assert len(placed) == 10
    assert len(refused) == 90
    balance = await ledger.get_balance(engine, account_id)
    assert balance.held_micros == 10 * IDR
    assert balance.available_micros == 0
    assert balance.balance_micros == 10 * IDR


async def test_capture_partial(engine: AsyncEngine, money: Money) -> None:
    account_id = await funded_account(engine, money, 10 * IDR)
    hold = await money.place_hold(account_id, 4 * IDR, key(), description="chat m")
    captured = await money.capture(hold.id, 1_500_000)
    assert (captured.status, captured.captured_micros, captured.amount_micros) == (
        "captured",
        1_500_000,
        4 * IDR,
    )
    assert captured.settled_at is not None
    balance = await ledger.get_balance(engine, account_id)
    assert (balance.balance_micros, balance.held_micros) == (10 * IDR - 1_500_000, 0)
    latest = (await entries(engine, account_id))[0]
    assert (latest.kind, latest.amount_micros, latest.hold_id, latest.description) == (
        "capture",
        -1_500_000,
        hold.id,
        "chat m",
    )
    assert latest.balance_after_micros == 10 * IDR - 1_500_000


async def test_capture_is_idempotent(engine: AsyncEngine, money: Money) -> None:
    account_id = await funded_account(engine, money, 10 * IDR)
    hold = await money.place_hold(account_id, 4 * IDR, key())
    first = await money.capture(hold.id, 3 * IDR)
    again = await money.capture(hold.id, 4 * IDR)  # a different amount changes nothing
    assert again == first
    assert again.captured_micros == 3 * IDR
    assert (await ledger.get_balance(engine, account_id)).balance_micros == 7 * IDR
    assert len([e for e in await entries(engine, account_id) if e.kind == "capture"]) == 1


async def test_capture_beyond_the_hold_is_refused_not_clamped(
    engine: AsyncEngine, money: Money, caplog: pytest.LogCaptureFixture
) -> None:
    """Premise changed (issue 12): this capture used to be clamped to the hold.
    Now nothing moves, the caller hears CaptureExceedsHold, and an operator
    sees a log line and a metric."""
    account_id = await funded_account(engine, money, 10 * IDR)
    hold = await money.place_hold(account_id, 4 * IDR, key())
    refused_before = metrics.CAPTURES_EXCEEDING_HOLD._value.get()
    for amount in (4 * IDR + 1, rules.INT64_MAX):
        with pytest.raises(CaptureExceedsHold) as refused:
            await money.capture(hold.id, amount)
        assert (refused.value.requested_micros, refused.value.held_micros) == (amount, 4 * IDR)
    assert metrics.CAPTURES_EXCEEDING_HOLD._value.get() == refused_before + 2
    assert "capture exceeds its hold" in caplog.text
    assert (await ledger.get_hold(engine, hold.id)).status == "open"
    balance = await ledger.get_balance(engine, account_id)
    assert (balance.balance_micros, balance.held_micros) == (10 * IDR, 4 * IDR)
    captured = await money.capture(hold.id, 4 * IDR)
    assert captured.captured_micros == 4 * IDR
    balance = await ledger.get_balance(engine, account_id)
    assert (balance.balance_micros, balance.held_micros) == (6 * IDR, 0)


async def test_capture_zero_frees_and_charges_nothing(engine: AsyncEngine, money: Money) -> None:
    account_id = await funded_account(engine, money, 10 * IDR)
    hold = await money.place_hold(account_id, 4 * IDR, key())
    captured = await money.capture(hold.id, 0)
    assert (captured.status, captured.captured_micros) == ("captured", 0)
    balance = await ledger.get_balance(engine, account_id)
    assert (balance.balance_micros, balance.held_micros) == (10 * IDR, 0)
    assert [e.kind for e in await entries(engine, account_id)] == ["topup"]


async def test_release_is_idempotent(engine: AsyncEngine, money: Money) -> None:
    account_id = await funded_account(engine, money, 10 * IDR)
    hold = await money.place_hold(account_id, 4 * IDR, key())
    released = await money.release(hold.id, reason="upstream failed")
    assert released.status == "released"
    again = await money.release(hold.id)
    assert again == released
    balance = await ledger.get_balance(engine, account_id)
    assert (balance.balance_micros, balance.held_micros) == (10 * IDR, 0)
    assert [e.kind for e in await entries(engine, account_id)] == ["topup"]


async def test_settling_the_other_way_is_failed_precondition(
    engine: AsyncEngine, money: Money
) -> None:
    account_id = await funded_account(engine, money, 10 * IDR)
    released = await money.place_hold(account_id, IDR, key())
    await money.release(released.id)
    with pytest.raises(FailedPrecondition, match="released"):
        await money.capture(released.id, IDR)
    captured = await money.place_hold(account_id, IDR, key())
    await money.capture(captured.id, IDR)
    with pytest.raises(FailedPrecondition, match="captured"):
        await money.release(captured.id)
    balance = await ledger.get_balance(engine, account_id)
    assert (balance.balance_micros, balance.held_micros) == (9 * IDR, 0)


async def test_settle_unknown_or_bad_holds(engine: AsyncEngine, money: Money) -> None:
    with pytest.raises(NotFound):
        await money.capture(UNKNOWN_HOLD, 1)
    with pytest.raises(NotFound):
        await money.release(UNKNOWN_HOLD)
    with pytest.raises(InvalidArgument):
        await money.capture("hold_x", 1)
    account_id = await funded_account(engine, money, 10 * IDR)
    hold = await money.place_hold(account_id, IDR, key())
    with pytest.raises(InvalidArgument):
        await money.capture(hold.id, -1)
    assert (await ledger.get_hold(engine, hold.id)).status == "open"


async def test_expiry_frees_the_hold(engine: AsyncEngine, money: Money) -> None:
    account_id = await funded_account(engine, money, 10 * IDR)
    hold = await money.place_hold(account_id, 4 * IDR, key())
    keep = await money.place_hold(account_id, 2 * IDR, key())
    await make_overdue(engine, hold.id)
    assert await sweeper.sweep_once(money) >= 1
    expired = await ledger.get_hold(engine, hold.id)
    assert (expired.status, expired.captured_micros) == ("expired", 0)
    assert expired.settled_at is not None
    assert (await ledger.get_hold(engine, keep.id)).status == "open"
    balance = await ledger.get_balance(engine, account_id)
    assert (balance.balance_micros, balance.held_micros) == (10 * IDR, 2 * IDR)
    # Expired is a final state: capture refuses, release repeats it.
    with pytest.raises(FailedPrecondition, match="expired"):
        await money.capture(hold.id, IDR)
    assert (await money.release(hold.id)).status == "expired"
    assert (await money.expire_due_holds()).holds == 0


async def test_sweep_runs_in_bounded_batches(engine: AsyncEngine, money: Money) -> None:
    first = await funded_account(engine, money, 10 * IDR)
    second = await funded_account(engine, money, 10 * IDR)
    holds = [await money.place_hold(first, IDR, key()) for _ in range(4)]
    holds += [await money.place_hold(second, IDR, key()) for _ in range(3)]
    await make_overdue(engine, *(h.id for h in holds))
    batch = await money.expire_due_holds(batch_size=3)
    assert batch.holds == 3
    assert batch.released_micros == 3 * IDR
    await assert_invariants(engine)
    assert await sweeper.sweep_once(money, batch_size=3) == 4
    for account_id in (first, second):
        assert (await ledger.get_balance(engine, account_id)).held_micros == 0
    assert {(await ledger.get_hold(engine, h.id)).status for h in holds} == {"expired"}


async def test_racing_settlements_settle_each_hold_once(engine: AsyncEngine, money: Money) -> None:
    account_id = await funded_account(engine, money, 100 * IDR)
    holds = [await money.place_hold(account_id, 2 * IDR, key()) for _ in range(30)]
    await make_overdue(engine, *(h.id for h in holds[20:]))
    calls = []
    for hold in holds:
        calls += [
            money.capture(hold.id, IDR),
            money.release(hold.id),
            money.capture(hold.id, IDR),
            money.release(hold.id),
        ]
    results = await asyncio.gather(
        *calls, sweeper.sweep_once(money), sweeper.sweep_once(money), return_exceptions=True
    )
    unexpected = [r for r in results if isinstance(r, BaseException)]
    assert all(isinstance(r, FailedPrecondition) for r in unexpected), unexpected
    final = [await ledger.get_hold(engine, h.id) for h in holds]
    assert all(h.status in ("captured", "released", "expired") for h in final)
    charged = sum(h.captured_micros for h in final)
    balance = await ledger.get_balance(engine, account_id)
    assert balance.held_micros == 0
    assert balance.balance_micros == 100 * IDR - charged


async def test_api_keys(engine: AsyncEngine, money: Money) -> None:
    account_id = await funded_account(engine, money)
    created = await ledger.create_api_key(engine, account_id)
    assert rules.looks_like_api_key(created.api_key)
    assert created.prefix == created.api_key[:13]
    principal = await money.authenticate(created.api_key)
    assert principal == ledger.Principal(
        account_id=account_id, key_id=created.key_id, scopes=("inference",)
    )
    listed = await ledger.list_api_keys(engine, account_id)
    assert [(k.id, k.prefix, k.revoked_at) for k in listed] == [
        (created.key_id, created.prefix, None)
    ]
    async with engine.connect() as conn:
        stored = (
            await conn.execute(
                text("SELECT key_hash FROM billing.api_keys WHERE id = :id"),
                {"id": created.key_id},
            )
        ).scalar_one()
    assert bytes(stored) == rules.hash_api_key(created.api_key)

    revoked = await ledger.revoke_api_key(engine, created.key_id)
    assert revoked.revoked_at is not None
    with pytest.raises(Unauthenticated) as err:
        await money.authenticate(created.api_key)
    assert str(err.value) == rules.UNAUTHENTICATED_MESSAGE
    assert await ledger.revoke_api_key(engine, created.key_id) == revoked
    # Other keys of the account keep working.
    second = await ledger.create_api_key(engine, account_id)
    assert (await money.authenticate(second.api_key)).key_id == second.key_id


async def test_api_key_errors(engine: AsyncEngine, money: Money) -> None:
    for bad in ("", "aip_live_short", rules.new_api_key()):
        with pytest.raises(Unauthenticated) as err:
            await money.authenticate(bad)
        assert str(err.value) == rules.UNAUTHENTICATED_MESSAGE
    with pytest.raises(NotFound):
        await ledger.create_api_key(engine, UNKNOWN_ACCOUNT)
    with pytest.raises(NotFound):
        await ledger.list_api_keys(engine, UNKNOWN_ACCOUNT)
    with pytest.raises(NotFound):
        await ledger.revoke_api_key(engine, UNKNOWN_KEY)
    with pytest.raises(InvalidArgument):
        await ledger.revoke_api_key(engine, "key_bad")


async def test_ledger_listing_limits(engine: AsyncEngine, money: Money) -> None:
    with pytest.raises(NotFound):
        await ledger.list_ledger(engine, UNKNOWN_ACCOUNT)
    account_id = await funded_account(engine, money)
    with pytest.raises(InvalidArgument):
        await ledger.list_ledger(engine, account_id, 1001)


async def test_ledger_pages_with_a_cursor(engine: AsyncEngine, money: Money) -> None:
    """Pages newest first; each page's cursor continues exactly where it stopped,
    and the last page says so (no cursor), so paging ends without an empty page."""
    account_id = await funded_account(engine, money, 1 * IDR)
    for amount in (2, 3, 4, 5):
        await money.top_up(account_id, amount * IDR)
    everything = await entries(engine, account_id)
    assert len(everything) == 5
    first = await ledger.ledger_page(engine, account_id, 2)
    assert [e.id for e in first.entries] == [e.id for e in everything[:2]]
    assert first.next_after_entry_id == everything[1].id
    second = await ledger.ledger_page(engine, account_id, 2, first.next_after_entry_id)
    assert [e.id for e in second.entries] == [e.id for e in everything[2:4]]
    last = await ledger.ledger_page(engine, account_id, 2, second.next_after_entry_id)
    assert [e.id for e in last.entries] == [everything[4].id]
    assert last.next_after_entry_id == 0
    exact = await ledger.ledger_page(engine, account_id, 5)
    assert len(exact.entries) == 5 and exact.next_after_entry_id == 0
    with pytest.raises(InvalidArgument):
        await ledger.ledger_page(engine, account_id, 2, -1)


async def test_schema_refuses_bad_money(engine: AsyncEngine, money: Money) -> None:
    account_id = await funded_account(engine, money, 5 * IDR)
    hold = await money.place_hold(account_id, IDR, key())
    await money.capture(hold.id, IDR)
    statements = [
        "UPDATE billing.ledger_entries SET amount_micros = 1 WHERE account_id = :id",
        "DELETE FROM billing.ledger_entries WHERE account_id = :id",
        "UPDATE billing.accounts SET held_micros = balance_micros + 1 WHERE id = :id",
        "UPDATE billing.accounts SET balance_micros = -1, held_micros = 0 WHERE id = :id",
    ]
    for statement in statements:
        with pytest.raises(DBAPIError):
            async with engine.begin() as conn:
                await conn.execute(text(statement), {"id": account_id})
    assert (await ledger.get_balance(engine, account_id)).balance_micros == 4 * IDR


async def test_schema_revision(engine: AsyncEngine) -> None:
    assert await ledger.schema_revision(engine) == "0008"
