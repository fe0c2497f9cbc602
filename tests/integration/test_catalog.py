"""GET /v1/models, /v1/models/{model}, /v1/pricing and /v1/balance."""

from __future__ import annotations

import httpx
import openai
import pytest

from services.common.catalog import load_catalog
from services.common.settings import PROJECT_ROOT

CATALOG = load_catalog(PROJECT_ROOT / "config" / "catalog.yaml")
TEXT_IDS = [m.id for m in CATALOG.enabled_text_models()]


def test_models_list_is_the_16_text_models(client: openai.OpenAI, http: httpx.Client) -> None:
    models = client.models.list().data
    assert [m.id for m in models] == TEXT_IDS
    assert len(models) == 16
    raw = http.get("/v1/models").json()
    assert raw["object"] == "list"
    assert raw["data"][0] == {
        "id": "deepseek-v4-flash",
        "object": "model",
        "created": 1767225600,
        "owned_by": "aiport",
    }


@pytest.mark.parametrize("model_id", ["gpt-5.4", "kimi-k2.6-fast", "gemini-3.1-flash-lite"])
def test_get_model_by_id_with_dots(client: openai.OpenAI, model_id: str) -> None:
    assert client.models.retrieve(model_id).id == model_id


@pytest.mark.parametrize("model_id", ["nope", "gpt-image-2", "seedance-2.0-fast"])
def test_get_unknown_or_non_text_model_is_404(http: httpx.Client, model_id: str) -> None:
    response = http.get(f"/v1/models/{model_id}")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


def test_models_need_a_key(base_url: str) -> None:
    assert httpx.get(f"{base_url}/v1/models").status_code == 401


def test_pricing_is_public_and_complete(base_url: str) -> None:
    response = httpx.get(f"{base_url}/v1/pricing")
    assert response.status_code == 200
    body = response.json()
    assert body["currency"] == "IDR"
    by_id = {m["model"]: m for m in body["data"]}
    assert len(by_id) == 29
    flash = by_id["deepseek-v4-flash"]
    assert flash["modality"] == "text"
    assert flash["text"] == {
        "input_per_million_tokens_idr": "4500",
        "cached_input_per_million_tokens_idr": "1200",
        "cache_write_per_million_tokens_idr": "4500",
        "output_per_million_tokens_idr": "18000",
        "max_output_tokens": 8192,
        "supports_reasoning": False,
    }
    assert by_id["gpt-5.4"]["text"]["supports_reasoning"] is True
    # Anthropic bills prompt-cache writes at 1.25x input: the default for Claude.
    sonnet = by_id["claude-sonnet-4-6"]["text"]
    assert sonnet["cached_input_per_million_tokens_idr"] == "4950"
    assert sonnet["cache_write_per_million_tokens_idr"] == "61875"
    tiers = {t["resolution"]: t["per_image_idr"] for t in by_id["gpt-image-2"]["image_tiers"]}
    assert tiers == {"1k": "700", "2k": "1400", "4k": "2800"}
    video = {t["resolution"]: t for t in by_id["seedance-2.0-fast-multimodal"]["video_tiers"]}
    assert video["720p"]["per_second_idr"] == "2300"
    assert video["720p"]["per_second_with_reference_idr"] == "2800"
    assert by_id["seedance-2.0-fast-multimodal"]["min_billable_seconds_with_reference"] == 5


def test_pricing_shows_each_media_models_allowed_values(base_url: str) -> None:
    by_id = {m["model"]: m for m in httpx.get(f"{base_url}/v1/pricing").json()["data"]}
    fast = by_id["seedance-2.0-fast"]["limits"]
    assert fast["resolutions"] == ["480p", "720p"]
    assert (fast["min_duration_seconds"], fast["max_duration_seconds"]) == (4, 15)
    assert "16:9" in fast["ratios"]
    multimodal = by_id["seedance-2.0-fast-multimodal"]["limits"]
    assert (multimodal["max_images"], multimodal["max_videos"], multimodal["max_audios"]) == (
        9,
        3,
        3,
    )
    clips = multimodal["reference_video"], multimodal["reference_audio"]
    assert [(c["min_seconds"], c["max_seconds"], c["max_total_seconds"]) for c in clips] == [
        (2, 15, 15),
        (2, 15, 15),
    ]
    assert clips[1]["needs_visual"] is True and "audio/wav" in clips[1]["formats"]
    wan = by_id["wan-2.7-img2img"]["limits"]
    assert wan["max_images"] == 9
    assert (wan["reference_image"]["min_side"], wan["reference_image"]["max_side"]) == (240, 8000)
    assert "image/png" in wan["reference_image"]["formats"]
    assert "limits" not in by_id["deepseek-v4-flash"]


def test_balance_shape(http: httpx.Client) -> None:
    body = http.get("/v1/balance").json()
    assert body == {
        "object": "balance",
        "currency": "IDR",
        "balance_idr": "100000",
        "held_idr": "0",
        "available_idr": "100000",
        "debt_idr": "0",
        "low_balance_alert_idr": None,
    }
