"""Render the edge's Envoy config (ports, replicas and paths vary per run).

The gateway and files clusters are STRICT_DNS: locally their endpoints are IPs
(one per replica), in Kubernetes the name of a headless Service, which resolves
to every ready pod.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from string import Template

ENVOY_DIR = Path(__file__).resolve().parents[1] / "envoy"
LUA_PATH = ENVOY_DIR / "error_shaping.lua"

# Largest request body the edge accepts (uploads will need 30 MB plus multipart overhead).
BODY_LIMIT_BYTES = 32 * 1024 * 1024
MAX_ENDPOINTS = 64
ENDPOINT_INDENT = " " * 8
MAX_TRUSTED_HOPS = 8


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


def render(config: EdgeConfig, descriptor: Path, lua: Path = LUA_PATH) -> str:
    if not 0 <= config.xff_num_trusted_hops <= MAX_TRUSTED_HOPS:
        raise ValueError(f"xff_num_trusted_hops must be 0..{MAX_TRUSTED_HOPS}")
    template = Template((ENVOY_DIR / "envoy.yaml.tmpl").read_text())
    return template.substitute(
        listen_host=config.listen_host,
        listen_port=config.listen_port,
        admin_port=config.admin_port,
        metrics_port=config.metrics_port,
        gateway_endpoints=_endpoints(config.gateways, "gateways"),
        files_endpoints=_endpoints(config.files, "files"),
        descriptor_path=str(descriptor.resolve()),
        lua_path=str(lua.resolve()),
        body_limit=BODY_LIMIT_BYTES,
        xff_num_trusted_hops=config.xff_num_trusted_hops,
    )
