"""Translation between our client schema (OpenAI chat) and an OpenAI-compatible
upstream. Pure: dicts and bytes in, public JSON bytes and token usage out.

The output is the public shape byte for byte: our completion id, the public
model id, no upstream ids or extra fields, usage always with its details.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from aiport.v1 import providers_pb2

from services.common.canonical_chat import to_chat_body, without
from services.common.usage import Usage, estimate_usage
from services.providers.errors import UpstreamProtocolError

__all__ = ["UpstreamProtocolError"]

_DELTA_KEYS = ("role", "content", "reasoning_content", "tool_calls")


@dataclass(frozen=True, slots=True)
class Identity:
    """What the client sees instead of the upstream's own id and model name."""

    completion_id: str
    model: str
    created: int


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def parse_usage(usage: Any) -> Usage:
    """An OpenAI-shaped usage object (the upstream's, or one an adapter translated).
    Cache writes are `prompt_tokens_details.cache_write_tokens` (OpenRouter's name; the
    Anthropic adapter reports cache_creation_input_tokens there)."""
    if not isinstance(usage, dict):
        raise UpstreamProtocolError("usage is not an object")
    prompt_details = usage.get("prompt_tokens_details") or {}
    if not isinstance(prompt_details, dict):
        prompt_details = {}
    completion_details = usage.get("completion_tokens_details") or {}
    cached = _count(prompt_details.get("cached_tokens"))
    # DeepSeek reports prompt-cache hits under its own name.
    cached = cached or _count(usage.get("prompt_cache_hit_tokens"))
    reasoning = _count(
        completion_details.get("reasoning_tokens") if isinstance(completion_details, dict) else 0
    )
    prompt = _count(usage.get("prompt_tokens"))
    cached = min(cached, prompt)
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=_count(usage.get("completion_tokens")),
        cached_prompt_tokens=cached,
        reasoning_tokens=reasoning,
        # Both are parts of the prompt: together never more than all of it.
        cache_write_prompt_tokens=min(
            _count(prompt_details.get("cache_write_tokens")), prompt - cached
        ),
    )


def upstream_request(
    chat: providers_pb2.CanonicalChat,
    upstream_model: str,
    stream: bool,
    max_tokens_field: str,
    drop_params: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """The upstream's body: the canonical call as OpenAI chat JSON. `drop_params` are
    parameters this upstream rejects: dropped, like unknown ones. The gateway's
    thinking instruction (chat_policy) is rendered the OpenAI-compatible way
    (`openai_thinking`)."""
    body = to_chat_body(without(chat, drop_params).request)
    if chat.HasField("thinking"):
        body.update(openai_thinking(chat.thinking))
    body["model"] = upstream_model
    if max_tokens_field != "max_tokens" and "max_tokens" in body:
        body[max_tokens_field] = body.pop("max_tokens")
    if stream:
        body["stream"] = True
        # Without it an OpenAI upstream never reports the usage we bill by.
        body["stream_options"] = {"include_usage": True}
    return body


def openai_thinking(instruction: providers_pb2.ThinkingInstruction) -> dict[str, Any]:
    """The body fields that switch thinking for an OpenAI-compatible upstream:
    `toggle` -> thinking {type: enabled|disabled} (DeepSeek, GLM, Kimi);
    `effort` switched off -> reasoning_effort = the model's "no reasoning" value.
    Anything else has no OpenAI-compatible form and sends nothing."""
    if instruction.control == "toggle":
        return {"thinking": {"type": "enabled" if instruction.enabled else "disabled"}}
    if instruction.control == "effort" and not instruction.enabled and instruction.off:
        return {"reasoning_effort": instruction.off}
    return {}


def _tool_call(call: Any, streamed: bool) -> dict[str, Any]:
    if not isinstance(call, dict):
        raise UpstreamProtocolError("tool call is not an object")
    out: dict[str, Any] = {}
    if streamed:
        out["index"] = _count(call.get("index"))
    if call.get("id") is not None:
        out["id"] = call["id"]
    if call.get("type") is not None or not streamed:
        out["type"] = call.get("type") or "function"
    fn = call.get("function")
    if isinstance(fn, dict):
        out["function"] = {k: fn[k] for k in ("name", "arguments") if fn.get(k) is not None}
    return out


def _message(message: Any) -> dict[str, Any]:
    if not isinstance(message, dict):
        raise UpstreamProtocolError("choice has no message")
    out: dict[str, Any] = {"role": "assistant", "content": message.get("content")}
    calls = message.get("tool_calls")
    if calls:
        out["tool_calls"] = [_tool_call(c, streamed=False) for c in calls]
    if message.get("reasoning_content"):
        out["reasoning_content"] = message["reasoning_content"]
    return out


def public_completion(upstream: Any, identity: Identity) -> tuple[bytes, Usage]:
    """A whole chat.completion from the upstream, in the public shape."""
    if not isinstance(upstream, dict) or not isinstance(upstream.get("choices"), list):
        raise UpstreamProtocolError("completion has no choices")
    choices = []
    for choice in upstream["choices"]:
        if not isinstance(choice, dict):
            raise UpstreamProtocolError("choice is not an object")
        item: dict[str, Any] = {
            "index": _count(choice.get("index")),
            "message": _message(choice.get("message")),
        }
        if choice.get("logprobs") is not None:
            item["logprobs"] = choice["logprobs"]
        item["finish_reason"] = choice.get("finish_reason") or "stop"
        choices.append(item)
    usage = parse_usage(upstream.get("usage"))
    body = {
        "id": identity.completion_id,
        "object": "chat.completion",
        "created": identity.created,
        "model": identity.model,
        "choices": choices,
        "usage": usage.to_public(),
    }
    return orjson.dumps(body), usage


@dataclass
class ChunkTranslator:
    """Upstream chat.completion.chunk objects in, public chunks out.

    Holds back the role-only opening chunk until real output follows, so that an
    upstream failing before its first token is still a clean, refundable error.
    Remembers the reported usage and emits the usage-only chunk last; if the
    upstream never reports usage, it falls back to an estimate from characters.
    """

    identity: Identity
    prompt_chars: int
    image_parts: int = 0  # the prompt's images, for the estimate
    usage: Usage | None = None
    _held: list[dict[str, Any]] = field(default_factory=list)
    _output_started: bool = False
    _completion_chars: int = 0

    def _chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.identity.completion_id,
            "object": "chat.completion.chunk",
            "created": self.identity.created,
            "model": self.identity.model,
            "choices": choices,
        }

    def _delta(self, delta: Any) -> dict[str, Any]:
        if not isinstance(delta, dict):
            return {}
        out: dict[str, Any] = {}
        for key in _DELTA_KEYS:
            value = delta.get(key)
            if value is None:
                continue
            if key == "tool_calls":
                out[key] = [_tool_call(c, streamed=True) for c in value]
                for c in out[key]:
                    self._completion_chars += len(c.get("function", {}).get("arguments", ""))
            elif key in ("content", "reasoning_content"):
                if value == "":
                    continue
                self._completion_chars += len(value)
                out[key] = value
            else:
                out[key] = value
        return out

    def feed(self, upstream_chunk: Any) -> list[bytes]:
        if not isinstance(upstream_chunk, dict):
            raise UpstreamProtocolError("chunk is not an object")
        if upstream_chunk.get("usage"):
            self.usage = parse_usage(upstream_chunk["usage"])
        raw_choices = upstream_chunk.get("choices") or []
        choices = []
        substantive = False
        for choice in raw_choices:
            if not isinstance(choice, dict):
                raise UpstreamProtocolError("chunk choice is not an object")
            delta = self._delta(choice.get("delta"))
            finish = choice.get("finish_reason")
            item: dict[str, Any] = {"index": _count(choice.get("index")), "delta": delta}
            if choice.get("logprobs") is not None:
                item["logprobs"] = choice["logprobs"]
            item["finish_reason"] = finish
            substantive = substantive or finish is not None or any(k != "role" for k in delta)
            choices.append(item)
        if not choices:
            return []
        chunk = self._chunk(choices)
        if not self._output_started and not substantive:
            self._held.append(chunk)
            return []
        self._output_started = True
        out = [orjson.dumps(c) for c in self._held]
        self._held.clear()
        out.append(orjson.dumps(chunk))
        return out

    @property
    def output_started(self) -> bool:
        return self._output_started

    def estimated_usage(self) -> Usage:
        """What was consumed so far, for a stream whose upstream reported no usage."""
        return estimate_usage(
            prompt_chars=self.prompt_chars,
            image_parts=self.image_parts,
            output_chars=self._completion_chars,
        )

    def finish(self) -> tuple[list[bytes], Usage]:
        """The closing chunks (held ones, then the usage-only chunk) and the usage to bill."""
        usage = self.usage if self.usage is not None else self.estimated_usage()
        out = [orjson.dumps(c) for c in self._held]
        self._held.clear()
        usage_chunk = self._chunk([])
        usage_chunk["usage"] = usage.to_public()
        out.append(orjson.dumps(usage_chunk))
        return out, usage
