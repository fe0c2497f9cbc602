"""Google's Gemini API over HTTP (generateContent, streamGenerateContent?alt=sse).

base_url is the versioned API root, e.g. https://generativelanguage.googleapis.com/v1beta;
the model goes in the path (/models/{model}:generateContent). The key travels in
`x-goog-api-key`, never in an Authorization header or the query string (where it would
end up in access logs). Translation lives in gemini_translate; the public JSON and the
usage accounting are the shared half's (public_completion, ChunkTranslator).

Errors come as {"error": {"code", "message", "status", "details"?}} (sometimes wrapped in
a one-element array). 400 INVALID_ARGUMENT is the client's request ("rejected", with
Google's scrubbed message) unless the details say API_KEY_INVALID (ours, so "failed");
400 FAILED_PRECONDITION (billing / region), 401, 403, 404, 429 RESOURCE_EXHAUSTED and 5xx
are "failed".
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
from aiport.v1 import providers_pb2, text_pb2

from services.common.sse import SseParser
from services.common.usage import Usage
from services.providers.adapters.gemini_translate import (
    GeminiRequestError,
    StreamTranslation,
    completion,
    generate_content_request,
    model_path,
    requested_choices,
)
from services.providers.adapters.http import (
    MAX_ERROR_BODY_BYTES,
    api_client,
    read_limited,
    upstream_failures,
)
from services.providers.adapters.openai_chat_translate import (
    ChunkTranslator,
    Identity,
    public_completion,
)
from services.providers.errors import (
    MAX_RETRY_AFTER_SECONDS,
    UpstreamError,
    retry_after_seconds,
    safe_upstream_message,
)
from services.providers.routes import Provider, Route

log = logging.getLogger(__name__)

MAX_COMPLETION_BYTES = 32 * 1024 * 1024
# Google's ErrorInfo reasons that are our configuration's fault, whatever the HTTP status.
_OUR_FAULT_REASONS = frozenset({"API_KEY_INVALID", "API_KEY_SERVICE_BLOCKED"})


def gemini_client(provider: Provider) -> httpx.AsyncClient:
    return api_client(provider, auth={"x-goog-api-key": provider.api_key})


def _error_object(raw: bytes) -> dict[str, Any]:
    """Google's error object from a body ({"error": ...} or [{"error": ...}]); {} if none."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    if isinstance(body, list) and body:
        body = body[0]
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def _reasons(error: dict[str, Any]) -> set[str]:
    details = error.get("details")
    if not isinstance(details, list):
        return set()
    return {str(d["reason"]) for d in details if isinstance(d, dict) and d.get("reason")}


def _retry_delay(error: dict[str, Any]) -> int | None:
    """The wait a google.rpc.RetryInfo detail asks for ("37s", "1.5s"), in whole
    seconds rounded up; None without one."""
    details = error.get("details")
    for detail in details if isinstance(details, list) else ():
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("RetryInfo"):
            delay = str(detail.get("retryDelay") or "")
            if delay.endswith("s"):
                try:
                    seconds = float(delay[:-1])
                except ValueError:
                    return None
                if seconds == seconds and seconds >= 0:  # not NaN
                    return min(math.ceil(seconds), MAX_RETRY_AFTER_SECONDS)
    return None


def classify_error(
    http_status: int, raw: bytes, api_key: str, retry_after: int | None = None
) -> UpstreamError:
    """The UpstreamError for a Gemini error answer (see the module docstring)."""
    error = _error_object(raw)
    message = safe_upstream_message(orjson.dumps({"error": error}), api_key)
    status = str(error.get("status") or "")
    if (
        http_status == 400
        and status in ("INVALID_ARGUMENT", "")
        and not _reasons(error) & _OUR_FAULT_REASONS
    ):
        return UpstreamError(
            "rejected", f"The upstream rejected the request: {message}", reason=message
        )
    label = f" {status}" if status else ""
    if http_status == 429:
        wait = _retry_delay(error)
        return UpstreamError(
            "rate_limited",
            f"upstream answered HTTP 429{label}: {message}",
            wait if wait is not None else retry_after,
        )
    return UpstreamError("failed", f"upstream answered HTTP {http_status}{label}: {message}")


async def raise_for_gemini_status(response: httpx.Response, provider: Provider) -> None:
    if response.status_code < 400:
        return
    raw = b""
    async for piece in response.aiter_bytes():
        raw += piece
        if len(raw) > MAX_ERROR_BODY_BYTES:
            break
    error = classify_error(
        response.status_code, raw, provider.api_key, retry_after_seconds(response.headers)
    )
    log.warning(
        "upstream error",
        extra={
            "fields": {
                "provider": provider.name,
                "status": response.status_code,
                "upstream_message": error.message,
            }
        },
    )
    raise error


class GeminiChatAdapter:
    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self.client = gemini_client(provider)

    async def close(self) -> None:
        await self.client.aclose()

    def _body(self, route: Route, request: providers_pb2.CanonicalChat) -> dict[str, Any]:
        # Parameters the provider is configured to drop are left out of the
        # translation, as for the OpenAI adapter.
        drop = self.provider.drop_params
        try:
            return generate_content_request(request, route.upstream_model, drop_params=drop)
        except GeminiRequestError as exc:
            raise UpstreamError(
                "rejected", f"The upstream cannot take this request: {exc}"
            ) from exc

    def _post(
        self, route: Route, body: dict[str, Any], request_id: str, stream: bool
    ) -> httpx.Request:
        return self.client.build_request(
            "POST",
            model_path(route.upstream_model, stream),
            params={"alt": "sse"} if stream else None,
            content=orjson.dumps(body),
            headers={"Content-Type": "application/json", "X-Request-Id": request_id},
        )

    async def complete(
        self,
        route: Route,
        request: providers_pb2.CanonicalChat,
        identity: Identity,
        request_id: str,
    ) -> tuple[text_pb2.TextCompletion, Usage]:
        body = self._body(route, request)
        with upstream_failures():
            response = await self.client.send(
                self._post(route, body, request_id, stream=False), stream=True
            )
            try:
                await raise_for_gemini_status(response, self.provider)
                raw = await read_limited(response, MAX_COMPLETION_BYTES)
            finally:
                await response.aclose()
            answer = completion(orjson.loads(raw), choices=requested_choices(request.request))
            return public_completion(answer, identity)

    async def stream(
        self,
        route: Route,
        request: providers_pb2.CanonicalChat,
        identity: Identity,
        request_id: str,
        translator: ChunkTranslator,
    ) -> AsyncIterator[text_pb2.TextChunk]:
        """Canonical chunks as they arrive; the caller reads usage from the translator."""
        body = self._body(route, request)
        state = StreamTranslation(choices=requested_choices(request.request))
        parser = SseParser()
        with upstream_failures():
            response = await self.client.send(
                self._post(route, body, request_id, stream=True), stream=True
            )
            try:
                await raise_for_gemini_status(response, self.provider)
                async for piece in response.aiter_bytes():
                    for event in parser.feed(piece):
                        payload = orjson.loads(event.data)
                        if isinstance(payload, dict) and "error" in payload:
                            message = safe_upstream_message(event.data, self.provider.api_key)
                            raise UpstreamError("failed", f"upstream stream error: {message}")
                        for chunk in state.feed(payload):
                            for canonical in translator.feed(chunk):
                                yield canonical
            finally:
                await response.aclose()
            # No end marker in Gemini's SSE: every candidate must have sent a finishReason.
            for chunk in state.end():
                for canonical in translator.feed(chunk):
                    yield canonical
