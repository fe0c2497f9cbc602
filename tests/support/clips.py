"""Small media files of a known length, built byte by byte (no encoder on this machine).

The containers are real (the boxes, chunks and frame headers a parser reads); the media
inside is silence or nothing, which is all a length check looks at.
"""

from __future__ import annotations

import io
import struct
import wave

SAMPLE_MP4_SECONDS = 2.0  # sandbox/assets/sample.mp4


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def _full_box(kind: bytes, version: int, payload: bytes) -> bytes:
    return _box(kind, bytes([version, 0, 0, 0]) + payload)


def mp4(
    seconds: float,
    *,
    handler: bytes = b"vide",
    brand: bytes = b"isom",
    version: int = 0,
    fragmented: bool = False,
    moov_last: bool = False,
) -> bytes:
    """An MP4 (or MOV, brand b'qt  ') whose movie header says `seconds`, with one track."""
    timescale = 1000
    duration = round(seconds * timescale)
    layout = ">QQIQ" if version == 1 else ">IIII"
    mvhd = _full_box(
        b"mvhd", version, struct.pack(layout, 0, 0, timescale, 0 if fragmented else duration)
    )
    hdlr = _full_box(b"hdlr", 0, struct.pack(">I4s", 0, handler) + bytes(12) + b"track\0")
    trak = _box(b"trak", _box(b"mdia", hdlr))
    moov_children = mvhd + trak
    if fragmented:
        moov_children += _box(b"mvex", _full_box(b"mehd", 0, struct.pack(">I", duration)))
    ftyp = _box(b"ftyp", brand + struct.pack(">I", 0) + brand)
    moov = _box(b"moov", moov_children)
    mdat = _box(b"mdat", bytes(64))
    return ftyp + (mdat + moov if moov_last else moov + mdat)


def wav(seconds: float, rate: int = 8000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(bytes(2 * round(seconds * rate)))
    return out.getvalue()


# MPEG-1 Layer III, 128 kbit/s, 44.1 kHz, no padding: 417-byte frames of 1152 samples.
_MP3_HEADER = b"\xff\xfb\x90\x00"
_MP3_FRAME = _MP3_HEADER + bytes(417 - len(_MP3_HEADER))


def mp3(seconds: float) -> bytes:
    frames = round(seconds * 44100 / 1152)
    return _MP3_FRAME * frames


__all__ = ["SAMPLE_MP4_SECONDS", "mp3", "mp4", "wav"]
