"""The sandbox's media protocols without HTTP: PNG writer, image and video-task rules."""

from __future__ import annotations

import base64
import struct
import zlib
from io import BytesIO
from typing import Any

import pytest
from PIL import Image

from sandbox import directives, openai_images, png, video_tasks
from sandbox.errors import ApiError, ark_error_body
from tests.support.clips import mp3, mp4, wav

# --- PNG ---------------------------------------------------------------------------------


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """Every chunk of a PNG, each CRC checked."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, kind
        chunks.append((kind, body))
        pos += 12 + length
    assert pos == len(data)
    return chunks


def test_render_writes_a_valid_rgb_png_of_the_exact_size() -> None:
    data = png.render(37, 11, "seed")
    chunks = png_chunks(data)
    assert [k for k, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    width, height, depth, color, comp, filt, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (width, height, depth, color, comp, filt, interlace) == (37, 11, 8, 2, 0, 0, 0)
    raw = zlib.decompress(chunks[1][1])
    assert len(raw) == 11 * (1 + 3 * 37)
    assert all(raw[y * (1 + 3 * 37)] == 0 for y in range(11))  # filter byte per row


def test_render_is_deterministic_and_seeded() -> None:
    assert png.render(64, 32, "a") == png.render(64, 32, "a")
    assert png.render(64, 32, "a") != png.render(64, 32, "b")
    pixels = zlib.decompress(png_chunks(png.render(64, 32, "a"))[1][1])
    assert len(set(pixels)) > 10  # a picture, not one flat colour


def test_render_refuses_an_empty_picture() -> None:
    with pytest.raises(ValueError):
        png.render(0, 10, "x")


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((1024, 1024), (512, 512)),
        ((1024, 576), (512, 288)),  # 16:9
        ((2016, 864), (511, 219)),  # 21:9 = 7:3
        ((864, 2016), (219, 511)),
        ((4096, 4096), (512, 512)),
        ((1008, 672), (510, 340)),  # 3:2
        ((300, 200), (300, 200)),  # small enough: as asked
    ],
)
def test_fit_keeps_the_ratio_exactly(size: tuple[int, int], expected: tuple[int, int]) -> None:
    got = png.fit(*size)
    assert got == expected
    assert got[0] * size[1] == got[1] * size[0]
    assert max(got) <= png.RENDER_CAP


def test_fit_falls_back_to_nearest_for_ratios_too_fine_for_the_cap() -> None:
    width, height = png.fit(1023, 1021)  # reduced ratio 1023:1021 is larger than the cap
    assert width == 512 and abs(height - 511) <= 1


# --- directives --------------------------------------------------------------------------


def test_media_directives() -> None:
    found = directives.parse("cat [sim:hang] [sim:delay=0.5]", directives.MEDIA, "prompt")
    assert found.hang and found.delay == 0.5
    with pytest.raises(ApiError) as err:
        directives.parse("[sim:tokens=3]", directives.MEDIA, "prompt")
    assert err.value.status == 400 and err.value.param == "prompt"
    assert "not supported" in err.value.message


def test_chat_still_rejects_hang() -> None:
    with pytest.raises(ApiError) as err:
        directives.parse("hello [sim:hang]")
    assert err.value.status == 400 and err.value.param == "messages"


# --- images ------------------------------------------------------------------------------


def gen(**body: Any) -> openai_images.ImageJob:
    return openai_images.parse_generation({"model": "m", "prompt": "a cat", **body})


def test_generation_defaults() -> None:
    job = gen()
    assert (job.width, job.height, job.size_label, job.n) == (1024, 1024, "1024x1024", 1)
    assert job.response_format == "b64_json"
    assert job.seed_text == "m\na cat"


@pytest.mark.parametrize(
    ("body", "size"),
    [
        ({"size": "1536x1024"}, (1536, 1024)),
        ({"size": "auto"}, (1024, 1024)),
        ({"aspect_ratio": "21:9", "resolution": "2k"}, (2044, 876)),  # 7:3 exactly
        ({"aspect_ratio": "16:9"}, (1024, 576)),
        ({"aspect_ratio": "19.5:9", "resolution": "1k"}, (1014, 468)),
        ({"resolution": "4k"}, (4096, 4096)),
    ],
)
def test_generation_sizes(body: dict[str, Any], size: tuple[int, int]) -> None:
    job = gen(**body)
    assert (job.width, job.height) == size


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"size": "1024x1024", "aspect_ratio": "1:1"}, "size"),
        ({"size": "big"}, "size"),
        ({"size": "0x10"}, "size"),
        ({"size": "9000x10"}, "size"),
        ({"aspect_ratio": "wide"}, "aspect_ratio"),
        ({"resolution": "8k"}, "resolution"),
        ({"n": 11}, "n"),
        ({"n": True}, "n"),
        ({"output_format": "jpeg"}, "output_format"),
        ({"response_format": "binary"}, "response_format"),
        ({"style": "vivid"}, "style"),
        ({"prompt": "  "}, "prompt"),
        ({"prompt": 3}, "prompt"),
        ({"model": ""}, "model"),
        ({"prompt": "x [sim:echo]"}, "prompt"),
    ],
)
def test_generation_rejects(body: dict[str, Any], param: str) -> None:
    with pytest.raises(ApiError) as err:
        gen(**body)
    assert err.value.status == 400
    assert err.value.param == param


def test_edit_form_checks_each_image_by_its_bytes() -> None:
    picture = png.render(4, 4, "x")
    upload = openai_images.Upload("image[]", "a.png", "image/png", picture)
    job = openai_images.parse_edit_form({"model": "m", "prompt": "p", "n": "2"}, [upload])
    openai_images.check_edit_has_images(job)
    assert job.n == 2 and len(job.references) == 1
    liar = openai_images.Upload("image[]", "a.jpg", "image/jpeg", picture)
    with pytest.raises(ApiError, match="declared as 'image/jpeg'"):
        openai_images.parse_edit_form({"model": "m", "prompt": "p"}, [liar])
    text = openai_images.Upload("image[]", "a.txt", "text/plain", b"hello")
    with pytest.raises(ApiError, match="unsupported image format"):
        openai_images.parse_edit_form({"model": "m", "prompt": "p"}, [text])
    empty = openai_images.parse_edit_form({"model": "m", "prompt": "p"}, [])
    with pytest.raises(ApiError, match="Missing required parameter: 'image'"):
        openai_images.check_edit_has_images(empty)


def test_edit_json_takes_data_urls_only() -> None:
    url = "data:image/png;base64," + base64.b64encode(png.render(2, 2, "x")).decode()
    job = openai_images.parse_edit_json(
        {"model": "m", "prompt": "p", "images": [{"image_url": url}, {"url": url}]}
    )
    assert len(job.references) == 2
    single = openai_images.parse_edit_json({"model": "m", "prompt": "p", "image": {"url": url}})
    assert len(single.references) == 1
    with pytest.raises(ApiError, match="cannot fetch remote files"):
        openai_images.parse_edit_json(
            {"model": "m", "prompt": "p", "image": {"url": "https://x/y.png"}}
        )


def test_usage_counts_prompt_references_and_pixels() -> None:
    job = gen(prompt="12345678", size="2048x1024", n=2)
    assert openai_images.usage(job) == {
        "input_tokens": 2,
        "input_tokens_details": {"text_tokens": 2, "image_tokens": 0},
        "output_tokens": 2 * 2048,
        "total_tokens": 2 + 2 * 2048,
    }


# --- video tasks -------------------------------------------------------------------------


def data_url(kind: str, data: bytes) -> str:
    return f"data:{kind};base64," + base64.b64encode(data).decode()


PNG = png.render(2, 2, "ref")


def create(*items: dict[str, Any], **params: Any) -> video_tasks.TaskSpec:
    content = [{"type": "text", "text": "a drone shot"}, *items]
    return video_tasks.parse_create({"model": "seedance", "content": content, **params})


def image_item(role: str | None = "first_frame") -> dict[str, Any]:
    item: dict[str, Any] = {"type": "image_url", "image_url": {"url": data_url("image/png", PNG)}}
    if role is not None:
        item["role"] = role
    return item


def test_create_defaults_and_top_level_parameters() -> None:
    spec = create()
    assert (spec.resolution, spec.ratio, spec.duration) == ("720p", "16:9", 5)
    assert spec.generate_audio and not spec.return_last_frame and not spec.web_search
    assert spec.seed == create().seed  # seed -1 / absent: derived from the prompt
    spec = create(
        resolution="1080p",
        ratio="9:16",
        duration=12,
        seed=7,
        generate_audio=False,
        return_last_frame=True,
        tools=[{"type": "web_search"}],
    )
    assert (spec.resolution, spec.ratio, spec.duration, spec.seed) == ("1080p", "9:16", 12, 7)
    assert not spec.generate_audio and spec.return_last_frame and spec.web_search


def test_create_text_flags_and_top_level_precedence() -> None:
    spec = video_tasks.parse_create(
        {
            "model": "m",
            "content": [{"type": "text", "text": "cat --rs 480p --rt 1:1 --dur 8 --seed 3"}],
            "duration": 10,
        }
    )
    assert (spec.resolution, spec.ratio, spec.duration, spec.seed) == ("480p", "1:1", 10, 3)
    assert create(duration=-1).duration == 5


def test_create_references() -> None:
    spec = create(image_item(None))  # a lone image is the first frame
    assert [(r.role, r.media_type, r.size) for r in spec.references] == [
        ("first_frame", "image/png", len(PNG))
    ]
    assert spec.ratio == "adaptive"
    assert spec.references[0].url.endswith(f"[{len(PNG)} bytes]")
    spec = create(
        image_item("reference_image"),
        {
            "type": "video_url",
            "video_url": {"url": "https://example.com/v.mp4"},
            "role": "reference_video",
        },
        {
            "type": "audio_url",
            "audio_url": {"url": data_url("audio/mp3", b"ID3" + b"\0" * 20)},
            "role": "reference_audio",
        },
    )
    assert [r.role for r in spec.references] == [
        "reference_image",
        "reference_video",
        "reference_audio",
    ]


@pytest.mark.parametrize(
    ("items", "params", "message"),
    [
        ([image_item("last_frame")], {}, "needs a first_frame"),
        ([image_item(), image_item("reference_image")], {}, "cannot be combined"),
        ([image_item(), image_item()], {}, "one first_frame"),
        ([image_item("reference_image")] * 10, {}, "At most 9"),
        (
            [
                {
                    "type": "audio_url",
                    "audio_url": {"url": "https://x/a.mp3"},
                    "role": "reference_audio",
                }
            ],
            {},
            "needs at least one reference image or video",
        ),
        ([image_item("reference_video")], {}, "role"),
        (
            [{"type": "image_url", "image_url": {"url": data_url("image/png", b"not an image")}}],
            {},
            "is not a PNG, JPEG or WEBP image",
        ),
        (
            [
                {
                    "type": "video_url",
                    "video_url": {"url": data_url("video/mp4", PNG)},
                    "role": "reference_video",
                }
            ],
            {},
            "its data is image/png",
        ),
        ([{"type": "image_url", "image_url": {"url": "ftp://x"}}], {}, "http(s) or data"),
        ([{"type": "draft_task", "draft_task": {"id": "x"}}], {}, "not supported"),
        ([], {"resolution": "8k"}, "resolution"),
        ([], {"ratio": "5:4"}, "ratio"),
        ([], {"duration": 16}, "duration"),
        ([], {"duration": "5"}, "integer"),
        ([], {"seed": 2**32}, "seed"),
        ([], {"watermark": "no"}, "boolean"),
        ([], {"tools": [{"type": "code"}]}, "web_search"),
        ([image_item()], {"tools": [{"type": "web_search"}]}, "text-to-video"),
        ([], {"size": "720p"}, "`size` is not supported"),
    ],
)
def test_create_rejects(items: list[dict[str, Any]], params: dict[str, Any], message: str) -> None:
    with pytest.raises(ApiError) as err:
        create(*items, **params)
    assert err.value.status == 400
    assert message in err.value.message
    assert err.value.code in ("InvalidParameter", "MissingParameter", "invalid_value")


def test_create_needs_model_and_content() -> None:
    for body in ({"content": [{"type": "text", "text": "x"}]}, {"model": "m", "content": []}):
        with pytest.raises(ApiError) as err:
            video_tasks.parse_create(body)
        assert err.value.code == "MissingParameter"


def task(text: str) -> video_tasks.Task:
    spec = video_tasks.parse_create({"model": "m", "content": [{"type": "text", "text": text}]})
    return video_tasks.Task(id="cgt-1", spec=spec, created_at=1000.0)


def test_task_timeline() -> None:
    plain = task("cat")
    assert plain.status(1000.0) == "succeeded"
    delayed = task("cat [sim:delay=10]")
    assert [delayed.status(1000.0 + t) for t in (0, 4.9, 5, 9.9, 10, 99)] == [
        "queued",
        "queued",
        "running",
        "running",
        "succeeded",
        "succeeded",
    ]
    assert delayed.updated_at(1003) == 1000 and delayed.updated_at(1007) == 1005
    assert delayed.updated_at(2000) == 1010
    failing = task("cat [sim:delay=2] [sim:fail]")
    assert [failing.status(1000.0 + t) for t in (0, 1, 2)] == ["queued", "running", "failed"]
    hanging = task("cat [sim:hang]")
    assert hanging.status(1000.0) == "running" and hanging.status(10**9) == "running"


def test_task_bodies() -> None:
    done = task("cat --dur 7")
    body = video_tasks.task_body(done, 1000.0, "http://h/_sandbox/files")
    assert body["status"] == "succeeded" and body["error"] is None
    assert body["content"] == {"video_url": "http://h/_sandbox/files/cgt-1.mp4"}
    assert body["duration"] == 7 and body["framespersecond"] == 24
    assert body["usage"]["completion_tokens"] == 1280 * 720 * 24 * 7 // 1024
    failed = video_tasks.task_body(task("x [sim:fail]"), 1000.0, "http://h")
    assert failed["error"] == {
        "code": "InternalServiceError",
        "message": video_tasks.FAILURE_MESSAGE,
    }
    assert "content" not in failed and "usage" not in failed


@pytest.mark.parametrize(
    ("resolution", "ratio", "size"),
    [
        ("720p", "16:9", (1280, 720)),
        ("480p", "9:16", (480, 852)),
        ("1080p", "21:9", (2520, 1080)),
        ("720p", "adaptive", (1280, 720)),
        ("4k", "1:1", (2160, 2160)),
    ],
)
def test_output_size(resolution: str, ratio: str, size: tuple[int, int]) -> None:
    assert video_tasks.output_size(resolution, ratio) == size


def test_task_store_is_bounded() -> None:
    store = video_tasks.TaskStore(limit=2)
    for i in range(3):
        store.add(video_tasks.Task(id=f"t{i}", spec=task("x").spec, created_at=0))
    assert list(store.tasks) == ["t1", "t2"] and store.get("t0") is None


def test_log_body_shrinks_data_urls() -> None:
    big = data_url("video/mp4", b"\0" * 3000)
    body = {"model": "m", "content": [{"type": "video_url", "video_url": {"url": big}}]}
    logged: Any = video_tasks.log_body(body)
    assert logged["content"][0]["video_url"]["url"] == "data:video/mp4;base64,[3000 bytes]"
    assert body["content"][0]["video_url"]["url"] == big  # type: ignore[index]


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (400, "InvalidParameter", "BadRequest"),
        (401, "AuthenticationError", "Unauthorized"),
        (404, "ResourceNotFound", "NotFound"),
        (429, "RateLimitExceeded", "TooManyRequests"),
        (500, "InternalServiceError", "InternalServiceError"),
        (503, "InternalServiceError", "InternalServiceError"),
    ],
)
def test_ark_error_shape(status: int, code: str, kind: str) -> None:
    body = ark_error_body(ApiError(status, "nope", code="invalid_api_key"))
    assert body == {"error": {"code": code, "message": "nope", "param": None, "type": kind}}
    own = ark_error_body(ApiError(400, "bad", param="ratio", code="MissingParameter"))
    assert own["error"]["code"] == "MissingParameter" and own["error"]["param"] == "ratio"


# --- each Seedance model's documented rules ------------------------------------------------------


def _image(width: int, height: int, fmt: str = "PNG") -> bytes:
    out = BytesIO()
    Image.new("RGB", (width, height), (200, 80, 10)).save(out, fmt)
    return out.getvalue()


def fast(*items: dict[str, Any], **params: Any) -> video_tasks.TaskSpec:
    content = [{"type": "text", "text": "a temple"}, *items]
    body = {"model": "dreamina-seedance-2-0-fast-260128", "content": content, **params}
    return video_tasks.parse_create(body)


@pytest.mark.parametrize("resolution", ["1080p", "2k", "4k"])
def test_seedance_2_fast_renders_480p_and_720p_only(resolution: str) -> None:
    assert fast(resolution="480p").resolution == "480p"
    with pytest.raises(ApiError, match="480p, 720p") as err:
        fast(resolution=resolution)
    assert (err.value.status, err.value.code) == (400, "InvalidParameter")
    # The same family's standard model renders 1080p; a model outside it, anything.
    standard = {"model": "seedance-2.0", "content": [{"type": "text", "text": "x"}]}
    assert video_tasks.parse_create({**standard, "resolution": "1080p"}).resolution == "1080p"


@pytest.mark.parametrize("seconds", [2, 3, 16])
def test_seedance_2_durations_are_4_to_15(seconds: int) -> None:
    assert fast(duration=4).duration == 4
    with pytest.raises(ApiError, match="between 4 and 15"):
        fast(duration=seconds)


@pytest.mark.parametrize(
    ("size", "fmt", "complaint"),
    [
        ((64, 64), "PNG", "300 to 6000 px"),
        ((6100, 3000), "JPEG", "300 to 6000 px"),
        ((1000, 300), "WEBP", "aspect ratio"),
        ((300, 1000), "PNG", "aspect ratio"),
    ],
)
def test_seedance_2_images_are_held_to_its_limits(
    size: tuple[int, int], fmt: str, complaint: str
) -> None:
    kind = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}[fmt]
    item = {"type": "image_url", "image_url": {"url": data_url(kind, _image(*size, fmt))}}
    with pytest.raises(ApiError, match=complaint):
        fast(item)
    ok = {"type": "image_url", "image_url": {"url": data_url(kind, _image(600, 400, fmt))}}
    assert fast(ok).references[0].role == "first_frame"


def clip_item(kind: str, media_type: str, data: bytes) -> dict[str, Any]:
    key = f"{kind}_url"
    return {"type": key, key: {"url": data_url(media_type, data)}, "role": f"reference_{kind}"}


def _seedance_reference_image() -> dict[str, Any]:
    url = data_url("image/png", _image(600, 400, "PNG"))
    return {"type": "image_url", "image_url": {"url": url}, "role": "reference_image"}


def test_seedance_2_takes_clips_of_2_to_15_seconds() -> None:
    spec = fast(
        _seedance_reference_image(),
        clip_item("video", "video/mp4", mp4(2)),
        clip_item("video", "video/quicktime", mp4(6, brand=b"qt  ")),
        clip_item("audio", "audio/mpeg", mp3(4)),
        clip_item("audio", "audio/wav", wav(11)),
    )
    assert [round(r.seconds, 1) for r in spec.references] == [0.0, 2.0, 6.0, 4.0, 11.0]


@pytest.mark.parametrize(
    ("items", "complaint"),
    [
        ([clip_item("video", "video/mp4", mp4(1.5))], r"1\.5 s long; each reference video"),
        ([clip_item("audio", "audio/wav", wav(16))], r"16\.0 s long; each reference audio"),
        (
            [clip_item("video", "video/mp4", mp4(6))] * 3,
            r"reference videos add up to 18\.0 s; at most 15 s",
        ),
        ([clip_item("video", "video/webm", b"\x1a\x45\xdf\xa3" + bytes(64))], "video/webm"),
        ([clip_item("audio", "audio/mpeg", b"ID3" + bytes(40))], "cannot be read"),
    ],
)
def test_seedance_2_clips_are_held_to_its_limits(
    items: list[dict[str, Any]], complaint: str
) -> None:
    with pytest.raises(ApiError, match=complaint) as err:
        fast(_seedance_reference_image(), *items)
    assert (err.value.status, err.value.code) == (400, "InvalidParameter")


def test_moderation_fails_the_task_with_arks_code() -> None:
    task = video_tasks.Task(id="cgt-1", spec=fast(), created_at=0.0)
    assert video_tasks.task_body(task, 1.0, "http://f")["error"] is None
    moderated = video_tasks.Task(
        id="cgt-2",
        spec=create({"type": "text", "text": "x [sim:moderation]"}),
        created_at=0.0,
    )
    body = video_tasks.task_body(moderated, 1.0, "http://f")
    assert body["status"] == "failed"
    assert body["error"]["code"] == "OutputVideoSensitiveContentDetected"


def test_openai_images_moderation_is_moderation_blocked() -> None:
    with pytest.raises(ApiError) as err:
        openai_images.parse_generation({"model": "m", "prompt": "a cat [sim:moderation]"})
    assert (err.value.status, err.value.code) == (400, "moderation_blocked")
