"""What billing's callers need to tell its refusals apart (billing.proto), and the
one way they capture.

A capture larger than its hold is OUT_OF_RANGE, with the hold's amount in the
trailing metadata. Both callers that capture (the gateway's chat relay and the
jobs service) then do the same visible thing, written once here: capture the
hold's amount (what the customer authorized) and log an error; billing counts
and logs the refusal too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import cast

import grpc
from aiport.v1 import billing_pb2, billing_pb2_grpc

from services.common.logs import fields

log = logging.getLogger(__name__)

HELD_MICROS_TRAILER = "aiport-held-micros"


def capture_exceeded_hold(exc: grpc.RpcError) -> int | None:
    """The hold's amount when billing refused a capture as larger than its hold."""
    if not isinstance(exc, grpc.aio.AioRpcError) or exc.code() != grpc.StatusCode.OUT_OF_RANGE:
        return None
    # At run time a sequence of (key, value) pairs; grpc-stubs says otherwise.
    pairs = cast(Iterable[tuple[str, str | bytes]], exc.trailing_metadata() or ())
    for key, value in pairs:
        if key == HELD_MICROS_TRAILER:
            text = value if isinstance(value, str) else value.decode("latin-1")
            return int(text) if text.isascii() and text.isdigit() else None
    return None


async def capture_within_hold(
    billing: billing_pb2_grpc.BillingStub,
    request: billing_pb2.CaptureHoldRequest,
    timeout_seconds: float,
    log_fields: Mapping[str, object],
) -> billing_pb2.Hold:
    """Capture; a cost above the hold (our pricing bug) is captured at the hold,
    loudly. The settled hold says what was really charged."""
    try:
        hold: billing_pb2.Hold = await billing.CaptureHold(request, timeout=timeout_seconds)
        return hold
    except grpc.aio.AioRpcError as exc:
        held = capture_exceeded_hold(exc)
        if held is None:
            raise
        log.error(
            "capture exceeds its hold; capturing the hold instead",
            extra=fields(
                **log_fields,
                hold_id=request.hold_id,
                cost_micros=request.amount_micros,
                held_micros=held,
            ),
        )
    capped = billing_pb2.CaptureHoldRequest()
    capped.CopyFrom(request)
    capped.amount_micros = held
    capped.description = f"{request.description} (cost above the hold; capped)"
    capped_hold: billing_pb2.Hold = await billing.CaptureHold(capped, timeout=timeout_seconds)
    return capped_hold


# Why AuthorizeHold (or Authenticate) refused a key that is otherwise good: the
# trailing metadata billing sends with the status, so that the gateway can tell
# a spent cap from an empty balance and an expired key from an unknown one.
REFUSAL_TRAILER = "aiport-refusal"
BUDGET_EXCEEDED = "budget_exceeded"  # RESOURCE_EXHAUSTED
MODEL_NOT_ALLOWED = "model_not_allowed"  # PERMISSION_DENIED
KEY_EXPIRED = "key_expired"  # UNAUTHENTICATED
# daily | monthly | lifetime, and when it starts afresh (unix seconds; 0 = never).
BUDGET_CAP_TRAILER = "aiport-budget-cap"
BUDGET_RESETS_AT_TRAILER = "aiport-budget-resets-at"
KEY_EXPIRED_AT_TRAILER = "aiport-key-expired-at"


def refusal_of(exc: grpc.RpcError) -> dict[str, str]:
    """Billing's refusal trailers of a failed call ({} when it sent none)."""
    if not isinstance(exc, grpc.aio.AioRpcError):
        return {}
    pairs = cast(Iterable[tuple[str, str | bytes]], exc.trailing_metadata() or ())
    found = {
        key: value if isinstance(value, str) else value.decode("latin-1")
        for key, value in pairs
        if key.startswith("aiport-")
    }
    return found if REFUSAL_TRAILER in found else {}
