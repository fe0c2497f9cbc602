"""python -m services.providers — the Providers gRPC service."""

from __future__ import annotations

from aiport.v1 import providers_pb2_grpc

from services.common import logs, runtime, settings
from services.common.grpc_server import serve
from services.providers.failover import Breakers, policy_from_env
from services.providers.routes import load_routes
from services.providers.server import ProvidersService


async def main() -> None:
    logs.setup("providers")
    service = ProvidersService(load_routes(settings.providers_path()), Breakers(policy_from_env()))

    def register(server: object) -> list[str]:
        providers_pb2_grpc.add_ProvidersServicer_to_server(service, server)
        return ["aiport.v1.Providers"]

    await serve(settings.listen_addr(settings.providers_addr()), register, on_stop=service.close)


if __name__ == "__main__":
    runtime.run(main())
