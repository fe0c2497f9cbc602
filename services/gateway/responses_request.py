"""An OpenAI Responses request, checked and turned into the canonical chat call. Pure.

The client protocol's inbound half, as messages_request.py is for Messages:
Responses JSON in, the `ChatCall` a chat completion makes out (so holds, routing,
failover and capture are chat's), plus what the Response object echoes back
(`ResponseEcho`). Every field is checked under its Responses name; then the
canonical request passes the one gate every chat passes (`parse_chat_body`).

Stateless: nothing is stored, so what needs a stored response or conversation is a
400 naming the field (store true, previous_response_id, conversation, prompt,
item_reference, background true). An absent `store` means false here (OpenAI's
default is true; we keep nothing, and say so in the Response's `store: false`).

Mapping (Responses -> canonical OpenAI chat):
  instructions                        -> a system message, first
  input string                        -> one user message
  input message items {role, content} -> messages of that role; input_text /
      output_text / refusal -> text parts, input_image {image_url} -> image_url
  function_call items                 -> tool_calls on the assistant message before
      them (or a new one): consecutive calls are one assistant turn
  function_call_output items          -> tool messages (output string, or its
      input_text parts joined)
  reasoning items (reasoning_text content, or summary text) -> reasoning_content
      of the assistant turn that follows
  tools [{type: function, name, description, parameters, strict}] -> function tools
  tool_choice auto / none / required / {type: function, name} -> the same
  parallel_tool_calls, temperature, top_p, user -> the same
  max_output_tokens                   -> max_tokens
  reasoning.effort minimal / low / medium / high / xhigh -> low / low / medium /
      high / high; none -> nothing (the model's default)
  text.format text / json_object / json_schema {name, schema, strict} -> response_format
  metadata                            -> echoed on the Response, not sent upstream
  include, prompt_cache_key, prompt_cache_retention, safety_identifier,
  service_tier, stream_options, truncation, text.verbosity, reasoning.summary,
  top_logprobs -> accepted, dropped (they shape what is returned or cached, not
      the answer; we return no logprobs, summaries or encrypted reasoning)
  any other field, non-function tools, input_file / input_audio parts, other
  item types -> 400 naming the field (OpenAI refuses unknown parameters)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from services.common.catalog import Catalog
from services.gateway.chat_request import MAX_MESSAGES, TOOL_NAME, ChatCall, parse_chat_body
from services.gateway.errors import PublicError, invalid_request, json_object_body

MAX_ITEMS = MAX_MESSAGES
MAX_PARTS = 1_000
MAX_ID_CHARS = 256
# OpenAI's floor for max_output_tokens.
MIN_OUTPUT_TOKENS = 16
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512
EFFORTS = {"minimal": "low", "low": "low", "medium": "medium", "high": "high", "xhigh": "high"}
NO_EFFORT = "none"

HANDLED = frozenset(
    {
        "model",
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "max_output_tokens",
        "reasoning",
        "text",
        "temperature",
        "top_p",
        "metadata",
        "store",
        "stream",
        "user",
        "background",
    }
)
DROPPED = frozenset(
    {
        "include",
        "prompt_cache_key",
        "prompt_cache_retention",
        "safety_identifier",
        "service_tier",
        "stream_options",
        "truncation",
        "top_logprobs",
    }
)
# Fields that need state we do not keep: named in their own words.
STATEFUL = {
    "previous_response_id": "needs a stored response; aiport's Responses API is "
    "stateless: send the whole conversation in 'input'.",
    "conversation": "needs a stored conversation; aiport's Responses API is "
    "stateless: send the whole conversation in 'input'.",
    "prompt": "needs a stored prompt template; send 'instructions' and 'input' instead.",
}
ROLES = frozenset({"user", "system", "developer", "assistant"})
TEXT_PARTS = frozenset({"input_text", "output_text"})
MESSAGE_STATUSES = frozenset({"in_progress", "completed", "incomplete"})


@dataclass(frozen=True, slots=True)
class ResponseEcho:
    """What the Response object repeats of its request (OpenAI's Response does)."""

    model: str
    instructions: str | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: Any = "auto"
    parallel_tool_calls: bool = True
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    effort: str | None = None
    text_format: dict[str, Any] = field(default_factory=lambda: {"type": "text"})
    metadata: dict[str, str] = field(default_factory=dict)
    user: str | None = None


@dataclass(frozen=True, slots=True)
class ResponsesCall:
    chat: ChatCall
    echo: ResponseEcho


def _fail(message: str, param: str) -> PublicError:
    return invalid_request(f"Invalid '{param}': {message}", param)


def _text(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise _fail("must be a string.", param)
    return value


def _call_id(value: Any, param: str) -> str:
    """A function call's id, as the client echoes it between the call and its output."""
    call_id = _text(value, param)
    if not call_id or len(call_id) > MAX_ID_CHARS:
        raise _fail(f"must be 1-{MAX_ID_CHARS} characters.", param)
    return call_id


def _number(body: dict[str, Any], key: str, high: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= high:
        raise _fail(f"must be a number between 0 and {high:g}.", key)
    return value


def _image_part(part: dict[str, Any], where: str) -> dict[str, Any]:
    if part.get("file_id") is not None:
        raise _fail("uploaded files are not supported; send image_url.", f"{where}.file_id")
    url = _text(part.get("image_url"), f"{where}.image_url")
    if not url.startswith(("https://", "http://", "data:image/")):
        raise _fail("must be an http(s) URL or a data:image/ URL.", f"{where}.image_url")
    image: dict[str, Any] = {"url": url}
    detail = part.get("detail")
    if detail is not None:
        if detail not in ("auto", "low", "high"):
            raise _fail("must be 'auto', 'low' or 'high'.", f"{where}.detail")
        image["detail"] = detail
    return {"type": "image_url", "image_url": image}


def _parts(content: Any, where: str, *, role: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list) or not content or len(content) > MAX_PARTS:
        raise _fail(
            f"must be a string or a non-empty array of at most {MAX_PARTS} content parts.", where
        )
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        at = f"{where}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in TEXT_PARTS:
            parts.append({"type": "text", "text": _text(part.get("text"), f"{at}.text")})
        elif kind == "refusal":
            parts.append({"type": "text", "text": _text(part.get("refusal"), f"{at}.refusal")})
        elif kind == "input_image":
            if role != "user":
                raise _fail(f"a {role} message cannot hold an image.", f"{at}.type")
            parts.append(_image_part(part, at))
        else:
            raise _fail(f"content part type {kind!r} is not supported.", f"{at}.type")
    if role != "user":
        # Only user turns take parts upstream; the others' text is one string.
        return "".join(p["text"] for p in parts)
    return parts


def _function_output(item: dict[str, Any], where: str) -> str:
    output = item.get("output")
    if isinstance(output, str):
        return output
    if not isinstance(output, list):
        raise _fail("must be a string or an array of input_text parts.", f"{where}.output")
    texts = []
    for j, part in enumerate(output):
        at = f"{where}.output[{j}]"
        if not isinstance(part, dict) or part.get("type") != "input_text":
            raise _fail("only input_text parts are supported in a function's output.", at)
        texts.append(_text(part.get("text"), f"{at}.text"))
    return "\n".join(texts)


def _reasoning_text(item: dict[str, Any], where: str) -> str:
    """A reasoning item's text: its reasoning_text content, else its summary."""
    for key, kind in (("content", "reasoning_text"), ("summary", "summary_text")):
        parts = item.get(key)
        if parts is None:
            continue
        if not isinstance(parts, list):
            raise _fail("must be an array.", f"{where}.{key}")
        texts = []
        for j, part in enumerate(parts):
            if not isinstance(part, dict) or part.get("type") != kind:
                raise _fail(f"must be a {kind} part.", f"{where}.{key}[{j}]")
            texts.append(_text(part.get("text"), f"{where}.{key}[{j}].text"))
        if texts:
            return "".join(texts)
    return ""


class _Conversation:
    """Input items in, canonical messages out (function calls joined into turns)."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.reasoning = ""  # waiting for the assistant turn it belongs to

    def _assistant(self, content: str | None) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if self.reasoning:
            message["reasoning_content"] = self.reasoning
            self.reasoning = ""
        self.messages.append(message)
        return message

    def message(self, item: dict[str, Any], where: str) -> None:
        role = item.get("role")
        if role not in ROLES:
            raise _fail("must be 'user', 'assistant', 'system' or 'developer'.", f"{where}.role")
        if item.get("status") is not None and item["status"] not in MESSAGE_STATUSES:
            raise _fail("must be in_progress, completed or incomplete.", f"{where}.status")
        content = _parts(item.get("content"), f"{where}.content", role=role)
        if role == "assistant":
            self._assistant(content if isinstance(content, str) else "")
        else:
            self.messages.append(
                {"role": "system" if role == "developer" else role, "content": content}
            )

    def function_call(self, item: dict[str, Any], where: str) -> None:
        name = _text(item.get("name"), f"{where}.name")
        arguments = _text(item.get("arguments"), f"{where}.arguments")
        call = {
            "id": _call_id(item.get("call_id"), f"{where}.call_id"),
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        }
        last = self.messages[-1] if self.messages else None
        if last is None or last["role"] != "assistant" or self.reasoning:
            last = self._assistant(None)
        last.setdefault("tool_calls", []).append(call)

    def function_output(self, item: dict[str, Any], where: str) -> None:
        self.messages.append(
            {
                "role": "tool",
                "tool_call_id": _call_id(item.get("call_id"), f"{where}.call_id"),
                "content": _function_output(item, where),
            }
        )

    def item(self, item: Any, where: str) -> None:
        if not isinstance(item, dict):
            raise _fail("must be an object.", where)
        kind = item.get("type", "message")
        if kind == "message":
            self.message(item, where)
        elif kind == "function_call":
            self.function_call(item, where)
        elif kind == "function_call_output":
            self.function_output(item, where)
        elif kind == "reasoning":
            self.reasoning += _reasoning_text(item, where)
        elif kind == "item_reference":
            raise _fail(STATEFUL["previous_response_id"], f"{where}.type")
        else:
            raise _fail(f"item type {kind!r} is not supported.", f"{where}.type")


def _input(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise _fail("is required and must be a string or a non-empty array of items.", "input")
    if len(value) > MAX_ITEMS:
        raise _fail(f"may hold at most {MAX_ITEMS} items.", "input")
    conversation = _Conversation()
    for i, item in enumerate(value):
        conversation.item(item, f"input[{i}]")
    return conversation.messages


def _tools(value: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Canonical function tools, and the tools as the Response echoes them."""
    if not isinstance(value, list):
        raise _fail("must be an array of tools.", "tools")
    canonical: list[dict[str, Any]] = []
    echoed: list[dict[str, Any]] = []
    for i, tool in enumerate(value):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise _fail("must be an object {type: 'function', name, parameters}.", where)
        kind = tool.get("type")
        if kind != "function":
            # Hosted tools (web search, file search, code interpreter, MCP...) run at OpenAI.
            raise _fail(
                f"tool type {kind!r} is not supported: only function tools.", f"{where}.type"
            )
        name = _text(tool.get("name"), f"{where}.name")
        if not TOOL_NAME.match(name):
            raise _fail("must be 1-64 letters, digits, '_' or '-'.", f"{where}.name")
        function: dict[str, Any] = {"name": name}
        description = tool.get("description")
        if description is not None:
            function["description"] = _text(description, f"{where}.description")
        parameters = tool.get("parameters")
        if parameters is not None:
            if not isinstance(parameters, dict):
                raise _fail("must be a JSON Schema object.", f"{where}.parameters")
            function["parameters"] = parameters
        strict = tool.get("strict")
        if strict is not None:
            if not isinstance(strict, bool):
                raise _fail("must be a boolean.", f"{where}.strict")
            function["strict"] = strict
        canonical.append({"type": "function", "function": function})
        echoed.append(
            {
                "type": "function",
                "name": name,
                "description": function.get("description"),
                "parameters": function.get("parameters"),
                "strict": function.get("strict", True),
            }
        )
    return canonical, echoed


def _tool_choice(value: Any) -> Any:
    """The canonical tool_choice (the Response echoes the client's own)."""
    if value in ("auto", "none", "required"):
        return value
    if isinstance(value, dict) and value.get("type") == "function":
        name = _text(value.get("name"), "tool_choice.name")
        return {"type": "function", "function": {"name": name}}
    raise _fail("must be 'auto', 'none', 'required' or {type: 'function', name}.", "tool_choice")


def _text_format(value: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The Response's text.format echo, and the canonical response_format."""
    if not isinstance(value, dict):
        raise _fail("must be an object {format, verbosity}.", "text")
    for key in value:
        if key not in ("format", "verbosity"):
            raise _fail("Unknown parameter.", f"text.{key}")
    fmt = value.get("format")
    if fmt is None:
        return {"type": "text"}, None
    if not isinstance(fmt, dict):
        raise _fail("must be an object {type: text | json_object | json_schema}.", "text.format")
    kind = fmt.get("type")
    if kind == "text":
        return {"type": "text"}, None
    if kind == "json_object":
        return {"type": "json_object"}, {"type": "json_object"}
    if kind != "json_schema":
        raise _fail("must be 'text', 'json_object' or 'json_schema'.", "text.format.type")
    name = _text(fmt.get("name"), "text.format.name")
    schema = fmt.get("schema")
    if not isinstance(schema, dict):
        raise _fail("must be a JSON Schema object.", "text.format.schema")
    json_schema: dict[str, Any] = {"name": name, "schema": schema}
    echo: dict[str, Any] = {"type": "json_schema", "name": name, "schema": schema}
    for key, kind_of in (("strict", bool), ("description", str)):
        if fmt.get(key) is not None:
            if not isinstance(fmt[key], kind_of):
                raise _fail(
                    f"must be a {'boolean' if kind_of is bool else 'string'}.", f"text.format.{key}"
                )
            json_schema[key] = echo[key] = fmt[key]
    return echo, {"type": "json_schema", "json_schema": json_schema}


def _effort(value: Any) -> str | None:
    if not isinstance(value, dict):
        raise _fail("must be an object {effort, summary}.", "reasoning")
    for key in value:
        if key not in ("effort", "summary", "generate_summary"):
            raise _fail("Unknown parameter.", f"reasoning.{key}")
    effort = value.get("effort")
    if effort is None or effort == NO_EFFORT:
        return None
    if effort not in EFFORTS:
        raise _fail("must be none, minimal, low, medium, high or xhigh.", "reasoning.effort")
    return EFFORTS[effort]


def _metadata(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or len(value) > MAX_METADATA_PAIRS:
        raise _fail(f"must be an object of at most {MAX_METADATA_PAIRS} pairs.", "metadata")
    for key, item in value.items():
        if len(key) > MAX_METADATA_KEY_CHARS:
            raise _fail(f"keys must be at most {MAX_METADATA_KEY_CHARS} characters.", "metadata")
        if not isinstance(item, str) or len(item) > MAX_METADATA_VALUE_CHARS:
            raise _fail(
                f"values must be strings of at most {MAX_METADATA_VALUE_CHARS} characters.",
                f"metadata.{key}",
            )
    return dict(value)


def _refuse_state(body: dict[str, Any]) -> None:
    for key, why in STATEFUL.items():
        if body.get(key) is not None:
            raise _fail(why, key)
    if body.get("store") is not None and not isinstance(body["store"], bool):
        raise _fail("must be a boolean.", "store")
    if body.get("store"):
        raise _fail(
            "aiport does not store responses; send store: false (or leave it out) "
            "and keep the conversation on your side.",
            "store",
        )
    if body.get("background") is not None and not isinstance(body["background"], bool):
        raise _fail("must be a boolean.", "background")
    if body.get("background"):
        raise _fail("background responses need stored responses; stream instead.", "background")


def to_chat_body(body: dict[str, Any]) -> tuple[dict[str, Any], ResponseEcho]:
    """The canonical (OpenAI chat) body of a Responses request, and the Response's
    echo of it; refusals name the Responses field."""
    for key in body:
        if key in STATEFUL:
            continue
        if key not in HANDLED and key not in DROPPED:
            raise _fail("Unknown parameter.", key)
    _refuse_state(body)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _fail("is required and must be a model id string.", "model")
    messages = _input(body.get("input"))
    instructions = body.get("instructions")
    if instructions is not None:
        messages.insert(0, {"role": "system", "content": _text(instructions, "instructions")})
    chat: dict[str, Any] = {"model": model, "messages": messages}
    echo: dict[str, Any] = {"model": model, "instructions": instructions}
    stream = body.get("stream")
    if stream is not None:
        if not isinstance(stream, bool):
            raise _fail("must be a boolean.", "stream")
        chat["stream"] = stream
    limit = body.get("max_output_tokens")
    if limit is not None:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < MIN_OUTPUT_TOKENS:
            raise _fail(f"must be an integer of at least {MIN_OUTPUT_TOKENS}.", "max_output_tokens")
        chat["max_tokens"] = echo["max_output_tokens"] = limit
    for key, high in (("temperature", 2.0), ("top_p", 1.0)):
        value = _number(body, key, high)
        if value is not None:
            chat[key] = echo[key] = value
    if body.get("tools") is not None:
        tools, echo["tools"] = _tools(body["tools"])
        if tools:
            chat["tools"] = tools
    if body.get("tool_choice") is not None:
        choice = _tool_choice(body["tool_choice"])
        echo["tool_choice"] = body["tool_choice"]
        if "tools" in chat:
            chat["tool_choice"] = choice
        elif choice == "required" or isinstance(choice, dict):
            raise _fail("needs 'tools'.", "tool_choice")
    parallel = body.get("parallel_tool_calls")
    if parallel is not None:
        if not isinstance(parallel, bool):
            raise _fail("must be a boolean.", "parallel_tool_calls")
        echo["parallel_tool_calls"] = parallel
        if "tools" in chat:
            chat["parallel_tool_calls"] = parallel
    if body.get("reasoning") is not None:
        effort = _effort(body["reasoning"])
        if effort is not None:
            chat["reasoning_effort"] = echo["effort"] = effort
    if body.get("text") is not None:
        echo["text_format"], response_format = _text_format(body["text"])
        if response_format is not None:
            chat["response_format"] = response_format
    if body.get("metadata") is not None:
        echo["metadata"] = _metadata(body["metadata"])
    if body.get("user") is not None:
        chat["user"] = echo["user"] = _text(body["user"], "user")
    return chat, ResponseEcho(**echo)


# Canonical parameter names (in a refusal from parse_chat_body) in Responses' words.
_PARAM_NAMES = (
    (re.compile(r"^tools\[(\d+)\]\.function\.(\w+)$"), r"tools[\1].\2"),
    (re.compile(r"^max_tokens$"), "max_output_tokens"),
    (re.compile(r"^reasoning_effort$"), "reasoning.effort"),
    (re.compile(r"^response_format.*$"), "text.format"),
    # Canonical messages are not numbered as the client's items are.
    (re.compile(r"^messages(\[.*)?$"), "input"),
)
_WORDS = (
    ("'reasoning_effort'", "'reasoning.effort'"),
    ("'max_tokens'", "'max_output_tokens'"),
    ("'messages'", "'input'"),
    ("message content", "input content"),
)


def _in_responses_words(error: PublicError) -> PublicError:
    param = error.param
    if param is None:
        return error
    for pattern, name in _PARAM_NAMES:
        if pattern.match(param):
            param = pattern.sub(name, param)
            break
    message = error.message
    for canonical, ours in _WORDS:
        message = message.replace(canonical, ours)
    return invalid_request(message, param) if error.status == 400 else error


def parse_responses_request(raw: bytes, catalog: Catalog) -> ResponsesCall:
    body = json_object_body(raw)
    chat, echo = to_chat_body(body)
    try:
        return ResponsesCall(parse_chat_body(chat, catalog), echo)
    except PublicError as error:
        raise _in_responses_words(error) from None


__all__ = ["ResponseEcho", "ResponsesCall", "parse_responses_request", "to_chat_body"]
