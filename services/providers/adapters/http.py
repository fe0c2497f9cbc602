"""The HTTP client every adapter uses to talk to its provider."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import httpx
import orjson
from httpx_aiohttp import AiohttpTransport

from services.common.sse import SseError
from services.providers.errors import UpstreamError, UpstreamProtocolError, safe_upstream_message
from services.providers.routes import Provider

log = logging.getLogger(__name__)

MAX_ERROR_BODY_BYTES = 64 * 1024


class _Transport(httpx.AsyncBaseTransport):
    """aiohttp's C parser for whole answers (a third of httpcore's CPU per call),
    httpcore for streams: aiohttp's reader raises a broken connection's error
    before handing over what it had buffered, so the last chunks an upstream
    sent before dying could be lost; httpcore delivers them, then raises."""

    def __init__(self, limits: httpx.Limits) -> None:
        self._whole = AiohttpTransport(limits=limits, trust_env=False)
        self._streams = httpx.AsyncHTTPTransport(limits=limits)

    @staticmethod
    def _is_stream(request: httpx.Request) -> bool:
        # Our adapters' own requests: compact JSON with "stream":true (OpenAI,
        # Anthropic), or Gemini's streaming method in the path.
        if request.url.path.endswith(":streamGenerateContent"):
            return True
        try:
            return b'"stream":true' in request.content
        except httpx.RequestNotRead:
            return False  # a multipart upload (image edits): a whole answer

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._is_stream(request):
            return await self._streams.handle_async_request(request)
        return await self._whole.handle_async_request(request)

    async def aclose(self) -> None:
        await self._whole.aclose()
        await self._streams.aclose()


def bearer(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


def api_client(provider: Provider, auth: dict[str, str] | None = None) -> httpx.AsyncClient:
    """The provider's client: base URL, credentials (`auth`, default a Bearer
    key), its configured extra headers, its timeouts and its connection cap."""
    headers = dict(provider.headers)
    headers.update(bearer(provider.api_key) if auth is None else auth)
    return httpx.AsyncClient(
        base_url=provider.base_url,
        timeout=httpx.Timeout(
            connect=provider.connect_timeout_seconds,
            read=provider.read_timeout_seconds,
            write=provider.read_timeout_seconds,
            pool=provider.connect_timeout_seconds,
        ),
        limits=httpx.Limits(
            max_connections=provider.max_connections,
            max_keepalive_connections=provider.max_connections,
        ),
        headers=headers,
        transport=_Transport(
            httpx.Limits(
                max_connections=provider.max_connections,
                max_keepalive_connections=provider.max_connections,
            )
        ),
    )


@contextmanager
def upstream_failures() -> Iterator[None]:
    """Every way an upstream call can go wrong, as an UpstreamError."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise UpstreamError("timeout", "upstream did not answer in time") from exc
    except httpx.HTTPError as exc:
        raise UpstreamError("failed", f"upstream connection failed: {type(exc).__name__}") from exc
    except (orjson.JSONDecodeError, UpstreamProtocolError, SseError) as exc:
        raise UpstreamError("failed", f"upstream sent a malformed answer: {exc}") from exc


async def read_limited(response: httpx.Response, limit: int) -> bytes:
    raw = bytearray()
    async for piece in response.aiter_bytes():
        raw += piece
        if len(raw) > limit:
            raise UpstreamError("failed", "upstream answer exceeds the size limit")
    return bytes(raw)


async def raise_for_status(
    response: httpx.Response, provider: Provider, *, client_fault_possible: bool = True
) -> None:
    """4xx/5xx as UpstreamError: 400/422 are the client's request ("rejected", with the
    upstream's scrubbed message) when `client_fault_possible`; everything else "failed"."""
    if response.status_code < 400:
        return
    raw = b""
    async for piece in response.aiter_bytes():
        raw += piece
        if len(raw) > MAX_ERROR_BODY_BYTES:
            break
    message = safe_upstream_message(raw, provider.api_key)
    log.warning(
        "upstream error",
        extra={
            "fields": {
                "provider": provider.name,
                "status": response.status_code,
                "upstream_message": message,
            }
        },
    )
    if client_fault_possible and response.status_code in (400, 422):
        raise UpstreamError("rejected", f"The upstream rejected the request: {message}")
    raise UpstreamError("failed", f"upstream answered HTTP {response.status_code}")


RESULT_MAX_REDIRECTS = 3


def result_client(provider: Provider) -> httpx.AsyncClient:
    """For result files an upstream produced: absolute, pre-signed URLs, so no
    base URL and, above all, none of our credentials on the request."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(
            connect=provider.connect_timeout_seconds,
            read=provider.read_timeout_seconds,
            write=provider.read_timeout_seconds,
            pool=provider.connect_timeout_seconds,
        ),
        limits=httpx.Limits(max_connections=provider.max_connections),
        follow_redirects=True,
        max_redirects=RESULT_MAX_REDIRECTS,
    )


async def download(client: httpx.AsyncClient, url: str, max_bytes: int) -> AsyncIterator[bytes]:
    """A result file in pieces; UpstreamError once it passes max_bytes."""
    if not url.startswith(("https://", "http://")):
        raise UpstreamError("failed", "upstream result URL is not http(s)")
    with upstream_failures():
        async with client.stream("GET", url) as response:
            if response.status_code != 200:
                raise UpstreamError(
                    "failed", f"result download answered HTTP {response.status_code}"
                )
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise UpstreamError("failed", "result file exceeds the size limit")
            total = 0
            async for piece in response.aiter_bytes():
                total += len(piece)
                if total > max_bytes:
                    raise UpstreamError("failed", "result file exceeds the size limit")
                yield piece
