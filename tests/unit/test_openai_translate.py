"""Translation between the public OpenAI chat schema and an OpenAI-compatible upstream.

The translator answers with the canonical answer (TextCompletion, TextChunk); it is
checked as the client would see it: the exact public JSON that the chat renderer
(canonical_answer) writes from it.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiport.v1 import providers_pb2, text_pb2

from services.common.canonical_answer import chat_chunk, chat_completion
from services.common.canonical_chat import from_chat_body, prompt_size
from services.common.usage import (
    CHARS_PER_TOKEN_ESTIMATE,
    IMAGE_PART_TOKENS_ESTIMATE,
    Usage,
)
from services.providers.adapters.openai_chat_translate import (
    ChunkTranslator,
    Identity,
    UpstreamProtocolError,
    parse_usage,
    public_completion,
    upstream_request,
)
from tests.unit.canonical_answers import chunk_json, completion_json

IDENTITY = Identity(completion_id="chatcmpl-aiport0001", model="gpt-5.4", created=1767225600)


def usage_json(prompt: int, completion: int, cached: int = 0, reasoning: int = 0) -> dict[str, Any]:
    """The public usage object, written out by hand."""
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }


def public_chunk(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-aiport0001",
        "object": "chat.completion.chunk",
        "created": 1767225600,
        "model": "gpt-5.4",
        "choices": choices,
        **extra,
    }


def choice(delta: dict[str, Any], finish: str | None = None, index: int = 0) -> dict[str, Any]:
    return {"index": index, "delta": delta, "finish_reason": finish}


def upstream_chunk(
    choices: list[dict[str, Any]], usage: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A chunk as OpenAI streams it: its own id and model, fingerprint, usage null."""
    return {
        "id": "chatcmpl-UPSTREAM",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-5.4-2026-03-05",
        "system_fingerprint": "fp_upstream",
        "service_tier": "default",
        "choices": choices,
        "usage": usage,
    }


def upstream_choice(
    delta: dict[str, Any], finish: str | None = None, index: int = 0
) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}


def decode(chunks: list[text_pb2.TextChunk]) -> list[Any]:
    return [chunk_json(c) for c in chunks]


# --- Usage / parse_usage ----------------------------------------------------------


def test_token_counts_public_shape() -> None:
    counts = Usage(
        prompt_tokens=100, completion_tokens=40, cached_prompt_tokens=30, reasoning_tokens=12
    )
    assert counts.to_public() == usage_json(100, 40, cached=30, reasoning=12)


def test_token_counts_details_present_when_zero() -> None:
    assert Usage(5, 0).to_public() == usage_json(5, 0)


def test_parse_usage_openai_shape() -> None:
    usage = {
        "prompt_tokens": 1200,
        "completion_tokens": 300,
        "total_tokens": 1500,
        "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 192,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    assert parse_usage(usage) == Usage(1200, 300, cached_prompt_tokens=1024, reasoning_tokens=192)


def test_parse_usage_deepseek_cache_hit_tokens() -> None:
    usage = {
        "prompt_tokens": 800,
        "completion_tokens": 50,
        "total_tokens": 850,
        "prompt_cache_hit_tokens": 640,
        "prompt_cache_miss_tokens": 160,
        "completion_tokens_details": {"reasoning_tokens": 20},
    }
    assert parse_usage(usage) == Usage(800, 50, cached_prompt_tokens=640, reasoning_tokens=20)


def test_parse_usage_without_details() -> None:
    assert parse_usage({"prompt_tokens": 9, "completion_tokens": 3}) == Usage(9, 3)


def test_parse_usage_null_details() -> None:
    usage = {
        "prompt_tokens": 9,
        "completion_tokens": 3,
        "prompt_tokens_details": None,
        "completion_tokens_details": None,
    }
    assert parse_usage(usage) == Usage(9, 3)


@pytest.mark.parametrize(
    "usage",
    [
        {
            "prompt_tokens": 10,
            "completion_tokens": 1,
            "prompt_tokens_details": {"cached_tokens": 25},
        },
        {"prompt_tokens": 10, "completion_tokens": 1, "prompt_cache_hit_tokens": 25},
    ],
    ids=["openai", "deepseek"],
)
def test_cached_tokens_never_exceed_prompt_tokens(usage: dict[str, Any]) -> None:
    assert parse_usage(usage) == Usage(10, 1, cached_prompt_tokens=10)


def test_parse_usage_ignores_nonsense_counts() -> None:
    usage = {
        "prompt_tokens": -5,
        "completion_tokens": True,
        "prompt_tokens_details": ["not", "a", "dict"],
        "completion_tokens_details": {"reasoning_tokens": "7"},
    }
    assert parse_usage(usage) == Usage(0, 0)


def test_parse_usage_reads_cache_writes_within_the_uncached_prompt() -> None:
    usage = {
        "prompt_tokens": 100,
        "completion_tokens": 1,
        "prompt_tokens_details": {"cached_tokens": 30, "cache_write_tokens": 50},
    }
    assert parse_usage(usage) == Usage(
        100, 1, cached_prompt_tokens=30, cache_write_prompt_tokens=50
    )
    usage["prompt_tokens_details"] = {"cached_tokens": 30, "cache_write_tokens": 500}
    assert parse_usage(usage).cache_write_prompt_tokens == 70


@pytest.mark.parametrize("usage", [None, [], "12", 12])
def test_parse_usage_rejects_non_objects(usage: Any) -> None:
    with pytest.raises(UpstreamProtocolError):
        parse_usage(usage)


# --- upstream_request --------------------------------------------------------------------


def canonical_request() -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 256,
        "temperature": 0.2,
    }


def call(request: dict[str, Any]) -> providers_pb2.CanonicalChat:
    return from_chat_body(request)


def test_upstream_request_non_stream() -> None:
    body = upstream_request(
        call(canonical_request()), "gpt-5.4-2026-03-05", stream=False, max_tokens_field="max_tokens"
    )
    assert body == {
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 256,
        "temperature": 0.2,
        "model": "gpt-5.4-2026-03-05",
    }
    assert "stream" not in body and "stream_options" not in body


def test_upstream_request_stream_asks_for_usage() -> None:
    body = upstream_request(
        call(canonical_request()), "deepseek-chat", stream=True, max_tokens_field="max_tokens"
    )
    assert body["model"] == "deepseek-chat"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 256


def test_upstream_request_renames_max_tokens_for_reasoning_providers() -> None:
    body = upstream_request(
        call(canonical_request()),
        "gpt-5.5",
        stream=True,
        max_tokens_field="max_completion_tokens",
    )
    assert "max_tokens" not in body
    assert body["max_completion_tokens"] == 256


def test_upstream_request_without_max_tokens_adds_none() -> None:
    request = call({"messages": [{"role": "user", "content": "Hi"}]})
    body = upstream_request(
        request, "gpt-5.5", stream=False, max_tokens_field="max_completion_tokens"
    )
    assert body == {"messages": [{"role": "user", "content": "Hi"}], "model": "gpt-5.5"}


# --- public_completion -------------------------------------------------------------------


def openai_completion(message: dict[str, Any], finish: str | None = "stop") -> dict[str, Any]:
    return {
        "id": "chatcmpl-UPSTREAM",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-5.4-2026-03-05",
        "system_fingerprint": "fp_upstream",
        "service_tier": "default",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": 20,
            "completion_tokens": 7,
            "total_tokens": 27,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        },
    }


def test_public_completion_text_answer() -> None:
    upstream = openai_completion(
        {"role": "assistant", "content": "Halo!", "refusal": None, "annotations": []}
    )
    completion, usage = public_completion(upstream, IDENTITY)
    assert completion_json(completion, usage) == {
        "id": "chatcmpl-aiport0001",
        "object": "chat.completion",
        "created": 1767225600,
        "model": "gpt-5.4",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Halo!"},
                "finish_reason": "stop",
            }
        ],
        "usage": usage_json(20, 7),
    }
    assert usage == Usage(20, 7)


def test_public_completion_tool_calls_keep_null_content() -> None:
    upstream = openai_completion(
        {
            "role": "assistant",
            "content": None,
            "refusal": None,
            "tool_calls": [
                {
                    "id": "call_abc",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Jakarta"}'},
                },
                {
                    "id": "call_def",
                    "function": {"name": "get_time", "arguments": "{}"},
                },
            ],
        },
        finish="tool_calls",
    )
    completion, usage = public_completion(upstream, IDENTITY)
    assert not completion.choices[0].message.HasField("text")
    raw = chat_completion(completion, usage, 0)
    assert b'"content":null' in raw
    body = completion_json(completion, usage)
    assert body["choices"] == [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_abc",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Jakarta"}'},
                    },
                    {
                        "id": "call_def",
                        "type": "function",
                        "function": {"name": "get_time", "arguments": "{}"},
                    },
                ],
            },
            "finish_reason": "tool_calls",
        }
    ]


def test_public_completion_deepseek_reasoning_and_cache() -> None:
    upstream = {
        "id": "5f3c-deepseek",
        "object": "chat.completion",
        "created": 2,
        "model": "deepseek-reasoner",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "42",
                    "reasoning_content": "Think step by step.",
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 64,
            "completion_tokens": 30,
            "total_tokens": 94,
            "prompt_cache_hit_tokens": 60,
            "prompt_cache_miss_tokens": 4,
            "completion_tokens_details": {"reasoning_tokens": 25},
        },
    }
    identity = Identity("chatcmpl-x", "deepseek-v4-pro", 1767225601)
    completion, usage = public_completion(upstream, identity)
    assert completion_json(completion, usage) == {
        "id": "chatcmpl-x",
        "object": "chat.completion",
        "created": 1767225601,
        "model": "deepseek-v4-pro",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "42",
                    "reasoning_content": "Think step by step.",
                },
                "finish_reason": "stop",
            }
        ],
        "usage": usage_json(64, 30, cached=60, reasoning=25),
    }
    assert usage == Usage(64, 30, cached_prompt_tokens=60, reasoning_tokens=25)


def test_public_completion_keeps_logprobs_and_choice_indexes() -> None:
    logprobs = {
        "content": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105], "top_logprobs": []}]
    }
    upstream = openai_completion({"role": "assistant", "content": "Hi"})
    upstream["choices"] = [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hi"},
            "logprobs": logprobs,
            "finish_reason": "stop",
        },
        {
            "index": 1,
            "message": {"role": "assistant", "content": "Hey"},
            "logprobs": None,
            "finish_reason": "length",
        },
    ]
    completion, usage = public_completion(upstream, IDENTITY)
    assert completion_json(completion, usage)["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hi"},
            "logprobs": logprobs,
            "finish_reason": "stop",
        },
        {
            "index": 1,
            "message": {"role": "assistant", "content": "Hey"},
            "finish_reason": "length",
        },
    ]


def test_public_completion_missing_finish_reason_becomes_stop() -> None:
    completion, usage = public_completion(
        openai_completion({"content": "x"}, finish=None), IDENTITY
    )
    assert completion.choices[0].finish_reason == text_pb2.FINISH_REASON_STOP
    assert completion_json(completion, usage)["choices"][0]["finish_reason"] == "stop"


def test_public_completion_usage_always_has_details() -> None:
    upstream = openai_completion({"role": "assistant", "content": "ok"})
    upstream["usage"] = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
    completion, usage = public_completion(upstream, IDENTITY)
    assert completion_json(completion, usage)["usage"] == usage_json(3, 1)
    assert usage == Usage(3, 1)


def test_public_completion_unknown_finish_reason_becomes_stop() -> None:
    upstream = openai_completion({"content": "x"}, finish="eos_token")
    completion, usage = public_completion(upstream, IDENTITY)
    assert completion_json(completion, usage)["choices"][0]["finish_reason"] == "stop"


def test_public_completion_legacy_function_call_is_tool_calls() -> None:
    upstream = openai_completion({"content": None}, finish="function_call")
    completion, usage = public_completion(upstream, IDENTITY)
    assert completion_json(completion, usage)["choices"][0]["finish_reason"] == "tool_calls"


def test_public_completion_content_parts_become_their_joined_text() -> None:
    parts = [{"type": "text", "text": "Ha"}, {"type": "text", "text": "lo"}, "junk"]
    completion, usage = public_completion(openai_completion({"content": parts}), IDENTITY)
    message = completion_json(completion, usage)["choices"][0]["message"]
    assert message == {"role": "assistant", "content": "Halo"}


@pytest.mark.parametrize(
    "upstream",
    [
        None,
        [],
        {"error": {"message": "overloaded"}},
        {"choices": "nope", "usage": {}},
        {"choices": ["not an object"], "usage": {"prompt_tokens": 1}},
        {"choices": [{"index": 0, "finish_reason": "stop"}], "usage": {"prompt_tokens": 1}},
        {
            "choices": [{"index": 0, "message": {"content": "x", "tool_calls": ["bad"]}}],
            "usage": {"prompt_tokens": 1},
        },
    ],
    ids=["null", "list", "error", "choices-not-list", "choice-str", "no-message", "bad-tool"],
)
def test_public_completion_rejects_malformed_answers(upstream: Any) -> None:
    with pytest.raises(UpstreamProtocolError):
        public_completion(upstream, IDENTITY)


# --- ChunkTranslator ---------------------------------------------------------------------


def translator(prompt_chars: int = 0) -> ChunkTranslator:
    return ChunkTranslator(IDENTITY, prompt_chars=prompt_chars)


ROLE_CHUNK = public_chunk([choice({"role": "assistant"})])


def test_role_chunk_is_held_until_first_content() -> None:
    t = translator()
    role = upstream_chunk([upstream_choice({"role": "assistant", "content": "", "refusal": None})])
    assert t.feed(role) == []
    assert not t.output_started
    out = t.feed(upstream_chunk([upstream_choice({"content": "Hal"})]))
    assert t.output_started
    assert decode(out) == [ROLE_CHUNK, public_chunk([choice({"content": "Hal"})])]
    # Afterwards each upstream chunk gives exactly one public chunk.
    out = t.feed(upstream_chunk([upstream_choice({"content": "o"})]))
    assert decode(out) == [public_chunk([choice({"content": "o"})])]


def test_role_and_content_in_one_upstream_chunk_pass_through() -> None:
    t = translator()
    out = t.feed(upstream_chunk([upstream_choice({"role": "assistant", "content": "Hi"})]))
    assert decode(out) == [public_chunk([choice({"role": "assistant", "content": "Hi"})])]


def test_empty_content_chunks_do_not_start_output() -> None:
    t = translator()
    assert t.feed(upstream_chunk([upstream_choice({"role": "assistant"})])) == []
    assert t.feed(upstream_chunk([upstream_choice({"content": ""})])) == []
    assert not t.output_started
    out = t.feed(upstream_chunk([upstream_choice({"content": "x"})]))
    assert decode(out) == [
        ROLE_CHUNK,
        public_chunk([choice({})]),
        public_chunk([choice({"content": "x"})]),
    ]


def test_finish_reason_alone_starts_output() -> None:
    t = translator()
    assert t.feed(upstream_chunk([upstream_choice({"role": "assistant"})])) == []
    out = t.feed(upstream_chunk([upstream_choice({}, finish="length")]))
    assert t.output_started
    assert decode(out) == [ROLE_CHUNK, public_chunk([choice({}, finish="length")])]


def test_chunks_carry_our_id_and_model_not_the_upstreams() -> None:
    t = translator()
    (chunk,) = t.feed(upstream_chunk([upstream_choice({"content": "x"})]))
    assert (chunk.id, chunk.model, chunk.created) == (
        "chatcmpl-aiport0001",
        "gpt-5.4",
        1767225600,
    )
    raw = chat_chunk(chunk)
    assert b"UPSTREAM" not in raw and b"fp_upstream" not in raw and b"2026-03-05" not in raw
    body = chunk_json(chunk)
    assert list(body) == ["id", "object", "created", "model", "choices"]
    assert body == public_chunk([choice({"content": "x"})])


def test_tool_call_fragments_keep_index_id_name_and_arguments() -> None:
    t = translator()
    feeds = [
        upstream_chunk([upstream_choice({"role": "assistant", "content": None})]),
        upstream_chunk(
            [
                upstream_choice(
                    {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_a",
                                "type": "function",
                                "function": {"name": "get_weather", "arguments": ""},
                            }
                        ]
                    }
                )
            ]
        ),
        upstream_chunk(
            [upstream_choice({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]})]
        ),
        upstream_chunk(
            [
                upstream_choice(
                    {"tool_calls": [{"index": 0, "function": {"arguments": '"Bandung"}'}}]}
                )
            ]
        ),
        upstream_chunk(
            [
                upstream_choice(
                    {
                        "tool_calls": [
                            {
                                "index": 1,
                                "id": "call_b",
                                "type": "function",
                                "function": {"name": "get_time", "arguments": "{}"},
                            }
                        ]
                    }
                )
            ]
        ),
        upstream_chunk([upstream_choice({}, finish="tool_calls")]),
    ]
    out: list[text_pb2.TextChunk] = []
    for chunk in feeds:
        out.extend(t.feed(chunk))
    assert decode(out) == [
        ROLE_CHUNK,
        public_chunk(
            [
                choice(
                    {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_a",
                                "type": "function",
                                "function": {"name": "get_weather", "arguments": ""},
                            }
                        ]
                    }
                )
            ]
        ),
        public_chunk(
            [choice({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]})]
        ),
        public_chunk(
            [choice({"tool_calls": [{"index": 0, "function": {"arguments": '"Bandung"}'}}]})]
        ),
        public_chunk(
            [
                choice(
                    {
                        "tool_calls": [
                            {
                                "index": 1,
                                "id": "call_b",
                                "type": "function",
                                "function": {"name": "get_time", "arguments": "{}"},
                            }
                        ]
                    }
                )
            ]
        ),
        public_chunk([choice({}, finish="tool_calls")]),
    ]


def test_tool_call_delta_with_an_id_is_always_a_function_with_arguments() -> None:
    # By design: an upstream that leaves out "type" or "arguments" on the opening
    # fragment still gives clients "type": "function" and "arguments": "".
    t = translator()
    out = t.feed(
        upstream_chunk(
            [upstream_choice({"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f"}}]})]
        )
    )
    assert decode(out) == [
        public_chunk(
            [
                choice(
                    {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "c",
                                "type": "function",
                                "function": {"name": "f", "arguments": ""},
                            }
                        ]
                    }
                )
            ]
        )
    ]


def test_unknown_finish_reason_in_a_stream_becomes_stop() -> None:
    out = translator().feed(upstream_chunk([upstream_choice({}, finish="eos_token")]))
    assert decode(out) == [public_chunk([choice({}, finish="stop")])]


def test_reasoning_content_streams_and_starts_output() -> None:
    t = translator()
    assert t.feed(upstream_chunk([upstream_choice({"role": "assistant", "content": None})])) == []
    out = t.feed(upstream_chunk([upstream_choice({"content": None, "reasoning_content": "Hmm"})]))
    assert decode(out) == [ROLE_CHUNK, public_chunk([choice({"reasoning_content": "Hmm"})])]


def test_logprobs_pass_through_in_chunks() -> None:
    t = translator()
    logprobs = {"content": [{"token": "x", "logprob": -0.5, "bytes": [120], "top_logprobs": []}]}
    chunk = upstream_chunk(
        [{"index": 0, "delta": {"content": "x"}, "logprobs": logprobs, "finish_reason": None}]
    )
    (out,) = t.feed(chunk)
    assert chunk_json(out)["choices"] == [
        {"index": 0, "delta": {"content": "x"}, "logprobs": logprobs, "finish_reason": None}
    ]


def test_usage_only_chunk_is_captured_and_returned_by_finish() -> None:
    t = translator(prompt_chars=999)
    t.feed(upstream_chunk([upstream_choice({"role": "assistant", "content": ""})]))
    t.feed(upstream_chunk([upstream_choice({"content": "Hi"})]))
    t.feed(upstream_chunk([upstream_choice({}, finish="stop")]))
    reported = {
        "prompt_tokens": 17,
        "completion_tokens": 2,
        "total_tokens": 19,
        "prompt_tokens_details": {"cached_tokens": 5},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    assert t.feed(upstream_chunk([], usage=reported)) == []
    closing, usage = t.finish()
    assert usage == Usage(17, 2, cached_prompt_tokens=5)
    # No usage chunk: the gateway's renderer writes it from the usage event.
    assert closing == []


def test_usage_on_a_chunk_with_choices_is_captured() -> None:
    # Some upstreams (Gemini's OpenAI endpoint among them) put usage on the last content chunk.
    t = translator(prompt_chars=999)
    out = t.feed(
        upstream_chunk(
            [upstream_choice({"role": "assistant", "content": "Done."}, finish="stop")],
            usage={"prompt_tokens": 8, "completion_tokens": 2, "total_tokens": 10},
        )
    )
    assert decode(out) == [
        public_chunk([choice({"role": "assistant", "content": "Done."}, finish="stop")])
    ]
    closing, usage = t.finish()
    assert usage == Usage(8, 2)
    assert closing == []


def test_deepseek_stream_usage_maps_cache_hits() -> None:
    t = translator()
    t.feed(upstream_chunk([upstream_choice({"content": "x"}, finish="stop")]))
    t.feed(
        upstream_chunk(
            [],
            usage={
                "prompt_tokens": 40,
                "completion_tokens": 1,
                "prompt_cache_hit_tokens": 32,
                "prompt_cache_miss_tokens": 8,
            },
        )
    )
    closing, usage = t.finish()
    assert usage == Usage(40, 1, cached_prompt_tokens=32)
    assert usage.to_public() == usage_json(40, 1, cached=32)
    assert closing == []


def test_later_usage_replaces_earlier_usage() -> None:
    t = translator()
    t.feed(
        upstream_chunk(
            [upstream_choice({"content": "a"})], usage={"prompt_tokens": 5, "completion_tokens": 1}
        )
    )
    t.feed(
        upstream_chunk(
            [upstream_choice({"content": "b"})], usage={"prompt_tokens": 5, "completion_tokens": 2}
        )
    )
    t.feed(upstream_chunk([upstream_choice({"content": "c"})], usage=None))
    assert t.finish()[1] == Usage(5, 2)


def test_usage_is_estimated_when_the_upstream_never_reports_it() -> None:
    t = translator(prompt_chars=10)  # ceil(10 / 4) = 3
    t.feed(upstream_chunk([upstream_choice({"role": "assistant", "content": ""})]))
    t.feed(upstream_chunk([upstream_choice({"reasoning_content": "abc"})]))  # 3 chars
    t.feed(upstream_chunk([upstream_choice({"content": "defg"})]))  # 4 chars
    t.feed(
        upstream_chunk(
            [
                upstream_choice(
                    {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "c",
                                "type": "function",
                                "function": {"name": "fn_name_not_counted", "arguments": '{"a"'},
                            }
                        ]
                    }
                )
            ]
        )
    )
    t.feed(upstream_chunk([upstream_choice({}, finish="stop")]))
    # 3 + 4 + 4 = 11 completion chars -> ceil(11 / 4) = 3 tokens.
    assert t.estimated_usage() == Usage(3, 3, estimated=True)
    closing, usage = t.finish()
    assert usage == Usage(3, 3, estimated=True)
    assert usage.to_public() == usage_json(3, 3)
    assert closing == []


def test_estimate_covers_output_so_far_for_a_mid_stream_failure() -> None:
    t = translator(prompt_chars=0)
    t.feed(upstream_chunk([upstream_choice({"content": "x" * 9})]))
    assert t.estimated_usage() == Usage(0, 3, estimated=True)
    t.feed(upstream_chunk([upstream_choice({"content": "y" * 3})]))
    assert t.estimated_usage() == Usage(0, 3, estimated=True)
    t.feed(upstream_chunk([upstream_choice({"content": "z"})]))
    assert t.estimated_usage() == Usage(0, 4, estimated=True)


def test_a_broken_streams_estimate_counts_the_prompts_images() -> None:
    """Providers' estimate (a stream broken after output) prices the prompt's images
    as the gateway's hold does, not as free: each image part is a fixed token count."""
    body: dict[str, object] = {
        "messages": [
            {"role": "system", "content": "Jawab singkat."},  # 14 chars
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Apa ini?"},  # 8 chars
                    {"type": "image_url", "image_url": {"url": "https://e.x/a.png"}},
                    {"type": "image_url", "image_url": {"url": "https://e.x/b.png"}},
                ],
            },
        ]
    }
    assert prompt_size(from_chat_body(body).request) == (22, 2)
    t = ChunkTranslator(IDENTITY, prompt_chars=22, image_parts=2)
    t.feed(upstream_chunk([upstream_choice({"content": "x" * 8})]))
    prompt = -(-22 // CHARS_PER_TOKEN_ESTIMATE) + 2 * IMAGE_PART_TOKENS_ESTIMATE
    assert t.estimated_usage() == Usage(prompt, 2, estimated=True)


def test_finish_flushes_held_chunks_and_returns_the_usage() -> None:
    # An upstream that opened with the role and then ended cleanly with no output.
    t = translator(prompt_chars=4)
    assert t.feed(upstream_chunk([upstream_choice({"role": "assistant", "content": ""})])) == []
    closing, usage = t.finish()
    assert usage == Usage(1, 0, estimated=True)
    # The held role chunk only: no usage chunk follows it.
    assert decode(closing) == [ROLE_CHUNK]
    # Flushed once: a second finish has nothing left to give.
    assert t.finish()[0] == []


def test_finish_after_output_gives_no_chunks_only_the_usage() -> None:
    # finish() no longer writes a usage-only chunk (choices []): the gateway's chat
    # renderer writes it from the usage event. After output there is nothing held.
    t = translator()
    t.feed(upstream_chunk([upstream_choice({"content": "x"}, finish="stop")]))
    closing, usage = t.finish()
    assert closing == []
    assert usage == Usage(0, 1, estimated=True)


def test_usage_only_chunk_does_not_release_the_held_role() -> None:
    t = translator()
    assert t.feed(upstream_chunk([upstream_choice({"role": "assistant"})])) == []
    assert t.feed(upstream_chunk([], usage={"prompt_tokens": 1, "completion_tokens": 0})) == []
    assert not t.output_started


@pytest.mark.parametrize(
    "chunk",
    [
        None,
        "data",
        [],
        {"choices": ["not an object"]},
        {"choices": [{"index": 0, "delta": {"tool_calls": ["bad"]}}]},
        {"choices": [], "usage": "lots"},
    ],
    ids=["null", "str", "list", "choice-str", "tool-call-str", "usage-str"],
)
def test_malformed_chunks_are_protocol_errors(chunk: Any) -> None:
    with pytest.raises(UpstreamProtocolError):
        translator().feed(chunk)


def test_parameters_an_upstream_rejects_are_dropped() -> None:
    request = call({"messages": [], "max_tokens": 5, "temperature": 0.2, "top_p": 0.9, "seed": 1})
    body = upstream_request(
        request,
        "gpt-5.4",
        stream=False,
        max_tokens_field="max_completion_tokens",
        drop_params=frozenset({"temperature", "top_p"}),
    )
    assert body == {"messages": [], "max_completion_tokens": 5, "seed": 1, "model": "gpt-5.4"}
    # The call is untouched: the next route may take what this one drops.
    assert request.request.temperature == 0.2 and request.request.HasField("top_p")


# --- thinking instruction and reasoning_content (per-model policy) ---------------------------

TOOL_TURN = {
    "role": "assistant",
    "content": None,
    "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    "reasoning_content": "I should call f.",
}


@pytest.mark.parametrize(
    ("instruction", "effort", "expected"),
    [
        ({"control": "toggle", "type": "disabled"}, None, {"thinking": {"type": "disabled"}}),
        (
            {"control": "toggle", "type": "enabled"},
            "high",
            {"thinking": {"type": "enabled"}, "reasoning_effort": "high"},
        ),
        ({"control": "effort", "type": "enabled"}, "low", {"reasoning_effort": "low"}),
        (
            {"control": "effort", "type": "disabled", "off": "none"},
            None,
            {"reasoning_effort": "none"},
        ),
        # Controls of other protocols have no OpenAI-compatible form.
        ({"control": "adaptive", "type": "enabled"}, "high", {"reasoning_effort": "high"}),
        ({"control": "level", "type": "disabled", "off": "minimal"}, None, {}),
    ],
)
def test_thinking_instruction_rendered_openai_compatible(
    instruction: dict[str, Any], effort: str | None, expected: dict[str, Any]
) -> None:
    request: dict[str, Any] = {"messages": [TOOL_TURN], "max_tokens": 5, "thinking": instruction}
    if effort is not None:
        request["reasoning_effort"] = effort
    body = upstream_request(
        call(request), "deepseek-v4-pro", stream=False, max_tokens_field="max_tokens"
    )
    assert {k: body[k] for k in ("thinking", "reasoning_effort") if k in body} == expected
    # The assistant turn's reasoning goes back to the upstream as it came.
    assert body["messages"][0]["reasoning_content"] == "I should call f."
