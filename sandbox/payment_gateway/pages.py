"""The payment pages a customer clicks through: plain HTML forms posting back to the same
URL (field `action`: pay | expire | cancel, and `method` for pay). Pure: text in, text out;
every value from a request is escaped."""

from __future__ import annotations

from html import escape

from sandbox.payment_gateway import midtrans, xendit
from sandbox.payment_gateway.midtrans import Transaction
from sandbox.payment_gateway.xendit import Invoice

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:34rem;margin:2rem auto;padding:0 1rem;color:#222}
.box{border:1px solid #ccc;border-radius:8px;padding:1rem 1.25rem;margin:1rem 0}
dt{color:#666;font-size:.85rem}dd{margin:0 0 .6rem 0;font-weight:600}
button{display:block;width:100%;margin:.35rem 0;padding:.6rem;font-size:1rem;cursor:pointer}
.pay button{background:#0a6;color:#fff;border:0;border-radius:6px}
.other button{background:#eee;border:1px solid #bbb;border-radius:6px}
.note{background:#fff4d6;border:1px solid #e0c060;border-radius:6px;padding:.6rem}
.sandbox{color:#a00;font-size:.8rem;text-transform:uppercase;letter-spacing:.05em}
"""


def rupiah(amount: int) -> str:
    return "Rp " + f"{amount:,}".replace(",", ".")


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        # An icon of its own, inline: else the browser asks for /favicon.ico, and its
        # 404 is a console error on every payment page.
        '<link rel=icon href="data:,">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<p class=sandbox>Sandbox payment gateway: no real money moves</p>{body}</body></html>"
    )


def _details(rows: list[tuple[str, str]]) -> str:
    items = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in rows if v)
    return f"<dl class=box>{items}</dl>"


def _button(action: str, label: str, method: str | None = None) -> str:
    method_field = f'<input type=hidden name=method value="{escape(method)}">' if method else ""
    return (
        f'<form method=post><input type=hidden name=action value="{escape(action)}">'
        f"{method_field}<button type=submit>{escape(label)}</button></form>"
    )


def _note(message: str | None) -> str:
    return f"<p class=note role=alert>{escape(message)}</p>" if message else ""


def snap_page(tx: Transaction, now: float, message: str | None = None) -> str:
    rows = [
        ("Order ID", tx.order_id),
        ("Amount", rupiah(tx.gross_amount)),
        ("Customer", " ".join(p for p in (tx.customer_name, tx.customer_email) if p)),
        ("Pay before", midtrans.midtrans_time(tx.expires_at) + " WIB"),
    ]
    if tx.method is not None:
        rows.append(("Payment method", midtrans.METHODS[tx.method].label))
        rows += midtrans.payment_codes(tx)
    rows.append(("Status", tx.status or ("expired" if now >= tx.expires_at else "waiting")))
    if tx.status is None and now < tx.expires_at:
        pay = "".join(
            _button("pay", f"Pay by {midtrans.METHODS[key].label}", key) for key in tx.enabled
        )
        actions = (
            f"<div class=pay>{pay}</div><div class=other>"
            f"{_button('expire', 'Let it expire')}{_button('cancel', 'Cancel')}</div>"
        )
    elif tx.status == "pending":
        actions = (
            f"<div class=pay>{_button('pay', 'Complete the payment')}</div><div class=other>"
            f"{_button('expire', 'Let it expire')}{_button('cancel', 'Cancel')}</div>"
        )
    else:
        actions = ""
    return _page(
        f"Midtrans Snap: {tx.order_id}",
        f"<h1>Midtrans Snap</h1>{_note(message)}{_details(rows)}{actions}",
    )


def xendit_page(invoice: Invoice, now: float, message: str | None = None) -> str:
    request = invoice.request
    rows = [
        ("Invoice", invoice.id),
        ("External ID", request.external_id),
        ("Description", request.description or ""),
        ("Amount", rupiah(request.amount)),
        ("Pay before", xendit.xendit_time(invoice.expires_at)),
        ("Status", invoice.status if now < invoice.expires_at else "EXPIRED"),
    ]
    if invoice.channel is not None:
        rows.append(("Paid with", xendit.CHANNELS[invoice.channel].label))
    actions = ""
    if invoice.status == "PENDING" and now < invoice.expires_at:
        pay = "".join(
            _button("pay", f"Pay by {xendit.CHANNELS[code].label}", code)
            for code in request.channels
        )
        actions = (
            f"<div class=pay>{pay}</div><div class=other>{_button('expire', 'Let it expire')}</div>"
        )
    return _page(
        f"Xendit invoice: {request.external_id}",
        f"<h1>Xendit invoice</h1>{_note(message)}{_details(rows)}{actions}",
    )


def done_page(title: str, rows: list[tuple[str, str]]) -> str:
    """After a click when the merchant gave no URL to send the customer back to."""
    return _page(title, f"<h1>{escape(title)}</h1>{_details(rows)}")


def not_found_page(what: str) -> str:
    return _page("Not found", f"<h1>Not found</h1><p>No such {escape(what)}.</p>")
