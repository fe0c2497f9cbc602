"""Render the edge's Envoy config (ports, replicas and paths vary per run).

The gateway, files, console and payments clusters are STRICT_DNS: locally their endpoints are IPs
(one per replica), in Kubernetes the name of a headless Service, which resolves
to every ready pod.

The methods each public path allows come from the protos' google.api.http
bindings (the descriptor set): a path the transcoder could not map with the
request's method gets a 405 naming them in `allow`, so a new endpoint gets it
with no edit here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from string import Template

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2

ENVOY_DIR = Path(__file__).resolve().parents[1] / "envoy"
LUA_PATH = ENVOY_DIR / "error_shaping.lua"

# Largest request body the edge accepts (uploads will need 30 MB plus multipart overhead).
BODY_LIMIT_BYTES = 32 * 1024 * 1024
MAX_ENDPOINTS = 64
ENDPOINT_INDENT = " " * 8
MAX_TRUSTED_HOPS = 8
ROUTE_INDENT = " " * 14
HTTP_METHODS = ("get", "put", "post", "delete", "patch")


@dataclass(frozen=True)
class Endpoint:
    host: str  # an IP, or a DNS name (all its addresses are used)
    port: int


@dataclass(frozen=True)
class EdgeConfig:
    listen_host: str
    listen_port: int
    admin_port: int  # on 127.0.0.1 only
    metrics_port: int  # a listener that serves only the admin's /stats/prometheus
    gateways: tuple[Endpoint, ...]
    files: tuple[Endpoint, ...]
    consoles: tuple[Endpoint, ...]
    # The payments service's webhook listener (HTTP): /webhooks/*.
    payments: tuple[Endpoint, ...]
    # Load balancers in front that append the client to x-forwarded-for (0: the
    # edge is reached directly; 1: one load balancer). More than there are lets
    # a client choose its own address.
    xff_num_trusted_hops: int = 0


def _endpoints(endpoints: tuple[Endpoint, ...], what: str) -> str:
    """The lb_endpoints entries of one cluster, indented for the template."""
    if not 1 <= len(endpoints) <= MAX_ENDPOINTS:
        raise ValueError(f"{what}: between 1 and {MAX_ENDPOINTS} endpoints, not {len(endpoints)}")
    lines = []
    for endpoint in endpoints:
        if not endpoint.host or any(c in endpoint.host for c in " :{},\n") or endpoint.port <= 0:
            raise ValueError(f"{what}: bad endpoint {endpoint}")
        lines.append(
            f"{ENDPOINT_INDENT}- endpoint:\n"
            f"{ENDPOINT_INDENT}    address:\n"
            f"{ENDPOINT_INDENT}      socket_address:"
            f" {{ address: {endpoint.host}, port_value: {endpoint.port} }}"
        )
    return "\n".join(lines)


def _rule_bindings(rule: http_pb2.HttpRule) -> list[tuple[str, str]]:
    """(METHOD, path template) of one google.api.http rule and its additional bindings."""
    pattern = rule.WhichOneof("pattern")
    found: list[tuple[str, str]] = []
    if pattern == "custom":
        found.append((rule.custom.kind.upper(), rule.custom.path))
    elif pattern in HTTP_METHODS:
        found.append((pattern.upper(), str(getattr(rule, pattern))))
    for extra in rule.additional_bindings:
        found.extend(_rule_bindings(extra))
    return found


def http_bindings(descriptor_set: bytes) -> dict[str, tuple[str, ...]]:
    """Path template -> the HTTP methods bound to it, from a serialized
    FileDescriptorSet (protoc --include_imports), in a stable order."""
    files = descriptor_pb2.FileDescriptorSet()
    files.ParseFromString(descriptor_set)
    methods: dict[str, set[str]] = {}
    for file in files.file:
        for service in file.service:
            for method in service.method:
                if not method.options.HasExtension(annotations_pb2.http):
                    continue
                for verb, path in _rule_bindings(method.options.Extensions[annotations_pb2.http]):
                    methods.setdefault(path, set()).add(verb)
    return {path: tuple(sorted(verbs)) for path, verbs in sorted(methods.items())}


_SEGMENT = re.compile(r"\{[^}]*\}|[^/]+")


def _segments_regex(segments: str) -> str:
    parts = []
    for segment in segments.split("/"):
        if segment == "**":
            parts.append(".+")
        elif segment == "*":
            parts.append("[^/]+")
        else:
            parts.append(re.escape(segment))
    return "/".join(parts)


def template_regex(template: str) -> str:
    """An RE2 regex matching the paths a google.api.http path template binds:
    `{var}` and `*` one segment, `{var=**}` and `**` the rest, `{var=a/*}` its
    pattern, an optional `:verb` literally."""
    if not template.startswith("/") or any(c in template for c in ' "\\\n'):
        raise ValueError(f"bad path template: {template!r}")
    verb = ""
    last = template.rsplit("/", 1)[-1]
    if ":" in last and "}" not in last.rsplit(":", 1)[1]:
        template, verb = template.rsplit(":", 1)
    parts = []
    for segment in _SEGMENT.findall(template[1:]):
        if segment.startswith("{"):
            _, _, pattern = segment[1:-1].partition("=")
            parts.append(_segments_regex(pattern or "*"))
        else:
            parts.append(_segments_regex(segment))
    return "/" + "/".join(parts) + (re.escape(":" + verb) if verb else "")


def method_routes(bindings: Mapping[str, tuple[str, ...]]) -> str:
    """Routes answering 405 with `allow` for each bound path: a request reaches
    them only when the transcoder found no binding for its method."""
    lines = []
    for template, methods in bindings.items():
        allow = ", ".join(methods)
        lines += [
            f"- match: {{ safe_regex: {{ regex: {json.dumps(template_regex(template))} }} }}",
            "  direct_response: { status: 405 }",
            "  response_headers_to_add:",
            f"  - header: {{ key: allow, value: {json.dumps(allow)} }}",
            "    append_action: OVERWRITE_IF_EXISTS_OR_ADD",
        ]
    return "\n".join(ROUTE_INDENT + line for line in lines)


def render(
    config: EdgeConfig, descriptor: Path, lua: Path = LUA_PATH, bindings_from: Path | None = None
) -> str:
    """`descriptor` is where Envoy loads the descriptor set from; `bindings_from`
    the same file on this machine, read for the HTTP bindings (default: `descriptor`)."""
    if not 0 <= config.xff_num_trusted_hops <= MAX_TRUSTED_HOPS:
        raise ValueError(f"xff_num_trusted_hops must be 0..{MAX_TRUSTED_HOPS}")
    template = Template((ENVOY_DIR / "envoy.yaml.tmpl").read_text())
    bindings = http_bindings((bindings_from or descriptor).read_bytes())
    return template.substitute(
        listen_host=config.listen_host,
        listen_port=config.listen_port,
        admin_port=config.admin_port,
        metrics_port=config.metrics_port,
        gateway_endpoints=_endpoints(config.gateways, "gateways"),
        files_endpoints=_endpoints(config.files, "files"),
        console_endpoints=_endpoints(config.consoles, "consoles"),
        payments_endpoints=_endpoints(config.payments, "payments"),
        descriptor_path=str(descriptor.resolve()),
        lua_path=str(lua.resolve()),
        body_limit=BODY_LIMIT_BYTES,
        xff_num_trusted_hops=config.xff_num_trusted_hops,
        method_routes=method_routes(bindings),
    )
