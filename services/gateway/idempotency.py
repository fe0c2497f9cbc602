"""Clients' Idempotency-Key on the paid POSTs (chat, messages, responses, job creation).

Pure rules: the header's form, what the key guards (a hash of the endpoint and the
body's bytes), what a repeat is answered, and the recording of an answer to store.
The records themselves are billing's (services/billing/idempotency.py): the key is
claimed in the same transaction as the call's hold, so parallel repeats meet on one
row and exactly one of them calls the upstream and is charged.

What is stored: the answer of a call that moved money (a whole answer, or a stream
with all its events, an in-band error included). A call that failed before any
money moved drops its claim instead, so the key may be used again; validation
failures never claim it at all (the body is checked first).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from aiport.v1 import billing_pb2

from services.gateway import errors
from services.gateway.errors import PublicError

HEADER = "idempotency-key"
# Sent (as gRPC initial metadata, an HTTP header at the edge) on a replayed answer.
REPLAYED_HEADER = "idempotent-replayed"
MAX_KEY_CHARS = 255
# Billing keeps at most this much of one answer (services/billing/idempotency.py);
# a larger one is kept as "finished, not replayable" (a repeat gets a 409).
MAX_STORED_BYTES = 8 * 2**20
# A job's answer is the JobAccepted message itself; the edge renders it as JSON.
PROTOBUF = "application/x-protobuf"


@dataclass(frozen=True, slots=True)
class ClientClaim:
    """A client's key for one call and the hash of what it guards."""

    key: str
    request_hash: bytes

    def to_proto(self) -> billing_pb2.ClientIdempotency:
        return billing_pb2.ClientIdempotency(key=self.key, request_hash=self.request_hash)


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    http_status: int
    content_type: str
    body: bytes


class Replay(Exception):
    """The key's first call finished: its stored answer is the answer."""

    def __init__(self, answer: StoredAnswer) -> None:
        super().__init__("idempotent replay")
        self.answer = answer


def parse_key(value: str | None) -> str | None:
    """The Idempotency-Key header's value (None when absent); a malformed one is a 400
    naming the header, before anything is claimed or held."""
    if value is None:
        return None
    if not 1 <= len(value) <= MAX_KEY_CHARS or not all(" " <= ch <= "~" for ch in value):
        raise errors.invalid_idempotency_key()
    return value


def request_hash(endpoint: str, body: bytes) -> bytes:
    """What the key guards: the endpoint and the body's exact bytes (an SDK retry
    sends the same bytes; a different body, even reformatted, is a different request)."""
    return hashlib.sha256(endpoint.encode("ascii") + b"\0" + body).digest()


def claim_of(header: str | None, endpoint: str, body: bytes) -> ClientClaim | None:
    """The call's claim, from its Idempotency-Key header (None: the call has none)."""
    key = parse_key(header)
    return None if key is None else ClientClaim(key, request_hash(endpoint, body))


def answer_to(earlier: billing_pb2.IdempotentAnswer) -> Replay | PublicError:
    """What a repeat gets: the stored answer to replay, or why not (409, 422)."""
    state = earlier.state
    if state == billing_pb2.IdempotentAnswer.MISMATCH:
        return errors.idempotency_key_reused()
    if state == billing_pb2.IdempotentAnswer.IN_FLIGHT:
        return errors.idempotent_request_in_progress()
    if state == billing_pb2.IdempotentAnswer.COMPLETED and earlier.content_type:
        return Replay(StoredAnswer(earlier.http_status, earlier.content_type, earlier.body))
    if state == billing_pb2.IdempotentAnswer.COMPLETED:
        return errors.idempotent_answer_not_kept()
    raise ValueError(f"not an earlier call's state: {state}")


@dataclass(slots=True)
class AnswerRecord:
    """The bytes an answer sends, as they go out, for storing once it is complete."""

    content_type: str = ""
    parts: list[bytes] = field(default_factory=list)
    size: int = 0

    def add(self, content_type: str, data: bytes) -> None:
        self.content_type = self.content_type or content_type
        if self.size <= MAX_STORED_BYTES:  # past it, only the size is counted
            self.parts.append(data)
        self.size += len(data)

    @property
    def started(self) -> bool:
        return self.size > 0

    def answer(self, http_status: int) -> StoredAnswer:
        """The answer to store; too large to keep: no content (a repeat gets a 409)."""
        if self.size > MAX_STORED_BYTES:
            return StoredAnswer(http_status, "", b"")
        return StoredAnswer(http_status, self.content_type, b"".join(self.parts))


def keeps(produced_output: bool, failed: bool) -> bool:
    """Whether the call's answer is stored: everything but a failure before any output
    (its hold was released: nothing moved, so the key may run again). Once output was
    produced the call is charged, and a repeat must never charge it again."""
    return produced_output or not failed
