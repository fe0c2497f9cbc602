"""The integration tests' fixtures (the real stack and its clients) are in
tests/support/stack_fixtures.py, loaded for every folder by tests/conftest.py;
the names the tests import from here are kept here."""

from tests.support.stack_fixtures import (
    BREAKER_COOLDOWN_SECONDS,
    JOB_LEASE_SECONDS,
    JOB_TIMEOUT_SECONDS,
    REPLICAS,
    Account,
    NewAccount,
    assert_ledger_invariants,
    assert_ledger_verifies,
    balance_micros,
    usage_records,
    wait_for_jobs_to_settle,
)

__all__ = [
    "BREAKER_COOLDOWN_SECONDS",
    "JOB_LEASE_SECONDS",
    "JOB_TIMEOUT_SECONDS",
    "REPLICAS",
    "Account",
    "NewAccount",
    "assert_ledger_invariants",
    "assert_ledger_verifies",
    "balance_micros",
    "usage_records",
    "wait_for_jobs_to_settle",
]
