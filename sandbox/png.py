"""Real PNG files without Pillow: a seeded diagonal gradient, written with zlib + struct.

`fit` picks the size the sandbox actually renders: the requested aspect ratio,
exactly, with the long side capped so tests stay fast.
"""

from __future__ import annotations

import hashlib
import math
import struct
import zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"
RENDER_CAP = 512  # the long side of what the sandbox draws, whatever was asked for


def fit(width: int, height: int, cap: int = RENDER_CAP) -> tuple[int, int]:
    """The largest size within `cap` (long side) whose ratio is exactly width:height.

    Exact whenever the reduced ratio fits in the cap (every ratio the public API
    offers does); otherwise the nearest size that does fit.
    """
    if width <= cap and height <= cap:
        return width, height
    g = math.gcd(width, height)
    a, b = width // g, height // g
    k = cap // max(a, b)
    if k >= 1:
        return a * k, b * k
    scale = cap / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _palette(seed: bytes) -> tuple[tuple[int, int, int], tuple[int, int, int], int]:
    start = (seed[0], seed[1], seed[2])
    end = (seed[3], seed[4], seed[5])
    stripe = 8 + seed[6] % 24
    return start, end, stripe


def render(width: int, height: int, seed_text: str) -> bytes:
    """An RGB PNG of exactly width x height: the same seed text gives the same bytes."""
    if width < 1 or height < 1:
        raise ValueError("a PNG needs at least one pixel")
    seed = hashlib.sha256(seed_text.encode()).digest()
    (r0, g0, b0), (r1, g1, b1), stripe = _palette(seed)
    # One long diagonal strip of pixels; row y is the slice starting at pixel y,
    # so every row is a cheap slice and the picture is a diagonal gradient.
    span = width + height
    strip = bytearray()
    for i in range(span):
        t = i / max(1, span - 1)
        shade = 24 if (i // stripe) % 2 else 0
        strip += bytes(
            (
                min(255, int(r0 + (r1 - r0) * t) + shade),
                min(255, int(g0 + (g1 - g0) * t) + shade),
                min(255, int(b0 + (b1 - b0) * t) + shade),
            )
        )
    raw = bytearray()
    for y in range(height):
        raw.append(0)  # filter type None
        raw += strip[3 * y : 3 * (y + width)]
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(bytes(raw), 6))
        + _chunk(b"IEND", b"")
    )
