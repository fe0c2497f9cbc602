"""What a finished job costs, and the messages a client reads."""

from __future__ import annotations

import pytest

from services.jobs import rules


@pytest.mark.parametrize(
    ("units", "estimated", "minimum", "price", "held", "expected"),
    [
        (1, 1, 0, 700, 700, 700),  # one image
        (6, 6, 0, 5_000, 30_000, 30_000),  # video: the seconds produced
        (4, 6, 0, 5_000, 30_000, 20_000),  # shorter than asked: charged less
        (0, 6, 0, 5_000, 30_000, 30_000),  # upstream did not say: the seconds asked for
        (4, 4, 5, 2_800, 14_000, 14_000),  # the with-reference floor
        (9, 6, 0, 5_000, 30_000, 30_000),  # longer than asked: never above the hold
    ],
)
def test_cost(
    units: int, estimated: int, minimum: int, price: int, held: int, expected: int
) -> None:
    assert (
        rules.cost_micros(
            units=units,
            estimated_units=estimated,
            min_billable_units=minimum,
            unit_price_micros=price,
            held_micros=held,
        )
        == expected
    )


def test_timeout_messages() -> None:
    assert rules.timed_out_message(600) == "Job timed out after 10 minutes."
    assert rules.timed_out_message(60) == "Job timed out after 1 minute."
    assert rules.timed_out_message(15) == "Job timed out after 15 seconds."


def test_job_ids_are_unguessable_and_distinct() -> None:
    ids = {rules.new_job_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(i.startswith("job_") and len(i) == 30 and i[4:].isalnum() for i in ids)
