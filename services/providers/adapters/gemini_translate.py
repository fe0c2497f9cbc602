"""Translation between our client schema (OpenAI chat) and Google's Gemini API
(generateContent / streamGenerateContent). Pure, no I/O: the typed canonical call
(providers.proto's CanonicalChat) in, Gemini's JSON out; Gemini's JSON in, OpenAI-shaped
dicts out.

The output is OpenAI-shaped (a chat.completion dict, chat.completion.chunk dicts)
for the shared public half (public_completion / ChunkTranslator); nothing here
writes public JSON.

Request (the canonical call, in OpenAI chat's names -> Gemini)
  system / developer messages  -> systemInstruction.parts (text, in order, wherever they stand)
  user / assistant             -> contents with role "user" / "model"; text parts; images as
                                  inlineData (base64 data: URLs) or fileData (http(s) URLs, with
                                  a mimeType guessed from the file name when it has one)
  assistant tool_calls         -> functionCall parts {name, args (the parsed arguments; "" is
                                  {}, anything not a JSON object is wrapped as {"arguments": ..})}
                                  with the thoughtSignature (and Gemini's own call id, if it gave
                                  one) restored from our tool_call id (see below)
  tool messages                -> functionResponse parts {name, response, id?}, role "user"; the
                                  name comes from the earlier tool_call with that id; response is
                                  the content parsed as JSON when it is an object, else
                                  {"result": <parsed JSON or the plain text>}
  consecutive turns of one role are merged into one content (parallel tool results become
  one user turn with several functionResponse parts, as Gemini requires); empty turns dropped
  max_tokens -> generationConfig.maxOutputTokens (always); temperature -> temperature;
  top_p -> topP; stop -> stopSequences; n -> candidateCount; seed -> seed (Gemini's is an
  int32: larger seeds are folded into 0..2^31-1); presence_penalty / frequency_penalty ->
  presencePenalty / frequencyPenalty (left out when 0, since several Gemini models reject any
  penalty); response_format json_object -> responseMimeType application/json, json_schema ->
  the same plus responseSchema (cleaned, below)
  tools -> tools[0].functionDeclarations {name, description, parameters (cleaned; left out
  when it describes an object without properties, which Gemini rejects)}
  tool_choice auto / none / required / {function} -> toolConfig.functionCallingConfig.mode
  AUTO / NONE / ANY / ANY + allowedFunctionNames [name]
  reasoning_effort -> generationConfig.thinkingConfig with includeThoughts (thought summaries
  come back as reasoning_content), by the model's generation (`thinking_style`):
    gemini-1.x / 2.x  thinkingBudget  low 1024, medium 8192, high 24576 tokens
    gemini-3 onwards  thinkingLevel   low "low", medium "medium", high "high"
  The gateway's thinking instruction (chat_policy) picks the style (control `level` /
  `budget`, else by the model's generation); type disabled -> thinkingBudget 0, or
  thinkingLevel = the model's lowest level (`off`). Without reasoning_effort or an
  instruction no thinkingConfig is sent (the model's default thinking). An assistant
  message's reasoning_content is not sent (Gemini's own thought signatures carry that).
  Dropped, as Gemini has no equivalent or answers them in another shape: logit_bias,
  logprobs, top_logprobs, user, parallel_tool_calls, the messages' `name`, images' `detail`.

JSON Schema -> Gemini Schema (an OpenAPI 3.0 subset), `clean_schema`:
  kept: type (upper-cased: STRING, NUMBER, INTEGER, BOOLEAN, ARRAY, OBJECT), description,
  title, nullable, enum (strings only), properties, required (only names in properties),
  items, anyOf, minItems/maxItems, minProperties/maxProperties, minLength/maxLength,
  pattern, minimum/maximum, propertyOrdering, format where Gemini knows it (STRING:
  enum, date-time; NUMBER: float, double; INTEGER: int32, int64)
  converted: type lists (["string", "null"] -> STRING + nullable; several non-null types ->
  anyOf); oneOf -> anyOf; null members of anyOf -> nullable; a one-member anyOf is
  inlined; allOf is merged into one schema; const -> a one-value enum (strings) ; enum/const
  values that are not strings -> "Allowed values: ..." appended to the description;
  local $ref (#/$defs/..., #/definitions/...) inlined (a recursive one becomes a bare
  OBJECT), tuple `items` lists -> their first item
  stripped: $schema, $id, $defs, definitions, $comment, additionalProperties, strict,
  default, examples, exclusiveMinimum/exclusiveMaximum, multipleOf, uniqueItems,
  patternProperties, propertyNames, dependencies, if/then/else, not, content*, readOnly,
  writeOnly, deprecated, and any other keyword

Thought signatures (Gemini 3 rejects a tool-call round trip without them)
  Gemini puts `thoughtSignature` on the first functionCall part of each step; it has to come
  back on the same part next turn. Our OpenAI tool_call id carries it, so a client that
  echoes the id unchanged (assistant tool_calls[].id, tool message tool_call_id) gives it back:
      call_<16 random letters/digits>                   no signature, no Gemini call id
      call_<16 random letters/digits>_<envelope>        otherwise
  envelope = url-safe base64 (no padding) of: 0x9E, flags, [len + Gemini's functionCall.id
  (optional in the API, echoed as functionCall.id / functionResponse.id when it was given)],
  [the signature: its decoded bytes when it is canonical base64, else its UTF-8 text]. Only
  [A-Za-z0-9_-] is used. An id we did not make decodes to "no signature". When no call of an
  assistant message has a signature (history from another model), the first one gets Google's
  documented placeholder THOUGHT_SIGNATURE_PLACEHOLDER. Signatures on text parts (answers
  without calls) are dropped: OpenAI messages have no place for them, and Gemini does not
  require them back.

Response (Gemini -> OpenAI)
  candidates[i].content.parts: text -> content, thought text -> reasoning_content,
  functionCall -> tool_calls (arguments = compact JSON of args); other parts are ignored
  finishReason: STOP -> stop (tool_calls when calls were produced), MAX_TOKENS -> length,
  SAFETY / RECITATION / BLOCKLIST / PROHIBITED_CONTENT / SPII / IMAGE_SAFETY /
  IMAGE_PROHIBITED_CONTENT / IMAGE_RECITATION -> content_filter, anything else -> stop (or
  tool_calls); promptFeedback.blockReason (no candidates) -> `n` choices with empty content
  and content_filter
  usageMetadata: promptTokenCount (+ toolUsePromptTokenCount) -> prompt_tokens,
  cachedContentTokenCount -> cached_tokens, candidatesTokenCount + thoughtsTokenCount ->
  completion_tokens, thoughtsTokenCount -> reasoning_tokens
"""

from __future__ import annotations

import base64
import binascii
import math
import mimetypes
import re
import secrets
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import orjson
from aiport.v1 import providers_pb2, text_pb2

from services.common.canonical_chat import (
    EFFORTS,
    ROLES,
    format_schema,
    tool_parameters,
    without,
)
from services.providers.errors import UpstreamError, UpstreamProtocolError

THOUGHT_SIGNATURE_PLACEHOLDER = "skip_thought_signature_validator"
TOOL_CALL_PREFIX = "call_"
TOOL_CALL_RANDOM_CHARS = 16
_ID_ALPHABET = string.ascii_letters + string.digits
_ENVELOPE_MAGIC = 0x9E
_HAS_ID = 0x01
_HAS_SIGNATURE = 0x02
_SIGNATURE_AS_TEXT = 0x04

ThinkingStyle = Literal["level", "budget"]
# The thinking instruction's controls that name a style (others: by the model's generation).
_CONTROL_STYLES: dict[str, ThinkingStyle] = {"level": "level", "budget": "budget"}
THINKING_BUDGETS = {"low": 1024, "medium": 8192, "high": 24576}
THINKING_LEVELS = {"low": "low", "medium": "medium", "high": "high"}
_BUDGET_MODELS = re.compile(r"^(models/)?gemini-(1|2)([.-]|$)", re.IGNORECASE)

FILTER_REASONS = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
    }
)
INT32_MAX = 2**31 - 1

_DATA_URL = re.compile(r"data:([a-z0-9.+-]+/[a-z0-9.+-]+)((?:;[a-z0-9=.+-]+)*);base64,", re.I)


class GeminiRequestError(ValueError):
    """Our request cannot be put to Gemini (something in the client's request)."""


# --- tool call ids carrying thought signatures -------------------------------------------


@dataclass(frozen=True, slots=True)
class CallRef:
    """What a tool_call id of ours remembers about the Gemini functionCall it stands for."""

    signature: str | None = None
    gemini_id: str | None = None


def _random_part() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(TOOL_CALL_RANDOM_CHARS))


def _canonical_base64(text: str) -> bytes | None:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if base64.b64encode(raw).decode() == text else None


def encode_tool_call_id(
    signature: str | None, gemini_id: str | None = None, random_part: str | None = None
) -> str:
    """Our tool_call id for a Gemini functionCall (see the module docstring)."""
    head = TOOL_CALL_PREFIX + (random_part if random_part is not None else _random_part())
    if len(head) != len(TOOL_CALL_PREFIX) + TOOL_CALL_RANDOM_CHARS:
        raise ValueError("random_part has the wrong length")
    flags = 0
    body = b""
    if gemini_id:
        encoded = gemini_id.encode()
        if len(encoded) <= 255:
            flags |= _HAS_ID
            body += bytes([len(encoded)]) + encoded
    if signature:
        flags |= _HAS_SIGNATURE
        raw = _canonical_base64(signature)
        if raw is None:
            flags |= _SIGNATURE_AS_TEXT
            raw = signature.encode()
        body += raw
    if not flags:
        return head
    envelope = bytes([_ENVELOPE_MAGIC, flags]) + body
    return f"{head}_{base64.urlsafe_b64encode(envelope).decode().rstrip('=')}"


def decode_tool_call_id(tool_call_id: str) -> CallRef:
    """The signature and Gemini call id inside one of our ids; empty for any other id."""
    start = len(TOOL_CALL_PREFIX) + TOOL_CALL_RANDOM_CHARS
    if (
        not tool_call_id.startswith(TOOL_CALL_PREFIX)
        or len(tool_call_id) <= start + 1
        or tool_call_id[start] != "_"
    ):
        return CallRef()
    payload = tool_call_id[start + 1 :]
    try:
        envelope = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    except (binascii.Error, ValueError):
        return CallRef()
    if len(envelope) < 2 or envelope[0] != _ENVELOPE_MAGIC:
        return CallRef()
    flags, rest = envelope[1], envelope[2:]
    if flags & ~(_HAS_ID | _HAS_SIGNATURE | _SIGNATURE_AS_TEXT) or not flags & (
        _HAS_ID | _HAS_SIGNATURE
    ):
        return CallRef()
    gemini_id = None
    try:
        if flags & _HAS_ID:
            if not rest or len(rest) < 1 + rest[0]:
                return CallRef()
            gemini_id = rest[1 : 1 + rest[0]].decode()
            rest = rest[1 + rest[0] :]
        signature = None
        if flags & _HAS_SIGNATURE:
            if not rest:
                return CallRef()
            if flags & _SIGNATURE_AS_TEXT:
                signature = rest.decode()
            else:
                signature = base64.b64encode(rest).decode()
        elif rest:
            return CallRef()
    except UnicodeDecodeError:
        return CallRef()
    return CallRef(signature=signature, gemini_id=gemini_id or None)


# --- thinking ------------------------------------------------------------------------------


def thinking_style(upstream_model: str) -> ThinkingStyle:
    """thinkingBudget for Gemini 1.x/2.x models, thinkingLevel for Gemini 3 onwards."""
    return "budget" if _BUDGET_MODELS.match(upstream_model) else "level"


def thinking_config(effort: str, style: ThinkingStyle) -> dict[str, Any]:
    if effort not in THINKING_BUDGETS:
        raise GeminiRequestError(f"unsupported reasoning_effort {effort!r}")
    if style == "budget":
        return {"thinkingBudget": THINKING_BUDGETS[effort], "includeThoughts": True}
    return {"thinkingLevel": THINKING_LEVELS[effort], "includeThoughts": True}


def off_thinking_config(style: ThinkingStyle, off: str) -> dict[str, Any] | None:
    """Thinking switched off: thinkingBudget 0 (Gemini 2.5 Flash / Flash-Lite), or the
    model's lowest thinkingLevel (Gemini 3 cannot switch thinking off entirely; without
    one, "" here, nothing is sent)."""
    if style == "budget":
        return {"thinkingBudget": 0}
    return {"thinkingLevel": off} if off else None


# --- JSON Schema -> Gemini Schema ------------------------------------------------------------

_TYPES = {
    "string": "STRING",
    "number": "NUMBER",
    "integer": "INTEGER",
    "boolean": "BOOLEAN",
    "array": "ARRAY",
    "object": "OBJECT",
}
_FORMATS = {
    "STRING": frozenset({"enum", "date-time"}),
    "NUMBER": frozenset({"float", "double"}),
    "INTEGER": frozenset({"int32", "int64"}),
}
_COUNTS = ("minItems", "maxItems", "minProperties", "maxProperties", "minLength", "maxLength")
MAX_SCHEMA_DEPTH = 32


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def clean_schema(schema: Any) -> dict[str, Any]:
    """A JSON Schema as the Gemini Schema subset (see the module docstring)."""
    if not isinstance(schema, dict):
        return {}
    defs: dict[str, Any] = {}
    for key in ("definitions", "$defs"):
        if isinstance(schema.get(key), dict):
            defs.update({f"#/{key}/{name}": sub for name, sub in schema[key].items()})
    return _clean(schema, defs, 0, frozenset())


def _clean(schema: Any, defs: dict[str, Any], depth: int, seen: frozenset[str]) -> dict[str, Any]:
    if not isinstance(schema, dict) or depth > MAX_SCHEMA_DEPTH:
        return {}
    ref = schema.get("$ref")
    if isinstance(ref, str):
        target = defs.get(ref)
        if target is None:
            return {}
        if ref in seen:
            return {"type": "OBJECT"}
        resolved = _clean(target, defs, depth + 1, seen | {ref})
        if isinstance(schema.get("description"), str):
            resolved["description"] = schema["description"]
        return resolved
    all_of = schema.get("allOf")
    if isinstance(all_of, list) and all_of:
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for member in all_of:
            if not isinstance(member, dict):
                continue
            for key, value in member.items():
                if key == "properties" and isinstance(value, dict):
                    merged["properties"] = {**(merged.get("properties") or {}), **value}
                elif key == "required" and isinstance(value, list):
                    merged["required"] = [*(merged.get("required") or []), *value]
                else:
                    merged.setdefault(key, value)
        schema = merged

    out: dict[str, Any] = {}
    notes: list[str] = []
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if isinstance(kind, str) else []
    if "null" in kinds:
        out["nullable"] = True
    named = [_TYPES[k] for k in kinds if k in _TYPES]
    if len(named) == 1:
        out["type"] = named[0]
    elif len(named) > 1:
        out["anyOf"] = [{"type": k} for k in named]

    for key in ("description", "title", "pattern"):
        if isinstance(schema.get(key), str):
            out[key] = schema[key]
    if schema.get("nullable") is True:
        out["nullable"] = True

    values: list[Any] | None = None
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        values = list(schema["enum"])
    elif "const" in schema:
        values = [schema["const"]]
    if values is not None:
        present = [v for v in values if v is not None]
        if len(present) < len(values):
            out["nullable"] = True
        if present and all(isinstance(v, str) for v in present):
            out["enum"] = present
            out.setdefault("type", "STRING")
        elif present:
            notes.append("Allowed values: " + ", ".join(orjson.dumps(v).decode() for v in present))

    fmt = schema.get("format")
    if isinstance(fmt, str) and fmt in _FORMATS.get(out.get("type", ""), frozenset()):
        out["format"] = fmt
    for key in _COUNTS:
        value = schema.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            out[key] = value
    for key in ("minimum", "maximum"):
        if _is_number(schema.get(key)):
            out[key] = schema[key]

    props = schema.get("properties")
    if isinstance(props, dict):
        out["properties"] = {
            str(name): _clean(sub, defs, depth + 1, seen) for name, sub in props.items()
        }
        out.setdefault("type", "OBJECT")
        required = schema.get("required")
        if isinstance(required, list):
            names = [r for r in required if isinstance(r, str) and r in out["properties"]]
            if names:
                out["required"] = list(dict.fromkeys(names))
        ordering = schema.get("propertyOrdering")
        if isinstance(ordering, list) and all(isinstance(p, str) for p in ordering):
            out["propertyOrdering"] = [p for p in ordering if p in out["properties"]]
    items = schema.get("items")
    if isinstance(items, list):
        items = items[0] if items else None
    if isinstance(items, dict):
        out["items"] = _clean(items, defs, depth + 1, seen)
        out.setdefault("type", "ARRAY")

    alternatives = schema.get("anyOf")
    if not isinstance(alternatives, list):
        alternatives = schema.get("oneOf")
    if isinstance(alternatives, list) and alternatives:
        options = []
        for option in alternatives:
            if isinstance(option, dict) and option.get("type") == "null" and len(option) == 1:
                out["nullable"] = True
                continue
            options.append(_clean(option, defs, depth + 1, seen))
        if len(options) == 1 and "type" not in out:
            for key, value in options[0].items():
                out.setdefault(key, value)
        elif options:
            out["anyOf"] = options

    if notes:
        text = " ".join(notes)
        out["description"] = f"{out['description']} {text}" if out.get("description") else text
    return out


def _parameters(schema: Any) -> dict[str, Any] | None:
    cleaned = clean_schema(schema)
    if not cleaned or (cleaned.get("type") == "OBJECT" and not cleaned.get("properties")):
        return None
    return cleaned


# --- request ------------------------------------------------------------------------------


def model_path(upstream_model: str, stream: bool) -> str:
    """The method's path under the versioned base URL (.../v1beta)."""
    name = upstream_model.removeprefix("models/")
    method = "streamGenerateContent" if stream else "generateContent"
    return f"/models/{quote(name, safe='-._~')}:{method}"


def _text_of(message: text_pb2.Message) -> str:
    """All of a message's text (a tool result's, which Gemini takes as one value)."""
    if message.content:
        return "".join(p.text for p in message.content if p.WhichOneof("part") == "text")
    return message.text


def _text_parts(message: text_pb2.Message) -> list[dict[str, Any]]:
    """A message's non-empty text as parts (images have no place in system or
    assistant turns, so they are left out)."""
    if not message.content:
        return [{"text": message.text}] if message.text else []
    return [
        {"text": part.text}
        for part in message.content
        if part.WhichOneof("part") == "text" and part.text
    ]


def _image_part(url: str) -> dict[str, Any]:
    if not url:
        raise GeminiRequestError("an image part has no URL")
    if url[:5].lower() == "data:":
        match = _DATA_URL.match(url)
        if match is None:
            raise GeminiRequestError("image data: URLs must be base64-encoded")
        return {"inlineData": {"mimeType": match.group(1).lower(), "data": url[match.end() :]}}
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise GeminiRequestError("image URLs must be http(s) or base64 data: URLs")
    file_data: dict[str, Any] = {"fileUri": url}
    guessed, _ = mimetypes.guess_type(urlsplit(url).path)
    if guessed is not None and guessed.startswith("image/"):
        file_data["mimeType"] = guessed
    return {"fileData": file_data}


def _user_parts(message: text_pb2.Message) -> list[dict[str, Any]]:
    if not message.content:
        return [{"text": message.text}] if message.text else []
    parts = []
    for part in message.content:
        if part.WhichOneof("part") == "image_url":
            parts.append(_image_part(part.image_url.url))
        elif part.text:
            parts.append({"text": part.text})
    return parts


def _arguments(raw: str) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {"arguments": raw}
    return value if isinstance(value, dict) else {"arguments": value}


def _function_response(text: str) -> dict[str, Any]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {"result": text}
    return value if isinstance(value, dict) else {"result": value}


def _call_parts(
    message: text_pb2.Message, calls: dict[str, tuple[str, CallRef]]
) -> list[dict[str, Any]]:
    """An assistant message's tool calls as functionCall parts; remembers each call
    (by our id) for the tool messages that answer it."""
    parts = []
    for call in message.tool_calls:
        ref = decode_tool_call_id(call.id)
        calls[call.id] = (call.function.name, ref)
        function_call: dict[str, Any] = {
            "name": call.function.name,
            "args": _arguments(call.function.arguments),
        }
        if ref.gemini_id:
            function_call["id"] = ref.gemini_id
        part: dict[str, Any] = {"functionCall": function_call}
        if ref.signature:
            part["thoughtSignature"] = ref.signature
        parts.append(part)
    if parts and not any("thoughtSignature" in p for p in parts):
        # History from another model: Google's documented way past the validator.
        parts[0]["thoughtSignature"] = THOUGHT_SIGNATURE_PLACEHOLDER
    return parts


def _contents(
    messages: Iterable[text_pb2.Message],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(systemInstruction parts, contents)."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    calls: dict[str, tuple[str, CallRef]] = {}
    for index, message in enumerate(messages):
        role = ROLES.get(message.role)
        if role in ("system", "developer"):
            system += _text_parts(message)
            continue
        if role == "user":
            parts = _user_parts(message)
        elif role == "assistant":
            parts = _text_parts(message) + _call_parts(message, calls)
        elif role == "tool":
            call_id = message.tool_call_id
            known = calls.get(call_id)
            if known is not None:
                name, ref = known
            elif message.name:  # a legacy `name` on the tool message is enough
                name, ref = message.name, decode_tool_call_id(call_id)
            else:
                raise GeminiRequestError(
                    f"messages[{index}] answers tool_call_id {call_id!r}, "
                    "which no earlier assistant tool call has"
                )
            response: dict[str, Any] = {
                "name": name,
                "response": _function_response(_text_of(message)),
            }
            if ref.gemini_id:
                response["id"] = ref.gemini_id
            parts = [{"functionResponse": response}]
        else:
            raise GeminiRequestError(f"messages[{index}] has an unsupported role {message.role!r}")
        if not parts:
            continue
        gemini_role = "model" if role == "assistant" else "user"
        if turns and turns[-1]["role"] == gemini_role:
            turns[-1]["parts"].extend(parts)
        else:
            turns.append({"role": gemini_role, "parts": parts})
    return system, turns


def _seed(value: int) -> int:
    return value if -(2**31) <= value <= INT32_MAX else value & INT32_MAX


# Optional TextRequest fields sent as they are, under Gemini's name.
_SAMPLING = (("temperature", "temperature"), ("top_p", "topP"))
# Left out when 0: several Gemini models reject any penalty, even a zero one.
_PENALTIES = (("presence_penalty", "presencePenalty"), ("frequency_penalty", "frequencyPenalty"))
_JSON_FORMATS = frozenset(
    {text_pb2.ResponseFormat.TYPE_JSON_OBJECT, text_pb2.ResponseFormat.TYPE_JSON_SCHEMA}
)


def _generation_config(
    request: text_pb2.TextRequest,
    instruction: providers_pb2.ThinkingInstruction | None,
    style: ThinkingStyle,
) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if not request.HasField("max_tokens") or request.max_tokens < 1:
        raise GeminiRequestError("max_tokens must be a positive integer")
    config["maxOutputTokens"] = request.max_tokens
    for ours, theirs in _SAMPLING:
        if request.HasField(ours):  # type: ignore[arg-type]  # names of optional fields
            config[theirs] = getattr(request, ours)
    if request.stop:
        config["stopSequences"] = list(request.stop)
    if request.HasField("n"):
        config["candidateCount"] = request.n
    if request.HasField("seed"):
        config["seed"] = _seed(request.seed)
    for ours, theirs in _PENALTIES:
        if getattr(request, ours):
            config[theirs] = getattr(request, ours)
    fmt = request.response_format
    if request.HasField("response_format") and fmt.type in _JSON_FORMATS:
        config["responseMimeType"] = "application/json"
        if fmt.type == text_pb2.ResponseFormat.TYPE_JSON_SCHEMA and fmt.HasField("json_schema"):
            spec = fmt.json_schema
            # Struct keeps numbers as doubles; the schema's counts (minItems, ...) must be ints.
            schema = clean_schema(format_schema(spec))
            if schema:
                config["responseSchema"] = schema
    if instruction is not None and not instruction.enabled:
        off = off_thinking_config(style, instruction.off)
        if off is not None:
            config["thinkingConfig"] = off
    elif request.reasoning_effort:  # 0: unspecified
        effort = EFFORTS.get(request.reasoning_effort)
        if effort is None:
            raise GeminiRequestError(f"unsupported reasoning_effort {request.reasoning_effort!r}")
        config["thinkingConfig"] = thinking_config(effort, style)
    return config


_CALLING_MODES: dict[text_pb2.ToolChoice.Mode, str] = {
    text_pb2.ToolChoice.MODE_AUTO: "AUTO",
    text_pb2.ToolChoice.MODE_NONE: "NONE",
    text_pb2.ToolChoice.MODE_REQUIRED: "ANY",
}


def _tool_config(request: text_pb2.TextRequest) -> dict[str, Any] | None:
    """toolConfig for the tool_choice; None without one (or with an unspecified mode)."""
    if not request.HasField("tool_choice"):
        return None
    choice = request.tool_choice
    calling: dict[str, Any]
    if choice.WhichOneof("choice") == "function_name":
        calling = {"mode": "ANY", "allowedFunctionNames": [choice.function_name]}
    elif choice.mode in _CALLING_MODES:
        calling = {"mode": _CALLING_MODES[choice.mode]}
    else:
        return None
    return {"functionCallingConfig": calling}


def _tools(request: text_pb2.TextRequest) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    declarations = []
    for i, tool in enumerate(request.tools):
        if tool.WhichOneof("tool") != "function":
            raise GeminiRequestError(f"tools[{i}] is not a function tool")
        fn = tool.function
        declaration: dict[str, Any] = {"name": fn.name}
        if fn.description:
            declaration["description"] = fn.description
        # Plain JSON, so the schema's counts (minItems, ...) are ints again.
        parameters = _parameters(tool_parameters(fn))
        if parameters is not None:
            declaration["parameters"] = parameters
        declarations.append(declaration)
    if not declarations:
        return [], None
    return [{"functionDeclarations": declarations}], _tool_config(request)


def generate_content_request(
    chat: providers_pb2.CanonicalChat,
    upstream_model: str,
    *,
    drop_params: frozenset[str] = frozenset(),
    style: ThinkingStyle | None = None,
) -> dict[str, Any]:
    """The generateContent body for the canonical call (no model or stream keys: the
    model goes in the URL, streaming is the method). `drop_params` are request
    parameters this provider rejects (and `thinking`, the instruction)."""
    call = without(chat, drop_params)
    request = call.request
    instruction = call.thinking if call.HasField("thinking") else None
    if not request.messages:
        raise GeminiRequestError("messages must be a non-empty array")
    system, contents = _contents(request.messages)
    if not contents:
        raise GeminiRequestError("the request has no user or assistant content")
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": system}
    tools, tool_config = _tools(request)
    if tools:
        body["tools"] = tools
        if tool_config is not None:
            body["toolConfig"] = tool_config
    if style is None and instruction is not None:
        style = _CONTROL_STYLES.get(instruction.control)
    body["generationConfig"] = _generation_config(
        request, instruction, style or thinking_style(upstream_model)
    )
    return body


def requested_choices(request: text_pb2.TextRequest) -> int:
    """Candidates to expect: n (absent, or 0, is one)."""
    return request.n or 1


# --- response -----------------------------------------------------------------------------


def _count(value: Any) -> int:
    if isinstance(value, str) and value.isdigit():  # int64 fields may come as strings
        value = int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def openai_usage(metadata: Any) -> dict[str, Any]:
    """usageMetadata as OpenAI's usage object (with both details)."""
    if not isinstance(metadata, dict):
        raise UpstreamProtocolError("usageMetadata is not an object")
    prompt = _count(metadata.get("promptTokenCount")) + _count(
        metadata.get("toolUsePromptTokenCount")
    )
    thoughts = _count(metadata.get("thoughtsTokenCount"))
    completion = _count(metadata.get("candidatesTokenCount")) + thoughts
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {
            "cached_tokens": min(_count(metadata.get("cachedContentTokenCount")), prompt)
        },
        "completion_tokens_details": {"reasoning_tokens": thoughts},
    }


def finish_reason(reason: Any, has_tool_calls: bool) -> str:
    if reason == "MAX_TOKENS":
        return "length"
    if reason in FILTER_REASONS:
        return "content_filter"
    return "tool_calls" if has_tool_calls else "stop"


def _parts(candidate: dict[str, Any]) -> list[dict[str, Any]]:
    content = candidate.get("content")
    if content is None:
        return []
    if not isinstance(content, dict):
        raise UpstreamProtocolError("candidate content is not an object")
    parts = content.get("parts") or []
    if not isinstance(parts, list) or not all(isinstance(p, dict) for p in parts):
        raise UpstreamProtocolError("content parts are not a list of objects")
    return parts


def _tool_call(part: dict[str, Any], new_id: Callable[[], str]) -> dict[str, Any]:
    call = part["functionCall"]
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        raise UpstreamProtocolError("functionCall has no name")
    args = call.get("args")
    if args is None:
        args = {}
    signature = part.get("thoughtSignature")
    gemini_id = call.get("id")
    call_id = encode_tool_call_id(
        signature if isinstance(signature, str) else None,
        gemini_id if isinstance(gemini_id, str) else None,
        new_id(),
    )
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": call["name"], "arguments": orjson.dumps(args).decode()},
    }


def _index(candidate: dict[str, Any]) -> int:
    return _count(candidate.get("index"))


def _candidates(response: Any) -> list[dict[str, Any]]:
    if not isinstance(response, dict):
        raise UpstreamProtocolError("the answer is not an object")
    candidates = response.get("candidates") or []
    if not isinstance(candidates, list) or not all(isinstance(c, dict) for c in candidates):
        raise UpstreamProtocolError("candidates is not a list of objects")
    return candidates


def _block_reason(response: dict[str, Any]) -> str | None:
    feedback = response.get("promptFeedback")
    reason = feedback.get("blockReason") if isinstance(feedback, dict) else None
    return reason if isinstance(reason, str) and reason else None


def completion(
    response: Any, choices: int = 1, new_id: Callable[[], str] = _random_part
) -> dict[str, Any]:
    """A whole GenerateContentResponse as an OpenAI chat.completion dict."""
    candidates = _candidates(response)
    out: list[dict[str, Any]] = []
    if not candidates and _block_reason(response) is not None:
        out = [
            {
                "index": i,
                "message": {"role": "assistant", "content": ""},
                "finish_reason": "content_filter",
            }
            for i in range(max(1, choices))
        ]
    elif not candidates:
        raise UpstreamProtocolError("the answer has no candidates")
    for candidate in candidates:
        text: list[str] = []
        thoughts: list[str] = []
        calls: list[dict[str, Any]] = []
        for part in _parts(candidate):
            if "functionCall" in part:
                calls.append(_tool_call(part, new_id))
            elif isinstance(part.get("text"), str):
                (thoughts if part.get("thought") is True else text).append(part["text"])
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(text) if text or not calls else None,
        }
        if calls:
            message["tool_calls"] = calls
        if thoughts and "".join(thoughts):
            message["reasoning_content"] = "".join(thoughts)
        out.append(
            {
                "index": _index(candidate),
                "message": message,
                "finish_reason": finish_reason(candidate.get("finishReason"), bool(calls)),
            }
        )
    out.sort(key=lambda c: int(c["index"]))
    return {"choices": out, "usage": openai_usage(response.get("usageMetadata"))}


@dataclass
class StreamTranslation:
    """streamGenerateContent events (each a GenerateContentResponse) in, OpenAI-shaped
    chunk dicts out: a role chunk per candidate, text / reasoning / whole tool-call
    deltas, a finish chunk per candidate; `end` gives the usage chunk, or raises
    UpstreamError if a candidate never finished."""

    choices: int = 1
    new_id: Callable[[], str] = _random_part
    usage: dict[str, Any] | None = None
    _started: set[int] = field(default_factory=set)
    _finished: set[int] = field(default_factory=set)
    _calls: dict[int, int] = field(default_factory=dict)

    @staticmethod
    def _chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"choices": [{"index": index, "delta": delta, "finish_reason": finish}]}

    def _start(self, index: int) -> list[dict[str, Any]]:
        if index in self._started:
            return []
        self._started.add(index)
        return [self._chunk(index, {"role": "assistant"})]

    def feed(self, response: Any) -> list[dict[str, Any]]:
        candidates = _candidates(response)
        if response.get("usageMetadata") is not None:
            self.usage = openai_usage(response["usageMetadata"])
        out: list[dict[str, Any]] = []
        if not candidates and _block_reason(response) is not None:
            for i in range(max(1, self.choices)):
                if i not in self._finished:
                    out += self._start(i)
                    out.append(self._chunk(i, {}, "content_filter"))
                    self._finished.add(i)
            return out
        for candidate in candidates:
            index = _index(candidate)
            if index in self._finished:
                # A repeated, empty finished candidate (next to late usage) is harmless.
                if any(
                    "functionCall" in p or (isinstance(p.get("text"), str) and p["text"])
                    for p in _parts(candidate)
                ):
                    raise UpstreamProtocolError("a candidate continued after its finishReason")
                continue
            out += self._start(index)
            for part in _parts(candidate):
                if "functionCall" in part:
                    call = _tool_call(part, self.new_id)
                    position = self._calls.get(index, 0)
                    self._calls[index] = position + 1
                    out.append(self._chunk(index, {"tool_calls": [{"index": position, **call}]}))
                elif isinstance(part.get("text"), str) and part["text"]:
                    key = "reasoning_content" if part.get("thought") is True else "content"
                    out.append(self._chunk(index, {key: part["text"]}))
            reason = candidate.get("finishReason")
            if reason is not None:
                finish = finish_reason(reason, self._calls.get(index, 0) > 0)
                out.append(self._chunk(index, {}, finish))
                self._finished.add(index)
        return out

    def end(self) -> list[dict[str, Any]]:
        """The closing usage chunk; raises if the stream stopped before every candidate
        finished (Gemini sends no end marker: a finishReason is the only sign)."""
        if not self._finished or self._started - self._finished:
            raise UpstreamError("failed", "upstream stream ended early")
        return [{"choices": [], "usage": self.usage}] if self.usage is not None else []


__all__ = [
    "THOUGHT_SIGNATURE_PLACEHOLDER",
    "CallRef",
    "GeminiRequestError",
    "StreamTranslation",
    "clean_schema",
    "completion",
    "decode_tool_call_id",
    "encode_tool_call_id",
    "finish_reason",
    "generate_content_request",
    "model_path",
    "openai_usage",
    "requested_choices",
    "thinking_config",
    "thinking_style",
]
