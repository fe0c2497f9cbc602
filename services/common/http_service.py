"""The life of an aiohttp service (files, the console), like the gRPC ones':
serve until SIGTERM/SIGINT, then report unhealthy (the app's `draining` event,
which its /healthz reads) while still serving for the drain delay, stop
listening, and give requests in flight the grace to finish."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from aiohttp import web

from services.common import metrics
from services.common.grpc_server import drain_seconds
from services.common.logs import fields
from services.common.settings import metrics_addr


async def serve_app(
    app: web.Application,
    addr: str,
    *,
    make_runner: Callable[[web.Application, float], web.AppRunner],
    draining: asyncio.Event,
    default_grace: float,
    log: logging.Logger,
    **listening: object,
) -> None:
    """`listening`: more fields for the "listening" log line."""
    host, port = metrics.parse_addr(addr)
    scrape_addr = metrics_addr()
    metrics_server = metrics.serve_metrics(scrape_addr) if scrape_addr else None
    drain_delay, grace = drain_seconds(default_grace=default_grace)
    runner = make_runner(app, grace)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("listening", extra=fields(addr=f"{host}:{port}", **listening))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    log.info("draining", extra=fields(drain_delay_seconds=drain_delay, grace_seconds=grace))
    draining.set()
    await asyncio.sleep(drain_delay)
    await runner.cleanup()
    if metrics_server is not None:
        metrics_server.close()
    log.info("stopped")
