"""Refusals by a key's own controls, as the client sees them.

Billing refuses an AuthorizeHold for a spent cap (RESOURCE_EXHAUSTED, like an
empty balance), a model off the key's allowlist (PERMISSION_DENIED) or an
expired key (UNAUTHENTICATED, like an unknown one), and names which in its
trailing metadata (services/common/billing_errors.py). Here that becomes the
public error: 429 `budget_exceeded` for text, 402 for jobs; 403
`model_not_allowed`; 401 `key_expired` (no strike against the key: it is not
a guess)."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc

from services.common import billing_errors
from services.gateway import errors
from services.gateway.errors import PublicError
from services.gateway.holds import HoldKind, HoldPurpose


def public_error(exc: grpc.aio.AioRpcError, purpose: HoldPurpose) -> PublicError | None:
    """The client's error for a refusal by the key's controls; None for any other."""
    refusal = billing_errors.refusal_of(exc)
    reason = refusal.get(billing_errors.REFUSAL_TRAILER)
    code = exc.code()
    if reason == billing_errors.BUDGET_EXCEEDED and code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return errors.budget_exceeded(exc.details() or "", job=purpose.kind is HoldKind.JOB)
    if reason == billing_errors.MODEL_NOT_ALLOWED and code == grpc.StatusCode.PERMISSION_DENIED:
        return errors.model_not_allowed(purpose.model)
    if reason == billing_errors.KEY_EXPIRED and code == grpc.StatusCode.UNAUTHENTICATED:
        expired_at = refusal.get(billing_errors.KEY_EXPIRED_AT_TRAILER, "")
        return errors.key_expired(_rfc3339(expired_at))
    return None


def _rfc3339(unix_seconds: str) -> str | None:
    if not unix_seconds.isdigit():
        return None
    return datetime.fromtimestamp(int(unix_seconds), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
