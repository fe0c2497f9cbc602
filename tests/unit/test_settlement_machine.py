"""The chat settlement state machine: every transition, without servers."""

from __future__ import annotations

import orjson
import pytest

from services.common.catalog import load_catalog
from services.common.settings import PROJECT_ROOT
from services.common.usage import Usage
from services.gateway.chat_request import ChatCall, parse_chat_request
from services.gateway.holds import HoldKey, HoldKind, HoldPurpose
from services.gateway.pricing import cost_micros
from services.gateway.settlement import (
    CLIENT_LEFT,
    OUTPUT_DELIVERED,
    STREAM_ENDED,
    TRANSITIONS,
    Abandoned,
    Capture,
    ChatSettlement,
    ClientLeft,
    Event,
    OutputDelivered,
    Phase,
    Release,
    SettlementError,
    StreamEnded,
    UpstreamFailed,
    UsageReported,
)

CATALOG = load_catalog(PROJECT_ROOT / "config" / "catalog.yaml")
REPORTED = Usage(prompt_tokens=120, completion_tokens=40, cached_prompt_tokens=20)


def call(content: str = "a" * 400, **extra: object) -> ChatCall:
    body = {"model": "deepseek-v4-flash", "messages": [{"role": "user", "content": content}]}
    return parse_chat_request(orjson.dumps({**body, "max_tokens": 50, **extra}), CATALOG)


def producing(chunks: int, c: ChatCall | None = None) -> ChatSettlement:
    settlement = ChatSettlement(c or call(stream=True))
    for _ in range(chunks):
        assert settlement.handle(OUTPUT_DELIVERED) is None
    assert settlement.phase is Phase.PRODUCING
    return settlement


# --- the normal end ------------------------------------------------------------------


@pytest.mark.parametrize("chunks", [0, 3])
def test_reported_usage_is_captured_at_its_price(chunks: int) -> None:
    settlement = producing(chunks) if chunks else ChatSettlement(call())
    decision = settlement.handle(UsageReported(REPORTED))
    assert isinstance(decision, Capture)
    assert decision.amount_micros == cost_micros(call().model, REPORTED) > 0
    assert decision.usage == REPORTED
    assert decision.note == "chat deepseek-v4-flash"
    assert decision.routine and decision.summary == "chat completed"
    assert settlement.settled


def test_usage_providers_had_to_estimate_is_captured_and_says_so() -> None:
    estimated = Usage(10, 5, estimated=True)
    decision = producing(2).handle(UsageReported(estimated))
    assert isinstance(decision, Capture)
    assert decision.amount_micros == cost_micros(call().model, estimated)
    assert decision.note == "chat deepseek-v4-flash (usage estimated)"
    assert not decision.routine


# --- failures ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (UpstreamFailed("UNAVAILABLE: 503"), "upstream failed: UNAVAILABLE: 503"),
        (UpstreamFailed("x", Usage(9, 9, estimated=True)), "upstream failed: x"),
        (STREAM_ENDED, "providers ended the call without usage"),
        (Abandoned("gateway stopping"), "gateway stopping"),
    ],
)
def test_failure_before_any_output_releases_everything(event: Event, reason: str) -> None:
    settlement = ChatSettlement(call())
    decision = settlement.handle(event)
    assert decision == Release(reason, "chat failed before output; hold released")
    assert settlement.settled


def test_failure_after_output_with_providers_estimate_captures_it() -> None:
    theirs = Usage(100, 7, estimated=True)
    decision = producing(3).handle(UpstreamFailed("mid-stream", theirs))
    assert isinstance(decision, Capture)
    assert decision.usage == theirs
    assert decision.amount_micros == cost_micros(call().model, theirs)
    assert decision.note == "chat deepseek-v4-flash (stream broke)"


@pytest.mark.parametrize(
    ("event", "note"),
    [
        (UpstreamFailed("UNAVAILABLE: reset"), "estimated; upstream failed after output"),
        (STREAM_ENDED, "estimated; ended without usage"),
        (Abandoned("gateway stopping"), "estimated; gateway stopping"),
    ],
)
def test_break_after_output_without_usage_captures_the_gateways_estimate(
    event: Event, note: str
) -> None:
    decision = producing(7).handle(event)
    assert isinstance(decision, Capture)
    # The prompt at 4 characters a token, a token per chunk produced.
    assert decision.usage == Usage(prompt_tokens=100, completion_tokens=7, estimated=True)
    assert decision.amount_micros == cost_micros(call().model, decision.usage)
    assert decision.note == f"chat deepseek-v4-flash ({note})"
    assert decision.summary == "stream interrupted" and not decision.routine


def test_estimate_never_exceeds_what_every_choice_could_produce() -> None:
    c = call(stream=True, max_tokens=2, n=2)
    decision = producing(9, c).handle(STREAM_ENDED)
    assert isinstance(decision, Capture)
    assert decision.usage.completion_tokens == 4


# --- the client leaving --------------------------------------------------------------


@pytest.mark.parametrize("chunks", [0, 2])
def test_client_leaving_decides_nothing_and_the_call_settles_at_its_usage(chunks: int) -> None:
    settlement = producing(chunks) if chunks else ChatSettlement(call())
    assert settlement.handle(CLIENT_LEFT) is None
    assert settlement.client_gone and not settlement.settled
    # Output the departed client never saw still counts.
    settlement.handle(OUTPUT_DELIVERED)
    decision = settlement.handle(UsageReported(REPORTED))
    assert isinstance(decision, Capture) and decision.usage == REPORTED


def test_client_leaving_after_settlement_is_legal() -> None:
    settlement = ChatSettlement(call())
    settlement.handle(UsageReported(REPORTED))
    assert settlement.handle(CLIENT_LEFT) is None
    assert settlement.settled


def test_client_leaving_twice_raises() -> None:
    settlement = ChatSettlement(call())
    settlement.handle(CLIENT_LEFT)
    with pytest.raises(SettlementError, match="twice"):
        settlement.handle(CLIENT_LEFT)


# --- exactly one decision ------------------------------------------------------------


@pytest.mark.parametrize(
    "late",
    [OUTPUT_DELIVERED, UsageReported(REPORTED), UpstreamFailed("late"), STREAM_ENDED],
)
def test_nothing_but_leaving_or_abandoning_follows_a_decision(late: Event) -> None:
    settlement = producing(1)
    settlement.handle(UsageReported(REPORTED))
    with pytest.raises(SettlementError):
        settlement.handle(late)
    assert settlement.phase is Phase.SETTLED and settlement.chunks == 1


def test_abandoning_a_settled_call_decides_nothing() -> None:
    # The gateway stopping while the capture is under way must not settle twice.
    settlement = ChatSettlement(call())
    settlement.handle(UpstreamFailed("x"))
    assert settlement.handle(Abandoned("gateway stopping")) is None


def test_every_phase_has_a_row_and_every_event_a_column() -> None:
    events = {OutputDelivered, UsageReported, UpstreamFailed, StreamEnded, ClientLeft, Abandoned}
    assert set(TRANSITIONS) == set(Phase)
    assert set(TRANSITIONS[Phase.AWAITING_OUTPUT]) == events
    assert set(TRANSITIONS[Phase.PRODUCING]) == events
    assert set(TRANSITIONS[Phase.SETTLED]) == {ClientLeft, Abandoned}
    assert all(nxt is Phase.SETTLED for nxt, _ in TRANSITIONS[Phase.SETTLED].values())


# --- the hold's key ------------------------------------------------------------------


def test_hold_key_is_built_from_typed_parts() -> None:
    key = HoldKey.new(HoldKind.CHAT)
    assert str(key) == f"chat:{key.call_id}"
    assert len(key.call_id) == 32 and key.call_id != HoldKey.new(HoldKind.CHAT).call_id
    assert str(HoldKey(HoldKind.JOB, "abc")) == "job:abc"


def test_hold_description_names_kind_subject_and_request() -> None:
    purpose = HoldPurpose(HoldKind.JOB, "gpt-image-2", "image")
    assert purpose.description("req-1") == "job image gpt-image-2 req-1"
    # A subject that looks like another kind cannot change the key's kind.
    odd = HoldPurpose(HoldKind.CHAT, "job x")
    assert odd.description("r") == "chat job x r"
    assert str(HoldKey.new(odd.kind)).startswith("chat:")
