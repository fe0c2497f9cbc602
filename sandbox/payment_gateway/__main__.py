"""python -m sandbox.payment_gateway serve [--host H] [--port P] [options]: see __init__."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from sandbox.payment_gateway.common import is_http_url
from sandbox.payment_gateway.server import Config, serve
from services.common import logs

DEFAULT_PORT = 9200
DEFAULT_RETRY_DELAYS = "0.5,1,2,5"


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or default


def retry_delays(text: str) -> tuple[float, ...]:
    """ "0.5,1,2,5" -> (0.5, 1.0, 2.0, 5.0); "" -> no retries."""
    try:
        delays = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not comma-separated seconds: {text!r}") from None
    if len(delays) > 20 or any(not 0 <= d <= 86400 for d in delays):
        raise argparse.ArgumentTypeError("at most 20 delays, each 0..86400 seconds")
    return delays


def _url(text: str) -> str:
    if not is_http_url(text):
        raise argparse.ArgumentTypeError(f"not an http(s) URL: {text!r}")
    return text


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m sandbox.payment_gateway",
        description="Sandbox payment gateway speaking Midtrans (Snap, status) and Xendit "
        "(Invoices), with payment pages and real notifications.",
    )
    commands = top.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="serve both gateways on one port")
    run.add_argument("--host", default=_env("AIPORT_PAYGW_HOST", "127.0.0.1"))
    run.add_argument(
        "--port", type=int, default=int(_env("AIPORT_PAYGW_PORT", str(DEFAULT_PORT)) or 0)
    )
    run.add_argument(
        "--public-url",
        type=_url,
        default=_env("AIPORT_PAYGW_PUBLIC_URL"),
        help="base URL the browser reaches the pages on [AIPORT_PAYGW_PUBLIC_URL; "
        "default http://127.0.0.1:PORT]",
    )
    run.add_argument(
        "--midtrans-server-key",
        default=_env("AIPORT_MIDTRANS_SERVER_KEY", "SB-Mid-server-sandbox"),
        help="[AIPORT_MIDTRANS_SERVER_KEY]",
    )
    run.add_argument(
        "--midtrans-notification-url",
        type=_url,
        default=_env("AIPORT_MIDTRANS_NOTIFICATION_URL"),
        help="the dashboard's Payment Notification URL [AIPORT_MIDTRANS_NOTIFICATION_URL]",
    )
    run.add_argument(
        "--xendit-secret-key",
        default=_env("AIPORT_XENDIT_SECRET_KEY", "xnd_development_sandbox"),
        help="[AIPORT_XENDIT_SECRET_KEY]",
    )
    run.add_argument(
        "--xendit-callback-token",
        default=_env("AIPORT_XENDIT_CALLBACK_TOKEN", "sandbox-callback-token"),
        help="sent as x-callback-token [AIPORT_XENDIT_CALLBACK_TOKEN]",
    )
    run.add_argument(
        "--xendit-callback-url",
        type=_url,
        default=_env("AIPORT_XENDIT_CALLBACK_URL"),
        help="the dashboard's invoice callback URL [AIPORT_XENDIT_CALLBACK_URL]",
    )
    run.add_argument(
        "--retry-delays",
        type=retry_delays,
        default=_env("AIPORT_PAYGW_RETRY_DELAYS", DEFAULT_RETRY_DELAYS),  # argparse applies type
        help="seconds between notification retries, comma-separated "
        f"[AIPORT_PAYGW_RETRY_DELAYS; {DEFAULT_RETRY_DELAYS}]",
    )
    run.add_argument(
        "--notify-timeout",
        type=float,
        default=float(_env("AIPORT_PAYGW_NOTIFY_TIMEOUT", "10") or 10),
        help="seconds to wait for a receiver's answer [AIPORT_PAYGW_NOTIFY_TIMEOUT; 10]",
    )
    return top


def main(argv: Sequence[str] | None = None) -> int:
    ns = parser().parse_args(argv)
    if not 0 < ns.notify_timeout <= 120:
        print("--notify-timeout must be in (0, 120] seconds", file=sys.stderr)
        return 2
    config = Config(
        midtrans_server_key=ns.midtrans_server_key,
        xendit_secret_key=ns.xendit_secret_key,
        xendit_callback_token=ns.xendit_callback_token,
        public_url=(ns.public_url or f"http://{ns.host}:{ns.port}").rstrip("/"),
        midtrans_notification_url=ns.midtrans_notification_url,
        xendit_callback_url=ns.xendit_callback_url,
        retry_delays=ns.retry_delays,
        notify_timeout=ns.notify_timeout,
    )
    logs.setup("sandbox-payments")
    asyncio.run(serve(ns.host, ns.port, config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
