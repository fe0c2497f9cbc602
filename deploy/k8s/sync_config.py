"""Copy the repository's config into the kustomize tree, and re-render Envoy's config.

python -m deploy.k8s.sync_config          # rewrite the copies
python -m deploy.k8s.sync_config --check  # exit 1 if any copy is stale

kustomize reads files only below its own root, so the ConfigMaps are generated
from committed copies; tests/deploy checks they equal the originals.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Final

from deploy.k8s import render_envoy

K8S_DIR: Final = Path(__file__).resolve().parent
REPO: Final = K8S_DIR.parents[1]

# copy (under deploy/k8s) -> original (under the repository root)
COPIES: Final[dict[Path, Path]] = {
    K8S_DIR / "base/config/catalog.yaml": REPO / "config/catalog.yaml",
    K8S_DIR / "base/config/providers.yaml": REPO / "config/providers.yaml",
    K8S_DIR / "base/config/payments.yaml": REPO / "config/payments.yaml",
    K8S_DIR / "base/envoy/error_shaping.lua": REPO / "deploy/envoy/error_shaping.lua",
    K8S_DIR / "overlays/dev/config/providers.sandbox.yaml": REPO / "config/providers.sandbox.yaml",
}


def stale_copies() -> list[Path]:
    """Copies that are missing or differ from their original."""
    return [
        copy
        for copy, original in COPIES.items()
        if not copy.exists() or copy.read_bytes() != original.read_bytes()
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_copies()
        for copy in stale:
            print(f"{copy} differs from {COPIES[copy]}", file=sys.stderr)
        return 1 if stale or render_envoy.main(["--check"]) else 0
    for copy, original in COPIES.items():
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes(original.read_bytes())
    return render_envoy.main([])


if __name__ == "__main__":
    sys.exit(main())
