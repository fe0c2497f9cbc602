"""Google's Gemini API (generateContent / streamGenerateContent): validate a request
strictly, plan the answer with the OpenAI sandbox's rules, build the wire bodies.

No I/O here (gemini_server.py moves the bytes). Validation follows Google's documented
schema: camelCase or snake_case field names (as Google's JSON parser takes both), unknown
fields are a 400 ("Unknown name ...: Cannot find field."), so OpenAI-only fields (messages,
tool_calls, type, image_url, max_tokens, ...) and roles other than user / model are caught.

Text answers are planned by openai_chat.plan_answer on an OpenAI view of the request, so
the words, tool choice, sampled arguments, token counts and [sim:...] directives are the
OpenAI sandbox's (see sandbox/__init__.py), with Gemini's names:
  maxOutputTokens = max_tokens, candidateCount = n, functionCallingConfig.mode AUTO / NONE /
  ANY (+ allowedFunctionNames: one name forces it, several restrict "required" to them)
  usageMetadata: promptTokenCount = prompt_tokens, candidatesTokenCount = visible tokens,
  thoughtsTokenCount = reasoning tokens, cachedContentTokenCount = [sim:cached=N]
  [sim:reasoning=N]: thoughtsTokenCount N, a thought part ({text, thought: true}) only when
  thinkingConfig.includeThoughts is true (as Gemini), and a thoughtSignature on the last part
  finishReason: STOP (also for function calls), MAX_TOKENS when cut

Thought signatures, checked like Gemini 3 does: every functionCall answer carries a
deterministic thoughtSignature on its first functionCall part (`thought_signature(name,
args)`; parallel calls: only the first, as Gemini). In a request, the current turn (the
contents after the last user content holding something other than functionResponse parts)
is checked: the first functionCall part of each model content must carry a signature, and
  - for a call the sandbox would have made (the declared tool's sampled arguments exactly),
    only that call's own signature passes (Google's placeholder does not),
  - for any other call (history from elsewhere), any signature passes, including Google's
    documented placeholders.
Otherwise: 400 INVALID_ARGUMENT. Each model content with N functionCall parts must be
followed by a user content with exactly N functionResponse parts.

Image output: generationConfig.responseModalities containing IMAGE. The answer is one PNG per
candidate as inlineData (plus a short text part when TEXT is asked for too), of
imageConfig.aspectRatio (1:1 by default; Gemini's ratios) exactly, rendered with the long side
capped at png.RENDER_CAP; imageConfig.imageSize 1K/2K/4K (1K default) only changes the
reported tokens: candidatesTokenCount = 1290 / 1680 / 2520 per image, promptTokenCount =
ceil(len(prompt)/4) + 258 per reference image. References are the inlineData images of the
user contents; each must really be the type it declares. Media directives only:
[sim:fail], [sim:delay=S], [sim:hang], [sim:status=CODE].

Errors render as Google's {"error": {"code", "message", "status"}} (`error_body`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import orjson

from sandbox import directives, media, model_rules, openai_chat, png, textgen
from sandbox.errors import ApiError, invalid

MAX_CANDIDATES = 8
MAX_STOP_SEQUENCES = 5
THOUGHT_SIGNATURE_PLACEHOLDERS = frozenset(
    {"skip_thought_signature_validator", "context_engineering_is_the_way_to_go"}
)
ASPECT_RATIOS = frozenset(
    {"1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9"}
    | {"1:4", "4:1", "1:8", "8:1"}
)
IMAGE_SIZES = {"512": 512, "1K": 1024, "2K": 2048, "4K": 4096}
IMAGE_TOKENS = {"512": 747, "1K": 1290, "2K": 1680, "4K": 2520}
REFERENCE_TOKENS = 258
MODALITIES = frozenset({"TEXT", "IMAGE", "AUDIO"})
MIME_TYPES = frozenset({"text/plain", "application/json", "text/x.enum"})
THINKING_LEVELS = frozenset({"MINIMAL", "LOW", "MEDIUM", "HIGH"})
CALLING_MODES = frozenset({"AUTO", "ANY", "NONE", "VALIDATED", "MODE_UNSPECIFIED"})
SCHEMA_TYPES = frozenset({"STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL"})
_FUNCTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,63}")

_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

# Known fields per message type (camelCase; snake_case spellings are accepted too).
_REQUEST = (
    "model",
    "contents",
    "tools",
    "toolConfig",
    "safetySettings",
    "systemInstruction",
    "generationConfig",
    "cachedContent",
)
_CONTENT = ("role", "parts")
_PART = (
    "text",
    "inlineData",
    "fileData",
    "functionCall",
    "functionResponse",
    "executableCode",
    "codeExecutionResult",
    "thought",
    "thoughtSignature",
    "videoMetadata",
    "partMetadata",
    "mediaResolution",
)
_PART_DATA = (
    "text",
    "inlineData",
    "fileData",
    "functionCall",
    "functionResponse",
    "executableCode",
    "codeExecutionResult",
)
_BLOB = ("mimeType", "data")
_FILE = ("mimeType", "fileUri")
_CALL = ("id", "name", "args")
_RESPONSE = ("id", "name", "response", "parts", "willContinue", "scheduling")
_GENERATION = (
    "stopSequences",
    "responseMimeType",
    "responseSchema",
    "responseJsonSchema",
    "responseModalities",
    "candidateCount",
    "maxOutputTokens",
    "temperature",
    "topP",
    "topK",
    "seed",
    "presencePenalty",
    "frequencyPenalty",
    "responseLogprobs",
    "logprobs",
    "enableEnhancedCivicAnswers",
    "speechConfig",
    "thinkingConfig",
    "imageConfig",
    "mediaResolution",
)
_THINKING = ("includeThoughts", "thinkingBudget", "thinkingLevel")
_IMAGE = ("aspectRatio", "imageSize")
_TOOL = (
    "functionDeclarations",
    "googleSearch",
    "googleSearchRetrieval",
    "codeExecution",
    "urlContext",
    "computerUse",
    "fileSearch",
    "googleMaps",
)
_DECLARATION = (
    "name",
    "description",
    "behavior",
    "parameters",
    "parametersJsonSchema",
    "response",
    "responseJsonSchema",
)
_TOOL_CONFIG = ("functionCallingConfig", "retrievalConfig")
_CALLING = ("mode", "allowedFunctionNames")
_SAFETY = ("category", "threshold", "method")
_SCHEMA = (
    "type",
    "format",
    "title",
    "description",
    "nullable",
    "enum",
    "maxItems",
    "minItems",
    "properties",
    "required",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "example",
    "anyOf",
    "propertyOrdering",
    "default",
    "items",
    "minimum",
    "maximum",
)
_MAX_SCHEMA_DEPTH = 32


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


_SPELLINGS: dict[tuple[str, ...], dict[str, str]] = {}


def _fields(obj: Any, known: tuple[str, ...], where: str) -> dict[str, Any]:
    """`obj` with camelCase keys; a 400 for a non-object or any unknown field."""
    if not isinstance(obj, dict):
        raise _bad_value(where, "an object", obj)
    spellings = _SPELLINGS.get(known)
    if spellings is None:
        spellings = {**{_snake(k): k for k in known}, **{k: k for k in known}}
        _SPELLINGS[known] = spellings
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = spellings.get(key)
        if name is None:
            at = f" at '{where}'" if where else ""
            raise invalid(
                f'Invalid JSON payload received. Unknown name "{key}"{at}: Cannot find field.'
            )
        out[name] = value
    return out


def _bad_value(where: str, expected: str, value: Any) -> ApiError:
    shown = orjson.dumps(value).decode()[:80] if value is not None else "null"
    return invalid(f"Invalid value at '{where}' ({expected}), {shown}")


def _required(where: str, what: str) -> ApiError:
    return invalid(f"* GenerateContentRequest.{where}: {what}\n")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _int(obj: dict[str, Any], key: str, where: str, low: int, high: int) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,19}", value):
        value = int(value)  # proto3 JSON takes int64 as strings
    if not _is_int(value) or not low <= value <= high:
        raise _bad_value(f"{where}.{_snake(key)}", "TYPE_INT32", value)
    return int(value)


def _number(obj: dict[str, Any], key: str, where: str, low: float, high: float) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if not _is_number(value):
        raise _bad_value(f"{where}.{_snake(key)}", "TYPE_FLOAT", value)
    if not low <= value <= high:
        raise invalid(
            f"* GenerateContentRequest.{where}.{_snake(key)}: out of range [{low}, {high}]"
        )
    return float(value)


def _bool(obj: dict[str, Any], key: str, where: str) -> bool | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, bool):
        raise _bad_value(f"{where}.{_snake(key)}", "TYPE_BOOL", value)
    return value


def _str(obj: dict[str, Any], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise _bad_value(f"{where}.{_snake(key)}", "TYPE_STRING", value)
    return value


def _bytes(value: Any, where: str) -> bytes:
    if not isinstance(value, str):
        raise _bad_value(where, "TYPE_BYTES", value)
    try:
        if "-" in value or "_" in value:
            return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        return base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise invalid(
            f"Invalid value at '{where}' (TYPE_BYTES), Base64 decoding failed for \"{value[:40]}\""
        ) from None


# --- the request --------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    kind: str  # text | inlineData | fileData | functionCall | functionResponse | ...
    value: Any  # the text, {mimeType, data bytes}, {fileUri}, {name, args}, {name, response}
    thought: bool = False
    signature: str | None = None


@dataclass(frozen=True)
class Content:
    role: str  # "user" | "model"
    parts: tuple[Part, ...]

    @property
    def text(self) -> str:
        return "\n".join(p.value for p in self.parts if p.kind == "text" and not p.thought)

    @property
    def starts_turn(self) -> bool:
        """A user content with something besides function responses opens a new turn."""
        return self.role == "user" and any(p.kind != "functionResponse" for p in self.parts)


@dataclass(frozen=True)
class Declaration:
    name: str
    schema: dict[str, Any] | None  # as JSON Schema (lower-case types), for sampling


@dataclass(frozen=True)
class GeminiRequest:
    model: str
    stream: bool
    body: dict[str, Any]
    contents: tuple[Content, ...]
    system: str
    declarations: tuple[Declaration, ...]
    mode: str  # AUTO | ANY | NONE
    allowed: tuple[str, ...]
    max_tokens: int | None
    n: int
    include_thoughts: bool
    modalities: tuple[str, ...]
    aspect_ratio: str
    image_size: str

    @property
    def wants_image(self) -> bool:
        return "IMAGE" in self.modalities

    @property
    def prompt(self) -> str:
        """The last user content's text: it seeds the answer and holds the directives."""
        for content in reversed(self.contents):
            if content.role == "user" and any(p.kind == "text" for p in content.parts):
                return content.text
        return ""


def parse_json(raw: bytes) -> object:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise invalid(
            "Invalid JSON payload received. Unexpected token in the request body."
        ) from None


def parse_request(model: str, body: object, stream: bool) -> GeminiRequest:
    """Validate as Google does (400 INVALID_ARGUMENT with Google's wording)."""
    fields = _fields(body, _REQUEST, "")
    assert isinstance(body, dict)
    raw_contents = fields.get("contents")
    if raw_contents is None or raw_contents == []:
        raise _required("contents", "contents is not specified")
    if not isinstance(raw_contents, list):
        raise _bad_value("contents", "a list of Content", raw_contents)
    contents = tuple(_content(c, f"contents[{i}]", False) for i, c in enumerate(raw_contents))
    system = ""
    if fields.get("systemInstruction") is not None:
        instruction = _content(fields["systemInstruction"], "system_instruction", True)
        system = instruction.text
    declarations, names = _tools(fields.get("tools"))
    mode, allowed = _tool_config(fields.get("toolConfig"), names)
    _safety(fields.get("safetySettings"))
    if fields.get("cachedContent") is not None:
        _str(fields, "cachedContent", "")
    config = _generation(fields.get("generationConfig"), model)
    _check_turn_order(contents)
    return GeminiRequest(
        model=model,
        stream=stream,
        body=body,
        contents=contents,
        system=system,
        declarations=declarations,
        mode=mode if declarations else "NONE",
        allowed=allowed,
        max_tokens=config["max_tokens"],
        n=config["n"],
        include_thoughts=config["include_thoughts"],
        modalities=config["modalities"],
        aspect_ratio=config["aspect_ratio"],
        image_size=config["image_size"],
    )


def _content(raw: Any, where: str, system: bool) -> Content:
    fields = _fields(raw, _CONTENT, where)
    role = _str(fields, "role", where)
    if system:
        role = "user"
    elif role is None or role == "":
        role = "user"
    elif role not in ("user", "model"):
        raise invalid("Please use a valid role: user, model.")
    parts_raw = fields.get("parts")
    if parts_raw is None or parts_raw == []:
        raise _required(f"{where}.parts", "contents.parts must not be empty.")
    if not isinstance(parts_raw, list):
        raise _bad_value(f"{where}.parts", "a list of Part", parts_raw)
    parts = tuple(_part(p, f"{where}.parts[{j}]", role) for j, p in enumerate(parts_raw))
    if system and any(p.kind != "text" for p in parts):
        raise invalid("* GenerateContentRequest.system_instruction: only text parts are allowed\n")
    return Content(role, parts)


def _part(raw: Any, where: str, role: str) -> Part:
    fields = _fields(raw, _PART, where)
    present = [k for k in _PART_DATA if fields.get(k) is not None]
    if not present:
        raise _required(
            f"{where}.data", "required oneof field 'data' must have one initialized field"
        )
    if len(present) > 1:
        raise invalid(
            "Invalid JSON payload received. Oneof field 'data' is already set. "
            f"Cannot set '{present[1]}'"
        )
    kind = present[0]
    thought = bool(_bool(fields, "thought", where))
    signature = fields.get("thoughtSignature")
    if signature is not None:
        _bytes(signature, f"{where}.thought_signature")
    value: Any
    if kind == "text":
        value = _str(fields, "text", where)
    elif kind == "inlineData":
        blob = _fields(fields["inlineData"], _BLOB, f"{where}.inline_data")
        mime = _str(blob, "mimeType", f"{where}.inline_data")
        if not mime:
            raise _required(f"{where}.inline_data.mime_type", "mime_type is required")
        data = _bytes(blob.get("data"), f"{where}.inline_data.data")
        if not data:
            raise _required(f"{where}.inline_data.data", "data is required")
        _check_media(mime, data, f"{where}.inline_data")
        value = {"mimeType": mime, "data": data}
    elif kind == "fileData":
        file = _fields(fields["fileData"], _FILE, f"{where}.file_data")
        uri = _str(file, "fileUri", f"{where}.file_data")
        _str(file, "mimeType", f"{where}.file_data")
        if not uri or not uri.startswith(("https://", "http://", "gs://")):
            raise invalid(f"* GenerateContentRequest.{where}.file_data.file_uri: invalid URI\n")
        value = {"fileUri": uri}
    elif kind == "functionCall":
        if role != "model":
            raise invalid(
                f"* GenerateContentRequest.{where}: functionCall is only allowed in model turns\n"
            )
        call = _fields(fields["functionCall"], _CALL, f"{where}.function_call")
        name = _str(call, "name", f"{where}.function_call")
        if not name:
            raise _required(f"{where}.function_call.name", "name is required")
        args = call.get("args", {})
        if not isinstance(args, dict):
            raise _bad_value(
                f"{where}.function_call.args", "type.googleapis.com/google.protobuf.Struct", args
            )
        _str(call, "id", f"{where}.function_call")
        value = {"name": name, "args": args}
    elif kind == "functionResponse":
        if role != "user":
            raise invalid(
                f"* GenerateContentRequest.{where}: "
                "functionResponse is only allowed in user turns\n"
            )
        answer = _fields(fields["functionResponse"], _RESPONSE, f"{where}.function_response")
        name = _str(answer, "name", f"{where}.function_response")
        if not name:
            raise _required(f"{where}.function_response.name", "name is required")
        response = answer.get("response")
        if not isinstance(response, dict):
            raise _bad_value(
                f"{where}.function_response.response",
                "type.googleapis.com/google.protobuf.Struct",
                response,
            )
        _str(answer, "id", f"{where}.function_response")
        value = {"name": name, "response": response}
    else:
        if not isinstance(fields[kind], dict):
            raise _bad_value(f"{where}.{_snake(kind)}", "an object", fields[kind])
        value = fields[kind]
    return Part(kind, value, thought, signature)


def _check_media(mime: str, data: bytes, where: str) -> None:
    actual = media.sniff(data)
    if mime.startswith(("image/", "video/", "audio/")) and actual is not None and actual != mime:
        raise invalid(
            f"* GenerateContentRequest.{where}: the bytes are {actual}, not the declared {mime}\n"
        )
    if mime in ("image/png", "image/jpeg", "image/webp") and actual != mime:
        raise invalid(f"* GenerateContentRequest.{where}: Unable to process input image.\n")


def _check_turn_order(contents: tuple[Content, ...]) -> None:
    for i, content in enumerate(contents):
        calls = sum(p.kind == "functionCall" for p in content.parts)
        if not calls or i + 1 >= len(contents):
            continue
        after = contents[i + 1]
        answers = sum(p.kind == "functionResponse" for p in after.parts)
        if after.role != "user" or answers != calls:
            raise invalid(
                "Please ensure that the number of function response parts is equal to the "
                "number of function call parts of the function call turn."
            )


def _tools(raw: Any) -> tuple[tuple[Declaration, ...], set[str]]:
    if raw is None:
        return (), set()
    if not isinstance(raw, list):
        raise _bad_value("tools", "a list of Tool", raw)
    declarations: list[Declaration] = []
    for i, tool in enumerate(raw):
        fields = _fields(tool, _TOOL, f"tools[{i}]")
        entries = fields.get("functionDeclarations")
        if entries is None:
            continue
        if not isinstance(entries, list):
            raise _bad_value(f"tools[{i}].function_declarations", "a list", entries)
        for j, entry in enumerate(entries):
            where = f"tools[{i}].function_declarations[{j}]"
            decl = _fields(entry, _DECLARATION, where)
            name = _str(decl, "name", where)
            if not name or not _FUNCTION_NAME.fullmatch(name):
                raise invalid(
                    f"* GenerateContentRequest.{where}.name: Invalid function name. Must start "
                    "with a letter or an underscore. Must be alphameric (a-z, A-Z, 0-9), "
                    "underscores (_), dots (.), colons (:), or dashes (-), with a maximum "
                    "length of 64.\n"
                )
            _str(decl, "description", where)
            schema: dict[str, Any] | None = None
            if decl.get("parameters") is not None and decl.get("parametersJsonSchema") is not None:
                raise invalid(
                    f"* GenerateContentRequest.{where}: parameters and parameters_json_schema "
                    "are mutually exclusive\n"
                )
            if decl.get("parameters") is not None:
                schema = _json_schema(_schema(decl["parameters"], f"{where}.parameters", 0))
            elif decl.get("parametersJsonSchema") is not None:
                if not isinstance(decl["parametersJsonSchema"], dict):
                    raise _bad_value(f"{where}.parameters_json_schema", "an object", None)
                schema = decl["parametersJsonSchema"]
            declarations.append(Declaration(name, schema))
    names = [d.name for d in declarations]
    if len(set(names)) != len(names):
        raise invalid("* GenerateContentRequest.tools: duplicate function declaration names\n")
    return tuple(declarations), set(names)


def _schema(raw: Any, where: str, depth: int) -> dict[str, Any]:
    """A Gemini Schema, checked field by field (JSON Schema extras are unknown names)."""
    if depth > _MAX_SCHEMA_DEPTH:
        raise invalid(f"* GenerateContentRequest.{where}: schema is nested too deeply\n")
    fields = _fields(raw, _SCHEMA, where)
    kind = fields.get("type")
    if kind is not None and (not isinstance(kind, str) or kind.upper() not in SCHEMA_TYPES):
        raise invalid(
            f"Invalid value at '{where}.type' (type.googleapis.com/google.ai.generativelanguage."
            f'v1beta.Type), "{kind}"'
        )
    for key in ("format", "title", "description", "pattern"):
        _str(fields, key, where)
    _bool(fields, "nullable", where)
    enum = fields.get("enum")
    if enum is not None and (
        not isinstance(enum, list) or not all(isinstance(v, str) for v in enum)
    ):
        raise _bad_value(f"{where}.enum", "TYPE_STRING", enum)
    required = fields.get("required")
    if required is not None and (
        not isinstance(required, list) or not all(isinstance(v, str) for v in required)
    ):
        raise _bad_value(f"{where}.required", "TYPE_STRING", required)
    for key in ("minItems", "maxItems", "minProperties", "maxProperties", "minLength", "maxLength"):
        _int(fields, key, where, 0, 2**63 - 1)
    for key in ("minimum", "maximum"):
        if fields.get(key) is not None and not _is_number(fields[key]):
            raise _bad_value(f"{where}.{key}", "TYPE_DOUBLE", fields[key])
    props = fields.get("properties")
    if props is not None:
        if not isinstance(props, dict):
            raise _bad_value(f"{where}.properties", "a map of Schema", props)
        fields["properties"] = {
            name: _schema(sub, f"{where}.properties[{name}].value", depth + 1)
            for name, sub in props.items()
        }
        if isinstance(required, list):
            missing = [r for r in required if r not in props]
            if missing:
                raise invalid(
                    f"* GenerateContentRequest.{where}.required[0]: property is not defined\n"
                )
    if fields.get("items") is not None:
        fields["items"] = _schema(fields["items"], f"{where}.items", depth + 1)
    options = fields.get("anyOf")
    if options is not None:
        if not isinstance(options, list):
            raise _bad_value(f"{where}.any_of", "a list of Schema", options)
        fields["anyOf"] = [
            _schema(o, f"{where}.any_of[{k}]", depth + 1) for k, o in enumerate(options)
        ]
    return fields


def _json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A checked Gemini Schema as lower-case JSON Schema, for toolargs.sample."""
    out = dict(schema)
    if isinstance(out.get("type"), str):
        out["type"] = out["type"].lower()
    if isinstance(out.get("properties"), dict):
        out["properties"] = {k: _json_schema(v) for k, v in out["properties"].items()}
    if isinstance(out.get("items"), dict):
        out["items"] = _json_schema(out["items"])
    if isinstance(out.get("anyOf"), list):
        out["anyOf"] = [_json_schema(o) for o in out["anyOf"]]
    return out


def _tool_config(raw: Any, names: set[str]) -> tuple[str, tuple[str, ...]]:
    if raw is None:
        return "AUTO", ()
    fields = _fields(raw, _TOOL_CONFIG, "tool_config")
    calling_raw = fields.get("functionCallingConfig")
    if calling_raw is None:
        return "AUTO", ()
    calling = _fields(calling_raw, _CALLING, "tool_config.function_calling_config")
    mode = _str(calling, "mode", "tool_config.function_calling_config") or "AUTO"
    if mode.upper() not in CALLING_MODES:
        raise invalid(
            "Invalid value at 'tool_config.function_calling_config.mode' (type.googleapis.com/"
            f'google.ai.generativelanguage.v1beta.FunctionCallingConfig.Mode), "{mode}"'
        )
    mode = mode.upper()
    if mode in ("MODE_UNSPECIFIED", "VALIDATED"):
        mode = "AUTO"
    allowed = calling.get("allowedFunctionNames")
    if allowed is None:
        return mode, ()
    if not isinstance(allowed, list) or not all(isinstance(a, str) for a in allowed):
        raise _bad_value(
            "tool_config.function_calling_config.allowed_function_names", "TYPE_STRING", allowed
        )
    if mode != "ANY":
        raise invalid(
            "* GenerateContentRequest.tool_config.function_calling_config.allowed_function_names"
            ": allowed_function_names should only be set when the mode is ANY.\n"
        )
    unknown = [a for a in allowed if a not in names]
    if unknown:
        raise invalid(
            "* GenerateContentRequest.tool_config.function_calling_config.allowed_function_names"
            f": function {unknown[0]!r} is not declared in tools.\n"
        )
    return mode, tuple(allowed)


def _safety(raw: Any) -> None:
    if raw is None:
        return
    if not isinstance(raw, list):
        raise _bad_value("safety_settings", "a list of SafetySetting", raw)
    for i, setting in enumerate(raw):
        fields = _fields(setting, _SAFETY, f"safety_settings[{i}]")
        for key in _SAFETY:
            _str(fields, key, f"safety_settings[{i}]")


def _generation(raw: Any, model: str) -> dict[str, Any]:
    where = "generation_config"
    fields = _fields(raw, _GENERATION, where) if raw is not None else {}
    stop = fields.get("stopSequences")
    if stop is not None and (
        not isinstance(stop, list)
        or len(stop) > MAX_STOP_SEQUENCES
        or not all(isinstance(s, str) for s in stop)
    ):
        raise invalid(
            f"* GenerateContentRequest.{where}.stop_sequences: at most {MAX_STOP_SEQUENCES} "
            "strings\n"
        )
    mime = _str(fields, "responseMimeType", where)
    if mime is not None and mime not in MIME_TYPES:
        raise invalid(
            f"* GenerateContentRequest.{where}.response_mime_type: allowed mimetypes are "
            "`text/plain`, `application/json`, and `text/x.enum`.\n"
        )
    if fields.get("responseSchema") is not None and fields.get("responseJsonSchema") is not None:
        raise invalid(
            f"* GenerateContentRequest.{where}: response_schema and response_json_schema are "
            "mutually exclusive\n"
        )
    if fields.get("responseSchema") is not None:
        _schema(fields["responseSchema"], f"{where}.response_schema", 0)
    if (fields.get("responseSchema") or fields.get("responseJsonSchema")) and mime not in (
        "application/json",
        "text/x.enum",
    ):
        raise invalid(
            f"* GenerateContentRequest.{where}.response_mime_type: When using a response schema,"
            " response_mime_type must be application/json or text/x.enum.\n"
        )
    modalities_raw = fields.get("responseModalities") or []
    if not isinstance(modalities_raw, list) or not all(
        isinstance(m, str) and m.upper() in MODALITIES for m in modalities_raw
    ):
        raise _bad_value(f"{where}.response_modalities", "Modality", modalities_raw)
    modalities = tuple(m.upper() for m in modalities_raw)
    n = _int(fields, "candidateCount", where, 1, MAX_CANDIDATES) or 1
    max_tokens = _int(fields, "maxOutputTokens", where, 1, 2**31 - 1)
    _number(fields, "temperature", where, 0.0, 2.0)
    _number(fields, "topP", where, 0.0, 1.0)
    _int(fields, "topK", where, 1, 2**31 - 1)
    _int(fields, "seed", where, -(2**31), 2**31 - 1)
    _number(fields, "presencePenalty", where, -2.0, 2.0)
    _number(fields, "frequencyPenalty", where, -2.0, 2.0)
    _bool(fields, "responseLogprobs", where)
    _int(fields, "logprobs", where, 0, 20)
    include_thoughts = False
    if fields.get("thinkingConfig") is not None:
        thinking = _fields(fields["thinkingConfig"], _THINKING, f"{where}.thinking_config")
        include_thoughts = bool(_bool(thinking, "includeThoughts", f"{where}.thinking_config"))
        budget = _int(thinking, "thinkingBudget", f"{where}.thinking_config", -1, 2**31 - 1)
        level = _str(thinking, "thinkingLevel", f"{where}.thinking_config")
        if level is not None and level.upper() not in THINKING_LEVELS:
            raise invalid(
                f"Invalid value at '{where}.thinking_config.thinking_level' (type.googleapis.com/"
                f'google.ai.generativelanguage.v1beta.ThinkingConfig.ThinkingLevel), "{level}"'
            )
        if level is not None and budget is not None:
            raise invalid(
                "Unable to submit request because thinking_budget and thinking_level are not "
                "supported together."
            )
        if (
            level is not None
            and not model_rules.rules_for(model.removeprefix("models/")).thinking_level
        ):
            # Gemini 2.5 and older take a thinkingBudget; thinkingLevel is Gemini 3's.
            raise invalid("Thinking level is not supported for this model.")
    aspect_ratio, image_size = "1:1", "1K"
    if fields.get("imageConfig") is not None:
        image = _fields(fields["imageConfig"], _IMAGE, f"{where}.image_config")
        ratio = _str(image, "aspectRatio", f"{where}.image_config")
        if ratio is not None:
            if ratio not in ASPECT_RATIOS:
                raise invalid(
                    f"* GenerateContentRequest.{where}.image_config.aspect_ratio: unsupported "
                    f"aspect ratio {ratio!r}.\n"
                )
            aspect_ratio = ratio
        size = _str(image, "imageSize", f"{where}.image_config")
        if size is not None:
            if size not in IMAGE_SIZES:
                raise invalid(
                    f"* GenerateContentRequest.{where}.image_config.image_size: unsupported image "
                    f"size {size!r}; use 1K, 2K or 4K.\n"
                )
            image_size = size
    return {
        "max_tokens": max_tokens,
        "n": n,
        "include_thoughts": include_thoughts,
        "modalities": modalities,
        "aspect_ratio": aspect_ratio,
        "image_size": image_size,
    }


# --- thought signatures -------------------------------------------------------------------


def thought_signature(name: str, args: Any) -> str:
    """The sandbox's signature for a functionCall: base64 of a hash of (name, args)."""
    digest = hashlib.sha256(
        b"sandbox-thought\x00"
        + name.encode()
        + b"\x00"
        + orjson.dumps(args, option=orjson.OPT_SORT_KEYS)
    ).digest()
    return base64.b64encode(b"\x0a\x30" + digest + digest[:16]).decode()


def _sampled_args(request: GeminiRequest, name: str) -> dict[str, Any] | None:
    for declaration in request.declarations:
        if declaration.name == name:
            return dict(orjson.loads(openai_chat.tool_arguments(declaration.schema)))
    return None


def check_signatures(request: GeminiRequest) -> None:
    """Gemini 3's rule on the current turn (see the module docstring); 400 if broken."""
    start = 0
    for i, content in enumerate(request.contents):
        if content.starts_turn:
            start = i
    for position, content in enumerate(request.contents[start:], start=start):
        if content.role != "model":
            continue
        first = next((p for p in content.parts if p.kind == "functionCall"), None)
        if first is None:
            continue
        name, args = first.value["name"], first.value["args"]
        if first.signature is None:
            raise invalid(
                "Function call is missing a thought_signature in functionCall parts. This is "
                "required for tools to work correctly, and missing thought_signature may lead to "
                f"degraded model performance. Additional data, function call `{name}` , position "
                f"{position + 1}. Please refer to https://ai.google.dev/gemini-api/docs/"
                "thought-signatures for more details."
            )
        if first.signature == thought_signature(name, args):
            continue
        ours = _sampled_args(request, name) == args
        if not ours and first.signature in THOUGHT_SIGNATURE_PLACEHOLDERS:
            continue
        raise invalid(
            f"Thought signature is not valid for function call `{name}` in content {position + 1}."
        )


# --- text answers -------------------------------------------------------------------------


def _openai_messages(request: GeminiRequest) -> list[dict[str, Any]]:
    """An OpenAI view of the contents: what openai_chat counts and plans on."""
    messages: list[dict[str, Any]] = []
    if request.system:
        messages.append({"role": "system", "content": request.system})
    for content in request.contents:
        if content.role == "model":
            message: dict[str, Any] = {"role": "assistant", "content": content.text or None}
            calls = [
                {"function": {"arguments": orjson.dumps(p.value["args"]).decode()}}
                for p in content.parts
                if p.kind == "functionCall"
            ]
            if calls:
                message["tool_calls"] = calls
            messages.append(message)
            continue
        for part in content.parts:
            if part.kind == "functionResponse":
                text = orjson.dumps(part.value["response"]).decode()
                messages.append({"role": "tool", "content": text})
            elif messages and messages[-1]["role"] == "user":
                if part.kind == "text" and not part.thought:
                    messages[-1]["content"] += ("\n" if messages[-1]["content"] else "") + str(
                        part.value
                    )
            else:
                text = str(part.value) if part.kind == "text" and not part.thought else ""
                messages.append({"role": "user", "content": text})
    return messages


def chat_request(request: GeminiRequest) -> openai_chat.ChatRequest:
    """The OpenAI sandbox's request for the same conversation (for plan_answer)."""
    tools = tuple(openai_chat.Tool(d.name, d.schema) for d in request.declarations)
    choice, forced = "none", None
    if tools and request.mode == "AUTO":
        choice = "auto"
    elif tools and request.mode == "ANY":
        if len(request.allowed) == 1:
            choice, forced = "function", request.allowed[0]
        else:
            choice = "required"
            if request.allowed:
                tools = tuple(t for t in tools if t.name in request.allowed)
    text = request.prompt
    echoed = {k: v for k, v in request.body.items() if k != "contents"}
    return openai_chat.ChatRequest(
        body=echoed,
        model=request.model,
        messages=_openai_messages(request),
        n=request.n,
        stream=request.stream,
        include_usage=True,
        max_tokens=request.max_tokens,
        tools=tools,
        tool_choice=choice,
        forced_tool=forced,
        parallel_tool_calls=True,
        directives=directives.parse(text, param="contents"),
        seed_text=directives.remove(text),
    )


def plan_text(request: GeminiRequest) -> openai_chat.Plan:
    return openai_chat.plan_answer(chat_request(request))


def _finish(choice: openai_chat.Choice) -> str:
    return "MAX_TOKENS" if choice.finish_reason == "length" else "STOP"


def _call_parts(choice: openai_chat.Choice) -> list[dict[str, Any]]:
    parts = []
    for i, call in enumerate(choice.tool_calls):
        args = orjson.loads(call.arguments)
        part: dict[str, Any] = {"functionCall": {"name": call.name, "args": args}}
        if i == 0:
            part["thoughtSignature"] = thought_signature(call.name, args)
        parts.append(part)
    return parts


def _text_signature(plan: openai_chat.Plan, choice: openai_chat.Choice) -> str:
    key = f"{plan.request.model}\x00{plan.request.seed_text}\x00{choice.index}"
    return base64.b64encode(bytes.fromhex(textgen.hex_digits(f"{key}\x00sig", 64))).decode()


def _usage(plan: openai_chat.Plan, final: bool = True) -> dict[str, Any]:
    usage = plan.usage
    if not final:
        return {"promptTokenCount": usage.prompt_tokens, "totalTokenCount": usage.prompt_tokens}
    visible = usage.completion_tokens - usage.reasoning_tokens
    out: dict[str, Any] = {
        "promptTokenCount": usage.prompt_tokens,
        "candidatesTokenCount": visible,
        "totalTokenCount": usage.prompt_tokens + usage.completion_tokens,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": usage.prompt_tokens}],
    }
    if usage.cached_tokens:
        out["cachedContentTokenCount"] = usage.cached_tokens
    if usage.reasoning_tokens:
        out["thoughtsTokenCount"] = usage.reasoning_tokens
    return out


@dataclass(frozen=True)
class TextAnswer:
    request: GeminiRequest
    plan: openai_chat.Plan


def answer_text(request: GeminiRequest) -> TextAnswer:
    return TextAnswer(request, plan_text(request))


def response_body(answer: TextAnswer, response_id: str) -> dict[str, Any]:
    """The non-streaming GenerateContentResponse."""
    plan = answer.plan
    candidates = []
    for choice in plan.choices:
        parts: list[dict[str, Any]] = []
        if choice.reasoning is not None and answer.request.include_thoughts:
            parts.append({"text": choice.reasoning, "thought": True})
        if choice.tool_calls:
            parts += _call_parts(choice)
        else:
            text_part: dict[str, Any] = {"text": "".join(choice.pieces)}
            if choice.reasoning_tokens:
                text_part["thoughtSignature"] = _text_signature(plan, choice)
            parts.append(text_part)
        candidates.append(
            {
                "content": {"parts": parts, "role": "model"},
                "finishReason": _finish(choice),
                "index": choice.index,
            }
        )
    return {
        "candidates": candidates,
        "usageMetadata": _usage(plan),
        "modelVersion": answer.request.model,
        "responseId": response_id,
    }


def sse(obj: dict[str, Any]) -> bytes:
    """One SSE event as Google frames them (CRLF line ends)."""
    return b"data: " + orjson.dumps(obj) + b"\r\n\r\n"


def stream_frames(answer: TextAnswer, response_id: str) -> tuple[list[bytes], bool]:
    """The SSE frames, and whether to then drop the connection (`fail-after`).

    Per candidate: [a thought part], one event per word or per functionCall part, then a
    finish event (empty text part + finishReason); candidates interleave round-robin. Every
    event carries usageMetadata (prompt only until the last, which has the totals). With
    fail-after=N the stream is cut after the N-th word / call, at the latest before the
    first finish event.
    """
    plan = answer.plan
    fail_after = plan.request.directives.fail_after
    per_choice = [list(_choice_events(answer, c)) for c in plan.choices]
    events: list[tuple[str, dict[str, Any]]] = []
    for step in range(max(len(e) for e in per_choice)):
        for choice_events in per_choice:
            if step < len(choice_events):
                events.append(choice_events[step])
    frames: list[bytes] = []
    seen = 0
    for i, (kind, candidate) in enumerate(events):
        if fail_after is not None and (
            kind == "finish" or (kind == "content" and seen == fail_after)
        ):
            return frames, True
        seen += kind == "content"
        last = i == len(events) - 1
        frames.append(
            sse(
                {
                    "candidates": [candidate],
                    "usageMetadata": _usage(plan, final=last),
                    "modelVersion": answer.request.model,
                    "responseId": response_id,
                }
            )
        )
    return frames, False


def _choice_events(
    answer: TextAnswer, choice: openai_chat.Choice
) -> Iterator[tuple[str, dict[str, Any]]]:
    def candidate(parts: list[dict[str, Any]], finish: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": choice.index}
        if finish is not None:
            out["finishReason"] = finish
        return out

    if choice.reasoning is not None and answer.request.include_thoughts:
        yield "reasoning", candidate([{"text": choice.reasoning, "thought": True}])
    if choice.tool_calls:
        for part in _call_parts(choice):
            yield "content", candidate([part])
        yield "finish", candidate([{"text": ""}], _finish(choice))
        return
    for piece in choice.pieces:
        yield "content", candidate([{"text": piece}])
    last: dict[str, Any] = {"text": ""}
    if choice.reasoning_tokens:
        last["thoughtSignature"] = _text_signature(answer.plan, choice)
    yield "finish", candidate([last], _finish(choice))


# --- image answers ------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageAnswer:
    request: GeminiRequest
    width: int  # as requested (before the render cap)
    height: int
    prompt: str
    references: tuple[bytes, ...]
    directives: directives.Directives

    @property
    def rendered(self) -> tuple[int, int]:
        return png.fit(self.width, self.height)


def plan_image(request: GeminiRequest) -> ImageAnswer:
    prompt = request.prompt
    found = directives.parse(prompt, allowed=directives.MEDIA, param="contents")
    ratio = Fraction(*(int(x) for x in request.aspect_ratio.split(":")))
    a, b = ratio.numerator, ratio.denominator
    k = max(1, IMAGE_SIZES[request.image_size] // max(a, b))
    references = tuple(
        p.value["data"]
        for c in request.contents
        if c.role == "user"
        for p in c.parts
        if p.kind == "inlineData" and str(p.value["mimeType"]).startswith("image/")
    )
    return ImageAnswer(request, a * k, b * k, prompt, references, found)


def render_images(answer: ImageAnswer) -> list[bytes]:
    """One PNG per candidate, seeded by (model, prompt minus directives, references, index)."""
    width, height = answer.rendered
    seed = f"{answer.request.model}\n{directives.remove(answer.prompt)}"
    refs = "".join(f"\n{len(r)}" for r in answer.references)
    return [png.render(width, height, f"{seed}{refs}\n{i}") for i in range(answer.request.n)]


def image_response_body(
    answer: ImageAnswer, images: list[bytes], response_id: str
) -> dict[str, Any]:
    prompt_tokens = math.ceil(len(answer.prompt) / 4) + REFERENCE_TOKENS * len(answer.references)
    if answer.directives.moderation:
        # Gemini blocks the prompt: no candidates, the reason in promptFeedback.
        return {
            "promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
            "usageMetadata": {"promptTokenCount": prompt_tokens, "totalTokenCount": prompt_tokens},
            "modelVersion": answer.request.model,
            "responseId": response_id,
        }
    per_image = IMAGE_TOKENS[answer.request.image_size]
    candidates = []
    for i, image in enumerate(images):
        parts: list[dict[str, Any]] = []
        if "TEXT" in answer.request.modalities:
            parts.append({"text": "Here is the image you asked for."})
        parts.append(
            {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(image).decode()}}
        )
        candidates.append(
            {"content": {"parts": parts, "role": "model"}, "finishReason": "STOP", "index": i}
        )
    output = per_image * len(images)
    return {
        "candidates": candidates,
        "usageMetadata": {
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": output,
            "totalTokenCount": prompt_tokens + output,
            "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": output}],
        },
        "modelVersion": answer.request.model,
        "responseId": response_id,
    }


# --- errors and logs ----------------------------------------------------------------------


def error_body(err: ApiError) -> dict[str, Any]:
    """Google's error shape; API-key errors carry an ErrorInfo with their reason."""
    if err.status in _STATUS:
        status = _STATUS[err.status]
    else:
        status = "INTERNAL" if err.status >= 500 else "FAILED_PRECONDITION"
    error: dict[str, Any] = {"code": err.status, "message": err.message, "status": status}
    details: list[dict[str, Any]] = []
    if err.code and err.code.isupper() and "_" in err.code:
        details.append(
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": err.code,
                "domain": "googleapis.com",
            }
        )
    if err.retry_after is not None:
        # A 429 RESOURCE_EXHAUSTED says how long to wait in a RetryInfo.
        details.append(
            {
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": f"{err.retry_after}s",
            }
        )
    if details:
        error["details"] = details
    return {"error": error}


def log_body(body: object) -> object:
    """The body as the request log keeps it: inline data as its size, not megabytes of base64."""
    if isinstance(body, dict):
        out: dict[str, Any] = {}
        for key, value in body.items():
            if key in ("inlineData", "inline_data") and isinstance(value, dict):
                data = value.get("data")
                size = len(data) * 3 // 4 if isinstance(data, str) else 0
                out[key] = {**value, "data": f"[{size} bytes]"} if "data" in value else value
            else:
                out[key] = log_body(value)
        return out
    if isinstance(body, list):
        return [log_body(v) for v in body]
    return body
