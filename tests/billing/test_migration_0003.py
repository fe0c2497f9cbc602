"""Migration 0003 carries a database of the previous schema forward to postings:
every balance the same, every old row a balanced transaction, verify clean."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator

import psycopg
import pytest

from services.billing import audit, migrate
from services.billing.money import Money
from services.billing.rules import IdempotencyConflict
from services.common.db import libpq_conninfo
from tests.support.databases import drop_database, fresh_database_url

IDR = 1_000_000
A = "acct_AAAAAAAAAAAAAAAAAAAA"
B = "acct_BBBBBBBBBBBBBBBBBBBB"
C = "acct_CCCCCCCCCCCCCCCCCCCC"

# Written through the 0002 schema: top-ups (keyed and not), and holds open,
# captured (with its entry), captured at zero (no entry), released and expired.
OLD_ROWS = f"""
INSERT INTO billing.accounts (id, name, balance_micros, held_micros) VALUES
    ('{A}', 'a', {143 * IDR}, {10 * IDR}),
    ('{B}', 'b', {30 * IDR}, {30 * IDR}),
    ('{C}', 'c', 0, 0);
INSERT INTO billing.holds
    (id, account_id, amount_micros, status, captured_micros, idempotency_key, description,
     created_at, expires_at, settled_at, settle_note) VALUES
    ('hold_open0000000000000000', '{A}', {10 * IDR}, 'open', 0, 'chat:1',
     'chat deepseek-v4-flash req_1', now() - interval '5 min', now() + interval '1 hour',
     NULL, ''),
    ('hold_capt0000000000000000', '{A}', {20 * IDR}, 'captured', {7 * IDR}, 'job:2',
     'job image qwen-image req_2', now() - interval '50 min', now() + interval '1 hour',
     now() - interval '40 min', 'image qwen-image job_2'),
    ('hold_zero0000000000000000', '{A}', {5 * IDR}, 'captured', 0, 'chat:3',
     'chat m0 req_3', now() - interval '30 min', now() + interval '1 hour',
     now() - interval '29 min', ''),
    ('hold_rele0000000000000000', '{A}', {8 * IDR}, 'released', 0, 'chat:4',
     'chat deepseek-v4-flash req_4', now() - interval '20 min', now() + interval '1 hour',
     now() - interval '19 min', 'upstream failed'),
    ('hold_expi0000000000000000', '{A}', {4 * IDR}, 'expired', 0, 'chat:5',
     'chat deepseek-v4-flash req_5', now() - interval '3 hours', now() - interval '2 hours',
     now() - interval '2 hours', 'expired'),
    ('hold_bbbb0000000000000000', '{B}', {30 * IDR}, 'open', 0, 'other:6',
     'something without a model', now() - interval '1 min', now() + interval '1 hour',
     NULL, '');
INSERT INTO billing.ledger_entries
    (account_id, kind, amount_micros, balance_after_micros, hold_id, idempotency_key,
     description, created_at) VALUES
    ('{A}', 'topup', {100 * IDR}, {100 * IDR}, NULL, 'topup:order-1', 'first',
     now() - interval '4 hours'),
    ('{A}', 'topup', {50 * IDR}, {150 * IDR}, NULL, NULL, '', now() - interval '1 hour'),
    ('{A}', 'capture', {-7 * IDR}, {143 * IDR}, 'hold_capt0000000000000000',
     'capture:hold_capt0000000000000000', 'image qwen-image job_2', now() - interval '40 min'),
    ('{B}', 'topup', {30 * IDR}, {30 * IDR}, NULL, NULL, '', now() - interval '2 min');
"""
ENTRIES = (
    "SELECT id, account_id, kind, amount_micros, balance_after_micros, hold_id, description"
    " FROM billing.ledger_entries ORDER BY id"
)
BALANCES = "SELECT id, balance_micros, held_micros FROM billing.accounts ORDER BY id"


@pytest.fixture
def old_database() -> Iterator[str]:
    url = fresh_database_url("aiport_test_migrate")
    try:
        migrate.upgrade(url, "0002")
        yield url
    finally:
        drop_database(url)


def query(url: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(libpq_conninfo(url)) as conn:
        return conn.execute(sql).fetchall()


def execute(url: str, sql: str) -> None:
    with psycopg.connect(libpq_conninfo(url)) as conn:
        conn.execute(sql)


def verify_with_the_cli(url: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "services.billing.cli", "ledger", "verify", "--json"],
        env={**os.environ, "AIPORT_DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout or done.stderr
    body: dict[str, object] = json.loads(done.stdout)
    return body


def test_old_rows_become_postings_and_balances_stay(old_database: str) -> None:
    url = old_database
    execute(url, OLD_ROWS)
    balances, entries = query(url, BALANCES), query(url, ENTRIES)

    migrate.upgrade(url)

    assert query(url, "SELECT version_num FROM billing.alembic_version") == [("0008",)]
    assert query(url, BALANCES) == balances
    # The statement is the same rows, ids included (cursors stay valid).
    assert query(url, ENTRIES) == entries
    body = verify_with_the_cli(url)
    assert body["ok"] is True and body["differences"] == []
    assert body["checked"] == {"accounts": 3, "transactions": 13, "postings": 27, "holds": 6}
    postings = query(
        url,
        "SELECT t.hold_id, t.kind, p.account, p.amount_micros FROM billing.transactions t"
        " JOIN billing.postings p ON p.transaction_id = t.id"
        " WHERE t.hold_id IS NOT NULL ORDER BY t.hold_id, t.kind = 'hold' DESC, p.account",
    )
    assert postings == [
        ("hold_bbbb0000000000000000", "hold", "available", -30 * IDR),
        ("hold_bbbb0000000000000000", "hold", "held", 30 * IDR),
        ("hold_capt0000000000000000", "hold", "available", -20 * IDR),
        ("hold_capt0000000000000000", "hold", "held", 20 * IDR),
        ("hold_capt0000000000000000", "capture", "available", 13 * IDR),
        ("hold_capt0000000000000000", "capture", "held", -20 * IDR),
        ("hold_capt0000000000000000", "capture", "revenue:qwen-image", 7 * IDR),
        ("hold_expi0000000000000000", "hold", "available", -4 * IDR),
        ("hold_expi0000000000000000", "hold", "held", 4 * IDR),
        ("hold_expi0000000000000000", "expire", "available", 4 * IDR),
        ("hold_expi0000000000000000", "expire", "held", -4 * IDR),
        ("hold_open0000000000000000", "hold", "available", -10 * IDR),
        ("hold_open0000000000000000", "hold", "held", 10 * IDR),
        ("hold_rele0000000000000000", "hold", "available", -8 * IDR),
        ("hold_rele0000000000000000", "hold", "held", 8 * IDR),
        ("hold_rele0000000000000000", "release", "available", 8 * IDR),
        ("hold_rele0000000000000000", "release", "held", -8 * IDR),
        ("hold_zero0000000000000000", "hold", "available", -5 * IDR),
        ("hold_zero0000000000000000", "hold", "held", 5 * IDR),
        ("hold_zero0000000000000000", "capture", "available", 5 * IDR),
        ("hold_zero0000000000000000", "capture", "held", -5 * IDR),
    ]
    owed = audit.liabilities(url)
    assert (owed.available_micros, owed.held_micros) == (133 * IDR, 40 * IDR)
    assert owed.system == {"payments:manual": -180 * IDR, "revenue:qwen-image": 7 * IDR}

    asyncio.run(_the_money_path_carries_on(url))
    assert verify_with_the_cli(url)["ok"] is True


async def _the_money_path_carries_on(url: str) -> None:
    """Legacy holds settle as usual (their model read from the description);
    a key stored before input hashes cannot be replayed."""
    money = Money(url)
    await money.open()
    try:
        await money.capture("hold_open0000000000000000", 3 * IDR)
        await money.release("hold_bbbb0000000000000000")
        with pytest.raises(IdempotencyConflict):
            await money.top_up(A, 100 * IDR, idempotency_key="order-1", description="first")
    finally:
        await money.close()
    revenue = query(
        url,
        "SELECT p.account, p.amount_micros FROM billing.postings p"
        " JOIN billing.transactions t ON t.id = p.transaction_id"
        " WHERE t.hold_id = 'hold_open0000000000000000' AND p.account LIKE 'revenue:%'",
    )
    assert revenue == [("revenue:deepseek-v4-flash", 3 * IDR)]


def test_a_database_that_already_drifted_is_not_migrated(old_database: str) -> None:
    url = old_database
    execute(url, OLD_ROWS)
    # A balance that its entries do not explain: the upgrade refuses and rolls back.
    execute(url, f"UPDATE billing.accounts SET balance_micros = {31 * IDR} WHERE id = '{B}'")
    with pytest.raises(Exception, match="balances differ from postings"):
        migrate.upgrade(url)
    assert query(url, "SELECT version_num FROM billing.alembic_version") == [("0002",)]
    assert query(url, "SELECT to_regclass('billing.postings')") == [(None,)]
