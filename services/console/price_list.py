"""The price list as the console shows it: the gateway's `GetPricing` answer
(the very message `GET /v1/pricing` is transcoded from) turned into plain
values for templates. Amounts stay the API's exact decimal strings; the
templates format them (money.py), so the page and the API cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from aiport.v1 import catalog_pb2

# The endpoint that serves each modality (the catalog's `modality` values).
ENDPOINTS: Final[dict[str, str]] = {
    "text": "POST /v1/chat/completions",
    "image": "POST /v1/image/generate",
    "img2img": "POST /v1/image/img2img",
    "video": "POST /v1/video/generate",
    "img2video": "POST /v1/video/img2video",
    "multimodal": "POST /v1/video/multimodal",
}
# Display order of the modalities; one the console does not know yet comes last.
MODALITY_ORDER: Final = tuple(ENDPOINTS)


@dataclass(frozen=True)
class TextPrices:
    input_idr: str
    cached_input_idr: str
    cache_write_idr: str
    output_idr: str
    max_output_tokens: int
    supports_reasoning: bool


@dataclass(frozen=True)
class Tier:
    """One resolution's price: per image, or per second of video."""

    resolution: str
    price_idr: str
    # Video with reference assets (multimodal); "" when the tier has no such rate.
    with_reference_idr: str = ""


@dataclass(frozen=True)
class Limits:
    resolutions: tuple[str, ...]
    aspect_ratios: tuple[str, ...]
    ratios: tuple[str, ...]
    min_duration_seconds: int
    max_duration_seconds: int
    max_images: int
    max_videos: int
    max_audios: int


@dataclass(frozen=True)
class ModelEntry:
    id: str
    display_name: str
    modality: str
    text: TextPrices | None
    image_tiers: tuple[Tier, ...]
    video_tiers: tuple[Tier, ...]
    min_billable_seconds_with_reference: int
    limits: Limits | None

    @property
    def endpoint(self) -> str:
        return ENDPOINTS.get(self.modality, "")


@dataclass(frozen=True)
class PriceList:
    currency: str
    models: tuple[ModelEntry, ...]

    def of_modality(self, *modalities: str) -> list[ModelEntry]:
        return [m for m in self.models if m.modality in modalities]

    def by_modality(self) -> list[tuple[str, list[ModelEntry]]]:
        """(modality, its models) in display order, each present modality once."""
        present = {m.modality for m in self.models}
        order = [*MODALITY_ORDER, *sorted(present - set(MODALITY_ORDER))]
        return [(name, self.of_modality(name)) for name in order if name in present]


def from_proto(reply: catalog_pb2.PriceList) -> PriceList:
    return PriceList(currency=reply.currency, models=tuple(_model(price) for price in reply.data))


def _model(price: catalog_pb2.ModelPrice) -> ModelEntry:
    text = None
    if price.HasField("text"):
        t = price.text
        text = TextPrices(
            input_idr=t.input_per_million_tokens_idr,
            cached_input_idr=t.cached_input_per_million_tokens_idr,
            cache_write_idr=t.cache_write_per_million_tokens_idr,
            output_idr=t.output_per_million_tokens_idr,
            max_output_tokens=t.max_output_tokens,
            supports_reasoning=t.supports_reasoning,
        )
    limits = None
    if price.HasField("limits"):
        lim = price.limits
        limits = Limits(
            resolutions=tuple(lim.resolutions),
            aspect_ratios=tuple(lim.aspect_ratios),
            ratios=tuple(lim.ratios),
            min_duration_seconds=lim.min_duration_seconds,
            max_duration_seconds=lim.max_duration_seconds,
            max_images=lim.max_images,
            max_videos=lim.max_videos,
            max_audios=lim.max_audios,
        )
    return ModelEntry(
        id=price.model,
        display_name=price.display_name,
        modality=price.modality,
        text=text,
        image_tiers=tuple(Tier(t.resolution, t.per_image_idr) for t in price.image_tiers),
        video_tiers=tuple(
            Tier(t.resolution, t.per_second_idr, t.per_second_with_reference_idr)
            for t in price.video_tiers
        ),
        min_billable_seconds_with_reference=price.min_billable_seconds_with_reference,
        limits=limits,
    )
