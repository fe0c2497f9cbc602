"""What the Providers service asks of a chat upstream, whatever its protocol.

Every chat adapter translates between our client schema (OpenAI chat
completions) and its upstream. The public half is shared: an adapter turns the
upstream's answer into OpenAI-shaped dicts and hands them to
`public_completion` (whole answers) or a `ChunkTranslator` (streams), which
write the public JSON and account the usage. So a new protocol only ever
writes upstream <-> OpenAI-shape translation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from services.common.usage import Usage
from services.providers.adapters.openai_chat_translate import (
    ChunkTranslator,
    Identity,
)
from services.providers.routes import Route


class ChatAdapter(Protocol):
    async def complete(
        self, route: Route, request: dict[str, Any], identity: Identity, request_id: str
    ) -> tuple[bytes, Usage]:
        """The whole chat.completion in the public shape, and its usage.
        Raises UpstreamError."""
        ...

    def stream(
        self,
        route: Route,
        request: dict[str, Any],
        identity: Identity,
        request_id: str,
        translator: ChunkTranslator,
    ) -> AsyncIterator[bytes]:
        """Public chunks as the upstream produces them, fed through `translator`
        (which also keeps the usage). Ends normally only when the upstream's
        stream completed; raises UpstreamError otherwise."""
        ...

    async def close(self) -> None: ...
