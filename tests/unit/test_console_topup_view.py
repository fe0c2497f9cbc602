"""The top-up pages' pure rules: the amount a person types, the threshold of
the low-balance alert, which gateways are offered, an order as a row, and when
the order page reloads itself."""

from __future__ import annotations

import pytest
from aiport.v1 import topups_pb2
from google.protobuf import struct_pb2

from services.console import topup_view
from services.console.account_api import ApiRefused, ApiUnavailable


@pytest.mark.parametrize(
    ("typed", "amount"),
    [
        ("100000", 100_000),
        ("100.000", 100_000),
        ("100,000", 100_000),
        ("Rp 100.000", 100_000),
        ("Rp100.000", 100_000),
        ("IDR 1.250.000", 1_250_000),
        ("  250000 ", 250_000),
        ("1 000 000", 1_000_000),
        ("0010000", 10_000),
        ("100000,50", None),  # rupiah only: gateways take whole IDR
        ("100.00", None),  # not a thousands group
        ("100.000,00", None),
        ("1.00.000", None),
        ("100,000.000", None),  # mixed separators
        ("-50000", None),
        ("5e4", None),
        ("", None),
        ("abc", None),
        ("١٢٣٤٥", None),  # digits of another script are not ours to guess
        ("9" * 14, None),  # too many digits to be a top-up
    ],
)
def test_amounts_as_people_write_them(typed: str, amount: int | None) -> None:
    assert topup_view.parse_amount(typed) == amount


def test_a_preset_button_wins_over_the_free_field() -> None:
    form = topup_view.amount_form({"preset": "250000", "amount_idr": "75000"})
    assert form.ok and form.values["amount_idr"] == "250000"
    typed = topup_view.amount_form({"preset": "", "amount_idr": "75.000", "gateway": "xendit"})
    assert typed.ok and typed.values == {"amount_idr": "75000", "gateway": "xendit"}


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ({}, "form.required"),
        ({"amount_idr": "  "}, "form.required"),
        ({"amount_idr": "sepuluh ribu"}, "topup.amount_invalid"),
        ({"amount_idr": "9.999"}, "topup.amount_too_small"),
        ({"amount_idr": "0"}, "topup.amount_too_small"),
    ],
)
def test_amount_refusals_name_the_field_and_keep_what_was_typed(
    raw: dict[str, str], error: str
) -> None:
    form = topup_view.amount_form(raw)
    assert form.errors == {"amount_idr": error}
    assert form.values["amount_idr"] == raw.get("amount_idr", "").strip()


def test_the_minimum_itself_is_allowed_and_an_unknown_gateway_is_dropped() -> None:
    form = topup_view.amount_form({"amount_idr": "10.000", "gateway": "paypal"})
    assert form.ok and form.values == {"amount_idr": "10000", "gateway": ""}


def test_the_alert_threshold() -> None:
    assert topup_view.threshold_form({"threshold_idr": "20.000"}).values == {
        "threshold_idr": "20000"
    }
    assert topup_view.threshold_form({"action": "off", "threshold_idr": "x"}).values == {
        "threshold_idr": "0"
    }
    assert topup_view.threshold_form({"threshold_idr": ""}).errors == {
        "threshold_idr": "form.required"
    }
    for bad in ("0", "-5", "12,5", "lots"):
        assert topup_view.threshold_form({"threshold_idr": bad}).errors == {
            "threshold_idr": "billing.alert_invalid"
        }, bad


Answers = dict[str, topups_pb2.TopUpQuote | Exception]


def _quote(
    gateway: str, minimum: str = "10000", maximum: str = "50000000"
) -> topups_pb2.TopUpQuote:
    return topups_pb2.TopUpQuote(
        gateway=gateway,
        amount_idr="100000",
        fee_idr="4440",
        total_idr="104440",
        minimum_idr=minimum,
        maximum_idr=maximum,
    )


def test_a_gateway_is_offered_when_it_quotes_or_only_the_amount_is_refused() -> None:
    amount_refused = ApiRefused(400, "amount_idr must be at most 5000000", "amount_idr")
    answers: Answers = {"midtrans": _quote("midtrans"), "xendit": amount_refused}
    assert topup_view.offered(answers) == ["midtrans", "xendit"]
    not_configured = ApiRefused(400, "gateway xendit is not available", "gateway")
    answers = {"midtrans": ApiUnavailable("503"), "xendit": not_configured}
    assert topup_view.offered(answers) == []
    assert topup_view.offered({"xendit": _quote("xendit")}) == ["xendit"]


def test_limits_are_the_widest_the_quoting_gateways_take() -> None:
    answers: Answers = {
        "midtrans": _quote("midtrans", "10000", "20000000"),
        "xendit": _quote("xendit", "15000", "50000000"),
    }
    assert topup_view.limits(answers) == topup_view.Limits("10000", "50000000")
    # No quote: the floor, no known maximum; never below the floor.
    assert topup_view.limits({}) == topup_view.Limits("10000", None)
    low: Answers = {"midtrans": _quote("midtrans", "1000", "")}
    assert topup_view.limits(low) == topup_view.Limits("10000", None)


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        ("https://app.sandbox.midtrans.com/snap/v4/redirection/abc", True),
        ("http://127.0.0.1:18080/midtrans/pay/abc?x=1", True),
        ("javascript:alert(1)", False),
        ("//evil.example/pay", False),
        ("/dashboard", False),
        ("https://ok.example/a b", False),
        ("https://ok.example/a\\b", False),
        ("", False),
    ],
)
def test_only_http_payment_pages_are_followed(url: str, kept: bool) -> None:
    assert topup_view.payment_link(url) == (url if kept else "")


def test_the_order_page_reloads_only_while_the_payment_is_open() -> None:
    created = 1_800_000_000
    assert topup_view.refresh_seconds("awaiting_payment", created, created + 10) == 3
    assert topup_view.refresh_seconds("pending", created, created + 15 * 60) == 3
    assert topup_view.refresh_seconds("pending", created, created + 15 * 60 + 1) == 30
    for final in ("paid", "expired", "cancelled", "failed", "refunded", "charged_back"):
        assert topup_view.refresh_seconds(final, created, created) is None


def test_an_order_as_a_row() -> None:
    topup = topups_pb2.TopUp(
        id="top_01J9",
        status="paid",
        gateway="midtrans",
        amount_idr="100000",
        fee_idr="700",
        total_idr="100700",
        created=1_796_299_700,
    )
    topup.payment_url.string_value = "https://app.sandbox.midtrans.com/snap/v4/redirection/x"
    topup.payment_method.string_value = "bca_va"
    topup.paid_at.number_value = 1_796_300_000
    topup.expires_at.null_value = struct_pb2.NULL_VALUE
    topup.reversed_idr.null_value = struct_pb2.NULL_VALUE
    row = topup_view.topup_row(topup, "id", "Asia/Jayapura")
    assert row["url"] == "/dashboard/topup/top_01J9"
    assert row["receipt_url"] == "/dashboard/topup/top_01J9/receipt"
    assert row["status_label"] == "Dibayar"
    assert (row["gateway"], row["method"]) == ("Midtrans", "BCA Virtual Account")
    assert row["paid_at"].endswith("WIT") and row["expires_at"] == "" and row["reversed_idr"] == ""
    assert row["iso_created"].endswith("+09:00")
    unpaid = topups_pb2.TopUp(id="top_x", status="bogus_state", created=1_796_299_700)
    unpaid.paid_at.null_value = struct_pb2.NULL_VALUE
    row = topup_view.topup_row(unpaid, "en", "UTC")
    # No receipt before it is paid; a status we have no words for shows as sent.
    assert row["receipt_url"] == "" and row["status_label"] == "bogus_state"
    assert row["method"] == "" and row["payment_url"] == ""


def test_every_status_has_words_in_both_languages() -> None:
    for status in topup_view.STATUSES:
        assert topup_view.status_label("id", status) != status
        assert topup_view.status_label("en", status) != status


def test_positive_amounts() -> None:
    assert topup_view.positive("0.5") and topup_view.positive("25000")
    for text in ("0", "0.000", "", "-1", "NaN", "abc"):
        assert not topup_view.positive(text), text


def test_method_names() -> None:
    assert topup_view.method_name("qris") == "QRIS"
    assert topup_view.method_name("new_wallet") == "NEW WALLET"
    assert topup_view.method_name("") == ""


def test_cursors_and_next_page() -> None:
    assert topup_view.cursor("MTpqb2Jf") == "MTpqb2Jf"
    assert topup_view.cursor("x y") == "" and topup_view.cursor("<script>") == ""
    page = topups_pb2.TopUpList(has_more=True)
    page.next_cursor.string_value = "top_9"
    assert topup_view.next_url(page) == "/dashboard/topup?after=top_9"
    page.has_more = False
    assert topup_view.next_url(page) == ""
