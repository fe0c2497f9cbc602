"""Keys' spend caps as pure rules: the periods (midnight in Asia/Jakarta or the
configured zone), what each counter counts, which cap a hold passes, and the
settings' validation."""

from __future__ import annotations

import zoneinfo
from datetime import UTC, date, datetime

import pytest

from services.billing import rules
from services.billing.rules import InvalidArgument, KeySpend, SpendCaps

IDR = 1_000_000
JAKARTA = zoneinfo.ZoneInfo("Asia/Jakarta")


def test_a_day_in_jakarta_ends_at_17_utc() -> None:
    before = rules.spend_periods(datetime(2026, 12, 5, 16, 59, 59, tzinfo=UTC), JAKARTA)
    after = rules.spend_periods(datetime(2026, 12, 5, 17, 0, 0, tzinfo=UTC), JAKARTA)
    assert before.day == date(2026, 12, 5)
    assert before.day_resets_at == datetime(2026, 12, 5, 17, 0, tzinfo=UTC)
    assert after.day == date(2026, 12, 6)
    assert after.day_resets_at == datetime(2026, 12, 6, 17, 0, tzinfo=UTC)


def test_months_turn_at_local_midnight_even_across_the_year() -> None:
    # 31 Dec 17:30 UTC is already 1 Jan in Jakarta.
    periods = rules.spend_periods(datetime(2026, 12, 31, 17, 30, tzinfo=UTC), JAKARTA)
    assert (periods.day, periods.month) == (date(2027, 1, 1), date(2027, 1, 1))
    assert periods.month_resets_at == datetime(2027, 1, 31, 17, 0, tzinfo=UTC)
    february = rules.spend_periods(datetime(2028, 2, 10, tzinfo=UTC), JAKARTA)
    assert february.month_resets_at == datetime(2028, 2, 29, 17, 0, tzinfo=UTC)


def test_the_zone_is_configurable() -> None:
    utc = rules.check_cap_time_zone("UTC")
    periods = rules.spend_periods(datetime(2026, 12, 5, 23, 0, tzinfo=UTC), utc)
    assert periods.day == date(2026, 12, 5)
    assert rules.check_cap_time_zone("") == JAKARTA
    with pytest.raises(InvalidArgument):
        rules.check_cap_time_zone("Mars/Olympus")


NOW = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)
PERIODS = rules.spend_periods(NOW, JAKARTA)


def test_counters_count_only_their_own_period() -> None:
    stale = KeySpend(50, date(2026, 12, 4), 30, date(2026, 11, 1), 40)
    assert (stale.today(PERIODS), stale.this_month(PERIODS)) == (0, 0)
    current = KeySpend(50, date(2026, 12, 5), 30, date(2026, 12, 1), 40)
    assert (current.today(PERIODS), current.this_month(PERIODS)) == (30, 40)
    # A counter already in the next day (a clock ahead) still counts: never less.
    ahead = KeySpend(50, date(2026, 12, 6), 30, date(2026, 12, 1), 40)
    assert ahead.today(PERIODS) == 30


def test_a_hold_may_reach_a_cap_but_not_pass_it() -> None:
    caps = SpendCaps(daily_micros=10 * IDR)
    spent = KeySpend(0, date(2026, 12, 5), 7 * IDR, date(2026, 12, 1), 7 * IDR)
    assert rules.cap_refusal(caps, spent, PERIODS, 3 * IDR) is None
    refused = rules.cap_refusal(caps, spent, PERIODS, 3 * IDR + 1)
    assert refused is not None and refused.cap == "daily"
    assert refused.resets_at == datetime(2026, 12, 5, 17, 0, tzinfo=UTC)
    assert "daily spend cap of 10 IDR" in str(refused)
    assert "7 IDR is already spent or held today" in str(refused)


def test_the_longest_lasting_cap_is_named() -> None:
    caps = SpendCaps(daily_micros=5, monthly_micros=5, lifetime_micros=100)
    spent = KeySpend(10, date(2026, 12, 5), 5, date(2026, 12, 1), 5)
    refused = rules.cap_refusal(caps, spent, PERIODS, 1)
    assert refused is not None and refused.cap == "monthly"
    spent_out = KeySpend(100, date(2026, 12, 5), 5, date(2026, 12, 1), 5)
    lifetime = rules.cap_refusal(caps, spent_out, PERIODS, 1)
    assert lifetime is not None and lifetime.cap == "lifetime" and lifetime.resets_at is None
    assert "never resets" in str(lifetime)
    assert rules.cap_refusal(SpendCaps(), spent_out, PERIODS, 10**18) is None


def test_settings_become_columns_and_zero_clears() -> None:
    assert rules.check_key_settings(NOW) == {}
    assert rules.check_key_settings(
        NOW,
        daily_cap_micros=0,
        monthly_cap_micros=5,
        allowed_models=["a", "b", "a"],
        expires_at_unix=int(NOW.timestamp()) + 60,
        requests_per_minute=0,
        concurrent_requests=3,
    ) == {
        "daily_cap_micros": None,
        "monthly_cap_micros": 5,
        "allowed_models": ["a", "b"],
        "expires_at": datetime.fromtimestamp(int(NOW.timestamp()) + 60, UTC),
        "requests_per_minute": None,
        "concurrent_requests": 3,
    }
    assert rules.check_key_settings(NOW, allowed_models=[], expires_at_unix=0) == {
        "allowed_models": None,
        "expires_at": None,
    }


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"daily_cap_micros": -1}, "daily_cap_micros"),
        ({"lifetime_cap_micros": 10**18 + 1}, "lifetime_cap_micros"),
        ({"allowed_models": ["has space"]}, "allowed_models"),
        ({"allowed_models": [f"m{i}" for i in range(101)]}, "allowed_models"),
        ({"expires_at_unix": 1}, "expires_at_unix"),
        ({"requests_per_minute": 1_000_001}, "requests_per_minute"),
        ({"concurrent_requests": -3}, "concurrent_requests"),
    ],
)
def test_bad_settings_name_their_field(settings: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument, match=field):
        rules.check_key_settings(NOW, **settings)  # type: ignore[arg-type]
