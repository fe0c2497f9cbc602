"""Run the accounts service: `python -m services.accounts`.

Serves aiport.v1.Accounts on AIPORT_ACCOUNTS_ADDR to callers presenting their
token (AIPORT_ACCOUNTS_TOKEN_CONSOLE / _ADMIN), against AIPORT_DATABASE_URL
(migrate first: `python -m services.accounts.migrate`), with rate limits in
AIPORT_REDIS_URL, mail over AIPORT_SMTP_*, and billing (AIPORT_BILLING_ADDR,
its own AIPORT_SERVICE_TOKEN) for new users' accounts and the low-balance
alerts it mails (polled every AIPORT_LOW_BALANCE_POLL_SECONDS). Stops on
SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Sequence

import grpc
import redis.asyncio as aioredis
from aiport.v1 import billing_pb2, billing_pb2_grpc

from services.common import logs, pg, runtime, service_auth, settings
from services.common.grpc_server import channel, serve

from . import config, store
from .low_balance import Alert, LowBalanceAlerts
from .mail import Mailer
from .passwords import Passwords
from .ratelimit import RateLimiter
from .server import AccountsServicer, BillingUnavailable, register
from .service import Accounts, MailSettings

BILLING_TIMEOUT_SECONDS = 10.0
REDIS_TIMEOUT_SECONDS = 2.0


async def run() -> int:
    log = logs.setup("accounts")
    try:
        # Fail closed: no caller tokens, no accounts (never the tokens in the log).
        callers = service_auth.caller_tokens(names=service_auth.ACCOUNTS_CALLER_TOKEN_ENV)
        billing_token = service_auth.own_token()
        if billing_token is None:
            raise ValueError(f"{service_auth.TOKEN_ENV} (this service's billing token) is not set")
        sessions = config.session_policy()
        links = config.link_policy()
        limits = config.rate_limits()
        smtp = config.smtp()
        public_url = config.public_url()
        poll_seconds = config.low_balance_poll_seconds()
    except (ValueError, OSError) as exc:
        log.error("bad configuration", extra=logs.fields(error=str(exc)))
        return 1
    pool = pg.pool(settings.database_url(), "accounts")
    redis_client = aioredis.Redis.from_url(
        settings.redis_url(),
        socket_timeout=REDIS_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
    )
    billing_channel = channel(settings.billing_addr(), service_auth.metadata(billing_token))
    mailer = Mailer(smtp)
    alerts_task: asyncio.Task[None] | None = None
    try:
        try:
            await pool.open(wait=True, timeout=10)
            revision = await store.schema_revision(pool)
        except Exception as exc:
            log.error("cannot reach the database", extra=logs.fields(error=str(exc)))
            return 1
        if revision is None:
            log.error("the accounts schema is missing; run: python -m services.accounts.migrate")
            return 1
        billing = billing_pb2_grpc.BillingStub(billing_channel)

        async def create_billing_account(name: str) -> str:
            try:
                reply = await billing.CreateAccount(
                    billing_pb2.CreateAccountRequest(name=name), timeout=BILLING_TIMEOUT_SECONDS
                )
            except grpc.aio.AioRpcError as exc:
                raise BillingUnavailable(exc.code().name) from exc
            return str(reply.account_id)

        accounts = Accounts(
            pool,
            passwords=Passwords(),
            limiter=RateLimiter(redis_client, config.redis_prefix(), limits),
            mailer=mailer,
            mail=MailSettings(sender=smtp.sender, public_url=public_url),
            create_billing_account=create_billing_account,
            sessions=sessions,
            links=links,
        )
        servicer = AccountsServicer(accounts)

        async def claim_alerts(limit: int) -> Sequence[Alert]:
            reply = await billing.ClaimLowBalanceAlerts(
                billing_pb2.ClaimLowBalanceAlertsRequest(limit=limit),
                timeout=BILLING_TIMEOUT_SECONDS,
            )
            return [
                Alert(a.account_id, a.available_micros, a.threshold_micros) for a in reply.alerts
            ]

        alerts = LowBalanceAlerts(
            pool,
            mailer=mailer,
            mail=MailSettings(sender=smtp.sender, public_url=public_url),
            claim=claim_alerts,
        )
        alerts_task = asyncio.create_task(
            alerts.run_forever(poll_seconds), name="low-balance-alerts"
        )

        async def stop_alerts() -> None:
            # Draining: claim nothing more (a claimed alert would go unmailed).
            if alerts_task is not None:
                alerts_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await alerts_task

        def add(server: grpc.aio.Server) -> list[str]:
            return register(server, servicer)

        addr = settings.listen_addr(settings.accounts_addr())
        try:
            await serve(
                addr,
                add,
                on_stop=mailer.close,
                on_drain=stop_alerts,
                interceptors=[
                    service_auth.ServerInterceptor(callers, service_auth.ACCOUNTS_CALLERS)
                ],
            )
        except (OSError, RuntimeError) as exc:  # grpc raises RuntimeError on a taken port
            log.error("cannot serve", extra=logs.fields(addr=addr, error=str(exc)))
            return 1
        return 0
    finally:
        if alerts_task is not None:
            alerts_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await alerts_task
        await billing_channel.close(None)
        await redis_client.aclose()
        await pool.close()


def main() -> int:
    return runtime.run(run())


if __name__ == "__main__":
    sys.exit(main())
