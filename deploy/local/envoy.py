"""Render the edge's Envoy config for a local stack (ports and paths vary per run)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from string import Template

ENVOY_DIR = Path(__file__).resolve().parents[1] / "envoy"

# Largest request body the edge accepts (uploads will need 30 MB plus multipart overhead).
BODY_LIMIT_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class EdgePorts:
    listen_host: str
    listen_port: int
    admin_port: int
    gateway_port: int
    files_port: int
    metrics_port: int  # a listener that serves only the admin's /stats/prometheus


def render(ports: EdgePorts, descriptor: Path) -> str:
    template = Template((ENVOY_DIR / "envoy.yaml.tmpl").read_text())
    return template.substitute(
        listen_host=ports.listen_host,
        listen_port=ports.listen_port,
        admin_port=ports.admin_port,
        gateway_port=ports.gateway_port,
        files_port=ports.files_port,
        metrics_port=ports.metrics_port,
        descriptor_path=str(descriptor.resolve()),
        lua_path=str((ENVOY_DIR / "error_shaping.lua").resolve()),
        body_limit=BODY_LIMIT_BYTES,
    )
