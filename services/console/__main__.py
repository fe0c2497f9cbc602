"""python -m services.console [--addr HOST:PORT]"""

from __future__ import annotations

import argparse

from services.common import logs, runtime, settings
from services.console.catalog_client import CatalogClient
from services.console.server import console_addr, public_url, serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m services.console",
        description="aiport's web UI: public pages (and later the dashboard), behind the edge.",
    )
    parser.add_argument(
        "--addr",
        default=settings.listen_addr(console_addr()),
        help="HOST:PORT [AIPORT_LISTEN_ADDR, else AIPORT_CONSOLE_ADDR]",
    )
    args = parser.parse_args(argv)
    logs.setup("console")
    runtime.run(_run(args.addr))


async def _run(addr: str) -> None:
    # Models and prices from the gateway's public Catalog [AIPORT_GATEWAY_ADDR].
    catalog = CatalogClient(settings.gateway_addr())
    try:
        await serve(addr, catalog, public_url())
    finally:
        await catalog.close()


if __name__ == "__main__":
    main()
