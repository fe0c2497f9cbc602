"""The accounts service's pure rules: input checks that name the field, secrets,
session and link lifetimes, rate-limit windows, the mails, and the mail sink's
reader."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest

from sandbox.mail_sink import Keep, latest_mail, link_in, mails_to, token_in
from services.accounts import cli, mail, ratelimit, rules
from services.accounts.ratelimit import Action, Limit, Scope
from services.common import service_auth

T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


# -- emails ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("ana@example.com", "ana@example.com"),
        ("  Ana.Putri+aiport@Mail.Example.CO.ID ", "Ana.Putri+aiport@mail.example.co.id"),
        ("o'brien@xn--bcher-kva.example", "o'brien@xn--bcher-kva.example"),
    ],
)
def test_emails_are_trimmed_and_their_domain_lower_cased(raw: str, stored: str) -> None:
    assert rules.normalize_email(raw) == stored
    assert rules.email_key(stored) == stored.lower()


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("", "is required"),
        ("ana", "must look like name@example.com"),
        ("@example.com", "must look like name@example.com"),
        ("ana@", "must look like name@example.com"),
        ("ana@localhost", "not a valid domain"),
        ("ana@exa_mple.com", "not a valid domain"),
        ("ana@example.c", "not a valid domain"),
        ("ana@-example.com", "not a valid domain"),
        ("an a@example.com", "plain address"),
        ("ana@exämple.com", "plain address"),
        ("ana..putri@example.com", "not a valid mailbox"),
        ('"ana"@example.com', "not a valid mailbox"),
        ("a" * 65 + "@example.com", "not a valid mailbox"),
        ("a@" + "b" * 250 + ".com", "at most 254"),
    ],
)
def test_bad_emails_are_refused_naming_the_field(raw: str, says: str) -> None:
    with pytest.raises(rules.InvalidArgument) as caught:
        rules.normalize_email(raw)
    assert caught.value.field == "email"
    assert str(caught.value).startswith("email: ")
    assert says in str(caught.value)


# -- passwords -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "password", ["kopi tubruk 2024", "x" * 9 + "yz", "Ünïcødé pässwörd", "a" * 254 + "bc"]
)
def test_good_passwords_pass(password: str) -> None:
    rules.check_password(password, "ana@example.com")


@pytest.mark.parametrize(
    ("password", "says"),
    [
        ("", "is required"),
        ("short", "at least 10"),
        ("x" * 257, "at most 256"),
        ("abababababab", "must not repeat"),
        ("password\x00123", "control characters"),
        ("Ana.Putri@Example.com", "must not be your email"),
        ("ana.putri", "at least 10"),
        ("Indonesia123", "most common passwords"),
        ("1234567890", "common"),
    ],
)
def test_weak_passwords_are_refused_naming_the_field(password: str, says: str) -> None:
    with pytest.raises(rules.InvalidArgument) as caught:
        rules.check_password(password, "ana.putri@example.com", field="new_password")
    assert caught.value.field == "new_password"
    assert says in str(caught.value)


def test_the_local_part_of_the_email_is_not_a_password() -> None:
    with pytest.raises(rules.InvalidArgument, match="your email"):
        rules.check_password("ana.putri.w", "ana.putri.w@example.com")


# -- locales, addresses, ids -----------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "locale"), [("", "id"), ("id", "id"), ("id-ID", "id"), ("EN", "en"), ("en_US", "en")]
)
def test_locales(raw: str, locale: str) -> None:
    assert rules.normalize_locale(raw) == locale


def test_other_locales_are_refused() -> None:
    with pytest.raises(rules.InvalidArgument, match=r"^locale: must be one of id, en$"):
        rules.normalize_locale("fr-FR")


def test_client_address_is_required_and_bounded() -> None:
    assert rules.check_client_address(" 203.0.113.9 ") == "203.0.113.9"
    for bad in ("", "a b", "x" * 65):
        with pytest.raises(rules.InvalidArgument, match=r"^client_address: "):
            rules.check_client_address(bad)


def test_user_ids() -> None:
    user_id = rules.new_user_id()
    assert rules.check_user_id(user_id) == user_id
    assert rules.new_user_id() != user_id
    with pytest.raises(rules.InvalidArgument, match=r"^user_id: "):
        rules.check_user_id("acct_" + user_id[4:])


# -- secrets ---------------------------------------------------------------------------


def test_secrets_are_random_and_only_their_sha256_is_kept() -> None:
    a, b = rules.new_secret(), rules.new_secret()
    assert a != b and len(a) == rules.SECRET_CHARS
    assert rules.looks_like_secret(a)
    assert rules.secret_hash(a) == hashlib.sha256(a.encode()).digest()
    assert len(rules.secret_hash(a)) == 32
    for junk in ("", a[:-1], a + "x", "!" * 43, a[:-1] + "="):
        assert not rules.looks_like_secret(junk)


# -- lifetimes -------------------------------------------------------------------------


POLICY = rules.SessionPolicy(idle=timedelta(hours=1), absolute=timedelta(hours=3))


def test_a_session_ends_when_idle_or_at_its_absolute_end() -> None:
    fresh = rules.SessionTimes(created_at=T0, last_seen_at=T0)
    assert rules.session_is_live(fresh, POLICY, T0 + timedelta(minutes=59))
    assert not rules.session_is_live(fresh, POLICY, T0 + timedelta(hours=1))
    # Used recently, but past its absolute end: over all the same.
    busy = rules.SessionTimes(created_at=T0, last_seen_at=T0 + timedelta(hours=2, minutes=50))
    assert rules.idle_expiry(busy, POLICY) == T0 + timedelta(hours=3)
    assert rules.absolute_expiry(busy, POLICY) == T0 + timedelta(hours=3)
    assert not rules.session_is_live(busy, POLICY, T0 + timedelta(hours=3))


def test_use_is_written_at_most_once_a_minute() -> None:
    times = rules.SessionTimes(created_at=T0, last_seen_at=T0)
    assert not rules.needs_touch(times, POLICY, T0 + timedelta(seconds=59))
    assert rules.needs_touch(times, POLICY, T0 + timedelta(seconds=60))


def test_a_session_policy_keeps_idle_within_absolute() -> None:
    with pytest.raises(ValueError):
        rules.SessionPolicy(idle=timedelta(hours=2), absolute=timedelta(hours=1))


def test_links_work_once_until_they_expire() -> None:
    links = rules.LinkPolicy(verify_email=timedelta(days=2), reset_password=timedelta(hours=1))
    assert links.ttl(rules.LinkPurpose.RESET_PASSWORD) == timedelta(hours=1)
    assert links.ttl(rules.LinkPurpose.VERIFY_EMAIL) == timedelta(days=2)
    expires = T0 + timedelta(hours=1)
    assert rules.link_is_usable(expires, None, T0)
    assert not rules.link_is_usable(expires, None, expires)
    assert not rules.link_is_usable(expires, T0, T0)


# -- rate limits -----------------------------------------------------------------------


def test_windows_are_aligned_and_say_how_long_is_left() -> None:
    limit = Limit(3, 900)
    assert ratelimit.window_of(900.0, limit) == (1, 900)
    assert ratelimit.window_of(1799.2, limit) == (1, 1)
    assert ratelimit.window_of(1800.0, limit) == (2, 900)


def test_the_attempt_past_the_count_is_refused_with_the_wait() -> None:
    limit = Limit(3, 900)
    assert ratelimit.refusal(3, limit, 120) is None
    refused = ratelimit.refusal(4, limit, 120)
    assert refused is not None and refused.retry_after_seconds == 120
    assert "120 seconds" in str(refused)


def test_counter_keys_hold_no_email() -> None:
    key = ratelimit.counter_key("aiport", Action.LOG_IN, Scope.EMAIL, "ana@example.com", 7)
    assert key.startswith("aiport:rl:login:email:") and key.endswith(":7")
    assert "ana" not in key
    other = ratelimit.counter_key("aiport", Action.LOG_IN, Scope.ADDRESS, "ana@example.com", 7)
    assert other != key


def test_limits_are_configurable_by_name() -> None:
    limits = ratelimit.parse_limits(" login_email=3/60 , signup_address=1/10")
    assert limits[(Action.LOG_IN, Scope.EMAIL)] == Limit(3, 60)
    assert limits[(Action.SIGN_UP, Scope.ADDRESS)] == Limit(1, 10)
    assert (
        limits[(Action.MAIL, Scope.EMAIL)] == ratelimit.DEFAULT_LIMITS[(Action.MAIL, Scope.EMAIL)]
    )
    assert ratelimit.parse_limits("") == dict(ratelimit.DEFAULT_LIMITS)
    for bad in ("login=3/60", "login_email=3", "login_email=0/60", "logout_email=1/1", "x"):
        with pytest.raises(ValueError, match="AIPORT_ACCOUNTS_RATE_LIMITS"):
            ratelimit.parse_limits(bad)


class FakePipeline:
    """Just enough of redis.asyncio's pipeline: SET NX EX and INCR on a dict."""

    def __init__(self, store: dict[str, int]) -> None:
        self.store = store
        self.ops: list[tuple[str, str]] = []

    async def __aenter__(self) -> FakePipeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def set(self, key: str, value: int, ex: int, nx: bool) -> None:
        self.ops.append(("set", key))

    def incr(self, key: str) -> None:
        self.ops.append(("incr", key))

    async def execute(self) -> list[Any]:
        replies: list[Any] = []
        for op, key in self.ops:
            if op == "set":
                replies.append(self.store.setdefault(key, 0) == 0)
            else:
                self.store[key] += 1
                replies.append(self.store[key])
        return replies


def test_the_limiter_counts_every_scope_and_reports_the_longest_wait() -> None:
    counts: dict[str, int] = {}
    redis = SimpleNamespace(pipeline=lambda transaction: FakePipeline(counts))
    limits = {
        (Action.LOG_IN, Scope.ADDRESS): Limit(5, 600),
        (Action.LOG_IN, Scope.EMAIL): Limit(2, 60),
    }
    limiter = ratelimit.RateLimiter(redis, "t", limits)  # type: ignore[arg-type]
    values = {Scope.ADDRESS: "203.0.113.9", Scope.EMAIL: "ana@example.com"}

    async def attempts() -> rules.RateLimited:
        await limiter.attempt(Action.LOG_IN, values, now=30.0)
        await limiter.attempt(Action.LOG_IN, values, now=31.0)
        with pytest.raises(rules.RateLimited) as caught:
            await limiter.attempt(Action.LOG_IN, values, now=32.0)
        # Another email from the same address still passes (3 of 5 so far).
        await limiter.attempt(
            Action.LOG_IN, {Scope.ADDRESS: "203.0.113.9", Scope.EMAIL: "budi@example.com"}, 33.0
        )
        return caught.value

    refused = asyncio.run(attempts())
    assert refused.retry_after_seconds == 28  # the email's window ends at 60
    assert sorted(counts.values()) == [1, 3, 4]


# -- mails -----------------------------------------------------------------------------


def test_mails_speak_the_users_language_and_link_to_the_console() -> None:
    for locale, subject in (("id", "Atur ulang kata sandi"), ("en", "Reset your aiport password")):
        message = mail.compose(
            mail.MailKind.RESET_PASSWORD,
            to="ana@example.com",
            sender="aiport <no-reply@aiport.example>",
            locale=locale,
            public_url="https://aiport.example/",
            token="tok-en_1",
            ttl_seconds=3600,
        )
        assert subject in str(message["Subject"])
        assert message["Content-Language"] == locale
        body = message.get_content()
        assert "https://aiport.example/reset-password?token=tok-en_1" in body
        assert ("1 jam" if locale == "id" else "1 hour") in body


def test_a_link_mail_needs_its_token() -> None:
    with pytest.raises(ValueError):
        mail.compose(
            mail.MailKind.VERIFY_EMAIL, to="a@b.co", sender="s@b.co", locale="id", public_url="x"
        )
    notice = mail.compose(
        mail.MailKind.ALREADY_REGISTERED,
        to="a@b.co",
        sender="s@b.co",
        locale="en",
        public_url="http://127.0.0.1:8080",
    )
    assert "http://127.0.0.1:8080/forgot-password" in notice.get_content()


def test_the_mail_sink_keeps_messages_and_finds_the_latest_per_address(tmp_path: Path) -> None:
    keep = Keep(tmp_path / "mail")
    for n, to in enumerate(("ana@example.com", "budi@example.com", "Ana@Example.com")):
        message = mail.compose(
            mail.MailKind.VERIFY_EMAIL,
            to=to,
            sender="s@b.co",
            locale="en",
            public_url="http://x.test",
            token=f"token{n}",
            ttl_seconds=60,
        )
        envelope = SimpleNamespace(original_content=message.as_bytes(), rcpt_tos=[to])
        reply = asyncio.run(keep.handle_DATA(None, None, envelope))  # type: ignore[arg-type]
        assert reply.startswith("250")
    assert len(mails_to(tmp_path / "mail", "ANA@example.com")) == 2
    latest = latest_mail(tmp_path / "mail", "ana@example.com")
    assert latest is not None
    assert link_in(latest, "/verify") == "http://x.test/verify?token=token2"
    assert token_in(latest, "/verify") == "token2"
    assert latest_mail(tmp_path / "mail", "nobody@example.com") is None
    assert latest_mail(tmp_path / "nothing-here", "ana@example.com") is None


# -- who may call what, and aiportctl's words ------------------------------------------


def test_only_the_admin_grants_operators_and_accounts_opens_billing_accounts_only() -> None:
    tokens = {"console": "c" * 40, "admin": "a" * 40}
    set_operator = service_auth.ACCOUNTS + "SetOperator"
    callers = service_auth.ACCOUNTS_CALLERS
    assert service_auth.decide(set_operator, "c" * 40, tokens, callers).code is not None
    assert service_auth.decide(set_operator, "a" * 40, tokens, callers).code is None
    log_in = service_auth.ACCOUNTS + "LogIn"
    assert service_auth.decide(log_in, "c" * 40, tokens, callers).code is None
    assert service_auth.BILLING_CALLERS["accounts"] == frozenset(
        {service_auth.BILLING + "CreateAccount", service_auth.BILLING + "ClaimLowBalanceAlerts"}
    )


def test_the_gateway_may_only_resolve_sessions_and_find_users_for_operators() -> None:
    tokens = {"console": "c" * 40, "admin": "a" * 40, "gateway": "g" * 40}
    callers = service_auth.ACCOUNTS_CALLERS
    for allowed in ("ResolveSession", "FindUser", "ListMembers"):
        method = service_auth.ACCOUNTS + allowed
        assert service_auth.decide(method, "g" * 40, tokens, callers).code is None, allowed
    for method in ("LogIn", "SignUp", "ChangePassword", "SetOperator", "LogOut"):
        decision = service_auth.decide(service_auth.ACCOUNTS + method, "g" * 40, tokens, callers)
        assert decision.code == grpc.StatusCode.PERMISSION_DENIED, method


def test_aiportctl_hands_people_commands_to_the_accounts_cli() -> None:
    assert cli.from_aiportctl(["operator", "grant", "ana@example.com", "--json"]) == [
        "grant-operator",
        "ana@example.com",
        "--json",
    ]
    assert cli.from_aiportctl(["--json", "user", "find", "usr_x"]) == ["find", "--json", "usr_x"]
    assert cli.from_aiportctl(["balance", "acct_x"]) is None
    assert cli.from_aiportctl(["operator"]) is None
