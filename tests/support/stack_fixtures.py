"""The real stack (Envoy, gateway, billing, accounts and its mail sink, providers,
sandbox upstream) on free ports against a fresh PostgreSQL database (and fresh
Redis key names), shared by the integration and browser tests.

A pytest plugin (tests/conftest.py loads it), not a folder's conftest: its
session fixtures are defined once, so `pytest tests` starts one stack for
tests/integration and tests/browser alike, and `pytest tests/integration`
alone still finds them.

AIPORT_TEST_REPLICAS (default 1) runs that many processes of every service
(`make test-replicas` runs the suite with 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import openai
import psycopg
import pytest
from aiport.v1 import accounts_pb2_grpc, billing_pb2, billing_pb2_grpc

from deploy.local.stack import Stack, StackConfig
from services.common import service_auth
from services.common.money import idr_to_micros
from tests.support.databases import drop_database, fresh_database_url
from tests.support.limits import UNREACHED_RATE_LIMITS


@dataclass(frozen=True)
class Account:
    account_id: str
    api_key: str
    key_id: str


NewAccount = Callable[[str], Account]
JOB_TIMEOUT_SECONDS = 15
# A killed worker's job resumes once its lease lapses: well within the timeout.
JOB_LEASE_SECONDS = 3
BREAKER_COOLDOWN_SECONDS = 2
REPLICAS = int(os.environ.get("AIPORT_TEST_REPLICAS", "1") or "1")


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    url = fresh_database_url("aiport_it")
    run_dir = Path(tempfile.mkdtemp(prefix="aiport-it-"))
    config = StackConfig.on_free_ports(url, run_dir, replicas=REPLICAS)
    # Short enough that the timeout test is quick, long enough for every other job.
    config.job_timeout_seconds = JOB_TIMEOUT_SECONDS
    # As behind one load balancer: tests name clients with X-Forwarded-For.
    config.edge_xff_trusted_hops = 1
    config.extra_env["AIPORT_JOB_SWEEP_SECONDS"] = "1"
    config.extra_env["AIPORT_JOB_LEASE_SECONDS"] = str(JOB_LEASE_SECONDS)
    config.extra_env["AIPORT_BREAKER_COOLDOWN_SECONDS"] = str(BREAKER_COOLDOWN_SECONDS)
    # One "rpc" log line per call, so every hop of a request can be found by its id.
    config.extra_env["AIPORT_GRPC_ACCESS_LOG"] = "1"
    # The fuzz test alone sends well over a key's default 600 a minute.
    config.extra_env.update(UNREACHED_RATE_LIMITS)
    stack = Stack(config)
    try:
        stack.start()
        yield stack
        assert_ledger_invariants(url)
    finally:
        stack.stop()
        drop_database(url)


def wait_for_jobs_to_settle(url: str, seconds: float = 4 * JOB_TIMEOUT_SECONDS) -> None:
    """Until every job is settled and no hold is open (bounded): a chat whose client
    left keeps running upstream and is settled when it ends, a little later."""
    deadline = time.monotonic() + seconds
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM jobs.jobs WHERE settled_at IS NULL)"
                " + (SELECT count(*) FROM billing.holds WHERE status = 'open')"
            ).fetchone()
            if row == (0,):
                return
            time.sleep(0.2)


def assert_ledger_invariants(url: str) -> None:
    """After every test: each balance is the sum of its ledger, held money is
    exactly the open holds, no hold was left open or charged twice."""
    wait_for_jobs_to_settle(url)
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        drift = conn.execute(
            """
            SELECT a.id, a.balance_micros, COALESCE(l.total, 0), a.held_micros,
                   COALESCE(h.open, 0)
            FROM billing.accounts a
            LEFT JOIN (SELECT account_id, SUM(amount_micros) AS total
                       FROM billing.ledger_entries GROUP BY account_id) l
                   ON l.account_id = a.id
            LEFT JOIN (SELECT account_id, SUM(amount_micros) AS open
                       FROM billing.holds WHERE status = 'open' GROUP BY account_id) h
                   ON h.account_id = a.id
            WHERE a.balance_micros <> COALESCE(l.total, 0)
               OR a.held_micros <> COALESCE(h.open, 0)
               OR a.balance_micros < a.held_micros
            """
        ).fetchall()
        open_holds = conn.execute(
            "SELECT count(*) FROM billing.holds WHERE status = 'open'"
        ).fetchone()
        accounts = conn.execute("SELECT count(*) FROM billing.accounts").fetchone()
        # No hold moved money twice (two replicas settling the same job, say).
        charged_twice = conn.execute(
            "SELECT hold_id, count(*) FROM billing.ledger_entries WHERE hold_id IS NOT NULL"
            " GROUP BY hold_id HAVING count(*) > 1"
        ).fetchall()
        # Every job ended and had its hold settled.
        unfinished = conn.execute(
            "SELECT id, status FROM jobs.jobs WHERE settled_at IS NULL"
        ).fetchall()
    assert accounts is not None and accounts[0] > 0
    assert drift == [], f"ledger drift: {drift}"
    assert_ledger_verifies(url)
    assert open_holds == (0,), f"holds left open: {open_holds}"
    assert unfinished == [], f"jobs not finished and settled: {unfinished}"
    assert charged_twice == [], f"holds charged more than once: {charged_twice}"


def assert_ledger_verifies(url: str) -> None:
    """`aiportctl ledger verify --json`, the real CLI against the test database:
    every cached balance equals its postings, every transaction balances."""
    done = subprocess.run(
        [sys.executable, "-m", "services.billing.cli", "ledger", "verify", "--json"],
        env={**os.environ, "AIPORT_DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"ledger verify: {done.stdout or done.stderr}"
    assert json.loads(done.stdout)["ok"] is True, done.stdout


@pytest.fixture(scope="session")
def base_url(stack: Stack) -> str:
    return stack.config.base_url


@pytest.fixture(scope="session")
def billing(stack: Stack) -> Iterator[billing_pb2_grpc.BillingStub]:
    with grpc.insecure_channel(stack.config.billing_addr) as chan:
        # As aiportctl: billing refuses calls without a caller's service token.
        yield billing_pb2_grpc.BillingStub(service_auth.with_token(chan, stack.config.admin_token))


@pytest.fixture(scope="session")
def accounts(stack: Stack) -> Iterator[accounts_pb2_grpc.AccountsStub]:
    """The accounts service as the console calls it (with the console's token)."""
    with grpc.insecure_channel(stack.config.accounts_addr) as chan:
        token = stack.config.accounts_tokens["console"]
        yield accounts_pb2_grpc.AccountsStub(service_auth.with_token(chan, token))


@pytest.fixture(scope="session")
def accounts_admin(stack: Stack) -> Iterator[accounts_pb2_grpc.AccountsStub]:
    """The accounts service as its CLI calls it (operator roles)."""
    with grpc.insecure_channel(stack.config.accounts_addr) as chan:
        token = stack.config.accounts_admin_token
        yield accounts_pb2_grpc.AccountsStub(service_auth.with_token(chan, token))


@pytest.fixture(scope="session")
def mail_folder(stack: Stack) -> Path:
    """Where the stack's mail sink keeps the mail accounts sends (sandbox.mail_sink reads it)."""
    return stack.config.mail_folder


@pytest.fixture(scope="session")
def new_account(billing: billing_pb2_grpc.BillingStub) -> NewAccount:
    """Make an account funded with the given IDR amount and give it a key."""

    def make(balance_idr: str = "100000") -> Account:
        account_id = billing.CreateAccount(billing_pb2.CreateAccountRequest(name="test")).account_id
        if idr_to_micros(balance_idr) > 0:
            billing.TopUp(
                billing_pb2.TopUpRequest(
                    account_id=account_id, amount_micros=idr_to_micros(balance_idr)
                )
            )
        key = billing.CreateApiKey(billing_pb2.CreateApiKeyRequest(account_id=account_id))
        return Account(account_id, key.api_key, key.key_id)

    return make


@pytest.fixture
def account(new_account: NewAccount) -> Account:
    return new_account("100000")


@pytest.fixture
def client(base_url: str, account: Account) -> openai.OpenAI:
    # No SDK retries: each test sees exactly the response of its one request.
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=account.api_key, max_retries=0)


@pytest.fixture
def http(base_url: str, account: Account) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=base_url,
        headers={"Authorization": f"Bearer {account.api_key}"},
        timeout=30,
    ) as c:
        yield c


@pytest.fixture(scope="session")
def sandbox(stack: Stack) -> Iterator[httpx.Client]:
    """Direct access to the sandbox upstream's test endpoints."""
    with httpx.Client(base_url=stack.config.sandbox_url, timeout=10) as c:
        yield c


def balance_micros(billing: billing_pb2_grpc.BillingStub, account_id: str) -> int:
    reply = billing.GetAccountBalance(billing_pb2.GetAccountBalanceRequest(account_id=account_id))
    return int(reply.balance_micros)


def usage_records(base_url: str, api_key: str, seconds: float = 10) -> list[dict[str, Any]]:
    """The key's account's usage records, once there are any (they are written with the
    capture, which may finish just after the answer), or [] after `seconds`."""
    headers = {"Authorization": f"Bearer {api_key}"}
    deadline = time.monotonic() + seconds
    while True:
        records: list[dict[str, Any]] = httpx.get(f"{base_url}/v1/usage", headers=headers).json()[
            "data"
        ]
        if records or time.monotonic() > deadline:
            return records
        time.sleep(0.2)
