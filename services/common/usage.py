"""Token usage: the one type for what an upstream call consumed, and the one estimator
for a call whose upstream never said. Pure.

Providers build a Usage from the upstream's report (or estimate it), send it to the
gateway as aiport.v1.TokenUsage (`to_proto` / `from_proto`), and the gateway prices
it. The counts follow OpenAI's convention: `prompt_tokens` includes the cached and
cache-write tokens, `completion_tokens` includes the reasoning tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiport.v1 import common_pb2

from services.common.money import ceil_div

# The estimate when no usage was reported: ~4 characters a token (both directions),
# an image part at what upstreams typically count for one, and, where only chunks were
# seen (the gateway does not read the chunks' text), one token per chunk: upstreams
# stream about a token per chunk.
CHARS_PER_TOKEN_ESTIMATE = 4
IMAGE_PART_TOKENS_ESTIMATE = 258


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    # Parts of prompt_tokens: read from, and written to, the upstream's prompt cache.
    cached_prompt_tokens: int = 0
    reasoning_tokens: int = 0  # part of completion_tokens
    cache_write_prompt_tokens: int = 0
    # The upstream never reported these counts: they come from `estimate_usage`.
    estimated: bool = False

    def to_public(self) -> dict[str, Any]:
        """The OpenAI `usage` object clients see. Cache writes and `estimated` are ours
        (billing and logs): OpenAI's shape has no field for them, so they are not shown."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_prompt_tokens},
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
        }

    def to_proto(self) -> common_pb2.TokenUsage:
        return common_pb2.TokenUsage(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            cached_prompt_tokens=self.cached_prompt_tokens,
            reasoning_tokens=self.reasoning_tokens,
            cache_write_prompt_tokens=self.cache_write_prompt_tokens,
            estimated=self.estimated,
        )

    @classmethod
    def from_proto(cls, pb: common_pb2.TokenUsage) -> Usage:
        return cls(
            prompt_tokens=pb.prompt_tokens,
            completion_tokens=pb.completion_tokens,
            cached_prompt_tokens=pb.cached_prompt_tokens,
            reasoning_tokens=pb.reasoning_tokens,
            cache_write_prompt_tokens=pb.cache_write_prompt_tokens,
            estimated=pb.estimated,
        )


def estimate_usage(
    *,
    prompt_chars: int,
    image_parts: int = 0,
    output_chars: int | None = None,
    output_chunks: int = 0,
    max_output_tokens: int | None = None,
) -> Usage:
    """What a call consumed when its upstream never reported usage (a stream that broke,
    or ended without a usage report).

    The prompt: its characters at ~4 a token, plus each image part. The output: its
    characters at ~4 a token when they were seen (providers read the text), else one
    token per chunk produced (the gateway counts chunks); never more than the call
    allowed (`max_output_tokens` over all choices), since billing held no more.
    """
    prompt = (
        ceil_div(prompt_chars, CHARS_PER_TOKEN_ESTIMATE) + image_parts * IMAGE_PART_TOKENS_ESTIMATE
    )
    if output_chars is not None:
        completion = ceil_div(output_chars, CHARS_PER_TOKEN_ESTIMATE)
    else:
        completion = output_chunks
    if max_output_tokens is not None:
        completion = min(completion, max_output_tokens)
    return Usage(prompt_tokens=prompt, completion_tokens=completion, estimated=True)
