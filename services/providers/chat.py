"""What the Providers service asks of a chat upstream, whatever its protocol.

Every chat adapter translates between the canonical call and answer (typed:
CanonicalChat in, TextCompletion or TextChunks out) and its upstream. The
answer's half is shared: an adapter writes the upstream's answer OpenAI-shaped
and hands it to `public_completion` (whole answers) or a `ChunkTranslator`
(streams), which build the canonical answer and account the usage. So a new
upstream protocol only ever writes upstream <-> OpenAI-shape translation, and a
new client protocol only a renderer of the canonical answer (at the gateway).

An adapter whose upstream speaks a client protocol itself (Anthropic Messages)
is also a `NativeChatAdapter`: a client that spoke it is passed through, the
(client, upstream) pair's own translator, so nothing is lost on the way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol, TypeAlias, runtime_checkable

from aiport.v1 import providers_pb2, text_pb2

from services.common.usage import Usage
from services.providers.adapters.anthropic_passthrough import NativeMessagesStream
from services.providers.adapters.openai_chat_translate import (
    ChunkTranslator,
    Identity,
)
from services.providers.routes import Route

# A piece of a stream's answer: canonical, or (a passthrough) in the client's protocol.
Answer: TypeAlias = text_pb2.TextChunk | bytes


class StreamAccounting(Protocol):
    """What the failover loop reads of a stream, whichever path it takes: whether
    output reached the client, and the usage to bill (reported, or estimated)."""

    @property
    def output_started(self) -> bool: ...

    def finish(self) -> tuple[Sequence[Answer], Usage]:
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
    ) -> tuple[text_pb2.TextCompletion, Usage]:
        """The whole answer, canonical, and its usage. Raises UpstreamError."""
        ...

    def stream(
        self,
        route: Route,
        request: providers_pb2.CanonicalChat,
        identity: Identity,
        request_id: str,
        translator: ChunkTranslator,
    ) -> AsyncIterator[text_pb2.TextChunk]:
        """Canonical chunks as the upstream produces them, fed through `translator`
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
