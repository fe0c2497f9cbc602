"""The sandbox's DashScope image API: its pure logic, its routes, and our adapter against it."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator
from fractions import Fraction
from io import BytesIO
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web
from PIL import Image

from sandbox import dashscope, directives, png
from sandbox.dashscope_server import register
from sandbox.errors import ApiError
from sandbox.server import REQUEST_LOG, create_app
from services.providers.adapters.dashscope_image import DashScopeImageAdapter
from services.providers.adapters.dashscope_image_translate import build_call
from services.providers.errors import UpstreamError
from services.providers.media import ImageRequest, Reference
from services.providers.routes import Provider

KEY = "sk-sandbox-dashscope"
AUTH = {"Authorization": f"Bearer {KEY}"}
ASYNC = {**AUTH, "X-DashScope-Async": "enable"}
PNG_16_9 = png.render(480, 270, "reference")
RATIOS = ("3:2", "1:1", "2:3", "5:4", "4:5", "16:9", "9:16", "21:9", "3:4", "4:3", "9:21")


def data_url(data: bytes, kind: str = "image/png") -> str:
    return f"data:{kind};base64,{base64.b64encode(data).decode()}"


def body(
    prompt: str = "a red kite",
    model: str = "wan2.7-image",
    images: tuple[str, ...] = (),
    **parameters: Any,
) -> dict[str, Any]:
    content: list[dict[str, str]] = [{"text": prompt}, *({"image": url} for url in images)]
    return {
        "model": model,
        "input": {"messages": [{"role": "user", "content": content}]},
        "parameters": parameters,
    }


# --- pure logic --------------------------------------------------------------------------


def test_a_wan_text_to_image_request() -> None:
    spec = dashscope.parse_create(body(size="1920*1080", n=2, seed=7, watermark=True), True)
    assert (spec.model, spec.family, spec.width, spec.height) == ("wan2.7-image", "wan", 1920, 1080)
    assert (spec.n, spec.seed, spec.watermark, spec.references) == (2, 7, True, ())
    assert spec.rendered == (512, 288)


def test_defaults() -> None:
    wan = dashscope.parse_create(body(), True)
    assert (wan.width, wan.height, wan.n) == (2048, 2048, 1)  # "2K", square
    z_image = dashscope.parse_create(body(model="z-image-turbo"), False)
    assert (z_image.width, z_image.height, z_image.n) == (1024, 1536, 1)
    assert z_image.seed == dashscope.parse_create(body(model="z-image-turbo"), False).seed


def test_an_edit_with_a_size_name_keeps_the_last_pngs_ratio() -> None:
    square = png.render(300, 300, "square")
    spec = dashscope.parse_create(
        body(images=(data_url(square), data_url(PNG_16_9)), size="1K"), True
    )
    assert len(spec.references) == 2 and spec.references[1].ratio == Fraction(16, 9)
    assert abs(Fraction(spec.width, spec.height) - Fraction(16, 9)) < Fraction(1, 50)
    assert abs(spec.width * spec.height - 1024 * 1024) < 1024 * 1024 // 50


@pytest.mark.parametrize(
    ("request_body", "asynchronous", "status", "code", "words"),
    [
        ([], True, 400, "InvalidParameter", "JSON object"),
        ({**body(), "stream": True}, True, 400, "InvalidParameter", "stream"),
        ({**body(), "model": ""}, True, 400, "BadRequest.EmptyModel", "model"),
        (body(model="wan-2.7-text2img"), True, 400, "InvalidParameter", "Model not exist"),
        (body(model="z-image-turbo"), True, 403, "AccessDenied", "asynchronous calls"),
        ({"model": "wan2.7-image"}, True, 400, "BadRequest.EmptyInput", "input"),
        (
            {"model": "wan2.7-image", "input": {"prompt": "old style"}},
            True,
            400,
            "InvalidParameter",
            "input.prompt",
        ),
        (
            {"model": "wan2.7-image", "input": {"messages": [{"role": "system", "content": []}]}},
            True,
            400,
            "InvalidParameter",
            "role",
        ),
        (
            {
                "model": "wan2.7-image",
                "input": {
                    "messages": [{"role": "user", "content": [{"text": "a"}, {"text": "b"}]}]
                },
            },
            True,
            400,
            "InvalidParameter",
            "exactly one text",
        ),
        (
            {
                "model": "wan2.7-image",
                "input": {"messages": [{"role": "user", "content": [{"text": "a", "image": "b"}]}]},
            },
            True,
            400,
            "InvalidParameter",
            "exactly one of",
        ),
        (body(prompt="   "), True, 400, "InvalidParameter", "empty"),
        (
            body(model="z-image-turbo", images=(data_url(PNG_16_9),)),
            False,
            400,
            "InvalidParameter",
            "image input",
        ),
        (body(images=("https://example.com/a.png",)), True, 400, None, "cannot fetch"),
        (body(images=(data_url(b"GIF89a" + b"\0" * 30, "image/gif"),)), True, 400, None, "JPEG"),
        (body(images=(data_url(PNG_16_9, "image/jpeg"),)), True, 400, None, "declared"),
        (body(images=(data_url(png.render(100, 100, "s")),)), True, 400, None, "240 to 8000"),
        (body(images=tuple(data_url(PNG_16_9) for _ in range(10))), True, 400, None, "At most 9"),
        (body(prompt_extend=False), True, 400, "InvalidParameter", "prompt_extend"),
        (body(model="z-image-turbo", watermark=False), False, 400, None, "watermark"),
        (body(n=5), True, 400, None, "between 1 and 4"),
        (body(n="1"), True, 400, None, "integer"),
        (body(seed=-1), True, 400, None, "seed"),
        (body(watermark="no"), True, 400, None, "boolean"),
        (body(size="1024x1024"), True, 400, None, "width*height"),
        (body(size="4K"), True, 400, None, "width*height"),  # 4K: -pro text-to-image only
        (body(size="512*512"), True, 400, None, "768*768"),
        (body(size="4096*2048"), True, 400, None, "2048*2048"),
        (body(size="2049*2049"), True, 400, None, "total pixels"),
        (body(size="2400*288"), True, 400, None, "1:8..8:1"),
        (body(model="z-image-turbo", size="2K"), False, 400, None, "width*height"),
        (body(model="z-image-turbo", size="256*256"), False, 400, None, "512*512"),
        (body(model="z-image-turbo", n=1), False, 400, None, "n is not supported"),
        (body(prompt="x [sim:tokens=3]"), True, 400, None, "not supported"),
    ],
)
def test_what_dashscope_would_refuse(
    request_body: Any, asynchronous: bool, status: int, code: str | None, words: str
) -> None:
    with pytest.raises(ApiError) as err:
        dashscope.parse_create(request_body, asynchronous)
    assert err.value.status == status and words in err.value.message
    rendered = dashscope.error_body(err.value)
    assert set(rendered) == {"request_id", "code", "message"}
    assert rendered["code"] == (code or "InvalidParameter")


def test_what_pro_and_sequential_allow() -> None:
    pro = dashscope.parse_create(body(model="wan2.7-image-pro", size="4K"), True)
    assert (pro.width, pro.height) == (4096, 4096)
    assert dashscope.parse_create(body(model="wan2.7-image-pro", size="4096*2304"), True)
    with pytest.raises(ApiError):  # an edit is capped at 2048*2048 even on -pro
        dashscope.parse_create(
            body(model="wan2.7-image-pro", images=(data_url(PNG_16_9),), size="4K"), True
        )
    assert dashscope.parse_create(body(n=12, enable_sequential=True), True).n == 12


def test_the_async_header_must_match_the_endpoint() -> None:
    dashscope.check_async_header("enable", True)
    dashscope.check_async_header(None, False)
    for value, endpoint, message in (
        (None, True, dashscope.NO_SYNC),
        ("disable", True, dashscope.NO_SYNC),
        ("enable", False, dashscope.NO_ASYNC),
    ):
        with pytest.raises(ApiError) as err:
            dashscope.check_async_header(value, endpoint)
        assert (err.value.status, err.value.code, err.value.message) == (
            403,
            "AccessDenied",
            message,
        )


def task(prompt: str, created_at: float = 1000.0, **parameters: Any) -> dashscope.Task:
    spec = dashscope.parse_create(body(prompt, **parameters), True)
    return dashscope.Task(id="t-1", spec=spec, created_at=created_at)


def test_task_timelines() -> None:
    assert task("x").status(1000.0) == "SUCCEEDED"
    assert task("x [sim:fail]").status(1000.0) == "FAILED"
    slow = task("x [sim:delay=4]")
    assert [slow.status(1000 + t) for t in (0, 1.9, 2, 3.9, 4)] == [
        "PENDING",
        "PENDING",
        "RUNNING",
        "RUNNING",
        "SUCCEEDED",
    ]
    hung = task("x [sim:hang] [sim:delay=2]")
    assert [hung.status(1000 + t) for t in (0, 1, 10, 10**6)] == [
        "PENDING",
        "RUNNING",
        "RUNNING",
        "RUNNING",
    ]


def test_task_bodies() -> None:
    base = "http://sbx/_sandbox/dashscope/files"
    done = task("x", n=2, size="1280*720")
    answer = dashscope.task_body(done, done.id, 1000.0, base)
    output = answer["output"]
    assert output["task_status"] == "SUCCEEDED" and output["finished"] is True
    assert output["submit_time"] == "1970-01-01 00:16:40.000"
    assert [c["message"]["content"] for c in output["choices"]] == [
        [{"image": f"{base}/t-1_0.png", "type": "image"}],
        [{"image": f"{base}/t-1_1.png", "type": "image"}],
    ]
    assert answer["usage"]["size"] == "1280*720" and answer["usage"]["image_count"] == 2
    failed = dashscope.task_body(task("x [sim:fail]"), "t-1", 1000.0, base)["output"]
    assert (failed["task_status"], failed["code"]) == ("FAILED", "InternalError")
    assert "choices" not in failed
    pending = dashscope.task_body(task("x [sim:delay=9]"), "t-1", 1000.0, base)
    assert pending["output"]["task_status"] == "PENDING" and "usage" not in pending
    assert pending["output"]["finished"] is False
    unknown = dashscope.task_body(None, "nope", 1000.0, base)
    assert unknown["output"] == {"task_id": "nope", "task_status": "UNKNOWN"}


def test_error_body_codes() -> None:
    def code(err: ApiError) -> str:
        return str(dashscope.error_body(err)["code"])

    assert code(ApiError(400, "x", code="invalid_value")) == "InvalidParameter"
    assert code(ApiError(401, "x", code="invalid_api_key")) == "InvalidApiKey"
    assert code(ApiError(404, "x")) == "NotFound"
    assert code(ApiError(429, "x", code="rate_limit_exceeded")) == "Throttling"
    assert code(ApiError(503, "x", type="server_error")) == "InternalError"
    assert code(ApiError(403, "x", code="AccessDenied")) == "AccessDenied"


def test_file_names_and_rendering() -> None:
    assert dashscope.parse_file_name("8811b4a4-00ac_0.png") == ("8811b4a4-00ac", 0)
    for bad in ("x.png", "x_0.jpg", "x_a.png", "x_0", "_0.png", "x_0.png.png", "x_123.png"):
        assert dashscope.parse_file_name(bad) is None, bad
    done = task("a red kite [sim:delay=0]", size="1280*720")
    image = dashscope.render(done, 0)
    assert dashscope.png_size(image) == (512, 288)
    assert image == dashscope.render(dataclasses.replace(done), 0)  # deterministic
    assert image != dashscope.render(done, 1)
    # Directives do not change the picture.
    assert image == dashscope.render(task("a red kite", size="1280*720"), 0)


def test_log_body_summarises_data_urls() -> None:
    logged = dashscope.log_body(body(images=(data_url(PNG_16_9),)))
    assert isinstance(logged, dict)
    item = logged["input"]["messages"][0]["content"][1]["image"]
    assert item == f"data:image/png;base64,[{len(PNG_16_9)} bytes]"


def test_the_task_store_is_bounded() -> None:
    store = dashscope.TaskStore(limit=2)
    for i in range(3):
        store.add(dataclasses.replace(task("x"), id=f"t{i}"))
    assert list(store.tasks) == ["t1", "t2"] and store.get("t0") is None


def test_directives_are_the_media_set() -> None:
    assert dashscope.parse_create(body("x [sim:hang]"), True).directives == directives.Directives(
        hang=True
    )


# --- the routes, served in-process -------------------------------------------------------


@pytest.fixture(scope="module")
async def sandbox() -> AsyncIterator[tuple[str, web.Application]]:
    app = create_app(KEY)
    register(app)
    register(app)  # a second call (server.PROTOCOL_MODULES plus a test) changes nothing
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", app
    finally:
        await runner.cleanup()


@pytest.fixture
async def http(sandbox: tuple[str, web.Application]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sandbox[0], timeout=10) as client:
        yield client


def assert_dashscope_error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    answer = response.json()
    assert set(answer) == {"request_id", "code", "message"} and answer["code"] == code
    uuid.UUID(answer["request_id"])
    return str(answer["message"])


async def test_the_async_endpoint_needs_the_header(http: httpx.AsyncClient) -> None:
    response = await http.post(dashscope.ASYNC_PATH, json=body(), headers=AUTH)
    assert assert_dashscope_error(response, 403, "AccessDenied") == dashscope.NO_SYNC
    response = await http.post(dashscope.SYNC_PATH, json=body(), headers=ASYNC)
    assert assert_dashscope_error(response, 403, "AccessDenied") == dashscope.NO_ASYNC


async def test_the_key_is_checked_and_the_request_logged(
    http: httpx.AsyncClient, sandbox: tuple[str, web.Application]
) -> None:
    prompt = f"logged {uuid.uuid4().hex[:8]}"
    headers = {"Authorization": "Bearer wrong", "X-DashScope-Async": "enable"}
    response = await http.post(dashscope.ASYNC_PATH, json=body(prompt), headers=headers)
    assert_dashscope_error(response, 401, "InvalidApiKey")
    response = await http.post(dashscope.ASYNC_PATH, json=body(prompt))
    assert assert_dashscope_error(response, 401, "InvalidApiKey") == "No API-key provided."
    response = await http.post(dashscope.ASYNC_PATH, json=body(prompt), headers=ASYNC)
    assert response.status_code == 200
    entries = [
        e
        for e in sandbox[1][REQUEST_LOG]
        if isinstance(e["body"], dict) and str(e["body"]).count(prompt)
    ]
    assert [e["authorization"] for e in entries] == ["Bearer wrong", None, f"Bearer {KEY}"]
    assert all(e["path"] == dashscope.ASYNC_PATH for e in entries)
    assert entries[-1]["body"] == body(prompt)


async def test_a_bad_body_is_a_dashscope_400(http: httpx.AsyncClient) -> None:
    response = await http.post(dashscope.ASYNC_PATH, json=body(size="9*9"), headers=ASYNC)
    assert "768*768" in assert_dashscope_error(response, 400, "InvalidParameter")
    response = await http.post(dashscope.ASYNC_PATH, content=b"{not json", headers=ASYNC)
    assert_dashscope_error(response, 400, "InvalidParameter")


async def test_unknown_routes_under_api_v1_use_dashscope_errors(http: httpx.AsyncClient) -> None:
    response = await http.post("/api/v1/services/aigc/text2video/video-synthesis", headers=AUTH)
    assert_dashscope_error(response, 404, "NotFound")


async def test_a_task_over_raw_http(
    http: httpx.AsyncClient, sandbox: tuple[str, web.Application]
) -> None:
    created = await http.post(dashscope.ASYNC_PATH, json=body(size="1280*720", n=2), headers=ASYNC)
    assert created.status_code == 200
    output = created.json()["output"]
    assert output["task_status"] == "PENDING"
    task_id = output["task_id"]
    uuid.UUID(task_id)
    polled = await http.get(f"/api/v1/tasks/{task_id}")
    assert_dashscope_error(polled, 401, "InvalidApiKey")
    polled = await http.get(f"/api/v1/tasks/{task_id}", headers=AUTH)
    answer = polled.json()
    assert answer["output"]["task_status"] == "SUCCEEDED"
    urls = [c["message"]["content"][0]["image"] for c in answer["output"]["choices"]]
    assert urls == [f"{sandbox[0]}/_sandbox/dashscope/files/{task_id}_{i}.png" for i in (0, 1)]
    files = [await http.get(url) for url in urls]  # no Authorization, like pre-signed OSS
    assert [f.status_code for f in files] == [200, 200]
    assert [dashscope.png_size(f.content) for f in files] == [(512, 288), (512, 288)]
    assert files[0].content != files[1].content
    missing = await http.get(f"/_sandbox/dashscope/files/{task_id}_2.png")
    assert missing.status_code == 404
    listed = (await http.get("/_sandbox/dashscope/tasks")).json()
    assert [t["id"] for t in listed if t["id"] == task_id] == [task_id]


async def test_unknown_tasks_are_unknown(http: httpx.AsyncClient) -> None:
    response = await http.get("/api/v1/tasks/858cad55-nothing", headers=AUTH)
    assert response.status_code == 200
    assert response.json()["output"] == {"task_id": "858cad55-nothing", "task_status": "UNKNOWN"}


async def test_the_synchronous_endpoint_over_raw_http(http: httpx.AsyncClient) -> None:
    request = body(model="z-image-turbo", size="1536*864", prompt_extend=False, seed=3)
    response = await http.post(dashscope.SYNC_PATH, json=request, headers=AUTH)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["output"]["finished"] is True
    assert answer["usage"] == {"width": 1536, "height": 864, "image_count": 1}
    url = answer["output"]["choices"][0]["message"]["content"][0]["image"]
    image = await http.get(url)
    assert dashscope.png_size(image.content) == (512, 288)
    # A synchronous answer has no task to poll.
    task_id = url.rsplit("/", 1)[1].split("_")[0]
    polled = await http.get(f"/api/v1/tasks/{task_id}", headers=AUTH)
    assert polled.json()["output"]["task_status"] == "UNKNOWN"


# --- our adapter against the sandbox -----------------------------------------------------


def provider(url: str) -> Provider:
    return Provider(
        name="sandbox-dashscope",
        protocol="dashscope-image",
        base_url=f"{url}/api/v1",
        api_key=KEY,
        connect_timeout_seconds=5,
        read_timeout_seconds=10,
        max_connections=10,
        max_tokens_field="max_tokens",
        poll_interval_seconds=0.02,
    )


@pytest.fixture
async def adapter(sandbox: tuple[str, web.Application]) -> AsyncIterator[DashScopeImageAdapter]:
    adapter = DashScopeImageAdapter(provider(sandbox[0]))
    try:
        yield adapter
    finally:
        await adapter.close()


def image(prompt: str = "a red kite", model: str = "wan2.7-image", **kw: Any) -> ImageRequest:
    return ImageRequest(upstream_model=model, prompt=prompt, **kw)


@pytest.mark.parametrize("ratio", RATIOS)
async def test_wan_results_have_the_requested_ratio(
    adapter: DashScopeImageAdapter, ratio: str
) -> None:
    result = await adapter.generate(image(aspect_ratio=ratio))
    assert result.content_type == "image/png"
    size = dashscope.png_size(result.data)
    a, b = (int(x) for x in ratio.split(":"))
    assert size is not None and Fraction(*size) == Fraction(a, b)
    assert png.RENDER_CAP - max(a, b) < max(size) <= png.RENDER_CAP


@pytest.mark.parametrize("ratio", ["16:9", "2:3", "1:1"])
async def test_z_image_results_have_the_requested_ratio(
    adapter: DashScopeImageAdapter, ratio: str
) -> None:
    result = await adapter.generate(image(model="z-image-turbo", aspect_ratio=ratio))
    size = dashscope.png_size(result.data)
    a, b = (int(x) for x in ratio.split(":"))
    assert size is not None and Fraction(*size) == Fraction(a, b)


async def test_an_edit_keeps_the_references_ratio(adapter: DashScopeImageAdapter) -> None:
    refs = (Reference("image", PNG_16_9, "image/png"),)
    result = await adapter.generate(image(references=refs, resolution="1k"))
    size = dashscope.png_size(result.data)
    assert size is not None
    assert abs(Fraction(*size) - Fraction(16, 9)) < Fraction(1, 50)


async def test_a_failing_task(adapter: DashScopeImageAdapter) -> None:
    with pytest.raises(UpstreamError) as err:
        await adapter.generate(image("x [sim:fail]"))
    assert err.value.kind == "failed"
    assert err.value.message == (
        "The upstream could not generate the image:"
        " sandbox: simulated image generation failure (InternalError)."
    )


async def test_a_delayed_task_goes_pending_running_succeeded(
    adapter: DashScopeImageAdapter,
) -> None:
    request = image(f"slow [sim:delay=0.6] {uuid.uuid4().hex[:6]}", aspect_ratio="4:3")
    task_id = await adapter.submit(build_call(request))
    seen: list[str] = []
    async with asyncio.timeout(5):
        while not seen or seen[-1] in ("PENDING", "RUNNING"):
            seen.append((await adapter.poll(task_id)).upstream_status)
            await asyncio.sleep(0.05)
    assert seen[0] == "PENDING" and "RUNNING" in seen and seen[-1] == "SUCCEEDED"
    assert seen == sorted(seen, key=["PENDING", "RUNNING", "SUCCEEDED"].index)
    started = time.monotonic()
    result = await adapter.generate(dataclasses.replace(request, prompt="again [sim:delay=0.3]"))
    assert time.monotonic() - started >= 0.3
    assert Fraction(*(dashscope.png_size(result.data) or (0, 1))) == Fraction(4, 3)


async def test_a_hanging_task_times_out(adapter: DashScopeImageAdapter) -> None:
    adapter.poll_budget_seconds = 0.3
    started = time.monotonic()
    with pytest.raises(UpstreamError) as err:
        await adapter.generate(image("x [sim:hang]"))
    assert err.value.kind == "timeout"
    assert time.monotonic() - started < 3


@pytest.mark.parametrize(
    ("code", "kind"), [(400, "rejected"), (429, "rate_limited"), (503, "failed")]
)
@pytest.mark.parametrize("model", ["wan2.7-image", "z-image-turbo"])
async def test_status_on_create(
    adapter: DashScopeImageAdapter, http: httpx.AsyncClient, code: int, kind: str, model: str
) -> None:
    prompt = f"x [sim:status={code}] {uuid.uuid4().hex[:8]}"
    with pytest.raises(UpstreamError) as err:
        await adapter.generate(image(prompt, model=model))
    assert err.value.kind == kind
    listed = (await http.get("/_sandbox/dashscope/tasks")).json()
    assert [t for t in listed if t["prompt"] == prompt] == []


async def test_z_image_directives(adapter: DashScopeImageAdapter) -> None:
    with pytest.raises(UpstreamError) as err:
        await adapter.generate(image("x [sim:fail]", model="z-image-turbo"))
    assert err.value.kind == "failed" and "HTTP 500" in err.value.message
    started = time.monotonic()
    await adapter.generate(image("x [sim:delay=0.3]", model="z-image-turbo"))
    assert time.monotonic() - started >= 0.3
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await adapter.generate(image("x [sim:hang]", model="z-image-turbo"))


async def test_the_sandbox_rejects_what_dashscope_would(adapter: DashScopeImageAdapter) -> None:
    tiny = png.render(64, 64, "tiny")  # under DashScope's 240 px minimum
    with pytest.raises(UpstreamError) as err:
        await adapter.generate(image(references=(Reference("image", tiny, "image/png"),)))
    assert err.value.kind == "rejected" and "240 to 8000" in err.value.message


async def test_create_bodies_are_logged_with_data_urls_summarised(
    adapter: DashScopeImageAdapter, sandbox: tuple[str, web.Application]
) -> None:
    prompt = f"logged edit {uuid.uuid4().hex[:8]}"
    await adapter.generate(image(prompt, references=(Reference("image", PNG_16_9, "image/png"),)))
    (entry,) = [e for e in sandbox[1][REQUEST_LOG] if prompt in orjson.dumps(e["body"]).decode()]
    assert entry["path"] == dashscope.ASYNC_PATH
    assert entry["authorization"] == f"Bearer {KEY}"
    content = entry["body"]["input"]["messages"][0]["content"]
    assert content == [
        {"text": prompt},
        {"image": f"data:image/png;base64,[{len(PNG_16_9)} bytes]"},
    ]


async def test_fail_route_fails_only_the_labelled_provider(
    sandbox: tuple[str, web.Application],
) -> None:
    prompt = f"x [sim:fail-route=primary] {uuid.uuid4().hex[:8]}"
    primary = dataclasses.replace(provider(sandbox[0]), headers=(("X-Sandbox-Route", "primary"),))
    for model in ("wan2.7-image", "z-image-turbo"):
        adapter = DashScopeImageAdapter(primary)
        try:
            with pytest.raises(UpstreamError) as err:
                await adapter.generate(image(prompt, model=model))
        finally:
            await adapter.close()
        assert err.value.kind == "failed" and "HTTP 503" in err.value.message
    backup = DashScopeImageAdapter(
        dataclasses.replace(provider(sandbox[0]), headers=(("X-Sandbox-Route", "backup"),))
    )
    try:
        result = await backup.generate(image(prompt))
    finally:
        await backup.close()
    assert result.content_type == "image/png"
    routes = [e.get("route") for e in sandbox[1][REQUEST_LOG] if prompt in str(e["body"])]
    assert routes[-1] == "backup"


def _encoded(width: int, height: int, fmt: str) -> bytes:
    out = BytesIO()
    Image.new("RGB", (width, height), (10, 120, 200)).save(out, fmt)
    return out.getvalue()


@pytest.mark.parametrize(("fmt", "kind"), [("JPEG", "image/jpeg"), ("WEBP", "image/webp")])
def test_every_reference_format_is_held_to_240_to_8000_px(fmt: str, kind: str) -> None:
    """Not only PNGs: DashScope measures JPEG and WEBP references too."""
    with pytest.raises(ApiError, match="240 to 8000"):
        dashscope.parse_create(body(images=(data_url(_encoded(64, 64, fmt), kind),)), True)
    with pytest.raises(ApiError, match=r"1:8\.\.8:1"):
        dashscope.parse_create(body(images=(data_url(_encoded(2700, 300, fmt), kind),)), True)
    spec = dashscope.parse_create(body(images=(data_url(_encoded(480, 240, fmt), kind),)), True)
    assert spec.references[0].ratio == Fraction(2, 1)


def test_moderation_is_a_400_data_inspection_failed() -> None:
    with pytest.raises(ApiError) as err:
        dashscope.parse_create(body("a scene [sim:moderation]"), True)
    assert (err.value.status, err.value.code) == (400, "DataInspectionFailed")
