"""Settling orders against what their gateway confirms: the service's own
guarantees, with billing and the gateway scripted (billing's idempotency and
the real gateways' protocols have tests of their own)."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from services.payments import rules
from services.payments.gateways import Confirmation
from services.payments.rules import Confirmed, OrderStatus
from services.payments.service import NotFound, Unavailable

from .conftest import MICROS, LedgerRefused, LedgerUnavailable, World


def account() -> str:
    alphabet = rules.ORDER_ID_ALPHABET
    return "acct_" + "".join(secrets.choice(alphabet) for _ in range(20))


def paid(amount_idr: int, method: str = "qris") -> Confirmation:
    return Confirmation(Confirmed.PAID, "settlement", amount_idr * MICROS, method)


async def test_an_order_gets_its_fee_and_payment_page(world: World) -> None:
    order = await world.payments.create_order(account(), 50_000 * MICROS, "", "a@b.c", "A")
    assert order.status is OrderStatus.AWAITING_PAYMENT
    assert (order.amount_micros, order.fee_micros) == (50_000 * MICROS, 1_000 * MICROS)
    assert order.payment_url.endswith(order.id) and order.gateway_ref == f"ref-{order.id}"


async def test_a_gateway_that_makes_no_page_fails_the_order(world: World) -> None:
    world.gateway.fail_create = True
    who = account()
    with pytest.raises(Unavailable):
        await world.payments.create_order(who, 50_000 * MICROS, "midtrans", "", "")
    orders, _ = await world.payments.list_orders(who, 10, "", "", False)
    assert [o.status for o in orders] == [OrderStatus.FAILED]


async def test_refusals_name_the_field(world: World) -> None:
    with pytest.raises(rules.PaymentError) as low:
        await world.payments.create_order(account(), 9_999 * MICROS, "", "", "")
    assert low.value.field == "amount_idr"
    with pytest.raises(rules.PaymentError) as gateway:
        world.payments.quote(50_000 * MICROS, "paypal")
    assert gateway.value.field == "gateway"
    with pytest.raises(NotFound):
        await world.payments.get_order("top_" + "0" * 20, None)


async def test_many_settles_at_once_credit_once(world: World) -> None:
    order = await world.payments.create_order(account(), 20_000 * MICROS, "", "", "")
    world.gateway.states[order.id] = paid(21_000)  # amount + fee
    results = await asyncio.gather(*(world.payments.settle(order.id) for _ in range(10)))
    assert any(r is not None and r.credited_at for r in results)
    assert world.ledger.credits == [f"midtrans:{order.id}"]
    # And again later: nothing more.
    await world.payments.settle(order.id)
    assert world.ledger.credits == [f"midtrans:{order.id}"]


async def test_a_confirmed_amount_that_differs_is_flagged_not_credited(world: World) -> None:
    order = await world.payments.create_order(account(), 20_000 * MICROS, "", "", "")
    world.gateway.states[order.id] = paid(20_000)  # the fee is missing
    settled = await world.payments.settle(order.id)
    assert settled is not None
    assert settled.flag == "amount_mismatch" and settled.status is OrderStatus.AWAITING_PAYMENT
    assert world.ledger.credits == []
    findings, _ = await world.payments.reconcile(apply=True, limit=100)
    mine = [f for f in findings if f.order.id == order.id]
    assert [(f.problem, f.action) for f in mine] == [("flagged: amount_mismatch", "none")]
    flagged, _ = await world.payments.list_orders(None, 100, "", "", True)
    assert order.id in {o.id for o in flagged}


async def test_billing_away_leaves_the_credit_owed_until_it_is_back(world: World) -> None:
    order = await world.payments.create_order(account(), 30_000 * MICROS, "", "", "")
    world.gateway.states[order.id] = paid(31_000)
    world.ledger.fail = LedgerUnavailable("UNAVAILABLE")
    settled = await world.payments.settle(order.id)
    assert settled is not None and settled.status is OrderStatus.PAID
    assert settled.credited_at is None and settled.owes_credit
    world.ledger.fail = None
    await world.payments.sweep_once()
    assert world.ledger.credits == [f"midtrans:{order.id}"]


async def test_a_billing_refusal_is_flagged_for_an_operator(world: World) -> None:
    order = await world.payments.create_order(account(), 30_000 * MICROS, "", "", "")
    world.gateway.states[order.id] = paid(31_000)
    world.ledger.fail = LedgerRefused("FAILED_PRECONDITION: key reused")
    settled = await world.payments.settle(order.id)
    assert settled is not None and settled.flag == "ledger_refused" and settled.owes_credit


async def test_refund_and_chargeback_are_taken_back_once(world: World) -> None:
    refunded = await world.payments.create_order(account(), 10_000 * MICROS, "", "", "")
    world.gateway.states[refunded.id] = paid(11_000)
    await world.payments.settle(refunded.id)
    world.gateway.states[refunded.id] = Confirmation(Confirmed.REFUNDED, "refund", 11_000 * MICROS)
    for _ in range(3):
        await world.payments.settle(refunded.id)
    assert world.ledger.reversals == [(f"midtrans:{refunded.id}:reversal", False)]
    charged = await world.payments.create_order(account(), 10_000 * MICROS, "", "", "")
    # Paid and charged back before we ever heard of it: credited, then taken back.
    world.gateway.states[charged.id] = paid(11_000)
    await world.payments.settle(charged.id)
    world.gateway.states[charged.id] = Confirmation(
        Confirmed.CHARGED_BACK, "chargeback", 11_000 * MICROS
    )
    settled = await world.payments.settle(charged.id)
    assert settled is not None and settled.status is OrderStatus.CHARGED_BACK
    assert settled.reversed_micros == 10_000 * MICROS
    assert (f"midtrans:{charged.id}:reversal", True) in world.ledger.reversals


async def test_a_partial_refund_waits_for_an_operator(world: World) -> None:
    order = await world.payments.create_order(account(), 10_000 * MICROS, "", "", "")
    world.gateway.states[order.id] = paid(11_000)
    await world.payments.settle(order.id)
    world.gateway.states[order.id] = Confirmation(
        Confirmed.PARTIALLY_REFUNDED, "partial_refund", 11_000 * MICROS
    )
    settled = await world.payments.settle(order.id)
    assert settled is not None and settled.flag == "partial_refund"
    assert settled.status is OrderStatus.PAID and world.ledger.reversals == []


async def test_reconcile_finds_a_payment_we_never_heard_of_and_applies_it(world: World) -> None:
    order = await world.payments.create_order(account(), 40_000 * MICROS, "", "", "")
    world.gateway.states[order.id] = paid(41_000)
    findings, checked = await world.payments.reconcile(apply=False, limit=500)
    mine = [f for f in findings if f.order.id == order.id]
    assert checked >= 1 and [f.action for f in mine] == ["none"]
    assert "gateway says paid" in mine[0].problem
    assert world.ledger.credits == []
    findings, _ = await world.payments.reconcile(apply=True, limit=500)
    assert [f.action for f in findings if f.order.id == order.id] == ["settled"]
    assert world.ledger.credits == [f"midtrans:{order.id}"]


async def test_notifications_are_recorded_only_when_authentic(world: World) -> None:
    order = await world.payments.create_order(account(), 10_000 * MICROS, "", "", "")
    refused = await world.payments.notification("midtrans", {}, {"order_id": order.id})
    assert refused == (401, "signature or token does not verify")
    assert (await world.payments.notification("xendit", {}, {}))[0] == 404
    world.gateway.states[order.id] = paid(11_000)
    headers = {"x-test-secret": world.gateway.secret}
    assert await world.payments.notification("midtrans", headers, {"order_id": order.id}) == (
        200,
        "recorded",
    )
    unknown = await world.payments.notification("midtrans", headers, {"order_id": "top_nobody"})
    assert unknown == (200, "recorded")
    await world.payments.drain(5)
    assert world.ledger.credits == [f"midtrans:{order.id}"]


async def test_listing_is_per_account_and_pages(world: World) -> None:
    who = account()
    made = [await world.payments.create_order(who, 10_000 * MICROS, "", "", "") for _ in range(3)]
    await world.payments.create_order(account(), 10_000 * MICROS, "", "", "")
    first, cursor = await world.payments.list_orders(who, 2, "", "", False)
    rest, end = await world.payments.list_orders(who, 2, cursor, "", False)
    assert [o.id for o in first + rest] == [o.id for o in reversed(made)] and end == ""
    with pytest.raises(rules.PaymentError):
        await world.payments.list_orders(account(), 2, cursor, "", False)  # not its order
