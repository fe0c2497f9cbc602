"""What the rate limits add to a chat call in the gateway: CPU of the event-loop
thread, against the Redis of AIPORT_REDIS_URL (a fresh key prefix, removed after).

    .venv/bin/python -m bench.limiter_cost

Per call, as the gateway does it (services/gateway/server.py, Backends.limit):
open the call's state and headers, run the admission script (one round trip), collect the
headers, and at the end give the lease back (a second round trip, in a task of
its own). Calls run one after another, so the round trips' waiting is not
counted: only this process's CPU is, Redis's own is not (it is another
process). `make bench` runs it after the whole-stack benchmark; the target is
under 0.2 ms per call.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid

import uvloop
from aiport.v1 import billing_pb2

from services.common import settings
from services.gateway import call_state, rate_limits
from services.gateway.boundary import add_response_header, collect_response_headers
from services.gateway.rate_limits import Limiter, Limits

CALLS = 2_000
ROUNDS = 5
TARGET_US = 200.0
# Never met: every call is admitted, counted and leased, as in production.
HIGH = Limits(10**9, 10**9, 10**9, 10**9)


async def one_call(limiter: Limiter, own: billing_pb2.RateLimits) -> None:
    collect_response_headers()
    state = call_state.begin()
    admission = await limiter.admit("acct_bench", "key_bench", own, time.time())
    for name, value in admission.headers:
        add_response_header(name, value)
    lease = admission.lease
    assert lease is not None and admission.refused is None
    state.at_end(lambda: limiter.release(lease))
    state.end()


async def round_us(limiter: Limiter, own: billing_pb2.RateLimits) -> float:
    started = time.thread_time()
    for _ in range(CALLS):
        await one_call(limiter, own)
        await asyncio.sleep(0)  # let the release task run, as the loop would
    await limiter.drain()  # the last releases, still this thread's work
    return (time.thread_time() - started) / CALLS * 1e6


async def main() -> None:
    prefix = f"aiport-bench-{uuid.uuid4().hex[:8]}"
    limiter = Limiter(rate_limits.redis_client(settings.redis_url()), prefix, HIGH)
    own = billing_pb2.RateLimits()
    try:
        await round_us(limiter, own)  # warm-up: connection, script cached
        samples = [await round_us(limiter, own) for _ in range(ROUNDS)]
    finally:
        await limiter.close()
    # Only this run's keys: the window's counters and the in-flight sets.
    cleaner = rate_limits.redis_client(settings.redis_url())
    try:
        keys = [k async for k in cleaner.scan_iter(match=f"{prefix}:*")]
        if keys:
            await cleaner.delete(*keys)
    finally:
        await cleaner.aclose()
    us = statistics.median(samples)
    verdict = "within" if us < TARGET_US else "OVER"
    print(
        f"rate limits per chat call (admit + headers + lease back), loop-thread CPU: "
        f"{us:.0f} µs (median of {ROUNDS} rounds of {CALLS}); {verdict} the "
        f"{TARGET_US:.0f} µs target"
    )


if __name__ == "__main__":
    uvloop.run(main())
