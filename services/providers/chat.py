"""What the Providers service asks of a chat upstream, whatever its protocol.

Every chat adapter translates between our client schema (OpenAI chat
completions) and its upstream. The public half is shared: an adapter turns the
upstream's answer into OpenAI-shaped dicts and hands them to
`public_completion` (whole answers) or a `ChunkTranslator` (streams), which
write the public JSON and account the usage. So a new protocol only ever
writes upstream <-> OpenAI-shape translation.

An adapter whose upstream speaks a client protocol itself (Anthropic Messages)
is also a `NativeChatAdapter`: a client that spoke it is passed through, the
(client, upstream) pair's own translator, so nothing is lost on the way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from aiport.v1 import providers_pb2

from services.common.usage import Usage
from services.providers.adapters.anthropic_passthrough import NativeMessagesStream
from services.providers.adapters.openai_chat_translate import (
    ChunkTranslator,
    Identity,
)
from services.providers.routes import Route


class StreamAccounting(Protocol):
    """What the failover loop reads of a stream, whichever path it takes: whether
    output reached the client, and the usage to bill (reported, or estimated)."""

    @property
    def output_started(self) -> bool: ...

    def finish(self) -> tuple[list[bytes], Usage]:
        """Chunks still held back, and the usage to bill."""
        ...

    def estimated_usage(self) -> Usage: ...


class ChatAdapter(Protocol):
    async def complete(
        self,
        route: Route,
        request: providers_pb2.CanonicalChat,
        identity: Identity,
        request_id: str,
    ) -> tuple[bytes, Usage]:
        """The whole chat.completion in the public shape, and its usage.
        Raises UpstreamError."""
        ...

    def stream(
        self,
        route: Route,
        request: providers_pb2.CanonicalChat,
        identity: Identity,
        request_id: str,
        translator: ChunkTranslator,
    ) -> AsyncIterator[bytes]:
        """Public chunks as the upstream produces them, fed through `translator`
        (which also keeps the usage). Ends normally only when the upstream's
        stream completed; raises UpstreamError otherwise."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class NativeChatAdapter(Protocol):
    # The client protocol this adapter's upstream speaks (NativeRequest.protocol).
    native_protocol: str

    async def complete_native(
        self,
        route: Route,
        request: providers_pb2.CanonicalChat,
        native: providers_pb2.NativeRequest,
        identity: Identity,
        request_id: str,
    ) -> tuple[bytes, Usage]:
        """The upstream's whole answer in the client's protocol, and its usage."""
        ...

    def stream_native(
        self,
        route: Route,
        request: providers_pb2.CanonicalChat,
        native: providers_pb2.NativeRequest,
        request_id: str,
        passthrough: NativeMessagesStream,
    ) -> AsyncIterator[bytes]:
        """The upstream's events in the client's protocol, as `passthrough` lets them
        out (it keeps the usage); raises UpstreamError as `stream` does."""
        ...
