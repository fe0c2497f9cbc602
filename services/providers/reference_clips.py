"""Measuring reference videos and audios against a model's upstream rules. Pure.

Upstreams document rules for reference clips (Seedance 2.0: MP4/MOV video and MP3/WAV
audio, 2-15 s each, at most 15 s of each kind in all; see `reference_video` and
`reference_audio` in config/catalog.yaml). The worker has no transcoder, so a clip is
never adapted: each is measured, and one outside the rules fails its job as the
client's input, with a message naming the field and the limit, before the upstream
(which would charge or fail for it) sees anything.

Threat model: the bytes come from anyone (at most the rule's max_bytes, 50 MB).
Lengths are read from container headers, never by decoding media:
- MP4/MOV (ISO base media): a box walker below, bounded in boxes visited and checked
  against the file's end at every step; the length is the movie header's (`mvhd`, or
  `mehd` for a fragmented file), and the file must carry a track of the right kind.
- MP3, WAV, AAC: mutagen's stream-info readers (a well-kept pure-Python library that
  already knows VBR headers, RIFF chunks and ADTS framing). Anything a parser raises
  on a malformed file is a refusal, never a crash.
"""

from __future__ import annotations

import io
import math
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from mutagen.aac import AAC
from mutagen.mp3 import MP3
from mutagen.wave import WAVE

from services.common.catalog import CLIP_FORMATS, ReferenceClipRules

ClipKind = Literal["video", "audio"]

# More boxes than any real file has at the levels walked (a box bomb is refused).
MAX_BOXES: Final = 4096
# The ISO handler type a track of each kind carries.
_HANDLER: Final = {"video": b"vide", "audio": b"soun"}
_ISO_TYPES: Final = frozenset({"video/mp4", "video/quicktime", "audio/mp4"})
_READERS: Final = {"audio/mpeg": MP3, "audio/wav": WAVE, "audio/aac": AAC}


class ReferenceClipRefused(ValueError):
    """The clip breaks the upstream's rules or cannot be read; the message is safe to show."""


@dataclass(frozen=True, slots=True)
class Clip:
    kind: ClipKind
    field: str  # the request field it came from, e.g. videos[1]
    content_type: str
    seconds: float


def _seconds(value: float) -> str:
    return f"{value:g}"


def measure(kind: ClipKind, field: str, data: bytes, content_type: str) -> Clip:
    """The clip's length from its container headers; refused if it cannot be read."""
    if content_type in _ISO_TYPES:
        seconds = _iso_seconds(kind, field, data)
    elif content_type in _READERS:
        seconds = _mutagen_seconds(field, data, content_type)
    else:
        raise ReferenceClipRefused(
            f"Reference {kind} `{field}` is {content_type}, whose length cannot be checked; "
            f"send one of {', '.join(CLIP_FORMATS[kind])}."
        )
    if not math.isfinite(seconds) or seconds <= 0:
        raise ReferenceClipRefused(f"Reference {kind} `{field}` has no playable length.")
    return Clip(kind, field, content_type, seconds)


def check_clips(kind: ClipKind, clips: Sequence[Clip], rules: ReferenceClipRules) -> None:
    """Every clip of one kind against the model's rules: format, length each, length in all."""
    formats = rules.formats or CLIP_FORMATS[kind]
    for clip in clips:
        if clip.content_type not in formats:
            raise ReferenceClipRefused(
                f"Reference {kind} `{clip.field}` is {clip.content_type}; this model takes "
                f"{' or '.join(formats)}."
            )
        low, high = rules.min_seconds, rules.max_seconds
        if clip.seconds < low or (high and clip.seconds > high):
            span = f"{_seconds(low)} to {_seconds(high)} s" if high else f"at least {low:g} s"
            raise ReferenceClipRefused(
                f"Reference {kind} `{clip.field}` is {clip.seconds:.1f} s long; this model "
                f"takes {span} per {kind}."
            )
    total = sum(clip.seconds for clip in clips)
    if rules.max_total_seconds and total > rules.max_total_seconds:
        raise ReferenceClipRefused(
            f"The reference {kind}s add up to {total:.1f} s; this model takes at most "
            f"{_seconds(rules.max_total_seconds)} s of {kind} in all."
        )


# -- MP4 / MOV ---------------------------------------------------------------------------


class _Malformed(Exception):
    pass


def _boxes(
    data: bytes, start: int, end: int, budget: list[int]
) -> Iterator[tuple[bytes, int, int]]:
    """(type, body start, body end) of each box between start and end."""
    pos = start
    while pos < end:
        budget[0] -= 1
        if budget[0] < 0:
            raise _Malformed("too many boxes")
        if pos + 8 > end:
            raise _Malformed("a box header runs past its parent")
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:  # a 64-bit size follows the type
            if pos + 16 > end:
                raise _Malformed("a box header runs past its parent")
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        elif size == 0:  # the box runs to the end of its parent
            size = end - pos
        if size < header or pos + size > end:
            raise _Malformed("a box runs past the end of the file")
        yield kind, pos + header, pos + size
        pos += size


def _child(
    data: bytes, start: int, end: int, kind: bytes, budget: list[int]
) -> tuple[int, int] | None:
    for found, body, stop in _boxes(data, start, end, budget):
        if found == kind:
            return body, stop
    return None


def _full_box_number(data: bytes, body: int, stop: int, v0: str, v1: str, skip: int) -> int:
    """A number at `skip` bytes into a full box's payload (layout by version 0 or 1)."""
    if body + 4 > stop:
        raise _Malformed("a header box is truncated")
    layout = v1 if data[body] == 1 else v0
    if body + 4 + struct.calcsize(layout) > stop:
        raise _Malformed("a header box is truncated")
    values = struct.unpack_from(layout, data, body + 4)
    return int(values[skip])


def _iso_seconds(kind: ClipKind, field: str, data: bytes) -> float:
    budget = [MAX_BOXES]
    try:
        moov = _child(data, 0, len(data), b"moov", budget)
        if moov is None:
            raise _Malformed("no movie header (moov)")
        mvhd = _child(data, *moov, b"mvhd", budget)
        if mvhd is None:
            raise _Malformed("no movie header (mvhd)")
        # mvhd: creation, modification, timescale, duration (32-bit or 64-bit times).
        timescale = _full_box_number(data, *mvhd, ">III", ">QQI", 2)
        duration = _full_box_number(data, *mvhd, ">IIII", ">QQIQ", 3)
        if duration == 0:  # fragmented: the movie extends header says how long
            mvex = _child(data, *moov, b"mvex", budget)
            mehd = _child(data, *mvex, b"mehd", budget) if mvex else None
            if mehd is not None:
                duration = _full_box_number(data, *mehd, ">I", ">Q", 0)
        if timescale == 0 or duration in (0, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF):
            raise _Malformed("the movie header gives no length")
        if not _has_track(data, moov, _HANDLER[kind], budget):
            raise _Malformed(f"it has no {kind} track")
    except _Malformed as exc:
        raise ReferenceClipRefused(f"Reference {kind} `{field}` cannot be read: {exc}.") from None
    return duration / timescale


def _has_track(data: bytes, moov: tuple[int, int], handler: bytes, budget: list[int]) -> bool:
    for kind, body, stop in _boxes(data, *moov, budget):
        if kind != b"trak":
            continue
        mdia = _child(data, body, stop, b"mdia", budget)
        hdlr = _child(data, *mdia, b"hdlr", budget) if mdia else None
        # hdlr: version/flags, pre_defined, then the handler type.
        if hdlr is not None and hdlr[0] + 12 <= hdlr[1]:
            if data[hdlr[0] + 8 : hdlr[0] + 12] == handler:
                return True
    return False


# -- MP3, WAV, AAC -----------------------------------------------------------------------


def _mutagen_seconds(field: str, data: bytes, content_type: str) -> float:
    # mutagen's stubs leave its constructors and `info` untyped.
    reader: Any = _READERS[content_type]
    try:
        length = reader(io.BytesIO(data)).info.length
    except Exception:  # a malformed file may raise anything from a parser: refuse it
        raise ReferenceClipRefused(
            f"Reference audio `{field}` cannot be read as {content_type}."
        ) from None
    return float(length)


__all__ = ["Clip", "ClipKind", "ReferenceClipRefused", "check_clips", "measure"]
