"""A job's status and modality as types, and the one table of legal status moves.

The shape follows h11's `_state.py`: every change of a job's status is an event,
and one table says which event may happen in which status and where it leads.
The jobs store asks `next_status` before it writes a status; anything the table
does not allow is refused (IllegalTransition), never written over. The jobs
schema mirrors the same table in a trigger (migration 0005), so a hand-written
UPDATE cannot move a job backwards either.

Values are the strings the database stores and the public API prints
("pending", "processing", "done", "failed"); the internal protos carry the
JobStatus and Modality enums, converted here and nowhere else.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from aiport.v1 import job_state_pb2


class JobStatus(enum.StrEnum):
    PENDING = "pending"  # accepted and queued; no worker holds it yet
    PROCESSING = "processing"  # a worker leased it (maybe an earlier, dead one)
    DONE = "done"  # final: a result, and a charge
    FAILED = "failed"  # final: refunded

    @property
    def finished(self) -> bool:
        return not TRANSITIONS[self]

    def to_proto(self) -> job_state_pb2.JobStatus:
        return _STATUS_TO_PROTO[self]

    @classmethod
    def from_proto(cls, value: job_state_pb2.JobStatus) -> JobStatus:
        """ValueError for UNSPECIFIED (a peer that does not set it) or an unknown number."""
        try:
            return _STATUS_FROM_PROTO[value]
        except KeyError:
            raise ValueError(f"no job status {value!r}") from None


class WorkerKind(enum.StrEnum):
    """A queue and the workers that consume it."""

    IMAGE = "image"
    VIDEO = "video"


class Modality(enum.StrEnum):
    IMAGE = "image"  # text to image
    IMG2IMG = "img2img"  # image(s) and text to image
    VIDEO = "video"  # text to video
    IMG2VIDEO = "img2video"  # first (and last) frame to video
    MULTIMODAL = "multimodal"  # reference images, videos and audios to video

    @property
    def worker_kind(self) -> WorkerKind:
        return _WORKER_KIND[self]

    def to_proto(self) -> job_state_pb2.Modality:
        return _MODALITY_TO_PROTO[self]

    @classmethod
    def from_proto(cls, value: job_state_pb2.Modality) -> Modality:
        """ValueError for UNSPECIFIED (a peer that does not set it) or an unknown number."""
        try:
            return _MODALITY_FROM_PROTO[value]
        except KeyError:
            raise ValueError(f"no modality {value!r}") from None


_WORKER_KIND: Final = MappingProxyType(
    {
        Modality.IMAGE: WorkerKind.IMAGE,
        Modality.IMG2IMG: WorkerKind.IMAGE,
        Modality.VIDEO: WorkerKind.VIDEO,
        Modality.IMG2VIDEO: WorkerKind.VIDEO,
        Modality.MULTIMODAL: WorkerKind.VIDEO,
    }
)
IMAGE_MODALITIES: Final = frozenset(m for m, k in _WORKER_KIND.items() if k is WorkerKind.IMAGE)
VIDEO_MODALITIES: Final = frozenset(m for m, k in _WORKER_KIND.items() if k is WorkerKind.VIDEO)


class JobEvent(enum.StrEnum):
    """Everything that changes a job's status."""

    CREATED = "created"  # the job row and its work message were committed
    CREATION_ABANDONED = "creation_abandoned"  # AbandonCreation found no job: born failed
    NOT_QUEUED = "not_queued"  # its work message never reached the broker
    ATTEMPT_BEGUN = "attempt_begun"  # a worker took the lease (again, after one lapsed)
    ATTEMPTS_EXHAUSTED = "attempts_exhausted"  # too many workers died running it
    SUCCEEDED = "succeeded"  # a worker's outcome: the result is stored
    WORKER_FAILED = "worker_failed"  # a worker's outcome: it failed
    TIMED_OUT = "timed_out"  # the sweeper: older than the job timeout


# How a job comes to exist.
INITIAL: Final[Mapping[JobEvent, JobStatus]] = MappingProxyType(
    {
        JobEvent.CREATED: JobStatus.PENDING,
        JobEvent.CREATION_ABANDONED: JobStatus.FAILED,
    }
)

# The table: status -> {event -> next status}. An event missing for a status is
# illegal in it. A finished job has no events at all.
_ACTIVE_EXITS: Final = {
    JobEvent.ATTEMPTS_EXHAUSTED: JobStatus.FAILED,
    # Our workers report only after an attempt made the job processing, but an
    # outcome is the truth about paid upstream work: one for a pending job is
    # accepted (as it always was), not lost.
    JobEvent.SUCCEEDED: JobStatus.DONE,
    JobEvent.WORKER_FAILED: JobStatus.FAILED,
    JobEvent.TIMED_OUT: JobStatus.FAILED,
}
TRANSITIONS: Final[Mapping[JobStatus, Mapping[JobEvent, JobStatus]]] = MappingProxyType(
    {
        JobStatus.PENDING: MappingProxyType(
            {
                JobEvent.NOT_QUEUED: JobStatus.FAILED,
                JobEvent.ATTEMPT_BEGUN: JobStatus.PROCESSING,
                **_ACTIVE_EXITS,
            }
        ),
        JobStatus.PROCESSING: MappingProxyType(
            {
                # The previous lease lapsed (its worker died): a new attempt resumes.
                JobEvent.ATTEMPT_BEGUN: JobStatus.PROCESSING,
                **_ACTIVE_EXITS,
            }
        ),
        JobStatus.DONE: MappingProxyType({}),
        JobStatus.FAILED: MappingProxyType({}),
    }
)

ACTIVE: Final = tuple(s for s in JobStatus if not s.finished)
FINISHED: Final = frozenset(s for s in JobStatus if s.finished)
# Every (from, to) pair that changes the status: what the database trigger allows.
STATUS_CHANGES: Final = frozenset(
    (status, target)
    for status, events in TRANSITIONS.items()
    for target in events.values()
    if target is not status
)


class IllegalTransition(Exception):
    """The event may not happen to a job in this status."""

    def __init__(self, status: JobStatus, event: JobEvent) -> None:
        super().__init__(f"{event} is illegal for a {status} job")
        self.status = status
        self.event = event


def allows(status: JobStatus, event: JobEvent) -> bool:
    return event in TRANSITIONS[status]


def next_status(status: JobStatus, event: JobEvent) -> JobStatus:
    try:
        return TRANSITIONS[status][event]
    except KeyError:
        raise IllegalTransition(status, event) from None


def initial_status(event: JobEvent) -> JobStatus:
    try:
        return INITIAL[event]
    except KeyError:
        raise ValueError(f"{event} does not create a job") from None


def sources(event: JobEvent) -> tuple[JobStatus, ...]:
    """The statuses in which the event is legal (for a batch UPDATE's WHERE)."""
    return tuple(s for s in JobStatus if allows(s, event))


def status_label(value: job_state_pb2.JobStatus) -> str:
    """For logs and metrics: the status a proto carries, or what came instead."""
    status = _STATUS_FROM_PROTO.get(value)
    return status.value if status is not None else f"unknown({value})"


def modality_label(value: job_state_pb2.Modality) -> str:
    """For logs and metrics: the modality a proto carries, or what came instead."""
    modality = _MODALITY_FROM_PROTO.get(value)
    return modality.value if modality is not None else f"unknown({value})"


# The internal protos' numbers (tests/unit/test_job_states.py: both ways complete).
_STATUS_TO_PROTO: Final[Mapping[JobStatus, job_state_pb2.JobStatus]] = MappingProxyType(
    {
        JobStatus.PENDING: job_state_pb2.JOB_STATUS_PENDING,
        JobStatus.PROCESSING: job_state_pb2.JOB_STATUS_PROCESSING,
        JobStatus.DONE: job_state_pb2.JOB_STATUS_DONE,
        JobStatus.FAILED: job_state_pb2.JOB_STATUS_FAILED,
    }
)
_STATUS_FROM_PROTO: Final = MappingProxyType({v: s for s, v in _STATUS_TO_PROTO.items()})
_MODALITY_TO_PROTO: Final[Mapping[Modality, job_state_pb2.Modality]] = MappingProxyType(
    {
        Modality.IMAGE: job_state_pb2.MODALITY_IMAGE,
        Modality.IMG2IMG: job_state_pb2.MODALITY_IMG2IMG,
        Modality.VIDEO: job_state_pb2.MODALITY_VIDEO,
        Modality.IMG2VIDEO: job_state_pb2.MODALITY_IMG2VIDEO,
        Modality.MULTIMODAL: job_state_pb2.MODALITY_MULTIMODAL,
    }
)
_MODALITY_FROM_PROTO: Final = MappingProxyType({v: m for m, v in _MODALITY_TO_PROTO.items()})
