"""Every error a text client can meet: the right status, our JSON shape, the
SDK's matching exception class with our message."""

from __future__ import annotations

from typing import Any, cast

import httpx
import openai
import pytest
from aiport.v1 import billing_pb2, billing_pb2_grpc
from openai.types.chat import ChatCompletionMessageParam

from tests.integration.conftest import Account, NewAccount

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello"}]


def assert_error_shape(response: httpx.Response, status: int, code: str | None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    assert error["code"] == code
    for header in ("grpc-status", "grpc-message", "x-aiport-error"):
        assert header not in response.headers
    return cast(dict[str, Any], error)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
        ({"messages": HELLO, "temperature": 3}, "temperature"),
        ({"messages": HELLO, "temperature": "hot"}, "temperature"),
        ({"messages": HELLO, "stream": "yes"}, "stream"),
        ({"messages": HELLO, "max_tokens": 0}, "max_tokens"),
        (
            {"messages": HELLO, "reasoning_effort": "extreme", "model": "gpt-5.4"},
            "reasoning_effort",
        ),
        ({"messages": HELLO, "reasoning_effort": "low"}, "reasoning_effort"),
        ({"messages": [{"role": "user", "content": "x" * 20_001}]}, "messages"),
        ({"messages": [{"role": "tool", "content": "42"}]}, "messages[0].tool_call_id"),
        ({"messages": HELLO, "tool_choice": "required"}, "tool_choice"),
    ],
)
def test_invalid_requests_are_400(http: httpx.Client, body: dict[str, Any], param: str) -> None:
    error = assert_error_shape(
        http.post("/v1/chat/completions", json=body), 400, "invalid_request_error"
    )
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


@pytest.mark.parametrize(
    "raw", [b"", b"{not json", b"[1,2]", b'{"messages": [{"role": "user", "content": "\xff"}]}']
)
def test_malformed_bodies_are_400(http: httpx.Client, raw: bytes) -> None:
    response = http.post(
        "/v1/chat/completions", content=raw, headers={"Content-Type": "application/json"}
    )
    assert_error_shape(response, 400, "invalid_request_error")


def test_content_cap_is_20000_characters(http: httpx.Client) -> None:
    ok = http.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "é" * 20_000}], "max_tokens": 5},
    )
    assert ok.status_code == 200, ok.text


def test_sdk_raises_bad_request_with_our_message(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="deepseek-v4-flash", messages=HELLO, temperature=2.5)
    assert "temperature" in info.value.message
    assert info.value.code == "invalid_request_error"


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer aip_live_nope", "Basic abc"])
def test_missing_or_bad_key_is_401(base_url: str, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    response = httpx.post(
        f"{base_url}/v1/chat/completions", json={"messages": HELLO}, headers=headers
    )
    error = assert_error_shape(response, 401, "unauthorized")
    assert error["type"] == "authentication_error"


def test_sdk_raises_authentication_error(base_url: str) -> None:
    bad = openai.OpenAI(base_url=f"{base_url}/v1", api_key="aip_live_wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="deepseek-v4-flash", messages=HELLO)


def test_unknown_model_is_404_model_not_found(client: openai.OpenAI, http: httpx.Client) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-9000", messages=HELLO)
    assert info.value.code == "MODEL_NOT_FOUND"
    # An image model is not a chat model.
    assert_error_shape(
        http.post("/v1/chat/completions", json={"model": "gpt-image-2", "messages": HELLO}),
        404,
        "MODEL_NOT_FOUND",
    )


def test_insufficient_balance_is_429_and_not_retried(
    base_url: str, new_account: NewAccount
) -> None:
    poor: Account = new_account("1")
    response = httpx.post(
        f"{base_url}/v1/chat/completions",
        json={"model": "claude-opus-4-8", "messages": HELLO},
        headers={"Authorization": f"Bearer {poor.api_key}"},
    )
    error = assert_error_shape(response, 429, "insufficient_quota")
    assert error["type"] == "insufficient_quota"
    assert response.headers["x-should-retry"] == "false"
    sdk = openai.OpenAI(base_url=f"{base_url}/v1", api_key=poor.api_key, max_retries=3)
    with pytest.raises(openai.RateLimitError) as info:
        sdk.chat.completions.create(model="claude-opus-4-8", messages=HELLO)
    assert info.value.code == "insufficient_quota"


def test_upstream_failure_is_502(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(
            model="deepseek-v4-flash", messages=[{"role": "user", "content": "hi [sim:fail]"}]
        )
    assert info.value.status_code == 502
    assert info.value.code == "provider_error"


def test_upstream_rejection_is_400(http: httpx.Client) -> None:
    response = http.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi [sim:status=400]"}]},
    )
    assert_error_shape(response, 400, "invalid_request_error")
    assert "upstream" in response.json()["error"]["message"]


def test_unknown_path_is_404_in_our_shape(http: httpx.Client) -> None:
    assert_error_shape(http.get("/v1/nothing-here"), 404, "not_found")
    assert_error_shape(http.post("/v2/chat/completions", json={}), 404, "not_found")


def test_revoked_key_is_refused_at_once(
    base_url: str, new_account: NewAccount, billing: billing_pb2_grpc.BillingStub
) -> None:
    acct: Account = new_account("1000")
    sdk = openai.OpenAI(base_url=f"{base_url}/v1", api_key=acct.api_key, max_retries=0)
    assert sdk.models.list().data
    billing.RevokeApiKey(billing_pb2.RevokeApiKeyRequest(key_id=acct.key_id))
    with pytest.raises(openai.AuthenticationError):
        sdk.models.list()
