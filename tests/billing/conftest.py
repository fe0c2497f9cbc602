"""Billing fixtures: a fresh migrated database per session and an in-process gRPC server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
import pytest_asyncio
from aiport.v1 import billing_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from services.billing.money import Money
from services.billing.server import BillingServicer, register
from services.common import db
from tests.support.databases import drop_database, fresh_database_url, migrate_all

from .helpers import assert_invariants


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    url = fresh_database_url("aiport_test_billing")
    try:
        migrate_all(url)
        yield url
    finally:
        drop_database(url)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = db.create_engine(database_url, application_name="billing")
    yield engine
    await engine.dispose()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def money(database_url: str) -> AsyncIterator[Money]:
    money = Money(database_url)
    await money.open()
    yield money
    await money.close()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def billing_addr(engine: AsyncEngine, money: Money) -> AsyncIterator[str]:
    """The real servicer on a grpc.aio server on a free port (no sweeper task)."""
    server = grpc.aio.server()
    register(server, BillingServicer(engine, money, hold_ttl_seconds=3600))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(None)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def stub(billing_addr: str) -> AsyncIterator[billing_pb2_grpc.BillingStub]:
    async with grpc.aio.insecure_channel(billing_addr) as channel:
        yield billing_pb2_grpc.BillingStub(channel)


@pytest_asyncio.fixture
async def check_invariants(engine: AsyncEngine) -> AsyncIterator[None]:
    """Use in DB tests: after the test, balances and holds still match the ledger."""
    await assert_invariants(engine)
    yield
    await assert_invariants(engine)
