"""Reference images fitted to each model's upstream rules: every img2img and video model,
with a tiny, a huge, a non-square, a palette and an alpha PNG, a JPEG and a WEBP."""

from __future__ import annotations

import io
import os
import random
from collections.abc import Callable

import pytest
from PIL import Image, ImageFile

from services.common.catalog import ImageModel, ReferenceImageRules, VideoModel, load_catalog
from services.common.settings import PROJECT_ROOT
from services.providers.reference_images import (
    AdaptedImage,
    ReferenceImageRefused,
    adapt_reference_image,
    target_size,
)

CATALOG = load_catalog(PROJECT_ROOT / "config" / "catalog.yaml")
REFERENCE_MODELS = [
    m
    for m in CATALOG.models.values()
    if (isinstance(m, ImageModel) and m.modality == "img2img")
    or (isinstance(m, VideoModel) and m.modality in ("img2video", "multimodal"))
]
MODEL_IDS = [m.id for m in REFERENCE_MODELS]


def rules_of(model_id: str) -> ReferenceImageRules:
    model = CATALOG.models[model_id]
    assert isinstance(model, ImageModel | VideoModel)
    return model.reference_image


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def noise(width: int, height: int, mode: str = "RGB") -> Image.Image:
    """Incompressible pixels: the worst case for file size."""
    bands = len(mode)
    return Image.frombytes(mode, (width, height), os.urandom(width * height * bands))


def gradient(width: int, height: int) -> Image.Image:
    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    return image


def tiny_png() -> tuple[bytes, str]:
    return encode(gradient(64, 64), "PNG"), "image/png"


def non_square_jpeg() -> tuple[bytes, str]:
    return encode(gradient(1200, 700), "JPEG", quality=90), "image/jpeg"


def palette_png() -> tuple[bytes, str]:
    image = gradient(400, 320).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return encode(image, "PNG", transparency=0), "image/png"


def alpha_png() -> tuple[bytes, str]:
    image = gradient(500, 400).convert("RGBA")
    image.putalpha(Image.linear_gradient("L").resize((500, 400)))
    return encode(image, "PNG"), "image/png"


def webp() -> tuple[bytes, str]:
    return encode(gradient(640, 480), "WEBP", quality=80), "image/webp"


def huge_png() -> tuple[bytes, str]:
    # Past Seedance's 6000 and WAN's 8000 px sides, and over 7 MB (Gemini's inline
    # limit) and 10 MiB (xAI) with a patch of noise, yet inside every model's aspect ratio.
    image = gradient(8400, 3400)
    image.paste(noise(2000, 2000), (100, 100))
    return encode(image, "PNG", compress_level=1), "image/png"


SAMPLES: dict[str, Callable[[], tuple[bytes, str]]] = {
    "tiny-64x64": tiny_png,
    "non-square-jpeg": non_square_jpeg,
    "palette-png": palette_png,
    "alpha-png": alpha_png,
    "webp": webp,
}
_CACHE: dict[str, tuple[bytes, str]] = {}


def sample(name: str) -> tuple[bytes, str]:
    if name not in _CACHE:
        _CACHE[name] = (SAMPLES | {"huge": huge_png})[name]()
    return _CACHE[name]


def assert_acceptable(adapted: AdaptedImage, rules: ReferenceImageRules) -> None:
    """What the upstream would check, measured on the bytes it is sent."""
    image = Image.open(io.BytesIO(adapted.data))
    assert image.size == (adapted.width, adapted.height)
    assert {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}[
        str(image.format)
    ] == adapted.content_type
    assert adapted.content_type in rules.formats
    width, height = image.size
    if rules.min_side:
        assert min(width, height) >= rules.min_side
    if rules.max_side:
        assert max(width, height) <= rules.max_side
    if rules.max_pixels:
        assert width * height <= rules.max_pixels
    if rules.max_aspect:
        assert max(width, height) / min(width, height) <= rules.max_aspect
    if rules.max_bytes:
        assert len(adapted.data) <= rules.max_bytes
    if not rules.alpha:
        assert image.mode not in ("RGBA", "LA", "PA") and "transparency" not in image.info


@pytest.mark.parametrize("name", list(SAMPLES))
@pytest.mark.parametrize("model_id", MODEL_IDS)
def test_every_reference_model_gets_an_acceptable_image(model_id: str, name: str) -> None:
    data, content_type = sample(name)
    rules = rules_of(model_id)
    adapted = adapt_reference_image(data, content_type, rules)
    assert_acceptable(adapted, rules)
    original = Image.open(io.BytesIO(data))
    ratio = original.width / original.height
    assert adapted.width / adapted.height == pytest.approx(ratio, rel=0.01)


@pytest.mark.parametrize("model_id", MODEL_IDS)
def test_a_huge_reference_is_brought_within_limits(model_id: str) -> None:
    data, content_type = sample("huge")
    rules = rules_of(model_id)
    adapted = adapt_reference_image(data, content_type, rules)
    # 8400x3400, ~12 MB: past the side or byte limit of all but OpenAI's.
    assert adapted.changed == (model_id != "gpt-image-2-img2img")
    assert_acceptable(adapted, rules)


@pytest.mark.parametrize("model_id", ["wan-2.7-img2img", "z-image-turbo-img2img"])
def test_a_64px_reference_is_upscaled_for_wan(model_id: str) -> None:
    """The issue: DashScope wants 240-8000 px a side; a 64x64 reference used to fail upstream."""
    adapted = adapt_reference_image(*tiny_png(), rules_of(model_id))
    assert (adapted.width, adapted.height) == (240, 240)
    assert adapted.changed


@pytest.mark.parametrize(
    "model_id", ["seedance-2.0-fast-img2video", "seedance-2.0-fast-multimodal"]
)
def test_a_64px_reference_is_upscaled_for_seedance(model_id: str) -> None:
    adapted = adapt_reference_image(*tiny_png(), rules_of(model_id))
    assert (adapted.width, adapted.height) == (300, 300)


def test_an_image_that_fits_is_passed_on_untouched() -> None:
    data, content_type = non_square_jpeg()
    adapted = adapt_reference_image(data, content_type, rules_of("wan-2.7-img2img"))
    assert (adapted.data, adapted.changed, adapted.content_type) == (data, False, "image/jpeg")


def test_webp_becomes_jpeg_where_the_upstream_takes_no_webp() -> None:
    adapted = adapt_reference_image(*webp(), rules_of("grok-image-img2img"))
    assert adapted.content_type == "image/jpeg"
    assert (adapted.width, adapted.height) == (640, 480)


def test_transparency_is_kept_as_png_where_allowed_and_flattened_where_not() -> None:
    data, content_type = alpha_png()
    keep = ReferenceImageRules(formats=("image/jpeg",), alpha=True)
    flattened = adapt_reference_image(data, content_type, keep)
    assert flattened.content_type == "image/jpeg"  # no PNG: no way to keep the alpha
    kept = adapt_reference_image(data, content_type, ReferenceImageRules(min_side=600))
    assert kept.content_type == "image/png"
    assert Image.open(io.BytesIO(kept.data)).mode == "RGBA"
    none = adapt_reference_image(data, content_type, ReferenceImageRules(alpha=False))
    assert none.changed and Image.open(io.BytesIO(none.data)).mode == "RGB"


def test_the_true_format_counts_not_the_label() -> None:
    data, _ = webp()
    adapted = adapt_reference_image(data, "image/jpeg", rules_of("grok-image-img2img"))
    assert adapted.changed and adapted.content_type == "image/jpeg"
    assert Image.open(io.BytesIO(adapted.data)).format == "JPEG"


@pytest.mark.parametrize(
    ("model_id", "size"),
    [("seedance-2.0-fast-img2video", (1000, 300)), ("wan-2.7-img2img", (2700, 300))],
)
def test_an_aspect_ratio_beyond_the_upstreams_is_refused_naming_it(
    model_id: str, size: tuple[int, int]
) -> None:
    with pytest.raises(ReferenceImageRefused, match=r"aspect ratios up to"):
        adapt_reference_image(encode(gradient(*size), "PNG"), "image/png", rules_of(model_id))


def test_garbage_is_refused() -> None:
    with pytest.raises(ReferenceImageRefused, match="could not be decoded"):
        adapt_reference_image(b"\x89PNG\r\n\x1a\nnot really", "image/png", ReferenceImageRules())


def test_a_decompression_bomb_is_refused_before_decoding() -> None:
    bomb = encode(Image.new("L", (12_000, 12_000)), "PNG")
    with pytest.raises(ReferenceImageRefused, match="pixels"):
        adapt_reference_image(bomb, "image/png", ReferenceImageRules(max_side=4000))


def test_file_size_is_met_by_lossy_steps() -> None:
    data = encode(noise(1500, 1500), "PNG")
    rules = ReferenceImageRules(max_bytes=400_000)
    adapted = adapt_reference_image(data, "image/png", rules)
    assert adapted.content_type == "image/jpeg"
    assert len(adapted.data) <= 400_000
    assert adapted.width / adapted.height == pytest.approx(1.0)


def test_the_first_frame_of_an_animation_is_used() -> None:
    frames = [gradient(300, 300), noise(300, 300)]
    data = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], quality=80)
    adapted = adapt_reference_image(data, "image/webp", rules_of("wan-2.7-img2img"))
    assert adapted.changed
    assert getattr(Image.open(io.BytesIO(adapted.data)), "n_frames", 1) == 1


@pytest.mark.parametrize("seed", range(200))
def test_target_size_always_meets_the_limits_or_refuses(seed: int) -> None:
    rng = random.Random(seed)
    rules = ReferenceImageRules(
        min_side=rng.choice([0, 240, 300]),
        max_side=rng.choice([0, 6000, 8000]),
        max_pixels=rng.choice([0, 4_000_000, 36_000_000]),
        max_aspect=rng.choice([0.0, 2.5, 8.0]),
    )
    width, height = rng.randint(1, 12_000), rng.randint(1, 12_000)
    try:
        new_w, new_h = target_size(width, height, rules)
    except ReferenceImageRefused:
        aspect = max(width, height) / min(width, height)
        assert (rules.max_aspect and aspect > rules.max_aspect) or rules.min_side
        return
    if rules.min_side:
        assert min(new_w, new_h) >= rules.min_side
    if rules.max_side:
        assert max(new_w, new_h) <= rules.max_side
    if rules.max_pixels:
        assert new_w * new_h <= rules.max_pixels
    assert new_w / new_h == pytest.approx(width / height, rel=0.02, abs=2 / min(new_w, new_h))


def test_a_reference_that_fits_is_never_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Passing on what already fits costs a header read, not a full decode."""
    data, content_type = non_square_jpeg()

    def no_load(self: ImageFile.ImageFile) -> None:
        raise AssertionError("decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_load)
    adapted = adapt_reference_image(data, content_type, rules_of("wan-2.7-img2img"))
    assert adapted.data == data


def test_more_than_8000_squared_pixels_are_refused_unread() -> None:
    big = encode(Image.new("L", (9000, 8000)), "PNG")
    with pytest.raises(ReferenceImageRefused, match="at most 64,000,000 pixels"):
        adapt_reference_image(big, "image/png", rules_of("gpt-image-2-img2img"))
