"""python -m services.gateway — the public API's gRPC server (behind the Envoy edge)."""

from __future__ import annotations

import grpc
from aiport.v1 import (
    account_pb2_grpc,
    admin_pb2_grpc,
    catalog_pb2_grpc,
    chat_pb2_grpc,
    generate_pb2_grpc,
    job_state_pb2_grpc,
    jobs_pb2_grpc,
    media_pb2_grpc,
    messages_pb2_grpc,
    responses_pb2_grpc,
    text_pb2_grpc,
    topups_pb2_grpc,
)
from grpc_reflection.v1alpha import reflection

from services.common import blobs, logs, runtime, service_auth, settings
from services.common.catalog import load_catalog
from services.common.grpc_server import LenientRequests, channel, serve
from services.gateway import rate_limits
from services.gateway.account_api import AccountService
from services.gateway.admin_api import AdminService
from services.gateway.jobs_api import GenerateService, JobsBackend, JobsService
from services.gateway.references import ReferenceResolver
from services.gateway.server import (
    Backends,
    CatalogService,
    ChatService,
    MessagesService,
    ResponsesService,
)
from services.gateway.topups_api import TopUpsService
from services.gateway.typed_api import MediaService, TextService

# Job holds outlive the job timeout, so the jobs service always settles them first.
HOLD_MARGIN_SECONDS = 900
# On shutdown, how long settlements still in flight may take (holds left open
# after that expire and are released by billing).
DRAIN_SETTLEMENTS_SECONDS = 30.0
# Then, the settlements of the relays cut short by closing the providers channel.
FINAL_SETTLE_SECONDS = 10.0


async def main() -> None:
    logs.setup("gateway")
    catalog = load_catalog(settings.catalog_path())
    billing_token = service_auth.own_token()
    jobs_token = service_auth.own_token(name=service_auth.JOBS_TOKEN_ENV)
    if billing_token is None or jobs_token is None:
        # Without them every paid call would fail; say so now, not per request.
        raise SystemExit(
            f"gateway: {service_auth.TOKEN_ENV} and {service_auth.JOBS_TOKEN_ENV} must be set"
        )
    billing = channel(settings.billing_addr(), service_auth.metadata(billing_token))
    providers = channel(settings.providers_addr())
    # Sessions (the console's calls for a logged-in person) need the accounts
    # service; without its token, every caller needs an API key.
    accounts_token = service_auth.own_token(name=service_auth.ACCOUNTS_TOKEN_ENV)
    accounts = (
        channel(settings.accounts_addr(), service_auth.metadata(accounts_token))
        if accounts_token is not None
        else None
    )
    # Top-ups need the payments service; without its token, /v1/topups is a 503.
    payments_token = service_auth.own_token(name=service_auth.PAYMENTS_TOKEN_ENV)
    payments = (
        channel(settings.payments_addr(), service_auth.metadata(payments_token))
        if payments_token is not None
        else None
    )
    try:
        defaults = rate_limits.defaults_from_env()
    except ValueError as exc:
        raise SystemExit(f"gateway: {exc}") from None
    # Shared by every replica; when Redis is away, calls are let through (rate_limits.py).
    limiter = rate_limits.Limiter(
        rate_limits.redis_client(settings.redis_url()), rate_limits.redis_prefix(), defaults
    )
    backends = Backends(billing, providers, accounts, limiter)
    job_state = channel(settings.jobs_addr(), service_auth.metadata(jobs_token))
    jobs = JobsBackend(
        backends,
        job_state_pb2_grpc.JobStateStub(job_state),
        hold_ttl_seconds=settings.env_int("AIPORT_JOB_TIMEOUT_SECONDS", 600) + HOLD_MARGIN_SECONDS,
    )
    store = blobs.blob_store_from_env()
    public_url = blobs.public_base_url()

    def register(grpc_server: grpc.aio.Server) -> list[str]:
        server = LenientRequests(grpc_server)
        chat_pb2_grpc.add_ChatServicer_to_server(ChatService(catalog, backends), server)
        messages_pb2_grpc.add_MessagesServicer_to_server(MessagesService(catalog, backends), server)
        responses_pb2_grpc.add_ResponsesServicer_to_server(
            ResponsesService(catalog, backends), server
        )
        catalog_pb2_grpc.add_CatalogServicer_to_server(CatalogService(catalog, backends), server)
        account_pb2_grpc.add_AccountServicer_to_server(AccountService(backends), server)
        generate_pb2_grpc.add_GenerateServicer_to_server(
            GenerateService(catalog, backends, jobs, store, public_url), server
        )
        jobs_service = JobsService(backends, jobs, public_url)
        jobs_pb2_grpc.add_JobsServicer_to_server(jobs_service, server)
        admin_pb2_grpc.add_AdminServicer_to_server(AdminService(backends, jobs_service), server)
        topups_pb2_grpc.add_TopUpsServicer_to_server(TopUpsService(backends, payments), server)
        # Typed gRPC for internal callers (typed_api.py): the edge never routes to them.
        text_pb2_grpc.add_TextServicer_to_server(TextService(catalog, backends), server)
        media_pb2_grpc.add_MediaServicer_to_server(
            MediaService(catalog, backends, jobs, ReferenceResolver(store, public_url)), server
        )
        names = [
            "aiport.v1.Chat",
            "aiport.v1.Messages",
            "aiport.v1.Responses",
            "aiport.v1.Catalog",
            "aiport.v1.Account",
            "aiport.v1.Generate",
            "aiport.v1.Jobs",
            "aiport.v1.Admin",
            "aiport.v1.TopUps",
            "aiport.v1.Text",
            "aiport.v1.Media",
        ]
        # So grpcurl and other tools list and call the services without the protos.
        reflection.enable_server_reflection(
            [*names, "grpc.health.v1.Health", reflection.SERVICE_NAME], grpc_server
        )
        return names

    async def close() -> None:
        # Relays finishing upstream calls for departed clients, and settlements.
        await backends.drain(DRAIN_SETTLEMENTS_SECONDS)
        # Relays still following an upstream: ending their calls makes each settle
        # what it knows (a release, or an estimate) while billing is still reachable.
        await providers.close(None)
        await backends.drain(FINAL_SETTLE_SECONDS)
        await billing.close(None)
        await job_state.close(None)
        if accounts is not None:
            await accounts.close(None)
        if payments is not None:
            await payments.close(None)
        await limiter.close()

    await serve(settings.listen_addr(settings.gateway_addr()), register, on_stop=close)


if __name__ == "__main__":
    runtime.run(main())
