"""What a text call may cost (the hold) and what it did cost (the capture). Pure.

All amounts are integer µIDR; a charge rounds up once, at the end.
"""

from __future__ import annotations

from services.common.catalog import TextModel
from services.common.money import ceil_div
from services.common.usage import Usage, estimate_usage
from services.gateway.chat_request import ChatCall

TOKENS_PER_MILLION = 1_000_000
# A byte-level tokenizer never yields more tokens than bytes; the overheads
# cover role markers and the chat template. An image part counts as a fixed
# number of tokens, above what upstreams charge for one.
PER_MESSAGE_OVERHEAD_TOKENS = 16
PER_REQUEST_OVERHEAD_TOKENS = 32
IMAGE_PART_TOKENS = 2_000


def prompt_token_bound(call: ChatCall) -> int:
    """An upper bound on the prompt tokens any upstream will report for this call."""
    return (
        call.prompt_bytes
        + call.messages * PER_MESSAGE_OVERHEAD_TOKENS
        + PER_REQUEST_OVERHEAD_TOKENS
        + call.image_parts * IMAGE_PART_TOKENS
    )


def hold_micros(call: ChatCall) -> int:
    """The worst-case cost: the prompt bound at the dearest prompt rate (a prompt may
    be written to the upstream's cache whole, and cache writes may cost more than
    input) plus every choice using max output."""
    model = call.model
    prompt_rate = max(
        model.input_micros_per_m, model.cached_input_micros_per_m, model.cache_write_micros_per_m
    )
    worst = (
        prompt_token_bound(call) * prompt_rate
        + call.choices * call.max_output_tokens * model.output_micros_per_m
    )
    return max(1, ceil_div(worst, TOKENS_PER_MILLION))


def cost_micros(model: TextModel, usage: Usage) -> int:
    """The actual cost: prompt tokens read from the upstream's cache at the cached rate,
    those written to it at the cache-write rate, the rest at list price."""
    cached = min(usage.cached_prompt_tokens, usage.prompt_tokens)
    written = min(usage.cache_write_prompt_tokens, usage.prompt_tokens - cached)
    total = (
        (usage.prompt_tokens - cached - written) * model.input_micros_per_m
        + cached * model.cached_input_micros_per_m
        + written * model.cache_write_micros_per_m
        + usage.completion_tokens * model.output_micros_per_m
    )
    return ceil_div(total, TOKENS_PER_MILLION)


def estimated_usage(call: ChatCall, chunks_delivered: int) -> Usage:
    """What a stream cut short consumed, when the upstream never reported usage:
    the one estimator (services/common/usage) fed what the gateway knows of the call
    (prompt characters, image parts, chunks produced)."""
    return estimate_usage(
        prompt_chars=call.prompt_chars,
        image_parts=call.image_parts,
        output_chunks=chunks_delivered,
        max_output_tokens=call.choices * call.max_output_tokens,
    )
