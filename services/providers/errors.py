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

PROVIDER_FAILED = "Provider failed. Please try again."
# Every route answered 429: the job failed (and is not charged), and waiting helps.
RATE_LIMITED = "The upstream AI provider is rate limiting requests. Please try again later."
CONTENT_POLICY = "The provider refused the prompt or image under its content policy."
# How long the upstream's own reason may be when shown in a job's error_message.
MAX_REASON_CHARS = 200

# Each upstream's documented codes for a refusal of the client's content (prompt,
# reference or output moderation). Ark (Seedance) names them <Where><What>Sensitive-
# ContentDetected (InputTextSensitiveContentDetected, OutputVideoSensitiveContent-
# Detected, ...), matched by that suffix.
CONTENT_POLICY_CODES = frozenset(
    {
        # Alibaba Model Studio (DashScope)
        "DataInspectionFailed",
        "DataInspection",
        "InvalidParameter.DataInspection",
        "IPInfringementSuspect",
        # OpenAI
        "moderation_blocked",
        "content_policy_violation",
        # Ark
        "SensitiveContentDetected",
        # Gemini (promptFeedback.blockReason, candidate finishReason)
        "SAFETY",
        "PROHIBITED_CONTENT",
        "BLOCKLIST",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
    }
)
_CONTENT_POLICY_SUFFIX = "SensitiveContentDetected"
# Codes of a task that failed because of what it was asked (DashScope, Ark).
_INPUT_CODE_PREFIXES = ("InvalidParameter", "InvalidArgument")


class UpstreamProtocolError(ValueError):
    """The upstream answered with something that is not its protocol."""


class UpstreamError(Exception):
    """rejected: the upstream refused the request as malformed (client-visible 400).
    failed / timeout: the upstream could not serve it (502, refunded).

    A rejection may carry the upstream's error `code` (a content-policy code makes it
    a refusal of the client's content) and `reason`, its own scrubbed words.
    rate_limited: the upstream answered 429 (a retryable 429 if every route did),
    with the seconds it asked us to wait when it said so."""

    def __init__(
        self,
        kind: FailureKind,
        message: str,
        retry_after_seconds: int | None = None,
        reason: str = "",
        code: str = "",
    ) -> None:
        super().__init__(message)
        self.kind: FailureKind = kind
        self.message = message
        self.retry_after_seconds = retry_after_seconds
        self.reason = reason
        self.code = code

    @property
    def content_policy(self) -> bool:
        return self.kind == "rejected" and is_content_policy_code(self.code)


def is_content_policy_code(code: str) -> bool:
    return code in CONTENT_POLICY_CODES or code.endswith(_CONTENT_POLICY_SUFFIX)


def error_code(raw: bytes) -> str:
    """The machine-readable code of an upstream error body ({"error": {"code"}} as
    OpenAI and Ark send it, or a top-level "code" as DashScope does); "" if none."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return ""
    if not isinstance(body, dict):
        return ""
    error = body.get("error")
    holder = error if isinstance(error, dict) else body
    code = holder.get("code")
    return code[:80] if isinstance(code, str) else ""


def client_input_error(code: str, message: str) -> UpstreamError:
    """An upstream 400/422 about the client's input, with its code and (scrubbed) reason."""
    return UpstreamError(
        "rejected", f"The upstream rejected the request: {message}", reason=message, code=code
    )


def task_error(code: str, reason: str, message: str) -> UpstreamError:
    """An upstream task that ended failed: the client's content or input when the
    upstream's code says so (content policy, InvalidParameter...), else a failure."""
    if is_content_policy_code(code) or code.startswith(_INPUT_CODE_PREFIXES):
        return UpstreamError("rejected", message, reason=reason, code=code)
    return UpstreamError("failed", message, code=code)


_URL = re.compile(r"\b(?:https?|wss?|s3|gs|oss)://\S+", re.IGNORECASE)
_REQUEST_ID = re.compile(r"\b(?:request[ _-]?id|x-request-id)\s*[:=]?\s*\S+", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def public_reason(text: str) -> str:
    """An upstream's reason fit for a client: one line, no URLs (they may name internal
    hosts or signed links), no request ids, no credentials, bounded in length."""
    text = _CONTROL.sub(" ", text)
    text = _URL.sub("[url]", text)
    text = _REQUEST_ID.sub("", text)
    text = _SECRETISH.sub("[redacted]", text)
    text = " ".join(text.split()).strip(" .;:")
    if len(text) > MAX_REASON_CHARS:
        text = text[: MAX_REASON_CHARS - 1].rstrip() + "…"
    return text


JobErrorCode = Literal[
    "provider_error",
    "invalid_input",
    "content_policy",
    "rate_limited",
    "timeout",
    "result_too_large",
]


def job_error(error: UpstreamError) -> tuple[JobErrorCode, str]:
    """What a failed job tells its client about an upstream failure: (code, message).
    Only a genuine provider failure says "Provider failed"; retrying cannot fix the
    client's input or content, so those say what was wrong."""
    if error.content_policy:
        return "content_policy", CONTENT_POLICY
    if error.kind == "rate_limited":
        return "rate_limited", RATE_LIMITED
    if error.kind == "rejected":
        reason = public_reason(error.reason)
        if reason:
            return "invalid_input", f"The provider rejected the input: {reason}."
        return "invalid_input", "The provider rejected the input."
    return "provider_error", PROVIDER_FAILED


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
