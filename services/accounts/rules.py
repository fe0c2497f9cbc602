"""Pure accounts rules: input validation, secrets and their hashes, session and
link lifetimes. No I/O here; the service and its tests share these."""

from __future__ import annotations

import hashlib
import re
import secrets
import string
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
USER_PREFIX = "usr_"
ID_RANDOM_CHARS = 20
_USER_ID_RE = re.compile(rf"{USER_PREFIX}[0-9A-Za-z]{{{ID_RANDOM_CHARS}}}")

# Session, verification and reset secrets: 32 random bytes, URL-safe base64
# without padding (43 characters), so they fit in a cookie and a link as they are.
SECRET_BYTES = 32
SECRET_CHARS = 43
_SECRET_RE = re.compile(r"[A-Za-z0-9_-]{43}")

LOCALES = ("id", "en")
DEFAULT_LOCALE = "id"

MAX_EMAIL_CHARS = 254  # RFC 5321's path limit, less the angle brackets
MAX_LOCAL_PART_CHARS = 64
MIN_PASSWORD_CHARS = 10
# argon2 takes any length, but nobody types more; a cap keeps hashing cheap.
MAX_PASSWORD_CHARS = 256
MAX_CLIENT_ADDRESS_CHARS = 64
# The first passwords every guessing list tries (NIST SP 800-63B asks for such a
# check); the length rule already refuses most of the short ones.
COMMON_PASSWORDS = frozenset(
    {
        "1234567890",
        "0123456789",
        "12345678910",
        "123456789a",
        "1q2w3e4r5t",
        "qwertyuiop",
        "1qaz2wsx3edc",
        "password123",
        "password1234",
        "passw0rd123",
        "iloveyou123",
        "qwerty12345",
        "abcdefghij",
        "aaaaaaaaaa",
        "katasandi123",
        "indonesia123",
        "bismillah123",
    }
)

# A dot-atom local part (RFC 5322) and a host name of LDH labels with a TLD.
_LOCAL_RE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_LABEL_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_TLD_RE = re.compile(r"[A-Za-z]{2,63}|xn--[A-Za-z0-9-]{1,59}")


class Role(StrEnum):
    CUSTOMER = "customer"
    OPERATOR = "operator"


class MembershipRole(StrEnum):
    OWNER = "owner"
    MEMBER = "member"


class LinkPurpose(StrEnum):
    """What a mailed link's token may be used for (once)."""

    VERIFY_EMAIL = "verify_email"
    RESET_PASSWORD = "reset_password"


# -- errors --------------------------------------------------------------------


class AccountsError(Exception):
    """A refusal the caller should see, with its message as is."""


class InvalidArgument(AccountsError):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class BadCredentials(AccountsError):
    """Unknown email or wrong password: one message, so neither can be told apart."""

    def __init__(self) -> None:
        super().__init__("incorrect email or password")


class NoSession(AccountsError):
    def __init__(self) -> None:
        super().__init__("the session is unknown, ended or expired; log in again")


class EmailNotVerified(AccountsError):
    def __init__(self) -> None:
        super().__init__(
            "the email address is not verified yet: open the link we mailed to it"
            " (or ask for a new one)"
        )


class CsrfMismatch(AccountsError):
    def __init__(self) -> None:
        super().__init__("the CSRF token does not belong to this session")


class NotFound(AccountsError):
    pass


class RateLimited(AccountsError):
    def __init__(self, retry_after_seconds: int) -> None:
        self.retry_after_seconds = max(1, retry_after_seconds)
        super().__init__(f"too many attempts; try again in {self.retry_after_seconds} seconds")


def bad_link() -> InvalidArgument:
    return InvalidArgument("token", "the link is invalid, expired or already used")


# -- input ---------------------------------------------------------------------


def normalize_email(raw: str, field: str = "email") -> str:
    """The address as it will be stored and mailed: trimmed, domain lower-cased.

    Uniqueness (and every lookup) is on its lower-cased form, so "Ana@x.id" and
    "ana@x.id" are one user. Only plain ASCII addresses are taken: quoted local
    parts, IP literals and comments are legal but only ever seen in attacks."""
    email = raw.strip()
    if not email:
        raise InvalidArgument(field, "is required")
    if len(email) > MAX_EMAIL_CHARS:
        raise InvalidArgument(field, f"must be at most {MAX_EMAIL_CHARS} characters")
    if not email.isascii() or any(c.isspace() or not c.isprintable() for c in email):
        raise InvalidArgument(field, "must be a plain address such as name@example.com")
    local, at, domain = email.rpartition("@")
    if not at or not local or not domain:
        raise InvalidArgument(field, "must look like name@example.com")
    if len(local) > MAX_LOCAL_PART_CHARS or not _LOCAL_RE.fullmatch(local):
        raise InvalidArgument(field, "the part before @ is not a valid mailbox name")
    labels = domain.split(".")
    if (
        len(labels) < 2
        or not all(_LABEL_RE.fullmatch(label) for label in labels)
        or not _TLD_RE.fullmatch(labels[-1])
    ):
        raise InvalidArgument(field, "the part after @ is not a valid domain")
    return f"{local}@{domain.lower()}"


def email_key(email: str) -> str:
    """The form uniqueness, lookups and rate limits use."""
    return email.strip().lower()


def check_password(password: str, email: str = "", field: str = "password") -> None:
    """Length, no control characters, not the email, not a well-known password."""
    if not password:
        raise InvalidArgument(field, "is required")
    length = len(unicodedata.normalize("NFC", password))
    if length < MIN_PASSWORD_CHARS:
        raise InvalidArgument(field, f"must be at least {MIN_PASSWORD_CHARS} characters")
    if length > MAX_PASSWORD_CHARS:
        raise InvalidArgument(field, f"must be at most {MAX_PASSWORD_CHARS} characters")
    if any(unicodedata.category(c) == "Cc" for c in password):
        raise InvalidArgument(field, "must not contain control characters")
    folded = password.casefold()
    if len(set(folded)) < 3:
        raise InvalidArgument(field, "must not repeat one or two characters")
    if email and (folded == email_key(email) or folded == email_key(email).partition("@")[0]):
        raise InvalidArgument(field, "must not be your email address")
    if folded in COMMON_PASSWORDS:
        raise InvalidArgument(field, "is one of the most common passwords; choose another")


def normalize_locale(raw: str) -> str:
    """ "" -> the default; "en-US", "EN" -> "en"; anything but id/en is refused."""
    tag = raw.strip().replace("_", "-").lower()
    if not tag:
        return DEFAULT_LOCALE
    language = tag.split("-", 1)[0]
    if language not in LOCALES:
        raise InvalidArgument("locale", f"must be one of {', '.join(LOCALES)}")
    return language


def check_client_address(raw: str) -> str:
    address = raw.strip()
    if not address:
        raise InvalidArgument("client_address", "is required")
    if len(address) > MAX_CLIENT_ADDRESS_CHARS or not all("!" <= c <= "~" for c in address):
        raise InvalidArgument("client_address", "must be an IP address")
    return address


# Billing's account ids (billing owns their shape; this only refuses junk early).
_BILLING_ACCOUNT_ID_RE = re.compile(rf"acct_[0-9A-Za-z]{{{ID_RANDOM_CHARS}}}")


def check_billing_account_id(raw: str, field: str = "billing_account_id") -> str:
    if not _BILLING_ACCOUNT_ID_RE.fullmatch(raw):
        raise InvalidArgument(field, f"must be acct_ followed by {ID_RANDOM_CHARS} letters")
    return raw


def check_user_id(raw: str, field: str = "user_id") -> str:
    if not _USER_ID_RE.fullmatch(raw):
        raise InvalidArgument(field, f"must be {USER_PREFIX} followed by {ID_RANDOM_CHARS} letters")
    return raw


# -- secrets -------------------------------------------------------------------


def new_user_id() -> str:
    return USER_PREFIX + "".join(secrets.choice(BASE62) for _ in range(ID_RANDOM_CHARS))


def new_secret() -> str:
    """A session, verification or reset token (given out once)."""
    return secrets.token_urlsafe(SECRET_BYTES)


def secret_hash(secret: str) -> bytes:
    """What the database keeps of a secret: its SHA-256 (32 bytes). The secrets
    have 256 random bits, so a plain hash is enough: nothing to brute-force."""
    return hashlib.sha256(secret.encode("ascii")).digest()


def looks_like_secret(raw: str) -> bool:
    """Anything else cannot be one of ours: refused without a database lookup."""
    return bool(_SECRET_RE.fullmatch(raw))


# -- lifetimes -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """A session ends `idle` after its last use, and `absolute` after it began,
    whichever comes first. Use is recorded at most every `touch_every`, so a
    busy dashboard does not write on every request."""

    idle: timedelta
    absolute: timedelta
    touch_every: timedelta = timedelta(minutes=1)

    def __post_init__(self) -> None:
        if not timedelta(0) < self.idle <= self.absolute:
            raise ValueError("a session's idle expiry must be positive and within its absolute")


@dataclass(frozen=True, slots=True)
class SessionTimes:
    created_at: datetime
    last_seen_at: datetime


def idle_expiry(times: SessionTimes, policy: SessionPolicy) -> datetime:
    return min(times.last_seen_at + policy.idle, absolute_expiry(times, policy))


def absolute_expiry(times: SessionTimes, policy: SessionPolicy) -> datetime:
    return times.created_at + policy.absolute


def session_is_live(times: SessionTimes, policy: SessionPolicy, now: datetime) -> bool:
    return now < idle_expiry(times, policy)


def needs_touch(times: SessionTimes, policy: SessionPolicy, now: datetime) -> bool:
    return now - times.last_seen_at >= policy.touch_every


@dataclass(frozen=True, slots=True)
class LinkPolicy:
    """How long a mailed link works."""

    verify_email: timedelta
    reset_password: timedelta

    def ttl(self, purpose: LinkPurpose) -> timedelta:
        return self.verify_email if purpose is LinkPurpose.VERIFY_EMAIL else self.reset_password


def link_is_usable(expires_at: datetime, used_at: datetime | None, now: datetime) -> bool:
    return used_at is None and now < expires_at
