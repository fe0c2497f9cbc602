"""Translation between our client schema (OpenAI chat) and Anthropic's Messages API.

Pure: the typed call (providers.proto's CanonicalChat) and bytes in, dicts out. The
OpenAI-shaped dicts this produces go through the shared public half
(`public_completion`, `ChunkTranslator`), which writes the public JSON and keeps the
usage; nothing here writes public JSON.

Request mapping (CanonicalChat -> POST /v1/messages; the request's fields are named as
in OpenAI chat, the gateway's thinking instruction is `chat.thinking`):
  system / developer messages -> top-level `system`, one text block per text part, in
      order (Anthropic has no mid-conversation system turns, so their position is lost)
  user / assistant / tool     -> alternating user/assistant turns of content blocks;
      consecutive same-role messages are merged, a tool message becomes a `tool_result`
      block in a user turn (tool results first in that turn, as Anthropic requires)
  image_url parts             -> image blocks: data: URLs as base64, http(s) URLs as url
  assistant tool_calls        -> tool_use blocks (arguments parsed as a JSON object)
  blank text                  -> dropped (Anthropic rejects empty and whitespace-only text)
  conversation starting with an assistant turn -> a "." user turn is put first (Anthropic
      requires the first turn to be the user's; OpenAI does not)
  trailing assistant message  -> sent as Anthropic's prefill (it continues that text),
      trailing whitespace removed (Anthropic rejects it there)
  max_tokens                  -> max_tokens (always present; never raised: billing holds on it)
  temperature                 -> clamped to 1 (OpenAI allows 0-2, Anthropic 0-1)
  top_p                       -> top_p, unless temperature is set too (newer Claude models
      reject both together; temperature wins)
  stop                        -> stop_sequences
  tools / tool_choice         -> {name, description, input_schema} / auto, none, any, tool
  parallel_tool_calls=false   -> disable_parallel_tool_use inside tool_choice
  reasoning_effort            -> thinking, as the gateway's thinking instruction says
      (chat_policy): control `adaptive` -> thinking {type: adaptive} + output_config.effort
      (Claude 4.6+, the only mode of Opus 4.7+); otherwise enabled + budget_tokens (see
      THINKING_BUDGETS and `_thinking`); type disabled -> no thinking (Anthropic's default)
  assistant reasoning_content -> not sent: Anthropic wants thinking blocks back with their
      signatures, which the client schema cannot carry (see `_thinking`)
  response_format             -> a system instruction (classic Messages has no JSON mode)
  user                        -> metadata.user_id (when at most 256 characters)
  n > 1                       -> rejected: Anthropic returns one answer per request
  seed, presence/frequency penalties, logit_bias, logprobs, top_logprobs -> dropped

Response mapping: text blocks -> content; tool_use -> tool_calls (arguments are the
compact JSON of `input`); thinking -> reasoning_content (signatures are not carried: the
client schema has no field for them; see `_thinking` for what that means in tool loops);
stop_reason -> finish_reason (STOP_REASONS); usage -> OpenAI usage (`openai_usage`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiport.v1 import providers_pb2, text_pb2

from services.common.canonical_chat import (
    EFFORTS,
    ROLES,
    TOOL_CHOICE_MODES,
    format_schema,
    tool_parameters,
)
from services.providers.errors import UpstreamError, UpstreamProtocolError, safe_upstream_message

ANTHROPIC_VERSION = "2023-06-01"
# Thinking budget per reasoning_effort. Thinking counts against max_tokens, so the budget
# is also capped at half of max_tokens to leave the other half for the visible answer;
# Anthropic's minimum budget is 1024, so below max_tokens 2048 thinking is skipped.
THINKING_BUDGETS = {"low": 1024, "medium": 4096, "high": 16384}
MIN_THINKING_BUDGET = 1024
# With thinking on, Anthropic accepts top_p only from 0.95 up (and no temperature).
MIN_THINKING_TOP_P = 0.95
MAX_TEMPERATURE = 1.0
MAX_USER_ID_CHARS = 256
IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
# The user turn put before a conversation that opens with the assistant.
OPENING_USER_TEXT = "."
STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
JSON_OBJECT_INSTRUCTION = (
    "Respond with a single valid JSON object and nothing else: no prose, no code fences."
)
JSON_SCHEMA_INSTRUCTION = (
    "Respond with a single valid JSON value and nothing else (no prose, no code fences)"
    " that conforms to this JSON Schema{name}: {schema}"
)
_TOOL_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def _rejected(message: str) -> UpstreamError:
    return UpstreamError("rejected", message)


# --- request -----------------------------------------------------------------------------


@dataclass
class _Turn:
    role: str
    results: list[dict[str, Any]] = field(default_factory=list)  # tool_result blocks
    blocks: list[dict[str, Any]] = field(default_factory=list)

    def content(self) -> list[dict[str, Any]]:
        return self.results + self.blocks


def tool_use_id(raw: str) -> str:
    """Anthropic ids match ^[A-Za-z0-9_-]+$; other upstreams' ids (e.g. Kimi's
    "functions.get_weather:0") are made to fit the same way on both sides of the pair."""
    return _TOOL_ID_UNSAFE.sub("_", raw) or "_"


def _text_block(text: str) -> dict[str, Any] | None:
    return {"type": "text", "text": text} if text.strip() else None


def _image_block(url: str, where: str) -> dict[str, Any]:
    if url[:5].lower() == "data:":
        header, comma, data = url[5:].partition(",")
        media, *flags = (part.strip().lower() for part in header.split(";"))
        if not comma or "base64" not in flags or not data:
            raise _rejected(f"{where}: image data: URLs must be base64-encoded.")
        media = "image/jpeg" if media == "image/jpg" else media
        if media not in IMAGE_MEDIA_TYPES:
            raise _rejected(
                f"{where}: image type {media or 'unknown'!r} is not supported by this model"
                " (JPEG, PNG, GIF or WebP)."
            )
        return {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}
    if url[:8].lower() == "https://" or url[:7].lower() == "http://":
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise _rejected(f"{where}: image URLs must be http(s) or base64 data: URLs.")


def _part_blocks(parts: Iterable[text_pb2.ContentPart], where: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(parts):
        kind = part.WhichOneof("part")
        if kind == "text":
            block = _text_block(part.text)
            if block:
                blocks.append(block)
        elif kind == "image_url":
            blocks.append(_image_block(part.image_url.url, f"{where}[{j}]"))
    return blocks


def _content_blocks(message: text_pb2.Message, where: str) -> list[dict[str, Any]]:
    """A message's content parts, or its text: none when it has neither (an assistant
    message that only calls tools), since an absent text reads as "", which is blank."""
    if message.content:
        return _part_blocks(message.content, where)
    block = _text_block(message.text)
    return [block] if block else []


def _tool_use(call: text_pb2.ToolCall, where: str) -> dict[str, Any]:
    fn = call.function
    arguments = fn.arguments
    try:
        value = orjson.loads(arguments) if arguments.strip() else {}
    except orjson.JSONDecodeError:
        raise _rejected(
            f"{where}.function.arguments is not valid JSON; this model needs tool call"
            " arguments as a JSON object."
        ) from None
    if not isinstance(value, dict):
        raise _rejected(f"{where}.function.arguments must be a JSON object for this model.")
    return {"type": "tool_use", "id": tool_use_id(call.id), "name": fn.name, "input": value}


def _tool_result(message: text_pb2.Message) -> dict[str, Any]:
    block: dict[str, Any] = {
        "type": "tool_result",
        "tool_use_id": tool_use_id(message.tool_call_id),
    }
    if message.content:
        texts = _part_blocks(message.content, "tool")
        if texts:
            block["content"] = texts
    elif message.text.strip():
        block["content"] = message.text  # a string result goes as the string it is
    return block


def _add(turns: list[_Turn], role: str, results: list[Any], blocks: list[Any]) -> None:
    if not results and not blocks:
        return  # nothing to send; its neighbours merge if they share a role
    if not turns or turns[-1].role != role:
        turns.append(_Turn(role))
    turns[-1].results += results
    turns[-1].blocks += blocks


def _conversation(
    messages: Iterable[text_pb2.Message],
) -> tuple[list[dict[str, Any]], list[_Turn]]:
    system: list[dict[str, Any]] = []
    turns: list[_Turn] = []
    for i, message in enumerate(messages):
        role = ROLES.get(message.role)  # None: unspecified (the gate always sets one)
        where = f"messages[{i}]"
        if role in ("system", "developer"):
            system += _content_blocks(message, where)
        elif role == "user":
            _add(turns, "user", [], _content_blocks(message, where))
        elif role == "assistant":
            blocks = _content_blocks(message, where)
            calls = message.tool_calls
            blocks += [_tool_use(c, f"{where}.tool_calls[{j}]") for j, c in enumerate(calls)]
            _add(turns, "assistant", [], blocks)
        elif role == "tool":
            _add(turns, "user", [_tool_result(message)], [])
        else:
            raise _rejected(f"{where}.role {role!r} is not supported by this model.")
    if turns and turns[-1].role == "assistant":
        last = turns[-1].blocks
        if last[-1]["type"] == "text":
            last[-1] = {"type": "text", "text": last[-1]["text"].rstrip()}
            if not last[-1]["text"]:
                last.pop()
        if not last:
            turns.pop()
    if not turns:
        raise _rejected("The request has no user or assistant content to send to this model.")
    if turns[0].role == "assistant":
        turns.insert(0, _Turn("user", blocks=[{"type": "text", "text": OPENING_USER_TEXT}]))
    return system, turns


def _tools(tools: Iterable[text_pb2.Tool]) -> list[dict[str, Any]]:
    out = []
    for tool in tools:
        fn = tool.function
        # No parameters (or {}): a tool without arguments, which Anthropic still wants
        # described as an object schema.
        schema = tool_parameters(fn) or {"properties": {}}
        schema.setdefault("type", "object")  # Anthropic requires it; OpenAI implies it
        item: dict[str, Any] = {"name": fn.name}
        if fn.description:
            item["description"] = fn.description
        item["input_schema"] = schema
        out.append(item)
    return out


def _tool_choice(request: text_pb2.TextRequest) -> dict[str, Any] | None:
    choice = request.tool_choice
    kind = choice.WhichOneof("choice")  # None when tool_choice is not set
    mode = TOOL_CHOICE_MODES.get(choice.mode) if kind == "mode" else None  # unspecified: unset
    no_parallel = request.HasField("parallel_tool_calls") and not request.parallel_tool_calls
    out: dict[str, Any]
    if mode == "none":
        return {"type": "none"}  # takes no disable_parallel_tool_use
    if mode == "required":
        out = {"type": "any"}
    elif kind == "function_name":
        out = {"type": "tool", "name": choice.function_name}
    elif mode == "auto" or no_parallel:
        out = {"type": "auto"}
    else:
        return None  # Anthropic's default is auto
    if no_parallel:
        out["disable_parallel_tool_use"] = True
    return out


def _thinking(
    chat: providers_pb2.CanonicalChat,
    max_tokens: int,
    tool_choice: dict[str, Any] | None,
    turns: list[_Turn],
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Anthropic's thinking and output_config for the gateway's thinking instruction and
    the reasoning_effort, or (None, None) where thinking is off or cannot apply.

    Adaptive thinking (control `adaptive`) takes the effort as output_config.effort.
    Budget thinking never raises max_tokens to fit a budget (the billing hold is
    computed from it), so a small max_tokens skips it. Skipped in both modes, because
    Anthropic rejects thinking with them: forced tool use (tool_choice required /
    named: the tool contract wins), a trailing assistant message (prefill), and a
    request continuing a tool loop (the last user turn holds tool results): Anthropic
    wants the thinking block of the assistant turn that called the tools sent back
    verbatim with its signature, and the client schema cannot carry it, so that
    follow-up request runs without thinking.
    """
    effort = effort_name(chat.request)
    # An instruction switched off wins; without one, the effort alone decides.
    if (chat.HasField("thinking") and not chat.thinking.enabled) or effort is None:
        return None, None
    if tool_choice is not None and tool_choice["type"] in ("any", "tool"):
        return None, None
    last = turns[-1]
    if last.role == "assistant" or last.results:
        return None, None
    if chat.thinking.control == "adaptive":
        return {"type": "adaptive"}, {"effort": effort}
    budget = min(THINKING_BUDGETS[effort], max_tokens // 2)
    if budget < MIN_THINKING_BUDGET:
        return None, None
    return {"type": "enabled", "budget_tokens": budget}, None


def _format_instruction(request: text_pb2.TextRequest) -> dict[str, Any] | None:
    """response_format as a system instruction: Anthropic's classic Messages API has no
    JSON mode, so the model is asked for JSON; the answer is not validated."""
    fmt = request.response_format  # type TYPE_UNSPECIFIED when not set
    if fmt.type == text_pb2.ResponseFormat.TYPE_JSON_OBJECT:
        return {"type": "text", "text": JSON_OBJECT_INSTRUCTION}
    if fmt.type == text_pb2.ResponseFormat.TYPE_JSON_SCHEMA:
        spec = fmt.json_schema
        schema = orjson.dumps(format_schema(spec) or {})  # in the client's key order
        text = JSON_SCHEMA_INSTRUCTION.format(
            name=f" ({spec.name})" if spec.name else "", schema=schema.decode()
        )
        return {"type": "text", "text": text}
    return None


def effort_name(request: text_pb2.TextRequest) -> str | None:
    """reasoning_effort as a THINKING_BUDGETS key, or None when not given."""
    return EFFORTS.get(request.reasoning_effort)  # REASONING_EFFORT_UNSPECIFIED: None


def max_tokens_of(request: text_pb2.TextRequest) -> int:
    """The request's max_tokens: the gate always sets it (the billing hold's bound), so
    its absence is a bug upstream of the adapter, not something to default."""
    if not request.HasField("max_tokens"):
        raise ValueError("the canonical chat call has no max_tokens")
    return request.max_tokens


def messages_request(
    chat: providers_pb2.CanonicalChat, upstream_model: str, stream: bool
) -> dict[str, Any]:
    """The Anthropic request body for the canonical chat call; UpstreamError("rejected")
    for what this protocol cannot express."""
    request = chat.request
    if request.HasField("n") and request.n > 1:
        raise _rejected("n > 1 is not supported by this model")
    system, turns = _conversation(request.messages)
    instruction = _format_instruction(request)
    if instruction is not None:
        system.append(instruction)
    limit = max_tokens_of(request)
    body: dict[str, Any] = {"model": upstream_model, "max_tokens": limit}
    if system:
        body["system"] = system
    body["messages"] = [{"role": t.role, "content": t.content()} for t in turns]

    if request.stop:
        body["stop_sequences"] = list(request.stop)
    tool_choice = None
    if request.tools:
        body["tools"] = _tools(request.tools)
        tool_choice = _tool_choice(request)
        if tool_choice is not None:
            body["tool_choice"] = tool_choice
    thinking, output_config = _thinking(chat, limit, tool_choice, turns)
    if thinking is not None:
        # Thinking takes no temperature (only the default 1) and top_p only from 0.95.
        body["thinking"] = thinking
        if output_config is not None:
            body["output_config"] = output_config
        if request.HasField("top_p") and request.top_p >= MIN_THINKING_TOP_P:
            body["top_p"] = request.top_p
    elif request.HasField("temperature"):
        # Clamped rather than rejected: an OpenAI client may send up to 2, and 1 is the
        # most random Anthropic allows. top_p is left out: newer Claude models reject
        # temperature and top_p together.
        body["temperature"] = min(request.temperature, MAX_TEMPERATURE)
    elif request.HasField("top_p"):
        body["top_p"] = request.top_p
    if 0 < len(request.user) <= MAX_USER_ID_CHARS:  # an absent user reads as ""
        body["metadata"] = {"user_id": request.user}
    if stream:
        body["stream"] = True
    return body


# --- response ----------------------------------------------------------------------------


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def finish_reason(stop_reason: Any) -> str:
    return STOP_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def openai_usage(usage: Any) -> dict[str, Any]:
    """Anthropic usage as OpenAI's. Anthropic's input_tokens excludes cache reads and
    writes, so the prompt total is the sum of all three; cache reads are the cached part,
    and cache writes (cache_creation_input_tokens, billed at the model's cache-write
    rate), when there are any, go in `prompt_tokens_details.cache_write_tokens`, where
    parse_usage reads them (the public usage does not show them). Thinking tokens are
    inside output_tokens and not reported apart (Claude 4 returns a summary of its
    thinking, so the visible text does not tell the count either): reasoning_tokens
    is 0, unknown."""
    if not isinstance(usage, dict):
        raise UpstreamProtocolError("usage is not an object")
    read = _count(usage.get("cache_read_input_tokens"))
    written = _count(usage.get("cache_creation_input_tokens"))
    prompt = _count(usage.get("input_tokens")) + read + written
    completion = _count(usage.get("output_tokens"))
    details = (
        {"cached_tokens": read, "cache_write_tokens": written}
        if written
        else {"cached_tokens": read}
    )
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": details,
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def _arguments(value: Any) -> str:
    if not isinstance(value, dict):
        raise UpstreamProtocolError("tool_use input is not an object")
    return orjson.dumps(value).decode()


def openai_completion(message: Any) -> dict[str, Any]:
    """A whole Anthropic message as an OpenAI-shaped chat.completion (for public_completion)."""
    if not isinstance(message, dict) or not isinstance(message.get("content"), list):
        raise UpstreamProtocolError("message has no content")
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message["content"]:
        if not isinstance(block, dict):
            raise UpstreamProtocolError("content block is not an object")
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "thinking" and isinstance(block.get("thinking"), str):
            thoughts.append(block["thinking"])
        elif kind == "tool_use":
            if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                raise UpstreamProtocolError("tool_use block without id or name")
            calls.append(
                {
                    "id": block["id"],
                    "type": "function",
                    "function": {
                        "name": block["name"],
                        "arguments": _arguments(block.get("input")),
                    },
                }
            )
        # redacted_thinking and server-tool blocks: nothing the client schema can carry.
    content: str | None = "".join(texts) if texts else (None if calls else "")
    out: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        out["tool_calls"] = calls
    if thoughts:
        out["reasoning_content"] = "\n\n".join(thoughts)
    return {
        "choices": [
            {"index": 0, "message": out, "finish_reason": finish_reason(message.get("stop_reason"))}
        ],
        "usage": openai_usage(message.get("usage")),
    }


# --- streaming ---------------------------------------------------------------------------


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


@dataclass
class _Block:
    kind: str
    tool_index: int = -1
    arguments_sent: bool = False
    start_input: Any = None
    open: bool = True


_USAGE_KEYS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
)


@dataclass
class MessagesStream:
    """Anthropic stream events in, OpenAI-shaped chunk dicts out (for ChunkTranslator).

    message_start -> role chunk; text / thinking deltas -> content / reasoning_content;
    a tool_use block -> a tool call by index (first fragment: id, name, arguments "",
    then the input_json_delta pieces); message_stop -> the finish chunk and the usage
    chunk (input and cache counts from message_start, output from the last message_delta;
    later counts win). `done` tells the caller the message is complete; an `error` event
    is an UpstreamError("failed") with the upstream's scrubbed message.
    """

    api_key: str = ""
    done: bool = False
    _started: bool = False
    _blocks: dict[int, _Block] = field(default_factory=dict)
    _tool_calls: int = 0
    _usage: dict[str, int] = field(default_factory=dict)
    _stop_reason: Any = None

    def feed(self, event: str, data: bytes) -> list[dict[str, Any]]:
        if event == "error":
            raise self._error(data)
        payload = orjson.loads(data)
        if not isinstance(payload, dict):
            raise UpstreamProtocolError("stream event is not an object")
        kind = payload.get("type", event)
        if kind == "error":
            raise self._error(data)
        if kind == "ping" or self.done:
            return []
        if kind == "message_start":
            return self._message_start(payload)
        if not self._started:
            raise UpstreamProtocolError(f"stream sent {kind!r} before message_start")
        if kind == "content_block_start":
            return self._block_start(payload)
        if kind == "content_block_delta":
            return self._block_delta(payload)
        if kind == "content_block_stop":
            return self._block_stop(payload)
        if kind == "message_delta":
            delta = payload.get("delta")
            if isinstance(delta, dict) and delta.get("stop_reason") is not None:
                self._stop_reason = delta["stop_reason"]
            self._take_usage(payload.get("usage"))
            return []
        if kind == "message_stop":
            self.done = True
            return [
                _chunk({}, finish_reason(self._stop_reason)),
                {"choices": [], "usage": openai_usage(self._usage)},
            ]
        return []  # Anthropic may add event types; unknown ones are to be ignored

    def _error(self, data: bytes) -> UpstreamError:
        message = safe_upstream_message(data, self.api_key)
        return UpstreamError("failed", f"upstream stream error: {message}")

    def _take_usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            for key in _USAGE_KEYS:
                if usage.get(key) is not None:
                    self._usage[key] = _count(usage[key])

    def _message_start(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        if self._started:
            raise UpstreamProtocolError("stream sent message_start twice")
        message = payload.get("message")
        if not isinstance(message, dict):
            raise UpstreamProtocolError("message_start without a message")
        self._started = True
        self._take_usage(message.get("usage"))
        return [_chunk({"role": "assistant"})]

    def _index(self, payload: dict[str, Any]) -> int:
        index = payload.get("index")
        if not isinstance(index, int) or isinstance(index, bool):
            raise UpstreamProtocolError("content block event without an index")
        return index

    def _open_block(self, payload: dict[str, Any]) -> _Block:
        block = self._blocks.get(self._index(payload))
        if block is None or not block.open:
            raise UpstreamProtocolError("event for a content block that is not open")
        return block

    def _block_start(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        index = self._index(payload)
        start = payload.get("content_block")
        if not isinstance(start, dict) or index in self._blocks:
            raise UpstreamProtocolError("bad content_block_start")
        kind = str(start.get("type"))
        block = self._blocks[index] = _Block(kind)
        if kind == "text" and isinstance(start.get("text"), str) and start["text"]:
            return [_chunk({"content": start["text"]})]
        if kind == "thinking" and isinstance(start.get("thinking"), str) and start["thinking"]:
            return [_chunk({"reasoning_content": start["thinking"]})]
        if kind == "tool_use":
            if not isinstance(start.get("id"), str) or not isinstance(start.get("name"), str):
                raise UpstreamProtocolError("tool_use block without id or name")
            block.tool_index, block.start_input = self._tool_calls, start.get("input")
            self._tool_calls += 1
            call = {
                "index": block.tool_index,
                "id": start["id"],
                "type": "function",
                "function": {"name": start["name"], "arguments": ""},
            }
            return [_chunk({"tool_calls": [call]})]
        return []

    def _block_delta(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        block = self._open_block(payload)
        delta = payload.get("delta")
        if not isinstance(delta, dict):
            raise UpstreamProtocolError("content_block_delta without a delta")
        kind = delta.get("type")
        if kind == "text_delta" and block.kind == "text" and isinstance(delta.get("text"), str):
            return [_chunk({"content": delta["text"]})] if delta["text"] else []
        if kind == "thinking_delta" and block.kind == "thinking":
            text = delta.get("thinking")
            return [_chunk({"reasoning_content": text})] if isinstance(text, str) and text else []
        if kind == "input_json_delta" and block.kind == "tool_use":
            piece = delta.get("partial_json")
            if not isinstance(piece, str):
                raise UpstreamProtocolError("input_json_delta without partial_json")
            if not piece:
                return []
            block.arguments_sent = True
            fragment = {"index": block.tool_index, "function": {"arguments": piece}}
            return [_chunk({"tool_calls": [fragment]})]
        if kind in ("text_delta", "thinking_delta", "input_json_delta"):
            raise UpstreamProtocolError(f"{kind} for a {block.kind} block")
        return []  # signature_delta, citations_delta, ...: nothing the client schema carries

    def _block_stop(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        block = self._open_block(payload)
        block.open = False
        if block.kind != "tool_use" or block.arguments_sent:
            return []
        # No input was streamed: the call's arguments are its start input, at least "{}".
        arguments = _arguments(block.start_input if block.start_input is not None else {})
        fragment = {"index": block.tool_index, "function": {"arguments": arguments}}
        return [_chunk({"tool_calls": [fragment]})]
