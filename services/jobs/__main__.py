"""python -m services.jobs — job state, the outbox relay, outcomes and timeouts."""

from __future__ import annotations

import asyncio
import contextlib

from aiport.v1 import billing_pb2_grpc, job_state_pb2_grpc

from services.common import broker, logs, pg, runtime, service_auth, settings
from services.common.grpc_server import channel, serve
from services.jobs import gauges, rules
from services.jobs.service import (
    JobStateService,
    PublishedMarks,
    Settlement,
    Timing,
    open_publisher,
    run_background,
)


def timing_from_env() -> Timing:
    return Timing(
        job_timeout_seconds=settings.env_int("AIPORT_JOB_TIMEOUT_SECONDS", 600),
        sweep_seconds=settings.env_float("AIPORT_JOB_SWEEP_SECONDS", 5.0),
        lease_seconds=rules.clamp_lease_seconds(
            settings.env_int("AIPORT_JOB_LEASE_SECONDS", rules.DEFAULT_LEASE_SECONDS)
        ),
    )


async def main() -> None:
    log = logs.setup("jobs")
    # Fail closed: no caller tokens, no JobState (never the tokens in the log).
    try:
        callers = service_auth.caller_tokens(names=service_auth.JOBS_CALLER_TOKEN_ENV)
    except (ValueError, OSError) as exc:
        log.error("bad configuration", extra=logs.fields(error=str(exc)))
        raise SystemExit(1) from None
    pool = pg.pool(settings.database_url(), "jobs")
    await pool.open(wait=True, timeout=10)
    billing_channel = channel(
        settings.billing_addr(), service_auth.metadata(service_auth.own_token())
    )
    timing = timing_from_env()
    settlement = Settlement(
        pool, billing_pb2_grpc.BillingStub(billing_channel), retry_base_seconds=timing.sweep_seconds
    )
    names = broker.names_from_env()
    connection = await broker.connect(settings.amqp_url())
    publisher = await open_publisher(connection, names)
    published = PublishedMarks(pool)
    service = JobStateService(pool, publisher, settlement, published, timing.lease_seconds)
    background = asyncio.create_task(
        run_background(pool, connection, names, publisher, settlement, published, timing)
    )
    queue_depth = gauges.QueueDepth(connection, names)
    refresh = asyncio.create_task(gauges.run(pool, queue_depth))

    def register(server: object) -> list[str]:
        job_state_pb2_grpc.add_JobStateServicer_to_server(service, server)
        return ["aiport.v1.JobState"]

    async def close() -> None:
        for task in (background, refresh):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await queue_depth.close()
        await connection.close()
        await billing_channel.close(None)
        await published.flush()
        await pool.close()

    await serve(
        settings.listen_addr(settings.jobs_addr()),
        register,
        on_stop=close,
        interceptors=[service_auth.ServerInterceptor(callers, service_auth.JOBS_CALLERS)],
    )


if __name__ == "__main__":
    runtime.run(main())
