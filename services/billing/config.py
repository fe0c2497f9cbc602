"""Billing settings from the environment (documented in the README), validated."""

from __future__ import annotations

from services.common.settings import env, env_int

from . import rules


def _bounded(name: str, default: int, low: int, high: int) -> int:
    value = env_int(name, default)
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {value}")
    return value


def hold_ttl_seconds() -> int:
    """AIPORT_HOLD_TTL_SECONDS: lifetime of a hold placed with ttl_seconds 0."""
    return _bounded("AIPORT_HOLD_TTL_SECONDS", 3600, 1, rules.MAX_HOLD_TTL_SECONDS)


def hold_sweep_seconds() -> int:
    """AIPORT_HOLD_SWEEP_SECONDS: how often open holds past their expiry are released."""
    return _bounded("AIPORT_HOLD_SWEEP_SECONDS", 30, 1, 24 * 3600)


def hold_sweep_batch() -> int:
    """AIPORT_HOLD_SWEEP_BATCH: expired holds settled per transaction."""
    return _bounded("AIPORT_HOLD_SWEEP_BATCH", 500, 1, 10_000)


def spend_cap_time_zone() -> str:
    """AIPORT_SPEND_CAP_TIME_ZONE: where keys' daily and monthly spend caps reset
    at midnight (an IANA name; Asia/Jakarta by default)."""
    value = env("AIPORT_SPEND_CAP_TIME_ZONE", rules.DEFAULT_TIME_ZONE)
    try:
        rules.check_cap_time_zone(value)
    except rules.InvalidArgument as exc:
        raise ValueError(f"AIPORT_SPEND_CAP_TIME_ZONE: {exc}") from None
    return value


def idempotency_retention_seconds() -> int:
    """AIPORT_IDEMPOTENCY_RETENTION_SECONDS: how long a client's Idempotency-Key and
    its stored answer are kept (24 hours by default)."""
    return _bounded("AIPORT_IDEMPOTENCY_RETENTION_SECONDS", 24 * 3600, 60, 30 * 24 * 3600)
