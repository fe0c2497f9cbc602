"""python -m services.gateway — the public API's gRPC server (behind the Envoy edge)."""

from __future__ import annotations

import asyncio

from aiport.v1 import account_pb2_grpc, catalog_pb2_grpc, chat_pb2_grpc

from services.common import logs, settings
from services.common.catalog import load_catalog
from services.common.grpc_server import channel, serve
from services.gateway.server import AccountService, Backends, CatalogService, ChatService


async def main() -> None:
    logs.setup("gateway")
    catalog = load_catalog(settings.catalog_path())
    billing = channel(settings.billing_addr())
    providers = channel(settings.providers_addr())
    backends = Backends(billing, providers)

    def register(server: object) -> list[str]:
        chat_pb2_grpc.add_ChatServicer_to_server(ChatService(catalog, backends), server)
        catalog_pb2_grpc.add_CatalogServicer_to_server(CatalogService(catalog, backends), server)
        account_pb2_grpc.add_AccountServicer_to_server(AccountService(backends), server)
        return ["aiport.v1.Chat", "aiport.v1.Catalog", "aiport.v1.Account"]

    async def close() -> None:
        await billing.close(None)
        await providers.close(None)

    await serve(settings.gateway_addr(), register, on_stop=close)


if __name__ == "__main__":
    asyncio.run(main())
