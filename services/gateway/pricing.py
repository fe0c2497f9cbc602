"""What a text call may cost (the hold) and what it did cost (the capture). Pure.

All amounts are integer µIDR; a charge rounds up once, at the end.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.common.catalog import TextModel
from services.common.money import ceil_div
from services.gateway.chat_request import ChatCall

TOKENS_PER_MILLION = 1_000_000
# A byte-level tokenizer never yields more tokens than bytes; the overheads
# cover role markers and the chat template. An image part counts as a fixed
# number of tokens, above what upstreams charge for one.
PER_MESSAGE_OVERHEAD_TOKENS = 16
PER_REQUEST_OVERHEAD_TOKENS = 32
IMAGE_PART_TOKENS = 2_000
# The usage estimate for a stream that broke or was abandoned midway.
CHARS_PER_TOKEN_ESTIMATE = 4


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_prompt_tokens: int = 0
    reasoning_tokens: int = 0


def prompt_token_bound(call: ChatCall) -> int:
    """An upper bound on the prompt tokens any upstream will report for this call."""
    return (
        call.prompt_bytes
        + call.messages * PER_MESSAGE_OVERHEAD_TOKENS
        + PER_REQUEST_OVERHEAD_TOKENS
        + call.image_parts * IMAGE_PART_TOKENS
    )


def hold_micros(call: ChatCall) -> int:
    """The worst-case cost: the prompt bound plus every choice using max output."""
    model = call.model
    worst = (
        prompt_token_bound(call) * model.input_micros_per_m
        + call.choices * call.max_output_tokens * model.output_micros_per_m
    )
    return max(1, ceil_div(worst, TOKENS_PER_MILLION))


def cost_micros(model: TextModel, usage: Usage) -> int:
    """The actual cost: cached prompt tokens at the cached rate, the rest at list price."""
    cached = min(usage.cached_prompt_tokens, usage.prompt_tokens)
    total = (
        (usage.prompt_tokens - cached) * model.input_micros_per_m
        + cached * model.cached_input_micros_per_m
        + usage.completion_tokens * model.output_micros_per_m
    )
    return ceil_div(total, TOKENS_PER_MILLION)


def estimated_usage(call: ChatCall, chunks_delivered: int) -> Usage:
    """What a stream cut short consumed, when the upstream never reported usage.

    The prompt at ~4 characters a token, and one completion token per chunk
    delivered (upstreams stream about a token per chunk).
    """
    prompt = ceil_div(call.prompt_chars, CHARS_PER_TOKEN_ESTIMATE) + call.image_parts * 258
    return Usage(
        prompt_tokens=prompt, completion_tokens=min(chunks_delivered, call.max_output_tokens)
    )
