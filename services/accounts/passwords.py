"""argon2id password hashes (argon2-cffi), computed off the event loop.

The parameters are argon2-cffi's defaults (RFC 9106's second recommended
profile: 3 passes over 64 MiB, 4 lanes). A stored hash with older parameters
is replaced at the next successful log-in.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError


@dataclass(frozen=True, slots=True)
class Checked:
    ok: bool
    needs_rehash: bool = False


class Passwords:
    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self._hasher = hasher or PasswordHasher(type=Type.ID)
        # Checked when the email is unknown, so that answer takes as long as a
        # wrong password does (no telling the two apart by time).
        self._dummy = self._hasher.hash(secrets.token_urlsafe(24))

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def check(self, stored: str | None, password: str) -> Checked:
        """Whether `password` matches `stored`; None (no such user) never matches
        but costs the same."""
        return await asyncio.to_thread(self._check, stored, password)

    def _check(self, stored: str | None, password: str) -> Checked:
        try:
            self._hasher.verify(stored or self._dummy, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return Checked(False)
        if stored is None:
            return Checked(False)
        return Checked(True, self._hasher.check_needs_rehash(stored))
