"""The (Anthropic Messages client, Anthropic Messages upstream) pair: a passthrough. Pure.

When a client spoke Messages and the route's upstream speaks it too, the client's own
body goes upstream and the upstream's own answer comes back, so what the canonical
(OpenAI-shaped) request cannot carry arrives intact: signed thinking and
redacted_thinking blocks (Claude tool loops keep thinking on), cache_control
breakpoints, citations, top_k, the matched stop_sequence, signature deltas.

Request: the client's body (the gateway checked it) with
  model          -> the route's upstream model
  max_tokens     -> the canonical request's: capped at the model's maximum, the hold's bound
  stream         -> as the call streams
  temperature, top_p, stop_sequences, top_k -> removed where the model's policy or the
                    provider dropped them from the canonical request: the catalog's rules
                    hold on both paths
  thinking / output_config.effort -> the thinking mode this model takes (the catalog's
                    control): adaptive-only models get {type: adaptive} + effort; budget
                    models keep the client's budget (or get one for the effort)
  cache_control.ttl -> removed (the 5-minute default): cache writes are priced at the
                    5-minute rate, and a 1-hour write costs the upstream more
  service_tier, inference_geo -> removed: they buy dearer capacity than our prices cover
Answer: the upstream's message, or its events, as they are but for the message's id and
model (ours: no upstream id reaches a client). Usage and the start of output are read by
the translating path's own parser (MessagesStream, ChunkTranslator), so both paths bill
and fail over alike; events are held back until output starts, so an upstream failing
before its first token is still a clean error another route may retry.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiport.v1 import providers_pb2

from services.common.sse import named_frame
from services.common.usage import Usage
from services.common.wire import ANTHROPIC_MESSAGES
from services.providers.adapters.anthropic_messages_translate import (
    MIN_THINKING_BUDGET,
    THINKING_BUDGETS,
    MessagesStream,
    effort_name,
    max_tokens_of,
    openai_usage,
)
from services.providers.adapters.openai_chat_translate import (
    ChunkTranslator,
    Identity,
    parse_usage,
)
from services.providers.errors import UpstreamProtocolError

PROTOCOL = ANTHROPIC_MESSAGES
# Messages field -> the canonical field whose absence (dropped by policy) removes it
# (present: an optional field set, a repeated one not empty).
SAMPLING_FIELDS = (("temperature", "temperature"), ("top_p", "top_p"), ("stop_sequences", "stop"))
# Fields that would buy a dearer service than our prices cover.
PRICED_APART = ("service_tier", "inference_geo")


def _plain_cache_control(block: Any) -> None:
    if isinstance(block, dict):
        control = block.get("cache_control")
        if isinstance(control, dict) and "ttl" in control:
            block["cache_control"] = {k: v for k, v in control.items() if k != "ttl"}
        content = block.get("content")  # a tool_result's own blocks
        if isinstance(content, list):
            for inner in content:
                _plain_cache_control(inner)


def _thinking(body: dict[str, Any], chat: providers_pb2.CanonicalChat, max_tokens: int) -> None:
    """Sets the thinking this model takes for what the client asked (see the module)."""
    asked = body.get("thinking")
    config = body.get("output_config")
    if not (isinstance(asked, dict) and asked.get("type") in ("enabled", "adaptive")) and not (
        isinstance(config, dict) and config.get("effort") is not None
    ):
        return  # no thinking asked (or disabled): as the client sent it
    effort = effort_name(chat.request)
    config = dict(config) if isinstance(config, dict) else {}
    # No instruction reads as control "": the model's mode is then not adaptive.
    if chat.thinking.control == "adaptive" and effort is not None:
        body["thinking"] = {"type": "adaptive"}
        config["effort"] = effort
    else:
        config.pop("effort", None)  # budget models take a budget, not an effort
        enabled = asked if isinstance(asked, dict) and asked.get("type") == "enabled" else None
        if enabled is not None:
            # The client's budget, unless max_tokens was capped below it (Anthropic
            # wants the budget under max_tokens): then half of it, as translation does.
            budget = enabled.get("budget_tokens")
            if isinstance(budget, int) and budget >= max_tokens:
                budget = max_tokens // 2
        else:
            budget = min(THINKING_BUDGETS.get(str(effort), 0), max_tokens // 2)
        if isinstance(budget, int) and budget >= MIN_THINKING_BUDGET:
            kept = dict(enabled or {})  # the client's other thinking fields
            body["thinking"] = {**kept, "type": "enabled", "budget_tokens": budget}
        else:
            body.pop("thinking", None)
    if config:
        body["output_config"] = config
    else:
        body.pop("output_config", None)


def native_request(
    client_body: bytes,
    chat: providers_pb2.CanonicalChat,
    upstream_model: str,
    *,
    stream: bool,
    drop: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """The upstream body for a Messages client's request (see the module's docstring).
    `chat` is the same call as the gate made it, with the provider's drops applied."""
    body = orjson.loads(client_body)
    if not isinstance(body, dict):
        raise UpstreamProtocolError("native request is not an object")
    max_tokens = max_tokens_of(chat.request)
    body["model"] = upstream_model
    body["max_tokens"] = max_tokens
    if stream:
        body["stream"] = True
    else:
        body.pop("stream", None)
    given = {field.name for field, _ in chat.request.ListFields()}
    for ours, theirs in SAMPLING_FIELDS:
        if theirs not in given:
            body.pop(ours, None)
    if "top_k" in drop:
        body.pop("top_k", None)
    for key in PRICED_APART:
        body.pop(key, None)
    _thinking(body, chat, max_tokens)
    for key in ("system", "tools"):
        if isinstance(body.get(key), list):
            for block in body[key]:
                _plain_cache_control(block)
    for message in body.get("messages") or []:
        if isinstance(message, dict) and isinstance(message.get("content"), list):
            for block in message["content"]:
                _plain_cache_control(block)
    return body


def native_message(raw: bytes, response_id: str, model: str) -> tuple[bytes, Usage]:
    """The upstream's whole message with our id and model, and its usage."""
    message = orjson.loads(raw)
    if not isinstance(message, dict) or not isinstance(message.get("content"), list):
        raise UpstreamProtocolError("message has no content")
    message["id"] = response_id
    message["model"] = model
    return orjson.dumps(message), parse_usage(openai_usage(message.get("usage")))


class NativeMessagesStream:
    """Upstream Messages events in, the same events out (our id and model), with the
    translating path's accounting: `output_started`, `finish()`, `estimated_usage()`
    as ChunkTranslator has them, so the failover loop treats both paths alike."""

    def __init__(
        self,
        identity: Identity,
        response_id: str,
        *,
        prompt_chars: int,
        image_parts: int = 0,
        api_key: str = "",
    ) -> None:
        self.response_id = response_id
        self.model = identity.model
        self.parser = MessagesStream(api_key=api_key)
        self.accounting = ChunkTranslator(
            identity, prompt_chars=prompt_chars, image_parts=image_parts
        )
        self._held: list[bytes] = []

    @property
    def done(self) -> bool:
        return self.parser.done

    @property
    def output_started(self) -> bool:
        return self.accounting.output_started

    def feed(self, event: str, data: bytes) -> list[bytes]:
        """One upstream event: the frames to send now (none while output has not started)."""
        for chunk in self.parser.feed(event, data):  # raises on an error event
            self.accounting.feed(chunk)
        if event == "message_start":
            payload = orjson.loads(data)
            payload["message"]["id"] = self.response_id
            payload["message"]["model"] = self.model
            data = orjson.dumps(payload)
        self._held.append(named_frame(event, data))
        if not self.output_started and not self.done:
            return []
        out, self._held = self._held, []
        return out

    def estimated_usage(self) -> Usage:
        return self.accounting.estimated_usage()

    def finish(self) -> tuple[list[bytes], Usage]:
        """Frames still held (none once message_stop was seen) and the usage to bill."""
        _, usage = self.accounting.finish()
        out, self._held = self._held, []
        return out, usage


__all__ = ["PROTOCOL", "NativeMessagesStream", "native_message", "native_request"]
