"""Decode-and-verify of images (issue 11): uploads and fetched references."""

from __future__ import annotations

import asyncio
import io
import struct
import threading
import zlib

import pytest
from PIL import Image

from services.common.images import DecodeGate, ImageLimits, InvalidImage, verify_image

LIMITS = ImageLimits(max_side=4000, max_pixels=4_000_000)


def encode(fmt: str, size: tuple[int, int] = (64, 48), **options: object) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, "red").save(out, fmt, **options)
    return out.getvalue()


def animated(fmt: str) -> bytes:
    out = io.BytesIO()
    frames = [Image.new("RGB", (8, 8), c) for c in ("red", "blue")]
    frames[0].save(out, fmt, save_all=True, append_images=frames[1:])
    return out.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int, height: int) -> bytes:
    """A few KiB of PNG whose header declares width × height RGB pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1_000_000, 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("fmt", "content_type", "extension"),
    [("PNG", "image/png", "png"), ("JPEG", "image/jpeg", "jpg"), ("WEBP", "image/webp", "webp")],
)
def test_still_images_of_the_documented_formats_pass(
    fmt: str, content_type: str, extension: str
) -> None:
    info = verify_image(encode(fmt), LIMITS)
    assert (info.format, info.content_type, info.extension) == (fmt, content_type, extension)
    assert (info.width, info.height) == (64, 48)


def refused(data: bytes, limits: ImageLimits = LIMITS) -> str:
    with pytest.raises(InvalidImage) as info:
        verify_image(data, limits)
    return info.value.message


def test_png_signature_then_garbage_is_refused() -> None:
    message = refused(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    assert message == "The PNG image could not be decoded (it is corrupt or truncated)."


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_truncated_images_are_refused(fmt: str) -> None:
    data = encode(fmt, (256, 256))
    assert "could not be decoded" in refused(data[: len(data) * 2 // 3])


def test_a_corrupt_png_checksum_is_refused() -> None:
    data = bytearray(encode("PNG"))
    idat = data.index(b"IDAT")
    data[idat + 6] ^= 0xFF  # inside the compressed pixels: the CRC no longer matches
    assert "could not be decoded" in refused(bytes(data))


def test_a_bomb_is_refused_from_its_header_before_decoding() -> None:
    # 3000 x 3000 is within Pillow's own limits, over ours: only our check stops it.
    message = refused(bomb_png(3000, 3000))
    assert message == "The image is 3000×3000 pixels; at most 4000000 pixels are accepted."
    # Far over everything (Pillow's guard fires while reading the header).
    assert "pixels are accepted" in refused(bomb_png(100_000, 100_000))


def test_a_side_over_the_limit_is_refused() -> None:
    message = refused(bomb_png(5000, 10))
    assert message == "The image is 5000×10 pixels; each side may be at most 4000 pixels."


def test_limits_are_configurable() -> None:
    data = encode("PNG", (100, 100))
    assert verify_image(data, ImageLimits(max_side=100, max_pixels=10_000)).width == 100
    assert "at most 9999 pixels" in refused(data, ImageLimits(max_side=100, max_pixels=9_999))
    assert "at most 99 pixels" in refused(data, ImageLimits(max_side=99, max_pixels=10_000))
    with pytest.raises(ValueError):
        ImageLimits(max_side=0)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_animated_images_are_refused(fmt: str) -> None:
    assert refused(animated(fmt)) == (
        "The image has 2 frames (animated or multi-picture); send a single still image."
    )


@pytest.mark.parametrize(
    "data",
    [animated("GIF"), encode("GIF"), encode("BMP"), encode("TIFF"), b"<html>hi</html>", b"x"],
)
def test_other_formats_are_refused(data: bytes) -> None:
    assert refused(data) == "The file is not a JPEG, PNG or WEBP image."


def test_empty_is_refused() -> None:
    assert refused(b"") == "The file is empty."


async def test_the_gate_decodes_off_the_loop_and_bounds_concurrency(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import services.common.images as images

    running = 0
    peak = 0
    threads: set[int] = set()
    lock = threading.Lock()
    real = images.verify_image

    def counting(data: bytes, limits: ImageLimits) -> images.ImageInfo:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
            threads.add(threading.get_ident())
        try:
            threading.Event().wait(0.02)
            return real(data, limits)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(images, "verify_image", counting)
    gate = DecodeGate(LIMITS, concurrency=2)
    results = await asyncio.gather(*(gate.verify(encode("PNG")) for _ in range(8)))
    assert all(r.format == "PNG" for r in results)
    assert peak == 2
    assert threading.get_ident() not in threads
    with pytest.raises(InvalidImage):
        await gate.verify(b"\x89PNG\r\n\x1a\ngarbage")
