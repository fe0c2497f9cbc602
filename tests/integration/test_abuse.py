"""Hand-made abuse through the edge: oversized, deeply nested and invalid
bodies, huge headers, malformed multipart, a decompression-bomb PNG, wrong
content types, absurd numbers, odd unicode and odd path ids. Every refusal
is a 4xx in our JSON error shape (never a 5xx, never a hang, never HTML,
plain text or gRPC), no service dies and no service logs a traceback."""

from __future__ import annotations

import json
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from deploy.local.stack import Stack
from tests.integration.conftest import Account

# Long enough for a 33 MiB body on loopback, short enough to call a hang a hang.
TIMEOUT = httpx.Timeout(15.0)
HELLO = [{"role": "user", "content": "Hello"}]
JSON = {"Content-Type": "application/json"}
ERROR_KEYS = {"message", "type", "param", "code"}


# -- helpers ------------------------------------------------------------------
def assert_our_error(response: httpx.Response, *statuses: int) -> dict[str, Any]:
    """A 4xx (one of `statuses` when given) with exactly our JSON error body."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:500])
    if statuses:
        assert response.status_code in statuses, (response.status_code, response.text[:500])
    content_type = response.headers.get("content-type", "")
    assert content_type.startswith("application/json"), (content_type, response.text[:500])
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == ERROR_KEYS, error
    assert isinstance(error["message"], str) and error["message"]
    for header in ("grpc-status", "grpc-message", "x-aiport-error"):
        assert header not in response.headers
    return error


def assert_clean(response: httpx.Response, *ok: int) -> None:
    """Either one of the success statuses `ok`, or a clean refusal in our shape."""
    if response.status_code in ok:
        return
    assert_our_error(response)


def rss_kib(stack: Stack, name: str) -> int:
    pid = stack.processes[name].popen.pid
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {name}")


@pytest.fixture
def c(base_url: str, account: Account) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=base_url,
        headers={"Authorization": f"Bearer {account.api_key}"},
        timeout=TIMEOUT,
    ) as client:
        yield client


@pytest.fixture(autouse=True)
def no_casualties(stack: Stack) -> Iterator[None]:
    """After each test: no service died, and no service logged a traceback
    while it ran (each log is read only from where it stood before the test)."""
    offsets = {
        name: p.log_path.stat().st_size if p.log_path.exists() else 0
        for name, p in stack.processes.items()
    }
    yield
    assert stack.exited() == [], f"services died: {stack.exited()}"
    tracebacks: list[str] = []
    for name, process in stack.processes.items():
        with process.log_path.open("rb") as log:
            log.seek(offsets.get(name, 0))
            new = log.read().decode("utf-8", errors="replace")
        tracebacks += [f"{name}: {line[:600]}" for line in new.splitlines() if "Traceback" in line]
    assert tracebacks == [], "tracebacks in service logs:\n" + "\n".join(tracebacks)


def wait_terminal(c: httpx.Client, job_id: str, seconds: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        response = c.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        if job["status"] in ("done", "failed"):
            return job
        assert time.monotonic() < deadline, f"job never finished: {job}"
        time.sleep(0.2)


# -- size -----------------------------------------------------------------------
def test_body_over_32_mib_is_413_from_the_edge(c: httpx.Client) -> None:
    body = {"messages": HELLO, "user": "x" * (33 * 1024 * 1024)}
    error = assert_our_error(c.post("/v1/chat/completions", json=body), 413)
    assert error["code"] == "request_too_large"


def test_5_mib_body_is_accepted_or_refused_cleanly(c: httpx.Client) -> None:
    body = {"messages": HELLO, "max_tokens": 3, "user": "x" * (5 * 1024 * 1024)}
    assert_clean(c.post("/v1/chat/completions", json=body), 200)
    job = {"prompt": "big", "padding": "y" * (5 * 1024 * 1024)}
    response = c.post("/v1/image/generate", json=job)
    assert_clean(response, 202)
    if response.status_code == 202:
        wait_terminal(c, response.json()["job_id"])


# -- nesting --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "prefix"),
    [
        ("/v1/chat/completions", b'{"messages":[{"role":"user","content":"hi"}],"stop":'),
        ("/v1/image/generate", b'{"prompt":"x","aspect_ratio":'),
        ("/v1/video/generate", b'{"prompt":"x","duration":4,"ratio":'),
    ],
)
def test_100000_nested_arrays_are_400(c: httpx.Client, path: str, prefix: bytes) -> None:
    raw = prefix + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert_our_error(c.post(path, content=raw, headers=JSON), 400)


def nested_schema(depth: int) -> str:
    return '{"type":"object","properties":{"a":' * depth + '{"type":"string"}' + "}}" * depth


# nested_schema(n) is 2n+1 objects deep; the gate allows 24 (MAX_SCHEMA_DEPTH).
@pytest.mark.parametrize("depth", [1000, 12, 11])
def test_deeply_nested_tool_parameters(c: httpx.Client, depth: int) -> None:
    raw = (
        '{"messages":[{"role":"user","content":"hi"}],"max_tokens":5,'
        '"tools":[{"type":"function","function":{"name":"f","parameters":'
        + nested_schema(depth)
        + "}}]}"
    )
    response = c.post("/v1/chat/completions", content=raw.encode(), headers=JSON)
    if depth >= 12:
        error = assert_our_error(response, 400)
        if depth == 12:  # past the gate's limit, refused by name (not by the JSON parser)
            assert error["param"] == "tools[0].function.parameters"
    else:
        assert_clean(response, 200)


# -- encoding -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "raw"),
    [
        ("/v1/chat/completions", b'{"messages":[{"role":"user","content":"\xc3\x28"}]}'),
        ("/v1/chat/completions", b'{"messages":[{"role":"user","content":"hi"}],"model":"\xff"}'),
        ("/v1/chat/completions", b'{"messages":[{"role":"user","content":"\xed\xa0\x80"}]}'),
        ("/v1/image/generate", b'{"prompt":"\xc3\x28"}'),
        ("/v1/video/generate", b'{"prompt":"\xf8\x88\x80\x80\x80","duration":4}'),
        ("/v1/image/img2img", b'{"prompt":"x","images":["https://a.b/\xff.png"]}'),
    ],
)
def test_invalid_utf8_is_400(c: httpx.Client, path: str, raw: bytes) -> None:
    assert_our_error(c.post(path, content=raw, headers=JSON), 400)


# -- headers --------------------------------------------------------------------
@pytest.mark.parametrize(
    "headers",
    [
        {"X-Big": "a" * 70 * 1024},
        {"X-Big": "a" * 60 * 1024},
        {"X-Big": "a" * 30 * 1024},
        {f"X-H{i}": "v" for i in range(200)},
    ],
    ids=["70KiB", "60KiB", "30KiB", "200-headers"],
)
@pytest.mark.parametrize("path", ["/v1/balance", "/v1/chat/completions"])
def test_huge_headers_get_a_json_4xx(c: httpx.Client, headers: dict[str, str], path: str) -> None:
    if path == "/v1/balance":
        response = c.get(path, headers=headers)
    else:
        response = c.post(path, json={"messages": HELLO, "max_tokens": 2}, headers=headers)
    # Served, or refused as too large, but never a 5xx and always in our shape.
    if response.status_code != 200:
        assert_our_error(response, 400, 431)


def test_non_utf8_authorization_is_401_and_never_logged(stack: Stack, base_url: str) -> None:
    marker = "ZqAbuseMarker"
    response = httpx.get(
        f"{base_url}/v1/balance",
        headers={b"Authorization": f"Bearer aip_live_{marker}\xff\xfe".encode("latin-1")},
        timeout=TIMEOUT,
    )
    assert assert_our_error(response, 401)["code"] == "unauthorized"
    for name, process in stack.processes.items():
        assert marker not in process.log_path.read_text(errors="replace"), name


def test_oversized_authorization_is_401(base_url: str) -> None:
    response = httpx.get(
        f"{base_url}/v1/balance",
        headers={"Authorization": "Bearer aip_live_" + "a" * 20_000},
        timeout=TIMEOUT,
    )
    assert_our_error(response, 401)


# -- multipart ------------------------------------------------------------------
PNG_HEADER = b"\x89PNG\r\n\x1a\n"
FILE_PART = (
    b'--abc\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
    b"Content-Type: image/png\r\n\r\n"
)


@pytest.mark.parametrize(
    ("content_type", "raw"),
    [
        ("multipart/form-data; boundary=abc", b"--zzz\r\nfoo"),
        ("multipart/form-data", FILE_PART + PNG_HEADER + b"\r\n--abc--\r\n"),
        ("multipart/form-data; boundary=xyz", FILE_PART + PNG_HEADER + b"\r\n--abc--\r\n"),
        ("multipart/form-data; boundary=" + "b" * 5000, b"--" + b"b" * 5000 + b"\r\n"),
        ("multipart/form-data; boundary=abc", FILE_PART + PNG_HEADER),  # truncated
        ("multipart/form-data; boundary=abc", b"--abc\r\nContent-Disposition: form-da"),
        (
            "multipart/form-data; boundary=abc",
            b'--abc\r\nContent-Disposition: form-data; name="note"\r\n\r\nhi\r\n--abc--\r\n',
        ),
        ("multipart/form-data; boundary=abc", FILE_PART + b"\r\n--abc--\r\n"),  # empty file
        ("multipart/form-data; boundary=abc", b""),
        ("application/json", b'{"file": "iVBORw0KGgo="}'),
        ("image/png", PNG_HEADER + bytes(64)),
    ],
    ids=[
        "bad-boundary",
        "no-boundary-param",
        "boundary-mismatch",
        "5000-char-boundary",
        "truncated-body",
        "truncated-part-headers",
        "no-file-part",
        "empty-file",
        "empty-body",
        "json-not-multipart",
        "raw-png-not-multipart",
    ],
)
def test_malformed_multipart_is_400(c: httpx.Client, content_type: str, raw: bytes) -> None:
    response = c.post("/v1/image/upload", content=raw, headers={"Content-Type": content_type})
    error = assert_our_error(response, 400)
    assert error["param"] == "file"


def png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def bomb_png() -> bytes:
    """A valid, 1 KiB PNG whose IHDR claims 100,000 x 100,000 RGBA pixels
    (40 GB decoded): a decompression bomb for anything that decodes it."""
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 6, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1_000_000, 9)
    return (
        PNG_HEADER + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    )


def test_two_file_parts_are_400(c: httpx.Client) -> None:
    png = bomb_png()
    files = [("file", ("a.png", png, "image/png")), ("file", ("b.png", png, "image/png"))]
    assert assert_our_error(c.post("/v1/image/upload", files=files), 400)["param"] == "file"


def test_decompression_bomb_is_stored_or_refused_without_blowing_up(
    stack: Stack, c: httpx.Client
) -> None:
    watched = ("gateway", "files", "jobs", "worker-image", "worker-video")
    before = {name: rss_kib(stack, name) for name in watched}
    response = c.post("/v1/image/upload", files={"file": ("bomb.png", bomb_png(), "image/png")})
    assert_clean(response, 200)
    if response.status_code == 200:
        url = response.json()["url"]
        assert httpx.get(url, timeout=TIMEOUT).content == bomb_png()
        jobs = [
            c.post("/v1/image/img2img", json={"prompt": "bomb", "images": [url]}),
            c.post(
                "/v1/video/img2video",
                json={"prompt": "bomb", "first_frame_url": url, "duration": 4},
            ),
        ]
        for job in jobs:
            assert_clean(job, 202)
            if job.status_code == 202:
                wait_terminal(c, job.json()["job_id"])
    after = {name: rss_kib(stack, name) for name in watched}
    grown = {name: (after[name] - before[name]) // 1024 for name in watched}
    assert all(mib < 100 for mib in grown.values()), f"RSS growth in MiB: {grown}"


# -- content types --------------------------------------------------------------
def test_json_sent_as_text_plain_is_served_or_refused_cleanly(c: httpx.Client) -> None:
    text = {"Content-Type": "text/plain"}
    chat = json.dumps({"messages": HELLO, "max_tokens": 3}).encode()
    assert_clean(c.post("/v1/chat/completions", content=chat, headers=text), 200)
    response = c.post("/v1/image/generate", content=b'{"prompt":"plain"}', headers=text)
    assert_clean(response, 202)
    if response.status_code == 202:
        wait_terminal(c, response.json()["job_id"])
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert_our_error(c.post("/v1/chat/completions", content=b"messages=hi", headers=form), 400)


def test_multipart_to_json_endpoints_is_400(c: httpx.Client) -> None:
    files = {"file": ("a.png", PNG_HEADER, "image/png")}
    for path in ("/v1/chat/completions", "/v1/image/generate", "/v1/video/generate"):
        assert_our_error(c.post(path, files=files), 400)


# -- numbers --------------------------------------------------------------------
CHAT_PREFIX = '{"messages":[{"role":"user","content":"hi"}],'


@pytest.mark.parametrize(
    ("path", "raw", "param"),
    [
        ("/v1/chat/completions", CHAT_PREFIX + '"max_tokens":-1}', "max_tokens"),
        ("/v1/chat/completions", CHAT_PREFIX + f'"max_tokens":{2**64}}}', "max_tokens"),
        ("/v1/chat/completions", CHAT_PREFIX + '"max_tokens":1e308}', "max_tokens"),
        ("/v1/chat/completions", CHAT_PREFIX + '"max_tokens":-1e308}', "max_tokens"),
        ("/v1/chat/completions", CHAT_PREFIX + '"max_tokens":1' + "0" * 400 + "}", "max_tokens"),
        ("/v1/chat/completions", CHAT_PREFIX + f'"max_tokens":3,"seed":{2**70}}}', "seed"),
        ("/v1/chat/completions", CHAT_PREFIX + '"temperature":1e308}', "temperature"),
        ("/v1/chat/completions", CHAT_PREFIX + '"temperature":NaN}', "temperature"),
        ("/v1/chat/completions", CHAT_PREFIX + '"top_p":Infinity}', "top_p"),
        ("/v1/chat/completions", CHAT_PREFIX + f'"n":{2**64}}}', "n"),
        ("/v1/video/generate", f'{{"prompt":"x","duration":{10**20}}}', "duration"),
        ("/v1/video/generate", '{"prompt":"x","duration":1e308}', "duration"),
        ("/v1/video/generate", '{"prompt":"x","duration":-4}', "duration"),
        ("/v1/video/generate", '{"prompt":"x","duration":NaN}', "duration"),
        ("/v1/video/generate", f'{{"prompt":"x","duration":4,"seed":{2**70}}}', "seed"),
        ("/v1/video/generate", f'{{"prompt":"x","duration":4,"seed":{-(2**70)}}}', "seed"),
    ],
)
def test_absurd_numbers_are_400_naming_the_field(
    c: httpx.Client, path: str, raw: str, param: str
) -> None:
    response = c.post(path, content=raw.encode(), headers=JSON)
    error = assert_our_error(response, 400)
    # NaN and Infinity are not JSON: refusing the whole body is also right.
    assert error["param"] in (param, None), error


# -- unicode --------------------------------------------------------------------
ODD = [
    "\U0001f600\U0001f469\u200d\U0001f4bb",
    "\u0645\u0631\u062d\u0628\u0627 \u202eRTL",
    "a\u0000b",
]


@pytest.mark.parametrize("text", ODD, ids=["emoji", "rtl", "nul"])
def test_unicode_in_chat_strings(c: httpx.Client, text: str) -> None:
    messages = [
        {"role": "system", "content": text},
        {"role": "user", "content": text, "name": "n"},
    ]
    ok = c.post(
        "/v1/chat/completions",
        json={"messages": messages, "max_tokens": 3, "user": text, "stop": [text]},
    )
    assert ok.status_code == 200, ok.text
    streamed = c.post(
        "/v1/chat/completions", json={"messages": messages, "max_tokens": 3, "stream": True}
    )
    assert streamed.status_code == 200, streamed.text
    assert streamed.text.rstrip().endswith("data: [DONE]")
    claude = c.post(
        "/v1/chat/completions",
        json={"model": "claude-opus-4-8", "messages": messages, "max_tokens": 3},
    )
    assert claude.status_code == 200, claude.text
    missing = c.post("/v1/chat/completions", json={"model": text, "messages": HELLO})
    assert assert_our_error(missing, 404)["code"] == "MODEL_NOT_FOUND"


@pytest.mark.parametrize("text", ODD, ids=["emoji", "rtl", "nul"])
def test_unicode_in_job_strings(c: httpx.Client, text: str) -> None:
    image = c.post("/v1/image/generate", json={"prompt": text})
    video = c.post("/v1/video/generate", json={"prompt": text, "duration": 4})
    for accepted in (image, video):
        assert accepted.status_code == 202, accepted.text
        assert wait_terminal(c, accepted.json()["job_id"])["status"] == "done"
    for field in ("model", "aspect_ratio", "resolution"):
        refused = c.post("/v1/image/generate", json={"prompt": "x", field: text})
        assert refused.status_code in (400, 404), refused.text
        assert_our_error(refused)


@pytest.mark.parametrize(
    ("path", "raw"),
    [
        ("/v1/chat/completions", r'{"messages":[{"role":"user","content":"\ud800"}]}'),
        ("/v1/chat/completions", r'{"messages":[{"role":"user","content":"\udfffx"}]}'),
        ("/v1/chat/completions", CHAT_PREFIX + r'"model":"\ud800"}'),
        ("/v1/image/generate", r'{"prompt":"\ud800"}'),
        ("/v1/image/generate", r'{"prompt":"x","model":"\udc00"}'),
        ("/v1/video/generate", r'{"prompt":"\ud800\ud800","duration":4}'),
    ],
)
def test_lone_surrogates_are_refused_or_served_cleanly(
    c: httpx.Client, path: str, raw: str
) -> None:
    response = c.post(path, content=raw.encode(), headers=JSON)
    assert_clean(response, 200, 202)
    if response.status_code == 202:
        wait_terminal(c, response.json()["job_id"])


# -- odd ids in paths -----------------------------------------------------------
ODD_IDS = [
    "%F0%9F%98%80",
    "..%2f..%2fetc",
    "..%2F..%2Fetc%2Fpasswd",
    "%00",
    "%ff",
    "%c3%28",
    "%ed%a0%80",
    "a%20b",
    "x%3Fy%3Dz",
    "a" * 5000,
]


@pytest.mark.parametrize("odd", ODD_IDS, ids=[i[:20] for i in ODD_IDS])
def test_odd_job_ids_are_404(c: httpx.Client, odd: str) -> None:
    error = assert_our_error(c.get(f"/v1/jobs/{odd}"), 404)
    assert error["code"] == "not_found"


@pytest.mark.parametrize("odd", ODD_IDS, ids=[i[:20] for i in ODD_IDS])
def test_odd_model_ids_are_404(c: httpx.Client, odd: str) -> None:
    error = assert_our_error(c.get(f"/v1/models/{odd}"), 404)
    assert error["code"] == "model_not_found"


@pytest.mark.parametrize(
    "path",
    [
        "/files/results/..%2f..%2fetc/passwd",
        "/files/uploads/%ff/image.png",
        "/files/uploads/%00/image.png",
        "/files/results/" + "A" * 32 + "/..%2f..%2f..%2fetc%2fpasswd",
    ],
)
def test_odd_file_paths_are_404(base_url: str, path: str) -> None:
    assert_our_error(httpx.get(base_url + path, timeout=TIMEOUT), 404)
