"""The accounts schema. Each function is one statement or one transaction.

Times come from the database's clock (now()), so every replica agrees on
whether a link or a session has expired. Secrets arrive here as their SHA-256.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from psycopg import AsyncConnection, errors
from psycopg.rows import DictRow

from services.common import pg

from .rules import LinkPurpose, MembershipRole

Conn = AsyncConnection[DictRow]

USER_COLUMNS = (
    "id, email, password_hash, locale, email_verified_at, is_operator, password_changed_at,"
    " created_at"
)


@dataclass(frozen=True, slots=True)
class Membership:
    billing_account_id: str
    role: MembershipRole


@dataclass(frozen=True, slots=True)
class UserRow:
    id: str
    email: str
    password_hash: str
    locale: str
    email_verified_at: datetime | None
    is_operator: bool
    created_at: datetime
    memberships: tuple[Membership, ...] = ()

    @property
    def verified(self) -> bool:
        return self.email_verified_at is not None


@dataclass(frozen=True, slots=True)
class SessionRow:
    id: int
    user_id: str
    csrf_token: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    now: datetime  # the database's clock when it was read


def _user(row: DictRow, memberships: tuple[Membership, ...] = ()) -> UserRow:
    return UserRow(
        id=row["id"],
        email=row["email"],
        password_hash=row["password_hash"],
        locale=row["locale"],
        email_verified_at=row["email_verified_at"],
        is_operator=row["is_operator"],
        created_at=row["created_at"],
        memberships=memberships,
    )


async def _memberships(conn: Conn, user_id: str) -> tuple[Membership, ...]:
    cur = await conn.execute(
        "SELECT billing_account_id, role FROM accounts.memberships WHERE user_id = %(id)s"
        " ORDER BY created_at, billing_account_id",
        {"id": user_id},
    )
    return tuple(
        Membership(r["billing_account_id"], MembershipRole(r["role"])) for r in await cur.fetchall()
    )


async def user_by_email(pool: pg.Pool, email_key: str) -> UserRow | None:
    async with pool.connection() as conn:
        cur = await conn.execute(
            f"SELECT {USER_COLUMNS} FROM accounts.users WHERE lower(email) = %(email)s",
            {"email": email_key},
        )
        row = await cur.fetchone()
        return None if row is None else _user(row, await _memberships(conn, row["id"]))


async def members_of(pool: pg.Pool, billing_account_id: str) -> list[UserRow]:
    """The users who are members of a billing account, oldest membership first."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            f"SELECT {', '.join('u.' + c.strip() for c in USER_COLUMNS.split(','))}"
            " FROM accounts.users u JOIN accounts.memberships m ON m.user_id = u.id"
            " WHERE m.billing_account_id = %(id)s ORDER BY m.created_at, u.id",
            {"id": billing_account_id},
        )
        rows = await cur.fetchall()
        return [_user(row, await _memberships(conn, row["id"])) for row in rows]


async def user_by_id(pool: pg.Pool, user_id: str) -> UserRow | None:
    async with pool.connection() as conn:
        return await _user_by_id(conn, user_id)


async def _user_by_id(conn: Conn, user_id: str) -> UserRow | None:
    cur = await conn.execute(
        f"SELECT {USER_COLUMNS} FROM accounts.users WHERE id = %(id)s", {"id": user_id}
    )
    row = await cur.fetchone()
    return None if row is None else _user(row, await _memberships(conn, user_id))


async def create_user(
    pool: pg.Pool,
    *,
    user_id: str,
    email: str,
    password_hash: str,
    locale: str,
    billing_account_id: str,
    link_hash: bytes,
    link_ttl_seconds: float,
) -> bool:
    """The user, its ownership of the billing account and its verification link,
    together. False if the email was taken meanwhile (nothing is written)."""
    try:
        async with pg.transaction(pool) as conn:
            await conn.execute(
                "INSERT INTO accounts.users (id, email, password_hash, locale)"
                " VALUES (%(id)s, %(email)s, %(hash)s, %(locale)s)",
                {"id": user_id, "email": email, "hash": password_hash, "locale": locale},
            )
            await conn.execute(
                "INSERT INTO accounts.memberships (user_id, billing_account_id, role)"
                " VALUES (%(id)s, %(account)s, 'owner')",
                {"id": user_id, "account": billing_account_id},
            )
            await _insert_link(conn, link_hash, user_id, LinkPurpose.VERIFY_EMAIL, link_ttl_seconds)
    except errors.UniqueViolation:
        return False
    return True


async def _insert_link(
    conn: Conn, token_hash: bytes, user_id: str, purpose: LinkPurpose, ttl_seconds: float
) -> None:
    # A new link supersedes the user's earlier ones of the same purpose.
    await conn.execute(
        "UPDATE accounts.links SET used_at = now()"
        " WHERE user_id = %(user)s AND purpose = %(purpose)s AND used_at IS NULL",
        {"user": user_id, "purpose": str(purpose)},
    )
    await conn.execute(
        "INSERT INTO accounts.links (token_hash, user_id, purpose, expires_at)"
        " VALUES (%(hash)s, %(user)s, %(purpose)s, now() + make_interval(secs => %(ttl)s))",
        {"hash": token_hash, "user": user_id, "purpose": str(purpose), "ttl": ttl_seconds},
    )


async def create_link(
    pool: pg.Pool, token_hash: bytes, user_id: str, purpose: LinkPurpose, ttl_seconds: float
) -> None:
    async with pg.transaction(pool) as conn:
        await _insert_link(conn, token_hash, user_id, purpose, ttl_seconds)


async def _use_link(conn: Conn, token_hash: bytes, purpose: LinkPurpose) -> str | None:
    """Marks the link used if it is unused and unexpired; its user, else None."""
    cur = await conn.execute(
        "UPDATE accounts.links SET used_at = now()"
        " WHERE token_hash = %(hash)s AND purpose = %(purpose)s"
        " AND used_at IS NULL AND expires_at > now()"
        " RETURNING user_id",
        {"hash": token_hash, "purpose": str(purpose)},
    )
    row = await cur.fetchone()
    return None if row is None else str(row["user_id"])


async def verify_email(pool: pg.Pool, token_hash: bytes) -> UserRow | None:
    async with pg.transaction(pool) as conn:
        user_id = await _use_link(conn, token_hash, LinkPurpose.VERIFY_EMAIL)
        if user_id is None:
            return None
        await conn.execute(
            "UPDATE accounts.users SET email_verified_at = coalesce(email_verified_at, now())"
            " WHERE id = %(id)s",
            {"id": user_id},
        )
        return await _user_by_id(conn, user_id)


async def reset_password(pool: pg.Pool, token_hash: bytes, password_hash: str) -> int | None:
    """Uses a reset link: the new password, the email verified (the link proved
    it), every session ended. The sessions ended, or None for a bad link."""
    async with pg.transaction(pool) as conn:
        user_id = await _use_link(conn, token_hash, LinkPurpose.RESET_PASSWORD)
        if user_id is None:
            return None
        await conn.execute(
            "UPDATE accounts.users SET password_hash = %(hash)s, password_changed_at = now(),"
            " email_verified_at = coalesce(email_verified_at, now()) WHERE id = %(id)s",
            {"id": user_id, "hash": password_hash},
        )
        return await _end_user_sessions(conn, user_id)


async def update_password_hash(pool: pg.Pool, user_id: str, old_hash: str, new_hash: str) -> None:
    """A rehash with newer parameters (same password): only if nothing changed it meanwhile."""
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE accounts.users SET password_hash = %(new)s"
            " WHERE id = %(id)s AND password_hash = %(old)s",
            {"id": user_id, "old": old_hash, "new": new_hash},
        )


async def _end_user_sessions(conn: Conn, user_id: str) -> int:
    cur = await conn.execute(
        "UPDATE accounts.sessions SET ended_at = now() WHERE user_id = %(id)s AND ended_at IS NULL",
        {"id": user_id},
    )
    return max(cur.rowcount, 0)


async def _insert_session(
    conn: Conn,
    *,
    token_hash: bytes,
    user_id: str,
    csrf_token: str,
    client_address: str,
    max_seconds: float,
) -> SessionRow:
    cur = await conn.execute(
        "INSERT INTO accounts.sessions"
        " (token_hash, user_id, csrf_token, client_address, expires_at)"
        " VALUES (%(hash)s, %(user)s, %(csrf)s, %(client)s,"
        " now() + make_interval(secs => %(max)s))"
        " RETURNING id, user_id, csrf_token, created_at, last_seen_at, expires_at, now() AS now",
        {
            "hash": token_hash,
            "user": user_id,
            "csrf": csrf_token,
            "client": client_address,
            "max": max_seconds,
        },
    )
    row = await cur.fetchone()
    assert row is not None
    return SessionRow(**row)


async def start_session(
    pool: pg.Pool,
    *,
    token_hash: bytes,
    user_id: str,
    csrf_token: str,
    client_address: str,
    max_seconds: float,
    previous_hash: bytes | None,
) -> SessionRow:
    """A new session; the one the browser had before (if any) ends with it."""
    async with pg.transaction(pool) as conn:
        if previous_hash is not None:
            await _end_session(conn, previous_hash)
        return await _insert_session(
            conn,
            token_hash=token_hash,
            user_id=user_id,
            csrf_token=csrf_token,
            client_address=client_address,
            max_seconds=max_seconds,
        )


async def change_password(
    pool: pg.Pool,
    *,
    user_id: str,
    old_hash: str,
    new_hash: str,
    token_hash: bytes,
    csrf_token: str,
    client_address: str,
    max_seconds: float,
) -> tuple[SessionRow, int] | None:
    """New password, every session ended, a new one started; None if the password
    changed meanwhile (another change won the race)."""
    async with pg.transaction(pool) as conn:
        cur = await conn.execute(
            "UPDATE accounts.users SET password_hash = %(new)s, password_changed_at = now()"
            " WHERE id = %(id)s AND password_hash = %(old)s",
            {"id": user_id, "old": old_hash, "new": new_hash},
        )
        if cur.rowcount != 1:
            return None
        ended = await _end_user_sessions(conn, user_id)
        session = await _insert_session(
            conn,
            token_hash=token_hash,
            user_id=user_id,
            csrf_token=csrf_token,
            client_address=client_address,
            max_seconds=max_seconds,
        )
        return session, ended


async def live_session(pool: pg.Pool, token_hash: bytes) -> SessionRow | None:
    """The session if it has not been ended and its absolute expiry is ahead (the
    caller applies the idle rule with `now`)."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT id, user_id, csrf_token, created_at, last_seen_at, expires_at, now() AS now"
            " FROM accounts.sessions"
            " WHERE token_hash = %(hash)s AND ended_at IS NULL AND expires_at > now()",
            {"hash": token_hash},
        )
        row = await cur.fetchone()
        return None if row is None else SessionRow(**row)


async def touch_session(pool: pg.Pool, session_id: int) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE accounts.sessions SET last_seen_at = greatest(last_seen_at, now())"
            " WHERE id = %(id)s AND ended_at IS NULL",
            {"id": session_id},
        )


async def _end_session(conn: Conn, token_hash: bytes) -> int:
    cur = await conn.execute(
        "UPDATE accounts.sessions SET ended_at = now()"
        " WHERE token_hash = %(hash)s AND ended_at IS NULL",
        {"hash": token_hash},
    )
    return max(cur.rowcount, 0)


async def end_session(pool: pg.Pool, token_hash: bytes) -> int:
    async with pool.connection() as conn:
        return await _end_session(conn, token_hash)


async def end_idle_session(pool: pg.Pool, session_id: int) -> None:
    """Found idle past its limit: ended for good (a later touch cannot revive it)."""
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE accounts.sessions SET ended_at = now() WHERE id = %(id)s AND ended_at IS NULL",
            {"id": session_id},
        )


async def set_operator(pool: pg.Pool, user_id: str, operator: bool) -> UserRow | None:
    async with pg.transaction(pool) as conn:
        await conn.execute(
            "UPDATE accounts.users SET is_operator = %(op)s WHERE id = %(id)s",
            {"id": user_id, "op": operator},
        )
        return await _user_by_id(conn, user_id)


async def schema_revision(pool: pg.Pool) -> str | None:
    """The applied migration, or None when the schema is missing."""
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT to_regclass('accounts.alembic_version') AS t")
        row = await cur.fetchone()
        if row is None or row["t"] is None:
            return None
        cur = await conn.execute("SELECT version_num FROM accounts.alembic_version")
        found = await cur.fetchone()
        return None if found is None else str(found["version_num"])
