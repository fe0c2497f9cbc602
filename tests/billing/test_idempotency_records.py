"""Clients' Idempotency-Key records: claimed with the hold, one winner, stored, swept."""

from __future__ import annotations

import asyncio
import hashlib
import secrets

import grpc
import pytest
from aiport.v1 import billing_pb2 as pb
from aiport.v1 import billing_pb2_grpc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.billing.money import Money
from services.billing.sweeper import sweep_idempotency_records

from .helpers import IDR

pytestmark = pytest.mark.usefixtures("check_invariants")

Stub = billing_pb2_grpc.BillingStub
State = pb.IdempotentAnswer


async def funded_key(stub: Stub, idr: int = 10) -> tuple[str, str]:
    info = await stub.CreateAccount(pb.CreateAccountRequest(name="idempotency test"))
    await stub.TopUp(pb.TopUpRequest(account_id=info.account_id, amount_micros=idr * IDR))
    key = await stub.CreateApiKey(pb.CreateApiKeyRequest(account_id=info.account_id))
    return info.account_id, key.api_key


def authorize(
    api_key: str, client_key: str, body: bytes = b"{}", amount: int = IDR
) -> pb.AuthorizeHoldRequest:
    return pb.AuthorizeHoldRequest(
        api_key=api_key,
        amount_micros=amount,
        idempotency_key="chat:" + secrets.token_hex(16),  # each call's own, as the gateway's
        client_idempotency=pb.ClientIdempotency(
            key=client_key, request_hash=hashlib.sha256(body).digest()
        ),
    )


async def held(stub: Stub, account_id: str) -> int:
    balance = await stub.GetAccountBalance(pb.GetAccountBalanceRequest(account_id=account_id))
    return int(balance.held_micros)


async def test_fifty_parallel_claims_of_one_key_place_one_hold(stub: Stub) -> None:
    account_id, api_key = await funded_key(stub)
    answers = await asyncio.gather(
        *(stub.AuthorizeHold(authorize(api_key, "same-key")) for _ in range(50))
    )
    placed = [a for a in answers if a.hold.hold_id]
    assert len(placed) == 1
    assert [a.earlier.state for a in answers if not a.hold.hold_id] == [State.IN_FLIGHT] * 49
    assert await held(stub, account_id) == IDR


async def test_a_stored_answer_is_replayed_and_moves_no_money(stub: Stub) -> None:
    account_id, api_key = await funded_key(stub)
    first_request = authorize(api_key, "k1", b'{"a":1}')
    first = await stub.AuthorizeHold(first_request)
    await stub.CaptureHold(pb.CaptureHoldRequest(hold_id=first.hold.hold_id, amount_micros=IDR))
    stored = await stub.StoreIdempotentAnswer(
        pb.StoreIdempotentAnswerRequest(
            owner=first_request.idempotency_key,
            http_status=200,
            content_type="application/json",
            body=b'{"answer":1}',
        )
    )
    assert stored.changed
    repeat = await stub.AuthorizeHold(authorize(api_key, "k1", b'{"a":1}'))
    assert not repeat.hold.hold_id
    assert repeat.principal.account_id == account_id
    assert repeat.earlier.state == State.COMPLETED
    assert (repeat.earlier.http_status, repeat.earlier.content_type, repeat.earlier.body) == (
        200,
        "application/json",
        b'{"answer":1}',
    )
    balance = await stub.GetAccountBalance(pb.GetAccountBalanceRequest(account_id=account_id))
    assert (balance.balance_micros, balance.held_micros) == (9 * IDR, 0)
    # Stored once: a second store of the same claim changes nothing.
    again = await stub.StoreIdempotentAnswer(
        pb.StoreIdempotentAnswerRequest(
            owner=first_request.idempotency_key, http_status=500, content_type="x", body=b""
        )
    )
    assert not again.changed


async def test_another_body_under_the_key_is_a_mismatch_even_in_flight(stub: Stub) -> None:
    _, api_key = await funded_key(stub)
    await stub.AuthorizeHold(authorize(api_key, "k2", b"one"))
    other = await stub.AuthorizeHold(authorize(api_key, "k2", b"two"))
    assert other.earlier.state == State.MISMATCH
    assert not other.earlier.body


async def test_keys_are_scoped_per_account(stub: Stub) -> None:
    _, first_key = await funded_key(stub)
    _, second_key = await funded_key(stub)
    assert (await stub.AuthorizeHold(authorize(first_key, "shared"))).hold.hold_id
    assert (await stub.AuthorizeHold(authorize(second_key, "shared"))).hold.hold_id


async def test_a_dropped_claim_frees_the_key(stub: Stub) -> None:
    account_id, api_key = await funded_key(stub)
    request = authorize(api_key, "k3")
    first = await stub.AuthorizeHold(request)
    await stub.ReleaseHold(pb.ReleaseHoldRequest(hold_id=first.hold.hold_id))
    dropped = await stub.DropIdempotencyClaim(
        pb.DropIdempotencyClaimRequest(owner=request.idempotency_key)
    )
    assert dropped.changed
    assert (await stub.AuthorizeHold(authorize(api_key, "k3"))).hold.hold_id
    assert await held(stub, account_id) == IDR


async def test_no_claim_is_kept_when_the_hold_cannot_be_placed(stub: Stub) -> None:
    account_id, api_key = await funded_key(stub, 1)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.AuthorizeHold(authorize(api_key, "k4", amount=2 * IDR))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # The key was not claimed: the same key, affordable now, is a new call.
    assert (await stub.AuthorizeHold(authorize(api_key, "k4", amount=IDR))).hold.hold_id
    assert await held(stub, account_id) == IDR


async def test_a_lost_answer_asked_again_gets_its_own_hold(stub: Stub) -> None:
    _, api_key = await funded_key(stub)
    request = authorize(api_key, "k5")
    first = await stub.AuthorizeHold(request)
    again = await stub.AuthorizeHold(request)
    assert again.hold.hold_id == first.hold.hold_id


async def test_a_lapsed_claim_is_taken_over_and_its_owner_cannot_store(
    stub: Stub, engine: AsyncEngine
) -> None:
    account_id, api_key = await funded_key(stub)
    crashed = authorize(api_key, "k6")
    await stub.AuthorizeHold(crashed)
    async with engine.begin() as conn:  # as if its hold's TTL had passed
        await conn.execute(
            text(
                "UPDATE billing.idempotency_records SET claim_expires_at = now()"
                " WHERE account_id = :a AND key = 'k6'"
            ),
            {"a": account_id},
        )
    assert (await stub.AuthorizeHold(authorize(api_key, "k6"))).hold.hold_id
    late = await stub.StoreIdempotentAnswer(
        pb.StoreIdempotentAnswerRequest(
            owner=crashed.idempotency_key, http_status=200, content_type="x", body=b"late"
        )
    )
    assert not late.changed


async def test_the_sweep_deletes_records_past_retention_only(
    stub: Stub, engine: AsyncEngine, money: Money
) -> None:
    account_id, api_key = await funded_key(stub)
    await stub.AuthorizeHold(authorize(api_key, "old"))
    await stub.AuthorizeHold(authorize(api_key, "new"))
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE billing.idempotency_records SET expires_at = created_at"
                " WHERE account_id = :a AND key = 'old'"
            ),
            {"a": account_id},
        )
    assert await sweep_idempotency_records(money, batch_size=1) >= 1
    async with engine.connect() as conn:
        left = (
            await conn.execute(
                text("SELECT key FROM billing.idempotency_records WHERE account_id = :a"),
                {"a": account_id},
            )
        ).scalars()
        assert sorted(left) == ["new"]


async def test_bad_client_keys_are_invalid_arguments(stub: Stub) -> None:
    _, api_key = await funded_key(stub)
    for bad in ("", "x" * 256, "tab\there", "é"):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.AuthorizeHold(authorize(api_key, bad))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# -- with a key's controls (caps, allowlist): both hold on the claiming path ------------


async def capped_key(stub: Stub, daily_cap_idr: int) -> tuple[str, str]:
    info = await stub.CreateAccount(pb.CreateAccountRequest(name="idempotent and capped"))
    await stub.TopUp(pb.TopUpRequest(account_id=info.account_id, amount_micros=100 * IDR))
    key = await stub.CreateApiKey(
        pb.CreateApiKeyRequest(
            account_id=info.account_id,
            settings=pb.ApiKeySettings(
                daily_cap_micros=daily_cap_idr * IDR, allowed_models=pb.ModelAllowlist(models=["m"])
            ),
        )
    )
    return info.account_id, key.api_key


def claimed(
    api_key: str, client_key: str, amount: int, model: str = "m"
) -> pb.AuthorizeHoldRequest:
    request = authorize(api_key, client_key, amount=amount)
    request.model = model
    return request


async def test_parallel_claims_of_distinct_keys_never_pass_a_cap(stub: Stub) -> None:
    account_id, api_key = await capped_key(stub, daily_cap_idr=3)
    calls = [stub.AuthorizeHold(claimed(api_key, f"k{i}", IDR)) for i in range(20)]
    answers = await asyncio.gather(*calls, return_exceptions=True)
    placed = [a for a in answers if isinstance(a, pb.AuthorizedHold)]
    refused = [a for a in answers if isinstance(a, grpc.aio.AioRpcError)]
    assert len(placed) == 3 and len(refused) == 17
    assert {e.code() for e in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert await held(stub, account_id) == 3 * IDR


async def test_a_refused_claim_is_not_kept(stub: Stub) -> None:
    """Refused by the cap or the allowlist, the key was never claimed: the same
    key may run once there is room (or with an allowed model)."""
    _, api_key = await capped_key(stub, daily_cap_idr=1)
    with pytest.raises(grpc.aio.AioRpcError) as over:
        await stub.AuthorizeHold(claimed(api_key, "again", 2 * IDR))
    assert over.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(grpc.aio.AioRpcError) as model:
        await stub.AuthorizeHold(claimed(api_key, "again", IDR, model="x"))
    assert model.value.code() == grpc.StatusCode.PERMISSION_DENIED
    placed = await stub.AuthorizeHold(claimed(api_key, "again", IDR))
    assert placed.hold.hold_id


# -- a claim without a hold (keys, top-ups, uploads) -------------------------------------


def claim_only(
    account_id: str, client_key: str, owner: str, body: bytes = b"{}"
) -> pb.ClaimIdempotencyKeyRequest:
    return pb.ClaimIdempotencyKeyRequest(
        account_id=account_id,
        client=pb.ClientIdempotency(key=client_key, request_hash=hashlib.sha256(body).digest()),
        owner=owner,
    )


async def test_a_claim_without_a_hold_has_one_winner_then_replays(stub: Stub) -> None:
    account_id, _ = await funded_key(stub)
    owners = [f"call:{i}" for i in range(30)]
    answers = await asyncio.gather(
        *(stub.ClaimIdempotencyKey(claim_only(account_id, "topup-1", o)) for o in owners)
    )
    winners = [
        o for o, a in zip(owners, answers, strict=True) if a.state == State.STATE_UNSPECIFIED
    ]
    assert len(winners) == 1
    assert sum(a.state == State.IN_FLIGHT for a in answers) == 29
    await stub.StoreIdempotentAnswer(
        pb.StoreIdempotentAnswerRequest(
            owner=winners[0], http_status=200, content_type="application/x-protobuf", body=b"x"
        )
    )
    again = await stub.ClaimIdempotencyKey(claim_only(account_id, "topup-1", "call:later"))
    assert (again.state, again.body) == (State.COMPLETED, b"x")
    other = await stub.ClaimIdempotencyKey(claim_only(account_id, "topup-1", "call:x", b"[]"))
    assert other.state == State.MISMATCH
    # Another account's key of the same name is its own.
    theirs, _ = await funded_key(stub)
    fresh = await stub.ClaimIdempotencyKey(claim_only(theirs, "topup-1", "call:theirs"))
    assert fresh.state == State.STATE_UNSPECIFIED


async def test_a_dropped_claim_without_a_hold_frees_the_key(stub: Stub) -> None:
    account_id, _ = await funded_key(stub)
    first = await stub.ClaimIdempotencyKey(claim_only(account_id, "k", "call:a"))
    assert first.state == State.STATE_UNSPECIFIED
    await stub.DropIdempotencyClaim(pb.DropIdempotencyClaimRequest(owner="call:a"))
    retry = await stub.ClaimIdempotencyKey(claim_only(account_id, "k", "call:b"))
    assert retry.state == State.STATE_UNSPECIFIED
