"""The sandbox's image and video-task endpoints over real loopback HTTP."""

from __future__ import annotations

import base64
import struct
import time
import uuid
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import mutagen
import pytest

from sandbox import png, video_tasks
from sandbox.server import SAMPLE_MP4
from tests.unit.test_sandbox_media_logic import png_chunks
from tests.unit.test_sandbox_server import AUTH, ThreadedSandbox

TASKS = "/api/v3/contents/generations/tasks"


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with ThreadedSandbox() as url:
        yield url


@pytest.fixture
def http(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, headers=AUTH, timeout=10) as client:
        yield client


def unique(text: str) -> str:
    """A prompt no other test uses, so the shared sandbox's logs can be filtered by it."""
    return f"{text} #{uuid.uuid4().hex[:8]}"


def png_size(data: bytes) -> tuple[int, int]:
    chunks = png_chunks(data)  # also checks every CRC
    assert chunks[0][0] == b"IHDR"
    width, height = struct.unpack(">II", chunks[0][1][:8])
    return width, height


def first_image(response: httpx.Response) -> bytes:
    assert response.status_code == 200, response.text
    return base64.b64decode(response.json()["data"][0]["b64_json"])


# --- images ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "ratio"),
    [
        ("1024x1024", (1, 1)),
        ("1024x576", (16, 9)),
        ("576x1024", (9, 16)),
        ("2016x864", (21, 9)),
        ("1344x576", (21, 9)),
        ("1008x672", (3, 2)),
        ("960x768", (5, 4)),
        ("3840x2160", (16, 9)),
        ("432x1008", (9, 21)),
    ],
)
def test_generation_png_has_the_requested_ratio_exactly(
    http: httpx.Client, size: str, ratio: tuple[int, int]
) -> None:
    response = http.post(
        "/v1/images/generations", json={"model": "gpt-image-2", "prompt": "temple", "size": size}
    )
    width, height = png_size(first_image(response))
    assert width * ratio[1] == height * ratio[0]
    assert max(width, height) <= png.RENDER_CAP
    body = response.json()
    assert body["size"] == size and body["output_format"] == "png"
    assert abs(body["created"] - time.time()) < 60
    w, h = (int(x) for x in size.split("x"))
    assert body["usage"]["output_tokens"] == -(-w * h // 1024)


def test_generation_answer_shape_and_determinism(http: httpx.Client) -> None:
    payload = {"model": "gpt-image-2", "prompt": "sunset over Bromo", "n": 2}
    response = http.post("/v1/images/generations", json=payload)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {
        "created",
        "background",
        "data",
        "output_format",
        "quality",
        "size",
        "usage",
    }
    images = [base64.b64decode(d["b64_json"]) for d in body["data"]]
    assert len(images) == 2 and images[0] != images[1]
    again = http.post("/v1/images/generations", json=payload).json()
    assert [d["b64_json"] for d in again["data"]] == [d["b64_json"] for d in body["data"]]
    other = http.post("/v1/images/generations", json={**payload, "prompt": "rice terraces"})
    assert other.json()["data"][0]["b64_json"] != body["data"][0]["b64_json"]


def test_xai_style_aspect_ratio_and_url_answers(http: httpx.Client, base_url: str) -> None:
    response = http.post(
        "/v1/images/generations",
        json={
            "model": "grok-imagine-image",
            "prompt": "city",
            "aspect_ratio": "20:9",
            "resolution": "2k",
            "response_format": "url",
        },
    )
    assert response.status_code == 200, response.text
    (item,) = response.json()["data"]
    assert set(item) == {"url"} and item["url"].startswith(f"{base_url}/_sandbox/files/img-")
    # Like a pre-signed URL: no key needed.
    fetched = httpx.get(item["url"], timeout=10)
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
    width, height = png_size(fetched.content)
    assert width * 9 == height * 20


def test_edits_accept_multipart_image_parts(http: httpx.Client) -> None:
    reference = png.render(8, 8, "ref")
    prompt = unique("make it Ghibli")
    response = http.post(
        "/v1/images/edits",
        data={"model": "gpt-image-2", "prompt": prompt, "size": "1024x576"},
        files=[
            ("image[]", ("a.png", reference, "image/png")),
            ("image[]", ("b.png", reference, "image/png")),
        ],
    )
    width, height = png_size(first_image(response))
    assert width * 9 == height * 16
    assert response.json()["usage"]["input_tokens_details"]["image_tokens"] == 512
    (entry,) = [
        e for e in http.get("/_sandbox/requests").json() if e["body"].get("prompt") == prompt
    ]
    assert entry["path"] == "/v1/images/edits"
    assert entry["authorization"] == AUTH["Authorization"]
    assert [f["field"] for f in entry["body"]["files"]] == ["image[]", "image[]"]
    assert {f["sniffed"] for f in entry["body"]["files"]} == {"image/png"}


def test_edits_accept_a_single_image_part_and_json(http: httpx.Client) -> None:
    reference = png.render(8, 8, "ref")
    single = http.post(
        "/v1/images/edits",
        data={"model": "m", "prompt": "edit"},
        files={"image": ("a.png", reference, "image/png")},
    )
    assert single.status_code == 200, single.text
    url = "data:image/png;base64," + base64.b64encode(reference).decode()
    as_json = http.post(
        "/v1/images/edits", json={"model": "m", "prompt": "edit", "images": [{"image_url": url}]}
    )
    assert as_json.status_code == 200, as_json.text


@pytest.mark.parametrize(
    ("files", "data", "param"),
    [
        ([], {"model": "m", "prompt": "p"}, "image"),
        (
            [("image[]", ("a.txt", b"hello", "text/plain"))],
            {"model": "m", "prompt": "p"},
            "image[0]",
        ),
        (
            [("image[]", ("a.png", png.render(2, 2, "x"), "image/png"))],
            {"model": "m", "prompt": "p", "size": "huge"},
            "size",
        ),
        (
            [("image[]", ("a.png", png.render(2, 2, "x"), "image/png"))],
            {"model": "m", "prompt": "p", "colour": "red"},
            "colour",
        ),
    ],
)
def test_bad_edits_are_400(
    http: httpx.Client, files: list[Any], data: dict[str, str], param: str
) -> None:
    # A dummy part keeps httpx on multipart even when no file is given.
    response = http.post(
        "/v1/images/edits", data=data, files=files or [("mask_note", ("n", b"", "text/plain"))]
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_edits_need_a_form_or_json(http: httpx.Client) -> None:
    response = http.post("/v1/images/edits", content=b"x", headers={"Content-Type": "text/plain"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_content_type"


@pytest.mark.parametrize("path", ["/v1/images/generations", "/v1/images/edits", TASKS])
def test_media_endpoints_need_the_key(base_url: str, path: str) -> None:
    body = {"model": "m", "prompt": "p", "content": [{"type": "text", "text": "p"}]}
    for headers in ({}, {"Authorization": "Bearer sk-wrong"}):
        response = httpx.post(f"{base_url}{path}", json=body, headers=headers, timeout=10)
        assert response.status_code == 401
        error = response.json()["error"]
        if path == TASKS:
            assert (error["type"], error["code"]) == ("Unauthorized", "AuthenticationError")
        else:
            assert error["code"] == "invalid_api_key"
    poll = httpx.get(f"{base_url}{TASKS}/cgt-x", timeout=10)
    assert poll.status_code == 401


def test_image_directives(http: httpx.Client) -> None:
    def ask(prompt: str) -> httpx.Response:
        return http.post("/v1/images/generations", json={"model": "m", "prompt": prompt})

    failed = ask("x [sim:fail]")
    assert failed.status_code == 500
    assert failed.json()["error"]["type"] == "server_error"
    limited = ask("x [sim:status=429]")
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    start = time.monotonic()
    assert ask("x [sim:delay=0.3]").status_code == 200
    assert time.monotonic() - start >= 0.3
    typo = ask("x [sim:tokens=3]")
    assert typo.status_code == 400 and typo.json()["error"]["param"] == "prompt"
    # The directive does not change the picture.
    assert first_image(ask("x [sim:delay=0]")) == first_image(ask("x"))


def test_image_hang_holds_until_the_client_gives_up(base_url: str, http: httpx.Client) -> None:
    start = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{base_url}/v1/images/generations",
            json={"model": "m", "prompt": "x [sim:hang]"},
            headers=AUTH,
            timeout=httpx.Timeout(10, read=0.4),
        )
    assert time.monotonic() - start >= 0.4
    # The sandbox keeps serving others meanwhile and afterwards.
    assert http.get("/healthz").status_code == 200


# --- video tasks -------------------------------------------------------------------------


def create_task(http: httpx.Client, text: str, **params: Any) -> str:
    response = http.post(
        TASKS,
        json={"model": "seedance-2.0-fast", "content": [{"type": "text", "text": text}], **params},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body) == ["id"]
    return str(body["id"])


def poll(http: httpx.Client, task_id: str) -> dict[str, Any]:
    response = http.get(f"{TASKS}/{task_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_task_lifecycle_queued_running_succeeded(http: httpx.Client, base_url: str) -> None:
    prompt = unique("drone over rice terraces [sim:delay=1]")
    task_id = create_task(http, prompt, duration=7, ratio="9:16", return_last_frame=True)
    assert task_id.startswith("cgt-")
    seen: list[str] = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        body = poll(http, task_id)
        if not seen or seen[-1] != body["status"]:
            seen.append(body["status"])
        if body["status"] == "succeeded":
            break
        assert "content" not in body
        time.sleep(0.04)
    assert seen == ["queued", "running", "succeeded"]
    assert body["id"] == task_id and body["model"] == "seedance-2.0-fast"
    assert body["error"] is None
    assert body["duration"] == 7 and body["ratio"] == "9:16" and body["resolution"] == "720p"
    assert body["updated_at"] >= body["created_at"]
    assert body["usage"]["completion_tokens"] == -(-720 * 1280 * 24 * 7 // 1024)
    files = f"{base_url}/_sandbox/files/{task_id}"
    assert body["content"] == {"video_url": f"{files}.mp4", "last_frame_url": f"{files}.png"}

    video = httpx.get(body["content"]["video_url"], timeout=10)  # no key: pre-signed style
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    assert video.content[4:8] == b"ftyp"
    # The sample's frames, its headers saying the 7 s that were asked for.
    assert len(video.content) == len(SAMPLE_MP4.read_bytes())
    found = mutagen.File(BytesIO(video.content))
    assert found is not None and found.info.length == 7
    frame = httpx.get(body["content"]["last_frame_url"], timeout=10)
    width, height = png_size(frame.content)
    assert width * 16 == height * 9

    (row,) = [t for t in http.get("/_sandbox/tasks").json() if t["prompt"] == prompt]
    assert row == {
        "id": task_id,
        "model": "seedance-2.0-fast",
        "prompt": prompt,
        "status": "succeeded",
        "created_at": body["created_at"],
    }


def test_files_exist_only_for_finished_tasks(http: httpx.Client, base_url: str) -> None:
    task_id = create_task(http, "slow [sim:delay=30]")
    assert httpx.get(f"{base_url}/_sandbox/files/{task_id}.mp4", timeout=10).status_code == 404
    done = create_task(http, "quick")
    assert httpx.get(f"{base_url}/_sandbox/files/{done}.mp4", timeout=10).status_code == 200
    # No last frame was asked for.
    assert httpx.get(f"{base_url}/_sandbox/files/{done}.png", timeout=10).status_code == 404
    assert httpx.get(f"{base_url}/_sandbox/files/nothing.mp4", timeout=10).status_code == 404


def test_failed_task(http: httpx.Client) -> None:
    body = poll(http, create_task(http, "crash [sim:fail]"))
    assert body["status"] == "failed"
    assert body["error"] == {
        "code": "InternalServiceError",
        "message": video_tasks.FAILURE_MESSAGE,
    }
    assert "content" not in body


def test_hanging_task_stays_running(http: httpx.Client) -> None:
    task_id = create_task(http, "forever [sim:hang]")
    assert poll(http, task_id)["status"] == "running"
    time.sleep(0.3)
    assert poll(http, task_id)["status"] == "running"


def test_status_directive_answers_the_create_call(http: httpx.Client) -> None:
    prompt = unique("x [sim:status=503]")
    response = http.post(TASKS, json={"model": "m", "content": [{"type": "text", "text": prompt}]})
    assert response.status_code == 503
    assert response.json()["error"]["type"] == "InternalServiceError"
    assert not [t for t in http.get("/_sandbox/tasks").json() if t["prompt"] == prompt]


def test_bad_create_is_an_ark_400(http: httpx.Client) -> None:
    response = http.post(
        TASKS, json={"model": "m", "content": [{"type": "text", "text": "x"}], "ratio": "5:4"}
    )
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "InvalidParameter",
        "message": response.json()["error"]["message"],
        "param": "ratio",
        "type": "BadRequest",
    }
    assert (
        http.post(TASKS, content=b"{", headers={"Content-Type": "application/json"}).json()[
            "error"
        ]["type"]
        == "BadRequest"
    )


def test_unknown_task_is_an_ark_404(http: httpx.Client) -> None:
    response = http.get(f"{TASKS}/cgt-nope")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "ResourceNotFound"


def test_references_arrive_and_are_logged_small(http: httpx.Client) -> None:
    frame = png.render(320, 320, "first")  # Seedance 2.0 takes 300..6000 px a side
    prompt = unique("animate")
    response = http.post(
        TASKS,
        json={
            "model": "seedance-2.0-fast-img2video",
            "content": [
                {"type": "text", "text": prompt},
                {
                    "type": "image_url",
                    "image_url": {
                        "url": "data:image/png;base64," + base64.b64encode(frame).decode()
                    },
                    "role": "first_frame",
                },
            ],
        },
    )
    assert response.status_code == 200, response.text
    assert poll(http, response.json()["id"])["ratio"] == "adaptive"
    (entry,) = [
        e
        for e in http.get("/_sandbox/requests").json()
        if e["path"] == TASKS and e["body"]["content"][0].get("text") == prompt
    ]
    url = entry["body"]["content"][1]["image_url"]["url"]
    assert url == f"data:image/png;base64,[{len(frame)} bytes]"


def test_task_list_counts_creations_per_prompt(http: httpx.Client) -> None:
    prompt = unique("once")
    task_id = create_task(http, prompt)
    for _ in range(3):
        poll(http, task_id)  # polling creates nothing
    rows = [t for t in http.get("/_sandbox/tasks").json() if t["prompt"] == prompt]
    assert [r["id"] for r in rows] == [task_id]
    create_task(http, prompt)
    assert len([t for t in http.get("/_sandbox/tasks").json() if t["prompt"] == prompt]) == 2


def test_clearing_tasks() -> None:
    with ThreadedSandbox() as url, httpx.Client(base_url=url, headers=AUTH, timeout=10) as http:
        create_task(http, "a")
        assert len(http.get("/_sandbox/tasks").json()) == 1
        assert http.delete("/_sandbox/tasks").status_code == 204
        assert http.get("/_sandbox/tasks").json() == []


# --- the video asset ---------------------------------------------------------------------


def mp4_boxes(data: bytes) -> dict[bytes, bytes]:
    boxes, pos = {}, 0
    while pos < len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        assert size >= 8
        boxes[kind] = data[pos + 8 : pos + size]
        pos += size
    assert pos == len(data)
    return boxes


def test_sample_mp4_is_a_small_real_h264_mp4() -> None:
    data = Path(SAMPLE_MP4).read_bytes()
    assert 1000 < len(data) < 64 * 1024
    boxes = mp4_boxes(data)
    assert list(boxes)[:2] == [b"ftyp", b"moov"]  # fast start: the index comes first
    assert boxes[b"ftyp"][:4] == b"isom"
    assert b"mdat" in boxes
    moov = boxes[b"moov"]
    assert b"avc1" in moov and b"avcC" in moov  # H.264
    mvhd = moov[moov.index(b"mvhd") + 4 :]
    timescale, duration = struct.unpack(">II", mvhd[12:20])  # version 0 layout
    assert 1.5 <= duration / timescale <= 2.5
