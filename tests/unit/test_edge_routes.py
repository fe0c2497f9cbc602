"""The edge's 405 routes come from the protos' google.api.http bindings: each
bound path template becomes a regex route whose `allow` lists its methods."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2

from deploy.local.envoy import EdgeConfig, Endpoint, http_bindings, method_routes, render
from deploy.local.envoy import template_regex as regex

ROOT = Path(__file__).resolve().parents[2]
DESCRIPTORS = ROOT / "gen" / "aiport.pb"


def _descriptor_set(rules: dict[str, http_pb2.HttpRule]) -> bytes:
    files = descriptor_pb2.FileDescriptorSet()
    file = files.file.add(name="t.proto", package="t")
    service = file.service.add(name="S")
    for name, rule in rules.items():
        method = service.method.add(name=name, input_type=".t.M", output_type=".t.M")
        method.options.Extensions[annotations_pb2.http].CopyFrom(rule)
    service.method.add(name="Internal", input_type=".t.M", output_type=".t.M")
    return files.SerializeToString()


def test_bindings_group_methods_per_template_with_additional_bindings() -> None:
    get = http_pb2.HttpRule(get="/v1/things/{id}")
    put = http_pb2.HttpRule(put="/v1/things/{id}", body="*")
    post = http_pb2.HttpRule(post="/v1/things", body="*")
    post.additional_bindings.add(post="/v1/stuff", body="*")
    custom = http_pb2.HttpRule(custom=http_pb2.CustomHttpPattern(kind="head", path="/v1/things"))
    found = http_bindings(_descriptor_set({"A": get, "B": put, "C": post, "D": custom}))
    assert found == {
        "/v1/stuff": ("POST",),
        "/v1/things": ("HEAD", "POST"),
        "/v1/things/{id}": ("GET", "PUT"),
    }


@pytest.mark.parametrize(
    ("template", "matches", "misses"),
    [
        ("/v1/chat/completions", ["/v1/chat/completions"], ["/v1/chat/completionsX", "/v1/chat"]),
        ("/v1/models/{model}", ["/v1/models/a.b-c:d"], ["/v1/models/", "/v1/models/a/b"]),
        ("/v1/models/{model=**}", ["/v1/models/a/b/c"], ["/v1/models/"]),
        ("/v1/{name=shelves/*}/books", ["/v1/shelves/1/books"], ["/v1/shelves/1/2/books"]),
        ("/v1/a/*/b:cancel", ["/v1/a/x/b:cancel"], ["/v1/a/x/b", "/v1/a/x/bxcancel"]),
    ],
)
def test_template_regex(template: str, matches: list[str], misses: list[str]) -> None:
    pattern = re.compile(regex(template))
    for path in matches:
        assert pattern.fullmatch(path), path
    for path in misses:
        assert not pattern.fullmatch(path), path


@pytest.mark.parametrize("bad", ["v1/x", '/v1/"x', "/v1/a b"])
def test_bad_templates_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        regex(bad)


def test_rendered_config_has_a_405_route_per_public_path() -> None:
    config = EdgeConfig(
        listen_host="127.0.0.1",
        listen_port=8080,
        admin_port=9901,
        metrics_port=9902,
        gateways=(Endpoint("127.0.0.1", 50050),),
        files=(Endpoint("127.0.0.1", 9200),),
        consoles=(Endpoint("127.0.0.1", 9300),),
        payments=(Endpoint("127.0.0.1", 9320),),
    )
    doc = yaml.safe_load(render(config, DESCRIPTORS))
    manager = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    routes = manager["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    allowed = {
        route["match"]["safe_regex"]["regex"]: route["response_headers_to_add"][0]["header"]
        for route in routes
        if route.get("direct_response", {}).get("status") == 405
    }
    assert {header["key"] for header in allowed.values()} == {"allow"}
    allowed = {regex: header["value"] for regex, header in allowed.items()}
    assert allowed["/v1/chat/completions"] == "POST"
    assert allowed["/v1/balance"] == "GET"
    assert allowed["/v1/jobs/[^/]+"] == "GET"
    bindings = http_bindings(DESCRIPTORS.read_bytes())
    assert len(allowed) == len(bindings)
    # The transcoded route accepts only what the transcoder produced.
    grpc_route = next(r for r in routes if r["match"].get("prefix") == "/aiport.v1.")
    assert grpc_route["match"]["headers"] == [
        {"name": "x-envoy-original-path", "present_match": True}
    ]
    assert method_routes({}) == ""


def test_everything_but_the_api_and_files_goes_to_the_console() -> None:
    config = EdgeConfig(
        listen_host="127.0.0.1",
        listen_port=8080,
        admin_port=9901,
        metrics_port=9902,
        gateways=(Endpoint("127.0.0.1", 50050),),
        files=(Endpoint("127.0.0.1", 9200),),
        consoles=(Endpoint("127.0.0.1", 9300), Endpoint("127.0.0.1", 9400)),
        payments=(Endpoint("127.0.0.1", 9320),),
    )
    doc = yaml.safe_load(render(config, DESCRIPTORS))
    manager = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    routes = manager["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    # The console is the last route, a catch-all; before it, unknown API paths
    # (and gRPC method paths sent by a client) are the edge's own JSON 404.
    *others, console = routes
    assert console["match"] == {"prefix": "/"}
    assert console["route"]["cluster"] == "console"
    per_filter = console["typed_per_filter_config"]
    assert per_filter["envoy.filters.http.grpc_json_transcoder"]["disabled"] is True
    assert per_filter["envoy.filters.http.lua"]["filter_context"] == {"surface": "console"}
    reserved = [r for r in others if r.get("direct_response", {}).get("status") == 404]
    assert [r["match"] for r in reserved] == [
        {"path_separated_prefix": "/v1"},
        {"prefix": "/aiport."},
    ]
    assert others.index(reserved[0]) > max(
        i for i, r in enumerate(others) if r.get("direct_response", {}).get("status") == 405
    )
    clusters = {c["name"]: c for c in doc["static_resources"]["clusters"]}
    endpoints = clusters["console"]["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert [e["endpoint"]["address"]["socket_address"]["port_value"] for e in endpoints] == [
        9300,
        9400,
    ]
    assert clusters["console"]["health_checks"][0]["http_health_check"] == {"path": "/healthz"}
    # The payment gateways' notifications go to payments, untranscoded and
    # untouched by the error shaping, before the console's catch-all.
    (webhooks,) = [r for r in others if r["match"] == {"prefix": "/webhooks/"}]
    assert webhooks["route"]["cluster"] == "payments"
    per_filter = webhooks["typed_per_filter_config"]
    assert per_filter["envoy.filters.http.grpc_json_transcoder"]["disabled"] is True
    assert per_filter["envoy.filters.http.lua"]["disabled"] is True
    assert clusters["payments"]["health_checks"][0]["http_health_check"] == {"path": "/healthz"}
