"""The jobs page's pure parts: its filter and cursor as a GET /v1/jobs query,
and each job as a row (what was held, what was charged, what came back).

A job holds its estimated cost when it is accepted; when it ends, the charge is
its actual cost (a done job) or nothing (a failed one: the whole hold came
back). The refund shown is the difference, once the job has ended.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Final
from urllib.parse import urlencode

from aiport.v1 import jobs_pb2

from services.console import times
from services.console.usage_view import value_text

PAGE_SIZE: Final = 50
STATUSES: Final = ("pending", "processing", "done", "failed")
# GET /v1/jobs's cursors are base64url; anything else is not ours.
_CURSOR = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class JobFilters:
    status: str = ""
    after: str = ""

    def query(self) -> jobs_pb2.ListJobsRequest:
        return jobs_pb2.ListJobsRequest(limit=str(PAGE_SIZE), status=self.status, after=self.after)

    def next_url(self, cursor: str) -> str:
        params = {k: v for k, v in {"status": self.status, "after": cursor}.items() if v}
        return "/dashboard/jobs?" + urlencode(params)


def parse_filters(query: Mapping[str, str]) -> JobFilters:
    """Unknown statuses and malformed cursors are dropped (the first page, all jobs)."""
    status = query.get("status", "")
    after = query.get("after", "")
    return JobFilters(
        status=status if status in STATUSES else "",
        after=after if _CURSOR.fullmatch(after) else "",
    )


def _idr(text: str) -> Decimal | None:
    try:
        return Decimal(text) if text else None
    except InvalidOperation:
        return None


def refund_idr(job: jobs_pb2.Job) -> str:
    """What came back of the hold once the job ended ("" while it runs)."""
    held, charged = _idr(job.estimated_cost_idr), _idr(value_text(job.actual_cost_idr))
    if held is None or charged is None or job.status not in ("done", "failed"):
        return ""
    back = max(held - charged, Decimal(0))
    return format(back.normalize(), "f") if back else "0"


def job_row(job: jobs_pb2.Job, lang: str, zone: str) -> dict[str, str]:
    created = datetime.fromisoformat(job.created_at.replace("Z", "+00:00"))
    return {
        "id": job.job_id,
        "time": times.format_datetime(int(created.timestamp()), lang, zone),
        "iso_time": job.created_at,
        "model": job.model,
        "status": job.status,
        "held_idr": job.estimated_cost_idr,
        "charged_idr": value_text(job.actual_cost_idr),
        "refund_idr": refund_idr(job),
        "result_url": value_text(job.result_url),
        "error_code": value_text(job.error_code),
    }
