"""Upstream failures, and what of them may be shown to a client."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Literal

import orjson

MAX_MESSAGE_CHARS = 300
# Anything that looks like a credential is masked before a message leaves us.
_SECRETISH = re.compile(r"\b(sk-|sk_|aip_|key-|key_|AIza)[-_A-Za-z0-9]{12,}")

FailureKind = Literal["rejected", "failed", "timeout", "rate_limited"]
# The longest retry-after we pass on; an upstream's larger value is capped.
MAX_RETRY_AFTER_SECONDS = 3600


class UpstreamProtocolError(ValueError):
    """The upstream answered with something that is not its protocol."""


class UpstreamError(Exception):
    """rejected: the upstream refused the request as malformed (client-visible 400).
    failed / timeout: the upstream could not serve it (502, refunded).
    rate_limited: the upstream answered 429 (a retryable 429 if every route did),
    with the seconds it asked us to wait when it said so."""

    def __init__(
        self, kind: FailureKind, message: str, retry_after_seconds: int | None = None
    ) -> None:
        super().__init__(message)
        self.kind: FailureKind = kind
        self.message = message
        self.retry_after_seconds = retry_after_seconds


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> int | None:
    """The wait an upstream's 429 asks for, in whole seconds (rounded up): its
    `retry-after` (seconds or an HTTP date), else OpenAI's `retry-after-ms`;
    None when it gave none we can read. Capped at MAX_RETRY_AFTER_SECONDS."""
    seconds: float | None = None
    raw = (headers.get("retry-after") or "").strip()
    if raw:
        try:
            seconds = float(raw)
        except ValueError:
            try:
                when = parsedate_to_datetime(raw)
            except (TypeError, ValueError):
                when = None
            if when is not None and when.tzinfo is not None:
                seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds is None:
        raw_ms = (headers.get("retry-after-ms") or "").strip()
        try:
            seconds = float(raw_ms) / 1000 if raw_ms else None
        except ValueError:
            seconds = None
    if seconds is None or seconds != seconds:  # absent, or NaN
        return None
    return min(max(math.ceil(seconds), 0), MAX_RETRY_AFTER_SECONDS)


def safe_upstream_message(raw: bytes, api_key: str) -> str:
    """The upstream's error message, short and scrubbed of credentials."""
    message = ""
    try:
        body = orjson.loads(raw)
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            message = str(error.get("message") or "")
        elif isinstance(error, str):
            message = error
    except orjson.JSONDecodeError:
        message = ""
    if not message:
        message = "no error message"
    if api_key:
        message = message.replace(api_key, "[redacted]")
    message = _SECRETISH.sub("[redacted]", message)
    return message[:MAX_MESSAGE_CHARS]
