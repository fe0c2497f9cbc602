"""A sample value for a JSON Schema: the arguments the sandbox "decides" to call a tool with.

Shared by every protocol (OpenAI tools, Anthropic tool_use, Gemini functionCall):
all of them describe parameters with a JSON Schema subset.
"""

from __future__ import annotations

import math
from typing import Any

# Schemas are finite trees (no $ref resolution), but a hostile one can be deep;
# stop before Python's recursion limit turns bad input into a 500.
_MAX_DEPTH = 32


def sample(schema: object, depth: int = 0) -> Any:
    """A value satisfying the common cases of `schema`; null where we cannot tell.

    enum -> first value; const -> it; string -> "sample"; integer -> max(1, minimum);
    number -> minimum or 1.5 (both kept within "maximum"); boolean -> true;
    array -> [one item]; object -> every property in "properties" order;
    anyOf/oneOf -> first non-null alternative.
    """
    if not isinstance(schema, dict) or depth > _MAX_DEPTH:
        return None
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for union in ("anyOf", "oneOf"):
        options = schema.get(union)
        if isinstance(options, list):
            chosen = next((o for o in options if _type_of(o) != "null"), None)
            return sample(chosen, depth + 1)
    kind = _type_of(schema)
    if kind == "object":
        props = schema.get("properties")
        if not isinstance(props, dict):
            return {}
        return {name: sample(sub, depth + 1) for name, sub in props.items()}
    if kind == "array":
        return [sample(schema.get("items"), depth + 1)]
    if kind == "string":
        return "sample"
    if kind == "integer":
        value = max(1, math.ceil(_num(schema, "minimum", 1)))
        return min(value, math.floor(_num(schema, "maximum", value)))
    if kind == "number":
        return min(_num(schema, "minimum", 1.5), _num(schema, "maximum", math.inf))
    if kind == "boolean":
        return True
    return None


def _type_of(schema: object) -> str | None:
    """The schema's type; the first non-null one of a list, or implied by keywords."""
    if not isinstance(schema, dict):
        return None
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if isinstance(kind, str):
        return kind
    if "properties" in schema:
        return "object"
    if "items" in schema:
        return "array"
    return None


def _num(schema: dict[str, Any], key: str, default: float) -> float:
    value = schema.get(key)
    # bool is an int subclass; `"minimum": true` is not a number.
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return value
    return default
