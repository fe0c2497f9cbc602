"""The fault suite's own stack: real processes on free ports, a fresh database
and fresh RabbitMQ queue names, short job and hold timeouts so every scenario
settles quickly."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from aiport.v1 import billing_pb2, billing_pb2_grpc

from deploy.local.stack import Stack, StackConfig
from services.common import service_auth
from services.common.money import idr_to_micros
from tests.integration.conftest import assert_ledger_invariants
from tests.support.databases import drop_database, fresh_database_url
from tests.support.limits import UNREACHED_RATE_LIMITS

JOB_TIMEOUT_SECONDS = 15
# Chat holds orphaned by a killed gateway are released by billing's sweeper
# once they expire: short, so a scenario settles in seconds, yet longer than the
# stalled streams (16 frames 2 s apart) that run on after their client left.
HOLD_TTL_SECONDS = 45
ACCOUNTS = 3
SUMMARY: list[dict[str, object]] = []


@dataclass(frozen=True)
class FaultStack:
    stack: Stack
    url: str  # SQLAlchemy URL of the stack's database
    api_keys: list[str]

    @property
    def base_url(self) -> str:
        return self.stack.config.base_url

    @property
    def conninfo(self) -> str:
        return self.url.replace("postgresql+psycopg://", "postgresql://")


@contextlib.contextmanager
def fault_stack(replicas: int = 1, extra_env: dict[str, str] | None = None) -> Iterator[FaultStack]:
    """A fresh stack with funded accounts; checks the ledger before stopping it."""
    url = fresh_database_url("aiport_faults")
    run_dir = Path(tempfile.mkdtemp(prefix="aiport-faults-"))
    config = StackConfig.on_free_ports(url, run_dir, replicas=replicas)
    config.job_timeout_seconds = JOB_TIMEOUT_SECONDS
    config.extra_env.update(
        {
            "AIPORT_JOB_SWEEP_SECONDS": "1",
            # Jobs of a killed worker resume once its lease lapses: well within the timeout.
            "AIPORT_JOB_LEASE_SECONDS": "3",
            "AIPORT_BREAKER_COOLDOWN_SECONDS": "2",
            "AIPORT_HOLD_TTL_SECONDS": str(HOLD_TTL_SECONDS),
            "AIPORT_HOLD_SWEEP_SECONDS": "1",
            # Load, restarts and drills here, not rate limits.
            **UNREACHED_RATE_LIMITS,
            **(extra_env or {}),
        }
    )
    stack = Stack(config)
    try:
        stack.start()
        keys: list[str] = []
        with grpc.insecure_channel(config.billing_addr) as chan:
            billing = billing_pb2_grpc.BillingStub(
                service_auth.with_token(chan, config.admin_token)
            )
            for i in range(ACCOUNTS):
                account_id = billing.CreateAccount(
                    billing_pb2.CreateAccountRequest(name=f"faults-{i}"), timeout=10
                ).account_id
                billing.TopUp(
                    billing_pb2.TopUpRequest(
                        account_id=account_id, amount_micros=idr_to_micros("5000000")
                    ),
                    timeout=10,
                )
                keys.append(
                    billing.CreateApiKey(
                        billing_pb2.CreateApiKeyRequest(account_id=account_id), timeout=10
                    ).api_key
                )
        yield FaultStack(stack, url, keys)
        assert_ledger_invariants(url)
    finally:
        stack.stop()
        drop_database(url)


@pytest.fixture(scope="session")
def faults() -> Iterator[FaultStack]:
    with fault_stack() as stack:
        yield stack


COLUMNS = (
    ("scenario", "scenario"),
    ("requests", "requests"),
    ("faults", "faults"),
    ("accepted", "jobs accepted"),
    ("done", "done"),
    ("failed", "failed"),
    ("refunded", "refunded"),
    ("lost", "lost"),
    ("double", "double charges"),
    ("5xx", "5xx"),
    ("500", "500s"),
    ("bad_body", "non-JSON errors"),
    ("hangs", "client timeouts"),
    ("cut_streams", "cut streams"),
    ("expired_holds", "holds expired"),
    ("slowest_error", "slowest error s"),
    ("codes", "error statuses"),
)


def summary_table() -> str:
    lines = [
        "| " + " | ".join(title for _, title in COLUMNS) + " |",
        "|" + "|".join("---" if k == "scenario" else "---:" for k, _ in COLUMNS) + "|",
    ]
    for row in SUMMARY:
        lines.append("| " + " | ".join(str(row.get(k, "")) for k, _ in COLUMNS) + " |")
    return "\n".join(lines)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SUMMARY:
        terminalreporter.write_sep("=", "fault suite figures")
        terminalreporter.write_line(summary_table())
