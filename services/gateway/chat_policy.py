"""A text model's parameter policy applied to a validated chat request (pure, no I/O).

The catalog says per model what becomes of each public parameter (`parameters`: pass,
drop, or refuse with our own 400 naming it, before any hold) and how the upstream
switches thinking (`thinking`). This turns the canonical request the parser built into
the one the providers service forwards: refused parameters raise, dropped ones go, and
thinking is made explicit in a `thinking` instruction every chat translator renders
for its protocol:

    {"control": <ThinkingPolicy.control>, "type": "enabled" | "disabled", "off"?: str}

  reasoning model, reasoning_effort given -> type enabled (+ reasoning_effort, unless
                                             the model takes no effort levels)
  reasoning model, no reasoning_effort    -> no instruction: the upstream's default
  non-reasoning model                     -> type disabled, so an upstream that thinks
                                             by default (DeepSeek, GLM, Kimi) does not
                                             think, and bill for it, unasked
"""

from __future__ import annotations

from typing import Any

from services.common.catalog import TextModel
from services.gateway.errors import invalid_request

# Controls with nothing to switch: no instruction is sent for them.
_NOTHING_TO_SWITCH = frozenset({"none", "always"})


def apply_model_policy(model: TextModel, request: dict[str, Any]) -> dict[str, Any]:
    """The request as this model's upstream must get it; PublicError (400) for a
    parameter the model refuses."""
    out = dict(request)
    for name, rule in model.parameters.items():
        if name not in out:
            continue
        if rule == "refuse":
            raise invalid_request(f"The model '{model.id}' does not support '{name}'.", name)
        del out[name]

    policy = model.thinking
    effort = out.pop("reasoning_effort", None)
    if policy.control in _NOTHING_TO_SWITCH:
        if effort is not None and policy.effort:
            out["reasoning_effort"] = effort
        return out
    instruction: dict[str, Any] = {"control": policy.control}
    if not model.supports_reasoning:
        instruction["type"] = "disabled"
        if policy.off is not None:
            instruction["off"] = policy.off
    elif effort is not None:
        instruction["type"] = "enabled"
        if policy.effort:
            out["reasoning_effort"] = effort
    else:
        return out
    out["thinking"] = instruction
    return out
