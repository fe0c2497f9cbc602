"""Top-up reversals (refunds, chargebacks): available first, the rest as debt
that suspends the account until a top-up repays it (real PostgreSQL)."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest
from aiport.v1 import billing_pb2, billing_pb2_grpc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.billing import audit, ledger, postings
from services.billing.money import Money
from services.billing.postings import ReversalReason
from services.billing.rules import (
    FailedPrecondition,
    IdempotencyConflict,
    InvalidArgument,
    NotFound,
    Unauthenticated,
)
from services.common import metrics

from .helpers import IDR, funded_account

pytestmark = pytest.mark.usefixtures("check_invariants")

REFUND = ReversalReason.REFUND
CHARGEBACK = ReversalReason.CHARGEBACK


async def paid_account(
    engine: AsyncEngine, money: Money, amount: int, rail: str = "midtrans"
) -> tuple[str, str]:
    """An account topped up through `rail`, and a key of it."""
    account_id = await funded_account(engine, money)
    await money.top_up(account_id, amount, idempotency_key=f"order-{account_id}", rail=rail)
    return account_id, (await ledger.create_api_key(engine, account_id)).api_key


async def spend(money: Money, account_id: str, amount: int) -> None:
    hold = await money.place_hold(account_id, amount, f"spend-{account_id}-{amount}", model="m")
    await money.capture(hold.id, amount)


async def reversal_postings(engine: AsyncEngine, account_id: str) -> list[tuple[str, int]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT p.account, p.amount_micros FROM billing.transactions t"
                " JOIN billing.postings p ON p.transaction_id = t.id"
                " WHERE t.account_id = :id AND t.kind = 'reversal' ORDER BY t.id, p.account"
            ),
            {"id": account_id},
        )
        return [(r.account, r.amount_micros) for r in rows]


async def test_a_reversal_covered_by_the_available_balance(
    engine: AsyncEngine, money: Money
) -> None:
    account_id, api_key = await paid_account(engine, money, 100 * IDR)
    balance = await money.reverse_top_up(
        account_id,
        30 * IDR,
        idempotency_key="midtrans:order-1:refund",
        rail="midtrans",
        reason=REFUND,
        description="Refund of top-up order-1",
    )
    assert (balance.balance_micros, balance.available_micros, balance.debt_micros) == (
        70 * IDR,
        70 * IDR,
        0,
    )
    assert await reversal_postings(engine, account_id) == [
        ("available", -30 * IDR),
        ("payments:midtrans", 30 * IDR),
    ]
    # Nothing owed, nothing suspended.
    assert (await ledger.get_account(engine, account_id)).disabled_at is None
    assert (await money.authenticate(api_key)).account_id == account_id
    entry = (await ledger.list_ledger(engine, account_id, 1))[0]
    assert (entry.kind, entry.amount_micros, entry.balance_after_micros) == (
        "reversal",
        -30 * IDR,
        70 * IDR,
    )
    assert (entry.debt_change_micros, entry.description) == (0, "Refund of top-up order-1")
    async with engine.connect() as conn:
        reason = (
            await conn.execute(
                text("SELECT reason FROM billing.transactions WHERE idempotency_key = :k"),
                {"k": "reversal:midtrans:order-1:refund"},
            )
        ).scalar_one()
    assert reason == "refund"


async def test_a_reversal_of_spent_money_records_debt_and_suspends_the_keys(
    engine: AsyncEngine, money: Money, caplog: pytest.LogCaptureFixture
) -> None:
    account_id, api_key = await paid_account(engine, money, 100 * IDR, rail="xendit")
    await spend(money, account_id, 80 * IDR)
    # An open hold: held money is not touched by the reversal.
    open_hold = await money.place_hold(account_id, 10 * IDR, f"open-{account_id}")
    debts_before = metrics.DEBTS_RECORDED.labels("chargeback")._value.get()
    with caplog.at_level(logging.WARNING, logger="services.billing.money"):
        balance = await money.reverse_top_up(
            account_id,
            100 * IDR,
            idempotency_key="xendit:inv-1:chargeback",
            rail="xendit",
            reason=CHARGEBACK,
        )
    assert (balance.available_micros, balance.held_micros, balance.debt_micros) == (
        0,
        10 * IDR,
        90 * IDR,
    )
    assert await reversal_postings(engine, account_id) == [
        ("available", -10 * IDR),
        ("debt", -90 * IDR),
        ("payments:xendit", 100 * IDR),
    ]
    # Suspended by billing, for the debt; its keys stop working at once.
    account = await ledger.get_account(engine, account_id)
    assert account.disabled_at is not None
    assert account.disabled_by == postings.DEBT_SUSPENSION
    assert "chargeback" in account.disabled_reason
    with pytest.raises(Unauthenticated):
        await money.authenticate(api_key)
    with pytest.raises(FailedPrecondition, match="disabled"):
        await money.place_hold(account_id, IDR, f"after-{account_id}")
    # The hold placed before still settles; what it frees stays the customer's.
    await money.release(open_hold.id)
    after = await ledger.get_balance(engine, account_id)
    assert (after.available_micros, after.debt_micros) == (10 * IDR, 90 * IDR)
    # A warning an operator can act on (no key in it), and a metric.
    warning = next(r for r in caplog.records if "debt recorded" in r.getMessage())
    logged = warning.__dict__["fields"]
    assert (logged["account_id"], logged["amount_micros"], logged["owed_micros"]) == (
        account_id,
        100 * IDR,
        90 * IDR,
    )
    assert api_key not in caplog.text
    assert metrics.DEBTS_RECORDED.labels("chargeback")._value.get() == debts_before + 1
    # The statement shows the reversal with what it left owed (the release is
    # not on it: holds move money only between available and held).
    entry = (await ledger.list_ledger(engine, account_id, 1))[0]
    assert (entry.kind, entry.amount_micros, entry.debt_change_micros) == (
        "reversal",
        -10 * IDR,
        90 * IDR,
    )


async def test_a_top_up_repays_the_debt_first_and_lifts_the_suspension(
    engine: AsyncEngine, money: Money
) -> None:
    account_id, api_key = await paid_account(engine, money, 50 * IDR)
    await spend(money, account_id, 50 * IDR)
    await money.reverse_top_up(
        account_id, 50 * IDR, idempotency_key=f"rev-{account_id}", rail="midtrans", reason=REFUND
    )
    # Part of the debt: still suspended, nothing available.
    partly = await money.top_up(account_id, 20 * IDR, idempotency_key="pay-1", rail="midtrans")
    assert (partly.available_micros, partly.debt_micros) == (0, 30 * IDR)
    assert (await ledger.get_account(engine, account_id)).disabled_by == postings.DEBT_SUSPENSION
    with pytest.raises(Unauthenticated):
        await money.authenticate(api_key)
    # The rest of it and more: the debt is paid, the keys work again.
    paid = await money.top_up(account_id, 45 * IDR, idempotency_key="pay-2", rail="midtrans")
    assert (paid.available_micros, paid.debt_micros) == (15 * IDR, 0)
    account = await ledger.get_account(engine, account_id)
    assert (account.disabled_at, account.disabled_by, account.disabled_reason) == (None, "", "")
    assert (await money.authenticate(api_key)).account_id == account_id
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT p.account, p.amount_micros FROM billing.transactions t"
                " JOIN billing.postings p ON p.transaction_id = t.id"
                " WHERE t.idempotency_key IN ('topup:pay-1', 'topup:pay-2')"
                " ORDER BY t.id, p.account"
            )
        )
        legs = [(r.account, r.amount_micros) for r in rows]
    assert legs == [
        ("debt", 20 * IDR),
        ("payments:midtrans", -20 * IDR),
        ("available", 15 * IDR),
        ("debt", 30 * IDR),
        ("payments:midtrans", -45 * IDR),
    ]
    # Both repayments are on the statement, the first with no change of balance.
    newest = await ledger.list_ledger(engine, account_id, 2)
    assert [(e.kind, e.amount_micros, e.debt_change_micros) for e in newest] == [
        ("topup", 15 * IDR, -30 * IDR),
        ("topup", 0, -20 * IDR),
    ]


async def test_promotions_do_not_repay_debt(engine: AsyncEngine, money: Money) -> None:
    account_id, _ = await paid_account(engine, money, 10 * IDR)
    await spend(money, account_id, 10 * IDR)
    await money.reverse_top_up(
        account_id, 10 * IDR, idempotency_key=f"rev-{account_id}", rail="midtrans", reason=REFUND
    )
    promoted = await money.promote(
        account_id, 5 * IDR, idempotency_key=f"promo-{account_id}", description="welcome"
    )
    assert (promoted.available_micros, promoted.debt_micros) == (5 * IDR, 10 * IDR)
    assert (await ledger.get_account(engine, account_id)).disabled_by == postings.DEBT_SUSPENSION


async def test_an_operators_disable_is_neither_taken_over_nor_lifted(
    engine: AsyncEngine, money: Money
) -> None:
    # Disabled by an operator first: the reversal's debt does not make it billing's.
    first, key_1 = await paid_account(engine, money, 10 * IDR)
    await spend(money, first, 10 * IDR)
    await ledger.set_account_disabled(engine, first, disabled=True, reason="fraud review")
    await money.reverse_top_up(
        first, 10 * IDR, idempotency_key=f"rev-{first}", rail="midtrans", reason=CHARGEBACK
    )
    await money.top_up(first, 10 * IDR, idempotency_key=f"repay-{first}", rail="midtrans")
    account = await ledger.get_account(engine, first)
    assert (account.disabled_reason, account.disabled_by) == ("fraud review", "")
    assert (await ledger.get_balance(engine, first)).debt_micros == 0
    with pytest.raises(Unauthenticated):
        await money.authenticate(key_1)
    # Suspended for debt, then disabled by an operator: the disable is theirs now.
    second, key_2 = await paid_account(engine, money, 10 * IDR)
    await spend(money, second, 10 * IDR)
    await money.reverse_top_up(
        second, 10 * IDR, idempotency_key=f"rev-{second}", rail="midtrans", reason=REFUND
    )
    operator = "usr_" + "A" * 20
    await ledger.set_account_disabled(
        engine, second, disabled=True, reason="repeated chargebacks", operator=operator
    )
    await money.top_up(second, 10 * IDR, idempotency_key=f"repay-{second}", rail="midtrans")
    account = await ledger.get_account(engine, second)
    assert (account.disabled_reason, account.disabled_by) == ("repeated chargebacks", operator)
    with pytest.raises(Unauthenticated):
        await money.authenticate(key_2)


async def test_a_repeat_moves_nothing_and_another_input_is_a_conflict(
    engine: AsyncEngine, money: Money
) -> None:
    account_id, _ = await paid_account(engine, money, 100 * IDR)
    key = f"midtrans:{account_id}:refund"

    async def reverse(
        amount: int = 40 * IDR,
        rail: str = "midtrans",
        reason: ReversalReason = REFUND,
        description: str = "r",
    ) -> ledger.Balance:
        return await money.reverse_top_up(
            account_id,
            amount,
            idempotency_key=key,
            rail=rail,
            reason=reason,
            description=description,
        )

    first = await reverse()
    again = await reverse()
    assert first == again
    assert first.available_micros == 60 * IDR
    for changed in (
        reverse(41 * IDR),
        reverse(rail="xendit"),
        reverse(reason=CHARGEBACK),
        reverse(description="other"),
    ):
        with pytest.raises(IdempotencyConflict):
            await changed
    with pytest.raises(IdempotencyConflict):
        await money.reverse_top_up(
            await funded_account(engine, money, 50 * IDR),
            40 * IDR,
            idempotency_key=key,
            rail="midtrans",
            reason=REFUND,
            description="r",
        )
    # Keys are per kind: a top-up's key of the same text is another key.
    await money.top_up(account_id, IDR, idempotency_key=key, rail="midtrans")
    assert (await ledger.get_balance(engine, account_id)).available_micros == 61 * IDR
    assert len(await reversal_postings(engine, account_id)) == 2


async def test_concurrent_duplicate_reversals_move_the_money_once(
    engine: AsyncEngine, money: Money
) -> None:
    account_id, _ = await paid_account(engine, money, 30 * IDR)
    await spend(money, account_id, 20 * IDR)
    results = await asyncio.gather(
        *(
            money.reverse_top_up(
                account_id,
                30 * IDR,
                idempotency_key=f"dup-{account_id}",
                rail="midtrans",
                reason=CHARGEBACK,
            )
            for _ in range(2)
        )
    )
    assert {(r.available_micros, r.debt_micros) for r in results} == {(0, 20 * IDR)}
    assert await reversal_postings(engine, account_id) == [
        ("available", -10 * IDR),
        ("debt", -20 * IDR),
        ("payments:midtrans", 30 * IDR),
    ]


async def test_concurrent_reversals_and_repayments_keep_the_debt_exact(
    engine: AsyncEngine, money: Money
) -> None:
    """Different keys at once: each reads the row as the one before left it."""
    account_id, _ = await paid_account(engine, money, 10 * IDR)
    await spend(money, account_id, 10 * IDR)
    await asyncio.gather(
        *(
            money.reverse_top_up(
                account_id, IDR, idempotency_key=f"many-{account_id}-{i}", rail="m", reason=REFUND
            )
            for i in range(6)
        ),
        *(
            money.top_up(account_id, IDR, idempotency_key=f"pay-{account_id}-{i}", rail="m")
            for i in range(4)
        ),
    )
    balance = await ledger.get_balance(engine, account_id)
    # 6 reversed, 4 paid: whatever the order, 2 owed and nothing available (a
    # top-up that came first was taken back by a later reversal).
    assert (balance.available_micros, balance.debt_micros) == (0, 2 * IDR)
    assert (await ledger.get_account(engine, account_id)).disabled_by == postings.DEBT_SUSPENSION


async def test_refused_reversals(engine: AsyncEngine, money: Money) -> None:
    account_id = await funded_account(engine, money, 10 * IDR)
    for amount, key, rail in ((0, "k", "m"), (-IDR, "k", "m"), (IDR, "", "m"), (IDR, "k", "a b")):
        with pytest.raises(InvalidArgument):
            await money.reverse_top_up(
                account_id, amount, idempotency_key=key, rail=rail, reason=REFUND
            )
    with pytest.raises(NotFound):
        await money.reverse_top_up(
            "acct_" + "Z" * 20, IDR, idempotency_key="nobody", rail="m", reason=REFUND
        )
    assert (await ledger.get_balance(engine, account_id)).available_micros == 10 * IDR


async def test_over_grpc_with_debt_on_the_balance_and_the_statement(
    engine: AsyncEngine, money: Money, stub: billing_pb2_grpc.BillingStub
) -> None:
    account_id, _ = await paid_account(engine, money, 10 * IDR)
    await spend(money, account_id, 4 * IDR)
    request = billing_pb2.ReverseTopUpRequest(
        account_id=account_id,
        amount_micros=10 * IDR,
        idempotency_key=f"grpc-{account_id}",
        payment_rail="midtrans",
        reason=billing_pb2.ReverseTopUpRequest.CHARGEBACK,
        description="Chargeback of top-up ord_1",
    )
    reply = await stub.ReverseTopUp(request)
    assert (reply.available_micros, reply.debt_micros) == (0, 4 * IDR)
    balance = await stub.GetAccountBalance(
        billing_pb2.GetAccountBalanceRequest(account_id=account_id)
    )
    assert balance.debt_micros == 4 * IDR
    info = await stub.GetAccount(billing_pb2.GetAccountRequest(account_id=account_id))
    assert info.disabled_by == postings.DEBT_SUSPENSION and info.disabled_at_unix > 0
    page = await stub.ListLedger(billing_pb2.ListLedgerRequest(account_id=account_id, limit=1))
    entry = page.entries[0]
    assert (entry.kind, entry.amount_micros, entry.debt_change_micros) == (
        "reversal",
        -6 * IDR,
        4 * IDR,
    )
    no_reason = billing_pb2.ReverseTopUpRequest(
        account_id=account_id, amount_micros=IDR, idempotency_key="no-reason"
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.ReverseTopUp(no_reason)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "reason" in (refused.value.details() or "")
    request.amount_micros = 9 * IDR
    with pytest.raises(grpc.aio.AioRpcError) as conflict:
        await stub.ReverseTopUp(request)
    assert conflict.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_liabilities_count_debt_apart(
    database_url: str, engine: AsyncEngine, money: Money
) -> None:
    before = await asyncio.to_thread(audit.liabilities, database_url)
    account_id, _ = await paid_account(engine, money, 10 * IDR)
    await spend(money, account_id, 7 * IDR)
    await money.reverse_top_up(
        account_id, 10 * IDR, idempotency_key=f"owed-{account_id}", rail="m", reason=REFUND
    )
    after = await asyncio.to_thread(audit.liabilities, database_url)
    assert after.debt_micros - before.debt_micros == 7 * IDR
    assert after.net_micros == after.owed_micros - after.debt_micros
    assert "debt" not in after.system


async def test_verify_finds_a_cached_debt_its_postings_do_not_explain(
    database_url: str, engine: AsyncEngine, money: Money
) -> None:
    account_id, _ = await paid_account(engine, money, 5 * IDR)
    await spend(money, account_id, 5 * IDR)
    await money.reverse_top_up(
        account_id, 5 * IDR, idempotency_key=f"drift-{account_id}", rail="m", reason=REFUND
    )
    drift = "UPDATE billing.accounts SET debt_micros = debt_micros + :d WHERE id = :id"
    async with engine.begin() as conn:
        await conn.execute(text(drift), {"d": 1, "id": account_id})
    try:
        verdict = await asyncio.to_thread(audit.verify, database_url)
    finally:
        async with engine.begin() as conn:
            await conn.execute(text(drift), {"d": -1, "id": account_id})
    assert verdict.differences == [
        {
            "check": "cached_debt",
            "ledger_account": f"customer:{account_id}:debt",
            "cached_owed_idr": "5.000001",
            "owed_by_postings_idr": "5",
            "difference_idr": "0.000001",
        }
    ]


async def test_the_schema_keeps_billings_suspension_to_accounts_that_owe(
    engine: AsyncEngine, money: Money
) -> None:
    account_id = await funded_account(engine, money, IDR)
    for statement in (
        "UPDATE billing.accounts SET debt_micros = -1 WHERE id = :id",
        "UPDATE billing.accounts SET disabled_at = now(), disabled_reason = 'x',"
        " disabled_by = 'billing:debt' WHERE id = :id",
        "UPDATE billing.accounts SET low_balance_threshold_micros = 0 WHERE id = :id",
        "UPDATE billing.accounts SET low_balance_alerted_at = now() WHERE id = :id",
    ):
        with pytest.raises(Exception, match="violates check constraint"):
            async with engine.begin() as conn:
                await conn.execute(text(statement), {"id": account_id})


async def test_many_rounds_of_racing_reversals_and_top_ups_stay_exact(
    engine: AsyncEngine, money: Money
) -> None:
    """Forty accounts, each with twelve reversals and twelve top-ups at once.
    Before credits and reversals locked the row in a statement of their own,
    this failed within a few rounds: a statement's CTE read an older balance or
    debt than its UPDATE wrote against, and a CHECK refused the result."""
    for round_ in range(40):
        account_id, _ = await paid_account(engine, money, 10 * IDR)
        await spend(money, account_id, 10 * IDR)
        await asyncio.gather(
            *(
                money.reverse_top_up(
                    account_id,
                    IDR,
                    idempotency_key=f"race-{account_id}-{i}",
                    rail="m",
                    reason=REFUND,
                )
                for i in range(12)
            ),
            *(
                money.top_up(account_id, IDR, idempotency_key=f"repay-{account_id}-{i}", rail="m")
                for i in range(12)
            ),
        )
        balance = await ledger.get_balance(engine, account_id)
        # As many back as in: nothing owed and nothing left, whatever the order.
        assert (balance.available_micros, balance.debt_micros) == (0, 0), round_
