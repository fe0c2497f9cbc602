"""Fetching client-supplied reference URLs (img2img, img2video, multimodal) without SSRF.

A client may hand us any URL; fetching it naively would let them make our
servers read the cloud metadata endpoint, the database, the broker or anything
else on our network. So, per hop (the first request and each redirect):

1. Parse: only the policy's schemes (https), no credentials in the URL, a real host.
2. Resolve the host once (``Resolver``; the system resolver by default) and
   refuse if ANY address is not publicly routable (``is_public_address``):
   loopback, private, link-local (169.254.169.254), CGNAT, multicast, reserved,
   documentation and benchmark ranges, and IPv6 forms that embed such an IPv4
   address (mapped, compatible, NAT64).
3. Connect to those vetted addresses and nothing else. httpcore builds every
   connection through a network backend; ``PinnedBackend`` wraps the real one
   and, whatever host the connection pool asks for, dials only the addresses
   vetted in step 2. There is no second lookup, so a DNS answer that changes
   between check and connect (rebinding) cannot move us. The request itself
   still names the original host: the Host header, TLS SNI and certificate
   verification all use the hostname, exactly as a normal client would.
4. Redirects are not followed by the HTTP client: each Location goes through
   steps 1-3 again, at most ``max_redirects`` times.

httpcore is used directly (it is what httpx runs on): a bare connection pool
reads no proxy settings from the environment (a proxy would do its own DNS and
bypass the pinning), sends no cookies and decompresses nothing.

Limits: connect / read timeouts and a deadline over all hops; a byte cap
(Content-Length checked up front, the stream cut off past the cap); a content
type check against the caller's list, decided by sniffing the first bytes
(an "image" must really be a PNG, JPEG, WebP, GIF, AVIF or HEIC).

Errors: ``FetchRefused`` (our policy said no: scheme, address, redirects, size,
type) and ``FetchFailed`` (the network or the remote server failed). Both carry
a message that is safe to show the client: it names the URL's host, never an
address we resolved or anything about our network.

Our own upload URLs never get here: ``load_reference`` reads those from the
blob store (``services.common.blobs.key_from_url``) and fetches the rest.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import quote, urljoin, urlsplit

import httpcore

from services.common.blobs import (
    BlobNotFound,
    BlobStore,
    content_type_for,
    key_from_url,
    parse_key,
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# (host, port) -> the IP addresses (as strings) the host resolves to.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
AddressPolicy = Callable[[IPAddress], bool]


class FetchError(Exception):
    """Base of fetch errors; ``message`` is safe to show the client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class FetchRefused(FetchError):
    """Refused by policy: scheme, non-public address, redirects, size or type."""


class FetchFailed(FetchError):
    """The fetch was allowed but failed: DNS, connection, TLS, timeout or HTTP status."""


@dataclass(frozen=True, slots=True)
class Fetched:
    data: bytes
    content_type: str  # what the bytes are (sniffed where possible), e.g. image/png
    final_url: str  # after redirects


# --- address policy ------------------------------------------------------------------------

_V4_BLOCKED: Final = tuple(
    ipaddress.IPv4Network(net)
    for net in (
        "0.0.0.0/8",  # "this network"
        "10.0.0.0/8",  # private
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local, incl. 169.254.169.254 cloud metadata
        "172.16.0.0/12",  # private
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # TEST-NET-1
        "192.88.99.0/24",  # 6to4 relay anycast (deprecated)
        "192.168.0.0/16",  # private
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # TEST-NET-2
        "203.0.113.0/24",  # TEST-NET-3
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, incl. 255.255.255.255 broadcast
    )
)
_V6_BLOCKED: Final = tuple(
    ipaddress.IPv6Network(net)
    for net in (
        "::/96",  # unspecified, loopback, deprecated IPv4-compatible
        "::ffff:0:0/96",  # IPv4-mapped (its IPv4 address is checked instead)
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard-only
        "2001::/23",  # IETF protocol assignments, incl. Teredo 2001::/32
        "2001:db8::/32",  # documentation
        "2002::/16",  # 6to4: embeds an arbitrary IPv4 address
        "3fff::/20",  # documentation
        "5f00::/16",  # SRv6 SIDs
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
    )
)
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address reaches: IPv4-mapped (::ffff:a.b.c.d, a
    dual-stack socket connects to a.b.c.d) and NAT64 (64:ff9b::a.b.c.d, what DNS64
    answers on an IPv6-only network). The deprecated IPv4-compatible form
    (::a.b.c.d) is simply refused, as part of ::/96."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public_address(ip: IPAddress) -> bool:
    """True only for globally routable unicast addresses: what a URL from the
    internet may make us connect to."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return is_public_address(embedded)
        if ip.scope_id or ip.is_site_local:
            return False
    if (
        not ip.is_global
        or ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    ):
        return False
    if isinstance(ip, ipaddress.IPv4Address):
        return not any(ip in net for net in _V4_BLOCKED)
    return not any(ip in net for net in _V6_BLOCKED)


async def system_resolver(host: str, port: int) -> list[str]:
    """The host's addresses from the system resolver (getaddrinfo), deduplicated."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


# --- policy --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FetchPolicy:
    """Everything a test (or a trusted internal caller) may need to change."""

    schemes: frozenset[str] = frozenset({"https"})
    address_allowed: AddressPolicy = field(default=is_public_address)
    max_redirects: int = 3
    connect_timeout: float = 10.0  # DNS, TCP and TLS, per hop
    read_timeout: float = 30.0  # between two reads
    total_timeout: float = 60.0  # the whole fetch, all hops
    user_agent: str = "aiport-fetch/1.0"


DEFAULT_POLICY: Final = FetchPolicy()

MAX_URL_CHARS: Final = 4096
SNIFF_BYTES: Final = 64
REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
_CONTROL_OR_SPACE: Final = re.compile(r"[\x00-\x20\x7f]")
_PATH_SAFE: Final = "/%:@!$&'()*+,;=-._~"
_QUERY_SAFE: Final = _PATH_SAFE + "?"
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


# --- content types -------------------------------------------------------------------------

_ALIASES: Final = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "image/x-png": "image/png",
    "audio/mp3": "audio/mpeg",
    "audio/mpeg3": "audio/mpeg",
    "audio/x-mp3": "audio/mpeg",
    "audio/x-mpeg": "audio/mpeg",
    "audio/x-wav": "audio/wav",
    "audio/wave": "audio/wav",
    "audio/vnd.wave": "audio/wav",
    "audio/x-m4a": "audio/mp4",
    "audio/m4a": "audio/mp4",
    "audio/x-flac": "audio/flac",
}
# Servers label files of any kind like this; the bytes decide.
_GENERIC_TYPES: Final = frozenset(
    {"", "application/octet-stream", "binary/octet-stream", "application/binary"}
)
_HEIF_BRANDS: Final = frozenset({b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1"})


def normalise_type(content_type: str) -> str:
    """'Image/JPG; charset=x' -> 'image/jpeg'."""
    bare = content_type.split(";", 1)[0].strip().lower()
    return _ALIASES.get(bare, bare)


def sniff(head: bytes) -> tuple[str, ...]:
    """What the first bytes say the file is; several candidates for containers that
    carry either audio or video (MP4, WebM, Ogg), most likely first. () if unknown."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return ("image/png",)
    if head.startswith(b"\xff\xd8\xff"):
        return ("image/jpeg",)
    if head.startswith((b"GIF87a", b"GIF89a")):
        return ("image/gif",)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return ("image/webp",)
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return ("audio/wav",)
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return ("image/avif",)
        if brand in _HEIF_BRANDS:
            return ("image/heic",)
        if brand in (b"M4A ", b"M4B ", b"M4P "):
            return ("audio/mp4",)
        if brand == b"qt  ":
            return ("video/quicktime", "video/mp4")
        return ("video/mp4", "audio/mp4")
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return ("video/webm", "audio/webm")
    if head.startswith(b"OggS"):
        return ("audio/ogg", "video/ogg")
    if head.startswith(b"fLaC"):
        return ("audio/flac",)
    if head.startswith(b"ID3"):
        return ("audio/mpeg",)
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        # MPEG audio frame sync; layer bits 00 mean AAC in ADTS framing.
        return ("audio/aac",) if head[1] & 0x06 == 0 else ("audio/mpeg",)
    return ()


def type_allowed(content_type: str, allowed: Iterable[str]) -> bool:
    major = content_type.split("/", 1)[0]
    for pattern in allowed:
        if pattern in (content_type, "*/*") or (pattern.endswith("/*") and pattern[:-2] == major):
            return True
    return False


def decide_type(declared: str, head: bytes, allowed: Collection[str]) -> str | None:
    """The content type to accept the file as, or None to refuse it.

    Recognised bytes win over the label (servers often say octet-stream); an
    image must always be recognised, so an HTML page or SVG labelled image/png
    is refused. Unrecognised non-image bytes are taken at their specific label.
    """
    declared = normalise_type(declared)
    candidates = sniff(head)
    if candidates:
        ordered = ([declared] if declared in candidates else []) + list(candidates)
        return next((ct for ct in ordered if type_allowed(ct, allowed)), None)
    if declared in _GENERIC_TYPES or declared.startswith("image/"):
        return None
    return declared if type_allowed(declared, allowed) else None


# --- connection pinning --------------------------------------------------------------------


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that dials only vetted addresses.

    The connection pool asks to connect to the URL's host; this backend checks
    it is the one origin it was built for and connects to the pre-resolved
    addresses instead (in order, until one answers). TLS runs afterwards on the
    returned stream with the hostname as SNI and for certificate checks.
    """

    def __init__(
        self,
        host: str,
        port: int,
        addresses: Sequence[IPAddress],
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        if not addresses:
            raise ValueError("no addresses to pin")
        self.host = host
        self.port = port
        self.addresses = tuple(addresses)
        self._inner = inner if inner is not None else httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        if (host, port) != (self.host, self.port):
            raise httpcore.ConnectError("connection to an unvetted origin refused")
        last: Exception | None = None
        for address in self.addresses:
            try:
                return await self._inner.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


# --- the fetch -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Target:
    url: str  # as given (or as joined from a redirect)
    scheme: str
    host: str  # ASCII hostname or IP literal, no brackets
    port: int
    target: str  # path + query, percent-encoded
    ip: IPAddress | None  # set when the host is an IP literal

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if isinstance(self.ip, ipaddress.IPv6Address) else self.host
        return host if self.port == _DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class _Redirect:
    location: str


def _parse_target(url: str, policy: FetchPolicy, *, via: str | None) -> _Target:
    """Validate one hop's URL. via: the host that redirected here, for messages."""
    subject = f"The URL {via} redirected to" if via else "The URL"
    if not isinstance(url, str) or not url or len(url) > MAX_URL_CHARS:
        raise FetchRefused(f"{subject} is empty or too long.")
    if _CONTROL_OR_SPACE.search(url):
        raise FetchRefused(f"{subject} contains spaces or control characters.")
    try:
        split = urlsplit(url)
        port = split.port
    except ValueError:
        raise FetchRefused(f"{subject} is malformed.") from None
    scheme = split.scheme.lower()
    if scheme not in policy.schemes:
        allowed = " or ".join(f"{s}://" for s in sorted(policy.schemes))
        if via:
            raise FetchRefused(f"{via} redirected to a URL that is not {allowed}.")
        raise FetchRefused(f"Only {allowed} URLs can be fetched.")
    if split.username is not None or split.password is not None:
        raise FetchRefused("URLs with credentials (user:password@) are not accepted.")
    hostname = split.hostname or ""
    if not hostname:
        raise FetchRefused(f"{subject} has no host.")
    ip: IPAddress | None
    try:
        ip = ipaddress.ip_address(hostname)
    except ValueError:
        ip = None
        try:
            hostname = hostname.encode("idna").decode("ascii")
        except UnicodeError:
            raise FetchRefused(f"{subject} has an invalid host name.") from None
    if port == 0:
        raise FetchRefused(f"{subject} has an invalid port.")
    target = quote(split.path or "/", safe=_PATH_SAFE)
    if split.query:
        target += "?" + quote(split.query, safe=_QUERY_SAFE)
    return _Target(
        url=url,
        scheme=scheme,
        host=hostname,
        port=port if port is not None else _DEFAULT_PORTS[scheme],
        target=target,
        ip=ip,
    )


async def _vet(target: _Target, resolver: Resolver, policy: FetchPolicy) -> list[IPAddress]:
    """Resolve once and check every address; refuse if any one is not allowed."""
    if target.ip is not None:
        addresses: list[IPAddress] = [target.ip]
    else:
        try:
            async with asyncio.timeout(policy.connect_timeout):
                raw = await resolver(target.host, target.port)
        except TimeoutError:
            raise FetchFailed(f"Timed out resolving {target.host}.") from None
        except (OSError, UnicodeError):
            raise FetchFailed(f"Could not resolve {target.host}.") from None
        addresses = []
        for text in raw:
            try:
                address = ipaddress.ip_address(text)
            except ValueError:
                raise FetchFailed(f"Could not resolve {target.host}.") from None
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise FetchFailed(f"Could not resolve {target.host}.")
    if not all(policy.address_allowed(address) for address in addresses):
        raise FetchRefused(
            f"{target.host} is not a public internet address; only public URLs can be fetched."
        )
    return addresses


def _header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1").strip()
    return None


def _describe(size: int) -> str:
    if size >= 1 << 20 and size % (1 << 20) == 0:
        return f"{size >> 20} MB"
    if size >= 1 << 10 and size % (1 << 10) == 0:
        return f"{size >> 10} KB"
    return f"{size} bytes"


def _network_error(exc: Exception, host: str) -> FetchFailed:
    if isinstance(exc, httpcore.ConnectTimeout):
        return FetchFailed(f"Timed out connecting to {host}.")
    if isinstance(exc, httpcore.TimeoutException):
        return FetchFailed(f"Timed out reading from {host}.")
    if "CERTIFICATE_VERIFY_FAILED" in str(exc) or isinstance(exc, ssl.SSLCertVerificationError):
        return FetchFailed(f"The TLS certificate of {host} could not be verified.")
    if isinstance(exc, httpcore.ConnectError):
        return FetchFailed(f"Could not connect to {host}.")
    return FetchFailed(f"The connection to {host} failed.")


_NETWORK_ERRORS: Final = (
    httpcore.TimeoutException,
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.UnsupportedProtocol,
    ssl.SSLError,
    OSError,
)


async def _request(
    target: _Target,
    addresses: Sequence[IPAddress],
    *,
    max_bytes: int,
    allowed: Collection[str],
    policy: FetchPolicy,
    ssl_context: ssl.SSLContext | None,
    network_backend: httpcore.AsyncNetworkBackend | None,
) -> Fetched | _Redirect:
    host = target.host
    backend = PinnedBackend(host, target.port, addresses, network_backend)
    headers = [
        (b"Host", target.host_header.encode("ascii")),
        (b"User-Agent", policy.user_agent.encode("ascii")),
        # */* last: plenty of servers label any file application/octet-stream.
        (b"Accept", ", ".join([*sorted(allowed), "*/*;q=0.1"]).encode("ascii")),
        (b"Accept-Encoding", b"identity"),
    ]
    extensions: dict[str, object] = {
        "timeout": {
            "connect": policy.connect_timeout,
            "read": policy.read_timeout,
            "write": policy.read_timeout,
            "pool": policy.connect_timeout,
        }
    }
    url = httpcore.URL(
        scheme=target.scheme.encode("ascii"),
        host=target.host.encode("ascii"),
        port=target.port,
        target=target.target.encode("ascii"),
    )
    try:
        async with (
            httpcore.AsyncConnectionPool(
                ssl_context=ssl_context,
                network_backend=backend,
                max_connections=1,
                retries=0,
                http1=True,
                http2=False,
            ) as pool,
            pool.stream("GET", url, headers=headers, extensions=extensions) as response,
        ):
            status = response.status
            if status in REDIRECT_STATUSES:
                location = _header(response.headers, b"location")
                if not location:
                    raise FetchFailed(f"{host} sent a redirect without a location.")
                return _Redirect(location)
            if status not in (200, 203):
                raise FetchFailed(f"{host} answered HTTP {status}.")
            encoding = (_header(response.headers, b"content-encoding") or "identity").lower()
            if encoding != "identity":
                raise FetchFailed(f"{host} sent a compressed ({encoding}) response.")
            length = _header(response.headers, b"content-length")
            if length is not None and length.isdigit() and int(length) > max_bytes:
                raise FetchRefused(f"The file at {host} is larger than {_describe(max_bytes)}.")
            declared = _header(response.headers, b"content-type") or ""
            content_type, body = await _read_body(response, host, declared, max_bytes, allowed)
            return Fetched(data=body, content_type=content_type, final_url=target.url)
    except FetchError:
        raise
    except _NETWORK_ERRORS as exc:
        raise _network_error(exc, host) from None


async def _read_body(
    response: httpcore.Response,
    host: str,
    declared: str,
    max_bytes: int,
    allowed: Collection[str],
) -> tuple[str, bytes]:
    chunks: list[bytes] = []
    total = 0
    content_type: str | None = None
    what = f"The file at {host}"
    async for chunk in response.aiter_stream():
        total += len(chunk)
        if total > max_bytes:
            raise FetchRefused(f"The file at {host} is larger than {_describe(max_bytes)}.")
        chunks.append(chunk)
        if content_type is None and total >= SNIFF_BYTES:
            content_type = _accept_type(declared, b"".join(chunks)[:SNIFF_BYTES], allowed, what)
    body = b"".join(chunks)
    if not body:
        raise FetchFailed(f"{host} sent an empty file.")
    if content_type is None:
        content_type = _accept_type(declared, body[:SNIFF_BYTES], allowed, what)
    return content_type, body


def _accept_type(declared: str, head: bytes, allowed: Collection[str], what: str) -> str:
    """decide_type, or FetchRefused naming what was found. what: "The file at <host>"."""
    content_type = decide_type(declared, head, allowed)
    if content_type is None:
        found = (sniff(head) or (normalise_type(declared) or "of unknown type",))[0]
        expected = ", ".join(sorted(allowed))
        raise FetchRefused(f"{what} is {found}, which is not accepted here ({expected}).")
    return content_type


def _check_args(max_bytes: int, allowed: Collection[str]) -> frozenset[str]:
    if max_bytes <= 0:
        raise ValueError("max_bytes must be positive")
    patterns = frozenset(normalise_type(a) for a in allowed)
    if not patterns or "" in patterns:
        raise ValueError("allowed must name at least one content type")
    return patterns


async def fetch_reference(
    url: str,
    *,
    max_bytes: int,
    allowed: Collection[str],
    resolver: Resolver | None = None,
    policy: FetchPolicy = DEFAULT_POLICY,
    ssl_context: ssl.SSLContext | None = None,
    network_backend: httpcore.AsyncNetworkBackend | None = None,
) -> Fetched:
    """Download a client-supplied URL under the SSRF policy (see the module docstring).

    allowed: content types or ``major/*`` patterns, e.g. ``("image/png", "image/jpeg")``
    or ``("image/*",)``. resolver / policy / ssl_context / network_backend exist for
    tests and special deployments; the defaults are the production behaviour
    (system DNS, https only, public addresses only, certifi CA bundle).
    Raises FetchRefused or FetchFailed.
    """
    patterns = _check_args(max_bytes, allowed)
    resolve = resolver if resolver is not None else system_resolver
    current, via, redirects = url, None, 0
    host = "the remote host"
    try:
        async with asyncio.timeout(policy.total_timeout):
            while True:
                target = _parse_target(current, policy, via=via)
                host = target.host
                addresses = await _vet(target, resolve, policy)
                outcome = await _request(
                    target,
                    addresses,
                    max_bytes=max_bytes,
                    allowed=patterns,
                    policy=policy,
                    ssl_context=ssl_context,
                    network_backend=network_backend,
                )
                if isinstance(outcome, Fetched):
                    return outcome
                if redirects >= policy.max_redirects:
                    raise FetchRefused(
                        f"Too many redirects (more than {policy.max_redirects}) from {host}."
                    )
                redirects += 1
                current, via = urljoin(target.url, outcome.location), host
    except TimeoutError:
        raise FetchFailed(f"Timed out fetching from {host}.") from None


async def load_reference(
    url: str,
    *,
    store: BlobStore,
    max_bytes: int,
    allowed: Collection[str],
    resolver: Resolver | None = None,
    policy: FetchPolicy = DEFAULT_POLICY,
    ssl_context: ssl.SSLContext | None = None,
    network_backend: httpcore.AsyncNetworkBackend | None = None,
) -> Fetched:
    """A reference from our own blob store when the URL is one of our file URLs
    (any host: see ``key_from_url``), else ``fetch_reference``. The same size and
    type rules apply either way."""
    key = key_from_url(url)
    if key is None:
        return await fetch_reference(
            url,
            max_bytes=max_bytes,
            allowed=allowed,
            resolver=resolver,
            policy=policy,
            ssl_context=ssl_context,
            network_backend=network_backend,
        )
    patterns = _check_args(max_bytes, allowed)
    parsed = parse_key(key)
    declared = content_type_for(parsed.filename) if parsed is not None else ""
    try:
        size = await store.size(key)
        if size > max_bytes:
            raise FetchRefused(f"The uploaded file is larger than {_describe(max_bytes)}.")
        data = await store.read(key)
    except BlobNotFound:
        raise FetchFailed("No such uploaded file (it may have expired).") from None
    if len(data) > max_bytes:
        raise FetchRefused(f"The uploaded file is larger than {_describe(max_bytes)}.")
    if not data:
        raise FetchFailed("The uploaded file is empty.")
    content_type = _accept_type(declared, data[:SNIFF_BYTES], patterns, "The uploaded file")
    return Fetched(data, content_type, url)
