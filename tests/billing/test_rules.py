"""Pure billing rules: ids, keys, validation, formatting (no database)."""

from __future__ import annotations

import hashlib
import re

import grpc
import pytest

from services.billing import cli, rules
from services.billing.server import status_for
from services.common import db, operator_cli


def test_ids_have_prefix_and_20_base62_chars() -> None:
    for make, prefix, check in (
        (rules.new_account_id, "acct_", rules.check_account_id),
        (rules.new_key_id, "key_", rules.check_key_id),
        (rules.new_hold_id, "hold_", rules.check_hold_id),
    ):
        ids = {make() for _ in range(500)}
        assert len(ids) == 500
        for value in ids:
            assert re.fullmatch(prefix + "[0-9A-Za-z]{20}", value)
            assert check(value) == value


def test_random_ids_use_every_base62_character_about_evenly() -> None:
    """Rejection sampling keeps the draw uniform: with 62 x 2,000 draws each
    character's count is near 2,000 (a modulo bias would favour the first 8)."""
    counts = dict.fromkeys(rules.BASE62, 0)
    for _ in range(62 * 100):
        for char in rules.new_hold_id().removeprefix("hold_"):
            counts[char] += 1
    assert min(counts.values()) > 1_700 and max(counts.values()) < 2_300


@pytest.mark.parametrize(
    "value",
    [
        "",
        "acct_",
        "acct_123",
        "acct_0123456789012345678",  # 19
        "acct_012345678901234567890",  # 21
        "acct_01234567890123456-89",
        "key_01234567890123456789",
        " acct_01234567890123456789",
        "acct_01234567890123456789\n",
    ],
)
def test_bad_account_ids_are_invalid(value: str) -> None:
    with pytest.raises(rules.InvalidArgument):
        rules.check_account_id(value)


def test_bad_id_message_is_short_even_for_huge_input() -> None:
    with pytest.raises(rules.InvalidArgument) as err:
        rules.check_hold_id("x" * 10_000)
    assert len(str(err.value)) < 200


def test_api_key_shape_hash_and_prefix() -> None:
    key = rules.new_api_key()
    assert re.fullmatch(r"aip_live_[0-9A-Za-z]{32}", key)
    assert rules.looks_like_api_key(key)
    assert rules.hash_api_key(key) == hashlib.sha256(key.encode()).digest()
    assert len(rules.hash_api_key(key)) == 32
    assert rules.key_display_prefix(key) == key[:13]
    assert rules.key_display_prefix(key).startswith("aip_live_")
    assert len(rules.key_display_prefix(key)) == 13
    assert len({rules.new_api_key() for _ in range(200)}) == 200


@pytest.mark.parametrize(
    "value",
    ["", "aip_live_", "aip_test_" + "a" * 32, "aip_live_" + "a" * 31, "aip_live_" + "!" * 32],
)
def test_malformed_api_keys_are_rejected(value: str) -> None:
    assert not rules.looks_like_api_key(value)


def test_names() -> None:
    assert rules.check_name("  Demo Co ") == "Demo Co"
    assert rules.check_name("x" * 200) == "x" * 200
    for bad in ("", "   ", "x" * 201, "a\x00b", "tab\there"):
        with pytest.raises(rules.InvalidArgument):
            rules.check_name(bad)


def test_positive_amounts() -> None:
    assert rules.check_positive_amount(1) == 1
    assert rules.check_positive_amount(rules.MAX_AMOUNT_MICROS) == rules.MAX_AMOUNT_MICROS
    for bad in (0, -1, rules.MAX_AMOUNT_MICROS + 1, True):
        with pytest.raises(rules.InvalidArgument):
            rules.check_positive_amount(bad)


def test_capture_amounts_allow_zero_not_negative() -> None:
    assert rules.check_capture_amount(0) == 0
    assert rules.check_capture_amount(rules.INT64_MAX) == rules.INT64_MAX
    with pytest.raises(rules.InvalidArgument):
        rules.check_capture_amount(-1)


def test_signed_amounts_refuse_zero_and_huge() -> None:
    assert rules.check_signed_amount(-5) == -5
    assert rules.check_signed_amount(rules.MAX_AMOUNT_MICROS) == rules.MAX_AMOUNT_MICROS
    for bad in (0, rules.MAX_AMOUNT_MICROS + 1, -rules.MAX_AMOUNT_MICROS - 1, True):
        with pytest.raises(rules.InvalidArgument):
            rules.check_signed_amount(bad)


def test_ledger_names() -> None:
    assert rules.check_ledger_name("model", "deepseek-v4-flash") == "deepseek-v4-flash"
    assert rules.check_ledger_name("model", "") == ""
    for bad in ("two words", "x" * 101, "tab\there", "é"):
        with pytest.raises(rules.InvalidArgument, match="model"):
            rules.check_ledger_name("model", bad)
    with pytest.raises(rules.InvalidArgument, match="payment_rail is required"):
        rules.check_ledger_name("payment_rail", "", required=True)


def test_input_hash_is_canonical_and_tells_inputs_apart() -> None:
    first = rules.input_hash("topup", account_id="a", amount_micros=5, description="d")
    # The order of the fields does not matter; every field and the operation do.
    assert first == rules.input_hash("topup", description="d", amount_micros=5, account_id="a")
    assert len(first) == 32
    others = {
        rules.input_hash("topup", account_id="a", amount_micros=6, description="d"),
        rules.input_hash("topup", account_id="b", amount_micros=5, description="d"),
        rules.input_hash("topup", account_id="a", amount_micros=5, description="e"),
        rules.input_hash("adjustment", account_id="a", amount_micros=5, description="d"),
        rules.input_hash("topup", account_id="a", amount_micros="5", description="d"),
    }
    assert first not in others and len(others) == 5


def test_hold_ttl() -> None:
    assert rules.resolve_hold_ttl(0, 3600) == 3600
    assert rules.resolve_hold_ttl(5, 3600) == 5
    assert rules.resolve_hold_ttl(rules.MAX_HOLD_TTL_SECONDS, 3600) == rules.MAX_HOLD_TTL_SECONDS
    with pytest.raises(rules.InvalidArgument):
        rules.resolve_hold_ttl(rules.MAX_HOLD_TTL_SECONDS + 1, 3600)


def test_ledger_limit() -> None:
    assert rules.resolve_ledger_limit(0) == 100
    assert rules.resolve_ledger_limit(1) == 1
    assert rules.resolve_ledger_limit(1000) == 1000
    for bad in (1001, -1):
        with pytest.raises(rules.InvalidArgument):
            rules.resolve_ledger_limit(bad)


def test_idempotency_keys() -> None:
    assert rules.check_idempotency_key("", required=False) is None
    assert rules.check_idempotency_key("req_1", required=True) == "req_1"
    for bad in ("x" * 201, "a\nb"):
        with pytest.raises(rules.InvalidArgument):
            rules.check_idempotency_key(bad, required=False)
    with pytest.raises(rules.InvalidArgument):
        rules.check_idempotency_key("", required=True)


def test_text_fields() -> None:
    assert rules.check_text("description", "chat model-x req_1") == "chat model-x req_1"
    for bad in ("x" * 1001, "nul\x00"):
        with pytest.raises(rules.InvalidArgument):
            rules.check_text("description", bad)


@pytest.mark.parametrize(
    ("text", "micros"),
    [("50000", 50_000_000_000), ("12.5", 12_500_000), ("0.000001", 1), (" 7 ", 7_000_000)],
)
def test_parse_idr_amount(text: str, micros: int) -> None:
    assert rules.parse_idr_amount(text) == micros


@pytest.mark.parametrize("text", ["", "abc", "0", "-5", "0.0000001", "NaN", "Infinity", "1e30"])
def test_parse_idr_amount_rejects(text: str) -> None:
    with pytest.raises(rules.InvalidArgument):
        rules.parse_idr_amount(text)


def test_formatting() -> None:
    assert rules.rfc3339(0) is None
    assert rules.rfc3339(1767225600) == "2026-01-01T00:00:00Z"
    assert rules.idr(12_500_000) == "12.5"
    assert rules.idr(-1) == "-0.000001"
    assert rules.unix_seconds(None) == 0


def test_database_urls() -> None:
    for raw in (
        "postgresql://u:p@h:5433/d",
        "postgres://u:p@h:5433/d",
        "postgresql+psycopg://u:p@h:5433/d",
        "postgresql+asyncpg://u:p@h:5433/d",
    ):
        url = db.sqlalchemy_url(raw)
        assert url.drivername == "postgresql+psycopg"
        assert (url.username, url.password, url.host, url.port, url.database) == (
            "u",
            "p",
            "h",
            5433,
            "d",
        )
    assert db.libpq_conninfo("postgresql+psycopg://u:p@h/d", database="postgres") == (
        "postgresql://u:p@h/postgres"
    )
    with pytest.raises(ValueError):
        db.sqlalchemy_url("mysql://u@h/d")


def test_error_status_codes() -> None:
    assert status_for(rules.InvalidArgument("x")) == grpc.StatusCode.INVALID_ARGUMENT
    assert status_for(rules.NotFound("x")) == grpc.StatusCode.NOT_FOUND
    assert status_for(rules.InsufficientFunds("x")) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert status_for(rules.FailedPrecondition("x")) == grpc.StatusCode.FAILED_PRECONDITION
    assert status_for(rules.Unauthenticated("x")) == grpc.StatusCode.UNAUTHENTICATED


def test_cli_global_flags_anywhere() -> None:
    split = cli._split_global_flags
    assert split(["balance", "--json", "acct_x"]) == (["balance", "acct_x"], True, None)
    assert split(["--billing", "h:1", "balance", "a"]) == (["balance", "a"], False, "h:1")
    assert split(["balance", "a", "--billing=h:2", "--json"]) == (["balance", "a"], True, "h:2")
    with pytest.raises(operator_cli.CliError):
        split(["balance", "a", "--billing"])


def test_recorded_usage_is_made_consistent_and_bounded() -> None:
    usage = rules.recorded_usage(
        prompt_tokens=100,
        cached_prompt_tokens=80,
        cache_write_prompt_tokens=50,
        completion_tokens=10,
        reasoning_tokens=20,
        latency_ms=0,
    )
    assert (usage.input_tokens, usage.cached_input_tokens, usage.cache_write_input_tokens) == (
        100,
        80,
        20,
    )
    assert (usage.output_tokens, usage.reasoning_tokens, usage.latency_ms) == (10, 10, None)
    huge = rules.recorded_usage(prompt_tokens=2**64 - 1, latency_ms=2**40)
    assert huge.input_tokens == rules.MAX_RECORDED_TOKENS
    assert huge.latency_ms == rules.MAX_LATENCY_MS


def test_scopes_names_and_origins() -> None:
    assert rules.check_scopes([]) == ["inference"]
    assert rules.check_scopes(["manage"]) == ["manage"]
    assert rules.check_scopes(["manage", "inference", "manage"]) == ["inference", "manage"]
    with pytest.raises(rules.InvalidArgument, match="scopes"):
        rules.check_scopes(["inference", "root"])
    assert rules.check_key_name("  prod  ") == "prod"
    for bad in ("x" * 101, "tab\there"):
        with pytest.raises(rules.InvalidArgument, match="name"):
            rules.check_key_name(bad)
    assert rules.check_origin("chat.completions", "req-1", "")["endpoint"] == "chat.completions"
    with pytest.raises(rules.InvalidArgument, match=r"origin\.request_id"):
        rules.check_origin("", "a\nb", "")
    with pytest.raises(rules.InvalidArgument, match=r"origin\.job_id"):
        rules.check_origin("", "", "j" * 101)


def test_usage_windows_groups_and_time_zones() -> None:
    window = rules.check_usage_window(1_760_000_000, 1_770_000_000, "m-1", "")
    assert (window.start_unix, window.end_unix, window.model) == (
        1_760_000_000,
        1_770_000_000,
        "m-1",
    )
    assert rules.check_usage_window(0, 0, "", "") == rules.UsageWindow(None, None, "", "")
    for start, end, field in ((5, 0, "start_unix"), (0, 10**12, "end_unix")):
        with pytest.raises(rules.InvalidArgument, match=field):
            rules.check_usage_window(start, end, "", "")
    with pytest.raises(rules.InvalidArgument, match="after start"):
        rules.check_usage_window(1_770_000_000, 1_760_000_000, "", "")
    with pytest.raises(rules.InvalidArgument, match="model"):
        rules.check_usage_window(0, 0, "has space", "")
    with pytest.raises(rules.InvalidArgument, match="key_id"):
        rules.check_usage_window(0, 0, "", "key_nope")
    assert rules.resolve_usage_limit(0) == 100
    for bad in (-1, 1001):
        with pytest.raises(rules.InvalidArgument, match="limit"):
            rules.resolve_usage_limit(bad)
    assert rules.check_usage_group("day") == "day"
    with pytest.raises(rules.InvalidArgument, match="group_by"):
        rules.check_usage_group("hour")
    assert rules.check_time_zone("") == "Asia/Jakarta"
    assert rules.check_time_zone("Asia/Makassar") == "Asia/Makassar"
    with pytest.raises(rules.InvalidArgument, match="time_zone"):
        rules.check_time_zone("Mars/Olympus")
