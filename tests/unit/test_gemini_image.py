"""The Gemini image adapter (Nano Banana): request building, answer parsing, a strict fake."""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest

from sandbox import gemini as sandbox_gemini
from sandbox import png
from services.providers.adapters.gemini_image import (
    GeminiImageAdapter,
    gemini_aspect_ratio,
    image_from_response,
    image_request_body,
)
from services.providers.adapters.openai_images_translate import ImageRequestError
from services.providers.errors import UpstreamError, UpstreamProtocolError
from services.providers.media import ImageAdapter, ImageRequest, Reference
from services.providers.routes import Provider

API_KEY = "AIzaSyImages0123456789abcdefghijklmn"
PROVIDER = Provider(
    name="google-images",
    protocol="gemini-image",
    base_url="https://generativelanguage.test/v1beta",
    api_key=API_KEY,
    connect_timeout_seconds=1.5,
    read_timeout_seconds=7.0,
    max_connections=4,
    max_tokens_field="max_tokens",
)
PNG = png.render(32, 18, "result")
REFERENCE_PNG = png.render(8, 4, "reference")
JPEG = b"\xff\xd8\xff\xe0" + b"\0" * 32
WEBP = b"RIFF\x20\0\0\0WEBPVP8 " + b"\0" * 16


def request(**overrides: Any) -> ImageRequest:
    return ImageRequest(
        **{
            "upstream_model": "gemini-3.1-flash-image-preview",
            "prompt": "Bromo at sunset",
            **overrides,
        }
    )


def inline(data: bytes, mime: str = "image/png", **extra: Any) -> dict[str, Any]:
    return {"inlineData": {"mimeType": mime, "data": base64.b64encode(data).decode()}, **extra}


def image_answer(parts: list[dict[str, Any]], finish: str = "STOP") -> dict[str, Any]:
    return {
        "candidates": [
            {"content": {"role": "model", "parts": parts}, "finishReason": finish, "index": 0}
        ],
        "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 1290},
    }


# --- the request ----------------------------------------------------------------------------


def test_text_to_image_body() -> None:
    assert image_request_body(request(aspect_ratio="16:9", resolution="2k")) == {
        "contents": [{"role": "user", "parts": [{"text": "Bromo at sunset"}]}],
        "generationConfig": {
            "responseModalities": ["TEXT", "IMAGE"],
            "imageConfig": {"aspectRatio": "16:9", "imageSize": "2K"},
        },
    }
    # Model defaults: no imageConfig at all.
    assert image_request_body(request())["generationConfig"] == {
        "responseModalities": ["TEXT", "IMAGE"]
    }
    assert image_request_body(request(resolution="4k"))["generationConfig"]["imageConfig"] == {
        "imageSize": "4K"
    }


def test_references_go_as_inline_data_after_the_prompt() -> None:
    refs = (Reference("image", REFERENCE_PNG, "image/png"), Reference("image", JPEG, "image/jpeg"))
    parts = image_request_body(request(references=refs))["contents"][0]["parts"]
    assert parts == [{"text": "Bromo at sunset"}, inline(REFERENCE_PNG), inline(JPEG, "image/jpeg")]


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        ("1:1", "1:1"),
        ("16:9", "16:9"),
        ("9:16", "9:16"),
        ("21:9", "21:9"),
        ("4:5", "4:5"),
        ("32:18", "16:9"),
        ("9:21", "9:16"),
        ("2:1", "16:9"),
        ("3:1", "21:9"),
    ],
)
def test_aspect_ratios(ours: str, theirs: str) -> None:
    assert gemini_aspect_ratio(ours) == theirs


@pytest.mark.parametrize(
    "bad",
    [
        {"references": (Reference("video", b"\0\0\0\x18ftypmp42", "video/mp4"),)},
        {"resolution": "8k"},
        {"aspect_ratio": "wide"},
        {"prompt": "  "},
    ],
)
def test_requests_gemini_cannot_serve(bad: dict[str, Any]) -> None:
    with pytest.raises(ImageRequestError):
        image_request_body(request(**bad))


# --- the answer -----------------------------------------------------------------------------


def test_image_from_inline_data_skipping_text_and_thoughts() -> None:
    draft = png.render(4, 4, "draft")
    body = image_answer(
        [
            {"text": "Here you go", "thought": True},
            inline(draft, thought=True),
            {"text": "Here is your image."},
            inline(PNG, thoughtSignature="c2ln"),
        ]
    )
    assert image_from_response(body) == PNG


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        ({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}}, "rejected"),
        (image_answer([], "IMAGE_SAFETY"), "rejected"),
        (image_answer([{"text": "I cannot draw that."}], "SAFETY"), "rejected"),
        (image_answer([{"text": "Here is a poem instead."}]), "failed"),
        (image_answer([], "NO_IMAGE"), "failed"),
    ],
)
def test_answers_without_an_image(body: dict[str, Any], kind: str) -> None:
    with pytest.raises(UpstreamError) as caught:
        image_from_response(body)
    assert caught.value.kind == kind


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"candidates": []},
        {"candidates": "x"},
        {"candidates": ["x"]},
        image_answer([{"inlineData": {"mimeType": "image/png", "data": "!!!"}}]),
        image_answer([{"inlineData": {"mimeType": "image/png", "data": ""}}]),
    ],
)
def test_malformed_answers(body: Any) -> None:
    with pytest.raises((UpstreamProtocolError, UpstreamError)):
        image_from_response(body)


# --- over HTTP, against a strict fake -------------------------------------------------------

Respond = Callable[[httpx.Request], httpx.Response]


class StrictGemini:
    def __init__(self, respond: Respond) -> None:
        self.respond = respond
        self.requests: list[httpx.Request] = []

    async def handle(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        self.requests.append(request)
        problems = []
        if request.url.path != "/v1beta/models/gemini-3.1-flash-image-preview:generateContent":
            problems.append(f"path {request.url.path}")
        if request.headers.get("x-goog-api-key") != API_KEY or "authorization" in request.headers:
            problems.append("credentials")
        if request.headers.get("content-type") != "application/json":
            problems.append("content type")
        body = orjson.loads(request.content)
        try:
            parsed = sandbox_gemini.parse_request("m", body, False)
        except Exception as exc:
            problems.append(str(exc))
        else:
            if not parsed.wants_image:
                problems.append("no IMAGE modality")
        if problems:
            error = {"code": 400, "message": "; ".join(problems), "status": "INVALID_ARGUMENT"}
            return httpx.Response(400, content=orjson.dumps({"error": error}))
        return self.respond(request)


@asynccontextmanager
async def connected(respond: Respond) -> AsyncIterator[tuple[GeminiImageAdapter, StrictGemini]]:
    upstream = StrictGemini(respond)
    adapter = GeminiImageAdapter(PROVIDER)
    own = adapter.client
    adapter.client = httpx.AsyncClient(
        transport=httpx.MockTransport(upstream.handle),
        base_url=own.base_url,
        headers=own.headers,
        timeout=own.timeout,
    )
    await own.aclose()
    try:
        yield adapter, upstream
    finally:
        await adapter.close()


def answering(body: Any, status: int = 200) -> Respond:
    return lambda request: httpx.Response(status, content=orjson.dumps(body))


async def test_generate_returns_png_bytes_sniffed() -> None:
    adapter_type: type[ImageAdapter] = GeminiImageAdapter
    assert adapter_type is GeminiImageAdapter
    refs = (Reference("image", REFERENCE_PNG, "image/png"), Reference("image", WEBP, "image/webp"))
    # The answer claims JPEG; the bytes are PNG, and the bytes win.
    respond = answering(image_answer([inline(PNG, "image/jpeg")]))
    async with connected(respond) as (adapter, upstream):
        image = await adapter.generate(
            request(aspect_ratio="9:21", resolution="1k", references=refs, request_id="job-1")
        )
    assert image.data == PNG and image.content_type == "image/png"
    assert struct.unpack(">II", image.data[16:24]) == (32, 18)
    sent = upstream.requests[0]
    assert sent.headers["x-request-id"] == "job-1"
    body = orjson.loads(sent.content)
    assert body["generationConfig"]["imageConfig"] == {"aspectRatio": "9:16", "imageSize": "1K"}
    assert body["contents"][0]["parts"][1:] == [inline(REFERENCE_PNG), inline(WEBP, "image/webp")]


async def test_generate_jpeg_and_not_an_image() -> None:
    async with connected(answering(image_answer([inline(JPEG, "image/jpeg")]))) as (adapter, _):
        assert (await adapter.generate(request())).content_type == "image/jpeg"
    async with connected(answering(image_answer([inline(b"GIF89a...", "image/gif")]))) as (
        adapter,
        _,
    ):
        with pytest.raises(UpstreamError) as caught:
            await adapter.generate(request())
    assert caught.value.kind == "failed"


@pytest.mark.parametrize(
    ("status", "error_status", "kind"),
    [
        (400, "INVALID_ARGUMENT", "rejected"),
        (429, "RESOURCE_EXHAUSTED", "rate_limited"),
        (500, "INTERNAL", "failed"),
        (503, "UNAVAILABLE", "failed"),
    ],
)
async def test_generate_errors(status: int, error_status: str, kind: str) -> None:
    body = {"error": {"code": status, "message": "nope", "status": error_status}}
    async with connected(answering(body, status)) as (adapter, _):
        with pytest.raises(UpstreamError) as caught:
            await adapter.generate(request())
    assert caught.value.kind == kind


async def test_unservable_request_is_rejected_before_any_call() -> None:
    async with connected(answering(image_answer([inline(PNG)]))) as (adapter, upstream):
        with pytest.raises(UpstreamError) as caught:
            await adapter.generate(request(resolution="8k"))
    assert caught.value.kind == "rejected"
    assert upstream.requests == []


async def test_generate_timeout() -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    async with connected(respond) as (adapter, _):
        with pytest.raises(UpstreamError) as caught:
            await adapter.generate(request())
    assert caught.value.kind == "timeout"
