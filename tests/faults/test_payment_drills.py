"""Top-ups under failure: two payments replicas, the payment sandbox notifying
through the edge, and the faults a payment gateway's notifications meet in
production. After each drill every paid order is credited exactly once and
nothing else is; the stack's ledger check (aiportctl ledger verify) runs when
it stops. (Its own stack; it restarts none of the machine's shared services.)"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import httpx
import psycopg
import pytest
from aiport.v1 import billing_pb2, billing_pb2_grpc

from services.common import service_auth
from tests.faults.conftest import FaultStack, fault_stack
from tests.support.payments import midtrans_signed, topup_credits

MICROS = 1_000_000
SETTLE_SECONDS = 30.0


@pytest.fixture(scope="module")
def paying() -> Iterator[FaultStack]:
    extra = {"AIPORT_PAYMENTS_SWEEP_SECONDS": "1", "AIPORT_PAYMENTS_RECHECK_SECONDS": "2"}
    with fault_stack(replicas=2, extra_env=extra) as stack:
        yield stack


def payer(faults: FaultStack) -> tuple[str, httpx.Client]:
    config = faults.stack.config
    with grpc.insecure_channel(config.billing_addr) as chan:
        billing = billing_pb2_grpc.BillingStub(service_auth.with_token(chan, config.admin_token))
        account_id = billing.CreateAccount(
            billing_pb2.CreateAccountRequest(name="payer"), timeout=10
        ).account_id
        key = billing.CreateApiKey(
            billing_pb2.CreateApiKeyRequest(account_id=account_id, scopes=["inference", "manage"]),
            timeout=10,
        ).api_key
    http = httpx.Client(
        base_url=faults.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )
    return account_id, http


def create(http: httpx.Client, amount: str, gateway: str = "midtrans") -> str:
    """As a client does: a 503 (the gateway still reconnecting to a payments
    service a drill restarted) is tried again."""
    deadline = time.monotonic() + 15
    while True:
        response = http.post("/v1/topups", json={"amount_idr": amount, "gateway": gateway})
        if response.status_code != 503 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def control(faults: FaultStack, path: str, **body: str) -> None:
    response = httpx.post(f"{faults.stack.config.pay_sandbox_url}{path}", json=body, timeout=15)
    assert response.status_code == 200, response.text


def order(faults: FaultStack, order_id: str) -> tuple[str, bool]:
    with psycopg.connect(faults.conninfo) as conn:
        row = conn.execute(
            "SELECT status, credited_at IS NOT NULL FROM payments.orders WHERE id = %s",
            (order_id,),
        ).fetchone()
    assert row is not None
    return str(row[0]), bool(row[1])


def wait_order(faults: FaultStack, order_id: str, expected: tuple[str, bool]) -> None:
    deadline = time.monotonic() + SETTLE_SECONDS
    while (found := order(faults, order_id)) != expected:
        assert time.monotonic() < deadline, found
        time.sleep(0.2)


def credits(faults: FaultStack, account_id: str) -> list[tuple[str, int]]:
    return topup_credits(faults.conninfo, account_id)


def signed_settlement(faults: FaultStack, order_id: str, amount: str) -> dict[str, Any]:
    key = faults.stack.config.payment_sandbox_keys["midtrans_server_key"]
    body = {
        "order_id": order_id,
        "status_code": "200",
        "gross_amount": f"{amount}.00",
        "transaction_status": "settlement",
        "fraud_status": "accept",
    }
    return midtrans_signed(key, body)


def test_the_same_notification_at_both_replicas_at_once_credits_once(paying: FaultStack) -> None:
    account_id, http = payer(paying)
    order_id = create(http, "30000")
    control(paying, f"/_sandbox/midtrans/{order_id}/choose", method="qris")
    # The gateway's status now says settlement; its notification reaches each
    # replica directly, many times, all at once.
    control(paying, f"/_sandbox/midtrans/{order_id}/pay")
    body = signed_settlement(paying, order_id, "30000")
    config = paying.stack.config
    urls = [
        f"http://127.0.0.1:{config.payments_http(name)}/webhooks/midtrans"
        for name in config.replica_names("payments")
    ]
    assert len(urls) == 2
    with ThreadPoolExecutor(16) as pool:
        answers = list(
            pool.map(lambda i: httpx.post(urls[i % 2], json=body, timeout=30), range(32))
        )
    assert {a.status_code for a in answers} == {200}
    wait_order(paying, order_id, ("paid", True))
    time.sleep(2)  # the sweeper's next passes find nothing more to do
    assert credits(paying, account_id) == [(f"topup:midtrans:{order_id}", 30_000 * MICROS)]


def test_notifications_while_billing_is_down_are_credited_when_it_is_back(
    paying: FaultStack,
) -> None:
    account_id, http = payer(paying)
    orders = [create(http, "10000"), create(http, "20000", gateway="xendit")]
    billing = paying.stack.config.replica_names("billing")
    for name in billing:
        paying.stack.kill(name, signal.SIGKILL)
    try:
        control(paying, f"/_sandbox/midtrans/{orders[0]}/pay", method="bca_va")
        with psycopg.connect(paying.conninfo) as conn:
            row = conn.execute(
                "SELECT gateway_ref FROM payments.orders WHERE id = %s", (orders[1],)
            ).fetchone()
        assert row is not None
        control(paying, f"/_sandbox/xendit/{row[0]}/pay", method="QRIS")
        # Verified, recorded and paid, but not credited: billing is away.
        wait_order(paying, orders[0], ("paid", False))
        wait_order(paying, orders[1], ("paid", False))
        assert credits(paying, account_id) == []
    finally:
        for name in billing:
            paying.stack.start_service(name)
    for order_id in orders:
        wait_order(paying, order_id, ("paid", True))
    assert sorted(credits(paying, account_id)) == sorted(
        [
            (f"topup:midtrans:{orders[0]}", 10_000 * MICROS),
            (f"topup:xendit:{orders[1]}", 20_000 * MICROS),
        ]
    )


def test_payments_killed_between_verifying_and_crediting_loses_nothing(paying: FaultStack) -> None:
    """The window between "the gateway confirmed it" and "billing credited it",
    held open by keeping billing away, then every payments process SIGKILLed in
    it: the order's state is durable, and the restarted service credits it once."""
    account_id, http = payer(paying)
    order_id = create(http, "40000")
    billing = paying.stack.config.replica_names("billing")
    payments = paying.stack.config.replica_names("payments")
    for name in billing:
        paying.stack.kill(name, signal.SIGKILL)
    try:
        control(paying, f"/_sandbox/midtrans/{order_id}/pay", method="gopay")
        wait_order(paying, order_id, ("paid", False))
        for name in payments:
            paying.stack.kill(name, signal.SIGKILL)
    finally:
        for name in billing:
            paying.stack.start_service(name)
    assert order(paying, order_id) == ("paid", False)
    for name in payments:
        paying.stack.start_service(name)
    wait_order(paying, order_id, ("paid", True))
    assert credits(paying, account_id) == [(f"topup:midtrans:{order_id}", 40_000 * MICROS)]


def test_a_notification_that_never_arrives_is_found_by_asking_the_gateway(
    paying: FaultStack,
) -> None:
    """Both payments replicas are down through every one of the gateway's
    retries; once back, the sweeper asks the gateway about the open order."""
    account_id, http = payer(paying)
    order_id = create(http, "25000")
    payments = paying.stack.config.replica_names("payments")
    for name in payments:
        paying.stack.kill(name, signal.SIGKILL)
    try:
        control(paying, f"/_sandbox/midtrans/{order_id}/pay", method="shopeepay")
        deliveries = f"{paying.stack.config.pay_sandbox_url}/_sandbox/deliveries"
        deadline = time.monotonic() + SETTLE_SECONDS
        while True:  # the sandbox gave up: every attempt of both notifications failed
            attempts = httpx.get(deliveries, params={"key": order_id}, timeout=10).json()
            if (
                attempts
                and all(a.get("status") not in (200,) for a in attempts)
                and len(attempts) >= 2 * 5
            ):
                break
            assert time.monotonic() < deadline, attempts
            time.sleep(0.5)
    finally:
        for name in payments:
            paying.stack.start_service(name)
    wait_order(paying, order_id, ("paid", True))
    assert credits(paying, account_id) == [(f"topup:midtrans:{order_id}", 25_000 * MICROS)]
