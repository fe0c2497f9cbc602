"""client_task_id through the edge: a client's own id for a job, unique per account.
A repeat of the same work gets the first job (202, never a second job or charge),
different work a 422 naming the field, and GET /v1/jobs?client_task_id= finds it."""

from __future__ import annotations

import secrets
from concurrent.futures import ThreadPoolExecutor

import httpx
from aiport.v1 import billing_pb2_grpc

from tests.integration.conftest import Account, NewAccount, balance_micros
from tests.integration.test_jobs import poll

IMAGE = {"prompt": "a temple at dawn"}


def task_id() -> str:
    return "order-" + secrets.token_hex(4)


def test_a_repeat_gets_the_first_job_and_is_charged_once(
    http: httpx.Client, account: Account, billing: billing_pb2_grpc.BillingStub
) -> None:
    before = balance_micros(billing, account.account_id)
    body = IMAGE | {"client_task_id": task_id()}
    first = http.post("/v1/image/generate", json=body)
    assert first.status_code == 202, first.text
    job_id = first.json()["job_id"]
    again = http.post("/v1/image/generate", json=body)
    assert again.status_code == 202
    assert again.json()["job_id"] == job_id
    job = poll(http, job_id)
    assert job["status"] == "done"
    assert job["client_task_id"] == body["client_task_id"]
    # One image charged, not two: the repeat's hold went back.
    assert before - balance_micros(billing, account.account_id) == round(
        float(job["actual_cost_idr"]) * 1_000_000
    )
    listed = http.get("/v1/jobs", params={"client_task_id": body["client_task_id"]}).json()
    assert [j["job_id"] for j in listed["data"]] == [job_id]


def test_parallel_repeats_make_one_job(
    http: httpx.Client, account: Account, billing: billing_pb2_grpc.BillingStub
) -> None:
    before = balance_micros(billing, account.account_id)
    body = IMAGE | {"client_task_id": task_id()}
    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(lambda _: http.post("/v1/image/generate", json=body), range(10)))
    assert {a.status_code for a in answers} == {202}
    (job_id,) = {a.json()["job_id"] for a in answers}
    job = poll(http, job_id)
    assert job["status"] == "done"
    assert before - balance_micros(billing, account.account_id) == round(
        float(job["actual_cost_idr"]) * 1_000_000
    )


def test_different_work_under_the_same_id_is_a_422(http: httpx.Client) -> None:
    tid = task_id()
    assert http.post("/v1/image/generate", json=IMAGE | {"client_task_id": tid}).status_code == 202
    refused = http.post("/v1/image/generate", json={"prompt": "a dog", "client_task_id": tid})
    assert refused.status_code == 422
    error = refused.json()["error"]
    assert (error["code"], error["param"]) == ("client_task_id_reused", "client_task_id")
    assert tid in error["message"]


def test_another_account_has_its_own_ids(
    http: httpx.Client, new_account: NewAccount, base_url: str
) -> None:
    tid = task_id()
    mine = http.post("/v1/image/generate", json=IMAGE | {"client_task_id": tid}).json()["job_id"]
    other = new_account("100000")
    with httpx.Client(
        base_url=base_url, headers={"Authorization": f"Bearer {other.api_key}"}, timeout=30
    ) as theirs:
        assert theirs.get("/v1/jobs", params={"client_task_id": tid}).json()["data"] == []
        their_job = theirs.post("/v1/image/generate", json=IMAGE | {"client_task_id": tid})
        assert their_job.status_code == 202
        assert their_job.json()["job_id"] != mine


def test_a_malformed_id_is_a_400_naming_it(http: httpx.Client) -> None:
    for bad in ("has space", "x" * 65, 42):
        response = http.post("/v1/image/generate", json=IMAGE | {"client_task_id": bad})
        assert response.status_code == 400
        assert response.json()["error"]["param"] == "client_task_id"
    listing = http.get("/v1/jobs", params={"client_task_id": "x" * 65})
    assert listing.status_code == 400 and listing.json()["error"]["param"] == "client_task_id"


def test_a_job_without_an_id_shows_null(http: httpx.Client) -> None:
    job_id = http.post("/v1/image/generate", json=IMAGE).json()["job_id"]
    assert http.get(f"/v1/jobs/{job_id}").json()["client_task_id"] is None
