"""The canonical chat call (providers.proto's CanonicalChat) to and from the OpenAI
chat JSON shape. Pure.

Every client protocol becomes one chat call at the gateway's gate
(`gateway/chat_request.parse_chat_body` checks it as OpenAI chat JSON, where a
refusal can name the client's field); the gate's output goes to the providers
service as this typed message, and each upstream adapter translates from it.
An OpenAI-compatible upstream gets it back as JSON (`to_chat_body`), which is why
the two directions live together: for every body the gate can produce,
`to_chat_body(from_chat_body(body).request)` is that body again (tested), so no
parameter is lost on the way. JSON Schemas (a tool's parameters, a response
format's schema) travel as JSON text rather than a Struct: a Struct is a map and
would shuffle their keys, whose order models follow when they write JSON.

The gate's output is trusted here: types were checked there, so nothing is
re-validated; a value out of shape is a bug upstream of this module and fails
loudly (TypeError/ValueError), never silently.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from aiport.v1 import providers_pb2, text_pb2
from google.protobuf import struct_pb2

ROLES: dict[text_pb2.Role, str] = {
    text_pb2.ROLE_SYSTEM: "system",
    text_pb2.ROLE_DEVELOPER: "developer",
    text_pb2.ROLE_USER: "user",
    text_pb2.ROLE_ASSISTANT: "assistant",
    text_pb2.ROLE_TOOL: "tool",
}
ROLE_OF: dict[str, text_pb2.Role] = {name: role for role, name in ROLES.items()}
EFFORTS: dict[text_pb2.ReasoningEffort, str] = {
    text_pb2.REASONING_EFFORT_LOW: "low",
    text_pb2.REASONING_EFFORT_MEDIUM: "medium",
    text_pb2.REASONING_EFFORT_HIGH: "high",
}
_EFFORT_OF = {name: effort for effort, name in EFFORTS.items()}
TOOL_CHOICE_MODES: dict[text_pb2.ToolChoice.Mode, str] = {
    text_pb2.ToolChoice.MODE_AUTO: "auto",
    text_pb2.ToolChoice.MODE_NONE: "none",
    text_pb2.ToolChoice.MODE_REQUIRED: "required",
}
_MODE_OF = {name: mode for mode, name in TOOL_CHOICE_MODES.items()}
FORMATS: dict[text_pb2.ResponseFormat.Type, str] = {
    text_pb2.ResponseFormat.TYPE_TEXT: "text",
    text_pb2.ResponseFormat.TYPE_JSON_OBJECT: "json_object",
    text_pb2.ResponseFormat.TYPE_JSON_SCHEMA: "json_schema",
}
_FORMAT_OF = {name: kind for kind, name in FORMATS.items()}

# Scalar parameters whose JSON name is the proto field's (all optional fields).
_SCALARS = (
    "max_tokens",
    "temperature",
    "top_p",
    "parallel_tool_calls",
    "n",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "logprobs",
    "top_logprobs",
)


# -- JSON values in a Struct ------------------------------------------------------------------


def plain(value: struct_pb2.Value) -> Any:
    """A Struct value as plain JSON. Struct keeps every number as a double; whole ones
    become integers again, since JSON Schema keywords such as minItems must be."""
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return {k: plain(v) for k, v in value.struct_value.fields.items()}
    if kind == "list_value":
        return [plain(v) for v in value.list_value.values]
    if kind == "number_value":
        return _number(value.number_value)
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    return None


def plain_object(struct: struct_pb2.Struct) -> dict[str, Any]:
    return {k: plain(v) for k, v in struct.fields.items()}


def tool_parameters(fn: text_pb2.FunctionTool) -> dict[str, Any] | None:
    """A function's JSON Schema, whichever form carries it (None: none given). The
    JSON text was checked to be an object where it entered (the gate, typed_text)."""
    kind = fn.WhichOneof("schema")
    if kind == "parameters_json":
        return _json_object(fn.parameters_json)
    return plain_object(fn.parameters) if kind == "parameters" else None


def format_schema(spec: text_pb2.JsonSchema) -> dict[str, Any] | None:
    """A response format's JSON Schema, whichever form carries it."""
    kind = spec.WhichOneof("body")
    if kind == "schema_json":
        return _json_object(spec.schema_json)
    return plain_object(spec.schema) if kind == "schema" else None


def _json_object(text: str) -> dict[str, Any]:
    value = orjson.loads(text)
    if not isinstance(value, dict):
        raise ValueError("a JSON Schema must be an object")
    return value


def _number(number: float) -> int | float:
    return int(number) if number.is_integer() and abs(number) < 2**53 else number


# -- OpenAI chat JSON -> CanonicalChat --------------------------------------------------------


def from_chat_body(body: Mapping[str, Any]) -> providers_pb2.CanonicalChat:
    """The gate's output (OpenAI chat JSON with our `thinking` instruction) as the
    typed call."""
    request = text_pb2.TextRequest()
    for message in body["messages"]:
        _put_message(request.messages.add(), message)
    for name in _SCALARS:
        value = body.get(name)
        if value is not None:
            setattr(request, name, value)
    stop = body.get("stop")
    if stop is not None:
        request.stop.extend([stop] if isinstance(stop, str) else stop)
    effort = body.get("reasoning_effort")
    if effort is not None:
        request.reasoning_effort = _EFFORT_OF[effort]
    for tool in body.get("tools") or ():
        _put_tool(request.tools.add(), tool["function"])
    choice = body.get("tool_choice")
    if isinstance(choice, str):
        request.tool_choice.mode = _MODE_OF[choice]
    elif choice is not None:
        request.tool_choice.function_name = choice["function"]["name"]
    fmt = body.get("response_format")
    if fmt is not None:
        _put_format(request.response_format, fmt)
    bias = body.get("logit_bias")
    if bias is not None:
        request.logit_bias.update({str(token): float(v) for token, v in bias.items()})
    user = body.get("user")
    if user is not None:
        request.user = user
    chat = providers_pb2.CanonicalChat(request=request)
    thinking = body.get("thinking")
    if thinking is not None:
        chat.thinking.control = thinking["control"]
        chat.thinking.enabled = thinking["type"] == "enabled"
        chat.thinking.off = thinking.get("off") or ""
    return chat


def _put_message(out: text_pb2.Message, message: Mapping[str, Any]) -> None:
    out.role = ROLE_OF[message["role"]]
    content = message.get("content")
    if isinstance(content, str):
        out.text = content
    elif content is not None:
        for part in content:
            if part["type"] == "text":
                out.content.add(text=part["text"])
            else:
                image = part["image_url"]
                out.content.add(
                    image_url=text_pb2.ImageUrl(url=image["url"], detail=image.get("detail", ""))
                )
    if message.get("name") is not None:
        out.name = message["name"]
    for call in message.get("tool_calls") or ():
        fn = call["function"]
        out.tool_calls.add(
            id=call["id"],
            function=text_pb2.FunctionCall(name=fn["name"], arguments=fn["arguments"]),
        )
    if message.get("tool_call_id") is not None:
        out.tool_call_id = message["tool_call_id"]
    if message.get("reasoning_content") is not None:
        out.reasoning_content = message["reasoning_content"]


def _put_tool(out: text_pb2.Tool, fn: Mapping[str, Any]) -> None:
    out.function.name = fn["name"]
    if fn.get("description") is not None:
        out.function.description = fn["description"]
    if fn.get("parameters") is not None:
        # JSON text, not a Struct: a Struct would lose the order of the keys.
        out.function.parameters_json = orjson.dumps(fn["parameters"]).decode()
    if fn.get("strict") is not None:
        out.function.strict = fn["strict"]


def _put_format(out: text_pb2.ResponseFormat, fmt: Mapping[str, Any]) -> None:
    out.type = _FORMAT_OF[fmt["type"]]
    spec = fmt.get("json_schema")
    if fmt["type"] != "json_schema" or spec is None:
        return
    out.json_schema.name = spec.get("name") or ""
    if spec.get("description") is not None:
        out.json_schema.description = spec["description"]
    if spec.get("schema") is not None:
        out.json_schema.schema_json = orjson.dumps(spec["schema"]).decode()
    if spec.get("strict") is not None:
        out.json_schema.strict = spec["strict"]


# -- TextRequest -> OpenAI chat JSON ----------------------------------------------------------


def to_chat_body(request: text_pb2.TextRequest) -> dict[str, Any]:
    """The request as OpenAI chat JSON: no model, stream or thinking instruction (the
    caller adds what its upstream or gate needs). Roles, parts and tools must be set
    (the typed API checks them first: `gateway/typed_text.py`)."""
    body: dict[str, Any] = {"messages": [message_json(m) for m in request.messages]}
    for name in _SCALARS:
        if request.HasField(name):  # type: ignore[arg-type]  # names of optional fields
            body[name] = getattr(request, name)
    if request.stop:
        body["stop"] = list(request.stop)
    if request.reasoning_effort:
        body["reasoning_effort"] = EFFORTS[request.reasoning_effort]
    if request.tools:
        body["tools"] = [tool_json(t) for t in request.tools]
    choice = tool_choice_json(request)
    if choice is not None:
        body["tool_choice"] = choice
    fmt = response_format_json(request)
    if fmt is not None:
        body["response_format"] = fmt
    if request.logit_bias:
        body["logit_bias"] = {k: _number(v) for k, v in request.logit_bias.items()}
    if request.HasField("user"):
        body["user"] = request.user
    return body


def message_json(message: text_pb2.Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": ROLES[message.role]}
    if message.content:
        out["content"] = [part_json(p) for p in message.content]
    elif message.HasField("text"):
        out["content"] = message.text
    else:
        out["content"] = None
    if message.name:
        out["name"] = message.name
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.function.name, "arguments": call.function.arguments},
            }
            for call in message.tool_calls
        ]
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    if message.HasField("reasoning_content"):
        out["reasoning_content"] = message.reasoning_content
    return out


def part_json(part: text_pb2.ContentPart) -> dict[str, Any]:
    if part.WhichOneof("part") == "image_url":
        image: dict[str, Any] = {"url": part.image_url.url}
        if part.image_url.detail:
            image["detail"] = part.image_url.detail
        return {"type": "image_url", "image_url": image}
    return {"type": "text", "text": part.text}


def tool_json(tool: text_pb2.Tool) -> dict[str, Any]:
    fn = tool.function
    function: dict[str, Any] = {"name": fn.name}
    if fn.description:
        function["description"] = fn.description
    parameters = tool_parameters(fn)
    if parameters is not None:
        function["parameters"] = parameters
    if fn.HasField("strict"):
        function["strict"] = fn.strict
    return {"type": "function", "function": function}


def tool_choice_json(request: text_pb2.TextRequest) -> Any:
    """ "auto" | "none" | "required" | {type: function, function: {name}}, or None."""
    if not request.HasField("tool_choice"):
        return None
    choice = request.tool_choice
    if choice.WhichOneof("choice") == "function_name":
        return {"type": "function", "function": {"name": choice.function_name}}
    return TOOL_CHOICE_MODES.get(choice.mode)  # unspecified: as if not given


def response_format_json(request: text_pb2.TextRequest) -> dict[str, Any] | None:
    if not request.HasField("response_format"):
        return None
    fmt = request.response_format
    kind = FORMATS.get(fmt.type)
    if kind is None:
        return None
    out: dict[str, Any] = {"type": kind}
    if kind == "json_schema" and fmt.HasField("json_schema"):
        schema = fmt.json_schema
        spec: dict[str, Any] = {"name": schema.name}
        if schema.description:
            spec["description"] = schema.description
        body = format_schema(schema)
        if body is not None:
            spec["schema"] = body
        if schema.HasField("strict"):
            spec["strict"] = schema.strict
        out["json_schema"] = spec
    return out


def thinking_json(chat: providers_pb2.CanonicalChat) -> dict[str, Any] | None:
    """The gateway's thinking instruction as chat_policy writes it, or None."""
    if not chat.HasField("thinking"):
        return None
    out: dict[str, Any] = {
        "control": chat.thinking.control,
        "type": "enabled" if chat.thinking.enabled else "disabled",
    }
    if chat.thinking.off:
        out["off"] = chat.thinking.off
    return out


# -- edits ------------------------------------------------------------------------------------


def without(chat: providers_pb2.CanonicalChat, names: Iterable[str]) -> providers_pb2.CanonicalChat:
    """The call without the named request parameters (a route's drop_params; "thinking"
    drops the thinking instruction): a copy, since the same call may go on to the next
    route. Names the call has no field for are ignored."""
    fields = text_pb2.TextRequest.DESCRIPTOR.fields_by_name
    names = set(names)
    present = [name for name in names if name in fields]
    drop_thinking = "thinking" in names and chat.HasField("thinking")
    if not present and not drop_thinking:
        return chat
    out = providers_pb2.CanonicalChat()
    out.CopyFrom(chat)
    for name in present:
        out.request.ClearField(name)  # type: ignore[arg-type]  # checked against the descriptor
    if drop_thinking:
        out.ClearField("thinking")
    return out


def prompt_size(request: text_pb2.TextRequest) -> tuple[int, int]:
    """(text characters, image parts) of the prompt's content: what an estimate of its
    tokens needs when the upstream never reports usage."""
    chars = images = 0
    for message in request.messages:
        chars += len(message.text)
        for part in message.content:
            if part.WhichOneof("part") == "image_url":
                images += 1
            else:
                chars += len(part.text)
    return chars, images
