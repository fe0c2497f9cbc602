"""Run the billing service: `python -m services.billing`.

Serves aiport.v1.Billing on AIPORT_BILLING_ADDR against AIPORT_DATABASE_URL
to callers presenting their service token (services/common/service_auth.py)
(migrate first: `python -m services.billing.migrate`) and expires stale holds
every AIPORT_HOLD_SWEEP_SECONDS. Stops cleanly on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

import grpc
from sqlalchemy.engine import make_url

from services.common import db, logs, runtime, service_auth, settings
from services.common.grpc_server import serve

from . import config, gauges, ledger, sweeper
from .money import Money
from .server import BillingServicer, register


async def run() -> int:
    log = logs.setup("billing")
    url = settings.database_url()
    engine = db.create_engine(url, application_name="billing")
    sweeper_task: asyncio.Task[None] | None = None
    gauges_task: asyncio.Task[None] | None = None
    try:
        try:
            revision = await ledger.schema_revision(engine)
        except Exception as exc:
            log.error(
                "cannot reach the database",
                extra=logs.fields(
                    database=make_url(url).render_as_string(hide_password=True), error=str(exc)
                ),
            )
            return 1
        if revision is None:
            log.error(
                "the billing schema is missing; run: python -m services.billing.migrate",
                extra=logs.fields(database=make_url(url).database),
            )
            return 1
        try:
            hold_ttl = config.hold_ttl_seconds()
            retention = config.idempotency_retention_seconds()
            sweep_every = config.hold_sweep_seconds()
            sweep_batch = config.hold_sweep_batch()
            cap_time_zone = config.spend_cap_time_zone()
            # Fail closed: no caller tokens, no billing (never the tokens in the log).
            tokens = service_auth.caller_tokens()
        except (ValueError, OSError) as exc:
            log.error("bad configuration", extra=logs.fields(error=str(exc)))
            return 1
        money = Money(url, cap_time_zone=cap_time_zone)
        await money.open()
        servicer = BillingServicer(
            engine, money, hold_ttl_seconds=hold_ttl, idempotency_retention_seconds=retention
        )
        sweeper_task = asyncio.create_task(
            sweeper.run_forever(engine, money, sweep_every, sweep_batch), name="hold-sweeper"
        )
        gauges_task = asyncio.create_task(gauges.run_forever(engine), name="gauges")

        def add(server: grpc.aio.Server) -> list[str]:
            return register(server, servicer)

        addr = settings.listen_addr(settings.billing_addr())
        try:
            await serve(
                addr,
                add,
                on_stop=money.close,
                interceptors=[service_auth.ServerInterceptor(tokens)],
            )
        except (OSError, RuntimeError) as exc:  # grpc raises RuntimeError on a taken port
            log.error("cannot serve", extra=logs.fields(addr=addr, error=str(exc)))
            return 1
        return 0
    finally:
        if gauges_task is not None:
            gauges_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await gauges_task
        if sweeper_task is not None:
            sweeper_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper_task
        await engine.dispose()


def main() -> int:
    return runtime.run(run())


if __name__ == "__main__":
    sys.exit(main())
