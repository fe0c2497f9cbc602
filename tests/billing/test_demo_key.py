"""make run's demo account and key against the real billing servicer: one live demo
key, reused across runs, kept in a private file under the state directory."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from deploy.local.run import seed_demo
from deploy.local.stack import new_service_tokens
from services.billing import ledger
from services.billing.money import Money
from services.billing.rules import Unauthenticated

pytestmark = pytest.mark.usefixtures("check_invariants")
# This billing fixture checks no token; make run presents its admin token.
TOKEN = new_service_tokens()["admin"]


async def active_keys(engine: AsyncEngine, account_id: str) -> list[str]:
    return [k.id for k in await ledger.list_api_keys(engine, account_id) if k.revoked_at is None]


async def test_make_run_reuses_one_live_demo_key(
    billing_addr: str, engine: AsyncEngine, tmp_path: Path, money: Money
) -> None:
    account_id, key, _ = await asyncio.to_thread(seed_demo, billing_addr, tmp_path, TOKEN)
    key_file = tmp_path / "demo-key"
    assert key_file.read_text().strip() == key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    principal = await money.authenticate(key)
    assert principal.account_id == account_id

    again = await asyncio.to_thread(seed_demo, billing_addr, tmp_path, TOKEN)
    assert again[:2] == (account_id, key)
    assert await active_keys(engine, account_id) == [principal.key_id]

    # Keys minted by earlier runs (or a lost key file): a new key, and every
    # other key of the demo account revoked, so exactly one stays live.
    for _ in range(2):
        await ledger.create_api_key(engine, account_id)
    key_file.unlink()
    _, fresh, _ = await asyncio.to_thread(seed_demo, billing_addr, tmp_path, TOKEN)
    assert fresh != key
    fresh_id = (await money.authenticate(fresh)).key_id
    assert await active_keys(engine, account_id) == [fresh_id]
    with pytest.raises(Unauthenticated):
        await money.authenticate(key)


async def test_a_recreated_database_gets_a_new_demo_account_and_key(
    billing_addr: str, engine: AsyncEngine, tmp_path: Path, money: Money
) -> None:
    # State left by a run against a database that no longer exists.
    (tmp_path / "demo-account").write_text("acct_" + "0" * 20 + "\n")
    (tmp_path / "demo-key").write_text("aip_live_" + "x" * 40 + "\n")
    account_id, key, balance = await asyncio.to_thread(seed_demo, billing_addr, tmp_path, TOKEN)
    assert account_id != "acct_" + "0" * 20
    assert (tmp_path / "demo-account").read_text().strip() == account_id
    assert (tmp_path / "demo-key").read_text().strip() == key
    assert (await money.authenticate(key)).account_id == account_id
    assert balance == "1000000"
