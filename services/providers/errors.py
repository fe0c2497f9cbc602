"""Upstream failures, and what of them may be shown to a client."""

from __future__ import annotations

import re
from typing import Literal

import orjson

MAX_MESSAGE_CHARS = 300
# Anything that looks like a credential is masked before a message leaves us.
_SECRETISH = re.compile(r"\b(sk-|sk_|aip_|key-|key_|AIza)[-_A-Za-z0-9]{12,}")

FailureKind = Literal["rejected", "failed", "timeout"]


class UpstreamProtocolError(ValueError):
    """The upstream answered with something that is not its protocol."""


class UpstreamError(Exception):
    """rejected: the upstream refused the request as malformed (client-visible 400).
    failed / timeout: the upstream could not serve it (502, refunded)."""

    def __init__(self, kind: FailureKind, message: str) -> None:
        super().__init__(message)
        self.kind: FailureKind = kind
        self.message = message


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
