"""The blob store: keys that cannot be guessed or bent into paths, atomic writes, and
recognising our own file URLs whatever host they were served on."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.common import blobs
from services.common.blobs import (
    BlobNotFound,
    BlobTooLarge,
    InvalidBlobKey,
    LocalBlobStore,
    content_type_for,
    extension_for,
    key_from_url,
    new_key,
    parse_key,
    public_url,
)
from services.common.settings import PROJECT_ROOT

TOKEN = "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY"
assert len(TOKEN) == 32


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


# --- keys ----------------------------------------------------------------------------------


def test_new_key_shape_and_randomness() -> None:
    keys = {new_key("uploads", "image.png") for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        assert re.fullmatch(r"uploads/[0-9A-Za-z]{32}/image\.png", key)
        parsed = parse_key(key)
        assert parsed is not None and parsed.kind == "uploads" and parsed.key == key
    result = new_key("results", "last_frame.png")
    assert result.startswith("results/") and result.endswith("/last_frame.png")


@pytest.mark.parametrize(
    ("kind", "filename"),
    [
        ("downloads", "image.png"),
        ("", "image.png"),
        ("uploads", ""),
        ("uploads", ".hidden"),
        ("uploads", ".."),
        ("uploads", "../etc/passwd"),
        ("uploads", "a/b.png"),
        ("uploads", "a\\b.png"),
        ("uploads", "spaced name.png"),
        ("uploads", "image.png\n"),
        ("uploads", "x" * 101),
        ("uploads", "image.png.gz"),
        ("uploads", "café.png"),
    ],
)
def test_new_key_refuses_bad_kind_or_filename(kind: str, filename: str) -> None:
    with pytest.raises(InvalidBlobKey):
        new_key(kind, filename)  # type: ignore[arg-type]


def test_parse_key_accepts_valid_keys() -> None:
    parsed = parse_key(f"results/{TOKEN}/video.mp4")
    assert parsed is not None
    assert (parsed.kind, parsed.token, parsed.filename) == ("results", TOKEN, "video.mp4")
    assert str(parsed) == f"results/{TOKEN}/video.mp4"
    assert parse_key(f"uploads/{TOKEN}/{'x' * 100}") is not None


@pytest.mark.parametrize(
    "key",
    [
        "",
        f"uploads/{TOKEN}",
        f"uploads/{TOKEN}/image.png/extra",
        f"/uploads/{TOKEN}/image.png",
        f"uploads/{TOKEN}/",
        f"uploads//{TOKEN}/image.png",
        f"Uploads/{TOKEN}/image.png",
        f"other/{TOKEN}/image.png",
        f"../{TOKEN}/image.png",
        "uploads/../image.png",
        f"uploads/{TOKEN}/..",
        f"uploads/{TOKEN}/../../etc/passwd",
        f"uploads/{TOKEN}/%2e%2e",
        f"uploads/{TOKEN}/..%2fpasswd",
        f"uploads/{TOKEN}/.env",
        f"uploads/{TOKEN}/image.png\n",
        f"uploads/{TOKEN}/image.png\x00.txt",
        f"uploads/{TOKEN}/image.png.br",
        f"uploads/{TOKEN[:-1]}/image.png",
        f"uploads/{TOKEN}x/image.png",
        f"uploads/{TOKEN[:-1]}-/image.png",
        f"uploads/{TOKEN[:-1]}é/image.png",
        f"uploads\\{TOKEN}\\image.png",
    ],
)
def test_parse_key_is_strict(key: str) -> None:
    assert parse_key(key) is None


def test_parse_key_rejects_non_strings() -> None:
    assert parse_key(None) is None  # type: ignore[arg-type]
    assert parse_key(b"uploads/x/y") is None  # type: ignore[arg-type]


def test_content_types() -> None:
    assert content_type_for("image.png") == "image/png"
    assert content_type_for("a.JPG") == "image/jpeg"
    assert content_type_for("a.jpeg") == "image/jpeg"
    assert content_type_for("a.webp") == "image/webp"
    assert content_type_for("video.mp4") == "video/mp4"
    assert content_type_for("a.mp3") == "audio/mpeg"
    assert content_type_for("a.wav") == "audio/wav"
    assert content_type_for("a.m4a") == "audio/mp4"
    assert content_type_for("a.html") == "application/octet-stream"
    assert content_type_for("noext") == "application/octet-stream"
    assert extension_for("image/jpeg") == "jpg"
    assert extension_for("Image/PNG; charset=binary") == "png"
    assert extension_for("text/html") is None


# --- URLs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "base",
    [
        "http://127.0.0.1:8080",
        "https://aiport.id",
        "https://aiport.id/",
        "https://cdn.example.com:8443",
        "http://[::1]:8080",
    ],
)
@pytest.mark.parametrize("kind", ["uploads", "results"])
def test_public_url_round_trips(base: str, kind: blobs.Kind) -> None:
    key = new_key(kind, "image.png")
    url = public_url(base, key)
    assert url == f"{base.rstrip('/')}/files/{key}"
    assert key_from_url(url) == key


def test_our_urls_are_recognised_on_any_host_scheme_and_port() -> None:
    key = f"uploads/{TOKEN}/ref.jpg"
    for url in (
        f"https://aiport.id/files/{key}",
        f"http://localhost/files/{key}",
        f"HTTPS://AIPORT.ID:443/files/{key}",
        f"https://edge.internal:9999/files/{key}?download=1#frag",
        f"https://aiport.id/files/uploads/{TOKEN}/ref%2Ejpg",  # plain characters may be encoded
    ):
        assert key_from_url(url) == key, url


def test_public_url_refuses_bad_keys() -> None:
    with pytest.raises(InvalidBlobKey):
        public_url("https://aiport.id", "uploads/../x")


def test_public_base_url_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIPORT_PUBLIC_URL", raising=False)
    assert blobs.public_base_url() == "http://127.0.0.1:8080"
    monkeypatch.setenv("AIPORT_PUBLIC_URL", "https://aiport.id/")
    assert blobs.public_base_url() == "https://aiport.id"


@pytest.mark.parametrize(
    "url",
    [
        f"/files/uploads/{TOKEN}/ref.jpg",  # relative: not a URL a client can give
        f"files/uploads/{TOKEN}/ref.jpg",
        f"https:///files/uploads/{TOKEN}/ref.jpg",
        f"ftp://aiport.id/files/uploads/{TOKEN}/ref.jpg",
        f"file:///files/uploads/{TOKEN}/ref.jpg",
        f"javascript://aiport.id/files/uploads/{TOKEN}/ref.jpg",
        f"https://aiport.id/uploads/{TOKEN}/ref.jpg",  # no /files prefix
        f"https://aiport.id/x/files/uploads/{TOKEN}/ref.jpg",
        f"https://aiport.id//files/uploads/{TOKEN}/ref.jpg",
        f"https://aiport.id/files//uploads/{TOKEN}/ref.jpg",
        f"https://aiport.id/files/uploads/{TOKEN}/ref.jpg/",
        f"https://aiport.id/files/uploads/{TOKEN}/ref.jpg/x",
        f"https://aiport.id/files/private/{TOKEN}/ref.jpg",
        f"https://aiport.id/files/./uploads/{TOKEN}/ref.jpg",
        f"https://aiport.id/files/x/../uploads/{TOKEN}/ref.jpg",
        f"https://aiport.id/files/uploads/{TOKEN}/..",
        f"https://aiport.id/files/uploads/{TOKEN}/%2e%2e",
        f"https://aiport.id/files/uploads/{TOKEN}/%2E%2E",
        f"https://aiport.id/files/uploads/{TOKEN}/..%2Fref.jpg",
        f"https://aiport.id/files/uploads%2F{TOKEN}%2Fref.jpg",
        f"https://aiport.id/files/uploads/{TOKEN}%2Fref.jpg/x",
        f"https://aiport.id/files/uploads/{TOKEN}/ref%2fjpg",
        f"https://aiport.id/files/uploads/{TOKEN}/ref%5cjpg",
        f"https://aiport.id/files/uploads/{TOKEN}/%ff.jpg",
        f"https://aiport.id/files/uploads/{TOKEN}/ref.jpg%00",
        f"https://aiport.id/files/uploads/{TOKEN}/.ref.jpg",
        f"https://aiport.id/files/uploads/{TOKEN[:20]}/ref.jpg",
        f"https://aiport.id/files/uploads/{TOKEN}/re\nf.jpg",
        f"https://aiport.id/files/uploads/{TOKEN}/re\tf.jpg",
        f" https://aiport.id/files/uploads/{TOKEN}/ref.jpg",
        f"https://aiport.id/files/uploads/{TOKEN}/ref.jpg\\x",
        "https://aiport.id/files/uploads/",
        "",
        "not a url",
    ],
)
def test_key_from_url_rejects_everything_else(url: str) -> None:
    assert key_from_url(url) is None


def test_key_from_url_rejects_non_strings_and_huge_urls() -> None:
    assert key_from_url(None) is None  # type: ignore[arg-type]
    assert key_from_url(f"https://{'a' * 5000}.com/files/uploads/{TOKEN}/a.png") is None


# --- the local store -----------------------------------------------------------------------


async def test_put_read_exists_size_delete(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    key = new_key("results", "image.png")
    assert not await store.exists(key)
    assert await store.open_path(key) is None
    with pytest.raises(BlobNotFound):
        await store.read(key)
    with pytest.raises(BlobNotFound):
        await store.size(key)

    await store.put_bytes(key, b"\x89PNG data")
    assert await store.exists(key)
    assert await store.read(key) == b"\x89PNG data"
    assert await store.size(key) == 9
    path = await store.open_path(key)
    assert path == tmp_path / key and path.read_bytes() == b"\x89PNG data"
    assert files_under(tmp_path) == [tmp_path / key]  # no temp file left behind

    await store.put_bytes(key, b"replaced")  # a re-put replaces atomically
    assert await store.read(key) == b"replaced"
    assert files_under(tmp_path) == [tmp_path / key]

    assert await store.delete(key) is True
    assert await store.delete(key) is False
    assert not await store.exists(key)
    assert files_under(tmp_path) == []


async def test_store_refuses_invalid_keys(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "root")
    (tmp_path / "secret.txt").write_text("secret")
    bad = "uploads/../../secret.txt"
    with pytest.raises(InvalidBlobKey):
        await store.put_bytes(bad, b"x")
    with pytest.raises(InvalidBlobKey):
        await store.read(bad)
    with pytest.raises(InvalidBlobKey):
        await store.size(bad)
    assert await store.exists(bad) is False
    assert await store.open_path(bad) is None
    assert await store.open_path(f"uploads/{TOKEN}/.tmp") is None


async def test_open_path_ignores_directories_and_links(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    (tmp_path / "uploads" / TOKEN / "dir.png").mkdir(parents=True)
    assert await store.open_path(f"uploads/{TOKEN}/dir.png") is None
    (tmp_path / "outside.png").write_bytes(b"outside")
    (tmp_path / "uploads" / TOKEN / "link.png").symlink_to(tmp_path / "outside.png")
    assert await store.open_path(f"uploads/{TOKEN}/link.png") is None


async def _chunks(parts: list[bytes], seen: list[int] | None = None) -> AsyncIterator[bytes]:
    for index, part in enumerate(parts):
        if seen is not None:
            seen.append(index)
        yield part
        await asyncio.sleep(0)


async def test_put_stream_is_atomic(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    key = new_key("results", "video.mp4")
    observed: list[bool] = []

    async def watched() -> AsyncIterator[bytes]:
        for part in (b"a" * 700_000, b"b" * 700_000, b"c" * 700_000):
            observed.append(await store.exists(key))  # never visible half-written
            yield part

    size = await store.put_stream(key, watched(), max_bytes=10_000_000)
    assert size == 2_100_000
    assert observed == [False, False, False]
    assert await store.read(key) == b"a" * 700_000 + b"b" * 700_000 + b"c" * 700_000
    assert files_under(tmp_path) == [tmp_path / key]


async def test_put_stream_exactly_at_the_limit(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    key = new_key("uploads", "image.png")
    assert await store.put_stream(key, _chunks([b"12345", b"", b"67890"]), max_bytes=10) == 10
    assert await store.read(key) == b"1234567890"


async def test_put_stream_too_large_leaves_nothing(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    key = new_key("uploads", "image.png")
    seen: list[int] = []
    parts = [b"x" * 400_000] * 10
    with pytest.raises(BlobTooLarge) as info:
        await store.put_stream(key, _chunks(parts, seen), max_bytes=1_000_000)
    assert info.value.max_bytes == 1_000_000
    assert seen == [0, 1, 2]  # stopped reading at the chunk that crossed the limit
    assert not await store.exists(key)
    assert files_under(tmp_path) == []


async def test_put_stream_failing_source_leaves_nothing(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    key = new_key("uploads", "image.png")

    async def broken() -> AsyncIterator[bytes]:
        yield b"x" * 2_000_000  # past the write buffer: some bytes reach the temp file
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await store.put_stream(key, broken(), max_bytes=10_000_000)
    assert files_under(tmp_path) == []


async def test_put_stream_cancelled_leaves_nothing(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    key = new_key("uploads", "image.png")
    started = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"x" * 2_000_000
        started.set()
        await asyncio.sleep(30)
        yield b"never"

    task = asyncio.create_task(store.put_stream(key, slow(), max_bytes=10_000_000))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert files_under(tmp_path) == []


def test_store_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AIPORT_BLOB_DIR", str(tmp_path / "blobs"))
    assert blobs.blob_store_from_env().root == tmp_path / "blobs"
    monkeypatch.delenv("AIPORT_BLOB_DIR")
    assert blobs.blob_store_from_env().root == PROJECT_ROOT / ".aiport" / "blobs"


# --- owners (issue 11: only the owner may use a blob as a reference) ---------------------


async def test_owner_is_recorded_beside_the_blob_and_never_a_key(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    key = new_key("uploads", "image.png")
    await store.record_owner(key, "acct_A")
    assert await store.owner_of(key) is None  # no blob yet: nothing to own
    await store.put_bytes(key, b"png")
    assert await store.owner_of(key) == "acct_A"
    token = key.split("/")[1]
    assert parse_key(f"uploads/{token}/.owner") is None  # never servable
    assert await store.find_key("uploads", token) == key
    assert await store.find_key("results", token) is None
    assert await store.find_key("uploads", token[:-1]) is None
    assert await store.find_key("uploads", "../" + token[3:]) is None
    assert await store.delete(key) is True
    assert files_under(tmp_path) == []  # the record goes with the blob
    assert await store.owner_of(key) is None
    assert await store.find_key("uploads", token) is None


async def test_a_blob_without_an_owner_record_has_no_owner(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    key = new_key("results", "image.png")
    await store.put_bytes(key, b"png")
    assert await store.owner_of(key) is None
    with pytest.raises(ValueError):
        await store.record_owner(key, "")
    with pytest.raises(ValueError):
        await store.record_owner(key, "acct/../x")
