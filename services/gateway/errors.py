"""Public errors: the OpenAI-style JSON body plus the HTTP status, carried to the edge.

This module is the catalog: every error a client can see from the gateway is made
by one of the named functions below (status, type, code, param and wording in one
place), and services/gateway/boundary.py is the one place they are turned into a
gRPC answer.

A gRPC status cannot say 402 or carry our JSON body, so the gateway aborts with
trailing metadata (`x-aiport-http-status`, `x-aiport-error`); before the first
response message gRPC sends trailers-only, which reach Envoy as headers, and the
edge's Lua filter turns them into the HTTP status and body. Values must be ASCII.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import orjson

from services.common.money import micros_to_idr
from services.common.sse import frame, named_frame
from services.common.wire import RETRY_AFTER_KEY

STATUS_HEADER = "x-aiport-http-status"
ERROR_HEADER = "x-aiport-error"
RETRY_HEADER = "x-aiport-should-retry"
RETRY_AFTER_HEADER = RETRY_AFTER_KEY  # the edge sends it to the client as `retry-after`

# The gRPC code that best describes each HTTP status, for native gRPC callers.
_GRPC_CODE = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    402: grpc.StatusCode.FAILED_PRECONDITION,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.ABORTED,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.FAILED_PRECONDITION,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


@dataclass(frozen=True, slots=True)
class PublicError(Exception):
    """An error a client may see: status, OpenAI-style type/code/param and a message."""

    status: int
    type: str
    code: str | None
    message: str
    param: str | None = None
    should_retry: bool | None = None
    retry_after_seconds: int | None = None  # the HTTP retry-after header
    # The client protocol whose error shape the body takes: "openai" (every
    # endpoint's) or "anthropic" (/v1/messages; messages_render.anthropic_error).
    protocol: str = "openai"

    def _payload(self) -> dict[str, Any]:
        if self.protocol == "anthropic":
            return {"type": "error", "error": {"type": self.type, "message": self.message}}
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def body(self) -> bytes:
        return orjson.dumps(self._payload())

    def sse_event(self) -> bytes:
        """The same error as an in-band SSE event, for streams already under way."""
        if self.protocol == "anthropic":
            return named_frame("error", self.body())
        return frame(self.body())

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        metadata: list[tuple[str, str]] = [
            (STATUS_HEADER, str(self.status)),
            # Metadata must be ASCII: JSON escapes keep any message intact.
            (ERROR_HEADER, json.dumps(self._payload(), ensure_ascii=True, separators=(",", ":"))),
        ]
        if self.should_retry is not None:
            metadata.append((RETRY_HEADER, "true" if self.should_retry else "false"))
        if self.retry_after_seconds is not None:
            metadata.append((RETRY_AFTER_HEADER, str(max(1, self.retry_after_seconds))))
        return tuple(metadata)

    @property
    def grpc_code(self) -> grpc.StatusCode:
        return _GRPC_CODE.get(self.status, grpc.StatusCode.UNKNOWN)


def invalid_request(message: str, param: str | None = None) -> PublicError:
    return PublicError(400, "invalid_request_error", "invalid_request_error", message, param)


def json_object_body(
    raw: bytes, invalid: Callable[[str], PublicError] = invalid_request
) -> dict[str, Any]:
    """A request body that must be one JSON object; `invalid` makes the 400 (each
    endpoint family has the code the spec lists for it)."""
    if not raw.strip():
        raise invalid("The request body is empty; send a JSON object.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise invalid(f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.")
    return body


def unauthorized(message: str = "Missing or invalid API key.") -> PublicError:
    return PublicError(401, "authentication_error", "unauthorized", message)


def model_not_found_for_chat(model: str) -> PublicError:
    return PublicError(
        404,
        "invalid_request_error",
        "MODEL_NOT_FOUND",
        f"The model '{model}' does not exist or is not available.",
        "model",
    )


def model_not_found(model: str) -> PublicError:
    return PublicError(
        404,
        "invalid_request_error",
        "model_not_found",
        f"The model '{model}' does not exist.",
        None,
    )


def insufficient_quota(message: str) -> PublicError:
    return PublicError(429, "insufficient_quota", "insufficient_quota", message, should_retry=False)


def provider_error(
    message: str = "The upstream AI provider failed. Please try again.",
) -> PublicError:
    return PublicError(502, "provider_error", "provider_error", message)


def upstream_rate_limited(retry_after_seconds: int | None = None) -> PublicError:
    """Every upstream route answered 429: a retryable 429, distinct from
    insufficient_quota (which no retry fixes); nothing was charged."""
    return PublicError(
        429,
        "rate_limit_error",
        "upstream_rate_limited",
        "The upstream AI provider is rate limiting requests; nothing was charged. "
        "Please retry after a short wait.",
        should_retry=True,
        retry_after_seconds=retry_after_seconds,
    )


def service_unavailable(message: str) -> PublicError:
    return PublicError(503, "service_unavailable", "service_unavailable", message)


def internal_error() -> PublicError:
    """Anything the gateway did not expect: the edge's own wording for a 500, no detail."""
    return PublicError(500, "server_error", "internal_error", "Internal error. Please try again.")


# -- authentication ---------------------------------------------------------------------------


def too_many_auth_failures(retry_after_seconds: int) -> PublicError:
    return PublicError(
        429,
        "rate_limit_error",
        "rate_limit_exceeded",
        f"Too many failed authentication attempts. Retry after {retry_after_seconds} seconds.",
        retry_after_seconds=retry_after_seconds,
    )


def rate_limit_exceeded(message: str, retry_after_seconds: int) -> PublicError:
    """A key's or account's own limit (rate_limits.py): retryable after the wait."""
    return PublicError(
        429,
        "rate_limit_error",
        "rate_limit_exceeded",
        message,
        should_retry=True,
        retry_after_seconds=retry_after_seconds,
    )


# -- models -----------------------------------------------------------------------------------


def media_model_not_found(model: str) -> PublicError:
    """An image or video endpoint's unknown (or other-modality) model."""
    return PublicError(
        404,
        "invalid_request_error",
        "MODEL_NOT_FOUND",
        f"The model '{model}' does not exist or is not available on this endpoint.",
        "model",
    )


def model_unavailable() -> PublicError:
    """Providers has no route for a model the catalog offers (misconfiguration)."""
    return PublicError(
        404,
        "invalid_request_error",
        "MODEL_NOT_FOUND",
        "The model is not available right now.",
        "model",
    )


# -- jobs, uploads and references -------------------------------------------------------------

# The 400 code the spec lists for the image and video endpoints (chat's is
# invalid_request_error).
MEDIA_INVALID_CODE = "invalid_request"


def invalid_parameter(message: str, param: str | None = None) -> PublicError:
    """A 400 of the image, video and upload endpoints, naming the field."""
    return PublicError(400, "invalid_request_error", MEDIA_INVALID_CODE, message, param)


def insufficient_balance(amount_micros: int) -> PublicError:
    return PublicError(
        402,
        "insufficient_balance",
        "insufficient_balance",
        "Your IDR balance cannot cover this job "
        f"(it costs up to {micros_to_idr(amount_micros)} IDR). Top up to continue.",
    )


def invalid_image(message: str, param: str) -> PublicError:
    return PublicError(400, "invalid_request_error", "invalid_image", message, param)


def file_too_large(size: int, limit: int, param: str) -> PublicError:
    return PublicError(
        413,
        "invalid_request_error",
        "file_too_large",
        f"The file is {size} bytes; the limit is {limit} bytes ({limit / 2**20:g} MiB).",
        param,
    )


def reference_not_found(param: str) -> PublicError:
    """The same answer for an unknown, expired or another account's blob."""
    return PublicError(
        400,
        "invalid_request_error",
        "reference_not_found",
        f"'{param}' names no upload or job result of this API key's account "
        "(unknown, deleted, or not yours).",
        param,
    )


def job_status_unknown(job_id: str) -> PublicError:
    """CreateJob went unanswered on every try: the job may exist. Not to be
    retried blindly (that could make a second job), hence should_retry false."""
    return PublicError(
        503,
        "service_unavailable",
        "job_status_unknown",
        f"The job service did not answer, so job {job_id} may or may not have been created. "
        f"Poll GET /v1/jobs/{job_id} instead of submitting again: within a few seconds of the "
        "service's return it either runs as usual or shows failed with nothing charged "
        "(until then the amount stays held).",
        should_retry=False,
    )


def idempotency_key_reused() -> PublicError:
    return PublicError(
        422,
        "invalid_request_error",
        "idempotency_key_reused",
        "This idempotency key was used before for a different request. "
        "Use a new key for a new request.",
    )


def client_task_id_reused(task_id: str) -> PublicError:
    return PublicError(
        422,
        "invalid_request_error",
        "client_task_id_reused",
        f"client_task_id '{task_id}' names an earlier job of yours that asked for "
        "different work. Use a new client_task_id for a new job.",
        "client_task_id",
    )


# -- Idempotency-Key (services/gateway/idempotency.py) ----------------------------------------


def invalid_idempotency_key() -> PublicError:
    return invalid_request(
        "The Idempotency-Key header must be 1 to 255 printable ASCII characters "
        "(and not an API key or other credential).",
        "Idempotency-Key",
    )


def idempotent_request_in_progress() -> PublicError:
    """A repeat of a key whose first request is still running: retry after it ends."""
    return PublicError(
        409,
        "invalid_request_error",
        "idempotent_request_in_progress",
        "A request with this Idempotency-Key is still being processed. "
        "Retry after it has finished to get its answer.",
        "Idempotency-Key",
        should_retry=True,
    )


def idempotent_answer_not_kept() -> PublicError:
    """The key's request finished, but its answer was too large to keep for replay."""
    return PublicError(
        409,
        "invalid_request_error",
        "idempotent_answer_not_kept",
        "The request with this Idempotency-Key has finished (and was charged once), but its "
        "answer was too large to keep for replay. Use a new key for a new request.",
        "Idempotency-Key",
        should_retry=False,
    )


def invalid_cursor() -> PublicError:
    """GET /v1/jobs's `after`: malformed, or naming a job that is not the caller's
    (the same answer for both, so a cursor tells nothing about other accounts)."""
    return invalid_parameter(
        "after is not a cursor of this listing: pass the next_cursor of a previous page "
        "of your jobs.",
        "after",
    )


def job_not_found() -> PublicError:
    return PublicError(
        404, "invalid_request_error", "not_found", "No such job for this API key.", "job_id"
    )


def invalid_usage_cursor() -> PublicError:
    """GET /v1/usage's `after`: malformed, or not a record of the caller's account."""
    return invalid_request(
        "after is not a cursor of this listing: pass the next_cursor of a previous page.",
        "after",
    )


def key_not_found() -> PublicError:
    """An unknown key id, or another account's (the same answer for both)."""
    return PublicError(404, "invalid_request_error", "not_found", "No such API key.", "key_id")


def insufficient_scope() -> PublicError:
    return PublicError(
        403,
        "permission_error",
        "insufficient_scope",
        'Managing keys needs an API key with the "manage" scope; this key does not have it.',
    )


def invalid_statement_cursor() -> PublicError:
    return invalid_request(
        "after is not a cursor of this statement: pass the next_cursor of a previous page.",
        "after",
    )


def operators_only() -> PublicError:
    """/v1/admin for anyone but an operator's session (a customer's session, any
    API key: operators act as people, so that every change names one)."""
    return PublicError(
        403,
        "permission_error",
        "operators_only",
        "Only an operator, logged in to the console, may use /v1/admin.",
    )


def account_not_found(param: str = "account_id") -> PublicError:
    return PublicError(404, "invalid_request_error", "not_found", "No such account.", param)


def insufficient_available(message: str) -> PublicError:
    """An operator's debit larger than what the account has available."""
    return invalid_request(message, "amount_idr")


# Refusals by a key's own controls (billing's AuthorizeHold; key_refusals.py).


def budget_exceeded(detail: str, *, job: bool) -> PublicError:
    """A spend cap of the key: 429 for text calls, 402 for jobs (as an empty
    balance is for each). `detail` is billing's account of the cap: which one,
    what it counted, and when it resets."""
    text = detail[:1].upper() + detail[1:]
    return PublicError(
        402 if job else 429,
        "budget_exceeded",
        "budget_exceeded",
        f"{text}. Raise the key's cap, or use another key, to continue.",
        should_retry=False,
    )


def model_not_allowed(model: str) -> PublicError:
    return PublicError(
        403,
        "permission_error",
        "model_not_allowed",
        f"This API key may not use the model '{model}': it is not on the key's model allowlist.",
        "model",
    )


def key_expired(expired_at: str | None) -> PublicError:
    when = f" at {expired_at}" if expired_at else ""
    return PublicError(
        401,
        "authentication_error",
        "key_expired",
        f"This API key expired{when}. Create a new key, or extend this key's expiry.",
    )
