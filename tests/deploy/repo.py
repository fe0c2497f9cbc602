"""What the manifest checks compare against, read from the repository (I/O only)."""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Final

import yaml

from tests.deploy.checks import Doc, named_by_config, parse_documents

REPO: Final = Path(__file__).resolve().parents[2]
K8S: Final = REPO / "deploy" / "k8s"
OVERLAYS: Final = ("dev", "production")
KUBERNETES_VERSION: Final = "1.32.0"  # kubectl's; the schemas validated against
KUSTOMIZE_TIMEOUT_SECONDS: Final = 60
# An upper-case name with an underscore, in quotes: how services name their variables.
_ENV_LITERAL: Final = re.compile(r"""["']([A-Z][A-Z0-9]*_[A-Z0-9_]+)["']""")

KUBECTL_MISSING: Final = (
    "kubectl not found on PATH; the deploy tests render deploy/k8s with its kustomize. "
    "Install it: Debian/Ubuntu `apt-get install kubectl`, elsewhere "
    "https://kubernetes.io/docs/tasks/tools/"
)


def module_exists(module: str) -> bool:
    """`python -m module` would run code of ours: a module file or a package with __main__."""
    path = REPO.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__main__.py").is_file()


def path_exists(relative: str) -> bool:
    return (REPO / relative).exists()


@cache
def env_read_by_code() -> frozenset[str]:
    """Every variable name services/ (or the sandbox) mentions as a string, plus the
    variables config/ names (${NAME}, `*_env: NAME`)."""
    names: set[str] = set()
    for source in [*(REPO / "services").rglob("*.py"), *(REPO / "sandbox").rglob("*.py")]:
        names.update(_ENV_LITERAL.findall(source.read_text()))
    for config in (REPO / "config").glob("*.yaml"):
        names.update(named_by_config(config.read_text()))
    return frozenset(names)


def kubectl() -> str | None:
    return shutil.which("kubectl")


@cache
def render(overlay: str) -> tuple[Doc, ...]:
    """`kubectl kustomize` of one overlay, parsed. Raises if kubectl is missing or fails."""
    binary = kubectl()
    if binary is None:
        raise FileNotFoundError(KUBECTL_MISSING)
    result = subprocess.run(
        [binary, "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=KUSTOMIZE_TIMEOUT_SECONDS,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {overlay} failed:\n{result.stderr}")
    return tuple(parse_documents(result.stdout))


def overlay_image(overlay: str, name: str = "aiport") -> str:
    """name:tag the overlay's `images:` sets for the `aiport` (or another) image."""
    kustomization = yaml.safe_load((K8S / "overlays" / overlay / "kustomization.yaml").read_text())
    for image in kustomization["images"]:
        if image["name"] == name:
            return f"{image.get('newName', name)}:{image['newTag']}"
    raise LookupError(f"{overlay}: no images entry for {name}")
