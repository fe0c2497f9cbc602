"""Times for people: in the user's time zone (Asia/Jakarta unless they chose
another), written the way their language writes dates.

Stored and wire times are UTC (datetimes with a zone, or Unix seconds); these
functions only present them. A naive datetime is refused: guessing its zone is
how an hour goes missing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_ZONE: Final = "Asia/Jakarta"
# What the settings page offers: Indonesia's three zones, then UTC.
CHOICES: Final = ("Asia/Jakarta", "Asia/Makassar", "Asia/Jayapura", "UTC")

# Short month names; Indonesian months as Indonesians abbreviate them.
MONTHS: Final[dict[str, tuple[str, ...]]] = {
    "id": ("Jan", "Feb", "Mar", "Apr", "Mei", "Jun", "Jul", "Agu", "Sep", "Okt", "Nov", "Des"),
    "en": ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
}


class ZoneError(ValueError):
    """A time zone name that is not in the tz database."""


def zone(name: str | None) -> ZoneInfo:
    """The tz database zone `name` (None or empty: Asia/Jakarta)."""
    if not name:
        return ZoneInfo(DEFAULT_ZONE)
    # Names are paths inside the tz database: refuse anything that is not one.
    if name.startswith(("/", ".")) or ".." in name or "\\" in name or "\0" in name:
        raise ZoneError(f"unknown time zone: {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ZoneError(f"unknown time zone: {name!r}") from exc


def to_datetime(when: datetime | int) -> datetime:
    """A zone-aware datetime, from one or from Unix seconds."""
    if isinstance(when, bool):
        raise TypeError("a time must be a datetime or Unix seconds, not a bool")
    if isinstance(when, int):
        return datetime.fromtimestamp(when, UTC)
    if not isinstance(when, datetime):
        raise TypeError(f"a time must be a datetime or Unix seconds, not {type(when).__name__}")
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError("naive datetime: give it a time zone (stored times are UTC)")
    return when


def format_datetime(when: datetime | int, lang: str, tz: str | None = None) -> str:
    """`3 Des 2026 17.40 WIB` (id) or `3 Dec 2026, 17:40 WIB` (en)."""
    local = to_datetime(when).astimezone(zone(tz))
    return f"{format_date(local, lang, tz)}{', ' if lang == 'en' else ' '}{_clock(local, lang)}"


def format_date(when: datetime | int, lang: str, tz: str | None = None) -> str:
    """`3 Des 2026` (id), `3 Dec 2026` (en): the day in the user's zone."""
    local = to_datetime(when).astimezone(zone(tz))
    months = MONTHS.get(lang, MONTHS["en"])
    return f"{local.day} {months[local.month - 1]} {local.year}"


def _clock(local: datetime, lang: str) -> str:
    # Indonesian writes the time with a dot (KBBI/PUEBI: 17.40); English a colon.
    separator = "." if lang == "id" else ":"
    abbreviation = local.tzname() or ""
    # Zones without a letter abbreviation report "+07": show UTC+07 instead.
    if abbreviation.startswith(("+", "-")):
        abbreviation = f"UTC{abbreviation}"
    return f"{local.hour:02d}{separator}{local.minute:02d} {abbreviation}".rstrip()


def chosen(name: str | None) -> str:
    """A zone a person chose (the settings page's cookie), or Asia/Jakarta when
    there is none or it is not one we offer."""
    return name if name in CHOICES else DEFAULT_ZONE
