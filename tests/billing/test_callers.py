"""The gateway's and the jobs service's capture, against the real billing
servicer: a cost above the hold is refused by billing (OUT_OF_RANGE) and the
caller captures the hold's amount instead, with an error log, never a 500."""

from __future__ import annotations

import grpc
import pytest
from aiport.v1 import billing_pb2, billing_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from services.billing import ledger
from services.billing.money import Money
from services.common.billing_errors import capture_within_hold
from services.gateway.server import Backends

from .helpers import IDR, funded_account

pytestmark = pytest.mark.usefixtures("check_invariants")


async def test_gateway_capture_above_the_hold_captures_the_hold(
    billing_addr: str, engine: AsyncEngine, money: Money, caplog: pytest.LogCaptureFixture
) -> None:
    account_id = await funded_account(engine, money, 10 * IDR)
    hold = await money.place_hold(account_id, 2 * IDR, "gw-over", model="chat-model")
    async with grpc.aio.insecure_channel(billing_addr) as channel:
        backends = Backends(channel, channel)
        await backends.capture(hold.id, 5 * IDR, "chat chat-model")
    settled = await ledger.get_hold(engine, hold.id)
    assert (settled.status, settled.captured_micros) == ("captured", 2 * IDR)
    assert "capture exceeds its hold; capturing the hold instead" in caplog.text
    entries = await ledger.list_ledger(engine, account_id, 1)
    assert entries[0].description == "chat chat-model (cost above the hold; capped)"


async def test_the_shared_capture_above_the_hold_captures_the_hold(
    billing_addr: str, engine: AsyncEngine, money: Money, caplog: pytest.LogCaptureFixture
) -> None:
    """The one capture the jobs service (and the gateway, above) settle with."""
    account_id = await funded_account(engine, money, 10 * IDR)
    hold = await money.place_hold(account_id, 3 * IDR, "job-over")
    async with grpc.aio.insecure_channel(billing_addr) as channel:
        stub = billing_pb2_grpc.BillingStub(channel)
        request = billing_pb2.CaptureHoldRequest(
            hold_id=hold.id, amount_micros=4 * IDR, description="image m job_over", model="m"
        )
        captured = await capture_within_hold(stub, request, 10, {"job_id": "job_over"})
        assert captured.captured_micros == 3 * IDR  # what the job then shows as charged
        # Any other refusal still reaches the caller's own handling.
        released = await money.place_hold(account_id, IDR, "job-released")
        await money.release(released.id)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await capture_within_hold(
                stub, billing_pb2.CaptureHoldRequest(hold_id=released.id, amount_micros=1), 10, {}
            )
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    settled = await ledger.get_hold(engine, hold.id)
    assert (settled.status, settled.captured_micros) == ("captured", 3 * IDR)
    assert "capture exceeds its hold; capturing the hold instead" in caplog.text
