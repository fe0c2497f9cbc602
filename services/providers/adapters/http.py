"""The HTTP client every adapter uses to talk to its provider.

Every upstream request carries the current request id (X-Request-Id), is
counted and timed per provider and outcome (services/common/metrics.py) and,
when tracing is on, gets a client span."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import httpx
import orjson
from httpx_aiohttp import AiohttpTransport
from opentelemetry.trace import Span

from services.common import metrics, requestctx, tracing
from services.common.sse import SseError
from services.providers.errors import (
    UpstreamError,
    UpstreamProtocolError,
    client_input_error,
    error_code,
    retry_after_seconds,
    safe_upstream_message,
)
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


def outcome_for_status(status: int) -> str:
    """An upstream answer's outcome, for aiport_upstream_requests_total."""
    if status < 400:
        return "ok"
    if status == 429:
        return "rate_limited"
    if status < 500:
        return "client_error"
    return "server_error"


def outcome_for_exception(exc: BaseException) -> str:
    """How an upstream call that raised `exc` went (the same split upstream_failures
    makes, finer: connect vs. later connection failures)."""
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.ConnectError):
        return "connect_error"
    if isinstance(exc, httpx.TransportError):
        return "connection_error"
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return "error"


class _Call:
    """One upstream call being observed: recorded once, when it ends."""

    __slots__ = ("done", "outcome", "provider", "span", "started", "status")

    def __init__(self, provider: str, request: httpx.Request) -> None:
        self.provider = provider
        self.started = time.perf_counter()
        self.span: Span | None = (
            tracing.start_upstream_span(provider, request.method, str(request.url))
            if tracing.enabled()
            else None
        )
        self.outcome = "error"
        self.status: int | None = None
        self.done = False

    def end(self, outcome: str | None = None) -> None:
        if self.done:
            return
        self.done = True
        final = outcome or self.outcome
        metrics.record_upstream(self.provider, final, time.perf_counter() - self.started)
        if self.span is not None:
            tracing.end_upstream_span(self.span, final, self.status)


class _ObservedBody(httpx.AsyncByteStream):
    """The response body, passed through; the call ends when the body is closed
    (so a stream is timed to its end, and a stream that breaks is counted so)."""

    def __init__(self, inner: httpx.AsyncByteStream, call: _Call) -> None:
        self._inner = inner
        self._call = call

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for piece in self._inner:
                yield piece
        except BaseException as exc:
            self._call.end(outcome_for_exception(exc))
            raise

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            self._call.end()


class ObservedTransport(httpx.AsyncBaseTransport):
    """Adds X-Request-Id, then counts, times and (optionally) traces each call."""

    def __init__(self, inner: httpx.AsyncBaseTransport, provider: str) -> None:
        self._inner = inner
        self._provider = provider

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request_id = requestctx.current()
        if request_id is not None:
            request.headers[requestctx.HTTP_HEADER] = request_id
        call = _Call(self._provider, request)
        try:
            response = await self._inner.handle_async_request(request)
        except BaseException as exc:
            call.end(outcome_for_exception(exc))
            raise
        call.status = response.status_code
        call.outcome = outcome_for_status(response.status_code)
        if response.is_closed or not isinstance(response.stream, httpx.AsyncByteStream):
            call.end()  # the body came whole with the answer: nothing left to wait for
        else:
            response.stream = _ObservedBody(response.stream, call)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


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
        headers=headers,
        transport=ObservedTransport(
            _Transport(
                httpx.Limits(
                    max_connections=provider.max_connections,
                    max_keepalive_connections=provider.max_connections,
                )
            ),
            provider.name,
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
        raise client_input_error(error_code(raw), message)
    if response.status_code == 429:
        raise UpstreamError(
            "rate_limited",
            "upstream answered HTTP 429",
            retry_after_seconds(response.headers),
        )
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
        follow_redirects=True,
        max_redirects=RESULT_MAX_REDIRECTS,
        transport=ObservedTransport(
            httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=provider.max_connections)),
            provider.name,
        ),
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
