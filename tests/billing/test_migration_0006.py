"""Migration 0006 carries a 0005 database forward unchanged (balances, the
statement, operators' disables), adds reversals, debt and alerts with their
constraints, and goes back while nothing depends on them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import psycopg
import pytest
from alembic import command

from services.billing import audit, migrate
from services.billing.money import Money
from services.billing.postings import ReversalReason
from services.common import migrations
from services.common.db import libpq_conninfo
from tests.support.databases import drop_database, fresh_database_url

IDR = 1_000_000
A = "acct_AAAAAAAAAAAAAAAAAAAA"
B = "acct_BBBBBBBBBBBBBBBBBBBB"
OPERATOR = "usr_OOOOOOOOOOOOOOOOOOOO"

ENTRIES = (
    "SELECT id, account_id, kind, amount_micros, balance_after_micros, hold_id, description,"
    " actor FROM billing.ledger_entries ORDER BY id"
)
ACCOUNTS = (
    "SELECT id, balance_micros, held_micros, disabled_at IS NOT NULL, disabled_reason,"
    " disabled_by FROM billing.accounts ORDER BY id"
)


@pytest.fixture
def database_0005() -> Iterator[str]:
    url = fresh_database_url("aiport_test_migrate6")
    try:
        migrate.upgrade(url, "0005")
        yield url
    finally:
        drop_database(url)


def query(url: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(libpq_conninfo(url)) as conn:
        return conn.execute(sql).fetchall()


def execute(url: str, sql: str) -> None:
    with psycopg.connect(libpq_conninfo(url)) as conn:
        conn.execute(sql)


HOLD = "hold_HHHHHHHHHHHHHHHHHHHH"
# Written as the 0005 money path writes them (its code is not this one): two
# top-ups, an open hold and an operator's adjustment, each balanced.
OLD_ROWS = f"""
INSERT INTO billing.accounts (id, name, balance_micros, held_micros) VALUES
    ('{A}', 'a', {99 * IDR}, {8 * IDR}), ('{B}', 'b', {5 * IDR}, 0);
INSERT INTO billing.holds (id, account_id, amount_micros, idempotency_key, input_hash, model,
                           expires_at)
    VALUES ('{HOLD}', '{A}', {8 * IDR}, 'chat-2', sha256('chat-2'), 'm',
            now() + interval '1 hour');
WITH t AS (INSERT INTO billing.transactions
               (kind, account_id, idempotency_key, input_hash, balance_after_micros)
           VALUES ('topup', '{A}', 'topup:order-a', sha256('a'), {100 * IDR}) RETURNING id)
INSERT INTO billing.postings SELECT t.id, v.a, v.m FROM t,
    (VALUES ('payments:midtrans', {-100 * IDR}), ('available', {100 * IDR})) v(a, m);
WITH t AS (INSERT INTO billing.transactions (kind, account_id, balance_after_micros)
           VALUES ('topup', '{B}', {5 * IDR}) RETURNING id)
INSERT INTO billing.postings SELECT t.id, v.a, v.m FROM t,
    (VALUES ('payments:manual', {-5 * IDR}), ('available', {5 * IDR})) v(a, m);
WITH t AS (INSERT INTO billing.transactions (kind, account_id, hold_id, balance_after_micros)
           VALUES ('hold', '{A}', '{HOLD}', {100 * IDR}) RETURNING id)
INSERT INTO billing.postings SELECT t.id, v.a, v.m FROM t,
    (VALUES ('available', {-8 * IDR}), ('held', {8 * IDR})) v(a, m);
WITH t AS (INSERT INTO billing.transactions
               (kind, account_id, idempotency_key, input_hash, balance_after_micros,
                description, actor)
           VALUES ('adjustment', '{A}', 'adjustment:adj-1', sha256('adj'), {99 * IDR},
                   'correction', '{OPERATOR}') RETURNING id)
INSERT INTO billing.postings SELECT t.id, v.a, v.m FROM t,
    (VALUES ('adjustments', {IDR}), ('available', {-IDR})) v(a, m);
"""


async def _reverse(url: str) -> None:
    money = Money(url, min_size=1, max_size=2)
    await money.open()
    try:
        await money.reverse_top_up(
            B, 8 * IDR, idempotency_key="r", rail="manual", reason=ReversalReason.REFUND
        )
    finally:
        await money.close()


def test_0005_rows_stay_as_they_were(database_0005: str) -> None:
    url = database_0005
    execute(url, OLD_ROWS)
    execute(
        url,
        f"UPDATE billing.accounts SET disabled_at = now(), disabled_reason = 'fraud',"
        f" disabled_by = '{OPERATOR}' WHERE id = '{B}'",
    )
    accounts, entries = query(url, ACCOUNTS), query(url, ENTRIES)

    migrate.upgrade(url)

    assert query(url, "SELECT version_num FROM billing.alembic_version") == [("0008",)]
    assert query(url, ACCOUNTS) == accounts
    assert query(url, ENTRIES) == entries
    assert query(
        url,
        "SELECT debt_micros, low_balance_threshold_micros, low_balance_alerted_at"
        " FROM billing.accounts ORDER BY id",
    ) == [(0, None, None), (0, None, None)]
    assert query(url, "SELECT DISTINCT debt_change_micros FROM billing.ledger_entries") == [(0,)]
    assert query(url, "SELECT count(*) FROM billing.transactions WHERE reason IS NOT NULL") == [
        (0,)
    ]
    assert audit.verify(url).ok
    # The new constraints are the database's.
    for refused in (
        f"UPDATE billing.accounts SET debt_micros = -1 WHERE id = '{A}'",
        f"UPDATE billing.accounts SET disabled_by = 'billing:debt' WHERE id = '{B}'",
        f"UPDATE billing.accounts SET disabled_by = 'billing:other' WHERE id = '{B}'",
        f"UPDATE billing.accounts SET low_balance_threshold_micros = -5 WHERE id = '{A}'",
        f"UPDATE billing.accounts SET low_balance_alerted_at = now() WHERE id = '{A}'",
        "INSERT INTO billing.transactions (kind, account_id, balance_after_micros)"
        f" VALUES ('reversal', '{A}', 0)",
        "INSERT INTO billing.transactions (kind, account_id, balance_after_micros, reason)"
        f" VALUES ('topup', '{A}', 0, 'refund')",
        "INSERT INTO billing.transactions"
        " (kind, account_id, balance_after_micros, reason, idempotency_key, input_hash)"
        f" VALUES ('reversal', '{A}', 0, 'oops', 'k', sha256('k'))",
    ):
        with pytest.raises(psycopg.errors.CheckViolation):
            execute(url, refused)

    # A reversal on the operator-disabled account: debt, and the disable stays theirs.
    asyncio.run(_reverse(url))
    assert query(
        url, f"SELECT debt_micros, disabled_by FROM billing.accounts WHERE id = '{B}'"
    ) == [(3 * IDR, OPERATOR)]
    assert audit.verify(url).ok
    # Going back would lose the debt: refused, nothing changed.
    config = migrations.alembic_config(url, migrate.MIGRATIONS_DIR)
    with pytest.raises(Exception, match="reversals or debt exist"):
        command.downgrade(config, "0005")
    assert query(url, "SELECT version_num FROM billing.alembic_version") == [("0008",)]


def test_0006_goes_back_while_nothing_depends_on_it(database_0005: str) -> None:
    url = database_0005
    execute(url, OLD_ROWS)
    migrate.upgrade(url)
    execute(url, f"UPDATE billing.accounts SET low_balance_threshold_micros = 5 WHERE id = '{A}'")
    config = migrations.alembic_config(url, migrate.MIGRATIONS_DIR)
    command.downgrade(config, "0005")
    assert query(url, "SELECT version_num FROM billing.alembic_version") == [("0005",)]
    columns = query(
        url,
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = 'billing' AND table_name = 'accounts' ORDER BY column_name",
    )
    assert ("debt_micros",) not in columns
    migrate.upgrade(url)
    assert audit.verify(url).ok
