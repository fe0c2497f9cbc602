"""Validation and pricing of async image and video requests (pure, no I/O).

One parser per endpoint turns the client's raw JSON into a JobPlan: the catalog
model, the modality, the WorkSpec the worker runs (every value validated, every
default applied) and the price the gateway holds for the job. Unknown fields are
ignored; every known one is type- and range-checked so a bad value is a 400 that
names the field and its allowed values. A JSON null counts as "not given".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aiport.v1 import job_state_pb2

from services.common import blobs
from services.common.catalog import Catalog, ImageModel, VideoModel
from services.common.job_ids import MAX_CLIENT_TASK_ID_CHARS, is_client_task_id
from services.common.job_states import Modality
from services.gateway import errors
from services.gateway.errors import PublicError, json_object_body
from services.gateway.references import is_own_reference

DEFAULT_IMAGE_MODEL = "gpt-image-2"
DEFAULT_IMG2IMG_MODEL = "gpt-image-2-img2img"
DEFAULT_VIDEO_MODEL = "seedance-2.0-fast"
DEFAULT_IMG2VIDEO_MODEL = "seedance-2.0-fast-img2video"
DEFAULT_MULTIMODAL_MODEL = "seedance-2.0-fast-multimodal"

MAX_PROMPT_CHARS = 10_000
MAX_URL_CHARS = 2_048
MAX_IMG2IMG_IMAGES = 10
MAX_MULTIMODAL_IMAGES = 9
MAX_MULTIMODAL_VIDEOS = 3
MAX_MULTIMODAL_AUDIOS = 3

ASPECT_RATIOS = ("3:2", "1:1", "2:3", "5:4", "4:5", "16:9", "9:16", "21:9", "3:4", "4:3", "9:21")
IMAGE_RESOLUTIONS = ("1k", "2k", "4k")
DEFAULT_IMAGE_RESOLUTION = "1k"
# The catalog's key for a model with one flat price (such a model ignores `resolution`).
FLAT_PRICE_TIER = "default"

VIDEO_RESOLUTIONS = ("480p", "720p", "1080p", "2k", "4k")
DEFAULT_VIDEO_RESOLUTION = "720p"
MIN_DURATION_SECONDS = 4
MAX_DURATION_SECONDS = 15
DEFAULT_DURATION_SECONDS = 5
VIDEO_RATIOS = ("adaptive", "16:9", "4:3", "1:1", "3:4", "9:16", "21:9")
DEFAULT_VIDEO_RATIO = "adaptive"
RANDOM_SEED = -1
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

IMG2VIDEO_CONVERSION_SLOTS = ("all", "firstFrameUrl", "lastFrameUrl")
MULTIMODAL_CONVERSION_SLOTS = (
    "all",
    *(f"image{i}" for i in range(1, MAX_MULTIMODAL_IMAGES + 1)),
    *(f"video{i}" for i in range(1, MAX_MULTIMODAL_VIDEOS + 1)),
)
DEFAULT_CONVERSION_SLOTS = ("all",)


@dataclass(frozen=True, slots=True)
class JobPlan:
    model: str
    modality: Modality
    spec: job_state_pb2.WorkSpec
    unit_price_micros: int  # µIDR per image, or per second of video
    estimated_units: int  # 1 image, or the requested duration in seconds
    min_billable_units: int  # 0, or the multimodal with-reference floor
    # The client's own id for the job ("" for none): unique per account.
    client_task_id: str = ""

    @property
    def estimated_cost_micros(self) -> int:
        return max(self.estimated_units, self.min_billable_units) * self.unit_price_micros


# -- errors -----------------------------------------------------------------------------------


def _invalid(message: str, param: str | None = None) -> PublicError:
    """A 400 with the code the spec lists for the image and video endpoints."""
    return errors.invalid_parameter(message, param)


def _model_not_found(model_id: str) -> PublicError:
    return errors.media_model_not_found(model_id)


def _one_of(values: Sequence[str]) -> str:
    return ", ".join(values)


# -- scalar fields ----------------------------------------------------------------------------


def _body(raw: bytes) -> dict[str, Any]:
    return json_object_body(raw, _invalid)


def _client_task_id(body: dict[str, Any]) -> str:
    value = body.get("client_task_id")
    if value is None:
        return ""
    if not isinstance(value, str) or not is_client_task_id(value):
        raise _invalid(
            f"'client_task_id' must be 1 to {MAX_CLIENT_TASK_ID_CHARS} printable ASCII "
            "characters without spaces.",
            "client_task_id",
        )
    return value


def _model_id(body: dict[str, Any], default: str) -> str:
    model_id = body.get("model")
    if model_id is None:
        return default
    if not isinstance(model_id, str):
        raise _invalid("'model' must be a string (a model id).", "model")
    return model_id


def _image_model(
    body: dict[str, Any], catalog: Catalog, default: str, modality: Modality
) -> ImageModel:
    model_id = _model_id(body, default)
    model = catalog.models.get(model_id)
    if not isinstance(model, ImageModel) or not model.enabled or model.modality is not modality:
        raise _model_not_found(model_id)
    return model


def _video_model(
    body: dict[str, Any], catalog: Catalog, default: str, modality: Modality
) -> VideoModel:
    model_id = _model_id(body, default)
    model = catalog.models.get(model_id)
    if not isinstance(model, VideoModel) or not model.enabled or model.modality is not modality:
        raise _model_not_found(model_id)
    return model


def _prompt(body: dict[str, Any]) -> str:
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise _invalid("'prompt' is required and must be a non-empty string.", "prompt")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise _invalid(
            f"'prompt' is {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}.", "prompt"
        )
    return prompt


def _choice(body: dict[str, Any], key: str, allowed: Sequence[str]) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or value not in allowed:
        raise _invalid(f"'{key}' must be one of: {_one_of(allowed)}.", key)
    return value


def _bool(body: dict[str, Any], key: str) -> bool | None:
    value = body.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise _invalid(f"'{key}' must be a boolean (true or false).", key)


# Beyond 2**53 a JSON number parsed as a float no longer holds the client's exact integer.
_EXACT_FLOAT_INT = 2**53


def _integer(value: Any) -> int | None:
    """An int, or an exact float with no fraction (5.0); never a bool or a string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer() and abs(value) <= _EXACT_FLOAT_INT:
        return int(value)
    return None


def _duration(body: dict[str, Any], model: VideoModel) -> int:
    """Seconds, within both the endpoint's range and the model's (the upstream's)."""
    low = max(MIN_DURATION_SECONDS, model.min_duration_seconds)
    high = min(MAX_DURATION_SECONDS, model.max_duration_seconds)
    value = body.get("duration")
    if value is None:
        return min(max(DEFAULT_DURATION_SECONDS, low), high)
    seconds = _integer(value)
    if seconds is None or not low <= seconds <= high:
        raise _invalid(
            f"'duration' must be an integer number of seconds from {low} to {high}"
            f" for the model '{model.id}'.",
            "duration",
        )
    return seconds


def _reference_limit(model_limit: int, endpoint_limit: int) -> int:
    """The model's (its upstream's) limit on a kind of reference; 0 means the endpoint's."""
    return min(model_limit, endpoint_limit) if model_limit else endpoint_limit


def _seed(body: dict[str, Any]) -> int | None:
    """None for a random seed (absent or -1)."""
    value = body.get("seed")
    if value is None:
        return None
    seed = _integer(value)
    if seed is None or not INT64_MIN <= seed <= INT64_MAX:
        raise _invalid("'seed' must be a 64-bit integer; -1 means random.", "seed")
    return None if seed == RANDOM_SEED else seed


def _conversion_slots(body: dict[str, Any], allowed: Sequence[str]) -> list[str]:
    value = body.get("conversion_slots")
    if value is None:
        return list(DEFAULT_CONVERSION_SLOTS)
    if not isinstance(value, list) or not value:
        raise _invalid(
            f"'conversion_slots' must be a non-empty array of: {_one_of(allowed)}.",
            "conversion_slots",
        )
    seen: set[str] = set()
    for i, slot in enumerate(value):
        param = f"conversion_slots[{i}]"
        if not isinstance(slot, str) or slot not in allowed:
            raise _invalid(f"'{param}' must be one of: {_one_of(allowed)}.", param)
        if slot in seen:
            raise _invalid(f"'{param}' repeats '{slot}'; list each slot once.", param)
        seen.add(slot)
    return list(value)


# -- URLs -------------------------------------------------------------------------------------


def is_upload_url(url: str) -> bool:
    """One of our upload URLs, whatever host or scheme served it."""
    key = blobs.key_from_url(url)
    return key is not None and key.startswith("uploads/")


def _is_https_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port  # raises ValueError on a malformed port
    except ValueError:
        return False
    return parts.scheme == "https" and bool(host) and "@" not in parts.netloc


def _is_acceptable_url(url: str) -> bool:
    if not url or len(url) > MAX_URL_CHARS:
        return False
    # urlsplit silently drops tabs and newlines; refuse them (and any whitespace or
    # control character) rather than forward a URL that differs from what was checked.
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        return False
    # Our own blobs (upload ids, upload and result URLs) are checked for ownership
    # and resolved by services/gateway/references.py before anything is held.
    return _is_https_url(url) or is_own_reference(url)


def _url(value: Any, param: str) -> str:
    if not isinstance(value, str) or not _is_acceptable_url(value):
        raise _invalid(
            f"'{param}' must be an https URL (with a host, no user info, at most "
            f"{MAX_URL_CHARS} characters), an upload_id or url from /v1/image/upload, "
            "or a result_url of one of your jobs.",
            param,
        )
    return value


def _optional_url(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    return None if value is None else _url(value, key)


def _url_list(
    body: dict[str, Any], key: str, *, required: bool, max_items: int, model: str
) -> list[str]:
    value = body.get(key)
    if value is None and not required:
        return []
    if not isinstance(value, list) or (required and not value):
        need = f"1 to {max_items}" if required else f"at most {max_items}"
        what = "is required and must be" if required else "must be"
        raise _invalid(f"'{key}' {what} an array of {need} URLs.", key)
    if len(value) > max_items:
        raise _invalid(
            f"'{key}' has {len(value)} URLs; the model '{model}' takes at most {max_items}.",
            key,
        )
    return [_url(item, f"{key}[{i}]") for i, item in enumerate(value)]


# -- images -----------------------------------------------------------------------------------


def _image_plan(body: dict[str, Any], model: ImageModel, spec: job_state_pb2.WorkSpec) -> JobPlan:
    aspect_ratio = _choice(body, "aspect_ratio", ASPECT_RATIOS)
    resolution = _choice(body, "resolution", IMAGE_RESOLUTIONS)
    if aspect_ratio is not None and model.supports_aspect_ratio:
        spec.aspect_ratio = aspect_ratio
    prices = model.price_per_image
    if model.has_resolution_tiers:
        tiers = [t for t in IMAGE_RESOLUTIONS if t in prices]
        if resolution is None:
            # "1k", unless the catalog prices this model without it: then its lowest tier.
            use_default = DEFAULT_IMAGE_RESOLUTION in prices or not tiers
            resolution = DEFAULT_IMAGE_RESOLUTION if use_default else tiers[0]
        if resolution not in prices:
            raise _invalid(
                f"'resolution' {resolution} is not offered by the model '{model.id}'; "
                f"use one of: {_one_of(tiers)}.",
                "resolution",
            )
        spec.resolution = resolution
        price = prices[resolution]
    else:
        # A flat-priced model ignores `resolution` (validated above, never forwarded).
        price = prices[FLAT_PRICE_TIER]
    return JobPlan(
        model=model.id,
        modality=model.modality,
        spec=spec,
        unit_price_micros=price,
        estimated_units=1,
        min_billable_units=0,
        client_task_id=_client_task_id(body),
    )


def parse_image_generate(raw: bytes, catalog: Catalog) -> JobPlan:
    """POST /v1/image/generate (text-to-image)."""
    body = _body(raw)
    model = _image_model(body, catalog, DEFAULT_IMAGE_MODEL, Modality.IMAGE)
    spec = job_state_pb2.WorkSpec(prompt=_prompt(body))
    return _image_plan(body, model, spec)


def parse_image_img2img(raw: bytes, catalog: Catalog) -> JobPlan:
    """POST /v1/image/img2img (image-to-image)."""
    body = _body(raw)
    model = _image_model(body, catalog, DEFAULT_IMG2IMG_MODEL, Modality.IMG2IMG)
    spec = job_state_pb2.WorkSpec(prompt=_prompt(body))
    limit = _reference_limit(model.max_images, MAX_IMG2IMG_IMAGES)
    spec.images.extend(_url_list(body, "images", required=True, max_items=limit, model=model.id))
    return _image_plan(body, model, spec)


# -- video ------------------------------------------------------------------------------------


def _video_plan(
    body: dict[str, Any],
    model: VideoModel,
    spec: job_state_pb2.WorkSpec,
    *,
    with_reference: bool = False,
) -> JobPlan:
    resolution = _choice(body, "resolution", VIDEO_RESOLUTIONS) or DEFAULT_VIDEO_RESOLUTION
    duration = _duration(body, model)
    prices = model.price_per_second
    min_billable = 0
    if with_reference:
        prices = model.price_per_second_with_reference or prices
        min_billable = model.min_billable_seconds_with_reference
    if resolution not in prices:
        offered = [r for r in VIDEO_RESOLUTIONS if r in prices]
        raise _invalid(
            f"'resolution' {resolution} is not offered by the model '{model.id}'; "
            f"use one of: {_one_of(offered)}.",
            "resolution",
        )
    spec.resolution = resolution
    spec.duration_seconds = duration

    # Options common to every video endpoint; the worker passes on what the model supports.
    for key in ("generate_audio", "web_search", "real_person_mode"):
        flag = _bool(body, key)
        if flag is not None:
            setattr(spec, key, flag)
    spec.return_last_frame = bool(_bool(body, "return_last_frame"))
    seed = _seed(body)
    if seed is not None:
        spec.seed = seed

    return JobPlan(
        model=model.id,
        modality=model.modality,
        spec=spec,
        unit_price_micros=prices[resolution],
        estimated_units=duration,
        min_billable_units=min_billable,
        client_task_id=_client_task_id(body),
    )


def parse_video_generate(raw: bytes, catalog: Catalog) -> JobPlan:
    """POST /v1/video/generate (text-to-video)."""
    body = _body(raw)
    model = _video_model(body, catalog, DEFAULT_VIDEO_MODEL, Modality.VIDEO)
    spec = job_state_pb2.WorkSpec(prompt=_prompt(body))
    ratio = _choice(body, "ratio", VIDEO_RATIOS) or DEFAULT_VIDEO_RATIO
    if model.ratios and ratio not in model.ratios:
        raise _invalid(
            f"'ratio' {ratio} is not offered by the model '{model.id}'; "
            f"use one of: {_one_of(model.ratios)}.",
            "ratio",
        )
    spec.ratio = ratio
    return _video_plan(body, model, spec)


def parse_video_img2video(raw: bytes, catalog: Catalog) -> JobPlan:
    """POST /v1/video/img2video (first frame, optional last frame)."""
    body = _body(raw)
    model = _video_model(body, catalog, DEFAULT_IMG2VIDEO_MODEL, Modality.IMG2VIDEO)
    spec = job_state_pb2.WorkSpec(prompt=_prompt(body))
    first = body.get("first_frame_url")
    if first is None:
        raise _invalid(
            "'first_frame_url' is required: an https URL or a URL from /v1/image/upload.",
            "first_frame_url",
        )
    spec.first_frame_url = _url(first, "first_frame_url")
    last = _optional_url(body, "last_frame_url")
    if last is not None:
        spec.last_frame_url = last
    spec.conversion_slots.extend(_conversion_slots(body, IMG2VIDEO_CONVERSION_SLOTS))
    return _video_plan(body, model, spec)


def parse_video_multimodal(raw: bytes, catalog: Catalog) -> JobPlan:
    """POST /v1/video/multimodal (up to 9 images, 3 videos and 3 audios as references)."""
    body = _body(raw)
    model = _video_model(body, catalog, DEFAULT_MULTIMODAL_MODEL, Modality.MULTIMODAL)
    spec = job_state_pb2.WorkSpec(prompt=_prompt(body))
    limits = {
        "images": _reference_limit(model.max_images, MAX_MULTIMODAL_IMAGES),
        "videos": _reference_limit(model.max_videos, MAX_MULTIMODAL_VIDEOS),
        "audios": _reference_limit(model.max_audios, MAX_MULTIMODAL_AUDIOS),
    }
    images, videos, audios = (
        _url_list(body, key, required=False, max_items=limit, model=model.id)
        for key, limit in limits.items()
    )
    if audios and not (images or videos) and model.reference_audio.needs_visual:
        raise _invalid(
            f"'audios' needs at least one of 'images' or 'videos' beside it: the model "
            f"'{model.id}' does not take reference audio alone.",
            "audios",
        )
    spec.images.extend(images)
    spec.videos.extend(videos)
    spec.audios.extend(audios)
    spec.conversion_slots.extend(_conversion_slots(body, MULTIMODAL_CONVERSION_SLOTS))
    return _video_plan(body, model, spec, with_reference=bool(images or videos or audios))


# -- what each model takes (shown by /v1/pricing) ---------------------------------------------


@dataclass(frozen=True, slots=True)
class Offered:
    """The values a media model takes: the endpoint's, narrowed by the model's."""

    resolutions: tuple[str, ...]
    aspect_ratios: tuple[str, ...] = ()
    ratios: tuple[str, ...] = ()
    min_duration_seconds: int = 0
    max_duration_seconds: int = 0
    max_images: int = 0
    max_videos: int = 0
    max_audios: int = 0


def offered(model: ImageModel | VideoModel) -> Offered:
    if isinstance(model, ImageModel):
        prices = model.price_per_image
        return Offered(
            resolutions=tuple(t for t in IMAGE_RESOLUTIONS if t in prices),
            aspect_ratios=ASPECT_RATIOS if model.supports_aspect_ratio else (),
            max_images=(
                _reference_limit(model.max_images, MAX_IMG2IMG_IMAGES)
                if model.modality is Modality.IMG2IMG
                else 0
            ),
        )
    multimodal = model.modality is Modality.MULTIMODAL
    return Offered(
        resolutions=tuple(r for r in VIDEO_RESOLUTIONS if r in model.price_per_second),
        ratios=(
            tuple(r for r in VIDEO_RATIOS if not model.ratios or r in model.ratios)
            if model.modality is Modality.VIDEO
            else ()
        ),
        min_duration_seconds=max(MIN_DURATION_SECONDS, model.min_duration_seconds),
        max_duration_seconds=min(MAX_DURATION_SECONDS, model.max_duration_seconds),
        max_images=(
            _reference_limit(model.max_images, MAX_MULTIMODAL_IMAGES)
            if multimodal
            else 2
            if model.modality is Modality.IMG2VIDEO
            else 0
        ),
        max_videos=_reference_limit(model.max_videos, MAX_MULTIMODAL_VIDEOS) if multimodal else 0,
        max_audios=_reference_limit(model.max_audios, MAX_MULTIMODAL_AUDIOS) if multimodal else 0,
    )


__all__ = [
    "DEFAULT_IMAGE_MODEL",
    "DEFAULT_IMG2IMG_MODEL",
    "DEFAULT_IMG2VIDEO_MODEL",
    "DEFAULT_MULTIMODAL_MODEL",
    "DEFAULT_VIDEO_MODEL",
    "JobPlan",
    "Offered",
    "is_upload_url",
    "offered",
    "parse_image_generate",
    "parse_image_img2img",
    "parse_video_generate",
    "parse_video_img2video",
    "parse_video_multimodal",
]
