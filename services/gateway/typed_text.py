"""aiport.v1.Text's typed messages to and from the canonical chat shape. Pure.

In: a TextRequest becomes the canonical (OpenAI chat) body and passes the same
gate as every text call (`parse_chat_body`: limits, model policy), so a typed
call is held, routed and charged exactly like a chat completion. Only what the
typed shape adds is checked here (a role left unset, text and parts both set);
every other check, and its error naming the field, is the gate's. Field paths
are the same in both shapes (messages[0].content, tools[1].function.name).

Out: the relay hands the canonical chunk and completion JSON through
(`CanonicalRenderer`), and they become TextChunk and TextCompletion here.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import orjson
from aiport.v1 import text_pb2
from google.protobuf import struct_pb2

from services.common.catalog import Catalog, TextModel
from services.common.money import micros_to_idr
from services.common.usage import Usage
from services.gateway.chat_request import ChatCall, parse_chat_body
from services.gateway.errors import PublicError, invalid_request
from services.gateway.pricing import cost_micros

_ROLES = {
    text_pb2.ROLE_SYSTEM: "system",
    text_pb2.ROLE_DEVELOPER: "developer",
    text_pb2.ROLE_USER: "user",
    text_pb2.ROLE_ASSISTANT: "assistant",
    text_pb2.ROLE_TOOL: "tool",
}
_ROLE_OF: dict[str, text_pb2.Role] = {name: role for role, name in _ROLES.items()}
_EFFORTS = {
    text_pb2.REASONING_EFFORT_LOW: "low",
    text_pb2.REASONING_EFFORT_MEDIUM: "medium",
    text_pb2.REASONING_EFFORT_HIGH: "high",
}
_TOOL_CHOICE_MODES = {
    text_pb2.ToolChoice.MODE_AUTO: "auto",
    text_pb2.ToolChoice.MODE_NONE: "none",
    text_pb2.ToolChoice.MODE_REQUIRED: "required",
}
_FORMATS = {
    text_pb2.ResponseFormat.TYPE_TEXT: "text",
    text_pb2.ResponseFormat.TYPE_JSON_OBJECT: "json_object",
    text_pb2.ResponseFormat.TYPE_JSON_SCHEMA: "json_schema",
}
_FINISH: dict[str, text_pb2.FinishReason] = {
    "stop": text_pb2.FINISH_REASON_STOP,
    "length": text_pb2.FINISH_REASON_LENGTH,
    "tool_calls": text_pb2.FINISH_REASON_TOOL_CALLS,
    "function_call": text_pb2.FINISH_REASON_TOOL_CALLS,
    "content_filter": text_pb2.FINISH_REASON_CONTENT_FILTER,
}

# What CanonicalRenderer wraps a stream's end and a whole completion in (the "object"
# of a canonical chunk is "chat.completion.chunk").
STREAM_END = "aiport.stream_end"
COMPLETION = "aiport.completion"


# -- in ---------------------------------------------------------------------------------------


def _plain(value: struct_pb2.Value) -> Any:
    """A Struct value as plain JSON. Struct keeps every number as a double; whole ones
    become integers again, since JSON Schema keywords such as minItems must be."""
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return {k: _plain(v) for k, v in value.struct_value.fields.items()}
    if kind == "list_value":
        return [_plain(v) for v in value.list_value.values]
    if kind == "number_value":
        number = value.number_value
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    return None


def _object(struct: struct_pb2.Struct) -> dict[str, Any]:
    return {k: _plain(v) for k, v in struct.fields.items()}


def _part(part: text_pb2.ContentPart, where: str) -> dict[str, Any]:
    kind = part.WhichOneof("part")
    if kind == "text":
        return {"type": "text", "text": part.text}
    if kind == "image_url":
        image: dict[str, Any] = {"url": part.image_url.url}
        if part.image_url.detail:
            image["detail"] = part.image_url.detail
        return {"type": "image_url", "image_url": image}
    raise invalid_request(f"'{where}' must set text or image_url.", where)


def _message(message: text_pb2.Message, index: int) -> dict[str, Any]:
    where = f"messages[{index}]"
    role = _ROLES.get(message.role)
    if role is None:
        raise invalid_request(
            f"'{where}.role' must be one of ROLE_SYSTEM, ROLE_DEVELOPER, ROLE_USER, "
            "ROLE_ASSISTANT, ROLE_TOOL.",
            f"{where}.role",
        )
    out: dict[str, Any] = {"role": role}
    if message.text and message.content:
        raise invalid_request(f"'{where}' sets both text and content; set one.", f"{where}.content")
    if message.content:
        out["content"] = [_part(p, f"{where}.content[{j}]") for j, p in enumerate(message.content)]
    elif message.text:
        out["content"] = message.text
    else:
        # Absent: the gate requires it, except beside an assistant's tool calls.
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
    if message.reasoning_content:
        out["reasoning_content"] = message.reasoning_content
    return out


def _tool(tool: text_pb2.Tool, index: int) -> dict[str, Any]:
    if tool.WhichOneof("tool") != "function":
        raise invalid_request(f"'tools[{index}]' must set function.", f"tools[{index}]")
    fn = tool.function
    function: dict[str, Any] = {"name": fn.name}
    if fn.description:
        function["description"] = fn.description
    if fn.HasField("parameters"):
        function["parameters"] = _object(fn.parameters)
    if fn.HasField("strict"):
        function["strict"] = fn.strict
    return {"type": "function", "function": function}


def _tool_choice(choice: text_pb2.ToolChoice) -> Any:
    kind = choice.WhichOneof("choice")
    if kind == "function_name":
        return {"type": "function", "function": {"name": choice.function_name}}
    if kind == "mode":
        return _TOOL_CHOICE_MODES.get(choice.mode)  # unspecified: as if not given
    return None


def _response_format(fmt: text_pb2.ResponseFormat) -> dict[str, Any] | None:
    kind = _FORMATS.get(fmt.type)
    if kind is None:
        return None
    out: dict[str, Any] = {"type": kind}
    if kind == "json_schema":
        if not fmt.HasField("json_schema"):
            raise invalid_request(
                "'response_format.json_schema' is required for TYPE_JSON_SCHEMA.",
                "response_format.json_schema",
            )
        schema = fmt.json_schema
        spec: dict[str, Any] = {"name": schema.name, "schema": _object(schema.schema)}
        if schema.description:
            spec["description"] = schema.description
        if schema.HasField("strict"):
            spec["strict"] = schema.strict
        out["json_schema"] = spec
    return out


def chat_body(request: text_pb2.TextRequest, *, stream: bool) -> dict[str, Any]:
    """The canonical chat body of a typed request (not yet validated)."""
    body: dict[str, Any] = {
        "messages": [_message(m, i) for i, m in enumerate(request.messages)],
        "stream": stream,
    }
    if request.model:
        body["model"] = request.model
    for name in (
        "max_tokens",
        "temperature",
        "top_p",
        "parallel_tool_calls",
        "n",
        "seed",
        "presence_penalty",
        "frequency_penalty",
    ):
        if request.HasField(name):
            body[name] = getattr(request, name)
    if request.stop:
        body["stop"] = list(request.stop)
    if request.reasoning_effort:
        effort = _EFFORTS.get(request.reasoning_effort)
        if effort is None:
            raise invalid_request("'reasoning_effort' is not a known value.", "reasoning_effort")
        body["reasoning_effort"] = effort
    if request.tools:
        body["tools"] = [_tool(t, i) for i, t in enumerate(request.tools)]
    if request.HasField("tool_choice"):
        choice = _tool_choice(request.tool_choice)
        if choice is not None:
            body["tool_choice"] = choice
    if request.HasField("response_format"):
        fmt = _response_format(request.response_format)
        if fmt is not None:
            body["response_format"] = fmt
    if request.user:
        body["user"] = request.user
    return body


def parse_text_request(
    request: text_pb2.TextRequest, catalog: Catalog, *, stream: bool
) -> ChatCall:
    """A typed request as the one text call every protocol makes (or its 400/404)."""
    return parse_chat_body(chat_body(request, stream=stream), catalog)


# -- out --------------------------------------------------------------------------------------


class CanonicalRenderer:
    """The relay's output for typed callers: canonical chunks unframed, as providers
    sent them; a stream's end and a whole completion wrapped with the usage and its
    cost (what the relay captured: the settlement prices usage the same way)."""

    def __init__(self, completion_id: str, model: TextModel) -> None:
        self.completion_id = completion_id
        self.model = model

    def _accounting(self, usage: Usage) -> dict[str, Any]:
        return {"usage": asdict(usage), "cost_micros": cost_micros(self.model, usage)}

    def chunk(self, chunk: bytes) -> bytes:
        return chunk

    def stream_end(self, usage: Usage) -> bytes:
        return orjson.dumps(
            {"object": STREAM_END, "id": self.completion_id, "model": self.model.id}
            | self._accounting(usage)
        )

    def completion(self, completion: bytes, usage: Usage) -> bytes:
        return orjson.dumps(
            {"object": COMPLETION, "completion": orjson.Fragment(completion)}
            | self._accounting(usage)
        )

    def failure(self, error: PublicError) -> bytes:
        # gRPC has its own in-band end: the typed boundary aborts the stream with the
        # error's status after the chunks already sent.
        raise error

    def native(self, data: bytes) -> bytes:
        raise RuntimeError("typed callers never ask for a native passthrough")


def _usage(raw: dict[str, Any]) -> Usage:
    return Usage(**raw)


def _role(value: Any) -> text_pb2.Role:
    if not isinstance(value, str):
        return text_pb2.ROLE_UNSPECIFIED
    return _ROLE_OF.get(value, text_pb2.ROLE_UNSPECIFIED)


def _finish(value: Any) -> text_pb2.FinishReason:
    if not isinstance(value, str):
        return text_pb2.FINISH_REASON_UNSPECIFIED
    return _FINISH.get(value, text_pb2.FINISH_REASON_UNSPECIFIED)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _function_call(raw: Any) -> text_pb2.FunctionCall:
    fn = raw if isinstance(raw, dict) else {}
    return text_pb2.FunctionCall(name=_text(fn.get("name")), arguments=_text(fn.get("arguments")))


def _reply(message: dict[str, Any]) -> text_pb2.Message:
    content = message.get("content")
    out = text_pb2.Message(
        role=text_pb2.ROLE_ASSISTANT,
        reasoning_content=_text(message.get("reasoning_content")),
    )
    if isinstance(content, str):
        out.text = content
    elif isinstance(content, list):  # parts: only text ever comes back
        out.text = "".join(_text(p.get("text")) for p in content if isinstance(p, dict))
    for call in message.get("tool_calls") or ():
        if isinstance(call, dict):
            out.tool_calls.append(
                text_pb2.ToolCall(
                    id=_text(call.get("id")), function=_function_call(call.get("function"))
                )
            )
    return out


def _cost(message: text_pb2.TextCompletion | text_pb2.TextChunk, raw: dict[str, Any]) -> None:
    usage = _usage(raw["usage"])
    message.usage.CopyFrom(usage.to_proto())
    message.cost_micros = raw["cost_micros"]
    message.cost_idr = micros_to_idr(raw["cost_micros"])


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def text_completion(wrapped: bytes) -> text_pb2.TextCompletion:
    """CanonicalRenderer.completion's output as the typed answer."""
    raw = orjson.loads(wrapped)
    completion = raw["completion"]
    out = text_pb2.TextCompletion(
        id=_text(completion.get("id")),
        model=_text(completion.get("model")),
        created=_int(completion.get("created")),
    )
    for choice in completion.get("choices") or ():
        out.choices.append(
            text_pb2.Choice(
                index=_int(choice.get("index")),
                message=_reply(choice.get("message") or {}),
                finish_reason=_finish(choice.get("finish_reason")),
            )
        )
    _cost(out, raw)
    return out


def _delta(choice: dict[str, Any]) -> text_pb2.ChoiceDelta:
    delta = choice.get("delta") or {}
    out = text_pb2.ChoiceDelta(
        index=_int(choice.get("index")),
        role=_role(delta.get("role")),
        text=_text(delta.get("content")),
        reasoning_content=_text(delta.get("reasoning_content")),
        finish_reason=_finish(choice.get("finish_reason")),
    )
    for call in delta.get("tool_calls") or ():
        if isinstance(call, dict):
            piece = text_pb2.ToolCallDelta(index=_int(call.get("index")), id=_text(call.get("id")))
            if isinstance(call.get("function"), dict):
                piece.function.CopyFrom(_function_call(call["function"]))
            out.tool_calls.append(piece)
    return out


def text_chunk(data: bytes) -> text_pb2.TextChunk | None:
    """One piece of CanonicalRenderer's stream output as a typed chunk; None for a
    chunk with nothing for the caller (the usage-only chunk: the end carries usage)."""
    raw = orjson.loads(data)
    if raw.get("object") == STREAM_END:
        out = text_pb2.TextChunk(id=_text(raw.get("id")), model=_text(raw.get("model")))
        _cost(out, raw)
        return out
    choices = [c for c in raw.get("choices") or () if isinstance(c, dict)]
    if not choices:
        return None
    return text_pb2.TextChunk(
        id=_text(raw.get("id")),
        model=_text(raw.get("model")),
        created=_int(raw.get("created")),
        choices=[_delta(c) for c in choices],
    )


__all__ = [
    "CanonicalRenderer",
    "chat_body",
    "parse_text_request",
    "text_chunk",
    "text_completion",
]
