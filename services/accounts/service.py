"""What accounts does, over its store, the password hasher, the rate limiter,
the mailer and billing. The gRPC face (server.py) only translates.

Unverified users cannot log in: LogIn with the right password answers
EmailNotVerified (never before the password is checked, so it tells nothing to
someone who does not know it) and the console offers to resend the link. A
dashboard without a verified address would only invite throw-away sign-ups.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from services.common import pg
from services.common.logs import fields

from . import rules, store
from .mail import Mailer, MailKind, compose
from .passwords import Passwords
from .ratelimit import Action, RateLimiter, Scope
from .rules import InvalidArgument

log = logging.getLogger(__name__)

# Creates a billing account named by its argument; returns billing's id.
CreateBillingAccount = Callable[[str], Awaitable[str]]


@dataclass(frozen=True, slots=True)
class Grant:
    """A session just started: its token is shown this once."""

    token: str
    csrf_token: str
    idle_expires_at: datetime
    expires_at: datetime
    user: store.UserRow


@dataclass(frozen=True, slots=True)
class Resolved:
    user: store.UserRow
    csrf_token: str
    idle_expires_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class MailSettings:
    sender: str
    public_url: str


class Accounts:
    def __init__(
        self,
        pool: pg.Pool,
        *,
        passwords: Passwords,
        limiter: RateLimiter,
        mailer: Mailer,
        mail: MailSettings,
        create_billing_account: CreateBillingAccount,
        sessions: rules.SessionPolicy,
        links: rules.LinkPolicy,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._pool = pool
        self._passwords = passwords
        self._limiter = limiter
        self._mailer = mailer
        self._mail = mail
        self._create_billing_account = create_billing_account
        self._sessions = sessions
        self._links = links
        self._clock = clock

    # -- sign-up and verification ---------------------------------------------
    async def sign_up(self, email: str, password: str, locale: str, client_address: str) -> None:
        email = rules.normalize_email(email)
        rules.check_password(password, email)
        locale = rules.normalize_locale(locale)
        address = rules.check_client_address(client_address)
        key = rules.email_key(email)
        await self._limiter.attempt(
            Action.SIGN_UP, {Scope.ADDRESS: address, Scope.EMAIL: key}, self._clock()
        )
        # Hashed before the lookup, so a taken address answers no faster.
        password_hash = await self._passwords.hash(password)
        existing = await store.user_by_email(self._pool, key)
        if existing is None:
            user_id = rules.new_user_id()
            account_id = await self._create_billing_account(user_id)
            token = rules.new_secret()
            ttl = self._links.ttl(rules.LinkPurpose.VERIFY_EMAIL).total_seconds()
            created = await store.create_user(
                self._pool,
                user_id=user_id,
                email=email,
                password_hash=password_hash,
                locale=locale,
                billing_account_id=account_id,
                link_hash=rules.secret_hash(token),
                link_ttl_seconds=ttl,
            )
            if created:
                log.info("user signed up", extra=fields(user_id=user_id, account_id=account_id))
                self._send(MailKind.VERIFY_EMAIL, email, locale, token, ttl)
                return
            # Lost a race for the same address: the billing account stays empty and unused.
            log.warning("sign-up raced for one email", extra=fields(account_id=account_id))
            existing = await store.user_by_email(self._pool, key)
        if existing is not None:
            self._send(MailKind.ALREADY_REGISTERED, existing.email, existing.locale)

    async def resend_verification(self, email: str, client_address: str) -> None:
        user = await self._mail_request(email, client_address)
        if user is not None and not user.verified:
            await self._send_link(user, rules.LinkPurpose.VERIFY_EMAIL, MailKind.VERIFY_EMAIL)

    async def verify_email(self, token: str) -> store.UserRow:
        if not rules.looks_like_secret(token):
            raise rules.bad_link()
        user = await store.verify_email(self._pool, rules.secret_hash(token))
        if user is None:
            raise rules.bad_link()
        log.info("email verified", extra=fields(user_id=user.id))
        return user

    # -- sessions ----------------------------------------------------------------
    async def log_in(
        self, email: str, password: str, client_address: str, previous_session_token: str
    ) -> Grant:
        email = rules.normalize_email(email)
        if not password:
            raise InvalidArgument("password", "is required")
        if len(password) > rules.MAX_PASSWORD_CHARS:
            raise rules.BadCredentials()  # could never have been set
        address = rules.check_client_address(client_address)
        key = rules.email_key(email)
        await self._limiter.attempt(
            Action.LOG_IN, {Scope.ADDRESS: address, Scope.EMAIL: key}, self._clock()
        )
        user = await store.user_by_email(self._pool, key)
        checked = await self._passwords.check(user.password_hash if user else None, password)
        if user is None or not checked.ok:
            raise rules.BadCredentials()
        if not user.verified:
            raise rules.EmailNotVerified()
        if checked.needs_rehash:
            new_hash = await self._passwords.hash(password)
            await store.update_password_hash(self._pool, user.id, user.password_hash, new_hash)
        previous = (
            rules.secret_hash(previous_session_token)
            if rules.looks_like_secret(previous_session_token)
            else None
        )
        grant = await self._start_session(user, address, previous)
        log.info("logged in", extra=fields(user_id=user.id))
        return grant

    async def _start_session(
        self, user: store.UserRow, address: str, previous: bytes | None
    ) -> Grant:
        token, csrf = rules.new_secret(), rules.new_secret()
        row = await store.start_session(
            self._pool,
            token_hash=rules.secret_hash(token),
            user_id=user.id,
            csrf_token=csrf,
            client_address=address,
            max_seconds=self._sessions.absolute.total_seconds(),
            previous_hash=previous,
        )
        return self._grant(token, row, user)

    def _grant(self, token: str, row: store.SessionRow, user: store.UserRow) -> Grant:
        times = rules.SessionTimes(row.created_at, row.last_seen_at)
        return Grant(
            token=token,
            csrf_token=row.csrf_token,
            idle_expires_at=rules.idle_expiry(times, self._sessions),
            expires_at=row.expires_at,
            user=user,
        )

    async def resolve(self, token: str, csrf_token: str = "") -> Resolved:
        if not rules.looks_like_secret(token):
            raise rules.NoSession()
        row = await store.live_session(self._pool, rules.secret_hash(token))
        if row is None:
            raise rules.NoSession()
        times = rules.SessionTimes(row.created_at, row.last_seen_at)
        if not rules.session_is_live(times, self._sessions, row.now):
            await store.end_idle_session(self._pool, row.id)
            raise rules.NoSession()
        if csrf_token and not hmac.compare_digest(csrf_token.encode(), row.csrf_token.encode()):
            raise rules.CsrfMismatch()
        if rules.needs_touch(times, self._sessions, row.now):
            await store.touch_session(self._pool, row.id)
            times = rules.SessionTimes(row.created_at, row.now)
        user = await store.user_by_id(self._pool, row.user_id)
        if user is None:  # deleted meanwhile (the session cascades away with it)
            raise rules.NoSession()
        return Resolved(
            user=user,
            csrf_token=row.csrf_token,
            idle_expires_at=rules.idle_expiry(times, self._sessions),
            expires_at=row.expires_at,
        )

    async def log_out(self, token: str) -> int:
        if not rules.looks_like_secret(token):
            return 0
        return await store.end_session(self._pool, rules.secret_hash(token))

    # -- passwords ---------------------------------------------------------------
    async def request_password_reset(self, email: str, client_address: str) -> None:
        user = await self._mail_request(email, client_address)
        if user is not None:
            await self._send_link(user, rules.LinkPurpose.RESET_PASSWORD, MailKind.RESET_PASSWORD)

    async def reset_password(self, token: str, new_password: str) -> int:
        rules.check_password(new_password, field="new_password")
        if not rules.looks_like_secret(token):
            raise rules.bad_link()
        new_hash = await self._passwords.hash(new_password)
        ended = await store.reset_password(self._pool, rules.secret_hash(token), new_hash)
        if ended is None:
            raise rules.bad_link()
        log.info("password reset", extra=fields(sessions_ended=ended))
        return ended

    async def change_password(
        self, session_token: str, current: str, new: str, client_address: str
    ) -> tuple[Grant, int]:
        resolved = await self.resolve(session_token)
        user = resolved.user
        if not current:
            raise InvalidArgument("current_password", "is required")
        rules.check_password(new, user.email, field="new_password")
        if new == current:
            raise InvalidArgument("new_password", "must differ from the current password")
        address = rules.check_client_address(client_address)
        # Guessing the current password through a stolen session counts as logging in.
        await self._limiter.attempt(
            Action.LOG_IN,
            {Scope.ADDRESS: address, Scope.EMAIL: rules.email_key(user.email)},
            self._clock(),
        )
        if not (await self._passwords.check(user.password_hash, current)).ok:
            raise InvalidArgument("current_password", "is incorrect")
        new_hash = await self._passwords.hash(new)
        token, csrf = rules.new_secret(), rules.new_secret()
        changed = await store.change_password(
            self._pool,
            user_id=user.id,
            old_hash=user.password_hash,
            new_hash=new_hash,
            token_hash=rules.secret_hash(token),
            csrf_token=csrf,
            client_address=address,
            max_seconds=self._sessions.absolute.total_seconds(),
        )
        if changed is None:
            raise InvalidArgument("current_password", "was changed meanwhile; log in again")
        row, ended = changed
        log.info("password changed", extra=fields(user_id=user.id, sessions_ended=ended))
        return self._grant(token, row, user), ended

    # -- operators ---------------------------------------------------------------
    async def find_user(self, *, email: str = "", user_id: str = "") -> store.UserRow:
        user = await self._lookup(email=email, user_id=user_id)
        if user is None:
            raise rules.NotFound("no user with that " + ("email" if email else "id"))
        return user

    async def members(self, billing_account_id: str) -> list[store.UserRow]:
        return await store.members_of(
            self._pool, rules.check_billing_account_id(billing_account_id)
        )

    async def set_operator(
        self, operator: bool, *, email: str = "", user_id: str = ""
    ) -> store.UserRow:
        user = await self.find_user(email=email, user_id=user_id)
        updated = await store.set_operator(self._pool, user.id, operator)
        if updated is None:
            raise rules.NotFound("no user with that id")
        log.info("operator role changed", extra=fields(user_id=user.id, operator=operator))
        return updated

    async def _lookup(self, *, email: str, user_id: str) -> store.UserRow | None:
        if email:
            key = rules.email_key(rules.normalize_email(email))
            return await store.user_by_email(self._pool, key)
        if user_id:
            return await store.user_by_id(self._pool, rules.check_user_id(user_id))
        raise InvalidArgument("email", "give an email or a user_id")

    # -- mail --------------------------------------------------------------------
    async def _mail_request(self, email: str, client_address: str) -> store.UserRow | None:
        """The checks shared by every "mail me a link" request; the user, if any."""
        email = rules.normalize_email(email)
        address = rules.check_client_address(client_address)
        key = rules.email_key(email)
        await self._limiter.attempt(
            Action.MAIL, {Scope.ADDRESS: address, Scope.EMAIL: key}, self._clock()
        )
        return await store.user_by_email(self._pool, key)

    async def _send_link(
        self, user: store.UserRow, purpose: rules.LinkPurpose, kind: MailKind
    ) -> None:
        token = rules.new_secret()
        ttl = self._links.ttl(purpose).total_seconds()
        await store.create_link(self._pool, rules.secret_hash(token), user.id, purpose, ttl)
        self._send(kind, user.email, user.locale, token, ttl)

    def _send(
        self, kind: MailKind, to: str, locale: str, token: str | None = None, ttl: float = 0
    ) -> None:
        message = compose(
            kind,
            to=to,
            sender=self._mail.sender,
            locale=locale,
            public_url=self._mail.public_url,
            token=token,
            ttl_seconds=ttl,
        )
        self._mailer.send_later(message, kind)
