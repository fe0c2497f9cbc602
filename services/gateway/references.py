"""Job references that name our own blobs: upload ids, upload URLs, job result URLs.

Wherever a request takes a reference URL (img2img ``images``, img2video
``first_frame_url`` / ``last_frame_url``, multimodal ``images`` / ``videos`` /
``audios``) the client may also give:

- an ``upload_id`` from POST /v1/image/upload (``upl_`` + 32 characters);
- the ``url`` of one of its uploads, or the ``result_url`` / ``last_frame_url``
  of one of its own finished jobs (any host or scheme: only the
  ``/files/<kind>/<token>/<name>`` path counts, see ``blobs.key_from_url``).

The gateway resolves each of these before pricing and holding: the blob must
exist, be owned by the caller (``LocalBlobStore.owner_of``) and be of the
slot's media (an image where an image is expected). Another account's blob is
refused exactly like an unknown one, so nothing tells a caller that it exists,
and nothing is held for a request that names one. Resolved references become
our canonical public URL, which the worker reads from the store.

``own_references`` is pure; ``ReferenceResolver`` does the store look-ups.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

from aiport.v1 import job_state_pb2

from services.common import blobs
from services.gateway import errors
from services.gateway.errors import PublicError

UPLOAD_ID_PREFIX: Final = "upl_"
_UPLOAD_ID_RE: Final = re.compile(r"upl_[0-9A-Za-z]{32}")

Media = Literal["image", "video", "audio"]
_SINGLE_SLOTS: Final[tuple[tuple[str, Media], ...]] = (
    ("first_frame_url", "image"),
    ("last_frame_url", "image"),
)
_LIST_SLOTS: Final[tuple[tuple[str, Media], ...]] = (
    ("images", "image"),
    ("videos", "video"),
    ("audios", "audio"),
)


def is_upload_id(value: str) -> bool:
    """An upload id as /v1/image/upload returns it (whether or not it exists)."""
    return isinstance(value, str) and _UPLOAD_ID_RE.fullmatch(value) is not None


def is_own_reference(value: str) -> bool:
    """An upload id or one of our own file URLs (an upload or a job result)."""
    return is_upload_id(value) or blobs.key_from_url(value) is not None


@dataclass(frozen=True, slots=True)
class OwnReference:
    param: str  # the request field, e.g. "images[1]" or "first_frame_url"
    value: str  # what the client sent
    media: Media  # what the slot expects


def own_references(spec: job_state_pb2.WorkSpec) -> list[OwnReference]:
    """Every reference in a parsed spec that names one of our blobs, in request order."""
    found: list[OwnReference] = []
    for field, media in _SINGLE_SLOTS:
        value = getattr(spec, field)
        if value and is_own_reference(value):
            found.append(OwnReference(field, value, media))
    for field, media in _LIST_SLOTS:
        for i, value in enumerate(getattr(spec, field)):
            if is_own_reference(value):
                found.append(OwnReference(f"{field}[{i}]", value, media))
    return found


def _replace(spec: job_state_pb2.WorkSpec, param: str, url: str) -> None:
    field, _, index = param.partition("[")
    if index:
        getattr(spec, field)[int(index.rstrip("]"))] = url
    else:
        setattr(spec, field, url)


def not_found(param: str) -> PublicError:
    """The same answer for an unknown, expired or another account's blob."""
    return errors.reference_not_found(param)


_A: Final[dict[str, str]] = {"image": "an image", "video": "a video", "audio": "an audio file"}


def _wrong_media(param: str, found: str, media: Media) -> PublicError:
    return errors.invalid_parameter(
        f"'{param}' is {_A.get(found, 'a file')}; this field takes {_A[media]}.", param
    )


def _media_of(key: str) -> str:
    """'image/png' -> 'image', by the stored filename (we named it)."""
    parsed = blobs.parse_key(key)
    content_type = blobs.content_type_for(parsed.filename) if parsed else ""
    return content_type.split("/", 1)[0]


class ReferenceResolver:
    def __init__(self, store: blobs.BlobStore, public_base_url: str) -> None:
        self.store = store
        self.public_base_url = public_base_url

    async def _key(self, ref: OwnReference) -> str | None:
        if is_upload_id(ref.value):
            return await self.store.find_key("uploads", ref.value[len(UPLOAD_ID_PREFIX) :])
        return blobs.key_from_url(ref.value)

    async def resolve(self, spec: job_state_pb2.WorkSpec, account_id: str) -> None:
        """Check every own reference against the caller's account and rewrite it to
        the blob's canonical URL, in place. Raises PublicError (400) on the first
        reference that is unknown, another account's, or of the wrong media."""
        for ref in own_references(spec):
            key = await self._key(ref)
            owner = await self.store.owner_of(key) if key is not None else None
            if key is None or owner is None or owner != account_id:
                raise not_found(ref.param)
            media = _media_of(key)
            if media != ref.media:
                raise _wrong_media(ref.param, media, ref.media)
            _replace(spec, ref.param, blobs.public_url(self.public_base_url, key))


__all__ = [
    "OwnReference",
    "ReferenceResolver",
    "is_own_reference",
    "is_upload_id",
    "not_found",
    "own_references",
]
