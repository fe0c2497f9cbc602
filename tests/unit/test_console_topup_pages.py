"""The top-up pages, the receipts and the billing page's top-ups, debt and
low-balance alert, rendered by the real console app through the real gRPC
client (AccountApi) against a fake gateway: a grpc.aio server on a free port
serving TopUps and Account the way the contract says (the person's session in
metadata, JSON bodies, refusals as our public error in trailers). No payments
service, billing or database is needed."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any, cast

import grpc
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiport.v1 import account_pb2, account_pb2_grpc, topups_pb2, topups_pb2_grpc
from google.api import httpbody_pb2
from google.protobuf import struct_pb2

from deploy.local.ports import free_port
from services.console import security
from services.console.account_api import SESSION_METADATA, AccountApi, ApiRefused
from services.console.accounts_client import AccountsClient
from services.console.server import create_app
from services.gateway.errors import PublicError
from tests.unit.test_console_pages import TOKEN, FakeAccounts, NoPrices, csp_clean

HTML = {"Accept": "text/html"}
PAID = "top_paid_01"
WAITING = "top_wait_02"
OTHERS = "top_other_03"
PAY_URL = "https://app.sandbox.midtrans.com/snap/v4/redirection/abc-123"
MAXIMUM = 50_000_000
TOO_MUCH = PublicError(
    400, "invalid_request_error", None, "amount_idr is above the maximum", "amount_idr"
)


def _refuse(status: int, message: str, param: str | None = None) -> PublicError:
    return PublicError(status, "invalid_request_error", None, message, param)


def _order(topup_id: str, status: str, paid: bool) -> topups_pb2.TopUp:
    topup = topups_pb2.TopUp(
        object="topup",
        id=topup_id,
        status=status,
        gateway="midtrans",
        amount_idr="100000",
        fee_idr="700",
        total_idr="100700",
        currency="IDR",
        created=1_796_299_700,
    )
    topup.payment_url.string_value = PAY_URL
    if paid:
        topup.payment_method.string_value = "qris"
        topup.paid_at.number_value = 1_796_300_000
    else:
        topup.payment_method.null_value = struct_pb2.NULL_VALUE
        topup.paid_at.null_value = struct_pb2.NULL_VALUE
    topup.expires_at.number_value = 1_796_386_100
    topup.reversed_idr.null_value = struct_pb2.NULL_VALUE
    return topup


class FakeGateway(topups_pb2_grpc.TopUpsServicer, account_pb2_grpc.AccountServicer):
    """The gateway's TopUps and Account for one account, the session TOKEN's."""

    def __init__(self) -> None:
        self.orders = {PAID: _order(PAID, "paid", True), WAITING: _order(WAITING, "pending", False)}
        self.created: list[dict[str, Any]] = []
        self.alerts: list[dict[str, Any]] = []
        self.threshold = "20000"
        self.debt = "0"
        self.ppn_rate = "11"
        self.not_configured: set[str] = set()
        self.list_queries: list[topups_pb2.TopUpQuery] = []

    async def _check(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        session = dict(context.invocation_metadata() or ()).get(SESSION_METADATA)
        if session != TOKEN:
            await self._abort(context, PublicError(401, "authentication_error", None, "No."))

    async def _abort(self, context: grpc.aio.ServicerContext[Any, Any], error: PublicError) -> None:
        context.set_trailing_metadata(error.trailing_metadata())
        await context.abort(error.grpc_code, error.message)

    async def QuoteTopUp(
        self, request: topups_pb2.TopUpQuoteQuery, context: grpc.aio.ServicerContext[Any, Any]
    ) -> topups_pb2.TopUpQuote:
        await self._check(context)
        if request.gateway in self.not_configured:
            await self._abort(context, _refuse(400, "This gateway is not available.", "gateway"))
        amount = int(request.amount_idr)
        if amount > MAXIMUM:
            await self._abort(context, TOO_MUCH)
        fee = 700 if request.gateway == "midtrans" else 4440
        return topups_pb2.TopUpQuote(
            object="topup_quote",
            gateway=request.gateway,
            amount_idr=str(amount),
            fee_idr=str(fee),
            total_idr=str(amount + fee),
            minimum_idr="10000",
            maximum_idr=str(MAXIMUM),
            currency="IDR",
        )

    async def CreateTopUp(
        self, request: httpbody_pb2.HttpBody, context: grpc.aio.ServicerContext[Any, Any]
    ) -> topups_pb2.TopUp:
        await self._check(context)
        body = orjson.loads(request.data)
        self.created.append(body)
        if int(body["amount_idr"]) > MAXIMUM:
            await self._abort(context, TOO_MUCH)
        topup = _order(f"top_new_{len(self.created)}", "awaiting_payment", False)
        topup.amount_idr = body["amount_idr"]
        topup.gateway = body.get("gateway", "midtrans")
        self.orders[topup.id] = topup
        return topup

    async def ListTopUps(
        self, request: topups_pb2.TopUpQuery, context: grpc.aio.ServicerContext[Any, Any]
    ) -> topups_pb2.TopUpList:
        await self._check(context)
        self.list_queries.append(request)
        page = topups_pb2.TopUpList(object="list", data=list(self.orders.values()), has_more=True)
        page.next_cursor.string_value = "top_cursor_9"
        return page

    async def GetTopUp(
        self, request: topups_pb2.GetTopUpRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> topups_pb2.TopUp:
        await self._check(context)
        if request.topup_id not in self.orders:  # another account's order, or none
            await self._abort(context, _refuse(404, "No such top-up.", "topup_id"))
        return self.orders[request.topup_id]

    async def GetTopUpReceipt(
        self, request: topups_pb2.GetTopUpRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> topups_pb2.TopUpReceipt:
        topup = await self.GetTopUp(request, context)
        if topup.status != "paid":
            await self._abort(context, _refuse(409, "This top-up is not paid yet."))
        charged = self.ppn_rate != "0"
        return topups_pb2.TopUpReceipt(
            object="topup_receipt",
            number=f"KW/2026/12/{topup.id}",
            topup_id=topup.id,
            paid_at=1_796_300_000,
            seller=topups_pb2.ReceiptParty(
                name="PT Aiport Teknologi Indonesia",
                address="Jl. Jend. Sudirman Kav. 1, Jakarta",
                email="billing@aiport.example",
                tax_id="01.234.567.8-901.000",
            ),
            buyer=topups_pb2.ReceiptParty(name="Ana Wijaya", email="ana@example.com"),
            gateway="midtrans",
            payment_method="qris",
            lines=[
                topups_pb2.ReceiptLine(
                    description="Isi saldo aiport / aiport balance top-up", amount_idr="100000"
                )
            ],
            total_idr="100000",
            ppn_rate_percent=self.ppn_rate,
            ppn_idr="9909.91" if charged else "0",
            dpp_idr="90090.09" if charged else "100000",
            currency="IDR",
            amount_in_words="seratus ribu rupiah",
        )

    def _balance(self) -> account_pb2.Balance:
        balance = account_pb2.Balance(
            object="balance",
            currency="IDR",
            balance_idr="150000",
            held_idr="0",
            available_idr="150000",
            debt_idr=self.debt,
        )
        if self.threshold == "0":
            balance.low_balance_alert_idr.null_value = struct_pb2.NULL_VALUE
        else:
            balance.low_balance_alert_idr.string_value = self.threshold
        return balance

    async def GetBalance(
        self, request: account_pb2.GetBalanceRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> account_pb2.Balance:
        await self._check(context)
        return self._balance()

    async def SetBalanceAlert(
        self, request: httpbody_pb2.HttpBody, context: grpc.aio.ServicerContext[Any, Any]
    ) -> account_pb2.Balance:
        await self._check(context)
        body = orjson.loads(request.data)
        self.alerts.append(body)
        if int(body["threshold_idr"]) > 10**12:
            await self._abort(context, _refuse(400, "threshold_idr is too large", "threshold_idr"))
        self.threshold = body["threshold_idr"]
        return self._balance()

    async def ListStatement(
        self, request: account_pb2.StatementQuery, context: grpc.aio.ServicerContext[Any, Any]
    ) -> account_pb2.Statement:
        await self._check(context)
        reversal = account_pb2.StatementEntry(
            id="12",
            created=1_796_400_000,
            kind="reversal",
            amount_idr="-100000",
            balance_after_idr="0",
        )
        novel = account_pb2.StatementEntry(
            id="11",
            created=1_796_390_000,
            kind="cashback",
            amount_idr="500",
            balance_after_idr="100000",
        )
        return account_pb2.Statement(object="list", data=[reversal, novel])

    async def ListUsage(
        self, request: account_pb2.UsageQuery, context: grpc.aio.ServicerContext[Any, Any]
    ) -> account_pb2.UsageList:
        await self._check(context)
        return account_pb2.UsageList(object="list")


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[FakeGateway, str]]:
    fake = FakeGateway()
    server = grpc.aio.server()
    topups_pb2_grpc.add_TopUpsServicer_to_server(fake, server)
    account_pb2_grpc.add_AccountServicer_to_server(fake, server)
    addr = f"127.0.0.1:{free_port()}"
    server.add_insecure_port(addr)
    await server.start()
    try:
        yield fake, addr
    finally:
        await server.stop(None)


@pytest.fixture
async def fake(gateway: tuple[FakeGateway, str]) -> FakeGateway:
    return gateway[0]


@pytest.fixture
async def client(gateway: tuple[FakeGateway, str]) -> AsyncIterator[TestClient[Any, Any]]:
    api = AccountApi(gateway[1])
    app = create_app(NoPrices(), "http://127.0.0.1:8080", cast(AccountsClient, FakeAccounts()), api)
    async with TestClient(TestServer(app)) as test_client:
        test_client.session.cookie_jar.update_cookies({"aiport_session": TOKEN})
        yield test_client
    await api.close()


CSRF = security.csrf_token(TOKEN)


async def _page(client: TestClient[Any, Any], path: str, lang: str = "en") -> tuple[int, str]:
    response = await client.get(path, headers={**HTML, "Accept-Language": lang})
    return response.status, await response.text()


# --- the client --------------------------------------------------------------------------


async def test_the_client_sends_the_session_and_json_and_reads_refusals(
    gateway: tuple[FakeGateway, str],
) -> None:
    fake, addr = gateway
    api = AccountApi(addr)
    try:
        created = await api.create_topup(TOKEN, "50000", "xendit")
        assert fake.created == [{"amount_idr": "50000", "gateway": "xendit"}]
        assert created.status == "awaiting_payment"
        await api.create_topup(TOKEN, "60000", "")  # the API picks the gateway
        assert fake.created[-1] == {"amount_idr": "60000"}
        await api.set_balance_alert(TOKEN, "0")
        assert fake.alerts == [{"threshold_idr": "0"}]
        with pytest.raises(ApiRefused) as refused:
            await api.quote_topup(TOKEN, str(MAXIMUM + 1), "midtrans")
        assert (refused.value.status, refused.value.param) == (400, "amount_idr")
        with pytest.raises(ApiRefused) as refused:
            await api.topup_receipt(TOKEN, WAITING)
        assert refused.value.status == 409
        with pytest.raises(ApiRefused) as refused:
            await api.topup("another-session-" + "x" * 30, PAID)
        assert refused.value.status == 401
    finally:
        await api.close()


# --- the form, the review, paying -------------------------------------------------------


@pytest.mark.parametrize("lang", ["id", "en"])
async def test_the_form_offers_presets_and_lists_the_top_ups(
    client: TestClient[Any, Any], fake: FakeGateway, lang: str
) -> None:
    status, page = await _page(client, "/dashboard/topup?after=top_cursor_1", lang)
    assert status == 200, page
    for hook in (
        'form id="topup-form"',
        'action="/dashboard/topup/review"',
        f'name="csrf_token" value="{CSRF}"',
        'name="preset" value="50000"',
        'name="preset" value="500000"',
        "Rp 250.000",
        'name="amount_idr"',
        'id="topup-review-submit"',
        "Rp 10.000",  # the limits, from the quote
        "Rp 50.000.000",
        'id="topup-available" data-idr="150000"',
        f'tr class="topup-row" data-topup-id="{PAID}" data-status="paid"',
        f'href="/dashboard/topup/{PAID}/receipt"',
        f'href="/dashboard/topup/{WAITING}"',
        'id="topups-next" class="button secondary" href="/dashboard/topup?after=top_cursor_9"',
    ):
        assert hook in page, hook
    assert f'href="/dashboard/topup/{WAITING}/receipt"' not in page  # unpaid: no receipt
    assert ('<td class="status">Diproses</td>' if lang == "id" else "Processing</td>") in page
    assert fake.list_queries[-1].after == "top_cursor_1"
    assert 'id="topup-debt"' not in page
    csp_clean(page)


async def test_no_gateway_no_form(client: TestClient[Any, Any], fake: FakeGateway) -> None:
    fake.not_configured = {"midtrans", "xendit"}
    status, page = await _page(client, "/dashboard/topup")
    assert status == 200
    assert 'id="topup-unavailable"' in page and 'id="topup-form"' not in page


@pytest.mark.parametrize("lang", ["id", "en"])
async def test_the_review_shows_each_gateways_fee_and_total_before_paying(
    client: TestClient[Any, Any], lang: str
) -> None:
    response = await client.post(
        "/dashboard/topup/review",
        data={"csrf_token": CSRF, "amount_idr": "Rp 100.000"},
        headers={**HTML, "Accept-Language": lang},
    )
    page = await response.text()
    assert response.status == 200, page
    for hook in (
        'id="review-amount" data-idr="100000"',
        'tr class="quote-row" data-gateway="midtrans"',
        'class="money fee" data-idr="700"',
        'class="money total" data-idr="100700"',
        'tr class="quote-row" data-gateway="xendit"',
        'class="money total" data-idr="104440"',
        'name="gateway" value="xendit"',
        'name="amount_idr" value="100000"',
        'action="/dashboard/topup"',
        "Rp 100.700",
        'id="review-change"',
    ):
        assert hook in page, hook
    csp_clean(page)


async def test_a_gateway_the_api_refuses_is_not_offered(
    client: TestClient[Any, Any], fake: FakeGateway
) -> None:
    fake.not_configured = {"xendit"}
    response = await client.post(
        "/dashboard/topup/review", data={"csrf_token": CSRF, "preset": "50000"}, headers=HTML
    )
    page = await response.text()
    assert response.status == 200
    assert 'data-gateway="midtrans"' in page and 'data-gateway="xendit"' not in page


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("", "This field is required."),
        ("12,5", "Write a whole-rupiah amount, e.g. 100000 or 100.000."),
        ("9000", "The minimum is Rp 10.000."),
        (str(MAXIMUM + 1), "This amount cannot be topped up. Check the limits below."),
    ],
)
async def test_a_bad_amount_is_shown_on_the_form(
    client: TestClient[Any, Any], amount: str, message: str
) -> None:
    response = await client.post(
        "/dashboard/topup/review",
        data={"csrf_token": CSRF, "amount_idr": amount},
        headers={**HTML, "Accept-Language": "en"},
    )
    page = await response.text()
    assert response.status == 400, page
    assert f'<span class="error" role="alert" id="amount_idr-error">{message}</span>' in page
    assert 'aria-invalid="true"' in page
    if amount:
        assert f'value="{amount}"' in page  # what was typed, to correct it


async def test_paying_creates_the_order_and_sends_the_browser_to_the_gateway(
    client: TestClient[Any, Any], fake: FakeGateway
) -> None:
    response = await client.post(
        "/dashboard/topup",
        data={"csrf_token": CSRF, "amount_idr": "100000", "gateway": "xendit"},
        allow_redirects=False,
    )
    assert response.status == 303
    assert response.headers["Location"] == "/dashboard/topup/top_new_1/pay"
    assert fake.created == [{"amount_idr": "100000", "gateway": "xendit"}]
    status, page = await _page(client, "/dashboard/topup/top_new_1/pay")
    assert status == 200
    # A meta refresh, not a redirect of the form's POST: the CSP's form-action.
    assert f'<meta http-equiv="refresh" content="0;url={PAY_URL}">' in page
    assert f'id="pay-continue" class="button" href="{PAY_URL}"' in page
    csp_clean(page)
    # Paid already: the order's page, not the payment page again.
    paid = await client.get(f"/dashboard/topup/{PAID}/pay", allow_redirects=False)
    assert paid.status == 303 and paid.headers["Location"] == f"/dashboard/topup/{PAID}"


async def test_paying_needs_the_csrf_token_and_a_refused_amount_comes_back_to_the_form(
    client: TestClient[Any, Any], fake: FakeGateway
) -> None:
    forged = await client.post(
        "/dashboard/topup", data={"amount_idr": "100000", "gateway": "midtrans"}, headers=HTML
    )
    assert forged.status == 403 and fake.created == []
    refused = await client.post(
        "/dashboard/topup",
        data={"csrf_token": CSRF, "amount_idr": str(MAXIMUM + 5), "gateway": "midtrans"},
        headers={**HTML, "Accept-Language": "id"},
    )
    page = await refused.text()
    assert refused.status == 400
    assert 'id="amount_idr-error">Jumlah ini tidak dapat diisi.' in page


# --- the order page ---------------------------------------------------------------------


@pytest.mark.parametrize("lang", ["id", "en"])
async def test_the_order_follows_the_api_never_the_query(
    client: TestClient[Any, Any], lang: str
) -> None:
    # The payment gateway's return URL says "settlement"; the API says pending.
    status, page = await _page(
        client,
        f"/dashboard/topup/{WAITING}?order_id={WAITING}&status_code=200"
        "&transaction_status=settlement",
        lang,
    )
    assert status == 200, page
    assert f'data-topup-id="{WAITING}" data-status="pending"' in page
    assert 'id="topup-waiting"' in page and 'id="topup-paid"' not in page
    assert f'<meta http-equiv="refresh" content="30;url=/dashboard/topup/{WAITING}">' in page
    assert f'id="topup-continue" class="button" href="{PAY_URL}"' in page
    assert 'id="topup-balance" data-idr="150000"' in page
    assert 'id="topup-expires-at"' in page
    assert "settlement" not in page
    csp_clean(page)


async def test_a_paid_order_stops_refreshing_and_links_its_receipt(
    client: TestClient[Any, Any],
) -> None:
    status, page = await _page(client, f"/dashboard/topup/{PAID}", "id")
    assert status == 200
    assert 'http-equiv="refresh"' not in page
    assert 'id="topup-status">Dibayar<' in page and 'id="topup-paid"' in page
    assert 'id="topup-method">QRIS<' in page
    assert 'id="topup-paid-at">3 Des 2026 19.13 WIB<' in page
    receipt = f'id="topup-receipt" class="button secondary" href="/dashboard/topup/{PAID}/receipt"'
    assert receipt in page


@pytest.mark.parametrize(
    "path",
    [
        f"/dashboard/topup/{OTHERS}",
        f"/dashboard/topup/{OTHERS}/receipt",
        f"/dashboard/topup/{OTHERS}/receipt.pdf",
        f"/dashboard/topup/{OTHERS}/pay",
        "/dashboard/topup/..%2Fkeys",
    ],
)
async def test_another_accounts_order_is_not_found(client: TestClient[Any, Any], path: str) -> None:
    status, page = await _page(client, path)
    assert status == 404, page
    assert "Page not found" in page


# --- receipts ---------------------------------------------------------------------------


@pytest.mark.parametrize("lang", ["id", "en"])
async def test_the_receipt_page(client: TestClient[Any, Any], lang: str) -> None:
    status, page = await _page(client, f"/dashboard/topup/{PAID}/receipt", lang)
    assert status == 200, page
    for hook in (
        f'id="receipt-number">KW/2026/12/{PAID}<',
        'id="receipt-seller">PT Aiport Teknologi Indonesia<',
        "01.234.567.8-901.000",
        "Ana Wijaya, ana@example.com",
        'id="receipt-amount" data-idr="100000">Rp 100.000<',
        "<em>seratus ribu rupiah</em>",
        "Isi saldo aiport / aiport balance top-up",
        'id="receipt-dpp"',
        "Rp 90.090,09",
        'id="receipt-ppn"',
        "Rp 9.909,91",
        f'id="receipt-pdf" class="button" href="/dashboard/topup/{PAID}/receipt.pdf"',
        'id="print-receipt"',
    ):
        assert hook in page, hook
    assert ("Telah terima dari" if lang == "id" else "Received from") in page
    csp_clean(page)


async def test_no_ppn_line_when_the_operator_charges_none(
    client: TestClient[Any, Any], fake: FakeGateway
) -> None:
    fake.ppn_rate = "0"
    status, page = await _page(client, f"/dashboard/topup/{PAID}/receipt")
    assert status == 200
    assert 'id="receipt-ppn"' not in page and 'id="receipt-dpp"' not in page


async def test_the_receipt_pdf_downloads(client: TestClient[Any, Any]) -> None:
    response = await client.get(f"/dashboard/topup/{PAID}/receipt.pdf")
    body = await response.read()
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/pdf"
    assert response.headers["Content-Disposition"] == (
        f'attachment; filename="kwitansi-KW-2026-12-{PAID}.pdf"'
    )
    assert response.headers["Cache-Control"] == "no-store"
    assert body.startswith(b"%PDF-") and body.rstrip().endswith(b"%%EOF")


@pytest.mark.parametrize("suffix", ["receipt", "receipt.pdf"])
async def test_an_unpaid_orders_receipt_is_a_friendly_409(
    client: TestClient[Any, Any], suffix: str
) -> None:
    status, page = await _page(client, f"/dashboard/topup/{WAITING}/{suffix}", "id")
    assert status == 409
    assert 'id="receipt-unpaid"' in page and "Kwitansi belum tersedia" in page
    assert f'href="/dashboard/topup/{WAITING}"' in page


# --- billing ----------------------------------------------------------------------------


@pytest.mark.parametrize("lang", ["id", "en"])
async def test_billing_shows_top_ups_the_alert_and_the_new_kinds(
    client: TestClient[Any, Any], lang: str
) -> None:
    status, page = await _page(client, "/dashboard/billing", lang)
    assert status == 200, page
    for hook in (
        f'tr class="billing-topup" data-topup-id="{PAID}" data-status="paid"',
        f'href="/dashboard/topup/{PAID}/receipt"',
        'id="billing-topups-all"',
        'form id="balance-alert"',
        'action="/dashboard/billing/alert"',
        'id="alert-current" data-idr="20000"',
        'name="threshold_idr"',
        'value="20000"',
        'id="alert-clear"',
        'data-kind="reversal"',
        "Isi saldo ditarik kembali" if lang == "id" else "Top-up reversed",
        '<td class="kind">cashback</td>',  # a kind with no words yet: its name, no 500
    ):
        assert hook in page, hook
    assert f'href="/dashboard/topup/{WAITING}/receipt"' not in page
    assert 'id="billing-debt"' not in page
    csp_clean(page)


async def test_billing_warns_of_a_debt(client: TestClient[Any, Any], fake: FakeGateway) -> None:
    fake.debt = "35000.5"
    status, page = await _page(client, "/dashboard/billing", "en")
    assert status == 200
    assert 'id="billing-debt" role="alert" data-idr="35000.5"' in page
    assert "Your account owes Rp 35.000,50" in page
    assert "suspended" in page and 'id="billing-debt-topup"' in page
    _, topup_page = await _page(client, "/dashboard/topup", "en")
    assert "pays the debt of Rp 35.000,50 first" in topup_page


async def test_the_low_balance_alert_is_set_and_turned_off(
    client: TestClient[Any, Any], fake: FakeGateway
) -> None:
    saved = await client.post(
        "/dashboard/billing/alert",
        data={"csrf_token": CSRF, "threshold_idr": "Rp 75.000", "action": "save"},
        allow_redirects=False,
    )
    assert saved.status == 303 and saved.headers["Location"] == "/dashboard/billing?alert=1#alert"
    assert fake.alerts == [{"threshold_idr": "75000"}]
    _, page = await _page(client, "/dashboard/billing?alert=1")
    assert 'id="alert-saved"' in page and "Current threshold: Rp 75.000." in page
    off = await client.post(
        "/dashboard/billing/alert",
        data={"csrf_token": CSRF, "threshold_idr": "75000", "action": "off"},
        allow_redirects=False,
    )
    assert off.status == 303 and fake.alerts[-1] == {"threshold_idr": "0"}
    _, page = await _page(client, "/dashboard/billing", "id")
    assert "Peringatan tidak aktif." in page and 'id="alert-clear"' not in page


@pytest.mark.parametrize(
    ("typed", "status", "message"),
    [
        ("", 400, "This field is required."),
        ("dua puluh ribu", 400, "Write a whole-rupiah threshold above 0, e.g. 20000."),
        # The API's refusal (here: too large) is shown on the field too.
        ("9" * 13, 400, "Write a whole-rupiah threshold above 0, e.g. 20000."),
    ],
)
async def test_a_bad_threshold_is_shown_on_the_form(
    client: TestClient[Any, Any], typed: str, status: int, message: str
) -> None:
    response = await client.post(
        "/dashboard/billing/alert",
        data={"csrf_token": CSRF, "threshold_idr": typed, "action": "save"},
        headers={**HTML, "Accept-Language": "en"},
    )
    page = await response.text()
    assert response.status == status, page
    assert re.search(
        r'<span class="error" role="alert" id="threshold_idr-error">' + re.escape(message), page
    )
