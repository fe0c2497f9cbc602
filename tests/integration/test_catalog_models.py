"""Every model in the catalog works end to end through its configured route."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionToolParam

from services.common.catalog import ImageModel, VideoModel, load_catalog
from services.common.settings import PROJECT_ROOT
from tests.integration.test_jobs import poll, submit

CATALOG = load_catalog(PROJECT_ROOT / "config" / "catalog.yaml")
TEXT = [m.id for m in CATALOG.enabled_text_models()]
IMAGE = [m for m in CATALOG.enabled_models() if isinstance(m, ImageModel)]
VIDEO = [m for m in CATALOG.enabled_models() if isinstance(m, VideoModel)]
TOOL: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "lookup_order",
        "description": "Find an order",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "string"}, "items": {"type": "integer"}},
            "required": ["order_id"],
        },
    },
}


@pytest.mark.parametrize("model", TEXT)
def test_text_model_plain(client: openai.OpenAI, model: str) -> None:
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Say hello [sim:tokens=5]"}]
    )
    assert reply.model == model
    assert reply.choices[0].finish_reason == "stop"
    assert len((reply.choices[0].message.content or "").split()) == 5
    assert reply.usage is not None and reply.usage.completion_tokens >= 5


@pytest.mark.parametrize("model", TEXT)
def test_text_model_streamed(client: openai.OpenAI, model: str) -> None:
    chunks = list(
        client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "Say hello [sim:tokens=4]"}],
            stream=True,
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) == 4
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


@pytest.mark.parametrize("model", TEXT)
def test_text_model_tool_round_trip(client: openai.OpenAI, model: str) -> None:
    first = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Where is order 42?"}],
        tools=[TOOL],
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls
    call = choice.message.tool_calls[0]
    assert call.function.name == "lookup_order"  # type: ignore[union-attr]
    assert isinstance(json.loads(call.function.arguments)["order_id"], str)  # type: ignore[union-attr]
    # Echo the call back exactly as received, as the OpenAI SDK does.
    second = client.chat.completions.create(
        model=model,
        messages=[
            {"role": "user", "content": "Where is order 42?"},
            choice.message.model_dump(exclude_none=True),  # type: ignore[list-item]
            {"role": "tool", "tool_call_id": call.id, "content": '{"status":"shipped"}'},
        ],
        tools=[TOOL],
    )
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content


@pytest.mark.parametrize("model", IMAGE, ids=lambda m: m.id)
def test_image_model_completes_a_job(http: httpx.Client, model: ImageModel) -> None:
    body: dict[str, object] = {"prompt": f"a lighthouse for {model.id}", "model": model.id}
    if model.modality == "img2img":
        source = poll(http, submit(http, "/v1/image/generate", {"prompt": "source"})["job_id"])
        body["images"] = [source["result_url"].replace("http://", "https://")]
        # Our own result URL is resolved to the stored file whatever its scheme.
    path = "/v1/image/img2img" if model.modality == "img2img" else "/v1/image/generate"
    job = poll(http, submit(http, path, body)["job_id"])
    assert job["status"] == "done", job
    image = httpx.get(job["result_url"])
    assert image.content[:4] == b"\x89PNG" or image.content[:3] == b"\xff\xd8\xff"


@pytest.mark.parametrize("model", VIDEO, ids=lambda m: m.id)
def test_video_model_completes_a_job(http: httpx.Client, model: VideoModel) -> None:
    body: dict[str, object] = {"prompt": f"waves for {model.id}", "model": model.id, "duration": 4}
    path = {"video": "/v1/video/generate", "img2video": "/v1/video/img2video"}.get(
        model.modality, "/v1/video/multimodal"
    )
    if model.modality == "img2video":
        frame = poll(http, submit(http, "/v1/image/generate", {"prompt": "frame"})["job_id"])
        body["first_frame_url"] = frame["result_url"].replace("http://", "https://")
    job = poll(http, submit(http, path, body)["job_id"])
    assert job["status"] == "done", job
    assert httpx.get(job["result_url"]).content[4:8] == b"ftyp"
