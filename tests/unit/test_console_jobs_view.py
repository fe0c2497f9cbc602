"""The jobs page's pure parts: filters, cursor links, and what a job held,
charged and gave back."""

from __future__ import annotations

from aiport.v1 import jobs_pb2

from services.console import jobs_view


def job(status: str, held: str, charged: str | None) -> jobs_pb2.Job:
    out = jobs_pb2.Job(
        job_id="job_" + "a" * 26,
        status=status,
        created_at="2026-04-01T00:00:00Z",
        model="seedance-2-fast",
        estimated_cost_idr=held,
    )
    if charged is not None:
        out.actual_cost_idr.string_value = charged
    return out


def test_refunds_are_what_came_back_once_a_job_ended() -> None:
    assert jobs_view.refund_idr(job("done", "4500", "3000.5")) == "1499.5"
    assert jobs_view.refund_idr(job("done", "4500", "4500")) == "0"
    assert jobs_view.refund_idr(job("failed", "4500", "0")) == "4500"
    assert jobs_view.refund_idr(job("processing", "4500", None)) == ""


def test_a_row_in_the_users_zone() -> None:
    row = jobs_view.job_row(job("done", "2400", "2400"), "en", "Asia/Jakarta")
    assert row["time"].startswith("1 Apr 2026, 07:00")
    assert (row["held_idr"], row["charged_idr"], row["refund_idr"]) == ("2400", "2400", "0")


def test_filters_drop_what_is_not_a_status_or_a_cursor() -> None:
    assert jobs_view.parse_filters({"status": "done", "after": "MTpqb2Jf"}) == jobs_view.JobFilters(
        "done", "MTpqb2Jf"
    )
    assert jobs_view.parse_filters({"status": "lost", "after": "<script>"}) == (
        jobs_view.JobFilters()
    )
    query = jobs_view.JobFilters("failed").query()
    assert (query.limit, query.status, query.after) == ("50", "failed", "")
    assert jobs_view.JobFilters("done").next_url("abc") == "/dashboard/jobs?status=done&after=abc"
