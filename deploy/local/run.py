"""`make run`: the whole stack on 127.0.0.1:8080 with a funded demo key.

Stays in the foreground; Ctrl-C or SIGTERM stops everything it started.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import grpc
import yaml
from aiport.v1 import billing_pb2, billing_pb2_grpc

from deploy.local.stack import Stack, StackConfig
from services.common import service_auth, settings
from services.common.money import idr_to_micros, micros_to_idr
from services.common.settings import PROJECT_ROOT
from services.providers.routes import load_env_references

STATE_DIR = PROJECT_ROOT / ".aiport"
# Under the state dir (git-ignored): the demo account's id, and the demo key's
# plaintext (mode 0600), so every run prints the same key while it still works.
DEMO_ACCOUNT_FILE = "demo-account"
DEMO_KEY_FILE = "demo-key"
DEMO_MINIMUM_IDR = "100000"
DEMO_TOPUP_IDR = "1000000"
# aiportctl's token for this run (services/billing/cli.py reads it; mode 0600).
ADMIN_TOKEN_FILE = STATE_DIR / "admin.token"
# The accounts CLI's (services/accounts/cli.py reads it; mode 0600).
ACCOUNTS_ADMIN_TOKEN_FILE = STATE_DIR / "accounts-admin.token"
PAYMENTS_ADMIN_TOKEN_FILE = STATE_DIR / "payments-admin.token"


def write_admin_token(token: str, path: Path | None = None) -> None:
    """Leave this run's admin token where aiportctl finds it, readable only by us."""
    path = ADMIN_TOKEN_FILE if path is None else path
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")


def _write_private(path: Path, text: str) -> None:
    """Replace `path` with `text`, readable by its owner only from the start."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(text)
    os.replace(tmp, path)


def _demo_key(billing: billing_pb2_grpc.BillingStub, account_id: str, key_file: Path) -> str:
    """The demo key: the stored one while it authenticates as the demo account,
    else a new one. Either way every other key of the demo account is revoked
    (keys minted by earlier runs, or one whose file was lost): one stays live."""
    key = key_file.read_text().strip() if key_file.exists() else ""
    key_id = ""
    if key:
        try:
            principal = billing.Authenticate(
                billing_pb2.AuthenticateRequest(api_key=key), timeout=10
            )
            key_id = principal.key_id if principal.account_id == account_id else ""
        except grpc.RpcError as exc:
            if exc.code() not in (
                grpc.StatusCode.UNAUTHENTICATED,
                grpc.StatusCode.INVALID_ARGUMENT,
            ):
                raise
    if not key_id:
        created = billing.CreateApiKey(
            billing_pb2.CreateApiKeyRequest(account_id=account_id), timeout=10
        )
        key, key_id = created.api_key, created.key_id
        _write_private(key_file, key + "\n")
    keys = billing.ListApiKeys(billing_pb2.ListApiKeysRequest(account_id=account_id), timeout=10)
    for other in keys.keys:
        if other.key_id != key_id and not other.revoked_at_unix:
            billing.RevokeApiKey(billing_pb2.RevokeApiKeyRequest(key_id=other.key_id), timeout=10)
    return key


def seed_demo(billing_addr: str, state_dir: Path, token: str) -> tuple[str, str, str]:
    """Reuse (or create) the demo account and its key; keep the account funded."""
    account_file = state_dir / DEMO_ACCOUNT_FILE
    with grpc.insecure_channel(billing_addr) as chan:
        billing = billing_pb2_grpc.BillingStub(service_auth.with_token(chan, token))
        account_id = account_file.read_text().strip() if account_file.exists() else ""
        balance = None
        if account_id:
            try:
                balance = billing.GetAccountBalance(
                    billing_pb2.GetAccountBalanceRequest(account_id=account_id), timeout=10
                )
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND:
                    raise
        if balance is None:
            account_id = billing.CreateAccount(
                billing_pb2.CreateAccountRequest(name="demo"), timeout=10
            ).account_id
            account_file.write_text(account_id + "\n")
            balance = billing.GetAccountBalance(
                billing_pb2.GetAccountBalanceRequest(account_id=account_id), timeout=10
            )
        if balance.available_micros < idr_to_micros(DEMO_MINIMUM_IDR):
            balance = billing.TopUp(
                billing_pb2.TopUpRequest(
                    account_id=account_id,
                    amount_micros=idr_to_micros(DEMO_TOPUP_IDR),
                    description="demo top-up by make run",
                ),
                timeout=10,
            )
        key = _demo_key(billing, account_id, state_dir / DEMO_KEY_FILE)
        return account_id, key, micros_to_idr(balance.balance_micros)


# make run's own defaults where the library's differ: the sandbox upstream, and
# blobs and logs under .aiport/.
SANDBOX_PROVIDERS = PROJECT_ROOT / "config" / "providers.sandbox.yaml"
# AIPORT_<SERVICE>_ADDR: where make run starts that service (127.0.0.1:PORT only).
ADDR_PORTS = {
    "AIPORT_GATEWAY_ADDR": "gateway_port",
    "AIPORT_BILLING_ADDR": "billing_port",
    "AIPORT_PROVIDERS_ADDR": "providers_port",
    "AIPORT_JOBS_ADDR": "jobs_port",
    "AIPORT_FILES_ADDR": "files_port",
    "AIPORT_ACCOUNTS_ADDR": "accounts_port",
    "AIPORT_CONSOLE_ADDR": "console_port",
}
LOCAL_HOSTS = ("127.0.0.1", "localhost")
# The documented variables make run maps onto StackConfig's fields (below).
MAPPED = frozenset(
    {
        "AIPORT_DATABASE_URL",
        "AIPORT_AMQP_URL",
        "AIPORT_AMQP_PREFIX",
        "AIPORT_REDIS_URL",
        "AIPORT_REDIS_PREFIX",
        "AIPORT_MAIL_DIR",
        "AIPORT_MAIL_SINK_PORT",
        "AIPORT_BLOB_DIR",
        "AIPORT_PUBLIC_URL",
        "AIPORT_JOB_TIMEOUT_SECONDS",
        "AIPORT_EDGE_PORT",
        "AIPORT_REPLICAS",
        "AIPORT_EDGE_XFF_TRUSTED_HOPS",
        "AIPORT_CATALOG",
        "AIPORT_PROVIDERS",
        "AIPORT_SANDBOX_PORT",
        "AIPORT_SANDBOX_API_KEY",
        *ADDR_PORTS,
    }
)
# The payment gateways' keys and URLs: make run always pays at the payment
# sandbox (with fresh keys per run), so the user's are neither used nor passed
# on (a secret must not reach every process as a "tunable").
PAYMENT_GATEWAY_ENV = frozenset(
    {
        "AIPORT_MIDTRANS_SNAP_URL",
        "AIPORT_MIDTRANS_API_URL",
        "AIPORT_MIDTRANS_SERVER_KEY",
        "AIPORT_MIDTRANS_NOTIFICATION_URL",
        "AIPORT_XENDIT_API_URL",
        "AIPORT_XENDIT_SECRET_KEY",
        "AIPORT_XENDIT_CALLBACK_TOKEN",
        "AIPORT_XENDIT_CALLBACK_URL",
        "AIPORT_PAYMENTS_NOTIFICATION_URL",
        "AIPORT_PAYGW_PUBLIC_URL",
    }
)
# Set per process by make run (every process listens on its own port); a
# value in the user's environment cannot apply to all of them.
PER_PROCESS = ("AIPORT_LISTEN_ADDR", "AIPORT_METRICS_ADDR")
# How to reach the internet from here: for the processes that call upstreams only.
PROXY_ENV = tuple(
    case(name)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
    for case in (str.upper, str.lower)
)
# Tracing's exporter settings, passed like the AIPORT_ tunables.
PASSED_PREFIXES = ("AIPORT_", "OTEL_")


class ConfigError(ValueError):
    """A variable make run cannot honour; it says which and why."""


def _whole(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "").strip()
    try:
        return int(raw) if raw else default
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {raw!r}") from None


def _local_port(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    host, _, port = raw.rpartition(":")
    if host not in LOCAL_HOSTS or not port.isdigit():
        raise ConfigError(
            f"{name}={raw}: make run starts every service on this machine,"
            " so it takes 127.0.0.1:PORT here"
        )
    return int(port)


def stack_config(environ: Mapping[str, str], state_dir: Path) -> StackConfig:
    """make run's stack as the user's environment configures it: every documented
    variable is honoured (a tunable is passed to every process), and the variables
    the providers file in use reads go only to the processes that call upstreams."""

    def get(name: str) -> str:
        return environ.get(name, "").strip()

    # Paths are the user's (relative to where make run was started); the processes
    # run in the project root, so they get absolute ones.
    providers_file = Path(get("AIPORT_PROVIDERS") or SANDBOX_PROVIDERS).absolute()
    try:
        upstream_names = load_env_references(providers_file)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"AIPORT_PROVIDERS={providers_file}: {exc}") from None
    config = StackConfig(
        database_url=get("AIPORT_DATABASE_URL") or settings.database_url(),
        amqp_url=get("AIPORT_AMQP_URL") or settings.amqp_url(),
        redis_url=get("AIPORT_REDIS_URL") or settings.redis_url(),
        redis_prefix=get("AIPORT_REDIS_PREFIX") or "aiport",
        mail_dir=Path(get("AIPORT_MAIL_DIR") or state_dir / "mail").absolute(),
        mail_sink_port=_whole(environ, "AIPORT_MAIL_SINK_PORT", 2525),
        run_dir=state_dir / "logs",
        blob_dir=Path(get("AIPORT_BLOB_DIR") or state_dir / "blobs").absolute(),
        public_url=get("AIPORT_PUBLIC_URL"),
        job_timeout_seconds=_whole(environ, "AIPORT_JOB_TIMEOUT_SECONDS", 600),
        edge_port=_whole(environ, "AIPORT_EDGE_PORT", 8080),
        # AIPORT_REPLICAS=2 make run: two processes of every service (replica k on port + 100(k-1)).
        replicas=_whole(environ, "AIPORT_REPLICAS", 1),
        # Behind a load balancer that appends the client to x-forwarded-for: 1.
        edge_xff_trusted_hops=_whole(environ, "AIPORT_EDGE_XFF_TRUSTED_HOPS", 0),
        amqp_prefix=get("AIPORT_AMQP_PREFIX") or "aiport",
        providers_file=providers_file,
        catalog_file=Path(
            get("AIPORT_CATALOG") or PROJECT_ROOT / "config" / "catalog.yaml"
        ).absolute(),
        sandbox_port=_whole(environ, "AIPORT_SANDBOX_PORT", 9100),
        sandbox_api_key=get("AIPORT_SANDBOX_API_KEY") or "sk-sandbox",
    )
    for name, field_name in ADDR_PORTS.items():
        setattr(config, field_name, _local_port(environ, name, getattr(config, field_name)))
    upstream = (*upstream_names, *PROXY_ENV)
    config.upstream_env = {name: environ[name] for name in upstream if name in environ}
    config.extra_env = {
        name: value
        for name, value in environ.items()
        if name.startswith(PASSED_PREFIXES)
        and name not in MAPPED
        and name not in PER_PROCESS
        and name not in upstream_names
        and name not in PAYMENT_GATEWAY_ENV
    }
    return config


def startup_notes(environ: Mapping[str, str], config: StackConfig) -> list[str]:
    """What the user should know about the configuration in use."""
    providers = config.providers_file
    shown = (
        providers.relative_to(PROJECT_ROOT) if providers.is_relative_to(PROJECT_ROOT) else providers
    )
    if providers == SANDBOX_PROVIDERS:
        notes = [
            f"providers: {shown} (the sandbox upstream;"
            " AIPORT_PROVIDERS=config/providers.yaml for the real providers)"
        ]
    else:
        notes = [f"providers: {shown} (AIPORT_PROVIDERS)"]
    needed = load_env_references(providers)
    missing = sorted(n for n, default in needed.items() if default is None and not environ.get(n))
    if missing:
        notes.append(f"unset, so calls to the providers that need them fail: {', '.join(missing)}")
    for name in PER_PROCESS:
        if environ.get(name, "").strip():
            notes.append(f"{name} is set per process by make run; yours is not used")
    ignored = sorted(n for n in PAYMENT_GATEWAY_ENV if environ.get(n, "").strip())
    if ignored:
        notes.append(
            f"top-ups pay at the payment sandbox here; not used: {', '.join(ignored)}"
            " (README: Top-ups)"
        )
    return notes


def main() -> int:
    STATE_DIR.mkdir(exist_ok=True)
    try:
        config = stack_config(os.environ, STATE_DIR)
    except ConfigError as exc:
        print(f"aiport: {exc}", file=sys.stderr)
        return 2
    for note in startup_notes(os.environ, config):
        print(f"aiport: {note}")
    stack = Stack(config)
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(
        "aiport: starting billing, the sandboxes, the mail sink, accounts, payments, jobs, files,"
        " providers and workers, gateway, console, edge ..."
    )
    try:
        stack.start()
        write_admin_token(config.admin_token)
        write_admin_token(config.accounts_admin_token, ACCOUNTS_ADMIN_TOKEN_FILE)
        write_admin_token(config.payments_admin_token, PAYMENTS_ADMIN_TOKEN_FILE)
        account_id, key, balance = seed_demo(config.billing_addr, STATE_DIR, config.admin_token)
    except Exception as exc:
        stack.stop()
        print(f"aiport: failed to start: {exc}", file=sys.stderr)
        print(f"aiport: logs are in {config.run_dir}", file=sys.stderr)
        return 1

    base = config.base_url
    # Replica 1's listener: grpcurl takes one host:port (an internal client may
    # dial config.dial_addr("gateway") to spread over every replica).
    gateway_grpc = f"127.0.0.1:{config.gateway_port}"
    metrics = "\n              ".join(
        f"{name:<14}{url}" for name, url in sorted(stack.metrics_urls().items())
    )
    print(
        f"""
aiport is running on {base}   (logs: {config.run_dir})

  web console   {config.console_url}   (home, pricing, API docs)
  sign up       {base}/signup   then the dashboard: {base}/dashboard
  demo account  {account_id}   balance {balance} IDR
  demo API key  {key}   (the same every run: {STATE_DIR / DEMO_KEY_FILE})

Try it:

  curl {base}/v1/chat/completions \\
    -H "Authorization: Bearer {key}" \\
    -H "Content-Type: application/json" \\
    -d '{{"model":"deepseek-v4-flash","messages":[{{"role":"user","content":"Hello"}}]}}'

  curl {base}/v1/image/generate \\
    -H "Authorization: Bearer {key}" -H "Content-Type: application/json" \\
    -d '{{"model":"gpt-image-2","prompt":"Sunset over Mount Bromo","resolution":"2k"}}'
  curl {base}/v1/jobs/JOB_ID -H "Authorization: Bearer {key}"

  curl {base}/v1/balance -H "Authorization: Bearer {key}"

Internal callers: typed gRPC straight to the gateway (never through the edge),
with reflection on (README, "Internal callers: typed gRPC"):

  grpcurl -plaintext -H "authorization: Bearer {key}" \\
    -d '{{"model":"deepseek-v4-flash","messages":[{{"role":"ROLE_USER","text":"Hello"}}]}}' \\
    {gateway_grpc} aiport.v1.Text/Complete

Top up in the browser at {base}/dashboard/topup: the payment pages are the
payment sandbox's ({config.pay_sandbox_url}), standing in for Midtrans and Xendit.

Mail sent by accounts (sign-up, password reset) is caught, not delivered:
  files       {config.mail_folder}/*.eml
  the latest  .venv/bin/python -m sandbox.mail_sink latest EMAIL

Operator CLI: .venv/bin/aiportctl --help      Ctrl-C stops everything.
Operators:    .venv/bin/python -m services.accounts.cli grant-operator EMAIL
Top-ups:      .venv/bin/aiportctl payments list | reconcile
Prometheus:   {metrics}
""",
        flush=True,
    )
    code = 0
    while not stop:
        dead = stack.exited()
        if dead:
            print(f"aiport: {', '.join(dead)} exited; stopping (see {config.run_dir})")
            code = 1
            break
        time.sleep(0.5)
    print("aiport: stopping ...")
    stack.stop()
    return code


if __name__ == "__main__":
    sys.exit(main())
