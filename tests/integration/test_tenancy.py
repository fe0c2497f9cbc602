"""Tenancy: one account can never read, poll, download or infer another's
jobs, uploads, results, keys or balance. Others' ids answer exactly like
unknown ones (404, never 403), ids and URLs are unguessable, and no error
names another account or key."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from itertools import combinations
from typing import Any

import httpx
import pytest
from aiport.v1 import billing_pb2, billing_pb2_grpc

from tests.integration.conftest import Account, NewAccount

TIMEOUT = httpx.Timeout(15.0)
TOKEN = re.compile(r"^[0-9A-Za-z]{32}$")
FILE_URL = re.compile(r"/files/(uploads|results)/([^/]+)/([^/]+)$")
ERROR_KEYS = {"message", "type", "param", "code"}


@dataclass
class Tenant:
    account: Account
    http: httpx.Client


@dataclass
class World:
    """A with an upload and a finished image job; B a stranger."""

    a: Tenant
    b: Tenant
    job_id: str
    job: dict[str, Any]
    upload: dict[str, Any]

    def secrets(self) -> list[str]:
        """What B must never learn from an answer about A's things."""
        key = self.a.account.api_key
        return [self.a.account.account_id, self.a.account.key_id, key, key[:13], key[9:]]


def tenant(base_url: str, account: Account) -> Tenant:
    http = httpx.Client(
        base_url=base_url, headers={"Authorization": f"Bearer {account.api_key}"}, timeout=TIMEOUT
    )
    return Tenant(account, http)


def assert_404(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 404, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == ERROR_KEYS
    return error


def assert_no_secrets(world: World, response: httpx.Response) -> None:
    """No id or key of A's in the answer, unless the caller itself sent it
    (an echo of the caller's own path or body tells them nothing new)."""
    text = response.text + " ".join(f"{k}: {v}" for k, v in response.headers.items())
    sent = str(response.request.url) + response.request.content.decode(errors="replace")
    for secret in world.secrets():
        if secret not in sent:
            assert secret not in text, (secret, response.text[:300])


def finish(http: httpx.Client, job_id: str, seconds: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        job: dict[str, Any] = http.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("done", "failed"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.1)


@pytest.fixture(scope="module")
def world(base_url: str, new_account: NewAccount) -> Iterator[World]:
    a = tenant(base_url, new_account("100000"))
    b = tenant(base_url, new_account("100000"))
    accepted = a.http.post("/v1/image/generate", json={"prompt": "A's private picture"})
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]
    job = finish(a.http, job_id)
    assert job["status"] == "done", job
    png = httpx.get(job["result_url"], timeout=TIMEOUT).content
    uploaded = a.http.post("/v1/image/upload", files={"file": ("a.png", png, "image/png")})
    assert uploaded.status_code == 200, uploaded.text
    try:
        yield World(a, b, job_id, job, uploaded.json())
    finally:
        a.http.close()
        b.http.close()


def test_b_polling_a_job_is_identical_to_an_unknown_job(world: World) -> None:
    theirs = world.b.http.get(f"/v1/jobs/{world.job_id}")
    unknown_id = "job_" + world.job_id[4:][::-1]
    unknown = world.b.http.get(f"/v1/jobs/{unknown_id}")
    assert_404(theirs)
    assert theirs.status_code == unknown.status_code
    assert theirs.json() == unknown.json()
    assert world.job_id not in theirs.text
    assert_no_secrets(world, theirs)
    # A sees it, so the 404 really was about B.
    assert world.a.http.get(f"/v1/jobs/{world.job_id}").json()["status"] == "done"


def test_b_sees_only_its_own_balance(world: World) -> None:
    mine = world.b.http.get("/v1/balance")
    assert mine.status_code == 200, mine.text
    assert Decimal(mine.json()["balance_idr"]) == 100000
    a_balance = world.a.http.get("/v1/balance").json()
    assert Decimal(a_balance["balance_idr"]) < 100000  # A paid for its image
    # No parameter, header or path trick shows A's balance to B.
    account_id = world.a.account.account_id
    attempts = [
        world.b.http.get("/v1/balance", params={"account_id": account_id}),
        world.b.http.get("/v1/balance", headers={"X-Account-Id": account_id}),
        world.b.http.get(f"/v1/balance/{account_id}"),
        world.b.http.get(f"/v1/accounts/{account_id}/balance"),
    ]
    for response in attempts:
        if response.status_code == 200:
            assert response.json() == mine.json()
        else:
            assert_404(response)
            assert_no_secrets(world, response)


def test_file_urls_are_unguessable_capabilities(world: World) -> None:
    for url in (world.job["result_url"], world.upload["url"]):
        match = FILE_URL.search(url)
        assert match, url
        kind, token, filename = match.groups()
        assert TOKEN.match(token), token
        assert httpx.get(url, timeout=TIMEOUT).status_code == 200
        base = url[: match.start()]
        other_kind = "results" if kind == "uploads" else "uploads"
        flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
        variants = [
            f"/files/{kind}/{flipped}/{filename}",
            f"/files/{kind}/{token[:-1]}/{filename}",
            f"/files/{kind}/{token}x/{filename}",
            f"/files/{kind}/{token.swapcase()}/{filename}",
            f"/files/{kind}/{token[1:] + token[0]}/{filename}",
            f"/files/{other_kind}/{token}/{filename}",
            f"/files/{kind}/{token}/other.png",
            f"/files/{kind}/{token}",
            f"/files/{kind}/",
            f"/files/{kind}/{token[:8]}/{filename}",
        ]
        for path in variants:
            response = httpx.get(base + path, timeout=TIMEOUT)
            assert_404(response)
            assert token not in response.text


def test_upload_ids_and_job_ids_are_random(world: World) -> None:
    upload_id = world.upload["upload_id"]
    assert re.fullmatch(r"upl_[0-9A-Za-z]{32}", upload_id), upload_id
    ids = [world.job_id]
    for _ in range(4):
        accepted = world.a.http.post("/v1/image/generate", json={"prompt": "seq"})
        assert accepted.status_code == 202, accepted.text
        ids.append(accepted.json()["job_id"])
    for job_id in ids:
        assert re.fullmatch(r"job_[0-9A-Za-z]{26}", job_id), job_id
    for x, y in combinations(ids, 2):
        shared = next((i for i, (p, q) in enumerate(zip(x[4:], y[4:], strict=True)) if p != q), 26)
        assert shared < 5, (x, y)
    assert len(set(ids)) == len(ids)
    for job_id in ids[1:]:
        finish(world.a.http, job_id)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/files/{upload_id}",
        "/v1/files/{token}",
        "/v1/uploads/{upload_id}",
        "/v1/image/upload/{upload_id}",
        "/v1/jobs/{job_id}/result",
        "/v1/jobs/{job_id}/content",
        "/v1/results/{token}",
    ],
)
def test_api_style_guesses_are_404(world: World, path: str) -> None:
    match = FILE_URL.search(world.upload["url"])
    assert match
    filled = path.format(
        upload_id=world.upload["upload_id"], token=match.group(2), job_id=world.job_id
    )
    for who in (world.b, world.a):
        response = who.http.get(filled)
        assert_404(response)
        assert_no_secrets(world, response)


def test_b_cannot_authenticate_with_a_key_id_or_prefix(world: World, base_url: str) -> None:
    key = world.a.account.api_key
    assert key.startswith("aip_live_")
    guesses = [
        world.a.account.key_id,
        world.a.account.account_id,
        key[:13],  # the display prefix
        key[:-1],
        key + "x",
        key[:-1] + ("A" if key[-1] != "A" else "B"),
        key.upper(),
        f"{key[:13]}...",
        f"{world.b.account.api_key[:13]}{key[13:]}",
    ]
    for guess in guesses:
        response = httpx.get(
            f"{base_url}/v1/balance", headers={"Authorization": f"Bearer {guess}"}, timeout=TIMEOUT
        )
        assert response.status_code == 401, (guess, response.text)
        assert response.json()["error"]["code"] == "unauthorized"
        assert_no_secrets(world, response)
        # Job polls with a wrong key are refused before any lookup.
        polled = httpx.get(
            f"{base_url}/v1/jobs/{world.job_id}",
            headers={"Authorization": f"Bearer {guess}"},
            timeout=TIMEOUT,
        )
        assert polled.status_code == 401, polled.text
        assert_no_secrets(world, polled)


def test_b_cannot_reuse_a_upload_or_result_silently(world: World) -> None:
    """B naming A's upload by id (not URL) never reaches A's file."""
    for images in ([world.upload["upload_id"]], [f"upload://{world.upload['upload_id']}"]):
        response = world.b.http.post("/v1/image/img2img", json={"prompt": "x", "images": images})
        assert response.status_code in (400, 404), response.text
        assert_no_secrets(world, response)


def test_revoking_a_key_leaves_the_other_account_working(
    base_url: str, new_account: NewAccount, billing: billing_pb2_grpc.BillingStub
) -> None:
    a = tenant(base_url, new_account("1000"))
    b = tenant(base_url, new_account("1000"))
    try:
        assert a.http.get("/v1/balance").status_code == 200
        billing.RevokeApiKey(billing_pb2.RevokeApiKeyRequest(key_id=a.account.key_id))
        revoked = a.http.get("/v1/balance")
        assert revoked.status_code == 401, revoked.text
        assert revoked.json()["error"]["code"] == "unauthorized"
        assert a.account.account_id not in revoked.text
        assert a.account.key_id not in revoked.text
        polled = a.http.post("/v1/image/generate", json={"prompt": "after revoke"})
        assert polled.status_code == 401, polled.text
        assert b.http.get("/v1/balance").status_code == 200
        chat = b.http.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
        )
        assert chat.status_code == 200, chat.text
    finally:
        a.http.close()
        b.http.close()


def test_errors_about_a_never_name_a(world: World) -> None:
    """Every refusal B can provoke about A's things is free of A's ids."""
    b = world.b.http
    responses = [
        b.get(f"/v1/jobs/{world.job_id}"),
        b.get(f"/v1/jobs/{world.a.account.account_id}"),
        b.get(f"/v1/jobs/{world.a.account.key_id}"),
        b.get(f"/v1/models/{world.a.account.account_id}"),
        b.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}], "user": "x", "max_tokens": 0},
        ),
        b.post(
            "/v1/image/img2img",
            json={"prompt": "x", "images": [world.upload["url"].replace("uploads/", "uploads/x")]},
        ),
    ]
    for response in responses:
        assert 400 <= response.status_code < 500, response.text
        assert_no_secrets(world, response)
