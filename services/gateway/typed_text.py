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

from services.common.canonical_chat import EFFORTS, ROLE_OF, ROLES, to_chat_body
from services.common.catalog import Catalog, TextModel
from services.common.money import micros_to_idr
from services.common.usage import Usage
from services.gateway.chat_request import ChatCall, parse_chat_body
from services.gateway.errors import PublicError, invalid_request
from services.gateway.pricing import cost_micros

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


def _check(request: text_pb2.TextRequest) -> None:
    """What only the typed shape can get wrong: an enum left unset or unknown, a
    oneof left empty, text and parts both set. The gate checks everything else."""
    for i, message in enumerate(request.messages):
        where = f"messages[{i}]"
        if message.role not in ROLES:
            raise invalid_request(
                f"'{where}.role' must be one of ROLE_SYSTEM, ROLE_DEVELOPER, ROLE_USER, "
                "ROLE_ASSISTANT, ROLE_TOOL.",
                f"{where}.role",
            )
        if message.HasField("text") and message.content:
            raise invalid_request(
                f"'{where}' sets both text and content; set one.", f"{where}.content"
            )
        for j, part in enumerate(message.content):
            if part.WhichOneof("part") is None:
                part_at = f"{where}.content[{j}]"
                raise invalid_request(f"'{part_at}' must set text or image_url.", part_at)
    for i, tool in enumerate(request.tools):
        if tool.WhichOneof("tool") != "function":
            raise invalid_request(f"'tools[{i}]' must set function.", f"tools[{i}]")
        if tool.function.WhichOneof("schema") == "parameters_json":
            _check_json_object(
                tool.function.parameters_json, f"tools[{i}].function.parameters_json"
            )
    if request.reasoning_effort and request.reasoning_effort not in EFFORTS:
        raise invalid_request("'reasoning_effort' is not a known value.", "reasoning_effort")
    fmt = request.response_format
    if fmt.type == text_pb2.ResponseFormat.TYPE_JSON_SCHEMA and not fmt.HasField("json_schema"):
        raise invalid_request(
            "'response_format.json_schema' is required for TYPE_JSON_SCHEMA.",
            "response_format.json_schema",
        )
    if fmt.json_schema.WhichOneof("body") == "schema_json":
        _check_json_object(fmt.json_schema.schema_json, "response_format.json_schema.schema_json")


def _check_json_object(text: str, param: str) -> None:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise invalid_request(f"'{param}' must be a JSON object as text.", param)


def chat_body(request: text_pb2.TextRequest, *, stream: bool) -> dict[str, Any]:
    """The canonical chat body of a typed request (not yet validated)."""
    _check(request)
    body = to_chat_body(request)
    body["stream"] = stream
    if request.model:
        body["model"] = request.model
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
    return ROLE_OF.get(value, text_pb2.ROLE_UNSPECIFIED)


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
