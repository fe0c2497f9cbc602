"""Proofs and reports from the ledger's postings (read-only, for aiportctl).

`verify` proves, on one consistent snapshot, that every cached balance on an
account row equals the sum of its postings (and `held` the sum of its open
holds; the debt it caches, minus the sum of its `debt` postings), that every
transaction balances with two legs or more, that no posting lost its
transaction, and that every hold was placed once and settled at most
once, the way its status says, and that every key's spend counters (what its
caps count) equal what its holds count. `revenue` and `liabilities` are reports from
the same postings.

These read billing's own schema directly (not over gRPC): an audit must work
while the service is down, and must see a single snapshot of everything.
The SQL lives here; what it returns is shaped by pure functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import DictRow, dict_row

from services.common.db import libpq_conninfo

from . import postings, rules

# At most this many differences of each check are listed (the count is exact).
MAX_LISTED = 1000

_COUNTS = """
SELECT (SELECT count(*) FROM billing.accounts) AS accounts,
       (SELECT count(*) FROM billing.transactions) AS transactions,
       (SELECT count(*) FROM billing.postings) AS postings,
       (SELECT count(*) FROM billing.holds) AS holds
"""
_ACCOUNT_DRIFT = """
WITH s AS (
    SELECT t.account_id,
           COALESCE(sum(p.amount_micros) FILTER (WHERE p.account = 'available'), 0) AS available,
           COALESCE(sum(p.amount_micros) FILTER (WHERE p.account = 'held'), 0) AS held,
           COALESCE(sum(p.amount_micros) FILTER (WHERE p.account = 'debt'), 0) AS debt
    FROM billing.postings p JOIN billing.transactions t ON t.id = p.transaction_id
    WHERE p.account IN ('available', 'held', 'debt')
    GROUP BY t.account_id
), o AS (
    SELECT account_id, sum(amount_micros) AS open_holds
    FROM billing.holds WHERE status = 'open' GROUP BY account_id
)
SELECT a.id AS account_id,
       a.balance_micros - a.held_micros AS cached_available,
       a.held_micros AS cached_held,
       COALESCE(s.available, 0)::bigint AS posted_available,
       COALESCE(s.held, 0)::bigint AS posted_held,
       COALESCE(o.open_holds, 0)::bigint AS open_holds,
       a.debt_micros AS cached_debt,
       (-COALESCE(s.debt, 0))::bigint AS posted_debt
FROM billing.accounts a
LEFT JOIN s ON s.account_id = a.id
LEFT JOIN o ON o.account_id = a.id
WHERE a.balance_micros - a.held_micros <> COALESCE(s.available, 0)
   OR a.held_micros <> COALESCE(s.held, 0)
   OR a.held_micros <> COALESCE(o.open_holds, 0)
   OR a.debt_micros <> -COALESCE(s.debt, 0)
ORDER BY a.id
"""
_UNBALANCED = """
SELECT t.id AS transaction_id, t.kind, t.account_id,
       COALESCE(sum(p.amount_micros), 0) AS total, count(p.transaction_id) AS legs
FROM billing.transactions t
LEFT JOIN billing.postings p ON p.transaction_id = t.id
GROUP BY t.id
HAVING COALESCE(sum(p.amount_micros), 0) <> 0 OR count(p.transaction_id) < 2
ORDER BY t.id
"""
_ORPHANS = """
SELECT p.transaction_id, count(*) AS legs, sum(p.amount_micros) AS total
FROM billing.postings p
LEFT JOIN billing.transactions t ON t.id = p.transaction_id
WHERE t.id IS NULL
GROUP BY p.transaction_id ORDER BY p.transaction_id
"""
_HOLD_LIFECYCLE = """
WITH per_hold AS (
    SELECT t.hold_id,
           count(*) FILTER (WHERE t.kind = 'hold') AS placed,
           count(*) FILTER (WHERE t.kind <> 'hold') AS settled,
           min(t.kind) FILTER (WHERE t.kind <> 'hold') AS settlement
    FROM billing.transactions t WHERE t.hold_id IS NOT NULL GROUP BY t.hold_id
), revenue AS (
    SELECT t.hold_id, sum(p.amount_micros) AS revenue
    FROM billing.transactions t
    JOIN billing.postings p ON p.transaction_id = t.id AND p.account LIKE 'revenue:%'
    WHERE t.kind = 'capture' GROUP BY t.hold_id
)
SELECT h.id AS hold_id, h.status, h.captured_micros,
       COALESCE(x.placed, 0) AS placed, COALESCE(x.settled, 0) AS settled, x.settlement,
       COALESCE(r.revenue, 0) AS revenue
FROM billing.holds h
LEFT JOIN per_hold x ON x.hold_id = h.id
LEFT JOIN revenue r ON r.hold_id = h.id
WHERE COALESCE(x.placed, 0) <> 1
   OR (h.status = 'open' AND COALESCE(x.settled, 0) <> 0)
   OR (h.status <> 'open' AND (COALESCE(x.settled, 0) <> 1 OR x.settlement IS DISTINCT FROM
        CASE h.status WHEN 'captured' THEN 'capture' WHEN 'released' THEN 'release'
                      ELSE 'expire' END))
   OR COALESCE(r.revenue, 0) <> h.captured_micros
ORDER BY h.id
"""
# A key's caps count its holds: the amount while open, the capture once
# captured; ever, and in the day and month each hold counted in.
_KEY_SPEND_DRIFT = """
WITH h AS (
    SELECT key_id, spend_day, spend_month,
           CASE status WHEN 'open' THEN amount_micros
                       WHEN 'captured' THEN captured_micros ELSE 0 END AS counted
    FROM billing.holds WHERE key_id IS NOT NULL
), per_key AS (
    SELECT ak.id AS key_id,
           ak.spent_lifetime_micros AS cached_lifetime,
           ak.spent_day_micros AS cached_day,
           ak.spent_month_micros AS cached_month,
           (SELECT COALESCE(sum(counted), 0) FROM h WHERE h.key_id = ak.id)::bigint
               AS holds_lifetime,
           (SELECT COALESCE(sum(counted), 0) FROM h
            WHERE h.key_id = ak.id AND h.spend_day = ak.spent_day)::bigint AS holds_day,
           (SELECT COALESCE(sum(counted), 0) FROM h
            WHERE h.key_id = ak.id AND h.spend_month = ak.spent_month)::bigint AS holds_month
    FROM billing.api_keys ak
)
SELECT * FROM per_key
WHERE cached_lifetime <> holds_lifetime OR cached_day <> holds_day
   OR cached_month <> holds_month
ORDER BY key_id
"""
_REVENUE = """
SELECT substr(p.account, %(prefix_chars)s + 1) AS model, t.provider,
       count(*) AS captures, sum(p.amount_micros) AS revenue
FROM billing.postings p
JOIN billing.transactions t ON t.id = p.transaction_id
WHERE p.account LIKE 'revenue:%%'
  AND t.created_at >= %(start)s AND t.created_at < %(end)s
GROUP BY 1, 2
ORDER BY 4 DESC, 1, 2
"""
_BALANCES_BY_ACCOUNT = """
SELECT p.account, sum(p.amount_micros) AS total FROM billing.postings p GROUP BY p.account
"""
_CUSTOMERS = "SELECT count(*) AS accounts FROM billing.accounts"


@dataclass(slots=True)
class Verdict:
    checked: dict[str, int]
    differences: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.differences

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "difference_counts": self.counts,
            "differences": self.differences,
        }


def account_differences(row: dict[str, Any]) -> list[dict[str, Any]]:
    """One account row of _ACCOUNT_DRIFT -> a difference per ledger account that drifted."""
    out: list[dict[str, Any]] = []
    account_id = row["account_id"]
    for name, cached, posted in (
        (postings.AVAILABLE, row["cached_available"], row["posted_available"]),
        (postings.HELD, row["cached_held"], row["posted_held"]),
    ):
        if cached != posted:
            out.append(
                {
                    "check": "cached_balance",
                    "ledger_account": postings.address(account_id, name),
                    "cached_idr": rules.idr(cached),
                    "postings_idr": rules.idr(posted),
                    "difference_idr": rules.idr(cached - posted),
                }
            )
    # The account caches what is owed (>= 0); its `debt` postings are its mirror (<= 0).
    if row["cached_debt"] != row["posted_debt"]:
        out.append(
            {
                "check": "cached_debt",
                "ledger_account": postings.address(account_id, postings.DEBT),
                "cached_owed_idr": rules.idr(row["cached_debt"]),
                "owed_by_postings_idr": rules.idr(row["posted_debt"]),
                "difference_idr": rules.idr(row["cached_debt"] - row["posted_debt"]),
            }
        )
    if row["cached_held"] != row["open_holds"]:
        out.append(
            {
                "check": "held_vs_open_holds",
                "ledger_account": postings.address(account_id, postings.HELD),
                "cached_idr": rules.idr(row["cached_held"]),
                "open_holds_idr": rules.idr(row["open_holds"]),
                "difference_idr": rules.idr(row["cached_held"] - row["open_holds"]),
            }
        )
    return out


def transaction_difference(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "check": "transaction_balance",
        "transaction_id": row["transaction_id"],
        "kind": row["kind"],
        "account_id": row["account_id"],
        "sum_idr": rules.idr(int(row["total"])),
        "legs": row["legs"],
    }


def orphan_difference(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "check": "orphan_postings",
        "transaction_id": row["transaction_id"],
        "legs": row["legs"],
        "sum_idr": rules.idr(int(row["total"])),
    }


def hold_difference(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "check": "hold_lifecycle",
        "hold_id": row["hold_id"],
        "status": row["status"],
        "hold_transactions": row["placed"],
        "settlements": row["settled"],
        "settlement": row["settlement"],
        "captured_idr": rules.idr(row["captured_micros"]),
        "revenue_idr": rules.idr(int(row["revenue"])),
    }


def key_spend_differences(row: dict[str, Any]) -> list[dict[str, Any]]:
    """One key of _KEY_SPEND_DRIFT -> a difference per counter that drifted."""
    return [
        {
            "check": "key_spend",
            "key_id": row["key_id"],
            "counter": counter,
            "cached_idr": rules.idr(row[f"cached_{counter}"]),
            "holds_idr": rules.idr(row[f"holds_{counter}"]),
            "difference_idr": rules.idr(row[f"cached_{counter}"] - row[f"holds_{counter}"]),
        }
        for counter in ("lifetime", "day", "month")
        if row[f"cached_{counter}"] != row[f"holds_{counter}"]
    ]


def _connect(url: str) -> psycopg.Connection[DictRow]:
    return psycopg.connect(libpq_conninfo(url), row_factory=dict_row, connect_timeout=10)


def _snapshot(conn: psycopg.Connection[DictRow]) -> None:
    """One consistent view of everything, while traffic goes on."""
    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")


def verify(url: str) -> Verdict:
    with _connect(url) as conn, conn.transaction():
        _snapshot(conn)
        counts = conn.execute(_COUNTS).fetchone()
        assert counts is not None
        verdict = Verdict(checked={k: int(v) for k, v in counts.items()})
        checks: list[tuple[str, str, Any]] = [
            ("accounts", _ACCOUNT_DRIFT, account_differences),
            ("transactions", _UNBALANCED, lambda r: [transaction_difference(r)]),
            ("orphan_postings", _ORPHANS, lambda r: [orphan_difference(r)]),
            ("holds", _HOLD_LIFECYCLE, lambda r: [hold_difference(r)]),
            ("key_spend", _KEY_SPEND_DRIFT, key_spend_differences),
        ]
        for name, sql, shape in checks:
            found = 0
            with conn.cursor() as cur:
                cur.execute(sql)
                for row in cur:
                    found += 1
                    if len(verdict.differences) < MAX_LISTED * len(checks):
                        verdict.differences.extend(shape(row))
            verdict.counts[name] = found
    return verdict


@dataclass(frozen=True, slots=True)
class RevenueLine:
    model: str
    provider: str
    captures: int
    revenue_micros: int


def revenue(url: str, start: datetime, end: datetime) -> list[RevenueLine]:
    """Revenue posted by captures in [start, end), by model and provider."""
    if end <= start:
        raise rules.InvalidArgument("--to must be after --from")
    params = {"start": start, "end": end, "prefix_chars": len(postings.REVENUE_PREFIX)}
    with _connect(url) as conn, conn.transaction():
        _snapshot(conn)
        rows = conn.execute(_REVENUE, params).fetchall()
    return [
        RevenueLine(r["model"], r["provider"], int(r["captures"]), int(r["revenue"])) for r in rows
    ]


@dataclass(frozen=True, slots=True)
class Liabilities:
    accounts: int
    available_micros: int
    held_micros: int
    # Every system account's balance (payments:<rail>, promotions, adjustments, revenue:<model>).
    system: dict[str, int]
    # What customers owe us (reversed top-ups they had spent), >= 0.
    debt_micros: int = 0

    @property
    def owed_micros(self) -> int:
        """What we owe customers (their balances), before their debts."""
        return self.available_micros + self.held_micros

    @property
    def net_micros(self) -> int:
        """What we owe customers less what they owe us."""
        return self.owed_micros - self.debt_micros


def liabilities(url: str) -> Liabilities:
    """What we owe customers (available + held), what they owe us (debt), and
    where it came from."""
    with _connect(url) as conn, conn.transaction():
        _snapshot(conn)
        by_account = {r["account"]: int(r["total"]) for r in conn.execute(_BALANCES_BY_ACCOUNT)}
        customers = conn.execute(_CUSTOMERS).fetchone()
    assert customers is not None
    return Liabilities(
        accounts=int(customers["accounts"]),
        available_micros=by_account.pop(postings.AVAILABLE, 0),
        held_micros=by_account.pop(postings.HELD, 0),
        # The `debt` postings sum to minus what is owed.
        debt_micros=-by_account.pop(postings.DEBT, 0),
        system=dict(sorted(by_account.items())),
    )
