"""The gateways' notifications over plain HTTP (/webhooks/midtrans,
/webhooks/xendit, through the Envoy edge). A 2xx means "recorded"; anything we
could not record answers 5xx so the gateway retries. Bodies are bounded and
never logged (they carry payers' details)."""

from __future__ import annotations

import asyncio
import logging

import orjson
import psycopg
from aiohttp import web
from psycopg_pool import PoolTimeout

from services.common import metrics
from services.common.logs import fields

from .service import Payments

log = logging.getLogger("payments")

MAX_BODY_BYTES = 64 * 1024
PAYMENTS: web.AppKey[Payments] = web.AppKey("payments", Payments)
DRAINING: web.AppKey[asyncio.Event] = web.AppKey("draining", asyncio.Event)


def _answer(status: int, message: str) -> web.Response:
    metrics.HTTP_REQUESTS.labels("webhook", str(status)).inc()
    return web.json_response(
        {"status": "ok" if status < 300 else "error", "message": message}, status=status
    )


async def notification(request: web.Request) -> web.Response:
    gateway = request.match_info["gateway"]
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return _answer(413, "body too large")
    raw = await request.content.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        return _answer(413, "body too large")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _answer(400, "body is not JSON")
    if not isinstance(body, dict):
        return _answer(400, "body is not a JSON object")
    headers = {k.lower(): v for k, v in request.headers.items()}
    try:
        status, message = await request.app[PAYMENTS].notification(gateway, headers, body)
    except (psycopg.Error, PoolTimeout, OSError) as exc:
        log.error(
            "notification not recorded: database unavailable",
            extra=fields(gateway=gateway, error=type(exc).__name__),
        )
        return _answer(503, "not recorded; retry")
    return _answer(status, message)


async def healthz(request: web.Request) -> web.Response:
    if request.app[DRAINING].is_set():
        return web.Response(status=503, text="draining")
    return web.Response(text="ok")


def create_app(payments: Payments, draining: asyncio.Event) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[PAYMENTS] = payments
    app[DRAINING] = draining
    app.router.add_post("/webhooks/{gateway:midtrans|xendit}", notification)
    app.router.add_get("/healthz", healthz)
    return app
