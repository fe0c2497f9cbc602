"""Low-balance alerts: the customer's threshold, billing's claim (once per fall
below it, re-armed above it, SKIP LOCKED between replicas), and the accounts
service mailing every verified member (caught by the local mail sink)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from aiosmtpd.smtp import SMTP
from aiport.v1 import billing_pb2, billing_pb2_grpc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from sandbox.mail_sink import Keep, body_text, mails_to
from services.accounts import config as accounts_config
from services.accounts import migrate as accounts_migrate
from services.accounts import rules as accounts_rules
from services.accounts import store
from services.accounts.config import SmtpSettings
from services.accounts.low_balance import Alert, LowBalanceAlerts
from services.accounts.mail import Mailer, rupiah
from services.accounts.service import MailSettings
from services.billing import ledger
from services.billing.money import Money
from services.billing.postings import ReversalReason
from services.billing.rules import InvalidArgument
from services.common import pg

from .helpers import IDR, funded_account

pytestmark = pytest.mark.usefixtures("check_invariants")


async def claimed(engine: AsyncEngine, mine: Sequence[str], limit: int = 0) -> dict[str, Alert]:
    """What one claim hands out of these accounts (others' alerts are left aside)."""
    alerts = await ledger.claim_low_balance_alerts(engine, limit)
    return {
        a.account_id: Alert(a.account_id, a.available_micros, a.threshold_micros)
        for a in alerts
        if a.account_id in mine
    }


async def alerted(engine: AsyncEngine, account_id: str) -> bool:
    async with engine.connect() as conn:
        at = (
            await conn.execute(
                text("SELECT low_balance_alerted_at FROM billing.accounts WHERE id = :id"),
                {"id": account_id},
            )
        ).scalar_one()
    return at is not None


async def spend(money: Money, account_id: str, amount: int) -> None:
    hold = await money.place_hold(account_id, amount, f"spend-{secrets.token_hex(8)}")
    await money.capture(hold.id, amount)


async def test_the_threshold_is_set_read_and_turned_off(
    engine: AsyncEngine, money: Money, stub: billing_pb2_grpc.BillingStub
) -> None:
    account_id = await funded_account(engine, money, 50 * IDR)
    reply = await stub.SetLowBalanceAlert(
        billing_pb2.SetLowBalanceAlertRequest(account_id=account_id, threshold_micros=20 * IDR)
    )
    assert (reply.low_balance_threshold_micros, reply.available_micros) == (20 * IDR, 50 * IDR)
    balance = await stub.GetAccountBalance(
        billing_pb2.GetAccountBalanceRequest(account_id=account_id)
    )
    assert (balance.low_balance_threshold_micros, balance.debt_micros) == (20 * IDR, 0)
    off = await stub.SetLowBalanceAlert(
        billing_pb2.SetLowBalanceAlertRequest(account_id=account_id, threshold_micros=0)
    )
    assert off.low_balance_threshold_micros == 0
    for request, code in (
        (
            billing_pb2.SetLowBalanceAlertRequest(account_id=account_id, threshold_micros=-1),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            billing_pb2.SetLowBalanceAlertRequest(
                account_id="acct_" + "Q" * 20, threshold_micros=IDR
            ),
            grpc.StatusCode.NOT_FOUND,
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.SetLowBalanceAlert(request)
        assert refused.value.code() == code
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.SetLowBalanceAlert(
            billing_pb2.SetLowBalanceAlertRequest(account_id=account_id, threshold_micros=-5)
        )
    assert "threshold_micros" in (refused.value.details() or "")


async def test_an_alert_is_claimed_once_per_fall_and_re_armed_above(
    engine: AsyncEngine, money: Money
) -> None:
    account_id = await funded_account(engine, money, 10 * IDR)
    await ledger.set_low_balance_alert(engine, account_id, 20 * IDR)
    assert await claimed(engine, [account_id]) == {
        account_id: Alert(account_id, 10 * IDR, 20 * IDR)
    }
    assert await alerted(engine, account_id)
    # Still below: not again.
    await spend(money, account_id, IDR)
    assert await claimed(engine, [account_id]) == {}
    # Back at the threshold: re-armed (and nothing to send).
    await money.top_up(account_id, 11 * IDR)
    assert await claimed(engine, [account_id]) == {}
    assert not await alerted(engine, account_id)
    # Below again: alerted again, with the balance of now.
    await spend(money, account_id, 5 * IDR)
    assert await claimed(engine, [account_id]) == {
        account_id: Alert(account_id, 15 * IDR, 20 * IDR)
    }


async def test_held_money_counts_as_spent_and_no_threshold_no_alert(
    engine: AsyncEngine, money: Money
) -> None:
    watched = await funded_account(engine, money, 30 * IDR)
    unwatched = await funded_account(engine, money, IDR)
    await ledger.set_low_balance_alert(engine, watched, 20 * IDR)
    assert await claimed(engine, [watched, unwatched]) == {}
    await money.place_hold(watched, 15 * IDR, f"held-{watched}")
    assert await claimed(engine, [watched, unwatched]) == {
        watched: Alert(watched, 15 * IDR, 20 * IDR)
    }


async def test_another_threshold_arms_the_alert_again_the_same_one_does_not(
    engine: AsyncEngine, money: Money
) -> None:
    account_id = await funded_account(engine, money, 10 * IDR)
    await ledger.set_low_balance_alert(engine, account_id, 20 * IDR)
    assert account_id in await claimed(engine, [account_id])
    await ledger.set_low_balance_alert(engine, account_id, 20 * IDR)
    assert await claimed(engine, [account_id]) == {}
    await ledger.set_low_balance_alert(engine, account_id, 15 * IDR)
    assert await claimed(engine, [account_id]) == {
        account_id: Alert(account_id, 10 * IDR, 15 * IDR)
    }
    # Off: nothing claimed, and nothing remembered.
    await ledger.set_low_balance_alert(engine, account_id, 0)
    assert await claimed(engine, [account_id]) == {}
    assert not await alerted(engine, account_id)


async def test_disabled_accounts_are_not_told_to_top_up_suspended_ones_are(
    engine: AsyncEngine, money: Money
) -> None:
    disabled = await funded_account(engine, money, IDR)
    await ledger.set_low_balance_alert(engine, disabled, 5 * IDR)
    await ledger.set_account_disabled(engine, disabled, disabled=True, reason="closed")
    suspended = await funded_account(engine, money, IDR)
    await ledger.set_low_balance_alert(engine, suspended, 5 * IDR)
    await spend(money, suspended, IDR)
    await money.reverse_top_up(
        suspended, IDR, idempotency_key=f"r-{suspended}", rail="m", reason=ReversalReason.REFUND
    )
    assert await claimed(engine, [disabled, suspended]) == {suspended: Alert(suspended, 0, 5 * IDR)}


async def test_a_locked_account_is_skipped_not_waited_for(
    engine: AsyncEngine, money: Money
) -> None:
    account_id = await funded_account(engine, money, IDR)
    await ledger.set_low_balance_alert(engine, account_id, 5 * IDR)
    # Another replica (or a payment) holds the row.
    async with engine.connect() as other:
        await other.begin()
        await other.execute(
            text("SELECT 1 FROM billing.accounts WHERE id = :id FOR NO KEY UPDATE"),
            {"id": account_id},
        )
        assert await asyncio.wait_for(claimed(engine, [account_id]), timeout=5) == {}
        await other.rollback()
    assert account_id in await claimed(engine, [account_id])


async def test_replicas_claiming_at_once_each_get_different_accounts(
    engine: AsyncEngine, money: Money
) -> None:
    mine = [await funded_account(engine, money, IDR) for _ in range(12)]
    for account_id in mine:
        await ledger.set_low_balance_alert(engine, account_id, 2 * IDR)
    rounds = await asyncio.gather(*(claimed(engine, mine, limit=3) for _ in range(8)))
    handed_out = [account_id for batch in rounds for account_id in batch]
    assert all(len(batch) <= 3 for batch in rounds)
    assert len(handed_out) == len(set(handed_out))
    rest = await claimed(engine, mine, limit=1000)
    assert sorted([*handed_out, *rest]) == sorted(mine)


async def test_claim_limits(engine: AsyncEngine) -> None:
    for limit in (-1, 1001):
        with pytest.raises(InvalidArgument, match="limit"):
            await ledger.claim_low_balance_alerts(engine, limit)


# -- the accounts service mails them ---------------------------------------------


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def accounts_pool(database_url: str) -> AsyncIterator[pg.Pool]:
    """The accounts schema beside billing's (as in a real deployment's database)."""
    await asyncio.to_thread(accounts_migrate.upgrade, database_url)
    pool = pg.pool(database_url, "accounts-test", min_size=1, max_size=2)
    await pool.open(wait=True, timeout=10)
    yield pool
    await pool.close()


@pytest_asyncio.fixture
async def mail_sink(tmp_path: Path) -> AsyncIterator[tuple[SmtpSettings, Path]]:
    """The local mail sink (sandbox.mail_sink) on a free port, keeping mail in tmp_path."""
    folder = tmp_path / "mail"
    handler = Keep(folder)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(handler), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield (
        SmtpSettings("127.0.0.1", port, "aiport <no-reply@aiport.test>", None, None, False),
        folder,
    )
    server.close()
    await server.wait_closed()


async def member(pool: pg.Pool, account_id: str, locale: str, *, verified: bool = True) -> str:
    """A user of the account (as sign-up makes one), verified or not; its email."""
    user_id = accounts_rules.new_user_id()
    email = f"{locale}-{secrets.token_hex(4)}@example.co.id"
    created = await store.create_user(
        pool,
        user_id=user_id,
        email=email,
        password_hash="$argon2id$not-a-real-hash",
        locale=locale,
        billing_account_id=account_id,
        link_hash=secrets.token_bytes(32),
        link_ttl_seconds=60,
    )
    assert created
    if verified:
        async with pool.connection() as conn:
            await conn.execute(
                "UPDATE accounts.users SET email_verified_at = now() WHERE id = %(id)s",
                {"id": user_id},
            )
    return email


async def test_every_verified_member_is_mailed_in_their_language_once(
    engine: AsyncEngine,
    money: Money,
    stub: billing_pb2_grpc.BillingStub,
    accounts_pool: pg.Pool,
    mail_sink: tuple[SmtpSettings, Path],
) -> None:
    smtp, folder = mail_sink
    account_id = await funded_account(engine, money, 30 * IDR)
    await ledger.set_low_balance_alert(engine, account_id, 20_000 * IDR)
    await money.top_up(account_id, 9_470 * IDR + 500_000)  # Rp 9.500,5 available
    ana = await member(accounts_pool, account_id, "id")
    ben = await member(accounts_pool, account_id, "en")
    unverified = await member(accounts_pool, account_id, "en", verified=False)

    async def claim(limit: int) -> list[Alert]:
        # Over gRPC, as services/accounts/__main__.py does; only this test's account.
        reply = await stub.ClaimLowBalanceAlerts(
            billing_pb2.ClaimLowBalanceAlertsRequest(limit=limit)
        )
        return [
            Alert(a.account_id, a.available_micros, a.threshold_micros)
            for a in reply.alerts
            if a.account_id == account_id
        ]

    mailer = Mailer(smtp)
    alerts = LowBalanceAlerts(
        accounts_pool,
        mailer=mailer,
        mail=MailSettings(sender=smtp.sender, public_url="https://aiport.example/"),
        claim=claim,
    )
    poller = asyncio.create_task(alerts.run_forever(0.05))
    try:
        for _ in range(200):
            if mails_to(folder, ana) and mails_to(folder, ben):
                break
            await asyncio.sleep(0.05)
        # A few more polls: nothing more is sent while the balance stays below.
        await asyncio.sleep(0.3)
    finally:
        poller.cancel()
        await asyncio.gather(poller, return_exceptions=True)
        await mailer.close()
    [in_indonesian] = mails_to(folder, ana)
    [in_english] = mails_to(folder, ben)
    assert mails_to(folder, unverified) == []
    assert in_indonesian["Subject"] == "Saldo aiport Anda di bawah Rp 20.000"
    body = body_text(in_indonesian)
    assert "Saldo tersedia Anda Rp 9.500, di bawah batas peringatan Anda Rp 20.000." in body
    assert "https://aiport.example/dashboard/topup" in body
    assert in_indonesian["Content-Language"] == "id"
    assert in_english["Subject"] == "Your aiport balance is below Rp 20,000"
    body = body_text(in_english)
    assert "Your available balance is Rp 9,500, below your alert of Rp 20,000." in body
    assert "Top up at https://aiport.example/dashboard/topup" in body


def test_rupiah_in_each_language() -> None:
    assert (rupiah(1_234_567_890_000, "id"), rupiah(1_234_567_890_000, "en")) == (
        "Rp 1.234.567",
        "Rp 1,234,567",
    )
    assert rupiah(999_999, "id") == "Rp 0"


def test_the_poll_interval_is_configured_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIPORT_LOW_BALANCE_POLL_SECONDS", raising=False)
    assert accounts_config.low_balance_poll_seconds() == 60.0
    monkeypatch.setenv("AIPORT_LOW_BALANCE_POLL_SECONDS", "0.2")
    assert accounts_config.low_balance_poll_seconds() == 0.2
    for bad in ("0", "-1", "nan", "soon"):
        monkeypatch.setenv("AIPORT_LOW_BALANCE_POLL_SECONDS", bad)
        with pytest.raises(ValueError):
            accounts_config.low_balance_poll_seconds()
