"""The blob store: generated results and user uploads, addressed by unguessable keys.

A key is ``<kind>/<token>/<filename>``:

- kind: ``uploads`` (reference files a client sent us) or ``results`` (files we
  generated for a job);
- token: 32 base62 characters from ``secrets`` (~190 bits), the only secret in
  the URL. It is never derived from ids, times or content;
- filename: a short safe name such as ``image.png`` or ``last_frame.png``.

Each blob records the account that owns it (``record_owner``, written before
the blob itself): a ``.owner`` file beside it in the token directory. Dot
names are never valid keys, so the record is never served. Only the owner may
use a blob as a job reference (``services/gateway/references.py``).

Files are served back by ``services/files`` behind the edge at
``{AIPORT_PUBLIC_URL}/files/{key}``. Whoever knows such a URL can read the file
(and may reuse it as an input, see ``key_from_url``), so keys must never be
logged or shown to anyone but the owner.

``LocalBlobStore`` keeps blobs in a directory (``AIPORT_BLOB_DIR``). Writes are
atomic: a temporary file in the target directory, fsync, rename. An
S3-compatible store can implement the same ``BlobStore`` protocol later.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import stat
import string
from collections.abc import AsyncIterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final, Literal, Protocol
from urllib.parse import unquote, urlsplit

from services.common.settings import PROJECT_ROOT, env

Kind = Literal["uploads", "results"]
KINDS: Final[frozenset[str]] = frozenset({"uploads", "results"})
_KIND_BY_NAME: Final[dict[str, Kind]] = {"uploads": "uploads", "results": "results"}

TOKEN_LENGTH: Final = 32
_BASE62: Final = string.digits + string.ascii_letters
_TOKEN_RE: Final = re.compile(r"[0-9A-Za-z]{32}")
_FILENAME_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,100}")
_CONTROL_OR_SPACE: Final = re.compile(r"[\x00-\x20\x7f]")
# aiohttp's FileResponse serves a sibling "<name>.gz" / "<name>.br" in place of
# "<name>" when the client accepts that encoding, so such names can never be keys.
_RESERVED_SUFFIXES: Final = (".gz", ".br")

DEFAULT_PUBLIC_URL: Final = "http://127.0.0.1:8080"
_WRITE_BUFFER: Final = 1 << 20  # put_stream hands the disk thread at least 1 MiB at a time
OWNER_FILE: Final = ".owner"  # beside a blob: the account id that owns it
_OWNER_RE: Final = re.compile(r"[A-Za-z0-9_.:-]{1,200}")

CONTENT_TYPES: Final[dict[str, str]] = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "mp4": "video/mp4",
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
    "m4a": "audio/mp4",
}
_EXTENSIONS: Final[dict[str, str]] = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "video/mp4": "mp4",
    "audio/mpeg": "mp3",
    "audio/wav": "wav",
    "audio/mp4": "m4a",
}


class BlobError(Exception):
    """Base class of the blob store's errors."""


class InvalidBlobKey(BlobError, ValueError):
    """The key is not ``<kind>/<token>/<filename>`` with valid parts."""


class BlobNotFound(BlobError, LookupError):
    """No blob is stored under the key."""


class BlobTooLarge(BlobError):
    """A streamed blob went past its size limit; nothing was stored."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"blob exceeds {max_bytes} bytes")
        self.max_bytes = max_bytes


@dataclass(frozen=True, slots=True)
class BlobKey:
    kind: Kind
    token: str
    filename: str

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.token}/{self.filename}"

    def __str__(self) -> str:
        return self.key


# --- keys --------------------------------------------------------------------------------


def is_valid_filename(filename: str) -> bool:
    return (
        isinstance(filename, str)
        and _FILENAME_RE.fullmatch(filename) is not None
        and not filename.startswith(".")
        and not filename.lower().endswith(_RESERVED_SUFFIXES)
    )


def new_token() -> str:
    return "".join(secrets.choice(_BASE62) for _ in range(TOKEN_LENGTH))


def new_key(kind: Kind, filename: str) -> str:
    """A fresh random key. Raises InvalidBlobKey for an unknown kind or unsafe filename."""
    if kind not in KINDS:
        raise InvalidBlobKey(f"unknown blob kind {kind!r}")
    if not is_valid_filename(filename):
        raise InvalidBlobKey(f"unsafe blob filename {filename!r}")
    return f"{kind}/{new_token()}/{filename}"


def parse_key(key: str) -> BlobKey | None:
    """The parts of a well-formed key, or None. Strict: no normalisation of any kind."""
    if not isinstance(key, str):
        return None
    parts = key.split("/")
    if len(parts) != 3:
        return None
    kind = _KIND_BY_NAME.get(parts[0])
    token, filename = parts[1], parts[2]
    if kind is None or not _TOKEN_RE.fullmatch(token) or not is_valid_filename(filename):
        return None
    return BlobKey(kind, token, filename)


def _require_key(key: str) -> BlobKey:
    parsed = parse_key(key)
    if parsed is None:
        raise InvalidBlobKey("malformed blob key")
    return parsed


# --- content types -------------------------------------------------------------------------


def content_type_for(filename: str) -> str:
    """The Content-Type we serve a blob with, by extension; application/octet-stream if unknown."""
    _, dot, ext = filename.rpartition(".")
    known = CONTENT_TYPES.get(ext.lower()) if dot else None
    return known or "application/octet-stream"


def extension_for(content_type: str) -> str | None:
    """The canonical extension (no dot) for a content type we store, e.g. image/jpeg -> jpg."""
    return _EXTENSIONS.get(content_type.split(";", 1)[0].strip().lower())


# --- URLs ----------------------------------------------------------------------------------


def public_base_url() -> str:
    """Where clients reach the edge [AIPORT_PUBLIC_URL], without a trailing slash."""
    return env("AIPORT_PUBLIC_URL", DEFAULT_PUBLIC_URL).rstrip("/")


def public_url(base_url: str, key: str) -> str:
    """The absolute URL a client GETs for a blob: ``{base_url}/files/{key}``."""
    return f"{base_url.rstrip('/')}/files/{_require_key(key).key}"


def key_from_url(url: str) -> str | None:
    """The blob key of one of our own file URLs, else None.

    Any scheme (http/https) and any host or port is accepted, because the same
    file is reachable through several names (public host, local edge, a CDN);
    only the path counts, and it must be exactly ``/files/<kind>/<token>/<filename>``.
    Each segment is percent-decoded on its own, so an encoded slash, backslash
    or dot segment (``%2f``, ``%5c``, ``%2e%2e``) decodes into a segment that
    fails validation instead of changing the path's shape. Query and fragment
    are ignored.

    Both kinds resolve: ``uploads`` (the usual case: a file from the upload
    endpoint) and ``results`` (a generated image reused as a reference, e.g. a
    last frame feeding the next video). That is safe because the token is the
    capability: whoever holds the URL can already download the file.
    """
    if not isinstance(url, str) or len(url) > 4096 or _CONTROL_OR_SPACE.search(url):
        return None  # urlsplit would silently drop tabs/newlines; refuse them instead
    try:
        split = urlsplit(url)
    except ValueError:
        return None
    if split.scheme.lower() not in ("http", "https") or not split.netloc:
        return None
    segments = split.path.split("/")
    if len(segments) != 5 or segments[0] != "" or segments[1] != "files":
        return None
    decoded: list[str] = []
    for segment in segments[2:]:
        try:
            decoded.append(unquote(segment, errors="strict"))
        except UnicodeDecodeError:
            return None
    parsed = parse_key("/".join(decoded))
    # Re-check the segment count: a decoded "/" must not have produced a valid key.
    if parsed is None or any("/" in part for part in decoded):
        return None
    return parsed.key


# --- stores --------------------------------------------------------------------------------


class BlobStore(Protocol):
    """What services need from a blob store, wherever the bytes live."""

    async def put_bytes(self, key: str, data: bytes) -> None: ...

    async def put_stream(self, key: str, chunks: AsyncIterable[bytes], max_bytes: int) -> int: ...

    async def read(self, key: str) -> bytes: ...

    async def exists(self, key: str) -> bool: ...

    async def size(self, key: str) -> int: ...

    async def delete(self, key: str) -> bool: ...

    async def record_owner(self, key: str, account_id: str) -> None: ...

    async def owner_of(self, key: str) -> str | None: ...

    async def find_key(self, kind: Kind, token: str) -> str | None: ...


class LocalBlobStore:
    """Blobs as files under ``root/<kind>/<token>/<filename>``.

    All disk work runs in a worker thread (asyncio.to_thread), so a large file
    never blocks the event loop. Writes are atomic (temp file in the same
    directory, fsync, rename, fsync of the directory): a reader sees either no
    file or the complete one. Temporary names start with a dot, which no valid
    key does, so a half-written file can never be served.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path_for(self, key: str) -> Path:
        """Where a key lives on disk (whether or not it exists). Raises InvalidBlobKey."""
        parsed = _require_key(key)
        return self.root / parsed.kind / parsed.token / parsed.filename

    async def put_bytes(self, key: str, data: bytes) -> None:
        path = self.path_for(key)
        await asyncio.to_thread(_write_atomic, path, data)

    async def put_stream(self, key: str, chunks: AsyncIterable[bytes], max_bytes: int) -> int:
        """Store chunks as they arrive; returns the size. Raises BlobTooLarge past
        max_bytes (the iterator is not read any further and nothing is left on disk)."""
        path = self.path_for(key)
        tmp_path, handle = await asyncio.to_thread(_open_temp, path)
        total = 0
        pending: list[bytes] = []
        pending_size = 0
        done = False
        try:
            async for chunk in chunks:
                if not chunk:
                    continue
                total += len(chunk)
                if total > max_bytes:
                    raise BlobTooLarge(max_bytes)
                pending.append(bytes(chunk))
                pending_size += len(chunk)
                if pending_size >= _WRITE_BUFFER:
                    data = b"".join(pending)
                    pending.clear()
                    pending_size = 0
                    await asyncio.to_thread(handle.write, data)
            await asyncio.to_thread(_finish_temp, handle, b"".join(pending), tmp_path, path)
            done = True
            return total
        finally:
            if not done:
                # Synchronous on purpose: this also runs on cancellation, where an
                # await could be interrupted and leave the temp file behind.
                _discard_temp(handle, tmp_path)

    async def open_path(self, key: str) -> Path | None:
        """The stored file for a key (to serve or read it), or None for an invalid
        key or a missing blob. Only regular files count; the store never makes links."""
        try:
            path = self.path_for(key)
        except InvalidBlobKey:
            return None
        return path if await asyncio.to_thread(_is_regular_file, path) else None

    async def read(self, key: str) -> bytes:
        path = self.path_for(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise BlobNotFound("no such blob") from None

    async def exists(self, key: str) -> bool:
        return await self.open_path(key) is not None

    async def size(self, key: str) -> int:
        path = self.path_for(key)
        try:
            st = await asyncio.to_thread(path.stat)
        except (FileNotFoundError, NotADirectoryError):
            raise BlobNotFound("no such blob") from None
        return st.st_size

    async def delete(self, key: str) -> bool:
        """Remove a blob (and its owner record); False if there was none."""
        path = self.path_for(key)
        return await asyncio.to_thread(_unlink, path)

    async def record_owner(self, key: str, account_id: str) -> None:
        """Record who owns the blob at key. Call it BEFORE storing the blob, so a
        blob that can be read always has its owner recorded."""
        if not isinstance(account_id, str) or not _OWNER_RE.fullmatch(account_id):
            raise ValueError("invalid owner account id")
        path = self.path_for(key).parent / OWNER_FILE
        await asyncio.to_thread(_write_atomic, path, account_id.encode("ascii"))

    async def owner_of(self, key: str) -> str | None:
        """The account that owns the stored blob at key; None for an invalid key, a
        missing blob, or a blob with no owner record (stored before records existed)."""
        path = await self.open_path(key)
        if path is None:
            return None
        return await asyncio.to_thread(_read_owner, path.parent / OWNER_FILE)

    async def find_key(self, kind: Kind, token: str) -> str | None:
        """The key of the one blob stored under kind/token (an upload id names only
        the token), or None if there is none or the token is malformed."""
        if kind not in KINDS or not isinstance(token, str) or not _TOKEN_RE.fullmatch(token):
            return None
        names = await asyncio.to_thread(_blob_names, self.root / kind / token)
        keys = [k for k in (f"{kind}/{token}/{name}" for name in names) if parse_key(k)]
        return keys[0] if len(keys) == 1 else None


def blob_dir() -> Path:
    """[AIPORT_BLOB_DIR], default <project>/.aiport/blobs."""
    return Path(env("AIPORT_BLOB_DIR", str(PROJECT_ROOT / ".aiport" / "blobs")))


def blob_store_from_env() -> LocalBlobStore:
    return LocalBlobStore(blob_dir())


# --- disk helpers (run in worker threads) --------------------------------------------------


def _open_temp(path: Path) -> tuple[Path, BinaryIO]:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(tmp_path, flags, 0o644)
    return tmp_path, os.fdopen(fd, "wb")


def _finish_temp(handle: BinaryIO, tail: bytes, tmp_path: Path, path: Path) -> None:
    if tail:
        handle.write(tail)
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()
    os.replace(tmp_path, path)
    _fsync_dir(path.parent)


def _discard_temp(handle: BinaryIO, tmp_path: Path) -> None:
    with contextlib.suppress(OSError):
        handle.close()
    with contextlib.suppress(FileNotFoundError):
        tmp_path.unlink()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp_path, handle = _open_temp(path)
    try:
        _finish_temp(handle, data, tmp_path, path)
    except BaseException:
        _discard_temp(handle, tmp_path)
        raise


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX); harmless where directories can't be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _is_regular_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return False


def _read_owner(path: Path) -> str | None:
    try:
        owner = path.read_bytes().decode("ascii")
    except (OSError, UnicodeDecodeError):
        return None
    return owner if _OWNER_RE.fullmatch(owner) else None


def _blob_names(directory: Path) -> list[str]:
    """The regular files in a token directory that could be blobs (no dot names)."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return []
    return [
        e.name for e in entries if not e.name.startswith(".") and e.is_file(follow_symlinks=False)
    ]


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
    except (FileNotFoundError, NotADirectoryError):
        return False
    if not _blob_names(path.parent):
        with contextlib.suppress(FileNotFoundError):
            (path.parent / OWNER_FILE).unlink()
    with contextlib.suppress(OSError):
        path.parent.rmdir()  # the token directory, once empty
    return True
