"""/admin: operators find an account by email or id, read its statement, usage
and jobs, credit or debit it with a reason, and disable or enable it.

Every action goes through the gateway's Admin API (/v1/admin) with the
operator's session, which checks the OPERATOR role itself and records the
operator's id with each change. Here the pages only hide from everyone else:
anyone who is not an operator gets the site's 404, as for a page that does not
exist. An adjustment form carries an idempotency key made when the form is
shown, so a double submit moves the money once.
"""

from __future__ import annotations

import secrets
from typing import Final
from urllib.parse import quote

from aiohttp import web
from aiport.v1 import admin_pb2

from services.console import jobs_view, times, usage_view
from services.console.account_api import ApiRefused
from services.console.account_pages import (
    API,
    VISITOR,
    Visitor,
    form_data,
    see_other,
    zone_of,
)
from services.console.server import lang_of, render

ACTIONS: Final = {
    "adjust": "CreateAdjustment",
    "disable": "DisableAccount",
    "enable": "EnableAccount",
}


def add_routes(app: web.Application) -> None:
    app.router.add_get("/admin", search, name="admin")
    app.router.add_get("/admin/accounts/{account_id}", account, name="admin_account")
    app.router.add_post("/admin/accounts/{account_id}/{action}", act, name="admin_act")


def operator(request: web.Request) -> Visitor:
    if VISITOR not in request or not request[VISITOR].operator:
        raise web.HTTPNotFound()
    return request[VISITOR]


async def search(request: web.Request) -> web.StreamResponse:
    who = operator(request)
    query = request.query.get("q", "").strip()
    if not query:
        return render(request, "admin.html", query="", not_found=False)
    lookup = (
        admin_pb2.FindAccountQuery(account_id=query)
        if query.startswith("acct_")
        else admin_pb2.FindAccountQuery(email=query)
    )
    try:
        found = await request.app[API].admin_find(who.session_token, lookup)
    except ApiRefused as refused:
        if refused.status not in (400, 404):
            raise web.HTTPForbidden() from refused
        return render(request, "admin.html", 404, query=query, not_found=True)
    return see_other(f"/admin/accounts/{quote(found.id)}")


async def account(request: web.Request) -> web.StreamResponse:
    who = operator(request)
    account_id = request.match_info["account_id"]
    api = request.app[API]
    lang, zone = lang_of(request), zone_of(request)
    try:
        found = await api.admin_find(
            who.session_token, admin_pb2.FindAccountQuery(account_id=account_id)
        )
        statement = await api.admin_statement(who.session_token, account_id)
        usage = await api.admin_usage(who.session_token, account_id)
        jobs = await api.admin_jobs(who.session_token, account_id)
    except ApiRefused as refused:
        raise web.HTTPNotFound() from refused
    return render(
        request,
        "admin_account.html",
        zone=zone,
        account=found,
        disabled_at=_when(usage_view.value_text(found.disabled_at), lang, zone),
        disabled_by=usage_view.value_text(found.disabled_by),
        entries=[
            {
                "id": entry.id,
                "time": times.format_datetime(entry.created, lang, zone),
                "kind": entry.kind,
                "amount_idr": entry.amount_idr,
                "balance_after_idr": entry.balance_after_idr,
                "description": entry.description,
                "actor": usage_view.value_text(entry.actor),
            }
            for entry in statement.data
        ],
        usage=[
            {
                "time": times.format_datetime(entry.created, lang, zone),
                "model": entry.model,
                "endpoint": entry.endpoint,
                "status": entry.status,
                "cost_idr": entry.cost_idr,
                "request_id": entry.request_id,
            }
            for entry in usage.data
        ],
        jobs=[jobs_view.job_row(job, lang, zone) for job in jobs.data],
        # Made per render: submitting the same form twice adjusts once.
        idempotency_key="console-" + secrets.token_urlsafe(16),
        done=request.query.get("done", ""),
        error=request.query.get("error", ""),
    )


def _when(unix_text: str, lang: str, zone: str) -> str:
    return times.format_datetime(int(unix_text), lang, zone) if unix_text.isdigit() else ""


async def act(request: web.Request) -> web.StreamResponse:
    who = operator(request)
    account_id = request.match_info["account_id"]
    action = ACTIONS.get(request.match_info["action"])
    if action is None:
        raise web.HTTPNotFound()
    form = await form_data(request)
    body = {
        "CreateAdjustment": {
            "amount_idr": form.get("amount_idr", "").strip(),
            "reason": form.get("reason", ""),
            "idempotency_key": form.get("idempotency_key", ""),
        },
        "DisableAccount": {"reason": form.get("reason", "")},
        "EnableAccount": {},
    }[action]
    back = f"/admin/accounts/{quote(account_id)}"
    try:
        await request.app[API].admin_act(who.session_token, action, account_id, body)
    except ApiRefused as refused:
        if refused.status in (400, 422):
            # The field at fault, for the page to name.
            return see_other(f"{back}?error={quote(refused.param or 'reason')}")
        raise web.HTTPNotFound() from refused
    return see_other(f"{back}?done={request.match_info['action']}")
