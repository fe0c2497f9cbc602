"""Idempotency-Key on the POSTs that hold no money: creating or changing a key,
a top-up order, an upload, the balance alert, a quote.

The same rules as the paid calls (idempotency.py): the key is claimed for the
caller's account before the call's effect, a repeat with the same body gets the
stored answer with Idempotent-Replayed, a different body is 422, a repeat while the
first runs is 409. Here the claim is its own billing call (no hold to share a
transaction with), and a call that fails frees the key again: nothing it did is
stored, so a retry may run. The caller validates the body before calling `once`, so
a request refused as malformed never claims the key.

A stored answer is the response message itself. `kept` may leave out what must not
be stored: a new API key's value is shown once, so its repeat shows the key's id
and settings without it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiport.v1 import billing_pb2
from google.protobuf.message import Message

from services.common.grpc_server import ServicerContext, request_metadata
from services.gateway import idempotency
from services.gateway.boundary import add_response_header
from services.gateway.errors import PublicError
from services.gateway.holds import new_call_id
from services.gateway.server import Backends, Caller

M = TypeVar("M", bound=Message)


async def once(
    backends: Backends,
    context: ServicerContext,
    caller: Caller,
    endpoint: str,
    body: bytes,
    answer_type: type[M],
    call: Callable[[], Awaitable[M]],
    kept: Callable[[M], M] | None = None,
) -> M:
    """Run `call` once per Idempotency-Key of the caller's account (or plainly, when
    the request has none); a repeat gets the first answer."""
    claim = idempotency.claim_of(request_metadata(context, idempotency.HEADER), endpoint, body)
    if claim is None:
        return await call()
    owner = f"call:{new_call_id()}"  # ours: names the claim in billing
    earlier: billing_pb2.IdempotentAnswer = await backends.billing_call(
        backends.billing.ClaimIdempotencyKey,
        billing_pb2.ClaimIdempotencyKeyRequest(
            account_id=caller.account_id, client=claim.to_proto(), owner=owner
        ),
    )
    if earlier.state != billing_pb2.IdempotentAnswer.STATE_UNSPECIFIED:
        outcome = idempotency.answer_to(earlier)
        if isinstance(outcome, PublicError):
            raise outcome
        add_response_header(idempotency.REPLAYED_HEADER, "true")
        return answer_type.FromString(outcome.answer.body)
    try:
        answer = await call()
    except BaseException:
        # Nothing is stored for a call that failed: the key may run again.
        backends.settle_later(backends.drop_claim(owner))
        raise
    stored = answer if kept is None else kept(answer)
    await backends.keep_answer(
        owner, idempotency.StoredAnswer(200, idempotency.PROTOBUF, stored.SerializeToString())
    )
    return answer


__all__ = ["once"]
