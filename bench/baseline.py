"""An A/B in one run: the same scenarios measured on another commit first.

`BENCH_BASELINE=<git rev>` (or `--baseline`) checks that commit out into a temporary
git worktree, generates its protos with this virtualenv's protoc, and runs its own
`python -m bench` there, with the same settings and groups, before this tree's run,
so both are measured on the same machine minutes apart. Its code comes first on
PYTHONPATH (ahead of this project's editable install), and the stack it starts passes
PYTHONPATH on to every service. Both stacks never run at once. The comparison table
(`ab_table`) pairs the rows the two runs share.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from bench.report import Row

PROTO_DIR = "proto"
GOOGLE_API_PROTOS = "google.api.annotations_pb2"


def _git(root: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def _generate(checkout: Path) -> None:
    """The baseline's protos, as `make gen` builds them, with this venv's protoc."""
    gen = checkout / "gen"
    gen.mkdir(exist_ok=True)
    import google.api.annotations_pb2 as annotations  # for the include path only

    google_root = Path(annotations.__file__).resolve().parents[2]
    protos = sorted(
        str(p.relative_to(checkout / PROTO_DIR)) for p in (checkout / PROTO_DIR).rglob("*.proto")
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{checkout / PROTO_DIR}",
            f"-I{google_root}",
            f"--python_out={gen}",
            f"--pyi_out={gen}",
            f"--grpc_python_out={gen}",
            "--include_imports",
            "--include_source_info",
            f"--descriptor_set_out={gen / 'aiport.pb'}",
            *protos,
        ],
        cwd=checkout,
        check=True,
    )
    for package in (gen / "aiport", gen / "aiport" / "v1"):
        (package / "__init__.py").touch()


def run(project_root: Path, rev: str, argv: list[str], workdir: Path) -> dict[str, Any]:
    """Run the bench of commit `rev` with `argv`; its results document, with its commit."""
    commit = _git(project_root, "rev-parse", "--short", f"{rev}^{{commit}}")
    checkout = workdir / f"baseline-{commit}"
    results = workdir / "baseline-results"
    _git(project_root, "worktree", "add", "--detach", str(checkout), commit)
    try:
        _generate(checkout)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(checkout), str(checkout / "gen")]),
        }
        env.pop("BENCH_BASELINE", None)  # the baseline measures itself only
        print(f"bench: measuring the baseline {commit} first ...", flush=True)
        subprocess.run(
            [sys.executable, "-m", "bench", *argv, "--results-dir", str(results)],
            cwd=checkout,
            env=env,
            check=True,
        )
        document: dict[str, Any] = orjson.loads((results / "latest.json").read_bytes())
    finally:
        subprocess.run(
            ["git", "worktree", "remove", "--force", str(checkout)],
            cwd=project_root,
            capture_output=True,
        )
    document["baseline_commit"] = commit
    return document


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _ratio(before: float | None, after: float | None) -> str:
    if before is None or after is None or before <= 0:
        return "—"
    return f"{after / before:.2f}×"


def _cell(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def ab_table(baseline_rows: list[dict[str, Any]], rows: list[Row]) -> list[list[str]]:
    """Every stack row both runs measured: CPU per request, added p50, req/s, side by side."""
    before = {(r["scenario"], r["path"], r["concurrency"]): r for r in baseline_rows}
    table = [
        [
            "scenario",
            "c",
            "CPU ms/req before",
            "after",
            "after/before",
            "added p50 before",
            "after",
            "req/s before",
            "after",
        ]
    ]
    for row in rows:
        old = before.get((row.scenario, row.path, row.concurrency))
        if old is None or row.path != "stack":
            continue
        cpu_before = _num(old.get("cpu_ms_per_request"))
        table.append(
            [
                row.scenario,
                str(row.concurrency),
                _cell(cpu_before, 3),
                _cell(row.cpu_ms_per_request, 3),
                _ratio(cpu_before, row.cpu_ms_per_request),
                _cell(_num(old.get("added_p50_ms")), 2),
                _cell(row.added_p50_ms, 2),
                _cell(_num(old.get("rps")), 0),
                _cell(row.rps, 0),
            ]
        )
    return table


__all__ = ["ab_table", "run"]
