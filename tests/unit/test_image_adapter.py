"""The OpenAI Images adapter: pure request building, a strict fake upstream, the sandbox."""

from __future__ import annotations

import base64
import dataclasses
import email
import email.policy
import struct
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest

from sandbox import png
from services.providers.adapters import openai_images
from services.providers.adapters.openai_chat_translate import UpstreamProtocolError
from services.providers.adapters.openai_images import OpenAIImagesAdapter
from services.providers.adapters.openai_images_translate import (
    ImageRequestError,
    JsonCall,
    MultipartCall,
    SizeLimits,
    build_call,
    image_bytes,
    nearest_xai_ratio,
    output_size,
    sniff_image,
)
from services.providers.errors import UpstreamError
from services.providers.media import ImageAdapter, ImageRequest, Reference
from services.providers.routes import Provider
from tests.unit.fake_upstream import Respond, faked, raising
from tests.unit.test_sandbox_server import KEY, ThreadedSandbox

API_KEY = "sk-test-0123456789abcdefghij"
PROVIDER = Provider(
    name="acme-images",
    protocol="openai-images",
    base_url="http://upstream.test/v1",
    api_key=API_KEY,
    connect_timeout_seconds=1.5,
    read_timeout_seconds=7.0,
    max_connections=4,
    max_tokens_field="max_tokens",
)
XAI = dataclasses.replace(PROVIDER, image_dialect="xai")
GPT_IMAGE_2 = SizeLimits(max_edge=3840, min_pixels=655_360, max_pixels=8_294_400)
PNG = png.render(8, 4, "reference")
JPEG = b"\xff\xd8\xff\xe0" + b"\0" * 32
WEBP = b"RIFF\x20\0\0\0WEBPVP8 " + b"\0" * 16


def request(**overrides: Any) -> ImageRequest:
    return ImageRequest(
        **{"upstream_model": "gpt-image-2", "prompt": "Bromo at sunset", **overrides}
    )


# --- sizes -------------------------------------------------------------------------------

RATIOS = ["3:2", "1:1", "2:3", "5:4", "4:5", "16:9", "9:16", "21:9", "3:4", "4:3", "9:21"]


@pytest.mark.parametrize("ratio", RATIOS)
@pytest.mark.parametrize("tier", ["1k", "2k", "4k"])
@pytest.mark.parametrize("limits", [SizeLimits(), GPT_IMAGE_2], ids=["default", "gpt-image-2"])
def test_sizes_keep_the_ratio_exactly_within_limits(
    ratio: str, tier: str, limits: SizeLimits
) -> None:
    size = output_size(ratio, tier, limits)
    assert size is not None
    width, height = size
    a, b = (int(x) for x in ratio.split(":"))
    assert width * b == height * a
    assert width % 16 == 0 and height % 16 == 0
    assert max(width, height) <= limits.max_edge
    if limits.max_pixels:
        assert limits.min_pixels <= width * height <= limits.max_pixels
    else:
        # No pixel limits: the long side is the largest multiple that fits the tier.
        target = {"1k": 1024, "2k": 2048, "4k": 4096}[tier]
        assert target * 0.85 <= max(width, height) <= target


@pytest.mark.parametrize(
    ("ratio", "tier", "limits", "size"),
    [
        ("1:1", "1k", SizeLimits(), (1024, 1024)),
        ("16:9", "1k", SizeLimits(), (1024, 576)),
        ("16:9", "4k", SizeLimits(), (4096, 2304)),
        ("21:9", "2k", SizeLimits(), (2016, 864)),
        ("3:2", "1k", SizeLimits(), (1008, 672)),
        ("", "2k", SizeLimits(), (2048, 2048)),
        ("16:9", "", SizeLimits(), (1024, 576)),
        # gpt-image-2: at least 655,360 pixels, at most 8,294,400, edges up to 3840.
        ("16:9", "1k", GPT_IMAGE_2, (1280, 720)),
        ("21:9", "1k", GPT_IMAGE_2, (1344, 576)),
        ("16:9", "4k", GPT_IMAGE_2, (3840, 2160)),
        ("1:1", "4k", GPT_IMAGE_2, (2880, 2880)),
    ],
)
def test_known_sizes(ratio: str, tier: str, limits: SizeLimits, size: tuple[int, int]) -> None:
    assert output_size(ratio, tier, limits) == size


def test_no_size_when_both_are_defaults() -> None:
    assert output_size("", "") is None


@pytest.mark.parametrize(
    ("ratio", "tier", "limits"),
    [
        ("wide", "1k", SizeLimits()),
        ("16:0", "1k", SizeLimits()),
        ("1:1", "8k", SizeLimits()),
        ("1:1", "1k", SizeLimits(max_edge=1024, min_pixels=2_000_000)),
        ("16:9", "1k", SizeLimits(max_edge=100)),
    ],
)
def test_impossible_sizes_are_request_errors(ratio: str, tier: str, limits: SizeLimits) -> None:
    with pytest.raises(ImageRequestError):
        output_size(ratio, tier, limits)


@pytest.mark.parametrize(
    ("ratio", "nearest"),
    [("16:9", "16:9"), ("21:9", "20:9"), ("9:21", "9:20"), ("5:4", "4:3"), ("1:1", "1:1")],
)
def test_nearest_xai_ratio(ratio: str, nearest: str) -> None:
    assert nearest_xai_ratio(ratio) == nearest


# --- request building --------------------------------------------------------------------


def test_openai_generation_body() -> None:
    call = build_call(request(aspect_ratio="16:9", resolution="2k"), "openai", SizeLimits())
    assert call == JsonCall(
        "/images/generations",
        {
            "model": "gpt-image-2",
            "prompt": "Bromo at sunset",
            "n": 1,
            "output_format": "png",
            "size": "2048x1152",
        },
    )
    default = build_call(request(), "openai", SizeLimits())
    assert isinstance(default, JsonCall) and "size" not in default.body


def test_openai_edit_is_multipart_with_typed_image_parts() -> None:
    refs = (Reference("image", PNG, "image/png"), Reference("image", JPEG, "image/jpeg"))
    call = build_call(request(references=refs, resolution="1k"), "openai", SizeLimits())
    assert isinstance(call, MultipartCall) and call.path == "/images/edits"
    assert call.fields == {
        "model": "gpt-image-2",
        "prompt": "Bromo at sunset",
        "n": "1",
        "output_format": "png",
        "size": "1024x1024",
    }
    assert call.files == [
        ("image[]", ("image-1.png", PNG, "image/png")),
        ("image[]", ("image-2.jpg", JPEG, "image/jpeg")),
    ]


def test_xai_bodies() -> None:
    gen = build_call(request(aspect_ratio="21:9", resolution="4k"), "xai", SizeLimits())
    assert gen == JsonCall(
        "/images/generations",
        {
            "model": "gpt-image-2",
            "prompt": "Bromo at sunset",
            "n": 1,
            "response_format": "b64_json",
            "aspect_ratio": "20:9",
            "resolution": "2k",
        },
    )
    one = build_call(
        request(references=(Reference("image", PNG, "image/png"),)), "xai", SizeLimits()
    )
    assert isinstance(one, JsonCall) and one.path == "/images/edits"
    url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert one.body["image"] == {"url": url, "type": "image_url"}
    two = build_call(
        request(references=(Reference("image", PNG, "image/png"),) * 2), "xai", SizeLimits()
    )
    assert isinstance(two, JsonCall) and len(two.body["images"]) == 2 and "image" not in two.body


def test_non_image_references_are_request_errors() -> None:
    video = Reference("video", b"\0\0\0\x18ftypisom", "video/mp4")
    with pytest.raises(ImageRequestError):
        build_call(request(references=(video,)), "openai", SizeLimits())


# --- answer parsing ----------------------------------------------------------------------


def b64_answer(data: bytes) -> bytes:
    return orjson.dumps({"created": 1, "data": [{"b64_json": base64.b64encode(data).decode()}]})


def test_image_bytes_and_sniffing() -> None:
    assert image_bytes(b64_answer(PNG)) == PNG
    assert sniff_image(PNG) == "image/png"
    assert sniff_image(JPEG) == "image/jpeg"
    assert sniff_image(WEBP) == "image/webp"
    assert sniff_image(b"GIF89a....") is None


@pytest.mark.parametrize(
    "raw",
    [
        b'{"data": []}',
        b'{"created": 1}',
        b"[]",
        b'{"data": [{"url": "https://x/y.png"}]}',
        b'{"data": [{"b64_json": "not base64!"}]}',
        b'{"data": [{"b64_json": ""}]}',
    ],
)
def test_malformed_answers(raw: bytes) -> None:
    with pytest.raises(UpstreamProtocolError):
        image_bytes(raw)


# --- the adapter against a strict fake upstream ------------------------------------------


class FakeUpstream:
    def __init__(self, respond: Respond) -> None:
        self.respond = respond
        self.requests: list[httpx.Request] = []

    async def handle(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        self.requests.append(request)
        return self.respond(request)

    @property
    def only(self) -> httpx.Request:
        assert len(self.requests) == 1
        return self.requests[0]


@asynccontextmanager
async def connected(
    respond: Respond, provider: Provider = PROVIDER
) -> AsyncIterator[tuple[OpenAIImagesAdapter, FakeUpstream]]:
    upstream = FakeUpstream(respond)
    adapter = OpenAIImagesAdapter(provider)
    own = adapter.client
    adapter.client = faked(own, upstream.handle)
    await own.aclose()
    try:
        yield adapter, upstream
    finally:
        await adapter.close()


def answer(content: bytes, status: int = 200) -> Respond:
    def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=content)

    return respond


def multipart_parts(req: httpx.Request) -> list[tuple[str, str | None, str, bytes]]:
    """(name, filename, content type, bytes) of each part, parsed by the stdlib."""
    head = f"Content-Type: {req.headers['content-type']}\r\n\r\n".encode()
    message = email.message_from_bytes(head + req.content, policy=email.policy.HTTP)
    assert message.is_multipart()
    parts = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        assert isinstance(name, str) and isinstance(payload, bytes)
        parts.append((name, part.get_filename(), part.get_content_type(), payload))
    return parts


def test_the_adapter_is_an_image_adapter() -> None:
    adapter: ImageAdapter = OpenAIImagesAdapter(PROVIDER)  # checked by mypy
    assert isinstance(adapter, OpenAIImagesAdapter)


async def test_generation_request_and_answer() -> None:
    async with connected(answer(b64_answer(PNG))) as (adapter, upstream):
        image = await adapter.generate(
            request(aspect_ratio="9:16", resolution="1k", request_id="job_1")
        )
    assert (image.data, image.content_type) == (PNG, "image/png")
    sent = upstream.only
    assert sent.method == "POST"
    assert str(sent.url) == "http://upstream.test/v1/images/generations"
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["x-request-id"] == "job_1"
    assert orjson.loads(sent.content) == {
        "model": "gpt-image-2",
        "prompt": "Bromo at sunset",
        "n": 1,
        "output_format": "png",
        "size": "576x1024",
    }


async def test_edit_request_is_multipart() -> None:
    refs = (Reference("image", PNG, "image/png"), Reference("image", WEBP, "image/webp"))
    async with connected(answer(b64_answer(JPEG))) as (adapter, upstream):
        image = await adapter.generate(request(references=refs, aspect_ratio="1:1"))
    assert image.content_type == "image/jpeg"  # what the bytes are, whatever was asked
    sent = upstream.only
    assert str(sent.url) == "http://upstream.test/v1/images/edits"
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    assert sent.headers["content-type"].startswith("multipart/form-data; boundary=")
    parts = multipart_parts(sent)
    fields = {name: data.decode() for name, filename, _, data in parts if filename is None}
    assert fields == {
        "model": "gpt-image-2",
        "prompt": "Bromo at sunset",
        "n": "1",
        "output_format": "png",
        "size": "1024x1024",
    }
    files = [(name, filename, kind, data) for name, filename, kind, data in parts if filename]
    assert files == [
        ("image[]", "image-1.png", "image/png", PNG),
        ("image[]", "image-2.webp", "image/webp", WEBP),
    ]


async def test_xai_dialect_request() -> None:
    async with connected(answer(b64_answer(PNG)), XAI) as (adapter, upstream):
        await adapter.generate(
            request(
                aspect_ratio="16:9",
                resolution="2k",
                references=(Reference("image", PNG, "image/png"),),
            )
        )
    sent = upstream.only
    assert str(sent.url) == "http://upstream.test/v1/images/edits"
    body = orjson.loads(sent.content)
    assert body["response_format"] == "b64_json"
    assert (body["aspect_ratio"], body["resolution"]) == ("16:9", "2k")
    assert body["image"]["url"].startswith("data:image/png;base64,")


@pytest.mark.parametrize(
    ("respond", "kind", "message"),
    [
        (answer(b'{"error": {"message": "bad size"}}', 400), "rejected", "bad size"),
        (answer(b'{"error": {"message": "prompt flagged"}}', 422), "rejected", "prompt flagged"),
        (answer(b'{"error": {"message": "slow down"}}', 429), "rate_limited", "HTTP 429"),
        (answer(b"<html>oops</html>", 500), "failed", "HTTP 500"),
        (answer(b'{"error": "x"}', 503), "failed", "HTTP 503"),
        (answer(b"not json"), "failed", "malformed"),
        (answer(b'{"data": [{"url": "https://x/y.png"}]}'), "failed", "URL instead of b64_json"),
        (answer(b64_answer(b"GIF89a not ours")), "failed", "not a PNG, JPEG or WEBP"),
        (raising(httpx.ConnectError), "failed", "connection failed"),
        (raising(httpx.RemoteProtocolError), "failed", "connection failed"),
        (raising(httpx.ReadTimeout), "timeout", "in time"),
        (raising(httpx.ConnectTimeout), "timeout", "in time"),
    ],
)
async def test_errors_map_like_the_chat_adapter(respond: Respond, kind: str, message: str) -> None:
    async with connected(respond) as (adapter, _):
        with pytest.raises(UpstreamError) as err:
            await adapter.generate(request())
    assert err.value.kind == kind
    assert message in err.value.message


async def test_rejections_are_scrubbed() -> None:
    leaky = orjson.dumps({"error": {"message": f"key {API_KEY} and sk-proj-abcdefghijklmnop bad"}})
    async with connected(answer(leaky, 400)) as (adapter, _):
        with pytest.raises(UpstreamError) as err:
            await adapter.generate(request())
    assert err.value.kind == "rejected"
    assert API_KEY not in err.value.message and "sk-proj" not in err.value.message
    assert "[redacted]" in err.value.message


async def test_impossible_requests_are_rejected_without_a_call() -> None:
    async with connected(answer(b64_answer(PNG))) as (adapter, upstream):
        with pytest.raises(UpstreamError) as err:
            await adapter.generate(request(aspect_ratio="7:0"))
    assert err.value.kind == "rejected"
    assert upstream.requests == []


async def test_answers_are_size_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openai_images, "MAX_IMAGE_ANSWER_BYTES", 1024)
    async with connected(answer(b64_answer(PNG + bytes(4096)))) as (adapter, _):
        with pytest.raises(UpstreamError) as err:
            await adapter.generate(request())
    assert err.value.kind == "failed" and "size limit" in err.value.message


# --- the adapter against the real sandbox ------------------------------------------------


@pytest.fixture(scope="module")
def sandbox_url() -> Iterator[str]:
    with ThreadedSandbox() as url:
        yield url


def sandbox_provider(url: str, **overrides: Any) -> Provider:
    settings: dict[str, Any] = {"read_timeout_seconds": 10, **overrides}
    return dataclasses.replace(PROVIDER, base_url=f"{url}/v1", api_key=KEY, **settings)


def ihdr(data: bytes) -> tuple[int, int]:
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.parametrize("dialect", ["openai", "xai"])
async def test_sandbox_text_to_image(sandbox_url: str, dialect: str) -> None:
    adapter = OpenAIImagesAdapter(sandbox_provider(sandbox_url, image_dialect=dialect))
    try:
        image = await adapter.generate(request(aspect_ratio="16:9", resolution="2k"))
    finally:
        await adapter.close()
    assert image.content_type == "image/png"
    width, height = ihdr(image.data)
    assert width * 9 == height * 16


async def test_sandbox_21_9_is_exact(sandbox_url: str) -> None:
    adapter = OpenAIImagesAdapter(sandbox_provider(sandbox_url))
    try:
        image = await adapter.generate(request(aspect_ratio="21:9", resolution="4k"))
    finally:
        await adapter.close()
    width, height = ihdr(image.data)
    assert width * 9 == height * 21


@pytest.mark.parametrize("dialect", ["openai", "xai"])
async def test_sandbox_img2img(sandbox_url: str, dialect: str) -> None:
    prompt = f"make it watercolour ({dialect})"
    adapter = OpenAIImagesAdapter(sandbox_provider(sandbox_url, image_dialect=dialect))
    refs = (Reference("image", PNG, "image/png"), Reference("image", PNG, "image/png"))
    try:
        image = await adapter.generate(request(prompt=prompt, references=refs, aspect_ratio="3:4"))
    finally:
        await adapter.close()
    width, height = ihdr(image.data)
    assert width * 4 == height * 3
    async with httpx.AsyncClient(base_url=sandbox_url) as http:
        log = (await http.get("/_sandbox/requests")).json()
    (entry,) = [e for e in log if e["body"].get("prompt") == prompt]
    assert entry["path"] == "/v1/images/edits"
    assert entry["authorization"] == f"Bearer {KEY}"
    if dialect == "openai":
        assert [(f["field"], f["content_type"]) for f in entry["body"]["files"]] == [
            ("image[]", "image/png")
        ] * 2
    else:
        assert len(entry["body"]["images"]) == 2


@pytest.mark.parametrize(
    ("directive", "kind"),
    [
        ("[sim:fail]", "failed"),
        ("[sim:status=400]", "rejected"),
        ("[sim:status=429]", "rate_limited"),
    ],
)
async def test_sandbox_directives_become_upstream_errors(
    sandbox_url: str, directive: str, kind: str
) -> None:
    adapter = OpenAIImagesAdapter(sandbox_provider(sandbox_url))
    try:
        with pytest.raises(UpstreamError) as err:
            await adapter.generate(request(prompt=f"x {directive}"))
    finally:
        await adapter.close()
    assert err.value.kind == kind


async def test_sandbox_hang_is_a_timeout(sandbox_url: str) -> None:
    adapter = OpenAIImagesAdapter(sandbox_provider(sandbox_url, read_timeout_seconds=0.3))
    try:
        with pytest.raises(UpstreamError) as err:
            await adapter.generate(request(prompt="x [sim:hang]"))
    finally:
        await adapter.close()
    assert err.value.kind == "timeout"


async def test_sandbox_wrong_key_is_a_failure_not_a_rejection(sandbox_url: str) -> None:
    adapter = OpenAIImagesAdapter(dataclasses.replace(sandbox_provider(sandbox_url), api_key="x"))
    try:
        with pytest.raises(UpstreamError) as err:
            await adapter.generate(request())
    finally:
        await adapter.close()
    assert err.value.kind == "failed" and "401" in err.value.message
