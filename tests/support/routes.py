"""A provider entry for tests that build route tables by hand (no upstream is reached)."""

from __future__ import annotations

from services.providers.routes import Provider


def provider(name: str, protocol: str) -> Provider:
    return Provider(
        name=name,
        protocol=protocol,
        base_url="https://example.invalid",
        api_key="k",
        connect_timeout_seconds=1,
        read_timeout_seconds=1,
        max_connections=1,
        max_tokens_field="max_tokens",
    )


__all__ = ["provider"]
