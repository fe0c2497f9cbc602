"""`make bench`: what aiport adds on top of its upstream, measured end to end.

Starts a mock upstream (nginx, fixed bodies), one plain Envoy hop to it (the
floor), and the whole stack (edge → gateway → billing/providers/jobs → mock;
real PostgreSQL and RabbitMQ, a fresh database), then drives each scenario
with wrk (or a small Python client where wrk cannot measure) and reads CPU and
memory of every process from /proc. Prints a table and writes
bench/results/latest.json and latest.md. See bench/README.md.

    .venv/bin/python -m bench                      # the full run (~10 minutes)
    BENCH_SECONDS=2 .venv/bin/python -m bench      # a quick smoke run
    .venv/bin/python -m bench --only chat,stream   # some scenario groups only
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, LiteralString

import grpc
import httpx
import psycopg
from aiport.v1 import billing_pb2, billing_pb2_grpc
from sqlalchemy.engine import make_url

from bench import baseline, clients, procstat, report, surfaces, wrk
from bench.envoy_hop import EnvoyHop
from bench.mock import Mock, nginx_binary
from bench.report import STACK_COUNTED, Check, Row
from deploy.local.ports import free_port
from deploy.local.stack import Stack, StackConfig
from services.common import service_auth, settings
from services.common.money import idr_to_micros
from services.common.settings import PROJECT_ROOT
from tests.support.databases import drop_database, fresh_database_url

DESCRIPTION = "Benchmark aiport against a mock upstream (see bench/README.md)."
RESULTS_DIR = PROJECT_ROOT / "bench" / "results"
PROVIDERS_FILE = PROJECT_ROOT / "config" / "providers.bench.yaml"
GROUPS = ("floor", "chat", "stream", "surfaces", "memory", "jobs", "submit", "hold")
TEXT_MODEL = "deepseek-v4-flash"  # routed to the mock (config/providers.bench.yaml)
IMAGE_MODEL = "gpt-image-2"  # routed to the mock's images API
HOLD_MODEL = "kimi-k2.6"  # routed to the stack's sandbox (slow, paced streams)
BALANCE_IDR = "10000000000"  # ten billion: no scenario can run out
MAX_TOKENS = 16
# Targets (issue 5), read on the machine the run is on.
TARGET_CHAT_CPU_MS = 2.0
TARGET_CHAT_ADDED_P50_MS = 2.0
TARGET_STREAM_CPU_MS = 3.0
TARGET_STREAM_FIRST_CHUNK_ADDED_MS = 2.0
TARGET_SUBMIT_RPS = 500.0
TARGET_SUBMIT_CONCURRENCY = 16
TARGET_RSS_GROWTH = 0.10
# Between two runs measured back to back (the surfaces' turns): wrk leaves up to c
# requests in flight when it stops, and the stack finishes or cancels them within
# about a p99 latency; without a pause their CPU would land on the next run.
SETTLE_SECONDS = 1.0


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


@dataclass
class Settings:
    seconds: float
    warmup: float
    concurrency: list[int]
    hold_streams: int
    hold_seconds: float
    only: set[str]
    pause_workers: bool
    drain_seconds: float
    mock_workers: int
    results_dir: Path
    baseline: str = ""  # a git rev measured first, in the same run (bench/baseline.py)
    # Rounds of the surfaces group: each surface measured this many times per
    # concurrency, interleaved. Not in child_argv: a baseline's bench may predate
    # it (BENCH_SURFACE_ROUNDS reaches it through the environment).
    surface_rounds: int = 2

    def child_argv(self) -> list[str]:
        """These settings as flags, for the baseline's own bench."""
        argv = [
            *("--seconds", f"{self.seconds:g}", "--warmup", f"{self.warmup:g}"),
            *("--concurrency", ",".join(str(c) for c in self.concurrency)),
            *("--hold-streams", str(self.hold_streams), "--hold-seconds", f"{self.hold_seconds:g}"),
            *("--only", ",".join(sorted(self.only)), "--drain-seconds", f"{self.drain_seconds:g}"),
            *("--mock-workers", str(self.mock_workers)),
        ]
        return argv if self.pause_workers else [*argv, "--no-pause-workers"]

    @classmethod
    def parse(cls, argv: list[str]) -> Settings:
        p = argparse.ArgumentParser(prog="python -m bench", description=DESCRIPTION)
        p.add_argument("--seconds", type=float, default=_env_float("BENCH_SECONDS", 10))
        p.add_argument(
            "--warmup",
            type=float,
            default=_env_float("BENCH_WARMUP_SECONDS", -1),
            help="warm-up before each measured run (default: min(2, seconds))",
        )
        p.add_argument("--concurrency", default=os.environ.get("BENCH_CONCURRENCY", "1,16,64"))
        p.add_argument(
            "--hold-streams", type=int, default=int(_env_float("BENCH_HOLD_STREAMS", 1000))
        )
        p.add_argument("--hold-seconds", type=float, default=_env_float("BENCH_HOLD_SECONDS", 30))
        p.add_argument(
            "--only",
            default=os.environ.get("BENCH_ONLY", ""),
            help=f"comma-separated scenario groups: {','.join(GROUPS)} (default: all)",
        )
        p.add_argument(
            "--no-pause-workers",
            action="store_true",
            default=os.environ.get("BENCH_PAUSE_WORKERS", "1") == "0",
            help="let the image worker run during the job-submission scenario",
        )
        p.add_argument(
            "--drain-seconds", type=float, default=_env_float("BENCH_DRAIN_SECONDS", 300)
        )
        p.add_argument("--mock-workers", type=int, default=int(_env_float("BENCH_MOCK_WORKERS", 1)))
        p.add_argument(
            "--surface-rounds",
            type=int,
            default=int(_env_float("BENCH_SURFACE_ROUNDS", 2)),
            help="surfaces group: interleaved rounds per concurrency (each `seconds` long)",
        )
        p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
        p.add_argument(
            "--baseline",
            default=os.environ.get("BENCH_BASELINE", ""),
            help="a git rev to measure first with the same settings (an A/B in one run)",
        )
        a = p.parse_args(argv)
        only = {g.strip() for g in a.only.split(",") if g.strip()}
        unknown = only - set(GROUPS)
        if unknown:
            p.error(f"unknown scenario groups {sorted(unknown)}; choose from {','.join(GROUPS)}")
        seconds = max(1.0, a.seconds)
        return cls(
            seconds=seconds,
            warmup=min(2.0, seconds) if a.warmup < 0 else a.warmup,
            concurrency=[int(c) for c in a.concurrency.split(",") if c.strip()],
            hold_streams=a.hold_streams,
            hold_seconds=max(4.0, a.hold_seconds),
            only=only or set(GROUPS),
            pause_workers=not a.no_pause_workers,
            drain_seconds=a.drain_seconds,
            mock_workers=a.mock_workers,
            results_dir=a.results_dir,
            baseline=a.baseline.strip(),
            surface_rounds=max(1, a.surface_rounds),
        )


@dataclass
class Outcome:
    """What one measured run produced, before CPU and memory are attached."""

    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int
    load_cpu_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def _from_wrk(result: wrk.WrkResult) -> Outcome:
    return Outcome(
        requests=result.requests,
        seconds=result.seconds,
        p50_ms=result.p50_ms,
        p90_ms=result.p90_ms,
        p99_ms=result.p99_ms,
        errors=result.errors,
        load_cpu_seconds=result.wrk_cpu_seconds,
        extra={
            "socket_errors": result.socket_errors,
            "bad_responses": result.bad_responses,
            "mean_ms": result.mean_ms,
            "max_ms": result.max_ms,
        },
    )


def code_version() -> dict[str, str]:
    """The commit measured, and whether the services' code differed from it."""

    def git(*args: str) -> str:
        try:
            out = subprocess.run(
                ["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return out.stdout.strip()

    dirty = git("status", "--porcelain", "-uno", "--", "services", "deploy", "proto", "config")
    return {"commit": git("rev-parse", "--short", "HEAD") or "unknown", "dirty": str(bool(dirty))}


def _self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Bench:
    def __init__(self, settings: Settings, tmp: Path, cleanup: contextlib.ExitStack) -> None:
        self.s = settings
        self.tmp = tmp
        self.cleanup = cleanup
        self.rows: list[Row] = []
        self.document: dict[str, Any] = {}
        self.paused: list[int] = []

    # -- setup ---------------------------------------------------------------
    def start(self) -> None:
        print("bench: starting the mock upstream (nginx) ...", flush=True)
        self.mock = Mock(self.tmp / "mock", free_port(), workers=self.s.mock_workers)
        self.cleanup.callback(self.mock.stop)
        print("bench: starting the Envoy hop ...", flush=True)
        self.hop = EnvoyHop(self.tmp / "hop", self.mock.port)
        self.cleanup.callback(self.hop.stop)

        print("bench: creating a fresh database ...", flush=True)
        self.db_url = fresh_database_url("aiport_bench")
        self.cleanup.callback(self._drop_database)
        self.db_name = str(make_url(self.db_url).database)

        config = StackConfig.on_free_ports(self.db_url, self.tmp / "stack")
        config.amqp_prefix = f"aiport-bench-{uuid.uuid4().hex[:8]}"
        config.providers_file = PROVIDERS_FILE
        config.upstream_env["AIPORT_BENCH_MOCK_URL"] = self.mock.base_url
        # One key drives every load level: limits it never meets, still checked on
        # every call (bench.limiter_cost measures what the check costs).
        for name in (
            "AIPORT_KEY_REQUESTS_PER_MINUTE",
            "AIPORT_ACCOUNT_REQUESTS_PER_MINUTE",
            "AIPORT_KEY_CONCURRENT_REQUESTS",
            "AIPORT_ACCOUNT_CONCURRENT_REQUESTS",
        ):
            config.extra_env[name] = "100000000"
        self.stack = Stack(config)
        self.cleanup.callback(self._delete_queues, config.amqp_prefix)
        print("bench: starting the stack (migrations, services, edge) ...", flush=True)
        self.cleanup.callback(self._stop_stack)
        self.stack.start()
        self.base_url = config.base_url
        self.api_key = self._seed(config.billing_addr, config.admin_token)
        self.auth = {"Authorization": f"Bearer {self.api_key}"}
        self.roots = {
            name: p.popen.pid for name, p in self.stack.processes.items() if name != "sandbox"
        }
        self.groups = procstat.Groups(
            roots={
                **self.roots,
                "sandbox": self.stack.processes["sandbox"].popen.pid,
                "nginx": self.mock.process.pid,
                "envoy-hop": self.hop.process.pid,
            },
            database=self.db_name,
        )
        self._check_routes()

    def _seed(self, billing_addr: str, token: str) -> str:
        with grpc.insecure_channel(billing_addr) as chan:
            billing = billing_pb2_grpc.BillingStub(service_auth.with_token(chan, token))
            account = billing.CreateAccount(
                billing_pb2.CreateAccountRequest(name="bench"), timeout=10
            ).account_id
            billing.TopUp(
                billing_pb2.TopUpRequest(
                    account_id=account,
                    amount_micros=idr_to_micros(BALANCE_IDR),
                    description="bench",
                ),
                timeout=10,
            )
            key: str = billing.CreateApiKey(
                billing_pb2.CreateApiKeyRequest(account_id=account), timeout=10
            ).api_key
            return key

    def _check_routes(self) -> None:
        """One request of each kind through the stack, so a broken setup fails
        at once with its answer rather than as a table of errors."""
        with httpx.Client(base_url=self.base_url, headers=self.auth, timeout=30) as c:
            for body in (self.chat_body(False), self.chat_body(True)):
                r = c.post("/v1/chat/completions", content=body)
                if r.status_code != 200 or b'"error"' in r.content:
                    raise RuntimeError(f"chat through the stack failed: {r.status_code} {r.text}")
            r = c.post("/v1/image/generate", content=self.image_body())
            if r.status_code != 202:
                raise RuntimeError(f"image job through the stack failed: {r.status_code} {r.text}")

    def _stop_stack(self) -> None:
        for pid in self.paused:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self.paused.clear()
        self.stack.stop()

    def _drop_database(self) -> None:
        drop_database(self.db_url)

    def _delete_queues(self, prefix: str) -> None:
        """The run's own exchange and queues: nothing is left on the broker."""
        import aio_pika

        async def delete() -> None:
            connection = await aio_pika.connect(settings.amqp_url(), timeout=10)
            async with connection:
                channel = await connection.channel()
                for kind in ("image", "video"):
                    await channel.queue_delete(f"{prefix}.work.{kind}")
                await channel.queue_delete(f"{prefix}.outcomes")
                await channel.exchange_delete(f"{prefix}.work")

        try:
            asyncio.run(delete())
        except Exception as exc:  # the run's result stands; say what was left
            print(f"bench: could not delete RabbitMQ queues {prefix}.*: {exc}", file=sys.stderr)

    # -- bodies --------------------------------------------------------------
    def chat_body(self, stream: bool) -> bytes:
        body: dict[str, Any] = {
            "model": TEXT_MODEL,
            "messages": [{"role": "user", "content": "Say hello to the benchmark."}],
            "max_tokens": MAX_TOKENS,
        }
        if stream:
            body["stream"] = True
        return clients.json_body(body)

    def upstream_chat_body(self, stream: bool) -> bytes:
        """What the providers service sends the mock for chat_body()."""
        body: dict[str, Any] = {
            "model": TEXT_MODEL,
            "messages": [{"role": "user", "content": "Say hello to the benchmark."}],
            "max_tokens": MAX_TOKENS,
        }
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return clients.json_body(body)

    def image_body(self) -> bytes:
        return clients.json_body(
            {"model": IMAGE_MODEL, "prompt": "A grey square for the benchmark", "resolution": "1k"}
        )

    def chat_request(self, origin: str, stream: bool, upstream: bool) -> wrk.Request:
        body = self.upstream_chat_body(stream) if upstream else self.chat_body(stream)
        headers = {"Content-Type": "application/json"}
        headers["Authorization"] = "Bearer sk-bench" if upstream else f"Bearer {self.api_key}"
        return wrk.Request(
            url=f"{origin}/v1/chat/completions",
            method="POST",
            body=body.decode(),
            headers=headers,
            marker="data: [DONE]" if stream else '"chat.completion"',
            forbidden='"error"' if stream else "",
        )

    # -- measuring -----------------------------------------------------------
    def measure(
        self,
        scenario: str,
        path: str,
        concurrency: int,
        run: Callable[[], Outcome],
        keep: bool = True,
    ) -> Row:
        """Run `run` and read CPU and memory around it; the row is added to the
        results unless `keep` is false (a slice the caller merges itself)."""
        counted = {"stack": STACK_COUNTED, "mock": ("nginx",), "hop": ("envoy-hop",)}[path]
        cpu0 = procstat.cpu_ticks(self.groups)
        busy0, self0 = procstat.system_busy_seconds(), _self_cpu_seconds()
        wall0 = time.monotonic()
        outcome = run()
        wall = time.monotonic() - wall0
        busy = procstat.system_busy_seconds() - busy0
        self_cpu = _self_cpu_seconds() - self0
        cpu = procstat.cpu_delta_seconds(cpu0, procstat.cpu_ticks(self.groups))
        other = max(0.0, busy - sum(cpu.values()) - outcome.load_cpu_seconds - self_cpu)
        row = Row(
            scenario=scenario,
            path=path,
            concurrency=concurrency,
            requests=outcome.requests,
            seconds=outcome.seconds,
            rps=outcome.requests / outcome.seconds if outcome.seconds > 0 else 0.0,
            p50_ms=outcome.p50_ms,
            p90_ms=outcome.p90_ms,
            p99_ms=outcome.p99_ms,
            errors=outcome.errors,
            counted=counted,
            cpu_seconds=cpu,
            other_cpu_percent=100 * other / (wall * (os.cpu_count() or 1)) if wall else 0.0,
            load_cpu_seconds=outcome.load_cpu_seconds + self_cpu,
            rss_kib=procstat.memory_kib(self.roots, "VmRSS"),
            extra=outcome.extra,
        )
        if keep:
            self.rows.append(row)
        cpu_ms = row.cpu_ms_per_request
        print(
            f"  {scenario:<28} {path:<5} c={concurrency:<4} {row.rps:9.1f} req/s  "
            f"p50 {row.p50_ms:7.2f} ms  p99 {row.p99_ms:8.2f} ms  errors {row.errors:<5} "
            f"CPU {'—' if cpu_ms is None else f'{cpu_ms:.3f}'} ms/req  "
            f"other CPU {row.other_cpu_percent:.0f}%",
            flush=True,
        )
        self._check_stack()
        return row

    def _check_stack(self) -> None:
        dead = self.stack.exited()
        if dead:
            raise RuntimeError(f"stack processes exited during the run: {', '.join(dead)}")

    def wrk_scenario(self, scenario: str, path: str, c: int, request: wrk.Request) -> Row:
        if self.s.warmup > 0:
            wrk.run(request, c, self.s.warmup, self.tmp)
        return self.measure(
            scenario, path, c, lambda: _from_wrk(wrk.run(request, c, self.s.seconds, self.tmp))
        )

    def find(self, scenario: str, path: str, c: int) -> Row | None:
        for row in self.rows:
            if (row.scenario, row.path, row.concurrency) == (scenario, path, c):
                return row
        return None

    def added(self, row: Row, mock_scenario: str) -> None:
        base = self.find(mock_scenario, "mock", row.concurrency)
        if base is not None:
            row.added_p50_ms = row.p50_ms - base.p50_ms

    # -- scenarios -----------------------------------------------------------
    def floor(self) -> None:
        print("bench: the floor: the mock directly, and one plain Envoy hop", flush=True)
        for stream in (False, True):
            name = "chat stream" if stream else "chat"
            for c in self.s.concurrency:
                self.wrk_scenario(
                    name, "mock", c, self.chat_request(self.mock.origin, stream, True)
                )
            for c in self.s.concurrency:
                row = self.wrk_scenario(
                    name, "hop", c, self.chat_request(self.hop.origin, stream, True)
                )
                self.added(row, name)
        self.first_chunk("mock")

    def chat(self) -> None:
        print("bench: non-stream chat through the stack", flush=True)
        for c in self.s.concurrency:
            row = self.wrk_scenario(
                "chat", "stack", c, self.chat_request(self.base_url, False, False)
            )
            self.added(row, "chat")

    def memory(self) -> None:
        """Non-stream chat again, identically: the services' RSS must stay flat."""
        c = max(self.s.concurrency)
        request = self.chat_request(self.base_url, False, False)
        if self.find("chat", "stack", c) is None:
            self.wrk_scenario("chat", "stack", c, request)
        print("bench: memory: the non-stream run again", flush=True)
        first = procstat.memory_kib(self.roots, "VmRSS")
        row = self.wrk_scenario("chat (repeat)", "stack", c, request)
        row.note = "the same non-stream run again, for memory flatness"
        self.added(row, "chat")
        second = procstat.memory_kib(self.roots, "VmRSS")
        growth = {
            name: (second[name] - first[name]) / first[name] if first.get(name) else 0.0
            for name in first
        }
        self.document["memory"] = {
            "concurrency": c,
            "rss_kib_after_first": first,
            "rss_kib_after_second": second,
            "growth": growth,
        }

    def stream(self) -> None:
        print("bench: stream chat through the stack", flush=True)
        for c in self.s.concurrency:
            row = self.wrk_scenario(
                "chat stream", "stack", c, self.chat_request(self.base_url, True, False)
            )
            self.added(row, "chat stream")
        self.first_chunk("stack")

    def surface_request(self, surface: surfaces.Surface, stream: bool) -> wrk.Request:
        body = surface.request_body(TEXT_MODEL, MAX_TOKENS, stream)
        return wrk.Request(
            url=f"{self.base_url}{surface.path}",
            method="POST",
            body=clients.json_body(body).decode(),
            headers={**surface.headers(self.api_key), "Content-Type": "application/json"},
            marker=surface.stream_marker if stream else surface.marker,
            forbidden=surface.stream_forbidden if stream else "",
        )

    def _check_surfaces(self) -> None:
        """One request per surface and mode, so a surface that is not served fails
        here with its answer rather than as a table of errors."""
        with httpx.Client(base_url=self.base_url, timeout=30) as client:
            for surface in surfaces.SURFACES:
                for stream in (False, True):
                    request = self.surface_request(surface, stream)
                    r = client.post(surface.path, content=request.body, headers=request.headers)
                    bad = request.forbidden and request.forbidden in r.text
                    if r.status_code != 200 or request.marker not in r.text or bad:
                        raise RuntimeError(
                            f"{surface.path} (stream {stream}) through the stack failed: "
                            f"{r.status_code} {r.text[:500]}"
                        )

    def surfaces(self) -> None:
        """The same model and the same upstream answer through every client surface
        (chat, messages, ...), non-stream and stream: what each surface costs on top
        of the shared relay. At each concurrency every surface is warmed up, then
        measured `surface_rounds` times, the surfaces taking turns (ABBA), so noise
        on the machine lands on all of them alike; each row sums its rounds."""
        names = ", ".join(s.path for s in surfaces.SURFACES)
        rounds, seconds = self.s.surface_rounds, self.s.seconds
        print(f"bench: client surfaces ({names}), {rounds} rounds of {seconds:g} s", flush=True)
        self._check_surfaces()
        note = (
            f"the surfaces take turns at each concurrency ({rounds} rounds of {seconds:g} s, "
            f"order reversed every other round, {SETTLE_SECONDS:g} s apart); req/s and CPU "
            "over all rounds, latency the median of the rounds' percentiles"
        )
        for stream in (False, True):
            for c in self.s.concurrency:
                requests = {s.name: self.surface_request(s, stream) for s in surfaces.SURFACES}
                if self.s.warmup > 0:
                    for surface in surfaces.SURFACES:
                        wrk.run(requests[surface.name], c, self.s.warmup, self.tmp)
                slices: dict[str, list[Row]] = {s.name: [] for s in surfaces.SURFACES}
                for order in surfaces.rounds_order(rounds):
                    for surface in order:
                        request = requests[surface.name]
                        time.sleep(SETTLE_SECONDS)

                        def run(request: wrk.Request = request, c: int = c) -> Outcome:
                            return _from_wrk(wrk.run(request, c, seconds, self.tmp))

                        slices[surface.name].append(
                            self.measure(surface.scenario(stream), "stack", c, run, keep=False)
                        )
                for surface in surfaces.SURFACES:
                    row = report.merge(slices[surface.name], note)
                    self.rows.append(row)
                    self.added(row, "chat stream" if stream else "chat")
                self._print_surfaces(stream, c)
        self.document["surfaces"] = surfaces.to_json(
            surfaces.compare(self.rows, self.s.concurrency)
        )

    def _print_surfaces(self, stream: bool, c: int) -> None:
        for x in surfaces.compare(self.rows, [c]):
            if x.stream != stream or x.surface == surfaces.SURFACES[0].name:
                continue
            print(
                f"  {x.surface} / {surfaces.SURFACES[0].name} (c={c}"
                f"{', stream' if stream else ''}): stack {x.stack_ratio or 0:.2f}×, "
                f"gateway {x.gateway_ratio or 0:.2f}×",
                flush=True,
            )

    def first_chunk(self, path: str) -> None:
        """Time to the first `data:` line at concurrency 1 (Python client)."""
        if path == "mock":
            url, body = f"{self.mock.origin}/v1/chat/completions", self.upstream_chat_body(True)
            headers = {"Authorization": "Bearer sk-bench", "Content-Type": "application/json"}
        else:
            url, body = f"{self.base_url}/v1/chat/completions", self.chat_body(True)
            headers = {**self.auth, "Content-Type": "application/json"}
        clients.first_chunk(url, body, headers, min(1.0, self.s.warmup))

        def run() -> Outcome:
            got = clients.first_chunk(url, body, headers, self.s.seconds)
            return Outcome(
                requests=len(got.samples_ms),
                seconds=got.seconds,
                p50_ms=clients.percentile(got.samples_ms, 50),
                p90_ms=clients.percentile(got.samples_ms, 90),
                p99_ms=clients.percentile(got.samples_ms, 99),
                errors=got.errors,
            )

        row = self.measure("stream first chunk", path, 1, run)
        row.note = (
            "time to the first `data:` line, one stream at a time (Python httpx client); "
            "req/s is that client's pace"
        )
        if path == "stack":
            self.added(row, "stream first chunk")

    def get_job(self) -> None:
        job_id = self._finished_job()
        print(f"bench: GET /v1/jobs/{{id}} of a finished job ({job_id})", flush=True)
        request = wrk.Request(
            url=f"{self.base_url}/v1/jobs/{job_id}",
            headers=self.auth,
            marker='"status":"done"',
        )
        for c in self.s.concurrency:
            self.wrk_scenario("GET job", "stack", c, request)

    def _finished_job(self) -> str:
        with httpx.Client(base_url=self.base_url, headers=self.auth, timeout=30) as c:
            reply = c.post("/v1/image/generate", content=self.image_body())
            reply.raise_for_status()
            job_id = str(reply.json()["job_id"])
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                status = c.get(f"/v1/jobs/{job_id}").json()["status"]
                if status == "done":
                    return job_id
                if status == "failed":
                    raise RuntimeError(f"the image job failed: {c.get(f'/v1/jobs/{job_id}').text}")
                time.sleep(0.05)
        raise RuntimeError("an image job did not finish in 60 s")

    def submit_to_done(self) -> None:
        print("bench: image jobs, submit to done (instant upstream)", flush=True)
        body = self.image_body()
        for c in self.s.concurrency:
            if self.s.warmup > 0:
                clients.submit_to_done(self.base_url, self.auth, body, c, self.s.warmup)
            self._wait_settled(60)

            def run(c: int = c) -> Outcome:
                got = clients.submit_to_done(self.base_url, self.auth, body, c, self.s.seconds)
                server_ms = self._time_to_done_ms(got.job_ids)
                return Outcome(
                    requests=got.done,
                    seconds=got.seconds,
                    p50_ms=clients.percentile(got.client_ms, 50),
                    p90_ms=clients.percentile(got.client_ms, 90),
                    p99_ms=clients.percentile(got.client_ms, 99),
                    errors=got.errors + got.failed,
                    extra={
                        "submitted": got.submitted,
                        "done": got.done,
                        "failed": got.failed,
                        "polls": got.polls,
                        # created_at → finished_at of the job rows: without the
                        # wait before the insert and without the poll interval.
                        "server_p50_ms": clients.percentile(server_ms, 50),
                        "server_p90_ms": clients.percentile(server_ms, 90),
                        "server_p99_ms": clients.percentile(server_ms, 99),
                    },
                )

            row = self.measure("image submit→done", "stack", c, run)
            row.note = "jobs/s to done; latency = submit to seeing done (client, polling)"

    def _sql(self, query: LiteralString, *params: object) -> list[tuple[Any, ...]]:
        conninfo = self.db_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(conninfo, connect_timeout=10) as conn:
            return conn.execute(query, params).fetchall()

    def _time_to_done_ms(self, job_ids: list[str]) -> list[float]:
        rows = self._sql(
            "SELECT extract(epoch FROM finished_at - created_at) * 1000 FROM jobs.jobs "
            "WHERE id = ANY(%s) AND status = 'done'",
            job_ids,
        )
        return [float(r[0]) for r in rows]

    def _job_count(self) -> int:
        return int(self._sql("SELECT count(*) FROM jobs.jobs")[0][0])

    def _wait_settled(self, seconds: float) -> int:
        """Wait until every job is finished and settled; the number still open."""
        deadline = time.monotonic() + seconds
        while True:
            left = int(self._sql("SELECT count(*) FROM jobs.jobs WHERE settled_at IS NULL")[0][0])
            if left == 0 or time.monotonic() > deadline:
                return left
            time.sleep(0.5)

    def submit(self) -> None:
        """The 202 path. The image worker is paused (SIGSTOP) meanwhile, so this
        measures accepting jobs, not also running them; they run afterwards."""
        print("bench: image job submission (the 202 path)", flush=True)
        request = wrk.Request(
            url=f"{self.base_url}/v1/image/generate",
            method="POST",
            body=self.image_body().decode(),
            headers={**self.auth, "Content-Type": "application/json"},
            expect_status=202,
            marker='"job_id"',
        )
        worker = self.stack.processes["worker-image"].popen.pid
        if self.s.pause_workers:
            os.kill(worker, signal.SIGSTOP)
            self.paused.append(worker)
        try:
            for c in self.s.concurrency:
                if self.s.warmup > 0:
                    wrk.run(request, c, self.s.warmup, self.tmp)
                rows_before = self._job_count()

                def run(c: int = c) -> Outcome:
                    return _from_wrk(wrk.run(request, c, self.s.seconds, self.tmp))

                row = self.measure("image submit (202)", "stack", c, run)
                # Every 202 is a committed row (wrk does not count the requests
                # still in flight when it stops, so rows may exceed the 202s).
                row.extra["accepted_202"] = row.requests - row.extra["bad_responses"]
                row.extra["job_rows_created"] = self._job_count() - rows_before
                if row.extra["job_rows_created"] < row.extra["accepted_202"]:
                    row.errors += row.extra["accepted_202"] - row.extra["job_rows_created"]
                row.note = (
                    "the image worker is paused (SIGSTOP): accepting jobs only; they run after"
                    if self.s.pause_workers
                    else "the image worker runs meanwhile"
                )
        finally:
            if self.s.pause_workers:
                os.kill(worker, signal.SIGCONT)
                self.paused.remove(worker)
        limit = self.s.drain_seconds
        print(f"bench: letting the accepted jobs run (at most {limit:.0f} s) ...", flush=True)
        t0 = time.monotonic()
        left = self._wait_settled(limit)
        states = dict(self._sql("SELECT status, count(*) FROM jobs.jobs GROUP BY status"))
        self.document["submit_drain"] = {
            "seconds": time.monotonic() - t0,
            "unsettled_after": left,
            "jobs_by_status": {str(k): int(v) for k, v in states.items()},
        }
        print(f"bench: jobs by status {states}, unsettled {left}", flush=True)

    def hold(self) -> None:
        """Many slow streams open at once (the sandbox paces them)."""
        n, seconds = self.s.hold_streams, self.s.hold_seconds
        tokens = max(1, round(seconds) - 3)  # frames: role, tokens, finish, usage, [DONE]
        prompt = f"Hold this stream. [sim:chunk-delay=1] [sim:tokens={tokens}]"
        body = clients.json_body(
            {
                "model": HOLD_MODEL,
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": tokens + 8,
                "stream": True,
            }
        )
        headers = {**self.auth, "Content-Type": "application/json"}
        print(f"bench: {n} streams held open for ~{seconds:.0f} s", flush=True)
        peak: dict[str, int] = {}
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.5):
                for name, kib in procstat.memory_kib(self.roots, "VmRSS").items():
                    peak[name] = max(peak.get(name, 0), kib)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()

        def run() -> Outcome:
            got = clients.hold_streams(
                f"{self.base_url}/v1/chat/completions", headers, body, n, timeout=seconds + 60
            )
            return Outcome(
                requests=got.completed,
                seconds=got.seconds,
                p50_ms=clients.percentile(got.first_chunk_ms, 50),
                p90_ms=clients.percentile(got.first_chunk_ms, 90),
                p99_ms=clients.percentile(got.first_chunk_ms, 99),
                errors=got.errors,
                extra={
                    "streams": n,
                    "completed": got.completed,
                    "peak_open": got.peak_open,
                    "error_kinds": got.error_kinds,
                    "stream_seconds_p50": clients.percentile(got.durations_s, 50),
                },
            )

        try:
            row = self.measure(f"{n} open streams", "stack", n, run)
        finally:
            stop.set()
            sampler.join()
        row.note = (
            f"{n} streams opened within 2 s, each ~{seconds:.0f} s long (sandbox upstream, 1 s "
            "between frames); c = streams; latency = first chunk, which includes the "
            "sandbox's 1 s pause; CPU ms/req = per whole stream"
        )
        row.extra["peak_rss_kib_during"] = peak
        print(
            f"  peak open {row.extra['peak_open']}, completed {row.extra['completed']}, "
            f"errors {row.errors} {row.extra['error_kinds'] or ''}",
            flush=True,
        )

    # -- the whole run -------------------------------------------------------
    def run(self) -> None:
        only = self.s.only
        steps: list[tuple[str, Callable[[], None]]] = [
            ("floor", self.floor),
            ("chat", self.chat),
            ("memory", self.memory),
            ("stream", self.stream),
            ("surfaces", self.surfaces),
            ("jobs", self.get_job),
            ("jobs", self.submit_to_done),
            ("hold", self.hold),
            ("submit", self.submit),  # last: it leaves a backlog of jobs to drain
        ]
        self.idle_cpu()
        for group, step in steps:
            if group in only:
                step()
        self.document["peak_rss_kib"] = {
            **procstat.memory_kib(self.roots, "VmHWM"),
            **{
                name: procstat.memory_kib({name: pid}, "VmHWM")[name]
                for name, pid in self.groups.roots.items()
                if name in ("nginx", "envoy-hop", "sandbox")
            },
        }
        stats = procstat.all_stats()
        beam = [p for p in procstat.rabbitmq_pids(stats) if stats[p].comm == "beam.smp"]
        self.document["peak_rss_kib"]["rabbitmq (beam.smp)"] = sum(
            procstat.status_kib(p, "VmHWM") for p in beam
        )

    def idle_cpu(self) -> None:
        """Background CPU with no load (sweepers, heartbeats, pollers)."""
        seconds = min(3.0, self.s.seconds)
        before = procstat.cpu_ticks(self.groups)
        time.sleep(seconds)
        cpu = procstat.cpu_delta_seconds(before, procstat.cpu_ticks(self.groups))
        per_second = {name: value / seconds for name, value in cpu.items()}
        self.document["idle_cpu_seconds_per_second"] = per_second
        ours = sum(per_second.get(g, 0.0) for g in STACK_COUNTED)
        print(f"bench: idle CPU of the stack + servers: {ours * 1000:.1f} ms/s", flush=True)


def checks(rows: list[Row], document: dict[str, Any], bench: Bench) -> list[Check]:
    out: list[Check] = []

    def row(scenario: str, path: str, c: int) -> Row | None:
        return bench.find(scenario, path, c)

    def at_most(label: str, value: float | None, limit: float, digits: int) -> Check:
        shown = "—" if value is None else f"{value:.{digits}f} ms"
        return Check(label, shown, None if value is None else value <= limit)

    def cpu(scenario: str, c: int) -> float | None:
        r = row(scenario, "stack", c)
        return r.cpu_ms_per_request if r else None

    def added(scenario: str) -> float | None:
        r = row(scenario, "stack", 1)
        return r.added_p50_ms if r else None

    for c in bench.s.concurrency:
        out.append(
            at_most(
                f"chat: CPU ≤ {TARGET_CHAT_CPU_MS} ms/request (c={c})",
                cpu("chat", c),
                TARGET_CHAT_CPU_MS,
                3,
            )
        )
    out.append(
        at_most(
            f"chat: added p50 ≤ {TARGET_CHAT_ADDED_P50_MS} ms (c=1)",
            added("chat"),
            TARGET_CHAT_ADDED_P50_MS,
            2,
        )
    )
    for c in bench.s.concurrency:
        out.append(
            at_most(
                f"stream: CPU ≤ {TARGET_STREAM_CPU_MS} ms/request of 8 chunks (c={c})",
                cpu("chat stream", c),
                TARGET_STREAM_CPU_MS,
                3,
            )
        )
    out.append(
        at_most(
            f"stream: first chunk added p50 ≤ {TARGET_STREAM_FIRST_CHUNK_ADDED_MS} ms (c=1)",
            added("stream first chunk"),
            TARGET_STREAM_FIRST_CHUNK_ADDED_MS,
            2,
        )
    )
    reference = surfaces.SURFACES[0].name
    for x in surfaces.compare(rows, bench.s.concurrency):
        if x.surface == reference:
            continue
        gateway = "—" if x.gateway_ratio is None else f"{x.gateway_ratio:.2f}×"
        stack = "—" if x.stack_ratio is None else f"{x.stack_ratio:.2f}×"
        out.append(
            Check(
                f"{x.surface}: CPU/request ≤ {surfaces.TARGET_RATIO:.2f}× {reference}'s, "
                f"gateway and stack ({'stream' if x.stream else 'non-stream'}, "
                f"c={x.concurrency})",
                f"gateway {gateway}, stack {stack}",
                x.within,
            )
        )
    r = row("image submit (202)", "stack", TARGET_SUBMIT_CONCURRENCY)
    out.append(
        Check(
            f"jobs: ≥ {TARGET_SUBMIT_RPS:.0f} accepted/s (c={TARGET_SUBMIT_CONCURRENCY})",
            "—" if r is None else f"{r.rps:.0f}/s",
            None if r is None else r.rps >= TARGET_SUBMIT_RPS,
        )
    )
    memory = document.get("memory")
    if memory:
        worst = max(memory["growth"].items(), key=lambda kv: kv[1])
        out.append(
            Check(
                f"memory: RSS growth ≤ {TARGET_RSS_GROWTH:.0%} on a repeated run",
                f"worst {worst[0]} {worst[1]:+.1%}",
                worst[1] <= TARGET_RSS_GROWTH,
            )
        )
    else:
        out.append(Check(f"memory: RSS growth ≤ {TARGET_RSS_GROWTH:.0%}", "—", None))
    stack_rows = [r for r in rows if r.path == "stack"]
    failing = [f"{r.scenario} c={r.concurrency}: {r.errors}" for r in stack_rows if r.errors]
    drain = document.get("submit_drain")
    if drain and (drain["unsettled_after"] or drain["jobs_by_status"].get("failed")):
        failing.append(
            f"jobs unsettled {drain['unsettled_after']}, "
            f"failed {drain['jobs_by_status'].get('failed', 0)}"
        )
    out.append(
        Check(
            "no errors in any scenario",
            "; ".join(failing) if failing else "0",
            None if not stack_rows else not failing,
        )
    )
    return out


def notes(rows: list[Row]) -> list[str]:
    seen: dict[str, str] = {}
    for r in rows:
        if r.note and r.scenario not in seen:
            seen[r.scenario] = r.note
    if not seen:
        return []
    return [*(f"- `{k}`: {v}" for k, v in seen.items()), ""]


def render(bench: Bench, started: datetime) -> str:
    rows, document = bench.rows, bench.document
    machine, code = document["machine"], document["code"]
    checks_ = checks(rows, document, bench)
    document["checks"] = [vars(c) for c in checks_]
    s = bench.s
    lines = [
        f"### Benchmark ({started:%Y-%m-%d %H:%M} UTC)",
        "",
        f"Machine: {machine['nproc']} × {machine['cpu_model']}, {machine['ram_gib']} GiB RAM, "
        f"Linux {machine['kernel']} (load average at start: {machine['loadavg_at_start']}); "
        f"commit {code['commit']}{' with local changes' if code['dirty'] == 'True' else ''}. "
        f"Each run {s.seconds:g} s after a {s.warmup:g} s warm-up. "
        "`path`: `stack` is the public API through the whole stack; `mock` is wrk "
        "straight to the mock upstream (nginx) with the body the stack sends it; `hop` is "
        "one plain Envoy in front of the mock (the floor). `added p50` is p50 minus the "
        "mock's p50 at the same concurrency. "
        f"`CPU ms/req` (= CPU s per 1,000 requests) sums {', '.join(STACK_COUNTED)} for the "
        "stack rows, nginx alone for `mock`, the hop's Envoy alone for `hop`. "
        "`other CPU %` is the share of the machine used meanwhile by processes outside the "
        "benchmark (contention).",
        "",
        report.markdown(report.main_table(rows)),
        "",
        *notes(rows),
        "Targets:",
        "",
        report.markdown(report.checks_table(checks_)),
        "",
        "CPU ms per request by process (stack rows):",
        "",
        report.markdown(report.cpu_table(rows)),
        "",
    ]
    comparisons = surfaces.compare(rows, s.concurrency)
    if comparisons:
        lines += [
            f"Client surfaces against {surfaces.SURFACES[0].name}, measured in turns "
            f"({s.surface_rounds} rounds of {s.seconds:g} s per surface and concurrency; "
            "`by round`: each round's ratio on its own): CPU ms per request of the "
            "gateway alone and of the whole stack.",
            "",
            report.markdown(surfaces.ratio_table(comparisons)),
            "",
        ]
    if "baseline" in document:
        lines += [
            f"A/B: the same scenarios on {document['baseline']['baseline_commit']} "
            "(measured first, same run):",
            "",
            report.markdown(baseline.ab_table(document["baseline"]["rows"], rows)),
            "",
        ]
    if "peak_rss_kib" in document:
        lines += [report.markdown(report.rss_table(document["peak_rss_kib"])), ""]
    memory = document.get("memory")
    if memory:
        growth = ", ".join(f"{k} {v:+.1%}" for k, v in memory["growth"].items())
        lines += [
            f"RSS growth over a repeated non-stream run (c={memory['concurrency']}): {growth}.",
            "",
        ]
    return "\n".join(lines)


def print_tables(bench: Bench) -> None:
    print()
    print(report.text(report.main_table(bench.rows)))
    print()
    print(report.text(report.checks_table(checks(bench.rows, bench.document, bench))))
    print()
    print(report.text(report.cpu_table(bench.rows)))
    comparisons = surfaces.compare(bench.rows, bench.s.concurrency)
    if comparisons:
        print()
        print(report.text(surfaces.ratio_table(comparisons)))
    if "baseline" in bench.document:
        print()
        print(f"A/B against {bench.document['baseline']['baseline_commit']}:")
        print(report.text(baseline.ab_table(bench.document["baseline"]["rows"], bench.rows)))
    if "peak_rss_kib" in bench.document:
        print()
        print(report.text(report.rss_table(bench.document["peak_rss_kib"])))
    print()


def save_log_tails(tmp: Path, results_dir: Path) -> None:
    """On failure: the last lines of every process log, kept beside the results."""
    target = results_dir / "logs"
    target.mkdir(parents=True, exist_ok=True)
    for log in sorted(tmp.rglob("*.log")):
        tail = log.read_text(errors="replace").splitlines()[-200:]
        (target / log.name).write_text("\n".join(tail) + "\n")
    print(f"bench: the last lines of each service's log are in {target}", file=sys.stderr)


@contextlib.contextmanager
def interrupts_as_keyboard_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP stop the run like Ctrl-C, and Ctrl-C works even where
    the shell started us with SIGINT ignored: everything is cleaned up."""

    def on_signal(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, on_signal) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    s = Settings.parse(sys.argv[1:] if argv is None else argv)
    for tool, found in (("nginx", nginx_binary()), ("wrk", shutil.which("wrk"))):
        if found is None:
            print(
                f"bench: {tool} is missing: run `make bench` (or bench/ensure-tools.sh)",
                file=sys.stderr,
            )
            return 2
    started = datetime.now(UTC)
    tmp = Path(tempfile.mkdtemp(prefix="aiport-bench-"))
    code = 0
    with interrupts_as_keyboard_interrupt(), contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, tmp, True)
        bench = Bench(s, tmp, cleanup)
        bench.document["machine"] = procstat.machine()
        bench.document["code"] = code_version()
        bench.document["settings"] = {
            k: (sorted(v) if isinstance(v, set) else str(v) if isinstance(v, Path) else v)
            for k, v in vars(s).items()
        }
        try:
            if s.baseline:
                bench.document["baseline"] = baseline.run(
                    PROJECT_ROOT, s.baseline, s.child_argv(), tmp
                )
            bench.start()
            bench.run()
        except KeyboardInterrupt:
            print("\nbench: interrupted; stopping everything ...", file=sys.stderr)
            code = 130
        except Exception:
            traceback.print_exc()
            print("bench: failed; stopping everything ...", file=sys.stderr)
            with contextlib.suppress(Exception):
                save_log_tails(tmp, s.results_dir)
            code = 1
        if bench.rows:
            bench.document["started"] = started.isoformat()
            bench.document["complete"] = code == 0
            md = render(bench, started)
            bench.document["rows"] = [r.to_json() for r in bench.rows]
            print_tables(bench)
            # An interrupted or failed run does not replace the last complete one.
            stem = "latest" if code == 0 else "partial"
            report.write_json(s.results_dir / f"{stem}.json", bench.document)
            (s.results_dir / f"{stem}.md").write_text(md)
            print(f"bench: wrote {s.results_dir / stem}.json and {stem}.md", flush=True)
        print("bench: stopping the stack, the Envoy hop and the mock ...", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
