"""Run the payments service: `python -m services.payments`.

Serves aiport.v1.Payments (gRPC) on AIPORT_PAYMENTS_ADDR to callers presenting
their token (AIPORT_PAYMENTS_TOKEN_GATEWAY / _ADMIN), and the gateways'
notifications (HTTP) on AIPORT_PAYMENTS_HTTP_ADDR, against AIPORT_DATABASE_URL
(migrate first: `python -m services.payments.migrate`); credits billing
(AIPORT_BILLING_ADDR, its own AIPORT_SERVICE_TOKEN). Gateways and their keys:
services/payments/config.py. Stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

import httpx
from aiohttp import web
from aiport.v1 import billing_pb2_grpc

from services.common import logs, metrics, pg, runtime, service_auth, settings
from services.common.grpc_server import channel, serve

from . import config, gateways, store, webhooks
from .ledger_client import BillingLedger
from .server import PaymentsServicer, register
from .service import Payments

DRAIN_SECONDS = 10.0


async def run() -> int:
    log = logs.setup("payments")
    try:
        callers = service_auth.caller_tokens(names=service_auth.PAYMENTS_CALLER_TOKEN_ENV)
        billing_token = service_auth.own_token()
        if billing_token is None:
            raise ValueError(f"{service_auth.TOKEN_ENV} (this service's billing token) is not set")
        cfg = config.load()
        http_host, http_port = metrics.parse_addr(config.http_addr())
    except (ValueError, OSError, KeyError) as exc:
        log.error("bad configuration", extra=logs.fields(error=str(exc)))
        return 1
    if not cfg.gateways:
        log.warning("no payment gateway has keys; top-ups are off")
    pool = pg.pool(settings.database_url(), "payments")
    billing_channel = channel(settings.billing_addr(), service_auth.metadata(billing_token))
    client = httpx.AsyncClient(limits=httpx.Limits(max_connections=50))
    try:
        try:
            await pool.open(wait=True, timeout=10)
            async with pool.connection() as conn:
                revision = await store.schema_revision(conn)
        except Exception as exc:
            log.error("cannot reach the database", extra=logs.fields(error=str(exc)))
            return 1
        if revision is None:
            log.error("the payments schema is missing; run: python -m services.payments.migrate")
            return 1
        payments = Payments(
            pool,
            cfg,
            {name: gateways.build(g, client) for name, g in cfg.gateways.items()},
            BillingLedger(billing_pb2_grpc.BillingStub(billing_channel)),
            recheck_seconds=config.recheck_seconds(),
        )
        draining = asyncio.Event()
        runner = web.AppRunner(webhooks.create_app(payments, draining), access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, http_host, http_port).start()
        except OSError as exc:
            log.error(
                "cannot serve webhooks", extra=logs.fields(addr=config.http_addr(), error=str(exc))
            )
            await runner.cleanup()
            return 1
        log.info(
            "webhooks listening",
            extra=logs.fields(addr=f"{http_host}:{http_port}", gateways=",".join(cfg.gateways)),
        )
        sweeper = asyncio.create_task(payments.sweep_forever(config.sweep_seconds()))

        async def on_drain() -> None:
            draining.set()

        async def on_stop() -> None:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            await runner.cleanup()
            await payments.drain(DRAIN_SECONDS)

        servicer = PaymentsServicer(payments, cfg.receipt)
        addr = settings.listen_addr(settings.payments_addr())
        try:
            await serve(
                addr,
                lambda server: register(server, servicer),
                on_stop=on_stop,
                on_drain=on_drain,
                interceptors=[
                    service_auth.ServerInterceptor(callers, service_auth.PAYMENTS_CALLERS)
                ],
            )
        except (OSError, RuntimeError) as exc:
            log.error("cannot serve", extra=logs.fields(addr=addr, error=str(exc)))
            await on_stop()
            return 1
        return 0
    finally:
        await client.aclose()
        await billing_channel.close(None)
        await pool.close()


def main() -> int:
    return runtime.run(run())


if __name__ == "__main__":
    sys.exit(main())
