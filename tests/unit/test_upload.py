"""Image uploads: multipart parsing, the size limit, and type sniffing from content."""

from __future__ import annotations

import io
import os
import random
from pathlib import Path
from typing import cast

import grpc
import httpx
import pytest
from google.api import httpbody_pb2
from PIL import Image

from services.common.blobs import LocalBlobStore
from services.common.catalog import Catalog
from services.common.grpc_server import ServicerContext
from services.gateway.errors import STATUS_HEADER, PublicError
from services.gateway.jobs_api import GenerateService, JobsBackend
from services.gateway.server import Backends, Caller
from services.gateway.upload import MAX_UPLOAD_BYTES, UploadedImage, parse_upload, sniff_image

BOUNDARY = "----aiportBoundary7MA4YWxkTrZu0gW"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
UNSUPPORTED = "unsupported image type; use JPEG, PNG or WEBP"

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01" + bytes(range(256)) + b"\xff\xd9"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(255, -1, -1))
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 \x18\x00\x00\x00" + b"\r\n--" * 8


def file_part(data: bytes, *, name: str = "file", filename: str = "photo.png") -> bytes:
    return (
        f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
        "Content-Type: image/png\r\n"
        "\r\n"
    ).encode() + data


def field_part(name: str, value: bytes) -> bytes:
    return f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value


def multipart(*parts: bytes, boundary: str = BOUNDARY, preamble: bytes = b"") -> bytes:
    delimiter = b"--" + boundary.encode()
    out = preamble
    for part in parts:
        out += delimiter + b"\r\n" + part + b"\r\n"
    return out + delimiter + b"--\r\n"


def refused(raw: bytes, content_type: str = CONTENT_TYPE) -> PublicError:
    with pytest.raises(PublicError) as info:
        parse_upload(raw, content_type)
    return info.value


def bad_request(raw: bytes, content_type: str = CONTENT_TYPE) -> PublicError:
    err = refused(raw, content_type)
    assert (err.status, err.type, err.code, err.param) == (
        400,
        "invalid_request_error",
        "invalid_request",
        "file",
    ), err
    return err


# -- sniffing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (JPEG, ("image/jpeg", "jpg")),
        (b"\xff\xd8\xff", ("image/jpeg", "jpg")),
        (PNG, ("image/png", "png")),
        (b"\x89PNG\r\n\x1a\n", ("image/png", "png")),
        (WEBP, ("image/webp", "webp")),
        (b"RIFF\x00\x00\x00\x00WEBP", ("image/webp", "webp")),
        (b"", None),
        (b"\xff\xd8", None),
        (b"\xff\xd8\xfe", None),
        (b"\x89PNG\r\n\x1a", None),
        (b"\x89PNG\n\n\x1a\n", None),  # a PNG whose CRLF was mangled in transit
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", None),
        (b"RIFF\x00\x00\x00\x00WEB", None),
        (b"RIFX\x00\x00\x00\x00WEBP", None),
        (b"GIF89a\x01\x00\x01\x00", None),
        (b"BM\x00\x00", None),
        (b"%PDF-1.7", None),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", None),
        (b"\x00\x00\x00\x18ftypavif", None),
        (b"x" + JPEG, None),
    ],
)
def test_sniff_image(data: bytes, expected: tuple[str, str] | None) -> None:
    assert sniff_image(data) == expected


# -- the happy path ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "content_type", "extension"),
    [(JPEG, "image/jpeg", "jpg"), (PNG, "image/png", "png"), (WEBP, "image/webp", "webp")],
)
def test_each_supported_type(data: bytes, content_type: str, extension: str) -> None:
    upload = parse_upload(multipart(file_part(data)), CONTENT_TYPE)
    assert upload == UploadedImage(data=data, content_type=content_type, extension=extension)


def test_type_comes_from_the_content_not_the_client() -> None:
    # The part claims image/png and a .png name; the bytes are a JPEG.
    upload = parse_upload(multipart(file_part(JPEG, filename="x.png")), CONTENT_TYPE)
    assert (upload.content_type, upload.extension) == ("image/jpeg", "jpg")


@pytest.mark.parametrize("data", [JPEG, PNG, WEBP])
def test_a_body_encoded_by_a_real_client(data: bytes) -> None:
    request = httpx.Request(
        "POST",
        "https://aiport.id/v1/image/upload",
        data={"purpose": "img2img"},
        files={"file": ("reference image.bin", data, "application/octet-stream")},
    )
    upload = parse_upload(request.read(), request.headers["Content-Type"])
    assert upload.data == data


@pytest.mark.parametrize(
    ("content_type", "boundary"),
    [
        (f'multipart/form-data; boundary="{BOUNDARY}"', BOUNDARY),
        (f"Multipart/Form-Data; BOUNDARY={BOUNDARY}", BOUNDARY),
        (f"multipart/form-data; charset=utf-8; boundary={BOUNDARY}", BOUNDARY),
        (f"multipart/form-data;boundary={BOUNDARY} ", BOUNDARY),
        ('multipart/form-data; boundary="a\'()+_,-./:=? b"', "a'()+_,-./:=? b"),
        ('multipart/form-data; boundary="semi;colon"', "semi;colon"),
        ("multipart/form-data; boundary=x", "x"),
        ("multipart/form-data; boundary=" + "b" * 200, "b" * 200),
    ],
)
def test_boundary_parameter_forms(content_type: str, boundary: str) -> None:
    raw = multipart(file_part(PNG), boundary=boundary)
    assert parse_upload(raw, content_type).data == PNG


def test_other_parts_preamble_and_epilogue_are_ignored() -> None:
    raw = (
        multipart(
            field_part("prompt", b"ignored"),
            file_part(WEBP),
            field_part("file_name", b"x"),
            field_part("files", JPEG),
            preamble=b"This is a preamble.\r\n",
        )
        + b"and an epilogue\r\n"
    )
    assert parse_upload(raw, CONTENT_TYPE).data == WEBP


def test_transport_padding_after_a_boundary_is_allowed() -> None:
    delimiter = b"--" + BOUNDARY.encode()
    raw = delimiter + b" \t\r\n" + file_part(PNG) + b"\r\n" + delimiter + b"--"
    assert parse_upload(raw, CONTENT_TYPE).data == PNG


@pytest.mark.parametrize(
    "header",
    [
        b"Content-Disposition: form-data; name=file",
        b"content-disposition: form-data; name=\"file\"; filename*=UTF-8''%E2%82%AC.png",
        b'CONTENT-DISPOSITION:form-data;name="file"',
        b'Content-Disposition: form-data;\r\n name="file"; filename="folded.png"',
        b'X-Other: 1\r\nContent-Disposition: form-data; name="file"\r\nContent-Length: 9',
    ],
)
def test_part_header_forms(header: bytes) -> None:
    raw = multipart(header + b"\r\n\r\n" + JPEG)
    assert parse_upload(raw, CONTENT_TYPE).data == JPEG


# -- binary payloads ----------------------------------------------------------------------------


BOUNDARY_BYTES = BOUNDARY.encode()
TRICKY_PAYLOADS = [
    JPEG + b"\r\n\r\n\r\n",
    JPEG + b"\r",
    JPEG + b"\n",
    JPEG + b"\r\n",
    JPEG + b"\r\n--",
    JPEG + b"--" + BOUNDARY_BYTES + b"--\r\n",  # not preceded by CRLF: data
    JPEG + b"\r\n--" + BOUNDARY_BYTES + b"X\r\n",  # a longer token: data
    JPEG + b"\r\n--" + BOUNDARY_BYTES[:-1] + b"\r\n",  # a shorter token: data
    JPEG + b"\n--" + BOUNDARY_BYTES + b"\r\n",  # bare LF: data
    JPEG + b"\r\n-" + BOUNDARY_BYTES + b"\r\n",
    JPEG + b'Content-Disposition: form-data; name="file"\r\n\r\n',
    PNG + bytes(range(256)) * 64,
    PNG + b"\x00" * 1000 + b"\r\n" * 500,
    WEBP + b"\r\n--" + BOUNDARY_BYTES + b"\t-\r\n",
]


@pytest.mark.parametrize("data", TRICKY_PAYLOADS)
def test_binary_data_is_returned_byte_for_byte(data: bytes) -> None:
    raw = multipart(field_part("a", b"\r\n--x\r\n"), file_part(data), field_part("b", data))
    assert parse_upload(raw, CONTENT_TYPE).data == data


# -- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "",
        "application/json",
        "image/png",
        "application/x-www-form-urlencoded",
        f"multipart/mixed; boundary={BOUNDARY}",
        f"multipart/form-data-x; boundary={BOUNDARY}",
        "multipart/form-data",
        "multipart/form-data; boundary=",
        'multipart/form-data; boundary=""',
        "multipart/form-data; boundary=" + "b" * 201,
        'multipart/form-data; boundary="bé"',
        f"multipart/form-data; boundary={BOUNDARY}\r\nX-Injected: 1",
    ],
)
def test_not_multipart_or_no_usable_boundary(content_type: str) -> None:
    bad_request(multipart(file_part(PNG)), content_type)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\r\n",
        PNG,
        b"--other\r\n" + file_part(PNG) + b"\r\n--other--\r\n",
        # Truncated: no closing delimiter.
        b"--" + BOUNDARY_BYTES + b"\r\n" + file_part(PNG),
        b"--" + BOUNDARY_BYTES + b"\r\n" + file_part(PNG) + b"\r\n",
        # A part's headers never end.
        b"--"
        + BOUNDARY_BYTES
        + b'\r\nContent-Disposition: form-data; name="file"\r\n--'
        + BOUNDARY_BYTES
        + b"--",
        # A header line without a colon.
        multipart(b"not a header\r\n\r\n" + PNG),
        # Bare LF line endings are not multipart/form-data.
        multipart(file_part(PNG)).replace(b"\r\n", b"\n"),
    ],
)
def test_malformed_bodies(raw: bytes) -> None:
    bad_request(raw)


@pytest.mark.parametrize(
    "raw",
    [
        multipart(),
        multipart(field_part("prompt", PNG)),
        multipart(field_part("File", PNG)),
        multipart(field_part("file[]", PNG)),
        multipart(b"Content-Type: image/png\r\n\r\n" + PNG),  # no Content-Disposition
        multipart(b"\r\n" + PNG),  # no headers at all
        multipart(b'Content-Disposition: form-data; filename="file"\r\n\r\n' + PNG),
    ],
)
def test_missing_file_part(raw: bytes) -> None:
    err = bad_request(raw)
    assert "'file'" in err.message


def test_exactly_one_file_part() -> None:
    err = bad_request(multipart(file_part(PNG), field_part("x", b"1"), file_part(JPEG)))
    assert "exactly one" in err.message


@pytest.mark.parametrize(
    "raw",
    [
        multipart(file_part(b"")),
        multipart(b'Content-Disposition: form-data; name="file"\r\n\r\n'),
    ],
)
def test_empty_file(raw: bytes) -> None:
    err = bad_request(raw)
    assert "empty" in err.message


@pytest.mark.parametrize(
    "data",
    [
        b"GIF89a\x01\x00\x01\x00\x80\x00\x00",
        b"<svg xmlns='http://www.w3.org/2000/svg'/>",
        b"%PDF-1.7\r\n",
        b"\x00",
        b"\xff\xd8",
        b"RIFF\x24\x00\x00\x00WAVEfmt ",
        b"\r\n" + JPEG,
    ],
)
def test_unsupported_types(data: bytes) -> None:
    err = bad_request(multipart(file_part(data, filename="x.jpg")))
    assert err.message == UNSUPPORTED


# -- the size limit ---------------------------------------------------------------------------


def sized_jpeg(size: int) -> bytes:
    return JPEG[:3] + bytes(size - 3)


def test_exactly_at_the_limit_is_accepted() -> None:
    data = sized_jpeg(MAX_UPLOAD_BYTES)
    upload = parse_upload(multipart(file_part(data)), CONTENT_TYPE)
    assert len(upload.data) == MAX_UPLOAD_BYTES == 30 * 1024 * 1024
    assert upload.content_type == "image/jpeg"


@pytest.mark.parametrize("is_jpeg", [True, False])
def test_one_byte_over_the_limit_is_413(is_jpeg: bool) -> None:
    # The size is checked before the type: an oversized non-image is a 413 too.
    data = sized_jpeg(MAX_UPLOAD_BYTES + 1) if is_jpeg else bytes(MAX_UPLOAD_BYTES + 1)
    err = refused(multipart(file_part(data)))
    assert (err.status, err.type, err.code, err.param) == (
        413,
        "invalid_request_error",
        "file_too_large",
        "file",
    )
    assert str(MAX_UPLOAD_BYTES) in err.message


def test_large_payload_full_of_line_breaks_parses() -> None:
    data = PNG + b"\r\n" * (4 * 1024 * 1024)
    assert parse_upload(multipart(file_part(data)), CONTENT_TYPE).data == data


def test_mangled_bodies_fail_only_with_public_errors() -> None:
    rng = random.Random(7)
    valid = multipart(field_part("a", b"1"), file_part(PNG), field_part("b", b"2"))
    for _ in range(500):
        raw = bytearray(valid)
        for _ in range(rng.randint(1, 6)):
            at = rng.randrange(len(raw))
            action = rng.randrange(3)
            if action == 0:
                del raw[at : at + rng.randint(1, 8)]
            elif action == 1:
                raw[at:at] = rng.choice([b"\r\n", b"--", BOUNDARY_BYTES, b'"', b";", b"\xff"])
            else:
                raw[at] = rng.randrange(256)
        try:
            upload = parse_upload(bytes(raw), CONTENT_TYPE)
        except PublicError as err:
            assert err.status == 400 and err.param == "file"
        else:
            assert sniff_image(upload.data) == (upload.content_type, upload.extension)


class _Aborted(Exception):
    pass


class _Context:
    """The calls abort_with makes on a servicer context, and the request's metadata."""

    def __init__(self) -> None:
        self.trailing: tuple[tuple[str, str], ...] = ()
        self.code: object = None

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()  # no Idempotency-Key

    def set_trailing_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.trailing = metadata

    async def abort(self, code: object, message: str) -> None:
        self.code = code
        raise _Aborted(message)


class _FullDisk:
    async def record_owner(self, key: str, account_id: str) -> None:
        pass

    async def put_bytes(self, key: str, data: bytes) -> None:
        raise OSError(28, "No space left on device")


def real_png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), "green").save(out, "PNG")
    return out.getvalue()


class _Backends:
    async def authenticate(self, context: object) -> Caller:
        return Caller("acct_1", "key_1", "req-1", "call-1")


async def test_a_store_that_cannot_write_is_a_503_not_a_500() -> None:
    """A disk error is ours: the client gets the service-unavailable shape."""
    service = GenerateService(
        cast(Catalog, None),
        cast(Backends, _Backends()),
        cast(JobsBackend, None),
        cast(LocalBlobStore, _FullDisk()),
        "http://127.0.0.1:8080",
    )
    context = _Context()
    request = httpbody_pb2.HttpBody(
        content_type=CONTENT_TYPE, data=multipart(file_part(real_png()))
    )
    with pytest.raises(_Aborted, match="Uploads are temporarily unavailable"):
        await service.UploadImage(request, cast(ServicerContext, context))
    assert context.code == grpc.StatusCode.UNAVAILABLE
    assert dict(context.trailing)[STATUS_HEADER] == "503"


def service_with(store: LocalBlobStore) -> GenerateService:
    return GenerateService(
        cast(Catalog, None),
        cast(Backends, _Backends()),
        cast(JobsBackend, None),
        store,
        "http://127.0.0.1:8080",
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (PNG, "The PNG image could not be decoded (it is corrupt or truncated)."),
        (JPEG, "The JPEG image could not be decoded (it is corrupt or truncated)."),
        (real_png()[:-20], "The PNG image could not be decoded (it is corrupt or truncated)."),
    ],
)
async def test_an_image_that_does_not_decode_is_400_and_not_stored(
    tmp_path: Path, data: bytes, message: str
) -> None:
    """Issue 11: magic bytes are not enough; the whole image must decode."""
    context = _Context()
    request = httpbody_pb2.HttpBody(content_type=CONTENT_TYPE, data=multipart(file_part(data)))
    with pytest.raises(_Aborted) as aborted:
        await service_with(LocalBlobStore(tmp_path)).UploadImage(
            request, cast(ServicerContext, context)
        )
    assert context.code == grpc.StatusCode.INVALID_ARGUMENT
    assert str(aborted.value) == message
    trailing = dict(context.trailing)
    assert trailing[STATUS_HEADER] == "400"
    assert "invalid_image" in str(trailing)
    assert not os.listdir(tmp_path)  # nothing stored, not even an owner record


async def test_a_valid_upload_is_stored_as_sent_and_owned(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    data = real_png()
    request = httpbody_pb2.HttpBody(content_type=CONTENT_TYPE, data=multipart(file_part(data)))
    upload = await service_with(store).UploadImage(request, cast(ServicerContext, _Context()))
    key = await store.find_key("uploads", upload.upload_id.removeprefix("upl_"))
    assert key is not None and key.endswith("/image.png")
    assert await store.read(key) == data  # not re-encoded
    assert await store.owner_of(key) == "acct_1"
    assert (upload.content_type, upload.size_bytes) == ("image/png", len(data))
