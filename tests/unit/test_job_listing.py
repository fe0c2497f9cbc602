"""GET /v1/jobs without servers: its query parameters, its cursor, its list
object, and the jobs service's own guard on ListJobs requests."""

from __future__ import annotations

import base64

import pytest
from aiport.v1 import job_state_pb2, jobs_pb2
from google.protobuf import json_format

from services.common.job_ids import new_job_id
from services.common.job_states import JobStatus
from services.gateway.errors import PublicError
from services.gateway.job_listing import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    JobListing,
    decode_cursor,
    encode_cursor,
    parse_listing,
)
from services.gateway.jobs_api import job_list
from services.jobs import rules


def refused(param: str, **query: str) -> PublicError:
    with pytest.raises(PublicError) as caught:
        parse_listing(jobs_pb2.ListJobsRequest(**query))
    error = caught.value
    assert (error.status, error.param, error.code) == (400, param, "invalid_request")
    return error


# -- the cursor ------------------------------------------------------------------------


def test_a_cursor_names_the_job_it_was_made_from() -> None:
    job_id = new_job_id()
    cursor = encode_cursor(job_id)
    assert job_id not in cursor  # opaque: not the id itself
    assert "=" not in cursor and cursor.isascii()
    assert decode_cursor(cursor) == job_id


@pytest.mark.parametrize(
    "cursor",
    [
        "x",
        "!!!!",
        "not base64 at all",
        new_job_id(),  # a bare job id is not a cursor
        base64.urlsafe_b64encode(b"2:" + new_job_id().encode()).decode().rstrip("="),  # version
        base64.urlsafe_b64encode(b"1:job_short").decode().rstrip("="),  # not a job id
        base64.urlsafe_b64encode(b"1:" + new_job_id().encode()).decode(),  # padded
        encode_cursor(new_job_id()) + "AAAA",  # trailing bytes
        "A" * 1000,
        "é" * 43,
    ],
)
def test_a_malformed_cursor_is_a_400_naming_after(cursor: str) -> None:
    with pytest.raises(PublicError) as caught:
        decode_cursor(cursor)
    assert (caught.value.status, caught.value.param) == (400, "after")


def test_the_after_parameter_is_decoded() -> None:
    job_id = new_job_id()
    listing = parse_listing(jobs_pb2.ListJobsRequest(after=encode_cursor(job_id)))
    assert listing.after_job_id == job_id
    refused("after", after="job_123")


# -- the other parameters ----------------------------------------------------------------


def test_defaults() -> None:
    assert parse_listing(jobs_pb2.ListJobsRequest()) == JobListing(
        limit=DEFAULT_LIMIT, after_job_id=None, status=None, model=None, client_task_id=None
    )


def test_client_task_id_filter() -> None:
    listing = parse_listing(jobs_pb2.ListJobsRequest(client_task_id="order-42/a"))
    assert listing.client_task_id == "order-42/a"
    for bad in ("has space", "x" * 65, "ünï"):
        with pytest.raises(PublicError) as caught:
            parse_listing(jobs_pb2.ListJobsRequest(client_task_id=bad))
        assert caught.value.param == "client_task_id"


@pytest.mark.parametrize("limit", ["1", "7", "020", str(MAX_LIMIT)])
def test_limits_in_range(limit: str) -> None:
    assert parse_listing(jobs_pb2.ListJobsRequest(limit=limit)).limit == int(limit)


@pytest.mark.parametrize(
    "limit", ["0", str(MAX_LIMIT + 1), "-1", "+5", " 5", "5.0", "1e2", "abc", "9" * 30, "٣"]
)
def test_a_limit_out_of_range_or_not_a_number_is_a_400_naming_limit(limit: str) -> None:
    error = refused("limit", limit=limit)
    assert str(MAX_LIMIT) in error.message


@pytest.mark.parametrize("status", list(JobStatus))
def test_every_job_status_filters(status: JobStatus) -> None:
    assert parse_listing(jobs_pb2.ListJobsRequest(status=status.value)).status is status


@pytest.mark.parametrize("status", ["DONE", "completed", "succeeded", "done,failed", " done"])
def test_an_unknown_status_is_a_400_naming_status_and_the_choices(status: str) -> None:
    error = refused("status", status=status)
    assert all(s.value in error.message for s in JobStatus)


def test_model_filter() -> None:
    assert parse_listing(jobs_pb2.ListJobsRequest(model="seedream-4.5")).model == "seedream-4.5"
    refused("model", model="m" * 201)
    refused("model", model="a\nb")


def test_the_first_wrong_parameter_is_named() -> None:
    refused("limit", limit="0", status="nope")


# -- the list object ---------------------------------------------------------------------


def record(job_id: str) -> job_state_pb2.JobRecord:
    return job_state_pb2.JobRecord(
        job_id=job_id,
        status=JobStatus.PENDING.to_proto(),
        model="seedream-4.5",
        estimated_cost_micros=700_000_000,
        created_at_unix=1_767_225_600,
    )


def shown(page: job_state_pb2.JobRecordPage) -> dict[str, object]:
    return json_format.MessageToDict(
        job_list(page, "https://api.example"), preserving_proto_field_name=True
    )


def test_a_page_with_more_points_at_its_last_job() -> None:
    first, last = new_job_id(), new_job_id()
    body = shown(job_state_pb2.JobRecordPage(jobs=[record(first), record(last)], has_more=True))
    assert body["object"] == "list" and body["has_more"] is True
    assert [job["job_id"] for job in body["data"]] == [first, last]  # type: ignore[attr-defined]
    assert body["next_cursor"] == encode_cursor(last)


def test_the_last_page_has_a_null_cursor() -> None:
    body = shown(job_state_pb2.JobRecordPage(jobs=[record(new_job_id())], has_more=False))
    assert body["next_cursor"] is None
    assert shown(job_state_pb2.JobRecordPage())["next_cursor"] is None


# -- the jobs service's guard ------------------------------------------------------------


def test_the_jobs_service_reads_a_listing() -> None:
    job_id = new_job_id()
    asked = rules.listing(
        job_state_pb2.ListJobRecordsRequest(
            account_id="acct_1",
            limit=5,
            after_job_id=job_id,
            status=JobStatus.FAILED.to_proto(),
            model="m",
            client_task_id="t-1",
        )
    )
    assert asked == rules.Listing("acct_1", 5, job_id, JobStatus.FAILED, "m", "t-1")
    bare = rules.listing(job_state_pb2.ListJobRecordsRequest(account_id="acct_1", limit=1))
    assert (bare.after_job_id, bare.status, bare.model) == (None, None, None)


@pytest.mark.parametrize(
    "request_",
    [
        job_state_pb2.ListJobRecordsRequest(limit=5),  # no account
        job_state_pb2.ListJobRecordsRequest(account_id="a", limit=0),
        job_state_pb2.ListJobRecordsRequest(account_id="a", limit=rules.MAX_PAGE_JOBS + 1),
        job_state_pb2.ListJobRecordsRequest(account_id="a", limit=5, after_job_id="job_1"),
        job_state_pb2.ListJobRecordsRequest(account_id="a", limit=5, model="m" * 201),
        job_state_pb2.ListJobRecordsRequest(account_id="a", limit=5, status=99),  # type: ignore[arg-type]
    ],
)
def test_the_jobs_service_refuses_a_malformed_listing(
    request_: job_state_pb2.ListJobRecordsRequest,
) -> None:
    with pytest.raises(rules.InvalidListing):
        rules.listing(request_)


def test_the_public_and_internal_page_bounds_agree() -> None:
    assert MAX_LIMIT == rules.MAX_PAGE_JOBS
