"""make run's configuration: the user's documented variables reach the processes that
read them, and upstream credentials reach only the processes that call upstreams."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from deploy.local.run import ConfigError, stack_config, startup_notes
from deploy.local.stack import StackConfig
from services.common.settings import PROJECT_ROOT

REAL_PROVIDERS = PROJECT_ROOT / "config" / "providers.yaml"
UPSTREAM_CALLERS = ("providers", "worker-image", "worker-video")
NOT_UPSTREAM_CALLERS = (
    "edge",
    "gateway",
    "billing",
    "jobs",
    "files",
    "console",
    "sandbox",
    "accounts",
    "mail-sink",
    "payments",
    "pay-sandbox",
)


@pytest.fixture
def user_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {
        "AIPORT_PROVIDERS": str(REAL_PROVIDERS),
        "AIPORT_JOB_TIMEOUT_SECONDS": "42",
        "AIPORT_PUBLIC_URL": "https://aiport.example.test",
        "AIPORT_HOLD_TTL_SECONDS": "77",
        "OPENAI_API_KEY": "sk-real-openai",
        "DEEPSEEK_BASE_URL": "https://deepseek.example.test/v1",
        "UNRELATED_SECRET": "s3cret",
        "HTTPS_PROXY": "http://proxy.example.test:3128",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def test_make_run_honours_the_documented_variables(
    user_env: dict[str, str], tmp_path: Path
) -> None:
    config = stack_config(os.environ, tmp_path)
    for name in ("providers", "worker-image", "worker-video"):
        assert config.env(name)["AIPORT_PROVIDERS"] == str(REAL_PROVIDERS)
    for name in ("gateway", "jobs", "worker-image", "worker-video"):
        assert config.env(name)["AIPORT_JOB_TIMEOUT_SECONDS"] == "42"
    for name in ("gateway", "files", "worker-image", "worker-video"):
        assert config.env(name)["AIPORT_PUBLIC_URL"] == "https://aiport.example.test"
    assert config.env("billing")["AIPORT_HOLD_TTL_SECONDS"] == "77"


def test_upstream_credentials_reach_only_the_upstream_callers(
    user_env: dict[str, str], tmp_path: Path
) -> None:
    config = stack_config(os.environ, tmp_path)
    for name in UPSTREAM_CALLERS:
        env = config.env(name)
        assert env["OPENAI_API_KEY"] == "sk-real-openai"
        assert env["DEEPSEEK_BASE_URL"] == "https://deepseek.example.test/v1"
        assert env["HTTPS_PROXY"] == "http://proxy.example.test:3128"
    for name in NOT_UPSTREAM_CALLERS:
        env = config.env(name)
        assert "OPENAI_API_KEY" not in env, name
        assert "HTTPS_PROXY" not in env, name
        assert "DEEPSEEK_BASE_URL" not in env, name
    for name in (*UPSTREAM_CALLERS, *NOT_UPSTREAM_CALLERS):
        assert "UNRELATED_SECRET" not in config.env(name), name
        assert config.env(name)["PATH"] == os.environ["PATH"]


def test_secrets_reach_only_the_services_that_use_them(tmp_path: Path) -> None:
    config = stack_config(
        {
            "AIPORT_DATABASE_URL": "postgresql+psycopg://u:dbpass@db/aiport",
            "AIPORT_AMQP_URL": "amqp://u:mqpass@mq/",
            "AIPORT_SANDBOX_API_KEY": "sk-sandbox-local",
            "AIPORT_REDIS_URL": "redis://:redispass@redis:6379/0",
            "AIPORT_MIDTRANS_SERVER_KEY": "Mid-server-REAL",
            "AIPORT_XENDIT_SECRET_KEY": "xnd_production_REAL",
        },
        tmp_path,
    )
    holders = {
        "AIPORT_DATABASE_URL": {"billing", "jobs", "accounts", "payments"},
        "AIPORT_REDIS_URL": {"accounts", "gateway"},
        "AIPORT_AMQP_URL": {"jobs", "worker-image", "worker-video"},
        "AIPORT_SANDBOX_API_KEY": {"sandbox", "providers", "worker-image", "worker-video"},
    }
    for name in (*UPSTREAM_CALLERS, *NOT_UPSTREAM_CALLERS):
        env = config.env(name)
        for variable, services in holders.items():
            assert (variable in env) == (name in services), (name, variable)
    assert config.env("jobs")["AIPORT_AMQP_URL"] == "amqp://u:mqpass@mq/"
    assert config.env("billing")["AIPORT_DATABASE_URL"].endswith("@db/aiport")
    assert config.env("sandbox")["AIPORT_SANDBOX_API_KEY"] == "sk-sandbox-local"
    assert config.service_env("billing")["AIPORT_DATABASE_URL"].endswith("@db/aiport")
    # make run pays at the payment sandbox with keys of its own: a real gateway
    # key in the user's environment reaches no process (and startup says so).
    for name in (*UPSTREAM_CALLERS, *NOT_UPSTREAM_CALLERS):
        values = config.env(name).values()
        assert "Mid-server-REAL" not in values and "xnd_production_REAL" not in values, name
    sandbox_key = config.payment_sandbox_keys["midtrans_server_key"]
    assert config.env("payments")["AIPORT_MIDTRANS_SERVER_KEY"] == sandbox_key
    assert config.env("pay-sandbox")["AIPORT_MIDTRANS_SERVER_KEY"] == sandbox_key
    assert "AIPORT_MIDTRANS_SERVER_KEY" not in config.env("gateway")
    notes = startup_notes({"AIPORT_MIDTRANS_SERVER_KEY": "Mid-server-REAL"}, config)
    assert any("payment sandbox" in n and "AIPORT_MIDTRANS_SERVER_KEY" in n for n in notes)
    # The edge (Envoy) reads no setting at all.
    assert not [n for n in config.env("edge") if n.startswith("AIPORT_")]


def test_the_tests_stack_ignores_the_developers_settings(
    user_env: dict[str, str], tmp_path: Path
) -> None:
    """StackConfig is explicit: what the tests configure is what runs, whatever the
    developer has exported (make run maps the environment itself, above)."""
    config = StackConfig.on_free_ports("postgresql+psycopg://t@127.0.0.1/t", tmp_path)
    sandbox = str(PROJECT_ROOT / "config" / "providers.sandbox.yaml")
    assert config.env("providers")["AIPORT_PROVIDERS"] == sandbox
    assert config.env("jobs")["AIPORT_JOB_TIMEOUT_SECONDS"] == "600"
    assert config.env("gateway")["AIPORT_PUBLIC_URL"] == config.base_url
    assert "AIPORT_HOLD_TTL_SECONDS" not in config.env("billing")
    assert "OPENAI_API_KEY" not in config.env("providers")


def test_make_run_uses_the_ports_of_the_address_variables(tmp_path: Path) -> None:
    config = stack_config(
        {
            "AIPORT_BILLING_ADDR": "127.0.0.1:6051",
            "AIPORT_FILES_ADDR": "localhost:6200",
            "AIPORT_CONSOLE_ADDR": "127.0.0.1:6300",
        },
        tmp_path,
    )
    assert config.billing_addr == "127.0.0.1:6051"
    assert config.env("gateway")["AIPORT_FILES_ADDR"] == "127.0.0.1:6200"
    assert config.env("console")["AIPORT_LISTEN_ADDR"] == "127.0.0.1:6300"
    assert config.console_url == "http://127.0.0.1:8080/"
    with pytest.raises(ConfigError, match="AIPORT_JOBS_ADDR"):
        stack_config({"AIPORT_JOBS_ADDR": "dns:///jobs:50053"}, tmp_path)
    with pytest.raises(ConfigError, match="AIPORT_JOB_TIMEOUT_SECONDS"):
        stack_config({"AIPORT_JOB_TIMEOUT_SECONDS": "soon"}, tmp_path)
    with pytest.raises(ConfigError, match="AIPORT_PROVIDERS"):
        stack_config({"AIPORT_PROVIDERS": str(tmp_path / "missing.yaml")}, tmp_path)


def test_startup_says_which_providers_file_and_what_it_lacks(tmp_path: Path) -> None:
    sandbox = stack_config({}, tmp_path)
    notes = startup_notes({}, sandbox)
    assert notes[0].startswith("providers: config/providers.sandbox.yaml")
    assert len(notes) == 1
    environ = {
        "AIPORT_PROVIDERS": str(REAL_PROVIDERS),
        "OPENAI_API_KEY": "sk-real",
        "AIPORT_LISTEN_ADDR": "0.0.0.0:1",
    }
    notes = startup_notes(environ, stack_config(environ, tmp_path))
    assert notes[0] == "providers: config/providers.yaml (AIPORT_PROVIDERS)"
    missing = notes[1]
    assert "DEEPSEEK_API_KEY" in missing and "ANTHROPIC_API_KEY" in missing
    assert "OPENAI_API_KEY" not in missing
    assert "OPENAI_BASE_URL" not in missing  # it has a default
    assert "AIPORT_LISTEN_ADDR" in notes[2]


def test_relative_paths_are_the_users(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Relative to where make run was started, though the processes run elsewhere."""
    (tmp_path / "mine.yaml").write_text((PROJECT_ROOT / "config" / "providers.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    config = stack_config({"AIPORT_PROVIDERS": "mine.yaml", "AIPORT_BLOB_DIR": "b"}, tmp_path)
    assert config.env("providers")["AIPORT_PROVIDERS"] == str(tmp_path / "mine.yaml")
    assert config.env("files")["AIPORT_BLOB_DIR"] == str(tmp_path / "b")


def test_accounts_and_gateway_get_redis_and_mail_goes_to_the_sink_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AIPORT_REDIS_URL", "redis://:pw@127.0.0.1:6390/3")
    monkeypatch.setenv("AIPORT_MAIL_SINK_PORT", "2600")
    config = stack_config(os.environ, tmp_path)
    accounts = config.env("accounts")
    assert accounts["AIPORT_REDIS_URL"] == "redis://:pw@127.0.0.1:6390/3"
    assert (accounts["AIPORT_SMTP_HOST"], accounts["AIPORT_SMTP_PORT"]) == ("127.0.0.1", "2600")
    assert "AIPORT_DATABASE_URL" in accounts
    assert config.mail_folder == tmp_path / "mail"
    # The gateway keeps its rate limits there too.
    assert config.env("gateway")["AIPORT_REDIS_URL"] == "redis://:pw@127.0.0.1:6390/3"
    for name in ("billing", "jobs", "mail-sink"):
        assert "AIPORT_REDIS_URL" not in config.env(name)
    # A real relay named by the user replaces the sink.
    monkeypatch.setenv("AIPORT_SMTP_HOST", "smtp.example.test")
    accounts = stack_config(os.environ, tmp_path).env("accounts")
    assert accounts["AIPORT_SMTP_HOST"] == "smtp.example.test"
    assert "AIPORT_SMTP_PORT" not in accounts
