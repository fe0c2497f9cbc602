"""The jobs service's gauges, refreshed every AIPORT_METRICS_REFRESH_SECONDS:
active jobs by modality and status (one grouped count on the partial index of
unfinished jobs) and messages ready per queue (a passive declare each)."""

from __future__ import annotations

import asyncio

from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from services.common import broker, metrics, pg
from services.common.job_states import ACTIVE, Modality
from services.jobs.store import sql_in

# Literal values (not parameters): the planner matches them to the partial index.
ACTIVE_JOBS_SQL = f"""
    SELECT modality, status, count(*) AS jobs FROM jobs.jobs
    WHERE status IN ({sql_in(ACTIVE)})
    GROUP BY modality, status
"""


async def refresh_active_jobs(pool: pg.Pool) -> None:
    async with pool.connection() as conn:
        rows = await (await conn.execute(ACTIVE_JOBS_SQL)).fetchall()
    # Every known modality and active status is shown, at 0 when there are none.
    counts: dict[tuple[str, ...], float] = {
        (modality, status): 0.0 for modality in Modality for status in ACTIVE
    }
    counts.update({(r["modality"], r["status"]): float(r["jobs"]) for r in rows})
    metrics.set_labelled(metrics.JOBS_ACTIVE, counts)


def queue_names(names: broker.Names) -> list[str]:
    return [
        *(names.work_queue(kind) for kind in broker.WORKER_KINDS),
        *(names.deferred_queue(kind) for kind in broker.WORKER_KINDS),
        names.outcomes_queue,
    ]


class QueueDepth:
    """Reads each queue's ready count on a channel of its own: a passive declare
    of a missing queue closes its channel, and must not take others with it."""

    def __init__(self, connection: AbstractRobustConnection, names: broker.Names) -> None:
        self.connection = connection
        self.queues = queue_names(names)
        self.channel: AbstractChannel | None = None

    async def refresh(self) -> None:
        if self.channel is None or self.channel.is_closed:
            self.channel = await self.connection.channel()
        for name in self.queues:
            queue = await self.channel.declare_queue(name, passive=True)
            ready = queue.declaration_result.message_count
            metrics.QUEUE_READY.labels(name).set(ready or 0)

    async def close(self) -> None:
        if self.channel is not None and not self.channel.is_closed:
            await self.channel.close()


async def run(pool: pg.Pool, depth: QueueDepth) -> None:
    """Both refreshes, forever (until cancelled), each bounded by the interval."""
    await asyncio.gather(
        metrics.refresh_forever("jobs", lambda: refresh_active_jobs(pool)),
        metrics.refresh_forever("queues", depth.refresh),
    )
