"""The dashboard's 30-day spend chart, drawn on the server as SVG (pure).

One bar per day, stacked by model; every day of the window has a slot, so a
day without spend is a gap rather than a missing bar. SVG with presentation
attributes only (no script, no style attribute): the strict CSP allows it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

# Distinguishable on white and for the common colour-vision deficiencies
# (Okabe-Ito); with more than eight models, those past the seventh share the
# last colour and the legend names them together.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#999999")
WIDTH = 600
HEIGHT = 160
GAP = 2


@dataclass(frozen=True)
class Segment:
    x: float
    y: float
    width: float
    height: float
    color: str
    title: str  # the tooltip: day, model and amount


@dataclass(frozen=True)
class Chart:
    segments: list[Segment]
    legend: list[tuple[str, str]]  # (model, colour), costliest first
    max_idr: Decimal
    first_day: str
    last_day: str
    width: int = WIDTH
    height: int = HEIGHT


def build(days: dict[str, dict[str, Decimal]], last_day: date, span: int = 30) -> Chart:
    """`days`: YYYY-MM-DD -> model -> IDR spent, in the user's zone; the window
    is the `span` days ending with `last_day`."""
    window = [last_day - timedelta(days=span - 1 - i) for i in range(span)]
    totals: dict[str, Decimal] = {}
    for by_model in days.values():
        for model, cost in by_model.items():
            totals[model] = totals.get(model, Decimal(0)) + cost
    ranked = [m for m, c in sorted(totals.items(), key=lambda mc: (-mc[1], mc[0])) if c > 0]
    colors = {m: PALETTE[min(i, len(PALETTE) - 1)] for i, m in enumerate(ranked)}
    peak = max(
        (sum(days.get(d.isoformat(), {}).values(), Decimal(0)) for d in window),
        default=Decimal(0),
    )
    slot = WIDTH / span
    segments: list[Segment] = []
    for i, day in enumerate(window):
        top = float(HEIGHT)
        spent = days.get(day.isoformat(), {})
        for model in ranked:
            cost = spent.get(model, Decimal(0))
            if cost <= 0 or peak <= 0:
                continue
            height = float(cost / peak) * HEIGHT
            top -= height
            segments.append(
                Segment(
                    x=round(i * slot + GAP / 2, 2),
                    y=round(top, 2),
                    width=round(slot - GAP, 2),
                    height=round(height, 2),
                    color=colors[model],
                    title=f"{day.isoformat()} {model}: {cost.normalize():f} IDR",
                )
            )
    if len(ranked) <= len(PALETTE):
        legend = [(m, colors[m]) for m in ranked]
    else:  # the last colour stands for every model past the seventh
        legend = [(m, colors[m]) for m in ranked[: len(PALETTE) - 1]] + [("…", PALETTE[-1])]
    return Chart(segments, legend, peak, window[0].isoformat(), window[-1].isoformat())
