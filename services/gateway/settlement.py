r"""Settlement of one chat's hold, as a pure state machine (the shape of h11's _state.py).

The chat relay (services/gateway/server.py) feeds it what happens to the upstream
call, in order; an event that settles the hold returns the decision (capture N µIDR
with a note, or release), and the relay carries it out. No I/O here, so every
branch is tested without servers (tests/unit/test_settlement_machine.py).

The rule, the same for streams and whole answers: the upstream work the customer
ordered is charged at its real, reported usage, whether or not the client stayed to
receive it. An upstream that fails before any output costs nothing (release); one
that breaks after output is charged an estimate of what it produced. Exactly one
decision per hold: after it, only the client leaving or the gateway giving up may
still happen (and decide nothing); anything else is a bug in the caller and raises.

All transitions are in `TRANSITIONS`:

    phase \ event   | Output    | Usage   | UpstreamFailed | StreamEnded | Abandoned
    ----------------+-----------+---------+----------------+-------------+----------
    AWAITING_OUTPUT | PRODUCING | capture | release        | release     | release
    PRODUCING       | (counted) | capture | capture est.*  | capture est.| capture est.
    SETTLED         | raises    | raises  | raises         | raises      | nothing

  (Output = OutputDelivered, Usage = UsageReported: captured at the reported usage;
  est. = an estimate of what was produced.)
  * providers' estimate when its failure carried one (it saw the output's text),
    else the gateway's (from the chunks it relayed).
  ClientLeft is legal once in every phase and decides nothing: a departed client's
  call runs on and is settled like any other.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from services.common.usage import Usage
from services.gateway.chat_request import ChatCall
from services.gateway.pricing import cost_micros, estimated_usage


class SettlementError(RuntimeError):
    """An event the settlement cannot take in its phase: a bug in the caller."""


class Phase(Enum):
    AWAITING_OUTPUT = "awaiting_output"  # hold placed, nothing produced yet
    PRODUCING = "producing"  # output produced (relayed, or dropped if the client left)
    SETTLED = "settled"  # the one decision was made


# --- events --------------------------------------------------------------------------


class Event:
    __slots__ = ()


@dataclass(frozen=True, slots=True)
class OutputDelivered(Event):
    """One streamed chunk of output came from the upstream (counted for the estimate)."""


@dataclass(frozen=True, slots=True)
class UsageReported(Event):
    """The call's last event: its usage (`estimated` when the upstream gave none)."""

    usage: Usage


@dataclass(frozen=True, slots=True)
class UpstreamFailed(Event):
    """The upstream (or providers, or the call to it) failed. `usage` is providers'
    estimate of what was consumed, when its failure report carried one."""

    detail: str
    usage: Usage | None = None


@dataclass(frozen=True, slots=True)
class StreamEnded(Event):
    """The call ended without a usage report or a failure (providers broke protocol)."""


@dataclass(frozen=True, slots=True)
class ClientLeft(Event):
    """The client disconnected or its deadline passed: it stops receiving, nothing more."""


@dataclass(frozen=True, slots=True)
class Abandoned(Event):
    """The gateway can no longer follow the call (stopping, or its own error)."""

    why: str


# Shared instances: the per-chunk event allocates nothing.
OUTPUT_DELIVERED = OutputDelivered()
STREAM_ENDED = StreamEnded()
CLIENT_LEFT = ClientLeft()


# --- decisions -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Capture:
    """Capture `amount_micros` of the hold (billing releases the rest)."""

    amount_micros: int
    note: str  # the ledger entry's description
    usage: Usage
    summary: str  # for the operator's log
    routine: bool  # the normal end of a call (else worth a warning)


@dataclass(frozen=True, slots=True)
class Release:
    """Release the whole hold: nothing is charged."""

    reason: str
    summary: str


Decision = Capture | Release


class _Rule(Enum):
    NOTHING = "nothing"
    COUNT_OUTPUT = "count_output"
    CAPTURE_USAGE = "capture_usage"
    CAPTURE_FAILURE = "capture_failure"  # providers' estimate if it sent one, else ours
    CAPTURE_ESTIMATE = "capture_estimate"
    RELEASE = "release"


# phase -> event type -> (next phase, what the hold gets). Missing: illegal.
TRANSITIONS: dict[Phase, dict[type[Event], tuple[Phase, _Rule]]] = {
    Phase.AWAITING_OUTPUT: {
        OutputDelivered: (Phase.PRODUCING, _Rule.COUNT_OUTPUT),
        UsageReported: (Phase.SETTLED, _Rule.CAPTURE_USAGE),
        UpstreamFailed: (Phase.SETTLED, _Rule.RELEASE),
        StreamEnded: (Phase.SETTLED, _Rule.RELEASE),
        ClientLeft: (Phase.AWAITING_OUTPUT, _Rule.NOTHING),
        Abandoned: (Phase.SETTLED, _Rule.RELEASE),
    },
    Phase.PRODUCING: {
        OutputDelivered: (Phase.PRODUCING, _Rule.COUNT_OUTPUT),
        UsageReported: (Phase.SETTLED, _Rule.CAPTURE_USAGE),
        UpstreamFailed: (Phase.SETTLED, _Rule.CAPTURE_FAILURE),
        StreamEnded: (Phase.SETTLED, _Rule.CAPTURE_ESTIMATE),
        ClientLeft: (Phase.PRODUCING, _Rule.NOTHING),
        Abandoned: (Phase.SETTLED, _Rule.CAPTURE_ESTIMATE),
    },
    Phase.SETTLED: {
        # The client may leave while the answer is still being written out, and
        # the gateway may stop while the decision is being carried out.
        ClientLeft: (Phase.SETTLED, _Rule.NOTHING),
        Abandoned: (Phase.SETTLED, _Rule.NOTHING),
    },
}


def _release_reason(event: Event) -> str:
    if isinstance(event, UpstreamFailed):
        return f"upstream failed: {event.detail}"
    if isinstance(event, Abandoned):
        return event.why
    return "providers ended the call without usage"


def _estimate_note(event: Event) -> str:
    """Fixed words for the ledger (no upstream text in a customer's entries)."""
    if isinstance(event, UpstreamFailed):
        return "estimated; upstream failed after output"
    if isinstance(event, Abandoned):
        return f"estimated; {event.why}"
    return "estimated; ended without usage"


class ChatSettlement:
    """The settlement of one chat call's hold. Feed events with `handle`."""

    __slots__ = ("call", "chunks", "client_gone", "phase")

    def __init__(self, call: ChatCall) -> None:
        self.call = call
        self.phase = Phase.AWAITING_OUTPUT
        self.chunks = 0  # streamed chunks the upstream produced, relayed or not
        self.client_gone = False

    @property
    def settled(self) -> bool:
        return self.phase is Phase.SETTLED

    def handle(self, event: Event) -> Decision | None:
        """Take the next event; the decision for the hold if this event settles it.
        Raises SettlementError, changing nothing, for an event illegal in this phase."""
        kind = type(event)
        step = TRANSITIONS[self.phase].get(kind)
        if step is None:
            raise SettlementError(f"{kind.__name__} after the call was {self.phase.value}")
        if kind is ClientLeft:
            if self.client_gone:
                raise SettlementError("ClientLeft twice")
            self.client_gone = True
        self.phase, rule = step
        if rule is _Rule.COUNT_OUTPUT:
            self.chunks += 1
            return None
        if rule is _Rule.NOTHING:
            return None
        if rule is _Rule.RELEASE:
            return Release(_release_reason(event), "chat failed before output; hold released")
        if rule is _Rule.CAPTURE_USAGE:
            assert isinstance(event, UsageReported)
            if event.usage.estimated:  # providers had to estimate: the upstream gave none
                return self._capture(event.usage, "usage estimated", "chat completed without usage")
            return self._capture(event.usage, "", "chat completed", routine=True)
        if (
            rule is _Rule.CAPTURE_FAILURE
            and isinstance(event, UpstreamFailed)
            and event.usage is not None
        ):
            # Providers saw the output's text: its estimate beats counting chunks.
            return self._capture(event.usage, "stream broke", "stream broke after output")
        # CAPTURE_ESTIMATE, or a failure nobody estimated: count what was relayed.
        usage = estimated_usage(self.call, self.chunks)
        return self._capture(usage, _estimate_note(event), "stream interrupted")

    def _capture(self, usage: Usage, why: str, summary: str, routine: bool = False) -> Capture:
        model = self.call.model
        note = f"chat {model.id} ({why})" if why else f"chat {model.id}"
        return Capture(cost_micros(model, usage), note, usage, summary, routine)
