"""Strict fake upstreams for adapter tests: canned answers and a client swap.

An adapter builds its own httpx client (base URL, credentials, timeouts);
`faked` keeps all of that and only replaces the network with a handler, so
the tests check the headers and URLs the adapter really sends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import httpx
import orjson

Respond = Callable[[httpx.Request], httpx.Response]


def faked(
    own: httpx.AsyncClient,
    handler: Respond | Callable[[httpx.Request], Coroutine[None, None, httpx.Response]],
) -> httpx.AsyncClient:
    """A client like `own` whose requests go to `handler` instead of the network."""
    return httpx.AsyncClient(
        transport=httpx.MockTransport(handler),
        base_url=own.base_url,
        headers=own.headers,
        timeout=own.timeout,
    )


def json_response(body: Any, status: int = 200) -> Respond:
    def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=orjson.dumps(body))

    return respond


def raw_response(content: bytes, status: int = 200) -> Respond:
    def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=content)

    return respond


def sse_response(pieces: list[bytes], then: Exception | None = None) -> Respond:
    """An event stream delivered in exactly these pieces, optionally breaking after them."""

    async def body() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece
        if then is not None:
            raise then

    def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Type": "text/event-stream"}, content=body())

    return respond


def raising(exc_type: type[httpx.TransportError]) -> Respond:
    def respond(request: httpx.Request) -> httpx.Response:
        raise exc_type("simulated", request=request)

    return respond
