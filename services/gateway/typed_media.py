"""aiport.v1.Media's typed requests as the public endpoints' JSON bodies. Pure.

Each typed request becomes the body its public endpoint takes, and goes through
that endpoint's own parser (generate_request.py): the same validation, defaults,
price and errors, naming the same fields. An empty string or an absent optional
field is "not given", as a JSON null is there.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiport.v1 import media_pb2

from services.common.catalog import Catalog
from services.gateway.generate_request import (
    JobPlan,
    parse_image_generate,
    parse_image_img2img,
    parse_video_generate,
    parse_video_img2video,
)


def _given(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v not in ("", None)}


def _video_options(options: media_pb2.VideoOptions) -> dict[str, Any]:
    body = _given(resolution=options.resolution)
    for name in ("duration", "generate_audio", "web_search", "real_person_mode", "seed"):
        if options.HasField(name):
            body[name] = getattr(options, name)
    if options.return_last_frame:
        body["return_last_frame"] = True
    return body


def image_job_body(request: media_pb2.ImageJobRequest) -> dict[str, Any]:
    return _given(
        model=request.model,
        prompt=request.prompt,
        aspect_ratio=request.aspect_ratio,
        resolution=request.resolution,
    )


def img2img_job_body(request: media_pb2.Img2ImgJobRequest) -> dict[str, Any]:
    body = _given(
        model=request.model,
        prompt=request.prompt,
        aspect_ratio=request.aspect_ratio,
        resolution=request.resolution,
    )
    body["images"] = list(request.images)  # the parser says it is required when empty
    return body


def video_job_body(request: media_pb2.VideoJobRequest) -> dict[str, Any]:
    return _given(model=request.model, prompt=request.prompt, ratio=request.ratio) | (
        _video_options(request.options)
    )


def img2video_job_body(request: media_pb2.Img2VideoJobRequest) -> dict[str, Any]:
    body = _given(
        model=request.model,
        prompt=request.prompt,
        first_frame_url=request.first_frame_url,
        last_frame_url=request.last_frame_url,
    )
    if request.conversion_slots:
        body["conversion_slots"] = list(request.conversion_slots)
    return body | _video_options(request.options)


def plan_image_job(request: media_pb2.ImageJobRequest, catalog: Catalog) -> JobPlan:
    return parse_image_generate(orjson.dumps(image_job_body(request)), catalog)


def plan_img2img_job(request: media_pb2.Img2ImgJobRequest, catalog: Catalog) -> JobPlan:
    return parse_image_img2img(orjson.dumps(img2img_job_body(request)), catalog)


def plan_video_job(request: media_pb2.VideoJobRequest, catalog: Catalog) -> JobPlan:
    return parse_video_generate(orjson.dumps(video_job_body(request)), catalog)


def plan_img2video_job(request: media_pb2.Img2VideoJobRequest, catalog: Catalog) -> JobPlan:
    return parse_video_img2video(orjson.dumps(img2video_job_body(request)), catalog)


__all__ = [
    "image_job_body",
    "img2img_job_body",
    "img2video_job_body",
    "plan_image_job",
    "plan_img2img_job",
    "plan_img2video_job",
    "plan_video_job",
    "video_job_body",
]
