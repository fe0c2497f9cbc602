"""/v1/usage and /v1/keys: parameters checked with the parameter named, and
billing's answers shaped into the public objects (pure)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiport.v1 import account_pb2, billing_pb2
from google.protobuf import json_format

from services.gateway import account_views
from services.gateway.errors import PublicError

ACCOUNT = "acct_01234567890123456789"
KEY = "key_01234567890123456789"
HOLD = "hold_01234567890123456789"
NOW = 1_780_000_000


def param_of(call: Any) -> tuple[int, str | None]:
    with pytest.raises(PublicError) as refused:
        call()
    return refused.value.status, refused.value.param


def test_a_usage_query_becomes_the_accounts_billing_request() -> None:
    query = account_pb2.UsageQuery(
        start_time="1770000000", end_time="1780000000", model="kimi-k2.6", key_id=KEY, limit="5"
    )
    request = account_views.usage_request(ACCOUNT, query)
    assert (request.account_id, request.start_unix, request.end_unix) == (
        ACCOUNT,
        1_770_000_000,
        1_780_000_000,
    )
    assert (request.model, request.key_id, request.limit, request.after) == (
        "kimi-k2.6",
        KEY,
        5,
        "",
    )
    defaults = account_views.usage_request(ACCOUNT, account_pb2.UsageQuery())
    assert (defaults.limit, defaults.start_unix, defaults.end_unix) == (20, 0, 0)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"start_time": "yesterday"}, "start_time"),
        ({"start_time": "1780000000000"}, "start_time"),  # milliseconds
        ({"end_time": "-1"}, "end_time"),
        ({"start_time": "1780000000", "end_time": "1770000000"}, "end_time"),
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"model": "has space"}, "model"),
        ({"key_id": "key_short"}, "key_id"),
        ({"after": "hold_not-a-cursor"}, "after"),
        ({"after": HOLD + "x"}, "after"),
    ],
)
def test_a_bad_usage_parameter_is_a_400_naming_it(fields: dict[str, str], param: str) -> None:
    query = account_pb2.UsageQuery(**fields)
    assert param_of(lambda: account_views.usage_request(ACCOUNT, query)) == (400, param)


def test_a_summary_defaults_to_the_last_30_days_by_day_in_jakarta() -> None:
    request = account_views.summary_request(ACCOUNT, account_pb2.UsageSummaryQuery(), NOW)
    assert (request.group_by, request.time_zone) == ("day", "Asia/Jakarta")
    assert (request.start_unix, request.end_unix) == (NOW - 30 * 86_400, 0)
    ended = account_views.summary_request(
        ACCOUNT, account_pb2.UsageSummaryQuery(end_time="1770000000", group_by="key"), NOW
    )
    assert (ended.start_unix, ended.end_unix) == (1_770_000_000 - 30 * 86_400, 1_770_000_000)
    for fields, param in (
        ({"group_by": "week"}, "group_by"),
        ({"time_zone": "Jakarta"}, "time_zone"),
        ({"model": "x" * 201}, "model"),
    ):
        query = account_pb2.UsageSummaryQuery(**fields)
        assert param_of(lambda q=query: account_views.summary_request(ACCOUNT, q, NOW)) == (  # type: ignore[misc]
            400,
            param,
        )


def test_a_new_keys_body_is_a_name_and_known_scopes() -> None:
    request = account_views.new_key_request(ACCOUNT, {"name": " ci ", "scopes": ["manage"]})
    assert (request.account_id, request.name, list(request.scopes)) == (ACCOUNT, "ci", ["manage"])
    assert list(account_views.new_key_request(ACCOUNT, {}).scopes) == ["inference"]
    for body, param in (
        ({"name": 7}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": "a\nb"}, "name"),
        ({"scopes": "manage"}, "scopes"),
        ({"scopes": []}, "scopes"),
        ({"scopes": ["admin"]}, "scopes"),
        ({"expires": 3}, "expires"),
    ):
        assert param_of(lambda b=body: account_views.new_key_request(ACCOUNT, b)) == (400, param)  # type: ignore[misc]


def test_a_malformed_key_id_is_not_found_like_another_accounts() -> None:
    assert account_views.key_id_param(KEY) == KEY
    assert param_of(lambda: account_views.key_id_param("nope")) == (404, "key_id")


def public_json(message: Any) -> dict[str, Any]:
    """The JSON the edge prints (its print options: field names kept, defaults shown)."""
    text = json_format.MessageToJson(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    parsed: dict[str, Any] = json.loads(text)
    return parsed


def test_a_usage_record_in_public_shape() -> None:
    record = billing_pb2.UsageRecord(
        id=HOLD,
        created_at_unix=NOW,
        key_id=KEY,
        key_name="backend",
        model="kimi-k2.6",
        endpoint="chat.completions",
        request_id="req-1",
        status="succeeded",
        held_micros=2_500_000,
        cost_micros=350_000,
        input_tokens=12,
        output_tokens=30,
        latency_ms=120,
    )
    page = billing_pb2.UsagePage(records=[record], next_after=HOLD)
    shown = public_json(account_views.usage_list(page))
    assert (shown["object"], shown["has_more"], shown["next_cursor"]) == ("list", True, HOLD)
    (entry,) = shown["data"]
    assert entry["object"] == "usage_record" and entry["id"] == HOLD
    assert (entry["held_idr"], entry["cost_idr"]) == ("2.5", "0.35")
    assert (entry["key_id"], entry["job_id"], entry["latency_ms"]) == (KEY, None, 120)
    last = public_json(account_views.usage_list(billing_pb2.UsagePage()))
    assert (last["data"], last["has_more"], last["next_cursor"]) == ([], False, None)


def test_keys_in_public_shape_active_first_and_the_value_only_when_created() -> None:
    active = billing_pb2.ApiKeyInfo(
        key_id=KEY, prefix="aip_live_AbCd", name="ci", scopes=["inference"], created_at_unix=NOW
    )
    revoked = billing_pb2.ApiKeyInfo(
        key_id="key_99999999999999999999", created_at_unix=NOW + 5, revoked_at_unix=NOW + 9
    )
    listed = public_json(account_views.key_list(billing_pb2.ApiKeyList(keys=[revoked, active])))
    assert [k["id"] for k in listed["data"]] == [KEY, "key_99999999999999999999"]
    first = listed["data"][0]
    assert (first["last_used"], first["revoked"], first["scopes"]) == (None, None, ["inference"])
    assert "key" not in first
    created = public_json(
        account_views.created_key(billing_pb2.CreatedApiKey(api_key="aip_live_x", key=active))
    )
    assert (created["object"], created["key"], created["name"]) == ("api_key", "aip_live_x", "ci")


def test_the_statement_in_the_customers_words() -> None:
    request = account_views.statement_request(
        ACCOUNT, account_pb2.StatementQuery(limit="5", after="42")
    )
    assert (request.account_id, request.limit, request.after_entry_id) == (ACCOUNT, 5, 42)
    assert account_views.statement_request(ACCOUNT, account_pb2.StatementQuery()).limit == 20
    for fields, param in (({"limit": "500"}, "limit"), ({"after": "hold_x"}, "after")):
        query = account_pb2.StatementQuery(**fields)
        assert param_of(lambda q=query: account_views.statement_request(ACCOUNT, q)) == (  # type: ignore[misc]
            400,
            param,
        )
    page = billing_pb2.LedgerPage(
        entries=[
            billing_pb2.LedgerEntry(
                entry_id=9, kind="capture", amount_micros=-350_000, hold_id=HOLD
            ),
            billing_pb2.LedgerEntry(entry_id=8, kind="topup", amount_micros=50_000_000_000),
        ],
        next_after_entry_id=8,
    )
    shown = public_json(account_views.statement(page))
    charge, topup = shown["data"]
    assert (charge["kind"], charge["amount_idr"], charge["usage_record_id"]) == (
        "charge",
        "-0.35",
        HOLD,
    )
    assert (topup["kind"], topup["amount_idr"], topup["usage_record_id"]) == (
        "topup",
        "50000",
        None,
    )
    assert (shown["has_more"], shown["next_cursor"]) == (True, "8")


def test_a_keys_controls_from_the_body_left_out_null_and_set() -> None:
    request = account_views.update_key_request(
        ACCOUNT,
        KEY,
        {
            "spend_caps": {"daily_idr": "50000.5", "lifetime_idr": None},
            "allowed_models": ["gpt-5.4-mini"],
            "expires_at": 4_000_000_000,
            "rate_limits": {"concurrent_requests": 3},
        },
    )
    settings = request.settings
    assert (request.key_id, request.account_id, request.HasField("name")) == (KEY, ACCOUNT, False)
    assert settings.daily_cap_micros == 50_000_500_000
    assert settings.HasField("lifetime_cap_micros") and settings.lifetime_cap_micros == 0
    assert not settings.HasField("monthly_cap_micros")
    assert list(settings.allowed_models.models) == ["gpt-5.4-mini"]
    assert settings.expires_at_unix == 4_000_000_000
    assert settings.concurrent_requests == 3 and not settings.HasField("requests_per_minute")
    cleared = account_views.update_key_request(
        ACCOUNT, KEY, {"name": "ci", "allowed_models": None, "expires_at": None}
    )
    assert cleared.name == "ci"
    assert (
        cleared.settings.HasField("allowed_models") and not cleared.settings.allowed_models.models
    )
    assert cleared.settings.HasField("expires_at_unix")
    created = account_views.new_key_request(ACCOUNT, {"spend_caps": {"monthly_idr": "10"}})
    assert created.settings.monthly_cap_micros == 10_000_000
    for body, param in (
        ({"spend_caps": {"daily_idr": 5}}, "spend_caps.daily_idr"),
        ({"spend_caps": {"daily_idr": "-1"}}, "spend_caps.daily_idr"),
        ({"spend_caps": {"daily_idr": "0"}}, "spend_caps.daily_idr"),
        ({"spend_caps": {"weekly_idr": "1"}}, "spend_caps.weekly_idr"),
        ({"spend_caps": "1"}, "spend_caps"),
        ({"allowed_models": []}, "allowed_models"),
        ({"allowed_models": ["a b"]}, "allowed_models"),
        ({"expires_at": 1}, "expires_at"),
        ({"expires_at": "4000000000"}, "expires_at"),
        ({"rate_limits": {"requests_per_minute": 0}}, "rate_limits.requests_per_minute"),
        ({"rate_limits": {"concurrent_requests": True}}, "rate_limits.concurrent_requests"),
        ({"scopes": ["manage"]}, "scopes"),
    ):
        assert param_of(lambda b=body: account_views.update_key_request(ACCOUNT, KEY, b)) == (  # type: ignore[misc]
            400,
            param,
        )


def test_a_keys_controls_in_public_shape() -> None:
    info = billing_pb2.ApiKeyInfo(
        key_id=KEY,
        created_at_unix=NOW,
        daily_cap_micros=2_500_000,
        spent_today_micros=1_000_000,
        spent_lifetime_micros=7_000_000,
        allowed_models=["m"],
        expires_at_unix=NOW + 60,
        requests_per_minute=30,
        day_resets_at_unix=NOW + 10,
    )
    shown = public_json(account_views.public_key(info))
    assert shown["spend_caps"] == {"daily_idr": "2.5", "monthly_idr": None, "lifetime_idr": None}
    assert shown["spent"]["today_idr"] == "1" and shown["spent"]["lifetime_idr"] == "7"
    assert shown["spent"]["day_resets_at"] == NOW + 10
    assert shown["allowed_models"] == ["m"] and shown["expires_at"] == NOW + 60
    assert shown["rate_limits"] == {"requests_per_minute": 30, "concurrent_requests": None}
    bare = public_json(account_views.public_key(billing_pb2.ApiKeyInfo(key_id=KEY)))
    assert (bare["allowed_models"], bare["expires_at"]) == (None, None)
