"""The files service over real loopback HTTP: bytes, headers, Range, HEAD, errors,
traversal attempts, the access log, and the process's clean shutdown."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest
from aiohttp import web

from deploy.local.ports import free_port
from services.common.blobs import LocalBlobStore, new_key
from services.common.metrics import parse_addr
from services.files.server import DRAINING, create_app, make_runner

REPO = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
MP4 = b"\x00\x00\x00\x18ftypmp42" + b"\x01\x02\x03\x04" * 5000
NOT_FOUND = {
    "error": {
        "message": "No such file.",
        "type": "invalid_request_error",
        "param": None,
        "code": "not_found",
    }
}


class Served:
    def __init__(self, store: LocalBlobStore, runner: web.AppRunner, port: int) -> None:
        self.store = store
        self.runner = runner
        self.port = port
        self.base = f"http://127.0.0.1:{port}"


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    store = LocalBlobStore(tmp_path / "blobs")
    runner = make_runner(create_app(store))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield Served(store, runner, port)
    finally:
        await runner.cleanup()


async def raw_request(port: int, request_line: str, extra: str = "") -> tuple[int, bytes]:
    """Send a request line exactly as written (no client-side normalisation)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{request_line}\r\nHost: x\r\nConnection: close\r\n{extra}\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def test_serves_bytes_with_headers(served: Served) -> None:
    key = new_key("results", "image.png")
    await served.store.put_bytes(key, PNG)
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{served.base}/files/{key}")
    assert response.status_code == 200
    assert response.content == PNG
    headers = response.headers
    assert headers["content-type"] == "image/png"
    assert headers["content-length"] == str(len(PNG))
    assert headers["content-disposition"] == 'inline; filename="image.png"'
    assert headers["cache-control"] == "private, max-age=86400"
    assert headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in headers["content-security-policy"]
    assert headers["accept-ranges"] == "bytes"
    assert headers["etag"] and headers["last-modified"]


@pytest.mark.parametrize(
    ("filename", "data", "content_type"),
    [
        ("video.mp4", MP4, "video/mp4"),
        ("ref.jpg", b"\xff\xd8\xff\xe0jpeg", "image/jpeg"),
        ("ref.jpeg", b"\xff\xd8\xff\xe0jpeg", "image/jpeg"),
        ("ref.webp", b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
        ("voice.mp3", b"ID3\x03\x00", "audio/mpeg"),
        ("voice.wav", b"RIFF\x00\x00\x00\x00WAVEfmt ", "audio/wav"),
        ("voice.m4a", b"\x00\x00\x00\x18ftypM4A ", "audio/mp4"),
        ("data.bin", b"<html>not html to a browser</html>", "application/octet-stream"),
    ],
)
async def test_content_types(served: Served, filename: str, data: bytes, content_type: str) -> None:
    key = new_key("uploads", filename)
    await served.store.put_bytes(key, data)
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{served.base}/files/{key}")
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert response.content == data


async def test_range_requests(served: Served) -> None:
    key = new_key("results", "video.mp4")
    await served.store.put_bytes(key, MP4)
    url = f"{served.base}/files/{key}"
    async with httpx.AsyncClient() as client:
        first = await client.get(url, headers={"Range": "bytes=0-99"})
        assert first.status_code == 206
        assert first.content == MP4[:100]
        assert first.headers["content-range"] == f"bytes 0-99/{len(MP4)}"
        assert first.headers["content-type"] == "video/mp4"

        tail = await client.get(url, headers={"Range": "bytes=-10"})
        assert tail.status_code == 206 and tail.content == MP4[-10:]

        middle = await client.get(url, headers={"Range": "bytes=1000-"})
        assert middle.status_code == 206 and middle.content == MP4[1000:]

        beyond = await client.get(url, headers={"Range": f"bytes={len(MP4) + 10}-"})
        assert beyond.status_code == 416


async def test_conditional_get(served: Served) -> None:
    key = new_key("results", "image.png")
    await served.store.put_bytes(key, PNG)
    url = f"{served.base}/files/{key}"
    async with httpx.AsyncClient() as client:
        first = await client.get(url)
        again = await client.get(url, headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["cache-control"] == "private, max-age=86400"


async def test_head(served: Served) -> None:
    key = new_key("results", "image.png")
    await served.store.put_bytes(key, PNG)
    async with httpx.AsyncClient() as client:
        response = await client.head(f"{served.base}/files/{key}")
        missing = await client.head(f"{served.base}/files/{new_key('results', 'image.png')}")
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-length"] == str(len(PNG))
    assert response.headers["content-type"] == "image/png"
    assert missing.status_code == 404 and missing.content == b""


async def test_unknown_files_are_404_json(served: Served) -> None:
    key = new_key("uploads", "image.png")
    await served.store.put_bytes(key, PNG)
    token = key.split("/")[1]
    async with httpx.AsyncClient() as client:
        for path in (
            f"/files/{new_key('uploads', 'image.png')}",  # well-formed, never stored
            f"/files/results/{token}/image.png",  # right token, other kind
            f"/files/uploads/{token}/other.png",
            f"/files/uploads/{token}/image.png.gz",
            f"/files/uploads/{token}",
            f"/files/uploads/{token[:-1]}/image.png",
            "/files/private/x/y",
            "/files/",
            "/",
            "/v1/models",
        ):
            response = await client.get(served.base + path)
            assert response.status_code == 404, path
            assert response.headers["content-type"] == "application/json"
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["cache-control"] == "no-store"
            assert orjson.loads(response.content) == NOT_FOUND, path


async def test_other_methods_are_405_json(served: Served) -> None:
    key = new_key("uploads", "image.png")
    await served.store.put_bytes(key, PNG)
    async with httpx.AsyncClient() as client:
        for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
            response = await client.request(method, f"{served.base}/files/{key}")
            assert response.status_code == 405, method
            assert response.headers["allow"].replace(" ", "").split(",") == ["GET", "HEAD"]
            body = orjson.loads(response.content)
            assert body == {
                "error": {
                    "message": "Method not allowed.",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "method_not_allowed",
                }
            }
    assert await served.store.read(key) == PNG  # nothing changed


@pytest.mark.parametrize(
    "target",
    [
        "/files/uploads/{token}/../../../../etc/passwd",
        "/files/uploads/{token}/..%2f..%2f..%2fsecret.txt",
        "/files/uploads/{token}/%2e%2e%2f%2e%2e%2fsecret.txt",
        "/files/uploads/%2e%2e/%2e%2e/secret.txt",
        "/files/uploads/../../secret.txt",
        "/files/%2e%2e/{token}/secret.txt",
        "/files/uploads/{token}/..\\..\\secret.txt",
        "/files/uploads/{token}/%5c..%5csecret.txt",
        "/files/uploads/{token}/%00image.png",
        "/files/uploads/{token}/.hidden",
        "/files/../secret.txt",
        "/files/uploads/{token}/image.png/..",
    ],
)
async def test_path_traversal_is_404(served: Served, target: str) -> None:
    key = new_key("uploads", "image.png")
    await served.store.put_bytes(key, PNG)
    token = key.split("/")[1]
    (served.store.root / "secret.txt").write_text("secret")
    (served.store.root / "uploads" / token / ".hidden").write_text("hidden")
    status, body = await raw_request(served.port, f"GET {target.format(token=token)} HTTP/1.1")
    assert status == 404, body
    assert orjson.loads(body) == NOT_FOUND


async def test_healthz(served: Served) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{served.base}/healthz")
    assert response.status_code == 200
    assert orjson.loads(response.content) == {"status": "ok"}


async def test_healthz_turns_503_while_draining_but_files_are_still_served(
    served: Served,
) -> None:
    """After SIGTERM the load balancer must see 'unhealthy' while downloads keep working."""
    key = new_key("results", "image.png")
    await served.store.put_bytes(key, PNG)
    served.runner.app[DRAINING].set()
    async with httpx.AsyncClient() as client:
        health = await client.get(f"{served.base}/healthz")
        download = await client.get(f"{served.base}/files/{key}")
    assert health.status_code == 503
    assert orjson.loads(health.content) == {"status": "draining"}
    assert download.status_code == 200, download.text


async def test_access_log_has_kind_and_status_but_no_token(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    key = new_key("results", "image.png")
    await served.store.put_bytes(key, PNG)
    token = key.split("/")[1]
    caplog.set_level(logging.INFO, logger="files")
    async with httpx.AsyncClient() as client:
        await client.get(f"{served.base}/files/{key}", headers={"Range": "bytes=0-9"})
        await client.get(f"{served.base}/files/uploads/{token}/missing.png")
        await client.get(f"{served.base}/healthz")
    await asyncio.sleep(0.05)
    lines = [r for r in caplog.records if r.name == "files" and r.getMessage() == "request"]
    logged = [getattr(r, "fields", {}) for r in lines]
    assert [(f["route"], f["kind"], f["status"]) for f in logged] == [
        ("files", "results", 206),
        ("files", "uploads", 404),
        ("healthz", None, 200),
    ]
    assert logged[0]["method"] == "GET" and logged[0]["bytes"] == 10
    for record in lines:
        assert token not in repr(record.__dict__)


def test_parse_addr() -> None:
    assert parse_addr("127.0.0.1:9200") == ("127.0.0.1", 9200)
    assert parse_addr("[::1]:9200") == ("::1", 9200)
    assert parse_addr("0.0.0.0:80") == ("0.0.0.0", 80)
    for bad in ("9200", ":9200", "host:", "host:x"):
        with pytest.raises(ValueError):
            parse_addr(bad)


def test_process_serves_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    blob_dir = tmp_path / "blobs"
    key = new_key("results", "image.png")
    (blob_dir / key).parent.mkdir(parents=True)
    (blob_dir / key).write_bytes(PNG)
    port = free_port()
    env = {
        **os.environ,
        "AIPORT_FILES_ADDR": f"127.0.0.1:{port}",
        "AIPORT_BLOB_DIR": str(blob_dir),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.files"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "files service did not start"
                time.sleep(0.05)
        assert health.status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/files/{key}").content == PNG
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stderr is not None
    lines = [orjson.loads(line) for line in proc.stderr.read().splitlines() if line.strip()]
    messages = [line["msg"] for line in lines]
    assert messages[0] == "listening" and messages[-1] == "stopped"
    assert all(line["service"] == "files" for line in lines)
    assert key.split("/")[1] not in str(lines)
