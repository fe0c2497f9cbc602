"""Postings of every operation, the schema's refusal of unbalanced ones, and
`aiportctl ledger verify` / `report` run as the real CLI against the database."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.billing import audit, cli, ledger, postings, rules
from services.billing.money import Money
from services.common.db import libpq_conninfo
from tests.support.databases import drop_database, fresh_database_url, migrate_all

from .helpers import IDR, funded_account, make_overdue

pytestmark = pytest.mark.usefixtures("check_invariants")


async def postings_of(engine: AsyncEngine, account_id: str) -> list[tuple[str, str, int]]:
    """(kind, ledger account, amount) of the account's transactions, oldest first."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT t.kind, p.account, p.amount_micros FROM billing.transactions t"
                " JOIN billing.postings p ON p.transaction_id = t.id"
                " WHERE t.account_id = :id ORDER BY t.id, p.account"
            ),
            {"id": account_id},
        )
        return [(r.kind, r.account, r.amount_micros) for r in rows]


async def aiportctl(*args: str, database_url: str) -> tuple[int, dict[str, object]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.billing.cli",
        *args,
        "--json",
        env={**os.environ, "AIPORT_DATABASE_URL": database_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, json.loads(out or b"{}")


async def test_every_operation_posts_a_balanced_transaction(
    engine: AsyncEngine, money: Money
) -> None:
    account_id = await funded_account(engine, money, 10 * IDR)
    captured = await money.place_hold(account_id, 4 * IDR, "p-1", model="m-audit")
    await money.capture(captured.id, IDR, "chat", provider="sandbox")
    released = await money.place_hold(account_id, 2 * IDR, "p-2")
    await money.release(released.id, "upstream failed")
    expired = await money.place_hold(account_id, 3 * IDR, "p-3")
    await make_overdue(engine, expired.id)
    assert (await money.expire_due_holds()).holds >= 1
    await money.promote(account_id, 5 * IDR, idempotency_key="promo-1", description="welcome")
    await money.adjust(account_id, -2 * IDR, idempotency_key="adj-1", description="correction")
    await money.top_up(account_id, IDR, rail="midtrans")
    assert await postings_of(engine, account_id) == [
        ("topup", "available", 10 * IDR),
        ("topup", "payments:manual", -10 * IDR),
        ("hold", "available", -4 * IDR),
        ("hold", "held", 4 * IDR),
        ("capture", "available", 3 * IDR),
        ("capture", "held", -4 * IDR),
        ("capture", "revenue:m-audit", IDR),
        ("hold", "available", -2 * IDR),
        ("hold", "held", 2 * IDR),
        ("release", "available", 2 * IDR),
        ("release", "held", -2 * IDR),
        ("hold", "available", -3 * IDR),
        ("hold", "held", 3 * IDR),
        ("expire", "available", 3 * IDR),
        ("expire", "held", -3 * IDR),
        ("promotion", "available", 5 * IDR),
        ("promotion", "promotions", -5 * IDR),
        ("adjustment", "adjustments", 2 * IDR),
        ("adjustment", "available", -2 * IDR),
        ("topup", "available", IDR),
        ("topup", "payments:midtrans", -IDR),
    ]


async def test_a_capture_names_its_model_over_the_holds(engine: AsyncEngine, money: Money) -> None:
    account_id = await funded_account(engine, money, 10 * IDR)
    hold = await money.place_hold(account_id, 2 * IDR, "named-1", model="held-model")
    await money.capture(hold.id, IDR, model="served-model")
    unnamed = await money.place_hold(account_id, 2 * IDR, "named-2")
    await money.capture(unnamed.id, IDR)
    revenue = [row for row in await postings_of(engine, account_id) if row[0] == "capture"]
    assert [r for r in revenue if r[1].startswith("revenue:")] == [
        ("capture", "revenue:served-model", IDR),
        ("capture", "revenue:unattributed", IDR),
    ]


@pytest.mark.parametrize(
    "statement",
    [
        # One leg only.
        "WITH t AS (INSERT INTO billing.transactions (kind, account_id, balance_after_micros)"
        " VALUES ('adjustment', :id, 0) RETURNING id)"
        " INSERT INTO billing.postings SELECT t.id, 'available', 5 FROM t",
        # Two legs that do not sum to zero.
        "WITH t AS (INSERT INTO billing.transactions (kind, account_id, balance_after_micros)"
        " VALUES ('adjustment', :id, 0) RETURNING id)"
        " INSERT INTO billing.postings SELECT t.id, v.a, v.m FROM t,"
        " (VALUES ('available', 5::bigint), ('adjustments', -4::bigint)) v(a, m)",
        # A late leg added to a transaction that balanced.
        "INSERT INTO billing.postings SELECT max(id), 'promotions', 1 FROM billing.transactions",
        # Postings of no transaction.
        "INSERT INTO billing.postings VALUES (-1, 'available', 1), (-1, 'adjustments', -1)",
        # The log is append-only.
        "UPDATE billing.postings SET amount_micros = amount_micros",
        "DELETE FROM billing.transactions WHERE account_id = :id",
    ],
)
async def test_the_schema_refuses_unbalanced_or_rewritten_postings(
    engine: AsyncEngine, money: Money, statement: str
) -> None:
    account_id = await funded_account(engine, money, IDR)
    with pytest.raises(Exception) as refused:
        async with engine.begin() as conn:
            await conn.execute(text(statement), {"id": account_id})
    assert "balance" in str(refused.value) or "append-only" in str(refused.value)


async def test_verify_finds_no_difference_then_the_one_we_made(
    database_url: str, engine: AsyncEngine, money: Money
) -> None:
    account_id = await funded_account(engine, money, 10 * IDR)
    await money.place_hold(account_id, 3 * IDR, "verify-1")
    code, clean = await aiportctl("ledger", "verify", database_url=database_url)
    assert (code, clean["ok"], clean["differences"]) == (0, True, [])
    assert clean["checked"]["accounts"] >= 1  # type: ignore[index]
    # Drift the cached balance behind the ledger's back (one µIDR), then put it back.
    drift = "UPDATE billing.accounts SET balance_micros = balance_micros + :d WHERE id = :id"
    async with engine.begin() as conn:
        await conn.execute(text(drift), {"d": 1, "id": account_id})
    try:
        code, found = await aiportctl("ledger", "verify", database_url=database_url)
    finally:
        async with engine.begin() as conn:
            await conn.execute(text(drift), {"d": -1, "id": account_id})
    assert code == 2
    assert found["ok"] is False
    assert found["differences"] == [
        {
            "check": "cached_balance",
            "ledger_account": f"customer:{account_id}:available",
            "cached_idr": "7.000001",
            "postings_idr": "7",
            "difference_idr": "0.000001",
        }
    ]


async def test_verify_reports_a_held_balance_that_open_holds_do_not_explain(
    database_url: str, engine: AsyncEngine, money: Money
) -> None:
    account_id = await funded_account(engine, money, 10 * IDR)
    drift = (
        "UPDATE billing.accounts SET held_micros = held_micros + :d,"
        " balance_micros = balance_micros + :d WHERE id = :id"
    )
    async with engine.begin() as conn:
        await conn.execute(text(drift), {"d": IDR, "id": account_id})
    try:
        verdict = await asyncio.to_thread(audit.verify, database_url)
    finally:
        async with engine.begin() as conn:
            await conn.execute(text(drift), {"d": -IDR, "id": account_id})
    assert {d["check"] for d in verdict.differences} == {"cached_balance", "held_vs_open_holds"}
    assert verdict.counts["accounts"] == 1


async def test_verify_reports_a_key_spend_counter_its_holds_do_not_explain(
    database_url: str, engine: AsyncEngine, money: Money
) -> None:
    account_id = await funded_account(engine, money, 10 * IDR)
    created = await ledger.create_api_key(engine, account_id)
    await money.authorize_hold(created.api_key, 2 * IDR, "audit-key-spend")
    drift = "UPDATE billing.api_keys SET spent_lifetime_micros = spent_lifetime_micros + :d"
    drift += " WHERE id = :id"
    async with engine.begin() as conn:
        await conn.execute(text(drift), {"d": 5, "id": created.key_id})
    try:
        verdict = await asyncio.to_thread(audit.verify, database_url)
    finally:
        async with engine.begin() as conn:
            await conn.execute(text(drift), {"d": -5, "id": created.key_id})
    assert verdict.counts["key_spend"] == 1
    assert verdict.differences == [
        {
            "check": "key_spend",
            "key_id": created.key_id,
            "counter": "lifetime",
            "cached_idr": "2.000005",
            "holds_idr": "2",
            "difference_idr": "0.000005",
        }
    ]


async def test_verify_cannot_reach_the_database_is_an_error_not_a_pass() -> None:
    url = fresh_database_url("aiport_test_gone")
    drop_database(url)
    code, body = await aiportctl("ledger", "verify", database_url=url)
    assert code == 1
    assert body["error"]["code"] == "UNAVAILABLE"  # type: ignore[index]


async def test_reports_revenue_by_model_and_provider_and_liabilities(
    engine: AsyncEngine, money: Money
) -> None:
    # A database of its own: the reports add up everything in it.
    url = fresh_database_url("aiport_test_reports")
    try:
        migrate_all(url)
        own = Money(url)
        await own.open()
        try:
            from services.common import db

            own_engine = db.create_engine(url, application_name="billing")
            try:
                a = await funded_account(own_engine, own, 10 * IDR)
                b = await funded_account(own_engine, own, 5 * IDR)
                await own.promote(b, IDR, idempotency_key="w", description="welcome")
                for account, model, provider, cost in (
                    (a, "model-x", "p1", 2 * IDR),
                    (a, "model-x", "p1", IDR),
                    (a, "model-x", "p2", IDR),
                    (b, "model-y", "", 500_000),
                ):
                    hold = await own.place_hold(account, 3 * IDR, rules.new_hold_id(), model=model)
                    await own.capture(hold.id, cost, provider=provider)
                await own.place_hold(b, IDR, "still-open")
            finally:
                await own_engine.dispose()
        finally:
            await own.close()
        now = datetime.now(UTC)
        lines = audit.revenue(url, now - timedelta(hours=1), now + timedelta(hours=1))
        assert [(x.model, x.provider, x.captures, x.revenue_micros) for x in lines] == [
            ("model-x", "p1", 2, 3 * IDR),
            ("model-x", "p2", 1, IDR),
            ("model-y", "", 1, 500_000),
        ]
        assert audit.revenue(url, now + timedelta(hours=1), now + timedelta(hours=2)) == []
        owed = audit.liabilities(url)
        assert (owed.accounts, owed.available_micros, owed.held_micros) == (
            2,
            16 * IDR - 4_500_000 - IDR,
            IDR,
        )
        assert owed.system == {
            "payments:manual": -15 * IDR,
            "promotions": -IDR,
            "revenue:model-x": 4 * IDR,
            "revenue:model-y": 500_000,
        }
        code, body = await aiportctl(
            "report",
            "revenue",
            "--from",
            (now - timedelta(days=1)).date().isoformat(),
            "--to",
            (now + timedelta(days=1)).date().isoformat(),
            database_url=url,
        )
        assert code == 0
        assert body["total_idr"] == "4.5"
        assert body["lines"][0] == {  # type: ignore[index]
            "model": "model-x",
            "provider": "p1",
            "captures": 2,
            "revenue_idr": "3",
        }
        code, body = await aiportctl("report", "liabilities", database_url=url)
        assert (code, body["owed_idr"], body["held_idr"]) == (0, "11.5", "1")
    finally:
        drop_database(url)


def test_report_dates() -> None:
    assert cli.parse_moment("2026-01-02", "--from") == datetime(2026, 1, 2, tzinfo=UTC)
    assert cli.parse_moment("2026-01-02T03:04:05+07:00", "--to").utcoffset() == timedelta(hours=7)
    with pytest.raises(rules.InvalidArgument, match="--from"):
        cli.parse_moment("yesterday", "--from")
    with pytest.raises(rules.InvalidArgument, match="after"):
        audit.revenue(
            "postgresql://unused",
            datetime(2026, 1, 2, tzinfo=UTC),
            datetime(2026, 1, 1, tzinfo=UTC),
        )


def test_verify_finds_a_transaction_without_postings_and_orphan_postings() -> None:
    """What the schema's per-statement check cannot see, verify does (a database
    of its own: these rows cannot be removed from an append-only log)."""
    url = fresh_database_url("aiport_test_bare")
    try:
        migrate_all(url)
        with psycopg.connect(libpq_conninfo(url)) as conn:
            conn.execute(
                "INSERT INTO billing.accounts (id, name) VALUES ('acct_00000000000000000001', 'x')"
            )
            conn.execute(
                "INSERT INTO billing.transactions (id, kind, account_id, balance_after_micros)"
                " VALUES (7, 'adjustment', 'acct_00000000000000000001', 0)"
            )
            conn.execute("ALTER TABLE billing.postings DISABLE TRIGGER postings_balance")
            conn.execute("INSERT INTO billing.postings VALUES (99, 'promotions', 5)")
        verdict = audit.verify(url)
        assert verdict.counts == {
            "accounts": 0,
            "transactions": 1,
            "orphan_postings": 1,
            "holds": 0,
            "key_spend": 0,
        }
        assert verdict.differences == [
            {
                "check": "transaction_balance",
                "transaction_id": 7,
                "kind": "adjustment",
                "account_id": "acct_00000000000000000001",
                "sum_idr": "0",
                "legs": 0,
            },
            {"check": "orphan_postings", "transaction_id": 99, "legs": 1, "sum_idr": "0.000005"},
        ]
    finally:
        drop_database(url)


def test_the_write_path_asserts_what_it_posted() -> None:
    postings.assert_balanced("ok", [-5, 3, 2])
    for bad in ([], None, [5], [5, -4]):
        with pytest.raises(AssertionError):
            postings.assert_balanced("bad", bad)
