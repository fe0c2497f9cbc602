"""The customer's usage: one record per paid call, read from the call's hold.

A hold is placed before a paid call and settled after it, and the statement
that settles it (money.py) also writes what the call consumed. So a record is
the hold row: it cannot disagree with the ledger, and listing it costs the hot
path nothing but the `holds_usage_idx` index that replaced the plain account
index. Reads only; no money moves here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncEngine

from . import rules
from .rules import InvalidArgument, NotFound, UsageWindow

# The record's status in the customer's words, by the hold's status.
STATUS_BY_HOLD = {
    "open": "in_progress",
    "captured": "succeeded",
    "released": "refunded",
    "expired": "expired",
}

_RECORD_COLUMNS = """
    h.id, h.created_at, h.key_id, COALESCE(k.name, '') AS key_name, h.model, h.endpoint,
    h.request_id, h.job_id, h.status, h.amount_micros, h.captured_micros, h.input_tokens,
    h.cached_input_tokens, h.cache_write_input_tokens, h.output_tokens, h.reasoning_tokens,
    h.latency_ms, h.settled_at
"""
# The window and filters; a NULL bound is no bound.
_WHERE = """
    h.account_id = :account_id
    AND (CAST(:start AS timestamptz) IS NULL OR h.created_at >= :start)
    AND (CAST(:end AS timestamptz) IS NULL OR h.created_at < :end)
    AND (:model = '' OR h.model = :model)
    AND (:key_id = '' OR h.key_id = :key_id)
"""
_LIST = text(
    f"SELECT {_RECORD_COLUMNS} FROM billing.holds h"
    " LEFT JOIN billing.api_keys k ON k.id = h.key_id"
    f" WHERE {_WHERE}"
    " AND (CAST(:after_at AS timestamptz) IS NULL OR (h.created_at, h.id) < (:after_at, :after_id))"
    " ORDER BY h.created_at DESC, h.id DESC LIMIT :limit"
)
_CURSOR = text("SELECT created_at FROM billing.holds WHERE id = :id AND account_id = :account_id")
_ACCOUNT_EXISTS = text("SELECT 1 FROM billing.accounts WHERE id = :id")
# One row per (group, model): the model split is what a per-day chart by model needs.
_GROUP_EXPRESSIONS = {
    "day": "to_char(h.created_at AT TIME ZONE :tz, 'YYYY-MM-DD')",
    "model": "h.model",
    "key": "COALESCE(h.key_id, '')",
}
_SUMMARY = """
SELECT {group} AS grp, h.model, count(*) AS requests, sum(h.captured_micros) AS cost,
       sum(h.input_tokens) AS input_tokens, sum(h.output_tokens) AS output_tokens
FROM billing.holds h
WHERE {where}
GROUP BY 1, 2
"""
_KEY_NAMES = text("SELECT id, name FROM billing.api_keys WHERE account_id = :account_id")


@dataclass(frozen=True, slots=True)
class UsageRecord:
    id: str
    created_at: datetime
    key_id: str
    key_name: str
    model: str
    endpoint: str
    request_id: str
    job_id: str
    status: str
    held_micros: int
    cost_micros: int
    input_tokens: int
    cached_input_tokens: int
    cache_write_input_tokens: int
    output_tokens: int
    reasoning_tokens: int
    latency_ms: int | None
    settled_at: datetime | None


@dataclass(frozen=True, slots=True)
class UsagePage:
    records: list[UsageRecord]
    next_after: str  # "" on the last page


@dataclass(slots=True)
class UsageGroup:
    group: str
    key_name: str = ""
    requests: int = 0
    cost_micros: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_micros_by_model: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class UsageSummary:
    group_by: str
    time_zone: str
    groups: list[UsageGroup]

    @property
    def total_cost_micros(self) -> int:
        return sum(g.cost_micros for g in self.groups)

    @property
    def total_requests(self) -> int:
        return sum(g.requests for g in self.groups)


def _record(row: Row[Any]) -> UsageRecord:
    return UsageRecord(
        id=row.id,
        created_at=row.created_at,
        key_id=row.key_id or "",
        key_name=row.key_name,
        model=row.model,
        endpoint=row.endpoint,
        request_id=row.request_id,
        job_id=row.job_id,
        status=STATUS_BY_HOLD[row.status],
        held_micros=row.amount_micros,
        cost_micros=row.captured_micros,
        input_tokens=row.input_tokens,
        cached_input_tokens=row.cached_input_tokens,
        cache_write_input_tokens=row.cache_write_input_tokens,
        output_tokens=row.output_tokens,
        reasoning_tokens=row.reasoning_tokens,
        latency_ms=row.latency_ms,
        settled_at=row.settled_at,
    )


def _at(unix: int | None) -> datetime | None:
    return None if unix is None else datetime.fromtimestamp(unix, UTC)


def _window_params(account_id: str, window: UsageWindow) -> dict[str, Any]:
    return {
        "account_id": account_id,
        "start": _at(window.start_unix),
        "end": _at(window.end_unix),
        "model": window.model,
        "key_id": window.key_id,
    }


async def list_usage(
    engine: AsyncEngine,
    account_id: str,
    window: UsageWindow,
    *,
    limit: int = 0,
    after: str = "",
) -> UsagePage:
    """The account's records in the window, newest first. `after` is the last
    record id of the previous page; another account's id is refused."""
    account_id = rules.check_account_id(account_id)
    limit = rules.resolve_usage_limit(limit)
    params = _window_params(account_id, window) | {
        "limit": limit + 1,
        "after_at": None,
        "after_id": "",
    }
    async with engine.connect() as conn:
        if (await conn.execute(_ACCOUNT_EXISTS, {"id": account_id})).first() is None:
            raise NotFound(f"account {account_id} not found")
        if after:
            rules.check_hold_id(after, "after")
            at = (
                await conn.execute(_CURSOR, {"id": after, "account_id": account_id})
            ).scalar_one_or_none()
            if at is None:
                raise InvalidArgument("after is not a usage record of this account")
            params |= {"after_at": at, "after_id": after}
        rows = (await conn.execute(_LIST, params)).all()
    records = [_record(row) for row in rows[:limit]]
    return UsagePage(records, records[-1].id if len(rows) > limit else "")


async def summarize_usage(
    engine: AsyncEngine,
    account_id: str,
    window: UsageWindow,
    *,
    group_by: str,
    time_zone: str = "",
) -> UsageSummary:
    """Requests, cost and tokens per day (in `time_zone`), model or key; days
    also split their cost by model. Groups in order: days oldest first, models
    and keys by cost, highest first."""
    account_id = rules.check_account_id(account_id)
    group_by = rules.check_usage_group(group_by)
    tz = rules.check_time_zone(time_zone)
    sql = text(_SUMMARY.format(group=_GROUP_EXPRESSIONS[group_by], where=_WHERE))
    async with engine.connect() as conn:
        if (await conn.execute(_ACCOUNT_EXISTS, {"id": account_id})).first() is None:
            raise NotFound(f"account {account_id} not found")
        rows = (await conn.execute(sql, _window_params(account_id, window) | {"tz": tz})).all()
        names: dict[str, str] = {}
        if group_by == "key":
            names = {
                r.id: r.name
                for r in (await conn.execute(_KEY_NAMES, {"account_id": account_id})).all()
            }
    groups: dict[str, UsageGroup] = {}
    for row in rows:
        group = groups.setdefault(row.grp, UsageGroup(row.grp, key_name=names.get(row.grp, "")))
        group.requests += row.requests
        group.cost_micros += int(row.cost)
        group.input_tokens += int(row.input_tokens)
        group.output_tokens += int(row.output_tokens)
        if group_by == "day":
            by_model = group.cost_micros_by_model
            by_model[row.model] = by_model.get(row.model, 0) + int(row.cost)
    ordered = sorted(groups.values(), key=_order(group_by))
    return UsageSummary(group_by, tz, ordered)


def _order(group_by: str) -> Any:
    if group_by == "day":
        return lambda g: g.group
    return lambda g: (-g.cost_micros, g.group)
