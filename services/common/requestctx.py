"""One request id from the edge to the upstream call, and into every log line.

Envoy generates (or forwards) `x-request-id`; every gRPC hop carries it as
metadata, upstream HTTP calls as `X-Request-Id`, jobs as a message header. Inside
a process it lives in a context variable, so log lines and outgoing calls pick it
up without passing it through every function.

The value comes from clients, so it is untrusted: at most 128 characters of
[A-Za-z0-9._-]; anything else is replaced by a fresh id.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any

import grpc

METADATA_KEY = "x-request-id"
HTTP_HEADER = "X-Request-Id"
MAX_CHARS = 128
_VALID = re.compile(r"[A-Za-z0-9._-]{1,128}")

_current: ContextVar[str | None] = ContextVar("aiport_request_id", default=None)


def current() -> str | None:
    """The request id of the work running now, if any."""
    return _current.get()


def new_id() -> str:
    return secrets.token_hex(16)


def clean(raw: str | bytes | None) -> str | None:
    """`raw` if it is a well-formed id, else None."""
    if raw is None:
        return None
    if isinstance(raw, bytes):
        raw = raw.decode("latin-1")
    if len(raw) <= MAX_CHARS and _VALID.fullmatch(raw):
        return raw
    return None


def ensure(raw: str | bytes | None) -> str:
    """A well-formed id: `raw` if it is one, else a fresh one."""
    return clean(raw) or new_id()


def bind(request_id: str) -> Token[str | None]:
    """Make `request_id` current (until `unbind` with the returned token)."""
    return _current.set(request_id)


def unbind(token: Token[str | None]) -> None:
    _current.reset(token)


@contextmanager
def of_message(headers: Mapping[str, object] | None) -> Iterator[str]:
    """The request id a message carries (or a fresh one) is current inside."""
    request_id = from_message_headers(headers)
    token = bind(request_id)
    try:
        yield request_id
    finally:
        unbind(token)


def message_headers() -> dict[str, str]:
    """AMQP headers that carry the current request id with a message (none if unset)."""
    request_id = _current.get()
    return {} if request_id is None else {METADATA_KEY: request_id}


def from_message_headers(headers: Mapping[str, object] | None) -> str:
    """The id a message carries, or a fresh one (old messages carry none)."""
    raw = (headers or {}).get(METADATA_KEY)
    return ensure(raw if isinstance(raw, str | bytes) else None)


def from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    for key, value in metadata or ():
        if key == METADATA_KEY:
            return clean(value)
    return None


class ServerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Makes the caller's x-request-id (or a fresh one) current for the handler.

    grpc.aio runs the interceptors and then the handler in one task per call, so
    setting the context variable here is enough: nothing is wrapped per call."""

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        metadata = handler_call_details.invocation_metadata
        _current.set(from_metadata(metadata) or new_id())
        return await continuation(handler_call_details)


class _Propagating:
    """A multicallable that adds the channel's fixed metadata (a service token)
    and the current request id to the call's metadata.

    Not a grpc.aio client interceptor on purpose: those run every call through an
    extra task and cost ~50 µs of loop CPU per call (bench/interceptor_cost.py);
    this is one function call."""

    __slots__ = ("_call", "_fixed")

    def __init__(self, call: Any, fixed: tuple[tuple[str, str], ...]) -> None:
        self._call = call
        self._fixed = fixed

    def __call__(self, request: Any, **kwargs: Any) -> Any:
        metadata: tuple[tuple[str, str], ...] = (*(kwargs.get("metadata") or ()), *self._fixed)
        request_id = _current.get()
        if request_id is not None and not any(key == METADATA_KEY for key, _ in metadata):
            metadata = (*metadata, (METADATA_KEY, request_id))
        if metadata:
            kwargs["metadata"] = metadata
        return self._call(request, **kwargs)


class PropagatingChannel(grpc.aio.Channel):
    """A channel whose every call carries `fixed` metadata and the current request
    id (a caller's own x-request-id metadata is kept)."""

    def __init__(self, channel: grpc.aio.Channel, fixed: tuple[tuple[str, str], ...] = ()) -> None:
        self._channel = channel
        self._fixed = fixed

    def unary_unary(self, *args: Any, **kwargs: Any) -> Any:
        return _Propagating(self._channel.unary_unary(*args, **kwargs), self._fixed)

    def unary_stream(self, *args: Any, **kwargs: Any) -> Any:
        return _Propagating(self._channel.unary_stream(*args, **kwargs), self._fixed)

    def stream_unary(self, *args: Any, **kwargs: Any) -> Any:
        return _Propagating(self._channel.stream_unary(*args, **kwargs), self._fixed)

    def stream_stream(self, *args: Any, **kwargs: Any) -> Any:
        return _Propagating(self._channel.stream_stream(*args, **kwargs), self._fixed)

    async def close(self, grace: float | None = None) -> None:
        await self._channel.close(grace)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self._channel.get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await self._channel.wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self._channel.channel_ready()

    async def __aenter__(self) -> PropagatingChannel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close(None)


def propagating(
    channel: grpc.aio.Channel, fixed: tuple[tuple[str, str], ...] = ()
) -> grpc.aio.Channel:
    return PropagatingChannel(channel, fixed)
