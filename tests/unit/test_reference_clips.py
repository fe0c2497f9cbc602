"""Reference videos and audios measured from their container headers and held to each
model's upstream rules (no transcoding: what breaks a rule is refused, naming it)."""

from __future__ import annotations

import struct

import pytest

from sandbox.server import SAMPLE_MP4
from services.common.catalog import (
    CatalogError,
    ReferenceClipRules,
    VideoModel,
    load_catalog,
    parse_catalog,
)
from services.common.settings import PROJECT_ROOT
from services.providers.reference_clips import (
    MAX_BOXES,
    Clip,
    ReferenceClipRefused,
    check_clips,
    measure,
)
from tests.support.clips import SAMPLE_MP4_SECONDS, mp3, mp4, wav

CATALOG = load_catalog(PROJECT_ROOT / "config" / "catalog.yaml")
_SEEDANCE = CATALOG.models["seedance-2.0-fast-multimodal"]
assert isinstance(_SEEDANCE, VideoModel)
SEEDANCE: VideoModel = _SEEDANCE


@pytest.mark.parametrize(
    ("kind", "data", "content_type", "seconds"),
    [
        ("video", mp4(6.5), "video/mp4", 6.5),
        ("video", mp4(3, version=1, moov_last=True), "video/mp4", 3.0),
        ("video", mp4(4, fragmented=True), "video/mp4", 4.0),
        ("video", mp4(7, brand=b"qt  "), "video/quicktime", 7.0),
        ("video", SAMPLE_MP4.read_bytes(), "video/mp4", SAMPLE_MP4_SECONDS),
        ("audio", mp4(3, handler=b"soun"), "audio/mp4", 3.0),
        ("audio", wav(3.0), "audio/wav", 3.0),
        ("audio", mp3(5.0), "audio/mpeg", 5.0),
    ],
)
def test_lengths_come_from_the_container(
    kind: str, data: bytes, content_type: str, seconds: float
) -> None:
    clip = measure(kind, "x[0]", data, content_type)  # type: ignore[arg-type]
    assert clip.seconds == pytest.approx(seconds, abs=0.03)


@pytest.mark.parametrize(
    ("kind", "data", "content_type", "reason"),
    [
        ("video", b"\x00\x00\x00\x18ftypisom" + bytes(12), "video/mp4", "no movie header"),
        ("video", mp4(4)[:-80], "video/mp4", "runs past the end"),
        ("video", mp4(4, handler=b"soun"), "video/mp4", "no video track"),
        ("audio", mp4(4), "audio/mp4", "no audio track"),
        ("video", mp4(0), "video/mp4", "no length"),
        ("video", struct.pack(">I4s", 8, b"free") * (MAX_BOXES + 1), "video/mp4", "too many"),
        ("audio", b"RIFF\x10\x00\x00\x00WAVEjunk", "audio/wav", "cannot be read as audio/wav"),
        ("audio", b"ID3" + bytes(64), "audio/mpeg", "cannot be read as audio/mpeg"),
        ("video", b"\x1a\x45\xdf\xa3" + bytes(64), "video/webm", "cannot be checked"),
    ],
)
def test_unreadable_clips_are_refused_with_the_reason(
    kind: str, data: bytes, content_type: str, reason: str
) -> None:
    with pytest.raises(ReferenceClipRefused, match=reason) as caught:
        measure(kind, "videos[2]", data, content_type)  # type: ignore[arg-type]
    assert "`videos[2]`" in str(caught.value) or "reference" in str(caught.value).lower()


def clip(seconds: float, field: str = "videos[0]", content_type: str = "video/mp4") -> Clip:
    return Clip("video", field, content_type, seconds)


def test_seedance_takes_two_to_fifteen_seconds_each_and_fifteen_in_all() -> None:
    rules = SEEDANCE.reference_video
    check_clips("video", [clip(2.0), clip(6.5, "videos[1]"), clip(6.5, "videos[2]")], rules)
    with pytest.raises(ReferenceClipRefused, match=r"`videos\[1\]` is 1\.5 s long.*2 to 15 s"):
        check_clips("video", [clip(3), clip(1.5, "videos[1]")], rules)
    with pytest.raises(ReferenceClipRefused, match=r"`videos\[0\]` is 16\.0 s"):
        check_clips("video", [clip(16)], rules)
    with pytest.raises(ReferenceClipRefused, match=r"add up to 18\.0 s; .*at most 15 s of video"):
        check_clips("video", [clip(6), clip(6, "videos[1]"), clip(6, "videos[2]")], rules)


def test_a_format_the_upstream_does_not_take_is_named() -> None:
    audio = Clip("audio", "audios[0]", "audio/aac", 4.0)
    with pytest.raises(ReferenceClipRefused, match=r"`audios\[0\]` is audio/aac.*audio/mpeg or"):
        check_clips("audio", [audio], SEEDANCE.reference_audio)
    check_clips("audio", [audio], ReferenceClipRules())  # no rules: every readable format


def test_the_catalog_refuses_rules_it_cannot_check() -> None:
    base = {
        "id": "v",
        "display_name": "V",
        "created": 1,
        "modality": "multimodal",
        "price_per_second": {"720p": "1"},
    }
    with pytest.raises(CatalogError, match="cannot check the length of video/webm"):
        parse_catalog({"video": [{**base, "reference_video": {"formats": ["video/webm"]}}]})
    with pytest.raises(CatalogError, match="min_seconds exceeds max_seconds"):
        parse_catalog(
            {"video": [{**base, "reference_audio": {"min_seconds": 5, "max_seconds": 2}}]}
        )
    with pytest.raises(CatalogError, match="unknown key 'max_secs'"):
        parse_catalog({"video": [{**base, "reference_audio": {"max_secs": 5}}]})
