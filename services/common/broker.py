"""The RabbitMQ topology jobs and provider workers share, and confirmed publishing.

Work goes through a durable direct exchange to one durable queue per worker
kind; outcomes come back on one durable queue. A delivery a worker must put
off (another worker holds the job's lease) waits in the kind's deferred queue
until its per-message expiration, then dead-letters back into the work queue.
Every message is persistent and every publish waits for the broker's confirm,
so "sent" means "on disk there".
Names carry a prefix (AIPORT_AMQP_PREFIX) so test runs never share queues.
"""

from __future__ import annotations

from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection

from services.common import settings
from services.common.job_states import WorkerKind

# One work queue per worker kind (which kind serves a modality: Modality.worker_kind).
WORKER_KINDS = tuple(WorkerKind)
CONFIRM_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Names:
    prefix: str

    @property
    def work_exchange(self) -> str:
        return f"{self.prefix}.work"

    def work_queue(self, kind: str) -> str:
        return f"{self.prefix}.work.{kind}"

    def deferred_queue(self, kind: str) -> str:
        return f"{self.prefix}.work.{kind}.deferred"

    @property
    def outcomes_queue(self) -> str:
        return f"{self.prefix}.outcomes"


def names_from_env() -> Names:
    return Names(settings.env("AIPORT_AMQP_PREFIX", "aiport"))


async def connect(url: str) -> AbstractRobustConnection:
    # Robust: reconnects and re-declares after a broker restart.
    return await aio_pika.connect_robust(url, timeout=10, client_properties={"product": "aiport"})


async def declare(channel: AbstractChannel, names: Names) -> AbstractExchange:
    """Declare everything (idempotent); returns the work exchange."""
    exchange = await channel.declare_exchange(
        names.work_exchange, aio_pika.ExchangeType.DIRECT, durable=True
    )
    for kind in WORKER_KINDS:
        queue = await channel.declare_queue(names.work_queue(kind), durable=True)
        await queue.bind(exchange, routing_key=kind)
        # Nobody consumes it: messages expire (each with its own delay) back to work.
        await channel.declare_queue(
            names.deferred_queue(kind),
            durable=True,
            arguments={
                "x-dead-letter-exchange": names.work_exchange,
                "x-dead-letter-routing-key": kind,
            },
        )
    await channel.declare_queue(names.outcomes_queue, durable=True)
    return exchange


def message(body: bytes, message_id: str, expires_seconds: int | None = None) -> aio_pika.Message:
    """A persistent message; `expires_seconds` (for the deferred queue) is how long
    it waits there before going back to work."""
    return aio_pika.Message(
        body,
        message_id=message_id,
        content_type="application/x-protobuf",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        expiration=expires_seconds,
    )
