"""Helpers both media protocols share: sniffing bytes, data: URLs, ids. No I/O."""

from __future__ import annotations

import base64
import binascii
import io
import re
import secrets
import struct
import time
import warnings

from PIL import Image

from sandbox.errors import invalid

_DATA_URL = re.compile(r"data:([a-z0-9.+-]+/[a-z0-9.+-]+)(?:;[a-z0-9=.+-]+)*;base64,", re.I)


def sniff(data: bytes) -> str | None:
    """What the bytes are, by their magic number (not what someone declared)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if len(data) >= 12 and data[4:8] == b"ftyp":
        return "video/mp4"
    if data.startswith(b"ID3") or data[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "audio/mpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "audio/wav"
    return None


def decode_data_url(url: str, param: str) -> tuple[str, bytes]:
    """(declared media type, bytes) of a base64 data: URL; anything else is a 400."""
    match = _DATA_URL.match(url)
    if match is None:
        raise invalid(
            f"Invalid '{param}': the sandbox cannot fetch remote files; send a base64 data: URL.",
            param=param,
            code="invalid_value",
        )
    try:
        data = base64.b64decode(url[match.end() :], validate=True)
    except (binascii.Error, ValueError):
        raise invalid(
            f"Invalid '{param}': the data: URL is not valid base64.",
            param=param,
            code="invalid_value",
        ) from None
    if not data:
        raise invalid(f"Invalid '{param}': the file is empty.", param=param, code="invalid_value")
    return match.group(1).lower(), data


def data_url_summary(url: str) -> str:
    """What the request log keeps of a data: URL: its type and size, not megabytes of base64."""
    match = _DATA_URL.match(url)
    if match is None:
        return url[:200]
    payload = url[match.end() :]
    size = len(payload) * 3 // 4 - len(payload) + len(payload.rstrip("="))
    return f"{url[: match.end()]}[{size} bytes]"


def new_id(prefix: str) -> str:
    """Like Ark's task ids: prefix, UTC timestamp, random suffix (cgt-20260405024433-sbj8r)."""
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
    return f"{prefix}-{stamp}-{secrets.token_hex(4)}"


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from an image's header (PNG, JPEG, WEBP, BMP...); None if the
    bytes are no image. Only the header is read: nothing is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                return int(image.width), int(image.height)
    except (Image.DecompressionBombError, OSError, ValueError, SyntaxError):
        return None


def retimed_mp4(data: bytes, seconds: int) -> bytes:
    """The MP4 `data` with its headers saying it lasts `seconds`: what an upstream's
    result of that duration declares, without an encoder. The movie (mvhd), track
    (tkhd) and media (mdhd) durations are rewritten, each in its own timescale; the
    samples themselves are untouched (players stop at the last one)."""
    out = bytearray(data)
    _retime(out, 0, len(out), seconds, movie_timescale=0)
    return bytes(out)


_RETIME_CONTAINERS = (b"moov", b"trak", b"mdia")


def _retime(out: bytearray, start: int, end: int, seconds: int, movie_timescale: int) -> int:
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", out, pos)
        if size < 8 or pos + size > end:
            break  # our own asset: nothing malformed to defend against, just stop
        body = pos + 8
        version = out[body]
        if kind in _RETIME_CONTAINERS:
            movie_timescale = _retime(out, body, pos + size, seconds, movie_timescale)
        elif kind in (b"mvhd", b"mdhd"):
            # version 0: created, modified, timescale, duration (32 bits); 1: 64-bit times.
            times = 8 if version == 1 else 4
            scale_at = body + 4 + 2 * times
            (timescale,) = struct.unpack_from(">I", out, scale_at)
            _put(out, scale_at + 4, version, timescale * seconds)
            if kind == b"mvhd":
                movie_timescale = timescale
        elif kind == b"tkhd" and movie_timescale:
            # created, modified, track id, reserved, then the duration in the movie's scale.
            times = 8 if version == 1 else 4
            _put(out, body + 4 + 2 * times + 8, version, movie_timescale * seconds)
        pos += size
    return movie_timescale


def _put(out: bytearray, at: int, version: int, value: int) -> None:
    struct.pack_into(">Q" if version == 1 else ">I", out, at, value)
