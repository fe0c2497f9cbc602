"""python -m services.console [--addr HOST:PORT]"""

from __future__ import annotations

import argparse

from services.common import logs, runtime, service_auth, settings
from services.console.account_api import AccountApi
from services.console.accounts_client import AccountsClient
from services.console.catalog_client import CatalogClient
from services.console.server import console_addr, public_url, serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m services.console",
        description="aiport's web UI: public pages, sign-up and the dashboard, behind the edge.",
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
    # People and sessions: the accounts service [AIPORT_ACCOUNTS_ADDR], with the
    # console's own token [AIPORT_ACCOUNTS_TOKEN]. Without the token the console
    # serves the public pages only (no sign-up, log-in or dashboard).
    token = service_auth.own_token(name=service_auth.ACCOUNTS_TOKEN_ENV)
    accounts = AccountsClient(settings.accounts_addr(), token) if token else None
    # The dashboard's data: the gateway's public Account API, as the person.
    api = AccountApi(settings.gateway_addr()) if token else None
    try:
        await serve(addr, catalog, public_url(), accounts, api)
    finally:
        await catalog.close()
        if accounts is not None:
            await accounts.close()
        if api is not None:
            await api.close()


if __name__ == "__main__":
    main()
