"""Idempotency-Key on the POSTs that hold no money (keys, top-ups, uploads, the
balance alert) through the edge: a repeat gets the first answer with
Idempotent-Replayed and does nothing again; a different body is 422; a key's value
is never shown twice."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import httpx
import pytest
from aiport.v1 import billing_pb2, billing_pb2_grpc

from tests.integration.conftest import NewAccount
from tests.integration.test_jobs import a_png


@pytest.fixture
def manager(
    new_account: NewAccount, billing: billing_pb2_grpc.BillingStub, base_url: str
) -> Iterator[httpx.Client]:
    account = new_account("100000")
    key = billing.CreateApiKey(
        billing_pb2.CreateApiKeyRequest(
            account_id=account.account_id, name="ops", scopes=["inference", "manage"]
        )
    )
    with httpx.Client(
        base_url=base_url, headers={"Authorization": f"Bearer {key.api_key}"}, timeout=30
    ) as http:
        yield http


def once(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


def test_a_repeated_key_creation_is_the_same_key_without_its_value(manager: httpx.Client) -> None:
    key = secrets.token_hex(8)
    first = manager.post("/v1/keys", json={"name": "ci"}, headers=once(key))
    assert first.status_code == 200, first.text
    assert first.json()["key"].startswith("aip_live_")
    assert "idempotent-replayed" not in first.headers
    again = manager.post("/v1/keys", json={"name": "ci"}, headers=once(key))
    assert again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["key"] == ""  # shown once, never stored
    names = [k["name"] for k in manager.get("/v1/keys").json()["data"]]
    assert names.count("ci") == 1
    other = manager.post("/v1/keys", json={"name": "other"}, headers=once(key))
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"


def test_a_repeated_top_up_is_the_same_order(manager: httpx.Client) -> None:
    key = secrets.token_hex(8)
    body = {"amount_idr": "50000", "gateway": "midtrans"}
    first = manager.post("/v1/topups", json=body, headers=once(key))
    assert first.status_code == 200, first.text
    again = manager.post("/v1/topups", json=body, headers=once(key))
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert len(manager.get("/v1/topups").json()["data"]) == 1


def test_a_repeated_upload_is_the_same_upload(manager: httpx.Client) -> None:
    png = a_png(manager)
    key = secrets.token_hex(8)
    files = {"file": ("ref.png", png, "image/png")}
    first = manager.post("/v1/image/upload", files=files, headers=once(key))
    assert first.status_code == 200, first.text
    # A new multipart body (another boundary) around the same image: the same upload.
    again = manager.post("/v1/image/upload", files=files, headers=once(key))
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["upload_id"] == first.json()["upload_id"]


def test_a_refused_request_does_not_claim_the_key(manager: httpx.Client) -> None:
    key = secrets.token_hex(8)
    bad = manager.post(
        "/v1/topups", json={"amount_idr": "-1", "gateway": "midtrans"}, headers=once(key)
    )
    assert bad.status_code == 400
    good = manager.post(
        "/v1/topups", json={"amount_idr": "50000", "gateway": "midtrans"}, headers=once(key)
    )
    assert good.status_code == 200 and "idempotent-replayed" not in good.headers


def test_a_malformed_key_is_a_400_naming_the_header(manager: httpx.Client) -> None:
    response = manager.post("/v1/keys", json={"name": "x"}, headers=once("x" * 256))
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "Idempotency-Key"
