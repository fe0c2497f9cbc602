"""What a failed job tells its client: the client's input, its content, or the provider."""

from __future__ import annotations

import orjson
import pytest

from services.providers.adapters.video_task_translate import task_state
from services.providers.errors import (
    CONTENT_POLICY,
    MAX_REASON_CHARS,
    PROVIDER_FAILED,
    UpstreamError,
    client_input_error,
    error_code,
    job_error,
    public_reason,
    task_error,
)

KEY = "sk-live-abcdefghijklmnopqrstuvwxyz"


@pytest.mark.parametrize(
    "code",
    [
        "DataInspectionFailed",  # DashScope input / output moderation
        "IPInfringementSuspect",
        "moderation_blocked",  # OpenAI images
        "InputTextSensitiveContentDetected",  # Ark (Seedance)
        "InputImageSensitiveContentDetected",
        "OutputVideoSensitiveContentDetected",
        "IMAGE_SAFETY",  # Gemini finishReason
        "PROHIBITED_CONTENT",
    ],
)
def test_content_policy_refusals_say_so(code: str) -> None:
    for error in (client_input_error(code, "flagged"), task_error(code, "flagged", "x")):
        assert job_error(error) == ("content_policy", CONTENT_POLICY)


def test_an_invalid_parameter_names_the_upstreams_reason() -> None:
    error = client_input_error("InvalidParameter", "resolution must be 480p or 720p")
    assert job_error(error) == (
        "invalid_input",
        "The provider rejected the input: resolution must be 480p or 720p.",
    )
    task = task_error("InvalidParameter.Size", "image too small", "The upstream could not...")
    assert job_error(task)[0] == "invalid_input"


@pytest.mark.parametrize(
    "error",
    [
        UpstreamError("failed", "upstream answered HTTP 500"),
        UpstreamError("timeout", "upstream did not answer in time"),
        task_error("InternalError", "boom", "The upstream could not generate the video."),
        task_error("", "", "The upstream task expired before it finished."),
    ],
)
def test_only_real_provider_failures_say_provider_failed(error: UpstreamError) -> None:
    assert job_error(error) == ("provider_error", PROVIDER_FAILED)


def test_a_rejection_without_a_reason_still_blames_the_input() -> None:
    assert job_error(client_input_error("", "")) == (
        "invalid_input",
        "The provider rejected the input.",
    )


def test_the_reason_leaks_nothing_and_is_bounded() -> None:
    raw = (
        f"bad image\n\tat https://oss-internal.aliyun/bucket/x.png?Signature=abc "
        f"(key {KEY}) Request id: 5d2c-11ef x-request-id=abc123 " + "y" * 1000
    )
    reason = public_reason(raw)
    assert KEY not in reason and "oss-internal" not in reason and "Signature" not in reason
    assert "5d2c" not in reason and "abc123" not in reason
    assert "\n" not in reason and "\t" not in reason
    assert len(reason) <= MAX_REASON_CHARS
    message = job_error(client_input_error("InvalidParameter", raw))[1]
    assert KEY not in message and len(message) < MAX_REASON_CHARS + 40


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b'{"error": {"code": "moderation_blocked", "message": "no"}}', "moderation_blocked"),
        (b'{"request_id": "r", "code": "DataInspectionFailed"}', "DataInspectionFailed"),
        (b'{"error": {"message": "no code"}}', ""),
        (b"<html>", ""),
        (b"[1]", ""),
    ],
)
def test_error_code_of_each_upstreams_body(raw: bytes, code: str) -> None:
    assert error_code(raw) == code


def test_an_ark_task_failed_by_moderation_carries_its_code() -> None:
    raw = orjson.dumps(
        {
            "id": "cgt-1",
            "status": "failed",
            "error": {
                "code": "OutputVideoSensitiveContentDetected",
                "message": "The output video may contain sensitive content. Request id: 0217",
            },
        }
    )
    state = task_state(raw)
    assert state.error_code == "OutputVideoSensitiveContentDetected"
    assert state.reason == "The output video may contain sensitive content"
    error = task_error(state.error_code, state.reason, state.error)
    assert job_error(error) == ("content_policy", CONTENT_POLICY)
