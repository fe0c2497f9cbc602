"""The sandbox payment gateway in-process (aiohttp test server), with a local receiver
standing in for our webhooks; and the CLI as a process stopped by SIGTERM."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from deploy.local.ports import free_port
from sandbox.payment_gateway import midtrans
from sandbox.payment_gateway.server import Config, create_app

REPO = Path(__file__).resolve().parents[2]
SERVER_KEY = "SB-Mid-server-test-key"
SECRET_KEY = "xnd_development_test_key"
CALLBACK_TOKEN = "callback-token-test"
PUBLIC = "http://pay.example.test"
DELAYS = (0.05, 0.05, 0.05, 0.05, 0.05)


def basic(key: str, password: str = "") -> dict[str, str]:
    token = base64.b64encode(f"{key}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


MIDTRANS_AUTH = basic(SERVER_KEY)
XENDIT_AUTH = basic(SECRET_KEY)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class Receiver:
    """Our webhook, as far as the gateway can tell: records every POST and answers the
    scripted statuses first, then 200."""

    base: str = ""
    received: list[Received] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/moved", self._moved)
        app.router.add_post("/{name}", self._record)
        return app

    async def _moved(self, request: web.Request) -> web.Response:
        return web.Response(status=307, headers={"Location": "/midtrans"})

    async def _record(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.received.append(Received(request.path, dict(request.headers), body))
        return web.Response(status=self.answers.pop(0) if self.answers else 200)

    async def wait_for(self, count: int, path: str, within: float = 5.0) -> list[Received]:
        deadline = time.monotonic() + within
        while True:
            got = [r for r in self.received if r.path == path]
            if len(got) >= count:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(got)} of {count} requests to {path} arrived: {got}")
            await asyncio.sleep(0.01)


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@dataclass
class Gateway:
    client: TestClient[Any, Any]
    clock: Clock
    app: web.Application

    async def snap(
        self, order_id: str = "order-1", amount: int = 50000, **extra: Any
    ) -> dict[str, Any]:
        body = {"transaction_details": {"order_id": order_id, "gross_amount": amount}, **extra}
        response = await self.client.post("/snap/v1/transactions", json=body, headers=MIDTRANS_AUTH)
        assert response.status == 201, await response.text()
        answer: dict[str, Any] = await response.json()
        return answer

    async def control(
        self, gateway: str, ref: str, action: str, body: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        response = await self.client.post(f"/_sandbox/{gateway}/{ref}/{action}", json=body)
        return response.status, await response.json()

    async def status(self, order_id: str) -> tuple[int, dict[str, Any]]:
        response = await self.client.get(f"/v2/{order_id}/status", headers=MIDTRANS_AUTH)
        return response.status, await response.json()

    async def invoice(self, **body: Any) -> dict[str, Any]:
        response = await self.client.post(
            "/v2/invoices",
            json={"external_id": "topup-1", "amount": 50000, **body},
            headers=XENDIT_AUTH,
        )
        assert response.status == 200, await response.text()
        answer: dict[str, Any] = await response.json()
        return answer

    async def deliveries(self, **query: str) -> list[dict[str, Any]]:
        response = await self.client.get("/_sandbox/deliveries", params=query)
        answer: list[dict[str, Any]] = await response.json()
        return answer


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    server = TestServer(rec.app())
    await server.start_server()
    rec.base = str(server.make_url("")).rstrip("/")
    yield rec
    await server.close()


@pytest.fixture
async def gateway(receiver: Receiver) -> AsyncIterator[Gateway]:
    clock = Clock()
    config = Config(
        midtrans_server_key=SERVER_KEY,
        xendit_secret_key=SECRET_KEY,
        xendit_callback_token=CALLBACK_TOKEN,
        public_url=PUBLIC,
        midtrans_notification_url=f"{receiver.base}/midtrans",
        xendit_callback_url=f"{receiver.base}/xendit",
        retry_delays=DELAYS,
        notify_timeout=2.0,
    )
    app = create_app(config, clock=clock)
    async with TestClient(TestServer(app)) as client:
        yield Gateway(client, clock, app)


def expected_signature(body: dict[str, Any]) -> str:
    text = f"{body['order_id']}{body['status_code']}{body['gross_amount']}{SERVER_KEY}"
    return hashlib.sha512(text.encode()).hexdigest()


# --- Midtrans: auth and create -----------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        basic("SB-Mid-server-wrong"),
        basic(SERVER_KEY, "not-empty"),
        {"Authorization": f"Bearer {SERVER_KEY}"},
        {"Authorization": "Basic !!notbase64"},
    ],
)
async def test_snap_and_status_refuse_a_wrong_server_key(
    gateway: Gateway, headers: dict[str, str]
) -> None:
    body = {"transaction_details": {"order_id": "o-1", "gross_amount": 10000}}
    snap = await gateway.client.post("/snap/v1/transactions", json=body, headers=headers)
    assert snap.status == 401
    assert (await snap.json())["error_messages"][0] == midtrans.AUTH_MESSAGES[0]
    status = await gateway.client.get("/v2/o-1/status", headers=headers)
    assert status.status == 401
    answer = await status.json()
    assert answer["status_code"] == "401"
    assert answer["status_message"] == "Unknown Merchant server_key/id"


async def test_snap_create_answers_a_token_and_the_redirect_url(gateway: Gateway) -> None:
    answer = await gateway.snap("order-1", 50000)
    assert set(answer) == {"token", "redirect_url"}
    assert len(answer["token"]) == 36
    assert answer["redirect_url"] == f"{PUBLIC}/snap/v4/redirection/{answer['token']}"


async def test_a_reused_order_id_is_taken_and_once_paid_utilized(gateway: Gateway) -> None:
    await gateway.snap("order-dup")
    body = {"transaction_details": {"order_id": "order-dup", "gross_amount": 50000}}
    again = await gateway.client.post("/snap/v1/transactions", json=body, headers=MIDTRANS_AUTH)
    assert again.status == 400
    assert await again.json() == {
        "error_messages": ["transaction_details.order_id has already been taken"]
    }
    await gateway.control("midtrans", "order-dup", "pay", {"method": "qris"})
    paid = await gateway.client.post("/snap/v1/transactions", json=body, headers=MIDTRANS_AUTH)
    assert paid.status == 400
    assert "has been paid and utilized" in (await paid.json())["error_messages"][0]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "transaction_details is required"),
        ({"transaction_details": {"gross_amount": 1}}, "transaction_details.order_id is required"),
        (
            {"transaction_details": {"order_id": "a" * 51, "gross_amount": 1}},
            "transaction_details.order_id may not be longer than 50 characters",
        ),
        (
            {"transaction_details": {"order_id": "has space", "gross_amount": 1}},
            "transaction_details.order_id may only contain",
        ),
        (
            {"transaction_details": {"order_id": "o"}},
            "transaction_details.gross_amount is required",
        ),
        (
            {"transaction_details": {"order_id": "o", "gross_amount": "10000"}},
            "transaction_details.gross_amount is not a number",
        ),
        (
            {"transaction_details": {"order_id": "o", "gross_amount": 100.5}},
            "transaction_details.gross_amount must be a whole number of IDR",
        ),
        (
            {"transaction_details": {"order_id": "o", "gross_amount": 0}},
            "transaction_details.gross_amount must be greater than or equal to 1",
        ),
        (
            {
                "transaction_details": {"order_id": "o", "gross_amount": 10000},
                "item_details": [{"price": 3000, "quantity": 3}],
            },
            "transaction_details.gross_amount is not equal to the sum of item_details",
        ),
        (
            {
                "transaction_details": {"order_id": "o", "gross_amount": 1},
                "callbacks": {"finish": "javascript:alert(1)"},
            },
            "callbacks.finish must be an http(s) URL",
        ),
        (
            {
                "transaction_details": {"order_id": "o", "gross_amount": 1},
                "expiry": {"unit": "week", "duration": 1},
            },
            "expiry.unit must be one of day, hour, minute",
        ),
    ],
)
async def test_snap_validation_errors_name_the_field(
    gateway: Gateway, body: dict[str, Any], message: str
) -> None:
    response = await gateway.client.post("/snap/v1/transactions", json=body, headers=MIDTRANS_AUTH)
    assert response.status == 400
    messages = (await response.json())["error_messages"]
    assert any(m.startswith(message) for m in messages), messages


async def test_a_bad_body_is_a_400_and_a_huge_one_a_413_in_midtrans_shape(
    gateway: Gateway,
) -> None:
    bad = await gateway.client.post(
        "/snap/v1/transactions", data=b"{not json", headers=MIDTRANS_AUTH
    )
    assert bad.status == 400
    assert "error_messages" in await bad.json()
    huge = await gateway.client.post(
        "/snap/v1/transactions", data=b"x" * (70 * 1024), headers=MIDTRANS_AUTH
    )
    assert huge.status == 413
    assert "error_messages" in await huge.json()


async def test_status_is_404_until_a_method_is_chosen_and_for_unknown_orders(
    gateway: Gateway,
) -> None:
    await gateway.snap("order-unpaid")
    for order_id in ("order-unpaid", "no-such-order"):
        status, body = await gateway.status(order_id)
        assert status == 404
        assert body["status_code"] == "404"
        assert body["status_message"] == "Transaction doesn't exist."


# --- Midtrans: the page and the notifications --------------------------------------------


async def test_the_snap_page_shows_the_order_and_a_button_per_method(gateway: Gateway) -> None:
    answer = await gateway.snap(
        "order-page",
        50000,
        customer_details={"first_name": "<b>Budi</b>", "email": "budi@example.com"},
    )
    page = await gateway.client.get(urlsplit(answer["redirect_url"]).path)
    assert page.status == 200
    html = await page.text()
    assert "order-page" in html and "Rp 50.000" in html
    assert "&lt;b&gt;Budi&lt;/b&gt;" in html and "<b>Budi</b>" not in html
    for key in midtrans.METHODS:
        assert f'name=method value="{key}">' in html
    assert "Let it expire" in html and "Cancel" in html
    # The icon is inline: no /favicon.ico request (a 404 on the browser's console).
    assert '<link rel=icon href="data:,">' in html
    unknown = await gateway.client.get("/snap/v4/redirection/no-such-token")
    assert unknown.status == 404


async def test_enabled_payments_narrow_the_page(gateway: Gateway) -> None:
    answer = await gateway.snap("order-narrow", enabled_payments=["other_qris", "bca_va"])
    html = await (await gateway.client.get(urlsplit(answer["redirect_url"]).path)).text()
    assert 'value="qris">' in html and 'value="bca_va">' in html
    assert 'value="gopay">' not in html
    status, body = await gateway.control("midtrans", "order-narrow", "pay", {"method": "gopay"})
    assert status == 409 and body["field"] == "method"


async def test_paying_by_qris_notifies_pending_then_settlement_and_redirects(
    gateway: Gateway, receiver: Receiver
) -> None:
    answer = await gateway.snap(
        "order-qris", 50000, callbacks={"finish": "https://shop.example.test/done?from=snap"}
    )
    page = urlsplit(answer["redirect_url"]).path
    click = await gateway.client.post(
        page, data={"action": "pay", "method": "qris"}, allow_redirects=False
    )
    assert click.status == 303
    target = urlsplit(click.headers["Location"])
    assert target.netloc == "shop.example.test" and target.path == "/done"
    assert parse_qs(target.query) == {
        "from": ["snap"],
        "merchant_id": [midtrans.MERCHANT_ID],
        "order_id": ["order-qris"],
        "status_code": ["200"],
        "transaction_status": ["settlement"],
    }

    pending, settlement = (r.body for r in await receiver.wait_for(2, "/midtrans"))
    assert (pending["transaction_status"], pending["status_code"]) == ("pending", "201")
    assert (settlement["transaction_status"], settlement["status_code"]) == ("settlement", "200")
    for body in (pending, settlement):
        assert body["signature_key"] == expected_signature(body)
        assert body["gross_amount"] == "50000.00"
        assert body["payment_type"] == "qris"
        assert body["order_id"] == "order-qris"
        assert body["fraud_status"] == "accept" and body["currency"] == "IDR"
        assert body["status_message"] == "midtrans payment notification"
    assert "settlement_time" not in pending and "settlement_time" in settlement
    assert pending["transaction_id"] == settlement["transaction_id"]

    status, current = await gateway.status("order-qris")
    assert status == 200
    assert current == {**settlement, "status_message": "Success, transaction is found"}
    # The status API finds the transaction by its transaction_id too.
    _, by_id = await gateway.status(settlement["transaction_id"])
    assert by_id["order_id"] == "order-qris"
    done = await gateway.client.get(page)
    assert "settlement" in await done.text() and "name=action" not in await done.text()


@pytest.mark.parametrize(
    ("method", "payment_type", "fields"),
    [
        ("bca_va", "bank_transfer", {"va_numbers"}),
        ("bni_va", "bank_transfer", {"va_numbers"}),
        ("bri_va", "bank_transfer", {"va_numbers"}),
        ("permata_va", "bank_transfer", {"permata_va_number"}),
        ("echannel", "echannel", {"bill_key", "biller_code"}),
        ("gopay", "gopay", set()),
        ("shopeepay", "shopeepay", set()),
    ],
)
async def test_each_method_notifies_with_its_payment_fields(
    gateway: Gateway, receiver: Receiver, method: str, payment_type: str, fields: set[str]
) -> None:
    answer = await gateway.snap(f"order-{method}", 75000)
    # The customer picks the method and then walks away: pending, with the codes to pay to.
    await gateway.client.post(
        urlsplit(answer["redirect_url"]).path,
        data={"action": "pay", "method": method},
        allow_redirects=False,
    )
    pending, settlement = (r.body for r in await receiver.wait_for(2, "/midtrans"))
    assert pending["payment_type"] == settlement["payment_type"] == payment_type
    optional = {"va_numbers", "permata_va_number", "bill_key", "biller_code"}
    assert optional & set(pending) == fields
    if "va_numbers" in fields:
        bank = method.removesuffix("_va")
        (va,) = pending["va_numbers"]
        assert va["bank"] == bank and va["va_number"].isdigit()
        assert pending["payment_amounts"] == []
        assert settlement["payment_amounts"] == [
            {"paid_at": settlement["settlement_time"], "amount": "75000.00"}
        ]
        assert settlement["va_numbers"] == pending["va_numbers"]
    if method == "echannel":
        assert pending["biller_code"] == "70012" and pending["bill_key"].isdigit()


@pytest.mark.parametrize(("action", "code"), [("expire", "407"), ("cancel", "200")])
async def test_expire_and_cancel_on_the_page(
    gateway: Gateway, receiver: Receiver, action: str, code: str
) -> None:
    answer = await gateway.snap(f"order-{action}")
    page = urlsplit(answer["redirect_url"]).path
    click = await gateway.client.post(page, data={"action": action})
    assert click.status == 200  # no finish URL: a done page
    assert action in await click.text()
    pending, final = (r.body for r in await receiver.wait_for(2, "/midtrans"))
    assert pending["transaction_status"] == "pending"
    assert (final["transaction_status"], final["status_code"]) == (action, code)
    assert final["signature_key"] == expected_signature(final)
    _, current = await gateway.status(f"order-{action}")
    assert current["transaction_status"] == action
    again = await gateway.client.post(page, data={"action": "pay", "method": "qris"})
    assert again.status == 409
    status, _ = await gateway.control("midtrans", f"order-{action}", "pay")
    assert status == 409


async def test_refund_and_chargeback_only_after_settlement(
    gateway: Gateway, receiver: Receiver
) -> None:
    await gateway.snap("order-r")
    await gateway.snap("order-c")
    status, body = await gateway.control("midtrans", "order-r", "refund")
    assert status == 409 and "only a settled transaction" in body["error"]
    for order_id, action in (("order-r", "refund"), ("order-c", "chargeback")):
        await gateway.control("midtrans", order_id, "pay", {"method": "bni_va"})
        status, body = await gateway.control("midtrans", order_id, action)
        assert status == 200
        assert (body["transaction_status"], body["status_code"]) == (action, "200")
    received = await receiver.wait_for(6, "/midtrans")
    refund = next(r.body for r in received if r.body["transaction_status"] == "refund")
    chargeback = next(r.body for r in received if r.body["transaction_status"] == "chargeback")
    assert refund["refund_amount"] == "50000.00" and len(refund["refunds"]) == 1
    assert refund["signature_key"] == expected_signature(refund)
    assert chargeback["order_id"] == "order-c" and "settlement_time" in chargeback
    assert chargeback["signature_key"] == expected_signature(chargeback)
    _, current = await gateway.status("order-c")
    assert current["transaction_status"] == "chargeback"
    status, _ = await gateway.control("midtrans", "order-r", "chargeback")
    assert status == 409


async def test_notify_sends_the_same_notification_again(
    gateway: Gateway, receiver: Receiver
) -> None:
    await gateway.snap("order-dup-notify")
    await gateway.control("midtrans", "order-dup-notify", "pay", {"method": "qris"})
    status, body = await gateway.control("midtrans", "order-dup-notify", "notify")
    assert status == 200 and body["notifications"] == 1
    await gateway.control("midtrans", "order-dup-notify", "notify")
    received = await receiver.wait_for(4, "/midtrans")
    settlements = [r.body for r in received if r.body["transaction_status"] == "settlement"]
    assert len(settlements) == 3 and settlements[0] == settlements[1] == settlements[2]


async def test_controls_name_what_is_wrong(gateway: Gateway) -> None:
    await gateway.snap("order-ctl")
    status, body = await gateway.control("midtrans", "order-ctl", "notify")
    assert status == 409  # nothing happened yet
    status, body = await gateway.control("midtrans", "order-ctl", "pay", {"method": "cash"})
    assert (status, body["field"]) == (400, "method")
    status, body = await gateway.control("midtrans", "order-ctl", "teleport")
    assert (status, body["field"]) == (400, "action")
    status, _ = await gateway.control("midtrans", "no-such-order", "pay")
    assert status == 404


async def test_notification_headers_override_or_append_the_url(
    gateway: Gateway, receiver: Receiver
) -> None:
    body = {"transaction_details": {"order_id": "order-over", "gross_amount": 20000}}
    override = {**MIDTRANS_AUTH, "X-Override-Notification": f"{receiver.base}/override"}
    created = await gateway.client.post("/snap/v1/transactions", json=body, headers=override)
    assert created.status == 201
    body = {"transaction_details": {"order_id": "order-append", "gross_amount": 20000}}
    # /moved answers 307 to /midtrans: Midtrans follows it with the same body.
    append = {
        **MIDTRANS_AUTH,
        "X-Append-Notification": f"{receiver.base}/appended, {receiver.base}/moved",
    }
    created = await gateway.client.post("/snap/v1/transactions", json=body, headers=append)
    assert created.status == 201
    await gateway.control("midtrans", "order-over", "pay")
    await gateway.control("midtrans", "order-append", "pay")
    assert len(await receiver.wait_for(2, "/override")) == 2
    assert len(await receiver.wait_for(2, "/appended")) == 2
    at_dashboard_url = await receiver.wait_for(4, "/midtrans")  # configured + redirected
    assert {r.body["order_id"] for r in at_dashboard_url} == {"order-append"}
    bad = {**MIDTRANS_AUTH, "X-Override-Notification": "ftp://nope"}
    body = {"transaction_details": {"order_id": "order-bad-hdr", "gross_amount": 20000}}
    refused = await gateway.client.post("/snap/v1/transactions", json=body, headers=bad)
    assert refused.status == 400
    assert "X-Override-Notification" in (await refused.json())["error_messages"][0]


async def test_a_failing_receiver_gets_retries_with_the_same_body(
    gateway: Gateway, receiver: Receiver
) -> None:
    receiver.answers = [503, 503, 503]
    await gateway.snap("order-retry")
    await gateway.control("midtrans", "order-retry", "pay", {"method": "gopay"})
    received = await receiver.wait_for(5, "/midtrans")  # 3 answered 503, then 2 with 200
    for status in ("pending", "settlement"):
        bodies = [r.body for r in received if r.body["transaction_status"] == status]
        assert len(bodies) >= 2 and all(b == bodies[0] for b in bodies)
    attempts = await gateway.deliveries(gateway="midtrans", key="order-retry")
    by_delivery: dict[int, list[int | None]] = {}
    for attempt in attempts:
        by_delivery.setdefault(attempt["delivery"], []).append(attempt["status"])
        assert attempt["attempt"] == len(by_delivery[attempt["delivery"]])
    assert len(by_delivery) == 2
    for statuses in by_delivery.values():
        assert statuses[-1] == 200 and set(statuses[:-1]) <= {503}
    assert sum(len(s) for s in by_delivery.values()) == 5
    # pending went first: its first attempt came before settlement's
    assert attempts[0]["body"]["transaction_status"] == "pending"


async def test_a_500_is_retried_once_as_midtrans_does(gateway: Gateway, receiver: Receiver) -> None:
    receiver.answers = [500, 500, 500, 500]
    await gateway.snap("order-500")
    await gateway.control("midtrans", "order-500", "pay", {"method": "gopay"})
    await receiver.wait_for(4, "/midtrans")  # pending and settlement twice each, all 500
    await asyncio.sleep(0.3)  # room for any retry that should not happen
    attempts = await gateway.deliveries(key="order-500")
    by_delivery: dict[int, list[int | None]] = {}
    for attempt in attempts:
        by_delivery.setdefault(attempt["delivery"], []).append(attempt["status"])
    assert list(by_delivery.values()) == [[500, 500], [500, 500]]
    assert len(receiver.received) == 4


async def test_an_unreachable_receiver_is_retried_after_each_delay(gateway: Gateway) -> None:
    unreachable = f"http://127.0.0.1:{free_port()}/gone"
    body = {"transaction_details": {"order_id": "order-gone", "gross_amount": 20000}}
    headers = {**MIDTRANS_AUTH, "X-Override-Notification": unreachable}
    await gateway.client.post("/snap/v1/transactions", json=body, headers=headers)
    await gateway.control("midtrans", "order-gone", "cancel")
    deadline = time.monotonic() + 5
    while len(attempts := await gateway.deliveries(key="order-gone")) < 2 * (1 + len(DELAYS)):
        assert time.monotonic() < deadline, attempts
        await asyncio.sleep(0.05)
    assert all(a["status"] is None and a["error"] for a in attempts)


async def test_a_pending_payment_expires_on_its_own(gateway: Gateway, receiver: Receiver) -> None:
    await gateway.snap("order-late", expiry={"unit": "minute", "duration": 15})
    await gateway.control("midtrans", "order-late", "pay")  # settles: not expired later
    await gateway.snap("order-left", expiry={"unit": "minute", "duration": 15})
    answer = await gateway.snap("order-unpicked", expiry={"unit": "minute", "duration": 15})
    status, body = await gateway.control("midtrans", "order-left", "choose", {"method": "bri_va"})
    assert (status, body["transaction_status"], body["notifications"]) == (200, "pending", 1)
    gateway.clock.now += 16 * 60
    status, _ = await gateway.control("midtrans", "order-left", "pay")
    assert status == 409  # too late to pay, whether or not the sweeper got there first
    # order-late: pending, settlement; order-left: pending, then expire by the sweeper.
    await receiver.wait_for(4, "/midtrans", within=3)
    await asyncio.sleep(0.6)  # one more sweep: nothing else expires
    expired = [r.body for r in receiver.received if r.body["transaction_status"] == "expire"]
    assert [b["order_id"] for b in expired] == ["order-left"]
    assert expired[0]["status_code"] == "407"
    _, left = await gateway.status("order-left")
    assert left["transaction_status"] == "expire"
    # Never picked a method: no Core API transaction, no notification, the page closed.
    assert (await gateway.status("order-unpicked"))[0] == 404
    html = await (await gateway.client.get(urlsplit(answer["redirect_url"]).path)).text()
    assert "expired" in html and "name=action" not in html


async def test_a_late_settlement_drill_settles_only_an_expired_payment(
    gateway: Gateway, receiver: Receiver
) -> None:
    await gateway.snap("order-slow")
    status, _ = await gateway.control("midtrans", "order-slow", "late_settle")
    assert status == 409  # nothing chosen yet
    await gateway.control("midtrans", "order-slow", "expire")
    status, body = await gateway.control("midtrans", "order-slow", "late_settle")
    assert (status, body["transaction_status"], body["status_code"]) == (200, "settlement", "200")
    status, _ = await gateway.control("midtrans", "order-slow", "late_settle")
    assert status == 409  # settled already
    await receiver.wait_for(3, "/midtrans", within=3)
    statuses = [r.body["transaction_status"] for r in receiver.received]
    assert statuses == ["pending", "expire", "settlement"]


# --- Xendit ------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, basic("xnd_development_wrong"), basic(SECRET_KEY, "x")])
async def test_xendit_refuses_a_wrong_secret_key(gateway: Gateway, headers: dict[str, str]) -> None:
    for response in (
        await gateway.client.post(
            "/v2/invoices", json={"external_id": "a", "amount": 1}, headers=headers
        ),
        await gateway.client.get("/v2/invoices/abc", headers=headers),
        await gateway.client.post("/invoices/abc/expire!", headers=headers),
    ):
        assert response.status == 401
        assert (await response.json())["error_code"] == "INVALID_API_KEY"


async def test_an_invoice_is_created_and_read_back(gateway: Gateway) -> None:
    invoice = await gateway.invoice(
        description="Top-up Rp 50.000",
        payer_email="budi@example.com",
        invoice_duration=3600,
        success_redirect_url="https://shop.example.test/ok",
        failure_redirect_url="https://shop.example.test/failed",
    )
    assert invoice["status"] == "PENDING"
    assert len(invoice["id"]) == 24 and int(invoice["id"], 16) >= 0
    assert invoice["invoice_url"] == f"{PUBLIC}/web/{invoice['id']}"
    assert invoice["amount"] == 50000 and invoice["currency"] == "IDR"
    assert invoice["external_id"] == "topup-1"
    assert [b["bank_code"] for b in invoice["available_banks"]] == [
        "BCA",
        "BNI",
        "BRI",
        "MANDIRI",
        "PERMATA",
    ]
    assert invoice["available_qr_codes"] == [{"qr_code_type": "QRIS"}]
    assert [e["ewallet_type"] for e in invoice["available_ewallets"]] == [
        "OVO",
        "DANA",
        "SHOPEEPAY",
    ]
    assert invoice["expiry_date"].endswith("Z") and invoice["created"].endswith("Z")
    got = await gateway.client.get(f"/v2/invoices/{invoice['id']}", headers=XENDIT_AUTH)
    assert await got.json() == invoice
    # Xendit allows the same external_id twice by default.
    second = await gateway.invoice()
    assert second["id"] != invoice["id"] and second["external_id"] == "topup-1"


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        ({"amount": 1000}, "API_VALIDATION_ERROR", '"external_id" is required'),
        ({"external_id": "a"}, "API_VALIDATION_ERROR", '"amount" is required'),
        ({"external_id": "a", "amount": "1000"}, "API_VALIDATION_ERROR", '"amount" must be a'),
        ({"external_id": "a", "amount": 0}, "API_VALIDATION_ERROR", '"amount" must be larger'),
        ({"external_id": "a" * 256, "amount": 1}, "API_VALIDATION_ERROR", '"external_id" length'),
        (
            {"external_id": "a", "amount": 1, "payer_email": "nope"},
            "API_VALIDATION_ERROR",
            '"payer_email"',
        ),
        (
            {"external_id": "a", "amount": 1, "invoice_duration": 0},
            "API_VALIDATION_ERROR",
            '"invoice_duration"',
        ),
        (
            {"external_id": "a", "amount": 1, "payment_methods": ["CARD"]},
            "API_VALIDATION_ERROR",
            '"payment_methods"',
        ),
        ({"external_id": "a", "amount": 1, "currency": "USD"}, "UNSUPPORTED_CURRENCY", "Currency"),
    ],
)
async def test_invoice_validation_errors_name_the_field(
    gateway: Gateway, body: dict[str, Any], code: str, message: str
) -> None:
    response = await gateway.client.post("/v2/invoices", json=body, headers=XENDIT_AUTH)
    assert response.status == 400
    answer = await response.json()
    assert answer["error_code"] == code and answer["message"].startswith(message), answer


async def test_unknown_invoices_are_404_everywhere(gateway: Gateway) -> None:
    for response in (
        await gateway.client.get("/v2/invoices/0123456789abcdef01234567", headers=XENDIT_AUTH),
        await gateway.client.post(
            "/invoices/0123456789abcdef01234567/expire!", headers=XENDIT_AUTH
        ),
    ):
        assert response.status == 404
        assert (await response.json())["error_code"] == "INVOICE_NOT_FOUND_ERROR"
    assert (await gateway.client.get("/web/0123456789abcdef01234567")).status == 404
    status, _ = await gateway.control("xendit", "0123456789abcdef01234567", "pay")
    assert status == 404


async def test_paying_an_invoice_by_qris_calls_back_with_the_token(
    gateway: Gateway, receiver: Receiver
) -> None:
    invoice = await gateway.invoice(
        success_redirect_url="https://shop.example.test/ok", payer_email="budi@example.com"
    )
    page = urlsplit(invoice["invoice_url"]).path
    html = await (await gateway.client.get(page)).text()
    assert "Rp 50.000" in html and 'value="QRIS">' in html and 'value="OVO">' in html
    click = await gateway.client.post(
        page, data={"action": "pay", "method": "QRIS"}, allow_redirects=False
    )
    assert (click.status, click.headers["Location"]) == (303, "https://shop.example.test/ok")
    (callback,) = await receiver.wait_for(1, "/xendit")
    assert callback.headers["x-callback-token"] == CALLBACK_TOKEN
    body = callback.body
    assert body["id"] == invoice["id"] and body["external_id"] == "topup-1"
    assert (body["status"], body["payment_method"], body["payment_channel"]) == (
        "PAID",
        "QR_CODE",
        "QRIS",
    )
    assert body["amount"] == body["paid_amount"] == 50000
    assert body["paid_at"].endswith("Z") and body["is_high"] is False
    assert body["payer_email"] == "budi@example.com"
    got = await (
        await gateway.client.get(f"/v2/invoices/{invoice['id']}", headers=XENDIT_AUTH)
    ).json()
    assert got["status"] == "PAID" and got["paid_amount"] == 50000
    assert got["payment_method"] == "QR_CODE" and got["paid_at"] == body["paid_at"]


async def test_a_va_invoice_settles_and_duplicates_on_notify(
    gateway: Gateway, receiver: Receiver
) -> None:
    invoice = await gateway.invoice(payment_methods=["BCA", "OVO"])
    status, _ = await gateway.control("xendit", invoice["id"], "settle")
    assert status == 409  # not paid yet
    status, _ = await gateway.control("xendit", invoice["id"], "pay", {"method": "QRIS"})
    assert status == 409  # not among its payment_methods
    status, answer = await gateway.control("xendit", invoice["id"], "pay", {"method": "bca"})
    assert (status, answer["status"], answer["callbacks"]) == (200, "PAID", 1)
    status, answer = await gateway.control("xendit", invoice["id"], "settle")
    assert (status, answer["status"]) == (200, "SETTLED")
    await gateway.control("xendit", invoice["id"], "notify")
    paid, settled, duplicate = (r.body for r in await receiver.wait_for(3, "/xendit"))
    assert (paid["payment_method"], paid["bank_code"], paid["payment_channel"]) == (
        "BANK_TRANSFER",
        "BCA",
        "BCA",
    )
    assert paid["payment_destination"].isdigit()
    assert settled["status"] == "SETTLED" and duplicate == settled
    got = await (
        await gateway.client.get(f"/v2/invoices/{invoice['id']}", headers=XENDIT_AUTH)
    ).json()
    assert got["status"] == "SETTLED" and got["bank_code"] == "BCA"


async def test_expire_invoice_api_page_and_its_limits(gateway: Gateway, receiver: Receiver) -> None:
    first = await gateway.invoice()
    expired = await gateway.client.post(f"/invoices/{first['id']}/expire!", headers=XENDIT_AUTH)
    assert expired.status == 200 and (await expired.json())["status"] == "EXPIRED"
    again = await gateway.client.post(f"/invoices/{first['id']}/expire!", headers=XENDIT_AUTH)
    assert again.status == 200  # already expired: answered as it is, no second callback
    (callback,) = await receiver.wait_for(1, "/xendit")
    assert callback.body["status"] == "EXPIRED" and "paid_amount" not in callback.body

    second = await gateway.invoice(failure_redirect_url="https://shop.example.test/failed")
    click = await gateway.client.post(
        f"/web/{second['id']}", data={"action": "expire"}, allow_redirects=False
    )
    assert (click.status, click.headers["Location"]) == (303, "https://shop.example.test/failed")

    third = await gateway.invoice()
    await gateway.control("xendit", third["id"], "pay", {"method": "OVO"})
    paid = await gateway.client.post(f"/invoices/{third['id']}/expire!", headers=XENDIT_AUTH)
    assert paid.status == 404
    callbacks = await receiver.wait_for(3, "/xendit")
    assert callbacks[2].body["ewallet_type"] == "OVO"


async def test_an_overdue_invoice_expires_on_its_own(gateway: Gateway, receiver: Receiver) -> None:
    invoice = await gateway.invoice(invoice_duration=60)
    gateway.clock.now += 61
    (callback,) = await receiver.wait_for(1, "/xendit", within=3)
    assert callback.body["id"] == invoice["id"] and callback.body["status"] == "EXPIRED"


# --- pure rules --------------------------------------------------------------------------


def test_midtrans_retry_counts_follow_the_docs() -> None:
    assert [midtrans.retries_after(s) for s in (200, 204, 301, 302, 303)] == [0] * 5
    assert midtrans.retries_after(500) == 1
    assert midtrans.retries_after(503) == 4
    assert midtrans.retries_after(400) == midtrans.retries_after(404) == 2
    assert midtrans.retries_after(502) == midtrans.retries_after(None) == 5


# --- the process -------------------------------------------------------------------------


def test_the_cli_serves_with_env_keys_and_stops_on_sigterm() -> None:
    port = free_port()
    server_key = "SB-Mid-server-from-env-secret"
    env = {
        **os.environ,
        "AIPORT_PAYGW_PORT": str(port),
        "AIPORT_MIDTRANS_SERVER_KEY": server_key,
        "AIPORT_XENDIT_CALLBACK_TOKEN": "token-from-env-secret",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sandbox.payment_gateway",
            "serve",
            "--host",
            "127.0.0.1",
            "--public-url",
            "http://pay.local.test:8081/",
            "--retry-delays",
            "0.1,0.2",
        ],
        cwd=REPO,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while True:
            try:
                httpx.get(f"{url}/_sandbox/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, "the gateway exited"
                assert time.monotonic() < deadline, "the gateway did not start"
                time.sleep(0.05)
        body = {"transaction_details": {"order_id": "cli-1", "gross_amount": 10000}}
        created = httpx.post(f"{url}/snap/v1/transactions", json=body, headers=basic(server_key))
        assert created.status_code == 201
        assert created.json()["redirect_url"].startswith(
            "http://pay.local.test:8081/snap/v4/redirection/"
        )
        wrong = httpx.post(f"{url}/snap/v1/transactions", json=body, headers=MIDTRANS_AUTH)
        assert wrong.status_code == 401
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    lines = [orjson.loads(line) for line in stderr.splitlines()]
    assert lines[-1]["msg"] == "stopped"
    listening = next(line for line in lines if line["msg"] == "listening")
    assert listening["retry_delays"] == [0.1, 0.2]
    assert server_key not in stderr and "token-from-env-secret" not in stderr
