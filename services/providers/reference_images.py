"""Fitting a reference image to what a model's upstream accepts. Pure (bytes in, bytes out).

Every upstream documents its own input rules (see `reference_image` in
config/catalog.yaml): pixels per side, pixels in all, aspect ratio, bytes, formats.
A client should not have to know them, so the worker adapts each reference before
sending it:

- too small (a side under min_side): upscaled, aspect kept, until it fits;
- too large (a side over max_side, or over max_pixels): downscaled, aspect kept;
- a format the upstream does not take (e.g. WEBP for xAI), or transparency where the
  upstream wants none: converted (PNG when transparency is kept, else JPEG);
- over max_bytes once the rest fits: re-encoded as JPEG, then smaller, until it fits.

A reference that already fits is passed on byte for byte. Only what no resize can
fix is refused (`ReferenceImageRefused`, a message naming the limit): an aspect
ratio beyond the upstream's, a file that is not a decodable image, or one too big
to decode safely. The first frame of an animated image is used.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final

from PIL import Image, ImageOps, UnidentifiedImageError

from services.common.catalog import ReferenceImageRules

# Decoding more than this is refused rather than attempted (a decompression bomb);
# 8000 x 8000, the largest side any upstream takes, squared.
MAX_DECODE_PIXELS: Final = 64_000_000
JPEG_QUALITIES: Final = (92, 85, 75)
# Each further shrink when even the lowest JPEG quality is over max_bytes.
SHRINK_STEP: Final = 0.8
MAX_SHRINKS: Final = 12
_PIL_FORMATS: Final = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP"}
_CONTENT_TYPES: Final = {fmt: ct for ct, fmt in _PIL_FORMATS.items()}


class ReferenceImageRefused(ValueError):
    """The image cannot be made acceptable to the upstream; the message is safe to show."""


@dataclass(frozen=True, slots=True)
class AdaptedImage:
    data: bytes
    content_type: str
    width: int
    height: int
    changed: bool  # False: the original bytes, untouched


def _describe(size: int) -> str:
    if size >= 1 << 20:
        return f"{size / (1 << 20):.0f} MB"
    return f"{size} bytes"


def _aspect(width: int, height: int) -> float:
    return max(width, height) / min(width, height)


def target_size(width: int, height: int, rules: ReferenceImageRules) -> tuple[int, int]:
    """The size (aspect kept, to the pixel) that meets the side and pixel limits.

    Raises ReferenceImageRefused when none does: an aspect ratio beyond the rules'
    (no resize changes it), or sides too far apart to fit min_side and max_side.
    """
    if width < 1 or height < 1:
        raise ReferenceImageRefused("The reference image has no pixels.")
    if rules.max_aspect and _aspect(width, height) > rules.max_aspect + 1e-9:
        raise ReferenceImageRefused(
            f"The reference image is {width}x{height}; this model takes aspect ratios "
            f"up to {rules.max_aspect:g}:1 (longest side over shortest)."
        )
    scale = 1.0
    short, long = min(width, height), max(width, height)
    if rules.min_side and short < rules.min_side:
        scale = rules.min_side / short
    if rules.max_side and long * scale > rules.max_side:
        scale = rules.max_side / long
    if rules.max_pixels and width * height * scale * scale > rules.max_pixels:
        scale = math.sqrt(rules.max_pixels / (width * height))
    if scale == 1.0:
        return width, height
    # Round toward the limit that made us scale, then check both limits hold.
    rounder = math.ceil if scale > 1 else math.floor
    new_w = max(1, rounder(width * scale))
    new_h = max(1, rounder(height * scale))
    if rules.max_side:
        new_w, new_h = min(new_w, rules.max_side), min(new_h, rules.max_side)
    while rules.max_pixels and new_w * new_h > rules.max_pixels:
        new_w, new_h = max(1, new_w - 1), max(1, new_h - 1)
    if rules.min_side and min(new_w, new_h) < rules.min_side:
        raise ReferenceImageRefused(
            f"The reference image is {width}x{height}; this model needs "
            f"{rules.min_side} to {rules.max_side or 'any'} pixels on each side, which "
            "no resize of it can meet."
        )
    return new_w, new_h


@contextmanager
def _decoding() -> Iterator[None]:
    """Any decoder failure on these (client-supplied) bytes is a refusal naming why."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ReferenceImageRefused(
            f"The reference image has more than {MAX_DECODE_PIXELS:,} pixels."
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        raise ReferenceImageRefused("The reference image could not be decoded.") from None


def _open(data: bytes) -> Image.Image:
    """The image with only its header read (size, mode, format); nothing decoded yet."""
    with _decoding():
        image = Image.open(io.BytesIO(data))
    if image.width * image.height > MAX_DECODE_PIXELS:
        raise ReferenceImageRefused(
            f"The reference image is {image.width}x{image.height}; at most "
            f"{MAX_DECODE_PIXELS:,} pixels can be read."
        )
    return image


def _decode(image: Image.Image) -> Image.Image:
    """The first frame, decoded."""
    with _decoding():
        image.seek(0)
        image.load()
    return image


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info
    )


def _flatten(image: Image.Image) -> Image.Image:
    """RGB, transparent pixels composited onto white."""
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _encode(image: Image.Image, fmt: str, quality: int) -> bytes:
    out = io.BytesIO()
    if fmt == "PNG":
        image.save(out, "PNG", optimize=False)
    elif fmt == "WEBP":
        image.save(out, "WEBP", quality=quality)
    else:
        image.save(out, "JPEG", quality=quality, optimize=True)
    return out.getvalue()


def adapt_reference_image(
    data: bytes, content_type: str, rules: ReferenceImageRules
) -> AdaptedImage:
    """The reference as the upstream will take it (see the module docstring).
    One that already fits is passed on without being decoded at all."""
    image = _open(data)
    source_format = image.format or ""
    source_type = _CONTENT_TYPES.get(source_format, content_type)
    width, height = image.size
    size = target_size(width, height, rules)
    alpha = _has_alpha(image)
    fits = (
        size == (width, height)
        and source_type in rules.formats
        and (rules.alpha or not alpha)
        and (not rules.max_bytes or len(data) <= rules.max_bytes)
        and not getattr(image, "is_animated", False)
    )
    if fits:
        return AdaptedImage(data, source_type, width, height, changed=False)

    # Re-encoding drops EXIF, so apply its orientation first (the upstream would have).
    image = ImageOps.exif_transpose(_decode(image))
    if image.size != (width, height):  # rotated by 90 degrees: sizes swap
        size = (size[1], size[0])
    keep_alpha = alpha and rules.alpha and "image/png" in rules.formats
    if keep_alpha:
        image, fmt = image.convert("RGBA"), "PNG"
    else:
        image = _flatten(image) if alpha else image.convert("RGB")
        fmt = "JPEG" if "image/jpeg" in rules.formats else _PIL_FORMATS[rules.formats[0]]
    if image.size != size:
        image = image.resize(size, Image.Resampling.LANCZOS)

    encoded = _encode(image, fmt, JPEG_QUALITIES[0])
    if rules.max_bytes and len(encoded) > rules.max_bytes:
        encoded, fmt, image = _shrink_to(image, fmt, rules)
    return AdaptedImage(encoded, _CONTENT_TYPES[fmt], image.width, image.height, changed=True)


def _shrink_to(
    image: Image.Image, fmt: str, rules: ReferenceImageRules
) -> tuple[bytes, str, Image.Image]:
    """Lossy steps until the file is under max_bytes: JPEG qualities, then smaller."""
    lossy = "JPEG" if "image/jpeg" in rules.formats else fmt
    if lossy == "JPEG" and image.mode != "RGB":
        image = _flatten(image)
    for _ in range(MAX_SHRINKS):
        for quality in JPEG_QUALITIES:
            encoded = _encode(image, lossy, quality)
            if len(encoded) <= rules.max_bytes:
                return encoded, lossy, image
        smaller = (int(image.width * SHRINK_STEP), int(image.height * SHRINK_STEP))
        if rules.min_side and min(smaller) < rules.min_side:
            break
        image = image.resize(smaller, Image.Resampling.LANCZOS)
    raise ReferenceImageRefused(
        f"The reference image cannot be made smaller than {_describe(rules.max_bytes)}, "
        "this model's limit."
    )
