"""The DashScope image adapter: pure bodies and answers, and a strict fake DashScope."""

from __future__ import annotations

import base64
import dataclasses
import math
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from fractions import Fraction
from typing import Any

import httpx
import orjson
import pytest

from sandbox import png
from services.providers.adapters import dashscope_image
from services.providers.adapters.dashscope_image import DashScopeImageAdapter
from services.providers.adapters.dashscope_image_translate import (
    ASYNC_PATH,
    SYNC_PATH,
    WAN,
    WAN_PRO,
    Z_IMAGE,
    ImageTask,
    ModelSpec,
    UnsupportedModel,
    build_call,
    error_message,
    image_url_of,
    limits_for,
    model_spec,
    poll_limit,
    size_parameter,
    task_id_of,
    task_state,
)
from services.providers.adapters.openai_images_translate import ImageRequestError
from services.providers.errors import (
    CONTENT_POLICY,
    UpstreamError,
    UpstreamProtocolError,
    job_error,
)
from services.providers.media import ImageAdapter, ImageRequest, Reference
from services.providers.routes import Provider

API_KEY = "sk-dash-0123456789abcdefghij"
BASE = "https://dashscope-intl.aliyuncs.com/api/v1"
PROVIDER = Provider(
    name="alibaba-dashscope",
    protocol="dashscope-image",
    base_url=BASE,
    api_key=API_KEY,
    connect_timeout_seconds=1.5,
    read_timeout_seconds=7.0,
    max_connections=4,
    max_tokens_field="max_tokens",
    poll_interval_seconds=0.001,
)
# What the gateway offers (services/gateway/generate_request.py ASPECT_RATIOS).
RATIOS = ("3:2", "1:1", "2:3", "5:4", "4:5", "16:9", "9:16", "21:9", "3:4", "4:3", "9:21")
TIERS = ("1k", "2k", "4k")
PNG = png.render(300, 200, "reference")
JPEG = b"\xff\xd8\xff\xe0" + b"\0" * 16
RESULT = png.render(64, 36, "result")
RESULT_URL = (
    "https://dashscope-result-intl.oss-ap-southeast-1.aliyuncs.com/1/r.png?Expires=9&Signature=s"
)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def image(**overrides: Any) -> ImageRequest:
    fields: dict[str, Any] = {"upstream_model": "wan2.7-image", "prompt": "a lighthouse at dusk"}
    return ImageRequest(**(fields | overrides))


# --- request building --------------------------------------------------------------------


def test_wan_text_to_image_body() -> None:
    call = build_call(image(aspect_ratio="16:9"))
    assert call.path == ASYNC_PATH == "/services/aigc/image-generation/generation"
    assert call.asynchronous is True
    assert call.body == {
        "model": "wan2.7-image",
        "input": {"messages": [{"role": "user", "content": [{"text": "a lighthouse at dusk"}]}]},
        "parameters": {"size": "2048*1152", "n": 1, "watermark": False},
    }


def test_wan_edit_body_carries_references_as_data_urls_in_order() -> None:
    refs = (Reference("image", PNG, "image/png"), Reference("image", JPEG, "image/jpeg"))
    call = build_call(image(references=refs, prompt="make it night"))
    assert call.asynchronous and call.path == ASYNC_PATH
    assert call.body["input"]["messages"][0]["content"] == [
        {"text": "make it night"},
        {"image": f"data:image/png;base64,{b64(PNG)}"},
        {"image": f"data:image/jpeg;base64,{b64(JPEG)}"},
    ]
    # No ratio, no tier: the model's default (an edit keeps its input's ratio).
    assert call.body["parameters"] == {"n": 1, "watermark": False}


def test_z_image_is_one_synchronous_text_only_call() -> None:
    call = build_call(image(upstream_model="z-image-turbo", resolution="2k"))
    assert call.path == SYNC_PATH == "/services/aigc/multimodal-generation/generation"
    assert call.asynchronous is False
    assert call.body == {
        "model": "z-image-turbo",
        "input": {"messages": [{"role": "user", "content": [{"text": "a lighthouse at dusk"}]}]},
        # No n (always one image), no watermark (not a Z-Image parameter).
        "parameters": {"size": "2048*2048", "prompt_extend": False},
    }
    assert build_call(image(upstream_model="z-image-turbo")).body["parameters"] == {
        "prompt_extend": False
    }


def test_z_image_refuses_references() -> None:
    refs = (Reference("image", PNG, "image/png"),)
    with pytest.raises(ImageRequestError, match="takes no reference images"):
        build_call(image(upstream_model="z-image-turbo", references=refs))


@pytest.mark.parametrize(
    ("refs", "why"),
    [
        ((Reference("image", b"ID3", "audio/mpeg"),), "not an image"),
        (tuple(Reference("image", PNG, "image/png") for _ in range(10)), "at most 9"),
    ],
)
def test_wan_reference_limits(refs: tuple[Reference, ...], why: str) -> None:
    with pytest.raises(ImageRequestError, match=why):
        build_call(image(references=refs))


def test_models_by_name_and_family() -> None:
    assert model_spec("wan2.7-image") is WAN
    assert model_spec("wan2.7-image-pro") is WAN_PRO
    assert model_spec("wan2.7-image-pro-2026-04-01") is WAN_PRO
    assert model_spec("z-image-turbo") is Z_IMAGE
    for unknown in ("wan-2.7-text2img", "qwen-image", ""):
        with pytest.raises(UnsupportedModel):
            model_spec(unknown)


@pytest.mark.parametrize(
    ("model", "resolution", "edit", "size"),
    [
        ("wan2.7-image", "1k", False, "1K"),
        ("wan2.7-image", "2k", False, "2K"),
        ("wan2.7-image", "4k", False, "2K"),  # 4K is wan2.7-image-pro text-to-image only
        ("wan2.7-image-pro", "4k", False, "4K"),
        ("wan2.7-image-pro", "4k", True, "2K"),
        ("wan2.7-image", "1k", True, "1K"),
        ("z-image-turbo", "1k", False, "1024*1024"),  # Z-Image takes no names: a square
        ("z-image-turbo", "4k", False, "2048*2048"),
    ],
)
def test_a_tier_without_a_ratio(model: str, resolution: str, edit: bool, size: str) -> None:
    refs = (Reference("image", PNG, "image/png"),) if edit else ()
    call = build_call(image(upstream_model=model, resolution=resolution, references=refs))
    assert call.body["parameters"]["size"] == size


def _size(text: str) -> tuple[int, int]:
    w, h = text.split("*")
    return int(w), int(h)


@pytest.mark.parametrize("spec", [WAN, WAN_PRO, Z_IMAGE], ids=["wan", "wan-pro", "z-image"])
@pytest.mark.parametrize("edit", [False, True], ids=["t2i", "edit"])
@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("ratio", RATIOS)
def test_every_ratio_and_tier_maps_into_the_models_bounds(
    spec: ModelSpec, edit: bool, tier: str, ratio: str
) -> None:
    limits = limits_for(spec, edit)
    size = size_parameter(ratio, tier, spec, edit, limits)
    assert size is not None and re.fullmatch(r"[0-9]+\*[0-9]+", size)
    w, h = _size(size)
    exact = Fraction(*(int(x) for x in ratio.split(":")))
    a, b = exact.numerator, exact.denominator
    assert Fraction(w, h) == exact  # the ratio is exact
    assert w % 16 == 0 and h % 16 == 0
    assert limits.min_pixels <= w * h <= limits.max_pixels
    assert max(w, h) <= limits.max_edge
    # The size is k steps of the smallest exact-ratio size (sides multiples of 16) ...
    step = math.lcm(16 // math.gcd(16, a), 16 // math.gcd(16, b))
    unit_w, unit_h = a * step, b * step
    k = w // unit_w
    assert (w, h) == (unit_w * k, unit_h * k)
    long_side = {"1k": 1024, "2k": 2048, "4k": 4096}[tier]
    # ... past the tier's long side only when one step less is under the model's minimum ...
    if max(w, h) > long_side:
        assert unit_w * unit_h * (k - 1) ** 2 < limits.min_pixels
    # ... and short of it only when one step more breaks a model bound.
    bigger = unit_w * (k + 1), unit_h * (k + 1)
    if max(bigger) <= long_side:
        assert bigger[0] * bigger[1] > limits.max_pixels or max(bigger) > limits.max_edge


@pytest.mark.parametrize(
    ("spec", "edit", "ratio", "tier", "size"),
    [
        (WAN, False, "16:9", "1k", "1024*576"),  # 589,824 pixels: exactly 768*768
        (WAN, False, "16:9", "2k", "2048*1152"),
        (WAN, False, "16:9", "4k", "2560*1440"),  # clamped to <= 2048*2048 pixels
        (WAN, False, "1:1", "4k", "2048*2048"),
        (WAN, False, "21:9", "1k", "1232*528"),  # 1008*432 is under 768*768: moved up
        (WAN_PRO, False, "1:1", "4k", "4096*4096"),
        (WAN_PRO, True, "1:1", "4k", "2048*2048"),
        (WAN_PRO, False, "9:16", "4k", "2304*4096"),
        (Z_IMAGE, False, "21:9", "1k", "1008*432"),  # 435,456 >= 512*512
        (Z_IMAGE, False, "16:9", "4k", "2048*1152"),  # 2048 a side at most
        (Z_IMAGE, False, "3:4", "2k", "1536*2048"),
    ],
)
def test_known_sizes(spec: ModelSpec, edit: bool, ratio: str, tier: str, size: str) -> None:
    assert size_parameter(ratio, tier, spec, edit, limits_for(spec, edit)) == size


def test_a_ratio_without_a_tier_uses_the_models_default_tier() -> None:
    assert size_parameter("4:3", "", WAN, False, limits_for(WAN, False)) == "2048*1536"
    assert size_parameter("4:3", "", Z_IMAGE, False, limits_for(Z_IMAGE, False)) == "1024*768"
    assert size_parameter("", "", WAN, False, limits_for(WAN, False)) is None


@pytest.mark.parametrize(
    ("ratio", "tier", "why"),
    [("1:9", "1k", "1:8..8:1"), ("16:9", "8k", "resolution"), ("wide", "", "aspect ratio")],
)
def test_sizes_the_models_cannot_make(ratio: str, tier: str, why: str) -> None:
    with pytest.raises(ImageRequestError, match=why):
        size_parameter(ratio, tier, WAN, False, limits_for(WAN, False))
    with pytest.raises(ImageRequestError):
        build_call(image(aspect_ratio=ratio, resolution=tier))


def test_provider_limits_only_tighten() -> None:
    tight = dataclasses.replace(
        PROVIDER, image_max_edge=1536, image_min_pixels=1000 * 1000, image_max_pixels=1536 * 1536
    )
    limits = limits_for(WAN, False, tight)
    assert (limits.max_edge, limits.min_pixels, limits.max_pixels) == (1536, 10**6, 1536 * 1536)
    assert (
        build_call(image(aspect_ratio="1:1", resolution="2k"), tight).body["parameters"]["size"]
        == "1536*1536"
    )
    loose = dataclasses.replace(
        PROVIDER, image_max_edge=8192, image_min_pixels=1, image_max_pixels=8192 * 8192
    )
    assert limits_for(WAN, False, loose) == limits_for(WAN, False)


# --- answers -----------------------------------------------------------------------------


def choices_output(url: str, status: str = "SUCCEEDED") -> dict[str, Any]:
    return {
        "task_id": "858cad55-4bdc-4ba3-ae6c-000000000001",
        "task_status": status,
        "submit_time": "2026-03-31 19:57:58.840",
        "end_time": "2026-03-31 19:58:11.563",
        "finished": True,
        "choices": [
            {
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": [{"image": url, "type": "image"}]},
            }
        ],
    }


def test_task_id_of_a_create_answer() -> None:
    raw = b'{"request_id": "r", "output": {"task_id": "8811b4a4-00ac", "task_status": "PENDING"}}'
    assert task_id_of(raw) == "8811b4a4-00ac"
    for bad in (
        b'{"output": {}}',
        b'{"output": {"task_id": "../x"}}',
        b'{"output": {"task_id": 5}}',
        b'{"task_id": "a"}',
        b"[]",
    ):
        with pytest.raises(UpstreamProtocolError):
            task_id_of(bad)


def test_running_states() -> None:
    assert task_state(b'{"output": {"task_id": "t", "task_status": "PENDING"}}') == ImageTask(
        status="pending", upstream_status="PENDING"
    )
    assert task_state(b'{"output": {"task_status": "RUNNING"}}').status == "running"


def test_succeeded_states_in_both_answer_shapes() -> None:
    raw = orjson.dumps({"request_id": "r", "output": choices_output(RESULT_URL)})
    assert task_state(raw) == ImageTask(
        status="succeeded", image_url=RESULT_URL, upstream_status="SUCCEEDED"
    )
    legacy = {"output": {"task_status": "SUCCEEDED", "results": [{"url": "https://oss/a.png"}]}}
    assert task_state(orjson.dumps(legacy)).image_url == "https://oss/a.png"


def test_a_success_without_an_image_is_a_failure() -> None:
    failed_result = {
        "output": {
            "task_status": "SUCCEEDED",
            "results": [{"code": "DataInspectionFailed", "message": "Output data may contain"}],
        }
    }
    state = task_state(orjson.dumps(failed_result))
    assert state.status == "failed" and state.code == "DataInspectionFailed"
    assert "Output data may contain (DataInspectionFailed)" in state.error
    empty = task_state(b'{"output": {"task_status": "SUCCEEDED", "choices": []}}')
    assert empty.status == "failed" and "without an image" in empty.error


def test_failed_task_message_is_short_and_scrubbed() -> None:
    raw = orjson.dumps(
        {
            "output": {
                "task_status": "FAILED",
                "code": "InternalError.Timeout",
                "message": f"An internal timeout occurred for key {API_KEY}.",
            }
        }
    )
    state = task_state(raw, API_KEY)
    assert state == ImageTask(
        status="failed",
        error="The upstream could not generate the image:"
        " An internal timeout occurred for key [redacted]. (InternalError.Timeout).",
        upstream_status="FAILED",
        code="InternalError.Timeout",
        reason="An internal timeout occurred for key [redacted].",
    )
    other_key = task_state(
        orjson.dumps({"output": {"task_status": "FAILED", "message": "sk-abcdefghijklmnop1234"}})
    )
    assert "sk-abcdefghijklmnop1234" not in other_key.error
    long = task_state(orjson.dumps({"output": {"task_status": "FAILED", "message": "x" * 5000}}))
    assert len(long.error) <= 300
    bare = task_state(b'{"output": {"task_status": "FAILED"}}')
    assert bare.error == "The upstream could not generate the image."


@pytest.mark.parametrize(("status", "word"), [("CANCELED", "cancelled"), ("UNKNOWN", "expired")])
def test_canceled_and_unknown_are_failures(status: str, word: str) -> None:
    state = task_state(orjson.dumps({"output": {"task_status": status}}))
    assert state.status == "failed" and word in state.error and state.upstream_status == status


@pytest.mark.parametrize(
    "raw",
    [b'{"output": {"task_status": "SUSPENDED"}}', b'{"output": {}}', b"{}", b"[]", b"nope"],
)
def test_malformed_task_answers(raw: bytes) -> None:
    with pytest.raises((UpstreamProtocolError, orjson.JSONDecodeError)):
        task_state(raw)


def test_image_url_of_a_synchronous_answer() -> None:
    answer = {
        "output": {"choices": choices_output(RESULT_URL)["choices"]},
        "usage": {"width": 1024, "height": 1536, "image_count": 1},
        "request_id": "r",
    }
    assert image_url_of(orjson.dumps(answer)) == RESULT_URL
    with pytest.raises(UpstreamProtocolError):
        image_url_of(b'{"output": {"choices": [{"message": {"content": [{"text": "hi"}]}}]}}')


def test_error_message_reads_dashscope_error_bodies() -> None:
    raw = orjson.dumps({"request_id": "r-1", "code": "InvalidParameter", "message": "bad size"})
    assert error_message(raw) == "bad size (InvalidParameter)"
    assert error_message(orjson.dumps({"code": "Throttling"})) == "Throttling"
    keyed = orjson.dumps({"code": "InvalidApiKey", "message": f"Invalid API-key {API_KEY}"})
    assert API_KEY not in error_message(keyed, API_KEY)
    assert error_message(b"<html>502</html>") == "no error message"
    assert error_message(b"{}") == "no error message"


def test_poll_limit() -> None:
    assert poll_limit(5.0, 1200.0, 1000) == 240
    assert poll_limit(0.001, 1200.0, 1000) == 1000
    assert poll_limit(600.0, 1.0, 1000) == 1
    assert poll_limit(0.0, 10.0, 7) == 7


# --- the adapter against a strict fake DashScope -----------------------------------------


def check_body(body: Any, asynchronous: bool) -> None:
    """The create body exactly as the API references describe it, or an AssertionError."""
    assert set(body) == {"model", "input", "parameters"}
    assert isinstance(body["model"], str) and body["model"]
    assert set(body["input"]) == {"messages"}
    (message,) = body["input"]["messages"]
    assert set(message) == {"role", "content"} and message["role"] == "user"
    texts = [item["text"] for item in message["content"] if "text" in item]
    images = [item["image"] for item in message["content"] if "image" in item]
    assert all(len(item) == 1 for item in message["content"])
    assert len(texts) == 1 and isinstance(texts[0], str) and texts[0]
    for url in images:
        match = re.fullmatch(r"data:(image/(?:png|jpeg|webp));base64,([A-Za-z0-9+/=]+)", url)
        assert match is not None, url[:60]
        base64.b64decode(match.group(2), validate=True)
    params = body["parameters"]
    if asynchronous:  # Wan 2.7
        assert len(images) <= 9
        assert set(params) <= {"size", "n", "watermark", "seed", "thinking_mode"}
        assert "prompt_extend" not in params and "negative_prompt" not in params
        if "size" in params:
            assert re.fullmatch(r"1K|2K|4K|[0-9]+\*[0-9]+", params["size"])
        assert type(params.get("n", 1)) is int and type(params.get("watermark", False)) is bool
    else:  # Z-Image
        assert images == []
        assert set(params) <= {"size", "prompt_extend", "seed"}
        if "size" in params:
            assert re.fullmatch(r"[0-9]+\*[0-9]+", params["size"])
        assert type(params.get("prompt_extend", False)) is bool


def json_response(body: Any, status: int = 200) -> httpx.Response:
    return httpx.Response(status, content=orjson.dumps(body))


class StrictDashScope:
    """Answers like DashScope, and fails the test on anything DashScope would not take."""

    def __init__(self, polls: list[httpx.Response | dict[str, Any]] | None = None) -> None:
        self.polls = list(polls or [])
        self.requests: list[httpx.Request] = []
        self.bodies: list[Any] = []
        self.create: httpx.Response | None = None
        self.result = httpx.Response(200, content=RESULT, headers={"Content-Type": "image/png"})
        self.task_id = "8811b4a4-00ac-4aa2-a2fd-017d3b90c000"

    async def handle(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        self.requests.append(request)
        url = str(request.url)
        if url.startswith(BASE):
            assert request.headers["authorization"] == f"Bearer {API_KEY}"
        else:
            assert "authorization" not in request.headers  # our key never leaves for OSS
        if request.method == "POST" and url == BASE + ASYNC_PATH:
            assert request.headers["x-dashscope-async"] == "enable"
            assert request.headers["content-type"] == "application/json"
            body = orjson.loads(request.content)
            check_body(body, asynchronous=True)
            self.bodies.append(body)
            if self.create is not None:
                return self.create
            return json_response(
                {
                    "request_id": "ccf4b2f4",
                    "output": {"task_id": self.task_id, "task_status": "PENDING"},
                }
            )
        if request.method == "POST" and url == BASE + SYNC_PATH:
            assert "x-dashscope-async" not in request.headers
            assert request.headers["content-type"] == "application/json"
            body = orjson.loads(request.content)
            check_body(body, asynchronous=False)
            self.bodies.append(body)
            if self.create is not None:
                return self.create
            return json_response(
                {
                    "output": {"choices": choices_output(RESULT_URL)["choices"]},
                    "usage": {"width": 1024, "height": 1536, "image_count": 1},
                    "request_id": "d0250a3d",
                }
            )
        if request.method == "GET" and url.startswith(f"{BASE}/tasks/"):
            assert url == f"{BASE}/tasks/{self.task_id}"
            assert "x-dashscope-async" not in request.headers
            answer = self.polls.pop(0) if len(self.polls) > 1 else self.polls[0]
            if isinstance(answer, httpx.Response):
                return answer
            return json_response({"request_id": "43d9e959", "output": answer})
        if request.method == "GET" and url == RESULT_URL:
            return self.result
        raise AssertionError(f"unexpected request {request.method} {url}")


def status(value: str, **extra: Any) -> dict[str, Any]:
    return {"task_id": "8811b4a4-00ac-4aa2-a2fd-017d3b90c000", "task_status": value, **extra}


SUCCEEDED = choices_output(RESULT_URL) | {"task_id": "8811b4a4-00ac-4aa2-a2fd-017d3b90c000"}


@asynccontextmanager
async def connected(
    upstream: StrictDashScope, provider: Provider = PROVIDER
) -> AsyncIterator[DashScopeImageAdapter]:
    adapter = DashScopeImageAdapter(provider)
    own, files = adapter.client, adapter.files
    transport = httpx.MockTransport(upstream.handle)
    adapter.client = httpx.AsyncClient(
        transport=transport, base_url=own.base_url, headers=own.headers, timeout=own.timeout
    )
    adapter.files = httpx.AsyncClient(
        transport=transport, headers=files.headers, timeout=files.timeout
    )
    await own.aclose()
    await files.aclose()
    try:
        yield adapter
    finally:
        await adapter.close()


def calls(upstream: StrictDashScope) -> list[str]:
    return [f"{r.method} {str(r.url).removeprefix(BASE)}" for r in upstream.requests]


def test_the_adapter_is_an_image_adapter() -> None:
    adapter: ImageAdapter = DashScopeImageAdapter(PROVIDER)  # checked by mypy
    assert isinstance(adapter, DashScopeImageAdapter)
    assert adapter.poll_budget_seconds == 7.0 * dashscope_image.POLL_BUDGET_FACTOR
    assert adapter.max_polls == dashscope_image.MAX_POLLS  # 1 ms interval: the cap decides


async def test_wan_task_is_created_polled_and_downloaded() -> None:
    upstream = StrictDashScope([status("PENDING"), status("RUNNING"), SUCCEEDED])
    async with connected(upstream) as adapter:
        result = await adapter.generate(image(aspect_ratio="9:16", request_id="job_1"))
    assert result.data == RESULT and result.content_type == "image/png"
    assert calls(upstream) == [
        f"POST {ASYNC_PATH}",
        f"GET /tasks/{upstream.task_id}",
        f"GET /tasks/{upstream.task_id}",
        f"GET /tasks/{upstream.task_id}",
        f"GET {RESULT_URL}",
    ]
    assert upstream.bodies[0]["parameters"] == {"size": "1152*2048", "n": 1, "watermark": False}


async def test_wan_edit_sends_the_reference_bytes() -> None:
    upstream = StrictDashScope([SUCCEEDED])
    refs = (Reference("image", PNG, "image/png"), Reference("image", JPEG, "image/jpeg"))
    async with connected(upstream) as adapter:
        await adapter.generate(image(references=refs, prompt="add snow"))
    content = upstream.bodies[0]["input"]["messages"][0]["content"]
    sent = [base64.b64decode(item["image"].split(",", 1)[1]) for item in content[1:]]
    assert sent == [PNG, JPEG] and content[0] == {"text": "add snow"}


async def test_z_image_is_one_synchronous_call_then_the_download() -> None:
    upstream = StrictDashScope()
    async with connected(upstream) as adapter:
        result = await adapter.generate(image(upstream_model="z-image-turbo"))
    assert result.data == RESULT
    assert calls(upstream) == [f"POST {SYNC_PATH}", f"GET {RESULT_URL}"]


async def test_a_jpeg_result_is_labelled_as_what_it_is() -> None:
    upstream = StrictDashScope([SUCCEEDED])
    upstream.result = httpx.Response(200, content=JPEG, headers={"Content-Type": "image/png"})
    async with connected(upstream) as adapter:
        result = await adapter.generate(image())
    assert result.content_type == "image/jpeg"


async def test_a_failed_task_is_failed_with_a_safe_message() -> None:
    failed = status("FAILED", code="InternalError", message=f"broke; key {API_KEY}")
    upstream = StrictDashScope([status("RUNNING"), failed])
    async with connected(upstream) as adapter:
        with pytest.raises(UpstreamError) as err:
            await adapter.generate(image())
    assert err.value.kind == "failed"
    assert "broke" in err.value.message and API_KEY not in err.value.message
    assert not any(RESULT_URL in str(r.url) for r in upstream.requests)


async def test_a_moderated_task_is_the_clients_content_not_a_provider_failure() -> None:
    """DataInspectionFailed is DashScope's content-moderation code: retrying cannot help."""
    failed = status("FAILED", code="DataInspectionFailed", message=f"flagged; key {API_KEY}")
    upstream = StrictDashScope([status("RUNNING"), failed])
    async with connected(upstream) as adapter:
        with pytest.raises(UpstreamError) as err:
            await adapter.generate(image())
    assert (err.value.kind, err.value.code, err.value.content_policy) == (
        "rejected",
        "DataInspectionFailed",
        True,
    )
    assert job_error(err.value) == ("content_policy", CONTENT_POLICY)
    assert API_KEY not in err.value.message


async def test_a_task_failed_on_an_invalid_parameter_names_the_reason() -> None:
    failed = status("FAILED", code="InvalidParameter", message="image size must be 240-8000 px")
    upstream = StrictDashScope([failed])
    async with connected(upstream) as adapter:
        with pytest.raises(UpstreamError) as err:
            await adapter.generate(image())
    assert job_error(err.value) == (
        "invalid_input",
        "The provider rejected the input: image size must be 240-8000 px.",
    )


@pytest.mark.parametrize("end", ["CANCELED", "UNKNOWN"])
async def test_canceled_and_unknown_tasks_fail(end: str) -> None:
    async with connected(StrictDashScope([status(end)])) as adapter:
        with pytest.raises(UpstreamError) as err:
            await adapter.generate(image())
    assert err.value.kind == "failed"


def raising(exc_type: type[httpx.TransportError]) -> Callable[[httpx.Request], httpx.Response]:
    def respond(request: httpx.Request) -> httpx.Response:
        raise exc_type("simulated", request=request)

    return respond


CREATE_ERRORS = [
    (
        json_response({"request_id": "r", "code": "InvalidParameter", "message": "bad"}, 400),
        "rejected",
    ),
    (json_response({"code": "DataInspectionFailed", "message": "Input data may"}, 400), "rejected"),
    (
        json_response({"code": "InvalidApiKey", "message": "Invalid API-key provided."}, 401),
        "failed",
    ),
    (
        json_response({"code": "AccessDenied", "message": "current user api does not"}, 403),
        "failed",
    ),
    (json_response({"code": "Throttling.RateQuota", "message": "slow down"}, 429), "rate_limited"),
    (json_response({"code": "InternalError", "message": "boom"}, 500), "failed"),
    (json_response({"request_id": "r", "output": {"task_status": "PENDING"}}), "failed"),
    (httpx.Response(200, content=b"<html>not json</html>"), "failed"),
]


@pytest.mark.parametrize(("answer", "kind"), CREATE_ERRORS)
@pytest.mark.parametrize("model", ["wan2.7-image", "z-image-turbo"])
async def test_create_errors(answer: httpx.Response, kind: str, model: str) -> None:
    upstream = StrictDashScope([SUCCEEDED])
    upstream.create = answer
    async with connected(upstream) as adapter:
        with pytest.raises(UpstreamError) as err:
            await adapter.generate(image(upstream_model=model))
    assert err.value.kind == kind
    assert len(upstream.requests) == 1  # a create is never retried


async def test_a_rejection_carries_the_upstream_message_scrubbed() -> None:
    upstream = StrictDashScope()
    upstream.create = json_response(
        {"request_id": "r", "code": "InvalidParameter", "message": f"size bad {API_KEY}"}, 400
    )
    async with connected(upstream) as adapter:
        with pytest.raises(UpstreamError) as err:
            await adapter.generate(image())
    assert err.value.message == (
        "The upstream rejected the request: size bad [redacted] (InvalidParameter)"
    )


@pytest.mark.parametrize(
    ("exc_type", "kind"), [(httpx.ConnectError, "failed"), (httpx.ReadTimeout, "timeout")]
)
async def test_transport_errors_on_create(exc_type: type[httpx.TransportError], kind: str) -> None:
    adapter = DashScopeImageAdapter(PROVIDER)
    await adapter.client.aclose()
    adapter.client = httpx.AsyncClient(
        transport=httpx.MockTransport(raising(exc_type)), base_url=BASE
    )
    try:
        with pytest.raises(UpstreamError) as err:
            await adapter.generate(image())
    finally:
        await adapter.close()
    assert err.value.kind == kind


async def test_poll_errors_are_asked_again() -> None:
    busy = json_response({"code": "InternalError", "message": "busy"}, 503)
    upstream = StrictDashScope([busy, busy, status("RUNNING"), busy, SUCCEEDED])
    async with connected(upstream) as adapter:
        result = await adapter.generate(image())
    assert result.data == RESULT
    assert calls(upstream).count(f"GET /tasks/{upstream.task_id}") == 5


async def test_too_many_poll_errors_in_a_row_fail() -> None:
    bad_request = json_response({"code": "InvalidParameter", "message": "no"}, 400)
    upstream = StrictDashScope([bad_request])
    async with connected(upstream) as adapter:
        with pytest.raises(UpstreamError) as err:
            await adapter.generate(image())
    # A poll is never the client's fault: even a 400 is "failed".
    assert err.value.kind == "failed"
    assert calls(upstream).count(f"GET /tasks/{upstream.task_id}") == (
        dashscope_image.MAX_POLL_ERRORS
    )


async def test_polling_is_bounded_by_count() -> None:
    upstream = StrictDashScope([status("RUNNING")])
    async with connected(upstream) as adapter:
        adapter.max_polls = 7
        with pytest.raises(UpstreamError) as err:
            await adapter.generate(image())
    assert err.value.kind == "timeout"
    assert calls(upstream).count(f"GET /tasks/{upstream.task_id}") == 7


async def test_polling_is_bounded_by_time() -> None:
    upstream = StrictDashScope([status("PENDING")])
    slow = dataclasses.replace(PROVIDER, poll_interval_seconds=0.02, read_timeout_seconds=0.02)
    async with connected(upstream, slow) as adapter:
        assert adapter.poll_budget_seconds == pytest.approx(0.08)
        adapter.max_polls = 1000  # only the clock can stop it
        with pytest.raises(UpstreamError) as err:
            await adapter.generate(image())
    assert err.value.kind == "timeout"
    polls = calls(upstream).count(f"GET /tasks/{upstream.task_id}")
    assert 1 <= polls <= 4  # every poll waits >= 20 ms first: 80 ms hold at most four


async def test_unknown_models_and_impossible_requests_send_nothing() -> None:
    upstream = StrictDashScope()
    async with connected(upstream) as adapter:
        with pytest.raises(UpstreamError) as unknown:
            await adapter.generate(image(upstream_model="wan-2.7-text2img"))
        refs = (Reference("image", PNG, "image/png"),)
        with pytest.raises(UpstreamError) as no_refs:
            await adapter.generate(image(upstream_model="z-image-turbo", references=refs))
    assert unknown.value.kind == "failed"  # our configuration, not the client's request
    assert no_refs.value.kind == "rejected"
    assert "takes no reference images" in no_refs.value.message
    assert upstream.requests == []


# --- downloads ---------------------------------------------------------------------------


async def test_download_sends_no_key_and_follows_no_other_scheme() -> None:
    upstream = StrictDashScope()
    async with connected(upstream) as adapter:
        assert await adapter.download(RESULT_URL, len(RESULT)) == RESULT
        for url in ("file:///etc/passwd", "ftp://oss.example/r.png", "data:image/png;base64,AA"):
            with pytest.raises(UpstreamError) as err:
                await adapter.download(url, 10**6)
            assert err.value.kind == "failed"
    (sent,) = upstream.requests
    assert "authorization" not in sent.headers


async def test_download_cap_by_declared_length() -> None:
    upstream = StrictDashScope()
    async with connected(upstream) as adapter:
        with pytest.raises(UpstreamError) as err:
            await adapter.download(RESULT_URL, len(RESULT) - 1)
        assert "size limit" in err.value.message
        # Refused on the declared length alone, before reading a byte of the body.
        upstream.result = httpx.Response(
            200, stream=httpx.ByteStream(RESULT), headers={"Content-Length": str(10**9)}
        )
        with pytest.raises(UpstreamError) as declared:
            await adapter.download(RESULT_URL, 10**6)
    assert "size limit" in declared.value.message


async def test_download_cap_while_streaming() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"x" * 1000

    upstream = StrictDashScope()
    upstream.result = httpx.Response(200, content=chunks())  # chunked: no Content-Length
    async with connected(upstream) as adapter:
        with pytest.raises(UpstreamError) as err:
            await adapter.download(RESULT_URL, 2500)
    assert err.value.kind == "failed" and "size limit" in err.value.message


async def test_generate_caps_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dashscope_image, "MAX_RESULT_BYTES", len(RESULT) - 1)
    async with connected(StrictDashScope([SUCCEEDED])) as adapter:
        with pytest.raises(UpstreamError) as err:
            await adapter.generate(image())
    assert "size limit" in err.value.message


@pytest.mark.parametrize(
    ("result", "why"),
    [
        (httpx.Response(403, content=b"<Error>AccessDenied</Error>"), "HTTP 403"),
        (httpx.Response(200, content=b"<html>not an image</html>"), "not a PNG"),
    ],
)
async def test_bad_results(result: httpx.Response, why: str) -> None:
    upstream = StrictDashScope([SUCCEEDED])
    upstream.result = result
    async with connected(upstream) as adapter:
        with pytest.raises(UpstreamError) as err:
            await adapter.generate(image())
    assert err.value.kind == "failed" and why in err.value.message


async def test_what_the_model_cannot_do_is_the_clients_input_with_the_reason() -> None:
    refs = tuple(Reference("image", PNG, "image/png") for _ in range(10))
    upstream = StrictDashScope()
    async with connected(upstream) as adapter:
        with pytest.raises(UpstreamError) as err:
            await adapter.generate(image(references=refs))
    assert job_error(err.value) == (
        "invalid_input",
        "The provider rejected the input: at most 9 reference images.",
    )
    assert upstream.requests == []
