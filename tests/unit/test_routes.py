"""Provider and route configuration: ${ENV} expansion, validation, and the shipped files."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.common.catalog import ImageModel, TextModel, VideoModel, load_catalog
from services.providers.routes import (
    CHAT_PROTOCOLS,
    IMAGE_PROTOCOLS,
    PROTOCOLS,
    VIDEO_PROTOCOLS,
    Provider,
    Route,
    RouteConfigError,
    RouteTable,
    env_references,
    expand_env,
    load_env_references,
    load_routes,
    parse_routes,
)

CONFIG = Path(__file__).resolve().parents[2] / "config"
ROUTE_FILES = ["providers.yaml", "providers.sandbox.yaml"]


def provider_doc(**overrides: Any) -> dict[str, Any]:
    return {"protocol": "openai-chat", "base_url": "https://api.example.com/v1", **overrides}


def doc_with(provider: dict[str, Any], routes: Any = None) -> dict[str, Any]:
    return {
        "providers": {"acme": provider},
        "routes": routes if routes is not None else {"m": [{"provider": "acme"}]},
    }


# --- expand_env --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "environ", "expected"),
    [
        ("${KEY}", {"KEY": "sk-1"}, "sk-1"),
        ("${KEY}", {}, ""),
        ("${KEY:-fallback}", {}, "fallback"),
        ("${KEY:-fallback}", {"KEY": "set"}, "set"),
        ("${KEY:-fallback}", {"KEY": ""}, "fallback"),  # like the shell's :-
        ("${KEY:-}", {}, ""),
        ("${URL:-http://127.0.0.1:9100/v1}", {}, "http://127.0.0.1:9100/v1"),
        ("${HOST:-localhost}:${PORT:-80}/v1", {"PORT": "8080"}, "localhost:8080/v1"),
        ("https://${HOST}/v1", {"HOST": "api.x.com"}, "https://api.x.com/v1"),
        ("no references", {"KEY": "x"}, "no references"),
        ("$KEY and ${lower}", {"KEY": "x", "lower": "y"}, "$KEY and ${lower}"),
        ("${A_1}", {"A_1": "ok"}, "ok"),
    ],
)
def test_expand_env(value: str, environ: dict[str, str], expected: str) -> None:
    assert expand_env(value, environ) == expected


def test_expanded_values_are_not_expanded_again() -> None:
    assert expand_env("${A}", {"A": "${B}", "B": "secret"}) == "${B}"


# --- parse_routes ------------------------------------------------------------------------


def test_parse_full_document() -> None:
    doc = {
        "providers": {
            "openai": {
                "protocol": "openai-chat",
                "base_url": "${OPENAI_BASE_URL:-https://api.openai.com/v1}/",
                "api_key": "${OPENAI_API_KEY}",
                "max_tokens_field": "max_completion_tokens",
                "connect_timeout_seconds": 2.5,
                "read_timeout_seconds": 300,
                "max_connections": 20,
            },
            "deepseek": {"protocol": "openai-chat", "base_url": "https://api.deepseek.com"},
        },
        "routes": {
            "gpt-5.4": [{"provider": "openai", "upstream_model": "gpt-5.4-2026-03-05"}],
            "deepseek-v4-flash": [{"provider": "deepseek"}, {"provider": "openai"}],
        },
    }
    table = parse_routes(doc, {"OPENAI_API_KEY": "sk-live-123"})
    assert table == RouteTable(
        providers={
            "openai": Provider(
                name="openai",
                protocol="openai-chat",
                base_url="https://api.openai.com/v1",
                api_key="sk-live-123",
                connect_timeout_seconds=2.5,
                read_timeout_seconds=300.0,
                max_connections=20,
                max_tokens_field="max_completion_tokens",
            ),
            "deepseek": Provider(
                name="deepseek",
                protocol="openai-chat",
                base_url="https://api.deepseek.com",
                api_key="",
                connect_timeout_seconds=5.0,
                read_timeout_seconds=120.0,
                max_connections=100,
                max_tokens_field="max_tokens",
            ),
        },
        routes={
            "gpt-5.4": (Route("gpt-5.4", "openai", "gpt-5.4-2026-03-05"),),
            "deepseek-v4-flash": (
                Route("deepseek-v4-flash", "deepseek", "deepseek-v4-flash"),
                Route("deepseek-v4-flash", "openai", "deepseek-v4-flash"),
            ),
        },
    )
    assert table.routes_for("deepseek-v4-flash")[0].provider == "deepseek"
    assert table.routes_for("unknown-model") == ()


def test_environment_overrides_defaults() -> None:
    doc = doc_with(provider_doc(base_url="${BASE:-https://default.example/v1}", api_key="${K}"))
    table = parse_routes(doc, {"BASE": "http://proxy.internal:8080/openai//", "K": "sk-abc"})
    assert table.providers["acme"].base_url == "http://proxy.internal:8080/openai"
    assert table.providers["acme"].api_key == "sk-abc"


def test_empty_document_sections_give_an_empty_table() -> None:
    assert parse_routes({}, {}) == RouteTable(providers={}, routes={})
    assert parse_routes({"providers": None, "routes": None}, {}) == RouteTable({}, {})


def test_upstream_model_is_kept_as_a_string() -> None:
    table = parse_routes(
        doc_with(provider_doc(), {"m": [{"provider": "acme", "upstream_model": 4}]}), {}
    )
    assert table.routes_for("m") == (Route("m", "acme", "4"),)


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        (["providers"], "providers: top level"),
        ("providers: {}", "providers: top level"),
        ({"providers": {"acme": "openai-chat"}}, "providers.acme"),
        (doc_with(provider_doc(protocol="anthropic")), "providers.acme"),
        (doc_with({"base_url": "https://x"}), "providers.acme"),
        (doc_with(provider_doc(base_url="api.example.com/v1")), "providers.acme"),
        (doc_with(provider_doc(base_url="ftp://api.example.com")), "providers.acme"),
        (doc_with(provider_doc(base_url="${UNSET_BASE_URL}")), "providers.acme"),
        (doc_with({"protocol": "openai-chat"}), "providers.acme"),
        (doc_with(provider_doc(max_tokens_field="max_output_tokens")), "providers.acme"),
        (doc_with(provider_doc(), {"m": []}), "routes.m"),
        (doc_with(provider_doc(), {"m": None}), "routes.m"),
        (doc_with(provider_doc(), {"m": {"provider": "acme"}}), "routes.m"),
        (doc_with(provider_doc(), {"m": [{"provider": "nobody"}]}), "routes.m[0]"),
        (doc_with(provider_doc(), {"m": [{"provider": "acme"}, {}]}), "routes.m[1]"),
        (doc_with(provider_doc(), {"m": ["acme"]}), "routes.m[0]"),
    ],
    ids=[
        "list",
        "string",
        "provider-not-mapping",
        "unknown-protocol",
        "missing-protocol",
        "base-url-no-scheme",
        "base-url-ftp",
        "base-url-env-unset",
        "base-url-missing",
        "bad-max-tokens-field",
        "route-empty-list",
        "route-null",
        "route-mapping",
        "route-unknown-provider",
        "route-no-provider",
        "route-entry-string",
    ],
)
def test_malformed_documents_are_rejected(doc: Any, where: str) -> None:
    with pytest.raises(RouteConfigError, match="^" + re.escape(where)):
        parse_routes(doc, {})


@pytest.mark.parametrize(
    "section",
    [
        {"providers": [{"name": "acme", "protocol": "openai-chat"}]},
        {"providers": {}, "routes": [{"m": [{"provider": "acme"}]}]},
    ],
    ids=["providers-list", "routes-list"],
)
def test_sections_that_are_not_mappings_are_config_errors(section: dict[str, Any]) -> None:
    # An easy YAML slip (a list where a mapping belongs) must be reported as a config
    # error naming the section, not crash start-up with an AttributeError.
    with pytest.raises(RouteConfigError):
        parse_routes(section, {})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("read_timeout_seconds", "soon"),
        ("connect_timeout_seconds", 0),
        ("read_timeout_seconds", -1),
        ("max_connections", "many"),
        ("max_connections", 0),
    ],
)
def test_bad_numeric_settings_are_config_errors(key: str, value: Any) -> None:
    # A zero/negative timeout fails every request and zero connections blocks every
    # request; a non-number should name the provider rather than crash with a bare
    # "could not convert string to float".
    with pytest.raises(RouteConfigError, match=r"^providers\.acme"):
        parse_routes(doc_with(provider_doc(**{key: value})), {})


def test_load_routes_reads_yaml_and_the_process_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "providers.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "providers": {"acme": provider_doc(api_key="${AIPORT_TEST_ROUTES_KEY}")},
                "routes": {"m": [{"provider": "acme", "upstream_model": "m-up"}]},
            }
        )
    )
    monkeypatch.setenv("AIPORT_TEST_ROUTES_KEY", "sk-from-env")
    assert load_routes(path).providers["acme"].api_key == "sk-from-env"
    # An explicit environment replaces the process one entirely.
    assert load_routes(path, {}).providers["acme"].api_key == ""
    assert load_routes(path, {}).routes_for("m") == (Route("m", "acme", "m-up"),)


# --- the shipped configuration -----------------------------------------------------------


@pytest.mark.parametrize("name", ROUTE_FILES)
def test_every_enabled_text_model_has_a_route(name: str) -> None:
    catalog = load_catalog(CONFIG / "catalog.yaml")
    table = load_routes(CONFIG / name, {})
    enabled = {m.id for m in catalog.enabled_text_models()}
    assert enabled, "the catalog lists no enabled text model"
    missing = sorted(m for m in enabled if not table.routes_for(m))
    assert missing == [], f"{name}: no route for {missing}"


@pytest.mark.parametrize("name", ROUTE_FILES)
def test_every_enabled_model_of_every_modality_has_a_route(name: str) -> None:
    catalog = load_catalog(CONFIG / "catalog.yaml")
    table = load_routes(CONFIG / name, {})
    enabled = {m.id for m in catalog.enabled_models()}
    assert any(isinstance(m, ImageModel) for m in catalog.enabled_models())
    assert any(isinstance(m, VideoModel) for m in catalog.enabled_models())
    missing = sorted(m for m in enabled if not table.routes_for(m))
    assert missing == [], f"{name}: no route for {missing}"


# Which upstream protocol can serve which kind of catalog model.
PROTOCOLS_FOR = {
    TextModel: CHAT_PROTOCOLS,
    ImageModel: IMAGE_PROTOCOLS,
    VideoModel: VIDEO_PROTOCOLS,
}


@pytest.mark.parametrize("name", ROUTE_FILES)
def test_every_route_is_for_a_catalog_model_over_its_protocol(name: str) -> None:
    catalog = load_catalog(CONFIG / "catalog.yaml")
    table = load_routes(CONFIG / name, {})
    assert sorted(set(table.routes) - set(catalog.models)) == []
    for model_id, routes in table.routes.items():
        expected = PROTOCOLS_FOR[type(catalog.models[model_id])]
        for route in routes:
            assert route.provider in table.providers
            assert route.upstream_model
            assert table.providers[route.provider].protocol in expected, model_id


@pytest.mark.parametrize("name", ROUTE_FILES)
def test_shipped_files_default_to_https_or_loopback(name: str) -> None:
    table = load_routes(CONFIG / name, {})
    assert table.providers
    for provider in table.providers.values():
        assert provider.protocol in PROTOCOLS
        assert provider.base_url.startswith(("https://", "http://127.0.0.1"))
        assert not provider.base_url.endswith("/")
        assert provider.read_timeout_seconds > 0 and provider.connect_timeout_seconds > 0


def test_real_providers_file_takes_keys_only_from_the_environment() -> None:
    bare = load_routes(CONFIG / "providers.yaml", {})
    assert {p.api_key for p in bare.providers.values()} == {""}
    env = {"OPENAI_API_KEY": "sk-openai-test", "DEEPSEEK_API_KEY": "sk-deepseek-test"}
    table = load_routes(CONFIG / "providers.yaml", env)
    assert table.providers["openai"].api_key == "sk-openai-test"
    assert table.providers["deepseek"].api_key == "sk-deepseek-test"
    assert table.providers["openai"].base_url == "https://api.openai.com/v1"


def test_real_providers_file_token_fields() -> None:
    table = load_routes(CONFIG / "providers.yaml", {})
    # GPT-5 models are reasoning models: they reject max_tokens.
    assert table.providers["openai"].max_tokens_field == "max_completion_tokens"
    assert table.providers["deepseek"].max_tokens_field == "max_tokens"


def test_sandbox_file_defaults_and_overrides() -> None:
    table = load_routes(CONFIG / "providers.sandbox.yaml", {})
    chat = table.providers["sandbox-openai-primary"]
    images = table.providers["sandbox-images-primary"]
    video = table.providers["sandbox-video-primary"]
    assert (chat.protocol, images.protocol, video.protocol) == (
        "openai-chat",
        "openai-images",
        "video-task",
    )
    # AIPORT_SANDBOX_URL already ends in /v1: images share it, video hangs off the origin.
    assert chat.base_url == images.base_url == "http://127.0.0.1:9100/v1"
    assert video.base_url == "http://127.0.0.1:9100/api/v3"
    assert video.poll_interval_seconds == 0.5
    assert {p.api_key for p in table.providers.values()} == {"sk-sandbox"}
    moved = load_routes(
        CONFIG / "providers.sandbox.yaml",
        {
            "AIPORT_SANDBOX_URL": "http://127.0.0.1:40123/v1",
            "AIPORT_SANDBOX_ROOT": "http://127.0.0.1:40123",
            "AIPORT_SANDBOX_API_KEY": "sk-x",
        },
    )
    assert all(p.base_url.startswith("http://127.0.0.1:40123/") for p in moved.providers.values())
    assert {p.api_key for p in moved.providers.values()} == {"sk-x"}


def test_sandbox_file_gives_every_model_a_primary_and_a_backup() -> None:
    table = load_routes(CONFIG / "providers.sandbox.yaml", {})
    for model, routes in table.routes.items():
        labels = [dict(table.providers[r.provider].headers)["X-Sandbox-Route"] for r in routes]
        assert labels == ["primary", "backup"], model
        assert len({table.providers[r.provider].protocol for r in routes}) == 1, model


def test_real_providers_file_media_upstreams() -> None:
    table = load_routes(CONFIG / "providers.yaml", {"OPENAI_API_KEY": "sk-o", "XAI_API_KEY": "xk"})
    openai_images = table.providers["openai-images"]
    assert openai_images.base_url == "https://api.openai.com/v1"
    assert openai_images.api_key == "sk-o"
    # gpt-image-2's documented size limits.
    assert (
        openai_images.image_max_edge,
        openai_images.image_min_pixels,
        openai_images.image_max_pixels,
    ) == (3840, 655_360, 8_294_400)
    xai = table.providers["xai-images"]
    assert (xai.base_url, xai.image_dialect, xai.api_key) == ("https://api.x.ai/v1", "xai", "xk")
    ark = table.providers["byteplus-ark"]
    assert ark.protocol == "video-task"
    assert ark.base_url == "https://ark.ap-southeast.bytepluses.com/api/v3"
    assert ark.poll_interval_seconds >= 1
    assert table.routes_for("gpt-image-2-img2img")[0].upstream_model == "gpt-image-2"
    assert {table.routes_for(m)[0].provider for m in ("grok-image", "grok-image-img2img")} == {
        "xai-images"
    }
    seedance = {
        table.routes_for(m)[0].upstream_model
        for m in (
            "seedance-2.0-fast",
            "seedance-2.0-fast-img2video",
            "seedance-2.0-fast-multimodal",
        )
    }
    assert seedance == {"dreamina-seedance-2-0-fast-260128"}


# --- media provider fields ---------------------------------------------------------------


def test_media_fields_default_for_every_protocol() -> None:
    table = parse_routes(doc_with(provider_doc(protocol="openai-images")), {})
    acme = table.providers["acme"]
    assert acme.protocol == "openai-images"
    assert (acme.poll_interval_seconds, acme.image_dialect) == (5.0, "openai")
    assert (acme.image_max_edge, acme.image_min_pixels, acme.image_max_pixels) == (4096, 0, 0)


def test_media_fields_are_parsed() -> None:
    doc = doc_with(
        provider_doc(
            protocol="openai-images",
            image_dialect="xai",
            image_max_edge="3840",
            image_min_pixels=655360,
            image_max_pixels=8294400,
            poll_interval_seconds="2.5",
        )
    )
    acme = parse_routes(doc, {}).providers["acme"]
    assert acme.image_dialect == "xai"
    assert (acme.image_max_edge, acme.image_min_pixels, acme.image_max_pixels) == (
        3840,
        655360,
        8294400,
    )
    assert acme.poll_interval_seconds == 2.5
    video = parse_routes(doc_with(provider_doc(protocol="video-task")), {}).providers["acme"]
    assert video.protocol == "video-task"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("image_dialect", "dall-e"),
        ("poll_interval_seconds", 0),
        ("poll_interval_seconds", "often"),
        ("image_max_edge", 8),
        ("image_max_edge", 1.5),
        ("image_max_edge", True),
        ("image_min_pixels", -1),
        ("image_max_pixels", "lots"),
    ],
)
def test_bad_media_settings_are_config_errors(key: str, value: Any) -> None:
    doc = doc_with(provider_doc(protocol="openai-images", **{key: value}))
    with pytest.raises(RouteConfigError, match=r"^providers\.acme"):
        parse_routes(doc, {})


def test_min_pixels_above_max_pixels_is_a_config_error() -> None:
    doc = doc_with(
        provider_doc(protocol="openai-images", image_min_pixels=100, image_max_pixels=99)
    )
    with pytest.raises(RouteConfigError, match="image_min_pixels exceeds image_max_pixels"):
        parse_routes(doc, {})


def test_real_openai_provider_drops_what_reasoning_models_reject() -> None:
    table = load_routes(CONFIG / "providers.yaml", {})
    assert {"temperature", "top_p"} <= table.providers["openai"].drop_params
    assert table.providers["deepseek"].drop_params == frozenset()


def test_env_references_lists_what_a_providers_document_reads() -> None:
    doc = {
        "providers": {
            "a": {"base_url": "${A_URL:-https://a}/v1", "api_key": "${A_KEY}", "timeout": 5},
            "b": {"base_url": "${A_URL}", "api_key": "${B_KEY:-}", "headers": {"X": "${HDR}"}},
        },
        "routes": {"m": [{"provider": "a", "upstream_model": "${MODEL:-m}"}]},
        "comment": "plain A_KEY is not a reference",
    }
    # A_URL: one reference has no default, so the variable is needed.
    assert env_references(doc) == {
        "A_URL": None,
        "A_KEY": None,
        "B_KEY": "",
        "HDR": None,
        "MODEL": "m",
    }


def test_env_references_of_the_shipped_files() -> None:
    real = load_env_references(CONFIG / "providers.yaml")
    assert real["OPENAI_API_KEY"] is None
    assert real["OPENAI_BASE_URL"] == "https://api.openai.com/v1"
    sandbox = load_env_references(CONFIG / "providers.sandbox.yaml")
    assert set(sandbox) == {"AIPORT_SANDBOX_API_KEY", "AIPORT_SANDBOX_URL", "AIPORT_SANDBOX_ROOT"}


@pytest.mark.parametrize("param", ["max_tokens", "messages", "model"])
def test_a_route_cannot_drop_the_call_or_the_holds_bound(param: str) -> None:
    # Without max_tokens an upstream answers up to its own default: past what was held.
    doc = doc_with(provider_doc(drop_params=["temperature", param]))
    with pytest.raises(
        RouteConfigError, match=rf"^providers\.acme: drop_params cannot drop {param}$"
    ):
        parse_routes(doc, {})
