"""The caller's account as the public API shows it (pure: no I/O).

Parses the query parameters and bodies of /v1/usage, /v1/usage/summary and
/v1/keys into billing requests, naming the parameter in every 400, and shapes
billing's answers into the public objects. Billing checks the same limits
again; these exist so that a client learns which parameter is wrong.
"""

from __future__ import annotations

import re
import time
import zoneinfo
from functools import cache
from typing import Any

from aiport.v1 import account_pb2, billing_pb2
from google.protobuf import struct_pb2

from services.common.money import AmountError, idr_to_micros, micros_to_idr
from services.gateway import errors
from services.gateway.errors import PublicError

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
SUMMARY_DAYS = 30
DEFAULT_TIME_ZONE = "Asia/Jakarta"
GROUPS = ("day", "model", "key")
SCOPES = ("inference", "manage")
MANAGE = "manage"
MAX_KEY_NAME_CHARS = 100
# Unix seconds from 2000 to 2200: a bound that catches milliseconds by mistake.
MIN_UNIX, MAX_UNIX = 946_684_800, 7_258_118_400

_DIGITS = re.compile(r"[0-9]{1,12}")
_RECORD_ID = re.compile(r"hold_[0-9A-Za-z]{20}")
_KEY_ID = re.compile(r"key_[0-9A-Za-z]{20}")
_MODEL = re.compile(r"[!-~]{1,200}")


def _invalid(message: str, param: str) -> PublicError:
    return errors.invalid_request(message, param)


def _unix(text: str, param: str) -> int:
    if not text:
        return 0
    if _DIGITS.fullmatch(text) and MIN_UNIX <= int(text) <= MAX_UNIX:
        return int(text)
    raise _invalid(f"{param} must be a unix time in seconds (e.g. {int(time.time())}).", param)


def _window(start: str, end: str) -> tuple[int, int]:
    start_unix, end_unix = _unix(start, "start_time"), _unix(end, "end_time")
    if start_unix and end_unix and end_unix <= start_unix:
        raise _invalid("end_time must be after start_time.", "end_time")
    return start_unix, end_unix


def _model(text: str) -> str:
    if text and not _MODEL.fullmatch(text):
        raise _invalid("model must be a model id.", "model")
    return text


def _key_id(text: str, param: str = "key_id") -> str:
    if text and not _KEY_ID.fullmatch(text):
        raise _invalid(f"{param} is not an API key id (key_...).", param)
    return text


def usage_request(account_id: str, query: account_pb2.UsageQuery) -> billing_pb2.ListUsageRequest:
    start_unix, end_unix = _window(query.start_time, query.end_time)
    limit = DEFAULT_LIMIT
    if query.limit:
        if not (_DIGITS.fullmatch(query.limit) and 1 <= int(query.limit) <= MAX_LIMIT):
            raise _invalid(
                f"limit must be a whole number from 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT}).",
                "limit",
            )
        limit = int(query.limit)
    if query.after and not _RECORD_ID.fullmatch(query.after):
        raise errors.invalid_usage_cursor()
    return billing_pb2.ListUsageRequest(
        account_id=account_id,
        start_unix=start_unix,
        end_unix=end_unix,
        model=_model(query.model),
        key_id=_key_id(query.key_id),
        limit=limit,
        after=query.after,
    )


@cache
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


_ENTRY_ID = re.compile(r"[1-9][0-9]{0,18}")
# The statement's words for billing's transaction kinds.
STATEMENT_KINDS = {
    "topup": "topup",
    "capture": "charge",
    "promotion": "promotion",
    "adjustment": "adjustment",
}


def statement_request(
    account_id: str, query: account_pb2.StatementQuery
) -> billing_pb2.ListLedgerRequest:
    limit = DEFAULT_LIMIT
    if query.limit:
        if not (_DIGITS.fullmatch(query.limit) and 1 <= int(query.limit) <= MAX_LIMIT):
            raise _invalid(
                f"limit must be a whole number from 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT}).",
                "limit",
            )
        limit = int(query.limit)
    if query.after and not (_ENTRY_ID.fullmatch(query.after) and int(query.after) < 2**63):
        raise errors.invalid_statement_cursor()
    return billing_pb2.ListLedgerRequest(
        account_id=account_id, limit=limit, after_entry_id=int(query.after or 0)
    )


def statement(page: billing_pb2.LedgerPage, *, show_actor: bool = False) -> account_pb2.Statement:
    """`show_actor`: for operators only (a customer is not told operators' ids)."""
    return account_pb2.Statement(
        object="list",
        data=[
            account_pb2.StatementEntry(
                object="statement_entry",
                id=str(entry.entry_id),
                created=_u32(entry.created_at_unix),
                kind=STATEMENT_KINDS.get(entry.kind, entry.kind),
                amount_idr=micros_to_idr(entry.amount_micros),
                balance_after_idr=micros_to_idr(entry.balance_after_micros),
                description=entry.description,
                usage_record_id=_nullable(entry.hold_id),
                actor=_nullable(entry.actor if show_actor else ""),
            )
            for entry in page.entries
        ],
        has_more=page.next_after_entry_id != 0,
        next_cursor=_nullable(str(page.next_after_entry_id) if page.next_after_entry_id else ""),
    )


def summary_request(
    account_id: str, query: account_pb2.UsageSummaryQuery, now_unix: int
) -> billing_pb2.SummarizeUsageRequest:
    """Without start_time, the last 30 days up to end_time (or now)."""
    group_by = query.group_by or "day"
    if group_by not in GROUPS:
        raise _invalid(f"group_by must be one of {', '.join(GROUPS)}.", "group_by")
    time_zone = query.time_zone or DEFAULT_TIME_ZONE
    if time_zone not in _time_zones():
        raise _invalid("time_zone must be an IANA time zone name, e.g. Asia/Jakarta.", "time_zone")
    start_unix, end_unix = _window(query.start_time, query.end_time)
    if not start_unix:
        start_unix = (end_unix or now_unix) - SUMMARY_DAYS * 86_400
    return billing_pb2.SummarizeUsageRequest(
        account_id=account_id,
        start_unix=start_unix,
        end_unix=end_unix,
        group_by=group_by,
        time_zone=time_zone,
        model=_model(query.model),
        key_id=_key_id(query.key_id),
    )


CONTROLS = ("spend_caps", "allowed_models", "expires_at", "rate_limits")
CAP_FIELDS = {"daily_idr": "daily_cap_micros", "monthly_idr": "monthly_cap_micros"}
CAP_FIELDS["lifetime_idr"] = "lifetime_cap_micros"
LIMIT_FIELDS = ("requests_per_minute", "concurrent_requests")
MAX_ALLOWED_MODELS = 100
MAX_RATE_LIMIT = 1_000_000
MAX_CAP_MICROS = 10**18


def _key_name(body: dict[str, Any]) -> str:
    name = body.get("name", "")
    if not isinstance(name, str):
        raise _invalid("name must be a string.", "name")
    name = name.strip()
    if len(name) > MAX_KEY_NAME_CHARS or any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise _invalid(
            f"name must be at most {MAX_KEY_NAME_CHARS} characters, without control characters.",
            "name",
        )
    return name


def _section(body: dict[str, Any], name: str, fields: tuple[str, ...]) -> dict[str, Any]:
    """A nested object of the body ({} when absent or null), with only `fields`."""
    value = body.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _invalid(f"{name} must be an object with {', '.join(fields)}.", name)
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise _invalid(
            f"Unknown field '{unknown[0]}' in {name}; it has {', '.join(fields)}.",
            f"{name}.{unknown[0]}",
        )
    return value


def key_settings(body: dict[str, Any]) -> billing_pb2.ApiKeySettings:
    """A key's controls from a create or update body: a field left out is not
    set (an update keeps it), null sets "none" (0 or empty for billing)."""
    settings = billing_pb2.ApiKeySettings()
    caps = _section(body, "spend_caps", tuple(CAP_FIELDS))
    for name, column in CAP_FIELDS.items():
        if name in caps:
            setattr(settings, column, _cap(caps[name], f"spend_caps.{name}"))
    if "allowed_models" in body:
        settings.allowed_models.CopyFrom(
            billing_pb2.ModelAllowlist(models=_allowed_models(body["allowed_models"]))
        )
    if "expires_at" in body:
        settings.expires_at_unix = _expiry(body["expires_at"])
    limits = _section(body, "rate_limits", LIMIT_FIELDS)
    for name in LIMIT_FIELDS:
        if name in limits:
            setattr(settings, name, _rate_limit(limits[name], f"rate_limits.{name}"))
    return settings


def _cap(value: object, param: str) -> int:
    if value is None:
        return 0
    if isinstance(value, str):
        try:
            micros = idr_to_micros(value.strip())
        except AmountError:
            micros = -1
        if 0 < micros <= MAX_CAP_MICROS:
            return micros
    raise _invalid(
        f'{param} must be a positive IDR amount as a decimal string (e.g. "50000"), or null.',
        param,
    )


def _allowed_models(value: object) -> list[str]:
    if value is None:
        return []
    if (
        not isinstance(value, list)
        or not value
        or len(value) > MAX_ALLOWED_MODELS
        or any(not isinstance(m, str) or not _MODEL.fullmatch(m) for m in value)
        or any(len(m) > 100 for m in value)
    ):
        raise _invalid(
            f"allowed_models must be a list of 1 to {MAX_ALLOWED_MODELS} model ids, or null"
            " (every model).",
            "allowed_models",
        )
    return list(value)


def _expiry(value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool) and time.time() < value <= MAX_UNIX:
        return value
    raise _invalid(
        f"expires_at must be a future unix time in seconds (e.g. {int(time.time()) + 86400}),"
        " or null (never).",
        "expires_at",
    )


def _rate_limit(value: object, param: str) -> int:
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_RATE_LIMIT:
        return value
    raise _invalid(
        f"{param} must be a whole number from 1 to {MAX_RATE_LIMIT}, or null (the default).",
        param,
    )


def update_key_request(
    account_id: str, key_id: str, body: dict[str, Any]
) -> billing_pb2.UpdateApiKeyRequest:
    """POST /v1/keys/{key_id}: the name and controls given (see key_settings)."""
    unknown = sorted(set(body) - {"name", *CONTROLS})
    if unknown:
        raise _invalid(
            f"Unknown field '{unknown[0]}'; a key's name and controls can change"
            f" ({', '.join(('name', *CONTROLS))}).",
            unknown[0],
        )
    request = billing_pb2.UpdateApiKeyRequest(
        key_id=key_id, account_id=account_id, settings=key_settings(body)
    )
    if "name" in body:
        request.name = _key_name(body)
    return request


def new_key_request(account_id: str, body: dict[str, Any]) -> billing_pb2.CreateApiKeyRequest:
    """{"name": str, "scopes": [str]} and the key's controls, all optional; nothing else."""
    unknown = sorted(set(body) - {"name", "scopes", *CONTROLS})
    if unknown:
        raise _invalid(
            f"Unknown field '{unknown[0]}'; a key has a name, scopes and controls"
            f" ({', '.join(CONTROLS)}).",
            unknown[0],
        )
    name = _key_name(body)
    scopes = body.get("scopes", ["inference"])
    if (
        not isinstance(scopes, list)
        or not scopes
        or any(not isinstance(s, str) or s not in SCOPES for s in scopes)
    ):
        raise _invalid(
            'scopes must be a non-empty list of "inference" and "manage".',
            "scopes",
        )
    return billing_pb2.CreateApiKeyRequest(
        account_id=account_id, name=name, scopes=scopes, settings=key_settings(body)
    )


def key_id_param(text: str) -> str:
    if not _KEY_ID.fullmatch(text):
        raise errors.key_not_found()
    return text


# -- shapes ------------------------------------------------------------------------------------


def _u32(value: int) -> int:
    """A count for a uint32 field (JSON prints 64-bit integers as strings)."""
    return min(value, 2**32 - 1)


def _nullable(value: str | int | None) -> struct_pb2.Value:
    if value is None or value == "" or value == 0:
        return struct_pb2.Value(null_value=struct_pb2.NULL_VALUE)
    if isinstance(value, int):
        return struct_pb2.Value(number_value=value)
    return struct_pb2.Value(string_value=value)


def balance(answer: billing_pb2.AccountBalance) -> account_pb2.Balance:
    return account_pb2.Balance(
        object="balance",
        currency="IDR",
        balance_idr=micros_to_idr(answer.balance_micros),
        held_idr=micros_to_idr(answer.held_micros),
        available_idr=micros_to_idr(answer.available_micros),
        debt_idr=micros_to_idr(answer.debt_micros),
        low_balance_alert_idr=_nullable(
            micros_to_idr(answer.low_balance_threshold_micros)
            if answer.low_balance_threshold_micros
            else None
        ),
    )


MAX_ALERT_DIGITS = 12


def alert_threshold(body: dict[str, Any]) -> int:
    """POST /v1/balance/alert: {"threshold_idr": "20000"}; "0" or null turns it off."""
    unknown = sorted(set(body) - {"threshold_idr"})
    if unknown:
        raise errors.invalid_request(f"unknown field {unknown[0]}", unknown[0])
    if "threshold_idr" not in body:
        raise errors.invalid_request(
            'threshold_idr is required: whole rupiah as a string ("0" or null turns the alert off)',
            "threshold_idr",
        )
    value = body["threshold_idr"]
    if value is None:
        return 0
    text = (
        str(value).strip() if isinstance(value, str | int) and not isinstance(value, bool) else ""
    )
    if not text.isdigit() or len(text) > MAX_ALERT_DIGITS:
        raise errors.invalid_request(
            'threshold_idr must be whole rupiah, e.g. "20000"', "threshold_idr"
        )
    return int(text) * 1_000_000


def usage_entry(record: billing_pb2.UsageRecord) -> account_pb2.UsageEntry:
    return account_pb2.UsageEntry(
        object="usage_record",
        id=record.id,
        created=_u32(record.created_at_unix),
        key_id=_nullable(record.key_id),
        key_name=record.key_name,
        model=record.model,
        endpoint=record.endpoint,
        request_id=record.request_id,
        job_id=_nullable(record.job_id),
        status=record.status,
        held_idr=micros_to_idr(record.held_micros),
        cost_idr=micros_to_idr(record.cost_micros),
        input_tokens=_u32(record.input_tokens),
        cached_input_tokens=_u32(record.cached_input_tokens),
        cache_write_input_tokens=_u32(record.cache_write_input_tokens),
        output_tokens=_u32(record.output_tokens),
        reasoning_tokens=_u32(record.reasoning_tokens),
        latency_ms=_nullable(record.latency_ms),
    )


def usage_list(page: billing_pb2.UsagePage) -> account_pb2.UsageList:
    return account_pb2.UsageList(
        object="list",
        data=[usage_entry(r) for r in page.records],
        has_more=bool(page.next_after),
        next_cursor=_nullable(page.next_after),
    )


def usage_report(
    summary: billing_pb2.UsageSummary, request: billing_pb2.SummarizeUsageRequest
) -> account_pb2.UsageReport:
    return account_pb2.UsageReport(
        object="usage.summary",
        group_by=summary.group_by,
        time_zone=summary.time_zone,
        start_time=_u32(request.start_unix),
        end_time=_u32(request.end_unix),
        data=[
            account_pb2.UsageGroupTotals(
                group=g.group,
                key_name=g.key_name,
                requests=_u32(g.requests),
                cost_idr=micros_to_idr(g.cost_micros),
                input_tokens=g.input_tokens,
                output_tokens=g.output_tokens,
                cost_idr_by_model={m: micros_to_idr(c) for m, c in g.cost_micros_by_model.items()},
            )
            for g in summary.groups
        ],
        total_requests=_u32(summary.total_requests),
        total_cost_idr=micros_to_idr(summary.total_cost_micros),
    )


def _key_fields(info: billing_pb2.ApiKeyInfo) -> dict[str, Any]:
    return {
        "object": "api_key",
        "id": info.key_id,
        "name": info.name,
        "prefix": info.prefix,
        "scopes": list(info.scopes),
        "created": _u32(info.created_at_unix),
        "last_used": _nullable(info.last_used_at_unix),
        "revoked": _nullable(info.revoked_at_unix),
        "spend_caps": account_pb2.KeySpendCaps(
            daily_idr=_nullable_idr(info.daily_cap_micros),
            monthly_idr=_nullable_idr(info.monthly_cap_micros),
            lifetime_idr=_nullable_idr(info.lifetime_cap_micros),
        ),
        "spent": account_pb2.KeySpend(
            today_idr=micros_to_idr(info.spent_today_micros),
            this_month_idr=micros_to_idr(info.spent_this_month_micros),
            lifetime_idr=micros_to_idr(info.spent_lifetime_micros),
            day_resets_at=_u32(info.day_resets_at_unix),
            month_resets_at=_u32(info.month_resets_at_unix),
        ),
        "allowed_models": (
            struct_pb2.Value(
                list_value=struct_pb2.ListValue(
                    values=[struct_pb2.Value(string_value=m) for m in info.allowed_models]
                )
            )
            if info.allowed_models
            else _nullable(None)
        ),
        "expires_at": _nullable(info.expires_at_unix),
        "rate_limits": account_pb2.KeyRateLimits(
            requests_per_minute=_nullable(info.requests_per_minute),
            concurrent_requests=_nullable(info.concurrent_requests),
        ),
    }


def _nullable_idr(micros: int) -> struct_pb2.Value:
    return _nullable(micros_to_idr(micros) if micros else None)


def public_key(info: billing_pb2.ApiKeyInfo) -> account_pb2.Key:
    return account_pb2.Key(**_key_fields(info))


def created_key(created: billing_pb2.CreatedApiKey) -> account_pb2.CreatedKey:
    return account_pb2.CreatedKey(**_key_fields(created.key), key=created.api_key)


def key_list(keys: billing_pb2.ApiKeyList) -> account_pb2.KeyList:
    """Active keys first (newest first), then revoked ones."""
    ordered = sorted(keys.keys, key=lambda k: (k.revoked_at_unix != 0, -k.created_at_unix))
    return account_pb2.KeyList(object="list", data=[public_key(k) for k in ordered])
