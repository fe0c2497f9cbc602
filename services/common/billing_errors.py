"""What billing's callers need to tell its refusals apart (billing.proto).

A capture larger than its hold is OUT_OF_RANGE, with the hold's amount in the
trailing metadata: the caller decides, visibly, what to do (the gateway and
jobs capture the hold's amount and log an error; billing counts and logs it too).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import grpc

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
