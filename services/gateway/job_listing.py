"""GET /v1/jobs's query parameters and its page cursor (pure: no I/O).

The cursor names the last job of a page, encoded (versioned, base64url) so that
clients treat it as opaque and we may change what it holds. It carries no
account and no secret: the jobs service starts the next page after that job
only if it is one of the caller's own jobs, so another account's cursor (or a
job id of theirs, re-encoded by hand) is refused like a malformed one, and a
listing is always filtered by the authenticated account.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from aiport.v1 import jobs_pb2

from services.common.job_ids import MAX_CLIENT_TASK_ID_CHARS, is_client_task_id, is_job_id
from services.common.job_states import JobStatus
from services.gateway import errors

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
# Longer than any model id; a bound so a filter cannot be a megabyte.
MAX_MODEL_CHARS = 200
_CURSOR_VERSION = b"1:"
# A job id is 30 characters, its cursor 43. Anything much longer is not ours.
_MAX_CURSOR_CHARS = 64
_DIGITS = re.compile(r"[0-9]{1,6}")
_STATUSES = ", ".join(status.value for status in JobStatus)


@dataclass(frozen=True, slots=True)
class JobListing:
    limit: int
    after_job_id: str | None
    status: JobStatus | None
    model: str | None
    client_task_id: str | None


def encode_cursor(job_id: str) -> str:
    """The cursor of a page that ends with `job_id`."""
    return base64.urlsafe_b64encode(_CURSOR_VERSION + job_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The job id a cursor names; a 400 naming `after` if it is not one of ours."""
    invalid = errors.invalid_cursor()
    if len(cursor) > _MAX_CURSOR_CHARS or not cursor.isascii():
        raise invalid
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raise invalid from None
    if not raw.startswith(_CURSOR_VERSION):
        raise invalid
    job_id = raw[len(_CURSOR_VERSION) :].decode("ascii", errors="replace")
    # Also refuses a cursor re-padded or re-encoded differently from ours.
    if not is_job_id(job_id) or encode_cursor(job_id) != cursor:
        raise invalid
    return job_id


def _limit(text: str) -> int:
    if not text:
        return DEFAULT_LIMIT
    if _DIGITS.fullmatch(text) and 1 <= int(text) <= MAX_LIMIT:
        return int(text)
    raise errors.invalid_parameter(
        f"limit must be a whole number from 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT}).", "limit"
    )


def _status(text: str) -> JobStatus | None:
    if not text:
        return None
    try:
        return JobStatus(text)
    except ValueError:
        raise errors.invalid_parameter(f"status must be one of: {_STATUSES}.", "status") from None


def _model(text: str) -> str | None:
    if not text:
        return None
    if len(text) > MAX_MODEL_CHARS or not text.isprintable():
        raise errors.invalid_parameter(
            f"model must be a model id of at most {MAX_MODEL_CHARS} printable characters.",
            "model",
        )
    return text


def _client_task_id(text: str) -> str | None:
    if not text:
        return None
    if not is_client_task_id(text):
        raise errors.invalid_parameter(
            f"client_task_id must be 1 to {MAX_CLIENT_TASK_ID_CHARS} printable ASCII "
            "characters without spaces.",
            "client_task_id",
        )
    return text


def parse_listing(request: jobs_pb2.ListJobsRequest) -> JobListing:
    """The query parameters, or a 400 naming the first that is wrong."""
    return JobListing(
        limit=_limit(request.limit),
        after_job_id=decode_cursor(request.after) if request.after else None,
        status=_status(request.status),
        model=_model(request.model),
        client_task_id=_client_task_id(request.client_task_id),
    )
