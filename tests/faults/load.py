"""A bounded, steady mixed-load driver for the fault suite.

`run_load` fires `rate` operations per second for `seconds` seconds from a few
accounts (plain and streamed chat, image and video jobs, uploads, job polls)
and records every response: status, content type, whether an error body is in
our JSON shape, latency, and the job ids accepted with a 202.
"""

from __future__ import annotations

import asyncio
import json
import random
import struct
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

CHAT_MODEL = "deepseek-v4-flash"
TERMINAL = ("done", "failed")


def tiny_png(width: int = 8, height: int = 8) -> bytes:
    """A real, valid RGB PNG made with the standard library."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    raw = b"".join(b"\x00" + b"\xc0\x40\x20" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


PNG = tiny_png()


def is_error_shape(body: bytes) -> bool:
    """Our error body: {"error": {"message", "type", "param", "code"}}."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return False
    if not isinstance(parsed, dict) or not isinstance(parsed.get("error"), dict):
        return False
    error: dict[str, Any] = parsed["error"]
    return {"message", "type", "param", "code"} <= error.keys() and isinstance(
        error["message"], str
    )


@dataclass
class Record:
    op: str
    status: int  # 0: no HTTP response (transport error or client timeout)
    content_type: str
    error_shape: bool  # an error status with our JSON error body
    latency: float
    started: float
    detail: str = ""
    job_id: str | None = None
    timed_out: bool = False
    stream_complete: bool | None = None

    @property
    def bad_body(self) -> bool:
        """An error response whose body is not our JSON shape (HTML, gRPC, text)."""
        return self.status >= 400 and not (
            self.error_shape and self.content_type.startswith("application/json")
        )


@dataclass
class LoadResult:
    records: list[Record] = field(default_factory=list)

    @property
    def job_ids(self) -> list[str]:
        return [r.job_id for r in self.records if r.job_id]

    def count(self, predicate: Callable[[Record], bool]) -> int:
        return sum(1 for r in self.records if predicate(r))


@dataclass
class Load:
    """Knobs for one run of the driver."""

    rate: float = 12.0
    seconds: float = 8.0
    timeout: float = 12.0
    # Extra directive appended to some prompts (e.g. "[sim:status=429]"), with its share.
    chat_directive: str = ""
    job_directive: str = ""
    directive_share: float = 0.0
    # Stop early (still at most `seconds`) once this is set, e.g. when a fault sequence ends.
    until: asyncio.Event | None = None
    weights: dict[str, float] = field(
        default_factory=lambda: {
            "chat": 0.28,
            "stream": 0.2,
            "image": 0.15,
            "video": 0.1,
            "upload": 0.07,
            "poll": 0.2,
        }
    )


class Driver:
    def __init__(self, base_url: str, api_keys: list[str], load: Load, seed: int) -> None:
        self.base_url = base_url
        self.api_keys = api_keys
        self.load = load
        self.rng = random.Random(seed)
        self.result = LoadResult()
        self.accepted: list[tuple[str, str]] = []  # (api key, job id)

    def _headers(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    def _directive(self, which: str) -> str:
        if which and self.rng.random() < self.load.directive_share:
            return f" {which}"
        return ""

    async def _record(
        self,
        op: str,
        call: Callable[[], Awaitable[httpx.Response]],
    ) -> Record:
        started = time.monotonic()
        try:
            response = await call()
        except httpx.TimeoutException as exc:
            record = Record(op, 0, "", False, time.monotonic() - started, started, repr(exc))
            record.timed_out = True
        except httpx.HTTPError as exc:
            record = Record(op, 0, "", False, time.monotonic() - started, started, repr(exc))
        else:
            body = response.content
            record = Record(
                op,
                response.status_code,
                response.headers.get("content-type", ""),
                is_error_shape(body),
                time.monotonic() - started,
                started,
                body[:300].decode(errors="replace") if response.status_code >= 400 else "",
            )
            if response.status_code == 202:
                record.job_id = str(response.json()["job_id"])
        self.result.records.append(record)
        return record

    async def chat(self, client: httpx.AsyncClient, key: str) -> None:
        prompt = f"hello {self.rng.random()}{self._directive(self.load.chat_directive)}"
        body = {
            "model": CHAT_MODEL,
            "max_tokens": 16,
            "messages": [{"role": "user", "content": prompt}],
        }
        await self._record(
            "chat",
            lambda: client.post("/v1/chat/completions", json=body, headers=self._headers(key)),
        )

    async def stream(self, client: httpx.AsyncClient, key: str) -> None:
        prompt = f"stream {self.rng.random()}{self._directive(self.load.chat_directive)}"
        body = {
            "model": CHAT_MODEL,
            "max_tokens": 16,
            "stream": True,
            "messages": [{"role": "user", "content": prompt}],
        }
        started = time.monotonic()
        complete = False
        try:
            async with client.stream(
                "POST", "/v1/chat/completions", json=body, headers=self._headers(key)
            ) as response:
                if response.status_code != 200:
                    raw = await response.aread()
                    record = Record(
                        "stream",
                        response.status_code,
                        response.headers.get("content-type", ""),
                        is_error_shape(raw),
                        time.monotonic() - started,
                        started,
                        raw[:300].decode(errors="replace"),
                    )
                else:
                    async for line in response.aiter_lines():
                        if line == "data: [DONE]":
                            complete = True
                    record = Record(
                        "stream",
                        200,
                        response.headers.get("content-type", ""),
                        False,
                        time.monotonic() - started,
                        started,
                    )
                    record.stream_complete = complete
        except httpx.TimeoutException as exc:
            record = Record("stream", 0, "", False, time.monotonic() - started, started, repr(exc))
            record.timed_out = True
        except httpx.HTTPError as exc:
            # A stream cut mid-way (the serving process died): no [DONE].
            record = Record("stream", 0, "", False, time.monotonic() - started, started, repr(exc))
        self.result.records.append(record)

    async def job(self, client: httpx.AsyncClient, key: str, kind: str) -> None:
        directive = self._directive(self.load.job_directive)
        body: dict[str, object]
        if kind == "image":
            path = "/v1/image/generate"
            body = {"prompt": f"bromo{directive}", "aspect_ratio": "1:1"}
        else:
            slow = " [sim:delay=2]" if self.rng.random() < 0.5 and not directive else ""
            path = "/v1/video/generate"
            body = {"prompt": f"jakarta{slow}{directive}", "duration": 4}
        record = await self._record(
            kind, lambda: client.post(path, json=body, headers=self._headers(key))
        )
        if record.job_id:
            self.accepted.append((key, record.job_id))

    async def upload(self, client: httpx.AsyncClient, key: str) -> None:
        files = {"file": ("ref.png", PNG, "image/png")}
        await self._record(
            "upload",
            lambda: client.post("/v1/image/upload", files=files, headers=self._headers(key)),
        )

    async def poll(self, client: httpx.AsyncClient, key: str) -> None:
        if not self.accepted:
            return await self.chat(client, key)
        owner, job_id = self.rng.choice(self.accepted)
        await self._record(
            "poll", lambda: client.get(f"/v1/jobs/{job_id}", headers=self._headers(owner))
        )

    async def one(self, client: httpx.AsyncClient) -> None:
        key = self.rng.choice(self.api_keys)
        ops = list(self.load.weights)
        op = self.rng.choices(ops, weights=[self.load.weights[o] for o in ops])[0]
        if op == "chat":
            await self.chat(client, key)
        elif op == "stream":
            await self.stream(client, key)
        elif op in ("image", "video"):
            await self.job(client, key, op)
        elif op == "upload":
            await self.upload(client, key)
        else:
            await self.poll(client, key)

    async def run(self) -> LoadResult:
        timeout = httpx.Timeout(self.load.timeout, connect=5.0)
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
        async with httpx.AsyncClient(
            base_url=self.base_url, timeout=timeout, limits=limits
        ) as client:
            tasks: list[asyncio.Task[None]] = []
            interval = 1.0 / self.load.rate
            start = time.monotonic()
            n = 0
            while time.monotonic() - start < self.load.seconds and not (
                self.load.until is not None and self.load.until.is_set()
            ):
                tasks.append(asyncio.create_task(self.one(client)))
                n += 1
                await asyncio.sleep(max(0.0, start + n * interval - time.monotonic()))
            await asyncio.gather(*tasks)
        return self.result
