"""Typed gRPC's own pieces: Media requests as their endpoints' bodies (the same
parsers, the same errors), and the boundary that answers typed callers with gRPC
statuses and google.rpc details, before or after a stream's first message."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any, cast

import grpc
import pytest
from aiport.v1 import media_pb2
from google.rpc import error_details_pb2, status_pb2

from services.common.catalog import load_catalog
from services.common.grpc_server import ServicerContext
from services.common.job_states import Modality
from services.common.settings import PROJECT_ROOT
from services.gateway import errors
from services.gateway.errors import PublicError
from services.gateway.typed_api import (
    STATUS_DETAILS_KEY,
    typed_code,
    typed_stream,
    typed_unary,
)
from services.gateway.typed_media import (
    img2video_job_body,
    plan_image_job,
    plan_img2img_job,
    plan_img2video_job,
    plan_video_job,
    video_job_body,
)

CATALOG = load_catalog(PROJECT_ROOT / "config" / "catalog.yaml")


def test_an_image_job_is_the_endpoints_plan() -> None:
    plan = plan_image_job(
        media_pb2.ImageJobRequest(model="gpt-image-2", prompt="Bromo", resolution="2k"), CATALOG
    )
    assert (plan.model, plan.modality, plan.spec.prompt, plan.spec.resolution) == (
        "gpt-image-2",
        Modality.IMAGE,
        "Bromo",
        "2k",
    )
    # Nothing but a prompt: the endpoint's defaults.
    default = plan_image_job(media_pb2.ImageJobRequest(prompt="Bromo"), CATALOG)
    assert (default.model, default.spec.resolution) == ("gpt-image-2", "1k")


def test_video_options_reach_the_spec_and_only_when_given() -> None:
    request = media_pb2.VideoJobRequest(
        prompt="Waves",
        ratio="16:9",
        options=media_pb2.VideoOptions(duration=6, generate_audio=False, seed=9),
    )
    assert video_job_body(request) == {
        "prompt": "Waves",
        "ratio": "16:9",
        "duration": 6,
        "generate_audio": False,
        "seed": 9,
    }
    plan = plan_video_job(request, CATALOG)
    assert (plan.estimated_units, plan.spec.duration_seconds, plan.spec.seed) == (6, 6, 9)
    body = img2video_job_body(
        media_pb2.Img2VideoJobRequest(
            prompt="Move", first_frame_url="https://x.test/a.png", conversion_slots=["all"]
        )
    )
    assert body == {
        "prompt": "Move",
        "first_frame_url": "https://x.test/a.png",
        "conversion_slots": ["all"],
    }


@pytest.mark.parametrize(
    ("plan", "param"),
    [
        (lambda: plan_image_job(media_pb2.ImageJobRequest(), CATALOG), "prompt"),
        (
            lambda: plan_image_job(media_pb2.ImageJobRequest(prompt="p", resolution="9k"), CATALOG),
            "resolution",
        ),
        (
            lambda: plan_image_job(media_pb2.ImageJobRequest(prompt="p", model="nope"), CATALOG),
            "model",
        ),
        (lambda: plan_img2img_job(media_pb2.Img2ImgJobRequest(prompt="p"), CATALOG), "images"),
        (
            lambda: plan_img2img_job(
                media_pb2.Img2ImgJobRequest(prompt="p", images=["http://plain.test/a.png"]),
                CATALOG,
            ),
            "images[0]",
        ),
        (
            lambda: plan_video_job(
                media_pb2.VideoJobRequest(prompt="p", options=media_pb2.VideoOptions(duration=99)),
                CATALOG,
            ),
            "duration",
        ),
        (
            lambda: plan_img2video_job(media_pb2.Img2VideoJobRequest(prompt="p"), CATALOG),
            "first_frame_url",
        ),
    ],
)
def test_bad_input_names_the_field(plan: Any, param: str) -> None:
    with pytest.raises(PublicError) as info:
        plan()
    assert info.value.param == param


class Aborted(Exception):
    pass


class Context:
    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None
        self.details = ""
        self.trailing: dict[str, bytes] = {}

    async def abort(
        self, code: grpc.StatusCode, details: str, trailing: tuple[tuple[str, bytes], ...]
    ) -> None:
        self.code, self.details, self.trailing = code, details, dict(trailing)
        raise Aborted(details)

    def status(self) -> status_pb2.Status:
        return status_pb2.Status.FromString(self.trailing[STATUS_DETAILS_KEY])


class Methods:
    def __init__(self, error: Exception) -> None:
        self.error = error

    @typed_unary
    async def Unary(self, request: object, context: ServicerContext) -> str:
        raise self.error

    @typed_stream
    async def Stream(self, request: object, context: ServicerContext) -> AsyncIterator[str]:
        if request == "after":
            yield "first"
        raise self.error


async def unary(error: Exception) -> Context:
    context = Context()
    with pytest.raises(Aborted):
        await Methods(error).Unary(None, cast(ServicerContext, context))
    return context


async def test_invalid_input_is_invalid_argument_naming_the_field() -> None:
    context = await unary(errors.invalid_request("'top_p' must be a number.", "top_p"))
    assert context.code == grpc.StatusCode.INVALID_ARGUMENT
    assert context.details == "'top_p' must be a number."
    status = context.status()
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    info = error_details_pb2.ErrorInfo()
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(info) and status.details[1].Unpack(bad)
    assert (info.reason, info.metadata["param"]) == ("INVALID_REQUEST_ERROR", "top_p")
    assert bad.field_violations[0].field == "top_p"


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.unauthorized(), grpc.StatusCode.UNAUTHENTICATED),
        (errors.insufficient_quota("low"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.insufficient_balance(5), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.model_not_found_for_chat("x"), grpc.StatusCode.NOT_FOUND),
        (errors.provider_error(), grpc.StatusCode.UNAVAILABLE),
        (errors.service_unavailable("down"), grpc.StatusCode.UNAVAILABLE),
    ],
)
def test_codes(error: PublicError, code: grpc.StatusCode) -> None:
    assert typed_code(error) == code


async def test_a_retryable_error_says_when() -> None:
    status = (await unary(errors.upstream_rate_limited(7))).status()
    retry = error_details_pb2.RetryInfo()
    assert status.details[-1].Unpack(retry) and retry.retry_delay.seconds == 7


async def test_the_unexpected_is_internal_and_tells_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR):
        context = await unary(KeyError("secret internals"))
    assert context.code == grpc.StatusCode.INTERNAL
    assert "secret" not in context.details and b"secret" not in context.trailing[STATUS_DETAILS_KEY]
    assert any(r.exc_info for r in caplog.records)


async def test_a_stream_ends_with_the_status_before_or_after_messages() -> None:
    for when in ("before", "after"):
        context = Context()
        seen = []
        with pytest.raises(Aborted):
            async for item in Methods(errors.provider_error()).Stream(
                when, cast(ServicerContext, context)
            ):
                seen.append(item)
        assert seen == ([] if when == "before" else ["first"])
        assert context.code == grpc.StatusCode.UNAVAILABLE
