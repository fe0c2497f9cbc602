"""The API reference: one markdown text with the live model list, and the
HTML made from it (raw HTML escaped, anchors for the contents)."""

from __future__ import annotations

from aiport.v1 import catalog_pb2

from services.console import docs
from services.console.price_list import ENDPOINTS, from_proto
from services.console.server import templates
from tests.unit.test_console_server import catalog_prices


def test_the_markdown_lists_every_model_with_its_endpoint() -> None:
    prices = catalog_prices()
    text = docs.render_markdown(templates(), prices, "https://aiport.example")
    assert len(prices.models) > 20
    for model in prices.models:
        assert f"| `{model.id}` | {model.display_name} | {model.modality} | {model.endpoint} |" in (
            text
        ), model.id
        assert f"- `{model.id}` (" in text, model.id
    assert f"{len(prices.models)} models are live right now" in text
    assert "https://aiport.example/v1" in text
    assert "{{" not in text and "{%" not in text


def test_the_markdown_names_every_public_endpoint() -> None:
    text = docs.render_markdown(templates(), catalog_prices(), "http://x")
    for path in (
        "POST /v1/chat/completions",
        "POST /v1/text/completions",
        "POST /v1/messages",
        "POST /v1/messages/count_tokens",
        "POST /v1/responses",
        "GET /v1/models",
        "GET /v1/models/{model}",
        "GET /v1/balance",
        "GET /v1/pricing",
        "POST /v1/image/generate",
        "POST /v1/image/img2img",
        "POST /v1/image/upload",
        "POST /v1/video/generate",
        "POST /v1/video/img2video",
        "POST /v1/video/multimodal",
        "GET /v1/jobs/{job_id}",
    ):
        assert path in text, path
    assert all(endpoint in text for endpoint in ENDPOINTS.values())


def test_a_model_line_carries_its_prices_and_limits() -> None:
    prices = catalog_prices()
    text_model = next(m for m in prices.models if m.id == "deepseek-v4-flash")
    line = docs.model_line(text_model)
    assert "input 4500" in line and "output 18000 IDR" in line
    multimodal = next(m for m in prices.models if m.modality == "multimodal")
    line = docs.model_line(multimodal)
    assert "per second:" in line and "with references:" in line and "up to 9 images" in line
    flat = next(m for m in prices.models if m.id == "grok-image")
    assert "per image: 1150 IDR" in docs.model_line(flat)


def test_html_from_the_markdown_escapes_raw_html_and_bad_links() -> None:
    html, _ = docs.to_html(
        "# T\n\n<script>alert(1)</script>\n\n[x](javascript:alert(1)) <b onclick=y>b</b>\n"
    )
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert 'href="javascript' not in html
    assert "<b onclick" not in html


def test_headings_get_unique_anchors() -> None:
    html, headings = docs.to_html("# Jobs\n\n## Errors\n\n### `text`\n\n## Errors\n")
    assert [(h.level, h.anchor, h.text) for h in headings] == [
        (1, "jobs", "Jobs"),
        (2, "errors", "Errors"),
        (3, "text", "text"),
        (2, "errors-2", "Errors"),
    ]
    assert '<h2 id="errors-2">' in html


def test_a_model_name_with_a_pipe_keeps_the_table_intact() -> None:
    odd = catalog_pb2.ModelPrice(model="odd", display_name="A | B\nC", modality="image")
    odd.image_tiers.add(resolution="default", per_image_idr="1")
    prices = from_proto(catalog_pb2.PriceList(currency="IDR", data=[odd]))
    text = docs.render_markdown(templates(), prices, "http://x")
    assert "| `odd` | A \\| B C | image | POST /v1/image/generate |" in text
