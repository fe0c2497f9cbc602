"""What the edge itself guarantees to an attacker and to a new user: keys sent
in the wrong place never reach a log or a response, clients cannot set gRPC
or internal headers, the edge serves only the public REST API (never a gRPC
call to an internal service), and a wrong method on a real path is a 405."""

from __future__ import annotations

import struct
import time
import uuid
from typing import Any

import grpc
import httpx
import pytest
from aiport.v1 import billing_pb2

from deploy.local.stack import Stack
from tests.integration.conftest import Account

HELLO = [{"role": "user", "content": "Hello"}]
ERROR_KEYS = {"message", "type", "param", "code"}
MODEL = "deepseek-v4-flash"


def our_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers.get("content-type", "").startswith("application/json"), response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == ERROR_KEYS, error
    for header in ("grpc-status", "grpc-message", "x-aiport-error", "x-aiport-http-status"):
        assert header not in response.headers
    return error


def edge_log_line(stack: Stack, request_id: str) -> str:
    """The edge's access-log line for a request (stdout is flushed about every second)."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        for line in stack.processes["edge"].log_path.read_text(errors="replace").splitlines():
            if request_id in line:
                return line
        time.sleep(0.2)
    raise AssertionError(f"no access-log line for {request_id}")


def other_logs(stack: Stack) -> dict[str, str]:
    return {
        name: process.log_path.read_text(errors="replace")
        for name, process in stack.processes.items()
        if name != "edge" and process.log_path.exists()
    }


# -- keys in the wrong place ---------------------------------------------------
@pytest.mark.parametrize("param", ["api_key", "key", "access_token", "token", "apikey", "secret"])
@pytest.mark.parametrize("path", ["/v1/balance", "/v1/nothing-here", "/v1/models"])
def test_key_in_query_string_never_logged_or_echoed(
    stack: Stack, base_url: str, account: Account, param: str, path: str
) -> None:
    secret = f"aip_live_Zq{uuid.uuid4().hex[:30]}"
    request_id = str(uuid.uuid4())
    response = httpx.get(
        f"{base_url}{path}",
        params={param: secret},
        headers={"Authorization": f"Bearer {account.api_key}", "x-request-id": request_id},
        timeout=30,
    )
    assert response.status_code in (200, 404), response.text
    assert secret not in response.text
    assert all(secret not in value for value in response.headers.values())
    line = edge_log_line(stack, request_id)
    assert secret not in line, line
    assert path in line, line
    assert '"method":"GET"' in line, line
    for name, text in other_logs(stack).items():
        assert secret not in text, name


def test_credential_headers_never_reach_a_service(
    stack: Stack, base_url: str, account: Account
) -> None:
    secret = f"aip_live_Zh{uuid.uuid4().hex[:30]}"
    response = httpx.get(
        f"{base_url}/v1/balance",
        headers={
            "Authorization": f"Bearer {account.api_key}",
            "x-api-key": secret,
            "api-key": secret,
            "x-debug": secret,
            # Every service logs the request id.
            "x-request-id": secret,
        },
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert secret not in response.text
    time.sleep(1.5)
    for name, process in stack.processes.items():
        assert secret not in process.log_path.read_text(errors="replace"), name


def test_404_does_not_echo_the_path(http: httpx.Client) -> None:
    marker = "ZqEchoMarker"
    for response in (
        http.get(f"/v1/{marker}/nothing"),
        http.post(f"/v2/{marker}", json={}),
        http.get(f"/v1/nothing?q={marker}"),
    ):
        error = our_error(response, 404)
        assert error["code"] == "not_found"
        assert marker not in response.text


# -- client-sent gRPC and internal headers ---------------------------------------
@pytest.mark.parametrize("timeout", ["1n", "5m", "2S", "10S", "garbage", "99999999H", "0n"])
def test_client_grpc_timeout_is_ignored(http: httpx.Client, timeout: str) -> None:
    response = http.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": HELLO, "max_tokens": 5},
        headers={"grpc-timeout": timeout},
    )
    assert response.status_code == 200, response.text
    assert response.json()["object"] == "chat.completion"
    balance = http.get("/v1/balance").json()
    assert balance["held_idr"] == "0", balance


@pytest.mark.parametrize(
    "headers",
    [
        {"grpc-encoding": "gzip"},
        {"grpc-accept-encoding": "gzip"},
        {"grpc-status": "0"},
        {"te": "gzip"},
        {"x-aiport-http-status": "202"},
        {"x-aiport-error": '{"error":{}}'},
        {"x-aiport-client": "1.2.3.4"},
        {"x-envoy-upstream-rq-timeout-ms": "1"},
        {"x-envoy-original-path": "/v1/elsewhere"},
    ],
    ids=lambda h: next(iter(h)),
)
def test_internal_headers_from_clients_are_dropped(
    http: httpx.Client, headers: dict[str, str]
) -> None:
    response = http.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": HELLO, "max_tokens": 5},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    assert response.json()["object"] == "chat.completion"


@pytest.mark.parametrize(
    "headers",
    [{"X-Bin-bin": "zz"}, {"grpc-tags-bin": "!!!"}, {"x-trace-bin": "%%%"}],
    ids=lambda h: next(iter(h)),
)
def test_binary_metadata_headers_are_dropped(http: httpx.Client, headers: dict[str, str]) -> None:
    """Headers named like gRPC binary metadata are dropped at the edge (no
    public endpoint reads one): the call is served as if they were absent."""
    balance = http.get("/v1/balance", headers=headers)
    assert balance.status_code == 200, balance.text
    chat = http.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": HELLO, "max_tokens": 5},
        headers=headers,
    )
    assert chat.status_code == 200, chat.text


# -- the edge serves the REST API only -----------------------------------------
def _grpc_frame(message: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(message)) + message


@pytest.mark.parametrize(
    "path",
    [
        "/aiport.v1.Billing/CreateAccount",
        "/aiport.v1.Billing/TopUp",
        "/aiport.v1.JobState/GetJob",
        "/aiport.v1.Account/GetBalance",
        "/grpc.health.v1.Health/Check",
    ],
)
@pytest.mark.parametrize("content_type", ["application/grpc", "application/grpc+proto"])
def test_grpc_calls_through_the_edge_are_404(
    stack: Stack, base_url: str, account: Account, path: str, content_type: str
) -> None:
    request_id = str(uuid.uuid4())
    response = httpx.post(
        base_url + path,
        content=_grpc_frame(b"\x0a\x04evil"),
        headers={
            "content-type": content_type,
            "te": "trailers",
            "authorization": f"Bearer {account.api_key}",
            "x-request-id": request_id,
        },
        timeout=30,
    )
    assert our_error(response, 404)["code"] == "not_found"
    time.sleep(1.5)
    for name, text in other_logs(stack).items():
        assert request_id not in text, f"{name} saw the gRPC call"


def test_grpc_client_through_the_edge_reaches_no_service(stack: Stack) -> None:
    """A real gRPC client (HTTP/2) calling billing through the edge is refused
    and billing never sees the call."""
    request_id = str(uuid.uuid4())
    edge = f"{stack.config.edge_host}:{stack.config.edge_port}"
    with grpc.insecure_channel(edge) as channel:
        create = channel.unary_unary(
            "/aiport.v1.Billing/CreateAccount",
            request_serializer=billing_pb2.CreateAccountRequest.SerializeToString,
            response_deserializer=billing_pb2.AccountInfo.FromString,
        )
        with pytest.raises(grpc.RpcError) as refused:
            create(
                billing_pb2.CreateAccountRequest(name="through-the-edge"),
                metadata=(("x-request-id", request_id),),
                timeout=10,
            )
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED  # HTTP 404
    time.sleep(1.5)
    for name, text in other_logs(stack).items():
        assert request_id not in text, f"{name} saw the gRPC call"


@pytest.mark.parametrize(
    "path", ["/aiport.v1.Billing/CreateAccount", "/aiport.v1.Account/GetBalance"]
)
def test_json_posts_to_grpc_paths_are_404(http: httpx.Client, path: str) -> None:
    assert our_error(http.post(path, json={"name": "x"}), 404)["code"] == "not_found"


# -- wrong method on a real path -------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/v1/chat/completions", "POST"),
        ("DELETE", "/v1/text/completions", "POST"),
        ("PUT", "/v1/image/generate", "POST"),
        ("POST", "/v1/balance", "GET"),
        ("POST", "/v1/models", "GET"),
        ("DELETE", "/v1/models/some-model", "GET"),
        ("PATCH", "/v1/jobs/abc123", "GET"),
        ("POST", "/v1/jobs", "GET"),
        ("POST", "/v1/pricing", "GET"),
    ],
)
def test_wrong_method_is_405_with_allow(
    http: httpx.Client, method: str, path: str, allow: str
) -> None:
    response = http.request(method, path)
    assert our_error(response, 405)["code"] == "method_not_allowed"
    assert [m.strip() for m in response.headers["allow"].split(",")] == [allow]


def test_right_method_is_still_served(http: httpx.Client) -> None:
    assert http.get("/v1/balance").status_code == 200
    assert http.get("/v1/models").status_code == 200
    our_error(http.get("/v1/jobs/nope"), 404)
