"""Translation between the canonical call and answer and an OpenAI-compatible
upstream. Pure: the typed call in, the upstream's JSON (dicts) read into the
canonical answer (TextCompletion, TextChunk) and its token usage.

Every chat adapter ends here: the Anthropic and Gemini translators write their
upstream's answer OpenAI-shaped and hand it to `public_completion` or a
`ChunkTranslator`. The answer carries our completion id and the public model id,
never the upstream's; anything the canonical answer has no field for is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from aiport.v1 import providers_pb2, text_pb2

from services.common.canonical_answer import finish_reason_of
from services.common.canonical_chat import to_chat_body, without
from services.common.usage import Usage, estimate_usage
from services.providers.errors import UpstreamProtocolError

__all__ = ["UpstreamProtocolError"]


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


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _logprobs(choice: dict[str, Any]) -> str:
    """The choice's logprobs as JSON text ("" when there are none): passed on unread."""
    logprobs = choice.get("logprobs")
    return "" if logprobs is None else orjson.dumps(logprobs).decode()


def _function_call(call: dict[str, Any]) -> text_pb2.FunctionCall:
    fn = call.get("function")
    if not isinstance(fn, dict):
        return text_pb2.FunctionCall()
    return text_pb2.FunctionCall(name=_text(fn.get("name")), arguments=_text(fn.get("arguments")))


def _tool_call(call: Any) -> text_pb2.ToolCall:
    if not isinstance(call, dict):
        raise UpstreamProtocolError("tool call is not an object")
    return text_pb2.ToolCall(id=_text(call.get("id")), function=_function_call(call))


def _tool_call_delta(call: Any) -> text_pb2.ToolCallDelta:
    if not isinstance(call, dict):
        raise UpstreamProtocolError("tool call is not an object")
    return text_pb2.ToolCallDelta(
        index=_count(call.get("index")), id=_text(call.get("id")), function=_function_call(call)
    )


def _content(content: Any) -> str | None:
    """The message's text: a string, or its text parts joined (only text comes back)."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(_text(p.get("text")) for p in content if isinstance(p, dict))
    raise UpstreamProtocolError("message content is neither text nor parts")


def _message(message: Any) -> text_pb2.Message:
    if not isinstance(message, dict):
        raise UpstreamProtocolError("choice has no message")
    out = text_pb2.Message(role=text_pb2.ROLE_ASSISTANT)
    content = _content(message.get("content"))
    if content is not None:
        out.text = content
    calls = message.get("tool_calls")
    if calls:
        if not isinstance(calls, list):
            raise UpstreamProtocolError("tool_calls is not a list")
        out.tool_calls.extend(_tool_call(c) for c in calls)
    reasoning = _text(message.get("reasoning_content"))
    if reasoning:
        out.reasoning_content = reasoning
    return out


def public_completion(upstream: Any, identity: Identity) -> tuple[text_pb2.TextCompletion, Usage]:
    """A whole answer from the upstream (OpenAI-shaped), as the canonical answer."""
    if not isinstance(upstream, dict) or not isinstance(upstream.get("choices"), list):
        raise UpstreamProtocolError("completion has no choices")
    completion = text_pb2.TextCompletion(
        id=identity.completion_id, model=identity.model, created=identity.created
    )
    for choice in upstream["choices"]:
        if not isinstance(choice, dict):
            raise UpstreamProtocolError("choice is not an object")
        finish = finish_reason_of(choice.get("finish_reason"))
        completion.choices.append(
            text_pb2.Choice(
                index=_count(choice.get("index")),
                message=_message(choice.get("message")),
                # A whole answer has ended, whatever the upstream said.
                finish_reason=finish or text_pb2.FINISH_REASON_STOP,
                logprobs_json=_logprobs(choice),
            )
        )
    return completion, parse_usage(upstream.get("usage"))


@dataclass
class ChunkTranslator:
    """Upstream chat.completion.chunk objects in, canonical chunks out.

    Holds back the role-only opening chunk until real output follows, so that an
    upstream failing before its first token is still a clean, refundable error.
    Remembers the reported usage (the caller sends it in its own event); if the
    upstream never reports usage, it falls back to an estimate from characters.
    """

    identity: Identity
    prompt_chars: int
    image_parts: int = 0  # the prompt's images, for the estimate
    usage: Usage | None = None
    _held: list[text_pb2.TextChunk] = field(default_factory=list)
    _output_started: bool = False
    _completion_chars: int = 0

    def _choice(self, choice: Any) -> text_pb2.ChoiceDelta:
        if not isinstance(choice, dict):
            raise UpstreamProtocolError("chunk choice is not an object")
        out = text_pb2.ChoiceDelta(
            index=_count(choice.get("index")),
            finish_reason=finish_reason_of(choice.get("finish_reason")),
            logprobs_json=_logprobs(choice),
        )
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return out
        if delta.get("role") is not None:
            out.role = text_pb2.ROLE_ASSISTANT  # an answer's only role
        out.text = _text(delta.get("content"))
        out.reasoning_content = _text(delta.get("reasoning_content"))
        calls = delta.get("tool_calls")
        if isinstance(calls, list):
            out.tool_calls.extend(_tool_call_delta(c) for c in calls)
        self._completion_chars += (
            len(out.text)
            + len(out.reasoning_content)
            + sum(len(c.function.arguments) for c in out.tool_calls)
        )
        return out

    def feed(self, upstream_chunk: Any) -> list[text_pb2.TextChunk]:
        if not isinstance(upstream_chunk, dict):
            raise UpstreamProtocolError("chunk is not an object")
        if upstream_chunk.get("usage"):
            self.usage = parse_usage(upstream_chunk["usage"])
        choices = [self._choice(c) for c in upstream_chunk.get("choices") or ()]
        if not choices:
            return []
        chunk = text_pb2.TextChunk(
            id=self.identity.completion_id,
            model=self.identity.model,
            created=self.identity.created,
            choices=choices,
        )
        substantive = any(
            c.finish_reason or c.text or c.reasoning_content or c.tool_calls for c in choices
        )
        if not self._output_started and not substantive:
            self._held.append(chunk)
            return []
        self._output_started = True
        out = [*self._held, chunk]
        self._held = []
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

    def finish(self) -> tuple[list[text_pb2.TextChunk], Usage]:
        """The chunks still held back (an answer with no output), and the usage to bill."""
        usage = self.usage if self.usage is not None else self.estimated_usage()
        out, self._held = self._held, []
        return out, usage
