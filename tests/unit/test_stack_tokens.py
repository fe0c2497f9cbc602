"""make run / tests: each process gets only the service tokens it needs."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from deploy.local import run
from deploy.local.stack import StackConfig


def test_each_process_gets_only_its_own_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIPORT_SERVICE_TOKEN", "inherited-" + "x" * 40)
    config = StackConfig("postgresql://x", Path("/tmp/none"))
    tokens, jobs, people = config.service_tokens, config.jobs_tokens, config.accounts_tokens
    pay = config.payments_tokens
    assert len({*tokens.values(), *jobs.values(), *people.values(), *pay.values()}) == 12
    billing = {k: v for k, v in config.env("billing").items() if "TOKEN" in k}
    assert billing == {
        "AIPORT_SERVICE_TOKEN_GATEWAY": tokens["gateway"],
        "AIPORT_SERVICE_TOKEN_JOBS": tokens["jobs"],
        "AIPORT_SERVICE_TOKEN_ADMIN": tokens["admin"],
        "AIPORT_SERVICE_TOKEN_ACCOUNTS": tokens["accounts"],
        "AIPORT_SERVICE_TOKEN_PAYMENTS": tokens["payments"],
    }
    accounts = {k: v for k, v in config.env("accounts").items() if "TOKEN" in k}
    assert accounts == {
        "AIPORT_SERVICE_TOKEN": tokens["accounts"],
        "AIPORT_ACCOUNTS_TOKEN_CONSOLE": people["console"],
        "AIPORT_ACCOUNTS_TOKEN_ADMIN": people["admin"],
        "AIPORT_ACCOUNTS_TOKEN_GATEWAY": people["gateway"],
    }
    gateway = {k: v for k, v in config.env("gateway-2").items() if "TOKEN" in k}
    assert gateway == {
        "AIPORT_SERVICE_TOKEN": tokens["gateway"],
        "AIPORT_JOBS_TOKEN": jobs["gateway"],
        "AIPORT_ACCOUNTS_TOKEN": people["gateway"],
        "AIPORT_PAYMENTS_TOKEN": pay["gateway"],
    }
    # Payments: its billing token, its callers' tokens, and the payment gateways'
    # callback token (which the payment sandbox, standing in for Xendit, also holds).
    callback = config.payment_sandbox_keys["xendit_callback_token"]
    payments = {k: v for k, v in config.env("payments").items() if "TOKEN" in k}
    assert payments == {
        "AIPORT_SERVICE_TOKEN": tokens["payments"],
        "AIPORT_PAYMENTS_TOKEN_GATEWAY": pay["gateway"],
        "AIPORT_PAYMENTS_TOKEN_ADMIN": pay["admin"],
        "AIPORT_XENDIT_CALLBACK_TOKEN": callback,
    }
    sandbox = {k: v for k, v in config.env("pay-sandbox").items() if "TOKEN" in k}
    assert sandbox == {"AIPORT_XENDIT_CALLBACK_TOKEN": callback}
    console = {k: v for k, v in config.env("console").items() if "TOKEN" in k}
    assert console == {"AIPORT_ACCOUNTS_TOKEN": people["console"]}
    worker = {k: v for k, v in config.env("worker-video").items() if "TOKEN" in k}
    assert worker == {"AIPORT_JOBS_TOKEN": jobs["worker"]}
    for name in ("providers", "files", "sandbox", "mail-sink", "edge"):
        assert not [k for k in config.env(name) if "TOKEN" in k]
    # A fresh config, fresh tokens.
    assert StackConfig("postgresql://x", Path("/tmp/none")).service_tokens != tokens


def test_make_run_leaves_the_admin_token_readable_only_by_us(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "admin.token"
    path.write_text("old")
    monkeypatch.setattr(run, "ADMIN_TOKEN_FILE", path)
    run.write_admin_token("t" * 40)
    assert path.read_text() == "t" * 40 + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
