"""Failed authentications counted in PostgreSQL: what every gateway replica shares."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterable
from typing import cast

import grpc
import pytest
from aiport.v1 import billing_pb2, billing_pb2_grpc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.billing import auth_limits
from services.common.auth_failures import (
    BASE_COOLDOWN_SECONDS,
    CLIENT_HEADER,
    CLIENT_THROTTLED_HEADER,
    KEY_THRESHOLD,
    Verdict,
    fingerprint,
)


def bad_key() -> str:
    return "aip_live_" + secrets.token_hex(16)


def client() -> str:
    return f"10.0.{secrets.randbelow(250)}.{secrets.randbelow(250)}"


async def test_the_threshold_locks_the_key_then_refuses_it(engine: AsyncEngine) -> None:
    key, who = bad_key(), client()
    verdicts = [await auth_limits.record_failure_of(engine, who, key) for _ in range(KEY_THRESHOLD)]
    assert all(v == Verdict() for v in verdicts[:-1])
    last = verdicts[-1]
    assert not last.refused
    assert 0 < last.key_locked_seconds <= BASE_COOLDOWN_SECONDS
    refused = await auth_limits.record_failure_of(engine, who, key)
    assert refused.refused and refused.key_locked_seconds > 0
    # Another key from the same client is not locked by it.
    assert await auth_limits.record_failure_of(engine, who, bad_key()) == Verdict()


async def test_concurrent_failures_are_each_counted_once(engine: AsyncEngine) -> None:
    """Two replicas' worth of failures at once: the rows are locked, none is lost,
    and exactly one attempt starts the lock-out."""
    key, who = bad_key(), client()
    verdicts = await asyncio.gather(
        *(auth_limits.record_failure_of(engine, who, key) for _ in range(2 * KEY_THRESHOLD))
    )
    started = [v for v in verdicts if not v.refused and v.key_locked_seconds > 0]
    counted = [v for v in verdicts if not v.refused]
    assert len(started) == 1
    assert len(counted) == KEY_THRESHOLD
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT cardinality(failures), strikes FROM billing.auth_failures"
                    " WHERE scope = 'client' AND name = :client"
                ),
                {"client": who},
            )
        ).one()
    assert tuple(row) == (KEY_THRESHOLD, 0)


async def test_the_gateways_client_name_is_bounded_and_printable() -> None:
    assert auth_limits.client_name("") == "unknown"
    assert auth_limits.client_name("1.2.3.4\n\x00é") == "1.2.3.4"
    assert len(auth_limits.client_name("9" * 500)) == 64


async def test_prune_forgets_quiet_rows_only(engine: AsyncEngine) -> None:
    old, fresh = bad_key(), bad_key()
    await auth_limits.record_failure_of(engine, "203.0.113.1", old)
    await auth_limits.record_failure_of(engine, "203.0.113.1", fresh)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE billing.auth_failures SET updated_at = now() - interval '1 day'"
                " WHERE scope = 'key' AND name = :name"
            ),
            {"name": fingerprint(old)},
        )
    assert await auth_limits.prune(engine) >= 1
    async with engine.connect() as conn:
        names = set(
            (
                await conn.execute(text("SELECT name FROM billing.auth_failures WHERE scope='key'"))
            ).scalars()
        )
    assert fingerprint(old) not in names
    assert fingerprint(fresh) in names


async def test_authenticate_reports_the_lockout_in_trailing_metadata(
    stub: billing_pb2_grpc.BillingStub,
) -> None:
    key, who = bad_key(), client()
    verdicts = []
    for _ in range(KEY_THRESHOLD + 1):
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stub.Authenticate(
                billing_pb2.AuthenticateRequest(api_key=key), metadata=((CLIENT_HEADER, who),)
            )
        assert failed.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # grpc.aio.Metadata at run time: (key, value) pairs (grpc-stubs says otherwise).
        trailing = cast(Iterable[tuple[str, str]], failed.value.trailing_metadata() or ())
        verdicts.append(Verdict.from_metadata(trailing))
    assert [v.key_locked_seconds > 0 for v in verdicts] == [False] * (KEY_THRESHOLD - 1) + [
        True,
        True,
    ]
    assert [v.refused for v in verdicts] == [False] * KEY_THRESHOLD + [True]


async def test_a_throttled_clients_failure_is_verified_but_writes_nothing(
    stub: billing_pb2_grpc.BillingStub, engine: AsyncEngine
) -> None:
    key, who = bad_key(), client()
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await stub.Authenticate(
            billing_pb2.AuthenticateRequest(api_key=key),
            metadata=((CLIENT_HEADER, who), (CLIENT_THROTTLED_HEADER, "1")),
        )
    assert failed.value.code() == grpc.StatusCode.UNAUTHENTICATED
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT count(*) FROM billing.auth_failures WHERE name IN (:k, :c)"),
                {"k": fingerprint(key), "c": who},
            )
        ).scalar_one()
    assert rows == 0
