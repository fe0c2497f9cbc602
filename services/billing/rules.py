"""Pure billing rules: ids, API keys, input validation and formatting. No I/O here."""

from __future__ import annotations

import functools
import hashlib
import json
import re
import secrets
import string
import unicodedata
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from services.common.money import AmountError, idr_to_micros, micros_to_idr

BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase

ACCOUNT_PREFIX = "acct_"
KEY_ID_PREFIX = "key_"
HOLD_PREFIX = "hold_"
API_KEY_PREFIX = "aip_live_"
ID_RANDOM_CHARS = 20
API_KEY_RANDOM_CHARS = 32
# "aip_live_" plus four random characters: enough to recognise a key, useless to guess it.
KEY_DISPLAY_PREFIX_CHARS = 13

MAX_NAME_CHARS = 200
MAX_DESCRIPTION_CHARS = 1000
MAX_IDEMPOTENCY_KEY_CHARS = 200
# One movement is at most 10^12 IDR; keeps every sum far from the int64 edge.
MAX_AMOUNT_MICROS = 10**18
INT64_MAX = 2**63 - 1
DEFAULT_LEDGER_LIMIT = 100
MAX_LEDGER_LIMIT = 1000
MAX_LISTED_KEYS = 1000
MAX_HOLD_TTL_SECONDS = 7 * 24 * 3600

HOLD_STATUSES = ("open", "captured", "released", "expired")

_ID_RE = {
    prefix: re.compile(rf"{prefix}[0-9A-Za-z]{{{ID_RANDOM_CHARS}}}")
    for prefix in (ACCOUNT_PREFIX, KEY_ID_PREFIX, HOLD_PREFIX)
}
_API_KEY_RE = re.compile(rf"{API_KEY_PREFIX}[0-9A-Za-z]{{{API_KEY_RANDOM_CHARS}}}")


# Domain errors. The server maps each class to one gRPC status code.
class BillingError(Exception):
    """Base of the errors a caller can act on; the message is safe to show."""


class InvalidArgument(BillingError):
    pass


class NotFound(BillingError):
    pass


class InsufficientFunds(BillingError):
    pass


class FailedPrecondition(BillingError):
    pass


class Unauthenticated(BillingError):
    pass


class IdempotencyConflict(FailedPrecondition):
    """The idempotency key was already used with a different input."""


class CaptureExceedsHold(BillingError):
    """A capture asked for more than its hold reserved: a pricing bug upstream of
    billing, refused (never clamped) so that the caller and an operator see it."""

    def __init__(self, hold_id: str, requested_micros: int, held_micros: int) -> None:
        super().__init__(
            f"capture of {requested_micros} micros exceeds hold {hold_id}"
            f" of {held_micros} micros; nothing was captured"
        )
        self.hold_id = hold_id
        self.requested_micros = requested_micros
        self.held_micros = held_micros


# The one message for every failed Authenticate: unknown, revoked or malformed.
UNAUTHENTICATED_MESSAGE = "invalid API key"


# The largest multiple of 62 below 256: bytes at or above it are skipped, so
# every character stays uniform (rejection sampling).
_BASE62_LIMIT = 256 - 256 % len(BASE62)


def _random_chars(count: int) -> str:
    """`count` uniform base-62 characters from one read of the OS's CSPRNG
    (secrets.choice per character made one getrandom call each)."""
    chars: list[str] = []
    while len(chars) < count:
        # 248/256 of the bytes are kept; ask for a few more than needed.
        for byte in secrets.token_bytes(count + 8):
            if byte < _BASE62_LIMIT:
                chars.append(BASE62[byte % len(BASE62)])
                if len(chars) == count:
                    break
    return "".join(chars)


def new_account_id() -> str:
    return ACCOUNT_PREFIX + _random_chars(ID_RANDOM_CHARS)


def new_key_id() -> str:
    return KEY_ID_PREFIX + _random_chars(ID_RANDOM_CHARS)


def new_hold_id() -> str:
    return HOLD_PREFIX + _random_chars(ID_RANDOM_CHARS)


def new_api_key() -> str:
    """A fresh plaintext key; only its hash is ever stored."""
    return API_KEY_PREFIX + _random_chars(API_KEY_RANDOM_CHARS)


def hash_api_key(api_key: str) -> bytes:
    return hashlib.sha256(api_key.encode("utf-8")).digest()


def key_display_prefix(api_key: str) -> str:
    return api_key[:KEY_DISPLAY_PREFIX_CHARS]


def looks_like_api_key(value: str) -> bool:
    return _API_KEY_RE.fullmatch(value) is not None


def _shown(value: str) -> str:
    """A caller's value quoted for an error message, cut short."""
    return repr(value if len(value) <= 40 else value[:40] + "...")


def _check_id(field: str, prefix: str, value: str) -> str:
    if not value:
        raise InvalidArgument(f"{field} is required")
    if _ID_RE[prefix].fullmatch(value) is None:
        raise InvalidArgument(
            f"{field} must be {prefix!r} followed by {ID_RANDOM_CHARS} letters or digits,"
            f" got {_shown(value)}"
        )
    return value


def check_account_id(value: str, field: str = "account_id") -> str:
    return _check_id(field, ACCOUNT_PREFIX, value)


def check_key_id(value: str, field: str = "key_id") -> str:
    return _check_id(field, KEY_ID_PREFIX, value)


def check_hold_id(value: str, field: str = "hold_id") -> str:
    return _check_id(field, HOLD_PREFIX, value)


def check_text(field: str, value: str, max_chars: int = MAX_DESCRIPTION_CHARS) -> str:
    """Optional free text (descriptions, reasons): bounded, no NUL bytes."""
    if len(value) > max_chars:
        raise InvalidArgument(f"{field} is longer than {max_chars} characters")
    if "\x00" in value:
        raise InvalidArgument(f"{field} contains a NUL character")
    return value


def check_name(value: str) -> str:
    """An account name: trimmed, 1..200 characters, no control characters."""
    name = value.strip()
    if not name:
        raise InvalidArgument("name is required")
    if len(name) > MAX_NAME_CHARS:
        raise InvalidArgument(f"name is longer than {MAX_NAME_CHARS} characters")
    if any(unicodedata.category(ch) == "Cc" for ch in name):
        raise InvalidArgument("name contains control characters")
    return name


def check_idempotency_key(value: str, *, required: bool) -> str | None:
    if not value:
        if required:
            raise InvalidArgument("idempotency_key is required")
        return None
    if len(value) > MAX_IDEMPOTENCY_KEY_CHARS:
        raise InvalidArgument(
            f"idempotency_key is longer than {MAX_IDEMPOTENCY_KEY_CHARS} characters"
        )
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise InvalidArgument("idempotency_key contains control characters")
    return value


def check_positive_amount(value: int, field: str = "amount_micros") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{field} must be an integer number of micro-rupiah")
    if value <= 0:
        raise InvalidArgument(f"{field} must be positive, got {value}")
    if value > MAX_AMOUNT_MICROS:
        raise InvalidArgument(f"{field} must be at most {MAX_AMOUNT_MICROS}, got {value}")
    return value


def check_capture_amount(value: int) -> int:
    """Capture takes 0 (frees the hold, charges nothing) up to the hold's amount;
    more than the hold is refused by the ledger (CaptureExceedsHold)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument("amount_micros must be an integer number of micro-rupiah")
    if value < 0:
        raise InvalidArgument(f"amount_micros must not be negative, got {value}")
    if value > INT64_MAX:
        raise InvalidArgument("amount_micros is out of range")
    return value


def resolve_hold_ttl(ttl_seconds: int, default_seconds: int) -> int:
    """0 means the service default; otherwise 1..MAX_HOLD_TTL_SECONDS."""
    ttl = default_seconds if ttl_seconds == 0 else ttl_seconds
    if ttl < 1 or ttl > MAX_HOLD_TTL_SECONDS:
        raise InvalidArgument(
            f"ttl_seconds must be between 1 and {MAX_HOLD_TTL_SECONDS}, got {ttl_seconds}"
        )
    return ttl


def resolve_ledger_limit(limit: int) -> int:
    """0 means 100; otherwise 1..1000."""
    if limit == 0:
        return DEFAULT_LEDGER_LIMIT
    if limit < 0 or limit > MAX_LEDGER_LIMIT:
        raise InvalidArgument(f"limit must be between 1 and {MAX_LEDGER_LIMIT}, got {limit}")
    return limit


def check_ledger_cursor(after_entry_id: int) -> int:
    """0 (from the newest) or the id of an entry the listing continues after."""
    if after_entry_id < 0:
        raise InvalidArgument(f"after_entry_id must be an entry id, got {after_entry_id}")
    return after_entry_id


def check_signed_amount(value: int, field: str = "amount_micros") -> int:
    """A non-zero amount either way (adjustments), at most MAX_AMOUNT_MICROS in size."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{field} must be an integer number of micro-rupiah")
    if value == 0:
        raise InvalidArgument(f"{field} must not be zero")
    if abs(value) > MAX_AMOUNT_MICROS:
        raise InvalidArgument(f"{field} must be at most {MAX_AMOUNT_MICROS} in size, got {value}")
    return value


def check_low_balance_threshold(value: int) -> int | None:
    """A low-balance alert's threshold: 0 turns the alert off (None), otherwise a
    positive amount of at most MAX_AMOUNT_MICROS."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument("threshold_micros must be an integer number of micro-rupiah")
    if value == 0:
        return None
    if value < 0 or value > MAX_AMOUNT_MICROS:
        raise InvalidArgument(
            f"threshold_micros must be 0 (off) or between 1 and {MAX_AMOUNT_MICROS}, got {value}"
        )
    return value


# Low-balance alerts claimed per call (services/accounts polls them).
DEFAULT_ALERT_CLAIM_LIMIT = 100
MAX_ALERT_CLAIM_LIMIT = 1000


def resolve_alert_claim_limit(limit: int) -> int:
    """0 means 100; otherwise 1..1000."""
    if limit == 0:
        return DEFAULT_ALERT_CLAIM_LIMIT
    if limit < 0 or limit > MAX_ALERT_CLAIM_LIMIT:
        raise InvalidArgument(f"limit must be between 1 and {MAX_ALERT_CLAIM_LIMIT}, got {limit}")
    return limit


# A model, provider or payment rail named inside a ledger account
# ("revenue:<model>", "payments:<rail>"): printable ASCII without spaces.
_LEDGER_NAME_RE = re.compile(r"[!-~]{1,100}")


def check_ledger_name(field: str, value: str, *, required: bool = False) -> str:
    if not value:
        if required:
            raise InvalidArgument(f"{field} is required")
        return ""
    if _LEDGER_NAME_RE.fullmatch(value) is None:
        raise InvalidArgument(
            f"{field} must be 1..100 printable ASCII characters without spaces, got {_shown(value)}"
        )
    return value


# API keys: names and scopes.
MAX_KEY_NAME_CHARS = 100
SCOPE_INFERENCE = "inference"
SCOPE_MANAGE = "manage"
KEY_SCOPES = (SCOPE_INFERENCE, SCOPE_MANAGE)


def check_key_name(value: str) -> str:
    """A key's name: trimmed, up to 100 characters, no control characters ("" is fine)."""
    name = value.strip()
    if len(name) > MAX_KEY_NAME_CHARS:
        raise InvalidArgument(f"name is longer than {MAX_KEY_NAME_CHARS} characters")
    if any(unicodedata.category(ch) == "Cc" for ch in name):
        raise InvalidArgument("name contains control characters")
    return name


def check_scopes(values: Sequence[str]) -> list[str]:
    """Known scopes, each once, in a fixed order; none given is ["inference"]."""
    unknown = [v for v in values if v not in KEY_SCOPES]
    if unknown:
        raise InvalidArgument(
            f"scopes may contain only {', '.join(KEY_SCOPES)}; got {_shown(unknown[0])}"
        )
    return [scope for scope in KEY_SCOPES if scope in values] or [SCOPE_INFERENCE]


def check_disable_reason(disabled: bool, reason: str) -> str:
    reason = check_text("reason", reason.strip(), max_chars=500)
    if disabled and not reason:
        raise InvalidArgument("reason is required to disable an account")
    return reason


# An operator acting through /v1/admin: the accounts service's user id (its
# shape is accounts' rule; billing only keeps it). "" is no person (aiportctl).
_OPERATOR_RE = re.compile(r"usr_[0-9A-Za-z]{20}")


def check_operator(value: str) -> str:
    if value and _OPERATOR_RE.fullmatch(value) is None:
        raise InvalidArgument(
            f"operator must be an accounts user id (usr_...), got {_shown(value)}"
        )
    return value


# What a hold pays for (its usage record's origin): printable, bounded.
_ORIGIN_LIMITS = {"endpoint": 100, "request_id": 200, "job_id": 100}


def check_origin(endpoint: str, request_id: str, job_id: str) -> dict[str, str]:
    values = {"endpoint": endpoint, "request_id": request_id, "job_id": job_id}
    for field, value in values.items():
        if len(value) > _ORIGIN_LIMITS[field]:
            raise InvalidArgument(
                f"origin.{field} is longer than {_ORIGIN_LIMITS[field]} characters"
            )
        if any(unicodedata.category(ch) == "Cc" for ch in value):
            raise InvalidArgument(f"origin.{field} contains control characters")
    return values


# Token counts kept per call: far above any real call, within a bigint.
MAX_RECORDED_TOKENS = 10**12
MAX_LATENCY_MS = 2**31 - 1


@dataclass(frozen=True, slots=True)
class RecordedUsage:
    """What a settled call consumed, as its usage record keeps it."""

    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    latency_ms: int | None = None

    def params(self) -> dict[str, int | None]:
        return {
            "input_tokens": self.input_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "cache_write_input_tokens": self.cache_write_input_tokens,
            "output_tokens": self.output_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "latency_ms": self.latency_ms,
        }


def recorded_usage(
    *,
    prompt_tokens: int = 0,
    cached_prompt_tokens: int = 0,
    cache_write_prompt_tokens: int = 0,
    completion_tokens: int = 0,
    reasoning_tokens: int = 0,
    latency_ms: int = 0,
) -> RecordedUsage:
    """Usage as reported, made consistent rather than refused: the record
    describes money that moves anyway, so an upstream's odd counts (more cached
    tokens than prompt tokens, say) must never stop a capture. Parts are cut to
    their whole; everything is bounded; a latency of 0 is unknown."""

    def bounded(value: int) -> int:
        return min(max(int(value), 0), MAX_RECORDED_TOKENS)

    prompt = bounded(prompt_tokens)
    cached = min(bounded(cached_prompt_tokens), prompt)
    cache_write = min(bounded(cache_write_prompt_tokens), prompt - cached)
    completion = bounded(completion_tokens)
    latency = min(max(int(latency_ms), 0), MAX_LATENCY_MS)
    return RecordedUsage(
        input_tokens=prompt,
        cached_input_tokens=cached,
        cache_write_input_tokens=cache_write,
        output_tokens=completion,
        reasoning_tokens=min(bounded(reasoning_tokens), completion),
        latency_ms=latency or None,
    )


# Usage listings.
DEFAULT_USAGE_LIMIT = 100
MAX_USAGE_LIMIT = 1000
USAGE_GROUPS = ("day", "model", "key")
DEFAULT_TIME_ZONE = "Asia/Jakarta"
# Unix seconds a usage window may name: 2000-01-01 .. 2200-01-01.
MIN_USAGE_UNIX = 946_684_800
MAX_USAGE_UNIX = 7_258_118_400


@dataclass(frozen=True, slots=True)
class UsageWindow:
    """[start, end) in unix seconds (None: unbounded), and the filters."""

    start_unix: int | None
    end_unix: int | None
    model: str
    key_id: str


def check_usage_window(start_unix: int, end_unix: int, model: str, key_id: str) -> UsageWindow:
    bounds: dict[str, int | None] = {}
    for field, value in (("start_unix", start_unix), ("end_unix", end_unix)):
        if value == 0:
            bounds[field] = None
        elif not MIN_USAGE_UNIX <= value <= MAX_USAGE_UNIX:
            raise InvalidArgument(f"{field} must be a unix time between 2000 and 2200, got {value}")
        else:
            bounds[field] = value
    start, end = bounds["start_unix"], bounds["end_unix"]
    if start is not None and end is not None and end <= start:
        raise InvalidArgument("end_unix must be after start_unix")
    if model and _LEDGER_NAME_RE.fullmatch(model) is None:
        raise InvalidArgument(f"model is not a model id: {_shown(model)}")
    return UsageWindow(start, end, model, check_key_id(key_id) if key_id else "")


def resolve_usage_limit(limit: int) -> int:
    if limit == 0:
        return DEFAULT_USAGE_LIMIT
    if limit < 0 or limit > MAX_USAGE_LIMIT:
        raise InvalidArgument(f"limit must be between 1 and {MAX_USAGE_LIMIT}, got {limit}")
    return limit


def check_usage_group(value: str) -> str:
    if value not in USAGE_GROUPS:
        raise InvalidArgument(
            f"group_by must be one of {', '.join(USAGE_GROUPS)}, got {_shown(value)}"
        )
    return value


@functools.cache
def _known_time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def check_time_zone(value: str) -> str:
    """An IANA time zone name ("" is Asia/Jakarta)."""
    if not value:
        return DEFAULT_TIME_ZONE
    if value not in _known_time_zones():
        raise InvalidArgument(f"time_zone is not an IANA time zone name: {_shown(value)}")
    return value


def input_hash(operation: str, **fields: str | int) -> bytes:
    """SHA-256 of a canonical encoding of what an idempotency key guards.

    Stored with the key in the same transaction: a retry whose hash matches gets
    the first result; any other input under that key is refused. Canonical:
    compact JSON, keys sorted, ASCII only, so the same input always hashes the same."""
    document = {"op": operation, "v": 1, **fields}
    encoded = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(encoded.encode("ascii")).digest()


# Formatting for the CLI.


def parse_idr_amount(text: str) -> int:
    """A positive IDR amount typed by an operator ("50000", "12.5") -> µIDR."""
    try:
        micros = idr_to_micros(text)
    except AmountError as exc:
        raise InvalidArgument(f"invalid amount {_shown(text)}: use a decimal IDR amount") from exc
    if micros <= 0:
        raise InvalidArgument(f"amount must be positive, got {_shown(text)} IDR")
    if micros > MAX_AMOUNT_MICROS:
        raise InvalidArgument(
            f"amount must be at most {micros_to_idr(MAX_AMOUNT_MICROS)} IDR, got {_shown(text)}"
        )
    return micros


def rfc3339(unix_seconds: int) -> str | None:
    """Unix seconds -> "2025-01-02T03:04:05Z"; 0 (unset) -> None."""
    if unix_seconds <= 0:
        return None
    return datetime.fromtimestamp(unix_seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def unix_seconds(moment: datetime | None) -> int:
    """A timestamp as whole unix seconds; None (unset) -> 0."""
    return 0 if moment is None else int(moment.timestamp())


def idr(micros: int) -> str:
    return micros_to_idr(micros)


# Developer controls on keys: spend caps, a model allowlist, an expiry, rate limits.

CAPS = ("daily", "monthly", "lifetime")
MAX_ALLOWED_MODELS = 100
MAX_RATE_LIMIT = 1_000_000
# The settings a key may carry (ApiKeySettings), by their column names.
CAP_COLUMNS = {"daily": "daily_cap_micros", "monthly": "monthly_cap_micros"}
CAP_COLUMNS["lifetime"] = "lifetime_cap_micros"
KEY_SETTING_COLUMNS = (
    *CAP_COLUMNS.values(),
    "allowed_models",
    "expires_at",
    "requests_per_minute",
    "concurrent_requests",
)


class BudgetExceeded(BillingError):
    """A hold would take a key past one of its spend caps; nothing was held."""

    def __init__(
        self,
        cap: str,
        cap_micros: int,
        counted_micros: int,
        amount_micros: int,
        resets_at: datetime | None,
    ) -> None:
        period = {"daily": " today", "monthly": " this month", "lifetime": ""}[cap]
        when = (
            f"; it resets at {resets_at.isoformat(timespec='minutes')}"
            if resets_at is not None
            else "; it never resets (raise it or use another key)"
        )
        super().__init__(
            f"this API key's {cap} spend cap of {idr(cap_micros)} IDR would be exceeded:"
            f" {idr(counted_micros)} IDR is already spent or held{period}, and this call"
            f" needs up to {idr(amount_micros)} IDR{when}"
        )
        self.cap = cap
        self.resets_at = resets_at


class ModelNotAllowed(BillingError):
    def __init__(self, model: str) -> None:
        super().__init__(f"this API key may not use the model {_shown(model)} (its allowlist)")
        self.model = model


class KeyExpired(BillingError):
    """A key past its expires_at: refused like a revoked one, but saying why."""

    def __init__(self, expired_at: datetime) -> None:
        super().__init__(f"this API key expired at {expired_at.isoformat(timespec='seconds')}")
        self.expired_at = expired_at


@dataclass(frozen=True, slots=True)
class SpendPeriods:
    """The day and month a hold placed now counts in, and when they end."""

    day: date
    month: date  # its first day
    day_resets_at: datetime
    month_resets_at: datetime


def check_cap_time_zone(value: str) -> zoneinfo.ZoneInfo:
    """The deployment's cap time zone (AIPORT_SPEND_CAP_TIME_ZONE; "" = Asia/Jakarta)."""
    return zoneinfo.ZoneInfo(check_time_zone(value))


def spend_periods(now: datetime, zone: zoneinfo.ZoneInfo) -> SpendPeriods:
    """Caps' days and months run from midnight to midnight in `zone`."""
    local = now.astimezone(zone)
    day = local.date()
    month = day.replace(day=1)
    next_month = (month + timedelta(days=32)).replace(day=1)
    return SpendPeriods(
        day=day,
        month=month,
        day_resets_at=datetime.combine(day + timedelta(days=1), time(), tzinfo=zone),
        month_resets_at=datetime.combine(next_month, time(), tzinfo=zone),
    )


@dataclass(frozen=True, slots=True)
class KeySpend:
    """What a key's caps count (open holds + captures), as its row keeps it: the
    day's and month's counters hold for the period they name and are 0 after it."""

    lifetime_micros: int = 0
    day: date | None = None
    day_micros: int = 0
    month: date | None = None
    month_micros: int = 0

    def today(self, periods: SpendPeriods) -> int:
        # A counter for a later period than ours (another replica's clock ran
        # ahead at midnight) still counts: money is never left uncounted.
        return self.day_micros if self.day is not None and self.day >= periods.day else 0

    def this_month(self, periods: SpendPeriods) -> int:
        return self.month_micros if self.month is not None and self.month >= periods.month else 0


@dataclass(frozen=True, slots=True)
class SpendCaps:
    daily_micros: int | None = None
    monthly_micros: int | None = None
    lifetime_micros: int | None = None

    @property
    def any(self) -> bool:
        caps = (self.daily_micros, self.monthly_micros, self.lifetime_micros)
        return any(cap is not None for cap in caps)


def cap_refusal(
    caps: SpendCaps, spend: KeySpend, periods: SpendPeriods, amount_micros: int
) -> BudgetExceeded | None:
    """The cap a hold of `amount_micros` would pass, or None when it fits all.
    With several, the one that lasts longest is named (telling a caller that
    the daily cap resets at midnight would mislead while the monthly one holds)."""
    checks = (
        ("lifetime", caps.lifetime_micros, spend.lifetime_micros, None),
        ("monthly", caps.monthly_micros, spend.this_month(periods), periods.month_resets_at),
        ("daily", caps.daily_micros, spend.today(periods), periods.day_resets_at),
    )
    for cap, limit, counted, resets_at in checks:
        if limit is not None and counted + amount_micros > limit:
            return BudgetExceeded(cap, limit, counted, amount_micros, resets_at)
    return None


def _optional_positive(field: str, value: int, high: int) -> int | None:
    """0 removes the control (None); otherwise 1..high."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{field} must be an integer")
    if value == 0:
        return None
    if value < 0 or value > high:
        raise InvalidArgument(f"{field} must be 0 (none) or between 1 and {high}, got {value}")
    return value


def check_allowed_models(models: Sequence[str]) -> list[str] | None:
    """Model ids, each once in the order given; none is "every model" (None)."""
    seen: list[str] = []
    for model in models:
        check_ledger_name("allowed_models", model, required=True)
        if model not in seen:
            seen.append(model)
    if len(seen) > MAX_ALLOWED_MODELS:
        raise InvalidArgument(f"allowed_models may list at most {MAX_ALLOWED_MODELS} models")
    return seen or None


def check_key_settings(
    now: datetime,
    *,
    daily_cap_micros: int | None = None,
    monthly_cap_micros: int | None = None,
    lifetime_cap_micros: int | None = None,
    allowed_models: Sequence[str] | None = None,
    expires_at_unix: int | None = None,
    requests_per_minute: int | None = None,
    concurrent_requests: int | None = None,
) -> dict[str, object]:
    """The settings given (None = not given), as the columns to write: a cap,
    limit or expiry of 0 and an empty allowlist are stored as NULL (none)."""
    columns: dict[str, object] = {}
    caps = (daily_cap_micros, monthly_cap_micros, lifetime_cap_micros)
    for column, value in zip(CAP_COLUMNS.values(), caps, strict=True):
        if value is not None:
            columns[column] = _optional_positive(column, value, MAX_AMOUNT_MICROS)
    if allowed_models is not None:
        columns["allowed_models"] = check_allowed_models(allowed_models)
    if expires_at_unix is not None:
        expires = _optional_positive("expires_at_unix", expires_at_unix, MAX_USAGE_UNIX)
        if expires is not None and expires <= now.timestamp():
            raise InvalidArgument("expires_at_unix must be in the future (or 0: never)")
        columns["expires_at"] = None if expires is None else datetime.fromtimestamp(expires, UTC)
    for column, value in (
        ("requests_per_minute", requests_per_minute),
        ("concurrent_requests", concurrent_requests),
    ):
        if value is not None:
            columns[column] = _optional_positive(column, value, MAX_RATE_LIMIT)
    return columns
