"""An Anthropic Messages request, checked and turned into the canonical chat call. Pure.

The client protocol's inbound half: Messages JSON in, the same `ChatCall` a chat
completion makes out, so holds, routing, failover and capture are chat's. Every
field is checked here under its Messages name (a 400 names `messages[2].content[0]`
as the client wrote it); then the canonical request passes the one gate every
chat passes (`parse_chat_body`: limits, the model's parameter policy).

Mapping (Messages -> canonical OpenAI chat):
  system (string or text blocks)     -> a system message, first
  user text / image blocks           -> a user message of text / image_url parts
      image source base64            -> a data: URL;  source url -> the URL
  user tool_result blocks            -> tool messages (before the turn's other
      content, as the canonical order wants); their images join the user message
      after them; is_error -> the text prefixed "Error: "
  assistant text blocks              -> the assistant message's text
  assistant tool_use blocks          -> tool_calls (input as compact JSON arguments)
  assistant thinking blocks          -> reasoning_content (DeepSeek's thinking
      mode wants it back in tool loops); redacted_thinking -> dropped
  tools [{name, description, input_schema}] -> function tools
  tool_choice auto / any / tool / none -> auto / required / {function} / none;
      disable_parallel_tool_use      -> parallel_tool_calls false
  stop_sequences                     -> stop (at most 4: upstreams take no more)
  thinking enabled + budget_tokens   -> reasoning_effort by budget (REASONING_BY_BUDGET);
      adaptive -> medium; disabled -> nothing
  output_config.effort               -> reasoning_effort (wins over thinking's)
  output_config.format / output_format json_schema -> response_format json_schema
  metadata.user_id                   -> user
  temperature, top_p, max_tokens, stream -> the same
  top_k, service_tier, cache_control, citations, anthropic-beta flags -> accepted,
      dropped: the canonical request has no place for them yet (sampling and
      caching hints; the answer's meaning does not depend on them)
  any other top-level field, document / search_result / server-tool blocks, server
      tools, mcp_servers, container, context_management -> 400 naming the field
      (Anthropic refuses unknown fields; ignoring these would change the answer)
"""

from __future__ import annotations

import re
from typing import Any, TypeGuard

import orjson

from services.common.catalog import Catalog
from services.gateway.chat_request import MAX_STOP_SEQUENCES, ChatCall, parse_chat_body
from services.gateway.errors import PublicError, invalid_request, json_object_body

# Budget (tokens) -> effort: the smallest effort whose budget (the Anthropic
# upstream's THINKING_BUDGETS: 1024, 4096, 16384) covers the one asked for.
REASONING_BY_BUDGET = ((4096, "low"), (16384, "medium"))
MIN_THINKING_BUDGET = 1024
EFFORTS = frozenset({"low", "medium", "high"})
# output_config.effort's top value: our scale stops at high.
EFFORT_ALIASES = {"max": "high"}
MAX_MESSAGES = 2_000
MAX_BLOCKS = 1_000
MAX_ID_CHARS = 256

# Top-level fields: handled, or accepted and dropped (see the mapping above).
HANDLED = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "metadata",
        "stop_sequences",
        "stream",
        "temperature",
        "top_p",
        "tools",
        "tool_choice",
        "thinking",
        "output_config",
        "output_format",
    }
)
DROPPED = frozenset({"top_k", "service_tier", "inference_geo"})
IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
# Block fields that never change the answer's meaning.
IGNORED_BLOCK_FIELDS = frozenset({"cache_control", "citations"})


def _fail(message: str, param: str) -> PublicError:
    return invalid_request(f"{param}: {message}", param)


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise _fail("must be a string.", param)
    return value


def _call_id(value: Any, param: str) -> str:
    """A tool call's id, as the client echoes it between tool_use and tool_result."""
    call_id = _text(value, param)
    if not call_id or len(call_id) > MAX_ID_CHARS:
        raise _fail(f"must be 1-{MAX_ID_CHARS} characters.", param)
    return call_id


def _system(value: Any) -> str | list[dict[str, Any]]:
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise _fail("must be a string or an array of text blocks.", "system")
    parts = []
    for i, block in enumerate(value):
        where = f"system[{i}]"
        if not isinstance(block, dict) or block.get("type") != "text":
            raise _fail("must be a text block {type: 'text', text}.", where)
        parts.append({"type": "text", "text": _text(block.get("text"), f"{where}.text")})
    return parts


def _image_part(block: dict[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source")
    if not isinstance(source, dict):
        raise _fail("must be an object {type: 'base64' | 'url', ...}.", f"{where}.source")
    kind = source.get("type")
    if kind == "base64":
        media_type = source.get("media_type")
        if media_type not in IMAGE_MEDIA_TYPES:
            raise _fail(
                "must be one of " + ", ".join(sorted(IMAGE_MEDIA_TYPES)) + ".",
                f"{where}.source.media_type",
            )
        data = _text(source.get("data"), f"{where}.source.data")
        if not data:
            raise _fail("must not be empty.", f"{where}.source.data")
        return {"type": "image_url", "image_url": {"url": f"data:{media_type};base64,{data}"}}
    if kind == "url":
        url = _text(source.get("url"), f"{where}.source.url")
        if not url.startswith(("https://", "http://")):
            raise _fail("must be an http(s) URL.", f"{where}.source.url")
        return {"type": "image_url", "image_url": {"url": url}}
    raise _fail("must be 'base64' or 'url'.", f"{where}.source.type")


def _tool_result(block: dict[str, Any], where: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One tool message, and the images the result carried (for the user message)."""
    call_id = _call_id(block.get("tool_use_id"), f"{where}.tool_use_id")
    content = block.get("content", "")
    texts: list[str] = []
    images: list[dict[str, Any]] = []
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for j, part in enumerate(content):
            at = f"{where}.content[{j}]"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                texts.append(_text(part.get("text"), f"{at}.text"))
            elif kind == "image":
                images.append(_image_part(part, at))
            else:
                raise _fail("must be a text or image block.", at)
    else:
        raise _fail("must be a string or an array of text and image blocks.", f"{where}.content")
    text = "\n".join(texts)
    is_error = block.get("is_error")
    if is_error is not None and not isinstance(is_error, bool):
        raise _fail("must be a boolean.", f"{where}.is_error")
    if is_error:
        text = "Error: " + text
    return {"role": "tool", "tool_call_id": call_id, "content": text}, images


def _user_turn(content: list[Any], where: str) -> list[dict[str, Any]]:
    tool_messages: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        at = f"{where}[{j}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append({"type": "text", "text": _text(block.get("text"), f"{at}.text")})
        elif kind == "image":
            parts.append(_image_part(block, at))
        elif kind == "tool_result":
            message, images = _tool_result(block, at)
            tool_messages.append(message)
            parts.extend(images)
        elif kind in ("tool_use", "thinking", "redacted_thinking"):
            raise _fail(f"a user turn cannot hold a {kind} block.", f"{at}.type")
        else:
            raise _fail(f"block type {kind!r} is not supported.", f"{at}.type")
    out = list(tool_messages)
    if parts:
        out.append({"role": "user", "content": parts})
    return out


def _assistant_turn(content: list[Any], where: str) -> dict[str, Any]:
    texts: list[str] = []
    thinking: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        at = f"{where}[{j}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(_text(block.get("text"), f"{at}.text"))
        elif kind == "thinking":
            thinking.append(_text(block.get("thinking"), f"{at}.thinking"))
        elif kind == "redacted_thinking":
            continue  # opaque to every upstream but Anthropic's own
        elif kind == "tool_use":
            call_id = _call_id(block.get("id"), f"{at}.id")
            name = _text(block.get("name"), f"{at}.name")
            tool_input = block.get("input")
            if not isinstance(tool_input, dict):
                raise _fail("must be an object.", f"{at}.input")
            calls.append(
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": orjson.dumps(tool_input).decode()},
                }
            )
        elif kind in ("image", "tool_result"):
            raise _fail(f"an assistant turn cannot hold a {kind} block.", f"{at}.type")
        else:
            raise _fail(f"block type {kind!r} is not supported.", f"{at}.type")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts)}
    if calls:
        message["tool_calls"] = calls
        if not texts:
            message["content"] = None
    if thinking:
        message["reasoning_content"] = "".join(thinking)
    return message


def _messages(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise _fail("is required and must be a non-empty array.", "messages")
    if len(value) > MAX_MESSAGES:
        raise _fail(f"may hold at most {MAX_MESSAGES} messages.", "messages")
    out: list[dict[str, Any]] = []
    for i, message in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _fail("must be an object {role, content}.", where)
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise _fail("must be 'user' or 'assistant'.", f"{where}.role")
        content = message.get("content")
        if isinstance(content, str):
            out.append({"role": role, "content": content})
            continue
        if not isinstance(content, list) or len(content) > MAX_BLOCKS:
            raise _fail(
                f"must be a string or an array of at most {MAX_BLOCKS} content blocks.",
                f"{where}.content",
            )
        if role == "user":
            out.extend(_user_turn(content, f"{where}.content"))
        else:
            out.append(_assistant_turn(content, f"{where}.content"))
    return out


def _tools(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise _fail("must be an array of tools.", "tools")
    out = []
    for i, tool in enumerate(value):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise _fail("must be an object {name, description, input_schema}.", where)
        kind = tool.get("type")
        if kind not in (None, "custom"):
            # Server tools (web search, code execution, bash, ...) run at Anthropic.
            raise _fail(
                f"tool type {kind!r} is not supported: only client tools "
                "{name, description, input_schema}.",
                f"{where}.type",
            )
        schema = tool.get("input_schema")
        if not isinstance(schema, dict):
            raise _fail("must be a JSON Schema object.", f"{where}.input_schema")
        function: dict[str, Any] = {
            "name": _text(tool.get("name"), f"{where}.name"),
            "parameters": schema,
        }
        if tool.get("description") is not None:
            function["description"] = _text(tool["description"], f"{where}.description")
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(value: Any, body: dict[str, Any]) -> None:
    """Sets tool_choice (and parallel_tool_calls) on the canonical `body`."""
    if not isinstance(value, dict):
        raise _fail("must be an object {type: auto | any | tool | none}.", "tool_choice")
    kind = value.get("type")
    if kind == "auto":
        body["tool_choice"] = "auto"
    elif kind == "any":
        body["tool_choice"] = "required"
    elif kind == "none":
        body["tool_choice"] = "none"
    elif kind == "tool":
        name = _text(value.get("name"), "tool_choice.name")
        body["tool_choice"] = {"type": "function", "function": {"name": name}}
    else:
        raise _fail("must be 'auto', 'any', 'tool' or 'none'.", "tool_choice.type")
    parallel_off = value.get("disable_parallel_tool_use")
    if parallel_off is not None:
        if not isinstance(parallel_off, bool):
            raise _fail("must be a boolean.", "tool_choice.disable_parallel_tool_use")
        if kind != "none":
            body["parallel_tool_calls"] = not parallel_off


def _effort_from_thinking(value: Any, max_tokens: int) -> str | None:
    if not isinstance(value, dict):
        raise _fail("must be an object {type: enabled | disabled | adaptive}.", "thinking")
    kind = value.get("type")
    if kind == "disabled":
        return None
    if kind == "adaptive":
        return "medium"
    if kind != "enabled":
        raise _fail("must be 'enabled', 'disabled' or 'adaptive'.", "thinking.type")
    budget = value.get("budget_tokens")
    if not _is_int(budget) or budget < MIN_THINKING_BUDGET:
        raise _fail(
            f"must be an integer of at least {MIN_THINKING_BUDGET}.", "thinking.budget_tokens"
        )
    if budget >= max_tokens:
        raise _fail("must be less than max_tokens.", "thinking.budget_tokens")
    for ceiling, effort in REASONING_BY_BUDGET:
        if budget < ceiling:
            return effort
    return "high"


def _json_schema_format(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict) or value.get("type") != "json_schema":
        raise _fail("must be {type: 'json_schema', schema}.", param)
    schema = value.get("schema")
    if not isinstance(schema, dict):
        raise _fail("must be a JSON Schema object.", f"{param}.schema")
    return {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}


def _output_config(value: Any, body: dict[str, Any]) -> None:
    if not isinstance(value, dict):
        raise _fail("must be an object {effort, format}.", "output_config")
    for key in value:
        if key not in ("effort", "format"):
            raise _fail("Extra inputs are not permitted.", f"output_config.{key}")
    effort = value.get("effort")
    if effort is not None:
        effort = EFFORT_ALIASES.get(effort, effort)
        if effort not in EFFORTS:
            raise _fail("must be low, medium, high or max.", "output_config.effort")
        body["reasoning_effort"] = effort
    if value.get("format") is not None:
        body["response_format"] = _json_schema_format(value["format"], "output_config.format")


# Canonical parameter names (in a refusal from parse_chat_body) in Messages' words.
_PARAM_NAMES = (
    (re.compile(r"^tools\[(\d+)\]\.function\.parameters$"), r"tools[\1].input_schema"),
    (re.compile(r"^tools\[(\d+)\]\.function\.(\w+)$"), r"tools[\1].\2"),
    (re.compile(r"^stop$"), "stop_sequences"),
    (re.compile(r"^reasoning_effort$"), "thinking"),
    (re.compile(r"^response_format.*$"), "output_config.format"),
    # Canonical messages are not numbered as the client's are (tool results split).
    (re.compile(r"^messages\[.*$"), "messages"),
)
_WORDS = (("'stop'", "'stop_sequences'"), ("'reasoning_effort'", "'thinking'"))


def _in_messages_words(error: PublicError) -> PublicError:
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


def to_chat_body(body: dict[str, Any]) -> dict[str, Any]:
    """The canonical (OpenAI chat) body of a Messages request body; refusals name
    the Messages field."""
    for key in body:
        if key not in HANDLED and key not in DROPPED:
            raise _fail("Extra inputs are not permitted.", key)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _fail("is required and must be a model id string.", "model")
    max_tokens = body.get("max_tokens")
    if not _is_int(max_tokens) or max_tokens < 1:
        raise _fail("is required and must be a positive integer.", "max_tokens")
    chat: dict[str, Any] = {"model": model, "max_tokens": max_tokens}
    messages = _messages(body.get("messages"))
    if body.get("system") is not None:
        messages.insert(0, {"role": "system", "content": _system(body["system"])})
    chat["messages"] = messages
    stream = body.get("stream")
    if stream is not None:
        if not isinstance(stream, bool):
            raise _fail("must be a boolean.", "stream")
        chat["stream"] = stream
    for key in ("temperature", "top_p"):
        value = body.get(key)
        if value is not None:
            if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 1:
                raise _fail("must be a number between 0 and 1.", key)
            chat[key] = value
    stops = body.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise _fail("must be an array of strings.", "stop_sequences")
        if len(stops) > MAX_STOP_SEQUENCES:
            raise _fail(f"may hold at most {MAX_STOP_SEQUENCES} sequences.", "stop_sequences")
        if stops:
            chat["stop"] = stops
    if body.get("tools") is not None:
        tools = _tools(body["tools"])
        if tools:
            chat["tools"] = tools
    if body.get("tool_choice") is not None:
        _tool_choice(body["tool_choice"], chat)
        if "tools" not in chat:
            chat.pop("tool_choice", None)  # Anthropic allows a choice without tools
            chat.pop("parallel_tool_calls", None)
    if body.get("thinking") is not None:
        effort = _effort_from_thinking(body["thinking"], max_tokens)
        if effort is not None:
            chat["reasoning_effort"] = effort
    if body.get("output_format") is not None:
        chat["response_format"] = _json_schema_format(body["output_format"], "output_format")
    if body.get("output_config") is not None:
        _output_config(body["output_config"], chat)
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise _fail("must be an object.", "metadata")
        user = metadata.get("user_id")
        if user is not None:
            chat["user"] = _text(user, "metadata.user_id")
    return chat


def parse_messages_request(raw: bytes, catalog: Catalog) -> ChatCall:
    body = json_object_body(raw)
    chat = to_chat_body(body)
    try:
        return parse_chat_body(chat, catalog)
    except PublicError as error:
        raise _in_messages_words(error) from None


__all__ = ["parse_messages_request", "to_chat_body"]
