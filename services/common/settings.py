"""Environment-driven settings shared by every service, with local defaults.

Each variable is documented in the README. Services read only what they need.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


def database_url() -> str:
    return env(
        "AIPORT_DATABASE_URL", "postgresql+psycopg://postgres:postgres@127.0.0.1:5432/aiport"
    )


def amqp_url() -> str:
    return env("AIPORT_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def catalog_path() -> Path:
    return Path(env("AIPORT_CATALOG", str(PROJECT_ROOT / "config" / "catalog.yaml")))


def providers_path() -> Path:
    return Path(env("AIPORT_PROVIDERS", str(PROJECT_ROOT / "config" / "providers.yaml")))


def billing_addr() -> str:
    return env("AIPORT_BILLING_ADDR", "127.0.0.1:50051")


def providers_addr() -> str:
    return env("AIPORT_PROVIDERS_ADDR", "127.0.0.1:50052")


def gateway_addr() -> str:
    return env("AIPORT_GATEWAY_ADDR", "127.0.0.1:50050")


def jobs_addr() -> str:
    return env("AIPORT_JOBS_ADDR", "127.0.0.1:50053")


def accounts_addr() -> str:
    return env("AIPORT_ACCOUNTS_ADDR", "127.0.0.1:50054")


def payments_addr() -> str:
    return env("AIPORT_PAYMENTS_ADDR", "127.0.0.1:50057")


def redis_url() -> str:
    """The Redis that holds state shared by replicas and cheap to lose (rate limits)."""
    return env("AIPORT_REDIS_URL", "redis://127.0.0.1:6379/0")


def listen_addr(default: str) -> str:
    """Where this process listens. In a cluster a service listens on 0.0.0.0 while
    its peers dial it by name, so AIPORT_LISTEN_ADDR overrides the service's own
    *_ADDR (which stays the address others dial)."""
    return env("AIPORT_LISTEN_ADDR", default)


def metrics_addr() -> str | None:
    """HOST:PORT for this process's Prometheus /metrics; unset means none."""
    return os.environ.get("AIPORT_METRICS_ADDR", "").strip() or None
