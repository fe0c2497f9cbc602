"""Job rules with no I/O: ids, what a finished job costs and shows, leases,
settlement retries, idempotency, limits and messages."""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from aiport.v1 import job_state_pb2

from services.common.job_ids import is_client_task_id, is_job_id, new_job_id
from services.common.job_states import JobStatus

__all__ = ["new_job_id"]

# A job whose worker died this many times is failed and refunded rather than
# handed to yet another worker (a poison job must not loop forever).
MAX_ATTEMPTS = 3
PROVIDER_FAILED = "Provider failed. Please try again."
NOT_QUEUED = "The job could not be queued. Please try again."
NOT_CREATED = "The job could not be created. Please submit it again."

# -- leases --------------------------------------------------------------------
# A lease outlives a few missed heartbeats (a slow database, a GC pause) but not
# a dead worker for long: its jobs resume about this long after it died.
DEFAULT_LEASE_SECONDS = 30
MIN_LEASE_SECONDS = 2
MAX_LEASE_SECONDS = 600
# Heartbeats per lease lifetime: two may be lost before the lease lapses.
RENEWALS_PER_LEASE = 3
# A deferred delivery comes back about when the lease would end, never sooner
# than this (no busy loop) nor later than one lease (a renewed lease is
# checked again).
MIN_DEFER_SECONDS = 1


class Verdict(enum.Enum):
    RUN = "run"  # take the lease and work
    DEFER = "defer"  # another worker holds a live lease: come back later
    FINISHED = "finished"  # nothing to do
    EXHAUSTED = "exhausted"  # too many attempts died: fail and refund instead


@dataclass(frozen=True, slots=True)
class AttemptDecision:
    verdict: Verdict
    defer_seconds: int = 0


def clamp_lease_seconds(seconds: int) -> int:
    return max(MIN_LEASE_SECONDS, min(seconds, MAX_LEASE_SECONDS))


def renew_every_seconds(lease_seconds: int) -> int:
    return max(1, lease_seconds // RENEWALS_PER_LEASE)


def lease_live(lease_expires_at: datetime | None, now: datetime) -> bool:
    return lease_expires_at is not None and lease_expires_at > now


def decide_attempt(
    *,
    status: JobStatus,
    attempts: int,
    lease_expires_at: datetime | None,
    now: datetime,
    lease_seconds: int,
) -> AttemptDecision:
    """What a worker that received the job may do with it. A live lease is
    someone's work in progress, even this worker's own (a second delivery of a
    job it is running), so it is never run twice at once; a deferral does not
    count as an attempt."""
    if status.finished:
        return AttemptDecision(Verdict.FINISHED)
    if lease_live(lease_expires_at, now):
        assert lease_expires_at is not None
        left = (lease_expires_at - now).total_seconds()
        wait = max(MIN_DEFER_SECONDS, min(int(left) + 1, lease_seconds))
        return AttemptDecision(Verdict.DEFER, wait)
    if attempts >= MAX_ATTEMPTS:
        return AttemptDecision(Verdict.EXHAUSTED)
    return AttemptDecision(Verdict.RUN)


def may_renew(*, status: JobStatus, held_token: str | None, token: str) -> bool:
    """Only the holder renews, and only while the job runs. An expired lease
    nobody took over is still the holder's: nobody else has started the job."""
    return status is JobStatus.PROCESSING and held_token is not None and held_token == token


def lease_expiry(now: datetime, lease_seconds: int) -> datetime:
    return now + timedelta(seconds=lease_seconds)


# -- settlement ----------------------------------------------------------------
# Billing refusing a settlement (a hold already settled the other way, or
# expired) is retried this many times, further and further apart, then given
# up: the job is closed as charged nothing, with an error for the operator.
MAX_SETTLE_REFUSALS = 5
MAX_SETTLE_RETRY_SECONDS = 3600


def settle_retry_seconds(refusals: int, base_seconds: float) -> float:
    """After the n-th refusal: base, 2 x base, 4 x base, ... capped at an hour."""
    assert refusals >= 1
    return min(base_seconds * float(2 ** (refusals - 1)), float(MAX_SETTLE_RETRY_SECONDS))


def give_up_settling(refusals: int) -> bool:
    return refusals >= MAX_SETTLE_REFUSALS


def shown_cost_micros(
    *,
    status: JobStatus,
    actual_cost_micros: int | None,
    charged_micros: int | None,
    settle_refusals: int,
) -> int | None:
    """The cost a client sees: what billing really charged once it settled; for a
    done job being settled right now, the cost about to be charged; 0 while
    billing refuses the capture (nothing was charged); None until finished."""
    if not status.finished:
        return None
    if charged_micros is not None:
        return charged_micros
    if status is JobStatus.FAILED or settle_refusals > 0:
        return 0
    return actual_cost_micros or 0


# -- idempotency ----------------------------------------------------------------


def creation_input_hash(request: job_state_pb2.CreateJobRequest) -> bytes:
    """sha256 of everything the creation asked for except the key itself.
    Deterministic serialization; proto3 leaves default values out, so a field
    added later does not change the hash of requests that do not set it."""
    guarded = job_state_pb2.CreateJobRequest()
    guarded.CopyFrom(request)
    guarded.idempotency_key = ""
    return hashlib.sha256(guarded.SerializeToString(deterministic=True)).digest()


def client_input_hash(request: job_state_pb2.CreateJobRequest) -> bytes:
    """sha256 of the work a client task id asked for: the creation without the ids
    each call makes afresh (key, hold, job id), so two calls asking for the same work
    under one task id match, and any other difference (model, spec, price) does not."""
    guarded = job_state_pb2.CreateJobRequest()
    guarded.CopyFrom(request)
    guarded.idempotency_key = ""
    guarded.hold_id = ""
    guarded.job_id = ""
    return hashlib.sha256(guarded.SerializeToString(deterministic=True)).digest()


def same_input(stored_hash: bytes | None, request_hash: bytes) -> bool:
    """A job created before hashes were stored (None) matches any retry."""
    return stored_hash is None or bytes(stored_hash) == request_hash


# -- listing -------------------------------------------------------------------
# A page is at most this many jobs (the public GET /v1/jobs has the same bound).
MAX_PAGE_JOBS = 100
MAX_MODEL_CHARS = 200


class InvalidListing(ValueError):
    """A ListJobs request this service does not run (the gateway validates the
    public parameters first; this is the internal contract's own guard)."""


@dataclass(frozen=True, slots=True)
class Listing:
    account_id: str
    limit: int
    after_job_id: str | None
    status: JobStatus | None
    model: str | None
    client_task_id: str | None


def listing(request: job_state_pb2.ListJobRecordsRequest) -> Listing:
    """What a ListJobs request asks for; InvalidListing, saying why, if malformed."""
    if not request.account_id:
        raise InvalidListing("account_id is required")
    if not 1 <= request.limit <= MAX_PAGE_JOBS:
        raise InvalidListing(f"limit must be 1..{MAX_PAGE_JOBS}")
    if request.after_job_id and not is_job_id(request.after_job_id):
        raise InvalidListing("after_job_id is not a job id")
    if len(request.model) > MAX_MODEL_CHARS:
        raise InvalidListing(f"model is longer than {MAX_MODEL_CHARS} characters")
    if request.client_task_id and not is_client_task_id(request.client_task_id):
        raise InvalidListing("client_task_id is not a client task id")
    status = None
    if request.status != job_state_pb2.JOB_STATUS_UNSPECIFIED:
        try:
            status = JobStatus.from_proto(request.status)
        except ValueError:
            raise InvalidListing("unknown status") from None
    return Listing(
        account_id=request.account_id,
        limit=request.limit,
        after_job_id=request.after_job_id or None,
        status=status,
        model=request.model or None,
        client_task_id=request.client_task_id or None,
    )


# -- messages ------------------------------------------------------------------


def timed_out_message(timeout_seconds: int) -> str:
    if timeout_seconds % 60 == 0:
        amount, unit = timeout_seconds // 60, "minute"
    else:
        amount, unit = timeout_seconds, "second"
    return f"Job timed out after {amount} {unit}{'' if amount == 1 else 's'}."


def cost_micros(
    *,
    units: int,
    estimated_units: int,
    min_billable_units: int,
    unit_price_micros: int,
    held_micros: int,
) -> int:
    """The charge for a finished job: the units the upstream produced (or, if it
    did not say, those asked for), at least the minimum, never above the hold."""
    billable = max(units if units > 0 else estimated_units, min_billable_units)
    return min(billable * unit_price_micros, held_micros)
