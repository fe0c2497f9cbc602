"""OpenAI Chat Completions: validate a request, plan the answer, build the wire bodies.

No I/O here. The server passes in the completion id and clock, so the same
request always plans the same answer and every rule is unit-testable.

Token rules (documented, because tests and the gateway's billing assert on them):
  prompt_tokens     = sum over messages of ceil(chars / 4) + 4, plus ceil(len(tools JSON) / 4)
  completion_tokens = visible words + reasoning tokens (text), or
                      ceil(len(arguments) / 4) + 5 per tool call + reasoning tokens (tools)
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from sandbox import directives, model_rules, textgen, toolargs
from sandbox.errors import ApiError, invalid

DEFAULT_WORDS = 12
MAX_N = 8
MAX_TOP_LOGPROBS = 20  # OpenAI's bound
FINGERPRINT = "sandbox"
MODELS = ("sandbox-chat", "sandbox-chat-mini", "sandbox-reasoner")

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
# Roles whose messages may omit content (assistant turns that only call tools).
_CONTENT_OPTIONAL = frozenset({"assistant", "function"})
_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_REASONING_WORDS = 6
# Reasoning tokens of a thinking-mode answer (a model with a thinking toggle, toggle on)
# when the prompt asks for none with [sim:reasoning=N]: such a model always reasons.
THINKING_MODE_REASONING_TOKENS = 8
_ARGUMENT_FRAGMENTS = 3


@dataclass(frozen=True)
class Tool:
    name: str
    parameters: dict[str, Any] | None


@dataclass(frozen=True)
class ChatRequest:
    body: dict[str, Any]
    model: str
    messages: list[dict[str, Any]]
    n: int
    stream: bool
    include_usage: bool
    max_tokens: int | None
    tools: tuple[Tool, ...]
    tool_choice: str  # "none" | "auto" | "required" | "function" (then forced_tool names it)
    forced_tool: str | None
    parallel_tool_calls: bool
    directives: directives.Directives
    seed_text: str  # last user message, directives stripped: seeds the answer
    # None: the model has no thinking toggle ([sim:reasoning=N] decides); else whether
    # this request runs in thinking mode (DeepSeek-style `thinking: {type}`).
    thinking: bool | None = None
    # `logprobs: true`: each content token's log probability, and this many alternatives.
    logprobs: bool = False
    top_logprobs: int = 0


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Choice:
    index: int
    pieces: tuple[str, ...]  # visible content, one token each, leading space included
    reasoning: str | None  # DeepSeek-style reasoning_content
    tool_calls: tuple[ToolCall, ...]
    finish_reason: str
    completion_tokens: int
    reasoning_tokens: int

    @property
    def content(self) -> str | None:
        return None if self.tool_calls else "".join(self.pieces)


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    reasoning_tokens: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
        }


@dataclass(frozen=True)
class Plan:
    request: ChatRequest
    choices: tuple[Choice, ...]
    usage: Usage


# --- request validation ----------------------------------------------------------------


def parse_json(raw: bytes) -> object:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise invalid(
            "We could not parse the JSON body of your request. The sandbox expects a JSON"
            " payload, but what was sent was not valid JSON."
        ) from None


def parse_request(body: object) -> ChatRequest:
    """Validate like OpenAI does (400 with `param` naming the field); ignore unknown fields."""
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.", code="invalid_type")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("You must provide a model parameter (a string).", param="model")
    messages = body.get("messages")
    if messages is None:
        raise _missing("messages")
    if not isinstance(messages, list):
        raise _wrong_type("messages", "an array")
    if not messages:
        raise invalid("[] is too short - 'messages'", param="messages", code="invalid_value")
    for i, message in enumerate(messages):
        _check_message(i, message)

    stream = _bool(body, "stream", False)
    include_usage = False
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise _wrong_type("stream_options", "an object")
        if not stream:
            raise invalid(
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                param="stream_options",
                code="invalid_value",
            )
        include_usage = _bool(options, "include_usage", False, "stream_options.include_usage")

    caps = [_int(body, key, 1, None) for key in ("max_tokens", "max_completion_tokens")]
    given = [cap for cap in caps if cap is not None]
    tools = _tools(body)
    tool_choice, forced = _tool_choice(body, tools)
    thinking = _model_rules(body, model, messages)
    user_text = next((_text(m) for m in reversed(messages) if m["role"] == "user"), "")
    logprobs = _bool(body, "logprobs", False)
    top_logprobs = _int(body, "top_logprobs", 0, MAX_TOP_LOGPROBS)
    if top_logprobs is not None and not logprobs:
        raise invalid(
            "logprobs must be set to true if top_logprobs is used.",
            param="top_logprobs",
            code="invalid_value",
        )
    return ChatRequest(
        body=body,
        model=model,
        messages=messages,
        n=_int(body, "n", 1, MAX_N) or 1,
        stream=stream,
        include_usage=include_usage,
        max_tokens=min(given) if given else None,
        tools=tools,
        tool_choice=tool_choice,
        forced_tool=forced,
        parallel_tool_calls=_bool(body, "parallel_tool_calls", True),
        directives=directives.parse(user_text),
        seed_text=directives.remove(user_text),
        thinking=thinking,
        logprobs=logprobs,
        top_logprobs=top_logprobs or 0,
    )


def _model_rules(body: dict[str, Any], model: str, messages: list[Any]) -> bool | None:
    """The model's own rules (model_rules); whether it runs in thinking mode, or None."""
    rules = model_rules.rules_for(model)
    for key in sorted(rules.unsupported):
        if key in body:
            raise invalid(
                f"Unsupported parameter: '{key}' is not supported with this model.",
                param=key,
                code="unsupported_parameter",
            )
    for key, default in rules.default_only:
        value = body.get(key)
        if value is not None and value != default:
            raise invalid(
                f"Unsupported value: '{key}' does not support {value} with this model."
                f" Only the default ({default}) value is supported.",
                param=key,
                code="unsupported_value",
            )
    if not rules.thinking_toggle:
        return None
    raw = body.get("thinking")
    kind = raw.get("type") if isinstance(raw, dict) else None
    if raw is not None and kind not in ("enabled", "disabled"):
        raise invalid(
            "Invalid value for 'thinking.type': expected 'enabled' or 'disabled'.",
            param="thinking.type",
            code="invalid_value",
        )
    thinking = kind != "disabled"
    if thinking and rules.reasoning_content_in_tool_turns:
        for i, message in enumerate(messages):
            if message.get("tool_calls") and not (
                isinstance(message.get("reasoning_content"), str) and message["reasoning_content"]
            ):
                raise invalid(
                    f"Missing `reasoning_content` in the assistant message at 'messages.[{i}]':"
                    " in thinking mode the reasoning_content of a turn that called tools must"
                    " be passed back to the API.",
                    param=f"messages.[{i}].reasoning_content",
                )
    return thinking


def _check_message(i: int, message: object) -> None:
    where = f"messages.[{i}]"
    if not isinstance(message, dict):
        raise _wrong_type(where, "an object")
    role = message.get("role")
    if role not in _ROLES:
        raise invalid(
            f"Invalid value for '{where}.role': expected one of {', '.join(sorted(_ROLES))}.",
            param=f"{where}.role",
            code="invalid_value",
        )
    content = message.get("content")
    if content is None:
        if role not in _CONTENT_OPTIONAL:
            raise _missing(f"{where}.content")
    elif isinstance(content, list):
        for j, part in enumerate(content):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise _wrong_type(f"{where}.content.[{j}]", "an object with a 'type'")
            if part["type"] == "text" and not isinstance(part.get("text"), str):
                raise _wrong_type(f"{where}.content.[{j}].text", "a string")
    elif not isinstance(content, str):
        raise _wrong_type(f"{where}.content", "a string or an array of content parts")
    if role == "tool" and not (isinstance(message.get("tool_call_id"), str)):
        raise invalid(
            "Missing parameter 'tool_call_id': messages with role 'tool' must have a"
            " 'tool_call_id'.",
            param=f"{where}.tool_call_id",
            code="missing_required_parameter",
        )
    calls = message.get("tool_calls")
    if calls is not None and not (
        role == "assistant" and isinstance(calls, list) and all(isinstance(c, dict) for c in calls)
    ):
        raise _wrong_type(f"{where}.tool_calls", "an array of tool calls on an assistant message")


def _tools(body: dict[str, Any]) -> tuple[Tool, ...]:
    raw = body.get("tools")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise _wrong_type("tools", "an array")
    if not raw:
        raise invalid("[] is too short - 'tools'", param="tools", code="invalid_value")
    tools = []
    for i, tool in enumerate(raw):
        where = f"tools.[{i}]"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise invalid(
                f"Invalid value for '{where}.type': expected 'function'.",
                param=f"{where}.type",
                code="invalid_value",
            )
        function = tool.get("function")
        if not isinstance(function, dict):
            raise _missing(f"{where}.function")
        name = function.get("name")
        if not isinstance(name, str) or not _TOOL_NAME.fullmatch(name):
            raise invalid(
                f"Invalid '{where}.function.name': must match ^[a-zA-Z0-9_-]{{1,64}}$.",
                param=f"{where}.function.name",
                code="invalid_value",
            )
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise _wrong_type(f"{where}.function.parameters", "an object")
        tools.append(Tool(name, parameters))
    return tuple(tools)


def _tool_choice(body: dict[str, Any], tools: tuple[Tool, ...]) -> tuple[str, str | None]:
    raw = body.get("tool_choice")
    if raw is None:
        return ("auto" if tools else "none"), None
    if raw in ("none", "auto"):
        return raw, None
    if not tools:
        raise invalid(
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are"
            " specified.",
            param="tool_choice",
            code="invalid_value",
        )
    if raw == "required":
        return "required", None
    function = raw.get("function") if isinstance(raw, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(raw, dict) or raw.get("type") != "function" or not isinstance(name, str):
        raise invalid(
            "Invalid value for 'tool_choice': expected 'none', 'auto', 'required' or"
            ' {"type": "function", "function": {"name": ...}}.',
            param="tool_choice",
            code="invalid_value",
        )
    if name not in {tool.name for tool in tools}:
        raise invalid(
            f"Invalid value for 'tool_choice': no function named '{name}' in 'tools'.",
            param="tool_choice",
            code="invalid_value",
        )
    return "function", name


def _int(body: dict[str, Any], key: str, low: int, high: int | None) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    # bool is an int subclass in Python, but `"n": true` is a type error on the wire.
    if not isinstance(value, int) or isinstance(value, bool):
        raise _wrong_type(key, "an integer")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise invalid(
            f"Invalid value for '{key}': must be {bound}.", param=key, code="invalid_value"
        )
    return value


def _bool(body: dict[str, Any], key: str, default: bool, param: str | None = None) -> bool:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _wrong_type(param or key, "a boolean")
    return value


def _missing(param: str) -> ApiError:
    return invalid(
        f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
    )


def _wrong_type(param: str, expected: str) -> ApiError:
    return invalid(
        f"Invalid type for '{param}': expected {expected}.", param=param, code="invalid_type"
    )


# --- token accounting ------------------------------------------------------------------


def _text_parts(message: dict[str, Any]) -> list[str]:
    content = message.get("content")
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [p["text"] for p in content if p.get("type") == "text"]
    return []


def _text(message: dict[str, Any]) -> str:
    return "\n".join(_text_parts(message))


def _message_chars(message: dict[str, Any]) -> int:
    chars = sum(len(part) for part in _text_parts(message))
    for call in message.get("tool_calls") or []:
        function = call.get("function")
        arguments = function.get("arguments") if isinstance(function, dict) else None
        if isinstance(arguments, str):
            chars += len(arguments)
    return chars


def prompt_tokens(messages: list[dict[str, Any]], tools: object = None) -> int:
    """ceil(chars/4) + 4 per message, plus ceil(len(compact tools JSON)/4).

    Every counted char is at least one UTF-8 byte of the request body, so this
    stays below bytes + 16 per message + 32: the bound the gateway pre-bills on.
    """
    total = sum(math.ceil(_message_chars(m) / 4) + 4 for m in messages)
    if tools:
        total += math.ceil(len(orjson.dumps(tools).decode()) / 4)
    return total


# --- planning the answer ---------------------------------------------------------------


def plan_answer(request: ChatRequest) -> Plan:
    to_call = _tools_to_call(request)
    choices = tuple(_choice(request, index, to_call) for index in range(request.n))
    prompt = prompt_tokens(request.messages, request.body.get("tools"))
    usage = Usage(
        prompt_tokens=prompt,
        completion_tokens=sum(c.completion_tokens for c in choices),
        cached_tokens=min(request.directives.cached, prompt),
        reasoning_tokens=sum(c.reasoning_tokens for c in choices),
    )
    return Plan(request, choices, usage)


def _tools_to_call(request: ChatRequest) -> tuple[Tool, ...]:
    if not request.tools or request.tool_choice == "none":
        return ()
    if request.forced_tool is not None:
        return tuple(t for t in request.tools if t.name == request.forced_tool)[:1]
    # "auto" answers a tool result with text, so a tool round trip terminates.
    if request.tool_choice == "auto" and request.messages[-1]["role"] != "user":
        return ()
    if request.directives.parallel and request.parallel_tool_calls:
        return request.tools
    return request.tools[:1]


def _choice(request: ChatRequest, index: int, to_call: tuple[Tool, ...]) -> Choice:
    key = f"{request.model}\x00{request.seed_text}\x00{index}"
    cap = request.max_tokens
    wanted_reasoning = request.directives.reasoning
    if request.thinking is not None:
        # A thinking-toggle model reasons exactly when thinking mode is on.
        wanted_reasoning = (wanted_reasoning or THINKING_MODE_REASONING_TOKENS) * request.thinking
    reasoning_tokens = wanted_reasoning if cap is None else min(wanted_reasoning, cap)
    reasoning = None
    if reasoning_tokens:
        reasoning = " ".join(textgen.words(f"{key}\x00reasoning", _REASONING_WORDS))

    if to_call:
        calls = tuple(
            ToolCall(
                id="call_" + textgen.hex_digits(f"{key}\x00call\x00{j}", 24),
                name=tool.name,
                arguments=tool_arguments(tool.parameters),
            )
            for j, tool in enumerate(to_call)
        )
        tokens = sum(math.ceil(len(c.arguments) / 4) + 5 for c in calls)
        return Choice(
            index=index,
            pieces=(),
            reasoning=reasoning,
            tool_calls=calls,
            finish_reason="tool_calls",
            completion_tokens=tokens + reasoning_tokens,
            reasoning_tokens=reasoning_tokens,
        )

    wanted = _content_pieces(request, key)
    visible = len(wanted) if cap is None else min(len(wanted), cap - reasoning_tokens)
    return Choice(
        index=index,
        pieces=tuple(wanted[:visible]),
        reasoning=reasoning,
        tool_calls=(),
        finish_reason="length" if visible < len(wanted) else "stop",
        completion_tokens=visible + reasoning_tokens,
        reasoning_tokens=reasoning_tokens,
    )


def _content_pieces(request: ChatRequest, key: str) -> list[str]:
    if request.directives.echo:
        echoed = {k: v for k, v in request.body.items() if k != "messages"}
        return textgen.pieces(orjson.dumps(echoed).decode())
    schema = _output_schema(request.body.get("response_format"))
    if schema is not None:
        # Structured outputs: the answer is JSON that satisfies the schema, as OpenAI's is.
        return textgen.pieces(orjson.dumps(toolargs.sample(schema)).decode())
    count = request.directives.tokens
    chosen = textgen.words(key, DEFAULT_WORDS if count is None else count)
    return [word if i == 0 else f" {word}" for i, word in enumerate(chosen)]


def _output_schema(response_format: Any) -> dict[str, Any] | None:
    """The JSON Schema a json_schema response_format asks the answer to satisfy."""
    if not isinstance(response_format, dict) or response_format.get("type") != "json_schema":
        return None
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    return schema if isinstance(schema, dict) else None


def tool_arguments(parameters: dict[str, Any] | None) -> str:
    """Compact JSON arguments for a function; always an object, as OpenAI's are."""
    value = toolargs.sample(parameters if parameters is not None else {"type": "object"})
    return orjson.dumps(value if isinstance(value, dict) else {}).decode()


# --- wire bodies -----------------------------------------------------------------------


def _token_logprob(token: str, position: int, rank: int = 0) -> dict[str, Any]:
    """A made-up but stable log probability: lower for later ranks."""
    logprob = -round(0.05 * (1 + position % 7) + rank, 4)
    return {"token": token, "logprob": logprob, "bytes": list(token.encode())}


def logprobs_body(request: ChatRequest, tokens: Sequence[str], start: int = 0) -> Any:
    """OpenAI's `logprobs` object for these content tokens (null unless asked for);
    `start` is the first token's position in the answer."""
    if not request.logprobs:
        return None
    content = []
    for i, token in enumerate(tokens, start):
        entry = _token_logprob(token, i)
        entry["top_logprobs"] = [
            _token_logprob(token if rank == 0 else f"{token}~{rank}", i, rank)
            for rank in range(request.top_logprobs)
        ]
        content.append(entry)
    return {"content": content, "refusal": None}


def completion_body(plan: Plan, completion_id: str, created: int) -> dict[str, Any]:
    """The non-streaming `chat.completion` object."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": plan.request.model,
        "system_fingerprint": FINGERPRINT,
        "choices": [
            {
                "index": choice.index,
                "message": _message(choice),
                "logprobs": logprobs_body(plan.request, () if choice.tool_calls else choice.pieces),
                "finish_reason": choice.finish_reason,
            }
            for choice in plan.choices
        ],
        "usage": plan.usage.to_dict(),
    }


def _message(choice: Choice) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": choice.content}
    if choice.reasoning is not None:
        message["reasoning_content"] = choice.reasoning
    if choice.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in choice.tool_calls
        ]
    return message


DONE_FRAME = b"data: [DONE]\n\n"


def sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def stream_frames(plan: Plan, completion_id: str, created: int) -> tuple[list[bytes], bool]:
    """The SSE frames to send, and whether to then drop the connection (`fail-after`).

    With fail-after=N the stream is cut after the N-th content chunk (word or
    argument fragment), and at the latest before the first finish chunk, so the
    client always sees an incomplete stream.
    """
    fail_after = plan.request.directives.fail_after
    frames: list[bytes] = []
    seen = 0
    for kind, chunk in _chunks(plan, completion_id, created):
        if fail_after is not None and (
            kind in ("finish", "usage") or (kind == "content" and seen == fail_after)
        ):
            return frames, True
        seen += kind == "content"
        frames.append(sse(chunk))
    frames.append(DONE_FRAME)
    return frames, False


def _chunks(plan: Plan, completion_id: str, created: int) -> Iterator[tuple[str, dict[str, Any]]]:
    """(kind, chunk) pairs; choices interleaved round-robin like OpenAI does for n > 1."""
    request = plan.request
    head: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": request.model,
        "system_fingerprint": FINGERPRINT,
    }
    # With include_usage OpenAI sends "usage": null on every chunk but the last.
    tail: dict[str, Any] = {"usage": None} if request.include_usage else {}

    def chunk(
        index: int, delta: dict[str, Any], finish: str | None, logprobs: Any
    ) -> dict[str, Any]:
        choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        return {**head, "choices": [choice], **tail}

    # Each choice's position in its answer, for its tokens' log probabilities.
    positions = [0] * len(plan.choices)

    per_choice = [list(_choice_deltas(choice)) for choice in plan.choices]
    for step in range(max(len(deltas) for deltas in per_choice)):
        for choice, deltas in zip(plan.choices, per_choice, strict=True):
            if step < len(deltas):
                kind, delta = deltas[step]
                finish = choice.finish_reason if kind == "finish" else None
                token = delta.get("content")
                logprobs = None
                if isinstance(token, str) and token:  # a content token, not a tool fragment
                    logprobs = logprobs_body(request, [token], positions[choice.index])
                    positions[choice.index] += 1
                yield kind, chunk(choice.index, delta, finish, logprobs)
    if request.include_usage:
        yield "usage", {**head, "choices": [], "usage": plan.usage.to_dict()}


def _choice_deltas(choice: Choice) -> Iterator[tuple[str, dict[str, Any]]]:
    if not choice.tool_calls:
        yield "role", {"role": "assistant", "content": ""}
        if choice.reasoning is not None:
            yield "reasoning", {"reasoning_content": choice.reasoning}
        for piece in choice.pieces:
            yield "content", {"content": piece}
        yield "finish", {}
        return
    if choice.reasoning is not None:
        yield (
            "reasoning",
            {"role": "assistant", "content": None, "reasoning_content": choice.reasoning},
        )
    for i, call in enumerate(choice.tool_calls):
        header: dict[str, Any] = {"role": "assistant", "content": None} if i == 0 else {}
        function = {"name": call.name, "arguments": ""}
        header["tool_calls"] = [
            {"index": i, "id": call.id, "type": "function", "function": function}
        ]
        yield "role", header
        for fragment in _fragments(call.arguments, _ARGUMENT_FRAGMENTS):
            yield "content", {"tool_calls": [{"index": i, "function": {"arguments": fragment}}]}
    yield "finish", {}


def _fragments(text: str, parts: int) -> list[str]:
    size = max(1, math.ceil(len(text) / parts))
    return [text[i : i + size] for i in range(0, len(text), size)]
