"""The console's presentation of money, times and numbers: the Indonesian way,
exactly, and never from a float."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from services.common.money import AmountError
from services.console import i18n, times
from services.console.money import format_idr, format_micros


@pytest.mark.parametrize(
    ("micros", "shown"),
    [
        (0, "Rp 0"),
        (1_000_000, "Rp 1"),
        (999_000_000, "Rp 999"),
        (1_000_000_000, "Rp 1.000"),
        (1_250_000_000_000, "Rp 1.250.000"),
        (350_000, "Rp 0,35"),
        (1_234_500_000, "Rp 1.234,50"),  # a fraction shows at least the two sen places
        (1_000_125, "Rp 1,000125"),  # and every µIDR it has: a tiny price is not "free"
        (1, "Rp 0,000001"),
        (-2_500_000_000, "-Rp 2.500"),
        (-350_000, "-Rp 0,35"),
        (12_345_678_901_234_567, "Rp 12.345.678.901,234567"),
    ],
)
def test_micro_rupiah_the_indonesian_way(micros: int, shown: str) -> None:
    assert format_micros(micros) == shown


@pytest.mark.parametrize(
    ("amount", "shown"),
    [
        ("4500", "Rp 4.500"),
        ("0.35", "Rp 0,35"),
        ("103125", "Rp 103.125"),
        ("1250000", "Rp 1.250.000"),
        ("0.5", "Rp 0,50"),
        ("12.000001", "Rp 12,000001"),
        ("-10000", "-Rp 10.000"),
        ("0", "Rp 0"),
    ],
)
def test_api_decimal_strings(amount: str, shown: str) -> None:
    assert format_idr(amount) == shown


@pytest.mark.parametrize("amount", ["0.0000001", "abc", "", "NaN", "Infinity", "1,5"])
def test_amounts_that_are_not_exact_rupiah_are_refused(amount: str) -> None:
    with pytest.raises(AmountError):
        format_idr(amount)


@pytest.mark.parametrize("amount", [1.5, 0.35, True, None])
def test_floats_and_other_types_are_refused(amount: object) -> None:
    with pytest.raises(TypeError):
        format_micros(amount)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        format_idr(amount)  # type: ignore[arg-type]


def test_an_int_is_not_taken_for_a_decimal_string() -> None:
    # format_idr(4500) would be ambiguous (IDR or µIDR?): only strings.
    with pytest.raises(TypeError):
        format_idr(4500)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "lang", "shown"),
    [
        (65536, "id", "65.536"),
        (65536, "en", "65,536"),
        (8, "id", "8"),
        (1000000, "id", "1.000.000"),
    ],
)
def test_counts_are_grouped_as_the_language_writes_them(value: int, lang: str, shown: str) -> None:
    assert i18n.format_count(value, lang) == shown


# --- times ----------------------------------------------------------------------------------

NOON_UTC = datetime(2026, 12, 3, 10, 40, tzinfo=UTC)


def test_default_zone_is_jakarta() -> None:
    assert times.format_datetime(NOON_UTC, "id") == "3 Des 2026 17.40 WIB"
    assert times.format_datetime(NOON_UTC, "en") == "3 Dec 2026, 17:40 WIB"


def test_the_users_zone_moves_the_clock_and_the_day() -> None:
    late = datetime(2026, 12, 31, 20, 30, tzinfo=UTC)
    assert times.format_datetime(late, "id", "Asia/Makassar") == "1 Jan 2027 04.30 WITA"
    assert times.format_datetime(late, "id", "Asia/Jayapura") == "1 Jan 2027 05.30 WIT"
    assert times.format_datetime(late, "en", "Europe/London") == "31 Dec 2026, 20:30 GMT"
    assert times.format_date(late, "id") == "1 Jan 2027"


def test_unix_seconds_and_other_offsets_are_the_same_instant() -> None:
    seconds = int(NOON_UTC.timestamp())
    plus_seven = NOON_UTC.astimezone(timezone(timedelta(hours=7)))
    assert times.format_datetime(seconds, "id") == "3 Des 2026 17.40 WIB"
    assert times.format_datetime(plus_seven, "id") == "3 Des 2026 17.40 WIB"


def test_zones_without_an_abbreviation_show_their_offset() -> None:
    assert times.format_datetime(NOON_UTC, "en", "Asia/Dubai") == "3 Dec 2026, 14:40 UTC+04"


def test_indonesian_month_names() -> None:
    months = [times.format_date(datetime(2026, m, 15, 5, tzinfo=UTC), "id") for m in (5, 8, 10, 12)]
    assert months == ["15 Mei 2026", "15 Agu 2026", "15 Okt 2026", "15 Des 2026"]


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        times.format_datetime(datetime(2026, 1, 1, 12), "id")


@pytest.mark.parametrize("name", ["Mars/Olympus", "../../etc/passwd", "/etc/localtime", "a\0b"])
def test_unknown_zones_are_refused(name: str) -> None:
    with pytest.raises(times.ZoneError):
        times.zone(name)


def test_no_zone_means_jakarta() -> None:
    assert times.zone(None).key == "Asia/Jakarta"
    assert times.zone("").key == "Asia/Jakarta"
