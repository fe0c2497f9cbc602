"""GET /v1/jobs through the edge: the caller's own jobs, newest first, by cursor,
filtered by status and model; another account's jobs and cursors never work;
bad parameters are 400s naming the parameter."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.integration.conftest import NewAccount

ERROR_KEYS = {"message", "type", "param", "code"}


@dataclass(frozen=True)
class Tenant:
    http: httpx.Client
    job_ids: list[str]  # in the order they were created


@dataclass(frozen=True)
class World:
    a: Tenant  # five jobs: the second one fails
    b: Tenant  # two jobs
    empty: Tenant  # none


def submit(http: httpx.Client, prompt: str) -> str:
    response = http.post("/v1/image/generate", json={"prompt": prompt, "aspect_ratio": "1:1"})
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


def finished(http: httpx.Client, job_id: str, seconds: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        job: dict[str, Any] = http.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("done", "failed"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.2)


@pytest.fixture(scope="module")
def world(base_url: str, new_account: NewAccount) -> Iterator[World]:
    clients = [
        httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {new_account('100000').api_key}"},
            timeout=30,
        )
        for _ in range(3)
    ]
    a, b, empty = clients
    # One after another (each 202 is after the job row is committed), so the
    # creation order is the order of created_at.
    a_jobs = [submit(a, "[sim:fail] a fails" if i == 1 else f"a {i}") for i in range(5)]
    b_jobs = [submit(b, f"b {i}") for i in range(2)]
    for client, ids in ((a, a_jobs), (b, b_jobs)):
        for job_id in ids:
            finished(client, job_id)
    yield World(Tenant(a, a_jobs), Tenant(b, b_jobs), Tenant(empty, []))
    for client in clients:
        client.close()


def listing(http: httpx.Client, **params: str) -> dict[str, Any]:
    response = http.get("/v1/jobs", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert set(body) == {"object", "data", "has_more", "next_cursor"}, body
    assert body["object"] == "list"
    return body


def walk(http: httpx.Client, limit: int, **params: str) -> list[dict[str, Any]]:
    """Every page, following next_cursor; each page is full but the last."""
    jobs: list[dict[str, Any]] = []
    after: dict[str, str] = {}
    while True:
        page = listing(http, limit=str(limit), **params, **after)
        jobs += page["data"]
        if not page["has_more"]:
            assert page["next_cursor"] is None
            assert len(page["data"]) <= limit
            return jobs
        assert len(page["data"]) == limit
        assert isinstance(page["next_cursor"], str) and page["next_cursor"]
        after = {"after": page["next_cursor"]}


def bad_request(response: httpx.Response, param: str) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == ERROR_KEYS
    assert (error["param"], error["code"]) == (param, "invalid_request"), error
    return error


def ids(jobs: list[dict[str, Any]]) -> list[str]:
    return [job["job_id"] for job in jobs]


def test_pages_list_the_callers_jobs_newest_first(world: World) -> None:
    newest_first = world.a.job_ids[::-1]
    for limit in (1, 2, 5, 100):
        assert ids(walk(world.a.http, limit)) == newest_first
    first = listing(world.a.http, limit="2")
    assert first["has_more"] is True and len(first["data"]) == 2
    everything = listing(world.a.http)  # the default limit (20) holds all five
    assert ids(everything["data"]) == newest_first
    assert everything["has_more"] is False and everything["next_cursor"] is None


def test_listed_jobs_are_shaped_exactly_like_get_job(world: World) -> None:
    for job in listing(world.a.http)["data"]:
        alone = world.a.http.get(f"/v1/jobs/{job['job_id']}")
        assert alone.status_code == 200
        assert job == alone.json()


def test_status_and_model_filters(world: World) -> None:
    a = world.a
    failed = walk(a.http, 2, status="failed")
    assert ids(failed) == [a.job_ids[1]]
    assert failed[0]["error_code"] == "provider_error"
    done = walk(a.http, 2, status="done")
    assert ids(done) == [j for j in a.job_ids[::-1] if j != a.job_ids[1]]
    assert listing(a.http, status="pending")["data"] == []
    model = done[0]["model"]
    assert ids(walk(a.http, 3, model=model)) == a.job_ids[::-1]
    assert listing(a.http, model="no-such-model")["data"] == []


def test_another_accounts_jobs_and_cursors_never_work(world: World) -> None:
    a, b = world.a, world.b
    assert ids(walk(b.http, 1)) == b.job_ids[::-1]
    assert set(ids(walk(b.http, 100))).isdisjoint(a.job_ids)
    empty = listing(world.empty.http)
    assert (empty["data"], empty["has_more"], empty["next_cursor"]) == ([], False, None)
    # A's cursor is refused for B (and for an account with no jobs at all), with
    # the same answer as a malformed cursor: it tells B nothing about A.
    a_cursor = listing(a.http, limit="1")["next_cursor"]
    foreign = bad_request(b.http.get("/v1/jobs", params={"after": a_cursor}), "after")
    bad_request(world.empty.http.get("/v1/jobs", params={"after": a_cursor}), "after")
    malformed = bad_request(b.http.get("/v1/jobs", params={"after": "garbage"}), "after")
    assert foreign == malformed
    # ... and a bare job id of A's is not a cursor either.
    bad_request(b.http.get("/v1/jobs", params={"after": a.job_ids[0]}), "after")


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "-3"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"status": "completed"}, "status"),
        ({"status": "DONE"}, "status"),
        ({"after": "bm90LWEtY3Vyc29y"}, "after"),
        ({"model": "m" * 201}, "model"),
    ],
)
def test_bad_parameters_are_400s_naming_them(
    world: World, params: dict[str, str], param: str
) -> None:
    bad_request(world.a.http.get("/v1/jobs", params=params), param)


def test_unknown_parameters_are_ignored(world: World) -> None:
    assert ids(listing(world.a.http, order="asc")["data"]) == world.a.job_ids[::-1]


def test_a_key_is_required(base_url: str) -> None:
    response = httpx.get(f"{base_url}/v1/jobs", timeout=10)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    wrong = httpx.get(
        f"{base_url}/v1/jobs", headers={"Authorization": "Bearer aip_live_nope"}, timeout=10
    )
    assert wrong.status_code == 401


def test_a_trailing_slash_is_still_the_callers_list(world: World) -> None:
    """The transcoder ignores a trailing slash (as for /v1/models/): /v1/jobs/ is
    the list, with the same tenancy, not a lookup of an empty job id."""
    response = world.b.http.get("/v1/jobs/")
    assert response.status_code == 200, response.text
    assert ids(response.json()["data"]) == world.b.job_ids[::-1]
