"""A local mail sink: an SMTP server (aiosmtpd) that keeps every message it is
given as an .eml file and delivers nothing. `make run` and the tests point
accounts' AIPORT_SMTP_HOST/PORT at it, so sign-up works offline.

Run:   python -m sandbox.mail_sink serve [--host 127.0.0.1] [--port 2525] [--dir DIR]
Read:  python -m sandbox.mail_sink latest EMAIL [--dir DIR]   (the newest mail to EMAIL)
DIR defaults to .aiport/mail. Each message is DIR/<nanoseconds>-<random>.eml,
written whole (to a temporary name, then renamed), with the envelope's
recipients added as X-Envelope-To. Any file mail client opens them.

In tests: `latest_mail(dir, email)`, `wait_for_mail(dir, email, after=...)`,
`link_in(message, "/verify")`, `token_in(message, "/verify")`.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import os
import re
import secrets
import signal
import sys
import time
from collections.abc import Sequence
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from aiosmtpd.smtp import SMTP, Envelope, Session

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DIR = PROJECT_ROOT / ".aiport" / "mail"
DEFAULT_PORT = 2525
ENVELOPE_HEADER = "X-Envelope-To"
_URL_RE = re.compile(r"https?://[^\s<>\"']+")


class Keep:
    """aiosmtpd handler: every accepted message becomes one file in `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        rcpts = ", ".join(envelope.rcpt_tos)
        data = f"{ENVELOPE_HEADER}: {rcpts}\r\n".encode() + content
        name = f"{time.time_ns():020d}-{secrets.token_hex(4)}.eml"
        tmp = self.folder / f".{name}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, self.folder / name)
        return "250 Message accepted for delivery"


def message_files(folder: Path) -> list[Path]:
    """Every kept message, oldest first."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix == ".eml" and p.name[0] != ".")


def read(path: Path) -> EmailMessage:
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def _recipients(message: EmailMessage) -> set[str]:
    found = {
        a.strip().lower() for a in str(message.get(ENVELOPE_HEADER, "")).split(",") if a.strip()
    }
    to = message.get("To")
    if to is not None:
        found |= {addr.addr_spec.lower() for addr in to.addresses}
    return found


def mails_to(folder: Path, address: str) -> list[EmailMessage]:
    """Every kept message for `address` (any case), oldest first."""
    wanted = address.strip().lower()
    return [m for m in map(read, message_files(folder)) if wanted in _recipients(m)]


def latest_mail(folder: Path, address: str) -> EmailMessage | None:
    found = mails_to(folder, address)
    return found[-1] if found else None


def wait_for_mail(
    folder: Path, address: str, *, after: int = 0, timeout: float = 10.0
) -> EmailMessage:
    """The newest mail for `address` once more than `after` have arrived for it
    (pass the count seen before the action that sends one)."""
    deadline = time.monotonic() + timeout
    while True:
        found = mails_to(folder, address)
        if len(found) > after:
            return found[-1]
        if time.monotonic() >= deadline:
            raise TimeoutError(f"no new mail for {address} in {folder} after {timeout}s")
        time.sleep(0.05)


def body_text(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain", "html"))
    return "" if part is None else str(part.get_content())  # type: ignore[attr-defined]


def link_in(message: EmailMessage, path: str) -> str:
    """The first link in the mail whose path is `path` (e.g. "/verify")."""
    for url in _URL_RE.findall(body_text(message)):
        if urlsplit(url).path == path:
            return str(url)
    raise LookupError(f"no {path} link in the mail {message['Subject']!r}")


def token_in(message: EmailMessage, path: str) -> str:
    return parse_qs(urlsplit(link_in(message, path)).query)["token"][0]


async def serve(host: str, port: int, folder: Path) -> None:
    loop = asyncio.get_running_loop()
    handler = Keep(folder)

    def protocol() -> Any:
        return SMTP(handler, hostname="aiport-mail-sink", data_size_limit=10 * 1024 * 1024)

    server = await loop.create_server(protocol, host, port)
    print(f"mail sink on {host}:{port}, keeping mail in {folder}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    await server.wait_closed()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.mail_sink", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="keep every mail sent to this SMTP server")
    run.add_argument("--host", default=os.environ.get("AIPORT_MAIL_SINK_HOST", "127.0.0.1"))
    run.add_argument(
        "--port", type=int, default=int(os.environ.get("AIPORT_MAIL_SINK_PORT", DEFAULT_PORT))
    )
    latest = commands.add_parser("latest", help="print the newest mail to an address")
    latest.add_argument("address")
    for sub in (run, latest):
        sub.add_argument(
            "--dir", type=Path, default=Path(os.environ.get("AIPORT_MAIL_DIR", DEFAULT_DIR))
        )
    ns = parser.parse_args(argv)
    if ns.command == "serve":
        asyncio.run(serve(ns.host, ns.port, ns.dir))
        return 0
    message = latest_mail(ns.dir, ns.address)
    if message is None:
        print(f"no mail for {ns.address} in {ns.dir}", file=sys.stderr)
        return 1
    print(f"Subject: {message['Subject']}\nDate: {message['Date']}\n\n{body_text(message)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
