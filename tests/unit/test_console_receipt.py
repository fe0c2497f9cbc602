"""The kwitansi: its view made from the API's receipt (PPN shown only when
charged), and the PDF: a real PDF whose text says the number, the buyer, the
amount in figures and in words. The PDF's text is read back by inflating its
content streams (no PDF library: fpdf2 only writes)."""

from __future__ import annotations

import re
import zlib
from functools import partial

import pytest
from aiport.v1 import topups_pb2

from services.console import i18n, receipt

NUMBER = "KW/2026/12/top_01J9ABC"


def _receipt(ppn_rate: str = "11", buyer: str = "Budi Santoso") -> topups_pb2.TopUpReceipt:
    return topups_pb2.TopUpReceipt(
        object="topup_receipt",
        number=NUMBER,
        topup_id="top_01J9ABC",
        paid_at=1_796_300_000,  # 2026-12-03 12:13:20 UTC
        seller=topups_pb2.ReceiptParty(
            name="PT Aiport Teknologi Indonesia",
            address="Jl. Jend. Sudirman Kav. 1, Jakarta 10220",
            email="billing@aiport.example",
            tax_id="01.234.567.8-901.000",
        ),
        buyer=topups_pb2.ReceiptParty(name=buyer, email="budi@example.com"),
        gateway="midtrans",
        payment_method="qris",
        lines=[
            topups_pb2.ReceiptLine(
                description="Isi saldo aiport / aiport balance top-up", amount_idr="250000"
            )
        ],
        total_idr="250000",
        ppn_rate_percent=ppn_rate,
        ppn_idr="24774.77" if ppn_rate != "0" else "0",
        dpp_idr="225225.23" if ppn_rate != "0" else "250000",
        currency="IDR",
        amount_in_words="dua ratus lima puluh ribu rupiah",
    )


def test_the_view_in_the_persons_language_and_zone() -> None:
    view = receipt.receipt_view(_receipt(), "id", "Asia/Jakarta")
    assert view.number == NUMBER
    assert view.paid_date == "3 Des 2026"
    assert view.paid_time == "3 Des 2026 19.13 WIB"
    assert (view.gateway, view.method) == ("Midtrans", "QRIS")
    assert view.has_ppn and view.ppn_rate == "11"
    assert view.filename == "kwitansi-KW-2026-12-top_01J9ABC.pdf"
    assert receipt.receipt_view(_receipt(), "en", "Asia/Jayapura").paid_time == (
        "3 Dec 2026, 21:13 WIT"
    )


@pytest.mark.parametrize(
    ("rate", "lang", "shown"),
    [("11", "id", "11"), ("11.5", "id", "11,5"), ("11.50", "en", "11.5"), ("12", "en", "12")],
)
def test_ppn_rates(rate: str, lang: str, shown: str) -> None:
    assert receipt.rate_text(rate, lang) == shown


@pytest.mark.parametrize("rate", ["0", "0.00", "", "-1", "abc", "NaN"])
def test_no_ppn_line_without_a_rate(rate: str) -> None:
    assert receipt.rate_text(rate, "id") == ""
    assert not receipt.receipt_view(_receipt(ppn_rate=rate), "id", "UTC").has_ppn


def test_a_filename_is_safe_whatever_the_number() -> None:
    weird = _receipt()
    weird.number = 'KW/2026/"12"\r\n;x=1'
    name = receipt.receipt_view(weird, "en", "UTC").filename
    assert re.fullmatch(r"kwitansi-[A-Za-z0-9_.-]+\.pdf", name), name


def test_text_for_the_standard_fonts() -> None:
    assert receipt.pdf_text("Budi Santoso — “BS”") == "Budi Santoso — “BS”"  # Windows-1252 has them
    assert receipt.pdf_text("Śri Ayu Dewi") == "Sri Ayu Dewi"
    assert receipt.pdf_text("Nguyễn Đức") == "Nguyen Duc"
    assert receipt.pdf_text("王小明 Wang") == "??? Wang"


def _page_text(pdf: bytes) -> str:
    """The text drawn by the PDF's content streams, decoded as the fonts encode it."""
    chunks = []
    for stream in re.findall(rb"stream\r?\n(.*?)\r?\nendstream", pdf, re.S):
        try:
            content = zlib.decompress(stream)
        except zlib.error:
            content = stream
        for literal in re.findall(rb"\(((?:[^()\\]|\\.)*)\)\s*Tj", content):
            chunks.append(re.sub(rb"\\(.)", rb"\1", literal).decode("cp1252"))
    return "\n".join(chunks)


@pytest.mark.parametrize("lang", ["id", "en"])
def test_the_pdf_says_who_paid_what(lang: str) -> None:
    view = receipt.receipt_view(_receipt(), lang, "Asia/Jakarta")
    pdf = receipt.build_pdf(view, partial(i18n.translate, lang))
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    assert b"/FlateDecode" in pdf  # compressed like any PDF we send
    text = _page_text(pdf)
    for expected in (
        NUMBER,
        "PT Aiport Teknologi Indonesia",
        "01.234.567.8-901.000",
        "Budi Santoso, budi@example.com",
        "Rp 250.000",
        "dua ratus lima puluh ribu rupiah",
        "Rp 225.225,23",
        "Rp 24.774,77",
        i18n.translate(lang, "receipt.received_from"),
        i18n.translate(lang, "receipt.ppn", rate="11"),
        i18n.translate(lang, "receipt.purpose"),
    ):
        assert expected in text, expected


def test_without_ppn_the_pdf_has_no_tax_lines_and_the_same_receipt_is_the_same_bytes() -> None:
    view = receipt.receipt_view(_receipt(ppn_rate="0"), "en", "UTC")
    label = partial(i18n.translate, "en")
    pdf = receipt.build_pdf(view, label, compress=False)
    assert b"/FlateDecode" not in pdf
    text = _page_text(pdf)
    assert NUMBER in text and "Rp 250.000" in text
    assert "PPN" not in text and "DPP" not in text
    assert receipt.build_pdf(view, label, compress=False) == pdf


def test_a_name_outside_the_fonts_still_makes_a_receipt() -> None:
    view = receipt.receipt_view(_receipt(buyer="Łukasz Nguyễn 王"), "id", "UTC")
    text = _page_text(receipt.build_pdf(view, partial(i18n.translate, "id")))
    assert "Lukasz Nguyen ?, budi@example.com" in text
