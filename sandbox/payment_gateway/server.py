"""The payment gateway sandbox's aiohttp app: auth, error shapes, the routes, the pages,
the test controls and the expiry sweeper. Answers come from the pure modules (midtrans,
xendit, pages); this module only moves bytes and starts notifications."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from sandbox.payment_gateway import midtrans, pages, xendit
from sandbox.payment_gateway.common import BoundedStore, GatewayError, Refused, key_matches
from sandbox.payment_gateway.delivery import Notification, Notifier
from sandbox.payment_gateway.midtrans import Transaction
from sandbox.payment_gateway.xendit import Invoice
from services.common.logs import fields

log = logging.getLogger("sandbox.payment_gateway")

MAX_BODY_BYTES = 64 * 1024  # a create body is a few hundred bytes
SHUTDOWN_SECONDS = 1.0
SWEEP_SECONDS = 0.5
MAX_FORM_FIELD_CHARS = 40
MIDTRANS_HEADERS = {"Accept": "application/json", "User-Agent": "Veritrans"}


@dataclass(frozen=True)
class Config:
    midtrans_server_key: str
    xendit_secret_key: str
    xendit_callback_token: str
    public_url: str  # absolute base the browser reaches the pages on, no trailing slash
    midtrans_notification_url: str | None = None  # the "dashboard" Payment Notification URL
    xendit_callback_url: str | None = None  # the "dashboard" invoice callback URL
    retry_delays: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0)
    notify_timeout: float = 10.0


class State:
    def __init__(self, config: Config, clock: Callable[[], float]) -> None:
        self.config = config
        self.clock = clock
        self.transactions: BoundedStore[Transaction] = BoundedStore()
        self.by_token: dict[str, str] = {}
        self.by_transaction_id: dict[str, str] = {}
        self.invoices: BoundedStore[Invoice] = BoundedStore()
        self.notifier = Notifier(config.retry_delays, config.notify_timeout)

    def add_transaction(self, tx: Transaction) -> None:
        self.by_token[tx.token] = tx.order_id
        for old in self.transactions.add(tx.order_id, tx):
            self.by_token.pop(old.token, None)
            self.by_transaction_id.pop(old.transaction_id, None)

    def transaction(self, order_or_transaction_id: str) -> Transaction | None:
        tx = self.transactions.get(order_or_transaction_id)
        if tx is not None:
            return tx
        order_id = self.by_transaction_id.get(order_or_transaction_id)
        return None if order_id is None else self.transactions.get(order_id)

    def transaction_by_token(self, token: str) -> Transaction | None:
        order_id = self.by_token.get(token)
        return None if order_id is None else self.transactions.get(order_id)

    # --- notifications ------------------------------------------------------------------

    def notify_midtrans(self, tx: Transaction, statuses: list[str]) -> int:
        self.by_transaction_id[tx.transaction_id] = tx.order_id
        sent = 0
        for status in statuses:
            body = midtrans.transaction_body(
                tx, status, self.config.midtrans_server_key, notification=True
            )
            for url in tx.notify_urls:
                self.notifier.send(
                    Notification(
                        gateway="midtrans",
                        key=tx.order_id,
                        ref=tx.transaction_id,
                        url=url,
                        body=body,
                        headers=MIDTRANS_HEADERS,
                        retries_for=midtrans.retries_after,
                        follow_temporary_redirects=True,
                    )
                )
                sent += 1
        return sent

    def notify_xendit(self, invoice: Invoice) -> int:
        url = self.config.xendit_callback_url
        if not url:
            return 0
        retries = len(self.config.retry_delays)
        self.notifier.send(
            Notification(
                gateway="xendit",
                key=invoice.request.external_id,
                ref=invoice.id,
                url=url,
                body=xendit.callback_body(invoice),
                headers={"x-callback-token": self.config.xendit_callback_token},
                retries_for=lambda _status: retries,
            )
        )
        return 1

    def sweep(self, now: float) -> None:
        """Expire what is overdue, as the gateways do on their own (with notifications)."""
        for tx in midtrans.overdue(self.transactions.values(), now):
            self.notify_midtrans(tx, midtrans.apply(tx, "expire", None, now))
        for invoice in xendit.overdue(self.invoices.values(), now):
            if xendit.apply(invoice, "expire", None, now):
                self.notify_xendit(invoice)


STATE = web.AppKey("state", State)


def create_app(config: Config, *, clock: Callable[[], float] = time.time) -> web.Application:
    app = web.Application(middlewares=[_access_log, _errors], client_max_size=MAX_BODY_BYTES)
    app[STATE] = State(config, clock)
    app.cleanup_ctx.append(_background)
    r = app.router
    r.add_post("/snap/v1/transactions", snap_create)
    r.add_get("/snap/v4/redirection/{token}", snap_page)
    r.add_post("/snap/v4/redirection/{token}", snap_click)
    # Before /v2/invoices/{id}: an invoice id is hex and never "status".
    r.add_get("/v2/{order_id}/status", midtrans_status)
    r.add_post("/v2/invoices", invoice_create)
    r.add_get("/v2/invoices/{invoice_id}", invoice_get)
    r.add_post("/invoices/{invoice_id}/expire!", invoice_expire)
    r.add_get("/web/{invoice_id}", invoice_page)
    r.add_post("/web/{invoice_id}", invoice_click)
    r.add_post("/_sandbox/midtrans/{order_id}/{action}", midtrans_control)
    r.add_post("/_sandbox/xendit/{invoice_id}/{action}", xendit_control)
    r.add_get("/_sandbox/deliveries", list_deliveries)
    r.add_delete("/_sandbox/deliveries", clear_deliveries)
    r.add_get("/_sandbox/healthz", healthz)
    return app


async def _background(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    await state.notifier.start()
    sweeper = asyncio.create_task(_sweep_forever(state))
    yield
    sweeper.cancel()
    await asyncio.gather(sweeper, return_exceptions=True)
    await state.notifier.close()


async def _sweep_forever(state: State) -> None:
    while True:
        await asyncio.sleep(SWEEP_SECONDS)
        try:
            state.sweep(state.clock())
        except Exception:
            log.exception("expiry sweep failed")


async def serve(host: str, port: int, config: Config) -> None:
    """Run until SIGTERM/SIGINT, then stop: pending retries are dropped."""
    runner = web.AppRunner(create_app(config), access_log=None, shutdown_timeout=SHUTDOWN_SECONDS)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    # Where notifications go is not secret; the keys and the token are never logged.
    log.info(
        "listening",
        extra=fields(
            addr=f"{host}:{port}",
            public_url=config.public_url,
            midtrans_notification_url=config.midtrans_notification_url,
            xendit_callback_url=config.xendit_callback_url,
            retry_delays=list(config.retry_delays),
        ),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping")
    await runner.cleanup()
    log.info("stopped")


# --- middlewares -------------------------------------------------------------------------


def _json(obj: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, content_type="application/json")


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html")


def _shaped(path: str, status: int, message: str) -> GatewayError:
    """An error aiohttp raised (404, 405, 413) or an unexpected one, in the shape of the
    API the path belongs to."""
    if path.startswith("/snap/v1/"):
        return midtrans.snap_error(status, message)
    if path.startswith(("/v2/invoices", "/invoices/")):
        if status == 404:
            code = "NOT_FOUND"
        else:
            code = "API_VALIDATION_ERROR" if status < 500 else "SERVER_ERROR"
        return xendit.error(status, code, message)
    if path.startswith("/v2/"):
        return midtrans.core_error(status, message)
    return GatewayError(status, {"error": message})


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except GatewayError as err:
        return _json(err.body, err.status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        shaped = _shaped(
            request.path, exc.status, f"{exc.reason} ({request.method} {request.path})"
        )
        return _json(shaped.body, shaped.status)
    except Exception:
        log.exception("unexpected error", extra=fields(path=request.path))
        shaped = _shaped(request.path, 500, "sandbox: internal error")
        return _json(shaped.body, shaped.status)


@web.middleware
async def _access_log(request: web.Request, handler: Handler) -> web.StreamResponse:
    start = time.monotonic()
    status: int | None = None
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        log.info(
            "request",
            extra=fields(
                method=request.method,
                path=request.path,
                status=status,
                ms=round((time.monotonic() - start) * 1000, 1),
            ),
        )


async def _read_json(request: web.Request, bad: GatewayError) -> Any:
    raw = await request.read()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise bad from None


def _state(request: web.Request) -> State:
    return request.app[STATE]


# --- Midtrans ----------------------------------------------------------------------------


async def snap_create(request: web.Request) -> web.Response:
    state = _state(request)
    config = state.config
    if not key_matches(request.headers.get("Authorization"), config.midtrans_server_key):
        raise midtrans.auth_error()
    body = await _read_json(request, midtrans.snap_error(400, "Request body is not valid JSON"))
    now = state.clock()
    snap = midtrans.parse_snap_request(body, now)
    urls = midtrans.notification_urls(
        request.headers.get("X-Override-Notification"),
        request.headers.get("X-Append-Notification"),
        config.midtrans_notification_url,
    )
    existing = state.transactions.get(snap.order_id)
    if existing is not None:
        raise midtrans.duplicate_error(existing)
    tx = midtrans.new_transaction(snap, urls, now)
    state.add_transaction(tx)
    return _json(midtrans.create_answer(tx, config.public_url), 201)


async def midtrans_status(request: web.Request) -> web.Response:
    state = _state(request)
    if not key_matches(request.headers.get("Authorization"), state.config.midtrans_server_key):
        raise midtrans.core_auth_error()
    tx = state.transaction(request.match_info["order_id"])
    return _json(midtrans.status_answer(tx, state.config.midtrans_server_key))


async def snap_page(request: web.Request) -> web.Response:
    state = _state(request)
    tx = state.transaction_by_token(request.match_info["token"])
    if tx is None:
        return _html(pages.not_found_page("Snap transaction"), 404)
    return _html(pages.snap_page(tx, state.clock()))


async def snap_click(request: web.Request) -> web.Response:
    state = _state(request)
    tx = state.transaction_by_token(request.match_info["token"])
    if tx is None:
        return _html(pages.not_found_page("Snap transaction"), 404)
    action, method = await _form_choice(request)
    now = state.clock()
    try:
        entered = midtrans.apply(tx, action, method, now)
    except Refused as refused:
        return _html(pages.snap_page(tx, now, refused.message), 409)
    state.notify_midtrans(tx, entered)
    finish = midtrans.finish_redirect(tx)
    if finish is not None:
        raise web.HTTPSeeOther(finish)
    status = tx.status or ""
    return _html(
        pages.done_page(
            f"Payment {status}",
            [
                ("Order ID", tx.order_id),
                ("Amount", pages.rupiah(tx.gross_amount)),
                ("transaction_status", status),
                ("status_code", midtrans.STATUS_CODES[status]),
            ],
        )
    )


async def _form_choice(request: web.Request) -> tuple[str, str | None]:
    form = await request.post()
    action = str(form.get("action", ""))[:MAX_FORM_FIELD_CHARS]
    method = str(form.get("method", ""))[:MAX_FORM_FIELD_CHARS] or None
    return action, method


async def midtrans_control(request: web.Request) -> web.Response:
    """Test control (not Midtrans API): pay {"method"}, choose {"method"}, expire, cancel,
    refund, chargeback, or notify (send the current status's notification again)."""
    state = _state(request)
    order_id = request.match_info["order_id"]
    action = request.match_info["action"]
    tx = state.transactions.get(order_id)
    if tx is None:
        raise GatewayError(404, {"error": f"no transaction with order_id {order_id[:60]!r}"})
    method = await _control_method(request)
    if action not in (*midtrans.ACTIONS, "notify"):
        raise _bad_control("action", f"action must be one of {', '.join(midtrans.ACTIONS)}, notify")
    if method is not None and method not in midtrans.METHODS:
        raise _bad_control("method", f"method must be one of {', '.join(midtrans.METHODS)}")
    if action == "notify":
        if tx.status is None:
            raise GatewayError(409, {"error": "nothing to notify: no payment method chosen yet"})
        sent = state.notify_midtrans(tx, [tx.status])
    else:
        try:
            entered = midtrans.apply(tx, action, method, state.clock())
        except Refused as refused:
            raise GatewayError(409, {"error": refused.message, "field": refused.field}) from None
        sent = state.notify_midtrans(tx, entered)
    assert tx.status is not None
    return _json(
        {
            "order_id": tx.order_id,
            "transaction_id": tx.transaction_id,
            "transaction_status": tx.status,
            "status_code": midtrans.STATUS_CODES[tx.status],
            "notifications": sent,
            "finish_redirect_url": midtrans.finish_redirect(tx),
        }
    )


def _bad_control(field: str, message: str) -> GatewayError:
    return GatewayError(400, {"error": message, "field": field})


async def _control_method(request: web.Request) -> str | None:
    """The optional JSON body of a control: {"method": ...}."""
    raw = await request.read()
    if not raw.strip():
        return None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _bad_control("body", "body must be JSON") from None
    if not isinstance(body, dict):
        raise _bad_control("body", "body must be a JSON object")
    method = body.get("method")
    if method is not None and (not isinstance(method, str) or len(method) > 40):
        raise _bad_control("method", "method must be a short string")
    return method


# --- Xendit ------------------------------------------------------------------------------


def _xendit_auth(request: web.Request) -> None:
    header = request.headers.get("Authorization")
    if not key_matches(header, _state(request).config.xendit_secret_key):
        raise xendit.auth_error(header_sent=bool(header))


async def invoice_create(request: web.Request) -> web.Response:
    _xendit_auth(request)
    state = _state(request)
    body = await _read_json(request, xendit.validation_error('"value" must be valid JSON'))
    invoice = xendit.new_invoice(xendit.parse_invoice_request(body), state.clock())
    state.invoices.add(invoice.id, invoice)
    return _json(xendit.invoice_body(invoice, state.config.public_url))


def _invoice(request: web.Request) -> Invoice:
    invoice_id = request.match_info["invoice_id"]
    invoice = _state(request).invoices.get(invoice_id)
    if invoice is None:
        raise xendit.not_found(invoice_id)
    return invoice


async def invoice_get(request: web.Request) -> web.Response:
    _xendit_auth(request)
    return _json(xendit.invoice_body(_invoice(request), _state(request).config.public_url))


async def invoice_expire(request: web.Request) -> web.Response:
    _xendit_auth(request)
    state = _state(request)
    invoice = _invoice(request)
    if invoice.status in ("PAID", "SETTLED"):
        raise xendit.not_found(invoice.id)
    if xendit.apply(invoice, "expire", None, state.clock()):
        state.notify_xendit(invoice)
    return _json(xendit.invoice_body(invoice, state.config.public_url))


async def invoice_page(request: web.Request) -> web.Response:
    state = _state(request)
    invoice = state.invoices.get(request.match_info["invoice_id"])
    if invoice is None:
        return _html(pages.not_found_page("invoice"), 404)
    return _html(pages.xendit_page(invoice, state.clock()))


async def invoice_click(request: web.Request) -> web.Response:
    state = _state(request)
    invoice = state.invoices.get(request.match_info["invoice_id"])
    if invoice is None:
        return _html(pages.not_found_page("invoice"), 404)
    action, method = await _form_choice(request)
    now = state.clock()
    if action not in ("pay", "expire"):
        return _html(pages.xendit_page(invoice, now, "Choose pay or expire."), 400)
    try:
        changed = xendit.apply(invoice, action, method, now)
    except Refused as refused:
        return _html(pages.xendit_page(invoice, now, refused.message), 409)
    if changed:
        state.notify_xendit(invoice)
    target = xendit.redirect_after(invoice)
    if target is not None:
        raise web.HTTPSeeOther(target)
    return _html(
        pages.done_page(
            f"Invoice {invoice.status}",
            [
                ("Invoice", invoice.id),
                ("External ID", invoice.request.external_id),
                ("Amount", pages.rupiah(invoice.request.amount)),
                ("Status", invoice.status),
            ],
        )
    )


async def xendit_control(request: web.Request) -> web.Response:
    """Test control (not Xendit API): pay {"method": "QRIS" | "BCA" | ... | "OVO"}, expire,
    settle (PAID -> SETTLED), or notify (send the current callback again: a duplicate)."""
    state = _state(request)
    invoice_id = request.match_info["invoice_id"]
    invoice = state.invoices.get(invoice_id)
    if invoice is None:
        raise GatewayError(404, {"error": f"no invoice with id {invoice_id[:60]!r}"})
    method = await _control_method(request)
    action = request.match_info["action"]
    if action not in (*xendit.ACTIONS, "notify"):
        raise _bad_control("action", f"action must be one of {', '.join(xendit.ACTIONS)}, notify")
    if action == "pay" and (method is None or method.upper() not in xendit.CHANNELS):
        raise _bad_control("method", f"method must be one of {', '.join(xendit.CHANNELS)}")
    if action == "notify":
        sent = state.notify_xendit(invoice)
    else:
        try:
            changed = xendit.apply(invoice, action, method, state.clock())
        except Refused as refused:
            raise GatewayError(409, {"error": refused.message, "field": refused.field}) from None
        sent = state.notify_xendit(invoice) if changed else 0
    return _json(
        {
            "id": invoice.id,
            "external_id": invoice.request.external_id,
            "status": invoice.status,
            "callbacks": sent,
            "redirect_url": xendit.redirect_after(invoice),
        }
    )


# --- test support ------------------------------------------------------------------------


async def list_deliveries(request: web.Request) -> web.Response:
    """Every notification attempt kept (the last 5,000), oldest first; ?gateway= and
    ?key= (order_id / external_id) narrow it."""
    gateway = request.query.get("gateway")
    key = request.query.get("key")
    attempts = [
        a
        for a in list(_state(request).notifier.attempts)
        if (gateway is None or a["gateway"] == gateway) and (key is None or a["key"] == key)
    ]
    return _json(attempts)


async def clear_deliveries(request: web.Request) -> web.Response:
    _state(request).notifier.attempts.clear()
    return web.Response(status=204)


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")
