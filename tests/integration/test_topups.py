"""Top-ups end to end: /v1/topups through the edge, the payments service, the
payment sandbox standing in for Midtrans and Xendit (its real protocols), the
notifications back through the edge's /webhooks/, and billing's ledger.

Every drill ends with the same question: was every paid order credited exactly
once, and nothing else? (`credits_of`: the ledger's top-up rows of an account.)
The session's ledger check (aiportctl ledger verify) runs after all of them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg
import pytest
from aiport.v1 import billing_pb2, billing_pb2_grpc

from deploy.local.stack import Stack
from tests.support.payments import midtrans_signed, topup_credits
from tests.support.stack_fixtures import Account, NewAccount, balance_micros

MICROS = 1_000_000
SETTLE_SECONDS = 20.0


@pytest.fixture(scope="module")
def pay_sandbox(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.config.pay_sandbox_url, timeout=15) as c:
        yield c


@pytest.fixture
def payer(
    new_account: NewAccount, billing: billing_pb2_grpc.BillingStub, base_url: str
) -> Iterator[tuple[Account, httpx.Client]]:
    """An account with no money and a client whose key may create top-ups."""
    account = new_account("0")
    key = billing.CreateApiKey(
        billing_pb2.CreateApiKeyRequest(
            account_id=account.account_id, name="pay", scopes=["inference", "manage"]
        )
    )
    with httpx.Client(
        base_url=base_url, headers={"Authorization": f"Bearer {key.api_key}"}, timeout=30
    ) as http:
        yield account, http


def create(http: httpx.Client, amount: str, gateway: str = "midtrans") -> dict[str, Any]:
    response = http.post("/v1/topups", json={"amount_idr": amount, "gateway": gateway})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["object"] == "topup" and body["status"] == "awaiting_payment", body
    return body


def topup(http: httpx.Client, topup_id: str) -> dict[str, Any]:
    response = http.get(f"/v1/topups/{topup_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_status(http: httpx.Client, topup_id: str, status: str) -> dict[str, Any]:
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        body = topup(http, topup_id)
        if body["status"] == status or time.monotonic() > deadline:
            assert body["status"] == status, body
            return body
        time.sleep(0.1)


def wait_order_status(stack: Stack, order_id: str, status: str) -> None:
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        with db(stack) as conn:
            row = conn.execute(
                "SELECT status, reversed_at IS NOT NULL FROM payments.orders WHERE id = %s",
                (order_id,),
            ).fetchone()
        if row == (status, True) or time.monotonic() > deadline:
            assert row == (status, True), row
            return
        time.sleep(0.1)


def conninfo(stack: Stack) -> str:
    return stack.config.database_url.replace("postgresql+psycopg://", "postgresql://")


def db(stack: Stack) -> psycopg.Connection[Any]:
    return psycopg.connect(conninfo(stack))


def credits_of(stack: Stack, account_id: str) -> list[tuple[str, int]]:
    return topup_credits(conninfo(stack), account_id)


def notifications(stack: Stack, order_id: str) -> list[tuple[str, str]]:
    with db(stack) as conn:
        rows = conn.execute(
            "SELECT raw_status, outcome FROM payments.notifications WHERE order_id = %s"
            " ORDER BY id",
            (order_id,),
        ).fetchall()
    return [(str(s), str(o)) for s, o in rows]


def midtrans_pay(pay_sandbox: httpx.Client, order_id: str, method: str = "qris") -> None:
    response = pay_sandbox.post(f"/_sandbox/midtrans/{order_id}/pay", json={"method": method})
    assert response.status_code == 200, response.text


def signed(stack: Stack, body: dict[str, str]) -> dict[str, str]:
    return midtrans_signed(stack.config.payment_sandbox_keys["midtrans_server_key"], body)


def webhook(base_url: str, gateway: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(f"{base_url}/webhooks/{gateway}", json=body, headers=headers, timeout=30)


# The happy paths.


def test_a_midtrans_qris_top_up_credits_the_balance_once(
    stack: Stack,
    payer: tuple[Account, httpx.Client],
    pay_sandbox: httpx.Client,
    billing: billing_pb2_grpc.BillingStub,
) -> None:
    account, http = payer
    quote = http.get("/v1/topups/quote", params={"amount_idr": "50000", "gateway": "midtrans"})
    assert quote.status_code == 200, quote.text
    assert quote.json()["total_idr"] == "50000" and quote.json()["minimum_idr"] == "10000"
    order = create(http, "50000")
    assert order["payment_url"].startswith(stack.config.pay_sandbox_url)
    assert order["amount_idr"] == "50000" and order["fee_idr"] == "0"
    # The payment page the person is sent to is the gateway's.
    page = httpx.get(order["payment_url"], timeout=10)
    assert page.status_code == 200 and order["id"] in page.text
    midtrans_pay(pay_sandbox, order["id"], "qris")
    paid = wait_status(http, order["id"], "paid")
    assert paid["payment_method"] and paid["paid_at"]
    assert credits_of(stack, account.account_id) == [
        (f"topup:midtrans:{order['id']}", 50_000 * MICROS)
    ]
    assert balance_micros(billing, account.account_id) == 50_000 * MICROS
    listed = http.get("/v1/topups").json()
    assert [t["id"] for t in listed["data"]] == [order["id"]]
    receipt = http.get(f"/v1/topups/{order['id']}/receipt")
    assert receipt.status_code == 200, receipt.text
    assert receipt.json()["total_idr"] == "50000"
    assert receipt.json()["amount_in_words"] == "lima puluh ribu rupiah"
    assert receipt.json()["number"].endswith(order["id"])
    # Bought with an API key: the receipt names the account.
    assert receipt.json()["buyer"] == {"name": "test", "address": "", "email": "", "tax_id": ""}


@pytest.mark.parametrize("method", ["bca_va", "permata_va", "gopay"])
def test_virtual_accounts_and_e_wallets_go_pending_then_paid(
    stack: Stack, payer: tuple[Account, httpx.Client], pay_sandbox: httpx.Client, method: str
) -> None:
    account, http = payer
    order = create(http, "10000")
    midtrans_pay(pay_sandbox, order["id"], method)
    wait_status(http, order["id"], "paid")
    statuses = [status for status, _ in notifications(stack, order["id"])]
    assert statuses[-1] == "settlement" and "pending" in statuses
    assert len(credits_of(stack, account.account_id)) == 1


def test_a_xendit_invoice_top_up(
    stack: Stack,
    payer: tuple[Account, httpx.Client],
    pay_sandbox: httpx.Client,
    billing: billing_pb2_grpc.BillingStub,
) -> None:
    account, http = payer
    order = create(http, "75000", gateway="xendit")
    assert "/web/" in order["payment_url"]
    invoice_id = _xendit_invoice_id(stack, order["id"])
    response = pay_sandbox.post(f"/_sandbox/xendit/{invoice_id}/pay", json={"method": "QRIS"})
    assert response.status_code == 200, response.text
    wait_status(http, order["id"], "paid")
    # SETTLED after PAID, and the same callback again: nothing more.
    assert pay_sandbox.post(f"/_sandbox/xendit/{invoice_id}/settle").status_code == 200
    assert pay_sandbox.post(f"/_sandbox/xendit/{invoice_id}/notify").status_code == 200
    _wait_processed(stack, order["id"])
    assert credits_of(stack, account.account_id) == [
        (f"topup:xendit:{order['id']}", 75_000 * MICROS)
    ]
    assert balance_micros(billing, account.account_id) == 75_000 * MICROS


def _xendit_invoice_id(stack: Stack, order_id: str) -> str:
    with db(stack) as conn:
        row = conn.execute(
            "SELECT gateway_ref FROM payments.orders WHERE id = %s", (order_id,)
        ).fetchone()
    assert row is not None and row[0]
    return str(row[0])


def _wait_processed(stack: Stack, order_id: str) -> None:
    deadline = time.monotonic() + SETTLE_SECONDS
    while time.monotonic() < deadline:
        with db(stack) as conn:
            row = conn.execute(
                "SELECT count(*) FROM payments.notifications WHERE order_id = %s"
                " AND processed_at IS NULL",
                (order_id,),
            ).fetchone()
        if row == (0,):
            return
        time.sleep(0.1)
    raise AssertionError(f"notifications of {order_id} not processed")


# Drills.


def test_duplicate_notifications_sequential_and_in_parallel_credit_once(
    stack: Stack, payer: tuple[Account, httpx.Client], pay_sandbox: httpx.Client, base_url: str
) -> None:
    account, http = payer
    order = create(http, "20000")
    midtrans_pay(pay_sandbox, order["id"])
    wait_status(http, order["id"], "paid")
    for _ in range(3):
        assert pay_sandbox.post(f"/_sandbox/midtrans/{order['id']}/notify").status_code == 200
    settlement = signed(
        stack,
        {
            "order_id": order["id"],
            "status_code": "200",
            "gross_amount": "20000.00",
            "transaction_status": "settlement",
            "fraud_status": "accept",
        },
    )
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: webhook(base_url, "midtrans", settlement), range(16)))
    assert {a.status_code for a in answers} == {200}
    _wait_processed(stack, order["id"])
    assert credits_of(stack, account.account_id) == [
        (f"topup:midtrans:{order['id']}", 20_000 * MICROS)
    ]


def test_settlement_before_pending_ends_paid(
    stack: Stack, payer: tuple[Account, httpx.Client], pay_sandbox: httpx.Client, base_url: str
) -> None:
    account, http = payer
    order = create(http, "15000")
    midtrans_pay(pay_sandbox, order["id"], "bni_va")
    wait_status(http, order["id"], "paid")
    # A late "pending" (the gateway's out-of-order delivery) moves nothing back.
    late = signed(
        stack,
        {
            "order_id": order["id"],
            "status_code": "201",
            "gross_amount": "15000.00",
            "transaction_status": "pending",
        },
    )
    assert webhook(base_url, "midtrans", late).status_code == 200
    _wait_processed(stack, order["id"])
    assert topup(http, order["id"])["status"] == "paid"
    assert len(credits_of(stack, account.account_id)) == 1


def test_forged_and_missing_signatures_and_tokens_are_refused(
    stack: Stack, payer: tuple[Account, httpx.Client], base_url: str
) -> None:
    account, http = payer
    order = create(http, "10000")
    body = {
        "order_id": order["id"],
        "status_code": "200",
        "gross_amount": "10000.00",
        "transaction_status": "settlement",
    }
    assert webhook(base_url, "midtrans", body).status_code == 401
    assert webhook(base_url, "midtrans", {**body, "signature_key": "0" * 128}).status_code == 401
    # A tampered amount breaks the signature.
    tampered = {**signed(stack, body), "gross_amount": "1000000.00"}
    assert webhook(base_url, "midtrans", tampered).status_code == 401
    paid = {"id": "inv_1", "external_id": order["id"], "status": "PAID", "amount": 10000}
    assert webhook(base_url, "xendit", paid).status_code == 401
    assert webhook(base_url, "xendit", paid, **{"x-callback-token": "guess"}).status_code == 401
    assert webhook(base_url, "midtrans", {"not": "a notification"}).status_code == 401
    bad_json = httpx.post(f"{base_url}/webhooks/midtrans", content=b"{", timeout=10)
    assert bad_json.status_code == 400
    assert notifications(stack, order["id"]) == []
    assert topup(http, order["id"])["status"] == "awaiting_payment"
    assert credits_of(stack, account.account_id) == []


def test_a_signed_notification_is_still_only_a_hint(
    stack: Stack, payer: tuple[Account, httpx.Client], base_url: str
) -> None:
    """A correctly signed "settlement" the gateway's status API does not confirm
    (a leaked server key, a replay) credits nothing."""
    account, http = payer
    order = create(http, "10000")
    forged = signed(
        stack,
        {
            "order_id": order["id"],
            "status_code": "200",
            "gross_amount": "10000.00",
            "transaction_status": "settlement",
        },
    )
    assert webhook(base_url, "midtrans", forged).status_code == 200
    _wait_processed(stack, order["id"])
    assert topup(http, order["id"])["status"] == "awaiting_payment"
    assert credits_of(stack, account.account_id) == []


def test_a_notification_for_an_unknown_order_is_kept_for_an_operator(
    stack: Stack, base_url: str
) -> None:
    unknown = signed(
        stack,
        {
            "order_id": "top_00000000000000000000",
            "status_code": "200",
            "gross_amount": "99000.00",
            "transaction_status": "settlement",
        },
    )
    assert webhook(base_url, "midtrans", unknown).status_code == 200
    assert notifications(stack, "top_00000000000000000000")[-1] == ("settlement", "unknown_order")


def test_settlement_after_expiry_is_credited(
    stack: Stack, payer: tuple[Account, httpx.Client], pay_sandbox: httpx.Client
) -> None:
    account, http = payer
    late = create(http, "13000")
    assert pay_sandbox.post(f"/_sandbox/midtrans/{late['id']}/expire").status_code == 200
    wait_status(http, late["id"], "expired")
    assert credits_of(stack, account.account_id) == []
    # The bank's transfer settles after all: the person's money arrived, so it counts.
    assert pay_sandbox.post(f"/_sandbox/midtrans/{late['id']}/late_settle").status_code == 200
    wait_status(http, late["id"], "paid")
    assert credits_of(stack, account.account_id) == [
        (f"topup:midtrans:{late['id']}", 13_000 * MICROS)
    ]


def test_cancel_and_expire_move_no_money(
    stack: Stack, payer: tuple[Account, httpx.Client], pay_sandbox: httpx.Client
) -> None:
    account, http = payer
    cancelled, expired = create(http, "10000"), create(http, "10000", gateway="xendit")
    assert pay_sandbox.post(f"/_sandbox/midtrans/{cancelled['id']}/cancel").status_code == 200
    invoice_id = _xendit_invoice_id(stack, expired["id"])
    assert pay_sandbox.post(f"/_sandbox/xendit/{invoice_id}/expire").status_code == 200
    wait_status(http, cancelled["id"], "cancelled")
    wait_status(http, expired["id"], "expired")
    assert credits_of(stack, account.account_id) == []
    receipt = http.get(f"/v1/topups/{cancelled['id']}/receipt")
    assert receipt.status_code == 409 and receipt.json()["error"]["code"] == "topup_not_paid"


def test_a_refund_takes_the_money_back_and_a_chargeback_after_spending_leaves_a_debt(
    stack: Stack,
    payer: tuple[Account, httpx.Client],
    pay_sandbox: httpx.Client,
    billing: billing_pb2_grpc.BillingStub,
    base_url: str,
) -> None:
    account, http = payer
    refunded = create(http, "10000")
    midtrans_pay(pay_sandbox, refunded["id"])
    wait_status(http, refunded["id"], "paid")
    assert pay_sandbox.post(f"/_sandbox/midtrans/{refunded['id']}/refund").status_code == 200
    body = wait_status(http, refunded["id"], "refunded")
    assert body["reversed_idr"] == "10000"
    assert balance_micros(billing, account.account_id) == 0
    # Spend part of a second top-up, then lose it to a chargeback.
    charged = create(http, "10000")
    midtrans_pay(pay_sandbox, charged["id"])
    wait_status(http, charged["id"], "paid")
    billing.Adjust(
        billing_pb2.AdjustRequest(
            account_id=account.account_id,
            amount_micros=-4_000 * MICROS,
            idempotency_key=f"spend-{charged['id']}",
            description="spent in a test",
            kind=billing_pb2.AdjustRequest.ADJUSTMENT,
        )
    )
    assert pay_sandbox.post(f"/_sandbox/midtrans/{charged['id']}/chargeback").status_code == 200
    # The key is suspended once the debt is recorded: watch the order itself.
    wait_order_status(stack, charged["id"], "charged_back")
    owed = billing.GetAccountBalance(
        billing_pb2.GetAccountBalanceRequest(account_id=account.account_id)
    )
    assert owed.available_micros == 0 and owed.debt_micros == 4_000 * MICROS
    # While the debt is owed, the account's keys are suspended (a person can
    # still log in to the dashboard and top up).
    assert http.get("/v1/balance").status_code == 401
    assert credits_of(stack, account.account_id)[-1][0] == f"topup:midtrans:{charged['id']}"
    # A top-up pays the debt first and lets the keys work again.
    repay = billing.TopUp(
        billing_pb2.TopUpRequest(account_id=account.account_id, amount_micros=10_000 * MICROS)
    )
    assert repay.available_micros == 6_000 * MICROS
    balance = http.get("/v1/balance")
    assert balance.status_code == 200 and balance.json()["debt_idr"] == "0"


# The public API's refusals.


def test_refusals_name_the_field(
    payer: tuple[Account, httpx.Client], account: Account, base_url: str
) -> None:
    _, http = payer
    cases = [
        ({"amount_idr": "9999"}, "amount_idr"),
        ({"amount_idr": "50.000"}, "amount_idr"),
        ({"amount_idr": "999999999"}, "amount_idr"),
        ({}, "amount_idr"),
        ({"amount_idr": "50000", "gateway": "paypal"}, "gateway"),
        ({"amount_idr": "50000", "tip": "1"}, "tip"),
    ]
    for body, param in cases:
        response = http.post("/v1/topups", json=body)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["error"]["param"] == param, response.text
    assert http.get("/v1/topups/top_00000000000000000000").status_code == 404
    assert http.get("/v1/topups/nonsense").status_code == 404
    assert http.get("/v1/topups", params={"limit": "0"}).json()["error"]["param"] == "limit"
    assert http.get("/v1/topups", params={"status": "x"}).json()["error"]["param"] == "status"
    # An inference-only key may look but not buy.
    with httpx.Client(
        base_url=base_url, headers={"Authorization": f"Bearer {account.api_key}"}, timeout=30
    ) as plain:
        assert plain.get("/v1/topups").status_code == 200
        refused = plain.post("/v1/topups", json={"amount_idr": "50000"})
        assert refused.status_code == 403, refused.text
    assert httpx.get(f"{base_url}/v1/topups", timeout=10).status_code == 401


def test_another_accounts_top_up_is_not_found(
    new_account: NewAccount, payer: tuple[Account, httpx.Client], base_url: str
) -> None:
    _, http = payer
    order = create(http, "10000")
    other = new_account("0")
    with httpx.Client(
        base_url=base_url, headers={"Authorization": f"Bearer {other.api_key}"}, timeout=30
    ) as stranger:
        assert stranger.get(f"/v1/topups/{order['id']}").status_code == 404
        assert stranger.get(f"/v1/topups/{order['id']}/receipt").status_code == 404
        assert stranger.get("/v1/topups").json()["data"] == []


def aiportctl(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "AIPORT_PAYMENTS_ADDR": stack.config.dial_addr("payments"),
        "AIPORT_PAYMENTS_TOKEN": stack.config.payments_admin_token,
    }
    return subprocess.run(
        [sys.executable, "-m", "services.billing.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_operators_list_show_and_reconcile_with_aiportctl(
    stack: Stack, payer: tuple[Account, httpx.Client], pay_sandbox: httpx.Client
) -> None:
    account, http = payer
    order = create(http, "10000")
    midtrans_pay(pay_sandbox, order["id"])
    wait_status(http, order["id"], "paid")
    listed = aiportctl(stack, "payments", "list", "--account", account.account_id, "--json")
    assert listed.returncode == 0, listed.stderr
    assert [o["id"] for o in json.loads(listed.stdout)["orders"]] == [order["id"]]
    shown = aiportctl(stack, "--json", "payments", "show", order["id"])
    assert shown.returncode == 0 and json.loads(shown.stdout)["status"] == "paid"
    report = aiportctl(stack, "payments", "reconcile", "--json")
    assert report.returncode in (0, 2), report.stderr
    body = json.loads(report.stdout)
    assert body["checked"] >= 1
    assert order["id"] not in {f["order_id"] for f in body["findings"]}
    # A clear error, not a trace, without the operator's token.
    refused = subprocess.run(
        [sys.executable, "-m", "services.billing.cli", "payments", "list"],
        env={**os.environ, "AIPORT_PAYMENTS_ADDR": stack.config.dial_addr("payments")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 1 and "Traceback" not in refused.stderr


def test_the_low_balance_alert_is_set_shown_and_turned_off(
    payer: tuple[Account, httpx.Client], account: Account, base_url: str
) -> None:
    _, http = payer
    assert http.get("/v1/balance").json()["low_balance_alert_idr"] is None
    set_ = http.post("/v1/balance/alert", json={"threshold_idr": "20000"})
    assert set_.status_code == 200, set_.text
    assert set_.json()["low_balance_alert_idr"] == "20000"
    assert http.get("/v1/balance").json()["low_balance_alert_idr"] == "20000"
    for body, param in (
        ({"threshold_idr": "20.000"}, "threshold_idr"),
        ({}, "threshold_idr"),
        ({"threshold_idr": "1", "x": 1}, "x"),
    ):
        refused = http.post("/v1/balance/alert", json=body)
        assert refused.status_code == 400 and refused.json()["error"]["param"] == param
    off = http.post("/v1/balance/alert", json={"threshold_idr": None})
    assert off.status_code == 200 and off.json()["low_balance_alert_idr"] is None
    with httpx.Client(
        base_url=base_url, headers={"Authorization": f"Bearer {account.api_key}"}, timeout=30
    ) as plain:
        assert plain.post("/v1/balance/alert", json={"threshold_idr": "1"}).status_code == 403
