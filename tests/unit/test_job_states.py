"""Job status and modality as types: the transition table, the proto numbers, and
the catalog's modality (pure)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from aiport.v1 import job_state_pb2

from services.common import job_states
from services.common.catalog import CatalogError, ImageModel, VideoModel, parse_catalog
from services.common.job_states import (
    IllegalTransition,
    JobEvent,
    JobStatus,
    Modality,
    WorkerKind,
)

PENDING, PROCESSING, DONE, FAILED = (
    JobStatus.PENDING,
    JobStatus.PROCESSING,
    JobStatus.DONE,
    JobStatus.FAILED,
)

# The lifecycle written out once more by hand, so that a change to the table
# must be a deliberate change here too: (status, event) -> next status.
LEGAL = {
    (PENDING, JobEvent.ATTEMPT_BEGUN): PROCESSING,
    (PENDING, JobEvent.NOT_QUEUED): FAILED,
    (PENDING, JobEvent.ATTEMPTS_EXHAUSTED): FAILED,
    (PENDING, JobEvent.SUCCEEDED): DONE,
    (PENDING, JobEvent.WORKER_FAILED): FAILED,
    (PENDING, JobEvent.TIMED_OUT): FAILED,
    (PROCESSING, JobEvent.ATTEMPT_BEGUN): PROCESSING,  # a resumed attempt
    (PROCESSING, JobEvent.ATTEMPTS_EXHAUSTED): FAILED,
    (PROCESSING, JobEvent.SUCCEEDED): DONE,
    (PROCESSING, JobEvent.WORKER_FAILED): FAILED,
    (PROCESSING, JobEvent.TIMED_OUT): FAILED,
}
ALL_PAIRS = list(itertools.product(JobStatus, JobEvent))


@pytest.mark.parametrize(("status", "event"), list(LEGAL))
def test_every_legal_transition_is_allowed(status: JobStatus, event: JobEvent) -> None:
    assert job_states.allows(status, event)
    assert job_states.next_status(status, event) is LEGAL[(status, event)]


@pytest.mark.parametrize(
    ("status", "event"), [pair for pair in ALL_PAIRS if pair not in LEGAL], ids=str
)
def test_every_other_transition_is_refused(status: JobStatus, event: JobEvent) -> None:
    assert not job_states.allows(status, event)
    with pytest.raises(IllegalTransition) as refused:
        job_states.next_status(status, event)
    assert (refused.value.status, refused.value.event) == (status, event)


@pytest.mark.parametrize("status", [DONE, FAILED])
def test_finished_jobs_are_final(status: JobStatus) -> None:
    assert status.finished
    assert job_states.TRANSITIONS[status] == {}
    for event in JobEvent:
        with pytest.raises(IllegalTransition):
            job_states.next_status(status, event)


def test_creation_events_are_only_creations() -> None:
    assert job_states.initial_status(JobEvent.CREATED) is PENDING
    assert job_states.initial_status(JobEvent.CREATION_ABANDONED) is FAILED
    for event in (JobEvent.CREATED, JobEvent.CREATION_ABANDONED):
        assert job_states.sources(event) == ()  # never happen to an existing job
    with pytest.raises(ValueError, match="does not create"):
        job_states.initial_status(JobEvent.SUCCEEDED)


def test_derived_views_of_the_table() -> None:
    assert job_states.ACTIVE == (PENDING, PROCESSING)
    assert job_states.FINISHED == {DONE, FAILED}
    assert job_states.sources(JobEvent.TIMED_OUT) == (PENDING, PROCESSING)
    assert job_states.sources(JobEvent.NOT_QUEUED) == (PENDING,)
    # What the database trigger mirrors: moves that change the status.
    assert job_states.STATUS_CHANGES == {
        (PENDING, PROCESSING),
        (PENDING, DONE),
        (PENDING, FAILED),
        (PROCESSING, DONE),
        (PROCESSING, FAILED),
    }


def test_database_and_public_values_are_unchanged() -> None:
    # Stored in jobs.jobs and printed by GET /v1/jobs/{id}: no data migration,
    # no change to the public API.
    assert [s.value for s in JobStatus] == ["pending", "processing", "done", "failed"]
    assert [m.value for m in Modality] == ["image", "img2img", "video", "img2video", "multimodal"]


def test_every_status_and_modality_has_its_own_proto_number_both_ways() -> None:
    status_numbers = {s.to_proto() for s in JobStatus}
    assert status_numbers == set(job_state_pb2.JobStatus.values()) - {
        job_state_pb2.JOB_STATUS_UNSPECIFIED
    }
    assert all(JobStatus.from_proto(s.to_proto()) is s for s in JobStatus)
    modality_numbers = {m.to_proto() for m in Modality}
    assert modality_numbers == set(job_state_pb2.Modality.values()) - {
        job_state_pb2.MODALITY_UNSPECIFIED
    }
    assert all(Modality.from_proto(m.to_proto()) is m for m in Modality)


def test_unspecified_or_unknown_numbers_are_refused_not_guessed() -> None:
    # A peer of another version leaves the field unset; that is never "pending".
    for bad in (job_state_pb2.JOB_STATUS_UNSPECIFIED, 99):
        with pytest.raises(ValueError, match="no job status"):
            JobStatus.from_proto(bad)  # type: ignore[arg-type]
    for bad in (job_state_pb2.MODALITY_UNSPECIFIED, 99):
        with pytest.raises(ValueError, match="no modality"):
            Modality.from_proto(bad)  # type: ignore[arg-type]
    assert job_states.status_label(job_state_pb2.JOB_STATUS_DONE) == "done"
    assert job_states.status_label(job_state_pb2.JOB_STATUS_UNSPECIFIED) == "unknown(0)"
    assert job_states.modality_label(job_state_pb2.MODALITY_IMG2VIDEO) == "img2video"


def test_each_modality_has_a_worker_kind() -> None:
    kinds = {m: m.worker_kind for m in Modality}
    assert kinds == {
        Modality.IMAGE: WorkerKind.IMAGE,
        Modality.IMG2IMG: WorkerKind.IMAGE,
        Modality.VIDEO: WorkerKind.VIDEO,
        Modality.IMG2VIDEO: WorkerKind.VIDEO,
        Modality.MULTIMODAL: WorkerKind.VIDEO,
    }


# -- the catalog's modality ------------------------------------------------------------


def _image(modality: Any) -> dict[str, Any]:
    return {
        "id": "img",
        "display_name": "x",
        "created": 1,
        "modality": modality,
        "supports_aspect_ratio": True,
        "price_per_image": {"default": "700"},
    }


def _video(modality: Any) -> dict[str, Any]:
    return {
        "id": "vid",
        "display_name": "x",
        "created": 1,
        "modality": modality,
        "price_per_second": {"720p": "2000"},
    }


def test_the_catalog_parses_modality_into_the_enum() -> None:
    catalog = parse_catalog({"image": [_image("img2img")], "video": [_video("multimodal")]})
    image, video = catalog.models["img"], catalog.models["vid"]
    assert isinstance(image, ImageModel) and image.modality is Modality.IMG2IMG
    assert isinstance(video, VideoModel) and video.modality is Modality.MULTIMODAL


@pytest.mark.parametrize("value", ["text2image", "IMAGE", "", "img2img "])
def test_an_unknown_modality_stops_the_catalog(value: str) -> None:
    with pytest.raises(CatalogError, match=r"image\[0\]: unknown modality") as raised:
        parse_catalog({"image": [_image(value)]})
    assert "use one of: image, img2img" in str(raised.value)


def test_a_modality_in_the_wrong_section_stops_the_catalog() -> None:
    with pytest.raises(CatalogError, match=r"video\[0\]: modality 'img2img' does not belong"):
        parse_catalog({"video": [_video("img2img")]})
    with pytest.raises(CatalogError, match=r"image\[0\]: modality 'video' does not belong"):
        parse_catalog({"image": [_image("video")]})


def test_a_missing_or_non_string_modality_stops_the_catalog() -> None:
    with pytest.raises(CatalogError, match="'modality' must be a str"):
        parse_catalog({"video": [_video(3)]})
    with pytest.raises(CatalogError, match="'modality' must be a str"):
        parse_catalog({"image": [_image(None)]})
