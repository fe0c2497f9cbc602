"""Rows, targets, and their rendering: a table on stdout, latest.json, latest.md."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

# Processes whose CPU a stack scenario is charged with: ours, plus the servers.
OURS = ("edge", "gateway", "billing", "providers", "jobs", "files", "worker-image", "worker-video")
SERVERS = ("postgres", "rabbitmq")
STACK_COUNTED = (*OURS, *SERVERS)


@dataclass
class Row:
    scenario: str
    path: str  # "stack", "mock" (direct) or "hop" (one Envoy hop)
    concurrency: int
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int
    counted: tuple[str, ...]  # the groups whose CPU is in cpu_ms_per_request
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # every group measured
    added_p50_ms: float | None = None
    other_cpu_percent: float = 0.0  # machine CPU used by processes not ours (contention)
    load_cpu_seconds: float = 0.0  # the load generator's own CPU (wrk or the Python client)
    rss_kib: dict[str, int] = field(default_factory=dict)  # VmRSS of each service after
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def cpu_ms_per_request(self) -> float | None:
        if self.requests <= 0 or not self.counted:
            return None
        return sum(self.cpu_seconds.get(g, 0.0) for g in self.counted) * 1000 / self.requests

    def cpu_ms_per_request_of(self, group: str) -> float:
        if self.requests <= 0:
            return 0.0
        return self.cpu_seconds.get(group, 0.0) * 1000 / self.requests

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["cpu_ms_per_request"] = self.cpu_ms_per_request
        out["cpu_ms_per_request_by_group"] = {
            g: self.cpu_ms_per_request_of(g) for g in self.cpu_seconds
        }
        return out


def merge(slices: list[Row], note: str = "") -> Row:
    """Several measured runs of one scenario as one row: requests, seconds, errors
    and CPU add up; req/s and CPU per request are over all of them; latency is the
    median of the runs' percentiles; each run's own numbers are kept in
    extra["rounds"]."""
    if not slices:
        raise ValueError("nothing to merge")

    def median(values: list[float]) -> float:
        ordered = sorted(values)
        mid = len(ordered) // 2
        return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2

    first, last = slices[0], slices[-1]
    seconds = sum(s.seconds for s in slices)
    requests = sum(s.requests for s in slices)
    groups = {g for s in slices for g in s.cpu_seconds}
    return Row(
        scenario=first.scenario,
        path=first.path,
        concurrency=first.concurrency,
        requests=requests,
        seconds=seconds,
        rps=requests / seconds if seconds > 0 else 0.0,
        p50_ms=median([s.p50_ms for s in slices]),
        p90_ms=median([s.p90_ms for s in slices]),
        p99_ms=median([s.p99_ms for s in slices]),
        errors=sum(s.errors for s in slices),
        counted=first.counted,
        cpu_seconds={g: sum(s.cpu_seconds.get(g, 0.0) for s in slices) for g in sorted(groups)},
        other_cpu_percent=(
            sum(s.other_cpu_percent * s.seconds for s in slices) / seconds if seconds > 0 else 0.0
        ),
        load_cpu_seconds=sum(s.load_cpu_seconds for s in slices),
        rss_kib=last.rss_kib,
        note=note,
        extra={
            "rounds": [
                {
                    "requests": s.requests,
                    "seconds": s.seconds,
                    "rps": s.rps,
                    "p50_ms": s.p50_ms,
                    "errors": s.errors,
                    "other_cpu_percent": s.other_cpu_percent,
                    "cpu_ms_per_request": s.cpu_ms_per_request,
                    "cpu_ms_per_request_by_group": {
                        g: s.cpu_ms_per_request_of(g) for g in s.cpu_seconds
                    },
                }
                for s in slices
            ]
        },
    )


@dataclass
class Check:
    target: str
    value: str
    passed: bool | None  # None: not measured in this run


def _f(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def main_table(rows: list[Row]) -> list[list[str]]:
    header = [
        "scenario",
        "path",
        "c",
        "req/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "errors",
        "added p50 ms",
        "CPU ms/req",
        "other CPU %",
    ]
    table = [header]
    for r in rows:
        table.append(
            [
                r.scenario,
                r.path,
                str(r.concurrency),
                f"{r.rps:.0f}" if r.rps >= 10 else f"{r.rps:.1f}",
                _f(r.p50_ms),
                _f(r.p90_ms),
                _f(r.p99_ms),
                str(r.errors),
                _f(r.added_p50_ms),
                _f(r.cpu_ms_per_request, 3),
                f"{r.other_cpu_percent:.0f}",
            ]
        )
    return table


def cpu_table(rows: list[Row]) -> list[list[str]]:
    """CPU ms per request by process group, for the stack scenarios."""
    stack = [r for r in rows if r.path == "stack" and r.requests > 0]
    header = ["scenario", "c", *STACK_COUNTED, "total"]
    table = [header]
    for r in stack:
        table.append(
            [
                r.scenario,
                str(r.concurrency),
                *(f"{r.cpu_ms_per_request_of(g):.3f}" for g in STACK_COUNTED),
                _f(r.cpu_ms_per_request, 3),
            ]
        )
    return table


def rss_table(peak_kib: dict[str, int]) -> list[list[str]]:
    return [["service", "peak RSS (VmHWM) MiB"]] + [
        [name, f"{kib / 1024:.1f}"] for name, kib in peak_kib.items()
    ]


def checks_table(checks: list[Check]) -> list[list[str]]:
    verdict = {True: "PASS", False: "FAIL", None: "not run"}
    return [["target", "measured", "result"]] + [
        [c.target, c.value, verdict[c.passed]] for c in checks
    ]


def text(table: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = []
    for n, row in enumerate(table):
        cells = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _numeric(cell: str) -> bool:
    try:
        float(cell.rstrip(" ms/%").replace("—", "0"))
    except ValueError:
        return False
    return True


def markdown(table: list[list[str]]) -> str:
    """A markdown table: numeric columns right-aligned, text columns left."""
    right = [all(_numeric(row[i]) for row in table[1:]) for i in range(len(table[0]))]
    lines = ["| " + " | ".join(table[0]) + " |"]
    lines.append("|" + "|".join("---:" if r else "---" for r in right) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in table[1:]]
    return "\n".join(lines)


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
