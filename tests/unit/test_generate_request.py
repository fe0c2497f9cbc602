"""Validation and pricing of image and video job requests: accepted, defaulted, refused, priced."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from aiport.v1 import job_state_pb2

from services.common.catalog import (
    Catalog,
    CatalogError,
    ImageModel,
    VideoModel,
    load_catalog,
    parse_catalog,
)
from services.common.job_states import Modality
from services.common.money import MICROS_PER_IDR
from services.common.settings import PROJECT_ROOT
from services.gateway.errors import PublicError
from services.gateway.generate_request import (
    ASPECT_RATIOS,
    IMAGE_RESOLUTIONS,
    MAX_PROMPT_CHARS,
    MAX_URL_CHARS,
    MULTIMODAL_CONVERSION_SLOTS,
    VIDEO_RATIOS,
    VIDEO_RESOLUTIONS,
    JobPlan,
    is_upload_url,
    parse_image_generate,
    parse_image_img2img,
    parse_video_generate,
    parse_video_img2video,
    parse_video_multimodal,
)

CATALOG = load_catalog(PROJECT_ROOT / "config" / "catalog.yaml")
IDR = MICROS_PER_IDR

TOKEN = "Ab3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF"  # 32 base62 characters
UPLOAD_URL = f"https://uploads.aiport.id/files/uploads/{TOKEN}/ref.jpg"
HTTPS_URL = "https://example.com/ref.png"

# A field value meaning "leave the key out of the body".
_ABSENT: Any = object()

Parser = Callable[[bytes, Catalog], JobPlan]
PARSERS: dict[str, Parser] = {
    "image": parse_image_generate,
    "img2img": parse_image_img2img,
    "video": parse_video_generate,
    "img2video": parse_video_img2video,
    "multimodal": parse_video_multimodal,
}
# The smallest valid body of each endpoint.
MINIMAL: dict[str, dict[str, Any]] = {
    "image": {"prompt": "a temple"},
    "img2img": {"prompt": "a temple", "images": [HTTPS_URL]},
    "video": {"prompt": "a temple"},
    "img2video": {"prompt": "a temple", "first_frame_url": HTTPS_URL},
    "multimodal": {"prompt": "a temple"},
}
DEFAULT_MODELS = {
    "image": "gpt-image-2",
    "img2img": "gpt-image-2-img2img",
    "video": "seedance-2.0-fast",
    "img2video": "seedance-2.0-fast-img2video",
    "multimodal": "seedance-2.0-fast-multimodal",
}
ENDPOINTS = list(PARSERS)
IMAGE_ENDPOINTS = ["image", "img2img"]
VIDEO_ENDPOINTS = ["video", "img2video", "multimodal"]


def body(endpoint: str, **fields: Any) -> dict[str, Any]:
    return {**MINIMAL[endpoint], **fields}


def plan(endpoint: str, **fields: Any) -> JobPlan:
    return plan_with(CATALOG, endpoint, **fields)


def plan_with(catalog: Catalog, endpoint: str, **fields: Any) -> JobPlan:
    return PARSERS[endpoint](orjson.dumps(body(endpoint, **fields)), catalog)


def refused(
    endpoint: str, payload: dict[str, Any] | bytes, catalog: Catalog = CATALOG
) -> PublicError:
    raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    with pytest.raises(PublicError) as info:
        PARSERS[endpoint](raw, catalog)
    return info.value


def bad_request(endpoint: str, param: str | None, **fields: Any) -> PublicError:
    """A 400 for the endpoint's minimal body with `fields` overlaid (_ABSENT removes a key)."""
    payload = {k: v for k, v in body(endpoint, **fields).items() if v is not _ABSENT}
    err = refused(endpoint, payload)
    assert (err.status, err.type, err.code, err.param) == (
        400,
        "invalid_request_error",
        "invalid_request",
        param,
    ), err
    return err


def models_of(modality: str) -> list[str]:
    return sorted(
        m.id
        for m in CATALOG.models.values()
        if isinstance(m, ImageModel | VideoModel) and m.modality == modality
    )


def image_model(model_id: str) -> ImageModel:
    model = CATALOG.models[model_id]
    assert isinstance(model, ImageModel)
    return model


def video_model(model_id: str) -> VideoModel:
    model = CATALOG.models[model_id]
    assert isinstance(model, VideoModel)
    return model


def custom_catalog(
    *, image: list[dict[str, Any]] | None = None, video: list[dict[str, Any]] | None = None
) -> Catalog:
    return parse_catalog({"currency": "IDR", "image": image or [], "video": video or []})


# -- the body ---------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(
    "raw",
    [b"", b"   \n", b"{", b'{"prompt": }', b"[]", b'"prompt"', b"null", b"1", b"\xff\xfe"],
)
def test_body_must_be_a_json_object(endpoint: str, raw: bytes) -> None:
    err = refused(endpoint, raw)
    assert (err.status, err.code, err.param) == (400, "invalid_request", None)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_unknown_fields_are_ignored(endpoint: str) -> None:
    extra = {"negative_prompt": "x", "n": 4, "style": {"a": [1]}, "callback_url": "ftp://x"}
    assert plan(endpoint, **extra).spec == plan(endpoint).spec


# -- defaults ---------------------------------------------------------------------------------


def test_image_generate_defaults() -> None:
    job = plan("image")
    assert (job.model, job.modality) == ("gpt-image-2", "image")
    assert job.spec == job_state_pb2.WorkSpec(prompt="a temple", resolution="1k")
    assert (job.unit_price_micros, job.estimated_units, job.min_billable_units) == (
        700 * IDR,
        1,
        0,
    )
    assert job.estimated_cost_micros == 700 * IDR


def test_img2img_defaults() -> None:
    job = plan("img2img")
    assert (job.model, job.modality) == ("gpt-image-2-img2img", "img2img")
    assert job.spec == job_state_pb2.WorkSpec(
        prompt="a temple", images=[HTTPS_URL], resolution="1k"
    )
    assert job.estimated_cost_micros == 800 * IDR


def test_video_generate_defaults() -> None:
    job = plan("video")
    assert (job.model, job.modality) == ("seedance-2.0-fast", "video")
    assert job.spec == job_state_pb2.WorkSpec(
        prompt="a temple", resolution="720p", duration_seconds=5, ratio="adaptive"
    )
    for optional in ("generate_audio", "web_search", "real_person_mode", "seed"):
        assert not job.spec.HasField(optional)
    assert job.spec.return_last_frame is False
    assert (job.unit_price_micros, job.estimated_units, job.min_billable_units) == (
        2300 * IDR,
        5,
        0,
    )
    assert job.estimated_cost_micros == 5 * 2300 * IDR


def test_img2video_defaults() -> None:
    job = plan("img2video")
    assert (job.model, job.modality) == ("seedance-2.0-fast-img2video", "img2video")
    assert job.spec == job_state_pb2.WorkSpec(
        prompt="a temple",
        first_frame_url=HTTPS_URL,
        resolution="720p",
        duration_seconds=5,
        conversion_slots=["all"],
    )
    assert job.estimated_cost_micros == 5 * 2300 * IDR


def test_multimodal_defaults() -> None:
    job = plan("multimodal")
    assert (job.model, job.modality) == ("seedance-2.0-fast-multimodal", "multimodal")
    assert job.spec == job_state_pb2.WorkSpec(
        prompt="a temple", resolution="720p", duration_seconds=5, conversion_slots=["all"]
    )
    # No reference asset: the plain rate and no floor.
    assert (job.unit_price_micros, job.estimated_units, job.min_billable_units) == (
        2300 * IDR,
        5,
        0,
    )


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_null_means_not_given(endpoint: str) -> None:
    nulls = dict.fromkeys(
        [
            "model",
            "aspect_ratio",
            "resolution",
            "duration",
            "ratio",
            "seed",
            "generate_audio",
            "web_search",
            "return_last_frame",
            "real_person_mode",
            "conversion_slots",
            "last_frame_url",
        ]
    )
    if endpoint == "multimodal":
        nulls.update(images=None, videos=None, audios=None)
    assert plan(endpoint, **nulls) == plan(endpoint)


def test_a_full_video_request_fills_every_field() -> None:
    job = plan(
        "video",
        model="seedance-2.0-fast",
        resolution="720p",
        duration=6,
        ratio="16:9",
        generate_audio=True,
        web_search=False,
        return_last_frame=True,
        real_person_mode=True,
        seed=42,
    )
    assert job.spec == job_state_pb2.WorkSpec(
        prompt="a temple",
        resolution="720p",
        duration_seconds=6,
        ratio="16:9",
        generate_audio=True,
        web_search=False,
        return_last_frame=True,
        real_person_mode=True,
        seed=42,
    )


# -- model ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "model_id"), [(e, m) for e in ENDPOINTS for m in models_of(e)]
)
def test_every_catalog_model_of_the_endpoint_is_accepted(endpoint: str, model_id: str) -> None:
    job = plan(endpoint, model=model_id)
    assert (job.model, job.modality) == (model_id, endpoint)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_default_model(endpoint: str) -> None:
    assert plan(endpoint).model == DEFAULT_MODELS[endpoint]


WRONG_MODELS = [
    (endpoint, model_id)
    for endpoint in ENDPOINTS
    for model_id in [
        *(m for other in ENDPOINTS if other != endpoint for m in models_of(other)),
        "deepseek-v4-flash",  # a text model
        "no-such-model",
        "",
        "GPT-IMAGE-2",
    ]
]


@pytest.mark.parametrize(("endpoint", "model_id"), WRONG_MODELS)
def test_unknown_or_other_modality_model_is_404(endpoint: str, model_id: str) -> None:
    err = refused(endpoint, body(endpoint, model=model_id))
    assert (err.status, err.type, err.code, err.param) == (
        404,
        "invalid_request_error",
        "MODEL_NOT_FOUND",
        "model",
    )
    assert f"'{model_id}'" in err.message


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("value", [7, True, ["gpt-image-2"], {"id": "gpt-image-2"}])
def test_model_must_be_a_string(endpoint: str, value: Any) -> None:
    err = bad_request(endpoint, "model", model=value)
    assert "'model'" in err.message


def test_disabled_model_is_404() -> None:
    catalog = custom_catalog(
        image=[
            {
                "id": "gpt-image-2",
                "display_name": "x",
                "created": 1,
                "modality": "image",
                "supports_aspect_ratio": True,
                "price_per_image": {"1k": "700"},
                "enabled": False,
            }
        ]
    )
    err = refused("image", body("image"), catalog)
    assert (err.status, err.code, err.param) == (404, "MODEL_NOT_FOUND", "model")


def test_model_is_checked_before_the_other_fields() -> None:
    err = refused("image", {"model": "nope", "resolution": "9k"})
    assert err.status == 404


# -- prompt -----------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(
    "value", [_ABSENT, None, "", "   ", "\n\t ", 5, ["a"], {"text": "a"}, True]
)
def test_prompt_is_required_and_non_blank(endpoint: str, value: Any) -> None:
    err = bad_request(endpoint, "prompt", prompt=value)
    assert "'prompt'" in err.message


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_prompt_length_limit_counts_characters(endpoint: str) -> None:
    at_limit = "é" * MAX_PROMPT_CHARS  # two UTF-8 bytes each: characters are what counts
    assert plan(endpoint, prompt=at_limit).spec.prompt == at_limit
    err = bad_request(endpoint, "prompt", prompt="a" * (MAX_PROMPT_CHARS + 1))
    assert str(MAX_PROMPT_CHARS) in err.message


def test_prompt_is_forwarded_as_given() -> None:
    assert plan("video", prompt="  drone shot\n").spec.prompt == "  drone shot\n"


# -- images: aspect_ratio and resolution --------------------------------------------------------


@pytest.mark.parametrize("endpoint", IMAGE_ENDPOINTS)
@pytest.mark.parametrize("ratio", ASPECT_RATIOS)
def test_aspect_ratio_is_forwarded_when_the_model_supports_it(endpoint: str, ratio: str) -> None:
    assert plan(endpoint, aspect_ratio=ratio).spec.aspect_ratio == ratio


@pytest.mark.parametrize(
    ("endpoint", "model_id"), [("image", "z-image-turbo"), ("img2img", "z-image-turbo-img2img")]
)
def test_aspect_ratio_is_dropped_for_a_model_without_it(endpoint: str, model_id: str) -> None:
    assert not image_model(model_id).supports_aspect_ratio
    assert plan(endpoint, model=model_id, aspect_ratio="16:9").spec.aspect_ratio == ""


@pytest.mark.parametrize("model_id", ["gpt-image-2", "z-image-turbo"])
@pytest.mark.parametrize("value", ["16:10", "", "1:1 ", "1x1", "adaptive", 1, True, ["1:1"]])
def test_invalid_aspect_ratio_is_400_even_if_the_model_ignores_it(
    model_id: str, value: Any
) -> None:
    err = bad_request("image", "aspect_ratio", model=model_id, aspect_ratio=value)
    assert "'aspect_ratio'" in err.message
    assert all(ratio in err.message for ratio in ASPECT_RATIOS)


@pytest.mark.parametrize(
    ("endpoint", "model_id", "resolution", "idr"),
    [
        ("image", "gpt-image-2", "1k", 700),
        ("image", "gpt-image-2", "2k", 1400),
        ("image", "gpt-image-2", "4k", 2800),
        ("image", "nano-banana2-flash", "2k", 1300),
        ("img2img", "gpt-image-2-img2img", "1k", 800),
        ("img2img", "gpt-image-2-img2img", "2k", 1600),
        ("img2img", "gpt-image-2-img2img", "4k", 3200),
        ("img2img", "nano-banana2-img2img", "4k", 2800),
    ],
)
def test_tiered_models_are_priced_by_resolution(
    endpoint: str, model_id: str, resolution: str, idr: int
) -> None:
    job = plan(endpoint, model=model_id, resolution=resolution)
    assert job.spec.resolution == resolution
    assert job.unit_price_micros == image_model(model_id).price_per_image[resolution] == idr * IDR
    assert (job.estimated_units, job.min_billable_units) == (1, 0)
    assert job.estimated_cost_micros == idr * IDR


def test_gpt_image_2_at_2k_costs_1400_idr() -> None:
    assert plan("image", resolution="2k").estimated_cost_micros == 1_400_000_000


FLAT_MODELS = [
    (e, m) for e in IMAGE_ENDPOINTS for m in models_of(e) if not image_model(m).has_resolution_tiers
]


@pytest.mark.parametrize(("endpoint", "model_id"), FLAT_MODELS)
@pytest.mark.parametrize("resolution", [_ABSENT, "1k", "4k"])
def test_flat_priced_models_ignore_resolution(
    endpoint: str, model_id: str, resolution: Any
) -> None:
    fields = {"model": model_id}
    if resolution is not _ABSENT:
        fields["resolution"] = resolution
    job = plan(endpoint, **fields)
    assert job.spec.resolution == ""
    assert job.unit_price_micros == image_model(model_id).price_per_image["default"]


def test_flat_prices_from_the_catalog() -> None:
    assert plan("image", model="grok-image", resolution="4k").estimated_cost_micros == 1150 * IDR
    assert plan("img2img", model="z-image-turbo-img2img").estimated_cost_micros == 300 * IDR


@pytest.mark.parametrize(
    ("endpoint", "model_id"),
    [
        ("image", "gpt-image-2"),
        ("img2img", "gpt-image-2-img2img"),
        ("image", "grok-image"),  # flat-priced: resolution is still validated
        ("img2img", "wan-2.7-img2img"),
    ],
)
@pytest.mark.parametrize("value", ["8k", "2K", "1080p", "default", "", 2, True, ["2k"]])
def test_invalid_image_resolution_is_400(endpoint: str, model_id: str, value: Any) -> None:
    err = bad_request(endpoint, "resolution", model=model_id, resolution=value)
    assert "'resolution'" in err.message
    assert all(tier in err.message for tier in IMAGE_RESOLUTIONS)


def _image_entry(prices: dict[str, str]) -> dict[str, Any]:
    return {
        "id": "gpt-image-2",
        "display_name": "x",
        "created": 1,
        "modality": "image",
        "supports_aspect_ratio": True,
        "price_per_image": prices,
    }


def test_a_tiered_model_without_1k_defaults_to_its_lowest_tier() -> None:
    catalog = custom_catalog(image=[_image_entry({"4k": "3000", "2k": "1500"})])
    job = plan_with(catalog, "image")
    assert (job.spec.resolution, job.unit_price_micros) == ("2k", 1500 * IDR)
    err = refused("image", body("image", resolution="1k"), catalog)
    assert (err.status, err.param) == (400, "resolution")
    assert "2k, 4k" in err.message


# -- URLs -------------------------------------------------------------------------------------


GOOD_URLS = [
    HTTPS_URL,
    "https://example.com",
    "HTTPS://Example.COM/a.png",
    "https://example.com:8443/a/b.png?sig=abc&x=1#frag",
    "https://[2001:db8::1]/a.png",
    "https://xn--bcher-kva.example/a.png",
    "https://example.com/" + "a" * (MAX_URL_CHARS - len("https://example.com/")),
    UPLOAD_URL,
    f"http://localhost:8080/files/uploads/{TOKEN}/ref.jpg",
    f"http://127.0.0.1/files/uploads/{TOKEN}/a_b-c.1.webp",
    f"HTTP://LOCALHOST/files/uploads/{TOKEN}/x",
    f"https://uploads.aiport.id/files/uploads/{TOKEN}/" + "n" * 100,
    # Issue 11: a job's result URL (any scheme, like uploads) and an upload id; the
    # gateway checks they are the caller's before holding (services/gateway/references.py).
    f"http://h/files/results/{TOKEN}/ref.jpg",
    f"upl_{TOKEN}",
]
BAD_URLS = [
    "",
    "http://example.com/a.png",
    "ftp://example.com/a.png",
    "file:///etc/passwd",
    "data:image/png;base64,iVBORw0KGgo=",
    "javascript:alert(1)",
    "example.com/a.png",
    "//example.com/a.png",
    "https://",
    "https:///a.png",
    "https://user:pw@example.com/a.png",
    "https://user@example.com/a.png",
    "https://@example.com/a.png",
    "https://example.com:99999/a.png",
    "https://example.com:port/a.png",
    "https://[::1/a.png",
    "https://example.com/a b.png",
    "https://example.com/a\n.png",
    "https://exa\tmple.com/a.png",
    " https://example.com/a.png",
    "https://example.com/a.png\x00",
    "https://example.com/" + "a" * (MAX_URL_CHARS + 1 - len("https://example.com/")),
    # Upload-shaped but not quite.
    f"http://h/files/uploads/{TOKEN[:-1]}/ref.jpg",
    f"http://h/files/uploads/{TOKEN}A/ref.jpg",
    f"http://h/files/uploads/{TOKEN[:-1]}-/ref.jpg",
    f"http://h/files/uploads/{TOKEN}/",
    f"http://h/files/uploads/{TOKEN}/..",
    f"http://h/files/uploads/{TOKEN}/.",
    f"http://h/files/uploads/{TOKEN}/.hidden.png",
    f"http://h/files/uploads/{TOKEN}/image.png.gz",
    f"http://h/files/uploads/{TOKEN}/image.BR",
    f"s3://bucket/files/uploads/{TOKEN}/x.png",
    f"ftp://h/files/uploads/{TOKEN}/x.png",
    f"/files/uploads/{TOKEN}/ref.jpg",
    f"http:///files/uploads/{TOKEN}/ref.jpg",
    f"http://h/files/uploads/{TOKEN}/a%2Fb.png",
    f"http://h/files/uploads/{TOKEN}/a b.png",
    f"http://h/files/uploads/{TOKEN}/ref.jpg/more",
    f"http://h/x/files/uploads/{TOKEN}/ref.jpg",
    f"http://h/files/uploads/{TOKEN}/" + "n" * 101,
    # Upload-id-shaped but not quite.
    f"upl_{TOKEN[:-1]}",
    f"upl_{TOKEN}A",
    f"UPL_{TOKEN}",
    f"upload://upl_{TOKEN}",
    f" upl_{TOKEN}",
    f"http://{'h' * MAX_URL_CHARS}/files/uploads/{TOKEN}/ref.jpg",
]


@pytest.mark.parametrize("url", GOOD_URLS)
def test_acceptable_urls(url: str) -> None:
    assert plan("img2video", first_frame_url=url).spec.first_frame_url == url
    assert list(plan("img2img", images=[url]).spec.images) == [url]


@pytest.mark.parametrize("url", BAD_URLS)
def test_unacceptable_urls(url: str) -> None:
    err = bad_request("img2video", "first_frame_url", first_frame_url=url)
    assert "'first_frame_url'" in err.message and "https" in err.message
    bad_request("img2img", "images[1]", images=[HTTPS_URL, url])


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (UPLOAD_URL, True),
        (f"http://localhost:8080/files/uploads/{TOKEN}/x.png", True),
        (f"/files/uploads/{TOKEN}/x.png", False),
        (f"http://h/files/uploads/{TOKEN}/x.png?download=1", True),
        (HTTPS_URL, False),
        (f"http://h/files/uploads/{TOKEN}/..", False),
        ("http://[::1/files", False),
    ],
)
def test_is_upload_url(url: str, expected: bool) -> None:
    assert is_upload_url(url) is expected


@pytest.mark.parametrize("value", [5, True, ["https://a.com/x.png"], {"url": HTTPS_URL}])
def test_url_must_be_a_string(value: Any) -> None:
    bad_request("img2video", "first_frame_url", first_frame_url=value)
    bad_request("img2img", "images[0]", images=[value])


# -- img2img images -----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [_ABSENT, None, [], HTTPS_URL, {"0": HTTPS_URL}, 3])
def test_img2img_images_are_required(value: Any) -> None:
    err = bad_request("img2img", "images", images=value)
    assert "'images'" in err.message and "10" in err.message


def test_img2img_takes_one_to_ten_images() -> None:
    ten = [f"https://example.com/{i}.png" for i in range(10)]
    assert list(plan("img2img", images=ten).spec.images) == ten
    assert list(plan("img2img", images=[UPLOAD_URL]).spec.images) == [UPLOAD_URL]
    err = bad_request("img2img", "images", images=[*ten, HTTPS_URL])
    assert "10" in err.message


def test_img2img_names_the_bad_image_by_index() -> None:
    urls = [HTTPS_URL, UPLOAD_URL, "http://example.com/x.png"]
    err = bad_request("img2img", "images[2]", images=urls)
    assert "'images[2]'" in err.message


def test_img2img_price_does_not_depend_on_the_number_of_images() -> None:
    one = plan("img2img", images=[HTTPS_URL], resolution="2k")
    many = plan("img2img", images=[HTTPS_URL] * 10, resolution="2k")
    assert one.estimated_cost_micros == many.estimated_cost_micros == 1600 * IDR


# -- video: resolution, duration, ratio -----------------------------------------------------------


# Seedance 2.0 Fast renders 480p and 720p only: the catalog prices (offers) just those.
SEEDANCE_RESOLUTIONS = ["480p", "720p"]


@pytest.mark.parametrize("endpoint", VIDEO_ENDPOINTS)
@pytest.mark.parametrize("resolution", SEEDANCE_RESOLUTIONS)
def test_video_resolutions_and_plain_prices(endpoint: str, resolution: str) -> None:
    job = plan(endpoint, resolution=resolution, duration=7)
    model = video_model(DEFAULT_MODELS[endpoint])
    assert job.spec.resolution == resolution
    assert job.unit_price_micros == model.price_per_second[resolution]
    assert (job.estimated_units, job.min_billable_units) == (7, 0)
    assert job.estimated_cost_micros == 7 * model.price_per_second[resolution]


def test_seedance_720p_for_6_seconds() -> None:
    job = plan("video", model="seedance-2.0-fast", resolution="720p", duration=6)
    assert job.estimated_cost_micros == 6 * 2300 * IDR == 13_800_000_000


@pytest.mark.parametrize("endpoint", VIDEO_ENDPOINTS)
@pytest.mark.parametrize("resolution", ["1080p", "2k", "4k"])
def test_seedance_refuses_what_its_upstream_cannot_render(endpoint: str, resolution: str) -> None:
    """The upstream answers "resolution must be 480p or 720p": a 400 here, before any hold."""
    err = bad_request(endpoint, "resolution", resolution=resolution)
    assert f"'resolution' {resolution} is not offered by the model" in err.message
    assert "480p, 720p" in err.message


@pytest.mark.parametrize("endpoint", VIDEO_ENDPOINTS)
@pytest.mark.parametrize("value", ["360p", "720P", "720", "1k", "", 720, True, ["720p"]])
def test_invalid_video_resolution_is_400(endpoint: str, value: Any) -> None:
    err = bad_request(endpoint, "resolution", resolution=value)
    assert "'resolution'" in err.message
    assert all(r in err.message for r in VIDEO_RESOLUTIONS)


def _video_entry(modality: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": DEFAULT_MODELS[modality],
        "display_name": "x",
        "created": 1,
        "modality": modality,
        "price_per_second": {"480p": "1000", "720p": "2000"},
        **extra,
    }


def test_resolution_must_be_priced_for_the_model() -> None:
    catalog = custom_catalog(video=[_video_entry("video")])
    assert plan_with(catalog, "video", resolution="480p").unit_price_micros == 1000 * IDR
    err = refused("video", body("video", resolution="1080p"), catalog)
    assert (err.status, err.code, err.param) == (400, "invalid_request", "resolution")
    assert "480p, 720p" in err.message


@pytest.mark.parametrize("endpoint", VIDEO_ENDPOINTS)
@pytest.mark.parametrize("seconds", range(4, 16))
def test_every_allowed_duration(endpoint: str, seconds: int) -> None:
    job = plan(endpoint, duration=seconds)
    assert job.spec.duration_seconds == job.estimated_units == seconds


@pytest.mark.parametrize("endpoint", VIDEO_ENDPOINTS)
def test_duration_as_an_integral_float(endpoint: str) -> None:
    assert plan(endpoint, duration=6.0).spec.duration_seconds == 6


@pytest.mark.parametrize("endpoint", VIDEO_ENDPOINTS)
@pytest.mark.parametrize(
    "value", [3, 16, 0, -5, 4.5, 15.01, 1e300, "5", "five", True, False, [5], {"s": 5}]
)
def test_invalid_duration_is_400(endpoint: str, value: Any) -> None:
    err = bad_request(endpoint, "duration", duration=value)
    assert "'duration'" in err.message and "4" in err.message and "15" in err.message


@pytest.mark.parametrize("ratio", VIDEO_RATIOS)
def test_every_video_ratio(ratio: str) -> None:
    assert plan("video", ratio=ratio).spec.ratio == ratio


@pytest.mark.parametrize("value", ["3:2", "16:10", "ADAPTIVE", "", 1, True, ["16:9"]])
def test_invalid_video_ratio_is_400(value: Any) -> None:
    err = bad_request("video", "ratio", ratio=value)
    assert "'ratio'" in err.message and all(r in err.message for r in VIDEO_RATIOS)


@pytest.mark.parametrize("endpoint", ["img2video", "multimodal"])
def test_ratio_belongs_to_video_generate_only(endpoint: str) -> None:
    assert plan(endpoint, ratio="nonsense").spec.ratio == ""


# -- video: booleans and seed -----------------------------------------------------------------


BOOLEANS = ["generate_audio", "web_search", "return_last_frame", "real_person_mode"]


@pytest.mark.parametrize("endpoint", VIDEO_ENDPOINTS)
@pytest.mark.parametrize("key", BOOLEANS)
@pytest.mark.parametrize("value", [True, False])
def test_video_booleans_are_forwarded(endpoint: str, key: str, value: bool) -> None:
    spec = plan(endpoint, **{key: value}).spec
    assert getattr(spec, key) is value
    if key != "return_last_frame":  # a plain proto3 bool; the others are optional
        assert spec.HasField(key)


@pytest.mark.parametrize("endpoint", VIDEO_ENDPOINTS)
@pytest.mark.parametrize("key", BOOLEANS)
@pytest.mark.parametrize("value", ["true", 1, 0, "", [True], {"on": True}])
def test_video_booleans_are_type_checked(endpoint: str, key: str, value: Any) -> None:
    err = bad_request(endpoint, key, **{key: value})
    assert f"'{key}'" in err.message and "boolean" in err.message


@pytest.mark.parametrize("endpoint", VIDEO_ENDPOINTS)
@pytest.mark.parametrize(
    ("value", "stored"),
    [
        (42, 42),
        (0, 0),
        (-2, -2),
        (42.0, 42),
        (2**63 - 1, 2**63 - 1),
        (-(2**63), -(2**63)),
        (-1, None),
        (-1.0, None),
    ],
)
def test_seed(endpoint: str, value: Any, stored: int | None) -> None:
    spec = plan(endpoint, seed=value).spec
    if stored is None:
        assert not spec.HasField("seed")
    else:
        assert spec.HasField("seed") and spec.seed == stored


@pytest.mark.parametrize("endpoint", VIDEO_ENDPOINTS)
@pytest.mark.parametrize("value", [2**63, 1.5, float(2**63), "42", True, False, [1], {"v": 1}])
def test_invalid_seed_is_400(endpoint: str, value: Any) -> None:
    err = bad_request(endpoint, "seed", seed=value)
    assert "'seed'" in err.message and "-1" in err.message


@pytest.mark.parametrize("endpoint", VIDEO_ENDPOINTS)
def test_seed_below_int64_is_400(endpoint: str) -> None:
    # orjson reads an integer below int64 as an (inexact) float.
    raw = orjson.dumps(body(endpoint))[:-1] + b',"seed":-9223372036854775809}'
    err = refused(endpoint, raw)
    assert (err.status, err.param) == (400, "seed")


# -- conversion_slots -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "slots",
    [
        ["all"],
        ["firstFrameUrl"],
        ["lastFrameUrl"],
        ["firstFrameUrl", "lastFrameUrl"],
        ["all", "firstFrameUrl"],
    ],
)
def test_img2video_conversion_slots(slots: list[str]) -> None:
    assert list(plan("img2video", conversion_slots=slots).spec.conversion_slots) == slots


@pytest.mark.parametrize("slot", MULTIMODAL_CONVERSION_SLOTS)
def test_multimodal_conversion_slots(slot: str) -> None:
    assert list(plan("multimodal", conversion_slots=[slot]).spec.conversion_slots) == [slot]


def test_multimodal_conversion_slots_keep_order() -> None:
    slots = ["video3", "image1", "image9"]
    assert list(plan("multimodal", conversion_slots=slots).spec.conversion_slots) == slots


@pytest.mark.parametrize(
    ("endpoint", "value", "param"),
    [
        ("img2video", "all", "conversion_slots"),
        ("img2video", [], "conversion_slots"),
        ("img2video", {"0": "all"}, "conversion_slots"),
        ("img2video", ["image1"], "conversion_slots[0]"),
        ("img2video", ["all", "firstframeurl"], "conversion_slots[1]"),
        ("img2video", ["firstFrameUrl", "firstFrameUrl"], "conversion_slots[1]"),
        ("img2video", [1], "conversion_slots[0]"),
        ("multimodal", "image1", "conversion_slots"),
        ("multimodal", [], "conversion_slots"),
        ("multimodal", ["firstFrameUrl"], "conversion_slots[0]"),
        ("multimodal", ["image1", "image10"], "conversion_slots[1]"),
        ("multimodal", ["image0"], "conversion_slots[0]"),
        ("multimodal", ["video4"], "conversion_slots[0]"),
        ("multimodal", ["audio1"], "conversion_slots[0]"),
        ("multimodal", ["all", "video1", "all"], "conversion_slots[2]"),
        ("multimodal", [None], "conversion_slots[0]"),
    ],
)
def test_invalid_conversion_slots_are_400(endpoint: str, value: Any, param: str) -> None:
    err = bad_request(endpoint, param, conversion_slots=value)
    assert f"'{param}'" in err.message


def test_conversion_slot_errors_name_the_allowed_values() -> None:
    err = bad_request("img2video", "conversion_slots[0]", conversion_slots=["x"])
    assert "all, firstFrameUrl, lastFrameUrl" in err.message
    err = bad_request("multimodal", "conversion_slots[0]", conversion_slots=["x"])
    assert "image9" in err.message and "video3" in err.message


def test_video_generate_has_no_conversion_slots() -> None:
    assert list(plan("video", conversion_slots=["bogus"]).spec.conversion_slots) == []


# -- img2video frames ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", [_ABSENT, None])
def test_first_frame_url_is_required(value: Any) -> None:
    err = bad_request("img2video", "first_frame_url", first_frame_url=value)
    assert "'first_frame_url'" in err.message


def test_last_frame_url_is_optional() -> None:
    assert plan("img2video").spec.last_frame_url == ""
    spec = plan("img2video", first_frame_url=UPLOAD_URL, last_frame_url=HTTPS_URL).spec
    assert (spec.first_frame_url, spec.last_frame_url) == (UPLOAD_URL, HTTPS_URL)


@pytest.mark.parametrize("value", ["", "http://example.com/end.png", 3, [HTTPS_URL]])
def test_invalid_last_frame_url_is_400(value: Any) -> None:
    bad_request("img2video", "last_frame_url", last_frame_url=value)


# -- multimodal references and pricing ------------------------------------------------------------


@pytest.mark.parametrize(("key", "limit"), [("images", 9), ("videos", 3), ("audios", 3)])
def test_multimodal_reference_limits(key: str, limit: int) -> None:
    urls = [f"https://example.com/{key}/{i}" for i in range(limit)]
    visual = {} if key != "audios" else {"images": [HTTPS_URL]}
    assert list(getattr(plan("multimodal", **{key: urls}, **visual).spec, key)) == urls
    err = bad_request("multimodal", key, **{key: [*urls, HTTPS_URL]}, **visual)
    assert f"'{key}'" in err.message and str(limit) in err.message


def test_seedance_refuses_reference_audio_alone() -> None:
    """Seedance takes audio only beside an image or a video: refused before any hold."""
    err = bad_request("multimodal", "audios", audios=[HTTPS_URL], images=[])
    assert "'images' or 'videos'" in err.message
    assert plan("multimodal", audios=[HTTPS_URL], videos=[HTTPS_URL]).spec.audios


@pytest.mark.parametrize("key", ["images", "videos", "audios"])
@pytest.mark.parametrize("value", [HTTPS_URL, {"a": HTTPS_URL}, 1, True])
def test_multimodal_references_must_be_arrays(key: str, value: Any) -> None:
    bad_request("multimodal", key, **{key: value})


@pytest.mark.parametrize("key", ["images", "videos", "audios"])
def test_multimodal_names_the_bad_reference(key: str) -> None:
    err = bad_request("multimodal", f"{key}[1]", **{key: [HTTPS_URL, "http://x.com/a"]})
    assert f"'{key}[1]'" in err.message


def test_multimodal_with_a_reference_image_at_720p_for_4_seconds() -> None:
    job = plan("multimodal", images=[UPLOAD_URL], resolution="720p", duration=4)
    assert (job.unit_price_micros, job.estimated_units, job.min_billable_units) == (
        2800 * IDR,
        4,
        5,
    )
    assert job.estimated_cost_micros == max(4, 5) * 2800 * IDR == 14_000_000_000


@pytest.mark.parametrize(
    "refs",
    [
        {"images": [HTTPS_URL]},
        {"videos": [HTTPS_URL]},
        {"videos": [HTTPS_URL], "audios": [HTTPS_URL]},
        {"images": [HTTPS_URL] * 9, "videos": [HTTPS_URL] * 3, "audios": [HTTPS_URL] * 3},
        {"images": [UPLOAD_URL], "videos": [], "audios": [UPLOAD_URL]},
    ],
)
@pytest.mark.parametrize("resolution", SEEDANCE_RESOLUTIONS)
@pytest.mark.parametrize("duration", [4, 5, 12])
def test_any_reference_uses_the_with_reference_rate_and_floor(
    refs: dict[str, list[str]], resolution: str, duration: int
) -> None:
    model = video_model("seedance-2.0-fast-multimodal")
    job = plan("multimodal", resolution=resolution, duration=duration, **refs)
    rate = model.price_per_second_with_reference[resolution]
    assert rate > model.price_per_second[resolution]
    assert (job.unit_price_micros, job.estimated_units) == (rate, duration)
    assert job.min_billable_units == model.min_billable_seconds_with_reference == 5
    assert job.estimated_cost_micros == max(duration, 5) * rate


@pytest.mark.parametrize("refs", [{}, {"images": [], "videos": [], "audios": []}])
def test_no_reference_uses_the_plain_rate(refs: dict[str, list[str]]) -> None:
    job = plan("multimodal", resolution="720p", duration=4, **refs)
    assert (job.unit_price_micros, job.min_billable_units) == (2300 * IDR, 0)
    assert job.estimated_cost_micros == 4 * 2300 * IDR


def test_with_reference_without_a_reference_table_falls_back_to_the_plain_rate() -> None:
    catalog = custom_catalog(
        video=[_video_entry("multimodal", min_billable_seconds_with_reference=6)]
    )
    job = plan_with(catalog, "multimodal", images=[HTTPS_URL], duration=4)
    assert (job.unit_price_micros, job.min_billable_units) == (2000 * IDR, 6)
    assert job.estimated_cost_micros == 6 * 2000 * IDR


def test_with_reference_resolution_must_be_in_the_reference_table() -> None:
    catalog = custom_catalog(
        video=[
            _video_entry(
                "multimodal",
                price_per_second_with_reference={"720p": "2500"},
                min_billable_seconds_with_reference=5,
            )
        ]
    )
    assert plan_with(catalog, "multimodal", resolution="480p").unit_price_micros == 1000 * IDR
    err = refused("multimodal", body("multimodal", resolution="480p", videos=[HTTPS_URL]), catalog)
    assert (err.status, err.param) == (400, "resolution")
    assert "720p" in err.message


# -- the plan ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("units", "floor", "price", "cost"),
    [(1, 0, 700, 700), (4, 5, 10, 50), (6, 5, 10, 60), (5, 5, 3, 15), (7, 0, 0, 0)],
)
def test_estimated_cost_is_units_or_floor_times_price(
    units: int, floor: int, price: int, cost: int
) -> None:
    job = JobPlan("m", Modality.VIDEO, job_state_pb2.WorkSpec(), price, units, floor)
    assert job.estimated_cost_micros == cost


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_the_spec_serializes(endpoint: str) -> None:
    job = plan(endpoint, prompt="Pura Ulun Danu Bratan 🌅", seed=7)
    parsed = job_state_pb2.WorkSpec.FromString(job.spec.SerializeToString())
    assert parsed == job.spec


FUZZ_VALUES: list[Any] = [
    None,
    True,
    0,
    -1,
    4,
    2**63,
    1.5,
    1e300,
    "",
    "x",
    "720p",
    "2k",
    "16:9",
    "all",
    HTTPS_URL,
    UPLOAD_URL,
    [],
    [HTTPS_URL],
    ["all"],
    [None],
    [[HTTPS_URL]],
    {},
    {"url": HTTPS_URL},
]
FUZZ_KEYS = [
    "model",
    "prompt",
    "aspect_ratio",
    "resolution",
    "images",
    "videos",
    "audios",
    "first_frame_url",
    "last_frame_url",
    "duration",
    "ratio",
    "seed",
    "generate_audio",
    "web_search",
    "return_last_frame",
    "real_person_mode",
    "conversion_slots",
]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_any_field_value_is_accepted_or_a_public_error(endpoint: str) -> None:
    rng = random.Random(endpoint)
    for _ in range(400):
        fields = {key: rng.choice(FUZZ_VALUES) for key in rng.sample(FUZZ_KEYS, rng.randint(1, 6))}
        try:
            job = plan(endpoint, **fields)
        except PublicError as err:
            assert err.status in (400, 404)
        else:
            assert job.estimated_cost_micros > 0
            job.spec.SerializeToString()


# -- each model's own (its upstream's) limits -----------------------------------------------------


@pytest.mark.parametrize("model", ["wan-2.7-img2img", "z-image-turbo-img2img"])
def test_wan_takes_at_most_9_reference_images(model: str) -> None:
    assert len(plan("img2img", model=model, images=[HTTPS_URL] * 9).spec.images) == 9
    err = bad_request("img2img", "images", model=model, images=[HTTPS_URL] * 10)
    assert f"the model '{model}' takes at most 9" in err.message


def test_a_models_duration_range_narrows_the_endpoints() -> None:
    catalog = custom_catalog(
        video=[_video_entry("video", min_duration_seconds=5, max_duration_seconds=10)]
    )
    assert plan_with(catalog, "video", duration=10).spec.duration_seconds == 10
    for seconds in (4, 11):
        err = refused("video", body("video", duration=seconds), catalog)
        assert (err.status, err.param) == (400, "duration")
        assert "from 5 to 10" in err.message


def test_the_default_duration_moves_into_a_models_range() -> None:
    catalog = custom_catalog(
        video=[_video_entry("video", min_duration_seconds=8, max_duration_seconds=12)]
    )
    assert plan_with(catalog, "video").spec.duration_seconds == 8


def test_a_models_ratios_narrow_the_endpoints() -> None:
    catalog = custom_catalog(video=[_video_entry("video", ratios=["16:9", "9:16"])])
    assert plan_with(catalog, "video", ratio="9:16").spec.ratio == "9:16"
    err = refused("video", body("video", ratio="1:1"), catalog)
    assert (err.status, err.param) == (400, "ratio")
    assert "use one of: 16:9, 9:16" in err.message


@pytest.mark.parametrize("key", ["images", "videos", "audios"])
def test_a_models_reference_counts_narrow_the_endpoints(key: str) -> None:
    catalog = custom_catalog(
        video=[_video_entry("multimodal", max_images=2, max_videos=2, max_audios=2)]
    )
    assert len(getattr(plan_with(catalog, "multimodal", **{key: [HTTPS_URL] * 2}).spec, key)) == 2
    err = refused("multimodal", body("multimodal", **{key: [HTTPS_URL] * 3}), catalog)
    assert (err.status, err.param) == (400, key)
    assert "takes at most 2" in err.message


def test_seedance_declares_its_upstreams_rules() -> None:
    for model_id in DEFAULT_MODELS.values():
        model = CATALOG.models[model_id]
        if isinstance(model, VideoModel):
            assert sorted(model.price_per_second) == SEEDANCE_RESOLUTIONS
            assert (model.min_duration_seconds, model.max_duration_seconds) == (4, 15)
    multimodal = video_model("seedance-2.0-fast-multimodal")
    assert (multimodal.max_images, multimodal.max_videos, multimodal.max_audios) == (9, 3, 3)
    assert multimodal.reference_image.min_side == 300
    assert multimodal.reference_image.max_aspect == 2.5


@pytest.mark.parametrize(
    ("rules", "complaint"),
    [
        ({"min_side": -1}, "min_side"),
        ({"max_aspect": 0.5}, "max_aspect"),
        ({"formats": ["image/gif"]}, "formats"),
        ({"alpha": "no"}, "alpha"),
        ({"min_side": 500, "max_side": 400}, "min_side exceeds max_side"),
        ({"colour": True}, "unknown key"),
    ],
)
def test_malformed_reference_rules_stop_the_catalog(rules: dict[str, Any], complaint: str) -> None:
    entry = _video_entry("img2video", reference_image=rules)
    with pytest.raises(CatalogError, match=complaint):
        custom_catalog(video=[entry])


# -- client_task_id ---------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", list(PARSERS))
def test_every_job_endpoint_takes_a_client_task_id(endpoint: str) -> None:
    assert plan(endpoint).client_task_id == ""
    assert plan(endpoint, client_task_id="order-42/a").client_task_id == "order-42/a"


@pytest.mark.parametrize("bad", ["", "has space", "x" * 65, "ünï", 42])
def test_a_malformed_client_task_id_is_refused(bad: Any) -> None:
    error = refused("image", body("image", client_task_id=bad))
    assert (error.status, error.param) == (400, "client_task_id")
