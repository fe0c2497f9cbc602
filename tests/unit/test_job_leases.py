"""The job lease, settlement-retry, shown-cost and idempotency rules (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from aiport.v1 import job_state_pb2

from services.common import job_ids
from services.common.job_states import JobStatus, Modality
from services.jobs import rules
from services.jobs.rules import AttemptDecision, Verdict

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
LEASE = 30


def decide(
    status: str = "pending", attempts: int = 0, expires: datetime | None = None
) -> AttemptDecision:
    return rules.decide_attempt(
        status=JobStatus(status),
        attempts=attempts,
        lease_expires_at=expires,
        now=NOW,
        lease_seconds=LEASE,
    )


def test_a_new_job_runs() -> None:
    assert decide() == AttemptDecision(Verdict.RUN)


def test_a_live_lease_defers_until_about_when_it_ends_and_is_not_an_attempt() -> None:
    decision = decide("processing", attempts=1, expires=NOW + timedelta(seconds=12.5))
    assert decision == AttemptDecision(Verdict.DEFER, 13)


def test_a_live_lease_defers_even_a_job_on_its_last_attempt() -> None:
    # Deferring must not fail a job that another worker is running fine.
    assert decide("processing", rules.MAX_ATTEMPTS, NOW + timedelta(seconds=5)).verdict == (
        Verdict.DEFER
    )


@pytest.mark.parametrize(
    ("left", "expected"),
    [(0.01, rules.MIN_DEFER_SECONDS), (LEASE * 5, LEASE)],
    ids=["about-to-end", "beyond-one-lease"],
)
def test_a_deferral_is_bounded(left: float, expected: int) -> None:
    assert decide("processing", 1, NOW + timedelta(seconds=left)).defer_seconds == expected


def test_an_expired_lease_lets_the_next_delivery_resume() -> None:
    assert decide("processing", 1, NOW - timedelta(seconds=1)) == AttemptDecision(Verdict.RUN)
    assert decide("processing", 1, NOW) == AttemptDecision(Verdict.RUN)  # ends at `now`


def test_too_many_dead_attempts_exhaust_the_job() -> None:
    assert decide("processing", rules.MAX_ATTEMPTS - 1).verdict == Verdict.RUN
    assert decide("processing", rules.MAX_ATTEMPTS).verdict == Verdict.EXHAUSTED


@pytest.mark.parametrize("status", ["done", "failed"])
def test_a_finished_job_is_finished_whatever_its_lease(status: str) -> None:
    assert decide(status, 1, NOW + timedelta(seconds=10)).verdict == Verdict.FINISHED
    assert decide(status, rules.MAX_ATTEMPTS + 1).verdict == Verdict.FINISHED


def test_only_the_holder_renews_and_only_while_the_job_runs() -> None:
    processing, done = JobStatus.PROCESSING, JobStatus.DONE
    assert rules.may_renew(status=processing, held_token="a", token="a")
    assert not rules.may_renew(status=processing, held_token="b", token="a")
    assert not rules.may_renew(status=processing, held_token=None, token="a")
    assert not rules.may_renew(status=done, held_token="a", token="a")
    assert not rules.may_renew(status=processing, held_token="a", token="")


def test_lease_timing() -> None:
    assert rules.clamp_lease_seconds(0) == rules.MIN_LEASE_SECONDS
    assert rules.clamp_lease_seconds(10**6) == rules.MAX_LEASE_SECONDS
    assert rules.renew_every_seconds(30) == 10
    assert rules.renew_every_seconds(2) == 1  # never 0: no busy loop
    assert rules.lease_expiry(NOW, 30) == NOW + timedelta(seconds=30)


def test_settlement_retries_back_off_then_give_up() -> None:
    waits = [rules.settle_retry_seconds(n, 5.0) for n in range(1, rules.MAX_SETTLE_REFUSALS)]
    assert waits == [5.0 * 2**i for i in range(rules.MAX_SETTLE_REFUSALS - 1)]
    assert rules.settle_retry_seconds(40, 5.0) == rules.MAX_SETTLE_RETRY_SECONDS
    assert not rules.give_up_settling(rules.MAX_SETTLE_REFUSALS - 1)
    assert rules.give_up_settling(rules.MAX_SETTLE_REFUSALS)


@pytest.mark.parametrize(
    ("status", "cost", "charged", "refusals", "shown"),
    [
        ("processing", None, None, 0, None),  # not finished: no cost yet
        ("done", 1_400, None, 0, 1_400),  # being settled right now
        ("done", 1_400, 1_400, 0, 1_400),  # settled: what billing charged
        ("done", 1_400, 700, 0, 700),  # billing charged less: that is what shows
        ("done", 1_400, None, 1, 0),  # billing refused: nothing charged (yet)
        ("done", 1_400, 0, rules.MAX_SETTLE_REFUSALS, 0),  # given up
        ("failed", 0, None, 0, 0),
        ("failed", 0, 0, 0, 0),
    ],
)
def test_the_cost_a_client_sees_is_what_was_charged(
    status: str, cost: int | None, charged: int | None, refusals: int, shown: int | None
) -> None:
    assert (
        rules.shown_cost_micros(
            status=JobStatus(status),
            actual_cost_micros=cost,
            charged_micros=charged,
            settle_refusals=refusals,
        )
        == shown
    )


def creation(**changes: object) -> job_state_pb2.CreateJobRequest:
    request = job_state_pb2.CreateJobRequest(
        account_id="acct_1",
        hold_id="hold_1",
        model="seedream-4.5",
        modality=Modality.IMAGE.to_proto(),
        spec=job_state_pb2.WorkSpec(prompt="a cat", images=["https://a/b.png"]),
        unit_price_micros=700,
        estimated_units=1,
        estimated_cost_micros=700,
        idempotency_key="call-1",
        job_id="job_" + "a" * 26,
    )
    for name, value in changes.items():
        if name == "prompt":
            request.spec.prompt = str(value)
        else:
            setattr(request, name, value)
    return request


def test_the_input_hash_ignores_the_key_and_sees_everything_else() -> None:
    first = rules.creation_input_hash(creation())
    assert len(first) == 32
    assert rules.creation_input_hash(creation(idempotency_key="call-2")) == first
    for change in (
        {"prompt": "a dog"},
        {"hold_id": "hold_2"},
        {"estimated_cost_micros": 701},
        {"account_id": "acct_2"},
        {"job_id": "job_" + "b" * 26},
    ):
        assert rules.creation_input_hash(creation(**change)) != first, change


def test_a_stored_hash_must_match_and_a_legacy_row_matches_anything() -> None:
    digest = rules.creation_input_hash(creation())
    assert rules.same_input(digest, digest)
    assert rules.same_input(memoryview(digest).tobytes(), digest)
    assert not rules.same_input(rules.creation_input_hash(creation(prompt="x")), digest)
    assert rules.same_input(None, digest)


def test_job_ids_the_gateway_makes_are_ones_the_jobs_service_accepts() -> None:
    made = job_ids.new_job_id()
    assert job_ids.is_job_id(made)
    assert rules.new_job_id().startswith("job_")
    for bad in ("", "job_", "job_short", "job_" + "a" * 27, "job_" + "a" * 25 + "-", "x" * 30):
        assert not job_ids.is_job_id(bad), bad
    assert not job_ids.is_job_id("job_" + "é" * 26)
