"""The payment order's pure rules: the state machine, the gateways' statuses,
notification trust, amounts and fees, the receipt's arithmetic."""

from __future__ import annotations

import hashlib
from decimal import Decimal

import pytest

from services.payments import rules
from services.payments.rules import Confirmed, Fee, Limits, Money, OrderStatus, PaymentError

S = OrderStatus


@pytest.mark.parametrize(
    ("current", "confirmed", "status", "money"),
    [
        (S.AWAITING_PAYMENT, Confirmed.PENDING, S.PENDING, Money.NONE),
        (S.PENDING, Confirmed.PAID, S.PAID, Money.CREDIT),
        (S.AWAITING_PAYMENT, Confirmed.PAID, S.PAID, Money.CREDIT),
        # The person's money arrived after we gave up on it: credit it.
        (S.EXPIRED, Confirmed.PAID, S.PAID, Money.CREDIT),
        (S.CANCELLED, Confirmed.PAID, S.PAID, Money.CREDIT),
        (S.PENDING, Confirmed.EXPIRED, S.EXPIRED, Money.NONE),
        (S.PENDING, Confirmed.CANCELLED, S.CANCELLED, Money.NONE),
        (S.PENDING, Confirmed.DENIED, S.FAILED, Money.NONE),
        (S.PAID, Confirmed.REFUNDED, S.REFUNDED, Money.REVERSE),
        (S.PAID, Confirmed.CHARGED_BACK, S.CHARGED_BACK, Money.REVERSE),
        # Stale or repeated answers never move an order back, nor pay twice.
        (S.PAID, Confirmed.PAID, S.PAID, Money.NONE),
        (S.PAID, Confirmed.PENDING, S.PAID, Money.NONE),
        (S.PAID, Confirmed.EXPIRED, S.PAID, Money.NONE),
        (S.REFUNDED, Confirmed.PAID, S.REFUNDED, Money.NONE),
        (S.REFUNDED, Confirmed.REFUNDED, S.REFUNDED, Money.NONE),
        (S.EXPIRED, Confirmed.PENDING, S.EXPIRED, Money.NONE),
        (S.AWAITING_PAYMENT, Confirmed.UNPAID, S.AWAITING_PAYMENT, Money.NONE),
        # Refunds only follow a payment.
        (S.PENDING, Confirmed.REFUNDED, S.PENDING, Money.NONE),
    ],
)
def test_the_order_state_machine(
    current: OrderStatus, confirmed: Confirmed, status: OrderStatus, money: Money
) -> None:
    step = rules.next_step(current, confirmed)
    assert (step.status, step.money, step.flag) == (status, money, "")


def test_money_moves_only_on_the_transitions_into_paid_and_out_of_it() -> None:
    for (current, _confirmed), (status, money) in rules.TRANSITIONS.items():
        if money is Money.CREDIT:
            assert status is S.PAID and current is not S.PAID
        if money is Money.REVERSE:
            assert current is S.PAID and status in (S.REFUNDED, S.CHARGED_BACK)


@pytest.mark.parametrize("confirmed", [Confirmed.PARTIALLY_REFUNDED, Confirmed.UNKNOWN])
def test_what_no_rule_decides_is_flagged_for_an_operator(confirmed: Confirmed) -> None:
    step = rules.next_step(S.PAID, confirmed)
    assert step.status is S.PAID and step.money is Money.NONE and step.flag


@pytest.mark.parametrize(
    ("status", "fraud", "expected"),
    [
        ("settlement", "", Confirmed.PAID),
        ("capture", "accept", Confirmed.PAID),
        ("capture", "challenge", Confirmed.PENDING),
        ("capture", "deny", Confirmed.DENIED),
        ("pending", "", Confirmed.PENDING),
        ("expire", "", Confirmed.EXPIRED),
        ("cancel", "", Confirmed.CANCELLED),
        ("deny", "", Confirmed.DENIED),
        ("refund", "", Confirmed.REFUNDED),
        ("chargeback", "", Confirmed.CHARGED_BACK),
        ("partial_refund", "", Confirmed.PARTIALLY_REFUNDED),
        ("something_new", "", Confirmed.UNKNOWN),
    ],
)
def test_midtrans_statuses(status: str, fraud: str, expected: Confirmed) -> None:
    assert rules.midtrans_state(status, fraud) is expected


def test_xendit_statuses() -> None:
    assert rules.xendit_state("PAID") is Confirmed.PAID
    assert rules.xendit_state("SETTLED") is Confirmed.PAID
    assert rules.xendit_state("EXPIRED") is Confirmed.EXPIRED
    assert rules.xendit_state("PENDING") is Confirmed.UNPAID
    assert rules.xendit_state("paid") is Confirmed.UNKNOWN


def _signed(server_key: str, **body: str) -> dict[str, object]:
    raw = body["order_id"] + body["status_code"] + body["gross_amount"] + server_key
    return {**body, "signature_key": hashlib.sha512(raw.encode()).hexdigest()}


def test_a_midtrans_signature_is_checked_over_the_amount_exactly_as_sent() -> None:
    body = _signed("SB-key", order_id="top_1", status_code="200", gross_amount="50000.00")
    assert rules.midtrans_signature_ok(body, "SB-key")
    assert not rules.midtrans_signature_ok(body, "SB-other")
    # The same amount written differently is a different signature.
    assert not rules.midtrans_signature_ok({**body, "gross_amount": "50000"}, "SB-key")
    assert not rules.midtrans_signature_ok({**body, "gross_amount": "50001.00"}, "SB-key")
    assert not rules.midtrans_signature_ok({**body, "status_code": "201"}, "SB-key")
    missing = {k: v for k, v in body.items() if k != "signature_key"}
    assert not rules.midtrans_signature_ok(missing, "SB-key")
    assert not rules.midtrans_signature_ok({**body, "order_id": 7}, "SB-key")
    assert not rules.midtrans_signature_ok(body, "")


def test_a_xendit_callback_token_must_match() -> None:
    assert rules.xendit_token_ok("tok-123", "tok-123")
    assert not rules.xendit_token_ok("tok-124", "tok-123")
    assert not rules.xendit_token_ok(None, "tok-123")
    assert not rules.xendit_token_ok("", "")


@pytest.mark.parametrize(
    ("value", "micros"),
    [("50000.00", 50_000_000_000), (50000, 50_000_000_000), ("0.5", 500_000), (1.25, 1_250_000)],
)
def test_gateway_amounts(value: object, micros: int) -> None:
    assert rules.gateway_amount_micros(value) == micros


@pytest.mark.parametrize("value", ["abc", None, True, "-1", "NaN", "1e30", "0.0000001"])
def test_unreadable_gateway_amounts_are_none(value: object) -> None:
    assert rules.gateway_amount_micros(value) is None


def test_limits_and_fees() -> None:
    limits = Limits(10_000 * rules.MICROS, 1_000_000 * rules.MICROS)
    assert limits.check(10_000 * rules.MICROS) == 10_000 * rules.MICROS
    with pytest.raises(PaymentError, match="at least 10000"):
        limits.check(9_999 * rules.MICROS)
    with pytest.raises(PaymentError, match="at most 1000000"):
        limits.check(1_000_001 * rules.MICROS)
    # 0.7% of Rp 50.001 is Rp 350,007: rounded up to Rp 351, plus Rp 4.000.
    fee = Fee(4_000, Decimal("0.7"))
    assert fee.of(50_001 * rules.MICROS) == 4_351 * rules.MICROS
    assert Fee(0, Decimal(0)).of(50_000 * rules.MICROS) == 0


def test_order_ids_and_billing_keys() -> None:
    ids = {rules.new_order_id() for _ in range(1000)}
    assert len(ids) == 1000
    for order_id in ids:
        assert rules.check_order_id(order_id) == order_id
        assert len(order_id) <= 50  # Midtrans' limit on order_id
    with pytest.raises(PaymentError):
        rules.check_order_id("top_short")
    credit = rules.billing_key("midtrans", "top_x", Money.CREDIT)
    reversal = rules.billing_key("midtrans", "top_x", Money.REVERSE)
    assert credit == "midtrans:top_x" and reversal != credit
    assert rules.billing_key("xendit", "top_x", Money.CREDIT) != credit


@pytest.mark.parametrize(
    ("total", "rate_bp", "dpp", "ppn"),
    [
        (111_000, 1100, 100_000, 11_000),
        (50_000, 1100, 45_045, 4_955),
        (50_000, 0, 50_000, 0),
        (1, 1100, 1, 0),
    ],
)
def test_ppn_inside_a_total(total: int, rate_bp: int, dpp: int, ppn: int) -> None:
    assert rules.ppn_split(total * rules.MICROS, rate_bp) == (
        dpp * rules.MICROS,
        ppn * rules.MICROS,
    )


@pytest.mark.parametrize(
    ("n", "words"),
    [
        (0, "nol"),
        (11, "sebelas"),
        (15, "lima belas"),
        (100, "seratus"),
        (1000, "seribu"),
        (10_000, "sepuluh ribu"),
        (50_000, "lima puluh ribu"),
        (111_000, "seratus sebelas ribu"),
        (1_500_250, "satu juta lima ratus ribu dua ratus lima puluh"),
        (2_000_000_000, "dua miliar"),
    ],
)
def test_terbilang(n: int, words: str) -> None:
    assert rules.terbilang(n) == words
