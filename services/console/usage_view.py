"""The usage page's pure parts: its filters (dates in the user's time zone) as a
/v1/usage query, the links that keep them, and the CSV download's rows.

Dates are whole days in the user's zone (Asia/Jakarta unless they chose
another): `from` 2026-03-01 and `to` 2026-03-31 is [1 Mar 00:00, 1 Apr 00:00)
there, in the API's unix seconds.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Final
from urllib.parse import urlencode

from aiport.v1 import account_pb2
from google.protobuf import struct_pb2

from services.console import times

PAGE_SIZE: Final = 50
CSV_PAGE_SIZE: Final = 100  # the API's maximum
# The CSV streams every page up to this many rows (a year of heavy use fits;
# the API's own pagination is there for more).
CSV_MAX_ROWS: Final = 100_000
_KEY_ID = re.compile(r"key_[0-9A-Za-z]{20}")
_MODEL = re.compile(r"[!-~]{1,200}")
_CURSOR = re.compile(r"hold_[0-9A-Za-z]{20}")

CSV_COLUMNS: Final = (
    "time",
    "request_id",
    "key_id",
    "key_name",
    "model",
    "endpoint",
    "status",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost_idr",
    "latency_ms",
    "job_id",
)


@dataclass
class UsageFilters:
    start: str = ""  # YYYY-MM-DD as typed (valid ones only)
    end: str = ""
    model: str = ""
    key_id: str = ""
    after: str = ""
    errors: dict[str, str] = field(default_factory=dict)  # field -> message key

    def params(self, with_cursor: bool = False) -> dict[str, str]:
        """The filters as query parameters (the empty ones left out)."""
        found = {"from": self.start, "to": self.end, "model": self.model, "key_id": self.key_id}
        if with_cursor:
            found["after"] = self.after
        return {k: v for k, v in found.items() if v}

    def query_string(self, **more: str) -> str:
        return urlencode({**self.params(), **{k: v for k, v in more.items() if v}})


def _day(text: str) -> date | None:
    try:
        return date.fromisoformat(text) if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text) else None
    except ValueError:
        return None


def parse_filters(query: Mapping[str, str]) -> UsageFilters:
    """The page's query string; a bad value is left out and named in `errors`."""
    filters = UsageFilters()
    for name, attr in (("from", "start"), ("to", "end")):
        raw = query.get(name, "").strip()
        if raw and _day(raw) is None:
            filters.errors[name] = "usage.bad_date"
        elif raw:
            setattr(filters, attr, raw)
    if filters.start and filters.end and filters.end < filters.start:
        filters.errors["to"] = "usage.bad_range"
        filters.end = ""
    model = query.get("model", "").strip()
    if model and not _MODEL.fullmatch(model):
        filters.errors["model"] = "usage.bad_model"
    elif model:
        filters.model = model
    key_id = query.get("key_id", "").strip()
    if key_id and not _KEY_ID.fullmatch(key_id):
        filters.errors["key_id"] = "usage.bad_key"
    elif key_id:
        filters.key_id = key_id
    after = query.get("after", "").strip()
    if _CURSOR.fullmatch(after):
        filters.after = after
    return filters


def day_start_unix(day: str, tz: str | None = None) -> int:
    """00:00 of `day` in the zone, as unix seconds."""
    parsed = _day(day)
    if parsed is None:
        raise ValueError(f"not a YYYY-MM-DD date: {day!r}")
    return int(datetime.combine(parsed, time(0), times.zone(tz)).timestamp())


def usage_query(
    filters: UsageFilters, limit: int, tz: str | None = None, after: str | None = None
) -> account_pb2.UsageQuery:
    """The /v1/usage query for these filters: `to` includes its whole day."""
    start = str(day_start_unix(filters.start, tz)) if filters.start else ""
    end = ""
    if filters.end:
        next_day = (date.fromisoformat(filters.end) + timedelta(days=1)).isoformat()
        end = str(day_start_unix(next_day, tz))
    return account_pb2.UsageQuery(
        start_time=start,
        end_time=end,
        model=filters.model,
        key_id=filters.key_id,
        limit=str(limit),
        after=filters.after if after is None else after,
    )


def month_start_unix(now_unix: int, tz: str | None = None) -> int:
    """The first moment of the current month in the zone."""
    local = datetime.fromtimestamp(now_unix, times.zone(tz))
    return int(datetime.combine(local.date().replace(day=1), time(0), local.tzinfo).timestamp())


def value_text(value: struct_pb2.Value) -> str:
    """A nullable field (google.protobuf.Value) as text: '' for null."""
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        number = value.number_value
        return str(int(number)) if number.is_integer() else str(number)
    return ""


def iso_time(unix: int, tz: str | None = None) -> str:
    """2026-03-01T17:40:05+07:00: exact, sortable, and in the user's zone."""
    return datetime.fromtimestamp(unix, times.zone(tz)).isoformat()


def _cell(text: str) -> str:
    # A spreadsheet runs a cell starting with = + - @ as a formula: key names and
    # model ids are the user's text, so such cells get a leading apostrophe.
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def csv_row(entry: account_pb2.UsageEntry, tz: str | None = None) -> list[str]:
    return [
        iso_time(entry.created, tz),
        entry.request_id,
        value_text(entry.key_id),
        _cell(entry.key_name),
        _cell(entry.model),
        entry.endpoint,
        entry.status,
        str(entry.input_tokens),
        str(entry.cached_input_tokens),
        str(entry.output_tokens),
        str(entry.reasoning_tokens),
        entry.cost_idr,
        value_text(entry.latency_ms),
        value_text(entry.job_id),
    ]


def csv_lines(rows: Iterable[list[str]]) -> str:
    """CSV text (RFC 4180: CRLF line ends, quotes where needed)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerows(rows)
    return out.getvalue()
