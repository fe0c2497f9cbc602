"""The payment gateways' adapters against scripted HTTP answers: what each
reads from a status answer, and the times each gateway writes."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from services.payments import gateways
from services.payments.config import GatewaySettings
from services.payments.rules import Confirmed, Fee

MICROS = 1_000_000


def test_midtrans_times_are_jakarta_time() -> None:
    paid = gateways.midtrans_time("2026-12-03 17:00:00")
    assert paid == datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
    assert gateways.midtrans_time("2026-12-03T17:00:00Z") is None
    assert gateways.midtrans_time(None) is None


def test_xendit_times_carry_their_zone() -> None:
    assert gateways.iso_time("2026-12-03T10:00:00.000Z") == datetime(2026, 12, 3, 10, tzinfo=UTC)
    assert gateways.iso_time("2026-12-03 10:00:00") is None  # no zone: not Xendit's
    assert gateways.iso_time(7) is None


def _midtrans(answer: dict[str, Any], status: int = 200) -> gateways.Midtrans:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"].startswith("Basic ")
        return httpx.Response(status, json=answer)

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    settings = GatewaySettings(
        "midtrans",
        Fee(0, Decimal(0)),
        {"snap": "http://snap", "api": "http://api"},
        {"server_key": "k"},
    )
    return gateways.Midtrans(settings, client)


async def test_a_midtrans_settlement_is_paid_with_its_amount_and_time() -> None:
    midtrans = _midtrans(
        {
            "status_code": "200",
            "order_id": "top_x",
            "transaction_status": "settlement",
            "fraud_status": "accept",
            "gross_amount": "50000.00",
            "payment_type": "qris",
            "settlement_time": "2026-12-03 17:00:00",
        }
    )
    confirmed = await midtrans.confirm("top_x", "")
    assert confirmed.state is Confirmed.PAID and confirmed.amount_micros == 50_000 * MICROS
    assert confirmed.method == "qris"
    assert confirmed.paid_at == datetime(2026, 12, 3, 10, tzinfo=UTC)


async def test_midtrans_before_a_method_is_chosen_is_unpaid() -> None:
    # Midtrans answers this with HTTP 404, or 200 and the code in the body.
    for status in (404, 200):
        midtrans = _midtrans({"status_code": "404", "status_message": "not found"}, status)
        assert (await midtrans.confirm("top_x", "")).state is Confirmed.UNPAID


async def test_an_answer_about_another_order_is_not_believed() -> None:
    midtrans = _midtrans(
        {"status_code": "200", "order_id": "top_other", "transaction_status": "settlement"}
    )
    with pytest.raises(gateways.GatewayUnavailable):
        await midtrans.confirm("top_x", "")


async def test_midtrans_errors_are_unavailable_or_refused() -> None:
    with pytest.raises(gateways.GatewayUnavailable):
        await _midtrans({"status_code": "500"}, 500).confirm("top_x", "")
    with pytest.raises(gateways.GatewayRefused):
        await _midtrans({"status_code": "401"}, 401).confirm("top_x", "")
