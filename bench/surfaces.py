"""The client surfaces of the text path, and what each costs next to chat.

Chat completions, Messages and Responses all go through the gateway's
one chat relay to the same upstream; only the request parsing and the rendering
of the answer differ. The `surfaces` group (bench/run.py) sends the same model
the same prompt through every surface in SURFACES, non-stream and stream,
interleaved, so the mock upstream gives each the same answer and machine noise
hits all of them alike, and `ratio_table` puts each surface's CPU per request
beside chat's.

Adding a surface is one entry in SURFACES: its name, its path, its request body
(the stream body is the same with `"stream": true`), and the markers that tell
its good answer (non-stream, and the end of a stream) from an error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bench.report import Row

# The target: no surface costs more than this times chat's CPU per request.
TARGET_RATIO = 1.10
PROMPT = "Say hello to the benchmark."
# CPU per request is compared for the whole stack and for the gateway alone
# (where the surfaces' own work, parsing and rendering, runs).
GATEWAY = "gateway"


def bearer(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


def anthropic_key(api_key: str) -> dict[str, str]:
    """How Anthropic's SDK sends the key (the edge turns x-api-key into Authorization)."""
    return {"x-api-key": api_key, "anthropic-version": "2023-06-01"}


@dataclass(frozen=True)
class Surface:
    name: str
    path: str
    # The non-stream body, without the model and max_tokens (the bench sets them).
    body: Mapping[str, Any]
    marker: str  # in every good non-stream answer
    stream_marker: str  # in every good stream (its last event)
    stream_forbidden: str  # in no good stream (an error sent in-band, after the 200)
    headers: Callable[[str], dict[str, str]] = field(default=bearer)
    # The protocol's name for the output limit.
    limit_field: str = "max_tokens"

    def request_body(self, model: str, max_tokens: int, stream: bool) -> dict[str, Any]:
        body = {"model": model, self.limit_field: max_tokens, **self.body}
        if stream:
            body["stream"] = True
        return body

    def scenario(self, stream: bool) -> str:
        return f"surface: {self.name}{' stream' if stream else ''}"


# The first entry is the reference every other surface is compared with.
SURFACES: tuple[Surface, ...] = (
    Surface(
        name="chat",
        path="/v1/chat/completions",
        body={"messages": [{"role": "user", "content": PROMPT}]},
        marker='"chat.completion"',
        stream_marker="data: [DONE]",
        stream_forbidden='"error"',
    ),
    Surface(
        name="messages",
        path="/v1/messages",
        body={"messages": [{"role": "user", "content": PROMPT}]},
        marker='"type":"message"',
        stream_marker="event: message_stop",
        stream_forbidden="event: error",
        headers=anthropic_key,
    ),
    Surface(
        name="responses",
        path="/v1/responses",
        body={"input": PROMPT},
        marker='"object":"response"',
        stream_marker="event: response.completed",
        stream_forbidden="event: response.failed",
        limit_field="max_output_tokens",  # at least 16, as OpenAI requires
    ),
)


def rounds_order(rounds: int) -> list[tuple[Surface, ...]]:
    """The order of each round: forwards, then backwards (ABBA for two surfaces),
    so a drift in the machine's speed over the rounds lands on every surface alike."""
    return [SURFACES if r % 2 == 0 else SURFACES[::-1] for r in range(rounds)]


def _ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or reference is None or reference <= 0:
        return None
    return value / reference


def _gateway_ms(row: Row) -> float | None:
    return row.cpu_ms_per_request_of(GATEWAY) if row.requests > 0 else None


@dataclass
class Comparison:
    """One surface against chat at one concurrency, stream or not."""

    surface: str
    stream: bool
    concurrency: int
    rps: float
    errors: int
    gateway_ms: float | None
    stack_ms: float | None
    gateway_ratio: float | None
    stack_ratio: float | None
    # Each round's ratios on their own: how much the rounds agree.
    stack_ratio_by_round: list[float | None]
    gateway_ratio_by_round: list[float | None]

    @property
    def within(self) -> bool | None:
        if self.gateway_ratio is None or self.stack_ratio is None:
            return None
        return self.gateway_ratio <= TARGET_RATIO and self.stack_ratio <= TARGET_RATIO


def _slice_ms(row: Row | None, group: str = "") -> list[float | None]:
    """CPU ms per request of each round: of the stack, or of one process group."""
    if row is None:
        return []
    rounds = row.extra.get("rounds", [])
    if group:
        return [s["cpu_ms_per_request_by_group"].get(group) for s in rounds]
    return [s["cpu_ms_per_request"] for s in rounds]


def _by_round(row: Row, ref: Row | None, group: str = "") -> list[float | None]:
    mine, theirs = _slice_ms(row, group), _slice_ms(ref, group)
    return [_ratio(a, b) for a, b in zip(mine, theirs, strict=False)]


def compare(rows: list[Row], concurrency: list[int]) -> list[Comparison]:
    """Every surface measured, against the reference (chat) measured beside it."""
    found = {(r.scenario, r.concurrency): r for r in rows if r.path == "stack"}
    reference = SURFACES[0]
    out: list[Comparison] = []
    for stream in (False, True):
        for c in concurrency:
            ref = found.get((reference.scenario(stream), c))
            for surface in SURFACES:
                row = found.get((surface.scenario(stream), c))
                if row is None:
                    continue
                out.append(
                    Comparison(
                        surface=surface.name,
                        stream=stream,
                        concurrency=c,
                        rps=row.rps,
                        errors=row.errors,
                        gateway_ms=_gateway_ms(row),
                        stack_ms=row.cpu_ms_per_request,
                        gateway_ratio=_ratio(_gateway_ms(row), _gateway_ms(ref) if ref else None),
                        stack_ratio=_ratio(row.cpu_ms_per_request, ref.cpu_ms_per_request)
                        if ref
                        else None,
                        stack_ratio_by_round=_by_round(row, ref),
                        gateway_ratio_by_round=_by_round(row, ref, GATEWAY),
                    )
                )
    return out


def _f(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def ratio_table(comparisons: list[Comparison]) -> list[list[str]]:
    reference = SURFACES[0].name
    verdict = {True: "yes", False: "NO", None: "—"}
    table = [
        [
            "surface",
            "mode",
            "c",
            "req/s",
            "errors",
            "gateway ms/req",
            f"÷ {reference}",
            "by round",
            "stack ms/req",
            f"÷ {reference}",
            "by round",
            f"within {TARGET_RATIO:.2f}",
        ]
    ]
    for x in comparisons:
        # The reference's own ratios are left out ("—"; not 1.00, which reads as measured).
        is_reference = x.surface == reference
        table.append(
            [
                x.surface,
                "stream" if x.stream else "non-stream",
                str(x.concurrency),
                f"{x.rps:.0f}",
                str(x.errors),
                _f(x.gateway_ms, 3),
                "—" if is_reference else _f(x.gateway_ratio, 2),
                "—" if is_reference else " ".join(_f(r, 2) for r in x.gateway_ratio_by_round),
                _f(x.stack_ms, 3),
                "—" if is_reference else _f(x.stack_ratio, 2),
                "—" if is_reference else " ".join(_f(r, 2) for r in x.stack_ratio_by_round),
                "—" if is_reference else verdict[x.within],
            ]
        )
    return table


def to_json(comparisons: list[Comparison]) -> list[dict[str, Any]]:
    return [{**vars(x), "within": x.within} for x in comparisons]


__all__ = ["SURFACES", "TARGET_RATIO", "Surface", "compare", "ratio_table", "rounds_order"]
