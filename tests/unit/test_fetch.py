"""Fetching client-supplied URLs: the SSRF policy, DNS pinning, redirects and limits.

No test here ever connects to anything but 127.0.0.1. The real address policy is
exercised with fake resolvers and network backends that record where a
connection would go (and fail the test if one is attempted where none may be);
end-to-end behaviour runs against local HTTP and HTTPS servers, reached through
a fake resolver and a policy that also admits 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path

import httpcore
import pytest
from aiohttp import web

from services.common.blobs import LocalBlobStore, new_key, public_url
from services.providers.fetch import (
    DEFAULT_POLICY,
    Fetched,
    FetchFailed,
    FetchPolicy,
    FetchRefused,
    IPAddress,
    PinnedBackend,
    decide_type,
    fetch_reference,
    is_public_address,
    load_reference,
    sniff,
)

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(200))
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(100)
MP4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(100)
M4A_ISOM = b"\x00\x00\x00\x18ftypisom\x00\x00\x00\x00isommp42" + bytes(100)
HTML = b"<!doctype html><html><script>alert(1)</script></html>" + b" " * 100
PUBLIC_V4 = "93.184.216.34"
PUBLIC_V6 = "2606:2800:220:1:248:1893:25c8:1946"
IMAGES = ("image/*",)
LOOPBACK = ipaddress.IPv4Address("127.0.0.1")


def loopback_or_public(ip: IPAddress) -> bool:
    return ip == LOOPBACK or is_public_address(ip)


# The real policy, plus plain HTTP and 127.0.0.1 so local test servers are reachable.
LOCAL = FetchPolicy(schemes=frozenset({"http", "https"}), address_allowed=loopback_or_public)


# --- fakes ---------------------------------------------------------------------------------


class FakeResolver:
    """host -> a list of answers; each lookup takes the next answer (the last repeats)."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, int]] = []

    @classmethod
    def static(cls, **hosts: list[str]) -> FakeResolver:
        return cls({host.replace("_", "."): [addrs] for host, addrs in hosts.items()})

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.calls.append((host, port))
        answers = self.answers.get(host)
        if not answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return answers.pop(0) if len(answers) > 1 else answers[0]


class NoNetwork(httpcore.AsyncNetworkBackend):
    """Fails the test on any connection attempt."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.calls.append((host, port))
        raise AssertionError(f"a connection to {host}:{port} was attempted")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class RecordingStream(httpcore.AsyncNetworkStream):
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)
        self.written = bytearray()
        self.tls_server_hostname: str | None = None

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        return self.chunks.pop(0) if self.chunks else b""

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        self.written += buffer

    async def aclose(self) -> None:
        return None

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> httpcore.AsyncNetworkStream:
        self.tls_server_hostname = server_hostname
        return self


class ScriptedBackend(httpcore.AsyncNetworkBackend):
    """Each connection gets the next scripted response; records where it was asked to go.
    Addresses in `unreachable` fail to connect, like a dead server would."""

    def __init__(self, responses: list[list[bytes]], unreachable: Iterable[str] = ()) -> None:
        self.responses = list(responses)
        self.unreachable = set(unreachable)
        self.calls: list[tuple[str, int]] = []
        self.streams: list[RecordingStream] = []

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.calls.append((host, port))
        if host in self.unreachable:
            raise httpcore.ConnectError("connection refused")
        stream = RecordingStream(self.responses.pop(0))
        self.streams.append(stream)
        return stream

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def http_response(
    body: bytes, content_type: str = "image/png", status: str = "200 OK", **headers: str
) -> list[bytes]:
    lines = [f"HTTP/1.1 {status}", f"Content-Type: {content_type}"]
    lines += [f"Content-Length: {len(body)}"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return [("\r\n".join(lines) + "\r\n\r\n").encode(), body]


def redirect(location: str, status: str = "302 Found") -> list[bytes]:
    return http_response(b"", "text/plain", status, Location=location)


# --- the address policy --------------------------------------------------------------------

NOT_PUBLIC = [
    "127.0.0.1",
    "127.255.255.254",
    "10.0.0.1",
    "10.255.255.255",
    "172.16.5.4",
    "172.31.255.255",
    "192.168.0.1",
    "169.254.169.254",  # cloud metadata
    "169.254.0.1",
    "100.64.0.1",  # CGNAT
    "100.127.255.254",
    "0.0.0.0",
    "0.1.2.3",
    "224.0.0.251",
    "224.0.1.1",
    "239.255.255.250",
    "255.255.255.255",
    "240.0.0.1",
    "192.0.0.8",
    "192.0.2.1",
    "198.18.0.1",
    "198.51.100.7",
    "203.0.113.9",
    "::",
    "::1",
    "fc00::1",
    "fd12:3456::1",
    "fe80::1",
    "fe80::1%eth0",
    "fec0::1",
    "ff02::1",
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:169.254.169.254",
    "::ffff:10.0.0.1",
    "::127.0.0.1",  # IPv4-compatible (deprecated)
    "::8.8.8.8",
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "64:ff9b::7f00:1",
    "64:ff9b:1::1",
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    "2001::1",  # Teredo
    "2001:db8::1",
    "100::1",
]
PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    PUBLIC_V4,
    "172.15.255.255",
    "172.32.0.1",
    "100.128.0.1",
    "100.63.255.255",
    "11.0.0.1",
    PUBLIC_V6,
    "2001:4860:4860::8888",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",  # NAT64 of 8.8.8.8 (what DNS64 answers on IPv6-only networks)
]


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_non_public_addresses(address: str) -> None:
    assert not is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses(address: str) -> None:
    assert is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", NOT_PUBLIC)
async def test_host_resolving_to_a_non_public_address_is_refused(address: str) -> None:
    resolver = FakeResolver.static(victim_example_com=[address])
    network = NoNetwork()
    with pytest.raises(FetchRefused) as info:
        await fetch_reference(
            "https://victim.example.com/cat.png",
            max_bytes=1000,
            allowed=IMAGES,
            resolver=resolver,
            network_backend=network,
        )
    assert resolver.calls == [("victim.example.com", 443)]
    assert network.calls == []
    assert "victim.example.com" in info.value.message
    assert address.split("%")[0] not in info.value.message  # never reveal what it resolved to


@pytest.mark.parametrize(
    "addresses",
    [
        [PUBLIC_V4, "10.0.0.1"],
        ["10.0.0.1", PUBLIC_V4],
        [PUBLIC_V6, "::1"],
        [PUBLIC_V4, PUBLIC_V6, "169.254.169.254"],
        [PUBLIC_V4, "fd00::1"],
    ],
)
async def test_a_mix_of_public_and_private_addresses_is_refused(addresses: list[str]) -> None:
    resolver = FakeResolver.static(mixed_example_com=addresses)
    network = NoNetwork()
    with pytest.raises(FetchRefused):
        await fetch_reference(
            "https://mixed.example.com/a.png",
            max_bytes=1000,
            allowed=IMAGES,
            resolver=resolver,
            network_backend=network,
        )
    assert network.calls == []


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/a.png",
        "https://[::1]/a.png",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::ffff:a9fe:a9fe]/latest/meta-data/",
        "https://[fd00::1]:8443/a.png",
        "https://10.0.0.1:443/a.png",
    ],
)
async def test_ip_literals_are_vetted_without_a_lookup(url: str) -> None:
    resolver = FakeResolver({})
    network = NoNetwork()
    with pytest.raises(FetchRefused):
        await fetch_reference(
            url, max_bytes=1000, allowed=IMAGES, resolver=resolver, network_backend=network
        )
    assert resolver.calls == [] and network.calls == []


@pytest.mark.parametrize(
    "host", ["localhost", "2130706433", "0x7f000001", "127.1", "0177.0.0.1", "0"]
)
async def test_numeric_and_local_names_through_the_system_resolver(host: str) -> None:
    # These never leave the machine: /etc/hosts and inet_aton's numeric forms.
    network = NoNetwork()
    with pytest.raises(FetchRefused):
        await fetch_reference(
            f"https://{host}/a.png", max_bytes=1000, allowed=IMAGES, network_backend=network
        )
    assert network.calls == []


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("http://images.example.com/a.png", "https://"),
        ("ftp://images.example.com/a.png", "https://"),
        ("file:///etc/passwd", "https://"),
        ("gopher://images.example.com:70/_x", "https://"),
        ("data:image/png;base64,iVBORw0KGgo=", "https://"),
        ("//images.example.com/a.png", "https://"),
        ("images.example.com/a.png", "https://"),
        ("https://user:secret@images.example.com/a.png", "credentials"),
        ("https://images.example.com@10.0.0.1/a.png", "credentials"),
        ("https:///a.png", "no host"),
        ("https://images.example.com:0/a.png", "port"),
        ("https://images.example.com:99999/a.png", "malformed"),
        ("https://images.example.com/a b.png", "spaces"),
        ("https://images.example.com/a.png\r\nX-Injected: 1", "spaces"),
        ("", "empty"),
        ("https://images.example.com/" + "a" * 5000, "too long"),
    ],
)
async def test_bad_urls_are_refused_before_any_lookup(url: str, needle: str) -> None:
    resolver = FakeResolver.static(images_example_com=[PUBLIC_V4])
    network = NoNetwork()
    with pytest.raises(FetchRefused) as info:
        await fetch_reference(
            url, max_bytes=1000, allowed=IMAGES, resolver=resolver, network_backend=network
        )
    assert needle in info.value.message
    assert resolver.calls == [] and network.calls == []


async def test_unresolvable_host_fails() -> None:
    with pytest.raises(FetchFailed, match=r"Could not resolve nowhere\.example\.com"):
        await fetch_reference(
            "https://nowhere.example.com/a.png",
            max_bytes=1000,
            allowed=IMAGES,
            resolver=FakeResolver({}),
            network_backend=NoNetwork(),
        )


# --- pinning -------------------------------------------------------------------------------


async def test_public_host_is_fetched_over_the_vetted_address_with_the_real_hostname() -> None:
    resolver = FakeResolver.static(images_example_com=[PUBLIC_V4])
    network = ScriptedBackend([http_response(PNG)])
    fetched = await fetch_reference(
        "https://images.example.com/cats/a.png?size=large",
        max_bytes=10_000,
        allowed=IMAGES,
        resolver=resolver,
        network_backend=network,
    )
    assert fetched.data == PNG and fetched.content_type == "image/png"
    assert fetched.final_url == "https://images.example.com/cats/a.png?size=large"
    assert resolver.calls == [("images.example.com", 443)]  # one lookup
    assert network.calls == [(PUBLIC_V4, 443)]  # the connection goes to the vetted address
    stream = network.streams[0]
    assert stream.tls_server_hostname == "images.example.com"  # SNI and cert check: hostname
    request = bytes(stream.written)
    assert request.startswith(b"GET /cats/a.png?size=large HTTP/1.1\r\n")
    assert b"\r\nHost: images.example.com\r\n" in request
    assert b"\r\nAccept-Encoding: identity\r\n" in request
    assert b"\r\nAccept: image/*, */*;q=0.1\r\n" in request
    assert b"Cookie" not in request and b"Authorization" not in request


async def test_dns_rebinding_cannot_move_the_connection() -> None:
    # The first answer is public; every later one points at the metadata service.
    resolver = FakeResolver({"rebind.example.com": [[PUBLIC_V4], ["169.254.169.254"]]})
    network = ScriptedBackend([http_response(PNG)])
    fetched = await fetch_reference(
        "https://rebind.example.com/a.png",
        max_bytes=10_000,
        allowed=IMAGES,
        resolver=resolver,
        network_backend=network,
    )
    assert fetched.data == PNG
    assert len(resolver.calls) == 1
    assert network.calls == [(PUBLIC_V4, 443)]


async def test_rebinding_across_a_redirect_is_caught_on_the_next_hop() -> None:
    resolver = FakeResolver({"rebind.example.com": [[PUBLIC_V4], ["10.0.0.7"]]})
    network = ScriptedBackend([redirect("/again.png")])
    with pytest.raises(FetchRefused, match="not a public internet address"):
        await fetch_reference(
            "https://rebind.example.com/a.png",
            max_bytes=10_000,
            allowed=IMAGES,
            resolver=resolver,
            network_backend=network,
        )
    assert resolver.calls == [("rebind.example.com", 443)] * 2  # once per hop
    assert network.calls == [(PUBLIC_V4, 443)]


async def test_ipv6_addresses_are_pinned_too() -> None:
    resolver = FakeResolver.static(v6_example_com=[PUBLIC_V6])
    network = ScriptedBackend([http_response(JPEG, "image/jpeg")])
    fetched = await fetch_reference(
        "https://v6.example.com:8443/a.jpg",
        max_bytes=10_000,
        allowed=IMAGES,
        resolver=resolver,
        network_backend=network,
    )
    assert fetched.content_type == "image/jpeg"
    assert network.calls == [(PUBLIC_V6, 8443)]
    assert b"\r\nHost: v6.example.com:8443\r\n" in bytes(network.streams[0].written)


async def test_ip_literal_url_gets_a_bracketed_host_header() -> None:
    network = ScriptedBackend([http_response(PNG)])
    await fetch_reference(
        f"https://[{PUBLIC_V6}]/a.png", max_bytes=10_000, allowed=IMAGES, network_backend=network
    )
    assert network.calls == [(PUBLIC_V6, 443)]
    assert f"\r\nHost: [{PUBLIC_V6}]\r\n".encode() in bytes(network.streams[0].written)
    assert network.streams[0].tls_server_hostname == PUBLIC_V6


async def test_falls_back_only_to_other_vetted_addresses() -> None:
    resolver = FakeResolver.static(multi_example_com=["8.8.4.4", PUBLIC_V4])
    network = ScriptedBackend([http_response(PNG)], unreachable={"8.8.4.4"})
    fetched = await fetch_reference(
        "https://multi.example.com/a.png",
        max_bytes=10_000,
        allowed=IMAGES,
        resolver=resolver,
        network_backend=network,
    )
    assert fetched.data == PNG
    assert network.calls == [("8.8.4.4", 443), (PUBLIC_V4, 443)]


async def test_pinned_backend_refuses_other_origins() -> None:
    backend = PinnedBackend("a.example.com", 443, [ipaddress.ip_address(PUBLIC_V4)], NoNetwork())
    with pytest.raises(httpcore.ConnectError):
        await backend.connect_tcp("b.example.com", 443)
    with pytest.raises(httpcore.ConnectError):
        await backend.connect_tcp("a.example.com", 80)
    with pytest.raises(httpcore.ConnectError):
        await backend.connect_unix_socket("/var/run/docker.sock")


async def test_downgrade_to_http_on_redirect_is_refused() -> None:
    resolver = FakeResolver.static(images_example_com=[PUBLIC_V4])
    network = ScriptedBackend([redirect("http://images.example.com/a.png", "301 Moved")])
    with pytest.raises(FetchRefused, match=r"images\.example\.com redirected .* not https://"):
        await fetch_reference(
            "https://images.example.com/a.png",
            max_bytes=10_000,
            allowed=IMAGES,
            resolver=resolver,
            network_backend=network,
        )
    assert len(network.calls) == 1


async def test_default_policy_is_https_and_public_only() -> None:
    assert DEFAULT_POLICY.schemes == frozenset({"https"})
    assert DEFAULT_POLICY.address_allowed is is_public_address
    assert DEFAULT_POLICY.max_redirects == 3
    assert (DEFAULT_POLICY.connect_timeout, DEFAULT_POLICY.read_timeout) == (10.0, 30.0)
    assert DEFAULT_POLICY.total_timeout == 60.0


# --- against a local server ----------------------------------------------------------------


class Origin:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []  # (path_qs, Host header)
        self.port = 0

    @property
    def base(self) -> str:
        return f"http://files.example.test:{self.port}"

    def app(self) -> web.Application:
        app = web.Application()

        async def record(request: web.Request) -> None:
            self.seen.append((request.path_qs, request.headers.get("Host", "")))

        async def body(request: web.Request) -> web.StreamResponse:
            await record(request)
            name = request.match_info["name"]
            data, ctype = {
                "img.png": (PNG, "image/png"),
                "octet": (PNG, "application/octet-stream"),
                "no-type": (PNG, ""),
                "label-lies.png": (HTML, "image/png"),
                "page": (HTML, "text/html"),
                "video": (MP4, "application/octet-stream"),
                "voice.m4a": (M4A_ISOM, "audio/x-m4a"),
                "big.png": (PNG + bytes(5000), "image/png"),
                "empty.png": (b"", "image/png"),
            }[name]
            response = web.Response(body=data)
            if ctype:
                response.headers["Content-Type"] = ctype
            return response

        async def hops(request: web.Request) -> web.StreamResponse:
            await record(request)
            left = int(request.match_info["n"])
            if left == 0:
                return web.Response(body=PNG, content_type="image/png")
            raise web.HTTPFound(f"/hops/{left - 1}")

        async def to(request: web.Request) -> web.StreamResponse:
            await record(request)
            raise web.HTTPFound(request.query["loc"])

        async def status(request: web.Request) -> web.StreamResponse:
            await record(request)
            return web.Response(status=int(request.match_info["code"]), text="nope")

        async def stream(request: web.Request) -> web.StreamResponse:
            await record(request)
            response = web.StreamResponse(headers={"Content-Type": "image/png"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            await response.write(PNG)
            for _ in range(100):
                await response.write(bytes(1000))
            await response.write_eof()
            return response

        async def gzip(request: web.Request) -> web.StreamResponse:
            await record(request)
            return web.Response(
                body=PNG, headers={"Content-Type": "image/png", "Content-Encoding": "gzip"}
            )

        async def slow(request: web.Request) -> web.StreamResponse:
            await record(request)
            await asyncio.sleep(float(request.query.get("s", "5")))
            return web.Response(body=PNG, content_type="image/png")

        async def drip(request: web.Request) -> web.StreamResponse:
            await record(request)
            response = web.StreamResponse(headers={"Content-Type": "image/png"})
            await response.prepare(request)
            await response.write(PNG)
            for _ in range(100):
                await asyncio.sleep(0.1)  # each read is quick; the whole never ends
                await response.write(b"\x00")
            return response

        app.router.add_get("/b/{name}", body)
        app.router.add_get("/hops/{n}", hops)
        app.router.add_get("/to", to)
        app.router.add_get("/status/{code}", status)
        app.router.add_get("/stream", stream)
        app.router.add_get("/gzip", gzip)
        app.router.add_get("/slow", slow)
        app.router.add_get("/drip", drip)
        return app


async def _start(app: web.Application, ssl_context: ssl.SSLContext | None = None) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context).start()
    return runner


@pytest.fixture
async def origin() -> AsyncIterator[Origin]:
    origin = Origin()
    runner = await _start(origin.app())
    origin.port = runner.addresses[0][1]
    try:
        yield origin
    finally:
        await runner.cleanup()


def local_resolver(**extra: list[str]) -> FakeResolver:
    return FakeResolver.static(files_example_test=["127.0.0.1"], **extra)


async def fetch_local(
    url: str,
    resolver: FakeResolver | None = None,
    *,
    max_bytes: int = 100_000,
    allowed: Sequence[str] = IMAGES,
    policy: FetchPolicy = LOCAL,
) -> Fetched:
    return await fetch_reference(
        url,
        max_bytes=max_bytes,
        allowed=allowed,
        resolver=resolver or local_resolver(),
        policy=policy,
    )


async def test_local_fetch_keeps_the_hostname(origin: Origin) -> None:
    resolver = local_resolver()
    fetched = await fetch_reference(
        f"{origin.base}/b/img.png",
        max_bytes=10_000,
        allowed=IMAGES,
        resolver=resolver,
        policy=LOCAL,
    )
    assert fetched.data == PNG and fetched.content_type == "image/png"
    assert origin.seen == [("/b/img.png", f"files.example.test:{origin.port}")]
    assert resolver.calls == [("files.example.test", origin.port)]


async def test_redirects_are_followed_up_to_three(origin: Origin) -> None:
    resolver = local_resolver()
    fetched = await fetch_reference(
        f"{origin.base}/hops/3", max_bytes=10_000, allowed=IMAGES, resolver=resolver, policy=LOCAL
    )
    assert fetched.data == PNG
    assert fetched.final_url == f"{origin.base}/hops/0"
    assert [path for path, _ in origin.seen] == ["/hops/3", "/hops/2", "/hops/1", "/hops/0"]
    assert len(resolver.calls) == 4  # every hop re-resolved and re-vetted


async def test_too_many_redirects_are_refused(origin: Origin) -> None:
    with pytest.raises(FetchRefused, match=r"Too many redirects \(more than 3\)"):
        await fetch_local(f"{origin.base}/hops/4")
    assert len(origin.seen) == 4  # the fifth request is never made


async def test_max_redirects_is_a_policy_knob(origin: Origin) -> None:
    strict = FetchPolicy(
        schemes=LOCAL.schemes, address_allowed=LOCAL.address_allowed, max_redirects=0
    )
    with pytest.raises(FetchRefused, match="Too many redirects"):
        await fetch_local(f"{origin.base}/hops/1", policy=strict)


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("http://internal.example.test/secret", "internal.example.test is not a public"),
        ("http://metadata.example.test/latest/meta-data/", "metadata.example.test is not a"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is not a public"),
        ("http://[::ffff:10.0.0.1]/x", "is not a public"),
        ("http://10.0.0.1:6379/", "10.0.0.1 is not a public"),
        ("file:///etc/passwd", "redirected to a URL that is not"),
        ("gopher://files.example.test:6379/_FLUSHALL", "redirected to a URL that is not"),
    ],
)
async def test_redirect_to_a_private_address_is_refused(
    origin: Origin, location: str, message: str
) -> None:
    resolver = local_resolver(
        internal_example_test=["10.0.0.5"], metadata_example_test=["169.254.169.254"]
    )
    with pytest.raises(FetchRefused, match=message):
        await fetch_local(f"{origin.base}/to?loc={location}", resolver)
    assert len(origin.seen) == 1


async def test_size_cap_from_content_length(origin: Origin) -> None:
    with pytest.raises(FetchRefused, match="larger than 1000 bytes"):
        await fetch_local(f"{origin.base}/b/big.png", max_bytes=1000)
    fetched = await fetch_local(f"{origin.base}/b/big.png", max_bytes=len(PNG) + 5000)
    assert fetched.data == PNG + bytes(5000)


async def test_size_cap_while_streaming(origin: Origin) -> None:
    with pytest.raises(FetchRefused, match="larger than 50 KB"):
        await fetch_local(f"{origin.base}/stream", max_bytes=50 * 1024)
    fetched = await fetch_local(f"{origin.base}/stream", max_bytes=len(PNG) + 100_000)
    assert fetched.data == PNG + bytes(100_000)


@pytest.mark.parametrize(
    ("name", "allowed", "expected"),
    [
        ("img.png", IMAGES, "image/png"),
        ("img.png", ("image/png", "image/jpeg"), "image/png"),
        ("octet", IMAGES, "image/png"),  # the bytes decide
        ("no-type", IMAGES, "image/png"),
        ("video", ("video/*",), "video/mp4"),
        ("video", ("video/mp4",), "video/mp4"),
        ("voice.m4a", ("audio/*",), "audio/mp4"),  # isom brand, labelled audio
        ("page", ("text/*",), "text/html"),  # unrecognised non-image bytes: the label counts
    ],
)
async def test_content_types_accepted(
    origin: Origin, name: str, allowed: Sequence[str], expected: str
) -> None:
    fetched = await fetch_local(f"{origin.base}/b/{name}", allowed=allowed)
    assert fetched.content_type == expected


@pytest.mark.parametrize(
    ("name", "allowed", "found"),
    [
        ("label-lies.png", IMAGES, "image/png"),  # labelled an image, but the bytes are HTML
        ("page", IMAGES, "text/html"),
        ("img.png", ("image/jpeg",), "image/png"),
        ("img.png", ("video/*",), "image/png"),
        ("video", IMAGES, "video/mp4"),
    ],
)
async def test_content_types_refused(
    origin: Origin, name: str, allowed: Sequence[str], found: str
) -> None:
    with pytest.raises(FetchRefused, match="not accepted here") as info:
        await fetch_local(f"{origin.base}/b/{name}", allowed=allowed)
    assert f"is {found}," in info.value.message


async def test_http_errors_fail(origin: Origin) -> None:
    with pytest.raises(FetchFailed, match=r"files\.example\.test answered HTTP 404"):
        await fetch_local(f"{origin.base}/status/404")
    with pytest.raises(FetchFailed, match="HTTP 500"):
        await fetch_local(f"{origin.base}/status/500")
    with pytest.raises(FetchFailed, match="compressed"):
        await fetch_local(f"{origin.base}/gzip")
    with pytest.raises(FetchFailed, match="empty"):
        await fetch_local(f"{origin.base}/b/empty.png")


async def test_connection_refused_fails() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(FetchFailed, match=r"Could not connect to files\.example\.test"):
            await fetch_local(f"http://files.example.test:{port}/a.png")


async def test_read_timeout(origin: Origin) -> None:
    policy = FetchPolicy(
        schemes=LOCAL.schemes, address_allowed=LOCAL.address_allowed, read_timeout=0.2
    )
    with pytest.raises(FetchFailed, match=r"Timed out reading from files\.example\.test"):
        await fetch_local(f"{origin.base}/slow?s=2", policy=policy)


async def test_total_deadline(origin: Origin) -> None:
    policy = FetchPolicy(
        schemes=LOCAL.schemes, address_allowed=LOCAL.address_allowed, total_timeout=0.5
    )
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(FetchFailed, match=r"Timed out fetching from files\.example\.test"):
        await fetch_local(f"{origin.base}/drip", policy=policy)
    assert loop.time() - start < 3


# --- HTTPS on loopback ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for files.example.test (openssl CLI)."""
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
            "-keyout", str(key), "-out", str(cert),
            "-subj", "/CN=files.example.test",
            "-addext", "subjectAltName=DNS:files.example.test",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_https_pinned_to_loopback_verifies_the_hostname(
    certificate: tuple[Path, Path],
) -> None:
    cert, key = certificate
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    sni_seen: list[str | None] = []

    def record_sni(sock: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
        sni_seen.append(name)

    server_ctx.sni_callback = record_sni
    origin = Origin()
    runner = await _start(origin.app(), server_ctx)
    origin.port = runner.addresses[0][1]
    client_ctx = ssl.create_default_context(cafile=str(cert))
    try:
        fetched = await fetch_reference(
            f"https://files.example.test:{origin.port}/b/img.png",
            max_bytes=10_000,
            allowed=IMAGES,
            resolver=local_resolver(),
            policy=FetchPolicy(address_allowed=loopback_or_public),  # https only
            ssl_context=client_ctx,
        )
        assert fetched.data == PNG
        assert sni_seen == ["files.example.test"]
        assert origin.seen == [("/b/img.png", f"files.example.test:{origin.port}")]

        # Same server and address under another name: the certificate doesn't match.
        with pytest.raises(FetchFailed, match=r"TLS certificate of other\.example\.test"):
            await fetch_reference(
                f"https://other.example.test:{origin.port}/b/img.png",
                max_bytes=10_000,
                allowed=IMAGES,
                resolver=FakeResolver.static(other_example_test=["127.0.0.1"]),
                policy=FetchPolicy(address_allowed=loopback_or_public),
                ssl_context=ssl.create_default_context(cafile=str(cert)),
            )
        # And the default trust store does not know our self-signed certificate.
        with pytest.raises(FetchFailed, match="TLS certificate"):
            await fetch_reference(
                f"https://files.example.test:{origin.port}/b/img.png",
                max_bytes=10_000,
                allowed=IMAGES,
                resolver=local_resolver(),
                policy=FetchPolicy(address_allowed=loopback_or_public),
            )
    finally:
        await runner.cleanup()


# --- type sniffing -------------------------------------------------------------------------


def test_sniff() -> None:
    assert sniff(PNG) == ("image/png",)
    assert sniff(JPEG) == ("image/jpeg",)
    assert sniff(b"GIF89a....") == ("image/gif",)
    assert sniff(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == ("image/webp",)
    assert sniff(b"RIFF\x00\x00\x00\x00WAVEfmt ") == ("audio/wav",)
    assert sniff(b"\x00\x00\x00\x1cftypavif") == ("image/avif",)
    assert sniff(b"\x00\x00\x00\x1cftypheic") == ("image/heic",)
    assert sniff(b"\x00\x00\x00\x1cftypM4A ") == ("audio/mp4",)
    assert sniff(MP4)[0] == "video/mp4"
    assert sniff(b"\x1a\x45\xdf\xa3")[0] == "video/webm"
    assert sniff(b"OggS\x00")[0] == "audio/ogg"
    assert sniff(b"ID3\x04") == ("audio/mpeg",)
    assert sniff(b"\xff\xfb\x90\x00") == ("audio/mpeg",)
    assert sniff(b"\xff\xf1\x50\x80") == ("audio/aac",)
    assert sniff(b"fLaC") == ("audio/flac",)
    assert sniff(HTML) == ()
    assert sniff(b"<svg xmlns='http://www.w3.org/2000/svg'/>") == ()
    assert sniff(b"") == ()


def test_decide_type() -> None:
    assert decide_type("image/jpg", JPEG, {"image/jpeg"}) == "image/jpeg"
    assert decide_type("application/octet-stream", PNG, {"image/*"}) == "image/png"
    assert decide_type("image/svg+xml", b"<svg/>", {"image/*"}) is None
    assert decide_type("image/png", HTML, {"image/*"}) is None
    assert decide_type("", HTML, {"text/html"}) is None  # unlabelled and unrecognised
    assert decide_type("audio/mp4", MP4, {"audio/*"}) == "audio/mp4"
    assert decide_type("application/octet-stream", MP4, {"audio/*"}) == "audio/mp4"
    assert decide_type("video/mp4", MP4, {"video/*", "audio/*"}) == "video/mp4"
    assert decide_type("audio/aac", b"\x00unknown", {"audio/*"}) == "audio/aac"
    assert decide_type("audio/aac", b"\x00unknown", {"video/*"}) is None


async def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        await fetch_reference("https://x.example/a.png", max_bytes=0, allowed=IMAGES)
    with pytest.raises(ValueError):
        await fetch_reference("https://x.example/a.png", max_bytes=10, allowed=())


# --- our own URLs --------------------------------------------------------------------------


async def test_load_reference_reads_our_own_urls_from_the_store(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    key = new_key("uploads", "ref.png")
    await store.put_bytes(key, PNG)
    network, resolver = NoNetwork(), FakeResolver({})
    for base in ("https://aiport.id", "http://127.0.0.1:8080", "http://10.0.0.1"):
        fetched = await load_reference(
            public_url(base, key),
            store=store,
            max_bytes=10_000,
            allowed=IMAGES,
            resolver=resolver,
            network_backend=network,
        )
        assert fetched.data == PNG and fetched.content_type == "image/png"
    assert network.calls == [] and resolver.calls == []

    with pytest.raises(FetchRefused, match="larger than 100 bytes"):
        await load_reference(
            public_url("https://aiport.id", key), store=store, max_bytes=100, allowed=IMAGES
        )
    with pytest.raises(FetchRefused, match="not accepted here"):
        await load_reference(
            public_url("https://aiport.id", key), store=store, max_bytes=10_000, allowed=["video/*"]
        )
    with pytest.raises(FetchFailed, match="No such uploaded file"):
        await load_reference(
            public_url("https://aiport.id", new_key("uploads", "gone.png")),
            store=store,
            max_bytes=10_000,
            allowed=IMAGES,
        )


async def test_load_reference_fetches_other_urls_under_the_policy(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    network = NoNetwork()
    with pytest.raises(FetchRefused, match="https://"):
        await load_reference(
            "http://aiport.id/uploads/x/y.png",  # not our path shape: an external URL
            store=store,
            max_bytes=10_000,
            allowed=IMAGES,
            network_backend=network,
        )
    with pytest.raises(FetchRefused, match="not a public"):
        await load_reference(
            "https://files.example.test/files/uploads/short/y.png",
            store=store,
            max_bytes=10_000,
            allowed=IMAGES,
            resolver=local_resolver(),
            network_backend=network,
        )
    assert network.calls == []
