"""Fuzz the public API from its OpenAPI description (deploy/openapi/openapi.yaml).

schemathesis generates requests for every operation, both ones that fit the
document (positive) and ones that break it (negative), and sends them through
the edge with a funded key. Whatever it sends, the API must never answer 5xx
(the sandbox upstream is healthy, so not even 502/503), and every non-2xx
answer must be application/json in exactly our error shape. Bounded and
deterministic: a fixed number of derandomized cases per operation and mode.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from requests.structures import CaseInsensitiveDict
from schemathesis import Case, GenerationMode
from schemathesis.core.result import Ok
from schemathesis.core.transport import Response
from schemathesis.schemas import APIOperation

from tests.integration.conftest import NewAccount
from tests.unit.test_openapi_sync import proto_routes

OPENAPI = Path(__file__).resolve().parents[2] / "deploy" / "openapi" / "openapi.yaml"
CASES_PER_OPERATION_AND_MODE = 25
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
REQUEST_TIMEOUT_SECONDS = 15
GRPC_SAFE_HEADER = re.compile(r"[0-9A-Za-z_.-]+")
ERROR_FIELDS = {"message", "type", "param", "code"}


@dataclass(frozen=True)
class Finding:
    operation: str
    mode: str
    problem: str
    request: str
    status: int
    body: str

    def __str__(self) -> str:
        return (
            f"{self.operation} [{self.mode}] {self.problem}\n"
            f"  request:  {self.request}\n"
            f"  response: {self.status} {self.body}"
        )


def _header(response: Response, name: str) -> str:
    for key, values in response.headers.items():
        if key.lower() == name:
            return ", ".join(values)
    return ""


def openai_error_problem(body: Any) -> str | None:
    """Why this error body is not `{"error": {message, type, param, code}}`, or None."""
    if not isinstance(body, dict) or set(body) != {"error"}:
        return "body is not exactly {'error': ...}"
    error = body["error"]
    if not isinstance(error, dict) or set(error) != ERROR_FIELDS:
        return f"error keys are {sorted(error) if isinstance(error, dict) else type(error)}"
    if not isinstance(error["message"], str) or not error["message"]:
        return "error.message is not a non-empty string"
    if not isinstance(error["type"], str) or not error["type"]:
        return "error.type is not a non-empty string"
    if not isinstance(error["code"], str) or not error["code"]:
        return "error.code is not a non-empty string"
    if error["param"] is not None and not isinstance(error["param"], str):
        return "error.param is neither a string nor null"
    return None


def anthropic_error_problem(body: Any) -> str | None:
    """Why this /v1/messages error body is not `{"type": "error", "error": {type, message}}`."""
    if not isinstance(body, dict) or set(body) != {"type", "error"} or body["type"] != "error":
        return "body is not exactly {'type': 'error', 'error': ...}"
    error = body["error"]
    if not isinstance(error, dict) or set(error) != {"type", "message"}:
        return "error keys are not {type, message}"
    if not all(isinstance(error[k], str) and error[k] for k in ("type", "message")):
        return "error.type or error.message is not a non-empty string"
    return None


def response_problem(path: str, status: int, content_type: str, content: bytes) -> str | None:
    if status >= 500:
        return f"server error {status}"
    if status < 400:
        return None
    if content_type.split(";")[0].strip().lower() != "application/json":
        return f"content-type is {content_type!r}, not application/json"
    try:
        body = json.loads(content)
    except ValueError:
        return "body is not JSON"
    if path.startswith("/v1/messages"):
        return anthropic_error_problem(body)
    return openai_error_problem(body)


class Fuzzer:
    def __init__(self, base_url: str, api_key: str) -> None:
        self.base_url = base_url
        self.headers = {"Authorization": f"Bearer {api_key}"}
        self.tried: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.findings: dict[tuple[str, str], Finding] = {}
        self.no_cases: list[str] = []

    def check(self, operation: str, mode: GenerationMode, case: Case[Any]) -> None:
        # Negative mode also "breaks" security by dropping the key; put it back so the
        # broken bodies, paths and headers reach validation instead of stopping at a 401.
        if case.headers is None:
            case.headers = CaseInsensitiveDict()
        case.headers.update(self.headers)
        response = case.call(base_url=self.base_url, timeout=REQUEST_TIMEOUT_SECONDS)
        self.tried[operation] += 1
        self.statuses[response.status_code] += 1
        problem = response_problem(
            case.operation.path,
            response.status_code,
            _header(response, "content-type"),
            response.content,
        )
        if problem is None:
            return
        # Separate root causes: header names HTTP allows but gRPC metadata does not.
        odd_headers = sorted(k for k in case.headers or {} if not GRPC_SAFE_HEADER.fullmatch(k))
        if odd_headers:
            problem += f" (with header names {odd_headers})"
        key = (operation, f"{response.status_code} {problem.split(' (')[0]} {bool(odd_headers)}")
        if key in self.findings:
            return
        self.findings[key] = Finding(
            operation=operation,
            mode=mode.value,
            problem=problem,
            request=case.as_curl_command(base_url=self.base_url),
            status=response.status_code,
            body=response.content[:600].decode("utf-8", "replace"),
        )

    def run(self, operation: APIOperation[Any, Any, Any, Any], mode: GenerationMode) -> None:
        label = operation.label
        strategy: st.SearchStrategy[Case[Any]] = operation.as_strategy(generation_mode=mode)

        @settings(
            max_examples=CASES_PER_OPERATION_AND_MODE,
            deadline=None,
            derandomize=True,  # the same cases on every run
            database=None,
            phases=[Phase.explicit, Phase.generate],  # findings are collected, not shrunk
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def fuzz(case: Case[Any]) -> None:
            self.check(label, mode, case)

        try:
            fuzz()
        except Unsatisfiable:
            # Only for negative mode on an operation with no input at all to break.
            self.no_cases.append(f"{label} [{mode.value}]")


def test_fuzz_public_api(base_url: str, new_account: NewAccount) -> None:
    # The text endpoints spend real (test) money on every accepted case.
    account = new_account("100000000")
    schema = schemathesis.openapi.from_path(OPENAPI)
    operations = [result.ok() for result in schema.get_all_operations() if isinstance(result, Ok)]
    # Every route the protos give the edge (the OpenAPI document has exactly those).
    assert len(operations) == len(proto_routes())

    fuzzer = Fuzzer(base_url, account.api_key)
    started = time.monotonic()
    for operation in operations:
        for mode in MODES:
            fuzzer.run(operation, mode)
    elapsed = time.monotonic() - started

    total = sum(fuzzer.tried.values())
    print(f"\nfuzz cases tried: {total} in {elapsed:.1f} s")
    for label, count in sorted(fuzzer.tried.items()):
        print(f"  {count:4d}  {label}")
    print("  statuses: " + ", ".join(f"{s}: {n}" for s, n in sorted(fuzzer.statuses.items())))
    if fuzzer.no_cases:
        print("  nothing to generate (no input): " + ", ".join(fuzzer.no_cases))
    for finding in fuzzer.findings.values():
        print(f"FINDING {finding}")

    assert all(fuzzer.tried[op.label] > 0 for op in operations), fuzzer.tried
    assert not fuzzer.findings, "\n\n".join(str(f) for f in fuzzer.findings.values())


ANTHROPIC_ERROR = {"type": "error", "error": {"type": "t", "message": "m"}}


@pytest.mark.parametrize(
    ("path", "status", "content_type", "body", "ok"),
    [
        ("/v1/models", 400, "application/json", {"error": dict.fromkeys(ERROR_FIELDS, "x")}, True),
        (
            "/v1/models",
            404,
            "application/json",
            {"error": {"message": "m", "type": "t", "param": None}},
            False,
        ),
        ("/v1/models", 400, "text/html", {"error": dict.fromkeys(ERROR_FIELDS, "x")}, False),
        ("/v1/models", 503, "application/json", {"error": dict.fromkeys(ERROR_FIELDS, "x")}, False),
        ("/v1/models", 200, "text/event-stream", "data: [DONE]", True),
        ("/v1/messages", 400, "application/json", ANTHROPIC_ERROR, True),
        (
            "/v1/messages",
            400,
            "application/json",
            {"error": dict.fromkeys(ERROR_FIELDS, "x")},
            False,
        ),
        ("/v1/models", 400, "application/json", ANTHROPIC_ERROR, False),
    ],
)
def test_the_checks_themselves(
    path: str, status: int, content_type: str, body: Any, ok: bool
) -> None:
    content = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    assert (response_problem(path, status, content_type, content) is None) is ok
