"""Deterministic text: the same key always yields the same words and ids.

Randomness comes from SHA-256 in counter mode rather than `random`, so the
output is stable across Python versions and platforms, which recorded test
expectations rely on.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator

# 64 words, so one hash byte picks one word without bias (256 % 64 == 0).
VOCABULARY: tuple[str, ...] = (
    "apple", "river", "stone", "cloud", "green", "quiet", "bright", "window",
    "garden", "silver", "morning", "paper", "simple", "orange", "forest", "candle",
    "yellow", "bridge", "gentle", "harbor", "little", "market", "valley", "summer",
    "winter", "planet", "rocket", "ocean", "meadow", "pencil", "basket", "copper",
    "velvet", "thunder", "lantern", "island", "button", "kitten", "marble", "pocket",
    "travel", "signal", "circle", "number", "letter", "friend", "honey", "silent",
    "coffee", "branch", "feather", "mirror", "puzzle", "shadow", "spring", "tunnel",
    "wonder", "yonder", "zephyr", "anchor", "cobalt", "dinner", "engine", "falcon",
)  # fmt: skip
assert len(VOCABULARY) == 64

_PIECE = re.compile(r"\s*\S+")


def _stream(key: str) -> Iterator[int]:
    counter = 0
    while True:
        yield from hashlib.sha256(f"{key}\x00{counter}".encode()).digest()
        counter += 1


def words(key: str, count: int) -> list[str]:
    """`count` vocabulary words determined by `key`."""
    stream = _stream(key)
    return [VOCABULARY[next(stream) % 64] for _ in range(count)]


def hex_digits(key: str, length: int) -> str:
    """`length` deterministic lowercase hex characters (for ids)."""
    out = ""
    counter = 0
    while len(out) < length:
        out += hashlib.sha256(f"{key}\x00id\x00{counter}".encode()).hexdigest()
        counter += 1
    return out[:length]


def pieces(text: str) -> list[str]:
    """Split text into token pieces, each carrying its leading whitespace.

    One piece is one completion token, and joining the pieces gives back the
    text (minus trailing whitespace), so streamed deltas concatenate exactly.
    """
    return _PIECE.findall(text)
