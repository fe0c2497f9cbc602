"""Payments against a fresh database with its schema, with scripted payment
gateways and a recording ledger in place of the outside world and billing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio

from services.common import pg
from services.payments.config import GatewaySettings, PaymentsConfig, ReceiptSettings
from services.payments.gateways import (
    Confirmation,
    GatewayUnavailable,
    NewOrder,
    Notice,
    PaymentPage,
)
from services.payments.migrate import upgrade
from services.payments.rules import Confirmed, Fee, Limits
from services.payments.service import LedgerRefused, LedgerUnavailable, Payments
from services.payments.store import Order
from tests.support.databases import drop_database, fresh_database_url

MICROS = 1_000_000


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    url = fresh_database_url("aiport_test_payments")
    try:
        upgrade(url)
        yield url
    finally:
        drop_database(url)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def pool(database_url: str) -> AsyncIterator[pg.Pool]:
    pool = pg.pool(database_url, "payments-test", min_size=1, max_size=12)
    await pool.open()
    yield pool
    await pool.close()


class ScriptedGateway:
    """Answers what the test says the gateway's API would; counts the questions."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.states: dict[str, Confirmation] = {}
        self.asked = 0
        self.fail_create = False
        self.secret = "s3cret"

    async def create(self, order: NewOrder, public_url: str, notification_url: str) -> PaymentPage:
        if self.fail_create:
            raise GatewayUnavailable(f"{self.name}: HTTP 503")
        return PaymentPage(f"https://pay.example/{order.order_id}", f"ref-{order.order_id}", None)

    async def confirm(self, order_id: str, gateway_ref: str) -> Confirmation:
        self.asked += 1
        return self.states.get(order_id, Confirmation(Confirmed.UNPAID, "not_found", None))

    def authentic(self, headers: dict[str, str], body: dict[str, Any]) -> Notice | None:
        if headers.get("x-test-secret") != self.secret:
            return None
        return Notice(str(body["order_id"]), "", str(body.get("status", "")), None)


@dataclass
class RecordingLedger:
    credits: list[str] = field(default_factory=list)
    reversals: list[tuple[str, bool]] = field(default_factory=list)
    fail: Exception | None = None

    async def credit(self, order: Order, key: str) -> None:
        if self.fail is not None:
            raise self.fail
        self.credits.append(key)

    async def reverse(self, order: Order, key: str, chargeback: bool) -> None:
        if self.fail is not None:
            raise self.fail
        self.reversals.append((key, chargeback))


@dataclass
class World:
    payments: Payments
    gateway: ScriptedGateway
    ledger: RecordingLedger


CONFIG = PaymentsConfig(
    limits=Limits(10_000 * MICROS, 1_000_000 * MICROS),
    default_gateway="midtrans",
    expiry_minutes=60,
    gateways={
        "midtrans": GatewaySettings("midtrans", Fee(1_000, Decimal("0")), {}, {}),
    },
    receipt=ReceiptSettings("PT Uji", "Jakarta", "a@b.c", "", 1100),
    public_url="http://127.0.0.1:8080",
    notification_url="http://127.0.0.1:8080",
)


@pytest.fixture
def world(pool: pg.Pool) -> World:
    gateway = ScriptedGateway("midtrans")
    ledger = RecordingLedger()
    return World(
        Payments(pool, CONFIG, {"midtrans": gateway}, ledger, recheck_seconds=1), gateway, ledger
    )


__all__ = ["MICROS", "LedgerRefused", "LedgerUnavailable", "World"]
