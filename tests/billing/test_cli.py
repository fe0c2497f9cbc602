"""aiportctl as a subprocess, plus `python -m services.billing` and `... .migrate` as processes."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiport.v1 import billing_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from deploy.local.ports import free_port
from deploy.local.stack import new_service_tokens
from services.billing import cli, ledger, rules
from services.billing.money import Money
from services.common import db, operator_cli
from tests.support.databases import drop_database, fresh_database_url

from .helpers import AIPORTCTL, IDR, make_overdue

pytestmark = pytest.mark.usefixtures("check_invariants")


async def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=cwd,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def cli_env(addr: str, token: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIPORT_SERVICE_TOKEN")}
    if token is not None:
        env["AIPORT_SERVICE_TOKEN"] = token
    return {**env, "AIPORT_BILLING_ADDR": addr}


async def ctl(addr: str, *args: str, token: str | None = None) -> dict[str, Any]:
    """Run aiportctl with --json, expecting success and exactly one JSON object."""
    code, out, err = await run(str(AIPORTCTL), *args, env=cli_env(addr, token))
    assert code == 0, (out, err)
    return one_object(out)


async def ctl_error(addr: str, *args: str, token: str | None = None) -> dict[str, Any]:
    code, out, err = await run(str(AIPORTCTL), *args, env=cli_env(addr, token))
    assert code == 1, (out, err)
    assert "Traceback" not in err
    body = one_object(out)
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    error: dict[str, Any] = body["error"]
    return error


def one_object(out: str) -> dict[str, Any]:
    decoder = json.JSONDecoder()
    obj, end = decoder.raw_decode(out.strip())
    assert out.strip()[end:] == "", f"more than one JSON value on stdout: {out!r}"
    assert isinstance(obj, dict)
    return obj


async def test_cli_account_topup_balance_ledger(
    billing_addr: str, engine: AsyncEngine, money: Money
) -> None:
    created = await ctl(billing_addr, "account", "create", "CLI", "Co", "--json")
    account_id = created["account_id"]
    assert set(created) == {"account_id"}
    assert account_id.startswith("acct_")

    topped = await ctl(billing_addr, "--json", "topup", account_id, "50000.5")
    assert topped == {"account_id": account_id, "balance_idr": "50000.5"}
    topped = await ctl(billing_addr, "topup", account_id, "0.25", "--json")
    assert topped["balance_idr"] == "50000.75"

    hold = await money.place_hold(account_id, 100 * IDR, "cli-hold-1", description="x")
    await money.capture(hold.id, 1_500_000, "chat m")

    balance = await ctl(billing_addr, "balance", "--json", account_id)
    assert balance["account_id"] == account_id
    assert balance["balance_idr"] == "49999.25"
    assert balance["available_idr"] == "49999.25"
    assert balance["held_idr"] == "0"

    page = await ctl(billing_addr, "ledger", account_id, "--json")
    entries = page["entries"]
    assert [(e["kind"], e["amount_idr"], e["balance_after_idr"]) for e in entries] == [
        ("capture", "-1.5", "49999.25"),
        ("topup", "0.25", "50000.75"),
        ("topup", "50000.5", "50000.5"),
    ]
    assert entries[0]["hold_id"] == hold.id
    assert entries[0]["description"] == "chat m"
    assert entries[1]["hold_id"] is None
    assert isinstance(entries[0]["entry_id"], int)
    assert entries[0]["created_at"].endswith("Z")
    limited = await ctl(billing_addr, "ledger", account_id, "--limit", "1", "--json")
    assert len(limited["entries"]) == 1


async def test_cli_ledger_pages_and_totals(
    billing_addr: str, engine: AsyncEngine, money: Money
) -> None:
    """--limit pages, --after continues from a page's next_after, --all pages through
    everything; each prints the total of what it shows, which for --all is the balance."""
    account_id = (await ctl(billing_addr, "account", "create", "Pages", "--json"))["account_id"]
    for amount in ("1", "2", "3", "4", "5.5"):
        await money.top_up(account_id, rules.parse_idr_amount(amount))
    hold = await money.place_hold(account_id, 2 * IDR, "cli-pages-1")
    await money.capture(hold.id, 1_250_000)
    balance = (await ctl(billing_addr, "balance", account_id, "--json"))["balance_idr"]
    assert balance == "14.25"

    first = await ctl(billing_addr, "ledger", account_id, "--limit", "2", "--json")
    assert [e["amount_idr"] for e in first["entries"]] == ["-1.25", "5.5"]
    assert first["total_idr"] == "4.25"
    assert first["next_after"] == first["entries"][-1]["entry_id"]
    after = str(first["next_after"])
    second = await ctl(
        billing_addr, "ledger", account_id, "--after", after, "--limit", "3", "--json"
    )
    assert [e["amount_idr"] for e in second["entries"]] == ["4", "3", "2"]
    assert second["total_idr"] == "9"
    last = await ctl(
        billing_addr, "ledger", account_id, "--after", str(second["next_after"]), "--json"
    )
    assert [e["amount_idr"] for e in last["entries"]] == ["1"]
    assert last["next_after"] is None

    # --all in pages of 2: every entry once, newest first, and the total is the balance.
    everything = await ctl(billing_addr, "ledger", account_id, "--all", "--limit", "2", "--json")
    assert [e["amount_idr"] for e in everything["entries"]] == ["-1.25", "5.5", "4", "3", "2", "1"]
    assert everything["total_idr"] == balance
    assert everything["next_after"] is None
    rest = await ctl(billing_addr, "ledger", account_id, "--all", "--after", after, "--json")
    assert [e["amount_idr"] for e in rest["entries"]] == ["4", "3", "2", "1"]

    code, out, err = await run(
        str(AIPORTCTL), "ledger", account_id, "--limit", "2", env=cli_env(billing_addr)
    )
    assert code == 0, err
    assert "2 entries, total 4.25 IDR" in out
    assert f"--after {first['next_after']}" in out
    code, out, err = await run(
        str(AIPORTCTL), "ledger", account_id, "--all", "--limit", "4", env=cli_env(billing_addr)
    )
    assert code == 0, err
    assert out.count(" IDR  -> ") == 6
    assert "6 entries, total 14.25 IDR" in out
    assert "--after" not in out

    bad = await ctl_error(billing_addr, "ledger", account_id, "--after", "-3", "--json")
    assert bad["code"] == "INVALID_ARGUMENT"
    assert "--after" in bad["message"]


async def test_cli_keys(billing_addr: str, engine: AsyncEngine, money: Money) -> None:
    account_id = (await ctl(billing_addr, "account", "create", "Keys", "--json"))["account_id"]
    created = await ctl(billing_addr, "key", "create", account_id, "--json")
    assert set(created) == {"key_id", "api_key"}
    assert created["api_key"].startswith("aip_live_")
    principal = await money.authenticate(created["api_key"])
    assert principal.key_id == created["key_id"]

    listed = await ctl(billing_addr, "key", "list", account_id, "--json")
    assert len(listed["keys"]) == 1
    key = listed["keys"][0]
    assert key["key_id"] == created["key_id"]
    assert key["prefix"] == created["api_key"][:13]
    assert key["revoked_at"] is None
    assert key["created_at"].endswith("Z")

    revoked = await ctl(billing_addr, "key", "revoke", created["key_id"], "--json")
    assert revoked == {"key_id": created["key_id"], "revoked": True}
    listed = await ctl(billing_addr, "key", "list", account_id, "--json")
    assert listed["keys"][0]["revoked_at"] is not None
    with pytest.raises(rules.Unauthenticated):
        await money.authenticate(created["api_key"])


async def test_cli_manage_keys_and_disabling(
    billing_addr: str, engine: AsyncEngine, money: Money
) -> None:
    account_id = (await ctl(billing_addr, "account", "create", "Ops", "--json"))["account_id"]
    created = await ctl(
        billing_addr, "key", "create", account_id, "--name", "ops", "--manage", "--json"
    )
    principal = await money.authenticate(created["api_key"])
    assert principal.scopes == ("inference", "manage")
    no_reason = await ctl_error(billing_addr, "account", "disable", account_id, "--json")
    assert no_reason["code"] == "INVALID_ARGUMENT" and "--reason" in no_reason["message"]
    disabled = await ctl(
        billing_addr, "account", "disable", account_id, "--reason", "fraud review", "--json"
    )
    assert disabled == {"account_id": account_id, "disabled": True}
    with pytest.raises(rules.Unauthenticated):
        await money.authenticate(created["api_key"])
    enabled = await ctl(billing_addr, "account", "enable", account_id, "--json")
    assert enabled == {"account_id": account_id, "disabled": False}
    assert (await money.authenticate(created["api_key"])).account_id == account_id


async def test_cli_errors(billing_addr: str) -> None:
    account_id = (await ctl(billing_addr, "account", "create", "Errs", "--json"))["account_id"]
    for amount in ("abc", "-5", "0", "1.0000001"):
        error = await ctl_error(billing_addr, "topup", account_id, amount, "--json")
        assert error["code"] == "INVALID_ARGUMENT"
        assert "amount" in error["message"]
    error = await ctl_error(billing_addr, "balance", "acct_" + "2" * 20, "--json")
    assert error["code"] == "NOT_FOUND"
    assert "not found" in error["message"]
    error = await ctl_error(billing_addr, "balance", "nope", "--json")
    assert error["code"] == "INVALID_ARGUMENT"
    error = await ctl_error(billing_addr, "frobnicate", "--json")
    assert error["code"] == "INVALID_ARGUMENT"
    dead = f"127.0.0.1:{free_port()}"
    error = await ctl_error(billing_addr, "--billing", dead, "balance", account_id, "--json")
    assert error["code"] == "UNAVAILABLE"
    assert dead in error["message"]

    # Without --json: a message on stderr, nothing on stdout, exit 1, no traceback.
    code, out, err = await run(
        str(AIPORTCTL), "topup", account_id, "lots", env=cli_env(billing_addr)
    )
    assert (code, out) == (1, "")
    assert "invalid amount" in err
    assert "Traceback" not in err
    code, out, err = await run(str(AIPORTCTL), "balance", account_id, env=cli_env(dead))
    assert (code, out) == (1, "")
    assert "unreachable" in err
    assert "Traceback" not in err


async def test_cli_human_output(billing_addr: str) -> None:
    code, out, err = await run(
        str(AIPORTCTL), "account", "create", "Human", env=cli_env(billing_addr)
    )
    assert code == 0, err
    account_id = out.split()[2]
    assert account_id.startswith("acct_")
    code, out, err = await run(
        str(AIPORTCTL), "topup", account_id, "1000", env=cli_env(billing_addr)
    )
    assert code == 0, err
    assert out.strip() == f"{account_id}: balance 1000 IDR"
    code, out, err = await run(str(AIPORTCTL), "balance", account_id, env=cli_env(billing_addr))
    assert code == 0, err
    assert "available 1000 IDR" in out


async def wait_serving(addr: str, proc: asyncio.subprocess.Process) -> None:
    async with grpc.aio.insecure_channel(addr) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(100):
            assert proc.returncode is None, "billing exited during startup"
            try:
                reply = await health.Check(
                    health_pb2.HealthCheckRequest(service="aiport.v1.Billing"), timeout=1
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"billing did not start serving on {addr}")


async def test_billing_process_serves_sweeps_and_stops(
    database_url: str, engine: AsyncEngine, tmp_path: Path, money: Money
) -> None:
    addr = f"127.0.0.1:{free_port()}"
    tokens = new_service_tokens()
    admin = tokens["admin"]
    env = {
        **os.environ,
        "AIPORT_DATABASE_URL": database_url,
        "AIPORT_BILLING_ADDR": addr,
        "AIPORT_HOLD_SWEEP_SECONDS": "1",
        **{f"AIPORT_SERVICE_TOKEN_{caller.upper()}": t for caller, t in tokens.items()},
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.billing",
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await wait_serving(addr, proc)
        account_id = (await ctl(addr, "account", "create", "Proc", "--json", token=admin))[
            "account_id"
        ]
        assert (await ctl(addr, "topup", account_id, "10", "--json", token=admin))[
            "balance_idr"
        ] == "10"
        # Without the admin token (a wrong one, or the gateway's) nothing moves.
        for token in (secrets.token_urlsafe(32), tokens["gateway"]):
            refused = await ctl_error(addr, "topup", account_id, "99", "--json", token=token)
            assert refused["code"] in ("UNAUTHENTICATED", "PERMISSION_DENIED"), refused
        hold = await money.place_hold(account_id, 4 * IDR, "proc-hold-1")
        await make_overdue(engine, hold.id)
        for _ in range(50):
            if (await ledger.get_hold(engine, hold.id)).status == "expired":
                break
            await asyncio.sleep(0.1)
        assert (await ledger.get_hold(engine, hold.id)).status == "expired"
        assert (await ctl(addr, "balance", account_id, "--json", token=admin))[
            "available_idr"
        ] == "10"
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0, err.decode()
    logs = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    messages = [entry["msg"] for entry in logs]
    assert "expired holds" in messages
    assert "stopped" in messages
    assert not [entry for entry in logs if entry["level"] == "error"]


async def test_billing_process_refuses_unmigrated_database(tmp_path: Path) -> None:
    url = fresh_database_url("aiport_test_empty")
    try:
        env = {
            **os.environ,
            "AIPORT_DATABASE_URL": url,
            "AIPORT_BILLING_ADDR": f"127.0.0.1:{free_port()}",
        }
        code, _, err = await run(sys.executable, "-m", "services.billing", env=env, cwd=tmp_path)
        assert code == 1
        assert "services.billing.migrate" in err
    finally:
        drop_database(url)


async def test_migrate_module_creates_and_upgrades_from_any_cwd(tmp_path: Path) -> None:
    url = fresh_database_url("aiport_test_migrate")
    drop_database(url)  # migrate must create it
    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    env = {**os.environ, "AIPORT_DATABASE_URL": plain}
    try:
        for _ in range(2):  # the second run is a no-op
            code, _, err = await run(
                sys.executable, "-m", "services.billing.migrate", env=env, cwd=tmp_path
            )
            assert code == 0, err
        engine = db.create_engine(url, application_name="billing", pool_size=1, max_overflow=0)
        try:
            assert await ledger.schema_revision(engine) == "0008"
            async with engine.connect() as conn:
                tables = (
                    await conn.execute(
                        text(
                            "SELECT table_name FROM information_schema.tables"
                            " WHERE table_schema = 'billing' ORDER BY table_name"
                        )
                    )
                ).scalars()
                assert list(tables) == [
                    "accounts",
                    "alembic_version",
                    "api_keys",
                    "auth_failures",
                    "holds",
                    "idempotency_records",  # clients' Idempotency-Key answers (0008)
                    "ledger_entries",  # a view since 0003: the customer's statement
                    "postings",
                    "transactions",
                ]
        finally:
            await engine.dispose()
    finally:
        drop_database(url)


def test_cli_ledger_all_closes_its_json_when_a_later_page_fails() -> None:
    """--all --json has printed earlier pages when a later one fails: the output is
    still exactly one JSON object, ending in the error, and the exit status is 1."""

    def pages() -> Iterator[billing_pb2.LedgerPage]:
        entry = billing_pb2.LedgerEntry(entry_id=9, kind="topup", amount_micros=2 * IDR)
        yield billing_pb2.LedgerPage(entries=[entry], next_after_entry_id=9)
        raise grpc.RpcError("billing went away")

    ns = cli._parser().parse_args(["ledger", "acct_" + "1" * 20, "--all"])
    out: list[str] = []
    with pytest.raises(cli._Reported):
        cli._print_ledger(pages(), ns, True, "127.0.0.1:1", out.append)
    body = one_object("".join(out))
    assert [e["entry_id"] for e in body["entries"]] == [9]
    assert body["error"]["code"] == "UNKNOWN"
    assert "total_idr" not in body


def test_cli_token_comes_from_env_or_billings_own_copy(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    admin, mine = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    monkeypatch.setattr(cli, "LOCAL_ADMIN_TOKEN", tmp_path / "absent")
    monkeypatch.delenv("AIPORT_SERVICE_TOKEN", raising=False)
    monkeypatch.delenv("AIPORT_SERVICE_TOKEN_FILE", raising=False)
    monkeypatch.delenv("AIPORT_SERVICE_TOKEN_ADMIN", raising=False)
    monkeypatch.delenv("AIPORT_SERVICE_TOKEN_ADMIN_FILE", raising=False)
    assert cli.admin_token() is None
    # make run's file, then (inside a billing pod) billing's copy, then our own.
    local = tmp_path / "admin.token"
    local.write_text("x" * 40 + "\n")
    monkeypatch.setattr(cli, "LOCAL_ADMIN_TOKEN", local)
    assert cli.admin_token() == "x" * 40
    monkeypatch.setenv("AIPORT_SERVICE_TOKEN_ADMIN", admin)
    assert cli.admin_token() == admin
    monkeypatch.setenv("AIPORT_SERVICE_TOKEN", mine)
    assert cli.admin_token() == mine
    monkeypatch.setenv("AIPORT_SERVICE_TOKEN", "short")
    with pytest.raises(operator_cli.CliError) as bad:
        cli.admin_token()
    assert "short" not in bad.value.message


async def test_cli_adjust_and_promotion(billing_addr: str) -> None:
    # Keys unique to this run: the billing database is shared by the session.
    promo, fix = f"promo-{uuid.uuid4().hex}", f"fix-{uuid.uuid4().hex}"
    account_id = (await ctl(billing_addr, "account", "create", "Adj", "--json"))["account_id"]
    await ctl(billing_addr, "topup", account_id, "100", "--json")
    promoted = await ctl(
        billing_addr,
        "adjust",
        account_id,
        "20",
        "--promotion",
        "--reason",
        "welcome",
        "--idempotency-key",
        promo,
        "--json",
    )
    assert promoted["balance_idr"] == "120"
    corrected = await ctl(
        billing_addr,
        "adjust",
        account_id,
        "-2.5",
        "--reason",
        "double top-up",
        "--idempotency-key",
        fix,
        "--json",
    )
    assert corrected["balance_idr"] == "117.5"
    again = await ctl(
        billing_addr,
        "adjust",
        account_id,
        "-2.5",
        "--reason",
        "double top-up",
        "--idempotency-key",
        fix,
        "--json",
    )
    assert again["balance_idr"] == "117.5"  # a repeat moves nothing
    error = await ctl_error(
        billing_addr,
        "adjust",
        account_id,
        "-3",
        "--reason",
        "double top-up",
        "--idempotency-key",
        fix,
        "--json",
    )
    assert error["code"] == "FAILED_PRECONDITION"
    error = await ctl_error(billing_addr, "adjust", account_id, "5", "--json")
    assert error["code"] == "INVALID_ARGUMENT" and "--reason" in error["message"]
    page = await ctl(billing_addr, "ledger", account_id, "--json")
    assert [(e["kind"], e["amount_idr"]) for e in page["entries"]] == [
        ("adjustment", "-2.5"),
        ("promotion", "20"),
        ("topup", "100"),
    ]


async def test_cli_key_controls_and_account_limits(
    billing_addr: str, engine: AsyncEngine, money: Money
) -> None:
    account_id = (await ctl(billing_addr, "account", "create", "Controls", "--json"))["account_id"]
    await ctl(billing_addr, "topup", account_id, "100", "--json")
    created = await ctl(
        billing_addr,
        "key",
        "create",
        account_id,
        "--daily-cap",
        "2.5",
        "--models",
        "m1,m2",
        "--expires",
        "2099-01-01",
        "--rpm",
        "30",
        "--json",
    )
    listed = (await ctl(billing_addr, "key", "list", account_id, "--json"))["keys"]
    assert listed[0]["daily_cap_idr"] == "2.5"
    assert listed[0]["allowed_models"] == ["m1", "m2"]
    assert listed[0]["expires_at"] == "2099-01-01T00:00:00Z"
    assert listed[0]["requests_per_minute"] == 30
    assert listed[0]["monthly_cap_idr"] is None

    # The cap is the hold's: 2.5 IDR fit, a micro-rupiah more does not.
    await money.authorize_hold(created["api_key"], 2_500_000, "cli-1", model="m1")
    with pytest.raises(rules.BudgetExceeded, match=r"daily spend cap of 2\.5 IDR"):
        await money.authorize_hold(created["api_key"], 1, "cli-2", model="m1")
    with pytest.raises(rules.ModelNotAllowed):
        await money.authorize_hold(created["api_key"], 1, "cli-3", model="other")

    changed = await ctl(
        billing_addr,
        "key",
        "set",
        created["key_id"],
        "--name",
        "batch",
        "--daily-cap",
        "none",
        "--lifetime-cap",
        "3",
        "--models",
        "all",
        "--expires",
        "never",
        "--rpm",
        "default",
        "--concurrent",
        "2",
        "--json",
    )
    assert changed["name"] == "batch"
    assert (changed["daily_cap_idr"], changed["lifetime_cap_idr"]) == (None, "3")
    assert changed["allowed_models"] is None and changed["expires_at"] is None
    assert (changed["requests_per_minute"], changed["concurrent_requests"]) == (None, 2)
    assert changed["spent_lifetime_idr"] == "2.5"
    await money.authorize_hold(created["api_key"], 500_000, "cli-4", model="other")
    with pytest.raises(rules.BudgetExceeded, match="lifetime"):
        await money.authorize_hold(created["api_key"], 1, "cli-5", model="other")

    limits = await ctl(
        billing_addr, "account", "limits", account_id, "--rpm", "600", "--concurrent", "8", "--json"
    )
    assert (limits["requests_per_minute"], limits["concurrent_requests"]) == (600, 8)
    principal = await money.authenticate(created["api_key"])
    assert principal.rate_limits.account_requests_per_minute == 600
    assert principal.rate_limits.key_concurrent_requests == 2

    error = await ctl_error(
        billing_addr, "key", "set", created["key_id"], "--daily-cap", "-5", "--json"
    )
    assert error["code"] == "INVALID_ARGUMENT"
    error = await ctl_error(billing_addr, "key", "set", created["key_id"], "--rpm", "x", "--json")
    assert "--rpm" in error["message"]
