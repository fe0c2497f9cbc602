"""Top-ups in the dashboard: choose an amount, review the fee per payment
gateway, pay on the gateway's page, follow the order until it is paid, and
the receipt (kwitansi) as a printable page and a PDF.

Everything goes through the gateway's public TopUps API with the person's
session (account_api), like the rest of the dashboard. Pure rules are in
topup_view (forms, rows) and receipt (the kwitansi and its PDF).

Routes:
  GET  /dashboard/topup                  the form, and the account's top-ups
  POST /dashboard/topup/review           the quote of each gateway for the amount
  POST /dashboard/topup                  CreateTopUp, then on to the payment page
  GET  /dashboard/topup/{id}/pay         forwards the browser to the gateway's page
  GET  /dashboard/topup/{id}             the order's live state (the gateways return here)
  GET  /dashboard/topup/{id}/receipt     the kwitansi (409 page before it is paid)
  GET  /dashboard/topup/{id}/receipt.pdf the kwitansi as a PDF download

Why the payment page is reached through /pay and not by a 303 from the POST:
the console's CSP says `form-action 'self'`, and Chrome and Safari apply it
to the redirects that follow a form submission too, so a 303 to the gateway's
origin would be blocked. The /pay page sends the browser on with a meta
refresh (a navigation of its own, not the form's) and shows a link as well.
"""

from __future__ import annotations

import asyncio
import time
from functools import partial
from typing import Final

from aiohttp import web
from aiport.v1 import topups_pb2

from services.console import i18n, receipt, topup_view, usage_view
from services.console.account_api import ApiRefused, ApiUnavailable
from services.console.account_pages import (
    API,
    Visitor,
    api_refusal,
    form_data,
    see_other,
    visitor,
    zone_of,
)
from services.console.money import format_idr
from services.console.server import lang_of, render

PDF: Final = "application/pdf"
_ID: Final = "{topup_id:" + topup_view.TOPUP_ID_PATTERN + "}"


def add_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/dashboard/topup", topup, name="topup")
    router.add_post("/dashboard/topup", create, name="topup_create")
    router.add_post("/dashboard/topup/review", review, name="topup_review")
    router.add_get(f"/dashboard/topup/{_ID}", order, name="topup_order")
    router.add_get(f"/dashboard/topup/{_ID}/pay", pay, name="topup_pay")
    router.add_get(f"/dashboard/topup/{_ID}/receipt", receipt_page, name="topup_receipt")
    router.add_get(f"/dashboard/topup/{_ID}/receipt.pdf", receipt_pdf, name="topup_receipt_pdf")


Answers = dict[str, topups_pb2.TopUpQuote | Exception]


async def _quotes(request: web.Request, who: Visitor, amount_idr: str) -> Answers:
    """Every gateway's quote for the amount, or why it refused. A gateway that
    is down is only not offered; an ended session still logs in again."""
    api = request.app[API]
    answers = await asyncio.gather(
        *(api.quote_topup(who.session_token, amount_idr, g) for g in topup_view.GATEWAYS),
        return_exceptions=True,
    )
    found: Answers = {}
    for gateway, answer in zip(topup_view.GATEWAYS, answers, strict=True):
        if isinstance(answer, ApiRefused) and answer.status == 401:
            raise answer
        if isinstance(answer, topups_pb2.TopUpQuote | ApiRefused | ApiUnavailable):
            found[gateway] = answer
        elif isinstance(answer, BaseException):
            raise answer
    return found


def _limits_text(request: web.Request, limits: topup_view.Limits) -> str:
    lang = lang_of(request)
    minimum = format_idr(limits.minimum_idr)
    if limits.maximum_idr is None:
        return i18n.translate(lang, "topup.limit_min", minimum=minimum)
    return i18n.translate(
        lang, "topup.limits", minimum=minimum, maximum=format_idr(limits.maximum_idr)
    )


async def _topup_page(
    request: web.Request,
    who: Visitor,
    status: int = 200,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
) -> web.Response:
    """The form (when a gateway is offered), the balance and the account's top-ups.
    `errors` are message keys by field."""
    api = request.app[API]
    lang, zone = lang_of(request), zone_of(request)
    balance = await api.balance(who.session_token)
    answers = await _quotes(request, who, topup_view.PROBE_AMOUNT_IDR)
    limits = topup_view.limits(answers)
    after = topup_view.cursor(request.query.get("after", ""))
    page = await api.topups(
        who.session_token, topups_pb2.TopUpQuery(limit=str(topup_view.PAGE_SIZE), after=after)
    )
    minimum = format_idr(limits.minimum_idr)
    return render(
        request,
        "topup.html",
        status,
        available=balance.available_idr,
        debt=balance.debt_idr if topup_view.positive(balance.debt_idr) else "",
        gateways=topup_view.offered(answers),
        presets=[(str(amount), format_idr(str(amount))) for amount in topup_view.PRESETS],
        limits=_limits_text(request, limits),
        errors={
            name: i18n.translate(lang, key, minimum=minimum) for name, key in (errors or {}).items()
        },
        values=values or {},
        rows=[topup_view.topup_row(item, lang, zone) for item in page.data],
        next_url=topup_view.next_url(page),
        # A refused POST renders this page too: the language switch comes back to the form.
        current_path="/dashboard/topup",
    )


async def topup(request: web.Request) -> web.StreamResponse:
    who = visitor(request)
    try:
        return await _topup_page(request, who)
    except ApiRefused as refused:
        return api_refusal(request, refused)


async def review(request: web.Request) -> web.StreamResponse:
    """The amount's fee and total through each gateway that quotes it, each with
    its Pay button: nothing is paid before the person has seen the total."""
    who = visitor(request)
    form = topup_view.amount_form(await form_data(request))
    try:
        if not form.ok:
            return await _topup_page(request, who, 400, form.errors, form.values)
        answers = await _quotes(request, who, form.values["amount_idr"])
        quotes = [
            answer
            for gateway in topup_view.GATEWAYS
            if isinstance(answer := answers.get(gateway), topups_pb2.TopUpQuote)
        ]
        if not quotes:
            amount_refused = any(
                isinstance(a, ApiRefused) and a.param == "amount_idr" for a in answers.values()
            )
            key = "topup.amount_refused" if amount_refused else "topup.gateway_refused"
            return await _topup_page(request, who, 400, {"amount_idr": key}, form.values)
    except ApiRefused as refused:
        return api_refusal(request, refused)
    return render(
        request,
        "topup_review.html",
        current_path="/dashboard/topup",
        amount_idr=quotes[0].amount_idr,
        quotes=[
            {
                "gateway": q.gateway,
                "name": topup_view.gateway_name(q.gateway),
                "amount_idr": q.amount_idr,
                "fee_idr": q.fee_idr,
                "total_idr": q.total_idr,
            }
            for q in quotes
        ],
    )


async def create(request: web.Request) -> web.StreamResponse:
    """CreateTopUp for the reviewed amount and gateway, then on to its payment page."""
    who = visitor(request)
    form = topup_view.amount_form(await form_data(request))
    try:
        if not form.ok:
            return await _topup_page(request, who, 400, form.errors, form.values)
        try:
            created = await request.app[API].create_topup(
                who.session_token, form.values["amount_idr"], form.values["gateway"]
            )
        except ApiRefused as refused:
            if refused.status not in (400, 422):
                raise
            key = (
                "topup.amount_refused"
                if refused.param == "amount_idr"
                else ("topup.gateway_refused")
            )
            return await _topup_page(request, who, 400, {"amount_idr": key}, form.values)
    except ApiRefused as refused:
        return api_refusal(request, refused)
    return see_other(topup_view.order_path(created.id) + "/pay")


async def _order(request: web.Request, who: Visitor) -> topups_pb2.TopUp:
    return await request.app[API].topup(who.session_token, request.match_info["topup_id"])


async def pay(request: web.Request) -> web.StreamResponse:
    """On to the gateway's payment page while the order waits for its payment;
    the order's own page otherwise (paid already, expired, no page)."""
    who = visitor(request)
    try:
        found = await _order(request, who)
    except ApiRefused as refused:
        return api_refusal(request, refused)
    link = topup_view.payment_link(usage_view.value_text(found.payment_url))
    if found.status not in topup_view.LIVE_STATUSES or not link:
        return see_other(topup_view.order_path(found.id))
    return render(
        request,
        "topup_pay.html",
        payment_url=link,
        gateway=topup_view.gateway_name(found.gateway),
        order_url=topup_view.order_path(found.id),
    )


async def order(request: web.Request) -> web.StreamResponse:
    """The order as the API says it is now. The gateways send the browser back
    here with their own query parameters (order_id, transaction_status, ...):
    they are never read; the state shown is the API's."""
    who = visitor(request)
    lang, zone = lang_of(request), zone_of(request)
    api = request.app[API]
    try:
        found = await _order(request, who)
        balance = await api.balance(who.session_token)
    except ApiRefused as refused:
        return api_refusal(request, refused)
    row = topup_view.topup_row(found, lang, zone)
    refresh = topup_view.refresh_seconds(found.status, found.created, int(time.time()))
    return render(
        request,
        "topup_order.html",
        order=row,
        refresh=refresh,
        live=found.status in topup_view.LIVE_STATUSES,
        reversed=found.status in topup_view.REVERSED_STATUSES,
        available=balance.available_idr,
        debt=balance.debt_idr if topup_view.positive(balance.debt_idr) else "",
        # Without the gateways' query parameters: the reload shows the API's state only.
        current_path=row["url"],
    )


async def _receipt(request: web.Request) -> topups_pb2.TopUpReceipt | web.Response:
    """The order's receipt, or the page that says why there is none (409: unpaid)."""
    who = visitor(request)
    try:
        return await request.app[API].topup_receipt(
            who.session_token, request.match_info["topup_id"]
        )
    except ApiRefused as refused:
        if refused.status != 409:
            return api_refusal(request, refused)
    return render(
        request,
        "receipt_unpaid.html",
        409,
        order_url=topup_view.order_path(request.match_info["topup_id"]),
    )


async def receipt_page(request: web.Request) -> web.StreamResponse:
    found = await _receipt(request)
    if isinstance(found, web.Response):
        return found
    view = receipt.receipt_view(found, lang_of(request), zone_of(request))
    return render(
        request,
        "receipt.html",
        receipt=view,
        pdf_url=topup_view.order_path(found.topup_id) + "/receipt.pdf",
        order_url=topup_view.order_path(found.topup_id),
    )


async def receipt_pdf(request: web.Request) -> web.StreamResponse:
    found = await _receipt(request)
    if isinstance(found, web.Response):
        return found
    view = receipt.receipt_view(found, lang_of(request), zone_of(request))
    label = partial(i18n.translate, lang_of(request))
    # fpdf2 is pure Python: a few milliseconds of CPU, kept off the event loop.
    body = await asyncio.to_thread(receipt.build_pdf, view, label)
    return web.Response(
        body=body,
        content_type=PDF,
        headers={
            "Content-Disposition": f'attachment; filename="{view.filename}"',
            "Cache-Control": "no-store",
        },
    )
