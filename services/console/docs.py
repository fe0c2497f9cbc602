"""The API reference: one markdown text (templates/aiport-docs.md, with the
live model list), served raw for coding assistants and rendered to HTML for
/docs, so the two can never say different things.

Rendering uses markdown-it-py (CommonMark) with raw HTML off: anything that
looks like a tag in the text comes out escaped, and link targets are checked
by markdown-it (no `javascript:`), so the HTML is safe to embed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jinja2
from markdown_it import MarkdownIt
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict

from services.console.price_list import ModelEntry, PriceList, Tier

DOC_TEMPLATE = "aiport-docs.md"
_SLUG_DROP = re.compile(r"[^a-z0-9 -]")


@dataclass(frozen=True)
class Heading:
    level: int
    anchor: str
    text: str


def model_line(model: ModelEntry) -> str:
    """One markdown bullet: a model's prices (API decimals, IDR) and limits."""
    parts: list[str] = []
    if model.text is not None:
        t = model.text
        parts.append(
            f"per 1M tokens: input {t.input_idr}, cached input {t.cached_input_idr}, "
            f"cache write {t.cache_write_idr}, output {t.output_idr} IDR"
        )
        parts.append(f"max output {t.max_output_tokens} tokens")
        parts.append("reasoning model" if t.supports_reasoning else "no reasoning_effort")
    if model.image_tiers:
        parts.append(f"per image: {_tiers(model.image_tiers)} IDR")
    if model.video_tiers:
        parts.append(f"per second: {_tiers(model.video_tiers)} IDR")
        with_reference = [t for t in model.video_tiers if t.with_reference_idr]
        if with_reference:
            rates = ", ".join(f"{t.resolution} {t.with_reference_idr}" for t in with_reference)
            parts.append(f"with references: {rates} IDR per second")
        if model.min_billable_seconds_with_reference:
            parts.append(
                f"at least {model.min_billable_seconds_with_reference} s billed with references"
            )
    limits = model.limits
    if limits is not None:
        if limits.aspect_ratios:
            parts.append("aspect_ratio " + "/".join(limits.aspect_ratios))
        if limits.ratios:
            parts.append("ratio " + "/".join(limits.ratios))
        if limits.max_duration_seconds:
            parts.append(f"duration {limits.min_duration_seconds}-{limits.max_duration_seconds} s")
        for name, count in (
            ("images", limits.max_images),
            ("videos", limits.max_videos),
            ("audios", limits.max_audios),
        ):
            if count:
                parts.append(f"up to {count} {name}")
    return f"- `{model.id}` ({model.display_name}): " + "; ".join(parts)


def table_cell(text: str) -> str:
    """Text safe inside a markdown table cell: a `|` would end the cell."""
    return " ".join(text.split()).replace("|", "\\|")


def _tiers(tiers: Sequence[Tier]) -> str:
    # "default" is the catalog's name for one flat price (`resolution` is ignored).
    if len(tiers) == 1 and tiers[0].resolution == "default":
        return tiers[0].price_idr
    return ", ".join(f"{tier.resolution} {tier.price_idr}" for tier in tiers)


def render_markdown(env: jinja2.Environment, prices: PriceList, base_url: str) -> str:
    template = env.get_template(DOC_TEMPLATE)
    text = template.render(prices=prices, base_url=base_url, model_line=model_line)
    return text.strip() + "\n"


def slug(text: str, taken: set[str]) -> str:
    """A stable, unique anchor for a heading: lower case, dashes, ASCII."""
    base = _SLUG_DROP.sub("", text.lower()).strip().replace(" ", "-") or "section"
    base = re.sub("-{2,}", "-", base)
    anchor, n = base, 2
    while anchor in taken:
        anchor, n = f"{base}-{n}", n + 1
    taken.add(anchor)
    return anchor


def _markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False}).enable("table")

    def heading_open(
        renderer: RendererHTML,
        tokens: Sequence[Token],
        idx: int,
        options: OptionsDict,
        env: EnvType,
    ) -> str:
        token = tokens[idx]
        text = tokens[idx + 1].content if idx + 1 < len(tokens) else ""
        anchor = slug(text, env.setdefault("anchors", set()))
        token.attrSet("id", anchor)
        shown = text.replace("`", "")
        env.setdefault("headings", []).append(Heading(int(token.tag[1]), anchor, shown))
        return renderer.renderToken(tokens, idx, options, env)

    md.add_render_rule("heading_open", heading_open)
    return md


_MD = _markdown()


def to_html(markdown: str) -> tuple[str, list[Heading]]:
    """(HTML, the headings with their anchors, for a table of contents)."""
    env: dict[str, Any] = {}
    html = _MD.render(markdown, env)
    return html, list(env.get("headings", []))
