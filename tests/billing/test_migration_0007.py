"""Migration 0007 starts each key's lifetime spend counter at what its holds
already count (open holds + captures), leaves the day's and month's empty, adds
the controls' constraints, and goes back."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from alembic import command

from services.billing import migrate
from services.common import migrations
from services.common.db import libpq_conninfo
from tests.support.databases import drop_database, fresh_database_url

IDR = 1_000_000
A = "acct_AAAAAAAAAAAAAAAAAAAA"
K = "key_KKKKKKKKKKKKKKKKKKKK"
OTHER = "key_LLLLLLLLLLLLLLLLLLLL"

# Holds of key K in every state (open 8, captured 3 of 5, released 4, expired 2)
# and a key without holds. Money-neutral rows: only the holds matter here.
OLD_ROWS = f"""
INSERT INTO billing.accounts (id, name) VALUES ('{A}', 'a');
INSERT INTO billing.api_keys (id, account_id, key_hash, prefix) VALUES
    ('{K}', '{A}', sha256('k'), 'aip_live_KKKK'), ('{OTHER}', '{A}', sha256('l'), 'aip_live_LLLL');
INSERT INTO billing.holds (id, account_id, amount_micros, idempotency_key, input_hash, model,
                           expires_at, status, captured_micros, key_id, settled_at)
VALUES
    ('hold_AAAAAAAAAAAAAAAAAAA1', '{A}', {8 * IDR}, 'h1', sha256('1'), 'm',
     now() + interval '1 hour', 'open', 0, '{K}', NULL),
    ('hold_AAAAAAAAAAAAAAAAAAA2', '{A}', {5 * IDR}, 'h2', sha256('2'), 'm',
     now() + interval '1 hour', 'captured', {3 * IDR}, '{K}', now()),
    ('hold_AAAAAAAAAAAAAAAAAAA3', '{A}', {4 * IDR}, 'h3', sha256('3'), 'm',
     now() + interval '1 hour', 'released', 0, '{K}', now()),
    ('hold_AAAAAAAAAAAAAAAAAAA4', '{A}', {2 * IDR}, 'h4', sha256('4'), 'm',
     now() + interval '1 hour', 'expired', 0, '{K}', now());
"""


@pytest.fixture
def database_0006() -> Iterator[str]:
    url = fresh_database_url("aiport_test_migrate7")
    try:
        migrate.upgrade(url, "0006")
        yield url
    finally:
        drop_database(url)


def query(url: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(libpq_conninfo(url)) as conn:
        return conn.execute(sql).fetchall()


def execute(url: str, sql: str) -> None:
    with psycopg.connect(libpq_conninfo(url)) as conn:
        conn.execute(sql)


def test_lifetime_counters_start_at_what_the_holds_count(database_0006: str) -> None:
    url = database_0006
    execute(url, OLD_ROWS)

    migrate.upgrade(url)

    assert query(url, "SELECT version_num FROM billing.alembic_version") == [("0008",)]
    assert query(
        url,
        "SELECT id, spent_lifetime_micros, spent_day, spent_day_micros, spent_month,"
        " spent_month_micros, daily_cap_micros, allowed_models, expires_at,"
        " requests_per_minute FROM billing.api_keys ORDER BY id",
    ) == [
        (K, 11 * IDR, None, 0, None, 0, None, None, None, None),
        (OTHER, 0, None, 0, None, 0, None, None, None, None),
    ]
    for refused in (
        f"UPDATE billing.api_keys SET daily_cap_micros = 0 WHERE id = '{K}'",
        f"UPDATE billing.api_keys SET lifetime_cap_micros = -1 WHERE id = '{K}'",
        f"UPDATE billing.api_keys SET spent_lifetime_micros = -1 WHERE id = '{K}'",
        f"UPDATE billing.api_keys SET spent_month = '2026-12-05' WHERE id = '{K}'",
        f"UPDATE billing.api_keys SET allowed_models = '{{}}' WHERE id = '{K}'",
        f"UPDATE billing.api_keys SET requests_per_minute = 0 WHERE id = '{K}'",
        f"UPDATE billing.accounts SET concurrent_requests = -2 WHERE id = '{A}'",
    ):
        with pytest.raises(psycopg.errors.CheckViolation):
            execute(url, refused)

    command.downgrade(migrations.alembic_config(url, migrate.MIGRATIONS_DIR), "0006")
    assert query(url, "SELECT version_num FROM billing.alembic_version") == [("0006",)]
    columns = query(
        url,
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = 'billing' AND table_name = 'api_keys'",
    )
    assert ("spent_lifetime_micros",) not in columns
    migrate.upgrade(url)
    assert query(url, f"SELECT spent_lifetime_micros FROM billing.api_keys WHERE id = '{K}'") == [
        (11 * IDR,)
    ]
