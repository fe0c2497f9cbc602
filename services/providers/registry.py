"""Which adapter class speaks each upstream protocol. Config names the protocol
per provider; nothing else in the code branches on providers or models."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from services.providers.adapters.anthropic_messages import AnthropicMessagesAdapter
from services.providers.adapters.dashscope_image import DashScopeImageAdapter
from services.providers.adapters.gemini import GeminiChatAdapter
from services.providers.adapters.gemini_image import GeminiImageAdapter
from services.providers.adapters.openai_chat import OpenAIChatAdapter
from services.providers.adapters.openai_images import OpenAIImagesAdapter
from services.providers.adapters.video_task import VideoTaskAdapter
from services.providers.chat import ChatAdapter
from services.providers.media import ImageAdapter
from services.providers.media import VideoTaskAdapter as VideoAdapter
from services.providers.routes import Provider, RouteTable

A = TypeVar("A")

CHAT: dict[str, Callable[[Provider], ChatAdapter]] = {
    "openai-chat": OpenAIChatAdapter,
    "anthropic-messages": AnthropicMessagesAdapter,
    "gemini": GeminiChatAdapter,
}
IMAGE: dict[str, Callable[[Provider], ImageAdapter]] = {
    "openai-images": OpenAIImagesAdapter,
    "dashscope-image": DashScopeImageAdapter,
    "gemini-image": GeminiImageAdapter,
}
VIDEO: dict[str, Callable[[Provider], VideoAdapter]] = {
    "video-task": VideoTaskAdapter,
}


def build(table: RouteTable, kinds: dict[str, Callable[[Provider], A]]) -> dict[str, A]:
    """One adapter per provider whose protocol is in `kinds`, by provider name."""
    return {
        name: kinds[provider.protocol](provider)
        for name, provider in table.providers.items()
        if provider.protocol in kinds
    }
