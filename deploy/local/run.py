"""`make run`: the whole stack on 127.0.0.1:8080 with a funded demo key.

Stays in the foreground; Ctrl-C or SIGTERM stops everything it started.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import grpc
from aiport.v1 import billing_pb2, billing_pb2_grpc

from deploy.local.stack import Stack, StackConfig
from services.common import service_auth, settings
from services.common.money import idr_to_micros, micros_to_idr
from services.common.settings import PROJECT_ROOT

STATE_DIR = PROJECT_ROOT / ".aiport"
DEMO_ACCOUNT_FILE = STATE_DIR / "demo-account"
DEMO_MINIMUM_IDR = "100000"
DEMO_TOPUP_IDR = "1000000"
# aiportctl's token for this run (services/billing/cli.py reads it; mode 0600).
ADMIN_TOKEN_FILE = STATE_DIR / "admin.token"


def write_admin_token(token: str) -> None:
    """Leave this run's admin token where aiportctl finds it, readable only by us."""
    ADMIN_TOKEN_FILE.unlink(missing_ok=True)
    fd = os.open(ADMIN_TOKEN_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")


def seed_demo(billing_addr: str, account_file: Path, token: str) -> tuple[str, str, str]:
    """Reuse (or create) the demo account, keep it funded, issue a fresh key."""
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
        key = billing.CreateApiKey(
            billing_pb2.CreateApiKeyRequest(account_id=account_id), timeout=10
        ).api_key
        return account_id, key, micros_to_idr(balance.balance_micros)


def main() -> int:
    STATE_DIR.mkdir(exist_ok=True)
    config = StackConfig(
        database_url=settings.database_url(),
        run_dir=STATE_DIR / "logs",
        blob_dir=STATE_DIR / "blobs",
        edge_port=settings.env_int("AIPORT_EDGE_PORT", 8080),
        # AIPORT_REPLICAS=2 make run: two processes of every service (replica k on port + 100(k-1)).
        replicas=settings.env_int("AIPORT_REPLICAS", 1),
        # Behind a load balancer that appends the client to x-forwarded-for: 1.
        edge_xff_trusted_hops=settings.env_int("AIPORT_EDGE_XFF_TRUSTED_HOPS", 0),
    )
    stack = Stack(config)
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print("aiport: starting billing, jobs, files, providers and workers, gateway, edge ...")
    try:
        stack.start()
        write_admin_token(config.admin_token)
        account_id, key, balance = seed_demo(
            config.billing_addr, DEMO_ACCOUNT_FILE, config.admin_token
        )
    except Exception as exc:
        stack.stop()
        print(f"aiport: failed to start: {exc}", file=sys.stderr)
        print(f"aiport: logs are in {config.run_dir}", file=sys.stderr)
        return 1

    base = config.base_url
    metrics = "\n              ".join(
        f"{name:<14}{url}" for name, url in sorted(stack.metrics_urls().items())
    )
    print(
        f"""
aiport is running on {base}   (logs: {config.run_dir})

  demo account  {account_id}   balance {balance} IDR
  demo API key  {key}

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

Operator CLI: .venv/bin/aiportctl --help      Ctrl-C stops everything.
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
