"""Billing's refusals by a key's controls become the client's errors: a spent
cap is 429 for text and 402 for jobs, an unlisted model 403, an expired key 401;
other refusals are left to the caller's usual mapping."""

from __future__ import annotations

import grpc

from services.common import billing_errors as be
from services.gateway import key_refusals
from services.gateway.holds import HoldKind, HoldPurpose

CHAT = HoldPurpose(HoldKind.CHAT, "gpt-5.4-mini", endpoint="chat.completions")
JOB = HoldPurpose(HoldKind.JOB, "gpt-image-2", "image", endpoint="image.generate", job_id="job_1")
DETAIL = (
    "this API key's daily spend cap of 10 IDR would be exceeded: 9.9 IDR is already spent or"
    " held today, and this call needs up to 0.3 IDR; it resets at 2026-12-06T00:00+07:00"
)


def rpc_error(
    code: grpc.StatusCode, trailers: tuple[tuple[str, str], ...], details: str = ""
) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailers), details, None
    )


BUDGET = ((be.REFUSAL_TRAILER, be.BUDGET_EXCEEDED), (be.BUDGET_CAP_TRAILER, "daily"))


def test_a_spent_cap_is_429_for_text_and_402_for_jobs() -> None:
    exc = rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, BUDGET, DETAIL)
    text = key_refusals.public_error(exc, CHAT)
    job = key_refusals.public_error(exc, JOB)
    assert text is not None and job is not None
    assert (text.status, text.code, job.status, job.code) == (
        429,
        "budget_exceeded",
        402,
        "budget_exceeded",
    )
    assert text.message.startswith("This API key's daily spend cap of 10 IDR")
    assert "resets at 2026-12-06T00:00+07:00" in text.message


def test_an_unlisted_model_is_403_naming_it() -> None:
    exc = rpc_error(
        grpc.StatusCode.PERMISSION_DENIED, ((be.REFUSAL_TRAILER, be.MODEL_NOT_ALLOWED),)
    )
    error = key_refusals.public_error(exc, CHAT)
    assert error is not None
    assert (error.status, error.code, error.param) == (403, "model_not_allowed", "model")
    assert "'gpt-5.4-mini'" in error.message


def test_an_expired_key_is_401_saying_when() -> None:
    exc = rpc_error(
        grpc.StatusCode.UNAUTHENTICATED,
        ((be.REFUSAL_TRAILER, be.KEY_EXPIRED), (be.KEY_EXPIRED_AT_TRAILER, "1796000000")),
    )
    error = key_refusals.public_error(exc, CHAT)
    assert error is not None
    assert (error.status, error.code) == (401, "key_expired")
    assert "expired at 2026-11-30T" in error.message


def test_other_refusals_are_not_the_keys() -> None:
    assert (
        key_refusals.public_error(rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, ()), CHAT) is None
    )
    assert key_refusals.public_error(rpc_error(grpc.StatusCode.UNAUTHENTICATED, ()), CHAT) is None
    # A trailer with the wrong status is not trusted either.
    assert (
        key_refusals.public_error(rpc_error(grpc.StatusCode.UNAUTHENTICATED, BUDGET), CHAT) is None
    )
