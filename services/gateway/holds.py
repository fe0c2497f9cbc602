"""What a hold is for, and the idempotency key it is placed under. Pure.

The key is a value with parts (its kind and the call's nonce), rendered once, so no
code ever has to cut it out of, or back out of, descriptive text.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from enum import StrEnum


class HoldKind(StrEnum):
    CHAT = "chat"
    JOB = "job"


@dataclass(frozen=True, slots=True)
class HoldPurpose:
    """What the money is held for: `chat gpt-5.4-mini`, `job image gpt-image-2`."""

    kind: HoldKind
    model: str  # also billing's revenue account for the capture
    modality: str = ""  # a job's
    # For the customer's usage record: the public endpoint, and the job it pays for.
    endpoint: str = ""
    job_id: str = ""

    def description(self, request_id: str) -> str:
        """The hold's description in billing; operators find a call's hold by its
        request id there (the key cannot carry it: a client chooses request ids)."""
        subject = f"{self.modality} {self.model}" if self.modality else self.model
        return f"{self.kind} {subject} {request_id}"


def new_call_id() -> str:
    """A call's nonce: made by the gateway, never by the client (a reused
    x-request-id must not share, or collide with, another call's hold or job)."""
    return secrets.token_hex(16)


@dataclass(frozen=True, slots=True)
class HoldKey:
    """One hold per call, whatever retries happen in between."""

    kind: HoldKind
    call_id: str

    @classmethod
    def new(cls, kind: HoldKind) -> HoldKey:
        return cls(kind, new_call_id())

    def __str__(self) -> str:
        return f"{self.kind}:{self.call_id}"
