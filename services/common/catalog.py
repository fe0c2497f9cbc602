"""The model catalog (config/catalog.yaml): ids, modalities, limits and IDR prices.

Loaded once at start-up into immutable objects; prices become integer µIDR.
A model with `enabled: false` stays in the file but is invisible to clients.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from services.common.job_states import IMAGE_MODALITIES, VIDEO_MODALITIES, Modality
from services.common.money import AmountError, ceil_div, idr_to_micros


class CatalogError(ValueError):
    """The catalog file is malformed; the service must not start with it."""


# How a text model's thinking is switched on the upstream (catalog `thinking.control`):
#   toggle    OpenAI-compatible `thinking: {type: enabled|disabled}` (DeepSeek, GLM, Kimi)
#   effort    OpenAI `reasoning_effort`; off = the effort value meaning "no reasoning"
#   always    always reasons, nothing to switch (reasoning models only)
#   adaptive  Anthropic `thinking: {type: adaptive}` + `output_config.effort`; off = omitted
#   budget    Anthropic enabled + budget_tokens / Gemini thinkingBudget (0 = off)
#   level     Gemini thinkingLevel; off = the lowest level the model has
#   none      the model does not think (non-reasoning models only)
THINKING_CONTROLS = frozenset({"toggle", "effort", "always", "adaptive", "budget", "level", "none"})
# Controls that need an explicit `off` value to keep a non-reasoning model from thinking.
_OFF_BY_VALUE = frozenset({"effort", "level"})
# What the gateway does with a public parameter for a model (catalog `parameters`).
PARAMETER_RULES = frozenset({"pass", "drop", "refuse"})
# Public chat parameters a model's `parameters` map may name.
POLICY_PARAMETERS = frozenset(
    {
        "temperature",
        "top_p",
        "presence_penalty",
        "frequency_penalty",
        "seed",
        "n",
        "stop",
        "response_format",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "user",
        "reasoning_effort",
        "parallel_tool_calls",
    }
)


@dataclass(frozen=True, slots=True)
class ThinkingPolicy:
    control: str = "none"
    # The upstream value that switches thinking off (`effort` / `level` controls).
    off: str | None = None
    # Whether the client's reasoning_effort is sent on as the upstream's effort / level
    # (False: thinking is only switched on, the model picks its own depth).
    effort: bool = True


@dataclass(frozen=True, slots=True)
class TextModel:
    id: str
    display_name: str
    created: int
    owned_by: str
    # µIDR per one million tokens.
    input_micros_per_m: int
    cached_input_micros_per_m: int  # prompt tokens read from the upstream's cache
    # Prompt tokens written to the upstream's cache. Always set: when the catalog gives
    # none, `parse_catalog` computes the default (see `cache_write_multipliers`).
    cache_write_micros_per_m: int
    output_micros_per_m: int
    max_output_tokens: int
    supports_reasoning: bool
    enabled: bool = True
    thinking: ThinkingPolicy = field(default_factory=ThinkingPolicy)
    # public parameter -> "drop" | "refuse" (absent: "pass")
    parameters: dict[str, str] = field(default_factory=dict)


IMAGE_FORMATS = ("image/jpeg", "image/png", "image/webp")


@dataclass(frozen=True, slots=True)
class ReferenceImageRules:
    """What the model's upstream accepts as a reference image (its documented limits).

    The worker adapts each reference to these before the upstream sees it (see
    services/providers/reference_images.py); 0 means no limit.
    """

    min_side: int = 0  # px, each side
    max_side: int = 0  # px, each side
    max_pixels: int = 0  # width x height
    max_aspect: float = 0.0  # longest side / shortest side
    max_bytes: int = 0
    formats: tuple[str, ...] = IMAGE_FORMATS  # content types it takes
    alpha: bool = True  # False: transparency must be flattened away


# Containers whose length the worker can read (services/providers/reference_clips.py).
CLIP_FORMATS = {
    "video": ("video/mp4", "video/quicktime"),
    "audio": ("audio/mpeg", "audio/wav", "audio/mp4", "audio/aac"),
}


@dataclass(frozen=True, slots=True)
class ReferenceClipRules:
    """What the model's upstream accepts as reference videos or audios.

    There is no transcoder in the worker, so a clip is not adapted: one outside these
    rules fails its job as the client's input (before any upstream call). 0 means no
    limit; empty formats mean every format of CLIP_FORMATS.
    """

    formats: tuple[str, ...] = ()
    min_seconds: float = 0.0  # each clip
    max_seconds: float = 0.0  # each clip
    max_total_seconds: float = 0.0  # all clips of this kind in one job
    max_bytes: int = 0
    # True: the upstream refuses this kind alone (audio needs an image or video beside it).
    needs_visual: bool = False


@dataclass(frozen=True, slots=True)
class ImageModel:
    id: str
    display_name: str
    created: int
    modality: Modality  # IMAGE or IMG2IMG
    supports_aspect_ratio: bool
    # resolution tier ("1k", "2k", "4k", or "default" for a flat price) -> µIDR per image
    price_per_image: dict[str, int]
    enabled: bool = True
    # img2img: how many reference images the upstream takes, and what each may be.
    max_images: int = 0
    reference_image: ReferenceImageRules = ReferenceImageRules()

    @property
    def has_resolution_tiers(self) -> bool:
        return "default" not in self.price_per_image


@dataclass(frozen=True, slots=True)
class VideoModel:
    id: str
    display_name: str
    created: int
    modality: Modality  # VIDEO, IMG2VIDEO or MULTIMODAL
    # resolution -> µIDR per generated second
    price_per_second: dict[str, int]
    price_per_second_with_reference: dict[str, int] = field(default_factory=dict)
    min_billable_seconds_with_reference: int = 0
    enabled: bool = True
    # The upstream's rules: duration range, ratios, reference counts and images.
    # Resolutions are the keys of price_per_second.
    min_duration_seconds: int = 4
    max_duration_seconds: int = 15
    ratios: tuple[str, ...] = ()
    max_images: int = 0
    max_videos: int = 0
    max_audios: int = 0
    reference_image: ReferenceImageRules = ReferenceImageRules()
    reference_video: ReferenceClipRules = ReferenceClipRules()
    reference_audio: ReferenceClipRules = ReferenceClipRules()


Model = TextModel | ImageModel | VideoModel


@dataclass(frozen=True, slots=True)
class Catalog:
    currency: str
    models: dict[str, Model]

    def text_model(self, model_id: str) -> TextModel | None:
        """An enabled text model, or None (unknown, disabled, or another modality)."""
        model = self.models.get(model_id)
        if isinstance(model, TextModel) and model.enabled:
            return model
        return None

    def enabled_text_models(self) -> list[TextModel]:
        return [m for m in self.models.values() if isinstance(m, TextModel) and m.enabled]

    def enabled_models(self) -> list[Model]:
        return [m for m in self.models.values() if m.enabled]


def _require(entry: dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = entry.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise CatalogError(f"{where}: '{key}' must be a {kind.__name__}")
    return value


def _micros(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise CatalogError(f"{where}: price must be a decimal string")
    try:
        micros = idr_to_micros(value)
    except AmountError as exc:
        raise CatalogError(f"{where}: {exc}") from exc
    if micros < 0:
        raise CatalogError(f"{where}: price must not be negative")
    return micros


def _price_table(entry: dict[str, Any], key: str, where: str) -> dict[str, int]:
    table = entry.get(key)
    if not isinstance(table, dict) or not table:
        raise CatalogError(f"{where}: '{key}' must be a non-empty mapping")
    return {str(tier): _micros(price, f"{where}.{key}.{tier}") for tier, price in table.items()}


def _cache_write_multipliers(doc: dict[str, Any]) -> dict[str, Decimal]:
    """Model-id prefix -> the multiple of the input price a prompt-cache write costs,
    for text models without their own `cache_write_per_million_tokens`."""
    raw = doc.get("cache_write_multipliers") or {}
    if not isinstance(raw, dict):
        raise CatalogError("cache_write_multipliers: must be a mapping")
    out: dict[str, Decimal] = {}
    for prefix, value in raw.items():
        where = f"cache_write_multipliers.{prefix}"
        if not isinstance(prefix, str) or not prefix:
            raise CatalogError("cache_write_multipliers: keys must be model-id prefixes")
        try:
            multiple = Decimal(str(value)) if isinstance(value, str | int) else Decimal("NaN")
        except InvalidOperation:
            multiple = Decimal("NaN")
        if not multiple.is_finite() or multiple < 1 or isinstance(value, bool):
            raise CatalogError(f"{where}: must be a decimal string, 1 or more")
        out[prefix] = multiple
    return out


def _cache_write_micros(
    entry: dict[str, Any], input_micros: int, multipliers: dict[str, Decimal], where: str
) -> int:
    """The model's own cache-write price; else its input price times the multiplier of
    the longest prefix of its id in `cache_write_multipliers`, rounded up to the µIDR;
    else its input price (an upstream that does not bill cache writes apart)."""
    if entry.get("cache_write_per_million_tokens") is not None:
        return _micros(entry["cache_write_per_million_tokens"], where)
    model_id = str(entry.get("id"))
    matches = [p for p in multipliers if model_id.startswith(p)]
    if not matches:
        return input_micros
    numerator, denominator = multipliers[max(matches, key=len)].as_integer_ratio()
    return ceil_div(input_micros * numerator, denominator)


def _thinking(entry: dict[str, Any], reasoning: bool, where: str) -> ThinkingPolicy:
    raw = entry.get("thinking", {"control": "none"})
    if not isinstance(raw, dict) or raw.get("control") not in THINKING_CONTROLS:
        raise CatalogError(
            f"{where}: 'thinking.control' must be one of {', '.join(sorted(THINKING_CONTROLS))}"
        )
    off = raw.get("off_value")
    if off is not None and not isinstance(off, str):
        raise CatalogError(f"{where}: 'thinking.off_value' must be a string")
    policy = ThinkingPolicy(control=raw["control"], off=off, effort=bool(raw.get("effort", True)))
    # supports_reasoning (shown by /v1/pricing) must be what the policy can deliver.
    if reasoning and policy.control == "none":
        raise CatalogError(f"{where}: a reasoning model needs a thinking control")
    if not reasoning and policy.control == "always":
        raise CatalogError(f"{where}: a model that always reasons must be a reasoning model")
    if not reasoning and policy.control in _OFF_BY_VALUE and off is None:
        raise CatalogError(f"{where}: a non-reasoning model needs 'thinking.off_value'")
    return policy


def _parameters(entry: dict[str, Any], reasoning: bool, where: str) -> dict[str, str]:
    raw = entry.get("parameters") or {}
    if not isinstance(raw, dict):
        raise CatalogError(f"{where}: 'parameters' must be a mapping")
    out: dict[str, str] = {}
    for name, rule in raw.items():
        if name not in POLICY_PARAMETERS or rule not in PARAMETER_RULES:
            raise CatalogError(f"{where}: bad parameter rule {name!r}: {rule!r}")
        if rule != "pass":
            out[name] = rule
    if reasoning and "reasoning_effort" in out:
        raise CatalogError(f"{where}: a reasoning model must take reasoning_effort")
    return out


def _count(entry: dict[str, Any], key: str, default: int, where: str) -> int:
    value = entry.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CatalogError(f"{where}: '{key}' must be a whole number, 0 or more")
    return value


def _strings(entry: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = entry.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise CatalogError(f"{where}: '{key}' must be a list of strings")
    return tuple(value)


def _reference_rules(entry: dict[str, Any], where: str) -> ReferenceImageRules:
    rules = entry.get("reference_image")
    if rules is None:
        return ReferenceImageRules()
    where = f"{where}.reference_image"
    if not isinstance(rules, dict):
        raise CatalogError(f"{where}: must be a mapping")
    unknown = set(rules) - set(ReferenceImageRules.__dataclass_fields__)
    if unknown:
        raise CatalogError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    aspect = rules.get("max_aspect", 0)
    if isinstance(aspect, bool) or not isinstance(aspect, int | float) or aspect < 0:
        raise CatalogError(f"{where}: 'max_aspect' must be a number, 0 or more")
    if 0 < aspect < 1:
        raise CatalogError(f"{where}: 'max_aspect' is long side / short side: 1 or more")
    formats = _strings(rules, "formats", where) or IMAGE_FORMATS
    if not set(formats) & set(IMAGE_FORMATS):
        raise CatalogError(f"{where}: 'formats' must include one of {', '.join(IMAGE_FORMATS)}")
    alpha = rules.get("alpha", True)
    if not isinstance(alpha, bool):
        raise CatalogError(f"{where}: 'alpha' must be true or false")
    parsed = ReferenceImageRules(
        min_side=_count(rules, "min_side", 0, where),
        max_side=_count(rules, "max_side", 0, where),
        max_pixels=_count(rules, "max_pixels", 0, where),
        max_aspect=float(aspect),
        max_bytes=_count(rules, "max_bytes", 0, where),
        formats=formats,
        alpha=alpha,
    )
    if parsed.max_side and parsed.min_side > parsed.max_side:
        raise CatalogError(f"{where}: min_side exceeds max_side")
    return parsed


def _seconds(rules: dict[str, Any], key: str, where: str) -> float:
    value = rules.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise CatalogError(f"{where}: '{key}' must be a number of seconds, 0 or more")
    return float(value)


def _clip_rules(entry: dict[str, Any], kind: str, where: str) -> ReferenceClipRules:
    rules = entry.get(f"reference_{kind}")
    if rules is None:
        return ReferenceClipRules()
    where = f"{where}.reference_{kind}"
    if not isinstance(rules, dict):
        raise CatalogError(f"{where}: must be a mapping")
    unknown = set(rules) - set(ReferenceClipRules.__dataclass_fields__)
    if unknown:
        raise CatalogError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    formats = _strings(rules, "formats", where)
    unreadable = set(formats) - set(CLIP_FORMATS[kind])
    if unreadable:
        raise CatalogError(
            f"{where}: cannot check the length of {sorted(unreadable)[0]}; "
            f"formats must be among {', '.join(CLIP_FORMATS[kind])}"
        )
    needs_visual = rules.get("needs_visual", False)
    if not isinstance(needs_visual, bool):
        raise CatalogError(f"{where}: 'needs_visual' must be true or false")
    parsed = ReferenceClipRules(
        formats=formats,
        min_seconds=_seconds(rules, "min_seconds", where),
        max_seconds=_seconds(rules, "max_seconds", where),
        max_total_seconds=_seconds(rules, "max_total_seconds", where),
        max_bytes=_count(rules, "max_bytes", 0, where),
        needs_visual=needs_visual,
    )
    if parsed.max_seconds and parsed.min_seconds > parsed.max_seconds:
        raise CatalogError(f"{where}: min_seconds exceeds max_seconds")
    if parsed.max_total_seconds and parsed.min_seconds > parsed.max_total_seconds:
        raise CatalogError(f"{where}: min_seconds exceeds max_total_seconds")
    return parsed


def _modality(entry: dict[str, Any], allowed: frozenset[Modality], where: str) -> Modality:
    """The entry's `modality`, one of those its section (image or video) serves."""
    value = _require(entry, "modality", str, where)
    names = ", ".join(sorted(allowed))
    try:
        modality = Modality(value)
    except ValueError:
        raise CatalogError(f"{where}: unknown modality {value!r}; use one of: {names}") from None
    if modality not in allowed:
        raise CatalogError(f"{where}: modality {value!r} does not belong here; use one of: {names}")
    return modality


def parse_catalog(doc: Any) -> Catalog:
    if not isinstance(doc, dict):
        raise CatalogError("catalog: top level must be a mapping")
    models: dict[str, Model] = {}

    def add(model: Model) -> None:
        if model.id in models:
            raise CatalogError(f"catalog: duplicate model id {model.id!r}")
        models[model.id] = model

    multipliers = _cache_write_multipliers(doc)
    for i, e in enumerate(doc.get("text") or []):
        where = f"text[{i}]"
        reasoning = _require(e, "supports_reasoning", bool, where)
        input_micros = _micros(e.get("input_per_million_tokens"), where)
        add(
            TextModel(
                id=_require(e, "id", str, where),
                display_name=_require(e, "display_name", str, where),
                created=_require(e, "created", int, where),
                owned_by=str(e.get("owned_by", "aiport")),
                input_micros_per_m=input_micros,
                cached_input_micros_per_m=_micros(e.get("cached_input_per_million_tokens"), where),
                cache_write_micros_per_m=_cache_write_micros(e, input_micros, multipliers, where),
                output_micros_per_m=_micros(e.get("output_per_million_tokens"), where),
                max_output_tokens=_require(e, "max_output_tokens", int, where),
                supports_reasoning=reasoning,
                enabled=bool(e.get("enabled", True)),
                thinking=_thinking(e, reasoning, where),
                parameters=_parameters(e, reasoning, where),
            )
        )
    for i, e in enumerate(doc.get("image") or []):
        where = f"image[{i}]"
        add(
            ImageModel(
                id=_require(e, "id", str, where),
                display_name=_require(e, "display_name", str, where),
                created=_require(e, "created", int, where),
                modality=_modality(e, IMAGE_MODALITIES, where),
                supports_aspect_ratio=_require(e, "supports_aspect_ratio", bool, where),
                price_per_image=_price_table(e, "price_per_image", where),
                enabled=bool(e.get("enabled", True)),
                max_images=_count(e, "max_images", 0, where),
                reference_image=_reference_rules(e, where),
            )
        )
    for i, e in enumerate(doc.get("video") or []):
        where = f"video[{i}]"
        with_ref = e.get("price_per_second_with_reference")
        add(
            VideoModel(
                id=_require(e, "id", str, where),
                display_name=_require(e, "display_name", str, where),
                created=_require(e, "created", int, where),
                modality=_modality(e, VIDEO_MODALITIES, where),
                price_per_second=_price_table(e, "price_per_second", where),
                price_per_second_with_reference=(
                    _price_table(e, "price_per_second_with_reference", where) if with_ref else {}
                ),
                min_billable_seconds_with_reference=int(
                    e.get("min_billable_seconds_with_reference", 0)
                ),
                enabled=bool(e.get("enabled", True)),
                min_duration_seconds=_count(e, "min_duration_seconds", 4, where),
                max_duration_seconds=_count(e, "max_duration_seconds", 15, where),
                ratios=_strings(e, "ratios", where),
                max_images=_count(e, "max_images", 0, where),
                max_videos=_count(e, "max_videos", 0, where),
                max_audios=_count(e, "max_audios", 0, where),
                reference_image=_reference_rules(e, where),
                reference_video=_clip_rules(e, "video", where),
                reference_audio=_clip_rules(e, "audio", where),
            )
        )
        video = models[e["id"]]
        assert isinstance(video, VideoModel)
        if not 1 <= video.min_duration_seconds <= video.max_duration_seconds:
            raise CatalogError(f"{where}: durations must satisfy 1 <= min <= max")
    return Catalog(currency=str(doc.get("currency", "IDR")), models=models)


def load_catalog(path: Path) -> Catalog:
    with path.open("rb") as fh:
        return parse_catalog(yaml.safe_load(fh))
