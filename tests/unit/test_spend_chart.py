"""The dashboard's spend chart: one slot a day, stacks in cost order, scaled
to the busiest day (pure)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from services.console import spend_chart

LAST = date(2026, 12, 3)


def test_bars_stack_by_model_and_the_busiest_day_fills_the_height() -> None:
    chart = spend_chart.build(
        {
            "2026-12-03": {"a": Decimal("30"), "b": Decimal("10")},
            "2026-12-01": {"a": Decimal("20")},
        },
        LAST,
    )
    assert (chart.first_day, chart.last_day) == ("2026-11-04", "2026-12-03")
    assert chart.max_idr == Decimal("40")
    assert chart.legend == [("a", spend_chart.PALETTE[0]), ("b", spend_chart.PALETTE[1])]
    last_day = [s for s in chart.segments if s.title.startswith("2026-12-03")]
    assert [s.height for s in last_day] == [120.0, 40.0]
    assert last_day[1].y == 0.0  # the stack reaches the top
    (earlier,) = [s for s in chart.segments if s.title.startswith("2026-12-01")]
    assert earlier.height == 80.0 and earlier.x < last_day[0].x
    assert earlier.title == "2026-12-01 a: 20 IDR"


def test_no_spend_draws_nothing_and_many_models_share_the_last_colour() -> None:
    assert spend_chart.build({}, LAST).segments == []
    many = {"2026-12-03": {f"m{i}": Decimal(20 - i) for i in range(10)}}
    chart = spend_chart.build(many, LAST)
    assert len(chart.legend) == len(spend_chart.PALETTE)
    assert chart.legend[-1] == ("…", spend_chart.PALETTE[-1])
    assert {s.color for s in chart.segments if s.title.split()[1] in ("m8:", "m9:")} == {
        spend_chart.PALETTE[-1]
    }
