"""Accounts settings from the environment (documented in the README), validated."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from services.common.settings import env, env_float, env_int

from . import ratelimit, rules

DAY = 24 * 3600


def _bounded(name: str, default: int, low: int, high: int) -> int:
    value = env_int(name, default)
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {value}")
    return value


def redis_prefix() -> str:
    """AIPORT_REDIS_PREFIX: the start of every key (one Redis can serve several stacks)."""
    return env("AIPORT_REDIS_PREFIX", "aiport")


def public_url() -> str:
    """AIPORT_PUBLIC_URL: where people reach the console; mailed links start with it."""
    url = env("AIPORT_PUBLIC_URL", "http://127.0.0.1:8080").rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"AIPORT_PUBLIC_URL must be an http(s) URL, got {url!r}")
    return url


def low_balance_poll_seconds() -> float:
    """AIPORT_LOW_BALANCE_POLL_SECONDS (default 60): how often accounts asks billing
    for accounts whose balance fell below their alert, and mails their members."""
    value = env_float("AIPORT_LOW_BALANCE_POLL_SECONDS", 60.0)
    if not 0.05 <= value <= DAY:
        raise ValueError(f"AIPORT_LOW_BALANCE_POLL_SECONDS must be between 0.05 and {DAY}")
    return value


def session_policy() -> rules.SessionPolicy:
    """AIPORT_SESSION_IDLE_SECONDS (default 1 day) and AIPORT_SESSION_MAX_SECONDS
    (default 14 days): a session ends after that long unused, or that long at all."""
    idle = _bounded("AIPORT_SESSION_IDLE_SECONDS", DAY, 60, 90 * DAY)
    absolute = _bounded("AIPORT_SESSION_MAX_SECONDS", 14 * DAY, 60, 365 * DAY)
    if idle > absolute:
        raise ValueError("AIPORT_SESSION_IDLE_SECONDS must not exceed AIPORT_SESSION_MAX_SECONDS")
    return rules.SessionPolicy(timedelta(seconds=idle), timedelta(seconds=absolute))


def link_policy() -> rules.LinkPolicy:
    """AIPORT_VERIFY_LINK_SECONDS (default 2 days), AIPORT_RESET_LINK_SECONDS (1 hour)."""
    return rules.LinkPolicy(
        verify_email=timedelta(
            seconds=_bounded("AIPORT_VERIFY_LINK_SECONDS", 2 * DAY, 1, 30 * DAY)
        ),
        reset_password=timedelta(seconds=_bounded("AIPORT_RESET_LINK_SECONDS", 3600, 1, DAY)),
    )


def rate_limits() -> dict[tuple[ratelimit.Action, ratelimit.Scope], ratelimit.Limit]:
    """AIPORT_ACCOUNTS_RATE_LIMITS: overrides, e.g. "login_email=10/900"."""
    return ratelimit.parse_limits(env("AIPORT_ACCOUNTS_RATE_LIMITS", ""))


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    host: str
    port: int
    sender: str
    username: str | None
    password: str | None
    starttls: bool
    timeout_seconds: float = 15.0


def smtp() -> SmtpSettings:
    """AIPORT_SMTP_HOST/_PORT/_FROM, optional AIPORT_SMTP_USER/_PASSWORD (or
    AIPORT_SMTP_PASSWORD_FILE), AIPORT_SMTP_STARTTLS (1/0)."""
    sender = env("AIPORT_SMTP_FROM", "aiport <no-reply@aiport.localhost>")
    password = env("AIPORT_SMTP_PASSWORD", "")
    password_file = env("AIPORT_SMTP_PASSWORD_FILE", "")
    if not password and password_file:
        with open(password_file) as fh:
            password = fh.read().strip()
    starttls = env("AIPORT_SMTP_STARTTLS", "0").lower()
    if starttls not in ("0", "1", "true", "false", "yes", "no"):
        raise ValueError(f"AIPORT_SMTP_STARTTLS must be 1 or 0, got {starttls!r}")
    return SmtpSettings(
        host=env("AIPORT_SMTP_HOST", "127.0.0.1"),
        port=_bounded("AIPORT_SMTP_PORT", 2525, 1, 65535),
        sender=sender,
        username=env("AIPORT_SMTP_USER", "") or None,
        password=password or None,
        starttls=starttls in ("1", "true", "yes"),
    )
