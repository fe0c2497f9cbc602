"""The customer's usage and keys through the edge: every paid call is a record
whose cost is what the balance lost; keys are managed by a key with the manage
scope; no account can see or touch another's."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
from aiport.v1 import billing_pb2, billing_pb2_grpc

from services.common.money import micros_to_idr

from .conftest import Account, NewAccount, balance_micros

CHAT = {"model": "kimi-k2.6", "messages": [{"role": "user", "content": "hello [sim:tokens=7]"}]}


def client_for(base_url: str, api_key: str) -> httpx.Client:
    return httpx.Client(
        base_url=base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=30
    )


@pytest.fixture
def manager(
    new_account: NewAccount, billing: billing_pb2_grpc.BillingStub, base_url: str
) -> Iterator[tuple[Account, httpx.Client]]:
    """A funded account and a client using a key with the manage scope."""
    account = new_account("100000")
    key = billing.CreateApiKey(
        billing_pb2.CreateApiKeyRequest(
            account_id=account.account_id, name="ops", scopes=["inference", "manage"]
        )
    )
    with client_for(base_url, key.api_key) as http:
        yield account, http


def usage(http: httpx.Client, **params: str) -> dict[str, Any]:
    response = http.get("/v1/usage", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def finished(http: httpx.Client, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        job: dict[str, Any] = http.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("done", "failed"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.2)


def test_each_paid_call_is_a_record_that_matches_the_money(
    new_account: NewAccount, billing: billing_pb2_grpc.BillingStub, base_url: str
) -> None:
    account = new_account("100000")
    start = balance_micros(billing, account.account_id)
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=account.api_key)
    reply = client.chat.completions.create(
        model="kimi-k2.6",
        messages=[{"role": "user", "content": "hello [sim:tokens=7]"}],
        extra_headers={"x-request-id": "usage-it-1"},
    )
    assert reply.usage is not None
    after_chat = balance_micros(billing, account.account_id)
    with client_for(base_url, account.api_key) as http:
        failed = http.post(
            "/v1/chat/completions",
            json={"model": "kimi-k2.6", "messages": [{"role": "user", "content": "x [sim:fail]"}]},
        )
        assert failed.status_code == 502
        accepted = http.post("/v1/image/generate", json={"prompt": "a temple at dawn"})
        assert accepted.status_code == 202, accepted.text
        job = finished(http, accepted.json()["job_id"])
        assert job["status"] == "done"
        deadline = time.monotonic() + 20
        while True:  # the job's capture lands just after it shows done
            records = usage(http)["data"]
            if records[0]["status"] != "in_progress" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    image, refused, chat = records
    assert (chat["endpoint"], chat["status"], chat["model"]) == (
        "chat.completions",
        "succeeded",
        "kimi-k2.6",
    )
    assert (chat["key_id"], chat["request_id"], chat["job_id"]) == (
        account.key_id,
        "usage-it-1",
        None,
    )
    assert Decimal(chat["cost_idr"]) * 1_000_000 == start - after_chat
    assert chat["input_tokens"] == reply.usage.prompt_tokens
    assert chat["output_tokens"] == reply.usage.completion_tokens
    assert chat["latency_ms"] is not None and chat["latency_ms"] >= 0
    assert (refused["status"], refused["cost_idr"]) == ("refunded", "0")
    assert (image["endpoint"], image["job_id"], image["status"]) == (
        "image.generate",
        job["job_id"],
        "succeeded",
    )
    spent = start - balance_micros(billing, account.account_id)
    assert sum(Decimal(r["cost_idr"]) for r in records) * 1_000_000 == spent
    with client_for(base_url, account.api_key) as http:
        summary = http.get("/v1/usage/summary", params={"group_by": "model"}).json()
    assert summary["total_requests"] == 3
    assert Decimal(summary["total_cost_idr"]) * 1_000_000 == spent
    assert summary["time_zone"] == "Asia/Jakarta"


def test_usage_pages_and_filters_and_names_bad_parameters(
    new_account: NewAccount, base_url: str
) -> None:
    account = new_account("100000")
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=account.api_key)
    for _ in range(3):
        client.chat.completions.create(**CHAT)  # type: ignore[call-overload]
    with client_for(base_url, account.api_key) as http:
        first = usage(http, limit="2")
        assert (len(first["data"]), first["has_more"]) == (2, True)
        rest = usage(http, limit="2", after=first["next_cursor"])
        assert (len(rest["data"]), rest["has_more"], rest["next_cursor"]) == (1, False, None)
        assert usage(http, model="deepseek-v4-flash")["data"] == []
        for params, param in (
            ({"limit": "0"}, "limit"),
            ({"start_time": "soon"}, "start_time"),
            ({"after": "nope"}, "after"),
            ({"key_id": "key_x"}, "key_id"),
            # A key where its id belongs is still redacted at the edge, and refused.
            ({"key_id": "aip_live_" + "a" * 32}, "key_id"),
        ):
            response = http.get("/v1/usage", params=params)
            assert response.status_code == 400, response.text
            assert response.json()["error"]["param"] == param
        bad = http.get("/v1/usage/summary", params={"time_zone": "Mars/Base"})
        assert (bad.status_code, bad.json()["error"]["param"]) == (400, "time_zone")


def test_no_account_sees_anothers_usage_or_pages_through_it(
    new_account: NewAccount, base_url: str
) -> None:
    mine, theirs = new_account("100000"), new_account("100000")
    for account in (mine, theirs):
        client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=account.api_key)
        client.chat.completions.create(**CHAT)  # type: ignore[call-overload]
    with client_for(base_url, theirs.api_key) as http:
        (their_record,) = usage(http)["data"]
    with client_for(base_url, mine.api_key) as http:
        (my_record,) = usage(http)["data"]
        assert my_record["id"] != their_record["id"]
        assert usage(http, key_id=theirs.key_id)["data"] == []
        # Their record id as a cursor is refused like a malformed one.
        response = http.get("/v1/usage", params={"after": their_record["id"]})
        assert (response.status_code, response.json()["error"]["param"]) == (400, "after")


def test_keys_need_the_manage_scope_and_a_revoked_key_is_refused_at_once(
    manager: tuple[Account, httpx.Client], account: Account, base_url: str
) -> None:
    owner, http = manager
    with client_for(base_url, owner.api_key) as plain:
        denied = plain.get("/v1/keys")
        assert denied.status_code == 403, denied.text
        assert denied.json()["error"]["code"] == "insufficient_scope"
        assert plain.post("/v1/keys", json={"name": "x"}).status_code == 403
    created = http.post("/v1/keys", json={"name": "ci runner"})
    assert created.status_code == 200, created.text
    new_key = created.json()
    assert new_key["key"].startswith("aip_live_") and new_key["scopes"] == ["inference"]
    assert new_key["name"] == "ci runner" and new_key["revoked"] is None
    listed = http.get("/v1/keys").json()["data"]
    assert new_key["id"] in {k["id"] for k in listed}
    assert all("key" not in k for k in listed)
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=new_key["key"])
    client.chat.completions.create(**CHAT)  # type: ignore[call-overload]
    shown = {k["id"]: k for k in http.get("/v1/keys").json()["data"]}
    assert shown[new_key["id"]]["last_used"] is not None
    revoked = http.delete(f"/v1/keys/{new_key['id']}")
    assert revoked.status_code == 200 and revoked.json()["revoked"] is not None
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(**CHAT)  # type: ignore[call-overload]
    # Another account's key: not found, and it keeps working.
    other = http.delete(f"/v1/keys/{account.key_id}")
    assert (other.status_code, other.json()["error"]["param"]) == (404, "key_id")
    with client_for(base_url, account.api_key) as theirs:
        assert theirs.get("/v1/balance").status_code == 200
    for body, param in (({"scopes": ["root"]}, "scopes"), ({"name": 5}, "name")):
        bad = http.post("/v1/keys", json=body)
        assert (bad.status_code, bad.json()["error"]["param"]) == (400, param)


def test_a_disabled_accounts_keys_stop_at_once(
    new_account: NewAccount, billing: billing_pb2_grpc.BillingStub, base_url: str
) -> None:
    account = new_account("100000")
    with client_for(base_url, account.api_key) as http:
        assert http.get("/v1/balance").status_code == 200
        billing.SetAccountDisabled(
            billing_pb2.SetAccountDisabledRequest(
                account_id=account.account_id, disabled=True, reason="test"
            )
        )
        assert http.get("/v1/balance").status_code == 401
        assert http.post("/v1/chat/completions", json=CHAT).status_code == 401
        billing.SetAccountDisabled(
            billing_pb2.SetAccountDisabledRequest(account_id=account.account_id, disabled=False)
        )
        assert http.get("/v1/balance").status_code == 200
    assert micros_to_idr(balance_micros(billing, account.account_id)) == "100000"


def test_the_statement_shows_top_ups_and_charges_with_the_balance_after(
    new_account: NewAccount, billing: billing_pb2_grpc.BillingStub, base_url: str
) -> None:
    account = new_account("100000")
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=account.api_key)
    client.chat.completions.create(**CHAT)  # type: ignore[call-overload]
    with client_for(base_url, account.api_key) as http:
        statement = http.get("/v1/statement").json()
        (record,) = usage(http)["data"]
        charge, topup = statement["data"]
        assert (topup["kind"], topup["amount_idr"], topup["usage_record_id"]) == (
            "topup",
            "100000",
            None,
        )
        assert charge["kind"] == "charge" and charge["usage_record_id"] == record["id"]
        assert Decimal(charge["amount_idr"]) == -Decimal(record["cost_idr"])
        assert Decimal(charge["balance_after_idr"]) * 1_000_000 == balance_micros(
            billing, account.account_id
        )
        first = http.get("/v1/statement", params={"limit": "1"}).json()
        assert first["has_more"] and first["data"][0]["id"] == charge["id"]
        rest = http.get("/v1/statement", params={"after": first["next_cursor"]}).json()
        assert [e["id"] for e in rest["data"]] == [topup["id"]] and rest["next_cursor"] is None
        bad = http.get("/v1/statement", params={"after": "x"})
        assert (bad.status_code, bad.json()["error"]["param"]) == (400, "after")
