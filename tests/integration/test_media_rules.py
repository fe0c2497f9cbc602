"""Each model's upstream rules: refused at submit (nothing held), adapted by the worker,
and job errors that say whose fault a failure was."""

from __future__ import annotations

from io import BytesIO
from typing import Any

import httpx
from aiport.v1 import billing_pb2_grpc
from PIL import Image

from tests.integration.conftest import Account
from tests.integration.test_jobs import poll, settled_state, state, submit

CONTENT_POLICY = "The provider refused the prompt or image under its content policy."


def uploaded_image(http: httpx.Client, width: int, height: int, fmt: str = "PNG") -> str:
    out = BytesIO()
    Image.new("RGB", (width, height), (30, 140, 90)).save(out, fmt)
    name, kind = {"PNG": ("ref.png", "image/png"), "JPEG": ("ref.jpg", "image/jpeg")}[fmt]
    response = http.post("/v1/image/upload", files={"file": (name, out.getvalue(), kind)})
    assert response.status_code == 200, response.text
    url: str = response.json()["url"]
    return url


def test_seedance_fast_at_1080p_is_a_400_with_nothing_held(
    http: httpx.Client, account: Account, billing: billing_pb2_grpc.BillingStub
) -> None:
    before = state(billing, account.account_id)
    response = http.post(
        "/v1/video/generate",
        json={"model": "seedance-2.0-fast", "prompt": "rice terraces", "resolution": "1080p"},
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("resolution", "invalid_request")
    assert "480p, 720p" in error["message"]
    assert state(billing, account.account_id) == before  # no hold was ever placed


def test_a_64px_reference_on_wan_is_upscaled_and_succeeds(
    http: httpx.Client, account: Account, billing: billing_pb2_grpc.BillingStub
) -> None:
    url = uploaded_image(http, 64, 64)
    accepted = submit(
        http, "/v1/image/img2img", {"model": "wan-2.7-img2img", "prompt": "snow", "images": [url]}
    )
    job = poll(http, accepted["job_id"])
    assert job["status"] == "done", job
    assert job["actual_cost_idr"] == "550"
    assert job["error_code"] is None


def test_a_small_jpeg_first_frame_on_seedance_is_upscaled_and_succeeds(http: httpx.Client) -> None:
    url = uploaded_image(http, 120, 90, "JPEG")
    job = poll(
        http,
        submit(
            http,
            "/v1/video/img2video",
            {"prompt": "push in", "first_frame_url": url, "duration": 4},
        )["job_id"],
    )
    assert job["status"] == "done", job


def test_a_reference_no_resize_can_fit_fails_naming_the_limit_and_is_refunded(
    http: httpx.Client, account: Account, billing: billing_pb2_grpc.BillingStub
) -> None:
    before = state(billing, account.account_id)
    url = uploaded_image(http, 1000, 300)  # 3.3:1; Seedance takes 2.5:1 at most
    job = poll(
        http,
        submit(
            http, "/v1/video/img2video", {"prompt": "pan", "first_frame_url": url, "duration": 4}
        )["job_id"],
    )
    assert job["status"] == "failed"
    assert "aspect ratios up to 2.5:1" in job["error_message"]
    assert job["error_code"] == "invalid_input"
    assert job["error_message"] != "Provider failed. Please try again."
    assert settled_state(billing, account.account_id, before) == before


def test_reference_videos_are_measured_and_too_much_is_refused_and_refunded(
    http: httpx.Client, account: Account, billing: billing_pb2_grpc.BillingStub
) -> None:
    """Seedance takes 2-15 s per reference video and 15 s in all. Clips are not
    transcoded: a set over the limit fails as the client's input, with nothing kept.
    Our own results serve as clips (the sandbox's last as long as was asked)."""
    clips = {
        seconds: poll(
            http,
            submit(http, "/v1/video/generate", {"prompt": "clip", "duration": seconds})["job_id"],
        )["result_url"]
        for seconds in (4, 12)
    }
    fits = poll(
        http,
        submit(
            http, "/v1/video/multimodal", {"prompt": "like video1", "videos": [clips[4], clips[4]]}
        )["job_id"],
    )
    assert fits["status"] == "done", fits  # 8 s in all; the sandbox measured them too

    before = state(billing, account.account_id)
    over = poll(
        http,
        submit(
            http, "/v1/video/multimodal", {"prompt": "like video1", "videos": [clips[12], clips[4]]}
        )["job_id"],
    )
    assert (over["status"], over["error_code"]) == ("failed", "invalid_input")
    assert over["error_message"] == (
        "The reference videos add up to 16.0 s; this model takes at most 15 s of video in all."
    )
    assert settled_state(billing, account.account_id, before) == before

    audio = {"prompt": "x", "audios": ["https://example.com/a.mp3"]}
    alone = http.post("/v1/video/multimodal", json=audio)
    assert alone.status_code == 400, alone.text
    error = alone.json()["error"]
    assert error["param"] == "audios" and "'images' or 'videos'" in error["message"]


def test_moderation_refusals_say_so_and_are_refunded(
    http: httpx.Client, account: Account, billing: billing_pb2_grpc.BillingStub
) -> None:
    before = state(billing, account.account_id)
    url = uploaded_image(http, 300, 300)
    refused: list[tuple[str, dict[str, Any]]] = [
        # DashScope: 400 DataInspectionFailed at create.
        (
            "/v1/image/img2img",
            {"model": "wan-2.7-img2img", "prompt": "x [sim:moderation]", "images": [url]},
        ),
        # Ark: the task ends failed, OutputVideoSensitiveContentDetected.
        ("/v1/video/generate", {"prompt": "x [sim:moderation]", "duration": 4}),
        # OpenAI images: 400 moderation_blocked.
        ("/v1/image/generate", {"prompt": "x [sim:moderation]"}),
    ]
    for path, body in refused:
        job = poll(http, submit(http, path, body)["job_id"])
        assert job["status"] == "failed", (path, job)
        assert job["error_message"] == CONTENT_POLICY, (path, job)
        assert job["error_code"] == "content_policy"
        assert job["actual_cost_idr"] == "0"
    assert settled_state(billing, account.account_id, before) == before
