"""The mails accounts sends, in the user's language, and sending them over SMTP.

Composing is pure (`compose`, `compose_low_balance`): a kind, a locale and a
link (or the amounts) give an EmailMessage. Sending (`Mailer`) runs after the
request's transaction has committed, in the background: the caller's answer
(and its timing) never depends on whether, or how fast, a mail went out. A
failed send is logged without the link (it carries a secret); the user can ask
for a new one.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from enum import StrEnum
from urllib.parse import urlencode

import aiosmtplib

from services.common.logs import fields

from .config import SmtpSettings

log = logging.getLogger(__name__)

# The console's pages that take a mailed token (built by the console).
VERIFY_PATH = "/verify"
RESET_PATH = "/reset-password"
LOGIN_PATH = "/login"
FORGOT_PATH = "/forgot-password"
TOPUP_PATH = "/dashboard/topup"


class MailKind(StrEnum):
    VERIFY_EMAIL = "verify_email"
    RESET_PASSWORD = "reset_password"
    # Someone tried to sign up with an address that already has a user.
    ALREADY_REGISTERED = "already_registered"
    # The account's available balance fell below the alert its people set.
    LOW_BALANCE = "low_balance"


def link(public_url: str, path: str, token: str | None = None) -> str:
    query = f"?{urlencode({'token': token})}" if token is not None else ""
    return f"{public_url.rstrip('/')}{path}{query}"


def _hours(seconds: float) -> int:
    return max(1, round(seconds / 3600))


@dataclass(frozen=True, slots=True)
class Text:
    subject: str
    body: str


def _text(kind: MailKind, locale: str, url: str, ttl_seconds: float, public_url: str) -> Text:
    hours = _hours(ttl_seconds)
    forgot = link(public_url, FORGOT_PATH)
    login = link(public_url, LOGIN_PATH)
    if locale == "en":
        if kind is MailKind.VERIFY_EMAIL:
            return Text(
                "Confirm your email address for aiport",
                "Welcome to aiport!\n\n"
                "Open this link to confirm your email address and start using your account:\n\n"
                f"{url}\n\n"
                f"The link works once, for {hours} hour(s). If you did not sign up, ignore"
                " this mail: nothing happens without the link.\n",
            )
        if kind is MailKind.RESET_PASSWORD:
            return Text(
                "Reset your aiport password",
                "Someone (hopefully you) asked to reset the password of your aiport account.\n\n"
                f"Open this link to choose a new password:\n\n{url}\n\n"
                f"The link works once, for {hours} hour(s). Resetting logs out every session."
                " If you did not ask, ignore this mail: your password stays as it is.\n",
            )
        return Text(
            "Your email address already has an aiport account",
            "Someone (hopefully you) tried to sign up for aiport with this email address,"
            " but it already has an account.\n\n"
            f"Log in: {login}\nForgot your password? {forgot}\n\n"
            "If it was not you, ignore this mail: nothing was changed.\n",
        )
    if kind is MailKind.VERIFY_EMAIL:
        return Text(
            "Konfirmasi alamat email Anda untuk aiport",
            "Selamat datang di aiport!\n\n"
            "Buka tautan ini untuk mengonfirmasi alamat email Anda dan mulai memakai akun Anda:\n\n"
            f"{url}\n\n"
            f"Tautan ini hanya bisa dipakai sekali, selama {hours} jam. Jika Anda tidak mendaftar,"
            " abaikan email ini: tidak ada yang terjadi tanpa tautan ini.\n",
        )
    if kind is MailKind.RESET_PASSWORD:
        return Text(
            "Atur ulang kata sandi aiport Anda",
            "Seseorang (semoga Anda) meminta pengaturan ulang kata sandi akun aiport Anda.\n\n"
            f"Buka tautan ini untuk memilih kata sandi baru:\n\n{url}\n\n"
            f"Tautan ini hanya bisa dipakai sekali, selama {hours} jam. Mengatur ulang kata sandi"
            " akan mengeluarkan semua sesi. Jika Anda tidak memintanya, abaikan email ini:"
            " kata sandi Anda tidak berubah.\n",
        )
    return Text(
        "Alamat email Anda sudah memiliki akun aiport",
        "Seseorang (semoga Anda) mencoba mendaftar di aiport dengan alamat email ini,"
        " tetapi alamat ini sudah memiliki akun.\n\n"
        f"Masuk: {login}\nLupa kata sandi? {forgot}\n\n"
        "Jika itu bukan Anda, abaikan email ini: tidak ada yang berubah.\n",
    )


MICROS_PER_RUPIAH = 1_000_000


def rupiah(micros: int, locale: str) -> str:
    """Whole rupiah (the fraction cut off), grouped as the language writes it:
    "Rp 9.500" (id), "Rp 9,500" (en)."""
    grouped = f"{max(micros, 0) // MICROS_PER_RUPIAH:,}"
    return "Rp " + (grouped if locale == "en" else grouped.replace(",", "."))


def _low_balance_text(locale: str, available: str, threshold: str, topup: str) -> Text:
    if locale == "en":
        return Text(
            f"Your aiport balance is below {threshold}",
            f"Your available balance is {available}, below your alert of {threshold}.\n\n"
            f"Top up at {topup} so that your API keys keep working.\n\n"
            "This mail comes once each time the balance falls below the alert; you can"
            " change the alert or turn it off in your dashboard.\n",
        )
    return Text(
        f"Saldo aiport Anda di bawah {threshold}",
        f"Saldo tersedia Anda {available}, di bawah batas peringatan Anda {threshold}.\n\n"
        f"Isi saldo di {topup} agar kunci API Anda tetap berfungsi.\n\n"
        "Email ini dikirim sekali setiap kali saldo turun di bawah batas peringatan; Anda"
        " dapat mengubah atau mematikan peringatan ini di dasbor Anda.\n",
    )


def _message(to: str, sender: str, locale: str, text: Text) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = text.subject
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain="aiport")
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(text.body)
    # After set_content, which replaces every Content-* header.
    message["Content-Language"] = locale
    return message


def compose_low_balance(
    *,
    to: str,
    sender: str,
    locale: str,
    public_url: str,
    available_micros: int,
    threshold_micros: int,
) -> EmailMessage:
    """The low-balance alert: the balance, the alert and where to top up."""
    text = _low_balance_text(
        locale,
        rupiah(available_micros, locale),
        rupiah(threshold_micros, locale),
        link(public_url, TOPUP_PATH),
    )
    return _message(to, sender, locale, text)


def compose(
    kind: MailKind,
    *,
    to: str,
    sender: str,
    locale: str,
    public_url: str,
    token: str | None = None,
    ttl_seconds: float = 0,
) -> EmailMessage:
    """One plain-text mail (UTF-8). Verification and reset mails need `token`."""
    if kind is MailKind.LOW_BALANCE:
        raise ValueError("a low-balance mail is composed by compose_low_balance")
    path = {MailKind.VERIFY_EMAIL: VERIFY_PATH, MailKind.RESET_PASSWORD: RESET_PATH}.get(kind)
    if path is not None and token is None:
        raise ValueError(f"a {kind} mail needs its token")
    url = link(public_url, path, token) if path is not None else ""
    return _message(to, sender, locale, _text(kind, locale, url, ttl_seconds, public_url))


class Mailer:
    """Sends in background tasks it keeps until they end (so none is collected
    half-way) and waits for on close()."""

    def __init__(self, settings: SmtpSettings) -> None:
        self._settings = settings
        self._tasks: set[asyncio.Task[None]] = set()

    def send_later(self, message: EmailMessage, kind: MailKind) -> None:
        task = asyncio.create_task(self._send(message, kind), name=f"mail-{kind}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, message: EmailMessage, kind: MailKind) -> None:
        s = self._settings
        try:
            await aiosmtplib.send(
                message,
                hostname=s.host,
                port=s.port,
                username=s.username,
                password=s.password,
                start_tls=s.starttls,
                timeout=s.timeout_seconds,
            )
        except (aiosmtplib.SMTPException, OSError) as exc:
            # Never the message (its link is a secret); the kind and the server.
            log.error(
                "mail not sent",
                extra=fields(kind=str(kind), smtp=f"{s.host}:{s.port}", error=type(exc).__name__),
            )
        else:
            log.info("mail sent", extra=fields(kind=str(kind)))

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self._settings.timeout_seconds)
