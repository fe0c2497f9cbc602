"""POST /v1/quote through the edge: the hold and expected cost of a request, with no
upstream call and no money moved; the quote agrees with the call it describes."""

from __future__ import annotations

from decimal import Decimal

import httpx
from aiport.v1 import billing_pb2_grpc

from tests.integration.conftest import Account, NewAccount, balance_micros, usage_records

CHAT = {
    "model": "deepseek-v4-flash",
    "max_tokens": 64,
    "messages": [{"role": "user", "content": "hello there [sim:tokens=20]"}],
}
VIDEO = {"prompt": "a temple at dawn", "duration": 6, "resolution": "720p"}


def idr(value: str) -> Decimal:
    return Decimal(value)


def test_a_chat_quote_moves_no_money_and_calls_no_upstream(
    base_url: str,
    http: httpx.Client,
    account: Account,
    billing: billing_pb2_grpc.BillingStub,
    sandbox: httpx.Client,
) -> None:
    sandbox.delete("/_sandbox/requests")
    before = balance_micros(billing, account.account_id)
    response = http.post("/v1/quote", json={"path": "/v1/chat/completions", "body": CHAT})
    assert response.status_code == 200, response.text
    quote = response.json()
    assert quote["object"] == "quote" and quote["currency"] == "IDR"
    assert (quote["path"], quote["model"]) == ("/v1/chat/completions", "deepseek-v4-flash")
    assert quote["max_output_tokens"] == 64 and quote["prompt_tokens"] > 0
    assert 0 < idr(quote["expected_cost_idr"]) <= idr(quote["hold_idr"])
    assert balance_micros(billing, account.account_id) == before
    assert sandbox.get("/_sandbox/requests").json() == []
    assert usage_records(base_url, account.api_key, seconds=0.5) == []

    # The call itself costs no more than the quote's hold.
    call = http.post("/v1/chat/completions", json=CHAT)
    assert call.status_code == 200
    assert 0 < idr(call.headers["x-aiport-cost-idr"]) <= idr(quote["hold_idr"])


def test_a_chat_quote_names_the_hold_the_call_places(
    base_url: str, new_account: NewAccount
) -> None:
    """An account that cannot cover the call is told the same amount the quote holds."""
    poor = new_account("0.001")
    headers = {"Authorization": f"Bearer {poor.api_key}"}
    quote = httpx.post(
        f"{base_url}/v1/quote",
        json={"path": "/v1/chat/completions", "body": CHAT},
        headers=headers,
    ).json()
    refused = httpx.post(f"{base_url}/v1/chat/completions", json=CHAT, headers=headers)
    assert refused.status_code == 429  # OpenAI's insufficient_quota
    assert refused.json()["error"]["code"] == "insufficient_quota"
    assert f"up to {quote['hold_idr']} IDR" in refused.json()["error"]["message"]


def test_a_video_quote_is_the_price_the_job_holds(http: httpx.Client) -> None:
    quote = http.post("/v1/quote", json={"path": "/v1/video/generate", "body": VIDEO}).json()
    assert quote["hold_idr"] == quote["expected_cost_idr"]
    assert quote["units"] == 6 and idr(quote["unit_price_idr"]) * 6 == idr(quote["hold_idr"])
    job = http.post("/v1/video/generate", json=VIDEO)
    assert job.status_code == 202
    assert idr(job.json()["estimated_cost_idr"]) == idr(quote["hold_idr"])


def test_messages_and_image_quotes(http: httpx.Client) -> None:
    messages = http.post(
        "/v1/quote",
        json={
            "path": "/v1/messages",
            "body": {"model": "claude-sonnet-4-6", "max_tokens": 32, "messages": CHAT["messages"]},
        },
    )
    assert messages.status_code == 200 and messages.json()["max_output_tokens"] == 32
    image = http.post("/v1/quote", json={"path": "/v1/image/generate", "body": {"prompt": "x"}})
    assert image.status_code == 200 and image.json()["units"] == 1


def test_a_bad_quote_is_a_400_naming_the_field(http: httpx.Client) -> None:
    response = http.post(
        "/v1/quote", json={"path": "/v1/chat/completions", "body": CHAT | {"max_tokens": 0}}
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "body.max_tokens"
    response = http.post("/v1/quote", json={"path": "/v1/nowhere", "body": {}})
    assert response.status_code == 400 and response.json()["error"]["param"] == "path"


def test_a_quote_needs_a_key(base_url: str) -> None:
    response = httpx.post(
        f"{base_url}/v1/quote", json={"path": "/v1/chat/completions", "body": CHAT}
    )
    assert response.status_code == 401
