"""Observability on the running stack: one request id from the edge to the
upstream and into every service's log, and /metrics on every process showing
the series the traffic implies.

The billing and providers logs show a successful call only through the gRPC
access log (AIPORT_GRPC_ACCESS_LOG=1, set for the integration stack)."""

from __future__ import annotations

import json
import re
import secrets
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
import openai
from aiport.v1 import billing_pb2_grpc, providers_pb2, providers_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from deploy.local.stack import Stack, StackConfig
from services.common.canonical_chat import from_chat_body
from tests.integration.conftest import NewAccount, balance_micros
from tests.integration.test_jobs import poll, submit

WAIT_SECONDS = 15.0
CHAT = "/aiport.v1.Chat/CreateChatCompletion"

Sample = tuple[str, dict[str, str], float]


def eventually(check: Callable[[], bool], what: str, seconds: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"not seen within {seconds}s: {what}"
        time.sleep(0.2)


# -- logs --------------------------------------------------------------------------------------


def log_files(stack: Stack, service: str) -> list[Path]:
    """A service's log, and its replicas' ("gateway-2.log") when there are some."""
    run_dir = stack.config.run_dir
    replicas = [p for p in run_dir.glob(f"{service}-*.log") if p.stem.rpartition("-")[2].isdigit()]
    return [run_dir / f"{service}.log", *replicas]


def lines_with(stack: Stack, service: str, request_id: str) -> list[dict[str, Any]]:
    found = []
    for path in log_files(stack, service):
        if not path.exists():
            continue
        for raw in path.read_text(errors="replace").splitlines():
            if request_id not in raw:
                continue
            try:
                line = json.loads(raw)
            except json.JSONDecodeError:
                continue  # Envoy or a C-core line, not ours
            if isinstance(line, dict) and line.get("request_id") == request_id:
                found.append(line)
    return found


def wait_for_lines(stack: Stack, service: str, request_id: str) -> list[dict[str, Any]]:
    eventually(lambda: bool(lines_with(stack, service, request_id)), f"{request_id} in {service}")
    return lines_with(stack, service, request_id)


def test_a_chosen_request_id_reaches_every_hop_and_log(
    stack: Stack, http: httpx.Client, sandbox: httpx.Client
) -> None:
    request_id = f"it-obs-{uuid.uuid4().hex}"
    response = http.post(
        "/v1/chat/completions",
        json={"model": "kimi-k2.6", "messages": [{"role": "user", "content": "hello"}]},
        headers={"x-request-id": request_id},
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == request_id
    gateway = wait_for_lines(stack, "gateway", request_id)
    assert any(line["msg"] == "chat completed" for line in gateway)
    billing = wait_for_lines(stack, "billing", request_id)
    assert {line["method"] for line in billing if line["msg"] == "rpc"} >= {
        "/aiport.v1.Billing/AuthorizeHold",
        "/aiport.v1.Billing/CaptureHold",
    }
    providers = wait_for_lines(stack, "providers", request_id)
    # A non-stream chat is one unary call to providers.
    assert any(line.get("method") == "/aiport.v1.Providers/CompleteChat" for line in providers)
    # The upstream received it as X-Request-Id.
    upstream = wait_for_lines(stack, "sandbox", request_id)
    assert any(line["path"] == "/v1/chat/completions" for line in upstream)
    # Every line the edge answered carries an id of its own otherwise.
    other = http.get("/v1/balance")
    assert other.status_code == 200
    generated = other.headers["x-request-id"]
    assert generated and generated != request_id
    wait_for_lines(stack, "gateway", generated)


def test_an_image_job_carries_its_request_id_to_the_worker(
    stack: Stack, http: httpx.Client
) -> None:
    request_id = f"it-job-{uuid.uuid4().hex}"
    response = http.post(
        "/v1/image/generate",
        json={"model": "gpt-image-2", "prompt": "a lighthouse", "resolution": "1k"},
        headers={"x-request-id": request_id},
    )
    assert response.status_code == 202, response.text
    job = poll(http, response.json()["job_id"])
    assert job["status"] == "done", job
    worker = wait_for_lines(stack, "worker-image", request_id)
    messages = {line["msg"] for line in worker}
    assert {"job started", "job outcome sent"} <= messages
    assert all(line.get("job_id", job["job_id"]) == job["job_id"] for line in worker)
    jobs = wait_for_lines(stack, "jobs", request_id)
    # Created under the id, and finished and settled under it again (the outcome
    # message brings it back from the worker).
    assert {"job created", "job finished", "job settled"} <= {line["msg"] for line in jobs}
    upstream = wait_for_lines(stack, "sandbox", request_id)
    assert any(line["path"] == "/v1/images/generations" for line in upstream)


def test_a_reused_request_id_is_only_a_label(
    base_url: str, new_account: NewAccount, billing: billing_pb2_grpc.BillingStub
) -> None:
    """The client chooses x-request-id, so it must never key a hold or a job: the same
    id twice is two calls charged twice, and another account reusing it is neither
    refused nor shown the first account's job."""
    request_id = f"it-reuse-{uuid.uuid4().hex}"
    first, second = new_account("100000"), new_account("100000")
    chat = {"model": "kimi-k2.6", "messages": [{"role": "user", "content": "hello"}]}
    image = {"model": "gpt-image-2", "prompt": "a lighthouse", "resolution": "1k"}
    job_ids = []
    for account in (first, first, second):
        with httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {account.api_key}", "x-request-id": request_id},
            timeout=30,
        ) as http:
            before = balance_micros(billing, account.account_id)
            response = http.post("/v1/chat/completions", json=chat)
            assert response.status_code == 200, response.text
            eventually(
                lambda: balance_micros(billing, account.account_id) < before,  # noqa: B023
                f"the chat of {account.account_id} charged",
            )
            accepted = http.post("/v1/image/generate", json=image)
            assert accepted.status_code == 202, accepted.text
            job = poll(http, accepted.json()["job_id"])
            assert job["status"] == "done", job
            job_ids.append(job["job_id"])
    assert len(set(job_ids)) == 3, job_ids


# -- metrics -----------------------------------------------------------------------------------


def scrape(url: str) -> list[Sample]:
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200, f"{url}: {response.status_code}"
    return [
        (sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    ]


def by_service(stack: Stack) -> dict[str, list[Sample]]:
    """Samples of every process, replicas of one service pooled together."""
    pooled: dict[str, list[Sample]] = defaultdict(list)
    for name, url in stack.metrics_urls().items():
        pooled[re.sub(r"-\d+$", "", name)].extend(scrape(url))
    return pooled


def total(samples: list[Sample], name: str, **labels: str) -> float:
    return sum(
        value
        for sample_name, sample_labels, value in samples
        if sample_name == name and all(sample_labels.get(k) == v for k, v in labels.items())
    )


def present(samples: list[Sample], name: str, **labels: str) -> bool:
    return any(
        sample_name == name and all(sample_labels.get(k) == v for k, v in labels.items())
        for sample_name, sample_labels, _ in samples
    )


def test_every_process_shows_the_series_its_traffic_implies(
    stack: Stack, client: openai.OpenAI, http: httpx.Client, base_url: str
) -> None:
    # Traffic: a chat, a stream, a chat and an image that fail over, a job to
    # completion (and its download), a bad key.
    client.chat.completions.create(
        model="kimi-k2.6", messages=[{"role": "user", "content": "plain"}]
    )
    list(
        client.chat.completions.create(
            model="kimi-k2.6", messages=[{"role": "user", "content": "stream"}], stream=True
        )
    )
    client.chat.completions.create(
        model="kimi-k2.6", messages=[{"role": "user", "content": "x [sim:fail-route=primary]"}]
    )
    accepted = submit(
        http,
        "/v1/image/generate",
        {"model": "gpt-image-2", "prompt": "a temple [sim:fail-route=primary]"},
    )
    job = poll(http, accepted["job_id"])
    assert job["status"] == "done", job
    assert httpx.get(job["result_url"], timeout=10).status_code == 200
    bad = httpx.get(f"{base_url}/v1/models", headers={"Authorization": "Bearer aip_live_not_a_key"})
    assert bad.status_code == 401

    services = by_service(stack)
    expected = {"gateway", "billing", "providers", "jobs", "worker-image", "worker-video"}
    assert expected | {"files", "edge"} <= set(services)

    gateway = services["gateway"]
    assert total(gateway, "aiport_grpc_server_requests_total", method=CHAT, code="OK") >= 3
    assert total(gateway, "aiport_grpc_server_request_seconds_count", method=CHAT) >= 3
    assert (
        total(
            gateway,
            "aiport_grpc_server_requests_total",
            method="/aiport.v1.Catalog/ListModels",
            code="UNAUTHENTICATED",
        )
        >= 1
    )

    billing = services["billing"]
    authorize = "/aiport.v1.Billing/AuthorizeHold"
    assert total(billing, "aiport_grpc_server_requests_total", method=authorize, code="OK") >= 3
    assert present(billing, "aiport_billing_open_holds")
    assert present(billing, "aiport_billing_open_holds_micros")

    providers = services["providers"]
    # Two plain chats (unary CompleteChat) and one stream (ChatCompletion).
    complete = "/aiport.v1.Providers/CompleteChat"
    assert total(providers, "aiport_grpc_server_requests_total", method=complete, code="OK") >= 2
    stream = "/aiport.v1.Providers/ChatCompletion"
    assert total(providers, "aiport_grpc_server_requests_total", method=stream, code="OK") >= 1
    assert total(providers, "aiport_upstream_requests_total", outcome="ok") >= 3
    assert (
        total(
            providers,
            "aiport_upstream_requests_total",
            provider="sandbox-openai-primary",
            outcome="server_error",
        )
        >= 1
    )
    assert total(providers, "aiport_upstream_request_seconds_count") >= 4
    primary = "sandbox-openai-primary/kimi-k2.6"
    assert total(providers, "aiport_failovers_total", route=primary, reason="server_error") >= 1
    assert present(providers, "aiport_circuit_breaker_state", route=primary)

    worker = services["worker-image"]
    assert total(worker, "aiport_upstream_requests_total", outcome="ok") >= 1
    images = "sandbox-images-primary/gpt-image-2"
    assert total(worker, "aiport_failovers_total", route=images, reason="server_error") >= 1
    assert present(worker, "aiport_circuit_breaker_state", route=images)

    jobs = services["jobs"]
    assert total(jobs, "aiport_jobs_finished_total", modality="image", status="done") >= 1
    assert total(jobs, "aiport_grpc_server_requests_total", code="OK") >= 1

    def gauges_refreshed() -> bool:
        now = by_service(stack)["jobs"]
        work_queue = f"{stack.config.amqp_prefix}.work.image"
        return present(now, "aiport_jobs_active", modality="image", status="pending") and present(
            now, "aiport_queue_messages_ready", queue=work_queue
        )

    eventually(gauges_refreshed, "jobs and queue gauges")

    files = services["files"]
    assert total(files, "aiport_http_requests_total", route="files", status="200") >= 1

    edge = services["edge"]
    assert total(edge, "envoy_http_downstream_rq_total", envoy_http_conn_manager_prefix="edge") >= 5


# -- tracing -----------------------------------------------------------------------------------


def test_a_trace_continues_through_providers_to_the_upstream(tmp_path: Path) -> None:
    """Providers and the sandbox as processes of their own, with tracing to a file:
    the caller's traceparent is continued by the server span, the upstream HTTP
    call is its child, and SIGTERM flushes every span to the file."""
    spans = tmp_path / "spans-providers.jsonl"
    config = StackConfig.on_free_ports("postgresql+psycopg://unused@127.0.0.1/unused", tmp_path)
    config.extra_env["AIPORT_TRACING"] = f"file:{spans}"
    mini = Stack(config)
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    try:
        mini.start_service("sandbox")
        mini.start_service("providers")
        with grpc.insecure_channel(f"127.0.0.1:{config.port('providers')}") as chan:
            events = list(
                providers_pb2_grpc.ProvidersStub(chan).ChatCompletion(
                    providers_pb2.ChatCompletionRequest(
                        model="kimi-k2.6",
                        chat=from_chat_body(
                            {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
                        ),
                        completion_id="chatcmpl-trace",
                        created_unix=1,
                        request_id="trace-req",
                    ),
                    metadata=(
                        ("traceparent", f"00-{trace_id}-{parent_id}-01"),
                        ("x-request-id", "trace-req"),
                    ),
                    timeout=30,
                )
            )
        assert [e.WhichOneof("event") for e in events] == ["completion", "usage"]
    finally:
        mini.stop()  # SIGTERM: serve() shuts tracing down, which flushes
    lines = [json.loads(line) for line in spans.read_text().splitlines()]
    servers = [line for line in lines if line["kind"] == "SERVER"]
    assert [s["name"] for s in servers] == ["aiport.v1.Providers/ChatCompletion"]
    server = servers[0]
    assert server["trace_id"] == trace_id and server["parent_span_id"] == parent_id
    assert server["service"] == "providers" and server["status"] == "UNSET"
    assert server["attributes"]["aiport.request_id"] == "trace-req"
    upstream = [line for line in lines if line["kind"] == "CLIENT"]
    assert len(upstream) == 1
    assert upstream[0]["trace_id"] == trace_id
    assert upstream[0]["parent_span_id"] == server["span_id"]
    assert upstream[0]["attributes"]["aiport.provider"] == "sandbox-openai-primary"
    assert upstream[0]["attributes"]["aiport.outcome"] == "ok"
