"""Anthropic Messages: validate a request, plan the answer, build the wire bodies. No I/O.

Validation is strict on purpose, stricter than Anthropic in places, so that a sloppy
adapter is caught here rather than in production: unknown fields anywhere are a 400
("Extra inputs are not permitted", as Anthropic answers), OpenAI-only fields (`n`,
`tool_calls`, role `tool`, `type: function` tools) are 400s, roles must alternate
starting with the user (the real API merges consecutive turns; older versions refused
them), tool_use / tool_result blocks must pair up turn by turn, text must not be blank,
and thinking must obey its documented rules (budget 1024..max_tokens-1, or adaptive; and
per model (model_rules): adaptive-only Opus models, no sampling on them; no temperature
other than 1, no top_k, top_p >= 0.95, no forced tool use, no prefill, and the
assistant turn a tool loop continues must start with its thinking block).

The answer is planned by the OpenAI sandbox's planner (openai_chat.plan_answer) over
the same request read as OpenAI messages, so a prompt gets the same words, tool
arguments and token counts on both protocols, and the same `[sim:...]` directives
(taken from the last user message that has text) steer it:
  input_tokens                = prompt tokens (OpenAI rule) - cached - written
  cache_read_input_tokens     = [sim:cached=N], at most the prompt tokens
  cache_creation_input_tokens = [sim:cache-write=N], at most the prompt tokens not read
                                from the cache (all of it a 5-minute cache write)
  output_tokens               = completion tokens, thinking included
  [sim:reasoning=N]           -> a thinking block first (N tokens of the output)
  [sim:fail-after=N]          -> after N text / tool-input deltas (at the latest before
                                 message_delta) an `error` event (overloaded_error) ends
                                 the stream: no message_stop
"""

from __future__ import annotations

import base64
import binascii
import hmac
import math
import re
import secrets
from collections.abc import Iterator
from typing import Any

import orjson

from sandbox import directives, media, model_rules, openai_chat, textgen
from sandbox.errors import ApiError, invalid

VERSIONS = frozenset({"2023-06-01", "2023-01-01"})
MIN_THINKING_BUDGET = 1024
MIN_THINKING_TOP_P = 0.95
MAX_USER_ID_CHARS = 256
IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}

_TOP_LEVEL = frozenset(
    {"model", "messages", "max_tokens", "system", "metadata", "stop_sequences", "stream"}
    | {"temperature", "top_p", "top_k", "tools", "tool_choice", "thinking", "service_tier"}
    | {"output_config"}
)
EFFORTS = ("low", "medium", "high", "xhigh", "max")
_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_TOOL_ID = re.compile(r"[a-zA-Z0-9_-]+")
# Per block type: (required fields, optional fields).
_BLOCK_FIELDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "text": (frozenset({"text"}), frozenset({"cache_control", "citations"})),
    "image": (frozenset({"source"}), frozenset({"cache_control"})),
    "tool_result": (
        frozenset({"tool_use_id"}),
        frozenset({"content", "is_error", "cache_control"}),
    ),
    "tool_use": (frozenset({"id", "name", "input"}), frozenset({"cache_control"})),
    "thinking": (frozenset({"thinking", "signature"}), frozenset()),
    "redacted_thinking": (frozenset({"data"}), frozenset()),
}
_USER_BLOCKS = ("text", "image", "tool_result")
_ASSISTANT_BLOCKS = ("text", "tool_use", "thinking", "redacted_thinking")
_TOOL_RESULT_BLOCKS = ("text", "image")
_ARGUMENT_FRAGMENTS = 3

# Anthropic's error type per HTTP status.
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


# --- errors, auth, headers ---------------------------------------------------------------


def error_type(status: int) -> str:
    return _ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")


def error_body(err: ApiError) -> dict[str, Any]:
    """Anthropic's error shape: {"type": "error", "error": {"type", "message"}, "request_id"}."""
    return {
        "type": "error",
        "error": {"type": error_type(err.status), "message": err.message},
        "request_id": "req_sbx" + secrets.token_hex(12),
    }


def auth_error(key: str | None, expected: str) -> ApiError | None:
    """Anthropic takes the key in `x-api-key` (an Authorization header does not count)."""
    if not key or not key.strip():
        return ApiError(401, "x-api-key header is required", type="authentication_error")
    if hmac.compare_digest(key.strip().encode(), expected.encode()):
        return None
    return ApiError(401, "invalid x-api-key", type="authentication_error")


def check_headers(version: str | None, content_type: str) -> None:
    if not version:
        raise invalid("anthropic-version: header is required")
    if version not in VERSIONS:
        raise invalid(f"anthropic-version: {version[:40]!r} is not a valid version")
    if content_type != "application/json":
        raise invalid("content-type: the request body must be application/json")


def parse_json(raw: bytes) -> object:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise invalid("The request body is not valid JSON.") from None


def log_body(body: object) -> object:
    """The request as the request log keeps it: base64 image data replaced by its size."""
    if isinstance(body, dict):
        if body.get("type") == "base64" and isinstance(body.get("data"), str):
            return {**body, "data": f"<{len(body['data'])} base64 characters>"}
        return {k: log_body(v) for k, v in body.items()}
    if isinstance(body, list):
        return [log_body(v) for v in body]
    return body


# --- validation helpers ------------------------------------------------------------------


def _required(path: str) -> ApiError:
    return invalid(f"{path}: Field required")


def _extra(path: str) -> ApiError:
    return invalid(f"{path}: Extra inputs are not permitted")


def _wrong(path: str, expected: str) -> ApiError:
    return invalid(f"{path}: Input should be {expected}")


def _fields(
    obj: dict[str, Any], path: str, required: frozenset[str], optional: frozenset[str]
) -> None:
    for key in sorted(required):
        if key not in obj:
            raise _required(f"{path}.{key}")
    for key in obj:
        if key not in required and key not in optional:
            raise _extra(f"{path}.{key}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(body: dict[str, Any], key: str, low: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if not _is_int(value):
        raise _wrong(key, "a valid integer")
    if value < low:
        raise _wrong(key, f"greater than or equal to {low}")
    return int(value)


def _number(body: dict[str, Any], key: str, low: float, high: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _wrong(key, "a valid number")
    if value < low:
        raise _wrong(key, f"greater than or equal to {low:g}")
    if value > high:
        raise _wrong(key, f"less than or equal to {high:g}")
    return float(value)


def _cache_control(block: dict[str, Any], path: str) -> None:
    control = block.get("cache_control")
    if control is None:
        return
    if not isinstance(control, dict) or control.get("type") != "ephemeral":
        raise _wrong(f"{path}.cache_control", "{'type': 'ephemeral'}")
    _fields(control, f"{path}.cache_control", frozenset({"type"}), frozenset({"ttl"}))
    if control.get("ttl") not in (None, "5m", "1h"):
        raise _wrong(f"{path}.cache_control.ttl", "'5m' or '1h'")


def _text(block: dict[str, Any], path: str) -> str:
    text = block["text"]
    if not isinstance(text, str):
        raise _wrong(f"{path}.text", "a valid string")
    if not text:
        raise invalid(f"{path}: text content blocks must be non-empty")
    if not text.strip():
        raise invalid(f"{path}: text content blocks must contain non-whitespace text")
    return text


def _image(block: dict[str, Any], path: str) -> None:
    source = block["source"]
    where = f"{path}.source"
    if not isinstance(source, dict):
        raise _wrong(where, "a valid dictionary")
    kind = source.get("type")
    if kind == "base64":
        _fields(source, where, frozenset({"type", "media_type", "data"}), frozenset())
        declared = source["media_type"]
        if declared not in IMAGE_MEDIA_TYPES:
            raise _wrong(
                f"{where}.media_type", "'image/jpeg', 'image/png', 'image/gif' or 'image/webp'"
            )
        data = source["data"]
        try:
            raw = base64.b64decode(data, validate=True) if isinstance(data, str) else b""
        except (binascii.Error, ValueError):
            raw = b""
        if not raw:
            raise invalid(f"{where}.data: The image data is not valid base64.")
        actual = "image/gif" if raw.startswith((b"GIF87a", b"GIF89a")) else media.sniff(raw)
        if actual != declared:
            raise invalid(f"{where}: Image does not match the provided media type {declared}")
    elif kind == "url":
        _fields(source, where, frozenset({"type", "url"}), frozenset())
        url = source["url"]
        if not isinstance(url, str) or not url.lower().startswith(("https://", "http://")):
            raise _wrong(f"{where}.url", "an http(s) URL")
    else:
        raise invalid(f"{where}.type: Input tag {kind!r} does not match 'base64' or 'url'")


def _block(block: Any, path: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(block, dict):
        raise _wrong(path, "a valid dictionary")
    kind = block.get("type")
    if kind is None:
        raise _required(f"{path}.type")
    if kind not in allowed:
        raise invalid(
            f"{path}.type: Input tag {kind!r} found using 'type' does not match any of the"
            f" expected tags: {', '.join(repr(a) for a in allowed)}"
        )
    required, optional = _BLOCK_FIELDS[kind]
    _fields(block, path, required | {"type"}, optional)
    _cache_control(block, path)
    if kind == "text":
        _text(block, path)
    elif kind == "image":
        _image(block, path)
    elif kind == "tool_use":
        if not isinstance(block["id"], str) or not _TOOL_ID.fullmatch(block["id"]):
            raise _wrong(f"{path}.id", "a string matching '^[a-zA-Z0-9_-]+$'")
        if not isinstance(block["name"], str) or not _TOOL_NAME.fullmatch(block["name"]):
            raise _wrong(f"{path}.name", "a string matching '^[a-zA-Z0-9_-]{1,64}$'")
        if not isinstance(block["input"], dict):
            raise _wrong(f"{path}.input", "a valid dictionary")
    elif kind == "tool_result":
        if not isinstance(block["tool_use_id"], str) or not _TOOL_ID.fullmatch(
            block["tool_use_id"]
        ):
            raise _wrong(f"{path}.tool_use_id", "a string matching '^[a-zA-Z0-9_-]+$'")
        content = block.get("content")
        if isinstance(content, list):
            for j, inner in enumerate(content):
                _block(inner, f"{path}.content.{j}", _TOOL_RESULT_BLOCKS)
        elif content is not None and not isinstance(content, str):
            raise _wrong(f"{path}.content", "a valid string or list of content blocks")
        if block.get("is_error") is not None and not isinstance(block["is_error"], bool):
            raise _wrong(f"{path}.is_error", "a valid boolean")
    elif kind == "thinking":
        for key in ("thinking", "signature"):
            if not isinstance(block[key], str):
                raise _wrong(f"{path}.{key}", "a valid string")
    elif not isinstance(block["data"], str):  # redacted_thinking
        raise _wrong(f"{path}.data", "a valid string")
    return block


def _blocks_text(blocks: list[dict[str, Any]]) -> str:
    return "\n".join(b["text"] for b in blocks if b["type"] == "text")


def _result_text(block: dict[str, Any]) -> str:
    content = block.get("content")
    if isinstance(content, str):
        return content
    return _blocks_text(content) if isinstance(content, list) else ""


# --- messages ----------------------------------------------------------------------------


def _messages(messages: Any) -> list[tuple[str, list[dict[str, Any]]]]:
    """(role, blocks) per message, every block and every pairing rule checked."""
    if messages is None:
        raise _required("messages")
    if not isinstance(messages, list):
        raise _wrong("messages", "a valid list")
    if not messages:
        raise invalid("messages: at least one message is required")
    out: list[tuple[str, list[dict[str, Any]]]] = []
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(message, dict):
            raise _wrong(where, "a valid dictionary")
        _fields(message, where, frozenset({"role", "content"}), frozenset())
        role = message["role"]
        if role not in ("user", "assistant"):
            raise _wrong(f"{where}.role", "'user' or 'assistant'")
        if i == 0 and role != "user":
            raise invalid('messages: first message must use the "user" role')
        if out and out[-1][0] == role:
            raise invalid(
                'messages: roles must alternate between "user" and "assistant", but found'
                f' multiple "{role}" roles in a row'
            )
        content = message["content"]
        final_assistant = role == "assistant" and i == len(messages) - 1
        if isinstance(content, str):
            blocks = [{"type": "text", "text": content}] if content else []
            if content and not content.strip():
                raise invalid(f"{where}: text content blocks must contain non-whitespace text")
        elif isinstance(content, list):
            allowed = _USER_BLOCKS if role == "user" else _ASSISTANT_BLOCKS
            blocks = [_block(b, f"{where}.content.{j}", allowed) for j, b in enumerate(content)]
        else:
            raise _wrong(f"{where}.content", "a valid string or list of content blocks")
        if not blocks and not final_assistant:
            raise invalid(
                f"{where}: all messages must have non-empty content except for the optional"
                " final assistant message"
            )
        out.append((role, blocks))
    _check_pairs(out)
    role, blocks = out[-1]
    if role == "assistant" and blocks and blocks[-1]["type"] == "text":
        if blocks[-1]["text"] != blocks[-1]["text"].rstrip():
            raise invalid("messages: final assistant content cannot end with trailing whitespace")
    return out


def _check_pairs(messages: list[tuple[str, list[dict[str, Any]]]]) -> None:
    """Every tool_use answered by a tool_result in the next turn, results first there."""
    for i, (role, blocks) in enumerate(messages):
        if role == "user":
            previous = messages[i - 1][1] if i else []
            called = {b["id"] for b in previous if b["type"] == "tool_use"}
            seen_other = False
            for j, block in enumerate(blocks):
                if block["type"] != "tool_result":
                    seen_other = True
                    continue
                if seen_other:
                    raise invalid(
                        f"messages.{i}.content.{j}: tool_result blocks must come first in the"
                        " user message, before any other content"
                    )
                if block["tool_use_id"] not in called:
                    raise invalid(
                        f"messages.{i}.content.{j}: unexpected `tool_use_id` found in"
                        f" `tool_result` blocks: {block['tool_use_id']}. Each `tool_result`"
                        " block must have a corresponding `tool_use` block in the previous"
                        " message."
                    )
            continue
        ids = [b["id"] for b in blocks if b["type"] == "tool_use"]
        if not ids:
            continue
        following = messages[i + 1][1] if i + 1 < len(messages) else []
        answered = {b["tool_use_id"] for b in following if b["type"] == "tool_result"}
        missing = [tool_id for tool_id in ids if tool_id not in answered]
        if missing:
            raise invalid(
                f"messages.{i}: `tool_use` ids were found without `tool_result` blocks"
                f" immediately after: {', '.join(missing)}. Each `tool_use` block must have a"
                " corresponding `tool_result` block in the next message."
            )


def _as_openai(
    system: str, messages: list[tuple[str, list[dict[str, Any]]]]
) -> list[dict[str, Any]]:
    """The conversation as OpenAI messages, for the shared planner and token rule."""
    out: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    for role, blocks in messages:
        if role == "user":
            for block in blocks:
                if block["type"] == "tool_result":
                    out.append(
                        {
                            "role": "tool",
                            "tool_call_id": block["tool_use_id"],
                            "content": _result_text(block),
                        }
                    )
            if any(b["type"] != "tool_result" for b in blocks):
                out.append({"role": "user", "content": _blocks_text(blocks)})
            continue
        message: dict[str, Any] = {"role": "assistant", "content": _blocks_text(blocks) or None}
        calls = [
            {
                "id": b["id"],
                "type": "function",
                "function": {"name": b["name"], "arguments": orjson.dumps(b["input"]).decode()},
            }
            for b in blocks
            if b["type"] == "tool_use"
        ]
        if calls:
            message["tool_calls"] = calls
        out.append(message)
    return out


# --- the rest of the request -------------------------------------------------------------


def _system(system: Any) -> str:
    if system is None:
        return ""
    if isinstance(system, str):
        return system
    if not isinstance(system, list):
        raise _wrong("system", "a valid string or list of text blocks")
    return _blocks_text([_block(b, f"system.{j}", ("text",)) for j, b in enumerate(system)])


def _metadata(metadata: Any) -> None:
    if metadata is None:
        return
    if not isinstance(metadata, dict):
        raise _wrong("metadata", "a valid dictionary")
    _fields(metadata, "metadata", frozenset(), frozenset({"user_id"}))
    user_id = metadata.get("user_id")
    if user_id is not None and not isinstance(user_id, str):
        raise _wrong("metadata.user_id", "a valid string")
    if isinstance(user_id, str) and len(user_id) > MAX_USER_ID_CHARS:
        raise invalid(
            f"metadata.user_id: String should have at most {MAX_USER_ID_CHARS} characters"
        )


def _tools(raw: Any) -> tuple[openai_chat.Tool, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise _wrong("tools", "a valid list")
    tools = []
    for i, tool in enumerate(raw):
        where = f"tools.{i}"
        if not isinstance(tool, dict):
            raise _wrong(where, "a valid dictionary")
        if tool.get("type", "custom") != "custom":
            raise invalid(f"{where}.type: Input tag {tool['type']!r} is not a tool type here")
        _fields(
            tool,
            where,
            frozenset({"name", "input_schema"}),
            frozenset({"type", "description", "cache_control"}),
        )
        _cache_control(tool, where)
        name = tool["name"]
        if not isinstance(name, str) or not _TOOL_NAME.fullmatch(name):
            raise _wrong(f"{where}.name", "a string matching '^[a-zA-Z0-9_-]{1,64}$'")
        if tool.get("description") is not None and not isinstance(tool["description"], str):
            raise _wrong(f"{where}.description", "a valid string")
        schema = tool["input_schema"]
        if not isinstance(schema, dict):
            raise _wrong(f"{where}.input_schema", "a valid dictionary")
        if schema.get("type") != "object":
            raise _wrong(f"{where}.input_schema.type", "'object'")
        tools.append(openai_chat.Tool(name, schema))
    if len({t.name for t in tools}) != len(tools):
        raise invalid("tools: Tool names must be unique.")
    return tuple(tools)


def _tool_choice(raw: Any, tools: tuple[openai_chat.Tool, ...]) -> dict[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise _wrong("tool_choice", "a valid dictionary")
    kind = raw.get("type")
    if kind not in ("auto", "any", "tool", "none"):
        raise invalid(
            f"tool_choice.type: Input tag {kind!r} found using 'type' does not match any of the"
            " expected tags: 'auto', 'any', 'tool', 'none'"
        )
    if not tools:
        raise invalid("tool_choice: tool_choice may only be specified while providing tools")
    parallel = frozenset() if kind == "none" else frozenset({"disable_parallel_tool_use"})
    required = frozenset({"type", "name"}) if kind == "tool" else frozenset({"type"})
    _fields(raw, "tool_choice", required, parallel)
    if kind == "tool" and raw["name"] not in {t.name for t in tools}:
        raise invalid(f"tool_choice.name: Tool {str(raw['name'])[:64]!r} not found in tools")
    disable = raw.get("disable_parallel_tool_use")
    if disable is not None and not isinstance(disable, bool):
        raise _wrong("tool_choice.disable_parallel_tool_use", "a valid boolean")
    return raw


def _thinking_on(raw: Any, max_tokens: int, rules: model_rules.ChatRules) -> bool:
    """Whether the request turns thinking on (budget or adaptive), as this model allows."""
    if raw is None:
        return False
    if not isinstance(raw, dict):
        raise _wrong("thinking", "a valid dictionary")
    kind = raw.get("type")
    if kind == "disabled":
        _fields(raw, "thinking", frozenset({"type"}), frozenset())
        return False
    if kind == "adaptive":
        if not rules.adaptive_thinking:
            raise invalid('"thinking.type.adaptive" is not supported for this model.')
        _fields(raw, "thinking", frozenset({"type"}), frozenset({"display"}))
        return True
    if kind != "enabled":
        raise invalid(
            f"thinking.type: Input tag {kind!r} found using 'type' does not match any of the"
            " expected tags: 'enabled', 'disabled', 'adaptive'"
        )
    if not rules.budget_thinking:
        raise invalid(
            '"thinking.type.enabled" is not supported for this model. Use'
            ' "thinking.type.adaptive" and "output_config.effort" to control thinking'
            " behavior."
        )
    _fields(raw, "thinking", frozenset({"type", "budget_tokens"}), frozenset())
    budget = _int(raw, "budget_tokens", MIN_THINKING_BUDGET)
    if budget is None:
        raise _required("thinking.budget_tokens")
    if budget >= max_tokens:
        raise invalid("`max_tokens` must be greater than `thinking.budget_tokens`")
    return True


def _output_config(raw: Any, rules: model_rules.ChatRules) -> None:
    if raw is None:
        return
    if not isinstance(raw, dict):
        raise _wrong("output_config", "a valid dictionary")
    _fields(raw, "output_config", frozenset(), frozenset({"effort", "format"}))
    effort = raw.get("effort")
    if effort is None:
        return
    if not rules.adaptive_thinking:
        raise invalid("output_config.effort: the effort parameter is not supported for this model.")
    if effort not in EFFORTS:
        raise _wrong("output_config.effort", "'low', 'medium', 'high', 'xhigh' or 'max'")


def _check_thinking(
    body: dict[str, Any],
    messages: list[tuple[str, list[dict[str, Any]]]],
    tool_choice: dict[str, Any] | None,
) -> None:
    temperature = body.get("temperature")
    if temperature is not None and temperature != 1:
        raise invalid("`temperature` may only be set to 1 when thinking is enabled")
    if body.get("top_k") is not None:
        raise invalid("`top_k` must be unset when thinking is enabled")
    top_p = body.get("top_p")
    if top_p is not None and top_p < MIN_THINKING_TOP_P:
        raise invalid(
            f"`top_p` must be greater than or equal to {MIN_THINKING_TOP_P} or unset when"
            " thinking is enabled"
        )
    if tool_choice is not None and tool_choice["type"] in ("any", "tool"):
        raise invalid("Thinking may not be enabled when tool_choice forces tool use.")
    role, blocks = messages[-1]
    if role == "assistant":
        raise invalid(
            "messages: a final assistant message (prefill) is not supported with thinking"
        )
    if any(b["type"] == "tool_result" for b in blocks):
        index = len(messages) - 2
        first = messages[index][1][0]["type"]
        if first not in ("thinking", "redacted_thinking"):
            raise invalid(
                f"messages.{index}.content.0.type: Expected `thinking` or `redacted_thinking`,"
                f" but found `{first}`. When `thinking` is enabled, a final `assistant` message"
                " must start with a thinking block (preceding the lastmost set of `tool_use`"
                " and `tool_result` blocks)."
            )


def parse_request(body: object) -> openai_chat.ChatRequest:
    """Validate like Anthropic does (and stricter); the request in the planner's terms."""
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.")
    for key in body:
        if key not in _TOP_LEVEL:
            raise _extra(key)
    model = body.get("model")
    if model is None:
        raise _required("model")
    if not isinstance(model, str) or not model:
        raise _wrong("model", "a non-empty string")
    max_tokens = _int(body, "max_tokens", 1)
    if max_tokens is None:
        raise _required("max_tokens")
    messages = _messages(body.get("messages"))
    system = _system(body.get("system"))
    _metadata(body.get("metadata"))
    stops = body.get("stop_sequences")
    if stops is not None and not (
        isinstance(stops, list) and all(isinstance(s, str) for s in stops)
    ):
        raise _wrong("stop_sequences", "a valid list of strings")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _wrong("stream", "a valid boolean")
    if body.get("service_tier") not in (None, "auto", "standard_only"):
        raise _wrong("service_tier", "'auto' or 'standard_only'")
    rules = model_rules.rules_for(model)
    if not rules.sampling:
        for key in ("temperature", "top_p", "top_k"):
            if key in body:
                raise invalid(f"`{key}` is deprecated for this model.")
    temperature = _number(body, "temperature", 0, 1)
    top_p = _number(body, "top_p", 0, 1)
    _int(body, "top_k", 0)
    if temperature is not None and top_p is not None:
        raise invalid(
            "`temperature` and `top_p` cannot both be specified for this model. Please use"
            " only one."
        )
    tools = _tools(body.get("tools"))
    tool_choice = _tool_choice(body.get("tool_choice"), tools)
    _output_config(body.get("output_config"), rules)
    if _thinking_on(body.get("thinking"), max_tokens, rules):
        _check_thinking(body, messages, tool_choice)

    choice, forced = ("auto" if tools else "none"), None
    if tool_choice is not None:
        kind = tool_choice["type"]
        choice = {"auto": "auto", "none": "none", "any": "required", "tool": "function"}[kind]
        forced = tool_choice.get("name") if kind == "tool" else None
    user_text = next(
        (
            _blocks_text(blocks)
            for role, blocks in reversed(messages)
            if role == "user" and any(b["type"] == "text" for b in blocks)
        ),
        "",
    )
    return openai_chat.ChatRequest(
        body=body,
        model=model,
        messages=_as_openai(system, messages),
        n=1,
        stream=stream,
        include_usage=False,
        max_tokens=max_tokens,
        tools=tools,
        tool_choice=choice,
        forced_tool=forced,
        parallel_tool_calls=not (tool_choice or {}).get("disable_parallel_tool_use", False),
        directives=directives.parse(user_text),
        seed_text=directives.remove(user_text),
    )


# --- wire bodies -------------------------------------------------------------------------


def tool_use_id(call: openai_chat.ToolCall) -> str:
    return "toolu_" + call.id.removeprefix("call_")


def _signature(plan: openai_chat.Plan) -> str:
    key = f"{plan.request.model}\x00{plan.request.seed_text}\x00signature"
    return base64.b64encode(bytes.fromhex(textgen.hex_digits(key, 96))).decode()


def usage_body(plan: openai_chat.Plan) -> dict[str, Any]:
    usage = plan.usage
    uncached = usage.prompt_tokens - usage.cached_tokens
    written = min(plan.request.directives.cache_write, uncached)
    return {
        "input_tokens": uncached - written,
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": usage.cached_tokens,
        "cache_creation": {"ephemeral_5m_input_tokens": written, "ephemeral_1h_input_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "service_tier": "standard",
    }


def _content(plan: openai_chat.Plan) -> list[dict[str, Any]]:
    choice = plan.choices[0]
    blocks: list[dict[str, Any]] = []
    if choice.reasoning is not None:
        blocks.append(
            {"type": "thinking", "thinking": choice.reasoning, "signature": _signature(plan)}
        )
    for call in choice.tool_calls:
        blocks.append(
            {
                "type": "tool_use",
                "id": tool_use_id(call),
                "name": call.name,
                "input": orjson.loads(call.arguments),
            }
        )
    if not choice.tool_calls and choice.pieces:
        blocks.append({"type": "text", "text": "".join(choice.pieces)})
    return blocks


def _message(plan: openai_chat.Plan, message_id: str) -> dict[str, Any]:
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": plan.request.model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage_body(plan),
    }


def message_body(plan: openai_chat.Plan, message_id: str) -> dict[str, Any]:
    """The non-streaming Message object."""
    return {
        **_message(plan, message_id),
        "content": _content(plan),
        "stop_reason": STOP_REASONS[plan.choices[0].finish_reason],
    }


def sse(event: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def _fragments(text: str, parts: int) -> list[str]:
    size = max(1, math.ceil(len(text) / parts))
    return [text[i : i + size] for i in range(0, len(text), size)]


def _deltas(block: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(kind, delta) for one content block, as Anthropic streams it."""
    if block["type"] == "thinking":
        for piece in textgen.pieces(block["thinking"]):
            yield "reasoning", {"type": "thinking_delta", "thinking": piece}
        yield "reasoning", {"type": "signature_delta", "signature": block["signature"]}
    elif block["type"] == "text":
        for piece in textgen.pieces(block["text"]):
            yield "content", {"type": "text_delta", "text": piece}
    else:
        # Anthropic often opens a tool's input with an empty fragment.
        yield "empty", {"type": "input_json_delta", "partial_json": ""}
        for piece in _fragments(orjson.dumps(block["input"]).decode(), _ARGUMENT_FRAGMENTS):
            yield "content", {"type": "input_json_delta", "partial_json": piece}


def _start(block: dict[str, Any]) -> dict[str, Any]:
    if block["type"] == "thinking":
        return {"type": "thinking", "thinking": "", "signature": ""}
    if block["type"] == "text":
        return {"type": "text", "text": ""}
    return {**block, "input": {}}


def _events(plan: openai_chat.Plan, message_id: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(kind, event name, payload) in Anthropic's order."""
    start = _message(plan, message_id)
    start["usage"] = {**start["usage"], "output_tokens": 1}
    yield "start", "message_start", {"type": "message_start", "message": start}
    for index, block in enumerate(_content(plan)):
        yield (
            "start",
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": _start(block)},
        )
        if index == 0:
            yield "start", "ping", {"type": "ping"}
        for kind, delta in _deltas(block):
            yield (
                kind,
                "content_block_delta",
                {"type": "content_block_delta", "index": index, "delta": delta},
            )
        yield "stop", "content_block_stop", {"type": "content_block_stop", "index": index}
    delta = {"stop_reason": STOP_REASONS[plan.choices[0].finish_reason], "stop_sequence": None}
    usage = {"output_tokens": plan.usage.completion_tokens}
    yield "finish", "message_delta", {"type": "message_delta", "delta": delta, "usage": usage}
    yield "finish", "message_stop", {"type": "message_stop"}


MID_STREAM_ERROR = {
    "type": "error",
    "error": {"type": "overloaded_error", "message": "sandbox: simulated failure mid-stream"},
}


def stream_frames(plan: openai_chat.Plan, message_id: str) -> list[bytes]:
    """The SSE frames to send; with fail-after=N the last one is an `error` event."""
    fail_after = plan.request.directives.fail_after
    frames: list[bytes] = []
    seen = 0
    for kind, event, payload in _events(plan, message_id):
        if fail_after is not None and (
            kind == "finish" or (kind == "content" and seen == fail_after)
        ):
            frames.append(sse("error", MID_STREAM_ERROR))
            return frames
        seen += kind == "content"
        frames.append(sse(event, payload))
    return frames
