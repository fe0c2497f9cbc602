"""Validation of an image upload: POST /v1/image/upload (pure, no I/O).

The body is multipart/form-data with one part named `file` (other parts are
ignored). The parser is a small hand-written one over bytes: it finds each
delimiter line (CRLF "--" boundary, optional transport padding, CRLF) with
bytes.find, so binary payloads of any content are handled in linear time and
never decoded. The image type comes from the file's first bytes; the client's
Content-Type and filename are never trusted.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import Message
from email.utils import collapse_rfc2231_value

from services.gateway import errors
from services.gateway.errors import PublicError

MAX_UPLOAD_BYTES = 30 * 1024 * 1024
FILE_FIELD = "file"
# RFC 2046 allows 70 characters; be a little lenient with unusual clients.
MAX_BOUNDARY_CHARS = 200

_JPEG = b"\xff\xd8\xff"
_PNG = b"\x89PNG\r\n\x1a\n"
_CRLF = b"\r\n"
_UNSUPPORTED = "unsupported image type; use JPEG, PNG or WEBP"


@dataclass(frozen=True, slots=True)
class UploadedImage:
    data: bytes
    content_type: str  # "image/jpeg", "image/png" or "image/webp", from the content
    extension: str  # "jpg", "png" or "webp"


def sniff_image(data: bytes) -> tuple[str, str] | None:
    """(content type, file extension) from the magic bytes, or None if not JPEG/PNG/WEBP."""
    if data.startswith(_JPEG):
        return "image/jpeg", "jpg"
    if data.startswith(_PNG):
        return "image/png", "png"
    if len(data) >= 12 and data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "image/webp", "webp"
    return None


def _invalid(message: str) -> PublicError:
    return errors.invalid_parameter(message, FILE_FIELD)


def _too_large(size: int) -> PublicError:
    return errors.file_too_large(size, MAX_UPLOAD_BYTES, FILE_FIELD)


_NOT_MULTIPART = "The request must be multipart/form-data with the image in a part named 'file'."


def _boundary(content_type: str) -> bytes:
    if any(ch in content_type for ch in "\r\n\0"):
        raise _invalid(_NOT_MULTIPART)
    header = Message()
    header["Content-Type"] = content_type
    if header.get_content_type() != "multipart/form-data":
        raise _invalid(_NOT_MULTIPART)
    boundary = header.get_boundary()
    if (
        not boundary
        or len(boundary) > MAX_BOUNDARY_CHARS
        or not all(" " <= ch <= "~" for ch in boundary)
    ):
        raise _invalid("The Content-Type has no usable multipart boundary parameter.")
    return boundary.encode("ascii")


def _delimiter_line_end(raw: bytes, i: int) -> tuple[int, bool] | None:
    """After "--boundary" at i: (index past the line, is the close delimiter) or None.

    None means the bytes only begin like a delimiter ("--boundaryX...") and are data.
    """
    if raw.startswith(b"--", i):
        return i + 2, True  # whatever follows the close delimiter is epilogue
    while raw[i : i + 1] in (b" ", b"\t"):
        i += 1
    if raw.startswith(_CRLF, i):
        return i + 2, False
    return None


def _next_delimiter(raw: bytes, start: int, delimiter: bytes) -> tuple[int, int, bool] | None:
    """The next CRLF + delimiter line at or after start: (its start, line end, is close)."""
    needle = _CRLF + delimiter
    at = raw.find(needle, start)
    while at >= 0:
        end = _delimiter_line_end(raw, at + len(needle))
        if end is not None:
            return at, end[0], end[1]
        at = raw.find(needle, at + 1)
    return None


def _part_name(headers: bytes) -> str | None:
    """The `name` of a part's Content-Disposition (None without one)."""
    if not headers:
        return None
    lines: list[str] = []
    for line in headers.decode("utf-8", "replace").split("\r\n"):
        if line[:1] in (" ", "\t") and lines:
            lines[-1] += " " + line.strip()  # obsolete header folding
        elif ":" in line:
            lines.append(line)
        else:
            raise _invalid("The multipart body is malformed: a part has an invalid header line.")
    for line in lines:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-disposition":
            disposition = Message()
            disposition["Content-Disposition"] = value.strip()
            param = disposition.get_param("name", header="content-disposition")
            if param is None:
                return None
            return collapse_rfc2231_value(param)
    return None


def _file_span(raw: bytes, boundary: bytes) -> tuple[int, int]:
    """Start and end in raw of the one `file` part's data."""
    delimiter = b"--" + boundary
    first = _delimiter_line_end(raw, len(delimiter)) if raw.startswith(delimiter) else None
    if first is not None:
        pos, closed = first
    else:
        found = _next_delimiter(raw, 0, delimiter)  # skips any preamble
        if found is None:
            raise _invalid("The multipart body is malformed: no boundary line was found.")
        _, pos, closed = found

    span: tuple[int, int] | None = None
    while not closed:
        found = _next_delimiter(raw, pos, delimiter)
        if found is None:
            raise _invalid("The multipart body is malformed: it has no closing boundary.")
        part_end, next_pos, next_closed = found
        if raw.startswith(_CRLF, pos):
            headers, body_start = b"", pos + 2
        else:
            headers_end = raw.find(_CRLF + _CRLF, pos, part_end + 2)
            if headers_end < 0:
                raise _invalid("The multipart body is malformed: a part's headers do not end.")
            headers, body_start = raw[pos:headers_end], headers_end + 4
        body_start = min(body_start, part_end)
        if _part_name(headers) == FILE_FIELD:
            if span is not None:
                raise _invalid("Send exactly one part named 'file'.")
            span = (body_start, part_end)
        pos, closed = next_pos, next_closed

    if span is None:
        raise _invalid("The image is missing: send it in a multipart part named 'file'.")
    return span


def parse_upload(raw: bytes, content_type: str) -> UploadedImage:
    """Validate an upload body and return the image with its sniffed type."""
    start, end = _file_span(raw, _boundary(content_type))
    size = end - start
    if size == 0:
        raise _invalid("The file is empty.")
    if size > MAX_UPLOAD_BYTES:
        raise _too_large(size)
    data = raw[start:end]
    kind = sniff_image(data)
    if kind is None:
        raise _invalid(_UNSUPPORTED)
    return UploadedImage(data=data, content_type=kind[0], extension=kind[1])


__all__ = ["MAX_UPLOAD_BYTES", "UploadedImage", "parse_upload", "sniff_image"]
