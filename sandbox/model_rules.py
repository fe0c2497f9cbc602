"""Per-model request rules the sandbox enforces, as the real providers document them.

The sandbox answers for any model name, but a few real model families accept less
than the protocol in general; a request that the real provider would refuse for that
model is refused here too, so the gateway's per-model parameter policy is tested the
way the provider would test it. The first matching prefix wins; unknown names (the
sandbox's own "sandbox-chat" etc.) get the permissive defaults.

Sources (checked 2026-12):
  DeepSeek thinking mode (api-docs.deepseek.com/guides/thinking_mode): `thinking:
      {type: enabled|disabled}`, enabled by default; reasoning_content comes back beside
      content; an assistant turn that called tools must be sent back with its
      reasoning_content in every later request, or the API answers 400.
  OpenAI reasoning models (GPT-5 family): sampling parameters only at their defaults,
      `stop` not supported (as for o3 / o4-mini), and unknown arguments such as
      `thinking` are "Unrecognized request argument" errors.
  Anthropic Claude Opus 4.7 and later: adaptive thinking only (`thinking.type:
      "enabled"` with budget_tokens is a 400 naming thinking.type.adaptive and
      output_config.effort); temperature, top_p and top_k are refused ("deprecated for
      this model"). Opus/Sonnet 4.6 take both adaptive and budget thinking; older
      models (Haiku 4.5) only budget thinking.
  Gemini (ai.google.dev thinking docs): thinkingLevel is for Gemini 3 onwards; 2.5 and
      older take thinkingBudget only; both in one request is a 400 (checked in gemini.py).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ChatRules:
    # OpenAI-compatible upstreams.
    thinking_toggle: bool = False  # `thinking: {type}` accepted; thinking on by default
    reasoning_content_in_tool_turns: bool = False  # thinking mode needs it sent back
    # parameter -> the only value the model accepts (OpenAI: "Only the default ... value")
    default_only: tuple[tuple[str, float], ...] = ()
    unsupported: frozenset[str] = frozenset()  # parameters the model refuses outright
    # Anthropic Messages.
    budget_thinking: bool = True  # thinking.type "enabled" with budget_tokens
    adaptive_thinking: bool = True  # thinking.type "adaptive" and output_config.effort
    sampling: bool = True  # temperature / top_p / top_k
    # Gemini.
    thinking_level: bool = True  # generationConfig.thinkingConfig.thinkingLevel


_DEEPSEEK = ChatRules(thinking_toggle=True, reasoning_content_in_tool_turns=True)
_OPENAI_REASONING = ChatRules(
    default_only=(
        ("temperature", 1),
        ("top_p", 1),
        ("presence_penalty", 0),
        ("frequency_penalty", 0),
    ),
    unsupported=frozenset({"stop", "logprobs", "top_logprobs", "logit_bias", "thinking"}),
)
_CLAUDE_ADAPTIVE_ONLY = ChatRules(budget_thinking=False, sampling=False)
_CLAUDE_BUDGET_ONLY = ChatRules(adaptive_thinking=False)

RULES: tuple[tuple[str, ChatRules], ...] = (
    ("deepseek-", _DEEPSEEK),
    ("gpt-5", _OPENAI_REASONING),
    ("claude-opus-4-7", _CLAUDE_ADAPTIVE_ONLY),
    ("claude-opus-4-8", _CLAUDE_ADAPTIVE_ONLY),
    ("claude-opus-4-6", ChatRules()),
    ("claude-sonnet-4-6", ChatRules()),
    ("claude-", _CLAUDE_BUDGET_ONLY),
    ("gemini-1", ChatRules(thinking_level=False)),
    ("gemini-2", ChatRules(thinking_level=False)),
)
DEFAULT = ChatRules()


def rules_for(model: str) -> ChatRules:
    for prefix, rules in RULES:
        if model.startswith(prefix):
            return rules
    return DEFAULT
