"""aiport.v1.Text's typed messages to and from the canonical chat shape. Pure.

In: a TextRequest becomes the canonical (OpenAI chat) body and passes the same
gate as every text call (`parse_chat_body`: limits, model policy), so a typed
call is held, routed and charged exactly like a chat completion. Only what the
typed shape adds is checked here (a role left unset, text and parts both set);
every other check, and its error naming the field, is the gate's. Field paths
are the same in both shapes (messages[0].content, tools[1].function.name).

Out: the canonical answer is already TextChunk and TextCompletion; the relay
hands them through (`CanonicalRenderer`), adding the usage and its cost.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiport.v1 import text_pb2

from services.common.canonical_chat import EFFORTS, ROLES, to_chat_body
from services.common.catalog import Catalog, TextModel
from services.common.money import micros_to_idr
from services.common.usage import Usage
from services.gateway.chat_request import ChatCall, parse_chat_body
from services.gateway.errors import PublicError, invalid_request

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
    """The relay's output for typed callers: the canonical answer itself, serialized
    (the relay carries bytes), with the usage and its cost on a stream's last chunk
    and on a whole completion (what the relay captured)."""

    def __init__(self, completion_id: str, model: TextModel, created: int) -> None:
        self.completion_id = completion_id
        self.model = model
        self.created = created

    @staticmethod
    def _account(
        message: text_pb2.TextCompletion | text_pb2.TextChunk, usage: Usage, cost_micros: int
    ) -> None:
        message.usage.CopyFrom(usage.to_proto())
        message.cost_micros = cost_micros
        message.cost_idr = micros_to_idr(cost_micros)

    def chunk(self, chunk: text_pb2.TextChunk) -> bytes:
        return chunk.SerializeToString()

    def stream_end(self, usage: Usage, cost_micros: int) -> bytes:
        end = text_pb2.TextChunk(id=self.completion_id, model=self.model.id, created=self.created)
        self._account(end, usage, cost_micros)
        return end.SerializeToString()

    def completion(
        self, completion: text_pb2.TextCompletion, usage: Usage, cost_micros: int
    ) -> bytes:
        self._account(completion, usage, cost_micros)
        return completion.SerializeToString()

    def failure(self, error: PublicError) -> bytes:
        # gRPC has its own in-band end: the typed boundary aborts the stream with the
        # error's status after the chunks already sent.
        raise error

    def native_chunk(self, data: bytes) -> bytes:
        raise RuntimeError("typed callers never ask for a native passthrough")

    def native_completion(self, data: bytes, cost_micros: int) -> bytes:
        raise RuntimeError("typed callers never ask for a native passthrough")


__all__ = [
    "CanonicalRenderer",
    "chat_body",
    "parse_text_request",
]
