"""The Idempotency-Key rules (services/gateway/idempotency.py): pure, no servers."""

from __future__ import annotations

import pytest
from aiport.v1 import billing_pb2

from services.gateway import idempotency
from services.gateway.errors import PublicError
from services.gateway.idempotency import MAX_STORED_BYTES, AnswerRecord, Replay, StoredAnswer

State = billing_pb2.IdempotentAnswer


@pytest.mark.parametrize("key", ["a", "x" * 255, "order 42/retry#1", " ~!"])
def test_keys_of_printable_ascii_up_to_255_are_accepted(key: str) -> None:
    assert idempotency.parse_key(key) == key


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there", "caf\u00e9", "nl\n", "\x7f"])
def test_other_keys_are_a_400_naming_the_header(key: str) -> None:
    with pytest.raises(PublicError) as raised:
        idempotency.parse_key(key)
    assert (raised.value.status, raised.value.param) == (400, "Idempotency-Key")
    assert "Idempotency-Key" in raised.value.message


def test_no_header_no_claim() -> None:
    assert idempotency.parse_key(None) is None
    assert idempotency.claim_of(None, "chat.completions", b"{}") is None


def test_the_hash_guards_the_endpoint_and_the_exact_body() -> None:
    base = idempotency.request_hash("chat.completions", b'{"a":1}')
    assert len(base) == 32
    assert base == idempotency.request_hash("chat.completions", b'{"a":1}')
    assert base != idempotency.request_hash("chat.completions", b'{"a": 1}')
    assert base != idempotency.request_hash("responses", b'{"a":1}')
    claim = idempotency.claim_of("k", "chat.completions", b'{"a":1}')
    assert claim is not None
    assert claim.to_proto() == billing_pb2.ClientIdempotency(key="k", request_hash=base)


def test_a_repeat_of_another_request_is_422_and_one_still_running_409() -> None:
    mismatch = idempotency.answer_to(State(state=State.MISMATCH))
    running = idempotency.answer_to(State(state=State.IN_FLIGHT))
    assert isinstance(mismatch, PublicError) and mismatch.status == 422
    assert isinstance(running, PublicError) and running.status == 409
    assert running.code == "idempotent_request_in_progress"


def test_a_completed_key_replays_its_stored_answer() -> None:
    earlier = State(
        state=State.COMPLETED, http_status=200, content_type="application/json", body=b"{}"
    )
    replay = idempotency.answer_to(earlier)
    assert isinstance(replay, Replay)
    assert replay.answer == StoredAnswer(200, "application/json", b"{}")


def test_a_completed_answer_too_large_to_keep_is_a_documented_409() -> None:
    answer = idempotency.answer_to(State(state=State.COMPLETED, http_status=200))
    assert isinstance(answer, PublicError)
    assert (answer.status, answer.code) == (409, "idempotent_answer_not_kept")


def test_a_record_keeps_every_part_in_order_with_the_first_content_type() -> None:
    record = AnswerRecord()
    assert not record.started
    record.add("text/event-stream", b"data: 1\n\n")
    record.add("application/json", b"data: [DONE]\n\n")
    assert record.started
    assert record.answer(200) == StoredAnswer(
        200, "text/event-stream", b"data: 1\n\ndata: [DONE]\n\n"
    )


def test_an_answer_too_large_is_stored_without_content() -> None:
    record = AnswerRecord()
    record.add("text/event-stream", b"x" * MAX_STORED_BYTES)
    record.add("text/event-stream", b"y")
    assert record.answer(200) == StoredAnswer(200, "", b"")


def test_only_a_failure_before_any_output_frees_the_key() -> None:
    assert not idempotency.keeps(produced_output=False, failed=True)
    assert idempotency.keeps(produced_output=True, failed=True)  # charged: never again
    assert idempotency.keeps(produced_output=True, failed=False)
    assert idempotency.keeps(produced_output=False, failed=False)
