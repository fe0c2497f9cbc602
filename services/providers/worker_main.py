"""python -m services.providers.worker_main --kind image|video [--addr HOST:PORT]

Consumes the kind's work queue with bounded prefetch and serves gRPC health on
--addr (so probes can see it). SIGTERM stops consuming at once, lets the jobs
in hand finish within AIPORT_GRACE_SECONDS, then closes: work still unacked
returns to the queue for another worker (a video resumes its recorded upstream
task, so nothing is paid for twice).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable

from aio_pika.abc import AbstractIncomingMessage
from aiport.v1 import job_state_pb2_grpc

from services.common import blobs, broker, logs, runtime, service_auth, settings
from services.common.catalog import load_catalog
from services.common.grpc_server import channel, drain_seconds, serve
from services.providers import registry
from services.providers.failover import Breakers, policy_from_env
from services.providers.routes import load_routes
from services.providers.worker import Worker

log = logging.getLogger(__name__)

Handler = Callable[[AbstractIncomingMessage], Awaitable[None]]


class InFlight:
    """Counts the messages being handled, so a drain can wait for them."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def wrap(self, handle: Handler) -> Handler:
        async def tracked(message: AbstractIncomingMessage) -> None:
            self.count += 1
            self._idle.clear()
            try:
                await handle(message)
            finally:
                self.count -= 1
                if self.count == 0:
                    self._idle.set()

        return tracked

    async def wait(self, seconds: float) -> bool:
        """True when nothing is in hand any more, False if `seconds` ran out first."""
        try:
            await asyncio.wait_for(self._idle.wait(), seconds)
        except TimeoutError:
            return False
        return True


async def main(kind: str, addr: str) -> None:
    logs.setup(f"worker-{kind}")
    table = load_routes(settings.providers_path())
    image_adapters = registry.build(table, registry.IMAGE)
    video_adapters = registry.build(table, registry.VIDEO)
    job_state_channel = channel(
        settings.jobs_addr(),
        service_auth.metadata(service_auth.own_token(name=service_auth.JOBS_TOKEN_ENV)),
    )
    names = broker.names_from_env()
    connection = await broker.connect(settings.amqp_url())
    publish_channel = await connection.channel(publisher_confirms=True)
    await broker.declare(publish_channel, names)
    worker = Worker(
        kind=kind,
        routes=table,
        image_adapters=image_adapters,
        video_adapters=video_adapters,
        breakers=Breakers(policy_from_env()),
        job_state=job_state_pb2_grpc.JobStateStub(job_state_channel),
        store=blobs.blob_store_from_env(),
        outcomes=publish_channel.default_exchange,
        names=names,
        worker_id=f"{socket.gethostname()}:{os.getpid()}:{kind}",
        job_timeout_seconds=settings.env_int("AIPORT_JOB_TIMEOUT_SECONDS", 600),
        catalog=load_catalog(settings.catalog_path()),
    )
    consume_channel = await connection.channel()
    await consume_channel.set_qos(prefetch_count=settings.env_int("AIPORT_WORKER_PREFETCH", 8))
    queue = await consume_channel.declare_queue(names.work_queue(kind), durable=True)
    in_flight = InFlight()
    consumer_tag = await queue.consume(in_flight.wrap(worker.handle))

    async def stop_consuming() -> None:
        await queue.cancel(consumer_tag)
        log.info("stopped taking work", extra={"fields": {"in_flight": in_flight.count}})

    async def close() -> None:
        grace = drain_seconds()[1]
        if not await in_flight.wait(grace):
            # Closing the connection hands the unacked messages back to the queue.
            log.warning(
                "jobs unfinished after the grace; returned to the queue",
                extra={"fields": {"in_flight": in_flight.count, "grace_seconds": grace}},
            )
        await connection.close()
        await job_state_channel.close(None)
        for image_adapter in image_adapters.values():
            await image_adapter.close()
        for video_adapter in video_adapters.values():
            await video_adapter.close()

    await serve(
        addr, lambda server: [f"aiport.worker.{kind}"], on_stop=close, on_drain=stop_consuming
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kind", choices=broker.WORKER_KINDS, required=True)
    parser.add_argument(
        "--addr",
        default=settings.listen_addr("127.0.0.1:50060"),
        help="HOST:PORT for gRPC health [AIPORT_LISTEN_ADDR]",
    )
    args = parser.parse_args()
    runtime.run(main(args.kind, args.addr))
