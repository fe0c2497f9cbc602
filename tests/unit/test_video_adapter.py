"""The Ark video-task adapter: pure bodies, a strict fake upstream, and the sandbox."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest

from sandbox import png
from sandbox.server import SAMPLE_MP4
from services.providers.adapters.openai_chat_translate import UpstreamProtocolError
from services.providers.adapters.video_task import VideoTaskAdapter
from services.providers.adapters.video_task_translate import (
    create_body,
    failure_message,
    task_id_of,
    task_state,
)
from services.providers.errors import UpstreamError
from services.providers.media import Reference, TaskState, VideoRequest
from services.providers.media import VideoTaskAdapter as VideoTaskAdapterProtocol
from services.providers.routes import Provider
from tests.support.clips import mp3
from tests.unit.fake_upstream import Respond, raising
from tests.unit.test_sandbox_server import KEY, ThreadedSandbox

API_KEY = "ark-test-0123456789abcdefghij"
PROVIDER = Provider(
    name="ark",
    protocol="video-task",
    base_url="http://ark.test/api/v3",
    api_key=API_KEY,
    connect_timeout_seconds=1.5,
    read_timeout_seconds=7.0,
    max_connections=4,
    max_tokens_field="max_tokens",
    poll_interval_seconds=2.5,
)
PNG = png.render(8, 8, "frame")
# What Seedance 2.0 takes as an image: 300 to 6000 px a side.
FRAME = png.render(320, 320, "frame")
MP3 = mp3(3)  # a real MPEG audio stream: the sandbox reads its length
JPEG = b"\xff\xd8\xff\xe0" + b"\0" * 16
MP4 = SAMPLE_MP4.read_bytes()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def video(**overrides: Any) -> VideoRequest:
    return VideoRequest(
        **{"upstream_model": "dreamina-seedance-2-0-fast-260128", "prompt": "rice terraces"}
        | overrides
    )


# --- request building --------------------------------------------------------------------


def test_text_only_body_sends_only_what_was_asked() -> None:
    assert create_body(video()) == {
        "model": "dreamina-seedance-2-0-fast-260128",
        "content": [{"type": "text", "text": "rice terraces"}],
    }


def test_full_body() -> None:
    body = create_body(
        video(
            resolution="1080p",
            duration_seconds=6,
            ratio="16:9",
            generate_audio=False,
            web_search=True,
            return_last_frame=True,
            seed=0,
            real_person_mode=True,
        )
    )
    assert body == {
        "model": "dreamina-seedance-2-0-fast-260128",
        "content": [{"type": "text", "text": "rice terraces"}],
        "resolution": "1080p",
        "ratio": "16:9",
        "duration": 6,
        "seed": 0,
        "generate_audio": False,
        "return_last_frame": True,
        "tools": [{"type": "web_search"}],
    }


def test_references_become_data_url_items_with_ark_roles() -> None:
    refs = (
        Reference("first_frame", PNG, "image/png"),
        Reference("last_frame", PNG, "image/png"),
        Reference("image", JPEG, "image/jpeg"),
        Reference("video", MP4, "video/mp4"),
        Reference("audio", MP3, "audio/mpeg"),
    )
    content = create_body(video(references=refs))["content"]
    assert content[0] == {"type": "text", "text": "rice terraces"}
    assert content[1:] == [
        {
            "type": "image_url",
            "image_url": {"url": f"data:image/png;base64,{b64(PNG)}"},
            "role": "first_frame",
        },
        {
            "type": "image_url",
            "image_url": {"url": f"data:image/png;base64,{b64(PNG)}"},
            "role": "last_frame",
        },
        {
            "type": "image_url",
            "image_url": {"url": f"data:image/jpeg;base64,{b64(JPEG)}"},
            "role": "reference_image",
        },
        {
            "type": "video_url",
            "video_url": {"url": f"data:video/mp4;base64,{b64(MP4)}"},
            "role": "reference_video",
        },
        {
            "type": "audio_url",
            "audio_url": {"url": f"data:audio/mp3;base64,{b64(MP3)}"},
            "role": "reference_audio",
        },
    ]


# --- answer parsing ----------------------------------------------------------------------


def test_task_id_of() -> None:
    assert task_id_of(b'{"id": "cgt-20260405024433-sbj8r"}') == "cgt-20260405024433-sbj8r"
    for raw in (b"{}", b'{"id": 5}', b'{"id": "../x"}', b'{"id": ""}', b"[]"):
        with pytest.raises(UpstreamProtocolError):
            task_id_of(raw)


def test_running_states() -> None:
    assert task_state(b'{"id": "t", "status": "queued"}') == TaskState(
        status="queued", extra={"upstream_status": "queued"}
    )
    assert task_state(b'{"id": "t", "status": "running"}').status == "running"


def test_succeeded_state() -> None:
    raw = orjson.dumps(
        {
            "id": "cgt-1",
            "model": "dreamina-seedance-2-0-fast-260128",
            "status": "succeeded",
            "content": {"video_url": "https://tos/v.mp4", "last_frame_url": "https://tos/f.png"},
            "usage": {"completion_tokens": 108900, "total_tokens": 108900},
            "seed": 78674,
            "resolution": "720p",
            "ratio": "16:9",
            "duration": 5,
            "framespersecond": 24,
            "error": None,
        }
    )
    assert task_state(raw) == TaskState(
        status="succeeded",
        video_url="https://tos/v.mp4",
        last_frame_url="https://tos/f.png",
        duration_seconds=5,
        extra={
            "upstream_status": "succeeded",
            "resolution": "720p",
            "ratio": "16:9",
            "seed": "78674",
            "framespersecond": "24",
            "model": "dreamina-seedance-2-0-fast-260128",
            "completion_tokens": "108900",
        },
    )
    no_duration = task_state(b'{"status": "succeeded", "content": {"video_url": "https://v"}}')
    assert no_duration.duration_seconds == 0 and no_duration.last_frame_url == ""


def test_failed_states_carry_a_short_safe_message() -> None:
    raw = orjson.dumps(
        {
            "status": "failed",
            "error": {
                "code": "OutputVideoSensitiveContentDetected",
                "message": f"The output may contain sensitive content ({API_KEY})."
                " Request id: 0217204684702018",
            },
        }
    )
    state = task_state(raw, API_KEY)
    assert state.status == "failed"
    assert state.error == (
        "The upstream could not generate the video:"
        " The output may contain sensitive content ([redacted])."
    )
    assert state.extra["error_code"] == "OutputVideoSensitiveContentDetected"
    long = task_state(orjson.dumps({"status": "failed", "error": {"message": "x" * 5000}}))
    assert len(long.error) <= 300
    bare = task_state(b'{"status": "failed", "error": null}')
    assert bare.error == "The upstream could not generate the video."
    assert failure_message(b"not json") == "The upstream could not generate the video."


@pytest.mark.parametrize(("status", "word"), [("cancelled", "cancelled"), ("expired", "expired")])
def test_cancelled_and_expired_are_failures(status: str, word: str) -> None:
    state = task_state(orjson.dumps({"status": status}))
    assert state.status == "failed" and word in state.error


@pytest.mark.parametrize(
    "raw",
    [
        b'{"status": "paused"}',
        b"{}",
        b"[]",
        b'{"status": "succeeded", "content": {}}',
        b'{"status": "succeeded"}',
    ],
)
def test_malformed_task_answers(raw: bytes) -> None:
    with pytest.raises(UpstreamProtocolError):
        task_state(raw)


# --- the adapter against a strict fake upstream ------------------------------------------


class FakeUpstream:
    def __init__(self, respond: Respond) -> None:
        self.respond = respond
        self.requests: list[httpx.Request] = []

    async def handle(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        self.requests.append(request)
        return self.respond(request)


@asynccontextmanager
async def connected(respond: Respond) -> AsyncIterator[tuple[VideoTaskAdapter, FakeUpstream]]:
    upstream = FakeUpstream(respond)
    adapter = VideoTaskAdapter(PROVIDER)
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
        yield adapter, upstream
    finally:
        await adapter.close()


def json_answer(body: Any, status: int = 200) -> Respond:
    def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=orjson.dumps(body))

    return respond


def test_the_adapter_is_a_video_task_adapter() -> None:
    adapter: VideoTaskAdapterProtocol = VideoTaskAdapter(PROVIDER)  # checked by mypy
    assert adapter.poll_interval_seconds == 2.5


async def test_submit_request() -> None:
    async with connected(json_answer({"id": "cgt-20260101000000-abcde"})) as (adapter, upstream):
        task_id = await adapter.submit(
            video(
                duration_seconds=5,
                request_id="job_9",
                references=(Reference("first_frame", PNG, "image/png"),),
            )
        )
    assert task_id == "cgt-20260101000000-abcde"
    (sent,) = upstream.requests
    assert sent.method == "POST"
    assert str(sent.url) == "http://ark.test/api/v3/contents/generations/tasks"
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["x-client-request-id"] == "job_9"
    body = orjson.loads(sent.content)
    assert body["duration"] == 5
    assert body["content"][1]["role"] == "first_frame"


async def test_poll_request() -> None:
    answer = {"id": "cgt-1", "status": "running"}
    async with connected(json_answer(answer)) as (adapter, upstream):
        state = await adapter.poll("cgt-1")
    assert state.status == "running"
    (sent,) = upstream.requests
    assert sent.method == "GET"
    assert str(sent.url) == "http://ark.test/api/v3/contents/generations/tasks/cgt-1"
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"


async def test_poll_of_a_vanished_task_is_a_failed_task() -> None:
    missing = {"error": {"code": "ResourceNotFound", "message": "not found"}}
    async with connected(json_answer(missing, 404)) as (adapter, _):
        state = await adapter.poll("cgt-1")
    assert state.status == "failed" and "no longer exists" in state.error


@pytest.mark.parametrize("task_id", ["../admin", "a/b", "", "x?y=1", "." * 3])
async def test_poll_refuses_ids_that_are_not_ids(task_id: str) -> None:
    async with connected(json_answer({})) as (adapter, upstream):
        with pytest.raises(UpstreamError) as err:
            await adapter.poll(task_id)
    assert err.value.kind == "failed" and upstream.requests == []


SUBMIT_ERRORS = [
    (json_answer({"error": {"code": "InvalidParameter", "message": "bad ratio"}}, 400), "rejected"),
    (json_answer({"error": {"message": "too many"}}, 429), "rate_limited"),
    (json_answer({"error": {"message": "boom"}}, 500), "failed"),
    (json_answer({"error": {"message": "no key"}}, 401), "failed"),
    (json_answer({"no": "id"}), "failed"),
    (raising(httpx.ConnectError), "failed"),
    (raising(httpx.ReadTimeout), "timeout"),
]


@pytest.mark.parametrize(("respond", "kind"), SUBMIT_ERRORS)
async def test_submit_errors(respond: Respond, kind: str) -> None:
    async with connected(respond) as (adapter, _):
        with pytest.raises(UpstreamError) as err:
            await adapter.submit(video())
    assert err.value.kind == kind


async def test_submit_rejection_message_is_scrubbed() -> None:
    body = {"error": {"message": f"bad key {API_KEY} here", "code": "InvalidParameter"}}
    async with connected(json_answer(body, 400)) as (adapter, _):
        with pytest.raises(UpstreamError) as err:
            await adapter.submit(video())
    assert API_KEY not in err.value.message and "[redacted]" in err.value.message


@pytest.mark.parametrize(
    ("respond", "kind"),
    [
        # A poll is never the client's fault: even a 400 is "failed".
        (json_answer({"error": {"message": "bad"}}, 400), "failed"),
        (json_answer({"error": {"message": "busy"}}, 503), "failed"),
        (json_answer({"status": "dancing"}), "failed"),
        (raising(httpx.ReadTimeout), "timeout"),
        (raising(httpx.ConnectError), "failed"),
    ],
)
async def test_poll_errors(respond: Respond, kind: str) -> None:
    async with connected(respond) as (adapter, _):
        with pytest.raises(UpstreamError) as err:
            await adapter.poll("cgt-1")
    assert err.value.kind == kind


async def collect(stream: AsyncIterator[bytes]) -> bytes:
    return b"".join([piece async for piece in stream])


async def test_download_streams_without_our_key() -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=MP4, headers={"Content-Type": "video/mp4"})

    async with connected(respond) as (adapter, upstream):
        data = await collect(adapter.download("https://tos.example/v.mp4?sig=1", len(MP4)))
    assert data == MP4
    (sent,) = upstream.requests
    assert str(sent.url) == "https://tos.example/v.mp4?sig=1"
    assert "authorization" not in sent.headers


async def test_download_cap_by_declared_length() -> None:
    async with connected(lambda r: httpx.Response(200, content=MP4)) as (adapter, _):
        with pytest.raises(UpstreamError) as err:
            await collect(adapter.download("https://tos.example/v.mp4", len(MP4) - 1))
    assert err.value.kind == "failed" and "size limit" in err.value.message


async def test_download_cap_while_streaming() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"x" * 1000

    def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=chunks())  # no Content-Length: chunked

    got: list[bytes] = []
    async with connected(respond) as (adapter, _):
        with pytest.raises(UpstreamError) as err:
            async for piece in adapter.download("https://tos.example/v.mp4", 2500):
                got.append(piece)
    assert "size limit" in err.value.message
    assert sum(map(len, got)) <= 2500


@pytest.mark.parametrize(
    ("url", "respond", "kind"),
    [
        ("https://tos.example/gone.mp4", lambda r: httpx.Response(403), "failed"),
        ("https://tos.example/v.mp4", raising(httpx.ReadTimeout), "timeout"),
        ("file:///etc/passwd", lambda r: httpx.Response(200), "failed"),
        ("ftp://tos.example/v.mp4", lambda r: httpx.Response(200), "failed"),
    ],
)
async def test_download_errors(url: str, respond: Respond, kind: str) -> None:
    async with connected(respond) as (adapter, _):
        with pytest.raises(UpstreamError) as err:
            await collect(adapter.download(url, 10**6))
    assert err.value.kind == kind


# --- the adapter against the real sandbox ------------------------------------------------


@pytest.fixture(scope="module")
def sandbox_url() -> Iterator[str]:
    with ThreadedSandbox() as url:
        yield url


@asynccontextmanager
async def sandbox_adapter(url: str) -> AsyncIterator[VideoTaskAdapter]:
    provider = dataclasses.replace(
        PROVIDER, base_url=f"{url}/api/v3", api_key=KEY, poll_interval_seconds=0.05
    )
    adapter = VideoTaskAdapter(provider)
    try:
        yield adapter
    finally:
        await adapter.close()


async def run_to_end(adapter: VideoTaskAdapter, task_id: str, limit: float = 5) -> list[TaskState]:
    states: list[TaskState] = []
    async with asyncio.timeout(limit):
        while not states or states[-1].status in ("queued", "running"):
            states.append(await adapter.poll(task_id))
            await asyncio.sleep(adapter.poll_interval_seconds)
    return states


async def sandbox_tasks(url: str, prompt: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=url) as http:
        rows = (await http.get("/_sandbox/tasks")).json()
    return [r for r in rows if r["prompt"] == prompt]


async def test_sandbox_lifecycle_and_download(sandbox_url: str) -> None:
    prompt = f"drone shot [sim:delay=1] {uuid.uuid4().hex[:8]}"
    async with sandbox_adapter(sandbox_url) as adapter:
        task_id = await adapter.submit(
            video(
                prompt=prompt,
                duration_seconds=7,
                ratio="9:16",
                return_last_frame=True,
                references=(Reference("first_frame", FRAME, "image/png"),),
            )
        )
        states = await run_to_end(adapter, task_id)
        final = states[-1]
        assert states[0].status == "queued"
        assert "running" in [s.status for s in states]
        assert final.status == "succeeded"
        assert final.duration_seconds == 7  # what we bill
        assert final.video_url.startswith(f"{sandbox_url}/_sandbox/files/")
        data = await collect(adapter.download(final.video_url, 10**6))
        assert len(data) == len(MP4) and data[4:8] == b"ftyp"  # retimed to 7 s
        frame = await collect(adapter.download(final.last_frame_url, 10**6))
        assert frame[:8] == b"\x89PNG\r\n\x1a\n"
        with pytest.raises(UpstreamError):
            await collect(adapter.download(final.video_url, len(MP4) - 1))
    # Polling many times created exactly one task.
    assert [r["id"] for r in await sandbox_tasks(sandbox_url, prompt)] == [task_id]


async def test_sandbox_failed_task(sandbox_url: str) -> None:
    async with sandbox_adapter(sandbox_url) as adapter:
        task_id = await adapter.submit(video(prompt="x [sim:fail]"))
        state = await adapter.poll(task_id)
    assert state.status == "failed"
    assert state.error == (
        "The upstream could not generate the video: sandbox: simulated video generation failure."
    )
    assert state.extra["error_code"] == "InternalServiceError"


async def test_sandbox_hanging_task_keeps_running(sandbox_url: str) -> None:
    async with sandbox_adapter(sandbox_url) as adapter:
        task_id = await adapter.submit(video(prompt="x [sim:hang]"))
        with pytest.raises(TimeoutError):
            await run_to_end(adapter, task_id, limit=0.3)
        assert (await adapter.poll(task_id)).status == "running"


@pytest.mark.parametrize(
    ("code", "kind"), [(429, "rate_limited"), (400, "rejected"), (503, "failed")]
)
async def test_sandbox_status_on_create(sandbox_url: str, code: int, kind: str) -> None:
    prompt = f"x [sim:status={code}] {uuid.uuid4().hex[:8]}"
    async with sandbox_adapter(sandbox_url) as adapter:
        with pytest.raises(UpstreamError) as err:
            await adapter.submit(video(prompt=prompt))
    assert err.value.kind == kind
    assert await sandbox_tasks(sandbox_url, prompt) == []


async def test_sandbox_unknown_task_is_failed(sandbox_url: str) -> None:
    async with sandbox_adapter(sandbox_url) as adapter:
        state = await adapter.poll("cgt-20990101000000-nothere")
    assert state.status == "failed"


async def test_sandbox_rejects_what_ark_would(sandbox_url: str) -> None:
    audio_only = video(references=(Reference("audio", MP3, "audio/mpeg"),))
    async with sandbox_adapter(sandbox_url) as adapter:
        with pytest.raises(UpstreamError) as err:
            await adapter.submit(audio_only)
    assert err.value.kind == "rejected"
    assert "Reference audio needs" in err.value.message
