"""The canonical answer as the chat JSON clients get, for tests that assert on it."""

from __future__ import annotations

from typing import Any

import orjson
from aiport.v1 import text_pb2

from services.common.canonical_answer import chat_chunk, chat_completion
from services.common.usage import Usage


def chunk_json(chunk: text_pb2.TextChunk) -> dict[str, Any]:
    body: dict[str, Any] = orjson.loads(chat_chunk(chunk))
    return body


def completion_json(completion: text_pb2.TextCompletion, usage: Usage) -> dict[str, Any]:
    body: dict[str, Any] = orjson.loads(chat_completion(completion, usage))
    return body
