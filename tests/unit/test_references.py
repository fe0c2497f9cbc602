"""Upload ids, upload URLs and job result URLs as job references (issue 11, item 8)."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiport.v1 import job_state_pb2

from services.common.blobs import LocalBlobStore, new_key, public_url
from services.gateway.errors import PublicError
from services.gateway.references import (
    OwnReference,
    ReferenceResolver,
    is_own_reference,
    is_upload_id,
    own_references,
)

BASE = "https://aiport.example"
TOKEN = "Ab3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF"


def test_upload_ids() -> None:
    assert is_upload_id(f"upl_{TOKEN}")
    for bad in (f"upl_{TOKEN[:-1]}", f"upl_{TOKEN}x", f"UPL_{TOKEN}", TOKEN, "upl_", ""):
        assert not is_upload_id(bad), bad


def test_own_references_are_ids_and_our_file_urls() -> None:
    assert is_own_reference(f"upl_{TOKEN}")
    assert is_own_reference(f"http://anyhost/files/uploads/{TOKEN}/image.png")
    assert is_own_reference(f"https://x/files/results/{TOKEN}/video.mp4")
    assert not is_own_reference("https://example.com/files/a.png")


def test_own_references_name_their_fields_in_request_order() -> None:
    spec = job_state_pb2.WorkSpec(
        first_frame_url=f"upl_{TOKEN}",
        last_frame_url="https://example.com/last.png",
        images=["https://example.com/a.png", f"https://h/files/results/{TOKEN}/image.png"],
        videos=[f"https://h/files/results/{TOKEN}/video.mp4"],
        audios=["https://example.com/a.mp3"],
    )
    assert own_references(spec) == [
        OwnReference("first_frame_url", f"upl_{TOKEN}", "image"),
        OwnReference("images[1]", f"https://h/files/results/{TOKEN}/image.png", "image"),
        OwnReference("videos[0]", f"https://h/files/results/{TOKEN}/video.mp4", "video"),
    ]
    assert own_references(job_state_pb2.WorkSpec(images=["https://example.com/a.png"])) == []


async def stored(store: LocalBlobStore, kind: str, name: str, owner: str | None) -> str:
    key = new_key(kind, name)  # type: ignore[arg-type]
    if owner is not None:
        await store.record_owner(key, owner)
    await store.put_bytes(key, b"bytes")
    return key


def token(key: str) -> str:
    return key.split("/")[1]


async def test_the_callers_blobs_resolve_to_canonical_urls(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    upload = await stored(store, "uploads", "image.png", "acct_A")
    result = await stored(store, "results", "image.png", "acct_A")
    video = await stored(store, "results", "video.mp4", "acct_A")
    spec = job_state_pb2.WorkSpec(
        images=[
            f"upl_{token(upload)}",
            f"http://127.0.0.1:8080/files/{result}?x=1",
            "https://example.com/a.png",
        ],
        first_frame_url=f"upl_{token(upload)}",
        videos=[f"http://localhost/files/{video}"],
    )
    await ReferenceResolver(store, BASE).resolve(spec, "acct_A")
    assert list(spec.images) == [
        public_url(BASE, upload),
        public_url(BASE, result),
        "https://example.com/a.png",  # not ours: left for the worker's fetch rules
    ]
    assert spec.first_frame_url == public_url(BASE, upload)
    assert list(spec.videos) == [public_url(BASE, video)]


async def refusal(store: LocalBlobStore, spec: job_state_pb2.WorkSpec) -> PublicError:
    with pytest.raises(PublicError) as info:
        await ReferenceResolver(store, BASE).resolve(spec, "acct_A")
    return info.value


async def test_another_accounts_blob_is_refused_like_an_unknown_one(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    theirs = await stored(store, "uploads", "image.png", "acct_B")
    their_result = await stored(store, "results", "image.png", "acct_B")
    legacy = await stored(store, "uploads", "image.png", None)  # stored before owners
    unknown = f"uploads/{TOKEN}/image.png"
    answers = []
    for value in (
        f"upl_{token(theirs)}",
        public_url(BASE, theirs),
        public_url(BASE, their_result),
        public_url(BASE, legacy),
        f"upl_{token(legacy)}",
        f"upl_{TOKEN}",
        public_url(BASE, unknown),
    ):
        error = await refusal(store, job_state_pb2.WorkSpec(images=["https://a.b/x.png", value]))
        assert (error.status, error.code, error.param) == (400, "reference_not_found", "images[1]")
        answers.append(error.message)
        assert "acct_B" not in error.message
    assert len(set(answers)) == 1  # nothing tells "someone else's" from "no such thing"


async def test_a_blob_of_the_wrong_media_is_refused(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    video = await stored(store, "results", "video.mp4", "acct_A")
    image = await stored(store, "uploads", "image.png", "acct_A")
    error = await refusal(store, job_state_pb2.WorkSpec(first_frame_url=public_url(BASE, video)))
    assert (error.status, error.param) == (400, "first_frame_url")
    assert error.message == "'first_frame_url' is a video; this field takes an image."
    error = await refusal(store, job_state_pb2.WorkSpec(videos=[f"upl_{token(image)}"]))
    assert error.message == "'videos[0]' is an image; this field takes a video."
