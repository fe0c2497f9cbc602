"""The kwitansi (receipt) of a paid top-up: what the HTML page and the PDF show,
made from the API's TopUpReceipt, and the PDF itself.

A kwitansi says who received how much from whom and for what: its number and
date, the buyer ("telah terima dari"), the amount in figures and in words
("terbilang", written by the API), the lines, and the seller's company
details. When the operator charges PPN, the tax is inside the total: the
receipt shows the tax base (DPP) and the PPN so the buyer can book them.

The PDF uses the PDF standard fonts (fpdf2, pure Python: nothing to install on
the machine). Those fonts cover Windows-1252, so a name with other letters is
written with its accents dropped where that keeps it readable.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Final

from aiport.v1 import topups_pb2
from fpdf import FPDF
from fpdf.enums import XPos, YPos

from services.console import times, topup_view
from services.console.money import format_idr

PDF_ENCODING: Final = "windows-1252"  # what the standard fonts can draw
_FILENAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
# Latin letters that carry their mark in the letter itself (no NFKD decomposition).
_PLAIN_LETTERS: Final = str.maketrans("ŁłĐđĦħı", "LlDdHhi")


@dataclass(frozen=True)
class Party:
    name: str
    address: str
    email: str
    tax_id: str


@dataclass(frozen=True)
class Line:
    description: str
    amount_idr: str


@dataclass(frozen=True)
class ReceiptView:
    number: str
    topup_id: str
    paid_date: str  # the day, in the person's zone
    paid_time: str  # day and time, in the person's zone
    paid_at: datetime
    seller: Party
    buyer: Party
    gateway: str
    method: str
    lines: tuple[Line, ...]
    total_idr: str
    amount_in_words: str
    # Shown only when the operator charges PPN (rate not 0).
    ppn_rate: str
    ppn_idr: str
    dpp_idr: str

    @property
    def has_ppn(self) -> bool:
        return bool(self.ppn_rate)

    @property
    def filename(self) -> str:
        """`kwitansi-KW-2026-12-<order>.pdf`: the number, safe in a header and on disk."""
        return "kwitansi-" + _FILENAME_UNSAFE.sub("-", self.number).strip("-") + ".pdf"


def _party(party: topups_pb2.ReceiptParty) -> Party:
    return Party(party.name, party.address, party.email, party.tax_id)


def rate_text(rate_percent: str, lang: str) -> str:
    """The PPN rate as the language writes it ('' for none): `11`, `11,5` (id)."""
    try:
        rate = Decimal(rate_percent) if rate_percent else Decimal(0)
    except InvalidOperation:
        return ""
    if not rate.is_finite() or rate <= 0:
        return ""
    text = format(rate.normalize(), "f")
    return text.replace(".", ",") if lang == "id" else text


def receipt_view(receipt: topups_pb2.TopUpReceipt, lang: str, zone: str) -> ReceiptView:
    paid_at = times.to_datetime(receipt.paid_at).astimezone(times.zone(zone))
    return ReceiptView(
        number=receipt.number,
        topup_id=receipt.topup_id,
        paid_date=times.format_date(receipt.paid_at, lang, zone),
        paid_time=times.format_datetime(receipt.paid_at, lang, zone),
        paid_at=paid_at,
        seller=_party(receipt.seller),
        buyer=_party(receipt.buyer),
        gateway=topup_view.gateway_name(receipt.gateway),
        method=topup_view.method_name(receipt.payment_method),
        lines=tuple(Line(line.description, line.amount_idr) for line in receipt.lines),
        total_idr=receipt.total_idr,
        amount_in_words=receipt.amount_in_words,
        ppn_rate=rate_text(receipt.ppn_rate_percent, lang),
        ppn_idr=receipt.ppn_idr,
        dpp_idr=receipt.dpp_idr,
    )


def pdf_text(text: str) -> str:
    """`text` in the characters the standard PDF fonts draw: as is when it fits,
    else with accents dropped (Ś -> S), else `?` per character."""
    try:
        text.encode(PDF_ENCODING)
        return text
    except UnicodeEncodeError:
        pass
    out = []
    for ch in text:
        try:
            ch.encode(PDF_ENCODING)
            out.append(ch)
            continue
        except UnicodeEncodeError:
            pass
        plain = "".join(
            c
            for c in unicodedata.normalize("NFKD", ch.translate(_PLAIN_LETTERS))
            if not unicodedata.combining(c)
        )
        try:
            plain.encode(PDF_ENCODING)
            out.append(plain or "?")
        except UnicodeEncodeError:
            out.append("?")
    return "".join(out)


# Page geometry, in millimetres (A4 portrait, printable margins).
_MARGIN: Final = 18.0
_LABEL_W: Final = 48.0
_LINE_H: Final = 6.0


def build_pdf(view: ReceiptView, label: Callable[..., str], compress: bool = True) -> bytes:
    """The receipt as a PDF. `label(key, **values)` gives the page's words in the
    person's language (i18n keys `receipt.*`). Made from the receipt alone, its
    creation date the payment's, so the same receipt is the same bytes."""
    pdf = FPDF(orientation="portrait", unit="mm", format="A4")
    pdf.core_fonts_encoding = PDF_ENCODING
    pdf.set_compression(compress)
    pdf.set_creation_date(view.paid_at)
    pdf.set_title(pdf_text(f"{label('receipt.title')} {view.number}"))
    pdf.set_author(pdf_text(view.seller.name))
    pdf.set_margins(_MARGIN, _MARGIN, _MARGIN)
    pdf.set_auto_page_break(True, _MARGIN)
    pdf.add_page()
    width = pdf.w - 2 * _MARGIN

    def text(value: str, size: float = 10, style: str = "", align: str = "L") -> None:
        pdf.set_font("helvetica", style=style, size=size)
        pdf.multi_cell(
            width, _LINE_H, pdf_text(value), align=align, new_x=XPos.LMARGIN, new_y=YPos.NEXT
        )

    def row(name: str, value: str, style: str = "") -> None:
        pdf.set_font("helvetica", size=10)
        pdf.cell(_LABEL_W, _LINE_H, pdf_text(name))
        pdf.set_font("helvetica", style=style, size=10)
        pdf.multi_cell(
            width - _LABEL_W, _LINE_H, pdf_text(value), new_x=XPos.LMARGIN, new_y=YPos.NEXT
        )

    def money_row(name: str, amount_idr: str, style: str = "", size: float = 10) -> None:
        pdf.set_font("helvetica", style=style, size=size)
        pdf.cell(width - 45, _LINE_H, pdf_text(name))
        pdf.cell(
            45, _LINE_H, format_idr(amount_idr), align="R", new_x=XPos.LMARGIN, new_y=YPos.NEXT
        )

    def rule() -> None:
        pdf.ln(2)
        pdf.line(_MARGIN, pdf.get_y(), _MARGIN + width, pdf.get_y())
        pdf.ln(3)

    # The seller's letterhead.
    text(view.seller.name, 14, "B")
    for detail in (view.seller.address, view.seller.email):
        if detail:
            text(detail, 9)
    if view.seller.tax_id:
        text(f"{label('receipt.tax_id')}: {view.seller.tax_id}", 9)
    rule()
    text(label("receipt.title").upper(), 16, "B", "C")
    text(f"{label('receipt.number')}: {view.number}", 10, "", "C")
    pdf.ln(4)

    row(label("receipt.date"), view.paid_date)
    buyer = ", ".join(part for part in (view.buyer.name, view.buyer.email) if part)
    row(label("receipt.received_from"), buyer)
    if view.buyer.address:
        row("", view.buyer.address)
    if view.buyer.tax_id:
        row(label("receipt.tax_id"), view.buyer.tax_id)
    row(label("receipt.amount"), format_idr(view.total_idr), "B")
    row(label("receipt.in_words"), view.amount_in_words, "I")
    row(label("receipt.for"), label("receipt.purpose"))
    row(label("receipt.payment"), " - ".join(p for p in (view.gateway, view.method) if p))
    rule()

    for line in view.lines:
        money_row(line.description, line.amount_idr)
    money_row(label("receipt.total"), view.total_idr, "B")
    if view.has_ppn:
        # The tax is inside the total, not on top of it: shown after it, for the books.
        pdf.ln(2)
        text(label("receipt.ppn_included"), 9, "I")
        money_row(label("receipt.dpp"), view.dpp_idr, size=9)
        money_row(label("receipt.ppn", rate=view.ppn_rate), view.ppn_idr, size=9)
    rule()

    text(f"{view.paid_date}", 10, "", "R")
    text(label("receipt.received_by"), 10, "", "R")
    pdf.ln(4)
    text(view.seller.name, 10, "B", "R")
    pdf.ln(6)
    text(label("receipt.electronic"), 8, "I", "C")
    return bytes(pdf.output())
