"""The measurements wrk cannot make: time to the first stream chunk (at
concurrency 1 only, where a Python client is not the bottleneck), image jobs
from submit to done, and many slow streams held open at once (raw asyncio
sockets, a few hundred bytes of state each)."""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp
import httpx
import orjson


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class Latencies:
    samples_ms: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0

    def summary(self) -> dict[str, float | int]:
        s = self.samples_ms
        return {
            "count": len(s),
            "errors": self.errors,
            "rps": len(s) / self.seconds if self.seconds else 0.0,
            "p50_ms": percentile(s, 50),
            "p90_ms": percentile(s, 90),
            "p99_ms": percentile(s, 99),
            "mean_ms": statistics.fmean(s) if s else 0.0,
        }


def first_chunk(
    url: str, body: bytes, headers: dict[str, str], seconds: float, timeout: float = 10.0
) -> Latencies:
    """One stream at a time for `seconds`: time from sending the request to the
    first `data:` line; each stream is read to its end and must end in [DONE]."""
    out = Latencies()
    with httpx.Client(timeout=timeout, headers=headers) as client:
        start = time.perf_counter()
        deadline = start + seconds
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            first: float | None = None
            ok = False
            try:
                with client.stream("POST", url, content=body) as response:
                    for line in response.iter_lines():
                        if first is None and line.startswith("data:"):
                            first = time.perf_counter() - t0
                        if line == "data: [DONE]":
                            ok = response.status_code == 200
                        elif line.startswith("data:") and '"error"' in line[:40]:
                            ok = False
                            break
            except httpx.HTTPError:
                ok = False
            if ok and first is not None:
                out.samples_ms.append(first * 1000)
            else:
                out.errors += 1
        out.seconds = time.perf_counter() - start
    return out


@dataclass
class JobsToDone:
    submitted: int = 0
    done: int = 0
    failed: int = 0
    errors: int = 0  # HTTP errors, non-202 submissions, unfinished jobs
    polls: int = 0
    seconds: float = 0.0
    client_ms: list[float] = field(default_factory=list)  # submit to seeing "done"
    job_ids: list[str] = field(default_factory=list)


async def _submit_to_done_worker(
    session: aiohttp.ClientSession, body: bytes, deadline: float, out: JobsToDone, limit: float
) -> None:
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        try:
            async with session.post("/v1/image/generate", data=body) as reply:
                raw = await reply.read()
                if reply.status != 202:
                    out.errors += 1
                    continue
            job_id = str(orjson.loads(raw)["job_id"])
            out.submitted += 1
            out.job_ids.append(job_id)
            # Poll with a short, growing pause: quick jobs are seen quickly,
            # without flooding the stack with polls at high concurrency.
            pause = 0.01
            while True:
                await asyncio.sleep(pause)
                pause = min(pause * 1.5, 0.25)
                async with session.get(f"/v1/jobs/{job_id}") as poll:
                    raw = await poll.read()
                    out.polls += 1
                    if poll.status != 200:
                        out.errors += 1
                        break
                status = orjson.loads(raw)["status"]
                if status == "done":
                    out.done += 1
                    out.client_ms.append((time.perf_counter() - t0) * 1000)
                    break
                if status == "failed":
                    out.failed += 1
                    break
                if time.perf_counter() - t0 > limit:
                    out.errors += 1
                    break
        except (aiohttp.ClientError, TimeoutError, KeyError, ValueError):
            out.errors += 1


async def _submit_to_done(
    base_url: str,
    headers: dict[str, str],
    body: bytes,
    concurrency: int,
    seconds: float,
    limit: float,
) -> JobsToDone:
    out = JobsToDone()
    # aiohttp, not httpx: a few times less client CPU per request, on the same cores.
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(
        base_url=base_url,
        headers={**headers, "Content-Type": "application/json"},
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=limit),
    ) as session:
        start = time.perf_counter()
        deadline = start + seconds
        await asyncio.gather(
            *(
                _submit_to_done_worker(session, body, deadline, out, limit)
                for _ in range(concurrency)
            )
        )
        out.seconds = time.perf_counter() - start
    return out


def submit_to_done(
    base_url: str,
    headers: dict[str, str],
    body: bytes,
    concurrency: int,
    seconds: float,
    job_timeout: float = 30.0,
) -> JobsToDone:
    """`concurrency` clients, each submitting an image job and polling it until done."""
    return asyncio.run(_submit_to_done(base_url, headers, body, concurrency, seconds, job_timeout))


@dataclass
class HeldStreams:
    started: int = 0
    completed: int = 0  # ended with data: [DONE] after a 200
    errors: int = 0
    peak_open: int = 0  # streams that had sent a first chunk and not yet ended
    seconds: float = 0.0
    error_kinds: dict[str, int] = field(default_factory=dict)
    first_chunk_ms: list[float] = field(default_factory=list)
    durations_s: list[float] = field(default_factory=list)


async def _hold_one(
    host: str, port: int, request: bytes, out: HeldStreams, state: dict[str, int], limit: float
) -> None:
    t0 = time.perf_counter()
    out.started += 1
    writer: asyncio.StreamWriter | None = None
    opened = False
    try:
        async with asyncio.timeout(limit):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(request)
            await writer.drain()
            status_line = await reader.readline()
            parts = status_line.split()
            if len(parts) < 2 or parts[1] != b"200":
                raise _StreamError(f"status {status_line[:40]!r}")
            # Scan the raw bytes (chunked framing and all) with a small carry-over,
            # so a marker split across two reads is still found.
            tail = b""
            while True:
                piece = await reader.read(65536)
                if not piece:
                    raise _StreamError("closed before [DONE]")
                window = tail + piece
                if not opened and b"data:" in window:
                    opened = True
                    out.first_chunk_ms.append((time.perf_counter() - t0) * 1000)
                    state["open"] += 1
                    out.peak_open = max(out.peak_open, state["open"])
                if b'data: {"error"' in window:
                    raise _StreamError("in-band error")
                if b"data: [DONE]" in window:
                    break
                tail = window[-32:]
            out.completed += 1
            out.durations_s.append(time.perf_counter() - t0)
    except (OSError, TimeoutError, _StreamError) as exc:
        out.errors += 1
        kind = str(exc) if isinstance(exc, _StreamError) else type(exc).__name__
        out.error_kinds[kind] = out.error_kinds.get(kind, 0) + 1
    finally:
        if opened:
            state["open"] -= 1
        if writer is not None:
            writer.close()


class _StreamError(Exception):
    pass


async def _hold(
    url: str, headers: dict[str, str], body: bytes, streams: int, limit: float, ramp: float
) -> HeldStreams:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    head = [f"POST {parts.path} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    head.append(f"Content-Length: {len(body)}")
    request = ("\r\n".join(head) + "\r\n\r\n").encode() + body
    out = HeldStreams()
    state = {"open": 0}
    start = time.perf_counter()
    tasks = []
    # Open the streams over `ramp` seconds, not all in one instant (listen backlogs).
    for i in range(streams):
        tasks.append(asyncio.create_task(_hold_one(host, port, request, out, state, limit)))
        if ramp > 0 and i % 50 == 49:
            await asyncio.sleep(ramp * 50 / streams)
    await asyncio.gather(*tasks)
    out.seconds = time.perf_counter() - start
    return out


def hold_streams(
    url: str,
    headers: dict[str, str],
    body: bytes,
    streams: int,
    timeout: float,
    ramp: float = 2.0,
) -> HeldStreams:
    return asyncio.run(_hold(url, headers, body, streams, timeout, ramp))


def json_body(obj: object) -> bytes:
    return orjson.dumps(obj)
