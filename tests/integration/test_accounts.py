"""People through the accounts service, as the console will call it: sign-up with a
mail caught by the sink, verification, sessions, password changes and resets,
rate limits (in Redis) and the operator role granted with aiportctl."""

from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import psycopg
import pytest
from aiport.v1 import accounts_pb2, accounts_pb2_grpc, billing_pb2, billing_pb2_grpc

from deploy.local.stack import Stack
from sandbox.mail_sink import link_in, mails_to, token_in, wait_for_mail

Stub = accounts_pb2_grpc.AccountsStub
PASSWORD = "kopi tubruk 2024"


@dataclass(frozen=True)
class Person:
    email: str
    password: str
    user: accounts_pb2.User
    address: str


def new_address() -> str:
    """A client address of its own per test, so rate limits never cross tests."""
    return f"2001:db8::{secrets.token_hex(2)}:{secrets.token_hex(2)}"


def new_email(tag: str = "ana") -> str:
    return f"{tag}-{secrets.token_hex(4)}@Example.co.id"


@dataclass(frozen=True)
class Refusal:
    """What a refused call told its caller."""

    code: grpc.StatusCode
    details: str
    trailers: dict[str, str]

    def trailer(self, key: str) -> str | None:
        return self.trailers.get(key)


def refused(call: Callable[[], object]) -> Refusal:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error = caught.value
    assert isinstance(error, grpc.Call)
    trailers = {str(k): str(v) for k, v in error.trailing_metadata() or ()}
    return Refusal(error.code(), error.details() or "", trailers)


def trailer(error: Refusal, key: str) -> str | None:
    return error.trailer(key)


def sign_up(accounts: Stub, folder: Path, locale: str = "", email: str = "") -> Person:
    """A verified user, through the mailed link."""
    email = email or new_email()
    address = new_address()
    before = len(mails_to(folder, email))
    accounts.SignUp(
        accounts_pb2.SignUpRequest(
            email=email, password=PASSWORD, locale=locale, client_address=address
        )
    )
    mail = wait_for_mail(folder, email, after=before)
    user = accounts.VerifyEmail(accounts_pb2.TokenRequest(token=token_in(mail, "/verify")))
    return Person(email, PASSWORD, user, address)


def log_in(accounts: Stub, person: Person, password: str = "") -> accounts_pb2.NewSession:
    return accounts.LogIn(  # type: ignore[no-any-return]
        accounts_pb2.LogInRequest(
            email=person.email, password=password or person.password, client_address=person.address
        )
    )


def resolve(accounts: Stub, token: str, csrf: str = "") -> accounts_pb2.ResolvedSession:
    return accounts.ResolveSession(  # type: ignore[no-any-return]
        accounts_pb2.ResolveSessionRequest(session_token=token, csrf_token=csrf)
    )


def ended(accounts: Stub, token: str) -> bool:
    error = refused(lambda: resolve(accounts, token))
    return error.code == grpc.StatusCode.UNAUTHENTICATED


def db(stack: Stack) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(
        stack.config.database_url.replace("postgresql+psycopg://", "postgresql://"),
        autocommit=True,
    )


def test_sign_up_verify_log_in_change_password_log_out(
    stack: Stack,
    accounts: Stub,
    mail_folder: Path,
    billing: billing_pb2_grpc.BillingStub,
) -> None:
    email, address = new_email(), new_address()
    accounts.SignUp(
        accounts_pb2.SignUpRequest(email=email, password=PASSWORD, client_address=address)
    )
    mail = wait_for_mail(mail_folder, email)
    # Bahasa Indonesia unless the user chose English; the link leads to the console.
    assert "Konfirmasi" in str(mail["Subject"])
    assert link_in(mail, "/verify").startswith(f"{stack.config.base_url}/verify?token=")
    token = token_in(mail, "/verify")

    # Not before the address is verified (the right password is needed to learn that).
    early = refused(
        lambda: accounts.LogIn(
            accounts_pb2.LogInRequest(email=email, password=PASSWORD, client_address=address)
        )
    )
    assert early.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "not verified" in early.details

    user = accounts.VerifyEmail(accounts_pb2.TokenRequest(token=token))
    assert user.email_verified and user.email == email.split("@")[0] + "@example.co.id"
    assert list(user.roles) == [accounts_pb2.User.CUSTOMER]
    [membership] = user.memberships
    assert membership.role == accounts_pb2.Membership.OWNER
    # The billing account is billing's, opened for this user, empty.
    balance = billing.GetAccountBalance(
        billing_pb2.GetAccountBalanceRequest(account_id=membership.billing_account_id)
    )
    assert balance.balance_micros == 0
    # A link works once.
    again = refused(lambda: accounts.VerifyEmail(accounts_pb2.TokenRequest(token=token)))
    assert again.code == grpc.StatusCode.INVALID_ARGUMENT
    assert trailer(again, "x-aiport-field") == "token"

    person = Person(email.upper(), PASSWORD, user, address)  # any case logs in
    first = log_in(accounts, person)
    seen = resolve(accounts, first.session_token, first.csrf_token)
    assert seen.user.user_id == user.user_id
    assert seen.billing_account_id == membership.billing_account_id
    assert seen.membership_role == accounts_pb2.Membership.OWNER
    assert seen.csrf_token == first.csrf_token
    assert first.idle_expires_at_unix <= first.expires_at_unix
    # Only the token's SHA-256 is kept.
    with db(stack) as conn:
        stored = conn.execute(
            "SELECT count(*) FROM accounts.sessions WHERE token_hash = %s",
            (hashlib.sha256(first.session_token.encode()).digest(),),
        ).fetchone()
    assert stored == (1,)

    # Another session's CSRF token is refused.
    other = log_in(accounts, person)
    wrong = refused(lambda: resolve(accounts, first.session_token, other.csrf_token))
    assert wrong.code == grpc.StatusCode.PERMISSION_DENIED

    # Logging in with the old cookie ends it: the session rotates.
    rotated = accounts.LogIn(
        accounts_pb2.LogInRequest(
            email=email,
            password=PASSWORD,
            client_address=address,
            previous_session_token=other.session_token,
        )
    )
    assert rotated.session_token not in (first.session_token, other.session_token)
    assert ended(accounts, other.session_token)

    # Changing the password ends every session, and gives the caller a new one.
    new_password = "nasi goreng pedas 9"
    changed = accounts.ChangePassword(
        accounts_pb2.ChangePasswordRequest(
            session_token=first.session_token,
            current_password=PASSWORD,
            new_password=new_password,
            client_address=address,
        )
    )
    assert ended(accounts, first.session_token)
    assert ended(accounts, rotated.session_token)
    assert resolve(accounts, changed.session_token).user.user_id == user.user_id
    stale = refused(lambda: log_in(accounts, person))
    assert stale.code == grpc.StatusCode.UNAUTHENTICATED
    current = log_in(accounts, person, new_password)

    out = accounts.LogOut(accounts_pb2.SessionRequest(session_token=current.session_token))
    assert out.sessions_ended == 1
    assert ended(accounts, current.session_token)
    again_out = accounts.LogOut(accounts_pb2.SessionRequest(session_token=current.session_token))
    assert again_out.sessions_ended == 0
    assert resolve(accounts, changed.session_token).user.user_id == user.user_id


def test_change_password_needs_the_current_one(accounts: Stub, mail_folder: Path) -> None:
    person = sign_up(accounts, mail_folder)
    session = log_in(accounts, person)
    error = refused(
        lambda: accounts.ChangePassword(
            accounts_pb2.ChangePasswordRequest(
                session_token=session.session_token,
                current_password="not the password",
                new_password="a brand new one 1",
                client_address=person.address,
            )
        )
    )
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert trailer(error, "x-aiport-field") == "current_password"
    assert resolve(accounts, session.session_token).user.user_id == person.user.user_id


def test_wrong_password_and_unknown_email_get_the_same_answer(
    accounts: Stub, mail_folder: Path
) -> None:
    person = sign_up(accounts, mail_folder)
    wrong = refused(lambda: log_in(accounts, person, "wrong password 123"))
    unknown = refused(
        lambda: accounts.LogIn(
            accounts_pb2.LogInRequest(
                email=new_email("nobody"), password=PASSWORD, client_address=person.address
            )
        )
    )
    for error in (wrong, unknown):
        assert error.code == grpc.StatusCode.UNAUTHENTICATED
    assert wrong.details == unknown.details == "incorrect email or password"


def test_signing_up_again_answers_the_same_and_tells_the_owner(
    accounts: Stub, accounts_admin: Stub, mail_folder: Path
) -> None:
    person = sign_up(accounts, mail_folder, locale="en-US")
    before = len(mails_to(mail_folder, person.email))
    accounts.SignUp(
        accounts_pb2.SignUpRequest(
            email=person.email, password="another password 1", client_address=new_address()
        )
    )
    mail = wait_for_mail(mail_folder, person.email, after=before)
    assert mail["Subject"] == "Your email address already has an aiport account"
    found = accounts_admin.FindUser(accounts_pb2.FindUserRequest(email=person.email))
    assert found.user_id == person.user.user_id and found.locale == "en"
    # The first password still works; the second attempt changed nothing.
    log_in(accounts, person)


def test_forgot_password_reset_and_expired_links(
    stack: Stack, accounts: Stub, mail_folder: Path
) -> None:
    person = sign_up(accounts, mail_folder, locale="en")
    session = log_in(accounts, person)
    # An unknown email gets the same (empty) answer, and no mail.
    nobody = new_email("nobody")
    accounts.RequestPasswordReset(
        accounts_pb2.EmailRequest(email=nobody, client_address=person.address)
    )

    def reset_link() -> str:
        before = len(mails_to(mail_folder, person.email))
        accounts.RequestPasswordReset(
            accounts_pb2.EmailRequest(email=person.email, client_address=person.address)
        )
        mail = wait_for_mail(mail_folder, person.email, after=before)
        assert mail["Subject"] == "Reset your aiport password"
        return token_in(mail, "/reset-password")

    # An expired link is refused (its hour moved into the past).
    expired = reset_link()
    with db(stack) as conn:
        conn.execute(
            "UPDATE accounts.links SET created_at = now() - interval '2 hours',"
            " expires_at = now() - interval '1 hour' WHERE token_hash = %s",
            (hashlib.sha256(expired.encode()).digest(),),
        )
    error = refused(
        lambda: accounts.ResetPassword(
            accounts_pb2.ResetPasswordRequest(token=expired, new_password="fresh password 42")
        )
    )
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "expired" in error.details

    token = reset_link()
    done = accounts.ResetPassword(
        accounts_pb2.ResetPasswordRequest(token=token, new_password="fresh password 42")
    )
    assert done.sessions_ended == 1
    assert ended(accounts, session.session_token)
    log_in(accounts, person, "fresh password 42")
    reused = refused(
        lambda: accounts.ResetPassword(
            accounts_pb2.ResetPasswordRequest(token=token, new_password="third password 43")
        )
    )
    assert reused.code == grpc.StatusCode.INVALID_ARGUMENT
    assert not mails_to(mail_folder, nobody)


def test_log_in_is_rate_limited_per_email_and_per_address(
    accounts: Stub, mail_folder: Path
) -> None:
    person = sign_up(accounts, mail_folder)
    for _ in range(10):  # the default: 10 attempts per email per 15 minutes
        error = refused(lambda: log_in(accounts, person, "guess guess guess"))
        assert error.code == grpc.StatusCode.UNAUTHENTICATED
    limited = refused(lambda: log_in(accounts, person, "guess guess guess"))
    assert limited.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    retry_after = int(trailer(limited, "x-aiport-retry-after") or "0")
    assert 0 < retry_after <= 900
    # Per email: even the right password from elsewhere waits.
    elsewhere = Person(person.email, person.password, person.user, new_address())
    still = refused(lambda: log_in(accounts, elsewhere))
    assert still.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    # Another person from the first address is not limited by this email's count.
    other = sign_up(accounts, mail_folder)
    log_in(accounts, Person(other.email, other.password, other.user, person.address))


def test_reset_mails_are_rate_limited_per_email(accounts: Stub, mail_folder: Path) -> None:
    email = new_email("quiet")
    for _ in range(5):
        accounts.RequestPasswordReset(
            accounts_pb2.EmailRequest(email=email, client_address=new_address())
        )
    limited = refused(
        lambda: accounts.RequestPasswordReset(
            accounts_pb2.EmailRequest(email=email, client_address=new_address())
        )
    )
    assert limited.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert trailer(limited, "x-aiport-retry-after") is not None


@pytest.mark.parametrize(
    ("field", "email", "password", "locale", "says"),
    [
        ("email", "not-an-email", PASSWORD, "", "must look like name@example.com"),
        ("email", "ana@localhost", PASSWORD, "", "not a valid domain"),
        ("password", "ana@example.com", "short", "", "at least 10 characters"),
        ("password", "ana@example.com", "ana@example.com", "", "must not be your email"),
        ("locale", "ana@example.com", PASSWORD, "fr", "must be one of id, en"),
    ],
)
def test_bad_sign_up_input_names_the_field(
    accounts: Stub, field: str, email: str, password: str, locale: str, says: str
) -> None:
    error = refused(
        lambda: accounts.SignUp(
            accounts_pb2.SignUpRequest(
                email=email, password=password, locale=locale, client_address=new_address()
            )
        )
    )
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details.startswith(f"{field}: ")
    assert says in error.details
    assert trailer(error, "x-aiport-field") == field


def test_operators_are_made_with_aiportctl_and_only_there(
    stack: Stack, accounts: Stub, mail_folder: Path
) -> None:
    person = sign_up(accounts, mail_folder)
    session = log_in(accounts, person)
    env = {
        **os.environ,
        "AIPORT_ACCOUNTS_ADDR": stack.config.accounts_addr,
        "AIPORT_ACCOUNTS_TOKEN": stack.config.accounts_admin_token,
    }
    done = subprocess.run(
        [sys.executable, "-m", "services.billing.cli", "operator", "grant", person.email, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert '"operator"' in done.stdout
    roles = resolve(accounts, session.session_token).user.roles
    assert list(roles) == [accounts_pb2.User.CUSTOMER, accounts_pb2.User.OPERATOR]
    # The console may find users for operators, but never grant the role.
    found = accounts.FindUser(accounts_pb2.FindUserRequest(user_id=person.user.user_id))
    assert found.email == person.user.email
    denied = refused(
        lambda: accounts.SetOperator(
            accounts_pb2.SetOperatorRequest(email=person.email, operator=True)
        )
    )
    assert denied.code == grpc.StatusCode.PERMISSION_DENIED
    missing = refused(lambda: accounts.FindUser(accounts_pb2.FindUserRequest(email=new_email())))
    assert missing.code == grpc.StatusCode.NOT_FOUND


def test_accounts_refuses_callers_without_a_token(stack: Stack) -> None:
    with grpc.insecure_channel(stack.config.accounts_addr) as chan:
        error = refused(
            lambda: accounts_pb2_grpc.AccountsStub(chan).FindUser(
                accounts_pb2.FindUserRequest(email="ana@example.com")
            )
        )
    assert error.code == grpc.StatusCode.UNAUTHENTICATED


def test_a_resent_verification_link_replaces_the_first(accounts: Stub, mail_folder: Path) -> None:
    email, address = new_email("late"), new_address()
    accounts.SignUp(
        accounts_pb2.SignUpRequest(email=email, password=PASSWORD, client_address=address)
    )
    first = token_in(wait_for_mail(mail_folder, email), "/verify")
    # A wrong password says nothing about the address being unverified.
    wrong = refused(
        lambda: accounts.LogIn(
            accounts_pb2.LogInRequest(
                email=email, password="wrong password 1", client_address=address
            )
        )
    )
    assert wrong.code == grpc.StatusCode.UNAUTHENTICATED
    accounts.ResendVerification(accounts_pb2.EmailRequest(email=email, client_address=address))
    second = token_in(wait_for_mail(mail_folder, email, after=1), "/verify")
    assert second != first
    stale = refused(lambda: accounts.VerifyEmail(accounts_pb2.TokenRequest(token=first)))
    assert stale.code == grpc.StatusCode.INVALID_ARGUMENT
    assert accounts.VerifyEmail(accounts_pb2.TokenRequest(token=second)).email_verified
    # Verified users get no more links.
    accounts.ResendVerification(accounts_pb2.EmailRequest(email=email, client_address=address))
    accounts.RequestPasswordReset(accounts_pb2.EmailRequest(email=email, client_address=address))
    last = wait_for_mail(mail_folder, email, after=2)
    assert link_in(last, "/reset-password") and len(mails_to(mail_folder, email)) == 3
