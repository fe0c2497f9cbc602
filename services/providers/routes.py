"""Provider and route configuration (config/providers*.yaml). Pure parsing.

Strings may reference the environment as ${NAME} or ${NAME:-default}, so the
same file serves every deployment and no credential is ever written in it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PROTOCOLS = frozenset(
    {
        # chat
        "openai-chat",
        "anthropic-messages",
        "gemini",
        # images
        "openai-images",
        "gemini-image",
        "dashscope-image",
        # video
        "video-task",
    }
)
CHAT_PROTOCOLS = frozenset({"openai-chat", "anthropic-messages", "gemini"})
IMAGE_PROTOCOLS = frozenset({"openai-images", "gemini-image", "dashscope-image"})
VIDEO_PROTOCOLS = frozenset({"video-task"})
# How an OpenAI-Images-compatible upstream takes the output size and answers with bytes:
#   openai: size="WIDTHxHEIGHT", output_format=png, edits as multipart/form-data `image[]`
#   xai:    aspect_ratio + resolution (1k/2k), response_format=b64_json, edits as JSON
IMAGE_DIALECTS = frozenset({"openai", "xai"})
_ENV_REF = re.compile(r"\$\{([A-Z0-9_]+)(?::-([^}]*))?\}")


class RouteConfigError(ValueError):
    """The providers file is malformed; the service must not start with it."""


@dataclass(frozen=True, slots=True)
class Provider:
    name: str
    protocol: str
    base_url: str
    api_key: str
    connect_timeout_seconds: float
    read_timeout_seconds: float
    max_connections: int
    # OpenAI reasoning models take max_completion_tokens instead of max_tokens.
    max_tokens_field: str
    # video-task: seconds between two polls of an upstream task.
    poll_interval_seconds: float = 5.0
    # openai-images: the upstream's flavour and its output size limits (0 = no limit).
    image_dialect: str = "openai"
    image_max_edge: int = 4096
    image_min_pixels: int = 0
    image_max_pixels: int = 0
    # Request parameters this upstream rejects; dropped like unknown ones.
    drop_params: frozenset[str] = frozenset()
    # Extra headers on every upstream request (e.g. anthropic-version), ${ENV}-expanded.
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Route:
    model: str
    provider: str
    upstream_model: str


@dataclass(frozen=True, slots=True)
class RouteTable:
    providers: dict[str, Provider]
    routes: dict[str, tuple[Route, ...]]

    def routes_for(self, model: str) -> tuple[Route, ...]:
        return self.routes.get(model, ())


def expand_env(value: str, environ: Mapping[str, str]) -> str:
    def sub(match: re.Match[str]) -> str:
        return environ.get(match.group(1)) or (match.group(2) or "")

    return _ENV_REF.sub(sub, value)


def env_references(doc: Any) -> dict[str, str | None]:
    """Each variable a providers document reads (${NAME} in any of its strings),
    with its default; None when some reference has none (the variable is needed)."""
    found: dict[str, str | None] = {}

    def walk(node: Any) -> None:
        if isinstance(node, str):
            for match in _ENV_REF.finditer(node):
                name, default = match.group(1), match.group(2)
                if default is None or name not in found:
                    found[name] = default
        elif isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    return found


def load_env_references(path: Path) -> dict[str, str | None]:
    with path.open("rb") as fh:
        return env_references(yaml.safe_load(fh))


def _section(doc: dict[str, Any], name: str) -> dict[str, Any]:
    section = doc.get(name) or {}
    if not isinstance(section, dict):
        raise RouteConfigError(f"{name}: must be a mapping")
    return section


def _positive(p: dict[str, Any], key: str, default: float, where: str) -> float:
    value = p.get(key, default)
    if isinstance(value, str):
        value = value.strip()
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RouteConfigError(f"{where}: {key} must be a number") from None
    if not number > 0:
        raise RouteConfigError(f"{where}: {key} must be above zero")
    return number


def _whole(p: dict[str, Any], key: str, default: int, where: str, low: int) -> int:
    value = p.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise RouteConfigError(f"{where}: {key} must be a whole number")
    try:
        number = int(str(value).strip())
    except ValueError:
        raise RouteConfigError(f"{where}: {key} must be a whole number") from None
    if number < low:
        raise RouteConfigError(f"{where}: {key} must be at least {low}")
    return number


def _names(p: dict[str, Any], key: str, where: str) -> frozenset[str]:
    names = p.get(key) or []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise RouteConfigError(f"{where}: {key} must be a list of names")
    return frozenset(names)


# What no route may drop: the call itself, and max_tokens, the bound the hold was
# priced by (an upstream left to its own default could answer past what is held).
UNDROPPABLE_PARAMS = frozenset({"model", "messages", "max_tokens"})


def _drop_params(p: dict[str, Any], where: str) -> frozenset[str]:
    names = _names(p, "drop_params", where)
    if kept := sorted(names & UNDROPPABLE_PARAMS):
        raise RouteConfigError(f"{where}: drop_params cannot drop {', '.join(kept)}")
    return names


def _headers(
    p: dict[str, Any], where: str, environ: Mapping[str, str]
) -> tuple[tuple[str, str], ...]:
    headers = p.get("headers") or {}
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str | int) for k, v in headers.items()
    ):
        raise RouteConfigError(f"{where}: headers must map names to strings")
    return tuple((k, expand_env(str(v), environ)) for k, v in headers.items())


def parse_routes(doc: Any, environ: Mapping[str, str]) -> RouteTable:
    if not isinstance(doc, dict):
        raise RouteConfigError("providers: top level must be a mapping")
    providers: dict[str, Provider] = {}
    for name, p in _section(doc, "providers").items():
        where = f"providers.{name}"
        if not isinstance(p, dict):
            raise RouteConfigError(f"{where}: must be a mapping")
        protocol = p.get("protocol")
        if protocol not in PROTOCOLS:
            raise RouteConfigError(f"providers.{name}: unknown protocol {protocol!r}")
        base_url = expand_env(str(p.get("base_url", "")), environ).rstrip("/")
        if not base_url.startswith(("http://", "https://")):
            raise RouteConfigError(f"providers.{name}: base_url must be an http(s) URL")
        max_tokens_field = str(p.get("max_tokens_field", "max_tokens"))
        if max_tokens_field not in ("max_tokens", "max_completion_tokens"):
            raise RouteConfigError(f"providers.{name}: bad max_tokens_field")
        image_dialect = str(p.get("image_dialect", "openai"))
        if image_dialect not in IMAGE_DIALECTS:
            raise RouteConfigError(f"providers.{name}: unknown image_dialect {image_dialect!r}")
        image_min_pixels = _whole(p, "image_min_pixels", 0, where, 0)
        image_max_pixels = _whole(p, "image_max_pixels", 0, where, 0)
        if image_max_pixels and image_min_pixels > image_max_pixels:
            raise RouteConfigError(f"{where}: image_min_pixels exceeds image_max_pixels")
        providers[name] = Provider(
            name=name,
            protocol=protocol,
            base_url=base_url,
            api_key=expand_env(str(p.get("api_key", "")), environ),
            connect_timeout_seconds=_positive(p, "connect_timeout_seconds", 5, where),
            read_timeout_seconds=_positive(p, "read_timeout_seconds", 120, where),
            max_connections=int(_positive(p, "max_connections", 100, where)),
            max_tokens_field=max_tokens_field,
            poll_interval_seconds=_positive(p, "poll_interval_seconds", 5, where),
            image_dialect=image_dialect,
            headers=_headers(p, where, environ),
            drop_params=_drop_params(p, where),
            image_max_edge=_whole(p, "image_max_edge", 4096, where, 16),
            image_min_pixels=image_min_pixels,
            image_max_pixels=image_max_pixels,
        )
    routes: dict[str, tuple[Route, ...]] = {}
    for model, entries in _section(doc, "routes").items():
        if not isinstance(entries, list) or not entries:
            raise RouteConfigError(f"routes.{model}: must be a non-empty list")
        parsed = []
        for i, r in enumerate(entries):
            if not isinstance(r, dict) or r.get("provider") not in providers:
                raise RouteConfigError(f"routes.{model}[{i}]: unknown provider")
            parsed.append(
                Route(
                    model=model,
                    provider=str(r["provider"]),
                    upstream_model=str(r.get("upstream_model", model)),
                )
            )
        routes[model] = tuple(parsed)
    return RouteTable(providers=providers, routes=routes)


def load_routes(path: Path, environ: Mapping[str, str] | None = None) -> RouteTable:
    with path.open("rb") as fh:
        return parse_routes(yaml.safe_load(fh), os.environ if environ is None else environ)
