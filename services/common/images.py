"""Decode-and-verify of reference images (uploads and fetched references).

Magic bytes only say what a file claims to be. ``verify_image`` decodes it:
the format must be one we accept (JPEG, PNG or WEBP, decided by the decoder,
never by the client), the dimensions and pixel count within ``ImageLimits``,
exactly one frame (no animated PNG/WEBP, no multi-picture JPEG), and the whole
image must decode. The size is read from the header and checked BEFORE any
pixel is decoded, so a decompression bomb (a small file declaring 20000×20000
pixels) is refused without allocating its pixels.

``verify_image`` is pure and CPU-bound; ``DecodeGate`` runs it in a worker
thread with a bound on how many decodes run at once, so uploads never block
the event loop nor take every core.

Limits [environment]: AIPORT_IMAGE_MAX_SIDE (pixels per side, default 12000),
AIPORT_IMAGE_MAX_PIXELS (width × height, default 50,000,000),
AIPORT_IMAGE_DECODE_CONCURRENCY (decodes at once per process, default 2).
"""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass
from typing import Final

from PIL import Image

from services.common.settings import env_int

# Pillow format name -> (content type, file extension). The public docs: JPEG, PNG or WEBP.
FORMATS: Final[dict[str, tuple[str, str]]] = {
    "JPEG": ("image/jpeg", "jpg"),
    "PNG": ("image/png", "png"),
    "WEBP": ("image/webp", "webp"),
}
DEFAULT_MAX_SIDE: Final = 12_000
DEFAULT_MAX_PIXELS: Final = 50_000_000
DEFAULT_DECODE_CONCURRENCY: Final = 2
# Pillow's own bomb guard (a module global) stays as it is; ours is stricter and explicit.


class InvalidImage(ValueError):
    """The bytes are not an acceptable image; ``message`` is safe to show the client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class ImageLimits:
    max_side: int = DEFAULT_MAX_SIDE
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        if self.max_side <= 0 or self.max_pixels <= 0:
            raise ValueError("image limits must be positive")


@dataclass(frozen=True, slots=True)
class ImageInfo:
    format: str  # "JPEG", "PNG" or "WEBP"
    content_type: str  # "image/jpeg", "image/png" or "image/webp"
    extension: str  # "jpg", "png" or "webp"
    width: int
    height: int


def limits_from_env() -> ImageLimits:
    return ImageLimits(
        max_side=env_int("AIPORT_IMAGE_MAX_SIDE", DEFAULT_MAX_SIDE),
        max_pixels=env_int("AIPORT_IMAGE_MAX_PIXELS", DEFAULT_MAX_PIXELS),
    )


_NOT_AN_IMAGE: Final = "The file is not a JPEG, PNG or WEBP image."


def _undecodable(what: str) -> InvalidImage:
    return InvalidImage(f"The {what} image could not be decoded (it is corrupt or truncated).")


def _check_header(image: Image.Image, limits: ImageLimits) -> ImageInfo:
    """Format, size and frame count: all from the header, no pixel decoded."""
    kind = FORMATS.get(image.format or "")
    if kind is None:
        raise InvalidImage(_NOT_AN_IMAGE)
    width, height = image.size
    if width <= 0 or height <= 0:
        raise InvalidImage(f"The image is {width}×{height} pixels; it must not be empty.")
    if width > limits.max_side or height > limits.max_side:
        raise InvalidImage(
            f"The image is {width}×{height} pixels; each side may be at most "
            f"{limits.max_side} pixels."
        )
    if width * height > limits.max_pixels:
        raise InvalidImage(
            f"The image is {width}×{height} pixels; at most {limits.max_pixels} pixels "
            "are accepted."
        )
    # JPEG's factory may hand back a multi-picture (MPO) file: count its frames too.
    frames = getattr(image, "n_frames", 1)
    if getattr(image, "is_animated", False) or frames != 1:
        raise InvalidImage(
            f"The image has {frames} frames (animated or multi-picture); send a single still image."
        )
    return ImageInfo(image.format or "", kind[0], kind[1], width, height)


def _claimed_format(data: bytes) -> str | None:
    """The format the magic bytes claim (for the message only; the decoder decides)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if len(data) >= 12 and data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def _too_many_pixels(limits: ImageLimits) -> InvalidImage:
    # Pillow's own guard (twice Image.MAX_IMAGE_PIXELS, far above our limit) fired on
    # the header: the size is not available, only that it is huge.
    return InvalidImage(
        f"The image has more than {2 * (Image.MAX_IMAGE_PIXELS or 0)} pixels; at most "
        f"{limits.max_pixels} pixels are accepted."
    )


def _open(data: bytes, limits: ImageLimits) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data), formats=list(FORMATS))
    except Image.DecompressionBombError:
        raise _too_many_pixels(limits) from None
    except Exception:  # hostile input: any decoder failure is the client's
        claimed = _claimed_format(data)
        raise (_undecodable(claimed) if claimed else InvalidImage(_NOT_AN_IMAGE)) from None


def verify_image(data: bytes, limits: ImageLimits) -> ImageInfo:
    """Decode and check an image; raises InvalidImage naming the problem. Pure, CPU-bound."""
    if not data:
        raise InvalidImage("The file is empty.")
    with _open(data, limits) as image:
        info = _check_header(image, limits)
        try:
            image.verify()  # structure and checksums (PNG CRCs) without decoding pixels
        except Exception:  # hostile input: any decoder failure is the client's
            raise _undecodable(info.format) from None
    # verify() leaves the object unusable: decode every pixel from a fresh one.
    with _open(data, limits) as image:
        _check_header(image, limits)  # the same bytes, so the same header
        try:
            image.load()
        except Image.DecompressionBombError:
            raise _too_many_pixels(limits) from None
        except Exception:  # hostile input: any decoder failure is the client's
            raise _undecodable(info.format) from None
    return info


class DecodeGate:
    """Runs verify_image off the event loop, at most ``concurrency`` at a time."""

    def __init__(self, limits: ImageLimits, concurrency: int) -> None:
        if concurrency <= 0:
            raise ValueError("concurrency must be positive")
        self.limits = limits
        self._slots = asyncio.Semaphore(concurrency)

    @classmethod
    def from_env(cls) -> DecodeGate:
        return cls(
            limits_from_env(),
            env_int("AIPORT_IMAGE_DECODE_CONCURRENCY", DEFAULT_DECODE_CONCURRENCY),
        )

    async def verify(self, data: bytes) -> ImageInfo:
        async with self._slots:
            return await asyncio.to_thread(verify_image, data, self.limits)


__all__ = [
    "FORMATS",
    "DecodeGate",
    "ImageInfo",
    "ImageLimits",
    "InvalidImage",
    "limits_from_env",
    "verify_image",
]
