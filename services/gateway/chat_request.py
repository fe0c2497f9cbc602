"""Validation of an OpenAI chat-completions request body (pure, no I/O).

Turns the client's raw JSON into a ChatCall: the catalog model, whether to
stream, the bounds billing needs for the hold, and the canonical request the
providers service forwards upstream. Unknown parameters are dropped, not
rejected; every known one is type- and range-checked so a bad value is a clear
400 here rather than an upstream error; then the model's own parameter policy
(chat_policy) drops or refuses what that model does not take.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from services.common.catalog import Catalog, TextModel
from services.gateway.chat_policy import apply_model_policy
from services.gateway.errors import (
    PublicError,
    invalid_request,
    json_object_body,
    model_not_found_for_chat,
)

DEFAULT_MODEL = "deepseek-v4-flash"
MAX_CONTENT_CHARS = 20_000
MAX_MESSAGES = 2_000
MAX_TOOLS = 128
MAX_CHOICES = 8
MAX_STOP_SEQUENCES = 4
# Objects and arrays inside one tool's parameters or a response schema: a limit on
# what each layer must walk (every upstream translator recurses through schemas).
# A typed caller's Struct schema also stops at protobuf's 100 nested messages,
# three per JSON object; 24 stays inside that. OpenAI's strict mode allows 10.
MAX_SCHEMA_DEPTH = 24
ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
REASONING_EFFORTS = ("low", "medium", "high")
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
RESPONSE_FORMATS = frozenset({"text", "json_object", "json_schema"})


@dataclass(frozen=True, slots=True)
class ChatCall:
    model: TextModel
    stream: bool
    # Canonical OpenAI request (no model/stream keys), forwarded by providers.
    upstream_request: dict[str, Any]
    max_output_tokens: int
    choices: int
    # Characters of prompt text and counted image parts, for the usage estimate
    # and the hold's prompt bound.
    prompt_chars: int
    prompt_bytes: int
    image_parts: int
    messages: int


def _is_int(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, float) and value.is_integer()
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _int_in(body: dict[str, Any], key: str, low: int, high: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if not _is_int(value) or not low <= value <= high:
        raise invalid_request(f"'{key}' must be an integer between {low} and {high}.", key)
    return int(value)


def _number_in(body: dict[str, Any], key: str, low: float, high: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if not _is_number(value) or not low <= value <= high:
        raise invalid_request(f"'{key}' must be a number between {low:g} and {high:g}.", key)
    return float(value) if isinstance(value, float) else value


@dataclass(slots=True)
class _PromptSize:
    chars: int = 0
    bytes: int = 0
    images: int = 0
    content_chars: int = 0

    def add_text(self, text: str, *, is_content: bool = True) -> None:
        self.chars += len(text)
        self.bytes += len(text.encode("utf-8", "surrogatepass"))
        if is_content:
            self.content_chars += len(text)


def _content(
    message: dict[str, Any], index: int, size: _PromptSize, *, allow_images: bool
) -> str | list[dict[str, Any]]:
    param = f"messages[{index}].content"
    content = message.get("content")
    if isinstance(content, str):
        size.add_text(content)
        return content
    if not isinstance(content, list) or not content:
        raise invalid_request(
            f"'{param}' must be a string or a non-empty array of content parts.", param
        )
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        where = f"{param}[{j}]"
        if not isinstance(part, dict):
            raise invalid_request(f"'{where}' must be an object.", where)
        kind = part.get("type")
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise invalid_request(f"'{where}.text' must be a string.", f"{where}.text")
            size.add_text(text)
            parts.append({"type": "text", "text": text})
        elif kind == "image_url" and allow_images:
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str) or not url:
                raise invalid_request(
                    f"'{where}.image_url.url' must be a URL.", f"{where}.image_url"
                )
            out: dict[str, Any] = {"url": url}
            if isinstance(image, dict) and image.get("detail") in ("auto", "low", "high"):
                out["detail"] = image["detail"]
            size.images += 1
            parts.append({"type": "image_url", "image_url": out})
        else:
            raise invalid_request(
                f"'{where}.type' {kind!r} is not supported here.", f"{where}.type"
            )
    return parts


def _tool_calls(message: dict[str, Any], index: int, size: _PromptSize) -> list[dict[str, Any]]:
    calls = message.get("tool_calls")
    param = f"messages[{index}].tool_calls"
    if not isinstance(calls, list) or not calls:
        raise invalid_request(f"'{param}' must be a non-empty array.", param)
    out = []
    for j, call in enumerate(calls):
        where = f"{param}[{j}]"
        fn = call.get("function") if isinstance(call, dict) else None
        if (
            not isinstance(call, dict)
            or not isinstance(call.get("id"), str)
            or not isinstance(fn, dict)
            or not isinstance(fn.get("name"), str)
            or not isinstance(fn.get("arguments"), str)
        ):
            raise invalid_request(
                f"'{where}' must be {{id, type: 'function', function: {{name, arguments}}}}.", where
            )
        size.add_text(fn["name"], is_content=False)
        size.add_text(fn["arguments"], is_content=False)
        # The id round-trips untouched: some upstreams keep opaque state in it.
        out.append(
            {
                "id": call["id"],
                "type": "function",
                "function": {"name": fn["name"], "arguments": fn["arguments"]},
            }
        )
    return out


def _message(message: Any, index: int, size: _PromptSize) -> dict[str, Any]:
    param = f"messages[{index}]"
    if not isinstance(message, dict):
        raise invalid_request(f"'{param}' must be an object.", param)
    role = message.get("role")
    if role not in ROLES:
        raise invalid_request(
            f"'{param}.role' must be one of system, user, assistant, tool.", f"{param}.role"
        )
    out: dict[str, Any] = {"role": role}
    name = message.get("name")
    if name is not None:
        if not isinstance(name, str):
            raise invalid_request(f"'{param}.name' must be a string.", f"{param}.name")
        if name:  # an empty name names nobody
            out["name"] = name
    if role == "assistant":
        has_calls = message.get("tool_calls") not in (None, [])
        if message.get("content") is None:
            if not has_calls:
                raise invalid_request(
                    f"'{param}.content' is required unless the message has tool_calls.",
                    f"{param}.content",
                )
            out["content"] = None
        else:
            out["content"] = _content(message, index, size, allow_images=False)
        if has_calls:
            out["tool_calls"] = _tool_calls(message, index, size)
        reasoning = message.get("reasoning_content")
        if reasoning is not None:
            # Sent back as the upstream gave it: DeepSeek's thinking mode refuses a tool
            # loop whose tool-calling turns come back without it.
            if not isinstance(reasoning, str):
                raise invalid_request(
                    f"'{param}.reasoning_content' must be a string.", f"{param}.reasoning_content"
                )
            size.add_text(reasoning, is_content=False)
            out["reasoning_content"] = reasoning
    else:
        if "content" not in message or message["content"] is None:
            raise invalid_request(f"'{param}.content' is required.", f"{param}.content")
        out["content"] = _content(message, index, size, allow_images=role == "user")
    if role == "tool":
        call_id = message.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            raise invalid_request(
                f"'{param}.tool_call_id' is required for tool messages.", f"{param}.tool_call_id"
            )
        out["tool_call_id"] = call_id
    return out


def _tools(body: dict[str, Any], size: _PromptSize) -> list[dict[str, Any]] | None:
    tools = body.get("tools")
    if tools is None:
        return None
    if not isinstance(tools, list) or len(tools) > MAX_TOOLS:
        raise invalid_request(f"'tools' must be an array of at most {MAX_TOOLS} tools.", "tools")
    out = []
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(fn, dict):
            raise invalid_request(
                f"'{where}' must be {{type: 'function', function: {{name, ...}}}}.", where
            )
        name = fn.get("name")
        if not isinstance(name, str) or not TOOL_NAME.match(name):
            raise invalid_request(
                f"'{where}.function.name' must be 1-64 letters, digits, '_' or '-'.",
                f"{where}.function.name",
            )
        function: dict[str, Any] = {"name": name}
        description = fn.get("description")
        if description is not None:
            if not isinstance(description, str):
                raise invalid_request(
                    f"'{where}.function.description' must be a string.",
                    f"{where}.function.description",
                )
            if description:  # an empty one describes nothing
                function["description"] = description
        parameters = fn.get("parameters")
        if parameters is not None:
            if not isinstance(parameters, dict):
                raise invalid_request(
                    f"'{where}.function.parameters' must be a JSON Schema object.",
                    f"{where}.function.parameters",
                )
            _check_depth(parameters, f"{where}.function.parameters")
            function["parameters"] = parameters
        if isinstance(fn.get("strict"), bool):
            function["strict"] = fn["strict"]
        out.append({"type": "function", "function": function})
    size.add_text(orjson.dumps(out).decode(), is_content=False)
    return out


def _tool_choice(body: dict[str, Any], tools: list[dict[str, Any]] | None) -> Any:
    choice = body.get("tool_choice")
    if choice is None:
        return None
    if choice in ("auto", "none", "required"):
        if tools is None:
            if choice == "required":
                raise invalid_request("'tool_choice' needs 'tools'.", "tool_choice")
            return None
        return choice
    fn = choice.get("function") if isinstance(choice, dict) else None
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(fn, dict):
        name = fn.get("name")
        if tools is None or name not in {t["function"]["name"] for t in tools}:
            raise invalid_request(
                f"'tool_choice' names a function not in 'tools': {name!r}.", "tool_choice"
            )
        return {"type": "function", "function": {"name": name}}
    raise invalid_request(
        "'tool_choice' must be 'auto', 'none', 'required' or {type: 'function', function: {name}}.",
        "tool_choice",
    )


def _check_depth(schema: Any, param: str) -> None:
    """Refuse a schema nested deeper than MAX_SCHEMA_DEPTH (iterative: a hostile
    depth cannot exhaust the stack here)."""
    level: list[Any] = [schema]
    for _ in range(MAX_SCHEMA_DEPTH):
        level = [
            child
            for value in level
            for child in (value.values() if isinstance(value, dict) else value)
            if isinstance(child, (dict, list))
        ]
        if not level:
            return
    raise invalid_request(f"'{param}' is nested more than {MAX_SCHEMA_DEPTH} levels deep.", param)


def _stop(body: dict[str, Any]) -> list[str] | None:
    stop = body.get("stop")
    if stop is None:
        return None
    if isinstance(stop, str):
        return [stop]
    if (
        isinstance(stop, list)
        and len(stop) <= MAX_STOP_SEQUENCES
        and all(isinstance(s, str) for s in stop)
    ):
        return stop or None  # no sequences: nothing to stop at
    raise invalid_request(
        f"'stop' must be a string or an array of at most {MAX_STOP_SEQUENCES} strings.", "stop"
    )


_JSON_SCHEMA_KEYS: tuple[tuple[str, type, str], ...] = (
    ("name", str, "a string"),
    ("description", str, "a string"),
    ("schema", dict, "a JSON Schema object"),
    ("strict", bool, "a boolean"),
)


def _response_format(body: dict[str, Any]) -> dict[str, Any] | None:
    fmt = body.get("response_format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") not in RESPONSE_FORMATS:
        raise invalid_request(
            "'response_format.type' must be 'text', 'json_object' or 'json_schema'.",
            "response_format",
        )
    if fmt["type"] != "json_schema":
        return {"type": fmt["type"]}
    spec = fmt.get("json_schema")
    if not isinstance(spec, dict):
        raise invalid_request(
            "'response_format.json_schema' must be an object.", "response_format.json_schema"
        )
    # The canonical call keeps what OpenAI's json_schema defines; other keys go.
    out: dict[str, Any] = {}
    for key, kind, shape in _JSON_SCHEMA_KEYS:
        value = spec.get(key)
        if value is None:
            continue
        if not isinstance(value, kind):
            where = f"response_format.json_schema.{key}"
            raise invalid_request(f"'{where}' must be {shape}.", where)
        if key == "schema":
            _check_depth(value, "response_format.json_schema.schema")
        if value != "":  # an empty description describes nothing
            out[key] = value
    if not out.get("name"):
        raise invalid_request(
            "'response_format.json_schema.name' is required.", "response_format.json_schema.name"
        )
    return {"type": "json_schema", "json_schema": out}


def _logit_bias(body: dict[str, Any]) -> dict[str, Any] | None:
    bias = body.get("logit_bias")
    if bias is None:
        return None
    if not isinstance(bias, dict) or not all(
        _is_number(v) and -100 <= v <= 100 for v in bias.values()
    ):
        raise invalid_request(
            "'logit_bias' must map token ids to numbers between -100 and 100.", "logit_bias"
        )
    return bias or None  # an empty map biases nothing


def parse_chat_request(raw: bytes, catalog: Catalog) -> ChatCall:
    return parse_chat_body(json_object_body(raw), catalog)


def parse_chat_body(body: dict[str, Any], catalog: Catalog) -> ChatCall:
    """The checks of `parse_chat_request` on a decoded body: also the canonical
    request's one gate for other client protocols (messages_request.py)."""
    model_id = body.get("model", DEFAULT_MODEL)
    if model_id is None:
        model_id = DEFAULT_MODEL
    if not isinstance(model_id, str):
        raise invalid_request("'model' must be a string.", "model")
    model = catalog.text_model(model_id)
    if model is None:
        raise model_not_found_for_chat(model_id)

    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid_request("'messages' is required and must be a non-empty array.", "messages")
    if len(messages) > MAX_MESSAGES:
        raise invalid_request(f"'messages' may hold at most {MAX_MESSAGES} messages.", "messages")
    size = _PromptSize()
    upstream: dict[str, Any] = {"messages": [_message(m, i, size) for i, m in enumerate(messages)]}
    if size.content_chars > MAX_CONTENT_CHARS:
        raise invalid_request(
            f"Total message content is {size.content_chars} characters; "
            f"the limit is {MAX_CONTENT_CHARS}.",
            "messages",
        )

    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise invalid_request("'stream' must be a boolean.", "stream")
    stream_options = body.get("stream_options")
    if stream_options is not None and not isinstance(stream_options, dict):
        raise invalid_request("'stream_options' must be an object.", "stream_options")

    cap = model.max_output_tokens
    requested = [
        v
        for v in (
            _int_in(body, "max_tokens", 1, 2**31 - 1),
            _int_in(body, "max_completion_tokens", 1, 2**31 - 1),
        )
        if v is not None
    ]
    # Always bounded: the hold must cover the worst case, so the upstream may
    # never produce more than the hold was computed for.
    max_output = min([cap, *requested])
    upstream["max_tokens"] = max_output

    temperature = _number_in(body, "temperature", 0, 2)
    if temperature is not None:
        upstream["temperature"] = temperature
    effort = body.get("reasoning_effort")
    if effort is not None:
        if effort not in REASONING_EFFORTS:
            raise invalid_request(
                "'reasoning_effort' must be one of low, medium, high.", "reasoning_effort"
            )
        if not model.supports_reasoning:
            raise invalid_request(
                f"The model '{model.id}' does not support 'reasoning_effort'.", "reasoning_effort"
            )
        upstream["reasoning_effort"] = effort

    tools = _tools(body, size)
    tool_choice = _tool_choice(body, tools)
    if tools is not None:
        upstream["tools"] = tools
        if tool_choice is not None:
            upstream["tool_choice"] = tool_choice
        parallel = body.get("parallel_tool_calls")
        if parallel is not None:
            if not isinstance(parallel, bool):
                raise invalid_request(
                    "'parallel_tool_calls' must be a boolean.", "parallel_tool_calls"
                )
            upstream["parallel_tool_calls"] = parallel

    # Standard OpenAI sampling parameters, forwarded verbatim once checked.
    optional: dict[str, Any] = {
        "top_p": _number_in(body, "top_p", 0, 1),
        "presence_penalty": _number_in(body, "presence_penalty", -2, 2),
        "frequency_penalty": _number_in(body, "frequency_penalty", -2, 2),
        "seed": _int_in(body, "seed", -(2**63), 2**63 - 1),
        "n": _int_in(body, "n", 1, MAX_CHOICES),
        "stop": _stop(body),
        "response_format": _response_format(body),
        "logit_bias": _logit_bias(body),
        "top_logprobs": _int_in(body, "top_logprobs", 0, 20),
    }
    logprobs = body.get("logprobs")
    if logprobs is not None and not isinstance(logprobs, bool):
        raise invalid_request("'logprobs' must be a boolean.", "logprobs")
    optional["logprobs"] = logprobs
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise invalid_request("'user' must be a string.", "user")
    optional["user"] = user
    upstream.update({k: v for k, v in optional.items() if v is not None})
    upstream = apply_model_policy(model, upstream)

    return ChatCall(
        model=model,
        stream=stream,
        upstream_request=upstream,
        max_output_tokens=max_output,
        choices=upstream.get("n") or 1,
        prompt_chars=size.chars,
        prompt_bytes=size.bytes,
        image_parts=size.images,
        messages=len(messages),
    )


__all__ = ["DEFAULT_MODEL", "ChatCall", "PublicError", "parse_chat_body", "parse_chat_request"]
